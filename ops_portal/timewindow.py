"""Times at the portal's edge for history video: what people type in, what they read back.

* Input: ISO 8601 (``2025-01-01T08:00:00``, ``2025-01-01T08:00:00+08:00``, ``...Z``, a date alone).  A time
  without an offset is **Beijing time** (the device time zone of :mod:`gbcore.timeutil`), whatever the
  host's zone; the result is aware UTC (storage and the services below the portal work in UTC).
* Output: RFC 3339 in Beijing time with its offset (``2025-01-01T08:00:00+08:00``).
* A window: end after start (422 ``bad_window``), no longer than the configured cap (422
  ``window_too_long``), never starting in the future.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gbcore.timeutil import from_device_time, to_device_time
from ops_portal.schemas import ApiError

__all__ = ["beijing", "check_window", "parse_time", "parse_window"]

#: the longest ISO text accepted (a full timestamp with microseconds and an offset is 32 characters)
MAX_TEXT = 40


def parse_time(text: str | None, name: str) -> datetime:
    """``text`` (ISO 8601; no offset: Beijing time) as aware UTC; 422 ``bad_time`` naming ``name``."""
    if text is None or not str(text).strip():
        raise ApiError(422, "bad_time", f"缺少时间参数 {name} / missing time: {name}")
    raw = str(text).strip()
    try:
        if len(raw) > MAX_TEXT:
            raise ValueError(raw)
        value = datetime.fromisoformat(raw)
        value = from_device_time(value) if value.tzinfo is None else value.astimezone(UTC)
        if not 1970 <= value.year <= 9998:
            raise ValueError(raw)
    except (ValueError, OverflowError, TypeError):
        raise ApiError(422, "bad_time", f"时间格式无效（{name}），应为 ISO 8601，如 2025-01-01T08:00:00（北京时间） / "
                       f"invalid time ({name}): use ISO 8601, e.g. 2025-01-01T08:00:00 (Beijing time)") from None
    return value


def beijing(value: datetime | float | None) -> str | None:
    """An aware datetime (or Unix seconds) as RFC 3339 in Beijing time, ``+08:00``; None stays None."""
    if value is None:
        return None
    if isinstance(value, datetime) and value.tzinfo is None:  # naive: UTC, as storage keeps it
        value = value.replace(tzinfo=UTC)
    local = to_device_time(value)
    return local.isoformat(timespec="milliseconds" if local.microsecond else "seconds")


def check_window(start: datetime, end: datetime, *, max_hours: float | None, now: datetime | None = None,
                 future_ok: bool = False) -> None:
    """422 ``bad_window`` when ``end`` is not after ``start`` (or the window starts in the future), 422
    ``window_too_long`` when it is longer than ``max_hours``."""
    if end <= start:
        raise ApiError(422, "bad_window", f"结束时间必须晚于开始时间 / the end must be after the start "
                       f"({beijing(start)} – {beijing(end)})")
    now = now or datetime.now(UTC)
    if not future_ok and start > now:
        raise ApiError(422, "bad_window", f"开始时间在未来，还没有录像 / the start is in the future: there is no "
                       f"recording yet ({beijing(start)})")
    if max_hours is not None and end - start > timedelta(hours=max_hours):
        raise ApiError(422, "window_too_long", f"时间段过长：最多 {max_hours:g} 小时 / the window is too long: "
                       f"at most {max_hours:g} h")


def parse_window(start: str | None, end: str | None, *, max_hours: float | None,
                 future_ok: bool = False) -> tuple[datetime, datetime]:
    """Both ends parsed (:func:`parse_time`) and checked (:func:`check_window`)."""
    s, e = parse_time(start, "start"), parse_time(end, "end")
    check_window(s, e, max_hours=max_hours, future_ok=future_ok)
    return s, e
