"""The clock-skew estimator: DeviceTime's whole seconds are part of the estimate, and the decision is right
for a 0.2 s and a 3 s error whatever moment of the device's second the answer was read at."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gbcore.timeutil import gb_time
from timesync import skew

T0 = datetime(2026, 12, 7, 4, 0, 0, tzinfo=UTC).timestamp()


def device_answer(true_skew: float, sent: float, rtt: float, *, at: float = 0.5, millis: bool = False) -> skew.ClockSample:
    """A device whose clock is ``true_skew`` ahead reads it ``at`` (0..1) through the round trip and answers
    in whole seconds (as DeviceTime usually is), in Beijing time."""
    read = sent + at * rtt
    text = gb_time(read + true_skew, millis=millis)
    parsed = skew.parse_device_time(text)
    assert parsed is not None
    return skew.ClockSample(sent + rtt, parsed[0], parsed[1], sent)


def test_parse_device_time_forms() -> None:
    beijing_noon = datetime(2026, 12, 7, 4, 0, 0, tzinfo=UTC).timestamp()
    assert skew.parse_device_time("2026-12-07T12:00:00") == (beijing_noon, 1.0)
    assert skew.parse_device_time("2026-12-07 12:00:00") == (beijing_noon, 1.0)
    value, res = skew.parse_device_time("2026-12-07T12:00:00.250") or (0, 0)
    assert value == pytest.approx(beijing_noon + 0.25) and res == pytest.approx(0.001)
    assert skew.parse_device_time("2026-12-07T04:00:00Z") == (beijing_noon, 1.0)
    assert skew.parse_device_time("2026-12-07T12:00:00+08:00") == (beijing_noon, 1.0)
    assert skew.parse_device_time("9999-12-31T23:59:59") is not None  # absurd but readable: a huge skew
    for bad in (None, "", "yesterday", "0001-01-01T00:00:00", "9999-12-31T23:59:59-14:00", "2026-13-07T12:00:00", "2026-12-07T25:00:00", "2026-12-07T12:00:00+23:00",
                "1" * 5000):
        assert skew.parse_device_time(bad) is None


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_parse_device_time_fuzz(text: str) -> None:
    out = skew.parse_device_time(text)
    assert out is None or (math.isfinite(out[0]) and (out[1] == 1.0 or 0 < out[1] < 1))


def test_interval_and_uncertainty() -> None:
    s = skew.ClockSample(received=T0 + 0.1, device_time=T0 + 5.0, resolution=1.0, sent=T0)
    assert s.bounds == pytest.approx((4.9, 6.0))
    e = skew.estimate(s)
    assert e.skew == pytest.approx(5.45) and e.uncertainty == pytest.approx(0.55)  # 0.5 + rtt/2
    unsolicited = skew.estimate(skew.ClockSample(T0, T0, 1.0, None))
    assert unsolicited.uncertainty == pytest.approx(0.5 + skew.UNSOLICITED_WINDOW / 2)


@pytest.mark.parametrize("at", [0.0, 0.25, 0.5, 0.75, 1.0])
@pytest.mark.parametrize("phase", [0.0, 0.1, 0.3, 0.5, 0.79, 0.81, 0.99])
def test_single_answer_decides_the_requirement_cases(phase: float, at: float) -> None:
    """0.2 s off is never flagged, 3 s off always is, from one whole-second answer, whatever the phase."""
    sent = T0 + phase
    ok = skew.estimate(device_answer(0.2, sent, 0.05, at=at))
    bad = skew.estimate(device_answer(3.0, sent, 0.05, at=at))
    behind = skew.estimate(device_answer(-3.0, sent, 0.05, at=at))
    assert ok.within(1.0), ok
    assert not bad.within(1.0) and bad.certain(1.0), bad
    assert not behind.within(1.0) and behind.certain(1.0), behind
    assert ok.low <= 0.2 <= ok.high and bad.low <= 3.0 <= bad.high


def test_combining_readings_narrows_towards_the_round_trip() -> None:
    rng = random.Random(7)
    samples = []
    for i in range(8):
        sent = T0 + 60 * i + rng.random()
        samples.append(device_answer(0.8, sent, 0.02, at=rng.random()))
    est = skew.combine(samples)
    assert est is not None and est.samples == 8
    assert est.uncertainty < 0.2
    assert est.low <= 0.8 <= est.high
    assert est.within(1.0) and est.certain(1.0)


def test_combine_falls_back_when_the_clock_moved() -> None:
    old = [device_answer(3.0, T0 + i * 60, 0.02, at=0.5) for i in range(3)]
    fixed = device_answer(0.0, T0 + 200, 0.02, at=0.5)  # the device's clock was set
    est = skew.combine([*old, fixed])
    assert est is not None and est.samples == 1 and est.within(1.0)
    stale = device_answer(0.0, T0 - 5000, 0.02)
    est = skew.combine([stale, fixed], window=900)
    assert est is not None and est.samples == 1
    assert skew.combine([]) is None


def test_millisecond_device_time_is_precise() -> None:
    est = skew.estimate(device_answer(1.234, T0 + 0.3, 0.004, millis=True))
    assert est.skew == pytest.approx(1.234, abs=0.004) and est.uncertainty < 0.005


def test_worst_keeps_the_sign() -> None:
    assert skew.worst([0.2, -3.0, 1.0, None]) == -3.0
    assert skew.worst([None]) is None
