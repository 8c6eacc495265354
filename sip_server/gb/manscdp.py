"""MANSCDP codec: the XML carried in GB/T 28181 ``Application/MANSCDP+xml`` bodies.

Pure functions only (no sockets, no asyncio, no I/O): bytes in, dataclasses out, and
dataclasses/keywords in, bytes out.

Parsing
    :func:`decode_body` turns raw body bytes into text, coping with the charset chaos seen on
    real devices (GB2312/GBK/GB18030/UTF-8, declared or not, sometimes declared wrongly).
    :func:`parse` returns a generic :class:`ManscdpMessage`; the ``as_*`` functions turn it
    into typed, frozen views (:class:`Keepalive`, :class:`CatalogPage`, ...).
    For any input bytes the only exception that escapes is :class:`ManscdpError`.

Safety
    Bodies larger than :data:`MAX_BODY_BYTES` are refused, and so is any document with a
    DOCTYPE/ENTITY/other markup declaration, so neither external entities nor entity expansion
    ("billion laughs") can ever reach the XML parser.

Building
    The ``build_*`` functions produce bytes with an XML declaration naming the requested
    charset.  GB2312 and GBK bodies are encoded with GB18030 (a superset), so characters outside
    GB2312 survive instead of raising.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = [
    "MAX_BODY_BYTES",
    "ROOTS",
    "CONTROL_WITH_RESULT",
    "DEVICE_CONTROL_ELEMENTS",
    "Alarm",
    "CatalogItem",
    "ControlResult",
    "CruisePoint",
    "CruiseTrack",
    "DeviceControl",
    "CatalogPage",
    "DeviceInfo",
    "DeviceStatus",
    "HomePositionInfo",
    "Keepalive",
    "ManscdpError",
    "MediaStatus",
    "ManscdpMessage",
    "MobilePosition",
    "PresetItem",
    "PresetList",
    "RecordInfo",
    "RecordItem",
    "as_alarm",
    "as_catalog",
    "as_control_result",
    "as_cruise_track",
    "as_cruise_tracks",
    "as_device_control",
    "as_device_info",
    "as_device_status",
    "as_home_position",
    "as_keepalive",
    "as_media_status",
    "as_mobile_position",
    "as_preset_list",
    "as_record_info",
    "build_alarm_notify",
    "build_alarm_response",
    "build_alarm_subscribe",
    "build_catalog_notify",
    "build_catalog_response",
    "build_control_response",
    "build_device_control",
    "build_device_info_response",
    "build_device_status_response",
    "build_keepalive",
    "build_media_status_notify",
    "build_message",
    "build_mobile_position_notify",
    "build_preset_response",
    "build_query",
    "build_record_info_response",
    "canonical_charset",
    "check_alarm",
    "decode_body",
    "format_gb_time",
    "parse",
    "parse_gb_time",
]

#: Largest body accepted by :func:`decode_body` / :func:`parse` (1 MiB).
MAX_BODY_BYTES = 1 << 20

#: The four MANSCDP root elements.
ROOTS = ("Query", "Response", "Notify", "Control")


class ManscdpError(ValueError):
    """A body that is not a usable MANSCDP message (the SIP layer answers 400)."""


# ---------------------------------------------------------------------------------------------
# Charsets
# ---------------------------------------------------------------------------------------------

_CHARSET_ALIASES = {
    "gb2312": "GB2312",
    "gb-2312": "GB2312",
    "gb2312-80": "GB2312",
    "csgb2312": "GB2312",
    "euc-cn": "GB2312",
    "euccn": "GB2312",
    "x-euc-cn": "GB2312",
    "gbk": "GBK",
    "x-gbk": "GBK",
    "cp936": "GBK",
    "ms936": "GBK",
    "windows-936": "GBK",
    "gb18030": "GB18030",
    "gb-18030": "GB18030",
    "utf-8": "UTF-8",
    "utf8": "UTF-8",
}
_GB_FAMILY = frozenset({"GB2312", "GBK", "GB18030"})


def canonical_charset(name: str | None) -> str | None:
    """Canonical spelling (``GB2312``, ``GBK``, ``GB18030``, ``UTF-8``) of a charset label,
    or None for a label this codec does not handle."""
    if not name:
        return None
    return _CHARSET_ALIASES.get(name.strip().lower().replace("_", "-"))


# encoding="..." inside a leading XML declaration (looked for in the first bytes only).
_DECL_ENCODING_RE = re.compile(
    rb"\s*<\?xml\b[^>]{0,200}?\bencoding\s*=\s*[\"']\s*([^\"'\s>]{0,40})\s*[\"']", re.IGNORECASE
)
# Non-ASCII characters that do not look like text from a Chinese surveillance device: used to
# choose between a UTF-8 and a GB18030 reading when the bytes are valid in both.
_IMPLAUSIBLE_RE = re.compile(
    "[^\x00-\x7f\u00a0-\u00ff\u2000-\u206f\u2460-\u24ff\u3000-\u303f"
    "\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef\U00020000-\U0003ffff]"
)


_NON_ASCII_RE = re.compile("[^\x00-\x7f]")


def _try_decode(body: bytes, codec: str) -> str | None:
    try:
        return body.decode(codec)
    except UnicodeDecodeError:
        return None


def _implausibility(text: str) -> float:
    non_ascii = len(_NON_ASCII_RE.findall(text))
    if not non_ascii:
        return 0.0
    return len(_IMPLAUSIBLE_RE.findall(text)) / non_ascii


def _utf8_wins(as_utf8: str, as_gb: str) -> bool:
    """Both readings are valid: pick the one that looks more like real text.

    Genuine GB2312 text is occasionally valid UTF-8 too (about 2% of two-character names), but
    then it reads as Latin/Greek/Cyrillic/Arabic letters; genuine UTF-8 Chinese read as GB18030
    tends to produce private-use and symbol characters.  On a tie, UTF-8 wins only when it
    yields characters beyond U+07FF (real CJK text), because a reading made of Latin-1
    characters alone is more likely GB2312 bytes."""
    bad_u = _implausibility(as_utf8)
    bad_g = _implausibility(as_gb)
    if bad_u != bad_g:
        return bad_u < bad_g
    return max(as_utf8) >= "\u0800"


def decode_body(body: bytes) -> tuple[str, str]:
    """Decode a MANSCDP body to text.

    Returns ``(text, charset)`` where *charset* is the canonical name of the charset the text
    was actually read as: the declared one (``GB2312``/``GBK``/``GB18030``/``UTF-8``; the three
    GB labels are all decoded with GB18030 so rare characters survive) or, when the declaration
    is missing, unknown or wrong, the detected one (``UTF-8`` or ``GB18030``).  A body without a
    declaration that is pure ASCII reports ``UTF-8`` (the XML default).  The XML declaration is
    left in *text*; :func:`parse` removes it.

    Tolerated: a UTF-8 BOM (stripped; it overrides the declaration), UTF-16 BOMs, a body
    declared GB2312/GBK that is really UTF-8, a body declared UTF-8 that is really GB18030, and
    stray undecodable bytes (replaced by U+FFFD when no reading is clean).
    """
    if not isinstance(body, bytes | bytearray | memoryview):
        raise ManscdpError(f"body must be bytes, not {type(body).__name__}")
    body = bytes(body)
    if len(body) > MAX_BODY_BYTES:
        raise ManscdpError(f"body too large: {len(body)} bytes (limit {MAX_BODY_BYTES})")

    if body[:2] in (b"\xff\xfe", b"\xfe\xff"):
        codec = "utf-16-le" if body[:2] == b"\xff\xfe" else "utf-16-be"
        text = _try_decode(body[2:], codec)
        if text is None:
            raise ManscdpError("body has a UTF-16 byte order mark but is not valid UTF-16")
        return text, "UTF-16"

    declared: str | None
    if body[:3] == b"\xef\xbb\xbf":
        body = body[3:]
        declared = "UTF-8"
    else:
        m = _DECL_ENCODING_RE.match(body, 0, 256)
        declared = canonical_charset(m.group(1).decode("ascii", "replace")) if m else None

    if body.isascii():  # the common case (keepalives): every charset reads ASCII the same way
        return body.decode("ascii"), declared or "UTF-8"

    as_utf8 = _try_decode(body, "utf-8")
    as_gb = _try_decode(body, "gb18030")

    if declared == "UTF-8":
        if as_utf8 is not None:
            return as_utf8, "UTF-8"
        if as_gb is not None:
            return as_gb, "GB18030"
        return body.decode("utf-8", "replace"), "UTF-8"

    if declared in _GB_FAMILY:
        if as_utf8 is not None and (as_gb is None or _utf8_wins(as_utf8, as_gb)):
            return as_utf8, "UTF-8"
        if as_gb is not None:
            return as_gb, declared
        return body.decode("gb18030", "replace"), declared

    # No declaration, or a label we do not know (ISO-8859-1 and friends on Chinese devices
    # almost always mean "whatever the firmware had"): detect.
    if as_utf8 is not None and (as_gb is None or _utf8_wins(as_utf8, as_gb)):
        return as_utf8, "UTF-8"
    if as_gb is not None:
        return as_gb, "GB18030"
    return body.decode("gb18030", "replace"), "GB18030"


# ---------------------------------------------------------------------------------------------
# Generic message
# ---------------------------------------------------------------------------------------------

_XML_DECL_RE = re.compile(r"\s*<\?xml(?:\s[^>]*)?\?>", re.IGNORECASE)
_MARKUP_DECL_RE = re.compile(r"<!\s*(?:DOCTYPE|ENTITY|ELEMENT|ATTLIST|NOTATION)", re.IGNORECASE)
_SN_RE = re.compile(r"\d{1,20}", re.ASCII)
_ROOTS_BY_LOWER = {r.lower(): r for r in ROOTS}

# Known CmdType values, so vendors' case variants ("KeepAlive") compare equal.
_CMD_TYPES = (
    "Keepalive",
    "Catalog",
    "DeviceInfo",
    "DeviceStatus",
    "RecordInfo",
    "Alarm",
    "MobilePosition",
    "DeviceControl",
    "DeviceConfig",
    "ConfigDownload",
    "PresetQuery",
    "Broadcast",
    "MediaStatus",
    "HomePositionQuery",
    "CruiseTrackListQuery",
    "CruiseTrackQuery",
    "PTZPosition",
    "SDCardStatus",
    "DeviceUpgradeResult",
    "UploadSnapShotFinished",
    "VideoUploadNotify",
)
_CMD_TYPES_BY_LOWER = {c.lower(): c for c in _CMD_TYPES}


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1] if "}" in tag else tag


class _Children:
    """Index of an element's children: exact tag first, then case-insensitive."""

    __slots__ = ("exact", "lower")

    def __init__(self, el: ET.Element) -> None:
        exact: dict[str, ET.Element] = {}
        lower: dict[str, ET.Element] = {}
        for child in el:
            tag = _local(child.tag)
            exact.setdefault(tag, child)
            lower.setdefault(tag.lower(), child)
        self.exact = exact
        self.lower = lower

    def el(self, name: str) -> ET.Element | None:
        child = self.exact.get(name)
        return child if child is not None else self.lower.get(name.lower())

    def text(self, name: str) -> str | None:
        """Stripped text of child *name*; None when absent or empty."""
        child = self.el(name)
        if child is None:
            return None
        return (child.text or "").strip() or None


