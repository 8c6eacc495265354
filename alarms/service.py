"""The alarm service: store what devices report, search it, acknowledge it, feed it live, keep the tracks.

:class:`AlarmService` is the one writer of the ``alarms`` and ``positions`` tables (:mod:`alarms.models`).

* :meth:`~AlarmService.record` stores an alarm (its channel is the body's DeviceID when that is one of the
  device's channels), hands it to every live subscriber, and opens a ticket through ``open_ticket`` when it
  is at least as urgent as ``ticket_min_priority`` (1 = most urgent; 0 = never).  A failing ``open_ticket``
  is logged: the alarm is stored and fed all the same.
* :meth:`~AlarmService.search` filters by device, channel, window, priority and the caller's data scope
  (``refs_filter``, see :data:`RefsFilter` and :func:`scope_filter`).
* :meth:`~AlarmService.subscribe` is the live feed (for SSE): each subscriber has its own bounded queue; a
  subscriber that does not keep up loses its oldest alarms (counted in ``dropped``), never blocks the
  others or the writer.  Its scope filter runs in the subscriber's own task.
* :meth:`~AlarmService.record_position` keeps the track and moves the channel on the map
  (:func:`device_registry.apply.set_channel_location`, in the same transaction).
* :meth:`~AlarmService.sweep` deletes alarms received, and positions reported, more than ``retention_days``
  ago (:meth:`~AlarmService.start` runs it every hour).
"""

from __future__ import annotations

import asyncio
import inspect
import time as _time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import String, and_, delete, exists, false, func, literal, null, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.selectable import Selectable

from device_registry.apply import set_channel_location
from device_registry.queries import channel_refs_with_ids
from gbcore.db import begin_write, utcnow
from gbcore.ids import ChannelRef, valid_gb_id
from gbcore.log import get_logger
from gbcore.periodic import PeriodicTask

from .models import AlarmRow, PositionRow
from .types import AlarmIn, AlarmRecord, PositionIn, PositionRecord

__all__ = [
    "ACK_NOTE_MAX",
    "AlarmService",
    "AlarmSubscription",
    "RefsFilter",
    "ScopeFilter",
    "scope_filter",
]

log = get_logger("gbops.alarms")

#: Longest acknowledgement note accepted.
ACK_NOTE_MAX = 1000
#: Most rows one search returns.
SEARCH_LIMIT_MAX = 1000
#: Alarms a live subscriber may have waiting before the oldest are dropped.
QUEUE_DEFAULT = 256

_PY_FILTER_CHUNK = 500


@dataclass(frozen=True)
class ScopeFilter:
    """The alarms a caller may see, as SQL over the registry's tables.

    ``pairs``: a SELECT of (device_id, channel_id) rows, the channels in scope (e.g.
    :func:`device_registry.scope.channel_pairs_in_scope`); an alarm of such a channel is visible.
    ``devices``: a SELECT of device ids whose own alarms (no channel) are visible (e.g.
    :func:`device_registry.scope.devices_in_scope`); None: a device's own alarms are visible when one of
    its channels is in ``pairs``."""

    pairs: Any
    devices: Any = None


#: What ``refs_filter`` may be (None: everything):
#:
#: * a :class:`ScopeFilter` (what :func:`scope_filter` builds from a portal ``Scope``);
#: * a SQL SELECT of allowed (device_id, channel_id) pairs (read as ``ScopeFilter(pairs=...)``);
#: * a collection of :class:`~gbcore.ids.ChannelRef` (the allowed channels, and their devices' own alarms);
#: * a Python callable ``(device_id, channel_id | None) -> bool`` (or an awaitable bool): rows are then
#:   filtered in Python (searches read in chunks, so a narrow scope over a large table is slower than SQL).
RefsFilter = ScopeFilter | Selectable | Iterable[ChannelRef] | Callable[[str, str | None], Any] | None


