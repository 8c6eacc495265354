"""AlarmService on SQLite and PostgreSQL: record and search, acknowledgement, the live feed, scope filters,
positions and tracks, retention, tickets."""

from __future__ import annotations

import asyncio
from datetime import timedelta, timezone

import pytest
from sqlalchemy import select

import alarms.service as alarm_service
from alarms.models import AlarmRow, PositionRow
from alarms.service import AlarmService, ScopeFilter, scope_filter
from alarms.types import AlarmIn, PositionIn
from device_registry.scope import channel_pairs_in_scope
from gbcore.db import make_sessionmaker
from gbcore.ids import ChannelRef
from ops_portal.access import Scope

from .conftest import CAM1, CAM2, NVR_A, NVR_B, T0, t

BEIJING = timezone(timedelta(hours=8))


def alarm(priority: int | None = 1, *, source: str | None = CAM1, at: float = 0, **kw) -> AlarmIn:
    return AlarmIn(priority=priority, method=kw.pop("method", 5), type=kw.pop("type", 2), time=t(at),
                   description=kw.pop("description", "移动侦测 / motion"), source_id=source, **kw)


# ------------------------------------------------------------------------------------------- record, search
async def test_record_resolves_the_channel_and_stores_utc(service) -> None:
    beijing = (T0 + timedelta(seconds=5)).astimezone(BEIJING)
    rec = await service.record(NVR_B, AlarmIn(priority=2, method=5, type=2, event_type=1, time=beijing,
                                              description="入侵 / intrusion", longitude=116.39, latitude=39.91,
                                              raw={"AlarmMethod": "5"}, source_id=CAM2))
    assert (rec.device_id, rec.channel_id, rec.ref) == (NVR_B, CAM2, ChannelRef(NVR_B, CAM2))
    assert rec.time == t(5) and rec.time.utcoffset() == timedelta(0)
    assert rec.received_at == T0 and not rec.acknowledged
    assert (rec.priority, rec.method, rec.type, rec.event_type) == (2, 5, 2, 1)
    assert (rec.longitude, rec.latitude) == (116.39, 39.91)
    again = await service.get(rec.id)
    assert again == rec and again.raw == {"AlarmMethod": "5", "DeviceID": CAM2}


async def test_record_of_the_device_itself_or_an_unknown_source(service) -> None:
    own = await service.record(NVR_A, alarm(source=NVR_A))
    none = await service.record(NVR_A, alarm(source=None))
    stranger = await service.record(NVR_A, alarm(source="34020000001310000099"))
    assert own.channel_id is None and none.channel_id is None and stranger.channel_id is None
    assert stranger.raw["DeviceID"] == "34020000001310000099"  # what the device said is kept


async def test_search_by_device_channel_window_priority(service) -> None:
    a1 = await service.record(NVR_A, alarm(1, source=CAM1, at=0))
    a2 = await service.record(NVR_A, alarm(3, source=CAM2, at=10))
    b1 = await service.record(NVR_B, alarm(1, source=CAM1, at=20))
    b_dev = await service.record(NVR_B, alarm(2, source=NVR_B, at=30))

    total, items = await service.search()
    assert total == 4 and [r.id for r in items] == [b_dev.id, b1.id, a2.id, a1.id]  # newest first
    assert [r.id for r in (await service.search(device_id=NVR_A))[1]] == [a2.id, a1.id]
    # a channel id alone means that id on any device; with the device, exactly that channel
    assert [r.id for r in (await service.search(channel_id=CAM1))[1]] == [b1.id, a1.id]
    assert [r.id for r in (await service.search(device_id=NVR_B, channel_id=CAM1))[1]] == [b1.id]
    # start inclusive, end exclusive, any zone
    _, items = await service.search(start=t(10).astimezone(BEIJING), end=t(30))
    assert [r.id for r in items] == [b1.id, a2.id]
    assert [r.id for r in (await service.search(priority=1))[1]] == [b1.id, a1.id]
    assert [r.id for r in (await service.search(priority=[2, 3]))[1]] == [b_dev.id, a2.id]
    # paging: total counts every match
    total, page = await service.search(limit=2, offset=1)
    assert total == 4 and [r.id for r in page] == [b1.id, a2.id]
    assert await service.search(device_id="34020000001180000009") == (0, [])
    with pytest.raises(ValueError):
        await service.search(start=t(0).replace(tzinfo=None))


async def test_search_acknowledged_filter(service) -> None:
    first = await service.record(NVR_A, alarm(at=0))
    second = await service.record(NVR_A, alarm(at=1))
    await service.acknowledge(first.id, "zhangsan", "已处理 / handled")
    assert [r.id for r in (await service.search(acknowledged=False))[1]] == [second.id]
    assert [r.id for r in (await service.search(acknowledged=True))[1]] == [first.id]


