"""The platform's own clock against upstream NTP servers: one request per server over UDP.

:func:`query_server` sends one mode-3 request and waits for the answer (the sans-IO core
:func:`timesync.ntp.measure` checks it is the answer to that request and computes offset and delay).
:func:`check_servers` asks every configured server at once and summarises: synchronised when at least one
synchronised server answered and the offset from the best answer (smallest delay) is within ``max_offset``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from timesync import ntp

__all__ = ["MAX_OFFSET", "ServerAnswer", "check_servers", "parse_servers", "query_server"]

#: The platform's own clock is unsynchronised beyond this offset (seconds; the requirement is 1 s end to end).
MAX_OFFSET = 0.5


def parse_servers(text: str) -> list[tuple[str, int]]:
    """``"ntp1.example, 10.0.0.5:1123, [2001:db8::1]:123"`` -> [(host, port), ...] (default port 123)."""
    out: list[tuple[str, int]] = []
    for item in (p.strip() for p in text.split(",")):
        if not item:
            continue
        host, port = item, 123
        if item.startswith("["):
            end = item.find("]")
            host = item[1:end]
            rest = item[end + 1:]
            if rest.startswith(":") and rest[1:].isdigit():
                port = int(rest[1:])
        elif item.count(":") == 1:
            name, _, p = item.partition(":")
            if p.isdigit():
                host, port = name, int(p)
        out.append((host, port))
    return out


@dataclass(frozen=True, slots=True)
class ServerAnswer:
    server: str
    address: str | None = None
    measurement: ntp.Measurement | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.measurement is not None and self.measurement.server_synchronised

    def as_dict(self) -> dict[str, Any]:
        m = self.measurement
        return {"server": self.server, "address": self.address, "ok": self.ok, "error": self.error,
                "offset_s": None if m is None else round(m.offset, 6),
                "delay_s": None if m is None else round(m.delay, 6),
                "stratum": None if m is None else m.stratum}


class _Client(asyncio.DatagramProtocol):
    def __init__(self, request: bytes, clock: Callable[[], float]) -> None:
        self.request = request
        self.clock = clock
        self.answer: asyncio.Future[tuple[bytes, float]] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        received = self.clock()
        if not self.answer.done():
            try:
                ntp.measure(self.request, data, received)
            except ntp.NtpError:
                return  # not the answer to our request (or garbage): keep waiting
            self.answer.set_result((data, received))

    def error_received(self, exc: Exception) -> None:
        if not self.answer.done():
            self.answer.set_exception(exc)


async def query_server(host: str, port: int = 123, *, timeout: float = 2.0,
                       clock: Callable[[], float] = time.time) -> ServerAnswer:
    """One exchange with ``host:port``; never raises (the error is in the answer)."""
    name = f"{host}:{port}"
    loop = asyncio.get_running_loop()
    transport = None
    try:
        infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=2), timeout)  # SOCK_DGRAM
        family, _, _, _, sockaddr = infos[0]
        address = str(sockaddr[0])
        transport, proto = await loop.create_datagram_endpoint(
            lambda: _Client(b"", clock), remote_addr=sockaddr[:2], family=family)
        request = ntp.build_request(clock())
        proto.request = request
        transport.sendto(request)
        data, received = await asyncio.wait_for(proto.answer, timeout)
        return ServerAnswer(name, address, ntp.measure(request, data, received))
    except TimeoutError:
        return ServerAnswer(name, None, None, "no answer (timeout)")
    except (OSError, ntp.NtpError) as exc:
        return ServerAnswer(name, None, None, f"{type(exc).__name__}: {exc}")
    finally:
        if transport is not None:
            transport.close()


async def check_servers(servers: list[tuple[str, int]], *, timeout: float = 2.0,
                        clock: Callable[[], float] = time.time) -> list[ServerAnswer]:
    return list(await asyncio.gather(*(query_server(h, p, timeout=timeout, clock=clock) for h, p in servers)))
