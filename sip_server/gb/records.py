"""A device's recordings list (RecordInfo, GB/T 28181 9.7 / A.2.4.5 / A.2.6.7): the query and the answer (sans-IO).

The platform asks a channel for its files between two times; the device answers with ``SumNum`` items in one
or more MESSAGEs, each carrying the query's SN (NVRs send a few items per MESSAGE, one after another). The
:class:`RecordCollector` matches pages to a query by SN and the answering device, keeps the items in the
order of their start (the device's files as reported: not merged, de-duplicated only when start, end and
path are all the same, so a page sent twice adds nothing), and finishes a query when ``SumNum`` items
arrived. ``SumNum`` 0 is an empty, complete answer. A query that is still short of ``SumNum`` at its
deadline finishes with what arrived and ``complete=False``.

The query's ``StartTime``/``EndTime`` are device (Beijing) local time without an offset, as devices expect,
whatever the host's zone (:func:`gbcore.timeutil.gb_time`).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from datetime import datetime

from gbcore.timeutil import gb_time
from sip_server.gb import manscdp

__all__ = [
    "MAX_ITEMS",
    "RECORD_TYPES",
    "RecordCollector",
    "RecordQuery",
    "record_query_extra",
    "sort_key",
]

#: ``Type`` values a RecordInfo query may ask for (GB/T 28181 A.2.4.5).
RECORD_TYPES = ("all", "time", "alarm", "manual")

#: Most items kept for one query: a device that keeps sending is cut off there (the answer is partial).
MAX_ITEMS = 20000


@dataclass
class RecordQuery:
    """One RecordInfo query and what the device answered so far.

    ``items``: the device's files sorted by start (items without a readable start last); ``sum_num``: the
    device's SumNum (0 until the first page); ``complete``: SumNum items arrived; ``messages``: the
    answer's MESSAGEs that reached us (0 when the device never answered)."""

    device_id: str
    channel_id: str
    sn: int
    deadline: float
    items: list[manscdp.RecordItem] = field(default_factory=list)
    sum_num: int = 0
    complete: bool = False
    messages: int = 0
    done: bool = False
    truncated: bool = False  # more than MAX_ITEMS came: the rest was dropped
    _keys: set = field(default_factory=set, repr=False)

    @property
    def received(self) -> int:
        return len(self.items)


def sort_key(item: manscdp.RecordItem) -> tuple:
    """Order of a record list: by start, then end, then path; items whose start cannot be read go last."""
    start, end = item.start, item.end
    return (start is None, start or datetime.min, end is None, end or datetime.min, item.file_path or "")


def _identity(item: manscdp.RecordItem) -> tuple:
    return (item.start_time, item.end_time, item.file_path)


def record_query_extra(start: datetime, end: datetime, type: str = "all") -> list[tuple[str, str]]:
    """The RecordInfo query's own elements: StartTime/EndTime in device (Beijing) local time without an
    offset, ``Type``, ``Secrecy`` 0. ``start``/``end`` must be aware datetimes."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("录像查询时间须带时区 / record query times must be timezone-aware")
    if end <= start:
        raise ValueError("结束时间须晚于开始时间 / the end must be after the start")
    if type not in RECORD_TYPES:
        raise ValueError(f"录像类型无效 / unknown record type {type!r}: one of {', '.join(RECORD_TYPES)}")
    return [
        ("StartTime", gb_time(start, millis=False)),
        ("EndTime", gb_time(end, millis=False)),
        ("Secrecy", "0"),
        ("Type", type),
    ]


class RecordCollector:
    """The RecordInfo queries in flight, keyed by SN (every query gets a fresh SN from the server)."""

    def __init__(self, max_items: int = MAX_ITEMS) -> None:
        self.max_items = max_items
        self._active: dict[int, RecordQuery] = {}
        self._heap: list[tuple[float, int]] = []  # (deadline, sn); finished ones are skipped lazily

    def __len__(self) -> int:
        return len(self._active)

    def __contains__(self, sn: object) -> bool:
        return sn in self._active

    def get(self, sn: int) -> RecordQuery | None:
        return self._active.get(sn)

    def start(self, device_id: str, channel_id: str, sn: int, now: float, timeout: float) -> RecordQuery:
        query = RecordQuery(device_id, channel_id, sn, now + timeout)
        self._active[sn] = query
        heapq.heappush(self._heap, (query.deadline, sn))
        return query

    def add_page(self, device_id: str, page: manscdp.RecordInfo) -> RecordQuery | None:
        """One answer MESSAGE from ``device_id`` (the sender, already checked to be the registered device).
        Returns the query when this page finished it; None when it is still waiting, or when the page
        answers no query of ``device_id`` in flight (late, unsolicited or someone else's)."""
        query = self._active.get(page.sn)
        if query is None or query.device_id != device_id:
            return None
        query.messages += 1
        # the total as the device says it; a page that says less than an earlier one cannot shrink it
        query.sum_num = max(query.sum_num, page.sum_num)
        for item in page.items:
            key = _identity(item)
            if key in query._keys:
                continue
            if len(query.items) >= self.max_items:
                query.truncated = True
                return self._finish(query, complete=False)
            query._keys.add(key)
            query.items.append(item)
        if query.received >= query.sum_num:
            return self._finish(query, complete=True)
        return None

    def fail(self, sn: int) -> RecordQuery | None:
        """The device refused the query MESSAGE (or it was never delivered): finish it as partial."""
        query = self._active.get(sn)
        if query is None:
            return None
        return self._finish(query, complete=False)

    def cancel(self, sn: int) -> None:
        """Nobody waits for this query any more: forget it (later pages are ignored)."""
        self._active.pop(sn, None)

    def _finish(self, query: RecordQuery, *, complete: bool) -> RecordQuery:
        query.done = True
        query.complete = complete
        query.items.sort(key=sort_key)
        query._keys = set()
        self._active.pop(query.sn, None)
        return query

    def get_timer(self) -> float | None:
        heap = self._heap
        while heap and heap[0][1] not in self._active:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def handle_timer(self, now: float) -> list[RecordQuery]:
        """Queries past their deadline, finished with what arrived (``complete=False``)."""
        out: list[RecordQuery] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, sn = heapq.heappop(heap)
            query = self._active.get(sn)
            if query is not None:
                out.append(self._finish(query, complete=False))
        return out
