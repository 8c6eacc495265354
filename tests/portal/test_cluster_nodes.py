"""``GET /api/cluster/nodes`` and the ``node_id`` of ``GET /api/streams`` (issue 17), on SQLite and PostgreSQL.

The portal reads the cluster the assembly put on ``app.state.cluster``: here the in-memory directory and leases
of the single process, and the Redis ones of cluster mode with two other "nodes" (their own directory and lease
objects on the same Redis prefix) publishing beside this one.  The API lists the live nodes with their load
and heartbeat and the worker jobs with their lease holder; it is refused without ``system.metrics``; a node
entry that does not have the expected shape is left out, never breaking the answer for the others.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from .conftest import Portal, bearer

THIS = "portal-1"
JOBS = ["job:reports", "job:tickets", "job:quality", "job:backups", "job:audit-checkpoint"]
ITEM_KEYS = {"node_id", "roles", "address", "http_url", "load", "last_seen", "draining", "started", "age_s", "status"}


def wire(app: Any, cluster: Any, *, clustered: bool, jobs: list[str] | None = None) -> None:
    """What the assembly does (gbops/app.py): the cluster and the job names on app.state, the routes in."""
    from ops_portal.cluster.routes import router

    if not any(getattr(r, "operation_id", None) == "cluster_nodes" for r in app.routes):
        app.include_router(router)
        app.openapi_schema = None
    app.state.cluster = cluster
    app.state.cluster_jobs = JOBS if jobs is None else jobs
    app.state.cluster_clustered = clustered


def local_cluster(node_id: str = THIS) -> Any:
    from cluster.lease import LocalLeases
    from cluster.nodes import LocalNodeDirectory
    from cluster.runtime import Cluster

    return Cluster(node_id=node_id, directory=LocalNodeDirectory(), leases=LocalLeases(node_id), bus=None,
                   redis=None)


def node(node_id: str, roles: tuple[str, ...], *, ago: float = 0.5, **kw: Any) -> Any:
    from cluster.nodes import NodeInfo, NodeLoad

    now = datetime.now(UTC)
    kw.setdefault("load", NodeLoad(streams=3, encoders=1, cpu=0.25))
    return NodeInfo(node_id=node_id, roles=roles, address=kw.pop("address", "127.0.0.1"),
                    http_url=kw.pop("http_url", "http://127.0.0.1:8080"), last_seen=now - timedelta(seconds=ago),
                    started=now - timedelta(minutes=5), **kw)


async def admin(portal: Portal) -> dict[str, str]:
    await portal.add_user("ops-admin")
    return bearer(await portal.login("ops-admin"))


async def test_single_process_lists_this_node_and_the_jobs(portal: Portal) -> None:
    cluster = local_cluster()
    await cluster.directory.publish(node(THIS, ("sip", "media", "portal", "worker")), 10)
    await cluster.leases.acquire("job:reports", 10)
    wire(portal.app, cluster, clustered=False)
    r = await portal.client.get("/api/cluster/nodes", headers=await admin(portal))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["clustered"] is False and body["this_node"] == THIS
    assert body["heartbeat_s"] == portal.settings.cluster_heartbeat
    assert body["node_ttl_s"] == portal.settings.cluster_node_ttl
    assert body["stale_after_s"] == min(3 * portal.settings.cluster_heartbeat, portal.settings.cluster_node_ttl)
    assert body["now"].endswith("Z")
    [item] = body["items"]
    assert set(item) == ITEM_KEYS
    assert item["node_id"] == THIS and item["roles"] == ["sip", "media", "portal", "worker"]
    assert item["address"] == "127.0.0.1" and item["http_url"] == "http://127.0.0.1:8080"
    assert item["load"] == {"streams": 3, "encoders": 1, "cpu": 0.25}
    assert item["draining"] is False and item["status"] == "online"
    # times as the portal writes them everywhere: RFC 3339 UTC, milliseconds, Z
    last_seen = datetime.fromisoformat(item["last_seen"].replace("Z", "+00:00"))
    assert item["last_seen"].endswith("Z") and item["started"].endswith("Z")
    assert abs((datetime.now(UTC) - last_seen).total_seconds() - 0.5) < 5
    assert 0.4 <= item["age_s"] < 5
    assert body["jobs"] == [
        {"name": "job:reports", "label": "日报生成 / daily reports", "holder": THIS},
        {"name": "job:tickets", "label": "工单扫描 / ticket scanner", "holder": None},
        {"name": "job:quality", "label": "视频质量抽检 / video quality sampling", "holder": None},
        {"name": "job:backups", "label": "定时备份 / scheduled backups", "holder": None},
        {"name": "job:audit-checkpoint", "label": "审计检查点签名 / audit checkpoint signing", "holder": None},
    ]


async def test_refused_without_system_metrics_and_unwired_says_so(portal: Portal) -> None:
    cluster = local_cluster()
    await cluster.directory.publish(node(THIS, ("portal",)), 10)
    wire(portal.app, cluster, clustered=False)
    await portal.add_user("viewer", permissions={"device.read", "live.view"})
    r = await portal.client.get("/api/cluster/nodes", headers=bearer(await portal.login("viewer")))
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    assert "system.metrics" in r.json()["message"] and THIS not in r.text
    await portal.add_user("metrics", permissions={"system.metrics"})
    r = await portal.client.get("/api/cluster/nodes", headers=bearer(await portal.login("metrics")))
    assert r.status_code == 200 and [i["node_id"] for i in r.json()["items"]] == [THIS]

    portal.app.state.cluster = None  # a portal the assembly gave no cluster
    r = await portal.client.get("/api/cluster/nodes", headers=bearer(await portal.login("metrics")))
    assert r.status_code == 503 and r.json()["error"] == "cluster_unavailable"


async def test_status_online_draining_stale_and_unknown_job(portal: Portal) -> None:
    cluster = local_cluster()
    await cluster.directory.publish(node(THIS, ("portal", "sip")), 10)
    await cluster.directory.publish(node("media-a", ("media",), draining=True), 10)
    # published long ago and still within its ttl: the heartbeats stopped, the node is stale until it expires
    await cluster.directory.publish(node("media-b", ("media",), ago=8), 10)
    wire(portal.app, cluster, clustered=False, jobs=["job:reports", "job:custom", "job:odd"])
    headers = await admin(portal)
    body = (await portal.client.get("/api/cluster/nodes", headers=headers)).json()
    status = {i["node_id"]: i["status"] for i in body["items"]}
    assert status == {THIS: "online", "media-a": "draining", "media-b": "stale"}
    assert body["jobs"] == [{"name": "job:reports", "label": "日报生成 / daily reports", "holder": None},
                            {"name": "job:custom", "label": "job:custom", "holder": None},
                            {"name": "job:odd", "label": "job:odd", "holder": None}]
    # the assembly's words for its jobs win ((zh, en) pairs, gbops.cluster_wiring.JOBS)
    portal.app.state.cluster_job_labels = {"job:custom": ("自定义任务", "a custom job"), "job:reports": "日报 / reports"}
    body = (await portal.client.get("/api/cluster/nodes", headers=headers)).json()
    assert [j["label"] for j in body["jobs"]] == ["日报 / reports", "自定义任务 / a custom job", "job:odd"]


class _Directory:
    """A directory handing out what a buggy or hostile node might have left (the real ones validate too)."""

    def __init__(self, entries: list[Any]) -> None:
        self.entries = entries

    async def nodes(self) -> list[Any]:
        return self.entries


class _Leases:
    def __init__(self, holders: dict[str, Any]) -> None:
        self.holders = holders

    async def holder(self, name: str) -> Any:
        return self.holders.get(name)


async def test_malformed_entries_are_left_out_hostile_text_passes_as_data(portal: Portal) -> None:
    from cluster.runtime import Cluster

    good = node(THIS, ("portal",)).as_json()
    hostile = {**node("n-2", ("<script>alert(1)</script>",)).as_json(), "node_id": "<script>alert(1)</script>",
               "address": "<img src=x onerror=alert(1)>", "http_url": "javascript:alert(document.cookie)"}
    bad = [
        "not an object",
        {**good, "node_id": "no-load", "load": {"streams": -1, "encoders": 0, "cpu": 0.1}},
        {**good, "node_id": "no-time", "last_seen": "yesterday"},
        {**good, "node_id": "x" * 600},
        {**good, "node_id": "many-roles", "roles": ["worker"] * 17},
        {k: v for k, v in good.items() if k != "draining"},
    ]
    cluster = Cluster(node_id=THIS, directory=_Directory([good, hostile, *bad]),
                      leases=_Leases({"job:reports": "n-2", "job:tickets": "bad holder\n"}), bus=None, redis=None)
    wire(portal.app, cluster, clustered=True, jobs=["job:reports", "job:tickets"])
    r = await portal.client.get("/api/cluster/nodes", headers=await admin(portal))
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert [i["node_id"] for i in items] == [THIS, "<script>alert(1)</script>"]
    assert items[1]["address"] == "<img src=x onerror=alert(1)>"  # data: the console shows it as text
    assert items[1]["http_url"] == "javascript:alert(document.cookie)"
    assert [j["holder"] for j in r.json()["jobs"]] == ["n-2", None]  # a holder that is no node id: none


async def test_redis_cluster_lists_every_node_and_the_holders(portal: Portal, redis_url: str,
                                                               redis_prefix: str) -> None:
    """Three nodes on one Redis prefix: this portal and two others, each publishing its own heartbeat; a job
    lease held by another node; a garbage entry written into the directory is left out."""
    from cluster.client import connect
    from cluster.keys import RedisKeys
    from cluster.lease import RedisLeases
    from cluster.nodes import NodeLoad, RedisNodeDirectory
    from cluster.runtime import Cluster

    keys = RedisKeys(redis_prefix)
    clients = [connect(redis_url) for _ in range(3)]
    try:
        mine = Cluster(node_id=THIS, directory=RedisNodeDirectory(clients[0], keys),
                       leases=RedisLeases(clients[0], keys, THIS), bus=None, redis=clients[0])
        await mine.directory.publish(node(THIS, ("sip", "portal")), 10)
        await RedisNodeDirectory(clients[1], keys).publish(
            node("media-1", ("media",), address="127.0.0.2", http_url="http://127.0.0.2:8081",
                 load=NodeLoad(streams=7, encoders=2, cpu=0.5)), 10)
        await RedisNodeDirectory(clients[2], keys).publish(node("worker-1", ("worker",), address="127.0.0.3",
                                                                http_url=None), 10)
        assert await RedisLeases(clients[2], keys, "worker-1").acquire("job:reports", 10)
        # an entry no node wrote: invalid JSON under a node key, indexed like a node
        await clients[0].set(keys("node", "junk"), b"{not json", px=10_000)
        await clients[0].zadd(keys("nodes"), {"junk": 1.0})
        wire(portal.app, mine, clustered=True)
        headers = await admin(portal)
        r = await portal.client.get("/api/cluster/nodes", headers=headers)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["clustered"] is True and body["this_node"] == THIS
        by_id = {i["node_id"]: i for i in body["items"]}
        assert sorted(by_id) == ["media-1", THIS, "worker-1"]
        assert by_id["media-1"]["roles"] == ["media"] and by_id["media-1"]["address"] == "127.0.0.2"
        assert by_id["media-1"]["load"] == {"streams": 7, "encoders": 2, "cpu": 0.5}
        assert by_id["worker-1"]["http_url"] is None
        assert {j["name"]: j["holder"] for j in body["jobs"]} == {
            "job:reports": "worker-1", "job:tickets": None, "job:quality": None, "job:backups": None,
            "job:audit-checkpoint": None}
        # a node that stops cleanly leaves the list at once
        await RedisNodeDirectory(clients[1], keys).remove("media-1")
        body = (await portal.client.get("/api/cluster/nodes", headers=headers)).json()
        assert sorted(i["node_id"] for i in body["items"]) == [THIS, "worker-1"]
    finally:
        for c in clients:
            await c.aclose()


async def test_redis_down_is_503_not_500(portal: Portal) -> None:
    from cluster.client import connect
    from cluster.keys import RedisKeys
    from cluster.lease import RedisLeases
    from cluster.nodes import RedisNodeDirectory
    from cluster.runtime import Cluster
    from tests.e2e.platform import free_port

    client = connect(f"redis://127.0.0.1:{free_port('tcp')}/0")  # nothing listens there
    keys = RedisKeys("gbops-test-down:")
    try:
        wire(portal.app, Cluster(node_id=THIS, directory=RedisNodeDirectory(client, keys),
                                 leases=RedisLeases(client, keys, THIS), bus=None, redis=client), clustered=True)
        r = await portal.client.get("/api/cluster/nodes", headers=await admin(portal))
        assert r.status_code == 503, r.text
        assert r.json()["error"] == "cluster_unavailable" and "Redis" in r.json()["message"]
    finally:
        await client.aclose()


# ------------------------------------------------------------------------------------------- streams
class _Manager:
    def describe(self) -> list[dict[str, Any]]:
        return [
            {"device_id": "34020000001320000001", "channel_id": "34020000001310000001", "transport": "udp",
             "ssrc": "0100000001", "port": 30000, "codec": "h264", "width": 1920, "height": 1080, "fps": 25.0,
             "bitrate": 2e6, "packets": 100, "lost": 0, "loss_fraction": 0.0, "jitter_ms": 1.5, "viewers": 2,
             "video_frames": 50, "since": 1_700_000_000.0},
            # a stream the (future) media facade reports from another node names that node itself
            {"device_id": "34020000001320000002", "channel_id": "34020000001310000002", "transport": "udp",
             "viewers": 1, "since": 1_700_000_001.0, "node_id": "media-2"},
        ]


class _Media:
    manager = _Manager()
    sessions: dict = {}
    transforms = None
    whep = None

    def describe_streams(self) -> list[dict[str, Any]]:
        return self.manager.describe()


@pytest.mark.parametrize("wired", [True, False])
async def test_streams_name_their_node(portal: Portal, wired: bool) -> None:
    portal.app.state.media = _Media()
    if wired:
        wire(portal.app, local_cluster("node-7"), clustered=False)
    else:
        portal.app.state.cluster = None  # a portal built without the platform's cluster
    r = await portal.client.get("/api/streams", headers=await admin(portal))
    assert r.status_code == 200, r.text
    first, second = r.json()["items"]
    assert first["node_id"] == ("node-7" if wired else None)
    assert second["node_id"] == "media-2"
    assert first["since"] == "2023-11-14T22:13:20.000Z" and first["bitrate"] == 2e6 and first["ssrc"] == "0100000001"
    assert first["viewers"] == 2 and first["fps"] == 25.0


async def test_openapi_documents_both(portal: Portal) -> None:
    wire(portal.app, local_cluster(), clustered=False)
    doc = portal.app.openapi()
    op = doc["paths"]["/api/cluster/nodes"]["get"]
    assert op["operationId"] == "cluster_nodes" and op.get("security")
    ref = op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    schemas = doc["components"]["schemas"]
    assert set(schemas[ref]["properties"]) >= {"clustered", "this_node", "items", "jobs"}
    node_ref = schemas[ref]["properties"]["items"]["items"]["$ref"].rsplit("/", 1)[-1]
    assert set(schemas[node_ref]["properties"]) == ITEM_KEYS
    streams = doc["paths"]["/api/streams"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    list_ref = streams["$ref"].rsplit("/", 1)[-1]
    item_ref = schemas[list_ref]["properties"]["items"]["items"]["$ref"].rsplit("/", 1)[-1]
    assert "node_id" in schemas[item_ref]["properties"]
