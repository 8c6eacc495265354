"""Benchmark: how many devices one SIP node holds, what they cost it, and the thundering herd after a restart.

    .venv/bin/python bench/fleet.py [--devices 1000,5000] [--keepalive 60] [--hold 600] [--json out.json]
                                    [--database-url postgresql+asyncpg://...] [--per-process 5000]

For each fleet size N, everything real and in separate processes:

1. **reference** - a bare UDP responder (uvloop, like the platform) answers every REGISTER and MESSAGE with a
   canned 200 OK built by copying the transaction headers: the floor of receiving and answering this traffic
   in Python. The same N simulated devices register with it and keep alive for ``--ref-hold`` seconds.
2. **platform** - ``gbops run`` (all roles, a fresh SQLite data directory, or ``--database-url``), its SIP
   password in ``GBOPS_SIP_PASSWORD`` and ``GBOPS_SIP_KEEPALIVE_INTERVAL`` = the devices' keepalive, so the
   platform's offline detection (``sip_keepalive_misses`` missed intervals) runs at the same pace as the
   devices and a late keepalive would show as an offline transition. Its CPU is measured idle for ``--idle``
   seconds, then the devices register (real digest REGISTER, then the platform's DeviceInfo, ConfigDownload
   and Catalog queries, answered by the simulator), settle one keepalive interval, and keep alive for
   ``--hold`` seconds (the issue asks for 10 minutes at 60 s). Measured: the platform's CPU-seconds (utime +
   stime from /proc) in windows of one keepalive interval, the median window scaled to CPU-seconds per minute
   per 1,000 devices; RSS; and the false offline transitions: ``presence_events`` rows that put a device
   offline since the devices registered, read from the platform's own database. Must be 0.
3. **thundering herd** - SIGTERM the platform, start it again on the same database, then every device sends
   a fresh REGISTER in the same instant (``bench/fleet_sim.py reregister``). Measured: registrations per
   second until every device has its 200, refusals (any REGISTER that ended in something but 200 after its
   one challenge: 403 wrong password or lockout, 503, timeouts), extra challenges (401 loops), the time until
   the platform's own table shows all N online, and again the offline transitions since the restart.

Per-request cost against the reference: platform CPU per keepalive answered (median window) / reference CPU
per keepalive answered, same N, same run. The simulator runs ``--per-process`` devices per process
(``bench/fleet_sim.py``, on gbsim's core) and its own CPU share is printed so a saturated generator shows.

Keepalive intervals shorter than 60 s compress the run (``--keepalive 10`` sends six times the traffic of
the real fleet per device); the printout says which interval was used, and the per-1,000 figure is also
given scaled to 60 s (traffic is linear in the interval; the idle cost of the platform is subtracted first).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import math
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.platform import free_port  # noqa: E402 - the benches share the e2e tests' port helper

PASSWORD = "Fleet-bench#2026"
CLK_TCK = os.sysconf("SC_CLK_TCK")
FIRST_ID = "34020000001320000001"


# ---------------------------------------------------------------------------------------------- /proc
def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


# ---------------------------------------------------------------------------------------------- reference
_KEEP = (b"via:", b"v:", b"from:", b"f:", b"to:", b"t:", b"call-id:", b"i:", b"cseq:")


def canned_ok(data: bytes) -> bytes | None:
    """200 OK for a request: its transaction headers copied, a To tag added, nothing parsed beyond that."""
    if data.startswith(b"SIP/2.0"):
        return None
    head = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    out = [b"SIP/2.0 200 OK"]
    for line in head[1:]:
        low = line[:9].lower()
        if low.startswith(_KEEP):
            if low.startswith((b"to:", b"t:")) and b"tag=" not in line:
                line += b";tag=ref"
            out.append(line)
    out += [b"Expires: 3600", b"Content-Length: 0", b"", b""]
    return b"\r\n".join(out)


def serve_reference(port: int) -> None:
    import uvloop

    class Responder(asyncio.DatagramProtocol):
        def connection_made(self, transport):
            self.t = transport

        def datagram_received(self, data, addr):
            resp = canned_ok(data)
            if resp is not None:
                self.t.sendto(resp, addr)

    async def main():
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(Responder, local_addr=("127.0.0.1", port))
        print("ready", flush=True)
        await asyncio.Event().wait()

    uvloop.run(main())


# ---------------------------------------------------------------------------------------------- platform
class Platform:
    """``gbops run`` as a subprocess (the environment tests/e2e/platform.py uses), restartable on one store."""

    def __init__(self, data_dir: Path, keepalive: float, database_url: str | None) -> None:
        self.data_dir = data_dir
        self.sip_port, self.http_port = free_port(), free_port()
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("GBOPS_")},
            "GBOPS_DATA_DIR": str(data_dir),
            "GBOPS_SIP_HOST": "127.0.0.1",
            "GBOPS_SIP_PORT": str(self.sip_port),
            "GBOPS_HTTP_HOST": "127.0.0.1",
            "GBOPS_HTTP_PORT": str(self.http_port),
            "GBOPS_HTTPS_PORT": str(free_port()),
            "GBOPS_SIP_PASSWORD": PASSWORD,
            "GBOPS_CONFIG": str(data_dir / "none.toml"),
            "GBOPS_NTP_PORT": "0",
            "GBOPS_SIP_TLS_PORT": "0",
            "GBOPS_SIP_KEEPALIVE_INTERVAL": f"{keepalive:g}",
            "GBOPS_LOG_LEVEL": "WARNING",
        }
        self.database_url = database_url or f"sqlite+aiosqlite:///{(data_dir / 'gbops.db').resolve()}"
        if database_url:
            self.env["GBOPS_DATABASE_URL"] = database_url
        self.proc: subprocess.Popen | None = None
        self.log_path = data_dir / "platform.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 60.0) -> float:
        """Start and wait for /api/health; returns the seconds it took."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "gbops.cli", "run"], env=self.env, cwd=ROOT,
                                         stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{self.http_port}/api/health"
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gbops run exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                with urllib.request.urlopen(url, timeout=1) as r:
                    if r.status == 200:
                        return time.monotonic() - t0
            time.sleep(0.2)
        raise RuntimeError(f"gbops run did not come up:\n{self.log()[-3000:]}")

    def stop(self, timeout: float = 30.0) -> float:
        """SIGTERM and wait; returns the seconds it took (SIGKILL after *timeout*)."""
        t0 = time.monotonic()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return time.monotonic() - t0

    def log(self) -> str:
        return self.log_path.read_text("utf-8", "replace") if self.log_path.exists() else ""


