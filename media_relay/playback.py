"""History video on the media side: playback timelines, platform-storage sources, control and downloads.

A playback session reads a *history Stream* of its own:

* device source: a :class:`media_relay.stream.Stream` started by the StreamManager with an ``s=Playback``
  INVITE (its own port and an SSRC beginning with ``1``); the device ends it with ``MediaStatus 121``
  (:class:`media_relay.signalling.MediaFileEnded`: what is queued is drained, then BYE) or its BYE;
* platform source: a :class:`PlatformStream`, a Stream fed by a task that reads
  ``recordings.iter_units(channel, start, end)`` on a worker thread and paces the units by their content
  time and the scale; it ends after the last unit.

Both hand their access units through a :class:`Timeline` before the fan-out, so every reader (the
session's reader, the watermark's shared decoder, a transcoder) sees the same timestamps. For playback
the Timeline *re-times*: the pts/dts handed out run at wall speed whatever the scale

    out = base + (src - src_base) / scale      (90 kHz ticks, re-based at seek and speed changes)

so an FLV or WHEP player really plays 2x/4x/8x or 0.5x (devices send faster but keep natural
timestamps); at 4x and above only keyframes pass and audio is muted. Paused, nothing arrives and nothing
times out; resuming continues the output timestamps where they stopped. For downloads
(:class:`HistoryReader`) timestamps stay natural.

:class:`PlaybackControl` is what ``MediaService.control`` drives: pause / resume / seek / speed, sent to
the device as MANSRTSP over INFO (:func:`mansrtsp`) or applied to the platform source's pacing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from gbcore.ids import ChannelRef
from gbcore.log import get_logger
from media_relay.signalling import Signalling
from media_relay.stream import MediaError, Stream, StreamReader
from media_relay.types import AccessUnit, AccessUnitIterator, VideoParams

log = get_logger("gbops.media")

__all__ = [
    "FAST_SCALE",
    "SCALES",
    "HistoryReader",
    "PlatformStream",
    "PlaybackControl",
    "Timeline",
    "check_scale",
    "check_window",
    "mansrtsp",
]

SCALES = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
FAST_SCALE = 4.0  # from this scale on: keyframes only, no audio
CLOCK = 90_000
WRAP = 1 << 33
KINDS = ("playback", "download")
SOURCES = ("device", "platform")
MAX_JUMP = 60 * CLOCK  # a forward jump of content time up to this is real (a gap in the recording)
MAX_BACK = 2 * CLOCK  # a step back up to this too (B-frame order, in-flight units after a seek)


# ------------------------------------------------------------------------------------- validation
def check_window(window: Any, max_hours: float) -> tuple[datetime, datetime]:
    """``(start, end)`` as aware datetimes, or :class:`MediaError` (``bad_window``, ``window_too_long``)."""
    try:
        start, end = window
    except (TypeError, ValueError):
        raise MediaError("bad_window", "时间段无效 / the window must be (start, end)") from None
    if not isinstance(start, datetime) or not isinstance(end, datetime):
        raise MediaError("bad_window", "时间段无效 / the window must be two datetimes")
    if start.tzinfo is None or end.tzinfo is None:
        raise MediaError("bad_window", "时间段缺少时区 / the window's times need a timezone")
    if end <= start:
        raise MediaError("bad_window", "结束时间必须晚于开始时间 / the end must be after the start")
    if (end - start).total_seconds() > max_hours * 3600:
        raise MediaError("window_too_long",
                         f"时间段超过 {max_hours:g} 小时 / the window is longer than {max_hours:g} h")
    return start, end


def check_scale(scale: Any) -> float:
    """One of :data:`SCALES`, or :class:`MediaError` ``bad_scale``."""
    try:
        value = float(scale)
    except (TypeError, ValueError):
        value = -1.0
    if value not in SCALES:
        raise MediaError("bad_scale", "倍速无效（0.25、0.5、1、2、4、8） / the scale must be one of "
                         "0.25, 0.5, 1, 2, 4, 8")
    return value


def mansrtsp(action: str, cseq: int, *, position: float | None = None, scale: float | None = None) -> bytes:
    """The MANSRTSP body of a playback control (GB/T 28181 Annex B): ``pause``, ``resume``, ``seek``
    (``position`` seconds from the window start) or ``speed`` (``scale``)."""
    if action == "pause":
        lines = ["PAUSE RTSP/1.0", f"CSeq: {cseq}", "PauseTime: now"]
    elif action == "resume":
        lines = ["PLAY RTSP/1.0", f"CSeq: {cseq}", "Range: npt=now-"]
    elif action == "seek":
        if position is None:
            raise ValueError("seek needs a position")
        npt = f"{position:.3f}".rstrip("0").rstrip(".")
        lines = ["PLAY RTSP/1.0", f"CSeq: {cseq}", f"Range: npt={npt}-"]
    elif action == "speed":
        if scale is None:
            raise ValueError("speed needs a scale")
        lines = ["PLAY RTSP/1.0", f"CSeq: {cseq}", f"Scale: {scale:.1f}" if scale >= 0.5 else f"Scale: {scale:g}"]
    else:
        raise ValueError(f"unknown control {action!r}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


# ------------------------------------------------------------------------------------- the timeline
class Timeline:
    """What a history Stream does to each access unit before its readers get it (sans-IO).

    ``retime``: playback (output timestamps at wall speed, see the module docstring); else natural
    timestamps (downloads; a platform source's are its content time). Position: seconds from the window
    start, from the content time of the units (platform) or their timestamps since the last seek base
    (device)."""

    def __init__(self, window: tuple[datetime, datetime], *, retime: bool = True, scale: float = 1.0) -> None:
        self.window = window
        self.window_start = window[0].timestamp()
        self.length = (window[1] - window[0]).total_seconds()
        self.retime = retime
        self.scale = scale
        self.paused = False
        self.need_keyframe = False
        # re-timing
        self._src_base: int | None = None
        self._out_base = 0
        self._last_src: int | None = None  # the last picture's, unwrapped
        self._u_raw: int | None = None  # 33-bit unwrapping, over every unit
        self._u_val = 0
        self._last_out: int | None = None
        # position
        self._pos_base = 0.0
        self._pos_src: int | None = None
        self.position = 0.0
        self.content_time: float | None = None  # Unix seconds of the last unit's content, when known
        self.first_content: float | None = None
        self.units_in = 0
        self.units_out = 0
        self.dropped_fast = 0

    # ------------------------------------------------------------------ control
    def set_scale(self, scale: float) -> None:
        """A new speed from the next unit on: the output continues where it is (no jump)."""
        if self._last_src is not None and self._last_out is not None:
            self._src_base, self._out_base = self._last_src, self._last_out
        self.scale = scale

    def seek(self, position: float) -> None:
        """The content jumps to ``position`` seconds from the window start: the next keyframe re-bases
        both the output timestamps (continuing one frame after the last) and the position."""
        self._src_base = None
        self._u_raw = None
        self._out_base = (self._last_out + CLOCK // 25) if self._last_out is not None else 0
        self._pos_base = position
        self._pos_src = None
        self.position = position
        self.need_keyframe = True

    # ------------------------------------------------------------------ units
    def _unwrap(self, raw: int) -> int:
        if self._u_raw is None:
            self._u_raw = self._u_val = raw
            return raw
        delta = (raw - self._u_raw) % WRAP
        if delta >= WRAP // 2:
            delta -= WRAP
        self._u_raw = raw
        self._u_val += delta
        return self._u_val

    def feed(self, au: AccessUnit, content_time: float | None = None) -> AccessUnit | None:
        """The unit as readers get it, or None when it is dropped (fast playback, waiting for a keyframe
        after a seek). ``content_time``: its Unix time when the source knows it (platform storage)."""
        self.units_in += 1
        video = au.kind == "video"
        if self.retime and self.scale >= FAST_SCALE and not (video and au.keyframe):
            self.dropped_fast += 1
            return None
        if self.need_keyframe:
            if not (video and au.keyframe):
                return None
            self.need_keyframe = False
        if content_time is not None:
            raw = round(content_time * CLOCK) % WRAP
        else:
            raw = au.dts if au.dts is not None else au.pts
        if raw is None:  # nothing to time it by: hand it out as it is
            self.units_out += 1
            return au
        if not video and self._last_src is None:
            return None  # audio before the first picture: nothing to anchor it to
        src = self._unwrap(raw)
        if video:
            last = self._last_src
            if last is not None and not -MAX_BACK <= src - last <= MAX_JUMP:
                # a discontinuity (a device restarting its clock, hostile input): continue the output one
                # picture on instead of jumping hours ahead or back; the position re-bases too
                self._src_base, self._out_base = src, (self._last_out or 0) + CLOCK // 25
                if self._pos_src is not None:
                    self._pos_base, self._pos_src = self.position, src
            self._last_src = src
        # position
        if content_time is not None:
            self.content_time = content_time
            if self.first_content is None:
                self.first_content = content_time
            self.position = min(max(content_time - self.window_start, 0.0), self.length)
        elif video:
            if self._pos_src is None:
                self._pos_src = src
            self.position = min(max(self._pos_base + (src - self._pos_src) / CLOCK, 0.0), self.length)
            self.content_time = self.window_start + self.position
        # timestamps
        offset = (au.pts - au.dts) if au.pts is not None and au.dts is not None else 0
        if self._src_base is None:
            self._src_base = src
        if self.retime:
            scale = self.scale
            out = self._out_base + round((src - self._src_base) / scale)
            offset = round(offset / scale)
        elif content_time is not None:
            out = self._out_base + (src - self._src_base)  # content time from the first unit
        else:
            self.units_out += 1
            if video:
                self._last_out = src
            return au  # natural
        if video:
            if self._last_out is not None and out <= self._last_out:
                out = self._last_out + 1  # never backwards (a device's in-flight units after a seek)
            self._last_out = out
        out %= WRAP
        has_dts = au.dts is not None
        self.units_out += 1
        return AccessUnit(au.kind, au.codec, au.data, (out + offset) % WRAP, out if has_dts else None,
                          au.keyframe)

    def describe(self) -> dict[str, Any]:
        return {"position": round(self.position, 3), "scale": self.scale, "paused": self.paused}


# ------------------------------------------------------------------------------------- platform source
class _KnownCodecs:
    """Stands in for a Stream's demuxer: what a platform source learnt from its units."""

    def __init__(self) -> None:
        self.video_codec: str | None = None
        self.audio_codec: str | None = None
        self.video_params: VideoParams | None = None
        self.bytes_in = 0


class PlatformStream(Stream):
    """A Stream fed from platform storage (``recordings.iter_units``) instead of RTP.

    ``paced``: units are released when their content time is due at the scale (playback); else as fast
    as the slowest reader takes them (downloads). Ends (readers get EOF) after the last unit."""

    def __init__(self, channel: ChannelRef, recordings: Any, window: tuple[datetime, datetime], timeline: Timeline,
                 *, paced: bool = True, batch: int = 32,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(channel, "platform", port=0, ssrc="")
        self.demuxer = _KnownCodecs()  # type: ignore[assignment]
        self.recordings = recordings
        self.window = window
        self.timeline = timeline
        self.paced = paced
        self.batch = batch
        self.clock = clock
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="playback-read")
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._restart: float | None = None  # seek target (seconds from the window start)
        self._anchor: tuple[float, float] | None = None  # (wall, content) of the pacing
        self.ended = False
        self.on_end: Callable[[PlatformStream], None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._pump(), name=f"playback-{self.channel.key}")

    # ------------------------------------------------------------------ control (the pump reads these)
    def reanchor(self) -> None:
        self._anchor = None
        self._wake.set()

    def seek(self, position: float) -> None:
        self._restart = position
        self.reanchor()

    # ------------------------------------------------------------------ the pump
    def _open(self, start: datetime) -> Iterator[Any]:
        return iter(self.recordings.iter_units(self.channel, start, self.window[1]))

    @staticmethod
    def _take(units: Iterator[Any], n: int) -> list[Any]:
        out = []
        for unit in units:
            out.append(unit)
            if len(out) >= n:
                break
        return out

    async def _wait(self, seconds: float) -> None:
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), max(seconds, 0.0))
        except TimeoutError:
            pass

    def _note_codecs(self, au: AccessUnit) -> None:
        known = self.demuxer
        if au.kind == "audio":
            known.audio_codec = known.audio_codec or au.codec
            return
        known.video_codec = au.codec
        if au.keyframe:
            from media_relay.outputs.flv import params_from_annexb

            params = params_from_annexb(au.codec, au.data, known.video_params)
            if params is not None:
                known.video_params = params

    async def _pump(self) -> None:
        loop = asyncio.get_running_loop()
        end_ts = self.window[1].timestamp()
        units: Iterator[Any] | None = None
        reason = "end of recording"
        try:
            units = await loop.run_in_executor(self._executor, self._open, self.window[0])
            while not self.closed:
                if self._restart is not None:
                    position, self._restart = self._restart, None
                    old = units
                    await loop.run_in_executor(self._executor, _close_iter, old)
                    start = datetime.fromtimestamp(self.window[0].timestamp() + position, self.window[0].tzinfo)
                    units = await loop.run_in_executor(self._executor, self._open, start)
                    self.timeline.seek(position)
                    self.gop = []
                batch = await loop.run_in_executor(self._executor, self._take, units, self.batch)
                if not batch:
                    break
                for unit in batch:
                    if self.closed or self._restart is not None:
                        break
                    await self._release(unit)
                    if unit.at >= end_ts:
                        break
                else:
                    continue
                if not self.closed and self._restart is None:
                    break  # passed the window's end
        except asyncio.CancelledError:
            reason = "closed"
            raise
        except Exception as exc:  # noqa: BLE001 - the readers see the end; the log says why
            reason = f"recording read failed: {exc}"
            log.exception("playback.platform_read_failed", channel=self.channel.key)
        finally:
            if units is not None:
                self._executor.submit(_close_iter, units)
            self._executor.shutdown(wait=False)
            self.ended = True
            if not self.closed:
                self.close(reason)
                if self.on_end is not None:
                    self.on_end(self)

    async def _release(self, unit: Any) -> None:
        """Wait until ``unit`` is due (paced) or the readers have room (downloads), then fan it out."""
        timeline = self.timeline
        if self.paced:
            while not self.closed and self._restart is None:
                if timeline.paused:
                    self._anchor = None
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                now = self.clock()
                if self._anchor is None:
                    self._anchor = (now, unit.at)
                due = self._anchor[0] + (unit.at - self._anchor[1]) / timeline.scale
                if due <= now:
                    break
                await self._wait(due - now)
            if self.closed or self._restart is not None:
                return
        else:
            while True:  # back-pressure: a download must lose nothing, so wait for the slowest reader
                if self.closed or all(len(r._queue) <= r.maxsize // 2 for r in self.readers):
                    break
                await asyncio.sleep(0.005)
        au = unit.au
        self.demuxer.bytes_in += len(au.data)
        self._note_codecs(au)
        out = timeline.feed(au, unit.at)
        if out is not None:
            self._on_au(out)

    def _on_au(self, au: AccessUnit) -> None:
        if au.kind == "video" and not self.first_packet.done():
            self.first_packet.set_result(time.monotonic())
        super()._on_au(au)

    def close(self, reason: str) -> None:
        if self.closed:
            return
        super().close(reason)
        self._wake.set()
        if self._task is not None and not self._task.done() and self._task is not asyncio.current_task():
            self._task.cancel()


def _close_iter(units: Any) -> None:
    close = getattr(units, "close", None)
    if close is not None:
        try:
            close()
        except Exception:  # noqa: BLE001 - a storage iterator failing to close must not stop the session
            log.exception("playback.iterator_close_failed")


# ------------------------------------------------------------------------------------- control
class PlaybackControl:
    """The controls of one playback session (``MediaService.control``) and its state."""

    def __init__(self, stream: Stream, timeline: Timeline, source: str, *, signalling: Signalling | None = None,
                 call_id: Callable[[], str | None] | None = None) -> None:
        self.stream = stream
        self.timeline = timeline
        self.source = source
        self.signalling = signalling
        self._call_id = call_id
        self.cseq = 0
        self.paused_since: float | None = None

    @property
    def paused(self) -> bool:
        return self.timeline.paused

    @property
    def scale(self) -> float:
        return self.timeline.scale

    @property
    def position(self) -> float:
        return self.timeline.position

    def state(self) -> str:
        if self.stream.closed:
            return "ended"
        if self.timeline.paused:
            return "paused"
        return "playing"

    def _send(self, action: str, **kw: Any) -> None:
        if self.source != "device":
            return
        call_id = self._call_id() if self._call_id is not None else None
        if call_id is None or self.signalling is None:
            raise MediaError("control_refused", "回放已结束 / the playback has ended")
        self.cseq += 1
        body = mansrtsp(action, self.cseq, **kw)
        if not self.signalling.info(call_id, body):
            raise MediaError("control_refused", "设备未接受回放控制 / the device did not take the control")

    def apply(self, action: str, *, position: Any = None, scale: Any = None) -> None:
        """Pause / resume / seek / speed. Raises :class:`MediaError` (``bad_action``, ``bad_position``,
        ``bad_scale``, ``control_refused``)."""
        if self.stream.closed:
            raise MediaError("control_refused", "回放已结束 / the playback has ended")
        timeline = self.timeline
        if action == "pause":
            if not timeline.paused:
                self._send("pause")
                timeline.paused = True
                self.paused_since = time.monotonic()
        elif action == "resume":
            if timeline.paused:
                self._send("resume")
                timeline.paused = False
                self.paused_since = None
                self._wake()
        elif action == "seek":
            try:
                value = float(position)
            except (TypeError, ValueError):
                value = float("nan")
            if not (0.0 <= value <= timeline.length):
                raise MediaError("bad_position", f"位置无效（0 到 {timeline.length:g} 秒） / the position must be "
                                 f"0 to {timeline.length:g} seconds from the window start")
            self._send("seek", position=value)
            if isinstance(self.stream, PlatformStream):
                self.stream.seek(value)
            else:
                timeline.seek(value)
            # what is queued is from before the seek: the viewers start again at the new position's keyframe
            self.stream.gop = []
            for reader in tuple(self.stream.readers):
                reader._queue.clear()
                reader.need_keyframe = True
        elif action == "speed":
            value = check_scale(scale)
            self._send("speed", scale=value)
            timeline.set_scale(value)
            self._wake()
        else:
            raise MediaError("bad_action", "操作无效（pause、resume、seek、speed） / the action must be pause, "
                             "resume, seek or speed")

    def _wake(self) -> None:
        if isinstance(self.stream, PlatformStream):
            self.stream.reanchor()


# ------------------------------------------------------------------------------------- downloads
class HistoryReader(AccessUnitIterator):
    """An access-unit source over a window of history for downloads: natural timestamps, ``get()`` raising
    :class:`EOFError` at the end of the window (MediaStatus 121, the last stored unit)."""

    def __init__(self, reader: StreamReader, timeline: Timeline, *, filesize: int | None = None,
                 on_close: Callable[[], None] | None = None) -> None:
        self.reader = reader
        self.stream = reader.stream
        self.timeline = timeline
        self.window = timeline.window
        self.filesize = filesize
        self._on_close = on_close
        self.closed = False

    @property
    def codec(self) -> str | None:
        return self.reader.codec

    @property
    def params(self) -> VideoParams | None:
        return self.reader.params

    @property
    def audio_codec(self) -> str | None:
        codec = getattr(self.stream.demuxer, "audio_codec", None)
        return codec if isinstance(codec, str) else None

    @property
    def start_time(self) -> float:
        """Unix seconds of the content of the first unit (the window start for a device, which starts
        there)."""
        first = self.timeline.first_content
        return first if first is not None else self.timeline.window_start

    def progress(self) -> float:
        """0..1: bytes received against the device's ``a=filesize``, else content time against the window."""
        if self.stream.closed and self.reader.closed:
            return 1.0
        if self.filesize:
            got = getattr(self.stream.demuxer, "bytes_in", 0)
            return max(0.0, min(1.0, got / self.filesize))
        if self.timeline.length <= 0:
            return 0.0
        return max(0.0, min(1.0, self.timeline.position / self.timeline.length))

    async def get(self) -> AccessUnit:
        return await self.reader.get()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.reader.close()
        if self._on_close is not None:
            self._on_close()
