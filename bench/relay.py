"""Benchmark: relay cost of the media path vs a bare uvloop UDP forwarder, in the same run.

K camera streams of RTP/PS (a real ZLMediaKit vector, sent at ``--mbps`` each) go to a relay process
that runs the real pipeline: RTP parse -> reorder -> PS demux -> Stream fan-out -> one HTTP-FLV muxer
per viewer -> a TCP connection per viewer (what an HTTP-FLV response costs in the kernel). The reference
is a bare uvloop process that receives the same datagrams and sendto()s each one to V viewers.

CPU is read from /proc/<pid>/stat of each process (user+system), so the figures are CPU-seconds, not
wall time. Prints CPU-seconds per stream-second for both and the ratio (goal: within 3x of the bare
forwarder). Repeats ``--repeats`` times and prints medians.

    python bench/relay.py [--streams 4] [--viewers 5] [--mbps 2] [--seconds 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
VECTOR = ROOT.parent / "shared" / "vectors" / "ps" / "zlm_h264_aac.ps"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def free_port(kind=socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rtp_packets_of_vector(ssrc: int) -> list[bytes]:
    """The vector as a camera sends it: one PS pack per frame, split into RTP packets."""
    from media_relay.ps import PsDemuxer, PsMuxer
    from media_relay.rtp import packetize_ps

    demux = PsDemuxer()
    aus = demux.feed(VECTOR.read_bytes()) + demux.flush(eof=True)
    mux = PsMuxer("h264", "aac")
    out, seq = [], 0
    for au in aus:
        pkts = packetize_ps(mux.mux(au), ssrc=ssrc, sequence=seq, timestamp=au.pts or 0)
        seq = (seq + len(pkts)) & 0xFFFF
        out += [p.to_bytes() for p in pkts]
    return out


# ------------------------------------------------------------------------------------------ servers
def serve_forwarder(ports: list[int], sinks: list[tuple[str, int]]) -> None:
    import uvloop

    class Fwd(asyncio.DatagramProtocol):
        def connection_made(self, t):
            self.t = t

        def datagram_received(self, data, addr):
            for dst in sinks:
                self.t.sendto(data, dst)

    async def main():
        loop = asyncio.get_running_loop()
        for port in ports:
            await loop.create_datagram_endpoint(Fwd, local_addr=("127.0.0.1", port))
        print("ready", flush=True)
        await asyncio.Event().wait()

    uvloop.run(main())


def serve_relay(ports: list[int], viewers: int, sink_port: int) -> None:
    import uvloop

    from gbcore.ids import ChannelRef
    from media_relay.outputs.flv import flv_stream
    from media_relay.stream import Stream, _UdpIngest

    async def viewer(stream: Stream):
        reader = stream.add_reader()
        _, writer = await asyncio.open_connection("127.0.0.1", sink_port)
        async for chunk in flv_stream(reader):
            writer.write(chunk)
            if writer.transport.get_write_buffer_size() > 1 << 20:
                await writer.drain()

    async def main():
        loop = asyncio.get_running_loop()
        tasks = []
        for i, port in enumerate(ports):
            stream = Stream(ChannelRef(f"dev{i}", f"ch{i}"), "udp", port=port, ssrc=f"{1000 + i:010d}")
            await loop.create_datagram_endpoint(lambda s=stream: _UdpIngest(s), local_addr=("127.0.0.1", port))
            tasks += [asyncio.create_task(viewer(stream)) for _ in range(viewers)]
        print("ready", flush=True)
        await asyncio.gather(*tasks)

    uvloop.run(main())


# ------------------------------------------------------------------------------------------ driver
class Sink(asyncio.Protocol):
    received = 0

    def data_received(self, data):
        Sink.received += len(data)


class UdpSink(asyncio.DatagramProtocol):
    received = 0

    def datagram_received(self, data, addr):
        UdpSink.received += len(data)


def spawn(*args: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, cwd=ROOT)
    assert proc.stdout is not None
    if b"ready" not in proc.stdout.readline():
        raise RuntimeError(f"server {args[0]} did not start")
    return proc


async def send(ports: list[int], packets: list[list[bytes]], mbps: float, seconds: float) -> int:
    """Send each stream's packets round-robin at ``mbps`` per stream, paced in 10 ms slices."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
    bytes_per_slice = mbps * 1e6 / 8 / 100
    idx = [0] * len(ports)
    sent = 0
    start = time.perf_counter()
    n = 0
    while time.perf_counter() - start < seconds:
        for k, port in enumerate(ports):
            budget = bytes_per_slice
            pk = packets[k]
            while budget > 0:
                data = pk[idx[k] % len(pk)]
                idx[k] += 1
                transport.sendto(data, ("127.0.0.1", port))
                budget -= len(data)
                sent += 1
        n += 1
        await asyncio.sleep(max(0.0, start + n * 0.01 - time.perf_counter()))
    transport.close()
    return sent