class Store:
    """Reads the platform's own tables: presence history and the devices' online flags."""

    def __init__(self, url: str) -> None:
        from gbcore.db import make_engine

        self.engine = make_engine(url)

    async def offline_since(self, since: datetime, device_ids: set[str]) -> dict[str, int]:
        """Offline transitions of our devices (device subject) since *since*, by reason."""
        from sqlalchemy import func, select

        from device_registry.models import PresenceEvent as P

        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(P.device_id, P.reason, func.count())
                .where(P.subject == "device", P.online.is_(False), P.at >= since)
                .group_by(P.device_id, P.reason))
            out: dict[str, int] = {}
            for dev, reason, n in rows:
                if dev in device_ids:
                    out[reason] = out.get(reason, 0) + n
            return out

    async def online(self, device_ids: set[str]) -> int:
        from sqlalchemy import select

        from device_registry.models import Device

        async with self.engine.connect() as conn:
            rows = await conn.execute(select(Device.device_id).where(Device.online.is_(True)))
            return sum(1 for (dev,) in rows if dev in device_ids)

    async def close(self) -> None:
        await self.engine.dispose()


# ---------------------------------------------------------------------------------------------- load
class Worker:
    """One ``bench/fleet_sim.py`` process, driven over its stdin/stdout."""

    def __init__(self, proc: asyncio.subprocess.Process, first: int, count: int) -> None:
        self.proc, self.first, self.count = proc, first, count
        self.lock = asyncio.Lock()

    @classmethod
    async def spawn(cls, server: tuple[str, int], first: int, count: int, *, keepalive: float, rate: float,
                    channels: int, log: Path) -> Worker:
        """Start one simulator process; its own log (the simulator's warnings) goes to *log*."""
        first_id = FIRST_ID[:13] + f"{first:07d}"
        with open(log, "ab") as err:  # noqa: ASYNC230 - a local file, opened once per process
            proc = await asyncio.create_subprocess_exec(
                sys.executable, str(ROOT / "bench" / "fleet_sim.py"), "--server", f"{server[0]}:{server[1]}",
                "--password", PASSWORD, "--devices", str(count), "--first-id", first_id,
                "--keepalive", f"{keepalive:g}", "--rate", f"{rate:g}", "--channels", str(channels),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=err, cwd=ROOT)
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        if b"ready" not in line:
            raise RuntimeError(f"fleet_sim did not start: {line!r}")
        return cls(proc, first, count)

    async def cmd(self, what: str) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        async with self.lock:
            self.proc.stdin.write(what.encode() + b"\n")
            await self.proc.stdin.drain()
            line = await asyncio.wait_for(self.proc.stdout.readline(), 60)
        if not line:
            raise RuntimeError("fleet_sim exited")
        return json.loads(line)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            assert self.proc.stdin is not None
            self.proc.stdin.write(b"quit\n")
            await self.proc.stdin.drain()
        try:
            await asyncio.wait_for(self.proc.wait(), 15)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


