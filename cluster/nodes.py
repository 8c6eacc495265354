"""Who is in the cluster: every node publishes a :class:`NodeInfo` with a time to live (its heartbeat); a
node that stops publishing drops out once the ttl runs out, a node that stops cleanly removes itself.

Redis layout (under the platform's prefix): ``node:<id>`` holds the node's JSON with a PX ttl, and the
sorted set ``nodes`` indexes the ids (score: last seen, Unix seconds) so that listing needs no ``SCAN``;
ids whose key has expired are pruned from the index when it is read.  Everything read back is validated:
an entry that does not parse is skipped (and logged once), never allowed to break the listing.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from gbcore.log import get_logger
from gbcore.periodic import Backoff, PeriodicTask

from .keys import RedisKeys

__all__ = [
    "NODE_ID_RE", "Heartbeat", "LocalNodeDirectory", "NodeDirectory", "NodeInfo", "NodeLoad",
    "RedisNodeDirectory", "check_node_id",
]

_log = get_logger("gbops.cluster.nodes")

NODE_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
"""A node id: 1..64 characters of ``A-Z a-z 0-9 . _ -`` (it is part of Redis keys and of URLs)."""

_MAX_ROLES = 16
_MAX_TEXT = 512  # address, http_url, role names
_MAX_ENTRY = 16 * 1024  # bytes of one node's JSON: far above a real entry


def check_node_id(node_id: Any) -> str:
    """``node_id`` when it is a valid node id, else ValueError."""
    if not isinstance(node_id, str) or NODE_ID_RE.fullmatch(node_id) is None:
        raise ValueError(f"invalid node id {node_id!r}: 1..64 characters of A-Z a-z 0-9 . _ -")
    return node_id


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _text(value: Any, name: str, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or len(value) > _MAX_TEXT:
        raise ValueError(f"{name}: expected a string of at most {_MAX_TEXT} characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ValueError(f"{name}: control characters")
    return value


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name}: expected a number")
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{name}: expected a finite number >= 0")
    return number


def _count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10**9:
        raise ValueError(f"{name}: expected an integer 0..1e9")
    return value


def _instant(value: Any, name: str) -> datetime:
    """An ISO 8601 instant with an offset, as UTC (a naive time would be ambiguous between nodes)."""
    if not isinstance(value, str) or len(value) > 64:
        raise ValueError(f"{name}: expected an ISO 8601 time")
    try:
        moment = datetime.fromisoformat(value)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"{name}: {exc}") from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name}: the time has no UTC offset")
    try:
        return moment.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"{name}: {exc}") from None


@dataclass(frozen=True)
class NodeLoad:
    """What a node carries now: upstreams relayed, watermark encoders, CPU (0..1 of the node's cores)."""

    streams: int = 0
    encoders: int = 0
    cpu: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {"streams": self.streams, "encoders": self.encoders, "cpu": self.cpu}

    @classmethod
    def from_json(cls, data: Any) -> NodeLoad:
        if not isinstance(data, dict):
            raise ValueError("load: expected an object")
        return cls(
            streams=_count(data.get("streams", 0), "load.streams"),
            encoders=_count(data.get("encoders", 0), "load.encoders"),
            cpu=min(1.0, _number(data.get("cpu", 0.0), "load.cpu")),
        )


@dataclass(frozen=True)
class NodeInfo:
    """One node as the others see it (and as ``GET /api/cluster/nodes`` lists it, see :meth:`as_json`)."""

    node_id: str
    roles: tuple[str, ...]
    address: str
    http_url: str | None = None
    load: NodeLoad = field(default_factory=NodeLoad)
    last_seen: datetime = field(default_factory=_utcnow)
    draining: bool = False
    started: datetime = field(default_factory=_utcnow)

    def as_json(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "roles": list(self.roles),
            "address": self.address,
            "http_url": self.http_url,
            "load": self.load.as_json(),
            "last_seen": self.last_seen.astimezone(UTC).isoformat(),
            "draining": self.draining,
            "started": self.started.astimezone(UTC).isoformat(),
        }

    @classmethod
    def from_json(cls, data: Any) -> NodeInfo:
        """Parse :meth:`as_json`'s output, or its JSON text (``str``/``bytes``), validating every field:
        raises ValueError, and nothing else, on anything else."""
        if isinstance(data, (bytes, bytearray, memoryview)):
            data = bytes(data)
            if len(data) > _MAX_ENTRY:
                raise ValueError("node entry too large")
            try:
                data = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(f"node entry is not UTF-8: {exc}") from None
        if isinstance(data, str):
            if len(data) > _MAX_ENTRY:
                raise ValueError("node entry too large")
            try:
                data = json.loads(data)
            except (ValueError, RecursionError) as exc:
                raise ValueError(f"node entry is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError("node entry: expected an object")
        try:
            node_id = check_node_id(data.get("node_id"))
            roles = data.get("roles")
            if not isinstance(roles, list) or len(roles) > _MAX_ROLES:
                raise ValueError(f"roles: expected a list of at most {_MAX_ROLES} strings")
            draining = data.get("draining", False)
            if not isinstance(draining, bool):
                raise ValueError("draining: expected true or false")
            return cls(
                node_id=node_id,
                roles=tuple(str(_text(r, "roles")) for r in roles),
                address=str(_text(data.get("address"), "address")),
                http_url=_text(data.get("http_url"), "http_url", optional=True),
                load=NodeLoad.from_json(data.get("load", {})),
                last_seen=_instant(data.get("last_seen"), "last_seen"),
                draining=draining,
                started=_instant(data.get("started"), "started"),
            )
        except ValueError:
            raise
        except Exception as exc:  # a last line of defence: hostile input raises ValueError only
            raise ValueError(f"node entry: {type(exc).__name__}: {exc}") from None

    def encode(self) -> bytes:
        return json.dumps(self.as_json(), ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class NodeDirectory(Protocol):
    async def publish(self, info: NodeInfo, ttl: float) -> None: ...
    async def nodes(self) -> list[NodeInfo]: ...
    async def get(self, node_id: str) -> NodeInfo | None: ...
    async def remove(self, node_id: str) -> None: ...


def _ttl_ms(ttl: float) -> int:
    if not math.isfinite(ttl) or ttl <= 0:
        raise ValueError(f"ttl must be > 0 seconds, not {ttl!r}")
    return max(1, math.ceil(ttl * 1000))


class _LogOnce:
    """Log a bad entry once per (node id, content), not on every listing; bounded memory."""

    def __init__(self, limit: int = 256) -> None:
        self.seen: set[tuple[str, int]] = set()
        self.limit = limit

    def __call__(self, node_id: str, raw: Any, error: str) -> None:
        mark = (node_id, hash(raw))
        if mark in self.seen:
            return
        if len(self.seen) >= self.limit:
            self.seen.clear()
        self.seen.add(mark)
        _log.warning("cluster.node_entry_invalid", node_id=node_id[:80], error=error[:200])


# KEYS[1] the index, KEYS[2..n+1] the node keys of ARGV[1..n]: drop ids whose key has expired -- checked
# here, atomically, so that a node re-publishing right after the listing read is not dropped.
_PRUNE = """
local removed = 0
for i, id in ipairs(ARGV) do
  if redis.call('EXISTS', KEYS[i + 1]) == 0 then
    removed = removed + redis.call('ZREM', KEYS[1], id)
  end
end
return removed
"""


class RedisNodeDirectory:
    """The directory in Redis (layout in the module docstring)."""

    def __init__(self, redis: Any, keys: RedisKeys) -> None:
        self.redis = redis
        self.keys = keys
        self._bad = _LogOnce()
        self._prune = redis.register_script(_PRUNE)

    async def publish(self, info: NodeInfo, ttl: float) -> None:
        node_id = check_node_id(info.node_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self.keys("node", node_id), info.encode(), px=_ttl_ms(ttl))
            pipe.zadd(self.keys("nodes"), {node_id: info.last_seen.timestamp()})
            await pipe.execute()

    async def remove(self, node_id: str) -> None:
        check_node_id(node_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.keys("node", node_id))
            pipe.zrem(self.keys("nodes"), node_id)
            await pipe.execute()

    async def get(self, node_id: str) -> NodeInfo | None:
        try:
            check_node_id(node_id)
        except ValueError:
            return None
        raw = await self.redis.get(self.keys("node", node_id))
        if raw is None:
            return None
        return self._parse(node_id, raw)

    async def nodes(self) -> list[NodeInfo]:
        index = self.keys("nodes")
        members = await self.redis.zrange(index, 0, -1)
        ids: list[str] = []
        invalid: list[Any] = []
        for member in members:
            try:
                ids.append(check_node_id(member.decode("utf-8") if isinstance(member, bytes) else member))
            except (ValueError, UnicodeDecodeError):
                invalid.append(member)  # not a node id: never ours, drop it from the index
        found: list[NodeInfo] = []
        expired: list[str] = []
        if ids:
            values = await self.redis.mget([self.keys("node", i) for i in ids])
            for node_id, raw in zip(ids, values, strict=True):
                if raw is None:
                    expired.append(node_id)  # its key expired: the node is gone
                    continue
                info = self._parse(node_id, raw)
                if info is not None:
                    found.append(info)
        if invalid:
            await self.redis.zrem(index, *invalid)
        if expired:
            await self._prune(keys=[index, *(self.keys("node", i) for i in expired)], args=expired)
        found.sort(key=lambda n: n.node_id)
        return found

    def _parse(self, node_id: str, raw: Any) -> NodeInfo | None:
        try:
            info = NodeInfo.from_json(raw)
        except ValueError as exc:
            self._bad(node_id, raw, str(exc))
            return None
        if info.node_id != node_id:  # an entry posing as another node
            self._bad(node_id, raw, f"entry names node {info.node_id}")
            return None
        return info


class LocalNodeDirectory:
    """The directory of the single process (or of several simulated nodes in a test): in memory, with
    the same ttl semantics, expiry measured by ``clock`` (``time.monotonic`` by default)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._entries: dict[str, tuple[NodeInfo, float]] = {}

    async def publish(self, info: NodeInfo, ttl: float) -> None:
        node_id = check_node_id(info.node_id)
        self._entries[node_id] = (info, self.clock() + _ttl_ms(ttl) / 1000)

    async def remove(self, node_id: str) -> None:
        self._entries.pop(node_id, None)

    async def get(self, node_id: str) -> NodeInfo | None:
        entry = self._entries.get(node_id)
        if entry is None:
            return None
        if entry[1] <= self.clock():
            self._entries.pop(node_id, None)
            return None
        return entry[0]

    async def nodes(self) -> list[NodeInfo]:
        now = self.clock()
        for node_id in [k for k, (_, expires) in self._entries.items() if expires <= now]:
            del self._entries[node_id]
        return sorted((info for info, _ in self._entries.values()), key=lambda n: n.node_id)


class Heartbeat:
    """Publish ``info()`` every ``interval`` seconds with ``ttl`` (stamped ``last_seen`` = now).

    A failed publish (Redis down) is logged by the periodic task and retried, after a short back-off
    never longer than the interval: a node must not crash, nor go quiet for long, because Redis blinked.
    :meth:`stop` removes the entry, so a clean stop disappears from the directory at once.
    """

    def __init__(self, directory: NodeDirectory, info: Callable[[], NodeInfo], *, interval: float,
                 ttl: float, clock: Callable[[], datetime] = _utcnow) -> None:
        if interval <= 0 or ttl <= 0:
            raise ValueError("interval and ttl must be > 0")
        self.directory = directory
        self.info = info
        self.interval = interval
        self.ttl = ttl
        self.clock = clock
        self.node_id: str | None = None
        self.task = PeriodicTask(
            "cluster.heartbeat", self.beat, interval=interval, first_delay=0,
            backoff=Backoff(base=min(0.5, interval), cap=interval, jitter=0.3), logger=_log,
            failure_event="cluster.heartbeat_failed",
        )

    async def beat(self) -> None:
        info = replace(self.info(), last_seen=self.clock())
        self.node_id = info.node_id
        await self.directory.publish(info, self.ttl)

    def start(self) -> None:
        self.task.start()

    async def stop(self, timeout: float = 2.0) -> None:
        await self.task.stop()
        node_id = self.node_id
        if node_id is None:
            try:
                node_id = self.info().node_id
            except Exception:
                return
        try:
            await asyncio.wait_for(self.directory.remove(node_id), timeout)
        except Exception as exc:  # Redis down at shutdown: the ttl removes us instead
            _log.warning("cluster.heartbeat_remove_failed", node_id=node_id, error=f"{type(exc).__name__}: {exc}")

    def status(self) -> dict[str, Any]:
        return {**self.task.status(), "interval": self.interval, "ttl": self.ttl}
