"""Recording plans: validation and schedule windows in Beijing time whatever the host zone."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gbcore.ids import ChannelRef
from media_relay.recording.schedule import (
    in_schedule,
    next_change,
    schedule_from_json,
    schedule_to_json,
    validate_plan,
)
from media_relay.recording.types import RecordingError, RecordPlan, ScheduleWindow

CH = ChannelRef("34020000001320000001", "34020000001310000001")


def utc(*args) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


def test_windows_are_beijing_time() -> None:
    w = (ScheduleWindow((1,), "08:00", "18:00"),)  # Monday 08:00-18:00 in Beijing
    # Monday 2025-01-06 08:00 Beijing is 00:00 UTC
    assert not in_schedule(w, utc(2025, 1, 5, 23, 59, 59))
    assert in_schedule(w, utc(2025, 1, 6, 0, 0))
    assert in_schedule(w, utc(2025, 1, 6, 9, 59, 59))
    assert not in_schedule(w, utc(2025, 1, 6, 10, 0))
    assert next_change(w, utc(2025, 1, 6, 9, 0)) == 3600
    assert not in_schedule(w, utc(2025, 1, 7, 1, 0))  # Tuesday


def test_window_across_midnight_belongs_to_its_first_day() -> None:
    w = (ScheduleWindow((5,), "22:00", "06:00"),)  # Friday 22:00 to Saturday 06:00, Beijing
    assert in_schedule(w, utc(2025, 1, 10, 14, 0))  # Friday 22:00 Beijing
    assert in_schedule(w, utc(2025, 1, 10, 21, 59))  # Saturday 05:59 Beijing
    assert not in_schedule(w, utc(2025, 1, 10, 22, 0))
    assert not in_schedule(w, utc(2025, 1, 9, 21, 0))  # Friday 05:00: Thursday's night is not in the plan
    full = (ScheduleWindow((1, 2, 3, 4, 5, 6, 7), "00:00", "24:00"),)
    assert in_schedule(full, utc(2025, 3, 3, 12, 34))


@pytest.mark.parametrize("window", [
    ScheduleWindow((0,), "08:00", "09:00"), ScheduleWindow((8,), "08:00", "09:00"), ScheduleWindow((), "08:00", "09:00"),
    ScheduleWindow((1,), "8:00", "09:00"), ScheduleWindow((1,), "08:60", "09:00"), ScheduleWindow((1,), "24:00", "09:00"),
    ScheduleWindow((1,), "09:00", "09:00"), ScheduleWindow((True,), "08:00", "09:00"),
])
def test_bad_windows_are_refused(window) -> None:
    with pytest.raises(RecordingError) as exc:
        validate_plan(RecordPlan(CH, "schedule", (window,)))
    assert exc.value.code == "bad_plan"
    assert "/ " in str(exc.value)


def test_bad_plans_are_refused() -> None:
    for plan in (RecordPlan(CH, "always"), RecordPlan(CH, "continuous", stream="third"),
                 RecordPlan(CH, "schedule"), RecordPlan(ChannelRef("../x", "1"), "continuous")):
        with pytest.raises(RecordingError):
            validate_plan(plan)


def test_schedule_json_round_trip() -> None:
    plan = validate_plan(RecordPlan(CH, "schedule", (ScheduleWindow((3, 1, 1), "08:00", "24:00"),)))
    assert plan.schedule == (ScheduleWindow((1, 3), "08:00", "24:00"),)
    assert schedule_from_json(schedule_to_json(plan.schedule)) == plan.schedule
    assert schedule_from_json("not json") == ()
