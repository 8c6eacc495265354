"""Time at the edges: UTC in storage, Beijing time (``Asia/Shanghai``) for devices and people.

GB/T 28181 devices keep local time (the REGISTER 200 OK ``Date:`` sets their clock, RecordInfo and the
SDP ``t=`` line carry it), and operators and auditors read Beijing time; the host's own time zone
(often UTC in a container or a cloud) must never leak into either.  The zone is
``GBOPS_DEVICE_TIMEZONE`` (default ``Asia/Shanghai``), set once at start with :func:`set_device_timezone`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

__all__ = [
    "DEFAULT_TIMEZONE",
    "device_now",
    "device_timezone",
    "from_device_time",
    "gb_time",
    "set_device_timezone",
    "to_device_time",
]

DEFAULT_TIMEZONE = "Asia/Shanghai"
_tz = ZoneInfo(DEFAULT_TIMEZONE)


def set_device_timezone(name: str) -> None:
    """Use ``name`` (an IANA zone) for every device- and user-facing time of this process."""
    global _tz
    _tz = ZoneInfo(name)


def device_timezone() -> ZoneInfo:
    return _tz


def to_device_time(value: float | datetime) -> datetime:
    """A POSIX timestamp or an aware datetime as an aware datetime in the device time zone."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime: say which zone it is in")
        return value.astimezone(_tz)
    return datetime.fromtimestamp(value, _tz)


def device_now() -> datetime:
    return datetime.now(_tz)


def from_device_time(value: datetime) -> datetime:
    """A device's wall time (naive: in the device zone; aware: as is) as aware UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=_tz)
    return value.astimezone(UTC)


def gb_time(value: float | datetime, *, millis: bool = True) -> str:
    """GB/T 28181 time text ``YYYY-MM-DDTHH:MM:SS[.mmm]`` in the device zone, no offset (as devices expect
    in the ``Date:`` header and MANSCDP bodies)."""
    local = to_device_time(value)
    text = local.strftime("%Y-%m-%dT%H:%M:%S")
    if millis:
        text += f".{local.microsecond // 1000:03d}"
    return text