def _simple_fields(el: ET.Element) -> dict[str, str]:
    """Stripped text of the children that have no children themselves (first one wins)."""
    out: dict[str, str] = {}
    for child in el:
        if len(child) == 0:
            tag = _local(child.tag)
            if tag not in out:
                out[tag] = (child.text or "").strip()
    return out


def _get_ci(mapping: Mapping[str, str], name: str) -> str | None:
    value = mapping.get(name)
    if value is not None:
        return value
    low = name.lower()
    for key, value in mapping.items():
        if key.lower() == low:
            return value
    return None


@dataclass
class ManscdpMessage:
    """A parsed MANSCDP body.

    *root* and *cmd_type* are canonicalised (``KeepAlive`` -> ``Keepalive``) when known;
    *fields* holds the stripped text of every top-level child without children, under the tag
    name as sent.  *element* is the parsed root, used by the ``as_*`` views.
    """

    root: str
    cmd_type: str
    sn: int
    device_id: str
    charset: str
    fields: dict[str, str]
    element: ET.Element | None = field(default=None, repr=False, compare=False)

    def get(self, name: str, default: str | None = None) -> str | None:
        """A top-level field by name: exact match first, then case-insensitive."""
        value = _get_ci(self.fields, name)
        return default if value is None else value

    def find(self, name: str) -> ET.Element | None:
        """A top-level child element by name (exact first, then case-insensitive)."""
        if self.element is None:
            return None
        return _Children(self.element).el(name)


def _parse_xml(text: str) -> ET.Element:
    if text[:1] == "\ufeff":  # a BOM that survived decoding (e.g. GB18030-encoded)
        text = text[1:]
    m = _XML_DECL_RE.match(text)
    if m:
        text = text[m.end() :]
    if "<!" in text and _MARKUP_DECL_RE.search(text):
        raise ManscdpError("DOCTYPE/ENTITY declarations are not allowed in MANSCDP bodies")
    try:
        parser = ET.XMLParser()
        parser.feed(text)
        return parser.close()
    except ET.ParseError as exc:
        raise ManscdpError(f"malformed XML: {exc}") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:  # defensive
        raise ManscdpError(f"unparsable XML: {exc}") from None


def parse(body: bytes) -> ManscdpMessage:
    """Parse a MANSCDP body.  Raises only :class:`ManscdpError`.

    Requires one of the four roots (case-insensitive), a non-empty ``CmdType``, a decimal
    ``SN`` and a ``DeviceID`` (for ``Broadcast`` messages, which carry ``SourceID``/``TargetID``
    instead, ``TargetID`` then ``SourceID`` stands in for it).
    """
    text, charset = decode_body(body)
    el = _parse_xml(text)

    root = _ROOTS_BY_LOWER.get(_local(el.tag).lower())
    if root is None:
        raise ManscdpError(f"unexpected root element <{_local(el.tag)[:40]}>")
    fields = _simple_fields(el)

    cmd = _get_ci(fields, "CmdType")
    if not cmd:
        raise ManscdpError(f"<{root}> without CmdType")
    cmd_type = _CMD_TYPES_BY_LOWER.get(cmd.lower(), cmd)

    sn_text = _get_ci(fields, "SN")
    if sn_text is None:
        raise ManscdpError(f"{root}/{cmd_type[:40]} without SN")
    if not _SN_RE.fullmatch(sn_text):
        raise ManscdpError(f"SN is not a decimal number: {sn_text[:40]!r}")
    sn = int(sn_text)

    device_id = _get_ci(fields, "DeviceID")
    if not device_id and cmd_type == "Broadcast":
        device_id = _get_ci(fields, "TargetID") or _get_ci(fields, "SourceID")
    if not device_id:
        raise ManscdpError(f"{root}/{cmd_type[:40]} without DeviceID")

    return ManscdpMessage(
        root=root,
        cmd_type=cmd_type,
        sn=sn,
        device_id=device_id,
        charset=charset,
        fields=fields,
        element=el,
    )


# ---------------------------------------------------------------------------------------------
# Tolerant scalar conversions
# ---------------------------------------------------------------------------------------------

