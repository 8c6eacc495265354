"""A cluster on this machine (issue 17): one node with the sip, portal and worker roles, two media nodes on
other loopback addresses, PostgreSQL and Redis, 50 simulated devices. A live view through the portal is
served by a media node (its own FLV URL, frames decoded); the node directory lists all three; two concurrent
live requests for one channel make one INVITE; with one stream per node the next channel lands on the other
media node.

Every node has a data directory of its own and the shared keys of one ``GBOPS_SECRETS_DIR`` (``gbops keys
init``), as a cluster requires.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import subprocess
import sys
import time
from pathlib import Path

import av
import httpx
import pytest

from gbsim import SimConfig, Simulator
from tests.e2e.platform import STRONG_SIP_PASSWORD, PlatformProcess, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DEVICES = 50


class Node(PlatformProcess):
    """``gbops run`` with its HTTP on ``host`` (a media node on its own loopback address) and its own log."""

    def __init__(self, data_dir: Path, host: str = "127.0.0.1", **env: str) -> None:
        super().__init__(data_dir, GBOPS_HTTP_HOST=host, **env)
        self.host = host

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.http_port}"


async def first_channel(sim, core, devices: int, timeout: float) -> tuple[str, str]:
    """Wait until the simulator's ``devices`` registered and the portal knows the first device's first channel."""
    assert await sim.wait_until(lambda s: s.registered == devices, timeout), sim.progress_line()
    device, channel = sim.device_ids[0], sim.cfg.channel_ids(0)[0]
    await asyncio.to_thread(core.wait_for, lambda: any(
        c["channel_id"] == channel for c in core.get(f"/api/devices/{device}/channels").json().get("items", [])),
        30, f"the catalog of {device}")
    return device, channel


@contextlib.asynccontextmanager
async def running_cluster(tmp_path: Path, pg_url: str, redis_url: str, redis_prefix: str, **extra: str):
    """A ``sip,portal,worker`` node ``core`` and media nodes ``media-a`` (127.0.0.2) and ``media-b`` (127.0.0.3) on
    one PostgreSQL database, one Redis prefix and one shared keys folder; ``extra`` settings for every node."""
    secrets = tmp_path / "secrets"
    await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "gbops.cli", "keys", "init", "--dir", str(secrets)],
                            check=True, capture_output=True)
    common = {"GBOPS_SECRETS_DIR": str(secrets), "GBOPS_DATABASE_URL": pg_url, "GBOPS_REDIS_URL": redis_url,
              "GBOPS_REDIS_PREFIX": redis_prefix, "GBOPS_CLUSTER_HEARTBEAT": "0.5", "GBOPS_LIVE_IDLE_TIMEOUT": "2",
              **extra}
    nodes: list[Node] = []
    try:
        core = Node(tmp_path / "core", GBOPS_ROLES="sip,portal,worker", GBOPS_NODE_ID="core", **common)
        nodes.append(core.start(timeout=60))
        for name, host in (("media-a", "127.0.0.2"), ("media-b", "127.0.0.3")):
            low = free_port()
            node = Node(tmp_path / name, host, GBOPS_ROLES="media", GBOPS_NODE_ID=name,
                        GBOPS_MEDIA_HOST=host, GBOPS_RTP_PORTS=f"{low}-{low + 40}", **common)
            nodes.append(node.start(timeout=60))
        yield nodes
    finally:
        for node in reversed(nodes):
            node.stop()


@pytest.fixture
async def cluster(tmp_path: Path, pg_url: str, redis_url: str, redis_prefix: str):
    async with running_cluster(tmp_path, pg_url, redis_url, redis_prefix, GBOPS_MEDIA_MAX_STREAMS="1") as nodes:
        yield nodes


def logs(nodes: list[Node]) -> str:
    return "\n".join(f"--- {n.data_dir.name} ---\n{n.log()[-3000:]}" for n in nodes)


def read_flv(url: str, seconds: float) -> bytes:
    """Read an absolute HTTP-FLV URL as a player does for ``seconds``."""
    out = io.BytesIO()
    deadline = time.monotonic() + seconds
    with httpx.stream("GET", url, timeout=10) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"] == "video/x-flv"
        for chunk in r.iter_bytes():
            out.write(chunk)
            if time.monotonic() > deadline:
                break
    return out.getvalue()


def frames(data: bytes) -> int:
    with av.open(io.BytesIO(data), format="flv") as c:
        return sum(1 for _ in c.decode(c.streams.video[0]))


async def directory_nodes(redis_url: str, prefix: str) -> list:
    from cluster.client import connect
    from cluster.keys import RedisKeys
    from cluster.nodes import RedisNodeDirectory

    redis = connect(redis_url)
    try:
        return await RedisNodeDirectory(redis, RedisKeys(prefix)).nodes()
    finally:
        await redis.aclose()


async def lease_holder(redis_url: str, prefix: str, name: str) -> str | None:
    from cluster.client import connect
    from cluster.keys import RedisKeys
    from cluster.lease import RedisLeases

    redis = connect(redis_url)
    try:
        return await RedisLeases(redis, RedisKeys(prefix), "test-observer").holder(name)
    finally:
        await redis.aclose()


async def test_live_view_across_nodes(cluster, redis_url, redis_prefix):
    core, media_a, media_b = cluster
    for node in cluster:
        assert not list(node.data_dir.glob("*.db")), "the nodes must share PostgreSQL, not a SQLite file"
    # the node directory lists all three with their roles and the media nodes' own URLs
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        listed = {n.node_id: n for n in await directory_nodes(redis_url, redis_prefix)}
        if set(listed) == {"core", "media-a", "media-b"}:
            break
        await asyncio.sleep(0.2)
    assert set(listed) == {"core", "media-a", "media-b"}, (listed, logs(cluster))
    assert set(listed["core"].roles) == {"sip", "portal", "worker"}
    assert listed["media-a"].roles == ("media",) and listed["media-a"].http_url == media_a.base
    assert listed["media-b"].http_url == media_b.base
    api = (await asyncio.to_thread(core.get, "/api/cluster/nodes")).json()
    assert {n["node_id"] for n in api["items"]} == {"core", "media-a", "media-b"} and api["clustered"] is True

    sim = Simulator(SimConfig(server=("127.0.0.1", core.sip_port), devices=DEVICES, channels=1,
                              password=STRONG_SIP_PASSWORD, codec="h264", size="640x360", register_rate=100))
    await sim.start()
    try:
        assert await sim.wait_until(lambda s: s.registered == DEVICES, 60), sim.progress_line()
        devices = sim.device_ids[:2]
        channels = [sim.cfg.channel_ids(i)[0] for i in range(2)]
        for device, ch in zip(devices, channels, strict=True):
            await asyncio.to_thread(core.wait_for, lambda d=device, ch=ch: any(
                c["channel_id"] == ch for c in core.get(f"/api/devices/{d}/channels").json().get("items", [])),
                30, f"the catalog of {device}")

        # two concurrent live requests for one channel: one INVITE, both sessions on one media node
        path = f"/api/devices/{devices[0]}/channels/{channels[0]}/live"
        first, second = await asyncio.gather(asyncio.to_thread(core.post, path, {}),
                                             asyncio.to_thread(core.post, path, {}))
        assert first.status_code == 201 and second.status_code == 201, (first.text, second.text, logs(cluster))
        assert sim.fleet.by_id[devices[0]].stats.invites_received == 1
        live = first.json()
        owner = media_a if live["flv_url"].startswith(media_a.base + "/") else media_b
        assert live["flv_url"].startswith(owner.base + "/flv/"), live["flv_url"]
        assert second.json()["flv_url"].startswith(owner.base + "/flv/")
        assert live["codec"] == "h264" and (live["width"], live["height"]) == (640, 360)
        owner_id = "media-a" if owner is media_a else "media-b"
        assert await lease_holder(redis_url, redis_prefix, f"stream:{devices[0]}/{channels[0]}") == owner_id

        # the media node serves the frames itself
        data = await asyncio.to_thread(read_flv, live["flv_url"], 3)
        assert len(data) > 10_000
        assert await asyncio.to_thread(frames, data) >= 30
        # the player went away: the session ended on the media node, and the portal heard of it
        await asyncio.to_thread(core.wait_for, lambda: core.get(f"/api/sessions/{live['session_id']}").status_code
                                == 404, 10, "the ended session to leave the portal")
        waiting = (await asyncio.to_thread(core.get, f"/api/sessions/{second.json()['session_id']}")).json()
        assert waiting["state"] == "waiting" and waiting["kind"] == "live", waiting
        # one audit log: live.start from the portal, live.stop from the media node, same channel and user
        def entries(action: str) -> list[dict]:
            return core.get("/api/audit/entries", action=action, limit=20).json()["items"]

        stops = await asyncio.to_thread(core.wait_for, lambda: entries("live.stop"), 10, "live.stop")
        starts = entries("live.start")
        key = f"{devices[0]}/{channels[0]}"
        assert len(starts) == 2 and all(e["target"]["id"] == key for e in starts), starts
        assert stops[0]["target"]["id"] == key and stops[0]["actor"]["name"] == "admin", stops
        assert stops[0]["detail"]["reason"] == "player disconnected", stops
        # the URL is single use, and the token means nothing on the other media node
        other = media_b if owner is media_a else media_a
        async with httpx.AsyncClient(timeout=10) as client:
            assert (await client.get(live["flv_url"])).status_code == 404
            assert (await client.get(second.json()["flv_url"].replace(owner.base, other.base))).status_code == 404

        # one stream per media node: the next channel goes to the other one
        t0 = time.monotonic()
        r = await asyncio.to_thread(core.post, f"/api/devices/{devices[1]}/channels/{channels[1]}/live", {})
        answered = time.monotonic() - t0
        assert r.status_code == 201, (r.text, logs(cluster))
        print(f"cluster: POST live -> 201 in {answered:.3f} s (a new upstream on a remote media node)")
        assert answered < 2.0, "first picture must be ready within 2 s of the click, across nodes too"
        assert r.json()["flv_url"].startswith(other.base + "/flv/"), r.json()["flv_url"]
        data = await asyncio.to_thread(read_flv, r.json()["flv_url"], 2)
        assert await asyncio.to_thread(frames, data) >= 15
        assert sim.fleet.by_id[devices[1]].stats.invites_received == 1

        # GET /api/streams through the portal: every media node's upstreams, each naming its node
        def streams() -> set:
            return {(i["channel_id"], i["node_id"]) for i in core.get("/api/streams").json()["items"]}

        other_id = "media-b" if owner is media_a else "media-a"
        await asyncio.to_thread(core.wait_for, lambda: streams() == {(channels[0], owner_id), (channels[1], other_id)},
                                10, "both streams in GET /api/streams")

        # the console on the portal may fetch from the media nodes (CSP), and they answer its preflight (CORS)
        def csp() -> str:
            return httpx.get(core.base + "/console/", timeout=10).headers["content-security-policy"]

        await asyncio.to_thread(core.wait_for, lambda: media_a.base in csp() and media_b.base in csp(), 10,
                                "the media nodes in the console's CSP")
        session_url = r.json()["whep_url"]
        async with httpx.AsyncClient(timeout=10) as client:
            pre = await client.options(session_url, headers={"Origin": core.base, "Access-Control-Request-Method":
                                                             "POST", "Access-Control-Request-Headers": "content-type"})
        assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] in ("*", core.base)
    finally:
        await sim.stop()


async def test_a_killed_media_node(cluster, redis_url, redis_prefix):
    """kill -9 a media node while a viewer watches: the session ends with a reason (on the one audit log), a new
    live request made within 10 s answers 2xx on the other node with frames, the SIP node ends the dead node's
    call, and the channel's ownership lease is the survivor's."""
    import signal

    core, media_a, media_b = cluster
    sim = Simulator(SimConfig(server=("127.0.0.1", core.sip_port), devices=2, channels=1,
                              password=STRONG_SIP_PASSWORD, codec="h264", size="640x360", register_rate=50))
    await sim.start()
    try:
        device, channel = await first_channel(sim, core, 2, 30)
        path = f"/api/devices/{device}/channels/{channel}/live"
        r = await asyncio.to_thread(core.post, path, {})
        assert r.status_code == 201, (r.text, logs(cluster))
        live = r.json()
        victim, survivor = (media_a, media_b) if live["flv_url"].startswith(media_a.base) else (media_b, media_a)
        survivor_id = "media-b" if survivor is media_b else "media-a"
        watching = asyncio.ensure_future(asyncio.to_thread(read_flv_until_cut, live["flv_url"], 30))
        await asyncio.sleep(1.5)  # the viewer is watching
        device_sim = sim.fleet.by_id[device]
        byes_before = device_sim.stats.byes_received

        victim.stop(signal.SIGKILL)
        killed = time.monotonic()
        assert (await watching) > 10_000  # it was receiving video until the node died

        # a new request, made at once (well within 10 s): answered on the survivor once the lease runs out
        r = await asyncio.to_thread(core.post, path, {})
        assert r.status_code == 201, (r.text, logs(cluster))
        print(f"kill -9: a new live view answered {time.monotonic() - killed:.1f} s after the kill")
        assert r.json()["flv_url"].startswith(survivor.base + "/flv/"), r.json()["flv_url"]
        data = await asyncio.to_thread(read_flv, r.json()["flv_url"], 2)
        assert await asyncio.to_thread(frames, data) >= 15
        assert await lease_holder(redis_url, redis_prefix, f"stream:{device}/{channel}") == survivor_id

        # the dead node's viewer: its session ended at the portal, with a reason on the audit log
        await asyncio.to_thread(core.wait_for, lambda: core.get(f"/api/sessions/{live['session_id']}").status_code
                                == 404, 20, "the dead node's session to end")
        stops = await asyncio.to_thread(core.wait_for, lambda: [
            e for e in core.get("/api/audit/entries", action="live.stop", limit=20).json()["items"]
            if e["detail"].get("reason") == "media node lost"], 10, "live.stop media node lost")
        assert stops[0]["target"]["id"] == f"{device}/{channel}"
        # the SIP node ended the dead node's call on the device
        await sim.wait_until(lambda s: device_sim.stats.byes_received > byes_before, 20)
        assert device_sim.stats.byes_received > byes_before
    finally:
        await sim.stop()


def read_flv_until_cut(url: str, seconds: float) -> int:
    """Bytes of an HTTP-FLV response read until the server goes away (or ``seconds``)."""
    n = 0
    deadline = time.monotonic() + seconds
    try:
        with httpx.stream("GET", url, timeout=5) as r:
            assert r.status_code == 200
            for chunk in r.iter_bytes():
                n += len(chunk)
                if time.monotonic() > deadline:
                    break
    except httpx.HTTPError:
        pass
    return n
