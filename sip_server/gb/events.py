"""Events the GB/T 28181 core hands to its adapter (frozen dataclasses, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class DeviceOnline:
    device_id: str
    remote_addr: tuple[str, int]
    transport: str
    contact: str | None
    expires: int
    user_agent: str | None
    transition: bool  # False for a refresh of a live registration


@dataclass(frozen=True, slots=True)
class DeviceOffline:
    device_id: str
    reason: str  # unregistered | keepalive_timeout | registration_expired


@dataclass(frozen=True, slots=True)
class DeviceKeepalive:
    device_id: str
    remote_addr: tuple[str, int]
    faulty_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DeviceInfoReceived:
    device_id: str
    info: Any  # manscdp.DeviceInfo


@dataclass(frozen=True, slots=True)
class KeepaliveIntervalReported:
    device_id: str
    interval: float
    misses: int | None


@dataclass(frozen=True, slots=True)
class CatalogProgress:
    device_id: str
    progress: dict


@dataclass(frozen=True, slots=True)
class CatalogFinished:
    device_id: str
    items: tuple  # manscdp.CatalogItem, ...
    complete: bool
    state: str
    progress: dict


@dataclass(frozen=True, slots=True)
class CatalogChanged:
    """A catalog NOTIFY (subscription) update: items with an Event (ADD/DEL/UPDATE/ON/OFF...)."""

    device_id: str
    items: tuple


@dataclass(frozen=True, slots=True)
class QueryAnswered:
    device_id: str
    cmd_type: str
    sn: int
    result: Any


@dataclass(frozen=True, slots=True)
class QueryFailed:
    device_id: str
    cmd_type: str
    sn: int
    reason: str


@dataclass(frozen=True, slots=True)
class RecordsFinished:
    """A RecordInfo query finished: all SumNum items came (``query.complete``), or its deadline passed
    with what arrived. ``query`` is a :class:`sip_server.gb.records.RecordQuery`."""

    device_id: str
    sn: int
    query: Any


@dataclass(frozen=True, slots=True)
class RegisterRejected:
    device_id: str | None
    remote_addr: tuple[str, int]
    status: int
    reason: str
    locked_out: bool = False


@dataclass(frozen=True, slots=True)
class MessageRejected:
    device_id: str | None
    remote_addr: tuple[str, int]
    status: int
    reason: str


@dataclass(frozen=True, slots=True)
class NotifyReceived:
    """A notification no typed event covers (not Keepalive, Catalog, Alarm or MobilePosition), parsed."""

    device_id: str
    cmd_type: str
    message: Any


@dataclass(frozen=True, slots=True)
class SecurityEvent:
    """A request refused because it cannot be from the device it claims to be (or a REGISTER lockout).

    ``kind``: ``address_mismatch`` (a request for a registered device from another address, transport or
    TCP connection; answered 403), ``lockout`` (too many wrong passwords: ``remote_addr`` is locked out,
    and the id for new addresses). Nothing the request asked for was done."""

    kind: str
    device_id: str | None
    remote_addr: tuple[str, int]
    transport: str
    method: str
    detail: str


@dataclass(frozen=True, slots=True)
class AlarmReceived:
    """An alarm notification from a device (MESSAGE or subscription NOTIFY), answered 200; ``alarm`` is a
    :class:`sip_server.gb.manscdp.Alarm` with priority 1..4, method 1..7 and a readable (device local, Beijing)
    time. Its ``device_id`` is the alarm source (the device or one of its channels / alarm inputs)."""

    device_id: str
    alarm: Any


@dataclass(frozen=True, slots=True)
class PositionReceived:
    """A MobilePosition notification with coordinates; ``position`` is a
    :class:`sip_server.gb.manscdp.MobilePosition` (its ``device_id`` the device or channel that moved)."""

    device_id: str
    position: Any


@dataclass(frozen=True, slots=True)
class ControlDelivered:
    """The device accepted a DeviceControl MESSAGE (SIP ``status`` 2xx)."""

    device_id: str
    sn: int
    status: int


@dataclass(frozen=True, slots=True)
class SubscriptionAnswered:
    """An alarm SUBSCRIBE was answered: ``state`` "active" or "refused" (``reason`` says why)."""

    device_id: str
    kind: str
    sn: int
    state: str
    reason: str | None


# ---------------------------------------------------------------------------------------------------------------
# Toward upper platforms (this platform as a lower platform; sip_server/gb/upper.py). Every one names the upper
# by its API ``platform_id``.


@dataclass(frozen=True, slots=True)
class UpperStateChanged:
    """The registration toward an upper changed: ``state`` registering | registered | offline | disabled."""

    platform_id: int
    state: str
    reason: str | None


@dataclass(frozen=True, slots=True)
class UpperCatalogQuery:
    """Query/Catalog from the upper (answered 200); answer with ``SipService.answer_catalog``."""

    platform_id: int
    sn: int
    device_id: str


@dataclass(frozen=True, slots=True)
class UpperCatalogSubscribed:
    """A catalog SUBSCRIBE from the upper was accepted (``expires`` > 0: new subscription) or ended
    (``expires`` 0: unsubscribed, lapsed or refused by the upper's NOTIFY answer)."""

    platform_id: int
    sn: int
    expires: int


@dataclass(frozen=True, slots=True)
class UpperDeviceQuery:
    """Query DeviceInfo | DeviceStatus | RecordInfo from the upper (answered 200); ``message`` is the parsed
    :class:`sip_server.gb.manscdp.ManscdpMessage`."""

    platform_id: int
    sn: int
    cmd_type: str
    device_id: str
    message: Any


@dataclass(frozen=True, slots=True)
class UpperInvite:
    """An INVITE from the upper (100 Trying sent); ``offer`` is a :class:`sip_server.gb.upper.UpperOffer`.
    Answer with ``SipService.answer_upper_invite``."""

    platform_id: int
    call_id: str
    target_id: str
    offer: Any


@dataclass(frozen=True, slots=True)
class UpperAck:
    platform_id: int
    call_id: str


@dataclass(frozen=True, slots=True)
class UpperBye:
    """The upper's call ended without us: its BYE, its CANCEL, or no ACK to our 200 in time."""

    platform_id: int
    call_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class UpperInfo:
    """INFO inside an upper's call (answered 200): ``body`` is MANSRTSP."""

    platform_id: int
    call_id: str
    body: bytes


@dataclass(frozen=True, slots=True)
class UpperControl:
    """Control/DeviceControl from the upper (the SIP 200 is already sent); ``message`` parsed MANSCDP."""

    platform_id: int
    sn: int
    target_id: str
    message: Any


@dataclass(frozen=True, slots=True)
class UpperCatalogSent:
    """An answer to the upper's catalog query ended: ``sent`` of ``total`` items got their 200; ``error``
    None when all did."""

    platform_id: int
    sn: int
    sent: int
    total: int
    error: str | None


@dataclass(frozen=True, slots=True)
class DeviceTimeReported:
    """A DeviceStatus answer arrived (whoever asked for it): ``device_time`` its ``DeviceTime`` text (None when
    it gave none), ``sent`` when the platform sent the query it answers (wall clock, POSIX seconds; None when
    it answers no query of ours), ``received`` when it arrived (same clock).  The clock-skew sample (issue 16)."""

    device_id: str
    sn: int
    device_time: str | None
    sent: float | None
    received: float
