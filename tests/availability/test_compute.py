"""The availability arithmetic, against hand-computed fixtures and hypothesis properties."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ops_portal.availability.compute import (
    OFFLINE,
    ONLINE,
    UNKNOWN,
    Sampler,
    Transition,
    channel_timeline,
    merge_intervals,
)
from ops_portal.availability.service import period_bounds

H = 3600.0
D = 86400.0


def dev(t: float, online: bool) -> Transition:
    return Transition(t, online, True)


def ch(t: float, online: bool) -> Transition:
    return Transition(t, online, False)


def test_whole_day_online_then_one_outage() -> None:
    # online all day except 10:00-10:30 (device keepalive timeout, then re-register)
    tl = channel_timeline(0, D, [dev(10 * H, False), dev(10.5 * H, True)], device_before=True, channel_before=True)
    assert tl.online_s == D - 0.5 * H and tl.offline_s == 0.5 * H and tl.unknown_s == 0
    assert tl.outages == 1 and tl.longest_outage_s == 0.5 * H
    assert tl.availability == pytest.approx(1 - 0.5 / 24)
    assert tl.segments == [(0, 10 * H, ONLINE), (10 * H, 10.5 * H, OFFLINE), (10.5 * H, D, ONLINE)]


def test_outage_begun_before_the_period_counts_clipped() -> None:
    tl = channel_timeline(0, D, [dev(2 * H, True)], device_before=False, channel_before=True)
    assert tl.offline_s == 2 * H and tl.outages == 1 and tl.online_s == 22 * H


def test_no_history_means_offline() -> None:
    tl = channel_timeline(0, D, [])
    assert tl.offline_s == D and tl.availability == 0.0


def test_device_down_while_channel_already_down_is_one_outage() -> None:
    # channel 01:00 off, device 02:00 off, device 03:00 on (channel still off), channel 04:00 on
    trs = [ch(1 * H, False), dev(2 * H, False), dev(3 * H, True), ch(4 * H, True)]
    tl = channel_timeline(0, 6 * H, trs, device_before=True, channel_before=True)
    assert tl.outages == 1 and tl.offline_s == 3 * H and tl.longest_outage_s == 3 * H
    # overlapping the other way: device off 01:00-05:00, channel off 02:00-03:00 inside it
    trs = [dev(1 * H, False), ch(2 * H, False), ch(3 * H, True), dev(5 * H, True)]
    tl = channel_timeline(0, 6 * H, trs, device_before=True, channel_before=True)
    assert tl.outages == 1 and tl.offline_s == 4 * H and tl.online_s == 2 * H


def test_device_added_mid_month() -> None:
    # 30-day month; the channel first seen on day 10 at 12:00, online from then but 6 h on day 20
    month = 30 * D
    first = 9 * D + 12 * H
    trs = [dev(first, True), ch(first, True), dev(19 * D, False), dev(19 * D + 6 * H, True)]
    tl = channel_timeline(0, month, trs, exists_from=first)
    assert tl.absent_s == first
    assert tl.offline_s == 6 * H
    assert tl.online_s == month - first - 6 * H
    assert tl.availability == pytest.approx((month - first - 6 * H) / (month - first))


def test_channel_removed_within_the_period() -> None:
    tl = channel_timeline(0, D, [ch(20 * H, False)], device_before=True, channel_before=True, exists_until=20 * H)
    assert tl.online_s == 20 * H and tl.offline_s == 0 and tl.absent_s == 4 * H


def test_platform_downtime_is_unknown_not_offline() -> None:
    # platform up 00:00-08:00 and 09:30-24:00; the device went away during the gap and the restart at
    # 09:30 records it offline (platform_restart); it registers again at 10:00
    up = [(0, 8 * H), (9.5 * H, D + H)]
    trs = [dev(9.5 * H, False), dev(10 * H, True)]
    tl = channel_timeline(0, D, trs, device_before=True, channel_before=True, up=up)
    assert tl.unknown_s == 1.5 * H
    assert tl.offline_s == 0.5 * H and tl.outages == 1
    assert tl.online_s == D - 2 * H
    assert tl.availability == pytest.approx((D - 2 * H) / (D - 1.5 * H))  # unknown left out of the denominator
    assert (8 * H, 9.5 * H, UNKNOWN) in tl.segments


def test_out_of_order_clock_is_clamped() -> None:
    # recorded order: off at 10:00, then (clock set back 5 min) on "at 09:58": the on is moved to 10:00
    trs = [dev(10 * H, False), dev(10 * H - 120, True), dev(12 * H, False), dev(12 * H + 60, True)]
    tl = channel_timeline(0, D, trs, device_before=True, channel_before=True)
    assert tl.clamped == 1
    assert tl.offline_s == 60 and tl.outages == 1
    assert tl.online_s == D - 60


def test_day_boundary_in_shanghai_vs_utc() -> None:
    tz = ZoneInfo("Asia/Shanghai")
    start, end, label = period_bounds("day", tz, on=datetime(2026, 10, 21).date())
    assert label == "2026-10-21"
    assert start == datetime(2026, 10, 20, 16, 0, tzinfo=UTC) and end == datetime(2026, 10, 21, 16, 0, tzinfo=UTC)
    # an outage 2026-10-20 15:00Z .. 17:00Z (23:00 .. 01:00 local) counts 1 h in the local day of the 21st
    s, e = start.timestamp(), end.timestamp()
    off = datetime(2026, 10, 20, 15, tzinfo=UTC).timestamp()
    on = datetime(2026, 10, 20, 17, tzinfo=UTC).timestamp()
    tl = channel_timeline(s, e, [dev(on, True)], device_before=False, channel_before=True)
    assert tl.offline_s == H and tl.online_s == 23 * H
    # and 1 h in the local day of the 20th
    s0, e0, _ = period_bounds("day", tz, on=datetime(2026, 10, 20).date())
    tl0 = channel_timeline(s0.timestamp(), e0.timestamp(), [dev(off, False)], device_before=True, channel_before=True)
    assert tl0.offline_s == H
    # months and weeks are local too
    ms, me, ml = period_bounds("month", tz, month="2026-10")
    assert ml == "2026-10" and ms == datetime(2026, 9, 30, 16, tzinfo=UTC) and me == datetime(2026, 10, 31, 16, tzinfo=UTC)
    ws, we, wl = period_bounds("week", tz, on=datetime(2026, 10, 21).date())
    assert wl == "2026-W43" and (we - ws).days == 7 and ws.astimezone(tz).weekday() == 0


def test_sampled_rate() -> None:
    # two channels over 1 h sampled every 10 min (6 samples): one online throughout, one down 00:25-00:45
    a = channel_timeline(0, H, [], device_before=True, channel_before=True)
    b = channel_timeline(0, H, [dev(25 * 60, False), dev(45 * 60, True)], device_before=True, channel_before=True)
    sampler = Sampler(0, H, 600)
    sampler.add(a)
    sampler.add(b)
    online, known = sampler.counts()
    assert known.tolist() == [2] * 6
    assert online.tolist() == [2, 2, 2, 1, 1, 2]  # samples at 0,10,20,30,40,50 min
    assert sampler.rate() == pytest.approx(10 / 12)
    # the time-weighted figure of the same data differs: 100 min online of 120
    assert (a.online_s + b.online_s) / (a.known_s + b.known_s) == pytest.approx(100 / 120)


def test_merge_intervals() -> None:
    assert merge_intervals([(5, 7), (0, 2), (1, 3), (7, 8), (-5, -1)], 0, 7.5) == [(0, 3), (5, 7.5)]


# ---------------------------------------------------------------------------------------------- properties
times = st.floats(min_value=-1000, max_value=11000, allow_nan=False)
transitions = st.lists(st.builds(Transition, times, st.booleans(), st.booleans()), max_size=30)
intervals = st.lists(st.tuples(times, times).map(lambda p: (min(p), max(p))), max_size=5)


@settings(max_examples=300, deadline=None)
@given(trs=transitions, dev_before=st.none() | st.booleans(), ch_before=st.none() | st.booleans(),
       exists=st.tuples(st.none() | times, st.none() | times), up=st.none() | intervals)
def test_properties(trs, dev_before, ch_before, exists, up) -> None:
    start, end = 0.0, 10000.0
    tl = channel_timeline(start, end, trs, device_before=dev_before, channel_before=ch_before,
                          exists_from=exists[0], exists_until=exists[1], up=up)
    assert tl.online_s >= 0 and tl.offline_s >= 0 and tl.unknown_s >= 0 and tl.absent_s >= -1e-6
    assert tl.online_s + tl.offline_s + tl.unknown_s + tl.absent_s == pytest.approx(end - start)
    if exists == (None, None):  # the channel existed throughout: everything is online, offline or unknown
        assert tl.online_s + tl.offline_s + tl.unknown_s == pytest.approx(end - start)
    if tl.availability is not None:
        assert 0.0 <= tl.availability <= 1.0
    last = start
    for a, b, _ in tl.segments:
        assert start <= last <= a < b <= end
        last = b
    assert tl.outages == sum(1 for *_, s in tl.segments if s == OFFLINE)
    assert tl.longest_outage_s <= tl.offline_s + 1e-9
