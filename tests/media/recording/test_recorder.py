"""The recorder end to end on a fake clock: a real PS vector in, segments on two roots out."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from gbcore.db import make_sessionmaker
from media_relay.recording.models import RecordSegmentRow
from media_relay.recording.store import read_units, unwrap_ticks
from media_relay.recording.types import RecordingError, RecordPlan, ScheduleWindow
from tests.conftest import need_tool
from tests.media.recording.conftest import CH, T0, WRAP, FakeClock, FakeReader, Opener, timeline, vector_units


def dt(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


async def wait_for(cond, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.005)


async def record(make_service, units, *, loops=2, pts_base=None, hold=False, **kw):
    clock = FakeClock()
    feed = timeline(units, loops, pts_base=pts_base)
    reader = FakeReader(feed, clock, T0, hold=hold)
    opener = Opener([reader])
    svc, rec = make_service(opener, clock, **kw)
    await svc.start()
    await svc.set_plan(RecordPlan(CH, "continuous"), "admin")
    await asyncio.wait_for(reader.drained.wait(), 30)
    return svc, rec, feed, reader, opener, clock


async def finished_rows(svc) -> list[RecordSegmentRow]:
    async with svc.sessionmaker() as s:
        return list((await s.scalars(select(RecordSegmentRow).order_by(RecordSegmentRow.start))).all())


def read_all(svc, row, root: Path) -> list:
    with open(root / row.path, "rb") as f:
        return list(read_units(f, row.cipher, svc.key, row.path))


@pytest.mark.parametrize("pts_base", [None, WRAP - 5 * 90000], ids=["plain", "pts-wrap"])
async def test_segments_cover_the_input_without_gaps(make_service, ps_dir, tmp_path, pts_base) -> None:
    units = vector_units(ps_dir)
    svc, rec, feed, reader, opener, clock = await record(make_service, units, pts_base=pts_base)
    await wait_for(lambda: opener.refused.is_set())  # the reader ended: the recorder tries to reconnect
    await svc.set_plan(RecordPlan(CH, "off"), "admin")
    rows = await finished_rows(svc)
    # 2 x 10.28 s, keyframes every 2 s (0, 2, .. 10, then 10.28, 12.28, ..), segments of 3 s: cut at the
    # first keyframe 3 s or more after each segment's start
    assert [round(r.start.timestamp() - T0, 3) for r in rows] == [0, 4, 8, 12.28, 16.28, 20.28]
    for a, b in zip(rows, rows[1:], strict=False):
        assert a.end == b.start  # no gap, no overlap at the boundaries
    assert abs(rows[-1].end.timestamp() - T0 - 20.56) < 0.01
    assert all(r.state == "done" and r.sha256 for r in rows)

    # every segment: the same bytes on both roots, their SHA-256 audited, no PS/MP4 signature in them
    audited = {d["segment_id"]: d for d in rec.actions("record.segment")}
    assert sorted(audited) == [r.id for r in rows]
    for r in rows:
        b1 = (tmp_path / "r1" / r.path).read_bytes()
        assert b1 == (tmp_path / "r2" / r.path).read_bytes()
        assert hashlib.sha256(b1).hexdigest() == r.sha256 == audited[r.id]["sha256"]
        assert len(b1) == r.bytes == audited[r.id]["bytes"]
        assert b"\x00\x00\x01\xba" not in b1 and b"ftyp" not in b1
        assert audited[r.id]["start"] == r.start.isoformat()

    # decrypted, the units are the input's (video and audio, untouched), in order
    back = [au for r in rows for au in read_all(svc, r, tmp_path / "r1")]
    fed_v = [u for u in feed if u.kind == "video"]
    assert [u.data for u in back if u.kind == "video"] == [u.data for u in fed_v]
    assert [u.pts for u in back if u.kind == "video"] == [u.pts for u in fed_v]
    assert [u.data for u in back if u.kind == "audio"] == [u.data for u in feed if u.kind == "audio"]

    # iter_units: content time continuous across segments, equal to the live time of each unit
    timed = await asyncio.to_thread(lambda: list(svc.iter_units(CH, dt(T0), dt(T0 + 30))))
    tv = [t for t in timed if t.au.kind == "video"]
    assert len(tv) == len(fed_v)
    p0 = fed_v[0].pts
    for t, u in zip(tv, fed_v, strict=True):
        assert abs(t.at - (T0 + unwrap_ticks(u.pts, p0) / 90000)) < 1e-3
    steps = [b.at - a.at for a, b in zip(tv, tv[1:], strict=False)]
    assert max(steps) < 0.05 and min(steps) > 0.03


async def test_decrypted_segment_is_a_program_stream_ffprobe_reads(make_service, ps_dir, tmp_path) -> None:
    ffprobe = need_tool("ffprobe")
    svc, rec, feed, reader, opener, clock = await record(make_service, vector_units(ps_dir), loops=1)
    await svc.set_plan(RecordPlan(CH, "off"), "admin")
    rows = await finished_rows(svc)
    from media_relay.recording.crypto import ChunkReader

    def decrypt_and_probe() -> tuple[bytes, list[str]]:
        with open(tmp_path / "r2" / rows[1].path, "rb") as f:
            plain = ChunkReader(f, rows[1].cipher, svc.key, rows[1].path).read_all()
        out = tmp_path / "seg.ps"
        out.write_bytes(plain)
        return plain, subprocess.run([ffprobe, "-v", "error", "-count_frames", "-show_entries",
                                      "stream=codec_name,nb_read_frames", "-of", "csv=p=0", str(out)],
                                     capture_output=True, text=True, timeout=60, check=True).stdout.split()

    plain, probe = await asyncio.to_thread(decrypt_and_probe)
    assert plain.startswith(b"\x00\x00\x01\xba")
    assert sorted(p.split(",")[0] for p in probe) == ["aac", "h264"]
    frames = {p.split(",")[0]: int(p.split(",")[1]) for p in probe}
    assert frames["h264"] == rows[1].frames == 100  # 4 s at 25 fps, every frame decodable


async def test_open_segment_listed_and_off_closes_it_at_once(make_service, ps_dir, tmp_path) -> None:
    svc, rec, feed, reader, opener, clock = await record(make_service, vector_units(ps_dir), loops=1, hold=True)
    listed = await svc.segments(CH, dt(T0 - 60), dt(T0 + 60))
    assert [s.open for s in listed] == [False, False, True]
    last = listed[-1]
    assert last.start == dt(T0 + 8) and abs(last.end.timestamp() - (T0 + 10.28)) < 0.01 and last.sha256 is None
    st = await svc.status(CH)
    assert st.state == "recording" and st.segments == 3 and abs(st.seconds_stored - 10.28) < 0.01
    # the open segment reads back as far as written
    timed = await asyncio.to_thread(lambda: list(svc.iter_units(CH, dt(T0 + 9), dt(T0 + 60))))
    assert timed and timed[0].au.keyframe and abs(timed[0].at - (T0 + 8)) < 1e-3

    await svc.set_plan(RecordPlan(CH, "off"), "admin")
    assert reader.closed
    rows = await finished_rows(svc)
    assert [r.state for r in rows] == ["done"] * 3 and rows[-1].sha256
    assert len(rec.actions("record.segment")) == 3
    assert (await svc.status(CH)).state == "off"
    assert (await svc.get_plan(CH)).mode == "off"


async def test_reconnects_after_the_reader_ends(make_service, ps_dir) -> None:
    units = vector_units(ps_dir)
    clock = FakeClock()
    r1 = FakeReader(timeline(units, 1), clock, T0)
    r2 = FakeReader(timeline(units, 1, pts_base=123456), clock, T0 + 100, hold=True)
    opener = Opener([r1, RuntimeError("offline"), r2])
    svc, rec = make_service(opener, clock)
    await svc.start()
    await svc.set_plan(RecordPlan(CH, "continuous", stream="sub"), "admin")
    await asyncio.wait_for(r2.drained.wait(), 30)
    recorder = svc.recorders[CH]
    assert recorder.connects == 2 and recorder.state == "recording"
    assert [c[1] for c in opener.calls] == ["sub", "sub", "sub"]
    await svc.stop()
    rows = await finished_rows(svc)
    starts = [round(r.start.timestamp() - T0, 3) for r in rows]
    assert starts == [0, 4, 8, 100, 104, 108]
    assert abs(rows[2].end.timestamp() - (T0 + 10.28)) < 0.01  # closed when the first reader ended


async def test_schedule_open_and_closed(make_service, ps_dir) -> None:
    units = vector_units(ps_dir)
    clock = FakeClock(T0 - 3600)  # Monday 07:00 Beijing
    reader = FakeReader(timeline(units, 1), clock, T0, hold=True)
    opener = Opener([reader])
    svc, rec = make_service(opener, clock)
    await svc.start()
    plan = RecordPlan(CH, "schedule", (ScheduleWindow((1,), "08:00", "09:00"),))
    await svc.set_plan(plan, "admin")
    await asyncio.sleep(0.1)
    st = await svc.status(CH)
    assert st.state == "waiting" and "schedule" in st.reason and opener.calls == []
    clock.t = T0  # 08:00: the window opens
    await asyncio.wait_for(reader.drained.wait(), 10)
    assert (await svc.status(CH)).state == "recording"
    clock.t = T0 + 3600  # 09:00: closed; the periodic check ends it even with no media coming
    await svc.check()
    await wait_for(lambda: svc.recorders[CH].state == "waiting")
    assert reader.closed
    rows = await finished_rows(svc)
    assert rows and all(r.state == "done" for r in rows)


async def test_bad_plan_is_refused(make_service) -> None:
    svc, rec = make_service(Opener(), FakeClock())
    await svc.start()
    with pytest.raises(RecordingError):
        await svc.set_plan(RecordPlan(CH, "schedule"), "admin")
    assert (await svc.get_plan(CH)).mode == "off"


async def test_corrupt_and_missing_copies_repaired(make_service, ps_dir, tmp_path) -> None:
    svc, rec, *_ = await record(make_service, vector_units(ps_dir), loops=1)
    await svc.set_plan(RecordPlan(CH, "off"), "admin")
    rows = await finished_rows(svc)
    good = (tmp_path / "r1" / rows[0].path).read_bytes()
    bad = bytearray((tmp_path / "r2" / rows[0].path).read_bytes())
    bad[len(bad) // 2] ^= 0xFF
    (tmp_path / "r2" / rows[0].path).write_bytes(bytes(bad))
    (tmp_path / "r1" / rows[1].path).unlink()

    # reading falls back to the good copy
    timed = await asyncio.to_thread(lambda: list(svc.iter_units(CH, dt(T0), dt(T0 + 3))))
    assert timed[0].au.keyframe and len([t for t in timed if t.au.kind == "video"]) >= 75

    assert await svc.check_copies() == 2
    assert (tmp_path / "r2" / rows[0].path).read_bytes() == good
    assert (tmp_path / "r1" / rows[1].path).read_bytes() == (tmp_path / "r2" / rows[1].path).read_bytes()
    repairs = rec.actions("record.repair")
    assert sorted((d["segment_id"], d["reason"]) for d in repairs) == [(rows[0].id, "sha256"), (rows[1].id, "missing")]
    assert all(d["sha256"] for d in repairs)
    assert await svc.check_copies(full=True) == 0


async def test_every_copy_damaged_is_alerted_and_unreadable(make_service, ps_dir, tmp_path) -> None:
    svc, rec, *_ = await record(make_service, vector_units(ps_dir), loops=1)
    await svc.set_plan(RecordPlan(CH, "off"), "admin")
    rows = await finished_rows(svc)
    for root in ("r1", "r2"):
        p = tmp_path / root / rows[0].path
        data = bytearray(p.read_bytes())
        data[100] ^= 1
        p.write_bytes(bytes(data))
    assert await svc.check_copies() == 0
    assert [a[0] for a in rec.alerts] == ["record.corrupt"]
    with pytest.raises(RecordingError):
        await asyncio.to_thread(lambda: list(svc.iter_units(CH, dt(T0), dt(T0 + 2))))


async def test_retention_deletes_exactly_the_expired(make_service, ps_dir, tmp_path) -> None:
    days = {"value": 8}

    async def retention(ch):
        return days["value"]

    svc, rec, *_ = await record(make_service, vector_units(ps_dir), loops=1, retention_days=retention)
    await svc.set_plan(RecordPlan(CH, "off"), "admin")
    rows = await finished_rows(svc)
    assert [round(r.end.timestamp() - T0, 2) for r in rows] == [4, 8, 10.28]
    now = T0 + 8 * 86400 + 8.5  # segments that ended more than 8 days ago: the first two
    assert await svc.run_retention(now) == 2
    left = await finished_rows(svc)
    assert [r.id for r in left] == [rows[2].id]
    deleted = rec.actions("record.delete")
    assert [(d["segment_id"], d["sha256"]) for d in deleted] == [(r.id, r.sha256) for r in rows[:2]]
    for r in rows[:2]:
        assert not (tmp_path / "r1" / r.path).exists() and not (tmp_path / "r2" / r.path).exists()
    assert (tmp_path / "r1" / rows[2].path).exists()
    assert await svc.run_retention(now) == 0
    # the contract's days are never below the floor of 7
    days["value"] = 3
    assert await svc.run_retention(T0 + 7 * 86400) == 0
    assert (await svc.status(CH)).retention_days == 7
    assert await svc.run_retention(T0 + 7 * 86400 + 11) == 1


async def test_disk_full_stops_recording_and_deletes_nothing(make_service, ps_dir, tmp_path) -> None:
    clock = FakeClock()
    opener = Opener([FakeReader(timeline(vector_units(ps_dir), 1), clock, T0)])
    svc, rec = make_service(opener, clock, min_free_mb=1e15)
    await svc.start()
    await svc.set_plan(RecordPlan(CH, "continuous"), "admin")
    await wait_for(lambda: svc.recorders[CH].state == "failed")
    st = await svc.status(CH)
    assert "disk full" in st.reason and opener.calls == []
    await svc.check()
    assert len(rec.actions("record.disk_full")) == 1
    assert [a[0] for a in rec.alerts] == ["record.disk_full"]
    svc.min_free_mb = 0  # space again: recording resumes
    await svc.check()
    await wait_for(lambda: len(opener.calls) == 1)


async def test_unencrypted_opt_out_stores_the_program_stream(make_service, ps_dir, tmp_path) -> None:
    svc, rec, *_ = await record(make_service, vector_units(ps_dir), loops=1, encrypt=False)
    await svc.set_plan(RecordPlan(CH, "off"), "admin")
    rows = await finished_rows(svc)
    assert rows[0].cipher == "none" and rows[0].path.endswith(".ps")
    assert (tmp_path / "r1" / rows[0].path).read_bytes().startswith(b"\x00\x00\x01\xba")
    assert not (tmp_path / "keys" / "record.key").exists()


async def test_segment_left_open_by_a_crash_is_recovered(make_service, ps_dir, tmp_path, db_engine) -> None:
    svc, rec, feed, reader, opener, clock = await record(make_service, vector_units(ps_dir), loops=1, hold=True)
    rows = await finished_rows(svc)
    assert rows[-1].state == "open"
    recorder = svc.recorders.pop(CH)  # the process "dies": the open segment is never finished
    recorder._task.cancel()
    seg = recorder.segment
    seg.sink.write(seg.writer.write(b""))
    for f in seg.sink.files.values():
        f.close()
    svc2, rec2 = make_service(Opener(), FakeClock(T0 + 60))
    await svc2.start()
    rows = await finished_rows(svc2)
    assert rows[-1].state == "partial" and rows[-1].sha256
    assert rows[-1].end > rows[-1].start
    assert rec2.actions("record.segment")[0]["partial"] is True
    timed = await asyncio.to_thread(lambda: list(svc2.iter_units(CH, dt(T0 + 8), dt(T0 + 9))))
    assert timed and timed[0].au.keyframe


async def test_models_match_migration_0008(db_engine) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from gbcore.db import Base

    def diff(sync_conn):
        ctx = MigrationContext.configure(sync_conn, opts={"compare_type": True, "compare_server_default": True})
        return [d for d in compare_metadata(ctx, Base.metadata)
                if "record_" in repr(d)]

    async with db_engine.connect() as conn:
        assert await conn.run_sync(diff) == []
    async with make_sessionmaker(db_engine)() as s:
        assert (await s.scalars(select(RecordSegmentRow))).all() == []


async def test_a_refusal_that_says_when_to_retry_shortens_the_backoff(make_service, ps_dir) -> None:
    """A channel recorded by another media node (its stream lease) is refused with ``retry_after``: the recorder
    tries again by then, not after its backoff (a minute at most), so recording resumes soon after a failover."""
    from gbcore.periodic import Backoff
    from media_relay.stream import MediaError

    clock = FakeClock()
    reader = FakeReader(timeline(vector_units(ps_dir), 1), clock, T0)
    owned = MediaError("stream_owned", "另一媒体节点正在录制 / another media node holds the stream")
    owned.retry_after = 0.05
    opener = Opener([owned, owned, reader])
    svc, _ = make_service(opener, clock, backoff=Backoff(base=30.0, cap=60.0, jitter=0))
    await svc.start()
    await svc.set_plan(RecordPlan(CH, "continuous"), "admin")
    await asyncio.wait_for(reader.drained.wait(), 5)  # two refusals and the reader within seconds, not minutes
    assert len(opener.calls) == 3  # (without the hint the first retry would wait the backoff's 30 s)
