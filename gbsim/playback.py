"""History video for the simulator: pictures of the recording's own time, and a per-call encoder.

:class:`HistoryPattern`
    The test pattern (:class:`gbsim.media.TestPattern`) showing the *content* time instead of the wall
    clock: ``HH:MM:SS.mmm`` at the top and the date (``YYYY-MM-DD``) under it, both Beijing time; and a
    machine-readable **time code** in a band of its own at the bottom of the picture.

Time code
    The bottom sixth of the picture (rows ``10/12 .. 12/12`` of the height) is a grid of 2 rows x 22
    columns of cells, each black (Y 16) or white (Y 235), chroma neutral.  Columns 0 and 21 are sync
    cells (top left white, bottom left black, top right black, bottom right white) that give the reader
    its black and white levels; the 40 cells between them, row by row, carry the Unix second of the
    content (32 bits, most significant first) and a CRC-8 (polynomial 0x07) of its four bytes.  Cells
    are fractions of the picture (about 15x15 pixels at 320x180), so the code survives scaling and H.264
    at low bit rates, and :func:`read_time_code` samples the middle of each cell with a median, so the
    platform's watermark (translucent text tiled over the whole picture, see watermark/overlay.py) drawn
    across the band does not flip a bit.  The clock text sits at the top, the date under it.

:class:`HistoryEncoder`
    A :class:`~gbsim.media.ClockEncoder` of its own for one history call (each call shows its own
    timeline): frames at ``fps * scale`` per wall second (at most ``max_fps``; beyond that every k-th
    picture, so the content still runs ``scale`` times real time), natural 90 kHz timestamps (the
    content offset from the window start, like real devices: speed does not scale them; a seek jumps
    them), an IDR at the start, after a seek and after a gap.  :meth:`HistoryEncoder.control` applies a
    :class:`~gbsim.records.PlaybackControl` (pause / resume / seek / scale).  At the end of the window
    (or of the recordings) it stops and calls *on_finished* on the subscriber's loop, after the last
    frame, so the device can send MediaStatus 121.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from gbcore.timeutil import to_device_time
from gbsim.media import _MASK33, ClockEncoder, EncodedFrame, Subscription, TestPattern, _glyph
from gbsim.records import HistoryWindow, PlaybackControl, RecordStore
from media_relay.types import AccessUnit

CODE_COLS = 22
CODE_ROWS = 2
CODE_TOP = 10 / 12  # the band starts at this fraction of the height and runs to the bottom
_WHITE, _BLACK = 235, 16
_SYNC = {(0, 0): 1, (1, 0): 0, (0, CODE_COLS - 1): 0, (1, CODE_COLS - 1): 1}  # (row, col) -> bit
_DATA_CELLS = [(r, c) for r in range(CODE_ROWS) for c in range(1, CODE_COLS - 1)]  # 40 cells
_MIN_CONTRAST = 48


def crc8(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def _code_bits(value: int) -> list[int]:
    raw = (value & 0xFFFFFFFF).to_bytes(4, "big")
    word = int.from_bytes(raw + bytes([crc8(raw)]), "big")
    return [(word >> (39 - i)) & 1 for i in range(40)]


def _cell(width: int, height: int, row: int, col: int) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of a cell in a width x height picture."""
    band = height * CODE_TOP
    row_h = (height - band) / CODE_ROWS
    y0 = round(band + row * row_h)
    y1 = round(band + (row + 1) * row_h)
    x0 = round(col * width / CODE_COLS)
    x1 = round((col + 1) * width / CODE_COLS)
    return y0, y1, x0, x1


def draw_time_code(y: np.ndarray, value: int, u: np.ndarray | None = None, v: np.ndarray | None = None) -> None:
    """Draw the time code of Unix second *value* into luma plane *y* (and neutral chroma into *u*, *v*)."""
    height, width = y.shape
    bits = dict(_SYNC)
    bits.update(zip(_DATA_CELLS, _code_bits(value), strict=True))
    for (row, col), bit in bits.items():
        y0, y1, x0, x1 = _cell(width, height, row, col)
        y[y0:y1, x0:x1] = _WHITE if bit else _BLACK
    top = round(height * CODE_TOP) // 2
    for plane in (u, v):
        if plane is not None:
            plane[top:, :] = 128


