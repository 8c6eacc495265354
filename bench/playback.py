"""Benchmark: playback start, POST to the first picture, from the device and from platform storage.

A real ``gbops run`` (subprocess) and the simulator (its recording store answers ``s=Playback``). The
"click" is the POST of a playback session (``POST /api/devices/{d}/channels/{c}/playback``); the first
picture is the first video tag of its HTTP-FLV output. Reference in the same run: the same click for a live
view of the same channel (what the platform already does, goal 2 s), so the ratio shows what playback adds.
Platform playback reads segments the platform recorded of the simulator's live stream a moment before.

    python bench/playback.py [--repeats 5] [--size 1280x720]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


async def first_video_tag(base: str, url: str, t_click: float) -> float:
    """Seconds from ``t_click`` to the first FLV video tag carrying a picture."""
    import httpx

    buf = b""
    pos = 13  # FLV header (9) + PreviousTagSize0 (4)
    async with httpx.AsyncClient(timeout=15) as client, client.stream("GET", base + url) as r:
        async for chunk in r.aiter_bytes():
            buf += chunk
            while len(buf) >= pos + 11:
                size = int.from_bytes(buf[pos + 1:pos + 4], "big")
                if len(buf) < pos + 11 + size + 4:
                    break
                tag_type, data = buf[pos], buf[pos + 11:pos + 11 + size]
                pos += 11 + size + 4
                if tag_type == 9 and len(data) > 5 and data[1] == 1:
                    return time.monotonic() - t_click
    raise RuntimeError("the FLV ended before a picture")


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


async def click(platform, path: str, body: dict | None) -> float:
    t0 = time.monotonic()
    r = await asyncio.to_thread(platform.post, path, body)
    if r.status_code != 201:
        raise RuntimeError(f"{path}: {r.status_code} {r.text}")
    first = await first_video_tag(platform.base, r.json()["flv_url"], t0)
    await asyncio.to_thread(lambda: __import__("httpx").delete(
        platform.base + f"/api/sessions/{r.json()['session_id']}",
        headers={"Authorization": f"Bearer {platform.login()}"}, timeout=10))
    return first


async def drive(args: argparse.Namespace) -> None:
    import httpx

    from gbsim import SimConfig, Simulator
    from tests.e2e.platform import STRONG_SIP_PASSWORD, PlatformProcess, free_port

    low = free_port()
    data = Path(tempfile.mkdtemp(prefix="gbops-bench-playback-"))
    platform = PlatformProcess(data, GBOPS_RTP_PORTS=f"{low}-{low + 80}", GBOPS_MEDIA_HOST="127.0.0.1",
                               GBOPS_LIVE_IDLE_TIMEOUT="1", GBOPS_RECORD_SEGMENT_SECONDS="4").start()
    sim = Simulator(SimConfig(server=("127.0.0.1", platform.sip_port), devices=1, channels=1,
                              password=STRONG_SIP_PASSWORD, size=args.size, first_id="34020000001320000001",
                              record_hours=3))
    await sim.start()
    try:
        assert await sim.wait_until(lambda s: s.registered == 1, 20)
        device, channel = sim.device_ids[0], sim.cfg.channel_ids(0)[0]
        base = f"/api/devices/{device}/channels/{channel}"
        await asyncio.to_thread(platform.wait_for, lambda: platform.get(base + "/records", start=iso(time.time() - 60),
                                                                        end=iso(time.time()),
                                                                        source="device").status_code == 200,
                                20, "the channel")
        # record a little of the live stream for the platform source
        await asyncio.to_thread(lambda: httpx.put(platform.base + base + "/recording", json={"mode": "continuous"},
                                                  headers={"Authorization": f"Bearer {platform.login()}"},
                                                  timeout=10).raise_for_status())
        rec_start = time.time()
        await asyncio.sleep(14)
        store = sim.fleet.devices[0].record_store(channel)
        live, device_pb, platform_pb = [], [], []
        for i in range(args.repeats):
            live.append(await click(platform, base + "/live", None))
            await asyncio.sleep(1.5)  # the live upstream ends (idle 1 s): every click starts cold
            t = store.next_recorded(time.time() - 3600 + 60 * i, time.time())
            device_pb.append(await click(platform, base + "/playback",
                                         {"start": iso(t), "end": iso(t + 60), "source": "device"}))
            platform_pb.append(await click(platform, base + "/playback",
                                           {"start": iso(rec_start + 2), "end": iso(rec_start + 10),
                                            "source": "platform"}))
            await asyncio.sleep(1.5)
        ref = statistics.median(live)
        for name, values in (("live (reference)", live), ("device playback", device_pb),
                             ("platform playback", platform_pb)):
            med = statistics.median(values)
            print(f"{name:18s} POST -> first picture: median {med * 1000:.0f} ms "
                  f"(runs: {', '.join(f'{v * 1000:.0f}' for v in values)}); ratio {med / ref:.2f}x live")
        print(f"goal: <= 2000 ms on loopback ({args.size}, simulator on the same machine)")
    finally:
        await sim.stop()
        platform.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--size", default="1280x720")
    args = ap.parse_args()
    os.chdir(ROOT)
    import uvloop

    uvloop.run(drive(args))


if __name__ == "__main__":
    main()