class Fleet:
    def __init__(self, workers: list[Worker]) -> None:
        self.workers = workers

    @classmethod
    async def start(cls, server: tuple[str, int], n: int, args: argparse.Namespace, log_dir: Path,
                    base: int = 1) -> Fleet:
        """*n* devices with ids ``base ..`` (the last 7 digits), ``--per-process`` per simulator process."""
        procs = max(1, math.ceil(n / args.per_process))
        per = math.ceil(n / procs)
        workers = []
        for i in range(procs):
            count = min(per, n - i * per)
            workers.append(await Worker.spawn(server, base + i * per, count, keepalive=args.keepalive,
                                              rate=args.setup_rate / procs, channels=args.channels,
                                              log=log_dir / f"sim-{i}.log"))
        return cls(workers)

    @property
    def device_ids(self) -> set[str]:
        return {FIRST_ID[:13] + f"{w.first + k:07d}" for w in self.workers for k in range(w.count)}

    async def stats(self) -> dict:
        parts = await asyncio.gather(*(w.cmd("stats") for w in self.workers))
        total: dict = {}
        for p in parts:
            for k, v in p.items():
                if k != "pid":
                    total[k] = total.get(k, 0) + v
        return total

    async def reregister(self) -> int:
        parts = await asyncio.gather(*(w.cmd("reregister") for w in self.workers))
        return sum(p["reregister"] for p in parts)

    async def wait(self, predicate, timeout: float, interval: float = 0.2) -> tuple[bool, dict, float]:
        t0 = time.monotonic()
        while True:
            s = await self.stats()
            if predicate(s):
                return True, s, time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                return False, s, time.monotonic() - t0
            await asyncio.sleep(interval)

    async def close(self) -> None:
        await asyncio.gather(*(w.close() for w in self.workers))


# ---------------------------------------------------------------------------------------------- phases
@dataclass
class Hold:
    windows: list[dict] = field(default_factory=list)  # cpu, keepalives, seconds, gen_cpu

    @property
    def cpu_per_window(self) -> float:
        return statistics.median(w["cpu"] / w["seconds"] for w in self.windows)  # CPU-s per wall second

    @property
    def cpu_mean(self) -> float:
        return sum(w["cpu"] for w in self.windows) / sum(w["seconds"] for w in self.windows)

    @property
    def cpu_per_keepalive(self) -> float:
        return statistics.median(w["cpu"] / max(w["keepalives"], 1) for w in self.windows)

    @property
    def generator_share(self) -> float:
        return statistics.median(w["gen_cpu"] / w["seconds"] for w in self.windows)


async def hold(fleet: Fleet, pid: int, seconds: float, window: float, on_window=None) -> Hold:
    """Keep the fleet alive for *seconds*, measuring the server's CPU in windows of *window* seconds."""
    result = Hold()
    end = time.monotonic() + seconds
    s0, c0, t0 = await fleet.stats(), cpu_seconds(pid), time.monotonic()
    while time.monotonic() < end - 0.5:
        await asyncio.sleep(min(window, end - time.monotonic()))
        s1, c1, t1 = await fleet.stats(), cpu_seconds(pid), time.monotonic()
        result.windows.append({"cpu": c1 - c0, "keepalives": s1["keepalives_ok"] - s0["keepalives_ok"],
                               "seconds": t1 - t0, "gen_cpu": s1["cpu"] - s0["cpu"],
                               "online": s1["online"], "registered": s1["registered"],
                               "keepalives_failed": s1["keepalives_failed"] - s0["keepalives_failed"]})
        if on_window is not None:
            await on_window(result.windows[-1])
        s0, c0, t0 = s1, c1, t1
    return result


