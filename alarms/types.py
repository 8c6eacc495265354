"""What goes into and comes out of the alarm service: plain dataclasses, no SQLAlchemy.

:class:`AlarmIn` and :class:`PositionIn` are this package's own view of a device's report; the assembly maps
``sip_server.gb.manscdp.Alarm`` / ``MobilePosition`` into them (the device's time is Beijing time: it converts
it with :func:`gbcore.timeutil.from_device_time`).  They check what they are given and refuse the rest with a
``ValueError`` / ``TypeError`` that says what is wrong ("中文 / English"), before anything is stored.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gbcore.ids import ChannelRef, valid_gb_id

__all__ = ["DESCRIPTION_MAX", "RAW_MAX_BYTES", "AlarmIn", "AlarmRecord", "PositionIn", "PositionRecord"]

#: Longest description kept (GB/T 28181 caps ExtraInfo at 1024 characters; vendors send more): cut beyond.
DESCRIPTION_MAX = 2048
#: Largest ``raw`` accepted, as compact JSON in UTF-8.
RAW_MAX_BYTES = 16 * 1024

_INT_MAX = 2**31 - 1


def _opt_int(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} 必须是整数 / {what} must be an integer, got {type(value).__name__}")
    if not 0 <= value <= _INT_MAX:
        raise ValueError(f"{what} 超出范围 / {what} out of range: {value}")
    return value


def _opt_float(value: Any, what: str, low: float, high: float) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} 必须是数字 / {what} must be a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number) or not low <= number <= high:
        raise ValueError(f"{what} 超出范围 / {what} out of range: {value!r}")
    return number


def _aware_utc(value: Any, what: str) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"{what} 必须是时间 / {what} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} 缺少时区 / {what} is naive: say which zone it is in")
    return value.astimezone(UTC)


def _coordinates(lon: Any, lat: Any) -> tuple[float | None, float | None]:
    lon = _opt_float(lon, "longitude", -180.0, 180.0)
    lat = _opt_float(lat, "latitude", -90.0, 90.0)
    if lon is None or lat is None or (lon == 0.0 and lat == 0.0):
        # half a position is none; 0,0 is what receivers without a fix report
        return None, None
    return lon, lat


def _check_source(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not valid_gb_id(value):
        raise ValueError(f"来源编码无效 / source_id is not a device or channel id: {str(value)[:40]!r}")
    return value


def _set(obj: object, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


@dataclass(frozen=True, slots=True)
class AlarmIn:
    """An alarm as a device reported it (GB/T 28181 A.2.5.3).

    ``source_id`` is the body's DeviceID: the device itself, one of its channels (an alarm input, a camera),
    or None (the device itself).  ``time`` is the device's alarm time as an aware datetime (stored in UTC;
    None: the time it arrived).  ``priority`` 1 (most urgent) .. 4, ``method`` 1..7, ``type`` the AlarmType
    within the method, ``event_type`` the AlarmTypeParam/EventType; all None when the device left them out.
    A position of 0,0 or with one half missing is no position.  ``raw``: the body's fields as the parser saw
    them (JSON-serialisable, at most :data:`RAW_MAX_BYTES`)."""

    priority: int | None
    method: int | None
    type: int | None = None
    event_type: int | None = None
    time: datetime | None = None
    description: str | None = None
    longitude: float | None = None
    latitude: float | None = None
    raw: dict[str, Any] = field(default_factory=dict)
    source_id: str | None = None

    def __post_init__(self) -> None:
        _set(self, "priority", _opt_int(self.priority, "priority"))
        _set(self, "method", _opt_int(self.method, "method"))
        _set(self, "type", _opt_int(self.type, "type"))
        _set(self, "event_type", _opt_int(self.event_type, "event_type"))
        if self.time is not None:
            _set(self, "time", _aware_utc(self.time, "time"))
        if self.description is not None:
            if not isinstance(self.description, str):
                raise TypeError("description 必须是文本 / description must be text")
            text = self.description.replace("\x00", "").strip()
            _set(self, "description", (text[: DESCRIPTION_MAX - 1] + "…" if len(text) > DESCRIPTION_MAX else text) or None)
        lon, lat = _coordinates(self.longitude, self.latitude)
        _set(self, "longitude", lon)
        _set(self, "latitude", lat)
        if not isinstance(self.raw, dict):
            raise TypeError("raw 必须是字典 / raw must be a dict")
        try:
            size = len(json.dumps(self.raw, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode())
        except (TypeError, ValueError) as exc:
            raise ValueError(f"raw 无法保存为 JSON / raw is not JSON-serialisable: {exc}") from None
        if size > RAW_MAX_BYTES:
            raise ValueError(f"raw 过大 / raw is too large: {size} bytes (at most {RAW_MAX_BYTES})")
        _set(self, "source_id", _check_source(self.source_id))


@dataclass(frozen=True, slots=True)
class PositionIn:
    """A position report (MobilePosition, GB/T 28181 A.2.5.6) of a device or one of its channels
    (``source_id``, the body's DeviceID; None: the device itself).  ``time`` aware (None: when it arrived);
    ``speed`` km/h, ``direction`` degrees from north, ``altitude`` metres.  Without a usable position (missing,
    half, or 0,0) :meth:`AlarmService.record_position` stores nothing."""

    time: datetime | None
    longitude: float | None
    latitude: float | None
    speed: float | None = None
    direction: float | None = None
    altitude: float | None = None
    source_id: str | None = None

    def __post_init__(self) -> None:
        if self.time is not None:
            _set(self, "time", _aware_utc(self.time, "time"))
        lon, lat = _coordinates(self.longitude, self.latitude)
        _set(self, "longitude", lon)
        _set(self, "latitude", lat)
        _set(self, "speed", _opt_float(self.speed, "speed", 0.0, 100_000.0))
        _set(self, "direction", _opt_float(self.direction, "direction", -360.0, 360.0))
        _set(self, "altitude", _opt_float(self.altitude, "altitude", -20_000.0, 1_000_000.0))
        _set(self, "source_id", _check_source(self.source_id))


@dataclass(frozen=True, slots=True)
class AlarmRecord:
    """A stored alarm (every time aware UTC)."""

    id: int
    device_id: str
    channel_id: str | None
    priority: int | None
    method: int | None
    type: int | None
    event_type: int | None
    time: datetime
    received_at: datetime
    description: str | None
    longitude: float | None
    latitude: float | None
    acknowledged: bool
    acknowledged_by: str | None
    acknowledged_at: datetime | None
    ack_note: str | None
    raw: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def ref(self) -> ChannelRef | None:
        """The channel that raised it; None for an alarm of the device itself."""
        return None if self.channel_id is None else ChannelRef(self.device_id, self.channel_id)


@dataclass(frozen=True, slots=True)
class PositionRecord:
    """A stored position report."""

    id: int
    device_id: str
    channel_id: str | None
    time: datetime
    longitude: float
    latitude: float
    speed: float | None
    direction: float | None
    altitude: float | None
