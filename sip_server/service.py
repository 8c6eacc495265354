"""The asyncio adapter around the GB/T 28181 core: sockets, timers, and the registry writes.

Everything with a clock or a socket lives here; :class:`sip_server.gb.server.GbServer` stays sans-IO.
The core's events become device-registry events, which a :class:`RegistryWriter` writes in batches,
so thousands of registrations and keepalives a second never wait for the database.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Container, Sequence
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any

from device_registry import events as reg
from gbcore.log import get_logger
from sip_server.gb import events as ev
from sip_server.gb.invite import InviteAnswered, InviteFailed, MediaStatusReceived, SessionEnded
from sip_server.gb.records import RecordQuery
from sip_server.gb.server import GbConfig, GbServer, Route
from sip_server.gb.upper import CatalogEntry, UpperAnswer, UpperConfig
from sip_server.sip import SipEndpoint
from sip_server.sip.dialog import MANSRTSP_TYPE
from sip_server.sip.endpoint import RequestReceived
from sip_server.transport import SipTransport

log = get_logger("gbops.sip")

# Catalog NOTIFY events that only change a channel's state (VLOST: video lost, DEFECT: fault, DEL: removed);
# the registry keeps the event itself as the status, so reports can tell a lost video from a switched-off one.
_STATE_EVENTS = frozenset({"ON", "OFF", "VLOST", "DEFECT", "DEL"})


class DeviceNotReachable(Exception):
    """The device is not online here, so it cannot be asked anything."""


class QueryError(Exception):
    """A query to a device failed (refused, timed out); the message says how."""


class InviteRefused(Exception):
    """The device refused or failed the INVITE; ``status`` is its SIP status when it gave one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class InviteTimeout(InviteRefused):
    """The device did not answer the INVITE in time (a refusal without a SIP status)."""