def spawn_reference(port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, __file__, "--serve-reference", str(port)], stdout=subprocess.PIPE,
                            cwd=ROOT)
    assert proc.stdout is not None
    if b"ready" not in proc.stdout.readline():
        raise RuntimeError("reference responder did not start")
    return proc


def setup_timeout(n: int, args: argparse.Namespace) -> float:
    return n / args.setup_rate * 3 + 60


async def run_reference(n: int, args: argparse.Namespace, work: Path) -> dict:
    os.makedirs(work, exist_ok=True)
    port = free_port()
    ref = spawn_reference(port)
    fleet = await Fleet.start(("127.0.0.1", port), n, args, work)
    try:
        ok, s, took = await fleet.wait(lambda s: s["registered"] >= n, setup_timeout(n, args))
        if not ok:
            raise RuntimeError(f"reference: only {s['registered']}/{n} registered")
        await asyncio.sleep(args.keepalive)  # first keepalives are spread over one interval
        h = await hold(fleet, ref.pid, args.ref_hold, max(args.keepalive, 10.0))
        return {"cpu_per_keepalive": h.cpu_per_keepalive, "cpu_per_second": h.cpu_per_window,
                "rss_mib": rss_mib(ref.pid), "windows": h.windows}
    finally:
        await fleet.close()
        ref.kill()
        ref.wait()


async def run_platform(n: int, args: argparse.Namespace, work: Path) -> dict:
    data = work / f"platform-{n}"
    platform = Platform(data, args.keepalive, args.database_url)
    out: dict = {"devices": n}
    platform.start()
    store = Store(platform.database_url)
    fleet: Fleet | None = None
    try:
        await asyncio.sleep(3)  # migrations done; let start-up work finish before the idle window
        c0 = cpu_seconds(platform.pid)
        await asyncio.sleep(args.idle)
        out["idle_cpu_per_second"] = (cpu_seconds(platform.pid) - c0) / args.idle
        out["idle_rss_mib"] = rss_mib(platform.pid)

        # ---- registration of the whole fleet (spread at --setup-rate)
        since = datetime.now(UTC)
        c0, t0 = cpu_seconds(platform.pid), time.monotonic()
        # A shared database (--database-url) keeps the devices of earlier runs, still "online" there until
        # their keepalive window runs out: ids of their own keep those offline rows out of this run's count.
        base = 1 if args.database_url is None else random.randrange(1, 9_999_999 - n)
        fleet = await Fleet.start(("127.0.0.1", platform.sip_port), n, args, data, base)
        ids = fleet.device_ids
        ok, s, took = await fleet.wait(lambda s: s["registered"] >= n, setup_timeout(n, args))
        out["setup"] = {"registered": s["registered"], "seconds": took, "failures": s["register_failures"],
                        "cpu": cpu_seconds(platform.pid) - c0, "queries_answered": s["queries_answered"]}
        if not ok:
            raise RuntimeError(f"platform: only {s['registered']}/{n} registered after {took:.0f} s\n"
                               f"{platform.log()[-3000:]}")
        await asyncio.sleep(args.keepalive + 2)  # first keepalives spread over one interval; queries answered

        # ---- steady state
        async def progress(w: dict) -> None:
            print(f"    hold: {w['online']}/{n} online, platform {100 * w['cpu'] / w['seconds']:.1f}% of a core, "
                  f"{w['keepalives']} keepalives answered, {w['keepalives_failed']} failed", flush=True)

        h = await hold(fleet, platform.pid, args.hold, max(args.keepalive, 10.0), progress)
        s = await fleet.stats()
        out["hold"] = {
            "seconds": args.hold, "keepalive": args.keepalive,
            "cpu_per_second": h.cpu_per_window, "cpu_mean_per_second": h.cpu_mean,
            "cpu_per_keepalive": h.cpu_per_keepalive,
            "rss_mib": rss_mib(platform.pid), "generator_cpu_share": h.generator_share,
            "online_min": min(w["online"] for w in h.windows), "registered": s["registered"],
            "keepalives_failed": sum(w["keepalives_failed"] for w in h.windows),
            "registrations_lost": s["registrations_lost"], "windows": h.windows,
        }
        out["false_offline"] = await store.offline_since(since, ids)

        # ---- thundering herd: restart on the same store, then every device registers at once
        if args.herd:
            s0 = await fleet.stats()
            restart_at = datetime.now(UTC)
            down = platform.stop()
            up = platform.start()
            c0, t0 = cpu_seconds(platform.pid), time.monotonic()
            sent = await fleet.reregister()
            want = s0["registrations"] + sent
            ok, s1, took = await fleet.wait(lambda s: s["registrations"] >= want, args.herd_timeout, 0.1)
            herd_cpu = cpu_seconds(platform.pid) - c0
            done = s1["registrations"] - s0["registrations"]
            # the platform's own view: every device online in its table again
            all_online_at = None
            while time.monotonic() - t0 < args.herd_timeout:
                if await store.online(ids) >= n:
                    all_online_at = time.monotonic() - t0
                    break
                await asyncio.sleep(0.25)
            await asyncio.sleep(args.keepalive + 2)  # keepalives flow again; nothing may go offline meanwhile
            s2 = await fleet.stats()
            out["herd"] = {
                "stop_seconds": down, "start_seconds": up, "reregistered": sent, "registered_200": done,
                "seconds": took, "per_second": done / took if took > 0 else 0.0, "complete": ok,
                "refused": s2["register_failures"] - s0["register_failures"],
                "extra_challenges": (s1["challenges"] - s0["challenges"]) - done,
                "registrations_lost": s2["registrations_lost"] - s0["registrations_lost"],
                "all_online_seconds": all_online_at, "cpu": herd_cpu,
                "offline_since_restart": await store.offline_since(restart_at, ids),
            }
        out["platform_log"] = log_events(platform.log())
        return out
    finally:
        if fleet is not None:
            await fleet.close()
        platform.stop()
        await store.close()


