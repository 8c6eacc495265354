"""Limits on untrusted HTTP clients below the application: who the client is, how long it may take
to send its request head, how many connections it may hold.

* :func:`forwarded_client_ip` - the client address of a request: the peer, unless the peer is one of
  ``GBOPS_TRUSTED_PROXIES``; then the right-most address of ``X-Forwarded-For`` that is not itself a
  trusted proxy.  uvicorn's own ``proxy_headers`` (which trusts 127.0.0.1 by default: any local
  process could write the address the audit log and the watermark show) is switched off by
  :func:`uvicorn_config`.
* :func:`limited_protocol` - uvicorn's h11 protocol with a request-head timeout (slow-loris: a client
  that dribbles its request line and headers is closed with 408 after ``GBOPS_HTTP_HEADER_TIMEOUT``;
  the same deadline bounds draining the unread body of an answered request) and a hard cap on
  concurrent connections (``GBOPS_HTTP_MAX_CONNECTIONS``: one more is answered 503 and closed at once).
* :func:`uvicorn_config` - the ``uvicorn.Config`` of the portal with all of the above (and TLS: TLS 1.2
  minimum, the certificate of :mod:`gbcore.tls`, ``Strict-Transport-Security`` on every answer).
* :func:`redirect_app` - what ``http_port`` serves while the portal is HTTPS: 308 to the same path there.
* :class:`PortalServers` - the portal's listeners (HTTPS or plain HTTP, plus the redirect) for the platform.

The request *body* limit is an ASGI middleware of the app (:mod:`ops_portal.app`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import json
from collections.abc import Iterable
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from gbcore.log import get_logger
from gbcore.settings import Settings
from gbcore.tls import TlsMaterial, server_context

__all__ = [
    "LOOPBACK",
    "HstsMiddleware",
    "IPAddress",
    "IPNetwork",
    "PortalServers",
    "address_key",
    "forwarded_client_ip",
    "in_networks",
    "limited_protocol",
    "parse_ip",
    "parse_networks",
    "redirect_app",
    "uvicorn_config",
]

log = get_logger("gbops.portal.http")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

LOOPBACK: tuple[IPNetwork, ...] = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


# ------------------------------------------------------------------------------------------ addresses
def parse_ip(text: str | None) -> IPAddress | None:
    """An address as written in a peer tuple or a forwarded header (``1.2.3.4``, ``1.2.3.4:80``,
    ``[2001:db8::1]:443``, ``::ffff:1.2.3.4``), IPv4-mapped IPv6 as IPv4; None for anything else."""
    if not text:
        return None
    text = text.strip()
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        if text.startswith("["):
            host = text[1:].partition("]")[0]
        elif text.count(":") == 1:
            host = text.partition(":")[0]
        else:
            return None
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            return None
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return addr.ipv4_mapped
        if addr.scope_id:
            addr = ipaddress.IPv6Address(str(addr).partition("%")[0])
    return addr


@functools.lru_cache(maxsize=32)
def parse_networks(text: str | None) -> tuple[IPNetwork, ...]:
    """``"10.0.0.1, 192.168.0.0/16, ::1"`` as networks (a bare address is a /32 or /128).

    ``ValueError`` names an entry that is neither; empty text gives ``()``."""
    out: list[IPNetwork] = []
    for part in (text or "").replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            net = ipaddress.ip_network(part, strict=False)
        except ValueError:
            raise ValueError(f"not an address or network: {part!r}") from None
        out.append(net)
    return tuple(out)


def in_networks(addr: IPAddress | str | None, networks: Iterable[IPNetwork]) -> bool:
    if not isinstance(addr, ipaddress.IPv4Address | ipaddress.IPv6Address):
        addr = parse_ip(addr)
        if addr is None:
            return False
    return any(addr.version == net.version and addr in net for net in networks)


def forwarded_client_ip(peer: str | None, forwarded_for: Iterable[str], trusted_proxies: str | None) -> str | None:
    """The client address of a request that came from ``peer`` carrying the ``X-Forwarded-For``
    header values ``forwarded_for``.

    Unless ``peer`` is a trusted proxy the header is ignored (anybody can write it).  From a trusted
    proxy, the list is walked from the right (the hop nearest to us) past every trusted proxy; the first
    address that is not one is the client.  A malformed entry stops the walk at the last address that
    was vouched for; a list of trusted proxies only gives its left-most entry."""
    trusted = parse_networks(trusted_proxies)
    peer_addr = parse_ip(peer)
    if peer_addr is None:
        return peer
    if not trusted or not in_networks(peer_addr, trusted):
        return str(peer_addr)
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",") if hop.strip()]
    current = peer_addr
    for hop in reversed(hops):
        addr = parse_ip(hop)
        if addr is None:
            break
        current = addr
        if not in_networks(addr, trusted):
            break
    return str(current)


def address_key(client_ip: str | None) -> str:
    """What login throttling counts per: the address itself, or the /64 of an IPv6 address (one
    subscriber usually holds a whole /64, so one per address would be no limit at all)."""
    addr = parse_ip(client_ip)
    if addr is None:
        return client_ip or "-"
    if isinstance(addr, ipaddress.IPv6Address):
        return str(ipaddress.ip_network(f"{addr}/64", strict=False))
    return str(addr)


# ------------------------------------------------------------------------------------------ protocol
def _raw_response(status: int, reason: str, error: str, message: str, extra: dict[str, str] | None = None) -> bytes:
    body = json.dumps({"error": error, "message": message}, ensure_ascii=False).encode("utf-8")
    head = [
        f"HTTP/1.1 {status} {reason}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
        "cache-control: no-store",
        *(f"{k}: {v}" for k, v in (extra or {}).items()),
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


_TIMEOUT_RESPONSE = _raw_response(
    408, "Request Timeout", "request_timeout",
    "请求头发送超时，连接已关闭 / the request headers did not arrive in time: connection closed",
)
_BUSY_RESPONSE = _raw_response(
    503, "Service Unavailable", "too_many_connections",
    "连接数已达上限，请稍后再试 / too many connections: try again later", {"retry-after": "5"},
)


class _LimitedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a request-head deadline and a connection cap.

    The deadline runs whenever the connection waits on the client without a request being answered:
    from the connection's start, and from the end of each response, until the next request's head is
    complete.  Bytes arriving meanwhile do not extend it (that is the slow-loris trick), so a client
    has ``header_timeout`` seconds for each request head; after a response it also bounds the draining
    of an unread request body (a refused upload that keeps trickling).  uvicorn's keep-alive timeout
    still closes idle connections earlier."""

    header_timeout: float = 10.0
    max_connections: int = 1000

    _deadline: asyncio.TimerHandle | None = None
    _upgraded: bool = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            log.warning("http.connection_refused", reason="max_connections", limit=self.max_connections,
                        client=self.client[0] if self.client else None)
            transport.write(_BUSY_RESPONSE)
            transport.close()
            return
        self._update_deadline()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._update_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._update_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        self._upgraded = True
        self._cancel_deadline()
        super().handle_websocket_upgrade(event)

    # ---------------------------------------------------------------------------------- deadline
    def _answering(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _update_deadline(self) -> None:
        if self._upgraded or self.transport is None or self.transport.is_closing() or self._answering():
            self._cancel_deadline()
        elif self._deadline is None:
            self._deadline = self.loop.call_later(self.header_timeout, self._deadline_passed)

    def _deadline_passed(self) -> None:
        self._deadline = None
        if self._upgraded or self.transport.is_closing() or self._answering():
            return
        waiting_for_head = self.conn.their_state is h11.IDLE
        log.info("http.header_timeout", client=self.client[0] if self.client else None,
                 phase="head" if waiting_for_head else "body_drain", timeout=self.header_timeout)
        if waiting_for_head and self.conn.our_state is h11.IDLE:
            self.transport.write(_TIMEOUT_RESPONSE)
        self.transport.close()


def limited_protocol(header_timeout: float, max_connections: int) -> type[H11Protocol]:
    """An h11 protocol class for ``uvicorn.Config(http=...)`` with these limits."""
    return type(
        "LimitedH11Protocol",
        (_LimitedH11Protocol,),
        {"header_timeout": float(header_timeout), "max_connections": int(max_connections)},
    )


def uvicorn_config(app: Any, settings: Settings, *, tls: TlsMaterial | None = None,
                   **options: Any) -> uvicorn.Config:
    """The portal's ``uvicorn.Config``: host and port from ``settings``, the limited protocol, no
    ``proxy_headers`` (the portal resolves ``X-Forwarded-For`` itself, only from trusted proxies, see
    :func:`forwarded_client_ip`), a concurrency limit.  With ``tls``: HTTPS on ``https_port`` with
    :func:`gbcore.tls.server_context` and HSTS on every answer; without, plain HTTP on ``http_port``
    (HSTS only where a trusted proxy says the client came over HTTPS).  ``options`` override or add
    uvicorn options."""
    parse_networks(settings.trusted_proxies)  # a typo fails at start, not at the first request
    base: dict[str, Any] = {
        "host": settings.http_host,
        "port": settings.http_port,
        "http": limited_protocol(settings.http_header_timeout, settings.http_max_connections),
        "proxy_headers": False,
        "forwarded_allow_ips": "",
        # uvicorn answers 503 when connections + 1 or running requests reach this; the protocol
        # itself refuses the connection beyond http_max_connections.
        "limit_concurrency": settings.http_max_connections + 1,
    }
    if tls is not None:
        context = server_context(tls)  # built (and checked) now, not at the first connection
        base["port"] = settings.https_port
        base["ssl_context_factory"] = lambda config, default: context
        app = HstsMiddleware(app, settings.hsts_max_age)
    elif settings.trusted_proxies:
        app = HstsMiddleware(app, settings.hsts_max_age, trusted_proxies=settings.trusted_proxies)
    base.update(options)
    return uvicorn.Config(app, **base)


# ------------------------------------------------------------------------------------------ HTTPS
class HstsMiddleware:
    """``Strict-Transport-Security: max-age=N`` on every HTTP answer (the portal is HTTPS), or, with
    ``trusted_proxies`` (plain HTTP behind a TLS-terminating proxy), on the answers to requests that a
    trusted proxy says came over HTTPS (``X-Forwarded-Proto: https``; anybody else's header is ignored).
    WebSocket and lifespan traffic passes through untouched."""

    def __init__(self, app: Any, max_age: int, *, trusted_proxies: str | None = None) -> None:
        self.app = app
        self.value = f"max-age={int(max_age)}".encode("latin-1")
        self.trusted_proxies = trusted_proxies

    def _applies(self, scope: dict) -> bool:
        if self.trusted_proxies is None:
            return True
        peer = scope.get("client")
        if not peer or not in_networks(peer[0], parse_networks(self.trusted_proxies)):
            return False
        for name, value in scope.get("headers") or ():
            if name == b"x-forwarded-proto":
                # the nearest hop's word counts (a proxy appends to what the client wrote)
                return value.decode("latin-1").rsplit(",", 1)[-1].strip().lower() == "https"
        return False

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope.get("type") != "http" or not self._applies(scope):
            await self.app(scope, receive, send)
            return

        async def send_with_hsts(message: dict) -> None:
            if message.get("type") == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0].lower() != b"strict-transport-security"]
                headers.append((b"strict-transport-security", self.value))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_hsts)


