"""The live picture of a dome that was moved: what its camera sees at its pan/tilt/zoom.

:class:`PtzPattern`
    The :class:`~gbsim.media.TestPattern` layout with the colour bars replaced by a *view* of a panorama
    all around the dome: eight colour sectors of 45 degrees of pan, a black grid line every 10 degrees of
    pan and tilt, each sector a little brighter towards its right edge, darker ground below the horizon (tilt 0).  The field of view is 60 degrees wide at zoom 1
    and narrows with the zoom, so panning shifts the picture sideways, tilting shifts it up or down and
    zooming magnifies it.  The wall clock stays on top; the bottom third shows the last called preset
    number (three digits, ``---`` for none) and, in the bottom sixth, a machine-readable **PTZ code**
    (the time-code cells of :mod:`gbsim.playback`, CRC-checked) packing pan (whole degrees), tilt, zoom
    (half steps), preset and moving, which :func:`read_ptz_code` reads back from a decoded frame.

:class:`PtzEncoder`
    A :class:`~gbsim.media.ClockEncoder` of one dome channel drawing that picture from its
    :class:`~gbsim.ptz.PtzState` (read in the encoder thread through :meth:`~gbsim.ptz.PtzState.view`).
    Channels nobody moved keep streaming the shared encoder, so fleets stay cheap.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from gbsim.media import _BARS, ClockEncoder, TestPattern, _glyph
from gbsim.playback import CODE_TOP, draw_time_code, read_time_code
from gbsim.ptz import TILT_MIN, PtzState, PtzView

FOV_DEG = 60.0  # horizontal field of view at zoom 1
_BLACK, _WHITE = 16, 235
_BAR_Y = np.array([b[0] for b in _BARS], dtype=np.float32)
_BAR_U = np.array([b[1] for b in _BARS], dtype=np.uint8)
_BAR_V = np.array([b[2] for b in _BARS], dtype=np.uint8)


def pack_view(view: PtzView) -> int:
    """The 32-bit PTZ code of *view*: pan 9 bits, tilt + 30 7 bits, (zoom - 1) * 2 6 bits, preset 8 bits
    (0: none), moving 1 bit, 1 spare bit."""
    pan = int(round(view.pan)) % 360
    tilt = min(127, max(0, int(round(view.tilt - TILT_MIN))))
    zoom = min(63, max(0, int(round((view.zoom - 1.0) * 2))))
    preset = view.preset if view.preset is not None and 0 < view.preset < 256 else 0
    return pan << 23 | tilt << 16 | zoom << 10 | preset << 2 | int(view.moving) << 1


def unpack_view(value: int) -> PtzView:
    preset = (value >> 2) & 0xFF
    return PtzView(pan=float((value >> 23) & 0x1FF), tilt=float(((value >> 16) & 0x7F) + TILT_MIN),
                   zoom=1.0 + ((value >> 10) & 0x3F) / 2, preset=preset or None, moving=bool(value >> 1 & 1))


def read_ptz_code(frame: Any) -> PtzView | None:
    """The view drawn into a dome's picture (a luma plane or a PyAV frame, scaled or encoded), or None."""
    value = read_time_code(frame)
    return None if value is None else unpack_view(value)


