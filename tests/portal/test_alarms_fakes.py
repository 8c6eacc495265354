"""A fake of the alarm service behind the alarm routes (no tests here): the methods of
:class:`alarms.service.AlarmService` (``record``, ``search``, ``get``, ``acknowledge``, ``subscribe``) with its
signatures and return types (:class:`alarms.types.AlarmRecord`), kept in memory.  It trusts the ``source_id``
of a report as the channel (the real service checks it against the registry) and records every search."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from alarms.types import AlarmIn, AlarmRecord
from gbcore.db import utcnow
from gbcore.ids import ChannelRef

#: The fake's arrival time of every alarm (``received_at``).
RECEIVED = datetime(2025, 3, 1, 6, 5, 10, tzinfo=UTC)


def alarm(channel_id: str | None, *, priority: int = 1, method: int = 5, type: int | None = 2,
          time: datetime | None = None, description: str | None = None, longitude: float | None = None,
          latitude: float | None = None) -> AlarmIn:
    """A device's report of an alarm of ``channel_id`` (None: the device itself), as the assembly hands it in."""
    return AlarmIn(priority, method, type, time=time, description=description, longitude=longitude,
                   latitude=latitude, source_id=channel_id)


class FakeSubscription:
    """An :class:`alarms.service.AlarmSubscription`: an async iterator of the alarms recorded from now on,
    the oldest dropped past ``max_queue``; :meth:`aclose` ends it."""

    def __init__(self, service: FakeAlarms, max_queue: int) -> None:
        self._service = service
        self._queue: asyncio.Queue[AlarmRecord | None] = asyncio.Queue(maxsize=max_queue + 1)
        self._max = max_queue
        self.closed = False

    def _offer(self, record: AlarmRecord) -> None:
        if self._queue.qsize() >= self._max:
            self._queue.get_nowait()
        self._queue.put_nowait(record)

    def __aiter__(self) -> FakeSubscription:
        return self

    async def __anext__(self) -> AlarmRecord:
        record = None if self.closed else await self._queue.get()
        if record is None:
            raise StopAsyncIteration
        return record

    async def aclose(self) -> None:
        if not self.closed:
            self.closed = True
            self._service._subs.discard(self)
            self._service.closed_subscriptions += 1
            self._queue.put_nowait(None)


class FakeAlarms:
    def __init__(self, clock: Callable[[], datetime] = lambda: RECEIVED) -> None:
        self.clock = clock
        self.items: list[AlarmRecord] = []
        self.searches: list[dict[str, Any]] = []
        self.closed_subscriptions = 0
        self._subs: set[FakeSubscription] = set()

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    async def record(self, device_id: str, alarm: AlarmIn) -> AlarmRecord:
        now = self.clock()
        channel_id = None if alarm.source_id in (None, device_id) else alarm.source_id
        record = AlarmRecord(len(self.items) + 1, device_id, channel_id, alarm.priority, alarm.method, alarm.type,
                             alarm.event_type, alarm.time or now, now, alarm.description, alarm.longitude,
                             alarm.latitude, False, None, None, None, dict(alarm.raw))
        self.items.append(record)
        for sub in list(self._subs):
            sub._offer(record)
        return record

    async def get(self, alarm_id: int) -> AlarmRecord | None:
        return next((a for a in self.items if a.id == alarm_id), None)

    async def search(
        self,
        refs_filter: Iterable[ChannelRef] | None = None,
        device_id: str | None = None,
        channel_id: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        priority: int | Iterable[int] | None = None,
        limit: int = 100,
        offset: int = 0,
        *,
        acknowledged: bool | None = None,
    ) -> tuple[int, list[AlarmRecord]]:
        """As the real search with a collection of channels as ``refs_filter``: their alarms and their
        devices' own alarms."""
        self.searches.append({"refs_filter": refs_filter, "device_id": device_id, "channel_id": channel_id,
                              "start": start, "end": end, "priority": priority})
        refs = None if refs_filter is None else frozenset(ChannelRef(*r) for r in refs_filter)
        devices = None if refs is None else {r.device_id for r in refs}
        levels = None if priority is None else {priority} if isinstance(priority, int) else set(priority)
        found = [a for a in sorted(self.items, key=lambda a: (a.time, a.id), reverse=True)
                 if (refs is None or (ChannelRef(a.device_id, a.channel_id) in refs if a.channel_id
                                      else a.device_id in devices))
                 and (device_id is None or a.device_id == device_id)
                 and (channel_id is None or a.channel_id == channel_id)
                 and (start is None or a.time >= start) and (end is None or a.time < end)
                 and (levels is None or a.priority in levels)
                 and (acknowledged is None or a.acknowledged is acknowledged)]
        return len(found), found[offset:offset + limit]

    async def acknowledge(self, alarm_id: int, user: str, note: str | None = None) -> AlarmRecord | None:
        """The first acknowledgement stands; a blank note is none."""
        for i, a in enumerate(self.items):
            if a.id == alarm_id:
                if not a.acknowledged:
                    self.items[i] = replace(a, acknowledged=True, acknowledged_by=user, acknowledged_at=utcnow(),
                                            ack_note=(note or "").strip() or None)
                return self.items[i]
        return None

    def subscribe(self, refs_filter: Any = None, *, max_queue: int | None = None) -> FakeSubscription:
        """Every alarm recorded from now on (the routes check the scope themselves; ``refs_filter`` is not
        applied here)."""
        sub = FakeSubscription(self, max_queue or 256)
        self._subs.add(sub)
        return sub