_INT_RE = re.compile(r"[+-]?\d{1,18}", re.ASCII)
_FLOAT_RE = re.compile(r"[+-]?(?:\d{1,30}(?:\.\d{0,30})?|\.\d{1,30})(?:[eE][+-]?\d{1,3})?", re.ASCII)
_TIME_RE = re.compile(
    r"(\d{4})-(\d{1,2})-(\d{1,2})[T ](\d{1,2}):(\d{1,2}):(\d{1,2})(?:\.(\d{1,6})\d*)?", re.ASCII
)


def _to_int(value: str | None) -> int | None:
    if value is None:
        return None
    value = value.strip()
    return int(value) if _INT_RE.fullmatch(value) else None


def _to_float(value: str | None) -> float | None:
    if value is None:
        return None
    value = value.strip()
    if not _FLOAT_RE.fullmatch(value):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _coordinate(value: str | None, limit: float) -> float | None:
    """Longitude (limit 180) or latitude (limit 90); 0 ("not set" on most devices) -> None."""
    number = _to_float(value)
    if number is None or number == 0 or abs(number) > limit:
        return None
    return number


def parse_gb_time(value: str | None) -> datetime | None:
    """``YYYY-MM-DDTHH:MM:SS`` (optionally with fractional seconds, or a space for ``T``) to a
    naive datetime; None for anything else."""
    if not value:
        return None
    m = _TIME_RE.fullmatch(value.strip())
    if not m:
        return None
    year, month, day, hour, minute, second, frac = m.groups()
    try:
        return datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second),
            int(frac.ljust(6, "0")) if frac else 0,
        )
    except ValueError:
        return None


def format_gb_time(value: datetime) -> str:
    """A datetime as ``YYYY-MM-DDTHH:MM:SS`` (local wall-clock, as GB/T 28181 uses)."""
    return (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d}"
        f"T{value.hour:02d}:{value.minute:02d}:{value.second:02d}"
    )


# ---------------------------------------------------------------------------------------------
# Typed views
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Keepalive:
    device_id: str
    sn: int
    status: str | None
    faulty_device_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class CatalogItem:
    """One ``<Item>`` of a Catalog response/notify.

    Optional strings are None when absent or empty; numeric fields are None when absent or
    not a number.  *raw* has the stripped text of every simple child of the item as sent, plus
    the children of ``<Info>`` under ``"Info/<Tag>"``.  Builders ignore *raw*.
    """

    device_id: str
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
    longitude: float | None = None
    latitude: float | None = None
    ptz_type: int | None = None
    event: str | None = None
    raw: dict[str, str] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class CatalogPage:
    """One Catalog message.  *sum_num* is the total the device announces across all pages
    (falls back to the larger of *num* and the item count when missing or garbage); *num* is
    the ``DeviceList Num`` attribute, which may differ from both."""

    device_id: str
    sn: int
    sum_num: int
    items: list[CatalogItem]
    num: int | None = None
    is_notify: bool = False


@dataclass(frozen=True)
class DeviceInfo:
    device_id: str
    sn: int
    result: str | None
    device_name: str | None
    manufacturer: str | None
    model: str | None
    firmware: str | None
    channel: int | None
    device_type: str | None
    max_camera: int | None
    max_alarm: int | None
    raw: dict[str, str] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class DeviceStatus:
    """``online`` is True for ``ONLINE``, False for ``OFFLINE``, None otherwise (the text is
    in ``raw["Online"]``).  ``alarms`` lists ``(DeviceID, DutyStatus)`` from ``Alarmstatus``."""

    device_id: str
    sn: int
    result: str | None
    online: bool | None
    status: str | None
    encode: str | None
    record: str | None
    device_time: str | None
    alarms: list[tuple[str, str]] = field(default_factory=list)
    raw: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def device_datetime(self) -> datetime | None:
        return parse_gb_time(self.device_time)


@dataclass(frozen=True)
class RecordItem:
    device_id: str
    name: str | None = None
    file_path: str | None = None
    address: str | None = None
    start_time: str | None = None
    end_time: str | None = None
    secrecy: int | None = None
    type: str | None = None
    recorder_id: str | None = None
    file_size: int | None = None
    raw: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def start(self) -> datetime | None:
        return parse_gb_time(self.start_time)

    @property
    def end(self) -> datetime | None:
        return parse_gb_time(self.end_time)


@dataclass(frozen=True)
class RecordInfo:
    """One RecordInfo response page; *sum_num* as in :class:`CatalogPage`."""

    device_id: str
    sn: int
    name: str | None
    sum_num: int
    items: list[RecordItem]
    num: int | None = None


@dataclass(frozen=True)
class MediaStatus:
    """Notify/MediaStatus (A.2.5.4), sent inside a playback or download call: NotifyType ``121`` (the only
    value the standard defines) says the history file has been sent to the end."""

    device_id: str
    sn: int
    notify_type: str


@dataclass(frozen=True)
class Alarm:
    """An alarm Notify.  ``alarm_type`` comes from ``<Info><AlarmType>`` (or a top-level
    ``AlarmType``), ``event_type`` from ``<Info><AlarmTypeParam><EventType>``."""

    device_id: str
    sn: int
    alarm_priority: int | None
    alarm_method: int | None
    alarm_time: str | None
    alarm_description: str | None
    longitude: float | None
    latitude: float | None
    alarm_type: int | None
    event_type: int | None = None
    raw: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def alarm_datetime(self) -> datetime | None:
        return parse_gb_time(self.alarm_time)


@dataclass(frozen=True)
class MobilePosition:
    device_id: str
    sn: int
    time: str | None
    longitude: float | None
    latitude: float | None
    speed: float | None
    direction: float | None
    altitude: float | None


def _expect(msg: Any, roots: tuple[str, ...], cmd_type: str) -> tuple[ManscdpMessage, _Children]:
    if isinstance(msg, bytes | bytearray | memoryview):
        msg = parse(msg)
    if not isinstance(msg, ManscdpMessage):
        raise ManscdpError(f"expected a ManscdpMessage, got {type(msg).__name__}")
    if msg.cmd_type != cmd_type or msg.root not in roots:
        raise ManscdpError(f"expected {'/'.join(roots)} {cmd_type}, got {msg.root} {msg.cmd_type[:40]}")
    if msg.element is None:
        raise ManscdpError("message carries no parsed element")
    return msg, _Children(msg.element)


def _items(container: ET.Element | None) -> list[ET.Element]:
    if container is None:
        return []
    return [child for child in container if _local(child.tag).lower() == "item"]


def _num_attr(container: ET.Element | None) -> int | None:
    if container is None:
        return None
    value = container.get("Num")
    if value is None:
        for key, val in container.attrib.items():
            if _local(key).lower() == "num":
                value = val
                break
    return _to_int(value)


def _sum_num(kids: _Children, num: int | None, count: int) -> int:
    value = _to_int(kids.text("SumNum"))
    if value is None or value < 0:
        return max(num or 0, count)
    return value


def as_keepalive(msg: ManscdpMessage) -> Keepalive:
    """Notify/Keepalive.  ``faulty_device_ids`` are the ``<Info><DeviceID>`` entries (the
    faulty or offline sub-devices of an NVR); empty when ``<Info>`` is missing or empty."""
    msg, kids = _expect(msg, ("Notify",), "Keepalive")
    faulty: list[str] = []
    info = kids.el("Info")
    if info is not None:
        for child in info:
            if _local(child.tag).lower() == "deviceid":
                text = (child.text or "").strip()
                if text:
                    faulty.append(text)
    return Keepalive(device_id=msg.device_id, sn=msg.sn, status=kids.text("Status"), faulty_device_ids=faulty)


