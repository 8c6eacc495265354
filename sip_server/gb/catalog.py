"""Reassembling a device's catalog from many MESSAGEs (sans-IO).

NVRs answer one Catalog query with ``SumNum`` items spread over several MESSAGEs (some send one item
per MESSAGE, some pages of a few). Pages are matched to the sync by device id and SN, items are kept
by channel id (so a retransmitted page adds nothing), and the sync completes when ``SumNum`` distinct
items arrived. A sync that stalls past its timeout completes as *partial*: what arrived is kept, and
channels not reported are NOT marked removed, since their absence proves nothing.
"""

from __future__ import annotations

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

    def start(self, device_id: str, sn: int, now: float) -> CatalogSync:
        sync = CatalogSync(device_id, sn, now, now + self.timeout)
        self._active[device_id] = sync
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
        if not self._active:
            return None
        return min(s.deadline for s in self._active.values())

    def handle_timer(self, now: float) -> list[CatalogSync]:
        due = [s for s in self._active.values() if s.deadline <= now]
        return [self._finish(s, complete=False) for s in due]
