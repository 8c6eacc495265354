"""Fake platforms for the simulator tests.

:class:`StubPlatform` is a minimal, stateless GB/T 28181 registrar/keepalive responder (sans-IO: bytes
in, bytes out) with digest authentication; :class:`AsyncStub` serves it over UDP and TCP on asyncio.
It is what the runner tests and the load measurement run against when the real service is not needed.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
from collections import Counter
from dataclasses import dataclass, field

from sip_server.gb import manscdp
from sip_server.sip import (
    DigestAuthenticator,
    Headers,
    SipParseError,
    SipRequest,
    SipResponse,
    StreamFramer,
    make_response,
    parse_message,
    parse_name_addr,
)

PASSWORD = "Sim-Pass-2024"
REALM = "3402000000"
SERVER_ID = "34020000002000000001"


def from_user(msg: SipRequest | SipResponse) -> str:
    return parse_name_addr(msg.headers.get("From") or "").uri.user or ""


@dataclass
class StubPlatform:
    """Answers REGISTER (401 challenge, then 200 with ``Date:`` or 403) and MESSAGE (200), and can
    build Query MESSAGEs to devices.  Keeps just enough state to count what happened."""

    password: str = PASSWORD
    algorithm: str = "MD5"
    expires_cap: int | None = None
    keepalive_status: int = 200
    auth: DigestAuthenticator = field(default_factory=lambda: DigestAuthenticator(REALM, secrets.token_bytes(32)))
    registered: dict[str, tuple[tuple[str, int], str]] = field(default_factory=dict)  # id -> (addr, transport)
    unregistered: set[str] = field(default_factory=set)
    keepalives: Counter = field(default_factory=Counter)
    responses: list[tuple[str, manscdp.ManscdpMessage]] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    _sn: itertools.count = field(default_factory=lambda: itertools.count(1000))

    def handle(self, data: bytes | SipRequest | SipResponse, addr: tuple[str, int], now: float,
               transport: str = "udp") -> list[bytes]:
        try:
            msg = parse_message(data) if isinstance(data, bytes | bytearray) else data
        except SipParseError:
            self.counts["bad"] += 1
            return []
        if not isinstance(msg, SipRequest):
            self.counts[f"response {msg.status}"] += 1
            return []
        resp = self.on_request(msg, addr, now, transport)
        return [resp.to_bytes()] if resp is not None else []

    def on_request(self, req: SipRequest, addr: tuple[str, int], now: float, transport: str) -> SipResponse | None:
        user = from_user(req)
        self.counts[req.method] += 1
        if req.method == "REGISTER":
            authz = req.headers.get("Authorization")
            if not authz:
                self.counts["challenges"] += 1
                return make_response(req, 401, to_tag="stub", headers=[
                    ("WWW-Authenticate", self.auth.challenge(now, user, algorithm=self.algorithm))])
            result = self.auth.verify(authz, method="REGISTER", bind=user, password=self.password, now=now)
            if not result.ok:
                if result.stale:
                    return make_response(req, 401, to_tag="stub", headers=[
                        ("WWW-Authenticate", self.auth.challenge(now, user, algorithm=self.algorithm, stale=True))])
                self.counts["auth_failures"] += 1
                return make_response(req, 403, to_tag="stub")
            expires = int(req.headers.get("Expires") or "3600")
            if self.expires_cap is not None:
                expires = min(expires, self.expires_cap)
            if expires == 0:
                self.registered.pop(user, None)
                self.unregistered.add(user)
            else:
                self.registered[user] = (addr, transport)
            return make_response(req, 200, to_tag="stub", headers=[
                ("Date", "2026-11-21T13:50:00.123"), ("Expires", str(expires))])
        if req.method == "MESSAGE":
            try:
                body = manscdp.parse(req.body)
            except manscdp.ManscdpError:
                return make_response(req, 400, to_tag="stub")
            if body.cmd_type == "Keepalive":
                if self.keepalive_status != 200 or user not in self.registered:
                    return make_response(req, self.keepalive_status if self.keepalive_status != 200 else 403,
                                         to_tag="stub")
                self.keepalives[user] += 1
            else:
                self.responses.append((user, body))
            return make_response(req, 200, to_tag="stub")
        if req.method == "ACK":
            return None
        return make_response(req, 405, to_tag="stub")

    def query(self, device_id: str, cmd_type: str, *, host: str = "127.0.0.1", port: int = 5060,
              transport: str = "UDP", target: str | None = None, extra: dict | None = None,
              charset: str = "GB2312") -> SipRequest:
        """A MESSAGE Query to *device_id*, as the platform sends it."""
        sn = next(self._sn)
        h = Headers()
        h.add("Via", f"SIP/2.0/{transport} {host}:{port};rport;branch=z9hG4bK{secrets.token_hex(8)}")
        h.add("From", f"<sip:{SERVER_ID}@{REALM}>;tag={secrets.token_hex(4)}")
        h.add("To", f"<sip:{device_id}@{REALM}>")
        h.add("Call-ID", f"{secrets.token_hex(8)}@{host}")
        h.add("CSeq", "1 MESSAGE")
        h.add("Max-Forwards", "70")
        h.add("Content-Type", "Application/MANSCDP+xml")
        body = manscdp.build_query(cmd_type, sn, target or device_id, charset=charset, extra=extra)
        return SipRequest("MESSAGE", f"sip:{device_id}@{host}:{port}", h, body)


class AsyncStub:
    """Serve a :class:`StubPlatform` on 127.0.0.1 over UDP and TCP (same port number)."""

    def __init__(self, platform: StubPlatform | None = None, host: str = "127.0.0.1") -> None:
        self.platform = platform or StubPlatform()
        self.host = host
        self.port = 0
        self.udp: asyncio.DatagramTransport | None = None
        self.tcp_server: asyncio.base_events.Server | None = None
        self.tcp_conns: dict[tuple[str, int], asyncio.Transport] = {}
        self.silent = False  # drop everything (a platform that went away)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        stub = self

        class Udp(asyncio.DatagramProtocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = transport

            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
                if stub.silent:
                    return
                for out in stub.platform.handle(data, addr, loop.time(), "udp"):
                    self.transport.sendto(out, addr)  # type: ignore[attr-defined]

        class Tcp(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = transport
                self.framer = StreamFramer()
                self.peer = transport.get_extra_info("peername")[:2]
                stub.tcp_conns[self.peer] = transport  # type: ignore[assignment]

            def data_received(self, data: bytes) -> None:
                if stub.silent:
                    return
                for msg in self.framer.feed(data):
                    for out in stub.platform.handle(msg, self.peer, loop.time(), "tcp"):
                        self.transport.write(out)  # type: ignore[attr-defined]

            def connection_lost(self, exc: Exception | None) -> None:
                stub.tcp_conns.pop(self.peer, None)

        # Find a port free for both UDP and TCP.
        for _ in range(20):
            udp, _ = await loop.create_datagram_endpoint(Udp, local_addr=(self.host, 0))
            port = udp.get_extra_info("sockname")[1]
            try:
                self.tcp_server = await loop.create_server(Tcp, self.host, port, backlog=4096)
            except OSError:
                udp.close()
                continue
            self.udp, self.port = udp, port  # type: ignore[assignment]
            return
        raise RuntimeError("no port free for both UDP and TCP")

    def send_to_device(self, device_id: str, req: SipRequest) -> None:
        addr, transport = self.platform.registered[device_id]
        data = req.to_bytes()
        if transport == "udp":
            assert self.udp is not None
            self.udp.sendto(data, addr)
        else:
            self.tcp_conns[addr].write(data)

    async def close(self) -> None:
        if self.udp is not None:
            self.udp.close()
        if self.tcp_server is not None:
            self.tcp_server.close()
            for t in list(self.tcp_conns.values()):
                t.close()
            await self.tcp_server.wait_closed()