def _redirect_host(raw: str, https_port: int) -> str | None:
    """The ``Host`` a client sent, with the HTTPS port instead of its own; None for anything that is not a
    plain host name or address (a forged header must not be reflected into ``Location``)."""
    raw = raw.strip()
    if raw.startswith("["):
        host, sep, _ = raw[1:].partition("]")
        if not sep:
            return None
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return None
        host = f"[{host}]"
    else:
        host = raw.rpartition(":")[0] if ":" in raw else raw
        if not host or len(host) > 253 or not all(c.isalnum() or c in "-._" for c in host):
            return None
    return host if https_port == 443 else f"{host}:{https_port}"


def redirect_app(https_port: int, fallback_host: str) -> Any:
    """An ASGI app answering every request with ``308 Permanent Redirect`` to the same path and query on
    ``https://<the host the client asked for>:<https_port>`` (308 keeps the method and the body)."""

    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return  # a WebSocket over plain HTTP: refused (closed without accept)
        host_header = next((v.decode("latin-1") for k, v in scope.get("headers") or () if k == b"host"), "")
        host = _redirect_host(host_header, https_port) or _redirect_host(fallback_host, https_port)
        path = scope.get("raw_path") or scope.get("path", "/").encode()
        if isinstance(path, bytes):
            path = path.decode("latin-1")
        if not path.startswith("/") or path.startswith("//"):
            path = "/"
        query = scope.get("query_string") or b""
        location = f"https://{host}{path}" + (f"?{query.decode('latin-1')}" if query else "")
        body = json.dumps({"error": "https_required", "message": "请使用 HTTPS / use HTTPS", "location": location},
                          ensure_ascii=False).encode("utf-8")
        await send({"type": "http.response.start", "status": 308, "headers": [
            (b"location", location.encode("latin-1")),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
            (b"connection", b"close"),
        ]})
        await send({"type": "http.response.body", "body": body})

    return app


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signals to the platform (which stops the servers itself)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


