"""Download jobs: capture a live clip of a channel, export it watermarked and tagged, keep the file.

``DownloadManager.submit()`` records the job (table ``download_jobs``) and ``download.request`` in the
audit log, then runs it as a task:

1. ``queued``: waits for one of ``download_max_jobs`` slots.
2. ``capturing``: a live clip opens a reader on the channel's live Stream (starting it when nobody
   watches; no viewer session is made) and spools ``seconds`` of media time of access units (video and
   audio) to disk.  The reader is closed at once afterwards, so the Stream's usual idle timer ends the
   upstream.  A history download (issue 13: ``window`` and ``source``) reads
   ``media.open_history(channel, window, source, speed=download_speed)`` instead (the device's
   ``s=Download``, or the platform's recording) to its end; its progress is the reader's.
3. ``encoding``: :func:`watermark.export.export_mp4` on a worker thread, with the requester's
   watermark and a signed session tag (session id ``dl-<job id>``, kind ``download`` and the window) in
   every keyframe; audio kept (AAC as is, G.711 as AAC); a history download cut to its window.
4. ``done`` (``download.complete`` with the file's SHA-256 and the window, in the transaction that
   marks the job done) or ``failed`` (``download.failed`` with
   the reason).  A job still running when the platform stops is failed with "平台重启 / platform
   restarted" (at stop, or at the next start when the process died).

Files live in ``<data_dir>/downloads/<job id>.mp4`` and are deleted ``download_retention_hours``
after they were made (the row stays, with ``file_removed_at``; the audit entries stay forever).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import functools
import inspect
import math
import secrets
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gbcore.db import begin_write
from gbcore.ids import ChannelRef
from gbcore.log import get_logger
from watermark.export import AccessUnitSpool, ExportError, ExportResult, export_mp4
from watermark.models import DownloadJob
from watermark.overlay import WatermarkSettings
from watermark.pipeline import session_code
from watermark.policy import WatermarkPolicy
from watermark.render import WatermarkText
from watermark.tag import SessionTag, load_or_create_key, window_seconds
from watermark.viewer import FindViewer

if TYPE_CHECKING:
    from gbcore.settings import Settings
    from watermark.config import WatermarkConfig

__all__ = ["AuditUnavailable", "CAPTURE_SHARE", "DownloadManager", "HISTORY_SOURCES", "JobProgress", "RESTARTED",
           "watermark_settings_for"]

log = get_logger("gbops.downloads")

RESTARTED = "平台重启 / platform restarted"
#: Share of the overall percentage given to the capture (it runs in real time; encoding is several
#: times faster than real time, so it gets the rest).
CAPTURE_SHARE = 0.8
#: Assumed encoding time per captured second, for the ETA before encoding has started.
ASSUMED_ENCODE_FACTOR = 0.2
#: Wall-clock seconds of work before a measured rate (ETA, speed) is given.
MIN_RATE_SECONDS = 0.5
ACTIVE_STATES = ("queued", "capturing", "encoding")
HISTORY_SOURCES = ("device", "platform")


def watermark_settings_for(policy: WatermarkPolicy, roles: tuple[str, ...] | None) -> WatermarkSettings:
    """The live watermark's look under ``policy`` (:mod:`watermark.policy`) for a user holding ``roles``
    (None: unknown, the watermark stays on).  The session tag is added whatever this says."""
    on = True if roles is None else policy.applies(roles)
    return dataclasses.replace(policy.look, enabled=on)


@dataclasses.dataclass
class JobProgress:
    """What a running job has done so far (in memory; the row holds the outcome)."""

    state: str = "queued"
    seconds_captured: float = 0.0
    frames_captured: int = 0
    frames_encoded: int = 0
    frames_total: int | None = None
    capture_started: float | None = None  # monotonic
    encode_started: float | None = None   # monotonic
    capture_fraction: float | None = None  # a history download: the reader's progress() (0..1)
    cancel: threading.Event = dataclasses.field(default_factory=threading.Event)

    def _captured(self, seconds: int) -> float:
        if self.capture_fraction is not None:
            return max(0.0, min(1.0, self.capture_fraction))
        return min(1.0, self.seconds_captured / seconds) if seconds > 0 else 0.0

    def percent(self, seconds: int) -> float:
        if self.state == "done":
            return 100.0
        if self.state == "capturing":
            return round(100 * CAPTURE_SHARE * self._captured(seconds), 1)
        if self.state == "encoding":
            frac = self.frames_encoded / self.frames_total if self.frames_total else 0.0
            return round(100 * (CAPTURE_SHARE + (1 - CAPTURE_SHARE) * min(1.0, frac)), 1)
        return 0.0

    def eta(self, seconds: int, now: float) -> float | None:
        if self.state == "capturing":
            if self.capture_fraction is not None:  # history: faster than real time, from the rate so far
                done = self._captured(seconds)
                if done <= 0 or self.capture_started is None:
                    return None
                spent = max(now - self.capture_started, 1e-6)
                return round(spent * (1 - done) / done + seconds * ASSUMED_ENCODE_FACTOR, 1)
            return round(max(0.0, seconds - self.seconds_captured) + seconds * ASSUMED_ENCODE_FACTOR, 1)
        if self.state == "encoding":
            if not self.frames_encoded or not self.frames_total or self.encode_started is None:
                return round(self.seconds_captured * ASSUMED_ENCODE_FACTOR, 1)
            rate = self.frames_encoded / max(now - self.encode_started, 1e-6)
            return round(max(0, self.frames_total - self.frames_encoded) / rate, 1)
        return None

    def measured_eta(self, seconds: int, now: float) -> float | None:
        """Seconds left at the overall rate measured since the job began work (capture start): elapsed x
        (100 - percent) / percent.  None while queued, before any progress, in the first
        :data:`MIN_RATE_SECONDS`, or when finished - an estimate only, as the download centre says."""
        if self.state not in ("capturing", "encoding") or self.capture_started is None:
            return None
        elapsed = now - self.capture_started
        done = self.percent(seconds)
        if elapsed < MIN_RATE_SECONDS or done <= 0:
            return None
        return round(max(0.0, elapsed * (100.0 - done) / done), 1)

    def speed(self, seconds: int, now: float) -> float | None:
        """Media seconds handled per wall-clock second in the current step (about 1 for a live clip's
        capture, more for a device download or for encoding); None when not yet measurable."""
        if self.state == "capturing" and self.capture_started is not None:
            elapsed = now - self.capture_started
            media = self._captured(seconds) * seconds if self.capture_fraction is not None else self.seconds_captured
        elif self.state == "encoding" and self.encode_started is not None and self.frames_total:
            elapsed = now - self.encode_started
            media = self.seconds_captured * min(1.0, self.frames_encoded / self.frames_total)
        else:
            return None
        if elapsed < MIN_RATE_SECONDS or media <= 0:
            return None
        return round(media / elapsed, 2)


class DownloadManager:
    def __init__(self, config: WatermarkConfig, sessionmaker: async_sessionmaker[AsyncSession], *, audit: Any = None,
                 media: Any = None) -> None:
        self.config = config
        self.sessionmaker = sessionmaker
        self.audit = audit
        self.media = media
        self.dir = config.data_dir / "downloads"
        self.max_jobs = config.download_max_jobs
        self.retention = timedelta(hours=config.download_retention_hours)
        self.preset = config.download_preset
        self.crf = config.download_crf
        self.capture_timeout = 10.0  # no access unit this long during a capture: the job fails
        self.speed = config.download_speed  # a device download's a=downloadspeed
        self.progress: dict[str, JobProgress] = {}
        self._tasks: dict[str, asyncio.Task] = {}
        self._slots: asyncio.Semaphore | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=self.max_jobs,
                                                               thread_name_prefix="download-export")
        self._sweeper: asyncio.Task | None = None
        self._key: Any = None
        self._stopping = False
        self._cancel_reasons: dict[str, str] = {}  # job id -> why it was cancelled (the portal's revocation)

    # ------------------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Fail the jobs an earlier run left unfinished, remove their partial files, start retention."""
        self.dir.mkdir(parents=True, exist_ok=True)
        now = datetime.now(UTC)
        async with self.sessionmaker() as session:
            await begin_write(session)  # SQLite: a deferred read-then-write fails at once beside another writer
            rows = (await session.scalars(select(DownloadJob).where(DownloadJob.state.in_(ACTIVE_STATES)))).all()
            for row in rows:
                row.state, row.reason, row.finished_at = "failed", RESTARTED, now
            await session.commit()
        for row in rows:
            self._remove_files(row.id)
            await self._audit_failed(row, RESTARTED)
        if rows:
            log.warning("downloads.interrupted", jobs=len(rows))
        for path in self.dir.glob("*.part"):
            path.unlink(missing_ok=True)
        for path in self.dir.glob("*.capture"):
            path.unlink(missing_ok=True)
        self._sweeper = asyncio.create_task(self._sweep(), name="download-retention")

    async def stop(self) -> None:
        self._stopping = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._executor.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------------------ jobs
    def _signing_key(self) -> Any:
        if self._key is None:
            self._key = load_or_create_key(self.config.data_dir, path=self.config.tag_key_path)
        return self._key

    async def submit(self, *, user: Any, channel_id: str, device_id: str, seconds: int | None = None,
                     client_ip: str | None, transport: str, roles: tuple[str, ...] | None = None,
                     window: tuple[datetime, datetime] | None = None, source: str | None = None,
                     purpose: str | None = None) -> DownloadJob:
        """Record the job and ``download.request``, start it; raises when the audit log refuses.

        A live clip: ``seconds`` of the live stream from now on.  A history download: ``window``
        (aware datetimes) read from ``source`` (``device``, the default: ``s=Download`` at
        ``download_speed``; ``platform``: the platform's recording); ``seconds`` is then the window's
        length.  ``purpose``: what the requester says the copy is for (kept with the job and on the audit
        entry).  ``ValueError`` ("中文 / English") for a bad window, source or length."""
        start_w = end_w = None
        if window is not None:
            start_w, end_w = window
            if not isinstance(start_w, datetime) or not isinstance(end_w, datetime) \
                    or start_w.tzinfo is None or end_w.tzinfo is None:
                raise ValueError("时段须带时区 / the window's times must carry a time zone")
            start_w, end_w = start_w.astimezone(UTC), end_w.astimezone(UTC)
            if end_w <= start_w:
                raise ValueError("结束时间须晚于开始时间 / the end must be after the start")
            source = source or "device"
            if source not in HISTORY_SOURCES:
                raise ValueError(f"未知来源 / unknown source: {source!r} (device | platform)")
            seconds = math.ceil((end_w - start_w).total_seconds())
        elif source is not None:
            raise ValueError("来源只用于时段下载 / a source needs a window")
        elif seconds is None or seconds <= 0:
            raise ValueError("时长须为正数 / the length must be positive")
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_jobs)
        job_id = secrets.token_hex(8)
        now = datetime.now(UTC)
        row = DownloadJob(id=job_id, user_id=user.id, username=user.username, channel_id=channel_id,
                          device_id=device_id, seconds=seconds, state="queued", session_id=f"dl-{job_id}",
                          watermark_id=session_code(f"dl-{job_id}"), client_ip=client_ip, created_at=now,
                          window_start=start_w, window_end=end_w, source=source, purpose=purpose or None)
        async with self.sessionmaker() as session:
            session.add(row)
            await session.commit()
        # the range the tag and the audit entry name: the window, or the live clip's seconds from now
        tag_window = (start_w, end_w) if start_w is not None else (now, now + timedelta(seconds=seconds))
        if self.audit is not None:
            from audit_log.log import Actor, Target, download_detail

            detail = download_detail(device_id=device_id, channel_id=channel_id, start=tag_window[0],
                                     end=tag_window[1], session_id=row.session_id,
                                     watermark_id=row.watermark_id)
            try:
                await self.audit.record(actor=Actor.user(user), action="download.request",
                                        target=Target("channel", ChannelRef(device_id, channel_id).key),
                                        client_ip=client_ip,
                                        detail={**detail, "job_id": job_id, "seconds": seconds,
                                                **_window_detail(row),
                                                **({"purpose": row.purpose} if row.purpose else {})})
            except Exception as exc:
                await self._finish(job_id, state="failed", reason="审计日志不可用 / the audit log is unavailable")
                raise AuditUnavailable(str(exc)) from exc
        text = WatermarkText(display_name=user.display_name or "", account=user.username, phone=user.phone,
                             client_ip=client_ip or "", session_code=row.watermark_id)
        tag = SessionTag(session_id=row.session_id, user_id=user.id, channel_id=channel_id,
                         start_ms=int(now.timestamp() * 1000), device_id=device_id, kind="download",
                         window=window_seconds(tag_window))
        self.progress[job_id] = JobProgress()
        look = watermark_settings_for(self.config.policy, roles)
        task = asyncio.create_task(self._run(row, text, look, tag, transport), name=f"download-{job_id}")
        self._tasks[job_id] = task
        task.add_done_callback(lambda _t, j=job_id: self._tasks.pop(j, None))
        log.info("download.queued", job=job_id, channel=ChannelRef(device_id, channel_id).key, user=user.username,
                 seconds=seconds, window=[start_w.isoformat(), end_w.isoformat()] if start_w and end_w else None,
                 source=source)
        return row

    def running_ids(self) -> list[str]:
        """The jobs running (queued, capturing or encoding) in this process."""
        return [job_id for job_id, task in self._tasks.items() if not task.done()]

    async def cancel(self, job_id: str, reason: str) -> bool:
        """End a running job now: ``failed`` with ``reason`` (and ``download.failed``), its files removed.
        False when the job is not running here."""
        task = self._tasks.get(job_id)
        if task is None or task.done():
            return False
        self._cancel_reasons[job_id] = reason
        prog = self.progress.get(job_id)
        if prog is not None:
            prog.cancel.set()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(asyncio.shield(task), 5)
        return True

    async def get(self, job_id: str) -> DownloadJob | None:
        async with self.sessionmaker() as session:
            return await session.get(DownloadJob, job_id)

    async def list_jobs(self, user_id: int | None, limit: int = 100, *, username: str | None = None,
                        device_id: str | None = None, channel_id: str | None = None,
                        since: datetime | None = None, until: datetime | None = None) -> list[DownloadJob]:
        """Jobs newest first: of ``user_id`` (None: everyone's), optionally of one ``username``, one device
        and/or channel id (a channel: both), created in ``[since, until)``."""
        q = select(DownloadJob).order_by(DownloadJob.created_at.desc(), DownloadJob.id).limit(limit)
        if user_id is not None:
            q = q.where(DownloadJob.user_id == user_id)
        if username is not None:
            q = q.where(DownloadJob.username == username)
        if device_id is not None:
            q = q.where(DownloadJob.device_id == device_id)
        if channel_id is not None:
            q = q.where(DownloadJob.channel_id == channel_id)
        if since is not None:
            q = q.where(DownloadJob.created_at >= since)
        if until is not None:
            q = q.where(DownloadJob.created_at < until)
        async with self.sessionmaker() as session:
            return list((await session.scalars(q)).all())

    def file_path(self, row: DownloadJob) -> Path | None:
        if row.state != "done" or not row.file_name or row.file_removed_at is not None:
            return None
        path = self.dir / row.file_name
        return path if path.is_file() else None

    async def _run(self, row: DownloadJob, text: WatermarkText, look: WatermarkSettings, tag: SessionTag,
                   transport: str) -> None:
        prog = self.progress[row.id]
        spool = AccessUnitSpool(self.dir / f"{row.id}.capture")
        try:
            assert self._slots is not None
            async with self._slots:
                prog.state = "capturing"
                clip: tuple[float, float] | None = None
                if row.window_start is not None and row.window_end is not None:
                    start_wall, fps = await self._capture_window(row, prog, spool, transport)
                    clip = (row.window_start.timestamp(), row.window_end.timestamp())
                else:
                    start_wall, fps = await self._capture(row, prog, spool, transport)
                prog.state = "encoding"
                prog.frames_total = spool.frames
                prog.encode_started = time.monotonic()

                def on_progress(done: int, total: int | None, _seconds: float) -> None:
                    prog.frames_encoded = done
                    if total:
                        prog.frames_total = total

                out = self.dir / f"{row.id}.mp4"
                export = functools.partial(
                    export_mp4, spool, out, text=text, settings=look, tag=tag,
                    key=self._signing_key(), progress=on_progress, preset=self.preset, crf=self.crf,
                    start_time=start_wall, fps=fps, total_frames=spool.frames, threads=0, cancel=prog.cancel,
                    clip=clip)
                try:
                    result = await asyncio.get_running_loop().run_in_executor(self._executor, export)
                except asyncio.CancelledError:
                    prog.cancel.set()
                    raise
            # "done" comes from the row, written with download.complete in one transaction: a poll between the
            # export and that commit still reads "encoding" (never "done" without the file's figures)
            await self._complete(row, result)
        except asyncio.CancelledError:
            prog.cancel.set()
            with contextlib.suppress(Exception):
                await asyncio.shield(self._fail(row, self._cancel_reasons.pop(row.id, RESTARTED)))
            raise
        except _CaptureFailed as exc:
            await self._fail(row, str(exc))
        except ExportError as exc:
            await self._fail(row, str(exc))
        except Exception as exc:  # noqa: BLE001 - any failure ends the job with its reason
            log.exception("download.crashed", job=row.id)
            await self._fail(row, f"内部错误 / internal error: {type(exc).__name__}")
        finally:
            spool.remove()
            self.progress.pop(row.id, None)

    async def _capture(self, row: DownloadJob, prog: JobProgress, spool: AccessUnitSpool,
                       transport: str) -> tuple[float, float]:
        """Spool ``row.seconds`` of media time; returns (wall clock of the first frame, nominal fps)."""
        from media_relay.outputs.flv import TimestampUnwrapper
        from media_relay.stream import MediaError

        if self.media is None:
            raise _CaptureFailed("媒体服务未运行 / the media service is not running")
        try:
            reader = await self.media.open_reader(ChannelRef(row.device_id, row.channel_id), transport)
        except MediaError as exc:
            raise _CaptureFailed(f"{exc.code}: {exc}") from None
        prog.capture_started = time.monotonic()
        clock = TimestampUnwrapper()
        first_pts: int | None = None
        first_wall: float | None = None
        offset: float | None = None  # min over frames of (arrival wall clock - pts): the best anchor
        wall_limit = time.monotonic() + row.seconds + 3 * self.capture_timeout
        try:
            while True:
                try:
                    au = await asyncio.wait_for(reader.get(), self.capture_timeout)
                except TimeoutError:
                    raise _CaptureFailed(f"{self.capture_timeout:.0f} 秒内没有收到视频 / no video for "
                                         f"{self.capture_timeout:.0f} s") from None
                except EOFError:
                    if spool.frames:
                        log.warning("download.stream_ended", job=row.id, seconds=prog.seconds_captured)
                        break
                    raise _CaptureFailed(f"直播流已结束 / the live stream ended: "
                                         f"{reader.stream.close_reason or ''}".rstrip()) from None
                if au.kind != "video":
                    if first_pts is not None or first_wall is not None:
                        spool.append(au)  # audio from the first picture on (the export drops what is earlier)
                    continue
                arrival = time.time()
                if au.pts is not None:
                    pts = clock.unwrap(au.pts)
                    if first_pts is None:
                        first_pts = pts
                    elapsed = (pts - first_pts) / 90_000
                    guess = arrival - elapsed
                    offset = guess if offset is None else min(offset, guess)
                else:
                    first_wall = first_wall or arrival
                    elapsed = arrival - first_wall
                if elapsed >= row.seconds or time.monotonic() > wall_limit:
                    break
                spool.append(au)
                prog.frames_captured = spool.frames
                prog.seconds_captured = round(elapsed, 3)
        finally:
            reader.close()  # the Stream's idle timer ends the upstream when nobody else reads it
            spool.close()
        if not spool.frames:
            raise _CaptureFailed("没有收到视频 / no video received")
        fps = reader.stream.fps() or 25.0
        start = offset if offset is not None else (first_wall or time.time())
        return start, fps

    async def _capture_window(self, row: DownloadJob, prog: JobProgress, spool: AccessUnitSpool,
                              transport: str) -> tuple[float, float]:
        """Spool the window's history (video and audio) from ``media.open_history``; returns (wall clock of
        the first picture, frame rate).  Ends at the reader's end (``EOFError``: the window's end, the
        device's MediaStatus 121) or once the content has passed the window's end."""
        from media_relay.outputs.flv import TimestampUnwrapper
        from media_relay.stream import MediaError

        if self.media is None:
            raise _CaptureFailed("媒体服务未运行 / the media service is not running")
        assert row.window_start is not None and row.window_end is not None
        w_start, w_end = row.window_start.timestamp(), row.window_end.timestamp()
        try:
            reader = await self.media.open_history(ChannelRef(row.device_id, row.channel_id),
                                                   (row.window_start, row.window_end), row.source or "device",
                                                   speed=self.speed, transport=transport)
        except MediaError as exc:
            raise _CaptureFailed(f"{exc.code}: {exc}") from None
        prog.capture_started = time.monotonic()
        prog.capture_fraction = 0.0
        clock = TimestampUnwrapper()
        first_ticks: int | None = None  # the first unit's (its content time is reader.start_time)
        content_start = w_start
        first_video: int | None = None
        # slowest acceptable: real time (a device's download speed is >= 1), plus the no-data allowance
        wall_limit = time.monotonic() + (w_end - w_start) + 3 * self.capture_timeout
        try:
            while True:
                try:
                    au = await asyncio.wait_for(reader.get(), self.capture_timeout)
                except TimeoutError:
                    raise _CaptureFailed(f"{self.capture_timeout:.0f} 秒内没有收到录像 / no recording for "
                                         f"{self.capture_timeout:.0f} s") from None
                except EOFError:
                    break
                except MediaError as exc:
                    raise _CaptureFailed(f"{exc.code}: {exc}") from None
                if au.pts is None:
                    if au.kind == "video" and first_ticks is not None:
                        spool.append(au)  # placed by the frame rate at export
                    continue
                ticks = clock.unwrap(au.pts)
                if first_ticks is None:
                    first_ticks = ticks
                    started = getattr(reader, "start_time", None)
                    content_start = float(started) if started is not None else w_start
                content = content_start + (ticks - first_ticks) / 90_000
                if au.kind == "video":
                    if content >= w_end + 1.0:
                        break  # past the window: the device may send to the end of its file
                    if first_video is None:
                        first_video = ticks
                    prog.seconds_captured = round(max(0.0, min(content, w_end) - w_start), 3)
                spool.append(au)
                prog.frames_captured = spool.frames
                with contextlib.suppress(Exception):
                    prog.capture_fraction = max(prog.capture_fraction or 0.0, min(1.0, float(reader.progress())))
                if time.monotonic() > wall_limit:
                    raise _CaptureFailed("读取录像超时 / reading the recording took too long")
        finally:
            closing = reader.close()
            if inspect.isawaitable(closing):
                with contextlib.suppress(Exception):
                    await closing
            spool.close()
        if not spool.frames or first_video is None or first_ticks is None:
            raise _CaptureFailed("该时段没有录像 / no recording in this window")
        prog.capture_fraction = 1.0
        fps = spool.fps() or 25.0
        return content_start + (first_video - first_ticks) / 90_000, fps

    # ------------------------------------------------------------------------------ outcomes
    async def _finish(self, job_id: str, **values: Any) -> DownloadJob | None:
        async with self.sessionmaker() as session:
            await begin_write(session)  # SQLite: a deferred read-then-write fails at once beside another writer
            row = await session.get(DownloadJob, job_id)
            if row is None:
                return None
            for k, v in values.items():
                setattr(row, k, v)
            row.finished_at = datetime.now(UTC)
            await session.commit()
            return row

    async def _complete(self, row: DownloadJob, result: ExportResult) -> None:
        """Mark the job done and append ``download.complete`` in one transaction: a crash leaves either both
        or neither (then the job is still running on the database, and the next start fails it and removes
        its file).  No evidence, no file: when the entry cannot be written the job fails."""
        from gbcore.db import SQLITE_BEGIN_IMMEDIATE

        start = datetime.fromtimestamp(result.start_time, UTC)
        end = start + timedelta(seconds=result.duration_s)
        now = datetime.now(UTC)
        values = dict(state="done", media_start=start, media_end=end, frames=result.frames,
                      duration_s=result.duration_s, file_name=result.path.name, size=result.bytes,
                      sha256=result.sha256, expires_at=now + self.retention, finished_at=now)
        try:
            async with self.sessionmaker() as session:
                # SQLite: BEGIN IMMEDIATE, as the audit log's append needs (a deferred read-then-write fails)
                await session.connection(execution_options={SQLITE_BEGIN_IMMEDIATE: True})
                job = await session.get(DownloadJob, row.id)
                if job is None:
                    return
                for k, v in values.items():
                    setattr(job, k, v)
                await session.flush()
                if self.audit is not None:
                    from audit_log.log import Actor, Target, download_detail

                    detail = download_detail(device_id=row.device_id, channel_id=row.channel_id, start=start,
                                             end=end, session_id=row.session_id, watermark_id=row.watermark_id,
                                             sha256=result.sha256, size=result.bytes)
                    # the audit append is the transaction's last write (it holds the log's writer lock)
                    await self.audit.append(session, actor=Actor("user", str(row.user_id), row.username),
                                            action="download.complete",
                                            target=Target("channel", ChannelRef(row.device_id, row.channel_id).key),
                                            client_ip=row.client_ip,
                                            detail={**detail, "job_id": row.id, "frames": result.frames,
                                                    "audio": result.audio_frames > 0, **_window_detail(row)})
                await session.commit()
        except Exception:
            # no evidence, no file: a download that cannot be recorded is not handed out
            log.exception("download.audit_failed", job=row.id)
            (self.dir / result.path.name).unlink(missing_ok=True)
            await self._finish(row.id, state="failed", file_name=None,
                               reason="审计日志不可用 / the audit log is unavailable")
            return
        log.info("download.done", job=row.id, frames=result.frames, bytes=result.bytes,
                 speed=round(result.speed, 2))

    async def _fail(self, row: DownloadJob, reason: str) -> None:
        log.warning("download.failed", job=row.id, reason=reason)
        self._remove_files(row.id)
        await self._finish(row.id, state="failed", reason=reason)
        await self._audit_failed(row, reason)

    async def _audit_failed(self, row: DownloadJob, reason: str) -> None:
        if self.audit is None:
            return
        from audit_log.log import Actor, Target

        try:
            await self.audit.record(actor=Actor("user", str(row.user_id), row.username), action="download.failed",
                                    target=Target("channel", ChannelRef(row.device_id, row.channel_id).key),
                                    client_ip=row.client_ip,
                                    session_id=row.session_id, watermark_id=row.watermark_id,
                                    detail={"job_id": row.id, "device_id": row.device_id,
                                            "channel_id": row.channel_id, "reason": reason,
                                            **_window_detail(row)})
        except Exception:
            log.exception("download.audit_failed", job=row.id)

    def _remove_files(self, job_id: str) -> None:
        for suffix in (".mp4", ".mp4.part", ".capture"):
            (self.dir / f"{job_id}{suffix}").unlink(missing_ok=True)

    # ------------------------------------------------------------------------------ retention
    async def sweep_once(self, now: datetime | None = None) -> int:
        """Delete the files whose retention ran out; returns how many."""
        now = now or datetime.now(UTC)
        removed = 0
        async with self.sessionmaker() as session:
            await begin_write(session)
            rows = (await session.scalars(select(DownloadJob).where(
                DownloadJob.state == "done", DownloadJob.file_removed_at.is_(None),
                DownloadJob.expires_at < now))).all()
            for row in rows:
                if row.file_name:
                    (self.dir / row.file_name).unlink(missing_ok=True)
                row.file_removed_at = now
                removed += 1
            await session.commit()
        if removed:
            log.info("downloads.expired", files=removed)
        return removed

    async def _sweep(self) -> None:
        interval = min(3600.0, max(10.0, self.retention.total_seconds() / 4))
        while True:
            try:
                await self.sweep_once()
            except Exception:  # noqa: BLE001 - retried at the next round
                log.exception("downloads.sweep_failed")
            await asyncio.sleep(interval)


