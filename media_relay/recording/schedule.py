"""Recording plans: validation, the JSON kept in ``record_plans.schedule``, and whether a schedule is open.

Schedule windows are Beijing time (:func:`gbcore.timeutil.to_device_time`) whatever the host zone: a
window "08:00-18:00" on Monday is Monday 08:00 to 18:00 in Beijing.  A window whose end is at or before
its start crosses midnight and belongs to the day it starts on ("22:00-06:00" on Friday covers Friday
22:00 to Saturday 06:00); "24:00" as an end is midnight at the end of the day.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta

from gbcore.ids import ChannelRef, valid_gb_id
from gbcore.timeutil import to_device_time
from media_relay.recording.types import MODES, STREAMS, RecordingError, RecordPlan, ScheduleWindow

__all__ = ["MAX_WINDOWS", "in_schedule", "next_change", "schedule_from_json", "schedule_to_json", "validate_plan"]

MAX_WINDOWS = 32
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$|^24:00$")


def _minutes(text: str) -> int:
    h, m = text.split(":")
    return int(h) * 60 + int(m)


def validate_plan(plan: RecordPlan) -> RecordPlan:
    """The plan with a normalised schedule; :class:`RecordingError` ``bad_plan`` ("中文 / English") else."""
    if not isinstance(plan.channel, tuple) or len(plan.channel) != 2:
        raise RecordingError("bad_plan", "通道无效 / invalid channel")
    channel = ChannelRef(*plan.channel)
    if not valid_gb_id(str(channel.device_id)) or not valid_gb_id(str(channel.channel_id)):
        raise RecordingError("bad_plan", "通道编号无效 / invalid channel id")
    if plan.mode not in MODES:
        raise RecordingError("bad_plan", f"录像模式无效（continuous / schedule / off）/ unknown recording mode "
                             f"{str(plan.mode)[:20]!r}")
    if plan.stream not in STREAMS:
        raise RecordingError("bad_plan", f"码流无效（main / sub）/ unknown stream {str(plan.stream)[:20]!r}")
    windows = tuple(plan.schedule or ())
    if len(windows) > MAX_WINDOWS:
        raise RecordingError("bad_plan", f"时间段过多（最多 {MAX_WINDOWS} 个）/ too many schedule windows "
                             f"(at most {MAX_WINDOWS})")
    norm = []
    for w in windows:
        if not isinstance(w, ScheduleWindow):
            raise RecordingError("bad_plan", "时间段格式错误 / malformed schedule window")
        days = w.days
        if (not isinstance(days, tuple | list) or not days
                or any(not isinstance(d, int) or isinstance(d, bool) or not 1 <= d <= 7 for d in days)):
            raise RecordingError("bad_plan", "星期应为 1（周一）到 7（周日）/ days must be 1 (Monday) to 7 (Sunday)")
        for t in (w.start, w.end):
            if not isinstance(t, str) or not _HHMM.match(t):
                raise RecordingError("bad_plan", "时间应为 HH:MM / times must be HH:MM")
        if w.start == "24:00":
            raise RecordingError("bad_plan", "开始时间不能是 24:00 / a window cannot start at 24:00")
        if w.start == w.end:
            raise RecordingError("bad_plan", "时间段的开始和结束相同 / a window's start and end are the same")
        norm.append(ScheduleWindow(tuple(sorted(set(days))), w.start, w.end))
    if plan.mode == "schedule" and not norm:
        raise RecordingError("bad_plan", "按计划录像需要至少一个时间段 / a schedule needs at least one window")
    return RecordPlan(channel, plan.mode, tuple(norm), plan.stream, plan.updated_by, plan.updated_at)


def schedule_to_json(windows: tuple[ScheduleWindow, ...]) -> str:
    return json.dumps([{"days": list(w.days), "from": w.start, "to": w.end} for w in windows])


def schedule_from_json(text: str | None) -> tuple[ScheduleWindow, ...]:
    try:
        items = json.loads(text or "[]")
        return tuple(ScheduleWindow(tuple(int(d) for d in i["days"]), str(i["from"]), str(i["to"])) for i in items)
    except (ValueError, TypeError, KeyError):
        return ()


def _spans(windows: tuple[ScheduleWindow, ...], local: datetime):
    """(start, end) of every window occurrence that begins yesterday, today or tomorrow (local, aware)."""
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    for offset in (-1, 0, 1):
        day0 = midnight + timedelta(days=offset)
        # recompute the date in the zone so that a DST zone (not Beijing) stays right enough
        for w in windows:
            if day0.isoweekday() not in w.days:
                continue
            a, b = _minutes(w.start), _minutes(w.end)
            if b <= a:
                b += 24 * 60
            yield day0 + timedelta(minutes=a), day0 + timedelta(minutes=b)


def in_schedule(windows: tuple[ScheduleWindow, ...], now: float) -> bool:
    local = to_device_time(now)
    return any(a <= local < b for a, b in _spans(windows, local))


def next_change(windows: tuple[ScheduleWindow, ...], now: float) -> float | None:
    """Seconds until the schedule next opens or closes (within two days), or None."""
    local = to_device_time(now)
    edges = [t for a, b in _spans(windows, local) for t in (a, b) if t > local]
    if not edges:
        return None
    return (min(edges) - local).total_seconds()
