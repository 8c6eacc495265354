from __future__ import annotations

import logging

import pytest

from cluster.bus import LocalCommandBus, RedisCommandBus
from cluster.lease import LocalLeases, RedisLeases
from cluster.nodes import NODE_ID_RE, LocalNodeDirectory, NodeInfo, RedisNodeDirectory
from cluster.runtime import generate_node_id, open_cluster, resolve_node_id
from gbcore.settings import Settings


def settings(**kw) -> Settings:
    return Settings(**{"redis_url": None, "node_id": None, **kw})  # whatever the environment says


def test_node_ids():
    generated = {generate_node_id() for _ in range(20)}
    assert len(generated) == 20
    assert all(NODE_ID_RE.fullmatch(g) and g.startswith("node-") for g in generated)
    assert resolve_node_id(None).startswith("node-")
    assert resolve_node_id("media-01.dc_2") == "media-01.dc_2"
    for bad in ("a b", "x" * 65, "节点", "a/b", "a:b"):
        with pytest.raises(ValueError):
            resolve_node_id(bad)


async def test_single_process_is_in_memory():
    cluster = await open_cluster(settings(node_id="solo"))
    assert cluster.node_id == "solo" and not cluster.clustered and cluster.redis is None
    assert isinstance(cluster.directory, LocalNodeDirectory)
    assert isinstance(cluster.leases, LocalLeases) and cluster.leases.owner == "solo"
    assert isinstance(cluster.bus, LocalCommandBus)
    await cluster.bus.start()

    async def echo(payload):
        return payload

    cluster.bus.register("echo", echo)
    assert await cluster.bus.call("solo", "echo", {"a": 1}, timeout=1) == {"a": 1}
    await cluster.close()


async def test_cluster_on_redis(redis_url, redis_prefix):
    cluster = await open_cluster(settings(redis_url=redis_url, redis_prefix=redis_prefix, node_id="node-a"))
    try:
        assert cluster.clustered and cluster.node_id == "node-a"
        assert isinstance(cluster.directory, RedisNodeDirectory)
        assert isinstance(cluster.leases, RedisLeases)
        assert isinstance(cluster.bus, RedisCommandBus)
        await cluster.directory.publish(NodeInfo(node_id="node-a", roles=("sip",), address="10.0.0.1"), 10)
        assert await cluster.redis.exists(redis_prefix + "node:node-a")
        assert await cluster.leases.acquire("job:reports", 10)
        assert await cluster.redis.get(redis_prefix + "lease:job:reports") == b"node-a"
        await cluster.bus.start()
        assert await cluster.redis.exists(redis_prefix + "bus:node-a")
    finally:
        await cluster.close()
    assert not await _exists(redis_url, redis_prefix + "bus:node-a")


async def _exists(url, key):
    from cluster.client import connect

    client = connect(url)
    try:
        return await client.exists(key)
    finally:
        await client.aclose()


async def test_unreachable_redis_is_named_without_its_password(caplog):
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(ConnectionError) as err:
            await open_cluster(settings(redis_url="redis://:hunter2secret@127.0.0.1:1/0"))
    assert "127.0.0.1:1" in str(err.value)
    assert "hunter2secret" not in str(err.value)
    assert "hunter2secret" not in caplog.text


async def test_invalid_configured_node_id():
    with pytest.raises(ValueError):
        await open_cluster(settings(node_id="bad id"))
