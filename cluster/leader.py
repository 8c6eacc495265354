"""Run a service on exactly one node at a time: the node holding lease ``name``.

Timing (``ttl`` = the lease's time to live): a standby node tries to take the lease every ``ttl/3``
seconds; the holder renews every ``ttl/3`` seconds.  When a renewal is refused (the lease expired and
another node took it) the role is lost at once.  When renewals *fail* (Redis unreachable, timing out) the
holder gives the role up ``ttl*2/3`` seconds after the start of its last successful renewal: the lease can
expire in Redis no earlier than ``ttl`` after that moment, so a node cut off from Redis stops acting before
any other node can take over.  (This assumes the two nodes' clocks advance at about the same rate, not that
they agree.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from gbcore.log import get_logger

from .lease import Leases

__all__ = ["LeasedRole"]

_log = get_logger("gbops.cluster.leader")

Callback = Callable[[], Awaitable[Any]]


class LeasedRole:
    """Call ``on_acquire()`` when this node takes lease ``name`` and ``on_lost()`` when it no longer holds
    it (see the module docstring for the timing).

    Both callbacks run inside the role's loop and should return quickly (start or stop a task): a callback
    that blocks delays the renewals.  An exception in a callback is logged and never ends the loop; when
    ``on_acquire`` fails the lease is released (``on_lost`` is called to undo a partial start) and taken
    again later, so that a node that cannot run the service leaves it to another.
    :meth:`stop`: ``on_lost`` if held, then release the lease so another node takes over at once.
    """

    def __init__(self, leases: Leases, name: str, *, ttl: float, on_acquire: Callback, on_lost: Callback,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be > 0")
        self.leases = leases
        self.name = name
        self.ttl = ttl
        self.on_acquire = on_acquire
        self.on_lost = on_lost
        self.clock = clock
        self.held = False
        self.held_since: datetime | None = None
        self.acquisitions = 0
        self.losses = 0
        self.last_error: str | None = None
        self.last_error_at: datetime | None = None
        self._last_ok: float = 0.0  # monotonic start of the last successful acquire/renew
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def period(self) -> float:
        return self.ttl / 3

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if self.running:
            return
        self._stopping = False
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"leased-role:{self.name}")

    async def stop(self, timeout: float = 2.0) -> None:
        self._stopping = True
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task})
        if self.held:
            await self._lose("stopped")
            try:
                await asyncio.wait_for(self.leases.release(self.name), timeout)
            except Exception as exc:  # the lease expires by itself
                self._error("release", exc)

    def status(self) -> dict[str, Any]:
        return {
            "name": self.name, "running": self.running, "held": self.held, "held_since": self.held_since,
            "ttl": self.ttl, "acquisitions": self.acquisitions, "losses": self.losses,
            "last_error": self.last_error, "last_error_at": self.last_error_at,
        }

    # ------------------------------------------------------------------------------ the loop
    async def _loop(self) -> None:
        while not self._stopping:
            if self.held:
                await asyncio.sleep(self.period)
                await self._renew()
            else:
                if not await self._try_acquire():
                    await asyncio.sleep(self.period)

    async def _try_acquire(self) -> bool:
        started = self.clock()
        try:
            ok = await asyncio.wait_for(self.leases.acquire(self.name, self.ttl), self.period)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._error("acquire", exc)
            return False
        if not ok:
            return False
        self._last_ok = started
        self.held = True
        self.held_since = datetime.now(UTC)
        self.acquisitions += 1
        _log.info("cluster.role_acquired", role=self.name)
        try:
            await self.on_acquire()
        except asyncio.CancelledError:
            raise
        except Exception:
            _log.exception("cluster.role_start_failed", role=self.name)
            await self._lose("start failed")
            try:
                await asyncio.wait_for(self.leases.release(self.name), self.period)
            except Exception as exc:
                self._error("release", exc)
            return False
        return True

    async def _renew(self) -> None:
        """Renew until it succeeds, is refused, or the failures reach ``ttl*2/3`` since the last success."""
        deadline = self._last_ok + self.ttl * 2 / 3
        while self.held and not self._stopping:
            started = self.clock()
            left = deadline - started
            if left <= 0:
                await self._lose("lease unreachable")
                return
            try:
                ok = await asyncio.wait_for(self.leases.renew(self.name, self.ttl), min(left, self.period))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._error("renew", exc)
                await asyncio.sleep(min(self.period / 2, max(0.0, deadline - self.clock())))
                continue
            if ok:
                self._last_ok = started
            else:
                await self._lose("lease taken over")
            return

    async def _lose(self, reason: str) -> None:
        if not self.held:
            return
        self.held = False
        self.held_since = None
        self.losses += 1
        if reason == "stopped":  # a clean stop hands the role over: nothing is wrong
            _log.info("cluster.role_released", role=self.name)
        else:
            _log.warning("cluster.role_lost", role=self.name, reason=reason)
        try:
            await self.on_lost()
        except asyncio.CancelledError:
            raise
        except Exception:
            _log.exception("cluster.role_stop_failed", role=self.name)

    def _error(self, what: str, exc: BaseException) -> None:
        text = f"{type(exc).__name__}: {exc}"
        if text != self.last_error:
            _log.warning("cluster.lease_error", role=self.name, op=what, error=text)
        self.last_error = text
        self.last_error_at = datetime.now(UTC)