def _catalog_item(el: ET.Element) -> CatalogItem | None:
    kids = _Children(el)
    device_id = kids.text("DeviceID")
    if not device_id:
        return None
    raw = _simple_fields(el)
    info = kids.el("Info")
    info_kids = _Children(info) if info is not None else None
    if info is not None:
        for key, value in _simple_fields(info).items():
            raw.setdefault(f"Info/{key}", value)
    ptz = info_kids.text("PTZType") if info_kids is not None else None
    if ptz is None:
        ptz = kids.text("PTZType")
    return CatalogItem(
        device_id=device_id,
        name=kids.text("Name"),
        manufacturer=kids.text("Manufacturer"),
        model=kids.text("Model"),
        owner=kids.text("Owner"),
        civil_code=kids.text("CivilCode"),
        block=kids.text("Block"),
        address=kids.text("Address"),
        parental=_to_int(kids.text("Parental")),
        parent_id=kids.text("ParentID"),
        business_group_id=kids.text("BusinessGroupID"),
        safety_way=_to_int(kids.text("SafetyWay")),
        register_way=_to_int(kids.text("RegisterWay")),
        secrecy=_to_int(kids.text("Secrecy")),
        ip_address=kids.text("IPAddress"),
        port=_to_int(kids.text("Port")),
        status=kids.text("Status"),
        longitude=_coordinate(kids.text("Longitude"), 180.0),
        latitude=_coordinate(kids.text("Latitude"), 90.0),
        ptz_type=_to_int(ptz),
        event=kids.text("Event"),
        raw=raw,
    )


def as_catalog(msg: ManscdpMessage) -> CatalogPage:
    """Response/Catalog or Notify/Catalog (items then carry ``event``).  Items without a
    DeviceID are skipped."""
    msg, kids = _expect(msg, ("Response", "Notify"), "Catalog")
    device_list = kids.el("DeviceList")
    items = [item for item in map(_catalog_item, _items(device_list)) if item is not None]
    num = _num_attr(device_list)
    return CatalogPage(
        device_id=msg.device_id,
        sn=msg.sn,
        sum_num=_sum_num(kids, num, len(items)),
        items=items,
        num=num,
        is_notify=msg.root == "Notify",
    )


def as_device_info(msg: ManscdpMessage) -> DeviceInfo:
    """Response/DeviceInfo."""
    msg, kids = _expect(msg, ("Response",), "DeviceInfo")
    return DeviceInfo(
        device_id=msg.device_id,
        sn=msg.sn,
        result=kids.text("Result"),
        device_name=kids.text("DeviceName"),
        manufacturer=kids.text("Manufacturer"),
        model=kids.text("Model"),
        firmware=kids.text("Firmware"),
        channel=_to_int(kids.text("Channel")),
        device_type=kids.text("DeviceType"),
        max_camera=_to_int(kids.text("MaxCamera")),
        max_alarm=_to_int(kids.text("MaxAlarm")),
        raw=dict(msg.fields),
    )


def _online(value: str | None) -> bool | None:
    if value is None:
        return None
    value = value.upper()
    if value == "ONLINE":
        return True
    if value == "OFFLINE":
        return False
    return None


def as_device_status(msg: ManscdpMessage) -> DeviceStatus:
    """Response/DeviceStatus; ``Alarmstatus`` is also found as ``AlarmStatus`` etc."""
    msg, kids = _expect(msg, ("Response",), "DeviceStatus")
    alarms: list[tuple[str, str]] = []
    for item in _items(kids.el("Alarmstatus")):
        item_kids = _Children(item)
        alarm_id = item_kids.text("DeviceID")
        if alarm_id:
            alarms.append((alarm_id, item_kids.text("DutyStatus") or ""))
    return DeviceStatus(
        device_id=msg.device_id,
        sn=msg.sn,
        result=kids.text("Result"),
        online=_online(kids.text("Online")),
        status=kids.text("Status"),
        encode=kids.text("Encode"),
        record=kids.text("Record"),
        device_time=kids.text("DeviceTime"),
        alarms=alarms,
        raw=dict(msg.fields),
    )


def _record_item(el: ET.Element) -> RecordItem | None:
    kids = _Children(el)
    device_id = kids.text("DeviceID")
    if not device_id:
        return None
    return RecordItem(
        device_id=device_id,
        name=kids.text("Name"),
        file_path=kids.text("FilePath"),
        address=kids.text("Address"),
        start_time=kids.text("StartTime"),
        end_time=kids.text("EndTime"),
        secrecy=_to_int(kids.text("Secrecy")),
        type=kids.text("Type"),
        recorder_id=kids.text("RecorderID"),
        file_size=_to_int(kids.text("FileSize")),
        raw=_simple_fields(el),
    )


def as_record_info(msg: ManscdpMessage) -> RecordInfo:
    """Response/RecordInfo (one page).  Items without a DeviceID are skipped."""
    msg, kids = _expect(msg, ("Response",), "RecordInfo")
    record_list = kids.el("RecordList")
    items = [item for item in map(_record_item, _items(record_list)) if item is not None]
    num = _num_attr(record_list)
    return RecordInfo(
        device_id=msg.device_id,
        sn=msg.sn,
        name=kids.text("Name"),
        sum_num=_sum_num(kids, num, len(items)),
        items=items,
        num=num,
    )


_NOTIFY_TYPE_RE = re.compile(r"[0-9A-Za-z_-]{1,16}", re.ASCII)


def as_media_status(msg: ManscdpMessage) -> MediaStatus:
    """Notify/MediaStatus.  ``NotifyType`` is required: a short code (digits in practice, ``121``)."""
    msg, kids = _expect(msg, ("Notify",), "MediaStatus")
    notify_type = kids.text("NotifyType")
    if notify_type is None:
        raise ManscdpError("MediaStatus without NotifyType")
    if not _NOTIFY_TYPE_RE.fullmatch(notify_type):
        raise ManscdpError(f"bad MediaStatus NotifyType {notify_type[:20]!r}")
    return MediaStatus(device_id=msg.device_id, sn=msg.sn, notify_type=notify_type)


def as_alarm(msg: ManscdpMessage) -> Alarm:
    """Notify/Alarm (a Response/Alarm is accepted too)."""
    msg, kids = _expect(msg, ("Notify", "Response"), "Alarm")
    info = kids.el("Info")
    info_kids = _Children(info) if info is not None else None
    alarm_type = info_kids.text("AlarmType") if info_kids is not None else None
    if alarm_type is None:
        alarm_type = kids.text("AlarmType")
    event_type = None
    if info_kids is not None:
        param = info_kids.el("AlarmTypeParam")
        if param is not None:
            event_type = _to_int(_Children(param).text("EventType"))
    return Alarm(
        device_id=msg.device_id,
        sn=msg.sn,
        alarm_priority=_to_int(kids.text("AlarmPriority")),
        alarm_method=_to_int(kids.text("AlarmMethod")),
        alarm_time=kids.text("AlarmTime"),
        alarm_description=kids.text("AlarmDescription"),
        longitude=_coordinate(kids.text("Longitude"), 180.0),
        latitude=_coordinate(kids.text("Latitude"), 90.0),
        alarm_type=_to_int(alarm_type),
        event_type=event_type,
        raw=dict(msg.fields),
    )


def as_mobile_position(msg: ManscdpMessage) -> MobilePosition:
    """Notify/MobilePosition (a Response is accepted too)."""
    msg, kids = _expect(msg, ("Notify", "Response"), "MobilePosition")
    return MobilePosition(
        device_id=msg.device_id,
        sn=msg.sn,
        time=kids.text("Time"),
        longitude=_coordinate(kids.text("Longitude"), 180.0),
        latitude=_coordinate(kids.text("Latitude"), 90.0),
        speed=_to_float(kids.text("Speed")),
        direction=_to_float(kids.text("Direction")),
        altitude=_to_float(kids.text("Altitude")),
    )


# ---------------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------------

