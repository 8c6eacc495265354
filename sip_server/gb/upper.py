"""Toward upper platforms: this platform as a GB/T 28181 lower platform (cascade; sans-IO).

Per configured upper: a registration client (digest MD5 with or without ``qop=auth``, ``stale=true``,
refresh before the expiry the upper grants, back-off on failure and never a hot loop after a refusal),
keepalive MESSAGEs (offline after ``cascade_keepalive_misses`` failures, then registering again), and the
server side of what the upper asks: OPTIONS, MANSCDP queries and controls, catalog / alarm / position
SUBSCRIBE, INVITE (UAS: 100, our answer from the cascade layer, ACK, BYE both ways, CANCEL, INFO).

A request is the upper's only when its From user is the upper's id *and* it comes from the upper's
configured address (UDP: host and port; TCP or TLS: its host, on the connection we hold or one it opened); a
request claiming an upper's id from anywhere else is refused 403 and reported as a :class:`ev.SecurityEvent`.

Over TLS (``sips``, GB/T 28181-2022 §8.2) the upper is a stream transport like TCP; the transport adapter
verifies its certificate, and a connection that cannot be made (:meth:`UpperPlatforms.connect_failed`: the
certificate failing verification, the TLS handshake, the TCP connect) fails the registration at once with
that reason rather than as "no answer".

:class:`UpperPlatforms` is owned and driven by :class:`sip_server.gb.server.GbServer` like
:class:`sip_server.gb.invite.InviteSessions`: it uses the server's endpoint, clock-free ``now`` (monotonic) and
event queue, and the server's wall clock for the times people see.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gbcore.timeutil import gb_time
from sip_server.gb import events as ev
from sip_server.gb import manscdp
from sip_server.sip import (
    Headers,
    SipParseError,
    SipRequest,
    build_authorization,
    make_response,
    parse_name_addr,
    parse_uri,
)
from sip_server.sip.digest import parse_auth_params
from sip_server.sip.message import contact_value, format_hostport, new_tag, random_hex, via_value
from sip_server.sip.sdp import SdpError, gb_sdp, offered_stream, parse_sdp

MANSCDP_TYPE = "Application/MANSCDP+xml"
ALLOW = "INVITE, ACK, INFO, CANCEL, BYE, OPTIONS, MESSAGE, SUBSCRIBE, NOTIFY"
STATES = ("registering", "registered", "offline", "disabled")
ORG_KINDS = ("system", "region", "business_group", "virtual_org")
_STATUS_EVENTS = frozenset({"ON", "OFF", "VLOST", "DEFECT", "DEL"})
_MAX_EXPIRES = 86400
_MAX_QUERIES = 256  # remembered query SNs per upper (for the answer's DeviceID)
#: connection-oriented transports toward an upper (as sip_server.gb.server.STREAM_TRANSPORTS)
STREAM_TRANSPORTS = ("tcp", "tls")
#: why a connection to an upper could not be made (see UpperPlatforms.connect_failed)
CONNECT_FAILURES = {
    "certificate": "证书校验失败 / certificate verification failed",
    "tls": "TLS 握手失败 / TLS handshake failed",
    "connect": "无法连接 / cannot connect",
}


# ================================================================================================ binding types
@dataclass(frozen=True)
class UpperConfig:
    platform_id: int
    server_id: str
    server_domain: str
    host: str
    port: int
    transport: str  # "udp" | "tcp" | "tls"
    local_id: str
    username: str
    password: str = field(repr=False)
    expires: int = 3600
    keepalive_s: int = 60
    charset: str = "GB2312"  # GB2312 | GB18030 | UTF-8 (GB2312: declared, written as GB18030 bytes)
    gb_version: str = "2016"  # "2022": X-GB-ver: 3.0 on REGISTER
    name: str = ""


@dataclass(frozen=True)
class CatalogEntry:
    device_id: str
    name: str
    kind: str  # system | region | business_group | virtual_org | channel
    parent_id: str | None = None
    business_group_id: str | None = None
    civil_code: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    owner: str | None = None
    address: str | None = None
    parental: int = 0
    register_way: int = 1
    secrecy: int = 0
    status: str = "ON"
    longitude: float | None = None
    latitude: float | None = None
    event: str | None = None  # NOTIFY only: ON | OFF | ADD | DEL | UPDATE


@dataclass(frozen=True)
class UpperOffer:
    session: str  # Play | Playback | Download
    ip: str
    port: int
    transport: str  # udp | tcp
    setup: str | None  # the upper's TCP role: active (it connects) | passive (it listens)
    ssrc: str | None
    start: int | None
    end: int | None
    download_speed: int | None
    uri: str | None
    payloads: tuple[int, ...]
    stream_number: int | None = None  # a=streamnumber:N (or a=stream / a=streamprofile) of a live offer: 0 main, 1+ sub


@dataclass(frozen=True)
class UpperAnswer:
    ip: str
    port: int
    ssrc: str
    transport: str  # udp | tcp
    setup: str | None  # OUR TCP role: passive (we listen) | active (we connect)
    payload_type: int = 96


class OfferError(ValueError):
    """An upper's INVITE offer that cannot be served (``status`` is the SIP answer)."""

    def __init__(self, message: str, status: int = 488) -> None:
        super().__init__(message)
        self.status = status


# ================================================================================================ pure helpers
def _int(text: str | None) -> int | None:
    if text is None:
        return None
    text = text.strip()
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 12 else None


def parse_offer(body: bytes) -> UpperOffer:
    """The upper's INVITE SDP -> :class:`UpperOffer`; raises :class:`OfferError` (400 / 488)."""
    try:
        sdp = parse_sdp(body)
    except SdpError as exc:
        raise OfferError(f"bad SDP: {exc}", 400) from None
    session = sdp.session_name.strip()
    canon = {"play": "Play", "playback": "Playback", "download": "Download"}.get(session.lower())
    if canon is None:
        raise OfferError(f"unknown s= {session[:20]!r}")
    video = sdp.video
    if video is None or video.port <= 0:
        raise OfferError("no video m= line")
    ip = video.connection or sdp.connection
    if not ip:
        raise OfferError("no c= address")
    tcp = video.tcp
    setup = video.setup if tcp else None
    if setup not in (None, "active", "passive"):
        raise OfferError(f"unsupported a=setup:{setup[:20]}")
    payloads = tuple(int(f) for f in video.formats if f.isascii() and f.isdigit() and int(f) < 128)
    if not payloads:
        raise OfferError("no RTP payload type")
    start = end = None
    window = sdp.time_range
    if canon != "Play":
        if window is None or window[1] <= window[0]:
            raise OfferError("playback/download without a t= window")
        start, end = window
    speed = None
    for attrs in (video.attrs, sdp.attrs):
        for name, value in attrs:
            if name.lower() == "downloadspeed":
                speed = _int(value)
    ssrc = sdp.ssrc.strip() if sdp.ssrc else None
    if ssrc is not None and not (ssrc.isascii() and ssrc.isdigit() and len(ssrc) <= 10):
        raise OfferError(f"bad y= {ssrc[:20]!r}", 400)
    return UpperOffer(canon, ip, video.port, "tcp" if tcp else "udp", setup, ssrc, start, end, speed,
                      sdp.uri.strip() if sdp.uri else None, payloads,
                      offered_stream(sdp) if canon == "Play" else None)


