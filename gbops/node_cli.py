"""``gbops node drain --node <id>``: ask a cluster node to drain and stop, as SIGTERM on its host would.

Registered in :mod:`gbops.cli` as the ``node`` group. The command goes over the cluster's command bus
(``node.drain``, :meth:`gbops.app.Platform._cluster_media_start`): a media node moves its viewers to other
media nodes make-before-break (at most ``GBOPS_DRAIN_TIMEOUT``), then exits; another node just stops. With
``--wait`` the command returns once the node has left the node directory. Exit status: 0 done, 1 the node
did not answer or did not leave in time, 2 bad settings or no cluster (``GBOPS_REDIS_URL`` unset).
"""

from __future__ import annotations

import asyncio
import secrets
import time

import typer

node_app = typer.Typer(help="集群节点 / cluster nodes", no_args_is_help=True, add_completion=False)


@node_app.callback()
def node_group() -> None:
    """集群节点 / cluster nodes."""


def _operator() -> str:
    """Who asked, for the node's audit entry: the OS user and host running the command."""
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown"
    return f"{user}@{socket.gethostname()}"[:128]


async def request_drain(settings, node_id: str, *, wait: float, echo=typer.echo) -> int:
    """Send ``node.drain`` to ``node_id``; with ``wait`` > 0, wait (that long) until it left the directory."""
    from cluster.bus import BusError, RedisCommandBus
    from cluster.client import connect
    from cluster.keys import RedisKeys
    from cluster.nodes import RedisNodeDirectory

    redis = connect(settings.redis_url.get_secret_value())
    keys = RedisKeys(settings.redis_prefix)
    bus = RedisCommandBus(redis, keys, f"cli-{secrets.token_hex(4)}")
    try:
        try:
            await bus.call(node_id, "node.drain", {"by": _operator()}, timeout=settings.cluster_rpc_timeout)
        except BusError as exc:
            echo(f"节点未应答 / the node did not answer: {node_id}: {exc}", err=True)
            return 1
        echo(f"节点正在排空 / node {node_id} is draining")
        if wait <= 0:
            return 0
        directory = RedisNodeDirectory(redis, keys)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if await directory.get(node_id) is None:
                echo(f"节点已退出 / node {node_id} has left")
                return 0
            await asyncio.sleep(0.5)  # the directory announces nothing: look again
        echo(f"节点未在 {wait:g} 秒内退出 / node {node_id} did not leave within {wait:g} s", err=True)
        return 1
    finally:
        await bus.close()
        await redis.aclose()


@node_app.command("drain")
def node_drain(
    node: str = typer.Option(..., "--node", help="节点编号 / the node id (GET /api/cluster/nodes)"),
    wait: float = typer.Option(0.0, "--wait", help="等待节点退出的秒数（0：不等）/ wait this long for the node to "
                               "leave (0: do not wait)"),
) -> None:
    """排空并停止一个集群节点 / Drain a cluster node and stop it (a media node first moves its viewers)."""
    from gbcore.log import setup_logging
    from gbops.cli import _settings

    settings = _settings()
    if not settings.clustered:
        typer.echo("未配置集群（GBOPS_REDIS_URL）/ not a cluster: GBOPS_REDIS_URL is not set", err=True)
        raise typer.Exit(2)
    setup_logging("WARNING")
    raise typer.Exit(asyncio.run(request_drain(settings, node, wait=wait)))
