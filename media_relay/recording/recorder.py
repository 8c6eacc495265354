"""One recorder per channel with a plan: reads the channel's live Stream like a viewer, writes segments.

Access units are stored as received (``PsMuxer``: no decode, no re-encode, audio kept), one pack per unit,
in segments cut at the first keyframe after ``segment_seconds``.  Every segment starts with a keyframe.

Content time: when the reader starts, the first keyframe's PTS is tied to the clock (``anchor``); a unit's
time is ``anchor + (pts - first pts) / 90000`` (33-bit wrap handled), so consecutive segments join without
a gap.  The reader first hands out the Stream's buffered GOP at once; the anchor is therefore moved earlier
while the first segment is open whenever a unit arrives "earlier" than its timestamps say (the min of
``now - offset``), and later segments re-anchor at a cut when the camera's clock has drifted more than
``drift_tolerance`` from the wall clock.  A PTS jump (camera restart) closes the segment and re-anchors.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from gbcore.ids import ChannelRef
from gbcore.log import get_logger
from media_relay.ps import PsError, PsMuxer
from media_relay.recording.crypto import ChunkWriter
from media_relay.recording.schedule import in_schedule, next_change
from media_relay.recording.store import SegmentSink, segment_path, unwrap_ticks
from media_relay.recording.types import RecordPlan
from media_relay.types import AccessUnit

if TYPE_CHECKING:
    from media_relay.recording.service import RecordingService

__all__ = ["ChannelRecorder", "OpenSegment"]

log = get_logger("gbops.recording")

TICKS = 90000.0
MAX_JUMP = 10 * 90000  # a PTS step beyond 10 s (or backwards beyond 1 s) is a discontinuity
MAX_BACK = 90000

REASON_SCHEDULE = "不在录像时间段内 / outside the recording schedule"
REASON_DISK_FULL = "磁盘空间不足，录像已停止 / disk full, recording stopped"
REASON_ENDED = "设备码流中断，正在重连 / the stream ended, reconnecting"
REASON_STARTING = "正在连接设备 / connecting to the device"


def _dt(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


@dataclass
class OpenSegment:
    channel: ChannelRef
    rel: str
    start: float
    end: float
    codec: str
    cipher: str
    writer: ChunkWriter
    sink: SegmentSink
    muxer: PsMuxer
    id: int | None = None
    frames: int = 0
    audio_codec: str | None = None
    has_audio: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class ChannelRecorder:
    """Runs the plan of one channel until stopped (state ``recording`` / ``waiting`` / ``failed``)."""

    def __init__(self, service: RecordingService, plan: RecordPlan) -> None:
        self.svc = service
        self.plan = plan
        self.channel = ChannelRef(*plan.channel)
        self.state = "waiting"
        self.reason: str | None = REASON_STARTING
        self.segment: OpenSegment | None = None
        self.failures = 0
        self.connects = 0
        self.segments_written = 0
        self.last_error: str | None = None
        self._task: asyncio.Task | None = None
        self._consume_task: asyncio.Future | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._interrupt: str | None = None
        self._pending: list[tuple[str, OpenSegment]] = []
        self._book: asyncio.Future | None = None
        self._reset_timeline()

    def _reset_timeline(self) -> None:
        self._p0: int | None = None
        self._anchor = 0.0
        self._last_pts: int | None = None
        self._frame_ticks = 3600
        self._first_segment = True
        self._seg_min_off = float("inf")
        self._audio_codec: str | None = None
        self._stop_reason: str | None = None

    # ------------------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"recorder {self.channel.key}")

    async def stop(self) -> None:
        """Stop at once: the open segment is closed (finished, hashed, audited) before this returns."""
        self._stopping = True
        self._wake.set()
        if self._consume_task is not None:
            self._consume_task.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._close_segment()
        self.state, self.reason = "off", None

    def interrupt(self, reason: str) -> None:
        """End the current reading (schedule closed, disk full); the loop then decides what comes next."""
        self._interrupt = reason
        self._wake.set()
        if self._consume_task is not None and not self._consume_task.done():
            self._consume_task.cancel()

    def wake(self) -> None:
        self._wake.set()

    def tick(self, now: float) -> None:
        """Periodic check from the service: close a schedule that ended while no media came."""
        if self.plan.mode == "schedule" and self.state == "recording" and not in_schedule(self.plan.schedule, now):
            self.interrupt("schedule")

    async def _sleep(self, seconds: float) -> None:
        if self._stopping:
            return
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), max(0.0, seconds))

    def _set(self, state: str, reason: str | None) -> None:
        if (state, reason) != (self.state, self.reason):
            log.info("record.state", channel=self.channel.key, state=state, reason=reason)
        self.state, self.reason = state, reason

    # ------------------------------------------------------------------------------ the loop
    async def _run(self) -> None:
        svc = self.svc
        while not self._stopping:
            now = svc.clock()
            if svc.disk_full:
                self._set("failed", REASON_DISK_FULL)
                await self._sleep(svc.schedule_poll)
                continue
            if self.plan.mode == "schedule" and not in_schedule(self.plan.schedule, now):
                self._set("waiting", REASON_SCHEDULE)
                change = next_change(self.plan.schedule, now)
                await self._sleep(min(svc.schedule_poll, change) if change is not None else svc.schedule_poll)
                continue
            try:
                reader = await svc.open_reader(self.channel, self.plan.stream)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failures += 1
                self.last_error = str(exc)[:200]
                self._set("waiting", f"无法打开设备码流，稍后重试 / cannot open the stream, retrying: {self.last_error}")
                delay = svc.backoff.delay(self.failures)
                hint = getattr(exc, "retry_after", None)  # the refusal knows when trying again makes sense
                if isinstance(hint, (int, float)) and hint > 0:
                    delay = min(delay, float(hint))
                await self._sleep(delay)
                continue
            self.connects += 1
            connected_at = svc.clock()
            self._interrupt = None
            self._reset_timeline()
            self._set("recording", None)
            self._consume_task = asyncio.ensure_future(self._consume(reader))
            try:
                await asyncio.wait({self._consume_task})
            finally:
                if not self._consume_task.done():
                    self._consume_task.cancel()
                close = getattr(reader, "close", None)
                if close is not None:
                    with contextlib.suppress(Exception):
                        close()
            task, self._consume_task = self._consume_task, None
            if task.cancelled():
                outcome = self._interrupt or "stopped"
            elif task.exception() is not None:
                exc = task.exception()
                log.error("record.failed", channel=self.channel.key, error=repr(exc))
                outcome = "error"
                self.last_error = str(exc)[:200]
            else:
                outcome = task.result()
            await self._close_segment()
            if self._stopping:
                return
            if outcome == "disk_full" or svc.disk_full:
                await svc.on_disk_full(self.channel)
                continue
            if outcome == "schedule":
                continue
            if svc.clock() - connected_at >= 60.0:
                self.failures = 0
            self.failures += 1
            self._set("waiting", REASON_ENDED if outcome == "eof" else
                      f"录像出错，正在重试 / recording error, retrying: {self.last_error}")
            await self._sleep(svc.backoff.delay(self.failures))

    async def _consume(self, reader) -> str:
        clock = self.svc.clock
        while True:
            try:
                au = await reader.get()
            except EOFError:
                return "eof"
            self._on_unit(au, clock())
            if self._pending:
                await self._flush_pending()
            if self._stop_reason is not None:
                return self._stop_reason

    # ------------------------------------------------------------------------------ per unit (hot path)
    def _on_unit(self, au: AccessUnit, now: float) -> None:
        seg = self.segment
        if au.kind != "video":
            if seg is not None:
                self._write(seg, au)
                seg.has_audio = True
            return
        pts = au.pts if au.pts is not None else au.dts
        if pts is None:
            if seg is not None:
                self._write(seg, au)
            return
        if self._p0 is None:
            if not au.keyframe:
                return
            self._p0, self._anchor, self._last_pts = pts, now, pts
        last = self._last_pts
        if last is not None:
            step = unwrap_ticks(pts, last)
            if step > MAX_JUMP or step < -MAX_BACK:  # the camera's clock jumped: start a new timeline
                log.info("record.pts_jump", channel=self.channel.key, step=step)
                if seg is not None:
                    self._cut(seg, seg.end)
                    seg = None
                if not au.keyframe:
                    self._p0 = None
                    return
                self._p0, self._anchor, self._last_pts = pts, now, pts
                self._first_segment = True
            elif 0 < step < 90000:
                self._frame_ticks = step
        self._last_pts = pts
        rel = unwrap_ticks(pts, self._p0) / TICKS
        off = now - rel
        if seg is None:
            if not au.keyframe:
                return
            if self._first_segment:
                self._anchor = min(self._anchor, off)
            seg = self._open(self._anchor + rel, au.codec)
            if seg is None:
                return
        elif self._first_segment and off < self._anchor:
            shift = self._anchor - off  # the buffered GOP came at once: it was live earlier
            self._anchor = off
            seg.start -= shift
            seg.end -= shift
        elif au.keyframe and (self._anchor + rel - seg.start >= self.svc.segment_seconds or au.codec != seg.codec):
            at = self._anchor + rel
            self._cut(seg, at)
            self._first_segment = False
            if abs(self._seg_min_off - self._anchor) > self.svc.drift_tolerance:
                log.info("record.reanchor", channel=self.channel.key, drift=round(self._seg_min_off - self._anchor, 3))
                self._anchor = self._seg_min_off
            self._seg_min_off = float("inf")
            seg = self._open(self._anchor + rel, au.codec)
            if seg is None:
                return
        if off < self._seg_min_off:
            self._seg_min_off = off
        self._write(seg, au)
        seg.frames += 1
        end = self._anchor + rel + self._frame_ticks / TICKS
        if end > seg.end:
            seg.end = end

    def _write(self, seg: OpenSegment, au: AccessUnit) -> None:
        try:
            if au.kind == "audio" and au.codec != seg.muxer.audio_codec:
                # first audio of this segment (or a new codec): a muxer whose PSM names it
                seg.muxer = PsMuxer(seg.codec, au.codec)  # its first pack carries the new PSM
                seg.audio_codec = au.codec
                self._audio_codec = au.codec
            data = seg.muxer.mux(au)
        except PsError:
            return  # a unit the muxer cannot carry (unknown codec): skipped
        try:
            seg.sink.write(seg.writer.write(data))
        except OSError as exc:
            self._write_failed(exc)

    def _write_failed(self, exc: OSError) -> None:
        import errno

        self.last_error = exc.strerror or str(exc)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            self.svc.disk_full = True
            self._stop_reason = "disk_full"
        else:
            self._stop_reason = "error"
        log.error("record.write_failed", channel=self.channel.key, error=self.last_error)

    def _open(self, start: float, codec: str) -> OpenSegment | None:
        svc = self.svc
        if svc.disk_full:
            self._stop_reason = "disk_full"
            return None
        rel = segment_path(self.channel, _dt(start), svc.cipher != "none")
        try:
            writer = ChunkWriter(svc.cipher, svc.key, rel, chunk_size=svc.chunk_size)
            sink = SegmentSink(list(svc.roots), rel)
            muxer = PsMuxer(codec, self._audio_codec)
        except OSError as exc:
            self._write_failed(exc)
            return None
        except PsError:
            return None
        seg = OpenSegment(self.channel, rel, start, start, codec, svc.cipher, writer, sink, muxer,
                          audio_codec=self._audio_codec)
        self.segment = seg
        self._pending.append(("open", seg))
        return seg

    def _cut(self, seg: OpenSegment, end: float) -> None:
        seg.end = end
        self.segment = None
        self._pending.append(("close", seg))

    def _spawn_book_keeping(self) -> asyncio.Future:
        """Run the pending opens/closes in a task of their own, after the previous batch: a cancelled reader
        (plan off, stop, schedule end) never leaves a segment half closed."""
        pending, self._pending = self._pending, []
        prev = self._book

        async def run() -> None:
            if prev is not None:
                with contextlib.suppress(Exception):
                    await prev
            for action, seg in pending:
                try:
                    if action == "open":
                        await self.svc._segment_opened(seg)
                    else:
                        await self._finish(seg)
                except Exception:
                    log.exception("record.bookkeeping_failed", channel=self.channel.key, action=action, path=seg.rel)

        self._book = asyncio.ensure_future(run())
        return self._book

    async def _flush_pending(self) -> None:
        await asyncio.shield(self._spawn_book_keeping())

    async def _close_segment(self) -> None:
        """Close the open segment at once (plan off, stop, reader ended) and wait for all book-keeping."""
        seg = self.segment
        if seg is not None:
            self._cut(seg, seg.end)
        if self._pending:
            self._spawn_book_keeping()
        if self._book is not None:
            await asyncio.shield(self._book)

    async def _finish(self, seg: OpenSegment) -> None:
        try:
            seg.sink.write(seg.writer.finish())
        except OSError as exc:
            self._write_failed(exc)
        sha = await asyncio.to_thread(seg.sink.close)
        self.segments_written += 1
        await self.svc._segment_closed(seg, sha)
