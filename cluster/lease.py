"""Leases: a named, expiring token held by one node at a time (a worker job, a stream's ownership).

The holder renews before the ttl runs out; a node that dies (or loses Redis) stops renewing and another
node takes the lease over once it expires.  Renewing and releasing compare the holder first, atomically
(Lua on Redis), so a node whose lease expired and was taken over can never extend or delete the new
holder's lease.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, Protocol

from .keys import RedisKeys, check_part

__all__ = ["LeaseTable", "Leases", "LocalLeases", "RedisLeases"]


class Leases(Protocol):
    owner: str

    async def acquire(self, name: str, ttl: float) -> bool: ...
    async def renew(self, name: str, ttl: float) -> bool: ...
    async def release(self, name: str) -> bool: ...
    async def holder(self, name: str) -> str | None: ...
    async def transfer(self, name: str, new_owner: str, ttl: float) -> bool: ...


def _ttl_ms(ttl: float) -> int:
    if not isinstance(ttl, (int, float)) or not math.isfinite(ttl) or ttl <= 0:
        raise ValueError(f"lease ttl must be > 0 seconds, not {ttl!r}")
    return max(1, math.ceil(ttl * 1000))


# KEYS[1] the lease, ARGV[1] owner, ARGV[2] ttl in ms
_ACQUIRE = """
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if cur then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
# KEYS[1] the lease, ARGV[1] owner, ARGV[2] the new owner, ARGV[3] ttl in ms
_TRANSFER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""


class RedisLeases:
    """Leases in Redis: key ``lease:<name>`` holds the owner's node id with a PX ttl."""

    def __init__(self, redis: Any, keys: RedisKeys, owner: str) -> None:
        self.redis = redis
        self.keys = keys
        self.owner = check_part(owner)
        self._acquire = redis.register_script(_ACQUIRE)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)
        self._transfer = redis.register_script(_TRANSFER)

    def _key(self, name: str) -> str:
        return self.keys("lease", name)

    async def acquire(self, name: str, ttl: float) -> bool:
        """Take lease ``name`` for ``ttl`` seconds: True when it was free, or already ours (then the ttl
        starts again); False when another node holds it."""
        return bool(await self._acquire(keys=[self._key(name)], args=[self.owner, _ttl_ms(ttl)]))

    async def renew(self, name: str, ttl: float) -> bool:
        """Extend our lease to ``ttl`` from now; False when it is not ours (expired, taken over)."""
        return bool(await self._renew(keys=[self._key(name)], args=[self.owner, _ttl_ms(ttl)]))

    async def release(self, name: str) -> bool:
        """Give the lease up at once; False (and nothing deleted) when it is not ours."""
        return bool(await self._release(keys=[self._key(name)], args=[self.owner]))

    async def transfer(self, name: str, new_owner: str, ttl: float) -> bool:
        """Hand our lease to ``new_owner`` for ``ttl`` seconds, in one step (a draining media node gives a
        channel to the node that takes its viewers over: the key never lapses in between, so no third node
        can take the channel meanwhile); False (and nothing changed) when it is not ours."""
        return bool(await self._transfer(keys=[self._key(name)],
                                         args=[self.owner, check_part(new_owner), _ttl_ms(ttl)]))

    async def holder(self, name: str) -> str | None:
        raw = await self.redis.get(self._key(name))
        if raw is None:
            return None
        if isinstance(raw, bytes):
            return raw.decode("utf-8", "replace")
        return str(raw)


class LeaseTable:
    """The in-memory lease table: one per process, or shared by several :class:`LocalLeases` so that a
    test can play two nodes; ``clock`` (``time.monotonic`` by default) decides expiry."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.entries: dict[str, tuple[str, float]] = {}  # name -> (owner, expires at)

    def current(self, name: str) -> str | None:
        entry = self.entries.get(name)
        if entry is None:
            return None
        if entry[1] <= self.clock():
            del self.entries[name]
            return None
        return entry[0]


class LocalLeases:
    """Leases in memory with :class:`RedisLeases`' semantics (the single process, tests)."""

    def __init__(self, owner: str, table: LeaseTable | None = None, *,
                 clock: Callable[[], float] | None = None) -> None:
        self.owner = check_part(owner)
        if table is None:
            table = LeaseTable(clock) if clock is not None else LeaseTable()
        self.table = table

    async def acquire(self, name: str, ttl: float) -> bool:
        check_part(name)
        ms = _ttl_ms(ttl)
        current = self.table.current(name)
        if current is not None and current != self.owner:
            return False
        self.table.entries[name] = (self.owner, self.table.clock() + ms / 1000)
        return True

    async def renew(self, name: str, ttl: float) -> bool:
        check_part(name)
        ms = _ttl_ms(ttl)
        if self.table.current(name) != self.owner:
            return False
        self.table.entries[name] = (self.owner, self.table.clock() + ms / 1000)
        return True

    async def release(self, name: str) -> bool:
        check_part(name)
        if self.table.current(name) != self.owner:
            return False
        del self.table.entries[name]
        return True

    async def transfer(self, name: str, new_owner: str, ttl: float) -> bool:
        check_part(name)
        check_part(new_owner)
        ms = _ttl_ms(ttl)
        if self.table.current(name) != self.owner:
            return False
        self.table.entries[name] = (new_owner, self.table.clock() + ms / 1000)
        return True

    async def holder(self, name: str) -> str | None:
        check_part(name)
        return self.table.current(name)
