"""The GB/T 28181 device-management core: registrar, keepalive, queries, catalog sync (sans-IO).

It drives a :class:`sip_server.sip.SipEndpoint` (also sans-IO) and turns SIP traffic from devices into
:mod:`sip_server.gb.events`. Nothing here touches sockets, asyncio or the clock: the adapter in
``sip_server/service.py`` passes ``now`` (monotonic seconds) and moves bytes.
"""

from __future__ import annotations

import heapq
import itertools
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gbcore.timeutil import gb_time as _gb_time
from sip_server.gb import events as ev
from sip_server.gb import manscdp
from sip_server.gb.catalog import CatalogAssembler
from sip_server.gb.lockout import LockoutTracker
from sip_server.gb.presence import PresenceTracker
from sip_server.gb.records import RecordCollector, RecordQuery, record_query_extra
from sip_server.sip import (
    AckTimeout,
    DigestAuthenticator,
    Headers,
    MessageDropped,
    RequestReceived,
    ResponseReceived,
    SipEndpoint,
    SipParseError,
    SipRequest,
    TransactionTimeout,
    make_response,
    parse_name_addr,
    parse_uri,
)
from sip_server.sip.message import contact_value, format_hostport, random_hex, via_value

MANSCDP_TYPE = "Application/MANSCDP+xml"
#: connection-oriented transports: a device registered on one is believed only on that connection
STREAM_TRANSPORTS = ("tcp", "tls")


@dataclass(frozen=True)
class GbConfig:
    sip_id: str = "34020000002000000001"
    domain: str = "3402000000"
    realm: str = "3402000000"
    default_password: str | None = None
    allow_unknown: bool = True
    keepalive_interval: float = 60.0
    keepalive_misses: int = 3
    min_expires: int = 60
    max_expires: int = 86400
    lockout_failures: int = 5
    lockout_window: float = 600.0
    lockout_duration: float = 600.0
    catalog_timeout: float = 30.0
    query_timeout: float = 10.0
    record_query_timeout: float = 10.0  # how long a RecordInfo answer may take (all its MESSAGEs)
    nonce_ttl: float = 300.0
    user_agent: str = "gbops/0.1"
    query_charset: str = "GB2312"
    catalog_subscribe_expires: int = 3600  # 0: do not subscribe to catalog changes
    device_control_timeout: float = 2.0  # how long a DeviceControl waits for its Result (or the SIP answer)
    preset_query_timeout: float = 4.0
    alarm_response: bool = True  # answer a MESSAGE alarm with the Response/Alarm MESSAGE (A.2.6.3) after the 200
    # host[:port] put in the Contact of our requests (SUBSCRIBE, INVITE); None: the endpoint's local address
    # towards the device (the advertised address, the listening address, or the interface facing the device)
    contact_host: str | None = None
    # toward upper platforms (sip_server/gb/upper.py; the GBOPS_CASCADE_* settings)
    cascade_catalog_items_udp: int = 1  # catalog / record items per answer MESSAGE over UDP
    cascade_catalog_items_tcp: int = 8  # ... over TCP
    cascade_notify_batch: int = 100  # catalog changes gathered into one NOTIFY
    cascade_notify_interval: float = 60.0  # longest a catalog change waits for its NOTIFY
    cascade_push_unsubscribed: bool = False  # changes as MESSAGE Notify/Catalog to uppers with no subscription
    cascade_retry_initial: float = 5.0  # first REGISTER retry after a failure at first start (doubling)
    cascade_retry: float = 60.0  # REGISTER retry after a refusal, or once registered before
    cascade_keepalive_misses: int = 3  # failed keepalives before the upper counts as lost


@dataclass(slots=True)
class DeviceCredentials:
    """A device's own SIP password as digest HA1 values (the plain password is never stored)."""

    ha1: dict[str, str] = field(default_factory=dict)  # algorithm -> hex HA1 for the realm


@dataclass(slots=True)
class Route:
    """Where a device registered from: only an authenticated REGISTER sets or moves it.

    ``connected`` is False once the TCP connection the device registered on is gone: requests on any other
    connection (even from the same ip:port) are refused until the device registers again."""

    addr: tuple[str, int]
    transport: str
    contact: str | None
    connected: bool = True


@dataclass(slots=True)
class PendingQuery:
    device_id: str
    cmd_type: str
    sn: int
    deadline: float
    sent_wall: float | None = None  # wall clock when sent (DeviceStatus: the clock-skew sample's send time)


@dataclass(slots=True)
class Subscription:
    """A subscription (GB/T 28181 9.11): the device NOTIFYs catalog changes (or alarms) until it expires."""

    device_id: str
    sn: int
    generation: int
    state: str = "pending"  # pending | active | refused
    expires_at: float = 0.0
    reason: str | None = None
    kind: str = "Catalog"  # Catalog | Alarm
    expires: int = 0  # asked for


@dataclass(slots=True)
class PendingControl:
    """A DeviceControl MESSAGE in flight: its SIP answer, and (``wait``) its Response/DeviceControl Result."""

    device_id: str
    sn: int
    element: str
    wait: bool


@dataclass
class Metrics:
    registers: int = 0
    registrations_ok: int = 0
    challenges: int = 0
    auth_failures: int = 0
    lockouts: int = 0
    locked_refusals: int = 0
    keepalives: int = 0
    messages: int = 0
    bad_messages: int = 0
    queries_sent: int = 0
    query_failures: int = 0
    identity_refusals: int = 0