_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
# Characters XML 1.0 cannot carry at all, even as references.
_XML_ILLEGAL_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "\r": "&#13;"})

# A node is (tag, value, attributes); value is text or a list of child nodes.
_Node = tuple[str, "str | list[_Node]", "dict[str, str] | None"]


def _escape(value: str) -> str:
    if _XML_ILLEGAL_RE.search(value):
        raise ManscdpError(f"value contains characters XML cannot carry: {value[:40]!r}")
    return value.translate(_ESCAPES)


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or name.lower().startswith("xml"):
        raise ManscdpError(f"invalid element name: {name!r}")
    return name


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float | str):
        return str(value)
    if isinstance(value, datetime):
        return format_gb_time(value)
    raise ManscdpError(f"unsupported value type for MANSCDP text: {type(value).__name__}")


def _write(out: list[str], node: _Node) -> None:
    tag, value, attrs = node
    attr_text = "".join(f' {k}="{_escape(v)}"' for k, v in attrs.items()) if attrs else ""
    if isinstance(value, str):
        out.append(f"<{tag}{attr_text}>{_escape(value)}</{tag}>\n")
    else:
        out.append(f"<{tag}{attr_text}>\n")
        for child in value:
            _write(out, child)
        out.append(f"</{tag}>\n")


def _nodes_from(extra: Mapping[str, Any] | Iterable[tuple[str, Any]] | None) -> list[_Node]:
    """User fields to nodes: None values are skipped, mappings/pair lists become nested
    elements, scalars become text."""
    if extra is None:
        return []
    pairs = extra.items() if isinstance(extra, Mapping) else extra
    nodes: list[_Node] = []
    for pair in pairs:
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise ManscdpError(f"expected (name, value) pairs, got {pair!r:.60}")
        name, value = pair
        if value is None:
            continue
        _check_name(name)
        if isinstance(value, Mapping) or (isinstance(value, list | tuple) and not isinstance(value, str)):
            nodes.append((name, _nodes_from(value), None))
        else:
            nodes.append((name, _scalar(value), None))
    return nodes


def _encode(root: str, children: list[_Node], charset: str) -> bytes:
    canon = canonical_charset(charset)
    if canon is None:
        raise ManscdpError(f"unsupported charset for building: {charset!r}")
    out = [f'<?xml version="1.0" encoding="{canon}"?>\n']
    _write(out, (root, children, None))
    return "".join(out).encode("utf-8" if canon == "UTF-8" else "gb18030")


def _header(cmd_type: str, sn: int, device_id: str) -> list[_Node]:
    if isinstance(sn, bool) or not isinstance(sn, int) or sn < 0:
        raise ManscdpError(f"SN must be a non-negative int, got {sn!r}")
    if not isinstance(cmd_type, str) or not cmd_type:
        raise ManscdpError("CmdType must be a non-empty string")
    if not isinstance(device_id, str) or not device_id:
        raise ManscdpError("DeviceID must be a non-empty string")
    return [("CmdType", cmd_type, None), ("SN", str(sn), None), ("DeviceID", device_id, None)]


def build_message(
    root: str,
    cmd_type: str,
    sn: int,
    device_id: str,
    *,
    charset: str = "GB2312",
    extra: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None,
) -> bytes:
    """Any MANSCDP message: ``<root><CmdType/><SN/><DeviceID/>extra...</root>``.

    *extra* maps element names to text (str/int/float/datetime; None skips the element) or to
    a nested mapping / list of ``(name, value)`` pairs for child elements, e.g.
    ``{"PTZCmd": "A50F01...", "Info": {"ControlPriority": 5}}``.
    """
    if root not in ROOTS:
        raise ManscdpError(f"root must be one of {ROOTS}, got {root!r}")
    return _encode(root, _header(cmd_type, sn, device_id) + _nodes_from(extra), charset)


def build_query(
    cmd_type: str,
    sn: int,
    device_id: str,
    *,
    charset: str = "GB2312",
    extra: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None,
) -> bytes:
    """A ``<Query>`` (Catalog, DeviceInfo, DeviceStatus, RecordInfo, ...); see
    :func:`build_message` for *extra*."""
    return build_message("Query", cmd_type, sn, device_id, charset=charset, extra=extra)


def build_keepalive(
    sn: int,
    device_id: str,
    *,
    charset: str = "GB2312",
    status: str = "OK",
    faulty_device_ids: Iterable[str] | None = None,
) -> bytes:
    """Notify/Keepalive; *faulty_device_ids* (if given) go into ``<Info>``."""
    children = _header("Keepalive", sn, device_id) + [("Status", _scalar(status), None)]
    if faulty_device_ids is not None:
        children.append(("Info", [("DeviceID", _scalar(d), None) for d in faulty_device_ids], None))
    return _encode("Notify", children, charset)


def _opt(tag: str, value: Any) -> list[_Node]:
    return [] if value is None else [(tag, _scalar(value), None)]


def _catalog_item_node(item: CatalogItem, *, with_event: bool) -> _Node:
    if not isinstance(item, CatalogItem):
        raise ManscdpError(f"catalog items must be CatalogItem, got {type(item).__name__}")
    children: list[_Node] = [("DeviceID", _scalar(item.device_id), None)]
    if with_event:
        children += _opt("Event", item.event)
    children += (
        _opt("Name", item.name)
        + _opt("Manufacturer", item.manufacturer)
        + _opt("Model", item.model)
        + _opt("Owner", item.owner)
        + _opt("CivilCode", item.civil_code)
        + _opt("Block", item.block)
        + _opt("Address", item.address)
        + _opt("Parental", item.parental)
        + _opt("ParentID", item.parent_id)
        + _opt("BusinessGroupID", item.business_group_id)
        + _opt("SafetyWay", item.safety_way)
        + _opt("RegisterWay", item.register_way)
        + _opt("Secrecy", item.secrecy)
        + _opt("IPAddress", item.ip_address)
        + _opt("Port", item.port)
        + _opt("Status", item.status)
        + _opt("Longitude", item.longitude)
        + _opt("Latitude", item.latitude)
    )
    if item.ptz_type is not None:
        children.append(("Info", [("PTZType", _scalar(item.ptz_type), None)], None))
    return ("Item", children, None)


def _catalog(
    root: str, sn: int, device_id: str, sum_num: int, items: Iterable[CatalogItem], charset: str
) -> bytes:
    notify = root == "Notify"
    nodes = [_catalog_item_node(item, with_event=notify) for item in items]
    children = _header("Catalog", sn, device_id) + [
        ("SumNum", _scalar(int(sum_num)), None),
        ("DeviceList", nodes, {"Num": str(len(nodes))}),
    ]
    return _encode(root, children, charset)


def build_catalog_response(
    sn: int, device_id: str, sum_num: int, items: Iterable[CatalogItem], *, charset: str = "GB2312"
) -> bytes:
    """Response/Catalog carrying *items* (possibly one page of *sum_num*); ``Num`` is the
    number of items in this message.  ``CatalogItem.raw`` and ``.event`` are not written."""
    return _catalog("Response", sn, device_id, sum_num, items, charset)


def build_catalog_notify(
    sn: int, device_id: str, sum_num: int, items: Iterable[CatalogItem], *, charset: str = "GB2312"
) -> bytes:
    """Notify/Catalog (catalog subscription change); each item's ``event`` is written."""
    return _catalog("Notify", sn, device_id, sum_num, items, charset)


def build_device_info_response(
    sn: int,
    device_id: str,
    *,
    device_name: str,
    manufacturer: str,
    model: str,
    firmware: str,
    channel: int | None,
    device_type: str | None = None,
    max_camera: int | None = None,
    max_alarm: int | None = None,
    result: str = "OK",
    charset: str = "GB2312",
) -> bytes:
    """Response/DeviceInfo."""
    children = (
        _header("DeviceInfo", sn, device_id)
        + [("Result", _scalar(result), None)]
        + _opt("DeviceName", device_name)
        + _opt("DeviceType", device_type)
        + _opt("Manufacturer", manufacturer)
        + _opt("Model", model)
        + _opt("Firmware", firmware)
        + _opt("MaxCamera", max_camera)
        + _opt("MaxAlarm", max_alarm)
        + _opt("Channel", channel)
    )
    return _encode("Response", children, charset)


