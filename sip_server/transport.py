"""asyncio adapters for the sans-IO :class:`sip_server.sip.SipEndpoint`: UDP, TCP and TLS.

This is the only module of the SIP stack that touches sockets or the event loop. It feeds received
bytes into the endpoint, hands the endpoint's events to a callback, sends what the endpoint wants sent
(after every input and every timer), and runs the endpoint's timer with ``loop.call_at``. The endpoint's
clock is ``loop.time()``.

TCP: each connection has its own :class:`StreamFramer`; connections are remembered by remote address,
so requests and responses to that address go out on the same connection (devices behind NAT need
that). Sending to an address with no connection opens one (:meth:`SipTransport.connect_tcp`).

TCP is untrusted input, so connections are limited: beyond ``tcp_max_connections`` accepted connections
in all, or ``tcp_max_per_address`` not yet authenticated ones from one remote IP, a new one is closed at
once (connections on which a device has registered do not count against the per-address cap: a site
with many cameras behind one NAT address must not be capped, a flood of half-open ones is); an accepted connection
on which no device has completed an authenticated REGISTER (:meth:`SipTransport.mark_authenticated`)
within ``tcp_idle_timeout`` seconds is closed; and any connection on which nothing at all arrives for
``tcp_registered_idle_timeout`` seconds (far longer than any keepalive interval) is closed too, so dead
peers whose FIN never came do not hold sockets forever.

TLS (SIP over TLS, ``sips``, GB/T 28181-2022 §8.2) is TCP with a TLS layer: the listener accepts plain TCP
connections under the same caps (a connection counts against them from its accept, before and during its
handshake) and runs TLS itself over memory BIOs (:class:`ssl.SSLObject`), so every byte from the peer goes
through the TLS layer whatever the event loop; nothing reaches the SIP framer, and nothing is written, before
the handshake completes, and a peer that does not complete one within ``tls_handshake_timeout`` is dropped. Messages and
the endpoint's transport name are ``"tls"`` (Via ``SIP/2.0/TLS``); what is sent ``"tls"`` goes only over a
TLS connection, never over a plain one to the same address. The optional TLS listener failing to bind is a
warning, not an error. Outbound TLS connections (to upper platforms) verify the peer with
``tls_client_context``; one that cannot be made is reported to ``on_connect_failed(addr, transport, kind,
detail)`` with ``kind`` ``certificate`` (verification failed), ``tls`` (another handshake failure) or
``connect``. Without a TLS listener but with a client context, our TLS address in Via and Contact is the
TCP one (answers and the peer's requests come back on the connection we opened).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import socket
import ssl
from collections.abc import Callable
from typing import Any

from sip_server.sip import (
    MessageDropped,
    Outgoing,
    SipEndpoint,
    SipParseError,
    SipRequest,
    SipResponse,
    StreamFramer,
)

__all__ = ["SipTransport"]

log = logging.getLogger("gbops.sip.transport")

Addr = tuple[str, int]


def _kv(**fields: Any) -> dict[str, Any]:
    return {"kv": fields}


def _norm(addr: Any) -> Addr:
    return (addr[0], int(addr[1]))


def _guess_local_ip(family: int, probe: Addr | None = None) -> str:
    """The address the host would use for outbound traffic (to ``probe``; no packet is sent)."""
    if probe is None:
        probe = ("192.0.2.1", 9) if family == socket.AF_INET else ("2001:db8::1", 9)
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect(probe)
            return s.getsockname()[0]
    except OSError:
        return "127.0.0.1" if family == socket.AF_INET else "::1"


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, owner: SipTransport) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.owner._on_datagram(data, _norm(addr))

    def error_received(self, exc: Exception) -> None:
        log.debug("sip.udp_error", extra=_kv(error=str(exc)))


STREAM_TRANSPORTS = ("tcp", "tls")


class _TcpProtocol(asyncio.Protocol):
    def __init__(self, owner: SipTransport, target: Addr | None = None, kind: str = "tcp") -> None:
        self.owner = owner
        self.target = target
        self.kind = kind  # "tcp" | "tls"
        # TLS: nothing goes out before the handshake (outbound connections are made with ssl=: secure at once)
        self.secure = kind == "tcp" or target is not None
        self.lost_handled = False
        self.framer = StreamFramer()
        self.transport: Any = None
        self.peer: Addr | None = None
        self.closed = False
        self.inbound = target is None  # accepted by our listener (untrusted until a device registers on it)
        self.authenticated = not self.inbound
        self.counted = False  # held against the connection caps
        self.last_rx = 0.0
        self.idle_handle: asyncio.TimerHandle | None = None
        # inbound TLS: the server side of the TLS session over memory BIOs (outbound TLS is the loop's ssl=)
        self.tls: ssl.SSLObject | None = None
        self._tls_in = self._tls_out = None
        if kind == "tls" and target is None and owner.tls_context is not None:
            self._tls_in, self._tls_out = ssl.MemoryBIO(), ssl.MemoryBIO()
            self.tls = owner.tls_context.wrap_bio(self._tls_in, self._tls_out, server_side=True)

    def connection_made(self, transport: Any) -> None:
        # not isinstance-checked: uvloop's transports do not subclass asyncio.Transport
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = _norm(peer) if peer else self.target
        self.owner._conn_made(self)

    def data_received(self, data: bytes) -> None:
        assert self.peer is not None
        if self.closed:
            return
        self.last_rx = self.owner.now()
        if self.tls is not None:
            data = self._tls_receive(data)
            if not data:
                return
        try:
            messages = self.framer.feed(data)
        except SipParseError as exc:
            self.owner._emit(MessageDropped(self.peer, self.kind, f"stream framing: {exc}", bytes(data[:4096])))
            log.info("sip.tcp_framing_error", extra=_kv(peer=self.peer, transport=self.kind, error=str(exc)))
            if self.transport is not None:
                self.transport.close()
            self.owner._after_input()
            return
        for msg in messages:
            self.owner._on_stream_message(msg, self.peer, self.kind)
        self.owner._after_input()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.tls is not None and not self.secure and not self.closed:
            self.owner._tls_handshake_failed(self, "connection closed during the TLS handshake")
        self.closed = True
        self.owner._conn_lost(self)

    def write(self, data: bytes) -> bool:
        if self.closed or not self.secure or self.transport is None or self.transport.is_closing():
            return False
        if self.tls is not None:
            try:
                self.tls.write(data)
            except ssl.SSLError as exc:
                self._tls_failed(exc)
                return False
            self._tls_flush()
            return True
        self.transport.write(data)
        return True

    # ---------------------------------------------------------------------------------- inbound TLS
    def _tls_flush(self) -> None:
        out = self._tls_out.read() if self._tls_out is not None else b""
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(out)

    def _tls_failed(self, exc: BaseException) -> None:
        if not self.secure:
            self.owner._tls_handshake_failed(self, str(exc) or type(exc).__name__)
        self._tls_flush()  # the alert, if any
        self.closed = True
        _abort(self.transport)

    def _tls_receive(self, data: bytes) -> bytes:
        """Ciphertext in, the plaintext it completes out (b"" while the handshake runs)."""
        assert self.tls is not None and self._tls_in is not None
        self._tls_in.write(data)
        if not self.secure:
            try:
                self.tls.do_handshake()
            except ssl.SSLWantReadError:
                self._tls_flush()
                return b""
            except (ssl.SSLError, OSError) as exc:
                self._tls_failed(exc)
                return b""
            self.secure = True
            self._tls_flush()
            self.owner._tls_ready(self)
        plain = bytearray()
        while True:
            try:
                chunk = self.tls.read(65536)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:  # close_notify
                self._tls_flush()
                self.closed = True
                if self.transport is not None:
                    self.transport.close()
                break
            except (ssl.SSLError, OSError) as exc:
                self._tls_failed(exc)
                return b""
            if not chunk:
                break
            plain += chunk
        self._tls_flush()  # session tickets, key updates
        return bytes(plain)


def connect_failure(exc: BaseException) -> tuple[str, str]:
    """Why an outbound connection failed: (``certificate`` | ``tls`` | ``connect``, a short detail)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "certificate", str(exc.verify_message or exc.reason or exc)
    if isinstance(exc, ssl.SSLError):
        return "tls", str(exc.reason or exc)
    if isinstance(exc, TimeoutError):
        return "connect", "timed out"
    return "connect", str(exc.strerror if isinstance(exc, OSError) and exc.strerror else exc)


