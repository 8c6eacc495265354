"""The cascade from a cluster of two SIP nodes (issue 17): one node at a time registers to the upper platform.

The upper is a second ``gbops run``. The lower is a cluster of node ``a`` (every role, SIP on 127.0.0.1) and node
``b`` (``sip,media``, SIP and media on 127.0.0.4) on one database and Redis prefix. The devices register at ``b``.

* ``a`` was there first and holds the upper's lease: the upper sees the lower registered from ``a``'s address,
  ``b`` shows the platform as ``other_node``.
* The upper's live view of a channel reaches the device through ``a`` (its cascade and media) and ``b`` (where the
  device is registered): frames arrive at the upper.
* A device that goes away at ``b``: the catalog change (``OFF``) is heard at ``b`` and forwarded to ``a``, which
  NOTIFYs the upper.
* ``a`` is killed (SIGKILL): once its lease runs out ``b`` registers to the upper, whose live view works again, now
  through ``b`` alone.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import av
import httpx
import pytest

from gbsim import SimConfig, Simulator
from tests.e2e.platform import STRONG_SIP_PASSWORD, PlatformProcess, free_port, read_flv
from tests.e2e.test_cluster_live import Node

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

UPPER_ID = "34010000002000000001"
UPPER_DOMAIN = "3401000000"
LOWER_ID = "34020000002000000001"
B_HOST = "127.0.0.4"
LEASE_TTL = 3.0


def rtp_range() -> str:
    low = free_port()
    return f"{low}-{low + 40}"


def call(p: PlatformProcess, method: str, path: str, json=None) -> httpx.Response:
    return httpx.request(method, p.base + path, json=json, headers={"Authorization": f"Bearer {p.login()}"},
                         timeout=10)


def frames_of(p: PlatformProcess, url: str, seconds: float, path: Path) -> int:
    with open(path, "wb") as f:
        read_flv(p, url, seconds, f)
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(c.streams.video[0]))


def upper_channels(upper: PlatformProcess) -> dict[str, dict]:
    r = upper.get(f"/api/devices/{LOWER_ID}/channels")
    return {c["channel_id"]: c for c in r.json()["items"]} if r.status_code == 200 else {}


def logs(*nodes: PlatformProcess) -> str:
    return "\n".join(f"--- {n.data_dir.name} ---\n{n.log()[-3000:]}" for n in nodes)


async def test_one_sip_node_registers_to_the_upper_and_another_takes_over_when_it_dies(tmp_path, pg_url, redis_url,
                                                                                       redis_prefix):
    secrets = tmp_path / "secrets"
    await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "gbops.cli", "keys", "init", "--dir", str(secrets)],
                            check=True, capture_output=True)
    common = {"GBOPS_SECRETS_DIR": str(secrets), "GBOPS_DATABASE_URL": pg_url, "GBOPS_REDIS_URL": redis_url,
              "GBOPS_REDIS_PREFIX": redis_prefix, "GBOPS_CLUSTER_HEARTBEAT": "0.5", "GBOPS_CLUSTER_NODE_TTL": "2",
              "GBOPS_CLUSTER_LEASE_TTL": str(LEASE_TTL), "GBOPS_SIP_ID": LOWER_ID, "GBOPS_LIVE_IDLE_TIMEOUT": "1",
              "GBOPS_CASCADE_NOTIFY_INTERVAL": "1"}
    upper = PlatformProcess(tmp_path / "upper", GBOPS_SIP_ID=UPPER_ID, GBOPS_SIP_DOMAIN=UPPER_DOMAIN,
                            GBOPS_RTP_PORTS=rtp_range(), GBOPS_MEDIA_HOST="127.0.0.1", GBOPS_LIVE_IDLE_TIMEOUT="1")
    a = Node(tmp_path / "a", GBOPS_NODE_ID="a", GBOPS_RTP_PORTS=rtp_range(), GBOPS_MEDIA_HOST="127.0.0.1", **common)
    b = Node(tmp_path / "b", B_HOST, GBOPS_NODE_ID="b", GBOPS_ROLES="sip,media", GBOPS_SIP_HOST=B_HOST,
             GBOPS_MEDIA_HOST=B_HOST, GBOPS_RTP_PORTS=rtp_range(), **common)
    sims: list[Simulator] = []
    started: list[PlatformProcess] = []
    try:
        started.append(await asyncio.to_thread(upper.start, 60))
        started.append(await asyncio.to_thread(a.start, 60))

        # the upper platform, configured at a while a is the only SIP node: a takes its lease and registers
        r = await asyncio.to_thread(call, a, "POST", "/api/cascade/platforms", {
            "name": "市公安局视频共享平台", "server_id": UPPER_ID, "server_domain": UPPER_DOMAIN,
            "host": "127.0.0.1", "port": upper.sip_port, "transport": "udp", "local_id": LOWER_ID,
            "username": LOWER_ID, "password": STRONG_SIP_PASSWORD, "expires": 3600, "keepalive_s": 5,
            "charset": "GB2312", "gb_version": "2016", "ptz_level": 5, "watermark": "tag", "enabled": True})
        assert r.status_code == 201, r.text
        pid = r.json()["id"]
        await asyncio.to_thread(a.wait_for, lambda: a.get(f"/api/cascade/platforms/{pid}/status").json()["state"]
                                == "registered", 30, "a registered with the upper")
        started.append(await asyncio.to_thread(b.start, 60))

        # the devices register at b
        for first, n in (("34020000001180000001", 1), ("34020000001180000101", 1)):
            sim = Simulator(SimConfig(server=(B_HOST, b.sip_port), devices=n, channels=2, codec="h264",
                                      password=STRONG_SIP_PASSWORD, size="640x360", first_id=first, register_rate=50))
            await sim.start()
            sims.append(sim)
            assert await sim.wait_until(lambda s: s.registered == 1, 20), (sim.progress_line(), logs(*started))
        keep, leaving = sims[0].device_ids[0], sims[1].device_ids[0]
        channels: dict[str, list[str]] = {}
        for d in (keep, leaving):
            items = await asyncio.to_thread(a.wait_for, lambda d=d: (it := a.get(
                f"/api/devices/{d}/channels").json()["items"]) and len(it) == 2 and it, 30, f"{d}'s catalog at a")
            channels[d] = sorted(c["channel_id"] for c in items)
        r = await asyncio.to_thread(call, a, "PUT", f"/api/cascade/platforms/{pid}/share", {
            "org_nodes": [], "channels": [{"device_id": d, "channel_id": c} for d, cs in channels.items() for c in cs]})
        assert r.status_code == 200, r.text

        # one registration at the upper, from a; b knows a holds it
        await asyncio.to_thread(upper.wait_for, lambda: (d := upper.get(f"/api/devices/{LOWER_ID}")).status_code
                                == 200 and d.json()["online"], 30, "the lower online at the upper")
        assert upper.get(f"/api/devices/{LOWER_ID}").json()["remote_addr"].startswith("127.0.0.1:")
        await asyncio.to_thread(upper.post, f"/api/devices/{LOWER_ID}/catalog-sync")
        await asyncio.to_thread(upper.wait_for, lambda: len(upper_channels(upper)) == 4, 30,
                                "the four shared channels at the upper")

        # the upper's viewer: its INVITE reaches a, whose media asks b (the device's SIP node) for the stream
        target = channels[keep][0]
        live = await asyncio.to_thread(upper.post, f"/api/devices/{LOWER_ID}/channels/{target}/live",
                                       {"transport": "udp"})
        assert live.status_code == 201, (live.text, logs(*started))
        n = await asyncio.to_thread(frames_of, upper, live.json()["flv_url"], 3, tmp_path / "via-a.flv")
        assert n >= 15, n
        assert sims[0].calls == 1

        # a device that leaves b: its channels' OFF travels b -> a -> the upper (NOTIFY)
        await sims[1].stop(unregister=True)
        await asyncio.to_thread(upper.wait_for, lambda: all(
            not upper_channels(upper)[c]["online"] for c in channels[leaving]), 30,
            "the leaving device's channels offline at the upper")
        assert all(upper_channels(upper)[c]["online"] for c in channels[keep])
        assert "cascade.forward_failed" not in b.log()

        # a dies: b takes the upper over once the lease runs out and registers from its own address
        a.proc.kill()
        a.proc.wait(10)
        t0 = time.monotonic()
        await asyncio.to_thread(upper.wait_for, lambda: (d := upper.get(f"/api/devices/{LOWER_ID}").json())["online"]
                                and d["remote_addr"].startswith(f"{B_HOST}:"), 30,
                                "the lower registered from b")
        print(f"a killed: b registered to the upper after {time.monotonic() - t0:.1f} s (lease ttl {LEASE_TTL} s)")
        live = await asyncio.to_thread(upper.post, f"/api/devices/{LOWER_ID}/channels/{channels[keep][1]}/live",
                                       {"transport": "udp"})
        assert live.status_code == 201, (live.text, logs(*started))
        n = await asyncio.to_thread(frames_of, upper, live.json()["flv_url"], 3, tmp_path / "via-b.flv")
        assert n >= 15, n
    finally:
        for sim in sims:
            await sim.stop(unregister=False)
        for node in reversed(started):
            if node.proc is not None and node.proc.poll() is None:
                await asyncio.to_thread(node.stop)
