"""The node in its cluster (issue 17): its heartbeat in the node directory and the worker jobs it runs under
leases.

Single process (no Redis): the same objects over the in-memory directory and leases, so the one node holds every
lease at once and runs every job, as before.  Cluster: each worker job (daily reports, the ticket scanner with
the quality sampler, backups, the audit log's checkpoint signer) runs on exactly one node with the ``worker``
role at a time; when that node dies its lease expires and another worker node takes the job over
(``cluster.leader.LeasedRole``).  Jobs make up what they missed when they start (the report scheduler generates a
missing day's report once; it never makes a day twice because it checks the reports table first).
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gbcore.log import get_logger

log = get_logger("gbops.cluster")

#: The worker jobs, each under its own lease, with the words the console shows.
JOBS: dict[str, tuple[str, str]] = {
    "job:reports": ("日报生成", "daily reports"),
    "job:tickets": ("工单扫描与画面质量抽检", "ticket scanner and picture-quality sampler"),
    "job:backups": ("定时备份", "scheduled backups"),
    "job:audit-checkpoint": ("审计检查点签名", "audit checkpoint signer"),
}


class CpuMeter:
    """This process's CPU use since the previous reading, as a share of the machine's cores (0..1)."""

    def __init__(self) -> None:
        self.cores = os.cpu_count() or 1
        self._last = (time.monotonic(), time.process_time())

    def read(self) -> float:
        now, cpu = time.monotonic(), time.process_time()
        (then, cpu_then), self._last = self._last, (now, cpu)
        wall = now - then
        if wall <= 0:
            return 0.0
        return max(0.0, min(1.0, (cpu - cpu_then) / wall / self.cores))


def node_address(settings: Any) -> str:
    """The address other nodes and devices know this node by (media: where RTP arrives; SIP: what devices reach)."""
    roles = settings.role_set
    for candidate in (
        settings.media_ip if "media" in roles else None,
        settings.sip_advertised_address if "sip" in roles else None,
        settings.media_host if "media" in roles else None,
        settings.sip_host if "sip" in roles else None,
        settings.http_host,
    ):
        if candidate and candidate not in ("0.0.0.0", "::"):
            return candidate
    return socket.gethostname()


def node_info_source(platform: Any) -> Callable[[], Any]:
    """A function that describes this node now (called at every heartbeat)."""
    from cluster.nodes import NodeInfo, NodeLoad

    s = platform.settings
    meter = CpuMeter()
    started = datetime.now(UTC)
    roles = tuple(r for r in ("sip", "media", "portal", "worker") if r in s.role_set)
    address = node_address(s)

    def info() -> NodeInfo:
        streams = encoders = 0
        media = platform.media if "media" in s.role_set else None
        if media is not None:
            try:
                streams = len(media.describe_streams())
                hub = getattr(media, "transforms", None)
                slots = getattr(hub, "slots", None)
                encoders = math.ceil(float(getattr(slots, "in_use", 0) or 0))  # sub-streams count their share
            except Exception:  # a status read must never stop the heartbeat
                log.exception("cluster.load_read_failed")
        return NodeInfo(node_id=platform.cluster.node_id, roles=roles, address=address,
                        http_url=platform.public_url, load=NodeLoad(streams=streams, encoders=encoders,
                                                                    cpu=round(meter.read(), 3)),
                        last_seen=datetime.now(UTC), draining=bool(getattr(platform, "draining", False)),
                        started=started)

    return info


@dataclass
class LeasedJob:
    """One worker job: ``start`` builds and starts it when this node takes the lease, ``stop`` ends it when the
    lease is lost or the node stops."""

    name: str
    start: Callable[[], Awaitable[Any]]
    stop: Callable[[Any], Awaitable[None]]
    running: Any = None


@dataclass
class WorkerJobs:
    """The worker jobs of this node, each under its lease."""

    cluster: Any
    ttl: float
    jobs: list[LeasedJob] = field(default_factory=list)
    roles: list[Any] = field(default_factory=list)

    def add(self, name: str, start: Callable[[], Awaitable[Any]], stop: Callable[[Any], Awaitable[None]]) -> None:
        self.jobs.append(LeasedJob(name, start, stop))

    def start(self) -> None:
        from cluster.leader import LeasedRole

        for job in self.jobs:
            role = LeasedRole(self.cluster.leases, job.name, ttl=self.ttl, on_acquire=self._acquire(job),
                              on_lost=self._lose(job))
            self.roles.append(role)
            role.start()

    def _acquire(self, job: LeasedJob) -> Callable[[], Awaitable[None]]:
        async def acquire() -> None:
            if job.running is None:
                job.running = await job.start()
                log.info("cluster.job_taken", job=job.name, node=self.cluster.node_id)
        return acquire

    def _lose(self, job: LeasedJob) -> Callable[[], Awaitable[None]]:
        async def lose() -> None:
            running, job.running = job.running, None
            if running is not None:
                await job.stop(running)
                log.info("cluster.job_released", job=job.name, node=self.cluster.node_id)
        return lose

    def get(self, name: str) -> Any:
        """The running object of job ``name`` on this node (None: another node holds it)."""
        return next((j.running for j in self.jobs if j.name == name), None)

    async def stop(self) -> None:
        for role in reversed(self.roles):
            await role.stop()  # on_lost (the job stops), then the lease is released for another node
        self.roles.clear()
