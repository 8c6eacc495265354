"""One lifecycle for the platform's background loops: start, stop, wake early, back off after failures.

A :class:`PeriodicTask` calls an async function again and again in its own asyncio task:

* the delay before the next run is ``interval`` seconds, or what ``interval()`` returns when it is a
  callable (asked *after* each run: "seconds until the next run at HH:MM" schedules);
* the first run comes after ``first_delay`` seconds (default: one interval; ``0`` runs at once);
* :meth:`PeriodicTask.trigger` wakes the loop early (a trigger that comes while a run is in progress makes
  the next run start right after it); :meth:`PeriodicTask.run_now` does the same and waits for that run;
* an exception in a run is logged (with the task name) and never ends the loop; with a :class:`Backoff` the
  delay after ``n`` consecutive failures is the back-off delay instead of the interval (exponential, capped,
  jittered), and the first success goes back to the interval;
* :meth:`PeriodicTask.stop` lets a run in progress finish within ``grace`` seconds, then cancels the task
  and waits for it to end;
* ``running``, ``busy``, ``last_run``, ``last_success``, ``last_error``, ``failures``, ``runs`` and
  ``next_delay`` (and :meth:`PeriodicTask.status`) are there for status pages.

Pure asyncio: this module belongs to the ground floor and imports no domain package.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gbcore.log import get_logger

__all__ = ["Backoff", "PeriodicTask", "backoff_delay"]

_log = get_logger("gbops.periodic")

Interval = float | Callable[[], float]


def backoff_delay(
    failures: int, *, base: float, cap: float = float("inf"), factor: float = 2.0, jitter: float = 0.0,
    rng: Callable[[], float] = random.random,
) -> float:
    """The delay after the ``failures``-th consecutive failure (``failures >= 1``).

    ``base * factor ** (failures - 1)``, at most ``cap``; with ``jitter`` (0..1) it is then scaled by a
    random factor in ``[1 - jitter, 1]`` so that many clients failing together do not retry together.
    """
    n = max(1, failures)
    try:
        delay = min(cap, base * factor ** (n - 1))
    except OverflowError:
        delay = cap
    if jitter > 0:
        delay *= 1.0 - min(1.0, jitter) * rng()
    return delay


@dataclass(frozen=True)
class Backoff:
    """Jittered exponential back-off: ``base``, ``base * factor``, ... up to ``cap`` seconds."""

    base: float = 1.0
    cap: float = 60.0
    factor: float = 2.0
    jitter: float = 0.5

    def delay(self, failures: int, rng: Callable[[], float] = random.random) -> float:
        return backoff_delay(failures, base=self.base, cap=self.cap, factor=self.factor, jitter=self.jitter,
                             rng=rng)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class PeriodicTask:
    """``func`` every ``interval`` seconds in a background task (see the module docstring).

    ``logger`` (anything with ``.exception(event, **kv)``, e.g. :func:`gbcore.log.get_logger`) and
    ``failure_event`` name the log line of a failed run; by default ``gbops.periodic`` /
    ``periodic.run_failed``.  The line carries ``task=<name>`` and ``failures=<consecutive failures>``.
    """

    def __init__(
        self,
        name: str,
        func: Callable[[], Awaitable[Any]],
        *,
        interval: Interval,
        first_delay: float | None = None,
        backoff: Backoff | None = None,
        logger: Any = None,
        failure_event: str = "periodic.run_failed",
        clock: Callable[[], datetime] = _utcnow,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.name = name
        self.func = func
        self.interval = interval
        self.first_delay = first_delay
        self.backoff = backoff
        self.log = logger if logger is not None else _log
        self.failure_event = failure_event
        self.clock = clock
        self.rng = rng
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._waiters: list[asyncio.Future[None]] = []
        # state for status pages
        self.busy = False
        self.runs = 0
        self.failures = 0  # consecutive; 0 after a success
        self.last_run: datetime | None = None  # when the last run started
        self.last_success: datetime | None = None  # when the last successful run ended
        self.last_error: str | None = None  # the last failure ("Type: message"); kept after a success
        self.last_error_at: datetime | None = None
        self.next_delay: float | None = None  # the delay chosen before the next run

    # ------------------------------------------------------------------------------ lifecycle
    @property
    def running(self) -> bool:
        """Started, and neither stopped nor ended."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start the loop (in the running event loop); a no-op while it runs."""
        if self.running:
            return
        self._stopping = False
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=self.name)
        self._task.add_done_callback(self._ended)

    async def stop(self, grace: float = 0.0) -> None:
        """Stop the loop: a run in progress may finish within ``grace`` seconds, then the task is cancelled;
        returns when it has ended.  A no-op when it was not started."""
        task = self._task
        if task is None:
            return
        self._stopping = True
        if not task.done():
            if grace > 0 and self.busy:
                await asyncio.wait({task}, timeout=grace)  # the loop returns after the run
            task.cancel()
            await asyncio.wait({task})
        self._task = None
        self._fail_waiters(RuntimeError(f"periodic task {self.name} stopped"))

    def trigger(self) -> None:
        """Wake the loop: the next run starts now (or right after the one in progress)."""
        self._wake.set()

    async def run_now(self) -> None:
        """Trigger a run and wait for it to end; raises what the run raised (also logged as usual)."""
        if not self.running or self._stopping:
            raise RuntimeError(f"periodic task {self.name} is not running")
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self.trigger()
        await waiter

    def status(self) -> dict[str, Any]:
        return {
            "name": self.name, "running": self.running, "busy": self.busy, "runs": self.runs,
            "failures": self.failures, "last_run": self.last_run, "last_success": self.last_success,
            "last_error": self.last_error, "last_error_at": self.last_error_at, "next_delay": self.next_delay,
        }

    # ------------------------------------------------------------------------------ the loop
    def _interval(self) -> float:
        return float(self.interval() if callable(self.interval) else self.interval)

    async def _loop(self) -> None:
        delay = self._interval() if self.first_delay is None else self.first_delay
        while not self._stopping:
            self.next_delay = delay
            await self._wait(delay)
            if self._stopping:
                return
            delay = await self._run_once()

    async def _wait(self, delay: float) -> None:
        if delay > 0 and not self._wake.is_set():
            try:
                await asyncio.wait_for(self._wake.wait(), delay)
            except TimeoutError:
                pass
        else:
            await asyncio.sleep(0)
        self._wake.clear()

    async def _run_once(self) -> float:
        """One run; returns the delay before the next one."""
        waiters, self._waiters = self._waiters, []
        self.busy = True
        self.last_run = self.clock()
        error: Exception | None = None
        try:
            await self.func()
        except asyncio.CancelledError:
            for w in waiters:
                w.cancel()
            raise
        except Exception as exc:
            error = exc
            self.failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            self.last_error_at = self.clock()
            self.log.exception(self.failure_event, task=self.name, failures=self.failures)
        else:
            self.failures = 0
            self.last_success = self.clock()
        finally:
            self.busy = False
        self.runs += 1
        for w in waiters:
            if not w.done():
                if error is None:
                    w.set_result(None)
                else:
                    w.set_exception(error)
        if error is not None and self.backoff is not None:
            return self.backoff.delay(self.failures, self.rng)
        return self._interval()

    def _ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:  # the interval callable (or a BaseException from the run) ended the loop
            self.last_error = f"{type(exc).__name__}: {exc}"
            self.last_error_at = self.clock()
            self.log.error("periodic.ended", task=self.name, error=self.last_error)
            self._fail_waiters(exc)

    def _fail_waiters(self, exc: BaseException) -> None:
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            if not w.done():
                w.set_exception(exc)