def build_device_status_response(
    sn: int,
    device_id: str,
    *,
    online: bool = True,
    status: str = "OK",
    record: str = "OFF",
    device_time: str | datetime,
    encode: str = "ON",
    alarms: Iterable[tuple[str, str]] | None = None,
    result: str = "OK",
    charset: str = "GB2312",
) -> bytes:
    """Response/DeviceStatus; *alarms* are ``(DeviceID, DutyStatus)`` pairs written as
    ``<Alarmstatus Num="n">``."""
    children = _header("DeviceStatus", sn, device_id) + [
        ("Result", _scalar(result), None),
        ("Online", "ONLINE" if online else "OFFLINE", None),
        ("Status", _scalar(status), None),
        ("DeviceTime", _scalar(device_time), None),
        ("Encode", _scalar(encode), None),
        ("Record", _scalar(record), None),
    ]
    if alarms is not None:
        alarm_nodes: list[_Node] = [
            ("Item", [("DeviceID", _scalar(alarm_id), None), ("DutyStatus", _scalar(duty), None)], None)
            for alarm_id, duty in alarms
        ]
        children.append(("Alarmstatus", alarm_nodes, {"Num": str(len(alarm_nodes))}))
    return _encode("Response", children, charset)


def build_record_info_response(
    sn: int,
    device_id: str,
    sum_num: int,
    items: Iterable[RecordItem],
    *,
    name: str | None = None,
    charset: str = "GB2312",
) -> bytes:
    """Response/RecordInfo carrying *items* (one page of *sum_num*)."""
    nodes: list[_Node] = []
    for item in items:
        if not isinstance(item, RecordItem):
            raise ManscdpError(f"record items must be RecordItem, got {type(item).__name__}")
        nodes.append(
            (
                "Item",
                [("DeviceID", _scalar(item.device_id), None)]
                + _opt("Name", item.name)
                + _opt("FilePath", item.file_path)
                + _opt("Address", item.address)
                + _opt("StartTime", item.start_time)
                + _opt("EndTime", item.end_time)
                + _opt("Secrecy", item.secrecy)
                + _opt("Type", item.type)
                + _opt("RecorderID", item.recorder_id)
                + _opt("FileSize", item.file_size),
                None,
            )
        )
    children = (
        _header("RecordInfo", sn, device_id)
        + _opt("Name", name)
        + [("SumNum", _scalar(int(sum_num)), None), ("RecordList", nodes, {"Num": str(len(nodes))})]
    )
    return _encode("Response", children, charset)


def build_media_status_notify(sn: int, device_id: str, notify_type: str | int = "121", *,
                              charset: str = "GB2312") -> bytes:
    """Notify/MediaStatus (the end of a history file: NotifyType 121), sent inside the call."""
    return _encode("Notify", _header("MediaStatus", sn, device_id) + [("NotifyType", _scalar(notify_type), None)],
                   charset)


def build_alarm_notify(
    sn: int,
    device_id: str,
    *,
    alarm_priority: int,
    alarm_method: int,
    alarm_time: str | datetime,
    alarm_description: str | None = None,
    longitude: float | None = None,
    latitude: float | None = None,
    alarm_type: int | None = None,
    event_type: int | None = None,
    charset: str = "GB2312",
) -> bytes:
    """Notify/Alarm; *alarm_type*/*event_type* go into ``<Info>`` (2016 extension)."""
    children = (
        _header("Alarm", sn, device_id)
        + [
            ("AlarmPriority", _scalar(alarm_priority), None),
            ("AlarmMethod", _scalar(alarm_method), None),
            ("AlarmTime", _scalar(alarm_time), None),
        ]
        + _opt("AlarmDescription", alarm_description)
        + _opt("Longitude", longitude)
        + _opt("Latitude", latitude)
    )
    if alarm_type is not None:
        info: list[_Node] = [("AlarmType", _scalar(alarm_type), None)]
        if event_type is not None:
            info.append(("AlarmTypeParam", [("EventType", _scalar(event_type), None)], None))
        children.append(("Info", info, None))
    return _encode("Notify", children, charset)


def build_mobile_position_notify(
    sn: int,
    device_id: str,
    *,
    time: str | datetime,
    longitude: float,
    latitude: float,
    speed: float | None = None,
    direction: float | None = None,
    altitude: float | None = None,
    charset: str = "GB2312",
) -> bytes:
    """Notify/MobilePosition."""
    children = (
        _header("MobilePosition", sn, device_id)
        + [
            ("Time", _scalar(time), None),
            ("Longitude", _scalar(longitude), None),
            ("Latitude", _scalar(latitude), None),
        ]
        + _opt("Speed", speed)
        + _opt("Direction", direction)
        + _opt("Altitude", altitude)
    )
    return _encode("Notify", children, charset)


# ---------------------------------------------------------------------------------------------
# Device control (GB/T 28181 A.2.3.1), its Result (A.2.6.2), PresetQuery (A.2.4.8 / A.2.6.10), alarms
# ---------------------------------------------------------------------------------------------

#: DeviceControl sub-commands (A.2.3.1); both spellings of the key-frame command (2016 ``IFameCmd``, 2022
#: ``IFrameCmd``).
DEVICE_CONTROL_ELEMENTS = (
    "PTZCmd", "TeleBoot", "RecordCmd", "GuardCmd", "AlarmCmd", "IFameCmd", "IFrameCmd", "DragZoomIn",
    "DragZoomOut", "HomePosition", "PTZPreciseCtrl", "DeviceUpgrade", "FormatSDCard", "TargetTrack",
)
#: The sub-commands a device answers with a Response/DeviceControl Result (A.2.6.2); the rest are fire and
#: forget (SIP 200 only).
CONTROL_WITH_RESULT = frozenset({"RecordCmd", "GuardCmd", "AlarmCmd", "HomePosition", "DeviceUpgrade"})
# The only values the standard gives the one-word commands.
_CONTROL_VALUES = {
    "TeleBoot": ("Boot",),
    "RecordCmd": ("Record", "StopRecord"),
    "GuardCmd": ("SetGuard", "ResetGuard"),
    "AlarmCmd": ("ResetAlarm",),
    "IFameCmd": ("Send",),
    "IFrameCmd": ("Send",),
}
_CONTROL_BY_LOWER = {e.lower(): e for e in DEVICE_CONTROL_ELEMENTS}
_EXTRA_INFO_MAX = 1024
_NAME_MAX_BYTES = 32  # PresetName / CruiseTrackName (A.2.3.1.2)


def _control_error(message: str) -> ManscdpError:
    return ManscdpError(message)


def _home_position_nodes(value: Any) -> list[_Node]:
    if not isinstance(value, Mapping):
        raise _control_error("HomePosition 须为 Enabled/ResetTime/PresetIndex / HomePosition needs a mapping of "
                             "Enabled, ResetTime, PresetIndex")
    enabled = value.get("Enabled")
    if isinstance(enabled, bool):
        enabled = int(enabled)
    if enabled not in (0, 1):
        raise _control_error(f"HomePosition Enabled 须为 0 或 1 / Enabled must be 0 or 1, got {enabled!r:.20}")
    nodes: list[_Node] = [("Enabled", str(enabled), None)]
    if enabled:
        reset, index = value.get("ResetTime"), value.get("PresetIndex")
        if isinstance(reset, bool) or not isinstance(reset, int) or not 0 <= reset <= 86400:
            raise _control_error(f"ResetTime 须为 0..86400 秒 / ResetTime must be 0..86400 s, got {reset!r:.20}")
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= 255:
            raise _control_error(f"PresetIndex 须为 0..255 / PresetIndex must be 0..255, got {index!r:.20}")
        nodes += [("ResetTime", str(reset), None), ("PresetIndex", str(index), None)]
    return nodes


