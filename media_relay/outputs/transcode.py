"""Per-viewer transcoding stage: access units (H.264 or H.265) -> decoded frames -> hook -> H.264.

A :class:`Transcoder` wraps a source (a Stream reader) and is itself a source: it has ``get()``,
``params``, ``codec`` ('h264') and ``close()``, so :func:`~media_relay.outputs.flv.flv_stream` and
:class:`~media_relay.outputs.whep.WhepSession` take it where they take a reader.  Uses:

* H.265 cameras for browsers that only play H.264 (WebRTC in particular),
* the per-viewer watermark: :meth:`Transcoder.frame_filter` sees every decoded frame before it is
  encoded (identity here; a subclass or the ``frame_filter`` argument draws on it).

The codec work is split in two reusable parts that only run on a worker thread: :class:`VideoDecoder`
(access units -> frames, 90 kHz timestamps unwrapped) and :class:`H264Encoder` (frames -> H.264 access
units, keyframes forced where asked).  :mod:`watermark.pipeline` decodes once per Stream with the first
and encodes once per viewer with the second.

All codec work runs on one dedicated worker thread per transcoder (never on the event loop, and not on
the loop's default executor, which aiortc and DNS look-ups share).  A pump task reads the source, hands
each access unit to the worker and queues the encoded output; the bounded output queue is the back
pressure (a slow consumer stalls the pump, and the Stream reader behind it skips to the next keyframe).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import fractions
import logging
import time
from collections.abc import Callable

import av

from media_relay.outputs.flv import (
    PTS_WRAP,
    AccessUnitSource,
    TimestampUnwrapper,
    audio_codec_of,
    close_source,
    next_au,
    params_from_annexb,
)
from media_relay.types import AccessUnit, AccessUnitIterator, VideoParams

log = logging.getLogger("gbops.media.transcode")

DECODERS = {"h264": "h264", "h265": "hevc"}
TIME_BASE = fractions.Fraction(1, 90_000)

FrameFilter = Callable[[av.VideoFrame], av.VideoFrame]


class VideoDecoder:
    """H.264/H.265 access units -> decoded frames with unwrapped 90 kHz ``pts`` (worker thread only).

    ``fps``: called for the nominal frame rate when an access unit carries no timestamp.
    A new decoder context is made when the codec of the access units changes.
    """

    def __init__(self, fps: Callable[[], float] = lambda: 25.0) -> None:
        self._fps = fps
        self._ctx: av.CodecContext | None = None
        self._codec: str | None = None
        self._clock = TimestampUnwrapper()
        self._last_pts: int | None = None
        self.frames_in = 0
        self.errors = 0

    def decode(self, au: AccessUnit) -> list[av.VideoFrame]:
        if au.codec not in DECODERS:
            return []
        if self._ctx is None or self._codec != au.codec:
            self._ctx = av.CodecContext.create(DECODERS[au.codec], "r")
            self._ctx.thread_type = "SLICE"  # frame threads would add a frame of latency per thread
            self._codec = au.codec
        self.frames_in += 1
        if au.pts is not None:
            pts = self._clock.unwrap(au.pts)
        elif self._last_pts is not None:
            pts = self._last_pts + round(90_000 / self._fps())
        else:
            pts = int(time.monotonic() * 90_000)
        self._last_pts = pts
        packet = av.Packet(au.data)
        packet.pts = pts  # the decoder hands it on to the frame (reordered when there are B-frames)
        packet.time_base = TIME_BASE
        try:
            return list(self._ctx.decode(packet))
        except av.error.FFmpegError as exc:
            self.errors += 1
            log.debug("decode error: %s", exc)
            return []

    def flush(self) -> list[av.VideoFrame]:
        if self._ctx is None:
            return []
        try:
            return list(self._ctx.decode(None))
        except av.error.FFmpegError:
            return []


class H264Encoder:
    """Frames -> H.264 access units with libx264 (worker thread only); see :class:`Transcoder` for the
    options.  :meth:`encode` forces an IDR when ``keyframe`` is true, on the first frame, after a size
    change and after :meth:`request_keyframe`; output timestamps are the frames' (strictly increasing).
    The frame handed to :meth:`encode` is modified (pts, picture type): pass one you own."""

    def __init__(self, *, preset: str = "ultrafast", gop_seconds: float = 2.0,
                 fps: Callable[[], float] = lambda: 25.0, bitrate: int | None = None, crf: int = 23,
                 profile: str | None = "baseline", threads: int = 1) -> None:
        self.preset = preset
        self.gop_seconds = gop_seconds
        self._fps = fps
        self.bitrate = bitrate
        self.crf = crf
        self.profile = profile
        self.threads = threads
        self._ctx: av.CodecContext | None = None
        self._last_pts: int | None = None
        self._force_keyframe = False
        self.params: VideoParams | None = None
        self.frames_out = 0

    def request_keyframe(self) -> None:
        """The next encoded picture is an IDR (thread-safe: a flag the worker reads)."""
        self._force_keyframe = True

    def _open(self, width: int, height: int) -> av.CodecContext:
        fps = self._fps()
        enc = av.CodecContext.create("libx264", "w")
        enc.width, enc.height = width, height
        enc.pix_fmt = "yuv420p"
        enc.time_base = TIME_BASE
        enc.framerate = fractions.Fraction(fps).limit_denominator(1001)
        enc.gop_size = max(1, round(self.gop_seconds * fps))
        enc.max_b_frames = 0
        enc.thread_count = self.threads
        options = {"preset": self.preset, "tune": "zerolatency", "forced-idr": "1"}
        if self.profile:
            options["profile"] = self.profile
        if self.bitrate:
            enc.bit_rate = self.bitrate
            options["maxrate"] = str(self.bitrate)
            options["bufsize"] = str(self.bitrate)
        else:
            options["crf"] = str(self.crf)
        enc.options = options
        enc.open()
        return enc

    def encode(self, frame: av.VideoFrame, *, keyframe: bool = False) -> list[AccessUnit]:
        pts = frame.pts
        width, height = frame.width & ~1, frame.height & ~1  # 4:2:0 wants even sizes
        if frame.format.name != "yuv420p" or (width, height) != (frame.width, frame.height):
            frame = frame.reformat(width=width, height=height, format="yuv420p")
        out: list[AccessUnit] = []
        if self._ctx is not None and (self._ctx.width, self._ctx.height) != (width, height):
            out = self._packets(self._ctx.encode(None))  # size change: drain, then a new encoder
            self._ctx = None
        if self._ctx is None:
            self._ctx = self._open(width, height)
            keyframe = True
        if pts is None:
            pts = (self._last_pts or 0) + round(90_000 / self._fps())
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1  # x264 wants strictly increasing pts
        self._last_pts = pts
        frame.pts = pts
        frame.time_base = TIME_BASE
        if keyframe or self._force_keyframe:
            self._force_keyframe = False
            frame.pict_type = av.video.frame.PictureType.I
        else:
            frame.pict_type = av.video.frame.PictureType.NONE
        out.extend(self._packets(self._ctx.encode(frame)))
        return out

    def flush(self) -> list[AccessUnit]:
        if self._ctx is None:
            return []
        return self._packets(self._ctx.encode(None))

    def _packets(self, packets: list[av.Packet]) -> list[AccessUnit]:
        out = []
        for p in packets:
            data = bytes(p)
            pts = p.pts % PTS_WRAP if p.pts is not None else None
            dts = p.dts % PTS_WRAP if p.dts is not None else pts
            au = AccessUnit("video", "h264", data, pts, dts, bool(p.is_keyframe))
            if au.keyframe:
                params = params_from_annexb("h264", data, self.params)
                if params is not None:
                    params.extra["framerate"] = self._fps()
                    self.params = params
            self.frames_out += 1
            out.append(au)
        return out

    def close(self) -> None:
        """Drop the codec context (PyAV frees it with avcodec_free_context on release)."""
        self._ctx = None


class QueuedOutput(AccessUnitIterator):
    """The consumer side of an output fed by a pump task through a bounded queue (``None`` marks the end):
    :meth:`get` starts the pump on first use and raises ``EOFError`` at the end; async iteration on top.
    Subclasses set ``_queue``, ``_pump_task``, ``_closed`` and ``_eof`` and define ``_pump()``."""

    _pump_name = "output-pump"
    _queue: asyncio.Queue[AccessUnit | None]
    _pump_task: asyncio.Task | None
    _closed: bool
    _eof: bool

    async def _pump(self) -> None:
        raise NotImplementedError

    @property
    def closed(self) -> bool:
        return self._closed

    async def get(self) -> AccessUnit:
        if self._pump_task is None and not self._closed:
            self._pump_task = asyncio.get_running_loop().create_task(self._pump(), name=self._pump_name)
        if self._eof or (self._closed and self._queue.empty()):
            raise EOFError(f"{type(self).__name__} ended")
        au = await self._queue.get()
        if au is None:
            self._eof = True
            raise EOFError(f"{type(self).__name__} ended")
        return au


class Transcoder(QueuedOutput):
    """Decode ``source`` with PyAV, pass each frame through :meth:`frame_filter`, encode with libx264.

    ``preset``: libx264 preset (``ultrafast`` by default: one core per 1080p25 viewer at most).
    ``gop_seconds``: keyframe interval of the output; a keyframe is also forced wherever the source has
    one and on :meth:`request_keyframe` (WebRTC PLI/FIR).  ``fps`` is the nominal frame rate used for
    the GOP length and rate control (default: ``source.params.extra['framerate']`` or 25).
    ``bitrate`` (bit/s) selects ABR with a VBV of one second; without it CRF ``crf`` is used.
    ``profile``: H.264 profile of the output; 'baseline' (no B-frames, no CABAC) is what every WebRTC
    endpoint negotiates.  ``tune=zerolatency`` is always set: no frame delay, no B-frames.
    Audio access units pass through unchanged (from the first encoded picture on), timestamps intact.
    """

    codec = "h264"
    _pump_name = "transcode-pump"

    def __init__(self, source: AccessUnitSource, *, preset: str = "ultrafast", gop_seconds: float = 2.0,
                 fps: float | None = None, bitrate: int | None = None, crf: int = 23,
                 profile: str | None = "baseline", threads: int = 1,
                 frame_filter: FrameFilter | None = None, max_queue: int = 32,
                 close_source: bool = True) -> None:
        self.source = source
        self.preset = preset
        self.gop_seconds = gop_seconds
        self.fps = fps
        self.bitrate = bitrate
        self.crf = crf
        self.profile = profile
        self.threads = threads
        self._filter = frame_filter
        self._close_source = close_source
        self._queue: asyncio.Queue[AccessUnit | None] = asyncio.Queue(max_queue)
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1,
                                                               thread_name_prefix="transcode")
        self._pump_task: asyncio.Task | None = None
        self._freed: concurrent.futures.Future | None = None
        self._params: VideoParams | None = None
        self._closed = False
        self._eof = False
        self.error: BaseException | None = None
        # worker-thread state (touched only by jobs on self._executor)
        self._dec: VideoDecoder | None = None
        self._enc: H264Encoder | None = None
        self._force_keyframe = False
        self.frames_decoded = 0

    @property
    def frames_in(self) -> int:
        return self._dec.frames_in if self._dec is not None else 0

    @property
    def frames_out(self) -> int:
        return self._enc.frames_out if self._enc is not None else 0

    @property
    def decode_errors(self) -> int:
        return self._dec.errors if self._dec is not None else 0

    # ------------------------------------------------------------------ source interface
    @property
    def audio_codec(self) -> str | None:
        """The source's audio codec: its audio access units pass through unchanged."""
        return audio_codec_of(self.source)

    @property
    def params(self) -> VideoParams | None:
        """SPS/PPS/size of the H.264 output, known after the first encoded keyframe."""
        if self._enc is not None and self._enc.params is not None:
            self._params = self._enc.params
        return self._params

    def request_keyframe(self) -> None:
        """Make the next encoded picture an IDR (thread-safe: a flag the worker reads)."""
        self._force_keyframe = True
        if self._enc is not None:
            self._enc.request_keyframe()

    def frame_filter(self, frame: av.VideoFrame) -> av.VideoFrame:
        """Hook run on the worker thread for every decoded frame; returns the frame to encode.

        Identity unless a ``frame_filter`` callable was given; the per-viewer watermark goes here.
        """
        return self._filter(frame) if self._filter is not None else frame

    def close(self) -> None:
        """Stop reading, close the source and free the codec contexts (on the worker, after the job
        in progress).  Safe to call more than once; :meth:`aclose` also waits for the freeing."""
        if self._closed:
            return
        self._closed = True
        if self._pump_task is not None and not self._pump_task.done():
            self._pump_task.cancel()
        try:
            self._queue.put_nowait(None)  # wakes a get() waiting on an empty queue
        except asyncio.QueueFull:
            pass
        self._freed = self._executor.submit(self._free)
        self._executor.shutdown(wait=False)
        if self._close_source:
            close = getattr(self.source, "close", None)
            if close is not None:
                try:
                    result = close()
                    if asyncio.iscoroutine(result):
                        asyncio.get_running_loop().create_task(result)
                except Exception:  # noqa: BLE001
                    log.exception("closing the transcoder's source failed")

    async def aclose(self) -> None:
        self.close()
        if self._pump_task is not None:
            try:
                await self._pump_task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        if self._freed is not None:
            await asyncio.wrap_future(self._freed)

    # ------------------------------------------------------------------ event loop side
    async def _pump(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while not self._closed:
                au = await next_au(self.source)
                if au is None:
                    break
                if au.kind != "video":
                    if au.kind == "audio" and self.frames_out:
                        await self._queue.put(au)  # audio passes (once the picture has started)
                    continue
                for out in await loop.run_in_executor(self._executor, self._process, au):
                    await self._queue.put(out)
            if not self._closed:
                for out in await loop.run_in_executor(self._executor, self._flush):
                    await self._queue.put(out)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - reported through get() as the end of the stream
            self.error = exc
            log.exception("transcoder stopped")
        if not self._closed:
            await self._queue.put(None)
            if self._close_source:
                await close_source(self.source)

    # ------------------------------------------------------------------ worker thread
    def _process(self, au: AccessUnit) -> list[AccessUnit]:
        if self._dec is None:
            self._dec = VideoDecoder(self._nominal_fps)
        out: list[AccessUnit] = []
        for frame in self._dec.decode(au):
            out.extend(self._encode(frame))
        return out

    def _flush(self) -> list[AccessUnit]:
        out: list[AccessUnit] = []
        if self._dec is not None:
            for frame in self._dec.flush():
                out.extend(self._encode(frame))
        if self._enc is not None:
            out.extend(self._enc.flush())
        return out

    def _nominal_fps(self) -> float:
        if self.fps:
            return self.fps
        params = getattr(self.source, "params", None)
        fps = params.extra.get("framerate") if params is not None else None
        return float(fps) if fps else 25.0

    def _encode(self, frame: av.VideoFrame) -> list[AccessUnit]:
        self.frames_decoded += 1
        keyframe = bool(frame.key_frame)
        frame = self.frame_filter(frame)
        if self._enc is None:
            self._enc = H264Encoder(preset=self.preset, gop_seconds=self.gop_seconds, fps=self._nominal_fps,
                                    bitrate=self.bitrate, crf=self.crf, profile=self.profile,
                                    threads=self.threads)
        if self._force_keyframe:
            self._force_keyframe = False
            keyframe = True
        out = self._enc.encode(frame, keyframe=keyframe)
        if self._enc.params is not None:
            self._params = self._enc.params
        return out

    def _free(self) -> None:
        """Drop the codec contexts (PyAV frees them with avcodec_free_context on release)."""
        if self._enc is not None:
            self._enc.close()
        self._dec = None
        self._enc = None