def _addr(addr: tuple[str, int]) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_host_port(value: str, default_port: int = 0) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` -> (host, port); port ``default_port`` when absent."""
    text = value.strip()
    if not text:
        raise ValueError("empty address")
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
        if rest and not rest.startswith(":"):
            raise ValueError(f"bad address {value!r}")
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""  # a bare name, an IPv4 address or an unbracketed IPv6 address
    if not host or (port and not (port.isdigit() and 0 < int(port) < 65536)):
        raise ValueError(f"bad address {value!r}: host[:port] expected")
    return host, int(port) if port else default_port


class SecurityEventLimiter:
    """At most ``limit`` security events per source IP per ``window`` seconds are passed on; the rest are
    counted and reported with the next one passed on for that IP (an attacker must not flood the log)."""

    def __init__(self, limit: int = 10, window: float = 60.0, max_sources: int = 10000) -> None:
        self.limit = limit
        self.window = window
        self.max_sources = max_sources
        self._sources: dict[str, list[float | int]] = {}  # ip -> [window start, passed, suppressed]
        self.suppressed_total = 0

    def admit(self, ip: str, now: float) -> int | None:
        """None: suppress this one; else how many were suppressed from this IP since the last one passed."""
        entry = self._sources.get(ip)
        if entry is None:
            if len(self._sources) >= self.max_sources:
                self._prune(now)
            entry = self._sources[ip] = [now, 0, 0]
        elif now - entry[0] >= self.window:
            entry[0], entry[1] = now, 0
        if entry[1] >= self.limit:
            entry[2] += 1
            self.suppressed_total += 1
            return None
        entry[1] += 1
        suppressed, entry[2] = int(entry[2]), 0
        return suppressed

    def _prune(self, now: float) -> None:
        for ip in [ip for ip, e in self._sources.items() if now - e[0] >= self.window and not e[2]]:
            del self._sources[ip]
        if len(self._sources) >= self.max_sources:
            self._sources.clear()


# Every field of the registry's ChannelInfo but the id has the same name on manscdp.CatalogItem.
_CHANNEL_INFO_FIELDS = tuple(f.name for f in fields(reg.ChannelInfo) if f.name != "channel_id")


def channel_info(item: Any) -> reg.ChannelInfo:
    """manscdp.CatalogItem -> registry ChannelInfo (the registry does not import the SIP packages)."""
    return reg.ChannelInfo(channel_id=item.device_id, **{name: getattr(item, name) for name in _CHANNEL_INFO_FIELDS})


class SipService:
    def __init__(
        self,
        config: GbConfig,
        *,
        host: str,
        port: int,
        writer: Any | None = None,
        secret: bytes | None = None,
        wall_clock: Callable[[], float] = time.time,
        advertised_address: str | None = None,
        tcp_idle_timeout: float | None = 30.0,
        tcp_max_connections: int | None = 2000,
        tcp_max_per_address: int | None = 20,
        on_security_event: Callable[[str, str | None, tuple[str, int], dict], Any] | None = None,
        security_event_limit: int = 10,
        security_event_window: float = 60.0,
        tls_port: int = 0,
        tls_context: Any | None = None,
        tls_client_context: Any | None = None,
    ) -> None:
        self.config = config
        self.host = host
        self.port = port
        self.writer = writer
        self.endpoint = SipEndpoint()
        self.gb = GbServer(config, self.endpoint, secret=secret, wall_clock=wall_clock)
        self.transport: SipTransport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._waiters: dict[tuple[str, int], asyncio.Future] = {}
        self._catalog_waiters: dict[str, list[asyncio.Future]] = {}
        self._invite_waiters: dict[str, asyncio.Future] = {}
        self._control_waiters: dict[int, tuple[bool, asyncio.Future]] = {}  # sn -> (wait for Result, future)
        self._alarm_sub_waiters: dict[str, list[asyncio.Future]] = {}
        self._listeners: list[Callable[[Any], None]] = []
        self._wall = wall_clock
        # host[:port] for Via/Contact behind NAT or in a cloud (port absent: the listening port)
        self.advertise = parse_host_port(advertised_address) if advertised_address else None
        self.tcp_idle_timeout = tcp_idle_timeout
        self.tcp_max_connections = tcp_max_connections
        self.tcp_max_per_address = tcp_max_per_address
        # SIP over TLS (sips): the listener's port (0: off) and its ssl.SSLContext (gbcore.tls.server_context)
        self.tls_port = tls_port if tls_context is not None else 0
        self.tls_context = tls_context
        # outbound SIP over TLS (upper platforms configured "tls"): verifies the upper's certificate
        # (gbcore.tls.client_context with cascade_tls_ca_file); None: no outbound TLS
        self.tls_client_context = tls_client_context
        # on_security_event(kind, device_id, (ip, port), detail): a request refused because it is not from
        # the device it claims to be, or a REGISTER lockout; rate-limited per source IP (see
        # SecurityEventLimiter). The application records it on the audit log.
        self.on_security_event = on_security_event
        self.security_limiter = SecurityEventLimiter(security_event_limit, security_event_window)
        # address_blocked(ip): the security monitor's block list; a blocked address's requests are dropped
        # unanswered (set by the application; None: nothing is blocked)
        self.address_blocked: Callable[[str], bool] | None = None
        self.blocked_dropped = 0

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        cfg = self.config
        # Silence on a registered device's connection for much longer than its keepalive window means the
        # peer is gone without a FIN; the presence tracker has long marked it offline by then. Never below
        # 30 minutes, so devices configured with long heartbeat intervals are not cut off.
        registered_idle = max(1800.0, 2 * cfg.keepalive_misses * cfg.keepalive_interval)
        self.transport = SipTransport(self.endpoint, self.host, self.port, on_event=self._on_sip_event,
                                      advertise=self.advertise, tcp_idle_timeout=self.tcp_idle_timeout,
                                      tcp_registered_idle_timeout=registered_idle,
                                      tcp_max_connections=self.tcp_max_connections,
                                      tcp_max_per_address=self.tcp_max_per_address,
                                      on_connection_lost=self._on_connection_lost,
                                      on_connect_failed=self._on_connect_failed,
                                      tls_port=self.tls_port or None, tls_context=self.tls_context,
                                      tls_client_context=self.tls_client_context)
        await self.transport.start()
        kinds = ("udp", "tcp")
        bound = list(zip(kinds, self.transport.local_addresses, strict=False))
        if self.transport.tls_address is not None:
            bound.append(("tls", self.transport.tls_address))
        log.info("sip.listening", addresses=" ".join(f"{k}/{_addr(a)}" for k, a in bound),
                 sip_id=self.config.sip_id, domain=self.config.domain)

    async def close(self) -> None:
        if self.gb.uppers.links and self.transport is not None and self._loop is not None:
            self.set_upper_platforms([])  # un-REGISTER, BYE their calls (best effort)
        if self._timer is not None:
            self._timer.cancel()
        if self.transport is not None:
            await self.transport.close()
        for fut in [*self._waiters.values(), *(f for _, f in self._control_waiters.values())]:
            if not fut.done():
                fut.cancel()

    @property
    def bound_port(self) -> int:
        assert self.transport is not None
        return self.transport.local_addresses[0][1]

    def add_listener(self, fn: Callable[[Any], None]) -> None:
        """Observe the core's events (tests, metrics, later issues)."""
        self._listeners.append(fn)

    def restore(self, snapshots: list[Any], *, presence_of: Container[str] | None = None) -> None:
        """Load devices from the registry at start: credentials and who is online until when.

        Called before :meth:`start`, in the loop that will run the service: the restored devices' timers are
        armed here, so a device that never speaks again still goes offline (without this they slept until
        the first SIP message arrived).  ``presence_of`` (several SIP nodes, issue 17): only these devices'
        presence is restored here, the others' registrations live on another node (every device's credentials
        are loaded: it may register anywhere).  Also called later for devices this node takes over."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        now_mono, now_wall = self._now(), self._wall()
        at = datetime.fromtimestamp(now_wall, UTC)
        for snap in snapshots:
            ha1 = {}
            if snap.password_ha1_md5 and snap.password_realm == self.config.realm:
                ha1["MD5"] = snap.password_ha1_md5
                if snap.password_ha1_sha256:
                    ha1["SHA-256"] = snap.password_ha1_sha256
            self.gb.set_device_credentials(snap.device_id, ha1 or None)
            if presence_of is not None and snap.device_id not in presence_of:
                continue
            if snap.online and snap.register_expires_at and snap.last_seen:
                if snap.register_expires_at.timestamp() <= now_wall:
                    # Its registration ran out while the platform was down (a real offline: it must register
                    # again); we cannot know when it really went away, so say so rather than blame the device.
                    self._submit(reg.DeviceWentOffline(snap.device_id, at, "platform_restart"))
                    continue
                # A keepalive window that ran out during the downtime is not the device's fault: its misses
                # are counted again from now (the registration, state in the store, stays as it was).
                self.gb.presence.restore(
                    snap.device_id,
                    online=True,
                    expires_at=now_mono + (snap.register_expires_at.timestamp() - now_wall),
                    last_seen=now_mono + (snap.last_seen.timestamp() - now_wall),
                    interval=snap.keepalive_interval,
                    restarted_at=now_mono,
                )
                if snap.remote_addr:
                    host, _, port = snap.remote_addr.rpartition(":")
                    if port.isdigit():
                        transport = (snap.transport or "udp").lower()
                        # a TCP connection does not survive the restart: the device must register again
                        # before its messages on a new one are believed
                        self.gb.routes[snap.device_id] = Route((host.strip("[]"), int(port)), transport, None,
                                                               connected=transport not in ("tcp", "tls"))
        self._process()

    def forget_device(self, device_id: str) -> bool:
        """A deleted device: unknown here from now on (a REGISTER from it is refused unless unknown devices are
        allowed). Returns True when it was online here."""
        was = self.gb.forget_device(device_id)
        self._process()
        return was

    def release(self, device_id: str) -> bool:
        """Forget a device's registration here without an offline transition: it registered at another SIP
        node of the cluster, which judges its presence from now on.  Its credentials stay.  Returns True when
        it was online here."""
        was = self.gb.presence.forget(device_id)
        self.gb.routes.pop(device_id, None)
        return was

    def held_devices(self) -> list[str]:
        """The devices whose registration lives on this node (online here)."""
        return self.gb.presence.online_ids()

    # ------------------------------------------------------------------ core plumbing
    def _now(self) -> float:
        return (self._loop or asyncio.get_running_loop()).time()

    def _on_sip_event(self, event: Any) -> None:
        blocked = self.address_blocked
        if blocked is not None and isinstance(event, RequestReceived) and blocked(event.addr[0]):
            self.blocked_dropped += 1
            return
        self.gb.handle_sip_event(event, self._now())
        self._process()

    def _on_connection_lost(self, addr: tuple[str, int], transport: str) -> None:
        self.gb.connection_lost(addr, transport, self._now())
        self._process()

    def _on_connect_failed(self, addr: tuple[str, int], transport: str, kind: str, detail: str) -> None:
        self.gb.connect_failed(addr, transport, kind, detail, self._now())
        self._process()

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.gb.handle_timer(self._now())
        self._process()

    def _process(self) -> None:
        gb = self.gb
        while (event := gb.next_event()) is not None:
            try:
                self._handle(event)
            except Exception:  # one bad event must not stop the SIP service
                log.exception("sip.event_failed", event=type(event).__name__)
            for fn in self._listeners:
                fn(event)
        if self.transport is not None:
            self.transport.flush()
        self._arm_timer()

    def _arm_timer(self) -> None:
        when = self.gb.get_timer()
        if when is None or self._loop is None:
            return
        if self._timer is not None:
            if self._timer_at is not None and self._timer_at <= when:
                return
            self._timer.cancel()
        self._timer_at = when
        self._timer = self._loop.call_at(when, self._on_timer)

    def _submit(self, event: Any) -> None:
        if self.writer is not None:
            self.writer.submit(event)

    def _handle(self, event: Any) -> None:
        at = datetime.fromtimestamp(self._wall(), UTC)
        if isinstance(event, ev.DeviceKeepalive):
            self._submit(reg.DeviceSeen(event.device_id, at, _addr(event.remote_addr)))
        elif isinstance(event, ev.DeviceOnline):
            if event.transport.lower() in ("tcp", "tls") and self.transport is not None:
                self.transport.mark_authenticated(event.remote_addr)
            # the registry's transport column knows udp/tcp only: a TLS registration is stored as its TCP
            # connection (it does not survive a restart either way; the device registers again)
            stored = "tcp" if event.transport.lower() == "tls" else event.transport
            self._submit(reg.DeviceRegistered(event.device_id, at, _addr(event.remote_addr), stored,
                                              event.contact, event.expires, event.user_agent))
            if event.transition:
                log.info("device.online", device_id=event.device_id, addr=_addr(event.remote_addr),
                         transport=event.transport, expires=event.expires)
        elif isinstance(event, ev.DeviceOffline):
            if event.reason == "unregistered":
                self._submit(reg.DeviceUnregistered(event.device_id, at))
            else:
                self._submit(reg.DeviceWentOffline(event.device_id, at, event.reason))
            log.info("device.offline", device_id=event.device_id, reason=event.reason)
        elif isinstance(event, ev.DeviceInfoReceived):
            i = event.info
            self._submit(reg.DeviceInfoReported(event.device_id, at, i.device_name, i.manufacturer, i.model,
                                                i.firmware, i.device_type, i.channel,
                                                charset=self.gb.charsets.get(event.device_id)))
        elif isinstance(event, ev.KeepaliveIntervalReported):
            self._submit(reg.KeepaliveIntervalSet(event.device_id, int(event.interval)))
        elif isinstance(event, ev.CatalogFinished):
            self._submit(reg.CatalogReported(event.device_id, at, tuple(channel_info(i) for i in event.items),
                                             event.complete, event.state))
            log.info("catalog.finished", device_id=event.device_id, state=event.state)
            for fut in self._catalog_waiters.pop(event.device_id, []):
                if not fut.done():
                    fut.set_result(event.progress)
        elif isinstance(event, ev.CatalogChanged):
            changed = []
            for item in event.items:
                kind = (item.event or "").upper()
                if kind in _STATE_EVENTS:
                    self._submit(reg.ChannelStatusChanged(event.device_id, item.device_id, at, kind))
                else:
                    changed.append(channel_info(item))
            if changed:
                self._submit(reg.CatalogReported(event.device_id, at, tuple(changed), False, "notify"))
        elif isinstance(event, ev.ControlDelivered):
            waiter = self._control_waiters.get(event.sn)
            if waiter is not None and not waiter[0]:  # fire and forget: the SIP 200 is all there is
                self._control_waiters.pop(event.sn, None)
                if not waiter[1].done():
                    waiter[1].set_result((None, True))
        elif isinstance(event, ev.QueryAnswered) and event.cmd_type == "DeviceControl":
            waiter = self._control_waiters.pop(event.sn, None)
            if waiter is not None and not waiter[1].done():
                waiter[1].set_result((event.result.result, True))
            log.info("control.result", device_id=event.device_id, sn=event.sn, result=event.result.result)
        elif isinstance(event, ev.QueryFailed) and event.cmd_type == "DeviceControl":
            waiter = self._control_waiters.pop(event.sn, None)
            if waiter is not None and not waiter[1].done():
                if event.reason == "timeout":  # no Result in time: said plainly, not an error
                    waiter[1].set_result((None, False))
                else:
                    waiter[1].set_exception(QueryError(
                        f"设备拒绝控制命令 / the device refused the DeviceControl: {event.reason}"))
            log.warning("control.failed", device_id=event.device_id, sn=event.sn, reason=event.reason)
        elif isinstance(event, ev.AlarmReceived):
            a = event.alarm
            log.info("alarm.received", device_id=event.device_id, source=a.device_id, priority=a.alarm_priority,
                     method=a.alarm_method, type=a.alarm_type, time=a.alarm_time)
        elif isinstance(event, ev.PositionReceived):
            p = event.position
            log.debug("position.received", device_id=event.device_id, source=p.device_id, lon=p.longitude,
                      lat=p.latitude)
        elif isinstance(event, ev.SubscriptionAnswered):
            for fut in self._alarm_sub_waiters.pop(event.device_id, []):
                if not fut.done():
                    fut.set_result(event)
            log.info("alarm.subscription", device_id=event.device_id, state=event.state, reason=event.reason)
        elif isinstance(event, ev.QueryAnswered):
            fut = self._waiters.pop((event.cmd_type, event.sn), None)
            if fut is not None and not fut.done():
                fut.set_result(event.result)
        elif isinstance(event, ev.RecordsFinished):
            fut = self._waiters.pop(("RecordInfo", event.sn), None)
            if fut is not None and not fut.done():
                fut.set_result(event.query)
            q = event.query
            log.info("records.finished", device_id=q.device_id, channel_id=q.channel_id, sn=q.sn,
                     complete=q.complete, items=len(q.items), sum_num=q.sum_num, messages=q.messages)
        elif isinstance(event, ev.QueryFailed):
            fut = self._waiters.pop((event.cmd_type, event.sn), None)
            if fut is not None and not fut.done():
                fut.set_exception(QueryError(f"{event.cmd_type} query to {event.device_id} failed: {event.reason}"))
            elif event.cmd_type != "ConfigDownload":  # many devices never answer BasicParam
                log.warning("query.failed", device_id=event.device_id, cmd=event.cmd_type, reason=event.reason)
        elif isinstance(event, InviteAnswered):
            fut = self._invite_waiters.pop(event.call_id, None)
            if fut is not None and not fut.done():
                fut.set_result(event)
            else:  # nobody waits any more (the viewer gave up): end it
                self.gb.invites.end(event.call_id, self._now(), "no one waiting")
            log.info("invite.answered", device_id=event.device_id, channel_id=event.channel_id,
                     ssrc=event.ssrc, transport=event.transport, media=event.remote_media)
            if event.window_shift_s:  # issue 16: a t= shifted by whole hours (local time as UTC) is accepted
                log.warning("invite.window_shifted", device_id=event.device_id, channel_id=event.channel_id,
                            answered=event.sdp.time, shift_s=event.window_shift_s,
                            hours=event.window_shift_s / 3600)
        elif isinstance(event, InviteFailed):
            fut = self._invite_waiters.pop(event.call_id, None)
            if fut is not None and not fut.done():
                fut.set_exception(InviteRefused(event.reason, event.status))
            log.warning("invite.failed", device_id=event.device_id, channel_id=event.channel_id,
                        status=event.status, reason=event.reason)
        elif isinstance(event, MediaStatusReceived):
            log.info("session.media_status", device_id=event.device_id, channel_id=event.channel_id,
                     call_id=event.call_id, notify_type=event.notify_type)
        elif isinstance(event, SessionEnded):
            log.info("session.ended", device_id=event.device_id, channel_id=event.channel_id, by=event.by,
                     reason=event.reason)
        elif isinstance(event, ev.RegisterRejected):
            log.warning("register.rejected", device_id=event.device_id, addr=_addr(event.remote_addr),
                        status=event.status, reason=event.reason, locked_out=event.locked_out)
        elif isinstance(event, ev.MessageRejected):
            log.warning("message.rejected", device_id=event.device_id, addr=_addr(event.remote_addr),
                        status=event.status, reason=event.reason)
        elif isinstance(event, ev.SecurityEvent):
            self._security_event(event)
        elif isinstance(event, ev.UpperStateChanged):
            level = log.warning if event.state == "offline" else log.info
            level("upper.state", platform_id=event.platform_id, state=event.state, reason=event.reason)
        elif isinstance(event, ev.UpperCatalogSent):
            if event.error:
                log.warning("upper.catalog_failed", platform_id=event.platform_id, sn=event.sn, sent=event.sent,
                            total=event.total, error=event.error)
            else:
                log.info("upper.catalog_sent", platform_id=event.platform_id, sn=event.sn, total=event.total)

    def _security_event(self, event: ev.SecurityEvent) -> None:
        suppressed = self.security_limiter.admit(event.remote_addr[0], self._now())
        if suppressed is None:
            return
        log.warning("sip.security_refused", kind=event.kind, device_id=event.device_id,
                    addr=_addr(event.remote_addr), transport=event.transport, method=event.method,
                    detail=event.detail, suppressed=suppressed)
        if self.on_security_event is None:
            return
        detail = {"kind": event.kind, "method": event.method, "transport": event.transport,
                  "remote_addr": _addr(event.remote_addr), "reason": event.detail}
        if suppressed:
            detail["suppressed_before"] = suppressed  # refused since the last entry for this address
        self.on_security_event(event.kind, event.device_id, event.remote_addr, detail)

    # ------------------------------------------------------------------ public API (portal, tests)
    def is_online(self, device_id: str) -> bool:
        return self.gb.presence.is_online(device_id)

    def set_device_password_ha1(self, device_id: str, ha1: dict[str, str] | None) -> None:
        self.gb.set_device_credentials(device_id, ha1)

    def catalog_progress(self, device_id: str) -> dict | None:
        sync = self.gb.catalog.get(device_id)
        return sync.progress() if sync is not None else None

    def start_catalog_sync(self, device_id: str) -> dict:
        """Ask the device for its catalog now; returns the initial progress."""
        if self.gb.sync_catalog(device_id, self._now()) is None:
            raise DeviceNotReachable(device_id)
        self._process()
        progress = self.catalog_progress(device_id)
        assert progress is not None
        return progress

    async def catalog_sync(self, device_id: str, timeout: float | None = None) -> dict:
        """Run a catalog sync and wait for it to finish (complete or partial)."""
        assert self._loop is not None
        fut = self._loop.create_future()
        self._catalog_waiters.setdefault(device_id, []).append(fut)
        self.start_catalog_sync(device_id)
        return await asyncio.wait_for(fut, timeout or self.config.catalog_timeout + 5)

    async def query(self, device_id: str, cmd_type: str, *, extra: dict[str, str] | None = None,
                    target_id: str | None = None, timeout: float | None = None) -> Any:
        assert self._loop is not None
        sn = self.gb.query(device_id, cmd_type, self._now(), extra=extra, target_id=target_id, timeout=timeout)
        if sn is None:
            raise DeviceNotReachable(device_id)
        fut = self._loop.create_future()
        self._waiters[(cmd_type, sn)] = fut
        self._process()
        return await fut

    def gb_version(self, device_id: str) -> str | None:
        """``X-GB-ver`` of the device's last REGISTER ("2.0": GB/T 28181-2016, "3.0": -2022), None if it sent
        none."""
        return self.gb.gb_version(device_id)

    async def device_control(self, device_id: str, target_id: str | None, element: str, value: Any, *,
                             wait: bool, timeout: float | None = None, **build: Any) -> tuple[str | None, bool]:
        """Send Control/DeviceControl ``element`` (``PTZCmd``, ``TeleBoot``, ``RecordCmd``, ``GuardCmd``,
        ``AlarmCmd``, ``IFameCmd``/``IFrameCmd`` (spelt as the device's version wants), ``HomePosition``...)
        with ``value`` to ``target_id`` (a channel; None: the device itself). ``build``: ``preset_name``,
        ``cruise_track_name``, ``info``, ``siblings``, ``extra_info`` (see
        :func:`sip_server.gb.manscdp.build_device_control`).

        ``wait`` False (commands the standard answers with SIP 200 only): returns ``(None, True)`` once the
        device accepted the MESSAGE. ``wait`` True: returns the device's Response/DeviceControl Result,
        ``("OK" | "ERROR", True)`` (None for a Result that is neither). Nothing within ``timeout`` (default
        ``GbConfig.device_control_timeout``): ``(None, False)``.

        Raises ValueError (ManscdpError: a command that cannot be sent), :class:`DeviceNotReachable` (offline)
        or :class:`QueryError` (the device refused the MESSAGE, or the transaction failed)."""
        assert self._loop is not None
        timeout = timeout or self.config.device_control_timeout
        sn = self.gb.device_control(device_id, target_id, element, value, self._now(), wait=wait, timeout=timeout,
                                    **build)
        if sn is None:
            raise DeviceNotReachable(device_id)
        fut = self._loop.create_future()
        self._control_waiters[sn] = (wait, fut)
        self._process()
        try:
            # the core's own deadline answers a waiting command; this one covers the SIP answer
            return await asyncio.wait_for(asyncio.shield(fut), timeout + (0.5 if wait else 0))
        except TimeoutError:
            return None, False
        finally:
            if self._control_waiters.get(sn, (None, fut))[1] is fut:
                self._control_waiters.pop(sn, None)
            self.gb.cancel_query("DeviceControl", sn)

    async def preset_query(self, device_id: str, channel_id: str | None = None,
                           timeout: float | None = None) -> list[tuple[int, str | None]]:
        """The presets of ``channel_id`` (PresetQuery): ``(number, name or None)`` sorted by number.
        Raises :class:`DeviceNotReachable`, or :class:`QueryError` (refused, or no answer in ``timeout``,
        default ``GbConfig.preset_query_timeout``)."""
        timeout = timeout or self.config.preset_query_timeout
        try:
            result = await asyncio.wait_for(self.query(device_id, "PresetQuery", target_id=channel_id,
                                                       timeout=timeout), timeout + 1)
        except TimeoutError:
            raise QueryError(f"PresetQuery to {device_id} failed: timeout") from None
        return result.pairs()

    async def subscribe_alarms(self, device_id: str, expires: int = 3600, *, timeout: float = 5.0) -> Any:
        """SUBSCRIBE to the device's alarms (all priorities and methods) for ``expires`` seconds, refreshed
        before it lapses and renewed whenever the device registers again; its notifications come as
        :class:`sip_server.gb.events.AlarmReceived`. Returns the subscription once the device answered.
        Raises :class:`DeviceNotReachable` (offline; it is subscribed when it registers) or
        :class:`QueryError` (refused, or no answer in ``timeout``)."""
        assert self._loop is not None
        fut = self._loop.create_future()
        if self.gb.subscribe_alarms(device_id, self._now(), expires) is None:
            raise DeviceNotReachable(device_id)
        self._alarm_sub_waiters.setdefault(device_id, []).append(fut)
        self._process()
        try:
            answer = await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise QueryError(f"alarm SUBSCRIBE to {device_id}: no answer") from None
        if answer.state != "active":
            raise QueryError(f"设备拒绝报警订阅 / the device refused the alarm subscription: {answer.reason}")
        return self.gb.alarm_subscription(device_id)

    def unsubscribe_alarms(self, device_id: str) -> None:
        """Stop renewing the device's alarm subscription (it lapses at its expiry)."""
        self.gb.unsubscribe_alarms(device_id)

    async def device_status(self, device_id: str, channel_id: str | None = None) -> Any:
        return await self.query(device_id, "DeviceStatus", target_id=channel_id)

    async def record_info(self, device_id: str, channel_id: str, start: datetime, end: datetime, *,
                          type: str = "all", timeout: float | None = None) -> RecordQuery:
        """The recordings ``channel_id`` of ``device_id`` holds between ``start`` and ``end`` (aware
        datetimes), as the device reports them: all its answer MESSAGEs reassembled, sorted by start.
        After ``timeout`` (default ``GbConfig.record_query_timeout``) what arrived comes back with
        ``complete=False``.

        Raises ValueError (naive times, end not after start, unknown type), :class:`DeviceNotReachable`
        (offline) or :class:`QueryError` (the device refused the query)."""
        assert self._loop is not None
        sn = self.gb.query_records(device_id, channel_id, start, end, self._now(), type=type, timeout=timeout)
        if sn is None:
            raise DeviceNotReachable(device_id)
        fut = self._loop.create_future()
        self._waiters[("RecordInfo", sn)] = fut
        self._process()
        try:
            return await fut
        except asyncio.CancelledError:
            self._waiters.pop(("RecordInfo", sn), None)
            self.gb.records.cancel(sn)
            raise

    async def invite(self, device_id: str, channel_id: str, *, media_ip: str, media_port: int, ssrc: str,
                     transport: str, timeout: float = 10.0, session_name: str = "Play", start: int | None = None,
                     end: int | None = None, speed: int | None = None,
                     stream: tuple[str, int] | None = None) -> InviteAnswered:
        """INVITE the device to send ``channel_id`` to ``media_ip:media_port``; returns the answer.
        ``stream``: (form, number) of the encoder stream asked for, e.g. ``("streamnumber", 1)``.

        Live by default; ``session_name="Playback"`` / ``"Download"`` with ``start``/``end`` (Unix seconds)
        and, for a download, ``speed`` (``a=downloadspeed``) asks for a recording (the answer's
        ``filesize`` is its ``a=filesize``). Raises ValueError (a window or speed that does not fit),
        :class:`DeviceNotReachable` or :class:`InviteRefused` (refusal, no answer, bad answer)."""
        assert self._loop is not None
        call_id = self.gb.invites.invite(device_id, channel_id, media_ip=media_ip, media_port=media_port,
                                         ssrc=ssrc, transport=transport, now=self._now(),
                                         session_name=session_name, start=start, end=end, speed=speed,
                                         stream=stream)
        if call_id is None:
            raise DeviceNotReachable(device_id)
        fut = self._loop.create_future()
        self._invite_waiters[call_id] = fut
        self._process()
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            self._invite_waiters.pop(call_id, None)
            self.gb.invites.end(call_id, self._now(), "no answer in time")
            self._process()
            raise InviteTimeout(f"设备 {timeout:.0f} 秒内未应答 INVITE / the device did not answer the INVITE "
                                f"within {timeout:.0f} s") from None
        except asyncio.CancelledError:
            self._invite_waiters.pop(call_id, None)
            self.gb.invites.end(call_id, self._now(), "viewer gave up")
            self._process()
            raise

    def end_session(self, call_id: str, reason: str = "viewer left") -> None:
        """BYE (or CANCEL) a media session."""
        self.gb.invites.end(call_id, self._now(), reason)
        self._process()

    def session_info(self, call_id: str, body: bytes, content_type: str = MANSRTSP_TYPE) -> bool:
        """INFO inside an established media session (MANSRTSP: playback PLAY / PAUSE / scale); False when
        there is no such established session."""
        sent = self.gb.invites.info(call_id, body, self._now(), content_type) is not None
        self._process()
        return sent

    def route_address(self, device_id: str) -> tuple[str, int] | None:
        """The address the device registered from; None when it has not registered here."""
        route = self.gb.routes.get(device_id)
        return route.addr if route is not None else None

    def metrics(self) -> dict[str, int]:
        m = dict(vars(self.gb.metrics))
        m["devices_online"] = self.gb.presence.online_count()
        m["lockout_entries"] = len(self.gb.lockout)
        m["security_events_suppressed"] = self.security_limiter.suppressed_total
        if self.transport is not None:
            m["tcp_connections"] = self.transport.tcp_connections
            m["tcp_refused"] = self.transport.tcp_refused
            m["tcp_idle_closed"] = self.transport.tcp_idle_closed
        return m

    # ------------------------------------------------------------------ toward upper platforms (cascade)
    def _upper(self, fn: Callable[..., Any], *args: Any) -> Any:
        result = fn(*args, self._now())
        self._process()
        return result

    def set_upper_platforms(self, configs: list[UpperConfig]) -> None:
        """The whole set of enabled upper platforms: new ones start registering, a changed one registers
        again, a removed one is un-registered (Expires 0, best effort) and its calls get BYE."""
        self._upper(self.gb.uppers.configure, list(configs))

    def upper_status(self, platform_id: int) -> dict | None:
        """``{"state", "last_error", "last_keepalive", "registered_until", "calls"}`` (wall-clock Unix
        seconds), None for an upper that is not configured."""
        return self.gb.uppers.status(platform_id)

    def answer_catalog(self, platform_id: int, sn: int, entries: Sequence[CatalogEntry]) -> None:
        """Answer the upper's catalog query: serial MESSAGEs, each after the previous one's 200; ends with
        :class:`sip_server.gb.events.UpperCatalogSent`."""
        self._upper(self.gb.uppers.answer_catalog, platform_id, sn, list(entries))

    def notify_catalog(self, platform_id: int, entries: Sequence[CatalogEntry], *, immediate: bool = False) -> None:
        """Catalog changes (``event`` set) for the upper, batched (NOTIFY in its subscription; MESSAGE when
        ``cascade_push_unsubscribed``; else dropped); ``immediate``: send what is queued now (the initial
        NOTIFY of offline items after :class:`sip_server.gb.events.UpperCatalogSubscribed`)."""
        self.gb.uppers.notify_catalog(platform_id, list(entries), self._now(), immediate=immediate)
        self._process()

    def answer_device_info(self, platform_id: int, sn: int, device_id: str, fields: dict[str, str]) -> None:
        self._upper(self.gb.uppers.answer_device_info, platform_id, sn, device_id, fields)

    def answer_device_status(self, platform_id: int, sn: int, device_id: str, fields: dict[str, str]) -> None:
        self._upper(self.gb.uppers.answer_device_status, platform_id, sn, device_id, fields)

    def answer_record_info(self, platform_id: int, sn: int, device_id: str, name: str,
                           items: list[dict[str, str]]) -> None:
        self._upper(self.gb.uppers.answer_record_info, platform_id, sn, device_id, name, items)

    def answer_control(self, platform_id: int, sn: int, device_id: str, ok: bool) -> None:
        self._upper(self.gb.uppers.answer_control, platform_id, sn, device_id, ok)

    def answer_upper_invite(self, call_id: str, status: int, answer: UpperAnswer | None = None,
                            reason: str | None = None) -> None:
        """The final answer to an upper's INVITE (:class:`sip_server.gb.events.UpperInvite`): 2xx with our SDP
        from ``answer``, or an error ``status``. Nothing happens for a call that is gone (cancelled)."""
        self.gb.uppers.answer_invite(call_id, status, answer, reason, self._now())
        self._process()

    def bye_upper(self, call_id: str, reason: str) -> None:
        """End an upper's call from our side (BYE; an unanswered one is answered 480)."""
        self.gb.uppers.bye(call_id, self._now(), reason)
        self._process()

    def upper_alarm(self, platform_id: int, device_id: str, alarm: Any) -> bool:
        """Forward a device's alarm (``manscdp.Alarm``) to a registered upper, the source named ``device_id``
        (the id that upper knows); False when it is not registered."""
        sent = self.gb.uppers.send_alarm(platform_id, device_id, alarm, self._now())
        self._process()
        return sent

    def upper_position(self, platform_id: int, device_id: str, position: Any) -> bool:
        """Forward a device's MobilePosition to an upper that subscribed to positions; False otherwise."""
        sent = self.gb.uppers.send_position(platform_id, device_id, position, self._now())
        self._process()
        return sent

    def upper_media_status(self, call_id: str, notify_type: str = "121") -> bool:
        """Relay MediaStatus (the end of a history file) into the upper's call; False when there is none."""
        sent = self.gb.uppers.media_status(call_id, self._now(), notify_type)
        self._process()
        return sent