class PortalServers:
    """The portal's listeners: HTTPS on ``https_port`` and the redirect on ``http_port`` (0: none) when
    ``tls`` is given, else plain HTTP on ``http_port``.  ``options`` go to the portal's uvicorn config."""

    def __init__(self, app: Any, settings: Settings, tls: TlsMaterial | None, **options: Any) -> None:
        self.settings = settings
        self.tls = tls
        self.main = _Server(uvicorn_config(app, settings, tls=tls, **options))
        self.redirect: _Server | None = None
        self._tasks: list[asyncio.Task] = []

    @staticmethod
    async def _serve(server: uvicorn.Server, tasks: list[asyncio.Task]) -> None:
        task = asyncio.create_task(server.serve())
        tasks.append(task)
        while not server.started:
            if task.done():
                task.result()  # raises the bind error
                raise OSError(f"HTTP server on {server.config.host}:{server.config.port} did not start")
            await asyncio.sleep(0.02)

    async def start(self) -> None:
        await self._serve(self.main, self._tasks)
        s = self.settings
        if self.tls is not None and s.http_port:
            config = uvicorn_config(redirect_app(self.port, s.http_host), s, log_config=None, access_log=False,
                                    lifespan="off")
            self.redirect = _Server(config)
            await self._serve(self.redirect, self._tasks)
        log.info("http.listening", host=s.http_host, port=self.port, https=self.tls is not None,
                 redirect_port=self.redirect_port)

    @staticmethod
    def _port(server: uvicorn.Server | None) -> int | None:
        for srv in getattr(server, "servers", None) or []:
            for sock in srv.sockets:
                return sock.getsockname()[1]
        return None

    @property
    def port(self) -> int:
        """Where the portal is served (HTTPS or plain)."""
        return self._port(self.main) or int(self.main.config.port)

    @property
    def redirect_port(self) -> int | None:
        """The plain-HTTP port that redirects to HTTPS (None: none)."""
        return self._port(self.redirect)

    async def stop(self, timeout: float = 5.0) -> None:
        for server in (self.redirect, self.main):
            if server is not None:
                server.should_exit = True
        for task in self._tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, timeout)