def _short_name(tag: str, value: str) -> _Node:
    if not isinstance(value, str) or not value.strip():
        raise _control_error(f"{tag} 不能为空 / {tag} must be a non-empty string")
    if len(value.encode("gb18030")) > _NAME_MAX_BYTES:
        raise _control_error(f"{tag} 超过 {_NAME_MAX_BYTES} 字节 / {tag} is longer than {_NAME_MAX_BYTES} bytes")
    return (tag, value, None)


def build_device_control(
    sn: int,
    device_id: str,
    element: str,
    value_or_children: Any = None,
    *,
    preset_name: str | None = None,
    cruise_track_name: str | None = None,
    info: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None,
    siblings: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None,
    extra_info: Iterable[str] = (),
    charset: str = "GB2312",
) -> bytes:
    """Control/DeviceControl with one sub-command (A.2.3.1.1) to ``device_id`` (the channel or device).

    ``element`` is one of :data:`DEVICE_CONTROL_ELEMENTS`; ``value_or_children`` its text or, for
    ``HomePosition`` / ``DragZoomIn`` / ``PTZPreciseCtrl`` ..., a mapping of its children. ``PTZCmd`` must be a
    valid PTZCmd (:func:`sip_server.gb.ptz.parse_ptzcmd`; sent upper-case) and may carry ``preset_name`` /
    ``cruise_track_name`` in ``PTZCmdParams`` (2022, at most 32 bytes). The one-word commands take only the
    standard's values (``TeleBoot`` Boot, ``RecordCmd`` Record / StopRecord, ``GuardCmd`` SetGuard /
    ResetGuard, ``AlarmCmd`` ResetAlarm, ``IFameCmd`` / ``IFrameCmd`` Send); ``info`` becomes ``<Info>`` (the
    AlarmCmd's AlarmMethod / AlarmType), ``siblings`` further elements after the command (RecordCmd's
    ``StreamNumber``), ``extra_info`` repeated ``ExtraInfo`` (each at most 1024 characters).
    Raises :class:`ManscdpError` ("中文 / English") for anything else."""
    from sip_server.gb.ptz import PtzCmdError, parse_ptzcmd

    if not isinstance(element, str) or element not in DEVICE_CONTROL_ELEMENTS:
        raise _control_error(f"未知控制命令 / unknown DeviceControl element {element!r:.40}")
    children = _header("DeviceControl", sn, device_id)
    if element == "PTZCmd":
        try:
            children.append(("PTZCmd", parse_ptzcmd(value_or_children).hex, None))
        except PtzCmdError as exc:
            raise _control_error(str(exc)) from None
        params = []
        if preset_name is not None:
            params.append(_short_name("PresetName", preset_name))
        if cruise_track_name is not None:
            params.append(_short_name("CruiseTrackName", cruise_track_name))
        if params:
            children.append(("PTZCmdParams", params, None))
    elif preset_name is not None or cruise_track_name is not None:
        raise _control_error("PresetName/CruiseTrackName 只用于 PTZCmd / PresetName and CruiseTrackName go with "
                             "a PTZCmd only")
    elif element in _CONTROL_VALUES:
        allowed = _CONTROL_VALUES[element]
        if value_or_children not in allowed:
            raise _control_error(f"{element} 的值须为 {'/'.join(allowed)} / {element} must be one of "
                                 f"{', '.join(allowed)}, got {value_or_children!r:.40}")
        children.append((element, value_or_children, None))
    elif element == "HomePosition":
        children.append(("HomePosition", _home_position_nodes(value_or_children), None))
    elif isinstance(value_or_children, Mapping) or (
            isinstance(value_or_children, list | tuple) and not isinstance(value_or_children, str)):
        children.append((element, _nodes_from(value_or_children), None))
    elif value_or_children is None:
        raise _control_error(f"{element} 缺少取值 / {element} needs a value")
    else:
        children.append((element, _scalar(value_or_children), None))
    if info is not None:
        nodes = _nodes_from(info)
        if nodes:
            children.append(("Info", nodes, None))
    children += _nodes_from(siblings)
    if isinstance(extra_info, str):
        extra_info = (extra_info,)
    for text in extra_info:
        if not isinstance(text, str) or len(text) > _EXTRA_INFO_MAX:
            raise _control_error(f"ExtraInfo 须为不超过 {_EXTRA_INFO_MAX} 字符的字符串 / ExtraInfo must be a "
                                 f"string of at most {_EXTRA_INFO_MAX} characters")
        children.append(("ExtraInfo", text, None))
    return _encode("Control", children, charset)


@dataclass(frozen=True)
class DeviceControl:
    """A Control/DeviceControl as a device receives it: the first sub-command found (``element``, canonical
    spelling; ``value`` its text, None when it has children, which are in ``children``), the PTZCmd's
    parameters, ``info`` (the children of ``<Info>``) and the ``ExtraInfo`` texts."""

    device_id: str
    sn: int
    element: str
    value: str | None
    children: dict[str, str] = field(default_factory=dict)
    preset_name: str | None = None
    cruise_track_name: str | None = None
    info: dict[str, str] = field(default_factory=dict)
    extra_info: tuple[str, ...] = ()

    @property
    def wants_result(self) -> bool:
        """The standard has the device answer this one with a Response/DeviceControl Result."""
        return self.element in CONTROL_WITH_RESULT


def as_device_control(msg: ManscdpMessage) -> DeviceControl:
    """Control/DeviceControl (the receiving side: simulators, lower platforms). Raises :class:`ManscdpError`
    when no known sub-command is present."""
    msg, kids = _expect(msg, ("Control",), "DeviceControl")
    assert msg.element is not None
    found: ET.Element | None = None
    element = ""
    for child in msg.element:
        name = _CONTROL_BY_LOWER.get(_local(child.tag).lower())
        if name is not None:
            found, element = child, name
            break
    if found is None:
        raise ManscdpError("DeviceControl without a known sub-command")
    value = (found.text or "").strip() if len(found) == 0 else None
    params = kids.el("PTZCmdParams")
    params_kids = _Children(params) if params is not None else None
    info = kids.el("Info")
    extra = tuple((child.text or "").strip() for child in msg.element if _local(child.tag).lower() == "extrainfo")
    return DeviceControl(
        device_id=msg.device_id,
        sn=msg.sn,
        element=element,
        value=value,
        children=_simple_fields(found),
        preset_name=params_kids.text("PresetName") if params_kids is not None else None,
        cruise_track_name=params_kids.text("CruiseTrackName") if params_kids is not None else None,
        info=_simple_fields(info) if info is not None else {},
        extra_info=extra,
    )


@dataclass(frozen=True)
class ControlResult:
    """A Response/DeviceControl (or DeviceConfig) Result: ``result`` "OK" or "ERROR" (upper-cased), None when
    the device sent something else (its text is in ``raw["Result"]``)."""

    device_id: str
    sn: int
    cmd_type: str
    result: str | None
    raw: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def ok(self) -> bool:
        return self.result == "OK"


def as_control_result(msg: ManscdpMessage) -> ControlResult:
    """Response/DeviceControl or Response/DeviceConfig."""
    if isinstance(msg, ManscdpMessage) and msg.cmd_type == "DeviceConfig":
        msg, kids = _expect(msg, ("Response",), "DeviceConfig")
    else:
        msg, kids = _expect(msg, ("Response",), "DeviceControl")
    text = (kids.text("Result") or "").upper()
    return ControlResult(device_id=msg.device_id, sn=msg.sn, cmd_type=msg.cmd_type,
                         result=text if text in ("OK", "ERROR") else None, raw=dict(msg.fields))


