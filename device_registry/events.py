"""Write-side events of the device registry.

The SIP layer turns what it sees on the wire into these plain, immutable values and submits
them to a :class:`device_registry.service.RegistryWriter`.  They carry no SQLAlchemy or SIP
types.  Construction validates and normalises the values (ids, aware timestamps, numbers in
catalog items, NUL characters), so that a bad value fails at the submitter, not later inside
a database batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

__all__ = [
    "OFFLINE_REASONS",
    "ONLINE_STATUSES",
    "CatalogReported",
    "ChannelInfo",
    "ChannelStatusChanged",
    "DeviceInfoReported",
    "DeviceRegistered",
    "DeviceSeen",
    "DeviceUnregistered",
    "DeviceWentOffline",
    "KeepaliveIntervalSet",
    "RegistryEvent",
    "is_online_status",
]

MAX_ID_LENGTH = 32

#: Reasons accepted by :class:`DeviceWentOffline`.
OFFLINE_REASONS = frozenset({"keepalive_timeout", "registration_expired", "platform_restart"})

#: Channel ``Status`` values (upper-cased) that mean "working".  GB/T 28181 says ON/OFF;
#: devices in the field also send OK and ONLINE.
ONLINE_STATUSES = frozenset({"ON", "OK", "ONLINE"})


def is_online_status(status: str | None) -> bool:
    return status is not None and status.strip().upper() in ONLINE_STATUSES


def _set(obj: object, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


def _check_id(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__}")
    value = value.strip()
    if not value or len(value) > MAX_ID_LENGTH or "\x00" in value:
        raise ValueError(f"invalid {what} {value!r}")
    return value


def _check_at(value: Any, what: str = "at") -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"{what} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got naive {value!r}")
    return value


def _clean_text(value: Any) -> str | None:
    """Free text from a device: str or None, without NUL characters (PostgreSQL refuses them)."""
    if value is None:
        return None
    if not isinstance(value, str):
        value = str(value)
    return value.replace("\x00", "")


def _to_int(value: Any) -> int | None:
    """An integer field of a catalog item; junk becomes None (devices send all sorts)."""
    number: int | None
    if value is None:
        return None
    if isinstance(value, int):  # bool included
        number = int(value)
    elif isinstance(value, float):
        number = int(value) if value.is_integer() else None
    else:
        try:
            number = int(str(value).strip())
        except ValueError:
            return None
    if number is None or not -(2**31) <= number < 2**31:
        return None
    return number


def _to_float(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value) if isinstance(value, int | float) else float(str(value).strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


_INT_FIELDS = frozenset({"parental", "safety_way", "register_way", "secrecy", "port", "ptz_type"})
_FLOAT_FIELDS = frozenset({"longitude", "latitude"})


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    """One item of a Catalog response or NOTIFY, as parsed from MANSCDP.

    Integer and float fields accept numbers or numeric strings; anything else becomes None.
    Text fields accept str (NULs dropped).  ``channel_id`` must be 1-32 characters.
    """

    channel_id: str
    name: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    owner: str | None = None
    civil_code: str | None = None
    block: str | None = None
    address: str | None = None
    parental: int | None = None
    parent_id: str | None = None
    business_group_id: str | None = None
    safety_way: int | None = None
    register_way: int | None = None
    secrecy: int | None = None
    ip_address: str | None = None
    port: int | None = None
    status: str | None = None
    ptz_type: int | None = None
    longitude: float | None = None
    latitude: float | None = None

    def __post_init__(self) -> None:
        _set(self, "channel_id", _check_id(self.channel_id, "channel_id"))
        for f in fields(self):
            if f.name == "channel_id":
                continue
            value = getattr(self, f.name)
            if f.name in _INT_FIELDS:
                _set(self, f.name, _to_int(value))
            elif f.name in _FLOAT_FIELDS:
                _set(self, f.name, _to_float(value))
            else:
                _set(self, f.name, _clean_text(value))


@dataclass(frozen=True, slots=True)
class DeviceRegistered:
    """A successful REGISTER (initial or refresh) with ``expires`` > 0 seconds."""

    device_id: str
    at: datetime
    remote_addr: str
    transport: str
    contact: str
    expires: int
    user_agent: str | None = None

    def __post_init__(self) -> None:
        _set(self, "device_id", _check_id(self.device_id, "device_id"))
        _check_at(self.at)
        transport = str(self.transport).strip().lower()
        if transport not in ("udp", "tcp"):
            raise ValueError(f"transport must be 'udp' or 'tcp', got {self.transport!r}")
        _set(self, "transport", transport)
        if isinstance(self.expires, bool) or not isinstance(self.expires, int) or self.expires <= 0:
            raise ValueError(
                f"expires must be a positive int (use DeviceUnregistered for 0), got {self.expires!r}"
            )
        _set(self, "remote_addr", _clean_text(self.remote_addr))
        _set(self, "contact", _clean_text(self.contact))
        _set(self, "user_agent", _clean_text(self.user_agent))


@dataclass(frozen=True, slots=True)
class DeviceUnregistered:
    """A REGISTER with Expires: 0."""

    device_id: str
    at: datetime

    def __post_init__(self) -> None:
        _set(self, "device_id", _check_id(self.device_id, "device_id"))
        _check_at(self.at)


@dataclass(frozen=True, slots=True)
class DeviceWentOffline:
    """The platform decided the device is gone (see :data:`OFFLINE_REASONS`)."""

    device_id: str
    at: datetime
    reason: str

    def __post_init__(self) -> None:
        _set(self, "device_id", _check_id(self.device_id, "device_id"))
        _check_at(self.at)
        if self.reason not in OFFLINE_REASONS:
            raise ValueError(f"reason must be one of {sorted(OFFLINE_REASONS)}, got {self.reason!r}")


@dataclass(frozen=True, slots=True)
class DeviceSeen:
    """A sign of life (Keepalive).  Updates ``last_seen`` only; never brings a device online."""

    device_id: str
    at: datetime
    remote_addr: str | None = None

    def __post_init__(self) -> None:
        _set(self, "device_id", _check_id(self.device_id, "device_id"))
        _check_at(self.at)
        _set(self, "remote_addr", _clean_text(self.remote_addr))


@dataclass(frozen=True, slots=True)
class DeviceInfoReported:
    """A DeviceInfo response.  None fields leave the stored value unchanged."""

    device_id: str
    at: datetime
    name: str | None
    manufacturer: str | None
    model: str | None
    firmware: str | None
    device_type: str | None
    channel_count: int | None
    charset: str | None = None

    def __post_init__(self) -> None:
        _set(self, "device_id", _check_id(self.device_id, "device_id"))
        _check_at(self.at)
        for name in ("name", "manufacturer", "model", "firmware", "device_type", "charset"):
            _set(self, name, _clean_text(getattr(self, name)))
        _set(self, "channel_count", _to_int(self.channel_count))


@dataclass(frozen=True, slots=True)
class CatalogReported:
    """Catalog items received from a device.

    ``complete`` is True when the whole list (SumNum items) arrived; only then are known
    channels missing from it marked removed.  ``state`` is a human summary for operators,
    e.g. ``'complete 8/8'`` or ``'partial 5/8 (timeout)'``.  A catalog NOTIFY with ADD/UPDATE
    items is reported as ``complete=False`` with those items.
    """

    device_id: str
    at: datetime
    channels: tuple[ChannelInfo, ...]
    complete: bool
    state: str

    def __post_init__(self) -> None:
        _set(self, "device_id", _check_id(self.device_id, "device_id"))
        _check_at(self.at)
        channels = tuple(self.channels)
        for item in channels:
            if not isinstance(item, ChannelInfo):
                raise TypeError(f"channels must hold ChannelInfo, got {type(item).__name__}")
        _set(self, "channels", channels)
        _set(self, "complete", bool(self.complete))
        _set(self, "state", _clean_text(self.state) or "")


@dataclass(frozen=True, slots=True)
class ChannelStatusChanged:
    """A catalog NOTIFY event for one channel.

    ``status`` is the GB event: ON / OFF / VLOST / DEFECT change the channel status; DEL marks
    the channel removed; ADD / UPDATE only make sure the channel exists and is not removed
    (send the item itself in a ``CatalogReported(complete=False)`` to update its fields).
    """

    device_id: str
    channel_id: str
    at: datetime
    status: str

    def __post_init__(self) -> None:
        _set(self, "device_id", _check_id(self.device_id, "device_id"))
        _set(self, "channel_id", _check_id(self.channel_id, "channel_id"))
        _check_at(self.at)
        status = _clean_text(self.status)
        if not status or not status.strip():
            raise ValueError("status must not be empty")
        _set(self, "status", status.strip().upper())


@dataclass(frozen=True, slots=True)
class KeepaliveIntervalSet:
    """The keepalive interval (seconds) agreed with / configured for a device."""

    device_id: str
    interval: int

    def __post_init__(self) -> None:
        _set(self, "device_id", _check_id(self.device_id, "device_id"))
        if (
            isinstance(self.interval, bool)
            or not isinstance(self.interval, int)
            or not 1 <= self.interval <= 86_400
        ):
            raise ValueError(f"interval must be an int between 1 and 86400, got {self.interval!r}")


RegistryEvent = (
    DeviceRegistered
    | DeviceUnregistered
    | DeviceWentOffline
    | DeviceSeen
    | DeviceInfoReported
    | CatalogReported
    | ChannelStatusChanged
    | KeepaliveIntervalSet
)
