"""AlarmIn / PositionIn: what they accept, what they refuse (clearly), and nothing in between."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alarms.types import DESCRIPTION_MAX, RAW_MAX_BYTES, AlarmIn, PositionIn

BEIJING = timezone(timedelta(hours=8))


def test_alarm_in_normalises() -> None:
    a = AlarmIn(priority=1, method=5, type=2, event_type=1, time=datetime(2026, 3, 1, 14, 5, 9, tzinfo=BEIJING),
                description="  越界 / tripwire\x00 ", longitude=116.4, latitude=39.9, raw={"k": "v"},
                source_id="34020000001310000001")
    assert a.time == datetime(2026, 3, 1, 6, 5, 9, tzinfo=UTC) and a.time.tzinfo is UTC
    assert a.description == "越界 / tripwire"
    assert AlarmIn(1, 5, description="x" * 5000).description == "x" * (DESCRIPTION_MAX - 1) + "…"
    assert AlarmIn(1, 5, description="  ").description is None
    # 0,0 (no fix) and half a position are no position
    assert (AlarmIn(1, 5, longitude=0.0, latitude=0.0).longitude, AlarmIn(1, 5, longitude=1.0).latitude) == (
        None, None)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"time": datetime(2026, 3, 1, 14, 5, 9)}, ValueError),  # naive
        ({"time": "2026-03-01T14:05:09"}, TypeError),
        ({"priority": True}, TypeError),
        ({"priority": "1"}, TypeError),
        ({"priority": -1}, ValueError),
        ({"method": 2**31}, ValueError),
        ({"longitude": 181.0, "latitude": 1.0}, ValueError),
        ({"longitude": 1.0, "latitude": math.inf}, ValueError),
        ({"longitude": "116", "latitude": 39.0}, TypeError),
        ({"raw": {"x": object()}}, ValueError),
        ({"raw": {"x": "y" * (RAW_MAX_BYTES + 1)}}, ValueError),
        ({"raw": ["not", "a", "dict"]}, TypeError),
        ({"source_id": "../../etc/passwd"}, ValueError),
        ({"source_id": "1" * 33}, ValueError),
        ({"description": b"bytes"}, TypeError),
    ],
)
def test_alarm_in_refuses(kwargs, error) -> None:
    args = {"priority": 1, "method": 5, **kwargs}
    with pytest.raises(error) as info:
        AlarmIn(**args)
    assert " / " in str(info.value)  # "中文 / English"


_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=True),
                     st.text(max_size=40), st.binary(max_size=10),
                     st.datetimes(timezones=st.one_of(st.none(), st.just(UTC), st.just(BEIJING))))


@given(priority=_scalars, method=_scalars, typ=_scalars, time=_scalars, description=_scalars, lon=_scalars,
       lat=_scalars, source=_scalars)
def test_alarm_in_accepts_or_refuses_cleanly(priority, method, typ, time, description, lon, lat, source) -> None:
    try:
        a = AlarmIn(priority=priority, method=method, type=typ, time=time, description=description,
                    longitude=lon, latitude=lat, source_id=source)
    except (TypeError, ValueError):
        return
    # whatever was accepted is storable as it is
    assert a.priority is None or (isinstance(a.priority, int) and 0 <= a.priority < 2**31)
    assert a.time is None or a.time.utcoffset() == timedelta(0)
    assert (a.longitude is None) == (a.latitude is None)
    assert a.longitude is None or (-180 <= a.longitude <= 180 and -90 <= a.latitude <= 90)
    assert a.description is None or (isinstance(a.description, str) and len(a.description) <= DESCRIPTION_MAX)


@given(time=_scalars, lon=_scalars, lat=_scalars, speed=_scalars, direction=_scalars, altitude=_scalars)
def test_position_in_accepts_or_refuses_cleanly(time, lon, lat, speed, direction, altitude) -> None:
    try:
        p = PositionIn(time, lon, lat, speed, direction, altitude)
    except (TypeError, ValueError):
        return
    assert p.time is None or p.time.utcoffset() == timedelta(0)
    for value in (p.longitude, p.latitude, p.speed, p.direction, p.altitude):
        assert value is None or math.isfinite(value)