def build_control_response(sn: int, device_id: str, result: str = "OK", *, cmd_type: str = "DeviceControl",
                           charset: str = "GB2312") -> bytes:
    """Response/DeviceControl (or DeviceConfig) with ``Result`` OK / ERROR (A.2.6.2)."""
    if result not in ("OK", "ERROR"):
        raise ManscdpError(f"Result must be OK or ERROR, got {result!r:.20}")
    return _encode("Response", _header(cmd_type, sn, device_id) + [("Result", result, None)], charset)


@dataclass(frozen=True)
class PresetItem:
    preset_id: int  # 1..255
    name: str | None = None


@dataclass(frozen=True)
class PresetList:
    """A Response/PresetQuery: ``items`` sorted by number, one per number (the first name wins); items whose
    PresetID is not 1..255 are skipped. ``sum_num`` as the device says (SumNum, else PresetList@Num)."""

    device_id: str
    sn: int
    sum_num: int
    items: list[PresetItem]

    def pairs(self) -> list[tuple[int, str | None]]:
        return [(item.preset_id, item.name) for item in self.items]


def as_preset_list(msg: ManscdpMessage) -> PresetList:
    """Response/PresetQuery (A.2.6.10)."""
    msg, kids = _expect(msg, ("Response",), "PresetQuery")
    container = kids.el("PresetList")
    seen: dict[int, PresetItem] = {}
    for el in _items(container):
        item_kids = _Children(el)
        number = _to_int(item_kids.text("PresetID"))
        if number is None or not 1 <= number <= 255 or number in seen:
            continue
        seen[number] = PresetItem(number, item_kids.text("PresetName"))
    items = [seen[k] for k in sorted(seen)]
    return PresetList(device_id=msg.device_id, sn=msg.sn, sum_num=_sum_num(kids, _num_attr(container), len(items)),
                      items=items)


def build_preset_response(sn: int, device_id: str, presets: Iterable[tuple[int, str | None]], *,
                          sum_num: int | None = None, charset: str = "GB2312") -> bytes:
    """Response/PresetQuery listing ``(number, name)`` pairs (a None name leaves PresetName out)."""
    nodes: list[_Node] = [("Item", [("PresetID", _scalar(int(number)), None)] + _opt("PresetName", name), None)
                          for number, name in presets]
    children = _header("PresetQuery", sn, device_id) + [
        ("SumNum", _scalar(len(nodes) if sum_num is None else int(sum_num)), None),
        ("PresetList", nodes, {"Num": str(len(nodes))}),
    ]
    return _encode("Response", children, charset)


def build_alarm_subscribe(sn: int, device_id: str, *, start_priority: int = 0, end_priority: int = 0,
                          method: str = "0", alarm_type: str | None = None, charset: str = "GB2312") -> bytes:
    """Query/Alarm, the body of an alarm SUBSCRIBE (A.2.4.6): priorities 0 (all) or 1..4, ``method`` 0 (all)
    or a combination such as "1/2"."""
    children = _header("Alarm", sn, device_id) + [
        ("StartAlarmPriority", _scalar(int(start_priority)), None),
        ("EndAlarmPriority", _scalar(int(end_priority)), None),
        ("AlarmMethod", _scalar(method), None),
    ] + _opt("AlarmType", alarm_type)
    return _encode("Query", children, charset)


def build_alarm_response(sn: int, device_id: str, result: str = "OK", *, charset: str = "GB2312") -> bytes:
    """Response/Alarm, the platform's acknowledgement of an alarm notification (A.2.6.3)."""
    return _encode("Response", _header("Alarm", sn, device_id) + [("Result", _scalar(result), None)], charset)


def check_alarm(alarm: Alarm) -> Alarm:
    """An alarm notification the platform can act on: ``AlarmPriority`` 1..4, ``AlarmMethod`` 1..7 and a
    readable ``AlarmTime`` (all mandatory, A.2.5.3). Raises :class:`ManscdpError` ("中文 / English")."""
    if alarm.alarm_priority is None or not 1 <= alarm.alarm_priority <= 4:
        raise ManscdpError(f"报警级别须为 1..4 / AlarmPriority must be 1..4, got "
                           f"{alarm.raw.get('AlarmPriority', '')[:20]!r}")
    if alarm.alarm_method is None or not 1 <= alarm.alarm_method <= 7:
        raise ManscdpError(f"报警方式须为 1..7 / AlarmMethod must be 1..7, got {alarm.raw.get('AlarmMethod', '')[:20]!r}")
    if alarm.alarm_datetime is None:
        raise ManscdpError(f"报警时间无效 / AlarmTime missing or unreadable: {(alarm.alarm_time or '')[:40]!r}")
    return alarm


@dataclass(frozen=True)
class HomePositionInfo:
    """A Response/HomePositionQuery (2022): the watch position a dome returns to after ``reset_time`` s idle."""

    device_id: str
    sn: int
    enabled: bool | None
    reset_time: int | None
    preset_index: int | None


def as_home_position(msg: ManscdpMessage) -> HomePositionInfo:
    """Response/HomePositionQuery (its ``HomePosition`` element, or the fields at the top level)."""
    msg, kids = _expect(msg, ("Response",), "HomePositionQuery")
    home = kids.el("HomePosition")
    inner = _Children(home) if home is not None else kids
    enabled = _to_int(inner.text("Enabled"))
    return HomePositionInfo(device_id=msg.device_id, sn=msg.sn, enabled=None if enabled is None else enabled == 1,
                            reset_time=_to_int(inner.text("ResetTime")), preset_index=_to_int(inner.text("PresetIndex")))


@dataclass(frozen=True)
class CruisePoint:
    preset_index: int
    stay_time: int | None  # seconds
    speed: int | None  # 1..15


@dataclass(frozen=True)
class CruiseTrack:
    """A dome's own cruise track: from CruiseTrackListQuery (``number``, ``name``) or CruiseTrackQuery (with
    ``points``)."""

    number: int
    name: str | None = None
    points: tuple[CruisePoint, ...] = ()


def as_cruise_tracks(msg: ManscdpMessage) -> list[CruiseTrack]:
    """Response/CruiseTrackListQuery (2022): the dome's tracks, sorted by number."""
    msg, kids = _expect(msg, ("Response",), "CruiseTrackListQuery")
    container = kids.el("CruiseTrackList")
    tracks: dict[int, CruiseTrack] = {}
    for el in container if container is not None else ():
        if _local(el.tag).lower() not in ("cruisetrack", "item"):
            continue
        track_kids = _Children(el)
        number = _to_int(track_kids.text("Number"))
        if number is not None and 0 <= number <= 255 and number not in tracks:
            tracks[number] = CruiseTrack(number, track_kids.text("Name"))
    return [tracks[k] for k in sorted(tracks)]


def as_cruise_track(msg: ManscdpMessage) -> CruiseTrack:
    """Response/CruiseTrackQuery (2022): one track with its points (those without a PresetIndex skipped)."""
    msg, kids = _expect(msg, ("Response",), "CruiseTrackQuery")
    number = _to_int(kids.text("Number"))
    if number is None:
        raise ManscdpError("CruiseTrackQuery response without Number")
    container = kids.el("CruisePointList")
    points = []
    for el in container if container is not None else ():
        point_kids = _Children(el)
        index = _to_int(point_kids.text("PresetIndex"))
        if index is None or not 0 <= index <= 255:
            continue
        points.append(CruisePoint(index, _to_int(point_kids.text("StayTime")), _to_int(point_kids.text("Speed"))))
    return CruiseTrack(number, kids.text("Name"), tuple(points))
