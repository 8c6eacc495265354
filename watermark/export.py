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

import fractions
import hashlib
import math
import os
import struct
import threading
import time
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
    """Video access units on disk, in arrival order (a live capture must not sit in memory).

    Record layout (big-endian): ``pts`` int64 (-1: none), flags uint8 (bit 0 keyframe, bit 1 H.265),
    length uint32, then the Annex B bytes.
    """

    _HEAD = struct.Struct(">qBI")

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.frames = 0
        self.codec: str | None = None
        self._f: BinaryIO | None = None

    def append(self, au: AccessUnit) -> None:
        if au.kind != "video" or au.codec not in _DECODERS:
            return
        if self._f is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        flags = (1 if au.keyframe else 0) | (2 if au.codec == "h265" else 0)
        self._f.write(self._HEAD.pack(-1 if au.pts is None else au.pts, flags, len(au.data)))
        self._f.write(au.data)
        self.frames += 1
        self.codec = self.codec or au.codec

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
                yield AccessUnit("video", "h265" if flags & 2 else "h264", data, None if pts < 0 else pts,
                                 None, bool(flags & 1))

    def remove(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------- decoding
@dataclass(slots=True)
class _Decoded:
    frames: Iterator[av.VideoFrame]
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

    def frames() -> Iterator[av.VideoFrame]:
        with container:
            for packet in container.demux(stream):
                try:
                    yield from packet.decode()  # a flush packet (size 0) drains the decoder
                except av.FFmpegError:
                    continue  # undecodable picture (e.g. before the first keyframe): skipped

    return _Decoded(frames(), total or None, fps, created)


def _decode_units(units: Iterable[AccessUnit], threads: int, fps: float, total: int | None) -> _Decoded:
    from media_relay.outputs.flv import TimestampUnwrapper

    def frames() -> Iterator[av.VideoFrame]:
        dec: av.CodecContext | None = None
        codec: str | None = None
        clock = TimestampUnwrapper()
        last: int | None = None
        step = round(90_000 / fps)
        for au in units:
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
        if dec is not None:
            yield from _timed(_drain(dec))

    return _Decoded(frames(), total, fps, None)


def _timed(frames: Iterable[av.VideoFrame]) -> Iterator[av.VideoFrame]:
    """A bare decoder context leaves the frames' time base unset: they carry our 90 kHz pts."""
    for frame in frames:
        frame.time_base = TIME_BASE
        yield frame


def _drain(dec: av.CodecContext) -> Iterator[av.VideoFrame]:
    try:
        yield from dec.decode(None)
    except av.FFmpegError:
        return


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
) -> ExportResult:
    """Export ``source`` to an MP4 at ``out_path`` with the watermark of ``text`` and the signed
    ``tag`` in every keyframe.  Blocking (run it on a worker thread); raises :class:`ExportError`.

    ``start_time``: wall clock (Unix seconds) of the first frame, drawn in the picture and advanced
    with the media timestamps.  ``fps``/``total_frames``: nominal rate and picture count of an
    access-unit source (a file knows its own).  ``threads``: decoder and encoder threads (0 = auto).
    ``cancel``: set it from another thread to stop; the partial file is removed.
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
    first_t: float | None = None
    last_rel = -1.0
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
            progress(frames, total, max(last_rel, 0.0) + (step if frames else 0.0))

    try:
        output = av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"})
    except av.FFmpegError as exc:
        raise ExportError(f"无法写入输出文件 / cannot write the output: {exc}") from None
    ok = False
    try:
        with output:
            vstream: Any = None
            for frame in decoded.frames:
                if cancel is not None and cancel.is_set():
                    raise ExportCancelled("导出已取消 / export cancelled")
                t = frame.time
                if t is None or math.isnan(t):
                    rel = last_rel + step
                else:
                    if first_t is None:
                        first_t = t
                    rel = t - first_t
                    if rel <= last_rel:
                        rel = last_rel + step / 2  # timestamps going backwards: keep them increasing
                if vstream is None:
                    width, height = frame.width & ~1, frame.height & ~1
                    vstream = _open_stream(output, width, height, decoded.fps, preset, crf, gop_seconds,
                                           threads)
                last_rel = rel
                frame = overlay.apply(frame, start_time + rel)
                if frame.format.name != "yuv420p" or (frame.width, frame.height) != (width, height):
                    frame = frame.reformat(width=width, height=height, format="yuv420p")
                pts = round(rel * 90_000)
                if pts <= last_pts:
                    pts = last_pts + 1
                last_pts = pts
                frame.pts = pts
                frame.time_base = TIME_BASE
                frame.pict_type = av.video.frame.PictureType.NONE
                _mux(output, vstream, vstream.encode(frame), tag_nal)
                frames += 1
                report()
            if vstream is None:
                raise ExportError("输入中没有可解码的视频帧 / no decodable video picture in the input")
            _mux(output, vstream, vstream.encode(None), tag_nal)
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
                        duration_s=round(last_rel + step, 6), wall_s=time.perf_counter() - t0,
                        width=width, height=height, start_time=start_time)


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


def _mux(output: Any, stream: Any, packets: list[av.Packet], tag_nal: bytes) -> None:
    for packet in packets:
        if packet.is_keyframe:
            data = insert_before_first_slice(bytes(packet), tag_nal, "h264")
            tagged = av.Packet(data)
            tagged.pts, tagged.dts, tagged.duration = packet.pts, packet.dts, packet.duration
            tagged.time_base = packet.time_base
            tagged.is_keyframe = True
            tagged.stream = stream
            packet = tagged
        output.mux(packet)