def build_answer_sdp(local_id: str, offer: UpperOffer, answer: UpperAnswer) -> bytes:
    """Our 200's SDP: sendonly PS toward the upper, ``y=`` our SSRC, ``t=`` echoed for history calls."""
    tcp = answer.transport == "tcp"
    time = f"{offer.start} {offer.end}" if offer.start is not None and offer.end is not None else "0 0"
    sdp = gb_sdp(origin_id=local_id, ip=answer.ip, port=answer.port, ssrc=answer.ssrc,
                 payloads=[(answer.payload_type, "PS/90000")], direction="sendonly", tcp=tcp,
                 setup=answer.setup if tcp else None, session_name=offer.session, time=time, media_format="")
    return sdp.to_bytes()


def catalog_item(entry: CatalogEntry, *, notify: bool = False) -> manscdp.CatalogItem:
    """One catalog item as the upper sees it; organisation items carry only what the standard gives them
    (GB/T 28181-2022 Annex J): a region its id and name, a business group its civil code and owning system,
    a virtual organisation its business group (and parent only when that is a virtual organisation)."""
    event = entry.event.upper() if notify and entry.event else None
    if event in _STATUS_EVENTS:
        return manscdp.CatalogItem(device_id=entry.device_id, event=event)
    kind = entry.kind
    if kind == "region":
        item = manscdp.CatalogItem(device_id=entry.device_id, name=entry.name)
    elif kind == "business_group":
        item = manscdp.CatalogItem(device_id=entry.device_id, name=entry.name, civil_code=entry.civil_code,
                                   parent_id=entry.parent_id)
    elif kind == "virtual_org":
        item = manscdp.CatalogItem(device_id=entry.device_id, name=entry.name, parent_id=entry.parent_id,
                                   business_group_id=entry.business_group_id)
    elif kind == "system":
        item = manscdp.CatalogItem(device_id=entry.device_id, name=entry.name, manufacturer=entry.manufacturer,
                                   model=entry.model, civil_code=entry.civil_code, address=entry.address,
                                   parent_id=entry.parent_id, register_way=entry.register_way,
                                   secrecy=entry.secrecy, status=entry.status)
    else:
        item = manscdp.CatalogItem(
            device_id=entry.device_id, name=entry.name, manufacturer=entry.manufacturer, model=entry.model,
            owner=entry.owner, civil_code=entry.civil_code, address=entry.address, parental=entry.parental,
            parent_id=entry.parent_id, register_way=entry.register_way, secrecy=entry.secrecy,
            status=entry.status, longitude=entry.longitude, latitude=entry.latitude)
    if event is not None:
        item = manscdp.CatalogItem(**{**{f: getattr(item, f) for f in _ITEM_FIELDS}, "event": event})
    return item


_ITEM_FIELDS = tuple(f for f in manscdp.CatalogItem.__dataclass_fields__ if f not in ("event", "raw"))

_RECORD_KEYS = {"deviceid": "device_id", "name": "name", "filepath": "file_path", "address": "address",
                "starttime": "start_time", "endtime": "end_time", "secrecy": "secrecy", "type": "type",
                "recorderid": "recorder_id", "filesize": "file_size"}


def record_item(fields: dict[str, str], device_id: str) -> manscdp.RecordItem:
    values: dict[str, Any] = {}
    for key, value in fields.items():
        name = _RECORD_KEYS.get(key.replace("_", "").lower())
        if name is None or value is None:
            continue
        if name in ("secrecy", "file_size"):
            value = _int(str(value))
        values[name] = value
    values.setdefault("device_id", device_id)
    return manscdp.RecordItem(**values)


def chunks(seq: Sequence[Any], size: int) -> list[Sequence[Any]]:
    size = max(1, size)
    return [seq[i:i + size] for i in range(0, len(seq), size)] or [seq[:0]]


# ================================================================================================ state
@dataclass
class _Sub:
    """A catalog subscription from the upper (we are the notifier)."""

    call_id: str
    local: str  # our side: the SUBSCRIBE's To with our tag (From of our NOTIFYs)
    remote: str  # the upper's From with its tag (To of our NOTIFYs)
    target: str | None  # the upper's Contact URI
    event: str  # the Event header to echo
    sn: int
    device_id: str
    expires_at: float
    tag: str
    cseq: int = 0


@dataclass
class _Serial:
    """Answer MESSAGEs sent one at a time, each after the previous one's 2xx (GB/T 28181-2022 Annex M)."""

    sn: int
    kind: str  # catalog | records | other
    parts: list[Sequence[Any]]  # the items of each page; a page's bytes are built when it is sent (10,000 items
    build: Callable[[Any], bytes]  # built at once would hold the event loop for a third of a second)
    total: int
    index: int = 0
    sent: int = 0


@dataclass
class _Call:
    """An INVITE from the upper: we are the UAS."""

    call_id: str
    link: _Link
    key: Any  # the INVITE server transaction
    invite: SipRequest
    addr: tuple[str, int]
    transport: str
    target_id: str
    offer: UpperOffer
    tag: str
    state: str = "offered"  # offered | answered | confirmed
    cseq: int = 0
    answer_body: bytes = b""

    def local(self) -> str:
        return f"{self.invite.headers.get('To')};tag={self.tag}"


@dataclass
class _Link:
    cfg: UpperConfig
    state: str = "registering"
    last_error: str | None = None
    last_keepalive: float | None = None  # wall
    registered_until: float | None = None  # wall
    reg_call_id: str = ""
    reg_tag: str = ""
    reg_cseq: int = 0
    reg_key: Any = None
    reg_expires: int = 0  # Expires of the REGISTER in flight
    challenge: str | None = None
    auth_header: str = "Authorization"
    nc: int = 0
    nonce_answered: str | None = None  # nonce of the challenge the REGISTER in flight answered
    auth_tries: int = 0  # challenges answered since the last 200
    asked_expires: int = 0
    register_at: float | None = None
    ka_at: float | None = None
    ka_failures: int = 0
    backoff: float = 0.0
    ever_registered: bool = False
    pending: list[CatalogEntry] = field(default_factory=list)
    notify_due: float | None = None
    sub: _Sub | None = None
    event_subs: dict[str, _Sub] = field(default_factory=dict)  # "Alarm" / "MobilePosition" -> the upper's
    queries: dict[int, str] = field(default_factory=dict)  # sn -> DeviceID of the upper's query

    @property
    def addr(self) -> tuple[str, int]:
        return self.cfg.host, self.cfg.port


