"""Watermarked MP4 export: decode, draw the requester's watermark, encode H.264 with the session tag.

:func:`export_mp4` is the whole download pipeline for one file, run on a worker thread (never on the
event loop)::

    source (media file, or H.264/H.265 access units)
      -> PyAV decoder (frame threads)
      -> Overlay.apply(frame, wall clock of that frame)          # the requester's visible watermark
      -> libx264 (preset ``ultrafast`` by default, CRF, keyframe every ``gop_seconds``)
      -> signed SEI session tag inserted before the first slice of every keyframe
      -> MP4 (PyAV, ``+faststart``), then SHA-256 of the finished file

The clock drawn in the picture follows the *media* timestamps: frame ``k`` shows ``start_time +
(pts_k - pts_0)``, where ``start_time`` is the recording's wall clock of its first frame (a live
capture knows it; for a file the caller passes it, else the container's ``creation_time`` is used,
else the export's own start time, which then still advances with the media, not with the export).

Sources: a path to anything FFmpeg demuxes (MPEG-PS as GB/T 28181 cameras send it, FLV, MP4, raw
H.264/H.265 Annex B), or an iterable of :class:`media_relay.types.AccessUnit` (90 kHz timestamps, as
the live Stream and :class:`AccessUnitSpool` give them).  Audio is not exported.

The MP4 stores H.264 as ISO/IEC 14496-15 (``avcC``, length-prefixed NAL units): the muxer converts the
encoder's Annex B output, SEI included, so ``gbops watermark inspect OUT.mp4`` finds the tag.
"""

from __future__ import annotations

import contextlib
import fractions
import hashlib
import io
import math
import os
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import av
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from media_relay.nal import START_CODE, insert_before_first_slice
from media_relay.types import AccessUnit
from watermark.overlay import Overlay, WatermarkSettings
from watermark.render import WatermarkText
from watermark.tag import SessionTag, make_tag_nal

__all__ = [
    "AccessUnitSpool",
    "ExportCancelled",
    "ExportError",
    "ExportResult",
    "Progress",
    "export_mp4",
    "file_sha256",
]

#: ``progress(done_frames, total_frames or None, media_seconds_done)``
Progress = Callable[[int, int | None, float], None]

TIME_BASE = fractions.Fraction(1, 90_000)
_DECODERS = {"h264": "h264", "h265": "hevc"}
_RAW_FORMATS = {".h264": "h264", ".264": "h264", ".avc": "h264", ".h265": "hevc", ".265": "hevc",
                ".hevc": "hevc"}
_PROGRESS_INTERVAL = 0.2  # seconds between progress calls (plus one at the end)


class ExportError(Exception):
    """The source cannot be read or holds no decodable H.264/H.265 video; the message is for people."""


class ExportCancelled(ExportError):
    """``cancel`` was set while the export ran; the partial output was removed."""


@dataclass(frozen=True, slots=True)
class ExportResult:
    path: Path
    sha256: str          # hex digest of the whole file
    bytes: int
    frames: int          # pictures encoded (= pictures decoded from the source)
    duration_s: float    # media duration: last minus first timestamp, plus one frame
    wall_s: float        # wall-clock time the export took
    width: int
    height: int
    start_time: float    # wall clock (Unix seconds) drawn on the first frame
    audio_frames: int = 0  # AAC frames written (0: the file has no audio)

    @property
    def speed(self) -> float:
        """Times real time (media seconds per wall second)."""
        return self.duration_s / self.wall_s if self.wall_s > 0 else float("inf")