# ------------------------------------------------------------------------------------------- acknowledge
async def test_acknowledgement_is_persisted_and_the_first_one_stands(service, db_engine, clock) -> None:
    rec = await service.record(NVR_A, alarm())
    clock.now = t(60)
    acked = await service.acknowledge(rec.id, "zhangsan", "  现场已确认 / checked on site  ")
    assert acked is not None and acked.acknowledged
    assert (acked.acknowledged_by, acked.acknowledged_at, acked.ack_note) == (
        "zhangsan", t(60), "现场已确认 / checked on site")
    clock.now = t(120)
    again = await service.acknowledge(rec.id, "lisi", "second")
    assert (again.acknowledged_by, again.acknowledged_at, again.ack_note) == (
        "zhangsan", t(60), "现场已确认 / checked on site")
    # read back through a fresh service (nothing cached)
    fresh = AlarmService(make_sessionmaker(db_engine))
    stored = await fresh.get(rec.id)
    assert stored.acknowledged and stored.acknowledged_by == "zhangsan" and stored.acknowledged_at == t(60)
    assert await service.acknowledge(rec.id + 1000, "zhangsan", None) is None


async def test_acknowledge_refuses_bad_input_and_changes_nothing(service) -> None:
    rec = await service.record(NVR_A, alarm())
    with pytest.raises(ValueError, match="note is too long"):
        await service.acknowledge(rec.id, "zhangsan", "x" * 1001)
    with pytest.raises(ValueError):
        await service.acknowledge(rec.id, "", "ok")
    with pytest.raises(TypeError):
        await service.acknowledge(rec.id, "zhangsan", 5)  # type: ignore[arg-type]
    assert not (await service.get(rec.id)).acknowledged


# ------------------------------------------------------------------------------------------- live feed
async def test_live_feed_delivers_within_a_second(service) -> None:
    feed = service.subscribe()  # registered at once: nothing recorded after this line is missed
    rec = await service.record(NVR_A, alarm())
    got = await asyncio.wait_for(feed.__anext__(), 1.0)
    assert got == rec
    # a consumer already waiting is woken
    waiting = asyncio.ensure_future(feed.__anext__())
    await asyncio.sleep(0)
    rec2 = await service.record(NVR_B, alarm(2))
    assert await asyncio.wait_for(waiting, 1.0) == rec2
    await feed.aclose()
    assert service.subscribers == 0


async def test_slow_subscriber_loses_its_oldest_and_blocks_nobody(service) -> None:
    slow = service.subscribe(max_queue=3)  # never read while the alarms arrive
    fast = service.subscribe()
    received = []

    async def read_fast() -> None:
        async for rec in fast:
            received.append(rec.id)
            if len(received) == 10:
                return

    reader = asyncio.create_task(read_fast())
    ids = []
    for i in range(10):
        ids.append((await asyncio.wait_for(service.record(NVR_A, alarm(at=i)), 2.0)).id)
    await asyncio.wait_for(reader, 1.0)
    assert received == ids
    assert slow.dropped == 7 and service.dropped == 7 and fast.dropped == 0
    assert [await slow.__anext__() for _ in range(3)] == [await service.get(i) for i in ids[-3:]]
    await slow.aclose()
    await fast.aclose()


async def test_stop_ends_the_feed(service) -> None:
    feed = service.subscribe()
    waiting = asyncio.ensure_future(feed.__anext__())
    await asyncio.sleep(0)
    await service.stop()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(waiting, 1.0)


async def test_live_feed_with_a_scope(service) -> None:
    scoped = service.subscribe(scope_filter(Scope(False, channel_refs=frozenset({ChannelRef(NVR_B, CAM1)}))))
    by_refs = service.subscribe({ChannelRef(NVR_A, CAM2)})
    by_func = service.subscribe(lambda dev, ch: dev == NVR_A and ch is None)
    async with scoped, by_refs, by_func:
        for dev, src in ((NVR_A, CAM1), (NVR_A, CAM2), (NVR_B, CAM1), (NVR_A, NVR_A), (NVR_B, NVR_B)):
            await service.record(dev, alarm(source=src))
        got = await asyncio.wait_for(scoped.__anext__(), 1.0)
        assert (got.device_id, got.channel_id) == (NVR_B, CAM1)
        got = await asyncio.wait_for(scoped.__anext__(), 1.0)  # NVR_B is visible: one of its channels is
        assert (got.device_id, got.channel_id) == (NVR_B, None)
        got = await asyncio.wait_for(by_refs.__anext__(), 1.0)
        assert (got.device_id, got.channel_id) == (NVR_A, CAM2)
        got = await asyncio.wait_for(by_refs.__anext__(), 1.0)
        assert (got.device_id, got.channel_id) == (NVR_A, None)
        got = await asyncio.wait_for(by_func.__anext__(), 1.0)
        assert (got.device_id, got.channel_id) == (NVR_A, None)
        for feed in (scoped, by_refs, by_func):  # the rest were filtered away
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(feed.__anext__(), 0.2)
            assert feed.pending == 0
    assert service.subscribers == 0


