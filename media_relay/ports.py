"""RTP port and SSRC allocation for media sessions.

SSRC (GB/T 28181 appendix): 10 decimal digits: ``0`` for live (``1`` for history), then the 5 digits of
the SIP domain's characters 4-8, then a 4-digit sequence. Allocation is in memory over the live
sessions only: nothing is persisted, so a database or Redis wipe can never leave the space "exhausted";
after a restart every session is new anyway. A released value is not reused before the cursor has gone
round, which keeps a late packet of an old session from matching a new one.
"""

from __future__ import annotations

import socket


class NoPortsLeft(Exception):
    """Every RTP port (or SSRC) of the configured range is in use."""


class SsrcAllocator:
    def __init__(self, domain: str) -> None:
        if len(domain) < 8 or not domain.isdigit():
            raise ValueError("domain must be the 10-digit (or 8-digit) SIP domain")
        self.middle = domain[3:8]
        self._live: set[str] = set()
        self._cursor = {"0": 0, "1": 0}

    def allocate(self, history: bool = False) -> str:
        prefix = "1" if history else "0"
        for _ in range(10000):
            self._cursor[prefix] = (self._cursor[prefix] % 9999) + 1  # 0001..9999
            ssrc = f"{prefix}{self.middle}{self._cursor[prefix]:04d}"
            if ssrc not in self._live:
                self._live.add(ssrc)
                return ssrc
        raise NoPortsLeft("all 9999 SSRC values of this kind are in use / SSRC 已用尽")

    def adopt(self, ssrc: str) -> None:
        """The device answered another SSRC: keep it reserved for the session's life."""
        self._live.add(ssrc)

    def release(self, ssrc: str) -> None:
        self._live.discard(ssrc)

    def in_use(self) -> int:
        return len(self._live)


class PortPool:
    """RTP ports from ``GBOPS_RTP_PORTS``; one port per upstream session (UDP and TCP on the same number)."""

    def __init__(self, low: int, high: int, host: str = "0.0.0.0") -> None:
        self.low, self.high, self.host = low, high, host
        self._used: set[int] = set()
        self._next = low

    def _free(self, port: int) -> bool:
        for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            with socket.socket(socket.AF_INET, kind) as s:
                try:
                    s.bind((self.host, port))
                except OSError:
                    return False
        return True

    def allocate(self) -> int:
        span = self.high - self.low + 1
        for _ in range(span):
            port = self._next
            self._next = self.low + ((self._next - self.low + 1) % span)
            if port in self._used or not self._free(port):
                continue
            self._used.add(port)
            return port
        raise NoPortsLeft(f"no free RTP port in {self.low}-{self.high} / 媒体端口已用尽")

    def release(self, port: int) -> None:
        self._used.discard(port)

    def in_use(self) -> int:
        return len(self._used)