def file_sha256(path: Path | str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------------------------- spool file
class AccessUnitSpool:
    """Video and audio access units on disk, in arrival order (a capture must not sit in memory).

    Record layout (big-endian): ``pts`` int64 (-1: none), flags uint8 (bit 0 keyframe, bit 1 H.265, bit 2
    audio, bits 3-4 the audio codec: 0 AAC, 1 G.711 A-law, 2 G.711 mu-law), length uint32, then the bytes
    (Annex B for video, as the demuxer gave them for audio: ADTS for AAC, the raw samples for G.711).
    ``frames`` counts the video pictures, ``audio_units`` the audio access units.
    """

    _HEAD = struct.Struct(">qBI")
    _AUDIO = ("aac", "g711a", "g711u")
    _FPS_SAMPLE = 250  # pictures whose timestamps give the frame rate

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.frames = 0
        self.audio_units = 0
        self.codec: str | None = None
        self.audio_codec: str | None = None
        self._f: BinaryIO | None = None
        self._video_pts: list[int] = []

    def append(self, au: AccessUnit) -> None:
        if au.kind == "video" and au.codec in _DECODERS:
            flags = (1 if au.keyframe else 0) | (2 if au.codec == "h265" else 0)
        elif au.kind == "audio" and au.codec in self._AUDIO:
            flags = 4 | (self._AUDIO.index(au.codec) << 3)
        else:
            return
        if self._f is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        self._f.write(self._HEAD.pack(-1 if au.pts is None else au.pts, flags, len(au.data)))
        self._f.write(au.data)
        if au.kind == "video":
            self.frames += 1
            self.codec = self.codec or au.codec
            if au.pts is not None and len(self._video_pts) < self._FPS_SAMPLE:
                self._video_pts.append(au.pts)
        else:
            self.audio_units += 1
            self.audio_codec = self.audio_codec or au.codec

    def fps(self) -> float | None:
        """The frame rate the video timestamps show (median picture interval), None when unknown."""
        from media_relay.outputs.flv import TimestampUnwrapper

        clock = TimestampUnwrapper()
        ticks = sorted(clock.unwrap(p) for p in self._video_pts)
        steps = sorted(b - a for a, b in zip(ticks, ticks[1:], strict=False) if b > a)
        if not steps:
            return None
        fps = 90_000 / steps[len(steps) // 2]
        return round(fps, 3) if 1 <= fps <= 240 else None

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def __iter__(self) -> Iterator[AccessUnit]:
        self.close()
        if not self.path.exists():
            return
        with open(self.path, "rb") as f:
            while head := f.read(self._HEAD.size):
                if len(head) < self._HEAD.size:
                    return
                pts, flags, n = self._HEAD.unpack(head)
                data = f.read(n)
                if len(data) < n:
                    return
                ts = None if pts < 0 else pts
                if flags & 4:
                    if (flags >> 3) & 3 < len(self._AUDIO):
                        yield AccessUnit("audio", self._AUDIO[(flags >> 3) & 3], data, ts, ts)
                else:
                    yield AccessUnit("video", "h265" if flags & 2 else "h264", data, ts, None, bool(flags & 1))

    def remove(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------- decoding
@dataclass(frozen=True, slots=True)
class _AacFrame:
    """One raw AAC frame (ADTS header removed) on the source's unwrapped 90 kHz clock."""

    ticks: int
    payload: bytes
    asc: bytes  # AudioSpecificConfig (from the ADTS header)
    rate: int
    channels: int


@dataclass(slots=True)
class _Decoded:
    items: Iterator[tuple[str, Any]]  # ("video", av.VideoFrame) | ("audio", _AacFrame)
    total: int | None
    fps: float
    creation_time: float | None


def _creation_time(container: Any) -> float | None:
    value = (container.metadata or {}).get("creation_time")
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _count_video_packets(path: Path, fmt: str | None) -> int | None:
    """Exact picture count by demuxing only (cheap next to decoding), for a progress percentage."""
    try:
        with av.open(str(path), format=fmt) as c:
            if not c.streams.video:
                return None
            return sum(1 for p in c.demux(c.streams.video[0]) if p.size)
    except av.FFmpegError:
        return None


def _decode_file(path: Path, threads: int) -> _Decoded:
    fmt = _RAW_FORMATS.get(path.suffix.lower())
    try:
        container = av.open(str(path), format=fmt)
    except av.FFmpegError as exc:
        raise ExportError(f"无法打开输入文件 / cannot open the input: {exc}") from None
    streams = [s for s in container.streams.video if s.codec_context.name in ("h264", "hevc")]
    if not streams:
        container.close()
        raise ExportError("输入中没有 H.264/H.265 视频 / no H.264 or H.265 video in the input")
    stream = streams[0]
    rate = stream.average_rate or stream.base_rate or stream.guessed_rate
    fps = float(rate) if rate and 1 <= float(rate) <= 240 else 25.0
    total = stream.frames or _count_video_packets(path, fmt)
    stream.thread_type = "AUTO"
    stream.codec_context.thread_count = threads
    created = _creation_time(container)

    def items() -> Iterator[tuple[str, Any]]:
        with container:
            for packet in container.demux(stream):
                try:
                    for frame in packet.decode():  # a flush packet (size 0) drains the decoder
                        yield "video", frame
                except av.FFmpegError:
                    continue  # undecodable picture (e.g. before the first keyframe): skipped

    return _Decoded(items(), total or None, fps, created)


_AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)


def _adts_frames(data: bytes) -> Iterator[tuple[bytes, bytes, int, int]]:
    """``(AudioSpecificConfig, raw frame, sample rate, channels)`` per ADTS frame; stops at the first
    byte that is not an ADTS frame (hostile or damaged input ends the unit, nothing is guessed)."""
    i = 0
    while i + 7 <= len(data):
        if data[i] != 0xFF or (data[i + 1] & 0xF6) != 0xF0:
            return
        header = 7 if data[i + 1] & 1 else 9
        profile = data[i + 2] >> 6
        sfi = (data[i + 2] >> 2) & 0x0F
        channels = ((data[i + 2] & 1) << 2) | (data[i + 3] >> 6)
        length = ((data[i + 3] & 3) << 11) | (data[i + 4] << 3) | (data[i + 5] >> 5)
        if length <= header or i + length > len(data) or sfi >= len(_AAC_RATES) or not channels:
            return
        asc = struct.pack(">H", ((profile + 1) << 11) | (sfi << 7) | (channels << 3))
        yield asc, data[i + header : i + length], _AAC_RATES[sfi], channels
        i += length


def _decode_units(units: Iterable[AccessUnit], threads: int, fps: float, total: int | None) -> _Decoded:
    """Decoded pictures and AAC audio frames (G.711 transcoded) of an access-unit source, video and
    audio timestamps unwrapped on one clock so that they stay in step."""
    from media_relay.outputs.audio import AacTranscoder
    from media_relay.outputs.flv import TimestampUnwrapper

    def items() -> Iterator[tuple[str, Any]]:
        dec: av.CodecContext | None = None
        codec: str | None = None
        clock = TimestampUnwrapper()
        last: int | None = None
        step = round(90_000 / fps)
        g711: AacTranscoder | None = None

        def aac(au: AccessUnit) -> Iterator[tuple[str, Any]]:
            if au.pts is None:
                return  # audio without a timestamp cannot be placed against the video
            ticks = clock.unwrap(au.pts)
            for asc, payload, rate, channels in _adts_frames(au.data):
                yield "audio", _AacFrame(ticks, payload, asc, rate, channels)
                ticks += 1024 * 90_000 // rate

        for au in units:
            if au.kind == "audio":
                if au.codec == "aac":
                    yield from aac(au)
                elif au.codec in ("g711a", "g711u"):
                    g711 = g711 or AacTranscoder()
                    try:
                        encoded = g711.feed(au)
                    except av.FFmpegError:
                        continue
                    for out in encoded:
                        yield from aac(out)
                continue
            if au.kind != "video" or au.codec not in _DECODERS:
                continue
            if dec is None or codec != au.codec:
                if dec is not None:
                    yield from _timed(_drain(dec))
                dec = av.CodecContext.create(_DECODERS[au.codec], "r")
                dec.thread_type = "AUTO"
                dec.thread_count = threads
                codec = au.codec
            pts = clock.unwrap(au.pts) if au.pts is not None else (last + step if last is not None else 0)
            last = pts
            packet = av.Packet(au.data)
            packet.pts = pts
            packet.time_base = TIME_BASE
            try:
                decoded = dec.decode(packet)
            except av.FFmpegError:
                continue
            yield from _timed(decoded)
        if g711 is not None:
            with contextlib.suppress(av.FFmpegError):
                for out in g711.flush():
                    yield from aac(out)
        if dec is not None:
            yield from _timed(_drain(dec))

    return _Decoded(items(), total, fps, None)


def _timed(frames: Iterable[av.VideoFrame]) -> Iterator[tuple[str, av.VideoFrame]]:
    """A bare decoder context leaves the frames' time base unset: they carry our 90 kHz pts."""
    for frame in frames:
        frame.time_base = TIME_BASE
        yield "video", frame


def _drain(dec: av.CodecContext) -> Iterator[av.VideoFrame]:
    try:
        yield from dec.decode(None)
    except av.FFmpegError:
        return


# ------------------------------------------------------------------------------------- muxing
class _Mp4Writer:
    """The MP4 output: H.264 from the encoder (tagged keyframes) and AAC passed through.

    An MP4's tracks are fixed when its header is written (at the first packet), and the audio track
    needs its AudioSpecificConfig, known only from the first audio frame.  So encoded video is held back
    until audio has shown up or ``AUDIO_WAIT`` seconds of video went by without any (then the file has
    no audio track; later audio is dropped).  Audio waits in a queue until the video has reached its
    time, so the two are written roughly interleaved; audio before the first picture or after the last
    is dropped (the file's duration is the video's).
    """

    AUDIO_WAIT = 3.0

    def __init__(self, output: Any, tag_nal: bytes) -> None:
        self.output = output
        self.tag_nal = tag_nal
        self.vstream: Any = None
        self.astream: Any = None
        self.started = False
        self.held: list[av.Packet] = []
        self.audio: deque[_AacFrame] = deque()
        self.audio_frames = 0
        self.audio_dropped = 0
        self.zero_ticks: int | None = None  # source clock (90 kHz) of the output's time 0
        self._last_audio = -1
        self._saw_audio = False

    # audio ---------------------------------------------------------------------------------------
    def add_audio(self, frame: _AacFrame) -> None:
        if self.started and self.astream is None:
            self.audio_dropped += 1
            return
        if self.astream is None:
            self._open_audio(frame)
        self._saw_audio = True
        self.audio.append(frame)

    def _open_audio(self, frame: _AacFrame) -> None:
        # a template stream from one ADTS frame gives the codec parameters; the muxer wants raw frames
        # and the AudioSpecificConfig as extradata
        from media_relay.outputs.audio import adts_header

        adts = adts_header(len(frame.payload), frame.rate, frame.channels) + frame.payload
        probe = av.open(io.BytesIO(adts * 2), format="aac")
        try:
            self.astream = self.output.add_stream_from_template(probe.streams.audio[0])
        finally:
            probe.close()
        self.astream.time_base = TIME_BASE
        self.astream.codec_context.extradata = frame.asc

    def _mux_audio(self, until: float | None, end: float | None) -> None:
        """Write queued audio up to output time ``until`` (None: all), dropping what lies before 0 or
        at/after ``end``."""
        if not self.started or self.zero_ticks is None:
            return
        while self.audio:
            frame = self.audio[0]
            t = (frame.ticks - self.zero_ticks) / 90_000
            if until is not None and t > until:
                return
            self.audio.popleft()
            pts = frame.ticks - self.zero_ticks
            if self.astream is None or t < 0 or (end is not None and t >= end) or pts <= self._last_audio:
                self.audio_dropped += 1
                continue
            packet = av.Packet(frame.payload)
            packet.pts = packet.dts = pts
            packet.duration = 1024 * 90_000 // frame.rate
            packet.time_base = TIME_BASE
            packet.stream = self.astream
            self.output.mux(packet)
            self._last_audio = pts
            self.audio_frames += 1

    # video ---------------------------------------------------------------------------------------
    def add_video(self, packets: list[av.Packet], now: float) -> None:
        """Encoded pictures; ``now``: the output time (seconds) of the newest picture given to the encoder."""
        tagged = [self._tag(p) for p in packets]
        if not self.started:
            self.held.extend(tagged)
            if self._saw_audio or now >= self.AUDIO_WAIT:
                self._start()
            return
        self.output.mux(tagged)
        self._mux_audio(now, None)

    def _start(self) -> None:
        self.started = True
        held, self.held = self.held, []
        self.output.mux(held)

    def finish(self, end: float) -> None:
        """All video given (its packets flushed from the encoder through :meth:`add_video`): write what
        was held back and the rest of the audio, up to ``end`` seconds."""
        if not self.started:
            self._start()
        self._mux_audio(None, end)

    def _tag(self, packet: av.Packet) -> av.Packet:
        if not packet.is_keyframe:
            return packet
        data = insert_before_first_slice(bytes(packet), self.tag_nal, "h264")
        tagged = av.Packet(data)
        tagged.pts, tagged.dts, tagged.duration = packet.pts, packet.dts, packet.duration
        tagged.time_base = packet.time_base
        tagged.is_keyframe = True
        tagged.stream = self.vstream
        return tagged


# ------------------------------------------------------------------------------------- export
def export_mp4(
    source: Path | str | Iterable[AccessUnit],
    out_path: Path | str,
    *,
    text: WatermarkText,
    settings: WatermarkSettings,
    tag: SessionTag,
    key: Ed25519PrivateKey,
    progress: Progress | None = None,
    preset: str = "ultrafast",
    crf: int = 21,
    gop_seconds: float = 2.0,
    start_time: float | None = None,
    fps: float | None = None,
    total_frames: int | None = None,
    threads: int = 0,
    cancel: threading.Event | None = None,
    clip: tuple[float, float] | None = None,
) -> ExportResult:
    """Export ``source`` to an MP4 at ``out_path`` with the watermark of ``text`` and the signed
    ``tag`` in every keyframe.  Blocking (run it on a worker thread); raises :class:`ExportError`.

    ``start_time``: wall clock (Unix seconds) of the first frame, drawn in the picture and advanced
    with the media timestamps.  ``fps``/``total_frames``: nominal rate and picture count of an
    access-unit source (a file knows its own).  ``threads``: decoder and encoder threads (0 = auto).
    ``cancel``: set it from another thread to stop; the partial file is removed.  ``clip``: keep only
    the pictures (and audio) whose wall clock lies in ``[start, end)`` (Unix seconds): a history
    source starts at the keyframe before the window and may run past its end.

    Audio of an access-unit source is kept: AAC as it is, G.711 transcoded to AAC.
    """
    t0 = time.perf_counter()
    out_path = Path(out_path)
    if isinstance(source, (str, os.PathLike)):
        decoded = _decode_file(Path(source), threads)
    else:
        decoded = _decode_units(source, threads, fps or 25.0, total_frames)
    if start_time is None:
        start_time = decoded.creation_time if decoded.creation_time is not None else time.time()
    tag_nal = START_CODE + make_tag_nal(tag, "h264", key)
    overlay = Overlay(settings, text)
    step = 1.0 / decoded.fps
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".part")
    frames = 0
    first_t: float | None = None  # source time (s) of the first decoded picture
    base_rel: float | None = None  # its offset of the first picture kept (the output's time 0)
    last_rel = -1.0
    last_out = -1.0
    last_pts = -1
    width = height = 0
    last_report = 0.0

    def report(final: bool = False) -> None:
        nonlocal last_report
        if progress is None:
            return
        now = time.perf_counter()
        if final or now - last_report >= _PROGRESS_INTERVAL:
            last_report = now
            total = frames if final else decoded.total
            if total is not None and not final:
                total = max(total, frames)
            progress(frames, total, max(last_out, 0.0) + (step if frames else 0.0))

    try:
        output = av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"})
    except av.FFmpegError as exc:
        raise ExportError(f"无法写入输出文件 / cannot write the output: {exc}") from None
    ok = False
    writer = _Mp4Writer(output, tag_nal)
    try:
        with output:
            vstream: Any = None
            for kind, item in decoded.items:
                if cancel is not None and cancel.is_set():
                    raise ExportCancelled("导出已取消 / export cancelled")
                if kind == "audio":
                    writer.add_audio(item)
                    continue
                frame = item
                t = frame.time
                if t is None or math.isnan(t):
                    rel = last_rel + step
                else:
                    if first_t is None:
                        first_t = t
                    rel = t - first_t
                    if rel <= last_rel:
                        rel = last_rel + step / 2  # timestamps going backwards: keep them increasing
                last_rel = rel
                if clip is not None:
                    wall = start_time + rel
                    if wall < clip[0] - step / 2:
                        continue
                    if wall >= clip[1] - step / 2:
                        break  # past the end: the rest of the source is not needed
                if base_rel is None:
                    base_rel = rel
                    writer.zero_ticks = round(((first_t or 0.0) + rel) * 90_000)
                out_rel = rel - base_rel
                if vstream is None:
                    width, height = frame.width & ~1, frame.height & ~1
                    vstream = writer.vstream = _open_stream(output, width, height, decoded.fps, preset, crf,
                                                            gop_seconds, threads)
                frame = overlay.apply(frame, start_time + rel)
                if frame.format.name != "yuv420p" or (frame.width, frame.height) != (width, height):
                    frame = frame.reformat(width=width, height=height, format="yuv420p")
                pts = round(out_rel * 90_000)
                if pts <= last_pts:
                    pts = last_pts + 1
                last_pts = pts
                last_out = out_rel
                frame.pts = pts
                frame.time_base = TIME_BASE
                frame.pict_type = av.video.frame.PictureType.NONE
                writer.add_video(vstream.encode(frame), out_rel)
                frames += 1
                report()
            if vstream is None:
                raise ExportError("输入中没有可解码的视频帧 / no decodable video picture in the input")
            writer.add_video(vstream.encode(None), last_out)
            writer.finish(last_out + step)
        ok = True
    except av.FFmpegError as exc:
        raise ExportError(f"编码或写入失败 / encoding or writing failed: {exc}") from None
    finally:
        if not ok:
            tmp.unlink(missing_ok=True)
    os.replace(tmp, out_path)
    digest = file_sha256(out_path)
    report(final=True)
    return ExportResult(path=out_path, sha256=digest, bytes=out_path.stat().st_size, frames=frames,
                        duration_s=round(last_out + step, 6), wall_s=time.perf_counter() - t0,
                        width=width, height=height, start_time=start_time + (base_rel or 0.0),
                        audio_frames=writer.audio_frames)


def _open_stream(output: Any, width: int, height: int, fps: float, preset: str, crf: int,
                 gop_seconds: float, threads: int) -> Any:
    rate = fractions.Fraction(fps).limit_denominator(1001)
    stream = output.add_stream("libx264", rate=rate)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    cc = stream.codec_context
    cc.time_base = TIME_BASE
    stream.time_base = TIME_BASE
    cc.gop_size = max(1, round(gop_seconds * fps))
    cc.thread_count = threads
    cc.options = {"preset": preset, "crf": str(crf)}
    return stream