def _user(header: str | None) -> str | None:
    try:
        return parse_name_addr(header or "").uri.user
    except SipParseError:
        return None


def _uri(header: str | None) -> str | None:
    try:
        return str(parse_name_addr(header or "").uri) if header else None
    except SipParseError:
        return None


class UpperPlatforms:
    """Every configured upper: registration, keepalive, and what each asks of us. See the module docstring."""

    def __init__(self, server: Any, *, rng: random.Random | None = None) -> None:
        self.server = server
        self.links: dict[int, _Link] = {}
        self.calls: dict[str, _Call] = {}
        self._call_by_key: dict[Any, str] = {}
        self._txns: dict[Any, tuple[str, _Link, Any]] = {}  # client txn key -> (what, link, detail)
        self._serials: dict[Any, _Serial] = {}  # txn key of the page in flight -> job
        self._rng = rng or random.Random()

    # ------------------------------------------------------------------ helpers on the server
    @property
    def _cfg(self) -> Any:
        return self.server.config

    def _emit(self, event: Any) -> None:
        self.server._emit(event)

    def _wall(self) -> float:
        return self.server._wall()

    def _contact(self, link: _Link) -> str:
        cfg = self._cfg
        if cfg.contact_host:
            host = cfg.contact_host
        else:
            local = self.server.endpoint.local_address(link.addr, link.cfg.transport)
            host = format_hostport(*local) if local is not None else cfg.domain
        return contact_value(link.cfg.local_id, host)

    def _send(self, link: _Link, req: SipRequest, now: float, what: str, detail: Any = None,
              addr: tuple[str, int] | None = None, transport: str | None = None) -> Any:
        key = self.server.endpoint.send_request(req, addr or link.addr, now, transport or link.cfg.transport)
        if what:
            self._txns[key] = (what, link, detail)
        return key

    # ------------------------------------------------------------------ configuration
    def configure(self, configs: Sequence[UpperConfig], now: float) -> None:
        """The whole set of enabled uppers: new ones register, changed ones re-register, removed ones are
        un-registered (best effort), their calls BYEd and their subscriptions terminated."""
        wanted = {c.platform_id: c for c in configs}
        for pid, link in list(self.links.items()):
            new = wanted.get(pid)
            if new is None or new != link.cfg:
                self._retire(link, now, "disabled" if new is None else "reconfigured")
                del self.links[pid]
                if new is None:
                    self._set_state(link, "disabled", "已停用 / disabled")
        for pid, cfg in wanted.items():
            if pid in self.links:
                continue
            link = _Link(cfg, reg_call_id=f"{random_hex(10)}@{cfg.local_id}", reg_tag=new_tag(),
                         backoff=self._cfg.cascade_retry_initial, asked_expires=cfg.expires)
            self.links[pid] = link
            self._emit(ev.UpperStateChanged(pid, "registering", None))
            self._register(link, now)

    def _retire(self, link: _Link, now: float, why: str) -> None:
        for call in [c for c in self.calls.values() if c.link is link]:
            self._end_call(call, now, f"upper platform {why}")
        if link.sub is not None:
            self._notify(link, link.sub, b"", now, terminated="noresource")
            link.sub = None
        for esub in link.event_subs.values():
            self._notify(link, esub, b"", now, terminated="noresource")
        link.event_subs.clear()
        if link.state == "registered":
            self._send_register(link, now, 0, track=False)
        for key in [k for k, v in self._txns.items() if v[1] is link]:
            del self._txns[key]
        for key in [k for k, v in self._serials.items() if self._txns.get(k) is None]:
            self._serials.pop(key, None)

    def status(self, platform_id: int) -> dict | None:
        link = self.links.get(platform_id)
        if link is None:
            return None
        return {"state": link.state, "last_error": link.last_error, "last_keepalive": link.last_keepalive,
                "registered_until": link.registered_until if link.state == "registered" else None,
                "calls": sum(1 for c in self.calls.values() if c.link is link)}

    def _set_state(self, link: _Link, state: str, reason: str | None) -> None:
        if state in ("offline",) and reason:
            link.last_error = reason
        if state != link.state:
            link.state = state
            self._emit(ev.UpperStateChanged(link.cfg.platform_id, state, reason))

    # ------------------------------------------------------------------ registration client
    def _register(self, link: _Link, now: float) -> None:
        link.register_at = None
        self._send_register(link, now, link.asked_expires)

    def _send_register(self, link: _Link, now: float, expires: int, *, track: bool = True) -> None:
        cfg = link.cfg
        link.reg_cseq += 1
        uri = f"sip:{cfg.server_id}@{cfg.server_domain}"
        h = Headers()
        h.add("Via", via_value(cfg.transport))
        h.add("From", f"<sip:{cfg.local_id}@{cfg.server_domain}>;tag={link.reg_tag}")
        h.add("To", f"<sip:{cfg.local_id}@{cfg.server_domain}>")
        h.add("Call-ID", link.reg_call_id)
        h.add("CSeq", f"{link.reg_cseq} REGISTER")
        h.add("Contact", self._contact(link))
        h.add("Max-Forwards", "70")
        h.add("User-Agent", self._cfg.user_agent)
        h.add("Expires", str(expires))
        if cfg.gb_version == "2022":
            h.add("X-GB-ver", "3.0")
        link.nonce_answered = None
        if link.challenge:
            link.nc += 1
            try:
                h.add(link.auth_header, build_authorization(
                    link.challenge, method="REGISTER", uri=uri, username=cfg.username, password=cfg.password,
                    cnonce=random_hex(8), nc=link.nc))
                link.nonce_answered = parse_auth_params(link.challenge)[1].get("nonce")
            except (SipParseError, ValueError):
                link.challenge = None
        req = SipRequest("REGISTER", uri, h)
        key = self._send(link, req, now, "register" if track else "", expires)
        if track:
            link.reg_key = key
            link.reg_expires = expires

    def _on_register_answer(self, link: _Link, key: Any, resp: Any, now: float) -> None:
        if key != link.reg_key:
            return
        status = resp.status
        link.reg_key = None
        if status in (401, 407):
            header = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
            challenge = resp.headers.get(header)
            params: dict[str, str] = {}
            try:
                if challenge:
                    params = parse_auth_params(challenge)[1]
            except SipParseError:
                challenge = None
            stale = params.get("stale", "").lower() == "true"
            # A new challenge to credentials that answered this cycle's challenge (not stale): wrong password.
            # One answering a nonce cached from an earlier registration just gets the new challenge answered.
            answered_fresh = link.nonce_answered is not None and link.auth_tries > 0
            if not challenge or (answered_fresh and not stale) or link.auth_tries >= 3:
                self._failed(link, now, f"密码错误或被拒绝 / refused: {status} {resp.reason} (wrong password?)",
                             refused=True)
                return
            link.challenge, link.nc, link.auth_header = challenge, 0, (
                "Authorization" if status == 401 else "Proxy-Authorization")
            link.auth_tries += 1
            self._send_register(link, now, link.reg_expires)
            return
        if status == 423:
            minimum = _int(resp.headers.get("Min-Expires"))
            if minimum and link.asked_expires < minimum <= _MAX_EXPIRES:
                link.asked_expires = minimum
                self._send_register(link, now, minimum)
                return
        if 200 <= status < 300:
            link.auth_tries = 0
            if link.reg_expires == 0:
                return
            granted = _int(resp.headers.get("Expires"))
            if granted is None:
                contact = resp.headers.get("Contact")
                try:
                    granted = _int(parse_name_addr(contact).params.get("expires")) if contact else None
                except SipParseError:
                    granted = None
            if not granted or granted <= 0:
                granted = link.reg_expires
            granted = min(granted, _MAX_EXPIRES)
            link.registered_until = self._wall() + granted
            link.register_at = now + max(1.0, granted - max(5.0, min(60.0, granted / 3)))
            link.backoff = self._cfg.cascade_retry_initial
            link.ever_registered = True
            if link.state != "registered":
                link.ka_failures = 0
                link.ka_at = now + link.cfg.keepalive_s
                self._set_state(link, "registered", None)
            return
        refused = 400 <= status < 500 or status >= 600
        prefix = "被上级拒绝 / refused" if refused else "上级出错 / upper failed"
        if status == 403:
            prefix = "密码错误或被拒绝 / refused"
        self._failed(link, now, f"{prefix}: {status} {resp.reason}", refused=refused)

    def _failed(self, link: _Link, now: float, reason: str, *, refused: bool = False) -> None:
        """Registration failed: offline, and the next try after a back-off (>= cascade_retry after a refusal or
        once registered before; from cascade_retry_initial doubling at first start)."""
        cfg = self._cfg
        link.reg_key = None
        link.ka_at = None
        link.registered_until = None
        link.auth_tries = 0
        if refused:
            link.challenge = None
        if refused or link.ever_registered:
            delay = cfg.cascade_retry
        else:
            delay = link.backoff
            link.backoff = min(link.backoff * 2, cfg.cascade_retry)
        link.register_at = now + delay * (1 + 0.1 * self._rng.random())
        self._set_state(link, "offline", reason)

    def _lost(self, link: _Link, now: float, reason: str) -> None:
        """A registered upper stopped answering (keepalives, TCP): offline, then register again at once."""
        link.ka_at = None
        link.registered_until = None
        self._set_state(link, "offline", reason)
        self._set_state(link, "registering", None)
        link.auth_tries = 0
        if link.reg_key is not None:
            self._txns.pop(link.reg_key, None)
        self._register(link, now)

    # ------------------------------------------------------------------ keepalive
    def _send_keepalive(self, link: _Link, now: float) -> None:
        cfg = link.cfg
        body = manscdp.build_keepalive(self.server.next_sn(), cfg.local_id, charset=cfg.charset)
        self._send(link, self._message(link, body), now, "keepalive")

    def _on_keepalive_answer(self, link: _Link, ok: bool, now: float) -> None:
        if link.state != "registered":
            return
        if ok:
            link.ka_failures = 0
            link.last_keepalive = self._wall()
            return
        link.ka_failures += 1
        if link.ka_failures >= self._cfg.cascade_keepalive_misses:
            link.ka_failures = 0
            self._lost(link, now, f"心跳失败 / {self._cfg.cascade_keepalive_misses} keepalives failed")

    def connection_lost(self, addr: tuple[str, int], now: float) -> None:
        for link in list(self.links.values()):
            if (link.cfg.transport in STREAM_TRANSPORTS and addr == link.addr
                    and link.state in ("registered", "registering")):
                self._lost(link, now, f"连接断开 / {link.cfg.transport.upper()} connection to the upper lost")

    def connect_failed(self, addr: tuple[str, int], transport: str, kind: str, detail: str, now: float) -> None:
        """The transport could not open the ``transport`` connection to ``addr``; ``kind`` is ``certificate``
        (the upper's certificate failed verification), ``tls`` (another TLS handshake failure) or ``connect``.
        A registration in flight to that upper fails now with the reason (a certificate failure like a
        refusal: the next try after ``cascade_retry``, since a certificate does not fix itself in seconds);
        a registered upper is lost (offline, registering again)."""
        reason = f"{CONNECT_FAILURES.get(kind, CONNECT_FAILURES['connect'])}: {detail}".strip().rstrip(":")
        for link in list(self.links.values()):
            if link.cfg.transport != transport.lower() or addr != link.addr:
                continue
            if link.reg_key is not None:
                self._txns.pop(link.reg_key, None)
                self._failed(link, now, reason, refused=kind == "certificate")
            elif link.state == "registered":
                self._lost(link, now, reason)

    # ------------------------------------------------------------------ requests we send
    def _message(self, link: _Link, body: bytes, method: str = "MESSAGE") -> SipRequest:
        cfg = link.cfg
        h = Headers()
        h.add("Via", via_value(cfg.transport))
        h.add("From", f"<sip:{cfg.local_id}@{cfg.server_domain}>;tag={new_tag()}")
        h.add("To", f"<sip:{cfg.server_id}@{cfg.server_domain}>")
        h.add("Call-ID", f"{random_hex(10)}@{cfg.local_id}")
        h.add("CSeq", f"1 {method}")
        h.add("Max-Forwards", "70")
        h.add("User-Agent", self._cfg.user_agent)
        h.add("Content-Type", MANSCDP_TYPE)
        return SipRequest(method, f"sip:{cfg.server_id}@{format_hostport(cfg.host, cfg.port)}", h, body)

    def _items_per_message(self, link: _Link) -> int:
        cfg = self._cfg
        stream = link.cfg.transport in STREAM_TRANSPORTS
        return cfg.cascade_catalog_items_tcp if stream else cfg.cascade_catalog_items_udp

    def _start_serial(self, link: _Link, job: _Serial, now: float) -> None:
        self._send_page(link, job, now)

    def _send_page(self, link: _Link, job: _Serial, now: float) -> None:
        key = self._send(link, self._message(link, job.build(job.parts[job.index])), now, "serial")
        self._serials[key] = job

    def _on_serial_answer(self, link: _Link, key: Any, status: int | None, reason: str, now: float) -> None:
        job = self._serials.pop(key, None)
        if job is None:
            return
        if status is not None and 200 <= status < 300:
            job.sent += len(job.parts[job.index])
            job.index += 1
            if job.index < len(job.parts):
                self._send_page(link, job, now)
                return
            error = None
        else:
            error = f"{status} {reason}" if status is not None else "上级无应答 / no answer (transaction timeout)"
        if job.kind == "catalog":
            self._emit(ev.UpperCatalogSent(link.cfg.platform_id, job.sn, job.sent, job.total, error))

    def answer_catalog(self, platform_id: int, sn: int, entries: Sequence[CatalogEntry], now: float) -> bool:
        """Response/Catalog MESSAGEs, N items each, each after the previous one's 200; ends with
        :class:`ev.UpperCatalogSent`. False when the upper is not configured."""
        link = self.links.get(platform_id)
        if link is None:
            return False
        cfg = link.cfg
        device_id = link.queries.pop(sn, cfg.local_id)
        total = len(entries)

        def build(part: list[CatalogEntry]) -> bytes:
            return manscdp.build_catalog_response(sn, device_id, total, [catalog_item(e) for e in part],
                                                  charset=cfg.charset)

        parts = chunks(list(entries), self._items_per_message(link))
        self._start_serial(link, _Serial(sn, "catalog", parts, build, total), now)
        return True

    def answer_record_info(self, platform_id: int, sn: int, device_id: str, name: str,
                           items: list[dict[str, str]], now: float) -> bool:
        """Response/RecordInfo: SumNum the total, the items over serial MESSAGEs (Annex M)."""
        link = self.links.get(platform_id)
        if link is None:
            return False
        charset = link.cfg.charset

        def build(part: list[dict[str, str]]) -> bytes:
            return manscdp.build_record_info_response(sn, device_id, len(items), [record_item(i, device_id)
                                                                                  for i in part],
                                                      name=name, charset=charset)

        self._start_serial(link, _Serial(sn, "records", chunks(list(items), self._items_per_message(link)), build,
                                         len(items)), now)
        return True

    def _answer(self, platform_id: int, cmd_type: str, sn: int, device_id: str, fields: dict[str, str],
                now: float) -> bool:
        link = self.links.get(platform_id)
        if link is None:
            return False
        extra = list(fields.items())
        if not any(k.lower() == "result" for k, _ in extra):
            extra.insert(0, ("Result", "OK"))
        body = manscdp.build_message("Response", cmd_type, sn, device_id, charset=link.cfg.charset, extra=extra)
        self._send(link, self._message(link, body), now, "answer")
        return True

    def answer_device_info(self, platform_id: int, sn: int, device_id: str, fields: dict[str, str],
                           now: float) -> bool:
        return self._answer(platform_id, "DeviceInfo", sn, device_id, fields, now)

    def answer_device_status(self, platform_id: int, sn: int, device_id: str, fields: dict[str, str],
                             now: float) -> bool:
        return self._answer(platform_id, "DeviceStatus", sn, device_id, fields, now)

    def answer_control(self, platform_id: int, sn: int, device_id: str, ok: bool, now: float) -> bool:
        link = self.links.get(platform_id)
        if link is None:
            return False
        body = manscdp.build_control_response(sn, device_id, "OK" if ok else "ERROR", charset=link.cfg.charset)
        self._send(link, self._message(link, body), now, "answer")
        return True

    def send_alarm(self, platform_id: int, device_id: str, alarm: manscdp.Alarm, now: float) -> bool:
        """A device's alarm forwarded to a registered upper as MESSAGE Notify/Alarm (GB/T 28181 9.4), the
        source named by the id the upper knows (``device_id``); False when the upper is not registered."""
        link = self.links.get(platform_id)
        if link is None or link.state != "registered":
            return False
        body = manscdp.build_alarm_notify(
            self.server.next_sn(), device_id, alarm_priority=alarm.alarm_priority or 4,
            alarm_method=alarm.alarm_method or 1, alarm_time=alarm.alarm_time or gb_time(self._wall()),
            alarm_description=alarm.alarm_description, longitude=alarm.longitude, latitude=alarm.latitude,
            alarm_type=alarm.alarm_type, event_type=alarm.event_type, charset=link.cfg.charset)
        sub = link.event_subs.get("Alarm")
        if sub is not None:  # subscribed: in its dialog (GB/T 28181 9.11), else as a MESSAGE (9.4)
            self._notify(link, sub, body, now)
        else:
            self._send(link, self._message(link, body), now, "answer")
        return True

    def send_position(self, platform_id: int, device_id: str, position: manscdp.MobilePosition,
                      now: float) -> bool:
        """A device's MobilePosition, NOTIFYed to an upper that subscribed to positions (GB/T 28181 9.11);
        False when it has no live subscription or the position has no coordinates."""
        link = self.links.get(platform_id)
        sub = link.event_subs.get("MobilePosition") if link is not None else None
        if link is None or sub is None or link.state != "registered":
            return False
        if position.longitude is None or position.latitude is None:
            return False
        body = manscdp.build_mobile_position_notify(
            self.server.next_sn(), device_id, time=position.time or gb_time(self._wall()),
            longitude=position.longitude, latitude=position.latitude, speed=position.speed,
            direction=position.direction, altitude=position.altitude, charset=link.cfg.charset)
        self._notify(link, sub, body, now)
        return True

    # ------------------------------------------------------------------ catalog changes
    def notify_catalog(self, platform_id: int, entries: Sequence[CatalogEntry], now: float, *,
                       immediate: bool = False) -> bool:
        """Queue catalog changes (``event`` set); sent ``cascade_notify_batch`` at a time, or after
        ``cascade_notify_interval`` seconds, whichever comes first; ``immediate`` sends what is queued now
        (the initial NOTIFY of offline items after a new subscription)."""
        link = self.links.get(platform_id)
        if link is None:
            return False
        link.pending.extend(e for e in entries if e.event)
        batch = max(1, self._cfg.cascade_notify_batch)
        while len(link.pending) >= batch or (immediate and link.pending):
            self._flush(link, now, batch)
        if link.pending and link.notify_due is None:
            link.notify_due = now + self._cfg.cascade_notify_interval
        elif not link.pending:
            link.notify_due = None
        return True

    def _flush(self, link: _Link, now: float, limit: int) -> None:
        items, link.pending = link.pending[:limit], link.pending[limit:]
        if not items:
            return
        cfg = link.cfg
        catalog = [catalog_item(e, notify=True) for e in items]
        sub = link.sub
        if sub is not None:
            body = manscdp.build_catalog_notify(self.server.next_sn(), sub.device_id, len(catalog), catalog,
                                                charset=cfg.charset)
            self._notify(link, sub, body, now)
        elif self._cfg.cascade_push_unsubscribed:
            body = manscdp.build_catalog_notify(self.server.next_sn(), cfg.local_id, len(catalog), catalog,
                                                charset=cfg.charset)
            self._send(link, self._message(link, body), now, "answer")

    def _notify(self, link: _Link, sub: _Sub, body: bytes, now: float, *, terminated: str | None = None) -> None:
        sub.cseq += 1
        h = Headers()
        h.add("Via", via_value(link.cfg.transport))
        h.add("From", sub.local)
        h.add("To", sub.remote)
        h.add("Call-ID", sub.call_id)
        h.add("CSeq", f"{sub.cseq} NOTIFY")
        h.add("Max-Forwards", "70")
        h.add("Event", sub.event)
        if terminated:
            h.add("Subscription-State", f"terminated;reason={terminated}")
        else:
            h.add("Subscription-State", f"active;expires={max(0, int(sub.expires_at - now))}")
        h.add("Contact", self._contact(link))
        h.add("User-Agent", self._cfg.user_agent)
        if body:
            h.add("Content-Type", MANSCDP_TYPE)
        cfg = link.cfg
        req = SipRequest("NOTIFY", sub.target or f"sip:{cfg.server_id}@{format_hostport(cfg.host, cfg.port)}", h,
                         body)
        self._send(link, req, now, "notify", sub)

    def _on_notify_answer(self, link: _Link, sub: _Sub, status: int) -> None:
        if status == 481 and link.sub is sub:  # the upper no longer has this subscription
            link.sub = None
            self._emit(ev.UpperCatalogSubscribed(link.cfg.platform_id, sub.sn, 0))

    # ------------------------------------------------------------------ timers
    def get_timer(self) -> float | None:
        times = []
        for link in self.links.values():
            times += [t for t in (link.register_at, link.ka_at, link.notify_due) if t is not None]
            if link.sub is not None:
                times.append(link.sub.expires_at)
            times += [esub.expires_at for esub in link.event_subs.values()]
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        for link in list(self.links.values()):
            if link.register_at is not None and link.register_at <= now:
                if link.state == "offline":
                    self._set_state(link, "registering", None)
                self._register(link, now)
            if link.ka_at is not None and link.ka_at <= now:
                link.ka_at = now + link.cfg.keepalive_s
                self._send_keepalive(link, now)
            if link.notify_due is not None and link.notify_due <= now:
                link.notify_due = None
                while link.pending:
                    self._flush(link, now, max(1, self._cfg.cascade_notify_batch))
            sub = link.sub
            if sub is not None and sub.expires_at <= now:
                link.sub = None
                self._notify(link, sub, b"", now, terminated="timeout")
                self._emit(ev.UpperCatalogSubscribed(link.cfg.platform_id, sub.sn, 0))
            for kind, esub in list(link.event_subs.items()):
                if esub.expires_at <= now:
                    del link.event_subs[kind]
                    self._notify(link, esub, b"", now, terminated="timeout")

    # ------------------------------------------------------------------ answers to our requests
    def on_response(self, event: Any, now: float) -> bool:
        ref = self._txns.get(event.key)
        if ref is None:
            return False
        status = event.response.status
        if status < 200:
            return True
        del self._txns[event.key]
        what, link, detail = ref
        if what == "register":
            self._on_register_answer(link, event.key, event.response, now)
        elif what == "keepalive":
            self._on_keepalive_answer(link, status < 300, now)
        elif what == "serial":
            self._on_serial_answer(link, event.key, status, event.response.reason, now)
        elif what == "notify":
            self._on_notify_answer(link, detail, status)
        return True

    def on_timeout(self, event: Any, now: float) -> bool:
        ref = self._txns.pop(event.key, None)
        if ref is None:
            return False
        what, link, _ = ref
        if what == "register" and event.key == link.reg_key:
            self._failed(link, now, "上级无应答 / no answer to REGISTER")
        elif what == "keepalive":
            self._on_keepalive_answer(link, False, now)
        elif what == "serial":
            self._on_serial_answer(link, event.key, None, "", now)
        return True

    def on_ack_timeout(self, event: Any, now: float) -> bool:
        call_id = self._call_by_key.get(event.key)
        call = self.calls.get(call_id) if call_id else None
        if call is None:
            return False
        if call.state == "answered":
            self._send_bye(call, now)
            self._drop(call)
            self._emit(ev.UpperBye(call.link.cfg.platform_id, call.call_id, "no ACK"))
        return True

    # ------------------------------------------------------------------ requests from uppers
    def _peer_ok(self, link: _Link, addr: tuple[str, int], transport: str) -> bool:
        cfg = link.cfg
        if transport.lower() != cfg.transport:
            return False
        if cfg.transport in STREAM_TRANSPORTS:
            return addr[0] == cfg.host
        return addr[0] == cfg.host and addr[1] == cfg.port

    def _reply(self, event: Any, status: int, now: float, **kw: Any) -> None:
        self.server._reply(event, status, now, **kw)

    def _refuse(self, event: Any, server_id: str, links: list[_Link], now: float) -> None:
        method = event.request.method
        if method != "ACK":
            self._reply(event, 403, now, reason="Forbidden (not the upper platform's address)")
        self.server.metrics.identity_refusals += 1
        where = ", ".join(f"{lk.cfg.transport} {format_hostport(lk.cfg.host, lk.cfg.port)}" for lk in links)
        self._emit(ev.SecurityEvent(
            "address_mismatch", server_id, event.addr, event.transport, method,
            f"上级平台地址不符 / not the upper platform's configured address: {method} from {event.transport} "
            f"{format_hostport(*event.addr)}, configured: {where}"))

    def on_request(self, event: Any, now: float) -> bool:
        """A request from (or claiming to be from) an upper; True when handled here."""
        req = event.request
        method = req.method
        try:
            call_id = req.call_id
        except SipParseError:
            return False
        if method == "CANCEL":
            invite_key = self.server.endpoint.invite_key_for_cancel(event.key)
            cid = self._call_by_key.get(invite_key) if invite_key is not None else None
            if cid is not None:
                return self._in_call(self.calls[cid], event, now)
        call = self.calls.get(call_id)
        if call is not None and method in ("ACK", "BYE", "INFO", "INVITE", "MESSAGE", "CANCEL"):
            return self._in_call(call, event, now)
        user = _user(req.headers.get("From"))
        links = [lk for lk in self.links.values() if lk.cfg.server_id == user]
        if not links or user is None:
            return False
        link = next((lk for lk in links if self._peer_ok(lk, event.addr, event.transport)), None)
        if link is None:
            self._refuse(event, user, links, now)
            return True
        if method == "OPTIONS":
            self._reply(event, 200, now, headers=[("Allow", ALLOW), ("Accept", f"{MANSCDP_TYPE}, application/sdp")])
        elif method == "MESSAGE":
            self._on_message(link, event, now)
        elif method == "SUBSCRIBE":
            self._on_subscribe(link, event, now)
        elif method == "INVITE":
            self._on_invite(link, event, now)
        elif method == "ACK":
            pass
        elif method in ("BYE", "INFO", "CANCEL", "NOTIFY"):
            self._reply(event, 481, now)
        else:
            self._reply(event, 405, now, headers=[("Allow", ALLOW)])
        return True

    def _parse(self, link: _Link, event: Any, now: float) -> manscdp.ManscdpMessage | None:
        try:
            return manscdp.parse(event.request.body)
        except manscdp.ManscdpError as exc:
            self.server.metrics.bad_messages += 1
            self._reply(event, 400, now, reason="Bad MANSCDP body")
            self._emit(ev.MessageRejected(link.cfg.server_id, event.addr, 400, f"bad MANSCDP from upper: {exc}"))
            return None

    def _on_message(self, link: _Link, event: Any, now: float) -> None:
        msg = self._parse(link, event, now)
        if msg is None:
            return
        pid = link.cfg.platform_id
        if msg.root == "Control" and msg.find("TeleBoot") is not None:
            # an upper platform never reboots our devices (the rule): refused on the wire, evidence above
            self._reply(event, 403, now, reason="Forbidden (TeleBoot not allowed from an upper platform)")
            self._emit(ev.UpperControl(pid, msg.sn, msg.device_id, msg))
            return
        self._reply(event, 200, now)
        if msg.root == "Query":
            if msg.cmd_type == "Catalog":
                self._remember(link, msg)
                self._emit(ev.UpperCatalogQuery(pid, msg.sn, msg.device_id))
            elif msg.cmd_type in ("DeviceInfo", "DeviceStatus", "RecordInfo"):
                self._emit(ev.UpperDeviceQuery(pid, msg.sn, msg.cmd_type, msg.device_id, msg))
        elif msg.root == "Control" and msg.cmd_type == "DeviceControl":
            self._emit(ev.UpperControl(pid, msg.sn, msg.device_id, msg))

    @staticmethod
    def _remember(link: _Link, msg: manscdp.ManscdpMessage) -> None:
        if len(link.queries) >= _MAX_QUERIES:
            link.queries.pop(next(iter(link.queries)))
        link.queries[msg.sn] = msg.device_id

    def _on_subscribe(self, link: _Link, event: Any, now: float) -> None:
        req = event.request
        msg = self._parse(link, event, now)
        if msg is None:
            return
        expires = _int(req.headers.get("Expires"))
        if expires is None:
            expires = 600 if msg.cmd_type == "Catalog" else 3600
        expires = min(expires, _MAX_EXPIRES)
        body = manscdp.build_message("Response", msg.cmd_type, msg.sn, msg.device_id, charset=link.cfg.charset,
                                     extra={"Result": "OK"})
        pid = link.cfg.platform_id
        sub = link.sub
        same = sub is not None and sub.call_id == req.call_id
        tag = sub.tag if same and sub is not None else new_tag()
        headers = [("Expires", str(expires)), ("Contact", self._contact(link))]
        if msg.cmd_type != "Catalog":  # Alarm / MobilePosition: kept, their notifications go in its dialog
            old = link.event_subs.get(msg.cmd_type)
            same = old is not None and old.call_id == req.call_id
            tag = old.tag if same and old is not None else tag
            self._reply_tagged(event, 200, now, tag, headers, body)
            if expires == 0:
                if same:
                    del link.event_subs[msg.cmd_type]
            elif same and old is not None:
                old.expires_at = now + expires
            elif msg.cmd_type in ("Alarm", "MobilePosition"):
                to = req.headers.get("To") or ""
                link.event_subs[msg.cmd_type] = _Sub(
                    req.call_id, f"{to};tag={tag}" if ";tag=" not in to else to, req.headers.get("From") or "",
                    _uri(req.headers.get("Contact")), (req.headers.get("Event") or msg.cmd_type).strip(), msg.sn,
                    msg.device_id, now + expires, tag)
            return
        self._reply_tagged(event, 200, now, tag, headers, body)
        if expires == 0:
            if same and sub is not None:
                link.sub = None
                self._notify(link, sub, b"", now, terminated="timeout")
                self._emit(ev.UpperCatalogSubscribed(pid, sub.sn, 0))
            return
        if same and sub is not None:
            sub.expires_at = now + expires
            return
        to = req.headers.get("To") or ""
        event_header = (req.headers.get("Event") or f"Catalog;id={msg.sn}").strip()
        link.sub = _Sub(req.call_id, f"{to};tag={tag}" if ";tag=" not in to else to, req.headers.get("From") or "",
                        _uri(req.headers.get("Contact")), event_header, msg.sn, msg.device_id, now + expires, tag)
        self._emit(ev.UpperCatalogSubscribed(pid, msg.sn, expires))

    def _reply_tagged(self, event: Any, status: int, now: float, tag: str, headers: list, body: bytes = b"",
                      content_type: str | None = MANSCDP_TYPE) -> bool:
        resp = make_response(event.request, status, to_tag=tag, headers=headers, body=body,
                             content_type=content_type if body else None)
        resp.headers.add("User-Agent", self._cfg.user_agent)
        return self.server.endpoint.send_response(event.key, resp, now)

    # ------------------------------------------------------------------ calls from uppers (UAS)
    def _on_invite(self, link: _Link, event: Any, now: float) -> None:
        req = event.request
        if req.to_tag:  # a re-INVITE for a call we do not have
            self._reply(event, 481, now)
            return
        try:
            offer = parse_offer(req.body)
        except OfferError as exc:
            self._reply(event, exc.status, now, reason="Bad SDP" if exc.status == 400 else None)
            self._emit(ev.MessageRejected(link.cfg.server_id, event.addr, exc.status, f"upper INVITE: {exc}"))
            return
        target = _target_id(req, offer)
        if target is None:
            self._reply(event, 404, now)
            return
        self.server.endpoint.send_response(event.key, make_response(req, 100), now)
        call = _Call(req.call_id, link, event.key, req, event.addr, event.transport.lower(), target, offer,
                     new_tag())
        self.calls[call.call_id] = call
        self._call_by_key[event.key] = call.call_id
        self._emit(ev.UpperInvite(link.cfg.platform_id, call.call_id, target, offer))

    def answer_invite(self, call_id: str, status: int, answer: UpperAnswer | None, reason: str | None,
                      now: float) -> bool:
        """The final answer to an upper's INVITE: 2xx with our SDP from ``answer``, or an error status."""
        call = self.calls.get(call_id)
        if call is None or call.state != "offered":
            return False
        if 200 <= status < 300:
            if answer is None:
                raise ValueError("a 2xx answer needs an UpperAnswer")
            call.answer_body = build_answer_sdp(call.link.cfg.local_id, call.offer, answer)
            resp = make_response(call.invite, status, to_tag=call.tag,
                                 headers=[("Contact", self._contact(call.link)),
                                          ("User-Agent", self._cfg.user_agent)],
                                 body=call.answer_body, content_type="application/sdp")
            if not self.server.endpoint.send_response(call.key, resp, now):
                self._drop(call)
                self._emit(ev.UpperBye(call.link.cfg.platform_id, call_id, "INVITE transaction gone"))
                return False
            call.state = "answered"
            return True
        resp = make_response(call.invite, status, _ascii(reason), to_tag=call.tag,
                             headers=[("User-Agent", self._cfg.user_agent)])
        self.server.endpoint.send_response(call.key, resp, now)
        self._drop(call)
        return True

    def bye(self, call_id: str, now: float, reason: str = "") -> bool:
        call = self.calls.get(call_id)
        if call is None:
            return False
        self._end_call(call, now, reason)
        return True

    def _end_call(self, call: _Call, now: float, reason: str) -> None:
        if call.state == "offered":
            resp = make_response(call.invite, 480, to_tag=call.tag, headers=[("User-Agent", self._cfg.user_agent)])
            self.server.endpoint.send_response(call.key, resp, now)
        else:
            self._send_bye(call, now, reason)
        self._drop(call)

    def media_status(self, call_id: str, now: float, notify_type: str = "121") -> bool:
        """Relay the end of a history file (Notify/MediaStatus) into the upper's call."""
        call = self.calls.get(call_id)
        if call is None or call.state == "offered":
            return False
        cfg = call.link.cfg
        body = manscdp.build_media_status_notify(self.server.next_sn(), call.target_id, notify_type,
                                                 charset=cfg.charset)
        self._send(call.link, self._in_dialog(call, "MESSAGE", body, MANSCDP_TYPE), now, "answer",
                   addr=call.addr, transport=call.transport)
        return True

    def _in_dialog(self, call: _Call, method: str, body: bytes = b"", content_type: str | None = None,
                   reason: str = "") -> SipRequest:
        call.cseq += 1
        h = Headers()
        h.add("Via", via_value(call.transport))
        h.add("From", call.local())
        h.add("To", call.invite.headers.get("From") or "")
        h.add("Call-ID", call.call_id)
        h.add("CSeq", f"{call.cseq} {method}")
        h.add("Max-Forwards", "70")
        h.add("User-Agent", self._cfg.user_agent)
        if reason and method == "BYE":
            h.add("Reason", f'SIP;text="{_ascii(reason)}"')
        if content_type:
            h.add("Content-Type", content_type)
        cfg = call.link.cfg
        target = _uri(call.invite.headers.get("Contact")) or f"sip:{cfg.server_id}@{format_hostport(*call.addr)}"
        return SipRequest(method, target, h, body)

    def _send_bye(self, call: _Call, now: float, reason: str = "") -> None:
        self._send(call.link, self._in_dialog(call, "BYE", reason=reason), now, "", addr=call.addr,
                   transport=call.transport)

    def _drop(self, call: _Call) -> None:
        self.calls.pop(call.call_id, None)
        self._call_by_key.pop(call.key, None)

    def _in_call(self, call: _Call, event: Any, now: float) -> bool:
        method = event.request.method
        link = call.link
        if not self._peer_ok(link, event.addr, event.transport):
            self._refuse(event, link.cfg.server_id, [link], now)
            return True
        pid = link.cfg.platform_id
        if method == "ACK":
            if call.state == "answered":
                call.state = "confirmed"
                self._emit(ev.UpperAck(pid, call.call_id))
        elif method == "BYE":
            self._reply(event, 200, now)
            if call.state == "offered":
                self.server.endpoint.send_response(call.key, make_response(call.invite, 487, to_tag=call.tag), now)
            self._drop(call)
            self._emit(ev.UpperBye(pid, call.call_id, "上级挂断 / BYE from the upper"))
        elif method == "CANCEL":
            self._reply(event, 200, now)
            if call.state == "offered":
                self.server.endpoint.send_response(call.key, make_response(call.invite, 487, to_tag=call.tag), now)
                self._drop(call)
                self._emit(ev.UpperBye(pid, call.call_id, "上级取消 / cancelled by the upper"))
        elif method == "INFO":
            if call.state == "offered":
                self._reply(event, 481, now)
            else:
                self._reply(event, 200, now)
                self._emit(ev.UpperInfo(pid, call.call_id, event.request.body))
        elif method == "INVITE":
            if call.state == "offered" or not event.request.to_tag:
                self._reply(event, 491 if event.request.to_tag else 482, now)
            else:  # a session refresh: the same answer again
                self._reply_tagged(event, 200, now, call.tag, [("Contact", self._contact(link))], call.answer_body,
                                   "application/sdp")
        elif method == "MESSAGE":
            msg = self._parse(link, event, now)
            if msg is not None:
                self._reply(event, 200, now)
        return True


def _ascii(text: str | None) -> str | None:
    if not text:
        return None
    cleaned = "".join(ch if 32 <= ord(ch) < 127 and ch != '"' else " " for ch in text).strip()
    return " ".join(cleaned.split())[:100] or None


def _valid_id(value: str | None) -> bool:
    return bool(value) and value.isascii() and value.isalnum() and len(value) <= 32  # type: ignore[union-attr]


def _target_id(req: SipRequest, offer: UpperOffer) -> str | None:
    """The channel the upper asks for: ``u=`` (history calls), else the first element of Subject, else the
    Request-URI user."""
    candidates = []
    if offer.uri:
        candidates.append(offer.uri.split(":")[0])
    subject = req.headers.get("Subject")
    if subject:
        candidates.append(subject.split(",")[0].split(":")[0].strip())
    try:
        candidates.append(parse_uri(req.uri).user)
    except SipParseError:
        pass
    return next((c for c in candidates if _valid_id(c)), None)


__all__ = ["UpperConfig", "CatalogEntry", "UpperOffer", "UpperAnswer", "UpperPlatforms", "OfferError",
           "parse_offer", "build_answer_sdp", "catalog_item", "record_item", "ALLOW", "STATES", "ORG_KINDS"]
