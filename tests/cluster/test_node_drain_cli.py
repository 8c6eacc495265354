"""``gbops node drain --node <id>`` (issue 17): the command reaches the node over the Redis command bus, and
``--wait`` returns once the node has left the node directory; a node that is not there is an error."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from cluster.bus import RedisCommandBus
from cluster.client import connect
from cluster.keys import RedisKeys
from cluster.nodes import NodeInfo, NodeLoad, RedisNodeDirectory
from gbcore.settings import Settings
from gbops.node_cli import request_drain


async def test_drain_reaches_the_node_and_waits_for_it_to_leave(redis_url, redis_prefix, tmp_path) -> None:
    settings = Settings(redis_url=redis_url, redis_prefix=redis_prefix, data_dir=tmp_path, cluster_rpc_timeout=3)
    redis = connect(redis_url)
    keys = RedisKeys(redis_prefix)
    directory = RedisNodeDirectory(redis, keys)
    bus = RedisCommandBus(redis, keys, "media-x")
    asked: list[dict] = []

    async def leave() -> None:
        await asyncio.sleep(0.3)  # the node drains a while, then leaves the directory
        await directory.remove("media-x")

    async def drain(payload: dict) -> dict:
        asked.append(payload)
        asyncio.ensure_future(leave())
        return {"node_id": "media-x", "draining": True}

    bus.register("node.drain", drain)
    await bus.start()
    await directory.publish(NodeInfo(node_id="media-x", roles=("media",), address="127.0.0.1", http_url=None,
                                     load=NodeLoad(), last_seen=datetime.now(UTC)), 30)
    lines: list[str] = []
    try:
        assert await request_drain(settings, "media-x", wait=10, echo=lambda m, err=False: lines.append(m)) == 0
        # the node is told who asked (its audit entry node.drain names them): the OS user and host
        import getpass
        import socket

        assert asked == [{"by": f"{getpass.getuser()}@{socket.gethostname()}"}]
        assert await directory.get("media-x") is None
        assert lines[-1].endswith("media-x has left"), lines
        # a node that is not there: the command fails, says so, exit status 1
        assert await request_drain(settings, "media-gone", wait=0, echo=lambda m, err=False: lines.append(m)) == 1
        assert "did not answer" in lines[-1]
    finally:
        await bus.close()
        await redis.aclose()


async def test_the_single_process_does_not_drain(tmp_path) -> None:
    """No Redis: SIGTERM stops as before (no drain, nothing waited for, the node not marked draining early)."""
    from gbops.app import Platform

    platform = Platform(Settings(data_dir=tmp_path))
    platform.media_node = object()  # even with something in its place, an unclustered node does not drain
    await asyncio.wait_for(platform.drain(), 1)
    assert platform.draining is False
