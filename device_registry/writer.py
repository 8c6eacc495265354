"""The batching background writer of registry events (:class:`RegistryWriter`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING

from sqlalchemy import exc as sa_exc

from .events import RegistryEvent

if TYPE_CHECKING:
    from .service import Registry

__all__ = ["RegistryWriter"]

log = logging.getLogger("device_registry.service")


def _is_transient(exc: BaseException) -> bool:
    """Errors worth retrying as they are: database unreachable, locked, busy, deadlock."""
    if isinstance(exc, OSError | TimeoutError | sa_exc.TimeoutError | sa_exc.DisconnectionError):
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated or isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
            return True
        sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        # 08 connection, 40 rollback (serialization, deadlock), 53 resources, 57 operator
        if isinstance(sqlstate, str) and sqlstate[:2] in ("08", "40", "53", "57"):
            return True
    return False


class RegistryWriter:
    """Batches registry events from the event loop into :meth:`Registry.apply` calls.

    ``submit`` never blocks.  A background task (``start``) writes a batch when ``max_batch``
    events are waiting, ``max_delay`` seconds after the first waiting event, or on ``flush``.

    Failures: a transient error (database down, locked, deadlock) retries the same batch
    with exponential backoff, for ever.  Any other error is assumed to come from the data:
    the batch size is halved on each failure to isolate the culprit, and a single event that
    still fails after ``max_attempts`` tries is logged at ERROR level with its content and
    kept in :attr:`rejected` (so that nothing is dropped silently and one bad event cannot
    stall the platform).  The queue is not capped: past ``max_queue`` waiting events it
    says so in the log (throttled) and keeps accepting.
    """

    def __init__(
        self,
        registry: Registry,
        *,
        max_batch: int = 1000,
        max_delay: float = 0.2,
        max_queue: int = 100_000,
        max_attempts: int = 3,
        max_backoff: float = 10.0,
        logger: logging.Logger | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self._registry = registry
        self._max_batch = max_batch
        self._max_delay = max_delay
        self._max_queue = max_queue
        self._max_attempts = max_attempts
        self._max_backoff = max_backoff
        self._log = logger or log
        self._queue: deque[RegistryEvent] = deque()
        self._submitted = 0
        self._written = 0
        self._limit = max_batch
        self._wakeup = asyncio.Event()
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._stopped = False
        self._last_queue_warning = 0.0
        #: Events given up on after repeated non-transient failures (see the class docstring).
        self.rejected: list[RegistryEvent] = []
        #: Number of failed batch attempts so far.
        self.failures = 0

    @property
    def pending(self) -> int:
        """Events submitted but not written yet."""
        return len(self._queue)

    @property
    def written(self) -> int:
        """Events handled so far (written, or rejected)."""
        return self._written

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Start the background task (returns at once; idempotent)."""
        if self._stopped or self._stopping:
            raise RuntimeError("RegistryWriter was stopped")
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="registry-writer")

    def submit(self, event: RegistryEvent) -> None:
        """Queue ``event`` for writing.  Never blocks; raises once the writer is stopped."""
        if not isinstance(event, RegistryEvent):
            raise TypeError(f"not a registry event: {event!r}")
        if self._stopped or self._stopping:
            raise RuntimeError("RegistryWriter is stopped; event not accepted")
        self._queue.append(event)
        self._submitted += 1
        size = len(self._queue)
        if size == 1 or size >= self._limit:
            self._wakeup.set()
        if size > self._max_queue:
            now = time.monotonic()
            if now - self._last_queue_warning >= 10.0:
                self._last_queue_warning = now
                self._log.warning(
                    "registry writer is behind: %d events waiting (more than %d); keeping them all",
                    size,
                    self._max_queue,
                )

    async def flush(self) -> None:
        """Wait until every event submitted so far has been handled."""
        target = self._submitted
        if self._written >= target:
            return
        if not self.running:
            raise RuntimeError(
                f"RegistryWriter is not running; {target - self._written} event(s) not written"
            )
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((target, future))
        self._wakeup.set()
        await future

    async def stop(self, grace: float | None = None) -> None:
        """Write everything submitted, then end the background task.

        With ``grace`` (seconds) it gives up waiting (for example while the database is
        down), logs how many events were not written, and cancels the task."""
        if self._stopped:
            return
        self._stopping = True
        self._wakeup.set()
        task = self._task
        try:
            if task is not None:
                try:
                    await asyncio.wait_for(asyncio.shield(task), grace)
                except TimeoutError:
                    self._log.error("registry writer stopped with %d event(s) not written", len(self._queue))
                    task.cancel()
                    try:
                        await task
                    except asyncio.CancelledError:
                        pass
            elif self._queue:
                self._log.error(
                    "registry writer was never started; %d event(s) not written", len(self._queue)
                )
        finally:
            self._stopped = True
            self._fail_waiters()

    def _fail_waiters(self) -> None:
        for _target, future in self._waiters:
            if not future.done():
                future.set_exception(RuntimeError("RegistryWriter stopped before the events were written"))
        self._waiters.clear()

    def _urgent(self) -> bool:
        return self._stopping or bool(self._waiters) or len(self._queue) >= self._limit

    def _advance(self, count: int) -> None:
        for _ in range(count):
            self._queue.popleft()
        self._written += count
        if self._waiters:
            still = []
            for target, future in self._waiters:
                if self._written >= target:
                    if not future.done():
                        future.set_result(None)
                else:
                    still.append((target, future))
            self._waiters = still

    async def _run(self) -> None:
        backoff = 0.0
        head_failures = 0
        while True:
            if not self._queue:
                if self._stopping:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if not self._urgent():
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), self._max_delay)
                except TimeoutError:
                    pass
            size = min(self._limit, len(self._queue))
            batch = [self._queue[i] for i in range(size)]
            try:
                await self._registry.apply(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failures += 1
                if _is_transient(exc):
                    backoff = min(self._max_backoff, max(0.05, backoff * 2))
                    self._log.warning(
                        "registry batch of %d event(s) failed (%s: %s); retrying in %.2fs",
                        size, type(exc).__name__, exc, backoff,
                    )  # fmt: skip
                    await asyncio.sleep(backoff)
                    continue
                if size > 1:
                    self._limit = max(1, size // 2)
                    self._log.exception(
                        "registry batch of %d event(s) failed; retrying in batches of %d", size, self._limit
                    )
                    await asyncio.sleep(0.01)
                    continue
                head_failures += 1
                if head_failures < self._max_attempts:
                    self._log.exception("registry event failed (attempt %d): %r", head_failures, batch[0])
                    await asyncio.sleep(min(self._max_backoff, 0.05 * 2**head_failures))
                    continue
                self._log.error(
                    "registry event rejected after %d attempts, kept in RegistryWriter.rejected: %r",
                    head_failures, batch[0],
                )  # fmt: skip
                self.rejected.append(batch[0])
                head_failures = 0
                self._advance(1)
                continue
            backoff = 0.0
            head_failures = 0
            self._limit = min(self._max_batch, self._limit * 2)
            self._advance(size)