def scope_filter(scope: Any) -> ScopeFilter | None:
    """The :class:`ScopeFilter` of a portal ``Scope`` (``ops_portal.access.Scope``): None for the full scope;
    a channel's alarms when the channel is in scope, a device's own alarms when the device is visible (its
    node granted, or one of its channels in scope)."""
    if scope is None or scope.all:
        return None
    from device_registry.scope import channel_pairs_in_scope, devices_in_scope

    return ScopeFilter(channel_pairs_in_scope(scope), devices_in_scope(scope))


def _normalise_filter(refs_filter: Any) -> Any:
    """None, a ScopeFilter, a frozenset of refs or a callable."""
    if refs_filter is None or isinstance(refs_filter, ScopeFilter):
        return refs_filter
    if isinstance(refs_filter, Selectable | ClauseElement):
        return ScopeFilter(refs_filter)
    if callable(refs_filter):
        return refs_filter
    if isinstance(refs_filter, str | bytes):
        raise TypeError("refs_filter: a string is not a set of channels")
    try:
        return frozenset(ChannelRef(*ref) for ref in refs_filter)
    except TypeError:
        raise TypeError(f"refs_filter: not a scope filter: {type(refs_filter).__name__}") from None


def _sql_condition(filt: Any, device_col: Any, channel_col: Any) -> Any:
    """SQL condition for a normalised filter that is SQL (ScopeFilter) or a set of refs."""
    if isinstance(filt, frozenset):
        from device_registry.scope import pairs_in

        devices = sorted({r.device_id for r in filt})
        return or_(pairs_in(device_col, channel_col, filt),
                   and_(channel_col.is_(None), device_col.in_(devices)) if devices else false())
    pairs = filt.pairs.subquery("alarm_scope_pairs") if hasattr(filt.pairs, "subquery") else filt.pairs
    dev_c, ch_c = list(pairs.c)[:2]
    channel_ok = exists(select(literal(1)).select_from(pairs).where(dev_c == device_col, ch_c == channel_col))
    if filt.devices is not None:
        devices = filt.devices.subquery("alarm_scope_devices") if hasattr(filt.devices, "subquery") else filt.devices
        (d_c,) = list(devices.c)[:1]
        device_ok = exists(select(literal(1)).select_from(devices).where(d_c == device_col))
    else:
        device_ok = exists(select(literal(1)).select_from(pairs).where(dev_c == device_col))
    return or_(and_(channel_col.is_not(None), channel_ok), and_(channel_col.is_(None), device_ok))


async def _call_filter(func: Callable[[str, str | None], Any], device_id: str, channel_id: str | None) -> bool:
    result = func(device_id, channel_id)
    if inspect.isawaitable(result):
        result = await result
    return bool(result)


def _record(row: AlarmRow) -> AlarmRecord:
    return AlarmRecord(
        id=row.id, device_id=row.device_id, channel_id=row.channel_id, priority=row.priority, method=row.method,
        type=row.type, event_type=row.event_type, time=row.time, received_at=row.received_at,
        description=row.description, longitude=row.longitude, latitude=row.latitude,
        acknowledged=bool(row.acknowledged), acknowledged_by=row.acknowledged_by,
        acknowledged_at=row.acknowledged_at, ack_note=row.ack_note, raw=dict(row.raw or {}),
    )


def _ms(value: datetime) -> datetime:
    """As stored (``UtcDateTime(precision=3)``): what is handed out equals what a later read gives."""
    return value.replace(microsecond=value.microsecond - value.microsecond % 1000)


def _check_device_id(device_id: Any) -> str:
    if not isinstance(device_id, str) or not valid_gb_id(device_id):
        raise ValueError(f"设备编码无效 / not a device id: {str(device_id)[:40]!r}")
    return device_id


def _check_window(start: datetime | None, end: datetime | None) -> None:
    for what, value in (("start", start), ("end", end)):
        if value is not None and (not isinstance(value, datetime) or value.tzinfo is None
                                  or value.utcoffset() is None):
            raise ValueError(f"{what} 必须带时区 / {what} must be an aware datetime")