# ---------------------------------------------------------------------------------------------- report
def log_events(text: str) -> dict[str, int]:
    """Warnings and errors in the platform's log, counted by event name (``<time> <level> <logger> <event>``
    lines), plus tracebacks: what the platform complained about under this load."""
    counts: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split(None, 4)
        if len(parts) >= 4 and parts[1].lower() in ("warning", "error", "critical"):
            key = f"{parts[1].lower()} {parts[3]}"
        elif line.startswith("Traceback"):
            key = "traceback"
        else:
            continue
        counts[key] = counts.get(key, 0) + 1
    return counts


def report(r: dict, args: argparse.Namespace) -> None:
    n, k = r["devices"], args.keepalive
    ref, h = r["reference"], r["hold"]
    per_k = n / 1000
    cpu_min = h["cpu_per_second"] * 60
    net_min = max(h["cpu_per_second"] - r["idle_cpu_per_second"], 0.0) * 60
    print(f"\n== {n:,} devices, keepalive every {k:g} s" + ("" if k == 60 else " (compressed: the real fleet "
          "sends one every 60 s)") + f", hold {h['seconds']:g} s ==")
    print(f"  registration of the fleet  {r['setup']['registered']:,} in {r['setup']['seconds']:.1f} s "
          f"(spread at --setup-rate {args.setup_rate:g}/s), {r['setup']['failures']} failures, "
          f"platform {r['setup']['cpu']:.1f} CPU-s")
    print(f"  platform idle              {100 * r['idle_cpu_per_second']:.2f} % of a core, "
          f"RSS {r['idle_rss_mib']:.0f} MiB")
    print(f"  platform holding them      {100 * h['cpu_per_second']:.2f} % of a core (median window; mean "
          f"{100 * h['cpu_mean_per_second']:.2f} %), "
          f"RSS {h['rss_mib']:.0f} MiB ({(h['rss_mib'] - r['idle_rss_mib']) / per_k:.1f} MiB per 1,000)")
    print(f"  CPU per 1,000 devices      {cpu_min / per_k:.3f} CPU-s/min gross, {net_min / per_k:.3f} net of idle"
          + ("" if k == 60 else f"; at 60 s keepalive about {net_min / per_k * k / 60:.3f} net"))
    print(f"  per keepalive              platform {1e6 * h['cpu_per_keepalive']:.0f} us, reference "
          f"{1e6 * ref['cpu_per_keepalive']:.0f} us CPU: ratio {h['cpu_per_keepalive'] / ref['cpu_per_keepalive']:.1f}"
          f" (reference = bare uvloop UDP responder, canned 200 OK, same {n:,} devices)")
    fo = r["false_offline"]
    print(f"  false offline transitions  {sum(fo.values())} {fo or ''} (devices online at least: "
          f"{h['online_min']:,}/{n:,}; keepalives failed {h['keepalives_failed']}, registrations lost "
          f"{h['registrations_lost']})")
    print(f"  load generator             {100 * h['generator_cpu_share']:.1f} % of a core "
          f"({math.ceil(n / args.per_process)} processes)")
    hd = r.get("herd")
    if hd:
        print(f"  restart                    SIGTERM took {hd['stop_seconds']:.1f} s, start to /api/health "
              f"{hd['start_seconds']:.1f} s")
        print(f"  thundering herd            {hd['registered_200']:,}/{hd['reregistered']:,} re-registered in "
              f"{hd['seconds']:.2f} s = {hd['per_second']:,.0f} registrations/s (platform {hd['cpu']:.1f} CPU-s)"
              + ("" if hd["complete"] else "  INCOMPLETE"))
        print(f"  refused                    {hd['refused']} (403/503/timeouts), extra 401 challenges "
              f"{hd['extra_challenges']}, registrations lost {hd['registrations_lost']}")
        t = hd["all_online_seconds"]
        print("  all online again           " + (f"{t:.2f} s after the herd began (platform's devices table)"
                                                  if t is not None else "NOT within --herd-timeout"))
        off = hd["offline_since_restart"]
        print(f"  offline across the restart {sum(off.values())} {off or ''}")
    if r.get("platform_log"):
        top = sorted(r["platform_log"].items(), key=lambda kv: -kv[1])[:6]
        print("  platform log warnings      " + ", ".join(f"{k} x{v}" for k, v in top))