def _luma(frame: Any) -> np.ndarray:
    if isinstance(frame, np.ndarray):
        if frame.ndim != 2:
            raise ValueError("read_time_code wants the luma plane (a 2-D array) or a video frame")
        return frame
    if frame.format.name not in ("yuv420p", "yuvj420p", "yuv422p", "yuv444p", "nv12", "gray"):
        frame = frame.reformat(format="yuv420p")
    plane = frame.planes[0]
    data = np.frombuffer(plane, dtype=np.uint8).reshape(plane.height, plane.line_size)
    return data[:, :plane.width]


def read_time_code(frame: Any) -> int | None:
    """The Unix second drawn by :func:`draw_time_code` into a picture (a luma plane as a 2-D uint8 array,
    or a PyAV ``VideoFrame``), scaled or encoded; None when there is no readable code."""
    y = _luma(frame)
    height, width = y.shape
    if height < CODE_ROWS * 4 * 6 or width < CODE_COLS * 4:
        return None

    def level(row: int, col: int) -> float:
        y0, y1, x0, x1 = _cell(width, height, row, col)
        dy, dx = max(1, (y1 - y0) // 4), max(1, (x1 - x0) // 4)
        return float(np.median(y[y0 + dy:y1 - dy, x0 + dx:x1 - dx]))

    whites = [level(r, c) for (r, c), bit in _SYNC.items() if bit]
    blacks = [level(r, c) for (r, c), bit in _SYNC.items() if not bit]
    if min(whites) - max(blacks) < _MIN_CONTRAST:
        return None
    threshold = (sum(whites) / len(whites) + sum(blacks) / len(blacks)) / 2
    word = 0
    for cell in _DATA_CELLS:
        word = (word << 1) | (1 if level(*cell) > threshold else 0)
    raw = (word >> 8).to_bytes(4, "big")
    if crc8(raw) != word & 0xFF:
        return None
    return int.from_bytes(raw, "big")


# ================================================================================================ picture
def _draw_text(y: np.ndarray, text: str, x: int, top: int, height: int) -> None:
    gap = max(2, height // 9)
    for ch in text:
        g = _glyph(ch, height)
        gw = min(g.shape[1], y.shape[1] - x)
        rows = min(height, y.shape[0] - top)
        if gw <= 0 or rows <= 0:
            return
        y[top:top + rows, x:x + gw][g[:rows, :gw]] = _WHITE
        x += g.shape[1] + gap


def _text_width(text: str, height: int) -> int:
    gap = max(2, height // 9)
    return sum(_glyph(c, height).shape[1] + gap for c in text) - gap


class HistoryPattern(TestPattern):
    """The picture of a recording: see the module docstring.  ``render(index, content)`` with *content*
    the content time (Unix seconds, float)."""

    __test__ = False

    def __init__(self, width: int, height: int, label: str | None = None) -> None:
        super().__init__(width, height, label)
        date_h = max(10, self.clock_height * 2 // 3) // 2 * 2
        while date_h > 10 and _text_width("0000-00-00", date_h) > width * 9 // 10:
            date_h -= 2
        self.date_height = date_h
        self._date_y = self._clock_y + self.clock_height + 2 * self._pad + 2
        self._date_x = max(0, (width - _text_width("0000-00-00", date_h)) // 2)

    def render(self, index: int, wall: float) -> np.ndarray:
        buf = super().render(index, wall)
        y, u, v = self._planes(self._buf)
        local = to_device_time(math.floor(wall))
        pad = max(2, self.date_height // 8)
        y0, y1 = self._date_y, min(self.height, self._date_y + self.date_height + 2 * pad)
        x1 = min(self.width, self._date_x + _text_width("0000-00-00", self.date_height) + 2 * pad)
        y[y0:y1, self._date_x:x1] = _BLACK
        u[y0 // 2:(y1 + 1) // 2, self._date_x // 2:(x1 + 1) // 2] = 128
        v[y0 // 2:(y1 + 1) // 2, self._date_x // 2:(x1 + 1) // 2] = 128
        _draw_text(y, f"{local:%Y-%m-%d}", self._date_x + pad, y0 + pad, self.date_height)
        draw_time_code(y, math.floor(wall), u, v)
        return buf


# ================================================================================================ encoder
class HistoryEncoder(ClockEncoder):
    """One history call's encoder; see the module docstring.  *store* says where content exists,
    *window* what was asked for; *wall* is the clock that caps the store (nothing exists after now)."""

    def __init__(self, store: RecordStore, window: HistoryWindow, codec: str = "h264", width: int = 640,
                 height: int = 360, fps: int = 25, bitrate: int = 1_000_000, *, max_fps: int = 100,
                 on_finished: Callable[[], None] | None = None, wall: Callable[[], float] = time.time,
                 label: str | None = None) -> None:
        super().__init__(codec, width, height, fps, bitrate, label=label)
        self.store = store
        self.window = window
        self.max_fps = max(1, max_fps)
        self.on_finished = on_finished
        self.wall = wall
        self._cond = threading.Condition()
        self.position = 0.0  # content seconds from the window start of the next picture
        self.scale = float(window.speed) if window.kind == "download" else 1.0
        self.paused = False
        self.finished = False
        self.content_times: list[int] = []  # Unix second of every picture sent (tests)
        self._gen = 0  # bumped by every control: the thread re-anchors its pacing
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ control (any thread)
    def subscribe(self, callback: Callable[[EncodedFrame], None],
                  loop: asyncio.AbstractEventLoop | None = None) -> Subscription:
        if loop is not None:
            self._loop = loop
        if self.finished:  # the window was sent already: nothing more to start
            sub = Subscription(callback, loop)
            return sub
        return super().subscribe(callback, loop)

    def control(self, ctl: PlaybackControl) -> None:
        with self._cond:
            if ctl.action == "pause":
                self.paused = True
            elif ctl.action == "resume":
                self.paused = False
            elif ctl.action == "seek" and ctl.position is not None:
                self.position = max(0.0, min(float(ctl.position), float(self.window.seconds)))
                self.paused = False
                self._want_idr = True
            if ctl.scale is not None:
                self.scale = float(ctl.scale)
            self._gen += 1
            self._cond.notify_all()

    def stop_now(self) -> None:
        with self._cond:
            if self._stop is not None:
                self._stop.set()
            self._cond.notify_all()

    # ------------------------------------------------------------------ the thread
    def _finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        cb, loop = self.on_finished, self._loop
        if cb is None:
            return
        if loop is None:
            cb()
            return
        try:
            loop.call_soon_threadsafe(cb)
        except RuntimeError:
            pass

    def _encode_loop(self, stop: threading.Event) -> None:
        from av import VideoFrame
        from av.video.frame import PictureType

        from media_relay.ps import PsMuxer

        ctx = self._open()
        pattern = HistoryPattern(self.width, self.height, self.label)
        muxer = PsMuxer(self.codec)
        start, length = self.window.start, float(self.window.seconds)
        n = 0
        gen = -1
        anchor_wall = anchor_pos = 0.0
        self._want_idr = True
        while not stop.is_set():
            with self._cond:
                if self.paused:
                    self._cond.wait(0.2)
                    continue
                if gen != self._gen:
                    gen = self._gen
                    anchor_wall, anchor_pos = time.monotonic(), self.position
                pos, scale = self.position, self.scale
                # Skip what was not recorded (a gap): the next file starts with a keyframe.
                nxt = self.store.next_recorded(start + pos, self.wall())
                if pos >= length or nxt is None or nxt >= start + length:
                    break
                if nxt > start + pos:
                    pos = self.position = nxt - start
                    anchor_wall, anchor_pos = time.monotonic(), pos
                    self._want_idr = True
                delay = anchor_wall + (pos - anchor_pos) / scale - time.monotonic()
                if delay > 0:
                    self._cond.wait(min(delay, 0.2))
                    continue  # woken early (a control) or on time: look again
                if delay < -1.0:  # fell behind (CPU starved): keep going from here, do not burst
                    anchor_wall, anchor_pos = time.monotonic(), pos
                want_idr, self._want_idr = self._want_idr, False
            content = start + pos
            frame = VideoFrame.from_ndarray(pattern.render(n, content), format="yuv420p")
            frame.pts = n
            if want_idr:
                frame.pict_type = PictureType.I
            pts = round(pos * 90000) & _MASK33
            for packet in ctx.encode(frame):
                data = bytes(packet)
                if not data:
                    continue
                keyframe = bool(packet.is_keyframe)
                if keyframe:
                    self.keyframes += 1
                au = AccessUnit("video", self.codec, data, pts=pts, dts=pts, keyframe=keyframe)
                self.frames += 1
                self.bytes_out += len(data)
                self.content_times.append(math.floor(content))
                self._deliver(EncodedFrame(au, muxer.mux(au), int(content * 1000), n))
            n += 1
            step = max(1, math.ceil(self.fps * scale / self.max_fps)) / self.fps
            with self._cond:
                if gen == self._gen:
                    self.position = pos + step
        else:
            return  # stopped from outside (BYE): no MediaStatus
        self._finish()