async def one_run(args) -> tuple[float, float, int]:
    loop = asyncio.get_running_loop()
    k, v = args.streams, args.viewers
    sink_tcp = await loop.create_server(Sink, "127.0.0.1", 0)
    sink_port = sink_tcp.sockets[0].getsockname()[1]
    udp_sinks = []
    for _ in range(v):
        t, _ = await loop.create_datagram_endpoint(UdpSink, local_addr=("127.0.0.1", 0))
        udp_sinks.append(t)
    sink_addrs = ",".join(str(t.get_extra_info("sockname")[1]) for t in udp_sinks)

    # the stream's SSRCs must match what the relay's Streams expect
    packets = [rtp_packets_of_vector(1000 + i) for i in range(k)]
    results = []
    for mode in ("forwarder", "relay"):
        ports = [free_port() for _ in range(k)]
        port_arg = ",".join(map(str, ports))
        if mode == "forwarder":
            proc = spawn("--serve-forwarder", port_arg, sink_addrs)
        else:
            proc = spawn("--serve-relay", port_arg, str(v), str(sink_port))
        await asyncio.sleep(0.5)
        c0 = cpu_seconds(proc.pid)
        sent = await send(ports, packets, args.mbps, args.seconds)
        await asyncio.sleep(0.3)
        cpu = cpu_seconds(proc.pid) - c0
        proc.kill()
        proc.wait()
        results.append(cpu / (k * args.seconds))
    for t in udp_sinks:
        t.close()
    sink_tcp.close()
    return results[0], results[1], sent


async def drive(args) -> None:
    fwd, rel = [], []
    for rep in range(args.repeats):
        f, r, sent = await one_run(args)
        fwd.append(f)
        rel.append(r)
        print(f"run {rep + 1}: forwarder {f * 1000:.2f} ms CPU per stream-second | relay {r * 1000:.2f} ms | "
              f"ratio {r / f:.2f} | {sent} packets sent to the relay", flush=True)
    f, r = statistics.median(fwd), statistics.median(rel)
    print()
    print(f"median over {args.repeats} runs: {args.streams} streams x {args.mbps} Mbit/s, {args.viewers} viewers "
          f"each, {args.seconds:.0f} s")
    print(f"  bare uvloop UDP forwarder  {f * 1000:8.2f} ms CPU per stream-second (reference)")
    print(f"  gbops relay (FLV per viewer){r * 1000:7.2f} ms CPU per stream-second")
    print(f"  ratio                      {r / f:8.2f} x   (goal: within 3x)")
    print(f"  FLV bytes delivered        {Sink.received:,}  forwarded datagram bytes {UdpSink.received:,}")
    from results import record

    record("relay", "ms_cpu_per_stream_second", r * 1000, unit="ms CPU per stream-second", reference=f * 1000,
           note=f"{args.streams} streams x {args.viewers} FLV viewers; reference: bare uvloop forwarder")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", type=int, default=4)
    ap.add_argument("--viewers", type=int, default=5)
    ap.add_argument("--mbps", type=float, default=2.0)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--serve-forwarder", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--serve-relay", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_forwarder:
        ports = [int(p) for p in args.serve_forwarder[0].split(",")]
        sinks = [("127.0.0.1", int(p)) for p in args.serve_forwarder[1].split(",")]
        serve_forwarder(ports, sinks)
    elif args.serve_relay:
        serve_relay([int(p) for p in args.serve_relay[0].split(",")], int(args.serve_relay[1]),
                    int(args.serve_relay[2]))
    else:
        import uvloop

        uvloop.run(drive(args))


if __name__ == "__main__":
    main()
