"""Open this node's cluster: on Redis in cluster mode (``GBOPS_REDIS_URL`` set), in memory otherwise."""

from __future__ import annotations

import secrets
import socket
from dataclasses import dataclass
from typing import Any

from gbcore.log import get_logger

from .bus import CommandBus, LocalCommandBus, LocalNetwork, RedisCommandBus
from .client import connect, redacted_url
from .keys import RedisKeys
from .lease import Leases, LeaseTable, LocalLeases, RedisLeases
from .nodes import NODE_ID_RE, LocalNodeDirectory, NodeDirectory, RedisNodeDirectory, check_node_id

__all__ = ["Cluster", "generate_node_id", "open_cluster", "resolve_node_id"]

_log = get_logger("gbops.cluster")


@dataclass
class Cluster:
    """This node's view of the cluster.  ``redis`` is the client (None in the single process); ``keys``
    builds every key under the configured prefix (None in the single process)."""

    node_id: str
    directory: NodeDirectory
    leases: Leases
    bus: CommandBus
    redis: Any | None = None
    keys: RedisKeys | None = None

    @property
    def clustered(self) -> bool:
        return self.redis is not None

    async def close(self) -> None:
        """Close the bus, then the Redis client (errors logged: this runs at shutdown)."""
        try:
            await self.bus.close()
        except Exception:
            _log.exception("cluster.bus_close_failed")
        if self.redis is not None:
            try:
                await self.redis.aclose()
            except Exception:
                _log.exception("cluster.redis_close_failed")


def generate_node_id() -> str:
    """``node-<hostname>-<8 hex>``: readable in logs, unique across restarts on the same host."""
    host = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "-" for c in socket.gethostname())
    host = host.strip("-.")[:40] or "host"
    return f"node-{host}-{secrets.token_hex(4)}"


def resolve_node_id(configured: str | None) -> str:
    """The configured id (validated: 1..64 characters of A-Z a-z 0-9 . _ -) or a generated one."""
    if configured is None or configured == "":
        node_id = generate_node_id()
        assert NODE_ID_RE.fullmatch(node_id)
        return node_id
    try:
        return check_node_id(configured)
    except ValueError:
        raise ValueError(f"GBOPS_NODE_ID 无效 / invalid node id {configured!r}: "
                         "1..64 characters of A-Z a-z 0-9 . _ -") from None


async def open_cluster(settings: Any) -> Cluster:
    """The cluster of this node.  In cluster mode Redis must answer (raises ConnectionError otherwise,
    naming the Redis without its password); the bus is not started: register the handlers, then
    ``await cluster.bus.start()``."""
    node_id = resolve_node_id(getattr(settings, "node_id", None))
    if not settings.clustered:
        return Cluster(node_id=node_id, directory=LocalNodeDirectory(), leases=LocalLeases(node_id, LeaseTable()),
                       bus=LocalCommandBus(node_id, LocalNetwork()))
    url = settings.redis_url.get_secret_value()
    keys = RedisKeys(settings.redis_prefix)
    redis = connect(url)
    try:
        await redis.ping()
    except Exception as exc:
        await redis.aclose()
        raise ConnectionError(f"Redis 不可用 / Redis not reachable at {redacted_url(url)}: "
                              f"{type(exc).__name__}") from None
    _log.info("cluster.connected", node_id=node_id, redis=redacted_url(url), prefix=settings.redis_prefix)
    return Cluster(
        node_id=node_id, directory=RedisNodeDirectory(redis, keys), leases=RedisLeases(redis, keys, node_id),
        bus=RedisCommandBus(redis, keys, node_id, liveness_ttl=float(settings.cluster_node_ttl)),
        redis=redis, keys=keys,
    )
