"""Reassembling a device's catalog from many MESSAGEs (sans-IO).

NVRs answer one Catalog query with ``SumNum`` items spread over several MESSAGEs (some send one item
per MESSAGE, some pages of a few). Pages are matched to the sync by device id and SN, items are kept
by channel id (so a retransmitted page adds nothing), and the sync completes when ``SumNum`` distinct
items arrived. A sync that stalls past its timeout completes as *partial*: what arrived is kept, and
channels not reported are NOT marked removed, since their absence proves nothing.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any


@dataclass
class CatalogSync:
    device_id: str
    sn: int
    started_at: float
    deadline: float
    expected: int | None = None
    items: dict[str, Any] = field(default_factory=dict)
    pages: int = 0
    done: bool = False
    complete: bool = False

    @property
    def received(self) -> int:
        return len(self.items)

    def state(self) -> str:
        total = "?" if self.expected is None else str(self.expected)
        if not self.done:
            return f"running {self.received}/{total}"
        if self.complete:
            return f"complete {self.received}/{total}"
        return f"partial {self.received}/{total} (timeout)"

    def progress(self) -> dict[str, Any]:
        return {
            "device_id": self.device_id,
            "sn": self.sn,
            "state": "running" if not self.done else ("complete" if self.complete else "partial"),
            "received": self.received,
            "expected": self.expected,
            "pages": self.pages,
            "summary": self.state(),
        }


class CatalogAssembler:
    def __init__(self, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self._active: dict[str, CatalogSync] = {}
        self.last: dict[str, CatalogSync] = {}
        # (deadline, device_id, sn); stale entries are skipped when they come due, and a sync whose
        # deadline moved on is pushed back, so pages never touch the heap.
        self._heap: list[tuple[float, str, int]] = []

    def start(self, device_id: str, sn: int, now: float) -> CatalogSync:
        sync = CatalogSync(device_id, sn, now, now + self.timeout)
        self._active[device_id] = sync
        heapq.heappush(self._heap, (sync.deadline, device_id, sn))
        return sync

    def get(self, device_id: str) -> CatalogSync | None:
        return self._active.get(device_id) or self.last.get(device_id)

    def add_page(self, device_id: str, sn: int, sum_num: int | None, items: list[Any], now: float,
                 key=lambda item: item.device_id) -> CatalogSync | None:
        """Add one page. Returns the sync when this page completed it."""
        sync = self._active.get(device_id)
        if sync is None or (sync.sn != sn and sync.pages > 0):
            # An unsolicited answer, or one to a query we no longer wait for: start a sync for it.
            sync = self.start(device_id, sn, now)
        sync.pages += 1
        sync.deadline = max(sync.deadline, now + min(self.timeout, 10.0))  # pages still flowing
        if sum_num is not None and sum_num >= 0:
            sync.expected = sum_num
        for item in items:
            sync.items[key(item)] = item
        if sync.expected is not None and sync.received >= sync.expected:
            return self._finish(sync, complete=True)
        return None

    def fail(self, device_id: str, sn: int) -> CatalogSync | None:
        """The device refused the query (or never answered it): end the sync as partial."""
        sync = self._active.get(device_id)
        if sync is None or sync.sn != sn:
            return None
        return self._finish(sync, complete=False)

    def _finish(self, sync: CatalogSync, complete: bool) -> CatalogSync:
        sync.done = True
        sync.complete = complete
        self._active.pop(sync.device_id, None)
        self.last[sync.device_id] = sync
        return sync

    def get_timer(self) -> float | None:
        heap = self._heap
        while heap:
            _, device_id, sn = heap[0]
            sync = self._active.get(device_id)
            if sync is not None and sync.sn == sn:
                return heap[0][0]
            heapq.heappop(heap)  # finished or superseded
        return None

    def handle_timer(self, now: float) -> list[CatalogSync]:
        out: list[CatalogSync] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, device_id, sn = heapq.heappop(heap)
            sync = self._active.get(device_id)
            if sync is None or sync.sn != sn:
                continue
            if sync.deadline > now:  # pages kept arriving: wait for the extended deadline
                heapq.heappush(heap, (sync.deadline, device_id, sn))
                continue
            out.append(self._finish(sync, complete=False))
        return out
