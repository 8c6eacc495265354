"""Platform recording: plans, recorders, segments, retention, redundancy and the disk-full guard.

:class:`RecordingService` is what the assembly wires (``gbops/app.py``): the live Stream comes through the
injected ``open_reader`` (one upstream shared with viewers), evidence goes to the injected ``audit`` and
problems to ``alert``.  Every finished segment is audited (``record.segment`` with the SHA-256 of the bytes
as stored), every expired one deleted and audited (``record.delete``), every repaired copy audited
(``record.repair``), and a full disk audited and alerted (``record.disk_full``): recording stops, nothing
unexpired is ever deleted to make room.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gbcore.db import begin_write, utcnow
from gbcore.ids import ChannelRef
from gbcore.log import get_logger
from gbcore.periodic import Backoff, PeriodicTask
from media_relay.recording.crypto import CHUNK_SIZE, CIPHERS, CryptoError, load_key, sm4_available
from media_relay.recording.models import RecordPlanRow, RecordSegmentRow
from media_relay.recording.recorder import ChannelRecorder, OpenSegment
from media_relay.recording.schedule import schedule_from_json, schedule_to_json, validate_plan
from media_relay.recording.store import (
    check_copy,
    file_sha256,
    free_mb,
    read_units,
    repair_copy,
    unwrap_ticks,
)
from media_relay.recording.types import RecorderStatus, RecordingError, RecordPlan, SegmentInfo, TimedUnit

__all__ = ["RETENTION_FLOOR_DAYS", "RecordingService"]

log = get_logger("gbops.recording")

RETENTION_FLOOR_DAYS = 7

Audit = Callable[[str, str, dict], Awaitable[None]]
Alert = Callable[[str, str, ChannelRef | None], Awaitable[None]]


def _dt(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def _ts(value: float | datetime) -> float:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime: say which zone it is in")
        return value.timestamp()
    return float(value)


class RecordingService:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        open_reader: Callable[[ChannelRef, str], Awaitable[Any]],
        *,
        roots: Sequence[str | Path] | str,
        segment_seconds: float = 60.0,
        retention_days_default: int = 7,
        encrypt: bool = True,
        cipher: str = "aes-256-gcm",
        key_file: str | Path | None = None,
        min_free_mb: float = 1024,
        check_interval: float = 60.0,
        audit: Audit | None = None,
        alert: Alert | None = None,
        retention_days: Callable[[ChannelRef], Awaitable[int | None]] | None = None,
        clock: Callable[[], float] = time.time,
        backoff: Backoff = Backoff(base=1.0, cap=60.0),
        schedule_poll: float = 5.0,
        chunk_size: int = CHUNK_SIZE,
        drift_tolerance: float = 2.0,
        verify_every: float = 7 * 86400.0,
        verify_bytes_per_check: int = 512 << 20,
    ) -> None:
        if isinstance(roots, str):
            roots = [r for r in (p.strip() for p in roots.split(",")) if r]
        self.roots = [Path(r) for r in roots]
        if not self.roots:
            raise RecordingError("no_roots", "未配置录像存储目录 / no recording root configured")
        if segment_seconds <= 0:
            raise ValueError("segment_seconds must be positive")
        self.sessionmaker = sessionmaker
        self.open_reader = open_reader
        self.segment_seconds = float(segment_seconds)
        self.retention_days_default = max(RETENTION_FLOOR_DAYS, int(retention_days_default))
        self.encrypt = encrypt
        self.cipher = cipher if encrypt else "none"
        if self.cipher not in CIPHERS:
            raise RecordingError("bad_cipher", f"未知的加密算法 / unknown cipher {cipher!r}")
        self.key_file = Path(key_file) if key_file else None
        self.key: bytes | None = None
        self.min_free_mb = min_free_mb
        self.check_interval = check_interval
        self.audit = audit
        self.alert = alert
        self.retention_days_cb = retention_days
        self.clock = clock
        self.backoff = backoff
        self.schedule_poll = schedule_poll
        self.chunk_size = chunk_size
        self.drift_tolerance = drift_tolerance
        self.verify_every = verify_every
        self.verify_bytes_per_check = verify_bytes_per_check
        self.recorders: dict[ChannelRef, ChannelRecorder] = {}
        self.disk_full = False
        self._disk_full_reported = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._checker: PeriodicTask | None = None
        self._plan_lock = asyncio.Lock()
        self.started = False

    # ============================================================================ lifecycle
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for root in self.roots:
            root.mkdir(parents=True, exist_ok=True)
        if self.cipher == "none":
            log.warning("record.unencrypted", detail="GBOPS_RECORD_ENCRYPT=false: recordings are stored unencrypted "
                        "/ 录像未加密存储")
        else:
            if self.cipher == "sm4-gcm" and not sm4_available():
                raise RecordingError("cipher_unavailable", "此系统的加密库不支持 SM4-GCM / SM4-GCM is not available "
                                     "in this system's cryptography library")
            if self.key_file is None:
                raise RecordingError("key_file", "未配置录像密钥文件 / no recording key file configured")
            self.key = await asyncio.to_thread(load_key, self.key_file)
        await self._recover()
        await self.check_disk()
        async with self.sessionmaker() as session:
            rows = (await session.scalars(select(RecordPlanRow).where(RecordPlanRow.mode != "off"))).all()
        for row in rows:
            self._start_recorder(self._plan_of(row))
        self._checker = PeriodicTask("record.check", self.check, interval=self.check_interval, logger=log,
                                     failure_event="record.check_failed")
        self._checker.start()
        self.started = True

    async def stop(self) -> None:
        if self._checker is not None:
            await self._checker.stop()
            self._checker = None
        recorders, self.recorders = list(self.recorders.values()), {}
        await asyncio.gather(*(r.stop() for r in recorders), return_exceptions=True)
        self.started = False

    async def check(self) -> None:
        """The periodic work: free space, schedules, retention, copies."""
        await self.check_disk()
        now = self.clock()
        for rec in list(self.recorders.values()):
            rec.tick(now)
        await self.run_retention(now)
        await self.check_copies()

    def _start_recorder(self, plan: RecordPlan) -> None:
        rec = ChannelRecorder(self, plan)
        self.recorders[rec.channel] = rec
        rec.start()

    async def _recover(self) -> None:
        """Segments left open by a stop without shutdown: keep what was written, readable to its last
        complete chunk (state ``partial``), hashed and audited like any other."""
        async with self.sessionmaker() as session:
            rows = (await session.scalars(select(RecordSegmentRow).where(RecordSegmentRow.state == "open"))).all()
        for row in rows:
            end, sha, size = await asyncio.to_thread(self._scan_partial, row)
            async with self.sessionmaker() as session, session.begin():
                r = await session.get(RecordSegmentRow, row.id)
                if r is None:
                    continue
                r.state, r.sha256, r.bytes, r.closed_at = "partial", sha, size, utcnow()
                if end is not None:
                    r.end = max(r.start, _dt(end))
                r.duration_s = (r.end - r.start).total_seconds()
            ch = ChannelRef(row.device_id, row.channel_id)
            await self._audit("record.segment", ch, {
                **ch.as_dict(), "segment_id": row.id, "start": row.start.isoformat(), "end": r.end.isoformat(),
                "bytes": size, "sha256": sha, "path": row.path, "cipher": row.cipher, "partial": True})

    def _scan_partial(self, row: RecordSegmentRow) -> tuple[float | None, str | None, int]:
        for root in self.roots:
            path = root / row.path
            if not path.exists():
                continue
            sha, size = file_sha256(path)
            first = last = None
            try:
                with open(path, "rb") as f:
                    for au in read_units(f, row.cipher, self.key, row.path, partial=True):
                        if au.kind == "video" and au.pts is not None:
                            if first is None:
                                first = au.pts
                            last = au.pts
            except (CryptoError, OSError):
                pass
            end = None
            if first is not None and last is not None:
                end = row.start.timestamp() + (unwrap_ticks(last, first) + 3600) / 90000
            # the other roots get this copy at the next check (their partial files may differ)
            return end, sha, size
        return None, None, 0

    # ============================================================================ plans
    @staticmethod
    def _plan_of(row: RecordPlanRow) -> RecordPlan:
        return RecordPlan(ChannelRef(row.device_id, row.channel_id), row.mode, schedule_from_json(row.schedule),
                          row.stream, row.updated_by, row.updated_at)

    async def get_plan(self, channel: ChannelRef) -> RecordPlan:
        ch = ChannelRef(*channel)
        async with self.sessionmaker() as session:
            row = await session.get(RecordPlanRow, (ch.device_id, ch.channel_id))
        return self._plan_of(row) if row is not None else RecordPlan(ch)

    async def set_plan(self, plan: RecordPlan, actor: str | None) -> RecordPlan:
        """Validate and store ``plan``, then apply it at once (off closes the open segment before this
        returns).  Raises :class:`RecordingError` ``bad_plan``."""
        plan = validate_plan(plan)
        ch = plan.channel
        now = utcnow()
        async with self._plan_lock:
            async with self.sessionmaker() as session:
                await begin_write(session)
                row = await session.get(RecordPlanRow, (ch.device_id, ch.channel_id))
                if row is None:
                    row = RecordPlanRow(device_id=ch.device_id, channel_id=ch.channel_id)
                    session.add(row)
                row.mode, row.schedule, row.stream = plan.mode, schedule_to_json(plan.schedule), plan.stream
                row.updated_by, row.updated_at = actor, now
                await session.commit()
            saved = RecordPlan(ch, plan.mode, plan.schedule, plan.stream, actor, now)
            old = self.recorders.pop(ch, None)
            if old is not None:
                await old.stop()
            if saved.mode != "off" and self.started:
                self._start_recorder(saved)
        # record.plan is recorded by the caller (the portal knows the user, their address and their session)
        return saved

    # ============================================================================ status and listing
    async def retention_for(self, channel: ChannelRef) -> int:
        days = None
        if self.retention_days_cb is not None:
            try:
                days = await self.retention_days_cb(ChannelRef(*channel))
            except Exception:
                log.exception("record.retention_lookup_failed", channel=ChannelRef(*channel).key)
                days = None
        return max(RETENTION_FLOOR_DAYS, int(days) if days else self.retention_days_default)

    async def status(self, channel: ChannelRef) -> RecorderStatus:
        ch = ChannelRef(*channel)
        rec = self.recorders.get(ch)
        async with self.sessionmaker() as session:
            agg = (await session.execute(
                select(func.count(), func.coalesce(func.sum(RecordSegmentRow.bytes), 0),
                       func.coalesce(func.sum(RecordSegmentRow.duration_s), 0.0),
                       func.min(RecordSegmentRow.start), func.max(RecordSegmentRow.end))
                .where(RecordSegmentRow.device_id == ch.device_id, RecordSegmentRow.channel_id == ch.channel_id,
                       RecordSegmentRow.state != "open"))).one()
        count, size, seconds, oldest, newest = agg
        seg = rec.segment if rec is not None else None
        if seg is not None:
            count += 1
            size += seg.sink.size
            seconds += seg.end - seg.start
            oldest = min(oldest, _dt(seg.start)) if oldest else _dt(seg.start)
            newest = max(newest, _dt(seg.end)) if newest else _dt(seg.end)
        if rec is None:
            state, reason = "off", None
        else:
            state, reason = rec.state, rec.reason
        return RecorderStatus(ch, state, reason, int(size), float(seconds), oldest, newest, int(count),
                              await self.retention_for(ch))

    def _info(self, row: RecordSegmentRow) -> SegmentInfo:
        ch = ChannelRef(row.device_id, row.channel_id)
        rec = self.recorders.get(ch)
        seg = rec.segment if rec is not None else None
        if row.state == "open" and seg is not None and seg.id == row.id:
            return self._open_info(seg)
        return SegmentInfo(row.id, ch, row.start, row.end, row.bytes, row.sha256, row.codec,
                           open=row.state == "open", has_audio=row.audio_codec is not None, path=row.path,
                           extra={"cipher": row.cipher, "state": row.state, "audio_codec": row.audio_codec,
                                  "frames": row.frames})

    @staticmethod
    def _open_info(seg: OpenSegment) -> SegmentInfo:
        return SegmentInfo(seg.id or 0, seg.channel, _dt(seg.start), _dt(seg.end), seg.sink.size, None, seg.codec,
                           open=True, has_audio=seg.has_audio, path=seg.rel,
                           extra={"cipher": seg.cipher, "state": "open", "audio_codec": seg.audio_codec,
                                  "frames": seg.frames})

    async def segments(self, channel: ChannelRef, start: datetime, end: datetime) -> list[SegmentInfo]:
        """Segments overlapping [start, end), by start; the open one with its current end."""
        ch = ChannelRef(*channel)
        async with self.sessionmaker() as session:
            rows = (await session.scalars(
                select(RecordSegmentRow)
                .where(RecordSegmentRow.device_id == ch.device_id, RecordSegmentRow.channel_id == ch.channel_id,
                       RecordSegmentRow.start < end,
                       (RecordSegmentRow.end > start) | (RecordSegmentRow.state == "open"))
                .order_by(RecordSegmentRow.start, RecordSegmentRow.id))).all()
        out = [self._info(r) for r in rows]
        rec = self.recorders.get(ch)
        seg = rec.segment if rec is not None else None
        if seg is not None and seg.id is None and _dt(seg.start) < end and _dt(seg.end) > start:
            out.append(self._open_info(seg))  # opened a moment ago, its row not written yet
        return [s for s in out if s.end > start or s.open]

    # ============================================================================ reading back
    def iter_units(self, channel: ChannelRef, start: datetime, end: datetime) -> Iterator[TimedUnit]:
        """Access units with their content time from the keyframe at or before ``start`` to ``end``, across
        segments in order, decrypted.  Blocking: run it in a thread (never on the event loop's thread)."""
        loop = self._loop
        if loop is None:
            raise RecordingError("not_started", "录像服务未启动 / the recording service is not running")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            raise RuntimeError("iter_units blocks: call it in a worker thread, not on the event loop")
        t_start, t_end = _ts(start), _ts(end)
        if t_end <= t_start:
            return
        segs = asyncio.run_coroutine_threadsafe(self.segments(channel, start, end), loop).result(timeout=30)
        seen: set[tuple[int, str]] = set()
        first = True
        last_end = t_start
        while segs:
            for seg in segs:
                seen.add((seg.id, seg.path))
                if seg.start.timestamp() > t_end:
                    return
                for tu in self._segment_units(seg, t_start if first else None, t_end):
                    first = False
                    yield tu
                    if tu.at > t_end and tu.au.kind == "video":
                        return
                last_end = max(last_end, seg.end.timestamp())
            if last_end >= t_end or not segs[-1].open:
                return
            # the open segment was read as far as written: pick up what was recorded meanwhile
            more = asyncio.run_coroutine_threadsafe(self.segments(channel, _dt(last_end - 1), end), loop).result(30)
            segs = [s for s in more if (s.id, s.path) not in seen and s.start.timestamp() >= last_end - 0.5]

    def _segment_units(self, seg: SegmentInfo, start: float | None, end: float) -> Iterator[TimedUnit]:
        cipher = seg.extra.get("cipher", self.cipher)
        partial = seg.open or seg.extra.get("state") != "done"
        base = seg.start.timestamp()
        skip = 0
        for root in self.roots:
            path = root / seg.path
            if not path.exists():
                continue
            pending: list[TimedUnit] = []
            started = start is None
            first_pts: int | None = None
            produced = 0
            try:
                with open(path, "rb") as f:
                    for au in read_units(f, cipher, self.key, seg.path, partial=partial):
                        pts = au.pts if au.pts is not None else au.dts
                        if first_pts is None and pts is not None and au.kind == "video":
                            first_pts = pts  # the segment's first unit: the keyframe its start belongs to
                        at = base + (unwrap_ticks(pts, first_pts) / 90000 if pts is not None and first_pts is not None
                                     else 0.0)
                        tu = TimedUnit(at, au)
                        if not started:
                            if at < start:
                                if au.kind == "video" and au.keyframe:
                                    pending = [tu]
                                elif pending:
                                    pending.append(tu)
                                continue
                            started = True
                            for p in pending:
                                produced += 1
                                if produced > skip:
                                    yield p
                            pending = []
                        if at > end:
                            if au.kind == "video":
                                produced += 1
                                if produced > skip:
                                    yield tu  # the caller stops here
                                return
                            continue
                        produced += 1
                        if produced > skip:
                            yield tu
                    for p in pending:  # the window starts after this segment's last unit
                        produced += 1
                        if produced > skip:
                            yield p
                return
            except (CryptoError, OSError) as exc:
                log.warning("record.read_failed", path=seg.path, root=str(root), error=str(exc))
                skip = max(skip, produced)
                continue
        raise RecordingError("segment_unreadable", "录像片段在所有存储目录中都无法读取 / the segment cannot be "
                             f"read from any recording root: {seg.path}")

    # ============================================================================ segment book-keeping
    async def _segment_opened(self, seg: OpenSegment) -> None:
        async with self.sessionmaker() as session:
            await begin_write(session)
            row = RecordSegmentRow(device_id=seg.channel.device_id, channel_id=seg.channel.channel_id,
                                   start=_dt(seg.start), end=_dt(seg.start), duration_s=0.0, bytes=0, sha256=None,
                                   codec=seg.codec, audio_codec=seg.audio_codec, cipher=seg.cipher, path=seg.rel,
                                   state="open", frames=0, missing=False)
            session.add(row)
            await session.commit()
            seg.id = row.id

    async def _segment_closed(self, seg: OpenSegment, sha: str) -> None:
        start, end = _dt(seg.start), _dt(max(seg.end, seg.start))
        async with self.sessionmaker() as session:
            await begin_write(session)
            row = await session.get(RecordSegmentRow, seg.id) if seg.id is not None else None
            if row is None:
                row = RecordSegmentRow(device_id=seg.channel.device_id, channel_id=seg.channel.channel_id,
                                       cipher=seg.cipher, path=seg.rel, codec=seg.codec)
                session.add(row)
            row.start, row.end, row.duration_s = start, end, (end - start).total_seconds()
            row.bytes, row.sha256, row.frames, row.state = seg.sink.size, sha, seg.frames, "done"
            row.audio_codec = seg.audio_codec if seg.has_audio else None
            row.closed_at = utcnow()
            row.missing = bool(seg.sink.failed)
            await session.commit()
            seg.id = row.id
        if seg.sink.failed:
            log.warning("record.copy_failed", channel=seg.channel.key, path=seg.rel,
                        roots=",".join(str(r) for r in seg.sink.failed))
        await self._audit("record.segment", seg.channel, {
            **seg.channel.as_dict(), "segment_id": seg.id, "start": start.isoformat(), "end": end.isoformat(),
            "bytes": seg.sink.size, "sha256": sha, "path": seg.rel, "cipher": seg.cipher})

    async def _audit(self, action: str, channel: ChannelRef | None, detail: dict) -> None:
        if self.audit is None:
            return
        try:
            await self.audit(action, channel.key if channel is not None else "recording", detail)
        except Exception:
            log.exception("record.audit_failed", action=action)

    async def _alert(self, code: str, message: str, channel: ChannelRef | None) -> None:
        if self.alert is None:
            return
        try:
            await self.alert(code, message, channel)
        except Exception:
            log.exception("record.alert_failed", code=code)

    # ============================================================================ disk, retention, copies
    async def check_disk(self) -> bool:
        """Whether a root is below ``min_free_mb``; stops recording (and reports once) when it is."""
        free = {}
        for root in self.roots:
            try:
                free[root] = await asyncio.to_thread(free_mb, root)
            except OSError:
                free[root] = 0.0
        full = [r for r, mb in free.items() if mb < self.min_free_mb]
        if full:
            was = self.disk_full
            self.disk_full = True
            if not was:
                for rec in self.recorders.values():
                    rec.interrupt("disk_full")
            await self.on_disk_full(None, free={str(r): round(mb, 1) for r, mb in free.items()})
        elif self.disk_full:
            self.disk_full = False
            self._disk_full_reported = False
            log.info("record.disk_ok")
            for rec in self.recorders.values():
                rec.wake()
        return bool(full)

    async def on_disk_full(self, channel: ChannelRef | None, free: dict | None = None) -> None:
        """Report a full disk once per episode (audit ``record.disk_full`` and an alert)."""
        self.disk_full = True
        if self._disk_full_reported:
            return
        self._disk_full_reported = True
        detail = {"min_free_mb": self.min_free_mb, "free_mb": free or {},
                  "channel": channel.key if channel is not None else None}
        log.error("record.disk_full", **{k: str(v) for k, v in detail.items()})
        await self._audit("record.disk_full", channel, detail)
        await self._alert("record.disk_full", "录像存储空间不足，录像已停止（未删除任何未过期的录像）/ recording storage is "
                          "full: recording stopped (no unexpired recording was deleted)", channel)

    async def run_retention(self, now: float | datetime | None = None) -> int:
        """Delete exactly the segments older than their channel's retention (ended before now - days);
        each deletion is audited with the segment's SHA-256.  Returns how many were deleted."""
        t_now = _ts(now) if now is not None else self.clock()
        async with self.sessionmaker() as session:
            channels = (await session.execute(
                select(RecordSegmentRow.device_id, RecordSegmentRow.channel_id).distinct())).all()
        deleted = 0
        for device_id, channel_id in channels:
            ch = ChannelRef(device_id, channel_id)
            days = await self.retention_for(ch)
            cutoff = _dt(t_now) - timedelta(days=days)
            async with self.sessionmaker() as session:
                rows = (await session.scalars(
                    select(RecordSegmentRow)
                    .where(RecordSegmentRow.device_id == device_id, RecordSegmentRow.channel_id == channel_id,
                           RecordSegmentRow.end < cutoff, RecordSegmentRow.state != "open")
                    .order_by(RecordSegmentRow.start))).all()
            for row in rows:
                await asyncio.to_thread(self._remove_files, row.path)
                await self._audit("record.delete", ch, {
                    **ch.as_dict(), "segment_id": row.id, "start": row.start.isoformat(), "end": row.end.isoformat(),
                    "bytes": row.bytes, "sha256": row.sha256, "path": row.path, "retention_days": days})
                async with self.sessionmaker() as session:
                    await begin_write(session)
                    await session.execute(delete(RecordSegmentRow).where(RecordSegmentRow.id == row.id))
                    await session.commit()
                deleted += 1
        if deleted:
            log.info("record.retention", deleted=deleted)
        return deleted

    def _remove_files(self, rel: str) -> None:
        for root in self.roots:
            path = root / rel
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            parent = path.parent
            for _ in range(3):  # day, channel, device folders when empty
                try:
                    parent.rmdir()
                except OSError:
                    break
                parent = parent.parent

    async def check_copies(self, *, full: bool | None = None) -> int:
        """Check every finished segment on every root (size always; SHA-256 for those not verified within
        ``verify_every``, up to ``verify_bytes_per_check`` bytes per run, or all when ``full``); repair a
        missing or corrupt copy from a good one and report it.  Returns how many copies were repaired."""
        now = utcnow()
        async with self.sessionmaker() as session:
            rows = (await session.scalars(
                select(RecordSegmentRow).where(RecordSegmentRow.state != "open", RecordSegmentRow.sha256.is_not(None))
                .order_by(RecordSegmentRow.verified_at.is_not(None), RecordSegmentRow.verified_at,
                          RecordSegmentRow.id))).all()
        budget = self.verify_bytes_per_check
        repaired = 0
        for row in rows:
            deep = full if full is not None else (
                (row.verified_at is None or (now - row.verified_at).total_seconds() >= self.verify_every)
                and budget >= row.bytes * len(self.roots))
            if deep and full is None:
                budget -= row.bytes * len(self.roots)
            checks = await asyncio.to_thread(
                lambda r=row, d=deep: [check_copy(root, r.path, r.sha256, r.bytes, full=d) for root in self.roots])
            good = [c.root for c in checks if c.ok]
            bad = [c for c in checks if not c.ok]
            ch = ChannelRef(row.device_id, row.channel_id)
            fixed_all = True
            for c in bad:
                source = None
                for g in good:
                    try:
                        await asyncio.to_thread(repair_copy, g / row.path, c.root, row.path, row.sha256)
                    except (CryptoError, OSError) as exc:
                        log.error("record.repair_failed", path=row.path, root=str(c.root), source=str(g),
                                  error=str(exc))
                        continue
                    source = g
                    break
                if source is None:
                    fixed_all = False
                    continue
                repaired += 1
                log.warning("record.repaired", channel=ch.key, path=row.path, root=str(c.root), reason=c.reason)
                await self._audit("record.repair", ch, {
                    **ch.as_dict(), "segment_id": row.id, "path": row.path, "root": str(c.root),
                    "reason": c.reason, "sha256": row.sha256, "from_root": str(source)})
            if bad and not good:
                await self._alert("record.corrupt", f"录像片段的所有副本均已损坏或丢失 / every copy of a recorded "
                                  f"segment is damaged or missing: {row.path}", ch)
            if deep or (bad and not fixed_all) or row.missing != (bool(bad) and not fixed_all):
                async with self.sessionmaker() as session:
                    await begin_write(session)
                    r = await session.get(RecordSegmentRow, row.id)
                    if r is not None:
                        if deep and good:
                            r.verified_at = now
                        r.missing = bool(bad) and not fixed_all
                    await session.commit()
        return repaired