class _CaptureFailed(Exception):
    pass


def _window_detail(row: DownloadJob) -> dict[str, Any]:
    """What an audit entry says about a history download's window (nothing for a live clip)."""
    if row.window_start is None or row.window_end is None:
        return {}
    return {"window_start": row.window_start, "window_end": row.window_end, "source": row.source}


class AuditUnavailable(Exception):
    """``download.request`` could not be recorded: the job was not started."""


# ------------------------------------------------------------------------------------- CLI
async def run_export_command(source: Path, out: Path, *, username: str, settings: Settings, open_audit: Any,
                             start_time: float | None = None, channel_id: str = "", operator: str = "",
                             echo: Any = print, echo_err: Any = print, find_viewer: FindViewer | None = None) -> int:
    """``gbops watermark export``: export ``source`` for the platform user ``username`` (watermark with
    their name and phone, tag signed with the platform key), progress on ``echo_err``, SHA-256 on
    ``echo``; ``download.complete`` on the audit log when the installation's database is there.

    ``open_audit(settings)`` -> (engine, AuditLog) or raises (the CLI's own opener); ``find_viewer`` looks the
    user up (the portal's :class:`~watermark.viewer.FindViewer`, injected by the CLI).  Returns the exit
    status: 0 done, 1 export failed, 2 unknown user, or a database that is there but cannot be opened."""
    from audit_log.log import Actor, Target, download_detail

    engine = audit = None
    if settings.database_url is not None or (Path(settings.data_dir) / "gbops.db").exists():
        try:
            engine, audit = await open_audit(settings)
        except Exception as exc:  # noqa: BLE001 - an installation whose log cannot be written: no export
            echo_err(f"无法打开数据库或审计日志 / cannot open the database or the audit log: {exc}")
            return 2
    try:
        user_id, display_name, phone = 0, username, None
        if audit is not None:
            if find_viewer is None:
                raise TypeError("run_export_command needs find_viewer to look the user up")
            viewer = await find_viewer(audit.sessionmaker, username)
            if viewer is None:
                echo_err(f"用户不存在 / no such user: {username}")
                return 2
            user_id, display_name, phone = viewer.user_id, viewer.shown_name, viewer.phone
        else:
            echo_err("没有数据库：水印只写用户名 / no database: the watermark shows the user name only")
        session_id = f"cli-{secrets.token_hex(8)}"
        code = session_code(session_id)
        now = datetime.now(UTC)
        # --channel: "device_id/channel_id" names the camera (a bare channel id is kept as given)
        device_id, _, bare_channel = channel_id.rpartition("/")
        tag = SessionTag(session_id=session_id, user_id=user_id, channel_id=bare_channel,
                         start_ms=int(now.timestamp() * 1000), device_id=device_id, kind="download")
        text = WatermarkText(display_name=display_name, account=username, phone=phone, client_ip="",
                             session_code=code)
        look = dataclasses.replace(WatermarkPolicy.from_settings(settings).look, enabled=True)
        last = [-1.0]

        def progress(done: int, total: int | None, seconds: float) -> None:
            pct = f" ({100 * done / total:.0f}%)" if total else ""
            if done == total or time.monotonic() - last[0] >= 1.0:
                last[0] = time.monotonic()
                echo_err(f"导出 / exporting: {done}/{total or '?'} 帧 / frames{pct}, {seconds:.1f} s")

        export = functools.partial(
            export_mp4, source, out, text=text, settings=look, tag=tag, key=load_or_create_key(settings.data_dir, path=settings.watermark_tag_key_path),
            progress=progress, preset=settings.download_preset, crf=settings.download_crf, start_time=start_time)
        try:
            result = await asyncio.to_thread(export)
        except ExportError as exc:
            echo_err(f"导出失败 / export failed: {exc}")
            return 1
        echo_err(f"完成 / done: {result.frames} 帧 / frames, {result.duration_s:.2f} s in {result.wall_s:.2f} s "
                 f"({result.speed:.1f}x), {result.bytes} bytes, session {session_id}, watermark #{code}")
        echo(f"{result.sha256}  {out}")
        if audit is not None:
            start = datetime.fromtimestamp(result.start_time, UTC)
            detail = download_detail(device_id=device_id, channel_id=bare_channel, start=start,
                                     end=start + timedelta(seconds=result.duration_s), session_id=session_id,
                                     watermark_id=code, sha256=result.sha256, size=result.bytes)
            async with audit.sessionmaker() as session:
                await audit.append(session, actor=Actor("user", str(user_id), username), action="download.complete",
                                   target=Target("channel" if channel_id else "file", channel_id or source.name),
                                   detail={**detail, "source": str(source), "path": str(out),
                                           "frames": result.frames,
                                           "exported_by": operator or "gbops watermark export"})
                await session.commit()
            echo_err("已记入审计日志 / recorded on the audit log: download.complete")
        return 0
    finally:
        if engine is not None:
            await engine.dispose()
