"""Two SIP nodes in one cluster (issue 17): a device registered at the second one is reached through the portal.

Node ``core`` (``sip,portal,worker``, SIP on 127.0.0.1), node ``sip-b`` (``sip`` only, SIP on 127.0.0.4, no HTTP
server of its own) and the media node ``media-a`` (127.0.0.2) share one PostgreSQL database, one Redis prefix
and one ``GBOPS_SECRETS_DIR``.  Simulated devices register at ``sip-b``'s address only; the portal on ``core``
must see them online, sync their catalog, query their status (``sip.call`` across the bus to ``sip-b``) and
open a live view on the media node, while ``core``'s own SIP service never takes them: their home in Redis is
``sip-b`` and the presence history shows no offline transition.  A restart of ``sip-b`` on the same SIP address
keeps its devices, still with no offline transition, and ``core`` never adopts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gbsim import SimConfig, Simulator
from tests.e2e.platform import STRONG_SIP_PASSWORD, free_port
from tests.e2e.test_cluster_live import Node, directory_nodes, frames, logs, read_flv
from tests.e2e.test_cluster_restart import call, channels_online, device, offline_rows, until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

KEEPALIVE = 2.0  # the devices' interval and the platform's
MISSES = 3  # the platform's window: 6 s without a keepalive
DEVICES = 3
CHANNELS = 2
SIP_B_HOST = "127.0.0.4"
RECONCILE = 0.5  # seconds between a SIP node's checks of its devices' homes (orphans: every 4th check)


class SipOnlyNode(Node):
    """A ``sip``-only node: it serves no HTTP (no portal, no media outputs), so it is up once it is listed in the
    node directory (its heartbeat starts after its SIP service listens)."""

    def __init__(self, data_dir: Path, redis_url: str, redis_prefix: str, node_id: str, **env: str) -> None:
        super().__init__(data_dir, GBOPS_NODE_ID=node_id, **env)
        self.redis_url, self.redis_prefix, self.node_id = redis_url, redis_prefix, node_id

    def start(self, timeout: float = 60.0) -> SipOnlyNode:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        begun = datetime.now(UTC)
        self.proc = subprocess.Popen([sys.executable, "-m", "gbops.cli", "run"], env=self.env,
                                     stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gbops run exited with {self.proc.returncode}:\n{self.log()}")
            listed = asyncio.run(directory_nodes(self.redis_url, self.redis_prefix))
            if any(n.node_id == self.node_id and n.started >= begun for n in listed):
                return self
            time.sleep(0.2)
        raise RuntimeError(f"gbops run ({self.node_id}) did not join the directory:\n{self.log()}")


@contextlib.asynccontextmanager
async def cluster(tmp_path: Path, pg_url: str, redis_url: str, redis_prefix: str, *, core_roles: str,
                  media_node: bool, **extra: str):
    """``core`` (``core_roles``, SIP on 127.0.0.1), the sip-only ``sip-b`` (127.0.0.4) and, with ``media_node``, the
    media node ``media-a`` (127.0.0.2), on one database, Redis prefix and keys folder."""
    secrets = tmp_path / "secrets"
    await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "gbops.cli", "keys", "init", "--dir", str(secrets)],
                            check=True, capture_output=True)
    common = {"GBOPS_SECRETS_DIR": str(secrets), "GBOPS_DATABASE_URL": pg_url, "GBOPS_REDIS_URL": redis_url,
              "GBOPS_REDIS_PREFIX": redis_prefix, "GBOPS_CLUSTER_HEARTBEAT": "0.5", "GBOPS_LIVE_IDLE_TIMEOUT": "2",
              "GBOPS_SIP_KEEPALIVE_INTERVAL": str(KEEPALIVE), "GBOPS_SIP_KEEPALIVE_MISSES": str(MISSES),
              # every SIP node checks its devices' homes every 0.5 s and looks for orphans every 2 s: a device
              # core should not take would be taken within the test (the default, 60 s, would hide it)
              "GBOPS_CLUSTER_SIP_RECONCILE": str(RECONCILE), **extra}
    started: list[Node] = []
    try:
        core = Node(tmp_path / "core", GBOPS_ROLES=core_roles, GBOPS_NODE_ID="core", **common)
        started.append(await asyncio.to_thread(core.start, 60))
        # sip-b's SIP port: free on 127.0.0.1 is as good as free on 127.0.0.4 here (free_port binds loopback)
        sip_b = SipOnlyNode(tmp_path / "sip-b", redis_url, redis_prefix, "sip-b", GBOPS_ROLES="sip",
                            GBOPS_SIP_HOST=SIP_B_HOST, **common)
        started.append(await asyncio.to_thread(sip_b.start, 60))
        if media_node:
            low = free_port()
            media_a = Node(tmp_path / "media-a", "127.0.0.2", GBOPS_ROLES="media", GBOPS_NODE_ID="media-a",
                           GBOPS_MEDIA_HOST="127.0.0.2", GBOPS_RTP_PORTS=f"{low}-{low + 40}", **common)
            started.append(await asyncio.to_thread(media_a.start, 60))
        yield started
    finally:
        for node in reversed(started):
            if node.proc is not None and node.proc.poll() is None:
                await asyncio.to_thread(node.stop)


@pytest.fixture
async def nodes(tmp_path: Path, pg_url: str, redis_url: str, redis_prefix: str):
    async with cluster(tmp_path, pg_url, redis_url, redis_prefix, core_roles="sip,portal,worker",
                       media_node=True) as started:
        yield tuple(started)


def simulator(sip_b: Node) -> Simulator:
    return Simulator(SimConfig(server=(SIP_B_HOST, sip_b.sip_port), devices=DEVICES, channels=CHANNELS,
                               password=STRONG_SIP_PASSWORD, keepalive=KEEPALIVE, expires=3600, codec="h264",
                               size="640x360", register_rate=50.0, retry_min=1.0, retry_max=2.0))


async def wait_for(predicate, timeout: float, what: str, cluster, interval: float = 0.3):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await predicate()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last={last!r}\n{logs(list(cluster))}")


async def homes(redis_url: str, prefix: str, device_ids: list[str]) -> dict[str, str | None]:
    """``<prefix>device:<id>`` as stored (``node|host:port``)."""
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis_url)
    try:
        raw = await client.mget([f"{prefix}device:{d}" for d in device_ids])
    finally:
        await client.aclose()
    return {d: (v.decode() if v is not None else None) for d, v in zip(device_ids, raw, strict=True)}


async def all_ready(core: Node, sim: Simulator) -> bool:
    for device_id in sim.device_ids:
        if not (await device(core, device_id))["online"] or await channels_online(core, device_id) != CHANNELS:
            return False
    return True


def answered(sim: Simulator) -> dict[str, int]:
    return {d.device_id: d.stats.keepalives_ok for d in sim.devices}


async def test_a_device_on_the_second_sip_node_is_reached_through_the_portal(nodes, redis_url, redis_prefix):
    core, sip_b, media_a = nodes
    sim = simulator(sip_b)
    await sim.start()
    try:
        assert await sim.wait_until(lambda s: s.registered == DEVICES, 30), (sim.progress_line(), logs(list(nodes)))
        # the portal on core sees every device online with its channels (sip-b wrote them to the shared store)
        await wait_for(lambda: all_ready(core, sim), 30, "the devices and their channels online at the portal", nodes)

        # each device's home in Redis is sip-b at its own SIP address
        want = f"sip-b|{SIP_B_HOST}:{sip_b.sip_port}"
        assert await homes(redis_url, redis_prefix, sim.device_ids) == dict.fromkeys(sim.device_ids, want), \
            logs(list(nodes))

        device_id = sim.device_ids[0]
        channel_id = sim.cfg.channel_ids(0)[0]
        # a catalog sync asked at core runs at sip-b (sip.call) and finishes there
        r = await call(core.post, f"/api/devices/{device_id}/catalog-sync", {})
        assert r.status_code == 202, (r.text, logs(list(nodes)))
        assert r.json()["device_id"] == device_id

        async def synced() -> dict | None:
            got = await call(core.get, f"/api/devices/{device_id}/catalog-sync")
            assert got.status_code == 200, got.text
            return got.json() if got.json()["state"] != "running" else None

        progress = await wait_for(synced, 20, "the catalog sync to finish", nodes)
        assert progress["state"] == "complete" and progress["received"] == CHANNELS, progress

        # a status query crosses to sip-b and the device answers it (core's own SIP service does not hold it)
        r = await call(core.get, f"/api/devices/{device_id}/status")
        assert r.status_code == 200, (r.text, logs(list(nodes)))
        status = r.json()
        assert status["device_id"] == device_id and status["result"] == "OK", status

        # a live view: the media node's INVITE goes out through sip-b, and the FLV URL delivers frames
        invites = sim.fleet.by_id[device_id].stats.invites_received
        r = await call(core.post, f"/api/devices/{device_id}/channels/{channel_id}/live", {})
        assert r.status_code == 201, (r.text, logs(list(nodes)))
        live = r.json()
        assert live["flv_url"].startswith(media_a.base + "/flv/"), live["flv_url"]
        assert sim.fleet.by_id[device_id].stats.invites_received == invites + 1
        data = await call(read_flv, live["flv_url"], 3)
        assert await call(frames, data) >= 15

        # core's SIP service never took these devices: their home is still sip-b, no offline transition
        assert await homes(redis_url, redis_prefix, sim.device_ids) == dict.fromkeys(sim.device_ids, want)
        for d in sim.device_ids:
            assert (await device(core, d))["online"] is True
            assert await offline_rows(core, d) == [], (d, logs(list(nodes)))
        assert "cluster_sip.adopted" not in core.log() and "cluster_sip.device_moved" not in core.log()
        assert sim.stats()["registrations_lost"] == 0, sim.stats()
    finally:
        await sim.stop(unregister=False)


async def test_a_restarted_second_sip_node_keeps_its_devices(nodes, redis_url, redis_prefix):
    core, sip_b, media_a = nodes
    sim = simulator(sip_b)
    await sim.start()
    try:
        assert await sim.wait_until(lambda s: s.registered == DEVICES, 30), (sim.progress_line(), logs(list(nodes)))
        await wait_for(lambda: all_ready(core, sim), 30, "the devices and their channels online at the portal", nodes)
        registrations = sim.stats()["registrations"]
        want = f"sip-b|{SIP_B_HOST}:{sip_b.sip_port}"

        # sip-b stops cleanly (it leaves the directory) and starts again on the same SIP address
        code = await call(sip_b.stop, signal.SIGTERM)
        assert code == 0, sip_b.log()[-3000:]
        before_start = answered(sim)
        t0 = time.monotonic()
        await call(sip_b.start, 60)
        # the devices' keepalives are answered again by the restarted sip-b
        assert await until(lambda: all(n > before_start[d] for d, n in answered(sim).items()), 30), \
            (sim.progress_line(), logs(list(nodes)))
        print(f"sip-b restart: keepalives answered again after {time.monotonic() - t0:.1f} s")

        # a full keepalive window (and several orphan checks) later, everyone is still online at the portal
        mark = answered(sim)
        assert await until(lambda: all(n >= mark[d] + MISSES for d, n in answered(sim).items()),
                           KEEPALIVE * (MISSES + 2) + 10), (sim.progress_line(), logs(list(nodes)))
        for d in sim.device_ids:
            dev = await device(core, d)
            assert dev["online"] is True and dev["offline_reason"] is None, dev
            assert await channels_online(core, d) == CHANNELS
            assert await offline_rows(core, d) == [], (d, logs(list(nodes)))
        # core never held them: it adopted nothing (so released nothing back), and their home stayed sip-b
        assert "cluster_sip.adopted" not in core.log() and "cluster_sip.device_moved" not in core.log(), \
            logs(list(nodes))
        assert await homes(redis_url, redis_prefix, sim.device_ids) == dict.fromkeys(sim.device_ids, want), \
            logs(list(nodes))
        # the restarted sip-b took its devices back from the store: no device had to register again
        assert f"held={DEVICES} address={SIP_B_HOST}:{sip_b.sip_port}" in sip_b.log(), sip_b.log()[-3000:]
        stats = sim.stats()
        assert stats["registrations_lost"] == 0 and stats["registrations"] == registrations, stats
        r = await call(core.get, f"/api/devices/{sim.device_ids[0]}/status")
        assert r.status_code == 200 and r.json()["result"] == "OK", (r.text, logs(list(nodes)))
    finally:
        await sim.stop(unregister=False)


async def test_a_sip_and_media_node_views_the_other_nodes_device_and_adopts_it_once_that_node_dies(
        tmp_path, pg_url, redis_url, redis_prefix):
    """``core`` with the media role too: its own relay reaches sip-b's device through sip-b (the routed
    signalling). Then sip-b is killed: after the adoption grace (a keepalive window, here 6 s, the directory's
    ttl 2 s) core takes its devices over, and as nobody hears them they go offline once, judged by core."""
    async with cluster(tmp_path, pg_url, redis_url, redis_prefix, core_roles="sip,media,portal,worker",
                       media_node=False, GBOPS_CLUSTER_NODE_TTL="2") as started:
        core, sip_b = started
        sim = simulator(sip_b)
        await sim.start()
        try:
            assert await sim.wait_until(lambda s: s.registered == DEVICES, 30), (sim.progress_line(), logs(started))
            await wait_for(lambda: all_ready(core, sim), 30, "the devices online at the portal", started)
            device_id, channel_id = sim.device_ids[0], sim.cfg.channel_ids(0)[0]
            invites = sim.fleet.by_id[device_id].stats.invites_received
            r = await call(core.post, f"/api/devices/{device_id}/channels/{channel_id}/live", {})
            assert r.status_code == 201, (r.text, logs(started))
            live = r.json()
            assert sim.fleet.by_id[device_id].stats.invites_received == invites + 1
            data = await call(read_flv, core.base + live["flv_url"] if live["flv_url"].startswith("/")
                              else live["flv_url"], 3)
            assert await call(frames, data) >= 15

            sip_b.proc.kill()  # SIGKILL: no un-registration, no goodbye; its devices' keepalives reach nobody
            sip_b.proc.wait(10)
            t0 = time.monotonic()

            async def all_offline() -> bool:
                return not [d for d in sim.device_ids if (await device(core, d))["online"]]

            await wait_for(all_offline, 45, "core to adopt sip-b's devices and judge them offline", started)
            print(f"sip-b killed: its devices offline at the portal after {time.monotonic() - t0:.1f} s")
            assert "cluster_sip.adopted" in core.log()
            for d in sim.device_ids:  # once each, for the keepalives nobody heard
                rows = [e for e in await offline_rows(core, d) if e["subject"] == "device"]
                assert [e["reason"] for e in rows] == ["keepalive_timeout"], (d, rows)
            found = await homes(redis_url, redis_prefix, sim.device_ids)
            assert all((h or "").startswith("core|") for h in found.values()), found
        finally:
            await sim.stop(unregister=False)
