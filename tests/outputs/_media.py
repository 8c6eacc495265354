"""Test media: encode a moving test pattern with PyAV into AccessUnits, and a fake Stream reader."""

from __future__ import annotations

import asyncio
import fractions
import functools
import io
import json
import subprocess
from collections.abc import Iterable
from pathlib import Path

import av
import numpy as np

from media_relay.types import AccessUnit, VideoParams
from tests.conftest import need_tool

ENCODERS = {"h264": "libx264", "h265": "libx265"}


def pattern_frame(i: int, width: int, height: int) -> av.VideoFrame:
    """A moving gradient with a bright square: every frame differs, so P-frames carry data."""
    x = np.arange(width, dtype=np.uint16)[None, :]
    y = np.arange(height, dtype=np.uint16)[:, None]
    img = np.empty((height, width, 3), dtype=np.uint8)
    img[..., 0] = ((x + 4 * i) & 0xFF).astype(np.uint8)
    img[..., 1] = ((y + 2 * i) & 0xFF).astype(np.uint8)
    img[..., 2] = (((x + y) // 2 + 8 * i) & 0xFF).astype(np.uint8)
    s = (4 * i) % max(1, width - 32)
    img[16:48, s : s + 32] = 255
    return av.VideoFrame.from_ndarray(img, format="rgb24")


@functools.lru_cache(maxsize=32)
def encode_access_units(codec: str, *, frames: int = 30, width: int = 320, height: int = 240,
                        fps: int = 25, gop: int = 12, bframes: int = 0,
                        pts_offset: int = 0) -> list[AccessUnit]:
    """Encode ``frames`` frames of the test pattern; each encoder packet becomes one AccessUnit.

    libx264/libx265 without a global header put VPS/SPS/PPS in-band before every keyframe (Annex B).
    pts/dts are 90 kHz ticks starting at ``pts_offset`` (wrapped to 33 bits).
    """
    ctx = av.CodecContext.create(ENCODERS[codec], "w")
    ctx.width, ctx.height = width, height
    ctx.pix_fmt = "yuv420p"
    ctx.time_base = fractions.Fraction(1, 90000)
    ctx.framerate = fractions.Fraction(fps, 1)
    ctx.gop_size = gop
    ctx.max_b_frames = bframes
    if codec == "h264":
        ctx.options = {"preset": "ultrafast", "bf": str(bframes)}
    else:
        ctx.options = {"preset": "ultrafast",
                       "x265-params": f"log-level=error:keyint={gop}:min-keyint={gop}:bframes={bframes}"
                                      ":scenecut=0:repeat-headers=1"}
    step = 90000 // fps
    out: list[AccessUnit] = []

    def collect(packets: Iterable[av.Packet]) -> None:
        for p in packets:
            pts = (p.pts + pts_offset) % (1 << 33)
            dts = (p.dts + pts_offset) % (1 << 33) if p.dts is not None else pts
            out.append(AccessUnit("video", codec, bytes(p), pts, dts, bool(p.is_keyframe)))

    for i in range(frames):
        frame = pattern_frame(i, width, height).reformat(format="yuv420p")
        frame.pts = i * step
        frame.time_base = ctx.time_base
        collect(ctx.encode(frame))
    collect(ctx.encode(None))
    return out


def encode_adts(seconds: float = 1.0, rate: int = 44100) -> bytes:
    """A 440 Hz tone as AAC-LC in ADTS frames (PyAV's native aac encoder)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="adts") as container:
        stream = container.add_stream("aac", rate=rate, layout="mono")
        n = int(seconds * rate)
        t = np.arange(n) / rate
        samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :]
        for i in range(0, n, 1024):
            frame = av.AudioFrame.from_ndarray(samples[:, i : i + 1024].copy(), format="fltp", layout="mono")
            frame.sample_rate = rate
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buf.getvalue()


def split_adts(data: bytes) -> list[bytes]:
    out, i = [], 0
    while i + 7 <= len(data):
        length = ((data[i + 3] & 3) << 11) | (data[i + 4] << 3) | (data[i + 5] >> 5)
        out.append(data[i : i + length])
        i += length
    return out


class FakeReader:
    """Stands in for media_relay.stream.StreamReader: ``get()`` / ``params`` / ``codec`` / ``close()``.

    ``interval`` paces delivery (seconds per AU; 0 = as fast as asked).  ``loop`` replays the AUs
    forever with increasing timestamps.  After the last AU ``get()`` raises EOFError.
    """

    def __init__(self, aus: list[AccessUnit], params: VideoParams | None = None, *,
                 interval: float = 0.0, loop: bool = False) -> None:
        self.aus = aus
        self._params = params
        self.interval = interval
        self.loop = loop
        self.index = 0
        self.closed = False
        self.delivered = 0
        self.keyframe_requests = 0

    @property
    def codec(self) -> str:
        return self.aus[0].codec

    @property
    def params(self) -> VideoParams | None:
        return self._params

    async def get(self) -> AccessUnit:
        if self.closed:
            raise EOFError("closed")
        if self.interval:
            await asyncio.sleep(self.interval)
        if self.index >= len(self.aus):
            if not self.loop:
                raise EOFError("end of test media")
        n, i = divmod(self.index, len(self.aus))
        self.index += 1
        au = self.aus[i]
        if n:
            span = (self.aus[-1].dts - self.aus[0].dts) + 3600
            shift = n * span
            au = AccessUnit(au.kind, au.codec, au.data, (au.pts + shift) % (1 << 33),
                            (au.dts + shift) % (1 << 33), au.keyframe)
        self.delivered += 1
        return au

    def request_keyframe(self) -> None:
        self.keyframe_requests += 1

    def close(self) -> None:
        self.closed = True


def ffprobe(path: Path, *entries: str, count_frames: bool = True) -> dict:
    exe = need_tool("ffprobe")
    r = subprocess.run([exe, "-v", "error", *(["-count_frames"] if count_frames else []),
                        "-show_entries", ":".join(entries), "-of", "json", str(path)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)
