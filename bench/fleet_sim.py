"""One load-generator process of ``bench/fleet.py``: many simulated devices on the simulator's own core.

``gbsim`` already runs thousands of devices per process cheaply (one heap for every timer, one UDP socket
per 250 devices, real digest REGISTER, MANSCDP Keepalive, answers to the platform's DeviceInfo /
ConfigDownload / Catalog queries), so this file does not speak SIP itself: it wraps
:class:`gbsim.runner.Simulator` with a line protocol the benchmark drives over pipes.

    python bench/fleet_sim.py --server 127.0.0.1:5060 --password PW --devices 5000 --first-id 3402...

stdin, one command a line:
    ``stats``        print one JSON line (the counters below)
    ``reregister``   every registered device sends a fresh REGISTER now, all in the same tick (the
                     thundering herd: what a fleet does when its platform comes back and it does not trust
                     its old registration); answered with a JSON line ``{"reregister": n}``
    ``quit``         go silent (no unregister: the benchmark does not want offline rows) and exit
stdout: ``ready`` once the sockets are bound, then only JSON lines.

Why a separate process per few thousand devices: one Python core generates roughly a platform's worth of
traffic, and a benchmark whose load generator is saturated measures the generator.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gbsim.device import REGISTERED, SimConfig  # noqa: E402
from gbsim.runner import Simulator  # noqa: E402

#: counters summed over the devices of this process (gbsim DeviceStats names)
COUNTERS = ("registers_sent", "challenges", "registrations", "register_failures", "keepalives_sent",
            "keepalives_ok", "keepalives_failed", "registrations_lost", "queries_received", "queries_answered")


def snapshot(sim: Simulator) -> dict:
    fleet = sim.fleet
    out = {k: 0 for k in COUNTERS}
    registered = online = failed = 0
    for d in fleet.devices:
        s = d.stats
        for k in COUNTERS:
            out[k] += getattr(s, k)
        if d.registered:
            registered += 1
            if d.ka_ok:
                online += 1
        elif d.failed:
            failed += 1
    out.update(devices=len(fleet.devices), registered=registered, online=online, failed=failed,
               dropped=fleet.counters.dropped, cpu=time.process_time(), pid=os.getpid())
    return out


def reregister(sim: Simulator) -> int:
    """Every device in state REGISTERED starts a new REGISTER (401 -> digest -> 200) in this one tick.

    gbsim has no public "register again now" (its devices do it on their own after missed keepalives, with
    a back-off that spreads them out, which is exactly what a herd test must not wait for), so this reaches
    into the device the way its own timer does: ``_begin_register`` then the fleet's ``_after_device``."""
    loop = asyncio.get_running_loop()
    now = loop.time()
    fleet = sim.fleet
    n = 0
    for d in fleet.devices:
        if d.state == REGISTERED and d.local_addr is not None:
            d._begin_register(now, refresh=False)
            fleet._after_device(d, now)
            n += 1
    sim._process()
    return n


async def serve(args: argparse.Namespace) -> None:
    host, _, port = args.server.rpartition(":")
    cfg = SimConfig(
        server=(host, int(port)), devices=args.devices, channels=args.channels, password=args.password,
        keepalive=args.keepalive, expires=args.expires, first_id=args.first_id, local_host=args.local_host,
        register_rate=args.rate, media=False, devices_per_socket=args.per_socket,
        first_keepalive_max=args.keepalive,  # spread the first keepalives over a whole interval
        record_hours=0,
    )
    sim = Simulator(cfg)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await sim.start()
    print("ready", flush=True)
    try:
        while True:
            line = await reader.readline()
            cmd = line.decode().strip()
            if not line or cmd == "quit":
                break
            if cmd == "stats":
                print(json.dumps(snapshot(sim)), flush=True)
            elif cmd == "reregister":
                print(json.dumps({"reregister": reregister(sim)}), flush=True)
            else:
                print(json.dumps({"error": f"unknown command {cmd!r}"}), flush=True)
    finally:
        await sim.stop(unregister=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", required=True, help="platform SIP address HOST:PORT")
    ap.add_argument("--password", default=os.environ.get("GBOPS_SIM_PASSWORD", ""))
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--keepalive", type=float, default=60.0)
    ap.add_argument("--expires", type=int, default=3600)
    ap.add_argument("--first-id", default="34020000001320000001")
    ap.add_argument("--local-host", default="127.0.0.1")
    ap.add_argument("--rate", type=float, default=200.0, help="first registrations per second")
    ap.add_argument("--per-socket", type=int, default=250, help="devices sharing one UDP socket")
    args = ap.parse_args()
    import uvloop

    uvloop.run(serve(args))


if __name__ == "__main__":
    main()