def _grow_receive_buffer(sock: Any, size: int) -> None:
    """A bigger UDP receive buffer, so bursts (thousands of cameras re-registering after a power cut) queue
    in the kernel instead of being dropped. SO_RCVBUF is capped by net.core.rmem_max; as root
    SO_RCVBUFFORCE may go past it. The effective size is logged."""
    if sock is None or size <= 0:
        return
    for opt in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
        if opt is None:
            continue
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, size)
            break
        except OSError:
            continue
    try:
        got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    except OSError:
        return
    log.info("sip.udp_receive_buffer", extra=_kv(requested=size, effective=got))


def _abort(transport: Any) -> None:
    """Drop a TCP connection now (no lingering on unsent data)."""
    if transport is None:
        return
    abort = getattr(transport, "abort", None)
    if abort is not None:
        abort()
    else:
        transport.close()


class SipTransport:
    """Bind UDP and TCP on ``(host, port)`` and drive ``endpoint`` from the event loop.

    ``on_event(event)`` is called for each endpoint event; it may return a coroutine, which is run as a
    task (what it sends is flushed when it finishes). With ``on_event=None`` events stay in the endpoint
    for the caller to drain; call :meth:`flush` afterwards. ``advertise`` is the (host, port) put in Via
    (and returned by ``endpoint.local_address`` for Contact headers) instead of the bound address; port 0
    there means the bound port. Without it, a wildcard bind advertises the local address facing each peer.
    ``on_connection_lost(addr, "tcp")`` is called when a TCP connection that was in use ends.
    """

    def __init__(
        self,
        endpoint: SipEndpoint,
        host: str = "0.0.0.0",
        port: int = 5060,
        *,
        on_event: Callable[[Any], Any] | None = None,
        udp: bool = True,
        tcp: bool = True,
        advertise: Addr | None = None,
        udp_receive_buffer: int = 8 << 20,
        tcp_idle_timeout: float | None = 30.0,
        tcp_registered_idle_timeout: float | None = 1800.0,
        tcp_max_connections: int | None = 2000,
        tcp_max_per_address: int | None = 20,
        on_connection_lost: Callable[[Addr, str], Any] | None = None,
        on_connect_failed: Callable[[Addr, str, str, str], Any] | None = None,
        tls_port: int | None = None,
        tls_context: ssl.SSLContext | None = None,
        tls_client_context: ssl.SSLContext | None = None,
        tls_handshake_timeout: float = 10.0,
    ) -> None:
        self.endpoint = endpoint
        self.host = host
        self.port = port
        self.on_event = on_event
        self.use_udp = udp
        self.use_tcp = tcp
        self.advertise = advertise
        self.udp_receive_buffer = udp_receive_buffer
        self.tcp_idle_timeout = tcp_idle_timeout
        self.tcp_registered_idle_timeout = tcp_registered_idle_timeout
        self.tcp_max_connections = tcp_max_connections
        self.tcp_max_per_address = tcp_max_per_address
        self.on_connection_lost = on_connection_lost
        self.on_connect_failed = on_connect_failed
        # SIP over TLS: the listener (tls_port None: none; 0: any free port) with tls_context; outbound TLS
        # connections (nothing open to a peer we must send "tls" to) with tls_client_context, or none
        self.tls_port = tls_port if tls_context is not None else None
        self.tls_context = tls_context
        self.tls_client_context = tls_client_context
        self.tls_handshake_timeout = tls_handshake_timeout
        self.tls_handshake_failed = 0
        self._tls_server: asyncio.AbstractServer | None = None
        self._tls_addr: Addr | None = None
        self.tcp_refused = 0  # connections closed at once: over a cap
        self.tcp_idle_closed = 0  # connections closed for idling (unregistered, or silent)
        self._inbound = 0
        self._unauthenticated_per_ip: dict[str, int] = {}
        self._facing: dict[str, str] = {}  # peer ip -> our local ip towards it (wildcard binds)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._server: asyncio.AbstractServer | None = None
        self._udp_addr: Addr | None = None
        self._tcp_addr: Addr | None = None
        self._conns: dict[Addr, _TcpProtocol] = {}
        self._pending: dict[Addr, list[bytes]] = {}
        self._connecting: dict[Addr, asyncio.Task] = {}
        self._tasks: set[asyncio.Task] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._closed = False

    # ------------------------------------------------------------------ lifecycle
    @property
    def local_addresses(self) -> list[Addr]:
        """The bound (host, port) pairs: UDP first, then TCP."""
        return [a for a in (self._udp_addr, self._tcp_addr) if a is not None]

    async def start(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        attempts = 10 if self.port == 0 and self.use_udp and self.use_tcp else 1
        for attempt in range(attempts):
            port = self.port
            if self.use_udp:
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _UdpProtocol(self), local_addr=(self.host, port)
                )
                self._udp = transport  # type: ignore[assignment]
                _grow_receive_buffer(transport.get_extra_info("socket"), self.udp_receive_buffer)
                self._udp_addr = _norm(transport.get_extra_info("sockname"))
                port = self._udp_addr[1]
            if self.use_tcp:
                try:
                    self._server = await loop.create_server(
                        lambda: _TcpProtocol(self), self.host, port, reuse_address=True
                    )
                except OSError:
                    if self._udp is not None:
                        self._udp.close()
                        self._udp = None
                        self._udp_addr = None
                    if attempt + 1 < attempts:
                        continue
                    raise
                sock = self._server.sockets[0]
                self._tcp_addr = _norm(sock.getsockname())
            break
        if self.tls_port is not None:
            await self._start_tls_listener(loop)
        self._set_local_addresses()
        if self.advertise is None:
            self.endpoint.local_address_for = self._local_address_for
        log.debug("sip.transport_started", extra=_kv(addresses=self.local_addresses, tls=self._tls_addr))

    async def _start_tls_listener(self, loop: asyncio.AbstractEventLoop) -> None:
        """The optional SIP-over-TLS listener: a port already in use (or refused) is logged, not raised."""
        try:
            self._tls_server = await loop.create_server(
                lambda: _TcpProtocol(self, kind="tls"), self.host, self.tls_port, reuse_address=True
            )
        except OSError as exc:
            log.warning("sip.tls_listen_failed", extra=_kv(
                host=self.host, port=self.tls_port, error=str(exc),
                message="SIP over TLS 端口无法监听，TLS 未启用 / the SIP over TLS port cannot be bound: TLS is off"))
            self._tls_server = None
            return
        self._tls_addr = _norm(self._tls_server.sockets[0].getsockname())

    @property
    def tls_address(self) -> Addr | None:
        """The bound (host, port) of the SIP-over-TLS listener (None: none)."""
        return self._tls_addr

    def _set_local_addresses(self) -> None:
        for name, bound in (("udp", self._udp_addr), ("tcp", self._tcp_addr), ("tls", self._tls_addr)):
            if bound is None:
                continue
            if self.advertise is not None:
                host, port = self.advertise
                # one advertised port is for UDP/TCP; TLS keeps its own port
                self.endpoint.local_addresses[name] = (host, (port if name != "tls" else 0) or bound[1])
                continue
            host = bound[0]
            if host in ("0.0.0.0", "::", ""):
                host = _guess_local_ip(socket.AF_INET6 if host == "::" else socket.AF_INET)
            self.endpoint.local_addresses[name] = (host, bound[1])
        if self._tls_addr is None and self.tls_client_context is not None and "tcp" in self.endpoint.local_addresses:
            # no TLS listener (outbound TLS to upper platforms only): Via and Contact name our TCP address;
            # answers and the upper's requests come back on the connection we opened
            self.endpoint.local_addresses.setdefault("tls", self.endpoint.local_addresses["tcp"])

    async def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in list(self._connecting.values()) + list(self._tasks):
            task.cancel()
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        for conn in list(self._conns.values()):
            if conn.transport is not None:
                conn.transport.close()
        self._conns.clear()
        for server in (self._server, self._tls_server):
            if server is not None:
                server.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(server.wait_closed(), 2.0)
        self._server = self._tls_server = None
        await asyncio.sleep(0)

    def _local_address_for(self, addr: Addr, transport: str) -> Addr | None:
        """Our address as the peer at ``addr`` reaches us, when bound to a wildcard address: the local end
        of its TCP connection, or the interface the host routes towards it (cached per peer IP)."""
        tls_bound = self._tls_addr or (self._tcp_addr if self.tls_client_context is not None else None)
        bound = {"tcp": self._tcp_addr, "tls": tls_bound}.get(transport, self._udp_addr)
        if bound is None or bound[0] not in ("0.0.0.0", "::", ""):
            return None
        if transport in STREAM_TRANSPORTS:
            conn = self._conns.get(_norm(addr))
            if conn is not None and conn.transport is not None:
                sock = conn.transport.get_extra_info("sockname")
                if sock:
                    return (sock[0], bound[1])
        ip = addr[0]
        local = self._facing.get(ip)
        if local is None:
            family = socket.AF_INET6 if ":" in ip else socket.AF_INET
            local = _guess_local_ip(family, (ip, addr[1] or 9))
            if len(self._facing) >= 65536:
                self._facing.clear()
            self._facing[ip] = local
        return (local, bound[1])

    def mark_authenticated(self, addr: Addr) -> None:
        """A device completed an authenticated REGISTER over the TCP connection from ``addr``: it is no
        longer subject to the unregistered idle timeout."""
        conn = self._conns.get(_norm(addr))
        if conn is not None and not conn.authenticated:
            conn.authenticated = True
            if conn.counted:
                self._release_unauthenticated(conn)

    def _release_unauthenticated(self, conn: _TcpProtocol) -> None:
        ip = conn.peer[0] if conn.peer is not None else ""
        left = self._unauthenticated_per_ip.get(ip, 1) - 1
        if left > 0:
            self._unauthenticated_per_ip[ip] = left
        else:
            self._unauthenticated_per_ip.pop(ip, None)

    @property
    def tcp_connections(self) -> int:
        """Accepted TCP connections held now."""
        return self._inbound

    # ------------------------------------------------------------------ TU helpers
    def now(self) -> float:
        return (self._loop or asyncio.get_running_loop()).time()

    def send_request(self, request: SipRequest, addr: Addr, transport: str = "udp") -> Any:
        key = self.endpoint.send_request(request, addr, self.now(), transport)
        self.flush()
        return key

    def send_response(self, key: Any, response: SipResponse) -> bool:
        ok = self.endpoint.send_response(key, response, self.now())
        self.flush()
        return ok

    def send_stateless(self, msg: SipRequest | SipResponse, addr: Addr, transport: str = "udp") -> None:
        self.endpoint.send_stateless(msg, addr, transport)
        self.flush()

    async def connect_tcp(self, addr: Addr, kind: str = "tcp") -> None:
        """Open (or reuse) a TCP (or, ``kind="tls"``, TLS) connection to ``addr``; later sends to ``addr``
        over that transport use it."""
        addr = _norm(addr)
        conn = self._conns.get(addr)
        if conn is not None and not conn.closed and conn.kind == kind:
            return
        loop = self._loop or asyncio.get_running_loop()
        if kind == "tls":
            if self.tls_client_context is None:
                raise OSError("no TLS client context: outbound SIP over TLS is not configured")
            await loop.create_connection(lambda: _TcpProtocol(self, addr, "tls"), addr[0], addr[1],
                                         ssl=self.tls_client_context, server_hostname=addr[0],
                                         ssl_handshake_timeout=self.tls_handshake_timeout)
            return
        await loop.create_connection(lambda: _TcpProtocol(self, addr), addr[0], addr[1])

    # ------------------------------------------------------------------ input paths
    def _on_datagram(self, data: bytes, addr: Addr) -> None:
        self.endpoint.receive_datagram(data, addr, self.now(), "udp")
        self._after_input()

    def _on_stream_message(self, msg: SipRequest | SipResponse, peer: Addr, kind: str = "tcp") -> None:
        self.endpoint.receive_message(msg, peer, self.now(), kind)

    def _after_input(self) -> None:
        self._dispatch()
        self.flush()

    def _emit(self, event: Any) -> None:
        if self.on_event is None:
            return
        try:
            result = self.on_event(event)
        except Exception:  # a bad handler must not take the transport down
            log.exception("sip.on_event_failed", extra=_kv(event=type(event).__name__))
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            self._tasks.add(task)
            task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("sip.on_event_failed", exc_info=task.exception(), extra=_kv())
        if not self._closed:
            self.flush()

    def _dispatch(self) -> None:
        if self.on_event is None:
            return
        endpoint = self.endpoint
        while (event := endpoint.next_event()) is not None:
            self._emit(event)

    # ------------------------------------------------------------------ output
    def flush(self) -> None:
        """Send everything the endpoint has queued and re-arm its timer."""
        for out in self.endpoint.messages_to_send():
            self._send(out)
        self._arm_timer()

    def _send(self, out: Outgoing) -> None:
        transport = out.transport.lower()
        addr = _norm(out.addr)
        if transport == "udp":
            if self._udp is None:
                log.warning("sip.udp_send_failed", extra=_kv(addr=addr, error="UDP not open"))
                return
            try:
                self._udp.sendto(out.data, addr)
            except (OSError, ValueError, RuntimeError) as exc:
                log.warning("sip.udp_send_failed", extra=_kv(addr=addr, error=str(exc)))
        elif transport in STREAM_TRANSPORTS:
            conn = self._conns.get(addr)
            if conn is not None and conn.kind == transport:
                if conn.write(out.data):
                    return
                if not conn.secure and not conn.closed:  # its TLS handshake is under way
                    self._pending.setdefault(addr, []).append(out.data)
                    return
            self._pending.setdefault(addr, []).append(out.data)
            if addr not in self._connecting and not self._closed:
                task = asyncio.ensure_future(self._connect_and_flush(addr, transport))
                self._connecting[addr] = task
        else:
            log.warning("sip.unsupported_transport", extra=_kv(transport=out.transport, addr=addr))

    async def _connect_and_flush(self, addr: Addr, kind: str = "tcp") -> None:
        try:
            await self.connect_tcp(addr, kind)
        except (OSError, ssl.SSLError) as exc:  # TimeoutError included
            dropped = self._pending.pop(addr, [])
            why, detail = connect_failure(exc)
            log.warning("sip.tcp_connect_failed", extra=_kv(addr=addr, transport=kind, error=str(exc),
                                                            reason=why, dropped=len(dropped)))
            self._connecting.pop(addr, None)  # what the handler sends again opens a new connection
            if self.on_connect_failed is not None and not self._closed:
                try:
                    self.on_connect_failed(addr, kind, why, detail)
                except Exception:  # a bad handler must not take the transport down
                    log.exception("sip.on_connect_failed_failed", extra=_kv(addr=addr))
            return
        finally:
            if self._connecting.get(addr) is asyncio.current_task():
                del self._connecting[addr]
        self._write_pending(addr)

    def _write_pending(self, addr: Addr) -> None:
        conn = self._conns.get(addr)
        if conn is None or not conn.secure:
            return
        for data in self._pending.pop(addr, []):
            conn.write(data)

    def _conn_made(self, conn: _TcpProtocol) -> None:
        if conn.inbound:
            ip = conn.peer[0] if conn.peer is not None else ""
            per_ip = self._unauthenticated_per_ip.get(ip, 0)
            reason = None
            if self._closed:
                reason = "closing"
            elif self.tcp_max_connections is not None and self._inbound >= self.tcp_max_connections:
                reason = "global cap"
            elif self.tcp_max_per_address is not None and per_ip >= self.tcp_max_per_address:
                reason = "per-address cap"
            if reason is not None:
                self.tcp_refused += 1
                conn.closed = True
                if self.tcp_refused % 100 == 1:  # a flood must not flood the log too
                    log.warning("sip.tcp_refused", extra=_kv(peer=conn.peer, reason=reason, held=self._inbound,
                                                             unregistered_from_address=per_ip,
                                                             refused_total=self.tcp_refused))
                _abort(conn.transport)
                return
            conn.counted = True
            self._inbound += 1
            self._unauthenticated_per_ip[ip] = per_ip + 1
        conn.last_rx = self.now()
        first = self.tcp_idle_timeout if conn.inbound else self.tcp_registered_idle_timeout
        if first is not None and self._loop is not None:
            conn.idle_handle = self._loop.call_later(first, self._idle_check, conn)
        for addr in {conn.peer, conn.target}:
            if addr is not None:
                self._conns[addr] = conn
                self._write_pending(addr)
        if not conn.secure and self._loop is not None:
            self._loop.call_later(self.tls_handshake_timeout, self._tls_deadline, conn)

    def _tls_deadline(self, conn: _TcpProtocol) -> None:
        if not conn.secure and not conn.closed:
            self._tls_handshake_failed(conn, f"no TLS handshake within {self.tls_handshake_timeout:g} s")
            conn.closed = True
            _abort(conn.transport)

    def _tls_handshake_failed(self, conn: _TcpProtocol, error: str) -> None:
        self.tls_handshake_failed += 1
        if self.tls_handshake_failed % 100 == 1:  # a flood must not flood the log too
            log.info("sip.tls_handshake_failed", extra=_kv(peer=conn.peer, error=error,
                                                           failed_total=self.tls_handshake_failed))

    def _tls_ready(self, conn: _TcpProtocol) -> None:
        """An inbound TLS connection completed its handshake: what waited for it goes out now."""
        for addr in {conn.peer, conn.target}:
            if addr is not None and self._conns.get(addr) is conn:
                self._write_pending(addr)

    def _idle_check(self, conn: _TcpProtocol) -> None:
        conn.idle_handle = None
        if conn.closed or self._closed:
            return
        if not conn.authenticated:
            why = "no authenticated REGISTER in time"
        else:
            limit = self.tcp_registered_idle_timeout
            if limit is None:
                return
            due = conn.last_rx + limit
            now = self.now()
            if now < due:
                assert self._loop is not None
                conn.idle_handle = self._loop.call_later(due - now, self._idle_check, conn)
                return
            why = "silent"
        self.tcp_idle_closed += 1
        log.info("sip.tcp_idle_closed", extra=_kv(peer=conn.peer, reason=why))
        _abort(conn.transport)

    def _conn_lost(self, conn: _TcpProtocol) -> None:
        if conn.lost_handled:
            return
        conn.lost_handled = True
        if conn.idle_handle is not None:
            conn.idle_handle.cancel()
            conn.idle_handle = None
        if conn.counted:
            conn.counted = False
            self._inbound -= 1
            if not conn.authenticated:
                self._release_unauthenticated(conn)
        lost = False
        for addr in {conn.peer, conn.target}:
            if addr is not None and self._conns.get(addr) is conn:
                del self._conns[addr]
                lost = True
        if lost and conn.peer is not None and self.on_connection_lost is not None and not self._closed:
            try:
                self.on_connection_lost(conn.peer, conn.kind)
            except Exception:  # a bad handler must not take the transport down
                log.exception("sip.on_connection_lost_failed", extra=_kv(peer=conn.peer))

    # ------------------------------------------------------------------ timer
    def _arm_timer(self) -> None:
        if self._closed or self._loop is None:
            return
        when = self.endpoint.get_timer()
        if when is None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
                self._timer_at = None
            return
        if self._timer is not None:
            if self._timer_at == when:
                return
            self._timer.cancel()
        self._timer_at = when
        self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        at = self._timer_at
        self._timer = None
        self._timer_at = None
        now = self.now()
        if at is not None and now < at:
            now = at  # call_at may run a hair early (clock resolution)
        self.endpoint.handle_timer(now)
        self._dispatch()
        self.flush()
