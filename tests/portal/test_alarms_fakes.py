"""A fake of the alarm service behind the alarm routes (no tests here), as docs/issue14-seams.md names it
(``alarms.service.AlarmService``: ``record``, ``search``, ``get``, ``acknowledge``, ``subscribe`` with bounded
queues).  Records are kept in memory, newest first."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from gbcore.ids import ChannelRef


@dataclass(frozen=True)
class FakeAlarm:
    id: int
    device_id: str
    channel_id: str | None
    priority: int
    method: int
    type: int | None
    time: datetime
    description: str | None = None
    longitude: float | None = None
    latitude: float | None = None
    acknowledged: bool = False
    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = None
    note: str | None = None


class FakeAlarms:
    def __init__(self) -> None:
        self.items: list[FakeAlarm] = []
        self.subscribers: set[asyncio.Queue[FakeAlarm]] = set()
        self.searches: list[dict[str, Any]] = []
        self.closed_subscriptions = 0

    async def record(self, device_id: str, channel_id: str | None, *, priority: int = 1, method: int = 5,
                     type: int | None = 2, time: datetime | None = None, description: str | None = None,
                     longitude: float | None = None, latitude: float | None = None) -> FakeAlarm:
        alarm = FakeAlarm(len(self.items) + 1, device_id, channel_id, priority, method, type,
                          time or datetime.now(UTC), description, longitude, latitude)
        self.items.append(alarm)
        for q in list(self.subscribers):
            if not q.full():
                q.put_nowait(alarm)
        return alarm

    async def search(self, *, refs_filter: Iterable[ChannelRef] | None = None, device_id: str | None = None,
                     channel_id: str | None = None, start: datetime | None = None, end: datetime | None = None,
                     priority: int | None = None, limit: int = 100, offset: int = 0) -> tuple[int, list[FakeAlarm]]:
        self.searches.append({"refs_filter": refs_filter, "device_id": device_id, "channel_id": channel_id,
                              "start": start, "end": end, "priority": priority})
        refs = None if refs_filter is None else set(refs_filter)
        found = [a for a in reversed(self.items)
                 if (refs is None or (a.channel_id is not None and ChannelRef(a.device_id, a.channel_id) in refs))
                 and (device_id is None or a.device_id == device_id)
                 and (channel_id is None or a.channel_id == channel_id)
                 and (start is None or a.time >= start) and (end is None or a.time < end)
                 and (priority is None or a.priority == priority)]
        return len(found), found[offset:offset + limit]

    async def get(self, alarm_id: int) -> FakeAlarm | None:
        return next((a for a in self.items if a.id == alarm_id), None)

    async def acknowledge(self, alarm_id: int, user: str, note: str) -> FakeAlarm | None:
        for i, a in enumerate(self.items):
            if a.id == alarm_id:
                self.items[i] = replace(a, acknowledged=True, acknowledged_by=user,
                                        acknowledged_at=datetime.now(UTC), note=note)
                return self.items[i]
        return None

    async def subscribe(self) -> AsyncIterator[FakeAlarm]:
        q: asyncio.Queue[FakeAlarm] = asyncio.Queue(maxsize=100)
        self.subscribers.add(q)
        try:
            while True:
                yield await q.get()
        finally:
            self.subscribers.discard(q)
            self.closed_subscriptions += 1
