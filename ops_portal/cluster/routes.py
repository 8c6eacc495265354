"""The cluster API (issue 17): ``GET /api/cluster/nodes``, the live nodes of every role and the worker jobs with
the node holding each one's lease (``system.metrics``, like the other views of how the platform runs).

The portal reads the cluster through ``app.state.cluster`` (a ``cluster.runtime.Cluster``: Redis in cluster
mode, the in-memory directory and leases of the single process otherwise) and the job lease names through
``app.state.cluster_jobs``; the assembly (``gbops.app``) sets both.  Items come from other nodes' heartbeats,
so each one is validated on its own and a malformed one is left out (and logged), never allowed to break the
answer for the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import ValidationError
from redis.exceptions import RedisError

from gbcore.log import get_logger
from ops_portal.cluster.schemas import ClusterJobOut, ClusterNodesOut, NodeLoadOut, NodeOut
from ops_portal.deps import require_permission
from ops_portal.models import User
from ops_portal.schemas import ApiError, error_responses

__all__ = ["DEFAULT_JOBS", "JOB_LABELS", "router", "stale_after"]

log = get_logger("gbops.portal.cluster")

router = APIRouter(tags=["cluster"], responses=error_responses(401, 403, 422))

MetricsReader = Annotated[User, Depends(require_permission("system.metrics"))]

#: What each worker job does, in words (an unknown job shows its lease name).
JOB_LABELS: dict[str, str] = {
    "job:reports": "日报生成 / daily reports",
    "job:tickets": "工单扫描 / ticket scanner",
    "job:quality": "视频质量抽检 / video quality sampling",
    "job:backups": "定时备份 / scheduled backups",
    "job:audit-checkpoint": "审计检查点签名 / audit checkpoint signing",
}
#: The jobs shown when the assembly did not name them (``app.state.cluster_jobs``).
DEFAULT_JOBS: tuple[str, ...] = tuple(JOB_LABELS)

#: How long the answer waits for Redis before saying the cluster state cannot be read.
_READ_TIMEOUT = 5.0


def stale_after(heartbeat: float, node_ttl: float) -> float:
    """Seconds without a heartbeat after which a node is shown as stale: three missed heartbeats, and never
    later than the node's expiry (after which it is not listed at all)."""
    return min(3 * heartbeat, node_ttl)


def _label(name: str, labels: Mapping[str, Any]) -> str:
    """A job's words, "中文 / English": the assembly's (``app.state.cluster_job_labels``: name -> (zh, en) or
    text), else this module's, else the lease name itself."""
    label = labels.get(name)
    if isinstance(label, tuple | list) and len(label) == 2:
        return f"{label[0]} / {label[1]}"
    if isinstance(label, str) and label:
        return label
    return JOB_LABELS.get(name, name)


def _cluster(request: Request) -> Any:
    cluster = getattr(request.app.state, "cluster", None)
    if cluster is None:
        raise ApiError(503, "cluster_unavailable", "集群服务未运行 / the cluster service is not running")
    return cluster


def _node(raw: Any, now: datetime, stale_s: float) -> NodeOut | None:
    """A node's heartbeat as an API item, or None (logged) when it does not have the expected shape."""
    try:
        data = raw.as_json() if hasattr(raw, "as_json") else raw
        if not isinstance(data, Mapping):
            raise TypeError(f"a node item is a {type(data).__name__}")
        load = NodeLoadOut.model_validate(data.get("load") or {"streams": 0, "encoders": 0, "cpu": 0.0})
        node = NodeOut.model_validate({**data, "load": load, "age_s": 0.0, "status": "online"})
    except (ValidationError, TypeError, ValueError, AttributeError) as exc:
        log.warning("cluster.bad_node_item", error=type(exc).__name__, detail=str(exc)[:300])
        return None
    last_seen = node.last_seen if node.last_seen.tzinfo else node.last_seen.replace(tzinfo=UTC)
    age = max(0.0, (now - last_seen).total_seconds())
    status = "draining" if node.draining else ("stale" if age > stale_s else "online")
    return node.model_copy(update={"age_s": round(age, 3), "status": status})


async def _holder(leases: Any, name: str) -> str | None:
    """The node holding lease ``name``; None when none does, or when what the lease holds is not a node id
    (nothing a node writes; logged, and the key's own ttl ends it)."""
    from cluster.nodes import check_node_id

    holder = await leases.holder(name)
    if holder is None:
        return None
    try:
        return check_node_id(holder)
    except ValueError:
        log.warning("cluster.bad_lease_holder", lease=name, holder=repr(holder)[:100])
        return None


@router.get("/api/cluster/nodes", operation_id="cluster_nodes", response_model=ClusterNodesOut,
            summary="集群节点与后台任务 / the cluster's nodes and its worker jobs", responses=error_responses(503))
async def cluster_nodes(request: Request, user: MetricsReader) -> ClusterNodesOut:
    """Every live node of every role (its heartbeat within the node TTL): roles, address, URL, load (streams,
    watermark encoders, CPU as 0..1 of its cores), last heartbeat, draining; `status` is `stale` when the
    last heartbeat is older than `stale_after_s` by this portal's clock.  `jobs`: each worker job and the node
    holding its lease (null: none, a worker takes it over within the lease TTL).  In the single process
    (`clustered` false) the list holds this node only."""
    cluster = _cluster(request)
    state = request.app.state
    settings = state.settings
    jobs = [str(j) for j in (getattr(state, "cluster_jobs", None) or DEFAULT_JOBS)]
    labels = getattr(state, "cluster_job_labels", None) or {}
    clustered = getattr(state, "cluster_clustered", None)
    if clustered is None:
        clustered = getattr(cluster, "clustered", getattr(cluster, "redis", None) is not None)
    heartbeat = float(settings.cluster_heartbeat)
    ttl = float(settings.cluster_node_ttl)
    stale_s = stale_after(heartbeat, ttl)
    try:
        async with asyncio.timeout(_READ_TIMEOUT):
            raw_nodes = await cluster.directory.nodes()
            holders = await asyncio.gather(*(_holder(cluster.leases, name) for name in jobs))
    except TimeoutError:
        log.warning("cluster.read_timeout")
        raise ApiError(503, "cluster_unavailable", "读取集群状态超时（Redis）/ reading the cluster state timed "
                       "out (Redis)") from None
    except (OSError, RedisError) as exc:  # redis-py's own errors do not derive from OSError
        log.warning("cluster.read_failed", error=type(exc).__name__)
        raise ApiError(503, "cluster_unavailable", "无法读取集群状态（Redis）/ cannot read the cluster state "
                       "(Redis)") from None
    now = datetime.now(UTC)
    items = [n for n in (_node(raw, now, stale_s) for raw in raw_nodes) if n is not None]
    return ClusterNodesOut(
        clustered=bool(clustered), this_node=str(cluster.node_id), now=now, heartbeat_s=heartbeat,
        node_ttl_s=ttl, stale_after_s=stale_s, items=items,
        jobs=[ClusterJobOut(name=name, label=_label(name, labels), holder=holder)
              for name, holder in zip(jobs, holders, strict=True)])
