"""Benchmark: digest registrations and keepalives per CPU-second of the gbops SIP server process.

Three processes: this one drives the load (its CPU is not counted); a bare uvloop UDP echo server is the
reference; the gbops SIP service (GB core + registry writer on SQLite, as `gbops run` uses it) is measured.
Server CPU is read from /proc/<pid>/stat (user+system) before and after each phase, so the figures are
CPU-seconds of the server process, not wall time. Each phase runs ``--repeats`` times; medians are printed,
and ratios against the echo server measured in the same run.

Every registration is the real exchange: REGISTER -> 401 (challenge) -> REGISTER with digest -> 200; the
server then queries each new device (DeviceInfo, ConfigDownload, Catalog) and this driver answers 200 to
those, as a camera does, so that cost is included.

    python bench/sip_register.py [--devices 3000] [--keepalives 3] [--repeats 3] [--window 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PASSWORD = "Bench-pass#2026"
SERVER_ID = "34020000002000000001"
DOMAIN = "3402000000"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------- servers
def serve_echo(port: int) -> None:
    import uvloop

    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport):
            self.t = transport

        def datagram_received(self, data, addr):
            self.t.sendto(data, addr)

    async def main():
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", port))
        print("ready", flush=True)
        await asyncio.Event().wait()

    uvloop.run(main())


def serve_gbops(port: int, db_dir: str) -> None:
    import uvloop

    from device_registry.service import Registry, RegistryWriter
    from gbcore.db import make_engine, make_sessionmaker
    from gbops.migrate import migrate
    from sip_server.gb.server import GbConfig
    from sip_server.service import SipService

    async def main():
        engine = make_engine(f"sqlite+aiosqlite:///{db_dir}/bench.db")
        await migrate(engine)
        writer = RegistryWriter(Registry(make_sessionmaker(engine)))
        await writer.start()
        cfg = GbConfig(default_password=PASSWORD, catalog_timeout=3600, query_timeout=3600)
        svc = SipService(cfg, host="127.0.0.1", port=port, writer=writer)
        await svc.start()
        print("ready", flush=True)
        await asyncio.Event().wait()

    uvloop.run(main())


def spawn(mode: str, port: int, *extra: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, __file__, f"--serve-{mode}", str(port), *extra],
                            stdout=subprocess.PIPE, cwd=ROOT)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if b"ready" not in line:
        raise RuntimeError(f"{mode} server did not start")
    return proc


# ---------------------------------------------------------------------------------------------- load
class Client(asyncio.DatagramProtocol):
    """A windowed load generator speaking just enough SIP; answers the server's queries with 200."""

    def __init__(self) -> None:
        self.waiters: dict[str, asyncio.Future] = {}
        self.queries_answered = 0

    def connection_made(self, transport):
        self.t = transport

    def datagram_received(self, data, addr):
        from sip_server.sip import make_response, parse_message

        if data.startswith(b"SIP/2.0"):
            msg = parse_message(data)
            fut = self.waiters.pop(msg.call_id, None)
            if fut is not None and not fut.done():
                fut.set_result(msg)
        elif data.startswith(b"MESSAGE"):
            req = parse_message(data)
            self.t.sendto(make_response(req, 200, to_tag="b").to_bytes(), addr)
            self.queries_answered += 1
        else:  # echo
            fut = self.waiters.pop(data[:16].decode(), None)
            if fut is not None and not fut.done():
                fut.set_result(data)

    async def call(self, key: str, data: bytes, addr, timeout: float = 10.0):
        fut = asyncio.get_running_loop().create_future()
        self.waiters[key] = fut
        for _ in range(4):  # retransmit as a UDP client would
            self.t.sendto(data, addr)
            try:
                return await asyncio.wait_for(asyncio.shield(fut), timeout / 4)
            except TimeoutError:
                continue
        raise TimeoutError(key)