def gb_time(epoch: float | None = None) -> str:
    """GB/T 28181 ``Date:`` header value in the device time zone (Beijing time unless configured otherwise,
    whatever the host's zone), milliseconds, no offset: ``2026-11-21T13:50:00.123``."""
    return _gb_time(time.time() if epoch is None else epoch)


def _valid_id(s: str | None) -> bool:
    return bool(s) and len(s) <= 32 and s.isascii() and s.isalnum()


class GbServer:
    def __init__(
        self,
        config: GbConfig,
        endpoint: SipEndpoint | None = None,
        *,
        secret: bytes | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.endpoint = endpoint or SipEndpoint()
        self.auth = DigestAuthenticator(config.realm, secret or secrets.token_bytes(32), nonce_ttl=config.nonce_ttl)
        self.presence = PresenceTracker(config.keepalive_interval, config.keepalive_misses)
        self.lockout = LockoutTracker(config.lockout_failures, config.lockout_window, config.lockout_duration)
        self.catalog = CatalogAssembler(config.catalog_timeout)
        self.records = RecordCollector()
        self.credentials: dict[str, DeviceCredentials] = {}
        self.known: set[str] = set()
        self.routes: dict[str, Route] = {}
        self._tcp_peers: dict[tuple[str, int], set[str]] = {}  # TCP peer -> devices registered on it
        self.charsets: dict[str, str] = {}
        self.metrics = Metrics()
        self._events: deque[Any] = deque()
        self._pending: dict[tuple[str, int], PendingQuery] = {}  # (cmd_type, sn) -> query
        self._pending_heap: list[tuple[float, str, int]] = []  # (deadline, cmd_type, sn), lazily pruned
        self._txn_query: dict[Any, tuple[str, int, str]] = {}  # txn key -> (cmd_type, sn, device_id)
        self._subs: dict[str, Subscription] = {}  # device_id -> catalog subscription
        self._alarm_subs: dict[str, Subscription] = {}  # device_id -> alarm subscription
        self._alarm_wanted: dict[str, int] = {}  # device_id -> Expires asked for (re-subscribed on registering)
        self._sub_txn: dict[Any, tuple[str, str]] = {}  # SUBSCRIBE client transaction -> (kind, device_id)
        self._sub_heap: list[tuple[float, str, str, int]] = []  # (refresh at, kind, device_id, generation)
        self._control_txn: dict[Any, PendingControl] = {}  # DeviceControl MESSAGE transaction -> control
        self.gb_versions: dict[str, str] = {}  # device_id -> X-GB-ver of its last REGISTER ("2.0", "3.0")
        self._sn = itertools.count(int(time.time()) % 100000 + 1)
        from sip_server.gb.invite import InviteSessions

        self.invites = InviteSessions(self)
        from sip_server.gb.upper import UpperPlatforms

        self.uppers = UpperPlatforms(self)
        self._tag = secrets.token_hex(4)
        self._wall = wall_clock
        self._local_uri = f"sip:{config.sip_id}@{config.domain}"

    # ================================================================== configuration
    def set_device_credentials(self, device_id: str, ha1: dict[str, str] | None) -> None:
        self.known.add(device_id)
        if ha1:
            self.credentials[device_id] = DeviceCredentials(dict(ha1))
        else:
            self.credentials.pop(device_id, None)

    def forget_device(self, device_id: str) -> bool:
        """A device an operator deleted: unknown from now on (its credentials and route dropped, its presence
        forgotten without an event: the registry recorded the deletion).  Returns True when it was online."""
        self.known.discard(device_id)
        self.credentials.pop(device_id, None)
        self.routes.pop(device_id, None)
        return self.presence.forget(device_id)

    # ================================================================== event queue
    def next_event(self) -> Any | None:
        return self._events.popleft() if self._events else None

    def _emit(self, event: Any) -> None:
        self._events.append(event)

    # ================================================================== inputs
    def handle_sip_event(self, event: Any, now: float) -> None:
        if isinstance(event, RequestReceived):
            self._on_request(event, now)
        elif isinstance(event, ResponseReceived):
            self._on_response(event, now)
        elif isinstance(event, TransactionTimeout):
            self._on_timeout(event, now)
        elif isinstance(event, AckTimeout):
            self.uppers.on_ack_timeout(event, now)
        elif isinstance(event, MessageDropped):
            self.metrics.bad_messages += 1

    def handle_sip_events(self, now: float) -> None:
        """Drain the endpoint's events and act on each (when no transport adapter does it)."""
        endpoint = self.endpoint
        while (event := endpoint.next_event()) is not None:
            self.handle_sip_event(event, now)

    def receive_datagram(self, data: bytes, addr: tuple[str, int], now: float, transport: str = "udp") -> None:
        self.endpoint.receive_datagram(data, addr, now, transport)
        self.handle_sip_events(now)

    def get_timer(self) -> float | None:
        """The core's own timers; the endpoint's are driven by whoever drives the endpoint."""
        heap = self._pending_heap
        while heap and (heap[0][1], heap[0][2]) not in self._pending:
            heapq.heappop(heap)  # answered or failed already
        subs = self._sub_heap
        while subs and not self._sub_live(subs[0]):
            heapq.heappop(subs)
        timers = [t for t in (self.presence.get_timer(), self.catalog.get_timer(), self.records.get_timer(),
                              heap[0][0] if heap else None, subs[0][0] if subs else None,
                              self.uppers.get_timer()) if t is not None]
        return min(timers) if timers else None

    def handle_timer(self, now: float) -> None:
        self.uppers.handle_timer(now)
        for device_id, reason in self.presence.handle_timer(now):
            self._subs.pop(device_id, None)
            self._alarm_subs.pop(device_id, None)
            self._emit(ev.DeviceOffline(device_id, reason))
        for sync in self.catalog.handle_timer(now):
            self._emit(ev.CatalogFinished(sync.device_id, tuple(sync.items.values()), False, sync.state(),
                                          sync.progress()))
        for query in self.records.handle_timer(now):
            self._emit(ev.RecordsFinished(query.device_id, query.sn, query))
        subs = self._sub_heap
        while subs and subs[0][0] <= now:
            entry = heapq.heappop(subs)
            if self._sub_live(entry):  # refresh before it lapses
                if entry[1] == "Alarm":
                    self.subscribe_alarms(entry[2], now, self._alarm_wanted.get(entry[2], 3600))
                else:
                    self.subscribe_catalog(entry[2], now)
        heap = self._pending_heap
        while heap and heap[0][0] <= now:
            _, cmd_type, sn = heapq.heappop(heap)
            q = self._pending.pop((cmd_type, sn), None)
            if q is None:
                continue
            self.metrics.query_failures += 1
            self._emit(ev.QueryFailed(q.device_id, q.cmd_type, q.sn, "timeout"))

    # ================================================================== requests from devices
    def _on_request(self, event: RequestReceived, now: float) -> None:
        req = event.request
        method = req.method
        if method == "REGISTER":
            self._on_register(event, now)
            return
        if self.uppers.on_request(event, now):
            return  # from (or claiming to be) a configured upper platform, or in one of its calls
        if method in ("ACK", "BYE", "INFO", "MESSAGE") and self.invites.on_request(event, now):
            return  # in one of our dialogs (checked against the session's device there), or a MediaStatus
            # for a call we do not have
        if method == "ACK":
            return
        # Only an authenticated REGISTER moves a device: any other request that claims a registered
        # device's id must come from where (and how) it registered, else it changes nothing.
        claimed = self._from_user(req)
        if _valid_id(claimed) and not self._claim_ok(claimed, event):
            self._refuse_claim(event, claimed, now, method)
            return
        if method in ("MESSAGE", "NOTIFY"):
            self._on_message(event, now, claimed)
        elif method == "OPTIONS":
            self._reply(event, 200, now, headers=[("Allow", "REGISTER, MESSAGE, NOTIFY, INVITE, ACK, BYE, CANCEL, INFO, OPTIONS, SUBSCRIBE")])
        elif method == "BYE":
            self._reply(event, 481, now)
        else:
            self._reply(event, 405, now, headers=[("Allow", "REGISTER, MESSAGE, NOTIFY, ACK, BYE, OPTIONS")])

    def _reply(self, event: RequestReceived, status: int, now: float, *, reason: str | None = None,
               headers=(), body: bytes = b"", content_type: str | None = None) -> None:
        resp = make_response(event.request, status, reason, to_tag=self._tag, headers=list(headers), body=body,
                             content_type=content_type)
        resp.headers.add("User-Agent", self.config.user_agent)
        self.endpoint.send_response(event.key, resp, now)

    @staticmethod
    def _from_user(req: SipRequest) -> str | None:
        try:
            return parse_name_addr(req.headers.get("From") or "").uri.user
        except SipParseError:
            return None

    # ================================================================== device identity
    def _set_route(self, device_id: str, route: Route) -> None:
        old = self.routes.get(device_id)
        if old is not None and old.transport in STREAM_TRANSPORTS:
            ids = self._tcp_peers.get(old.addr)
            if ids is not None:
                ids.discard(device_id)
                if not ids:
                    del self._tcp_peers[old.addr]
        self.routes[device_id] = route
        if route.transport in STREAM_TRANSPORTS:
            self._tcp_peers.setdefault(route.addr, set()).add(device_id)

    def connection_lost(self, addr: tuple[str, int], transport: str = "tcp", now: float | None = None) -> None:
        """The transport lost the stream connection to ``addr``: devices that registered on it must
        register again before anything else they send is believed (a new connection, even from the same
        ip:port, is not the one they authenticated on); an upper platform on it is offline and registered
        again (with ``now``)."""
        if transport.lower() not in STREAM_TRANSPORTS:
            return
        if now is not None:
            self.uppers.connection_lost(addr, now)
        for device_id in self._tcp_peers.pop(addr, ()):
            route = self.routes.get(device_id)
            if route is not None and route.transport in STREAM_TRANSPORTS and route.addr == addr:
                route.connected = False

    def connect_failed(self, addr: tuple[str, int], transport: str, kind: str, detail: str, now: float) -> None:
        """The transport could not open a ``transport`` connection to ``addr`` (``kind``: ``certificate`` |
        ``tls`` | ``connect``): an upper platform there fails its registration with that reason; a request to
        a device there times out as before."""
        if transport.lower() in STREAM_TRANSPORTS:
            self.uppers.connect_failed(addr, transport, kind, detail, now)

    def is_registered_peer(self, device_id: str, addr: tuple[str, int], transport: str) -> bool:
        """True when ``addr``/``transport`` is where ``device_id`` holds its live registration (for TCP:
        the connection it registered on is still open)."""
        route = self.routes.get(device_id)
        if route is None or not self.presence.is_online(device_id):
            return False
        return (route.addr == addr and route.transport == transport.lower()
                and (route.transport not in STREAM_TRANSPORTS or route.connected))

    def _claim_ok(self, device_id: str, event: RequestReceived) -> bool:
        """A request claiming ``device_id`` may be acted on: the device is not registered here (the
        caller refuses or ignores that case on its own terms) or it comes from its registered peer."""
        if not self.presence.is_online(device_id):
            return True
        return self.is_registered_peer(device_id, event.addr, event.transport)

    def _refuse_claim(self, event: RequestReceived, device_id: str, now: float, what: str) -> None:
        """403 to a request that claims a registered device but does not come from it; nothing changes."""
        self.metrics.identity_refusals += 1
        self._reply(event, 403, now, reason="Forbidden (not the registered address)")
        route = self.routes.get(device_id)
        registered = (f"{route.transport} {_fmt_addr(route.addr)}"
                      + ("" if route.transport not in STREAM_TRANSPORTS or route.connected else " (connection closed)")
                      if route is not None else "none")
        self._emit(ev.SecurityEvent(
            "address_mismatch", device_id, event.addr, event.transport, event.request.method,
            f"设备地址不符 / not the device's registered address: {what} from {event.transport} "
            f"{_fmt_addr(event.addr)}, registered: {registered}"))

    def _register_expires(self, req: SipRequest) -> int | None:
        value = req.headers.get("Expires")
        if value is None:
            contact = req.headers.get("Contact")
            if contact and contact.strip() != "*":
                try:
                    value = parse_name_addr(contact).params.get("expires")
                except SipParseError:
                    value = None
        if value is None:
            return 3600
        try:
            return int(value.strip())
        except ValueError:
            return None

    def _on_register(self, event: RequestReceived, now: float) -> None:
        req, addr = event.request, event.addr
        m = self.metrics
        m.registers += 1
        device_id = self._from_user(req)
        if not _valid_id(device_id):
            self._reply(event, 400, now, reason="Bad From (no device id)")
            self._emit(ev.RegisterRejected(device_id, addr, 400, "bad device id"))
            return
        assert device_id is not None
        host_key = "addr:" + addr[0]
        id_key = "dev:" + device_id
        # Lockout must not be a denial of service. Wrong passwords from anywhere but the device's current
        # registered peer lock that address, and the id for every address other than the registered
        # peer; the device's refreshes from where it registered count (and are locked) on their own key.
        # So a device behind the same NAT as an attacker, or whose id an attacker guesses at, keeps its
        # registration.
        own = self.is_registered_peer(device_id, addr, event.transport)
        own_key = f"own:{device_id}@{_fmt_addr(addr)}/{event.transport}"
        if (self.lockout.is_locked(own_key, now=now) if own
                else self.lockout.is_locked(id_key, host_key, now=now)):
            m.locked_refusals += 1
            self._reply(event, 403, now, reason="Forbidden (locked out)")
            self._emit(ev.RegisterRejected(device_id, addr, 403, "locked out", locked_out=True))
            return
        if not self.config.allow_unknown and device_id not in self.known:
            self._reply(event, 403, now, reason="Forbidden (unknown device)")
            self._emit(ev.RegisterRejected(device_id, addr, 403, "unknown device"))
            return
        expires = self._register_expires(req)
        if expires is None or expires < 0:
            self._reply(event, 400, now, reason="Bad Expires")
            return
        authz = req.headers.get("Authorization")
        if not authz:
            m.challenges += 1
            self._reply(event, 401, now, headers=[("WWW-Authenticate", self.auth.challenge(now, device_id))])
            return
        creds = self.credentials.get(device_id)
        result = self.auth.verify(
            authz,
            method="REGISTER",
            bind=device_id,
            password=None if creds else self.config.default_password,
            ha1=creds.ha1 if creds else None,
            now=now,
        )
        if not result.ok:
            if result.stale:
                m.challenges += 1
                self._reply(event, 401, now,
                            headers=[("WWW-Authenticate", self.auth.challenge(now, device_id, stale=True))])
                return
            m.auth_failures += 1
            if own:
                locked = self.lockout.record_failure(own_key, now)
            else:
                locked = self.lockout.record_failure(id_key, now)
                locked = self.lockout.record_failure(host_key, now) or locked
            if locked:
                m.lockouts += 1
            self._reply(event, 403, now, reason="Forbidden")
            self._emit(ev.RegisterRejected(device_id, addr, 403, result.reason, locked_out=locked))
            if locked:
                self._emit(ev.SecurityEvent(
                    "lockout", device_id, addr, event.transport, "REGISTER",
                    f"密码错误次数过多，已锁定 / too many wrong passwords, locked out: "
                    f"{'the registered peer' if own else 'address ' + addr[0] + ' and the id for new addresses'}"
                    f" for {self.lockout.duration:.0f} s"))
            return
        self.lockout.record_success(own_key if own else id_key)
        if expires == 0:
            self._reply(event, 200, now, headers=[("Date", gb_time(self._wall())), ("Expires", "0")])
            if self.presence.unregister(device_id):
                self._subs.pop(device_id, None)
                self._alarm_subs.pop(device_id, None)
                self._emit(ev.DeviceOffline(device_id, "unregistered"))
            return
        if expires < self.config.min_expires:
            self._reply(event, 423, now, headers=[("Min-Expires", str(self.config.min_expires))])
            return
        expires = min(expires, self.config.max_expires)
        contact = req.headers.get("Contact")
        headers = [("Date", gb_time(self._wall())), ("Expires", str(expires))]
        if contact:
            headers.insert(0, ("Contact", contact))
        self._reply(event, 200, now, headers=headers)
        m.registrations_ok += 1
        transition = self.presence.register(device_id, now, expires)
        self._set_route(device_id, Route(addr, event.transport.lower(), contact))
        version = (req.headers.get("X-GB-ver") or "").strip()
        if version and len(version) <= 8 and version.replace(".", "").isdigit():
            self.gb_versions[device_id] = version
        else:
            self.gb_versions.pop(device_id, None)
        self._emit(ev.DeviceOnline(device_id, addr, event.transport, contact, expires,
                                   req.headers.get("User-Agent"), transition))
        if transition:
            self.query(device_id, "DeviceInfo", now)
            self.query(device_id, "ConfigDownload", now, extra={"ConfigType": "BasicParam"})
            self.sync_catalog(device_id, now)
            self.subscribe_catalog(device_id, now)
            if device_id in self._alarm_wanted:
                self.subscribe_alarms(device_id, now, self._alarm_wanted[device_id])

    def _on_message(self, event: RequestReceived, now: float, device_id: str | None) -> None:
        """A MESSAGE or NOTIFY; ``device_id`` is the From user (already checked against its route)."""
        req, addr = event.request, event.addr
        self.metrics.messages += 1
        if (req.method == "NOTIFY" and not req.body.strip()
                and "terminated" in (req.headers.get("Subscription-State") or "").lower()):
            self._reply(event, 200, now)  # RFC 6665 4.2.2: the final NOTIFY may carry no body
            return
        try:
            msg = manscdp.parse(req.body)
        except manscdp.ManscdpError as exc:
            self.metrics.bad_messages += 1
            self._reply(event, 400, now, reason="Bad MANSCDP body")
            self._emit(ev.MessageRejected(device_id, addr, 400, f"bad MANSCDP: {exc}"))
            return
        if not _valid_id(device_id):
            device_id = msg.device_id
            if _valid_id(device_id) and not self._claim_ok(device_id, event):
                self._refuse_claim(event, device_id, now, f"{req.method} {msg.root}/{msg.cmd_type}")
                return
        assert device_id is not None
        cmd = msg.cmd_type
        if msg.root == "Notify" and cmd == "Keepalive":
            if not self.presence.keepalive(device_id, now):
                # No live registration here: refusing makes the device register again.
                self._reply(event, 403, now, reason="Forbidden (not registered)")
                self._emit(ev.MessageRejected(device_id, addr, 403, "keepalive from unregistered device"))
                return
            self._reply(event, 200, now)
            self.metrics.keepalives += 1  # from the registered peer (checked above): the route stays
            self.charsets[device_id] = msg.charset
            faulty: tuple[str, ...] = ()
            try:
                faulty = tuple(manscdp.as_keepalive(msg).faulty_device_ids)
            except manscdp.ManscdpError:
                pass
            self._emit(ev.DeviceKeepalive(device_id, addr, faulty))
            return
        if not self.presence.is_online(device_id):
            self._reply(event, 403, now, reason="Forbidden (not registered)")
            self._emit(ev.MessageRejected(device_id, addr, 403, f"{msg.root}/{cmd} from unregistered device"))
            return
        if msg.root == "Notify" and cmd == "Alarm":
            self._on_alarm(event, now, device_id, msg)
            return
        self._reply(event, 200, now)
        self.charsets[device_id] = msg.charset
        try:
            self._dispatch(device_id, msg, now)
        except manscdp.ManscdpError as exc:
            self.metrics.bad_messages += 1
            self._emit(ev.MessageRejected(device_id, addr, 200, f"unusable {msg.root}/{cmd}: {exc}"))

    def _dispatch(self, device_id: str, msg: manscdp.ManscdpMessage, now: float) -> None:
        cmd, root = msg.cmd_type, msg.root
        if cmd == "Catalog":
            page = manscdp.as_catalog(msg)
            if root == "Notify":
                self._emit(ev.CatalogChanged(device_id, tuple(page.items)))
                return
            self._pending.pop(("Catalog", msg.sn), None)
            sync = self.catalog.add_page(device_id, msg.sn, page.sum_num, page.items, now)
            if sync is not None:
                self._emit(ev.CatalogFinished(device_id, tuple(sync.items.values()), True, sync.state(),
                                              sync.progress()))
            else:
                current = self.catalog.get(device_id)
                if current is not None:
                    self._emit(ev.CatalogProgress(device_id, current.progress()))
            return
        if root != "Response":
            if cmd == "MobilePosition":
                position = manscdp.as_mobile_position(msg)
                if position.longitude is not None and position.latitude is not None:
                    self._emit(ev.PositionReceived(device_id, position))
            else:
                self._emit(ev.NotifyReceived(device_id, cmd, msg))
            return
        pending = self._pending.get((cmd, msg.sn))
        if pending is not None and pending.device_id != device_id:
            pending = None  # another device's SN: not an answer to our query
        elif pending is not None:
            del self._pending[(cmd, msg.sn)]
        if cmd == "DeviceInfo":
            result: Any = manscdp.as_device_info(msg)
            self._emit(ev.DeviceInfoReceived(device_id, result))
        elif cmd == "DeviceStatus":
            result = manscdp.as_device_status(msg)
            self._emit(ev.DeviceTimeReported(device_id, msg.sn, result.device_time,
                                             pending.sent_wall if pending is not None else None, self._wall()))
        elif cmd == "RecordInfo":
            page = manscdp.as_record_info(msg)
            if msg.sn in self.records:
                query = self.records.add_page(device_id, page)
                if query is not None:
                    self._emit(ev.RecordsFinished(query.device_id, query.sn, query))
                return
            result = page
        elif cmd == "DeviceControl":
            result = manscdp.as_control_result(msg)
        elif cmd == "PresetQuery":
            result = manscdp.as_preset_list(msg)
        elif cmd == "MobilePosition":
            result = manscdp.as_mobile_position(msg)
        elif cmd == "ConfigDownload":
            result = msg
            interval, misses = _heartbeat_config(msg)
            if interval:
                self.presence.set_interval(device_id, interval, now)
                self._emit(ev.KeepaliveIntervalReported(device_id, interval, misses))
        else:
            result = msg
        if pending is not None:
            self._emit(ev.QueryAnswered(device_id, cmd, msg.sn, result))

    # ================================================================== requests to devices
    def next_sn(self) -> int:
        return next(self._sn)

    def query(self, device_id: str, cmd_type: str, now: float, *, extra: dict[str, str] | None = None,
              target_id: str | None = None, timeout: float | None = None) -> int | None:
        """Send a MANSCDP Query; returns its SN, or None when the device has no route."""
        route = self.routes.get(device_id)
        if route is None or not self.presence.is_online(device_id):
            return None
        sn = self.next_sn()
        body = manscdp.build_query(cmd_type, sn, target_id or device_id, charset=self._charset(device_id),
                                   extra=extra)
        key = self._send_message(device_id, route, body, now)
        deadline = now + (timeout or self.config.query_timeout)
        self._pending[(cmd_type, sn)] = PendingQuery(device_id, cmd_type, sn, deadline, self._wall())
        heapq.heappush(self._pending_heap, (deadline, cmd_type, sn))
        self._txn_query[key] = (cmd_type, sn, device_id)
        self.metrics.queries_sent += 1
        return sn

    def query_records(self, device_id: str, channel_id: str, start: datetime, end: datetime, now: float, *,
                      type: str = "all", timeout: float | None = None) -> int | None:
        """Ask ``channel_id`` of ``device_id`` for its recordings between ``start`` and ``end`` (aware
        datetimes; sent as device local time). The answer's pages are collected by SN until SumNum items
        came (:class:`sip_server.gb.records.RecordCollector`); :class:`ev.RecordsFinished` says when, also
        at the deadline with what arrived. Returns the SN, None when the device has no route. Raises
        ValueError for a window or type that cannot be asked."""
        extra = record_query_extra(start, end, type)
        route = self.routes.get(device_id)
        if route is None or not self.presence.is_online(device_id):
            return None
        sn = self.next_sn()
        body = manscdp.build_query("RecordInfo", sn, channel_id, charset=self._charset(device_id), extra=extra)
        key = self._send_message(device_id, route, body, now)
        self.records.start(device_id, channel_id, sn, now, timeout or self.config.record_query_timeout)
        self._txn_query[key] = ("RecordInfo", sn, device_id)
        self.metrics.queries_sent += 1
        return sn

    def record_query(self, sn: int) -> RecordQuery | None:
        """A RecordInfo query still in flight."""
        return self.records.get(sn)

    def _charset(self, device_id: str) -> str:
        """Ask in the charset the device speaks (seen in its last message), else the platform default."""
        charset = self.charsets.get(device_id, self.config.query_charset)
        if charset.upper() not in ("UTF-8", "GB2312", "GBK", "GB18030"):
            charset = self.config.query_charset
        return charset

    def sync_catalog(self, device_id: str, now: float) -> int | None:
        sn = self.query(device_id, "Catalog", now, timeout=self.config.catalog_timeout)
        if sn is not None:
            self._pending.pop(("Catalog", sn), None)  # the assembler owns the catalog timeout
            self.catalog.start(device_id, sn, now)
        return sn

    def subscription(self, device_id: str) -> Subscription | None:
        return self._subs.get(device_id)

    def alarm_subscription(self, device_id: str) -> Subscription | None:
        return self._alarm_subs.get(device_id)

    def _sub_live(self, entry: tuple[float, str, str, int]) -> bool:
        sub = (self._alarm_subs if entry[1] == "Alarm" else self._subs).get(entry[2])
        return sub is not None and sub.generation == entry[3] and sub.state == "active"

    def subscribe_catalog(self, device_id: str, now: float) -> int | None:
        """SUBSCRIBE to the device's catalog changes (Event: Catalog); it NOTIFYs ADD/DEL/ON/OFF/... items."""
        expires = self.config.catalog_subscribe_expires
        route = self.routes.get(device_id)
        if expires <= 0 or route is None or not self.presence.is_online(device_id):
            return None
        sn = self.next_sn()
        old = self._subs.get(device_id)
        generation = old.generation + 1 if old else 1
        self._subs[device_id] = Subscription(device_id, sn, generation)
        body = manscdp.build_query("Catalog", sn, device_id, charset=self._charset(device_id))
        key = self._send_message(device_id, route, body, now, method="SUBSCRIBE", extra=[
            ("Event", f"Catalog;id={sn}"),
            ("Expires", str(expires)),
            ("Contact", self.contact(route)),
        ])
        self._sub_txn[key] = ("Catalog", device_id)
        return sn

    def subscribe_alarms(self, device_id: str, now: float, expires: int = 3600) -> int | None:
        """SUBSCRIBE to the device's alarms (``Event: presence`` with a Query/Alarm body for all priorities
        and methods, A.2.4.6); refreshed before it lapses, and again whenever the device registers anew.
        Returns the SN, None when the device has no route (it is subscribed when it registers)."""
        if isinstance(expires, bool) or not isinstance(expires, int) or expires < 30:
            raise ValueError("订阅时长须至少 30 秒 / the subscription must last at least 30 s")
        self._alarm_wanted[device_id] = expires
        route = self.routes.get(device_id)
        if route is None or not self.presence.is_online(device_id):
            return None
        sn = self.next_sn()
        old = self._alarm_subs.get(device_id)
        generation = old.generation + 1 if old else 1
        self._alarm_subs[device_id] = Subscription(device_id, sn, generation, kind="Alarm", expires=expires)
        body = manscdp.build_alarm_subscribe(sn, device_id, charset=self._charset(device_id))
        key = self._send_message(device_id, route, body, now, method="SUBSCRIBE", extra=[
            ("Event", f"presence;id={sn}"),
            ("Expires", str(expires)),
            ("Contact", self.contact(route)),
        ])
        self._sub_txn[key] = ("Alarm", device_id)
        return sn

    def unsubscribe_alarms(self, device_id: str) -> None:
        """Stop refreshing (and re-making) the device's alarm subscription; it lapses at its expiry."""
        self._alarm_wanted.pop(device_id, None)
        self._alarm_subs.pop(device_id, None)

    def _on_subscribe_answer(self, kind: str, device_id: str, response: Any, now: float) -> None:
        sub = (self._alarm_subs if kind == "Alarm" else self._subs).get(device_id)
        if sub is None:
            return
        if 200 <= response.status < 300:
            try:
                granted = int((response.headers.get("Expires") or "").strip())
            except ValueError:
                granted = sub.expires if kind == "Alarm" else self.config.catalog_subscribe_expires
            if granted <= 0:
                sub.state, sub.reason = "refused", "device granted Expires: 0"
            else:
                sub.state, sub.expires_at, sub.reason = "active", now + granted, None
                heapq.heappush(self._sub_heap, (now + max(granted * 0.8, granted - 60), kind, device_id,
                                                sub.generation))
        else:
            # Many devices do not support catalog subscription; the catalog query on each registration and
            # the manual sync still keep the channels right.
            sub.state, sub.reason = "refused", f"{response.status} {response.reason}"
        if kind == "Alarm":
            self._emit(ev.SubscriptionAnswered(device_id, kind, sub.sn, sub.state, sub.reason))

    # ------------------------------------------------------------------ device control
    def gb_version(self, device_id: str) -> str | None:
        """The device's ``X-GB-ver`` from its last REGISTER ("2.0" GB/T 28181-2016, "3.0" -2022)."""
        return self.gb_versions.get(device_id)

    def iframe_element(self, device_id: str) -> str:
        """The key-frame command as the device's version spells it: ``IFrameCmd`` (2022, X-GB-ver 3.0 and
        later), else the 2016 ``IFameCmd``."""
        version = self.gb_versions.get(device_id, "")
        try:
            major = int(version.split(".")[0]) if version else 0
        except ValueError:
            major = 0
        return "IFrameCmd" if major >= 3 else "IFameCmd"

    def device_control(self, device_id: str, target_id: str | None, element: str, value: Any, now: float, *,
                       wait: bool, timeout: float | None = None, **build: Any) -> int | None:
        """Send Control/DeviceControl ``element`` = ``value`` to ``target_id`` (a channel; None: the device)
        of ``device_id``. ``IFameCmd``/``IFrameCmd`` are sent as the device's version spells them. Its SIP
        answer comes as :class:`ev.ControlDelivered` or :class:`ev.QueryFailed`; with ``wait`` the device's
        Response/DeviceControl comes as :class:`ev.QueryAnswered` (a ``manscdp.ControlResult``, keyed by
        CmdType + SN) or a ``timeout`` QueryFailed after ``timeout``. ``build`` goes to
        :func:`manscdp.build_device_control` (``preset_name``, ``info``, ``extra_info``...). Returns the SN, None
        when the device has no route; raises :class:`manscdp.ManscdpError` for a command that cannot be sent."""
        route = self.routes.get(device_id)
        if route is None or not self.presence.is_online(device_id):
            return None
        if element in ("IFameCmd", "IFrameCmd"):
            element = self.iframe_element(device_id)
        sn = self.next_sn()
        body = manscdp.build_device_control(sn, target_id or device_id, element, value,
                                            charset=self._charset(device_id), **build)
        key = self._send_message(device_id, route, body, now)
        self._control_txn[key] = PendingControl(device_id, sn, element, wait)
        if wait:
            deadline = now + (timeout or self.config.device_control_timeout)
            self._pending[("DeviceControl", sn)] = PendingQuery(device_id, "DeviceControl", sn, deadline)
            heapq.heappush(self._pending_heap, (deadline, "DeviceControl", sn))
        return sn

    def cancel_query(self, cmd_type: str, sn: int) -> None:
        """Nobody waits for this answer any more: forget it (a late answer is ignored)."""
        self._pending.pop((cmd_type, sn), None)

    def _control_failed(self, control: PendingControl, reason: str) -> None:
        self._pending.pop(("DeviceControl", control.sn), None)
        self.metrics.query_failures += 1
        self._emit(ev.QueryFailed(control.device_id, "DeviceControl", control.sn, reason))

    # ------------------------------------------------------------------ alarms
    def _on_alarm(self, event: RequestReceived, now: float, device_id: str, msg: manscdp.ManscdpMessage) -> None:
        """Notify/Alarm (MESSAGE, or NOTIFY of an alarm subscription): 400 and nothing else when it lacks what
        the standard makes mandatory; else 200, :class:`ev.AlarmReceived`, and for a MESSAGE the Response/Alarm
        acknowledgement (A.2.6.3)."""
        try:
            alarm = manscdp.check_alarm(manscdp.as_alarm(msg))
        except manscdp.ManscdpError as exc:
            self.metrics.bad_messages += 1
            self._reply(event, 400, now, reason="Bad Alarm body")
            self._emit(ev.MessageRejected(device_id, event.addr, 400, f"bad Alarm: {exc}"))
            return
        self._reply(event, 200, now)
        self.charsets[device_id] = msg.charset
        self._emit(ev.AlarmReceived(device_id, alarm))
        route = self.routes.get(device_id)
        if self.config.alarm_response and event.request.method == "MESSAGE" and route is not None:
            body = manscdp.build_alarm_response(msg.sn, msg.device_id, charset=self._charset(device_id))
            self._send_message(device_id, route, body, now)

    def contact_host(self, route: Route) -> str:
        """host:port for the Contact of a request to a device: the configured (advertised) address, else
        the endpoint's local address towards the device, else (no transport yet) the SIP domain."""
        if self.config.contact_host:
            return self.config.contact_host
        local = self.endpoint.local_address(route.addr, route.transport)
        return format_hostport(*local) if local is not None else self.config.domain

    def contact(self, route: Route) -> str:
        """The Contact value of a request to a device (see :meth:`contact_host`)."""
        return contact_value(self.config.sip_id, self.contact_host(route))

    def _send_message(self, device_id: str, route: Route, body: bytes, now: float, *, method: str = "MESSAGE",
                      extra: list[tuple[str, str]] | None = None) -> Any:
        host, port = route.addr
        headers = Headers()
        headers.add("Via", via_value(route.transport))
        headers.add("From", f"<{self._local_uri}>;tag={random_hex(5)}")
        headers.add("To", f"<sip:{device_id}@{self.config.domain}>")
        headers.add("Call-ID", f"{random_hex(10)}@{self.config.domain}")
        headers.add("CSeq", f"1 {method}")
        headers.add("Max-Forwards", "70")
        headers.add("User-Agent", self.config.user_agent)
        for name, value in extra or ():
            headers.add(name, value)
        headers.add("Content-Type", MANSCDP_TYPE)
        req = SipRequest(method, f"sip:{device_id}@{host}:{port}", headers, body)
        return self.endpoint.send_request(req, route.addr, now, route.transport)

    # ================================================================== responses to our requests
    def _on_response(self, event: ResponseReceived, now: float) -> None:
        if self.invites.on_response(event, now) or self.uppers.on_response(event, now):
            return
        status = event.response.status
        if status < 200:
            return
        sub_ref = self._sub_txn.pop(event.key, None)
        if sub_ref is not None:
            self._on_subscribe_answer(sub_ref[0], sub_ref[1], event.response, now)
            return
        control = self._control_txn.pop(event.key, None)
        if control is not None:
            if status < 300:
                self._emit(ev.ControlDelivered(control.device_id, control.sn, status))
            else:
                self._control_failed(control, f"{status} {event.response.reason}")
            return
        ref = self._txn_query.pop(event.key, None)
        if ref is None or status < 300:
            return
        self._fail(ref, f"{status} {event.response.reason}", now)

    def _on_timeout(self, event: TransactionTimeout, now: float) -> None:
        if self.invites.on_timeout(event, now) or self.uppers.on_timeout(event, now):
            return
        sub_ref = self._sub_txn.pop(event.key, None)
        if sub_ref is not None:
            kind, sub_device = sub_ref
            sub = (self._alarm_subs if kind == "Alarm" else self._subs).get(sub_device)
            if sub is not None:
                sub.state, sub.reason = "refused", "no answer to SUBSCRIBE"
                if kind == "Alarm":
                    self._emit(ev.SubscriptionAnswered(sub_device, kind, sub.sn, sub.state, sub.reason))
            return
        control = self._control_txn.pop(event.key, None)
        if control is not None:
            self._control_failed(control, "no response (transaction timeout)")
            return
        ref = self._txn_query.pop(event.key, None)
        if ref is not None:
            self._fail(ref, "no response (transaction timeout)", now)

    def _fail(self, ref: tuple[str, int, str], reason: str, now: float) -> None:
        cmd_type, sn, device_id = ref
        if cmd_type == "Catalog":
            sync = self.catalog.fail(device_id, sn)
            if sync is not None:
                self._emit(ev.CatalogFinished(device_id, tuple(sync.items.values()), False,
                                              f"failed: {reason}", sync.progress()))
            self.metrics.query_failures += 1
            self._emit(ev.QueryFailed(device_id, cmd_type, sn, reason))
            return
        if cmd_type == "RecordInfo" and self.records.fail(sn) is not None:
            self.metrics.query_failures += 1
            self._emit(ev.QueryFailed(device_id, cmd_type, sn, reason))
            return
        if self._pending.pop((cmd_type, sn), None) is None:
            return
        self.metrics.query_failures += 1
        self._emit(ev.QueryFailed(device_id, cmd_type, sn, reason))


def _fmt_addr(addr: tuple[str, int]) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _heartbeat_config(msg: manscdp.ManscdpMessage) -> tuple[float | None, int | None]:
    """HeartBeatInterval / HeartBeatCount from a ConfigDownload BasicParam response, if present."""
    interval = count = None
    for el in msg.element.iter():
        tag = el.tag.lower() if isinstance(el.tag, str) else ""
        text = (el.text or "").strip()
        if tag == "heartbeatinterval" and text.isdigit() and int(text) > 0:
            interval = float(text)
        elif tag == "heartbeatcount" and text.isdigit() and int(text) > 0:
            count = int(text)
    return interval, count


__all__ = ["GbServer", "GbConfig", "DeviceCredentials", "Route", "gb_time", "parse_uri"]