class PtzPattern(TestPattern):
    """See the module docstring; *view* is called once per picture."""

    __test__ = False

    def __init__(self, width: int, height: int, view: Callable[[], PtzView], label: str | None = None) -> None:
        super().__init__(width, height, label)
        self.view = view
        self._cols = (np.arange(width, dtype=np.float64) + 0.5) / width - 0.5
        self._rows = (np.arange(self.bars_height, dtype=np.float64) + 0.5) / self.bars_height - 0.5
        code_top = round(height * CODE_TOP) // 2 * 2
        self._text_top = self.bars_height + 2
        self._text_h = max(10, code_top - self.bars_height - 4) // 2 * 2
        self.last_view: PtzView | None = None

    def draw_view(self, y: np.ndarray, u: np.ndarray, v: np.ndarray, view: PtzView) -> None:
        w, bh = self.width, self.bars_height
        hfov = FOV_DEG / max(view.zoom, 1.0)
        vfov = hfov * bh / w
        pan = (view.pan + self._cols * hfov) % 360.0
        tilt = view.tilt - self._rows * vfov
        sector = (pan // 45).astype(np.int64) % 8
        # each sector gets a little brighter towards its right edge, so no two places look alike
        shade = _BAR_Y[sector] - 12.0 + 24.0 * (pan % 45.0) / 45.0
        luma = np.broadcast_to(shade[None, :], (bh, w)).copy()
        ground = tilt < 0
        luma[ground, :] = _BLACK + (luma[ground, :] - _BLACK) * 0.55
        line_w = 2.0 * hfov / w  # two pixels, whatever the zoom
        luma[:, (pan % 10.0) < line_w] = _BLACK
        luma[(tilt % 10.0) < 2.0 * vfov / bh, :] = _BLACK
        y[:bh, :] = luma.astype(np.uint8)
        half = sector[::2]
        u[:bh // 2, :] = _BAR_U[half][None, :]
        v[:bh // 2, :] = _BAR_V[half][None, :]

    def render(self, index: int, wall: float) -> np.ndarray:
        np.copyto(self._buf, self._base)
        y, u, v = self._planes(self._buf)
        view = self.view()
        self.last_view = view
        self.draw_view(y, u, v, view)
        self._draw_clock(y, u, v, wall)
        self._draw_preset(y, u, v, view.preset)
        draw_time_code(y, pack_view(view), u, v)
        return self._buf.reshape(self.height * 3 // 2, self.width)

    def _draw_preset(self, y: np.ndarray, u: np.ndarray, v: np.ndarray, preset: int | None) -> None:
        text = "---" if preset is None else f"{preset:03d}"
        ch_h, top = self._text_h, self._text_top
        gap = max(2, ch_h // 9)
        width = sum(_glyph(c, ch_h).shape[1] + gap for c in text) - gap
        pad = max(2, ch_h // 8)
        x0 = max(0, self.width // 20) // 2 * 2
        x1 = min(self.width, x0 + width + 2 * pad)
        y1 = min(self.height, top + ch_h)
        y[top - 2:y1 + 2, x0:x1] = _BLACK
        u[(top - 2) // 2:(y1 + 3) // 2, x0 // 2:(x1 + 1) // 2] = 128
        v[(top - 2) // 2:(y1 + 3) // 2, x0 // 2:(x1 + 1) // 2] = 128
        x = x0 + pad
        for c in text:
            g = _glyph(c, ch_h)
            gw = min(g.shape[1], self.width - x)
            rows = min(ch_h, self.height - top)
            if gw <= 0 or rows <= 0:
                break
            y[top:top + rows, x:x + gw][g[:rows, :gw]] = _WHITE
            x += g.shape[1] + gap


class PtzEncoder(ClockEncoder):
    """One moved dome channel's encoder (see the module docstring).  *mono* is the clock the state's
    ``now`` values come from (the simulator's loop time)."""

    def __init__(self, state: PtzState, codec: str = "h264", width: int = 640, height: int = 360, fps: int = 25,
                 bitrate: int = 1_000_000, *, mono: Callable[[], float] = time.monotonic,
                 label: str | None = None, channel_id: str | None = None) -> None:
        super().__init__(codec, width, height, fps, bitrate, label=label)
        self.state = state
        self.mono = mono
        self.channel_id = channel_id

    def _make_pattern(self) -> PtzPattern:
        return PtzPattern(self.width, self.height, lambda: self.state.view(self.mono()), self.label)


def view_shift(before: np.ndarray, after: np.ndarray, max_shift: int | None = None) -> int:
    """How many pixels the picture content moved sideways from *before* to *after* (luma planes of the
    view area): the lag maximising the (Pearson) correlation of their column profiles (positive: moved left, as when
    the dome pans right)."""
    a = before.astype(np.float64).mean(axis=0)
    b = after.astype(np.float64).mean(axis=0)
    n = a.size
    limit = max_shift if max_shift is not None else n // 2
    best, best_lag = -math.inf, 0
    for lag in range(-limit, limit + 1):
        if lag >= 0:
            x, z = a[lag:], b[:n - lag]
        else:
            x, z = a[:n + lag], b[-lag:]
        if x.size < n // 2:
            continue
        x, z = x - x.mean(), z - z.mean()
        norm = math.sqrt(float(np.dot(x, x)) * float(np.dot(z, z)))
        score = float(np.dot(x, z)) / norm if norm > 0 else -math.inf
        if score > best:
            best, best_lag = score, lag
    return best_lag