def register_bytes(dev: str, call_id: str, cseq: int, local, authz: str | None = None, expires: int = 3600) -> bytes:
    lines = [
        f"REGISTER sip:{SERVER_ID}@{DOMAIN} SIP/2.0",
        f"Via: SIP/2.0/UDP {local[0]}:{local[1]};rport;branch=z9hG4bK{secrets.token_hex(6)}",
        f"From: <sip:{dev}@{DOMAIN}>;tag={call_id[:8]}",
        f"To: <sip:{dev}@{DOMAIN}>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        f"Contact: <sip:{dev}@{local[0]}:{local[1]}>",
        "Max-Forwards: 70",
        "User-Agent: IP Camera",
        f"Expires: {expires}",
    ]
    if authz:
        lines.append(f"Authorization: {authz}")
    lines += ["Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode()


def keepalive_bytes(dev: str, call_id: str, sn: int, local) -> bytes:
    body = (f'<?xml version="1.0" encoding="GB2312"?>\r\n<Notify>\r\n<CmdType>Keepalive</CmdType>\r\n'
            f"<SN>{sn}</SN>\r\n<DeviceID>{dev}</DeviceID>\r\n<Status>OK</Status>\r\n</Notify>\r\n").encode()
    head = "\r\n".join([
        f"MESSAGE sip:{SERVER_ID}@{DOMAIN} SIP/2.0",
        f"Via: SIP/2.0/UDP {local[0]}:{local[1]};rport;branch=z9hG4bK{secrets.token_hex(6)}",
        f"From: <sip:{dev}@{DOMAIN}>;tag={call_id[:8]}",
        f"To: <sip:{SERVER_ID}@{DOMAIN}>",
        f"Call-ID: {call_id}",
        f"CSeq: {sn} MESSAGE",
        "Max-Forwards: 70",
        "Content-Type: Application/MANSCDP+xml",
        f"Content-Length: {len(body)}",
        "", "",
    ]).encode()
    return head + body


async def run_window(n: int, window: int, job) -> None:
    sem = asyncio.Semaphore(window)

    async def one(i):
        async with sem:
            await job(i)

    await asyncio.gather(*(one(i) for i in range(n)))


async def phase_echo(client: Client, addr, n: int, window: int) -> int:
    payload = b"x" * 520

    async def job(i):
        key = f"{i:016d}"
        await client.call(key, key.encode() + payload, addr)

    await run_window(n, window, job)
    return n


async def phase_register(client: Client, addr, devs: list[str], window: int) -> int:
    from sip_server.sip import build_authorization

    local = client.t.get_extra_info("sockname")

    async def job(i):
        dev = devs[i]
        call_id = secrets.token_hex(8) + "@bench"
        r = await client.call(call_id, register_bytes(dev, call_id, 1, local), addr)
        assert r.status == 401, r.status
        authz = build_authorization(r.headers.get("WWW-Authenticate"), method="REGISTER",
                                    uri=f"sip:{SERVER_ID}@{DOMAIN}", username=dev, password=PASSWORD,
                                    cnonce=secrets.token_hex(4))
        r = await client.call(call_id, register_bytes(dev, call_id, 2, local, authz), addr)
        assert r.status == 200, (r.status, r.reason)

    await run_window(len(devs), window, job)
    return len(devs)


async def phase_keepalive(client: Client, addr, devs: list[str], rounds: int, window: int) -> int:
    local = client.t.get_extra_info("sockname")
    total = len(devs) * rounds

    async def job(i):
        dev = devs[i % len(devs)]
        call_id = secrets.token_hex(8) + "@ka"
        r = await client.call(call_id, keepalive_bytes(dev, call_id, i + 1, local), addr)
        assert r.status == 200, (r.status, r.reason)

    await run_window(total, window, job)
    return total


async def measure(pid: int, coro) -> tuple[int, float, float]:
    c0, t0 = cpu_seconds(pid), time.perf_counter()
    count = await coro
    await asyncio.sleep(0.3)  # let the server finish what the last replies triggered (batch writes)
    return count, cpu_seconds(pid) - c0, time.perf_counter() - t0


async def drive(args) -> None:
    import uvloop  # noqa: F401  (the driver runs under uvloop too, see main)

    loop = asyncio.get_running_loop()
    echo_port, gb_port = free_udp_port(), free_udp_port()
    tmp = tempfile.mkdtemp(prefix="gbops-bench-")
    echo = spawn("echo", echo_port)
    gb = spawn("gbops", gb_port, tmp)
    try:
        _, client = await loop.create_datagram_endpoint(Client, local_addr=("127.0.0.1", 0))
        echo_rates, reg_rates, ka_rates, reg_wall, refresh_rates = [], [], [], [], []
        for rep in range(args.repeats):
            n, cpu, wall = await measure(echo.pid, phase_echo(client, ("127.0.0.1", echo_port),
                                                              args.devices * 2, args.window))
            echo_rates.append(n / cpu if cpu else float("inf"))
            devs = [f"3402000000132{rep:02d}{i:05d}" for i in range(args.devices)]
            n, cpu, wall = await measure(gb.pid, phase_register(client, ("127.0.0.1", gb_port), devs, args.window))
            reg_rates.append(n / cpu)
            reg_wall.append(n / wall)
            n, cpu, wall = await measure(gb.pid, phase_register(client, ("127.0.0.1", gb_port), devs, args.window))
            refresh_rates.append(n / cpu)
            n, cpu, wall = await measure(gb.pid, phase_keepalive(client, ("127.0.0.1", gb_port), devs,
                                                                 args.keepalives, args.window))
            ka_rates.append(n / cpu)
            print(f"run {rep + 1}: echo {echo_rates[-1]:,.0f} msg/cpu-s | register {reg_rates[-1]:,.0f}/cpu-s "
                  f"({reg_wall[-1]:,.0f}/s wall) | refresh {refresh_rates[-1]:,.0f}/cpu-s | keepalive {ka_rates[-1]:,.0f}/cpu-s", flush=True)
        echo_m, reg_m, ka_m, ref_m = (statistics.median(x) for x in (echo_rates, reg_rates, ka_rates,
                                                                     refresh_rates))
        ka_load = 10_000 / 60
        print()
        print(f"median over {args.repeats} runs ({args.devices} devices per run, window {args.window}):")
        print(f"  bare uvloop UDP echo       {echo_m:12,.0f} datagrams/CPU-s (reference)")
        print(f"  digest registrations       {reg_m:12,.0f} /CPU-s   ratio {reg_m / echo_m:.4f} of echo"
              f"   (new device: 401 + 200, then 3 queries and a DB insert; goal >= 2,000)")
        print(f"  digest re-registrations    {ref_m:12,.0f} /CPU-s   ratio {ref_m / echo_m:.4f} of echo"
              f"   (refresh of a live registration: 401 + 200)")
        print(f"  keepalives                 {ka_m:12,.0f} /CPU-s   ratio {ka_m / echo_m:.4f} of echo")
        print(f"  10,000 devices at 60 s     {100 * ka_load / ka_m:12.2f} % of one core (goal < 5 %)")
        print(f"  wall-clock registrations   {statistics.median(reg_wall):12,.0f} /s (driver-limited)")
        from results import record

        for name, value in (("register_per_cpu_s", reg_m), ("refresh_per_cpu_s", ref_m),
                            ("keepalive_per_cpu_s", ka_m)):
            record("sip_register", name, value, unit="/CPU-s", reference=echo_m,
                   note="reference: bare uvloop UDP echo, datagrams/CPU-s")
        print(f"  queries answered by driver {client.queries_answered}")
    finally:
        for p in (echo, gb):
            p.kill()
            p.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=3000)
    ap.add_argument("--keepalives", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--window", type=int, default=200)
    ap.add_argument("--serve-echo", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--serve-gbops", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_echo:
        serve_echo(args.serve_echo)
    elif args.serve_gbops:
        serve_gbops(int(args.serve_gbops[0]), args.serve_gbops[1])
    else:
        import uvloop

        uvloop.run(drive(args))


if __name__ == "__main__":
    main()