async def drive(args: argparse.Namespace) -> list[dict]:
    sizes = [int(x) for x in args.devices.split(",") if x.strip()]
    work = Path(tempfile.mkdtemp(prefix="gbops-fleet-"))
    results = []
    try:
        for n in sizes:
            print(f"-- {n:,} devices: reference responder ({args.ref_hold:g} s)", flush=True)
            ref = await run_reference(n, args, work / f"reference-{n}")
            print(f"-- {n:,} devices: platform (idle {args.idle:g} s, hold {args.hold:g} s"
                  + (", then restart and herd)" if args.herd else ")"), flush=True)
            r = await run_platform(n, args, work)
            r["reference"] = ref
            r["keepalive"] = args.keepalive
            results.append(r)
            report(r, args)
            if args.json:
                with open(args.json, "w") as fh:  # noqa: ASYNC230 - between phases, nothing else runs
                    json.dump(results, fh, indent=1, default=str)
    finally:
        if args.keep:
            print(f"data kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", default="1000,5000", help="fleet sizes, comma-separated (up to 50000)")
    ap.add_argument("--keepalive", type=float, default=60.0, help="keepalive interval of the devices (s)")
    ap.add_argument("--hold", type=float, default=600.0, help="steady state measured for this long (s)")
    ap.add_argument("--ref-hold", type=float, default=None,
                    help="reference responder held this long (default: min(hold, 3 keepalive intervals))")
    ap.add_argument("--idle", type=float, default=15.0, help="platform CPU measured idle this long first (s)")
    ap.add_argument("--setup-rate", type=float, default=500.0, help="first registrations per second")
    ap.add_argument("--per-process", type=int, default=5000, help="simulated devices per simulator process")
    ap.add_argument("--channels", type=int, default=1, help="channels per device (1: an IPC)")
    ap.add_argument("--herd", action=argparse.BooleanOptionalAction, default=True,
                    help="restart the platform and re-register every device at once")
    ap.add_argument("--herd-timeout", type=float, default=180.0)
    ap.add_argument("--database-url", default=None, help="the platform's database (default: fresh SQLite)")
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--keep", action="store_true", help="keep the platforms' data directories")
    ap.add_argument("--serve-reference", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_reference:
        serve_reference(args.serve_reference)
        return
    if args.ref_hold is None:
        args.ref_hold = min(args.hold, 3 * max(args.keepalive, 10.0))
    import uvloop

    uvloop.run(drive(args))


if __name__ == "__main__":
    main()