# ------------------------------------------------------------------------------------------- scope in search
async def _four(service):
    return [await service.record(dev, alarm(source=src, at=i))
            for i, (dev, src) in enumerate(((NVR_A, CAM1), (NVR_A, CAM2), (NVR_B, CAM1), (NVR_B, NVR_B)))]


async def test_search_with_a_portal_scope(service, seeded) -> None:
    a1, a2, b1, b_dev = await _four(service)
    only_b1 = Scope(False, channel_refs=frozenset({ChannelRef(NVR_B, CAM1)}))
    total, items = await service.search(scope_filter(only_b1))
    assert total == 2 and [r.id for r in items] == [b_dev.id, b1.id]  # not NVR_A's CAM1 (same id)
    assert await service.search(scope_filter(Scope.nothing())) == (0, [])
    assert scope_filter(Scope.everything()) is None
    assert (await service.search(scope_filter(Scope.everything())))[0] == 4
    # org nodes: NVR_A's node granted -> its channels and its own alarms
    async with seeded.sessionmaker() as session:
        node = await seeded.create_org_node(session, "园区 / campus", None)
        await seeded.assign_to_org_node(session, node.id, device_ids=[NVR_A])
        await session.commit()
        node_id = node.id
    own = await service.record(NVR_A, alarm(source=NVR_A, at=9))
    total, items = await service.search(scope_filter(Scope(False, org_node_ids=frozenset({node_id}))))
    assert [r.id for r in items] == [own.id, a2.id, a1.id]
    # a bare selectable of pairs: a device's own alarms follow its channels
    _, items = await service.search(channel_pairs_in_scope(only_b1))
    assert [r.id for r in items] == [b_dev.id, b1.id]
    _, items = await service.search(ScopeFilter(channel_pairs_in_scope(only_b1)), device_id=NVR_B, priority=1)
    assert [r.id for r in items] == [b_dev.id, b1.id]


async def test_search_with_refs_and_a_python_filter(service, monkeypatch) -> None:
    a1, a2, b1, b_dev = await _four(service)
    _, items = await service.search({ChannelRef(NVR_A, CAM2), ChannelRef(NVR_B, CAM1)})
    assert [r.id for r in items] == [b_dev.id, b1.id, a2.id]
    monkeypatch.setattr(alarm_service, "_PY_FILTER_CHUNK", 2)  # pages across chunks
    calls = []

    async def allow(dev: str, ch: str | None) -> bool:
        calls.append((dev, ch))
        return ch == CAM1 or ch is None

    total, items = await service.search(allow, limit=2, offset=1)
    assert total == 3 and [r.id for r in items] == [b1.id, a1.id]
    assert len(calls) == len(set(calls))  # asked once per pair
    with pytest.raises(TypeError):
        await service.search("NVR_A")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------- tickets
async def test_ticket_only_at_or_above_the_threshold(db_engine, seeded, clock) -> None:
    opened = []

    async def open_ticket(rec) -> None:
        opened.append(rec.priority)

    svc = AlarmService(make_sessionmaker(db_engine), open_ticket=open_ticket, ticket_min_priority=2, clock=clock)
    for priority in (4, 3, 2, 1, None):
        await svc.record(NVR_A, alarm(priority))
    assert opened == [2, 1]
    none = AlarmService(make_sessionmaker(db_engine), open_ticket=open_ticket, ticket_min_priority=0)
    await none.record(NVR_A, alarm(1))
    assert opened == [2, 1]


async def test_a_failing_ticket_keeps_the_alarm(db_engine, seeded) -> None:
    def boom(rec) -> None:
        raise RuntimeError("ticket store down")

    svc = AlarmService(make_sessionmaker(db_engine), open_ticket=boom, ticket_min_priority=4)
    feed = svc.subscribe()
    rec = await svc.record(NVR_A, alarm(1))
    assert svc.ticket_failures == 1
    assert await svc.get(rec.id) == rec and await asyncio.wait_for(feed.__anext__(), 1.0) == rec
    await svc.stop()


