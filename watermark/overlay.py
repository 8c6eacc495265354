"""Per-viewer visible watermark drawn straight into the yuv420p planes of decoded frames.

``Overlay(settings, text).apply(frame, now)`` blends the viewer's cached text patches (see
:mod:`watermark.render`) into the Y, U and V planes with integer alpha blending: no RGB round trip,
no per-frame text rendering (the clock patch is re-rendered once per second, shared by all viewers
through the render cache).  The block is repeated on a staggered (diagonal) grid that drifts slowly
with time, so cropping a corner or a band never removes it.

By default the frame is copied first: decoded frames share their buffers with the decoder's reference
pictures (and, once decoding is shared, with other viewers), so writing into them would corrupt later
pictures.  ``in_place=True`` is for frames the caller owns.  An instance is a ``FrameFilter``
(``overlay(frame)`` uses the current time) and plugs into ``Transcoder(frame_filter=...)``.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

import av
import numpy as np

from watermark.font import find_cjk_font
from watermark.render import FIELDS, Patch, WatermarkText, format_time, render_patch

DIRECT_FORMATS = ("yuv420p", "yuvj420p")


@dataclass(frozen=True)
class WatermarkSettings:
    """Look of the visible watermark.

    ``font_scale``: font size as a fraction of the picture height (``min_font_px`` at least).
    ``opacity``: 0..1 for the whole block (text and outline).  ``tiles_x`` x ``tiles_y``: grid of
    repetitions; ``stagger`` shifts every other row by half a cell (diagonal pattern).  ``drift``:
    speed of the pattern in picture heights per second (0 = still).  ``fields``: which lines to show,
    among 'name', 'phone', 'ip', 'session', 'time' (the clock is always drawn below the others).
    ``font_path``: a font file; empty = search for a CJK font (:func:`watermark.font.find_cjk_font`).
    """

    enabled: bool = True
    font_path: str | None = None
    font_scale: float = 0.028
    min_font_px: int = 12
    opacity: float = 0.35
    tiles_x: int = 3
    tiles_y: int = 3
    stagger: bool = True
    drift: float = 0.01
    fields: tuple[str, ...] = FIELDS


class Placement(NamedTuple):
    """One patch at luma position (x, y) (even; may lie partly outside the picture)."""

    patch: Patch
    x: int
    y: int

    def box(self, width: int, height: int) -> tuple[int, int, int, int] | None:
        """Visible part (x0, y0, x1, y1) inside a width x height picture, or None."""
        x0, y0 = max(self.x, 0), max(self.y, 0)
        x1, y1 = min(self.x + self.patch.width, width), min(self.y + self.patch.height, height)
        return (x0, y0, x1, y1) if x0 < x1 and y0 < y1 else None


class _Weights(NamedTuple):
    pa: np.ndarray   # patch value * alpha256 + 128, uint16
    inv: np.ndarray  # 256 - alpha256, uint16


def _weights(value: np.ndarray, alpha: np.ndarray) -> _Weights:
    a = (alpha.astype(np.uint32) * 257 + 128) >> 8  # 0..255 -> 0..256
    pa = (value.astype(np.uint32) * a + 128).astype(np.uint16)
    return _Weights(pa=pa, inv=(256 - a).astype(np.uint16))


@functools.lru_cache(maxsize=512)
def _prepared(lines: tuple[str, ...], font_path: str, size_px: int,
              opacity: float) -> tuple[Patch, _Weights, _Weights, _Weights]:
    patch = render_patch(lines, font_path, size_px, opacity)
    return (patch, _weights(patch.y, patch.alpha), _weights(patch.u, patch.alpha_c),
            _weights(patch.v, patch.alpha_c))


def _plane_view(plane: av.video.plane.VideoPlane) -> np.ndarray:
    """Writable (height x width) uint8 view on a frame plane (honours the line stride)."""
    buf = np.frombuffer(plane, dtype=np.uint8)
    return buf[: plane.height * plane.line_size].reshape(plane.height, plane.line_size)[:, : plane.width]


def _blend(dst: np.ndarray, w: _Weights, x: int, y: int) -> None:
    """dst = (dst * (256 - a) + p * a + 128) >> 8 over the part of the patch inside dst."""
    ph, pw = w.pa.shape
    height, width = dst.shape
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + pw, width), min(y + ph, height)
    if x0 >= x1 or y0 >= y1:
        return
    region = dst[y0:y1, x0:x1]
    sy, sx = slice(y0 - y, y1 - y), slice(x0 - x, x1 - x)
    acc = region * w.inv[sy, sx]  # uint8 * uint16 -> uint16, at most 255 * 256
    acc += w.pa[sy, sx]           # <= 255 * 256 + 128: still fits in uint16
    acc >>= 8
    region[...] = acc


def copy_frame(frame: av.VideoFrame, into: av.VideoFrame | None = None) -> av.VideoFrame:
    """A frame with its own buffers, same format, size and timing: a new one, or ``into`` (same size and
    format) overwritten.  Reusing one frame per viewer saves the page faults of a fresh buffer per
    picture (about half the cost of the copy at 1080p)."""
    out = into
    if out is None or (out.width, out.height, out.format.name) != (frame.width, frame.height, frame.format.name):
        out = av.VideoFrame(frame.width, frame.height, frame.format.name)
    for src, dst in zip(frame.planes, out.planes, strict=True):
        _plane_view(dst)[...] = _plane_view(src)
    out.pts = frame.pts
    if frame.time_base is not None:
        out.time_base = frame.time_base
    return out


def _as_seconds(now: float | datetime) -> float:
    return now.timestamp() if isinstance(now, datetime) else float(now)


class Overlay:
    """One viewer's watermark; call :meth:`apply` (or the instance) on every decoded frame."""

    def __init__(self, settings: WatermarkSettings, text: WatermarkText) -> None:
        self.settings = settings
        self.text = text
        self.font_path = find_cjk_font(settings.font_path) if settings.enabled else ""
        self._static_lines = text.static_lines(settings.fields)
        self.last_boxes: list[tuple[int, int, int, int]] = []

    def font_px(self, height: int) -> int:
        return max(self.settings.min_font_px, round(height * self.settings.font_scale))

    def _patches(self, height: int, now: float | datetime) -> list[tuple[tuple[str, ...], int]]:
        """(lines, vertical offset) of each patch in the block: static lines, then the clock."""
        size = self.font_px(height)
        out: list[tuple[tuple[str, ...], int]] = []
        dy = 0
        if self._static_lines:
            out.append((self._static_lines, 0))
            dy = _prepared(self._static_lines, self.font_path, size, self.settings.opacity)[0].height
        if "time" in self.settings.fields:
            out.append(((format_time(now),), dy))
        return out

    def layout(self, width: int, height: int, now: float | datetime) -> list[Placement]:
        """Where each patch goes in a width x height picture at time ``now``."""
        return [pl for pl, _ in self._layout(width, height, now)]

    def _layout(self, width: int, height: int,
                now: float | datetime) -> list[tuple[Placement, tuple[_Weights, _Weights, _Weights]]]:
        s = self.settings
        if not s.enabled:
            return []
        size = self.font_px(height)
        parts = []
        for lines, dy in self._patches(height, now):
            patch, *weights = _prepared(lines, self.font_path, size, s.opacity)
            parts.append((patch, dy, tuple(weights)))
        if not parts:
            return []
        block_w = max(p.width for p, _, _ in parts)
        block_h = max(dy + p.height for p, dy, _ in parts)
        tx, ty = max(1, s.tiles_x), max(1, s.tiles_y)
        cw, ch = width / tx, height / ty
        t = _as_seconds(now)
        shift_x = (t * s.drift * height) % cw
        shift_y = (t * s.drift * 0.5 * height) % ch
        out = []
        for j in range(-1, ty + 1):
            for i in range(-1, tx + 1):
                x = i * cw + shift_x + (cw / 2 if s.stagger and j % 2 else 0.0) + (cw - block_w) / 2
                y = j * ch + shift_y + (ch - block_h) / 2
                bx, by = 2 * math.floor(x / 2), 2 * math.floor(y / 2)  # even: chroma aligned
                if bx >= width or by >= height or bx + block_w <= 0 or by + block_h <= 0:
                    continue
                out.extend((Placement(p, bx, by + dy), w) for p, dy, w in parts)
        return out

    def apply(self, frame: av.VideoFrame, now: float | datetime | None = None, *,
              in_place: bool = False) -> av.VideoFrame:
        """Return ``frame`` with the watermark drawn (a copy unless ``in_place``; frames that are not
        yuv420p are converted first, which also makes a new frame)."""
        if not self.settings.enabled:
            self.last_boxes = []
            return frame
        if now is None:
            now = time.time()
        if frame.format.name not in DIRECT_FORMATS:
            frame = frame.reformat(format="yuv420p")
        elif not in_place:
            frame = copy_frame(frame)
        y_plane, u_plane, v_plane = (_plane_view(p) for p in frame.planes[:3])
        width, height = frame.width, frame.height
        boxes: list[tuple[int, int, int, int]] = []
        for pl, (wy, wu, wv) in self._layout(width, height, now):
            _blend(y_plane, wy, pl.x, pl.y)
            _blend(u_plane, wu, pl.x // 2, pl.y // 2)
            _blend(v_plane, wv, pl.x // 2, pl.y // 2)
            box = pl.box(width, height)
            if box is not None:
                boxes.append(box)
        self.last_boxes = boxes
        return frame

    def __call__(self, frame: av.VideoFrame) -> av.VideoFrame:
        return self.apply(frame, time.time())


def bench(width: int, height: int, frames: int = 200, *, in_place: bool = False) -> float:
    """Milliseconds per frame of :meth:`Overlay.apply` on a synthetic width x height yuv420p picture."""
    rng = np.random.default_rng(1)
    src = av.VideoFrame.from_ndarray(
        rng.integers(16, 236, size=(height * 3 // 2, width), dtype=np.uint8), format="yuv420p")
    ov = Overlay(WatermarkSettings(), WatermarkText(display_name="张三", account="zhangsan",
                                                    phone="13812345678", client_ip="10.1.2.3",
                                                    session_code="A1B2C3"))
    t0 = 1_790_000_000.0
    ov.apply(src, t0)  # warm the caches
    start = time.perf_counter()
    for k in range(frames):
        ov.apply(src, t0 + k / 25.0, in_place=in_place)
    return (time.perf_counter() - start) * 1000.0 / frames


if __name__ == "__main__":
    for w, h in ((1280, 720), (1920, 1080)):
        print(f"{w}x{h}: copy+overlay {bench(w, h):.2f} ms/frame, "
              f"in place {bench(w, h, in_place=True):.2f} ms/frame")
