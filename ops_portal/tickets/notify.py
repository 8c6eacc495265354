"""Ticket notifications to an operator's webhook (``GBOPS_TICKET_WEBHOOK_URL``).

Each notification (also stored in the ``notifications`` table for the console) is POSTed as JSON.
Delivery never blocks the caller: :meth:`WebhookNotifier.post` queues the payload and a background task
sends it, retrying with a doubling delay; failures are logged, never raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from gbcore.log import get_logger
from gbcore.periodic import backoff_delay

__all__ = ["WebhookNotifier"]

log = get_logger("gbops.tickets.webhook")


def _send(url: str, body: bytes, timeout: float) -> int:
    req = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json; charset=utf-8"}
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - operator-configured URL
        return int(resp.status)


class WebhookNotifier:
    """Queue-backed JSON POSTs to one URL.  ``url=None`` makes every call a no-op."""

    def __init__(
        self,
        url: str | None,
        *,
        attempts: int = 4,
        first_delay: float = 1.0,
        timeout: float = 5.0,
        max_queue: int = 1000,
    ) -> None:
        if url is not None and urlsplit(url).scheme not in ("http", "https"):
            log.error("ticket.webhook_bad_url", scheme=urlsplit(url).scheme)
            url = None
        self.url = url
        self.attempts = max(1, attempts)
        self.first_delay = first_delay
        self.timeout = timeout
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(max_queue)
        self._task: asyncio.Task[None] | None = None
        self.delivered = 0
        self.failed = 0

    def post(self, payload: dict[str, Any]) -> None:
        """Queue one notification (dropped, with a log line, when the queue is full)."""
        if self.url is None:
            return
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        try:
            self._queue.put_nowait(payload)
        except asyncio.QueueFull:
            self.failed += 1
            log.warning("ticket.webhook_dropped", reason="queue_full", kind=payload.get("kind"))

    async def drain(self) -> None:
        """Wait until everything queued so far was delivered or given up (tests, shutdown)."""
        await self._queue.join()

    async def close(self, grace: float = 5.0) -> None:
        if self._task is None:
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._queue.join(), grace)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(self) -> None:
        while True:
            payload = await self._queue.get()
            try:
                await self._deliver(payload)
            finally:
                self._queue.task_done()

    async def _deliver(self, payload: dict[str, Any]) -> None:
        assert self.url is not None
        body = json.dumps(payload, ensure_ascii=False, default=str).encode()
        for attempt in range(1, self.attempts + 1):
            try:
                status = await asyncio.to_thread(_send, self.url, body, self.timeout)
                if 200 <= status < 300:
                    self.delivered += 1
                    return
                error = f"HTTP {status}"
            except Exception as exc:  # network errors, HTTP errors: log and retry
                error = f"{type(exc).__name__}: {exc}"
            log.warning("ticket.webhook_failed", attempt=attempt, attempts=self.attempts, error=error,
                        kind=payload.get("kind"), ticket_id=payload.get("ticket_id"))
            if attempt < self.attempts:  # first_delay, then doubling (no cap, no jitter)
                await asyncio.sleep(backoff_delay(attempt, base=self.first_delay))
        self.failed += 1
        log.error("ticket.webhook_gave_up", kind=payload.get("kind"), ticket_id=payload.get("ticket_id"))