class AlarmSubscription:
    """One live subscriber (see :meth:`AlarmService.subscribe`): an async iterator of :class:`AlarmRecord`.

    Registered from the moment it is created (alarms recorded before the first ``__anext__`` are not
    missed).  ``dropped`` counts the alarms it lost by falling behind.  End it with :meth:`aclose` (or use it
    as an async context manager); the iteration also ends when the service stops."""

    def __init__(self, service: AlarmService, refs_filter: Any, max_queue: int) -> None:
        self._service = service
        self._filter = refs_filter
        self._queue: deque[AlarmRecord] = deque()
        self._max = max_queue
        self._ready = asyncio.Event()
        self._closed = False
        #: Alarms lost because this subscriber fell behind.
        self.dropped = 0

    @property
    def pending(self) -> int:
        return len(self._queue)

    @property
    def closed(self) -> bool:
        return self._closed

    def _offer(self, record: AlarmRecord) -> None:
        """Called by the service for every recorded alarm; never blocks."""
        if self._closed:
            return
        if len(self._queue) >= self._max:
            self._queue.popleft()
            self.dropped += 1
            self._service._count_drop()
        self._queue.append(record)
        self._ready.set()

    def _end(self) -> None:
        self._closed = True
        self._ready.set()

    def __aiter__(self) -> AlarmSubscription:
        return self

    async def __anext__(self) -> AlarmRecord:
        while True:
            while self._queue:
                if self._closed:
                    break
                record = self._queue.popleft()
                if await self._service._visible(self._filter, record):
                    return record
            if self._closed:
                self._queue.clear()
                raise StopAsyncIteration
            self._ready.clear()
            await self._ready.wait()

    async def aclose(self) -> None:
        self._service._unsubscribe(self)
        self._end()

    async def __aenter__(self) -> AlarmSubscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class AlarmService:
    """Alarms and positions (see the module docstring).

    ``open_ticket``: ``(AlarmRecord) -> None`` (or awaitable), called for an alarm whose priority is set and
    at most ``ticket_min_priority`` (1 = most urgent; 0 = no tickets).  ``retention_days`` <= 0 keeps
    everything.  ``clock`` returns the current aware UTC time (arrival times, retention)."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        open_ticket: Callable[[AlarmRecord], Any] | None = None,
        ticket_min_priority: int = 0,
        retention_days: int = 180,
        clock: Callable[[], datetime] = utcnow,
        queue_size: int = QUEUE_DEFAULT,
        sweep_interval: float = 3600.0,
    ) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be >= 1")
        self.sessionmaker = sessionmaker
        self.open_ticket = open_ticket
        self.ticket_min_priority = int(ticket_min_priority)
        self.retention_days = int(retention_days)
        self.clock = clock
        self.queue_size = queue_size
        self.sweep_interval = sweep_interval
        self._subscribers: set[AlarmSubscription] = set()
        self._sweeper: PeriodicTask | None = None
        self._last_drop_log = 0.0
        #: Alarms dropped for slow subscribers, all subscribers together.
        self.dropped = 0
        #: ``open_ticket`` calls that failed.
        self.ticket_failures = 0

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the hourly retention sweep (the first one right away)."""
        if self._sweeper is None:
            self._sweeper = PeriodicTask("alarms.retention", self.sweep, interval=self.sweep_interval,
                                         first_delay=0, logger=log, failure_event="alarms.sweep_failed")
            self._sweeper.start()

    async def stop(self) -> None:
        """Stop the sweep and end every live subscription."""
        if self._sweeper is not None:
            await self._sweeper.stop()
            self._sweeper = None
        subscribers, self._subscribers = list(self._subscribers), set()
        for sub in subscribers:
            sub._end()

    # -- alarms ----------------------------------------------------------------------------

    async def _channel_of(self, session: AsyncSession, device_id: str, source_id: str | None) -> str | None:
        if source_id is None or source_id == device_id:
            return None
        refs = await channel_refs_with_ids(session, [source_id])
        if ChannelRef(device_id, source_id) in refs:
            return source_id
        log.info("alarms.unknown_source", device=device_id, source=source_id)
        return None

    async def record(self, device_id: str, alarm: AlarmIn) -> AlarmRecord:
        """Store ``alarm`` of ``device_id``, feed it to the live subscribers, open a ticket when it is urgent
        enough; returns what was stored."""
        _check_device_id(device_id)
        if not isinstance(alarm, AlarmIn):
            raise TypeError(f"expected an AlarmIn, got {type(alarm).__name__}")
        received = _ms(self.clock())
        raw = dict(alarm.raw)
        if alarm.source_id is not None and alarm.source_id != device_id:
            raw.setdefault("DeviceID", alarm.source_id)
        async with self.sessionmaker() as session:
            await begin_write(session)
            row = AlarmRow(
                device_id=device_id, channel_id=await self._channel_of(session, device_id, alarm.source_id),
                priority=alarm.priority, method=alarm.method, type=alarm.type, event_type=alarm.event_type,
                time=_ms(alarm.time) if alarm.time else received, received_at=received, description=alarm.description,
                longitude=alarm.longitude, latitude=alarm.latitude, acknowledged=False, raw=raw,
            )
            session.add(row)
            await session.commit()
            record = _record(row)
        self._publish(record)
        if self._wants_ticket(record):
            await self._open_ticket(record)
        return record

    def _wants_ticket(self, record: AlarmRecord) -> bool:
        return (self.open_ticket is not None and self.ticket_min_priority > 0 and record.priority is not None
                and 1 <= record.priority <= self.ticket_min_priority)

    async def _open_ticket(self, record: AlarmRecord) -> None:
        assert self.open_ticket is not None
        try:
            result = self.open_ticket(record)
            if inspect.isawaitable(result):
                await result
        except Exception:
            self.ticket_failures += 1
            log.exception("alarms.ticket_failed", alarm=record.id, device=record.device_id,
                          channel=record.channel_id)

    async def get(self, alarm_id: int) -> AlarmRecord | None:
        async with self.sessionmaker() as session:
            row = await session.get(AlarmRow, alarm_id)
            return None if row is None else _record(row)

    async def search(
        self,
        refs_filter: RefsFilter = None,
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
        """Alarms newest first (device time, then id): of ``device_id`` / ``channel_id`` (a channel id alone
        matches it on any device), with ``start <= time < end`` (aware datetimes), of ``priority`` (a level or
        several), acknowledged or not, within ``refs_filter``.  Returns (total matching, the page)."""
        _check_window(start, end)
        limit = max(0, min(int(limit), SEARCH_LIMIT_MAX))
        offset = max(0, int(offset))
        filt = _normalise_filter(refs_filter)
        conds: list[Any] = []
        if device_id is not None:
            conds.append(AlarmRow.device_id == device_id)
        if channel_id is not None:
            conds.append(AlarmRow.channel_id == channel_id)
        if start is not None:
            conds.append(AlarmRow.time >= start)
        if end is not None:
            conds.append(AlarmRow.time < end)
        if priority is not None:
            levels = [priority] if isinstance(priority, int) else sorted(set(priority))
            conds.append(AlarmRow.priority.in_(levels))
        if acknowledged is not None:
            conds.append(AlarmRow.acknowledged.is_(acknowledged))
        order = (AlarmRow.time.desc(), AlarmRow.id.desc())
        async with self.sessionmaker() as session:
            if filt is None or not callable(filt):
                if filt is not None:
                    conds.append(_sql_condition(filt, AlarmRow.device_id, AlarmRow.channel_id))
                total = await session.scalar(select(func.count()).select_from(AlarmRow).where(*conds))
                rows = await session.scalars(select(AlarmRow).where(*conds).order_by(*order)
                                             .offset(offset).limit(limit))
                return int(total or 0), [_record(r) for r in rows]
            # a Python filter: read the matching rows in chunks, keep the visible ones
            total, page, position = 0, [], 0
            pairs_ok: dict[tuple[str, str | None], bool] = {}
            while True:
                chunk = list(await session.scalars(select(AlarmRow).where(*conds).order_by(*order)
                                                   .offset(position).limit(_PY_FILTER_CHUNK)))
                position += len(chunk)
                for row in chunk:
                    key = (row.device_id, row.channel_id)
                    if key not in pairs_ok:
                        pairs_ok[key] = await _call_filter(filt, *key)
                    if not pairs_ok[key]:
                        continue
                    if offset <= total < offset + limit:
                        page.append(_record(row))
                    total += 1
                if len(chunk) < _PY_FILTER_CHUNK:
                    return total, page

    async def acknowledge(self, alarm_id: int, user: str, note: str | None = None) -> AlarmRecord | None:
        """Acknowledge the alarm as ``user`` with ``note``; None when there is no such alarm.  The first
        acknowledgement stands: acknowledging again changes nothing and returns the alarm as it is (who
        acknowledged it first, when, with which note)."""
        if not isinstance(user, str) or not user.strip() or len(user) > 64:
            raise ValueError("确认人无效 / user must be a username of 1-64 characters")
        if note is not None:
            if not isinstance(note, str):
                raise TypeError("备注必须是文本 / note must be text")
            note = note.replace("\x00", "").strip() or None
            if note is not None and len(note) > ACK_NOTE_MAX:
                raise ValueError(f"备注过长 / note is too long (at most {ACK_NOTE_MAX} characters)")
        async with self.sessionmaker() as session:
            await begin_write(session)
            await session.execute(
                update(AlarmRow).where(AlarmRow.id == alarm_id, AlarmRow.acknowledged.is_(False))
                .values(acknowledged=True, acknowledged_by=user, acknowledged_at=self.clock(), ack_note=note)
                .execution_options(synchronize_session=False)
            )
            await session.commit()
            row = await session.get(AlarmRow, alarm_id, populate_existing=True)
            return None if row is None else _record(row)

    # -- live feed -------------------------------------------------------------------------

    def subscribe(self, refs_filter: RefsFilter = None, *, max_queue: int | None = None) -> AlarmSubscription:
        """A live feed of the alarms recorded from now on (within ``refs_filter``), for SSE.  At most
        ``max_queue`` (default ``queue_size``) alarms wait for a subscriber; past that its oldest are
        dropped and counted."""
        sub = AlarmSubscription(self, _normalise_filter(refs_filter), max_queue or self.queue_size)
        self._subscribers.add(sub)
        return sub

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def _unsubscribe(self, sub: AlarmSubscription) -> None:
        self._subscribers.discard(sub)

    def _publish(self, record: AlarmRecord) -> None:
        for sub in list(self._subscribers):
            sub._offer(record)

    def _count_drop(self) -> None:
        self.dropped += 1
        now = _time.monotonic()
        if now - self._last_drop_log >= 10.0:
            self._last_drop_log = now
            log.warning("alarms.subscriber_behind", dropped=self.dropped,
                        detail="a live subscriber is not keeping up: its oldest alarms were dropped")

    async def _visible(self, filt: Any, record: AlarmRecord) -> bool:
        """Whether ``record`` passes a normalised filter (runs in the subscriber's task)."""
        if filt is None:
            return True
        if isinstance(filt, frozenset):
            if record.channel_id is None:
                return any(ref.device_id == record.device_id for ref in filt)
            return ChannelRef(record.device_id, record.channel_id) in filt
        if callable(filt):
            try:
                return await _call_filter(filt, record.device_id, record.channel_id)
            except Exception:
                log.exception("alarms.filter_failed", alarm=record.id)
                return False
        channel = (literal(record.channel_id, String) if record.channel_id is not None else null())
        cond = _sql_condition(filt, literal(record.device_id, String), channel)
        try:
            async with self.sessionmaker() as session:
                return bool(await session.scalar(select(literal(1)).where(cond)))
        except Exception:
            log.exception("alarms.filter_failed", alarm=record.id)
            return False

    # -- positions -------------------------------------------------------------------------

    async def record_position(self, device_id: str, position: PositionIn) -> PositionRecord | None:
        """Keep ``position`` on the track of the device (or of its channel ``position.source_id``) and move
        that channel (a device's own report: every channel of it) on the map.  None, and nothing stored, when
        the report carries no usable position."""
        _check_device_id(device_id)
        if not isinstance(position, PositionIn):
            raise TypeError(f"expected a PositionIn, got {type(position).__name__}")
        if position.longitude is None or position.latitude is None:
            return None
        at = _ms(position.time or self.clock())
        async with self.sessionmaker() as session:
            await begin_write(session)
            channel_id = await self._channel_of(session, device_id, position.source_id)
            if position.source_id not in (None, device_id) and channel_id is None:
                await session.rollback()
                return None  # neither the device nor one of its channels: not ours to move
            row = PositionRow(device_id=device_id, channel_id=channel_id, time=at, longitude=position.longitude,
                              latitude=position.latitude, speed=position.speed, direction=position.direction,
                              altitude=position.altitude)
            session.add(row)
            await set_channel_location(session, device_id, channel_id, position.longitude, position.latitude)
            await session.commit()
            return PositionRecord(row.id, row.device_id, row.channel_id, row.time, row.longitude, row.latitude,
                                  row.speed, row.direction, row.altitude)

    async def track(
        self, device_id: str, channel_id: str | None = None, *, start: datetime | None = None,
        end: datetime | None = None, limit: int = 1000,
    ) -> list[PositionRecord]:
        """The positions of the device (``channel_id`` None: the device's own reports and its channels')
        or of one channel, oldest first, ``start <= time < end``."""
        _check_window(start, end)
        conds: list[Any] = [PositionRow.device_id == device_id]
        if channel_id is not None:
            conds.append(PositionRow.channel_id == channel_id)
        if start is not None:
            conds.append(PositionRow.time >= start)
        if end is not None:
            conds.append(PositionRow.time < end)
        async with self.sessionmaker() as session:
            rows = await session.scalars(select(PositionRow).where(*conds)
                                         .order_by(PositionRow.time, PositionRow.id)
                                         .limit(max(0, min(int(limit), 100_000))))
            return [PositionRecord(r.id, r.device_id, r.channel_id, r.time, r.longitude, r.latitude, r.speed,
                                   r.direction, r.altitude) for r in rows]

    # -- retention -------------------------------------------------------------------------

    async def sweep(self, now: datetime | None = None) -> tuple[int, int]:
        """Delete alarms received, and positions reported, before ``now - retention_days``.  Returns
        (alarms deleted, positions deleted); (0, 0) when ``retention_days`` <= 0."""
        if self.retention_days <= 0:
            return 0, 0
        cutoff = (now or self.clock()) - timedelta(days=self.retention_days)
        async with self.sessionmaker() as session:
            await begin_write(session)
            alarms = (await session.execute(delete(AlarmRow).where(AlarmRow.received_at < cutoff)
                                            .execution_options(synchronize_session=False))).rowcount
            positions = (await session.execute(delete(PositionRow).where(PositionRow.time < cutoff)
                                               .execution_options(synchronize_session=False))).rowcount
            await session.commit()
        if alarms or positions:
            log.info("alarms.retention", alarms=alarms, positions=positions, cutoff=cutoff.isoformat())
        return int(alarms or 0), int(positions or 0)