# ------------------------------------------------------------------------------------------- positions
async def test_position_moves_the_channel_and_keeps_the_track(service, seeded) -> None:
    before = await seeded.get_channel(ChannelRef(NVR_A, CAM1))
    for i, (lon, lat) in enumerate(((116.30, 39.90), (116.31, 39.91), (116.32, 39.92))):
        rec = await service.record_position(NVR_A, PositionIn(time=t(i).astimezone(BEIJING), longitude=lon,
                                                              latitude=lat, speed=30.5, direction=90.0,
                                                              altitude=50.0, source_id=CAM1))
        assert rec is not None and rec.time == t(i)
    moved = await seeded.get_channel(ChannelRef(NVR_A, CAM1))
    assert (moved.longitude, moved.latitude) == (116.32, 39.92)
    assert moved.updated_at == before.updated_at  # volatile, like last_seen
    other = await seeded.get_channel(ChannelRef(NVR_B, CAM1))  # the same channel id on another device
    assert (other.longitude, other.latitude) == (None, None)
    track = await service.track(NVR_A, CAM1)
    assert [(p.time, p.longitude, p.latitude) for p in track] == [
        (t(0), 116.30, 39.90), (t(1), 116.31, 39.91), (t(2), 116.32, 39.92)]
    assert (track[0].speed, track[0].direction, track[0].altitude) == (30.5, 90.0, 50.0)
    assert [p.time for p in await service.track(NVR_A, CAM1, start=t(1), end=t(2))] == [t(1)]


async def test_device_position_moves_every_channel(service, seeded) -> None:
    rec = await service.record_position(NVR_B, PositionIn(time=None, longitude=121.47, latitude=31.23))
    assert rec is not None and rec.channel_id is None and rec.time == T0  # no device time: arrival
    for ch in (CAM1, CAM2):
        c = await seeded.get_channel(ChannelRef(NVR_B, ch))
        assert (c.longitude, c.latitude) == (121.47, 31.23)
    assert [p.id for p in await service.track(NVR_B)] == [rec.id]


async def test_positions_without_a_fix_or_owner_store_nothing(service, db_engine, seeded) -> None:
    assert await service.record_position(NVR_A, PositionIn(t(0), 0.0, 0.0, source_id=CAM1)) is None
    assert await service.record_position(NVR_A, PositionIn(t(0), 116.3, None, source_id=CAM1)) is None
    assert await service.record_position(
        NVR_A, PositionIn(t(0), 116.3, 39.9, source_id="34020000001310000099")) is None
    with pytest.raises(ValueError):
        PositionIn(t(0), 181.0, 39.9)
    with pytest.raises(ValueError):
        PositionIn(t(0), float("nan"), 39.9)
    async with make_sessionmaker(db_engine)() as session:
        assert (await session.scalars(select(PositionRow))).all() == []
    c = await seeded.get_channel(ChannelRef(NVR_A, CAM1))
    assert (c.longitude, c.latitude) == (None, None)


# ------------------------------------------------------------------------------------------- retention
async def test_retention_deletes_exactly_the_old_rows(service, db_engine, clock) -> None:
    days = timedelta(days=180)
    kept_ids, gone_ids = [], []
    # arrival decides for alarms (a device clock far in the past must not make its alarm vanish)
    for arrived, keep in ((T0 - days - timedelta(seconds=1), False), (T0 - days, True), (T0, True)):
        clock.now = arrived
        rec = await service.record(NVR_A, alarm(at=-10**8))  # device time ~3 years before
        (kept_ids if keep else gone_ids).append(rec.id)
    for at in (T0 - days - timedelta(milliseconds=1), T0 - days, T0):
        await service.record_position(NVR_A, PositionIn(at, 116.3, 39.9, source_id=CAM1))
    clock.now = T0
    assert await service.sweep() == (1, 1)
    async with make_sessionmaker(db_engine)() as session:
        assert sorted((await session.scalars(select(AlarmRow.id))).all()) == kept_ids
        assert sorted((await session.scalars(select(PositionRow.time))).all()) == [T0 - days, T0]
    assert await service.sweep() == (0, 0)
    forever = AlarmService(make_sessionmaker(db_engine), retention_days=0, clock=lambda: T0 + 10 * days)
    assert await forever.sweep() == (0, 0)


async def test_start_runs_the_sweep(db_engine, seeded, clock) -> None:
    svc = AlarmService(make_sessionmaker(db_engine), retention_days=7, clock=clock)
    clock.now = T0 - timedelta(days=8)
    await svc.record(NVR_A, alarm())
    clock.now = T0
    await svc.start()
    try:
        for _ in range(100):
            if (await svc.search())[0] == 0:
                break
            await asyncio.sleep(0.02)
        assert (await svc.search())[0] == 0
    finally:
        await svc.stop()


# ------------------------------------------------------------------------------------------- schema
async def test_models_match_migration_0011(db_engine) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    import alarms.models  # noqa: F401
    from gbcore.db import Base

    def diff(sync_conn):
        ctx = MigrationContext.configure(sync_conn, opts={"compare_type": True, "compare_server_default": True})
        return [d for d in compare_metadata(ctx, Base.metadata)
                if "'alarms'" in repr(d) or "'positions'" in repr(d) or "ix_alarms" in repr(d)
                or "ix_positions" in repr(d)]

    async with db_engine.connect() as conn:
        assert await conn.run_sync(diff) == []
