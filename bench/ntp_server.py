"""The platform's NTP server against a bare asyncio UDP responder, side by side on loopback.

    .venv/bin/python bench/ntp_server.py [queries]

Both listen in this process on their own event loop thread; a plain blocking client (another thread) sends
SNTP v4 requests one at a time, alternating between the two, and measures:
- the offset the client computes from the platform's answers (same host clock: ideally 0; the requirement is
  that a device using this server stays within 1 s, the issue's test asks for 10 ms),
- the round trip to each server; the ratio of the medians says what the codec and the reference cost.
The bare responder echoes 48 bytes with the client's transmit timestamp copied (no parsing, no clock read
beyond one): the floor of a Python UDP answer on this machine.
"""

from __future__ import annotations

import asyncio
import socket
import statistics
import struct
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from timesync import ntp  # noqa: E402
from timesync.server import NtpServer  # noqa: E402


class _Bare(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        now = ntp.to_ntp(time.time())
        out = bytearray(48)
        out[0] = 0x24  # v4, mode 4
        out[1] = 1  # stratum 1 (0 would read as a kiss-o'-death)
        out[24:32] = data[40:48]  # origin = client's transmit
        out[32:40] = struct.pack("!Q", now)
        out[40:48] = struct.pack("!Q", now)
        self.transport.sendto(bytes(out), addr)


def serve(ports: dict[str, int], ready: threading.Event, stop: threading.Event) -> None:
    async def main() -> None:
        from timesync.server import _Protocol

        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(_Bare, local_addr=("127.0.0.1", 0))
        ports["bare"] = transport.get_extra_info("sockname")[1]
        # the platform's server (its protocol and reference; NtpServer.start() reads port 0 as "off", so the
        # ephemeral port is bound here the same way start() binds the configured one)
        platform = NtpServer("127.0.0.1", 0, lambda: ntp.local_reference(10, time.time()))
        ptransport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(platform),
                                                             local_addr=("127.0.0.1", 0))
        platform.transport = ptransport  # type: ignore[assignment]
        ports["platform"] = ptransport.get_extra_info("sockname")[1]
        ready.set()
        await asyncio.to_thread(stop.wait)
        transport.close()
        ptransport.close()

    asyncio.run(main())


def query(sock: socket.socket, port: int) -> tuple[float, float]:
    req = ntp.build_request(time.time())
    t0 = time.perf_counter()
    sock.sendto(req, ("127.0.0.1", port))
    data, _ = sock.recvfrom(512)
    rtt = time.perf_counter() - t0
    return ntp.measure(req, data, time.time()).offset, rtt


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    ports: dict[str, int] = {}
    ready, stop = threading.Event(), threading.Event()
    thread = threading.Thread(target=serve, args=(ports, ready, stop), daemon=True)
    thread.start()
    ready.wait(10)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(2)
    offsets: list[float] = []
    rtts: dict[str, list[float]] = {"platform": [], "bare": []}
    try:
        for _ in range(50):  # warm-up
            query(sock, ports["platform"]), query(sock, ports["bare"])
        for _ in range(n):
            off, rtt = query(sock, ports["platform"])
            offsets.append(abs(off))
            rtts["platform"].append(rtt)
            rtts["bare"].append(query(sock, ports["bare"])[1])
    finally:
        stop.set()
        thread.join(5)
    q = statistics.quantiles(offsets, n=100)
    print(f"{n} SNTP v4 queries each, loopback, one at a time")
    print(f"platform |offset|: median {statistics.median(offsets) * 1e3:.3f} ms, p99 {q[98] * 1e3:.3f} ms, "
          f"max {max(offsets) * 1e3:.3f} ms (limit of the test: 10 ms; of the requirement: 1 s)")
    mp, mb = statistics.median(rtts["platform"]), statistics.median(rtts["bare"])
    print(f"round trip median: platform {mp * 1e6:.0f} us, bare asyncio responder {mb * 1e6:.0f} us, "
          f"ratio {mp / mb:.2f}x")


if __name__ == "__main__":
    main()
