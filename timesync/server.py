"""The NTP server's socket: a thin asyncio UDP adapter around :func:`timesync.ntp.server_answer`.

Every datagram is read with the host clock at once (receive timestamp), answered (or dropped) by the sans-IO
core, and the answer's transmit timestamp is taken right before it is sent.  What the answers say about the
clock (stratum, leap, reference) comes from ``reference()`` on each request, so they follow the platform's
own synchronisation state.  Binding may fail (port 123 needs privileges; another NTP daemon may hold it):
:meth:`NtpServer.start` then records why, logs a warning and the platform runs without it.
"""

from __future__ import annotations

import asyncio
import errno
import time
from collections.abc import Callable
from typing import Any

from gbcore.log import get_logger
from timesync import ntp

__all__ = ["NtpServer"]

log = get_logger("gbops.ntp")


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, server: NtpServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        srv = self.server
        received = srv.clock()
        answer = ntp.server_answer(data, received, srv.clock(), srv.reference())
        if answer is None:
            srv.dropped += 1
            return
        # the transmit timestamp is the last thing set before the packet leaves
        answer = answer[:40] + ntp.to_ntp(srv.clock()).to_bytes(8, "big")
        if self.transport is not None:
            self.transport.sendto(answer, addr)
        srv.answered += 1

    def error_received(self, exc: Exception) -> None:  # ICMP unreachable from a client that went away
        pass


class NtpServer:
    """``start()`` binds ``host:port`` (port 0 means off); ``status()`` says whether it runs and, if not, why."""

    def __init__(self, host: str, port: int, reference: Callable[[], ntp.Reference], *,
                 clock: Callable[[], float] = time.time) -> None:
        self.host = host
        self.port = port
        self.reference = reference
        self.clock = clock
        self.transport: asyncio.DatagramTransport | None = None
        self.error: str | None = None
        self.answered = 0
        self.dropped = 0

    @property
    def running(self) -> bool:
        return self.transport is not None

    @property
    def bound_port(self) -> int | None:
        if self.transport is None:
            return None
        return self.transport.get_extra_info("sockname")[1]

    async def start(self) -> bool:
        """Listen; False (with ``error`` set and a warning logged) when it is off or cannot bind."""
        if self.port == 0:
            self.error = "disabled (GBOPS_NTP_PORT=0)"
            return False
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self),
                                                               local_addr=(self.host, self.port))
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EPERM):
                why = f"permission denied binding UDP {self.host}:{self.port} (port < 1024 needs privileges)"
            elif exc.errno == errno.EADDRINUSE:
                why = f"UDP {self.host}:{self.port} is in use (another NTP server on this host?)"
            else:
                why = f"cannot bind UDP {self.host}:{self.port}: {exc.strerror or exc}"
            self.error = why
            log.warning("ntp.server_unavailable", host=self.host, port=self.port, reason=why,
                        hint="set GBOPS_NTP_PORT to a free port (or 0 to turn the NTP server off)")
            return False
        self.transport = transport  # type: ignore[assignment]
        self.error = None
        log.info("ntp.listening", host=self.host, port=self.bound_port)
        return True

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    def status(self) -> dict[str, Any]:
        return {"enabled": self.port != 0, "running": self.running, "host": self.host,
                "port": self.bound_port if self.running else self.port, "error": self.error,
                "answered": self.answered, "dropped": self.dropped}
