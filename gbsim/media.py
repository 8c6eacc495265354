"""Real video for the device simulator: a clock test pattern, one shared encoder, RTP/PS senders.

:class:`TestPattern`
    Colour bars, a grey ramp, a moving box and the wall-clock time in Beijing time
    (:func:`gbcore.timeutil.to_device_time`; ``HH:MM:SS.mmm``, big 7-segment digits drawn straight into the
    YUV 4:2:0 planes with numpy, no fonts), so latency can be read off a screenshot.  With a ``label``
    (the device id) the bottom third is a colour band of that label's own colour (:func:`label_colour`)
    with the label's digits drawn on it, so a decoded frame proves which camera it came from.

:class:`ClockEncoder`
    Encodes that pattern with PyAV (libx264 / libx265, ``preset=ultrafast``, ``tune=zerolatency``, a
    keyframe every ``2 * fps`` frames) in its own thread at ``fps`` frames per second.  Every access
    unit carries its capture time as an SEI ``user_data_unregistered`` message (UUID
    :data:`LATENCY_SEI_UUID`, then the epoch milliseconds as ASCII digits); :func:`read_latency_sei`
    gets it back.  Each frame is muxed once into one MPEG-PS pack; subscribers get
    :class:`EncodedFrame` objects.  Encoding is CPU work, so there is ONE encoder per
    (codec, size, fps, bitrate) in a process (:func:`shared_encoder`): every simulated camera streams the
    same pictures, unless the simulator labels pictures per device (``SimConfig.label_pictures``: one
    encoder per streaming device, its id drawn in).  The thread runs while at least one subscriber is there.  A new subscriber asks for
    an IDR picture (at most one every :attr:`ClockEncoder.idr_min_interval` seconds), so a new stream
    starts within a frame or a few instead of waiting up to a whole GOP.

:class:`RtpStream`
    One call's RTP flow: its own SSRC, sequence numbers and RTP timestamps (90 kHz, a random base plus
    the access unit's PTS), one PS pack per frame split into RTP packets (payload type 96 by default,
    marker on a frame's last packet).  It starts at a keyframe.

:class:`CallMedia`
    The sockets of one call, on asyncio: UDP (send to the offered address), TCP where the device
    connects (the offer said ``a=setup:passive``) or TCP where the device listens and the platform
    connects (``a=setup:active``); RFC 4571 framing on TCP.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from gbcore.log import get_logger
from gbcore.timeutil import to_device_time
from media_relay.nal import (
    H264_SEI,
    H265_SEI_PREFIX,
    H265_SEI_SUFFIX,
    LATENCY_SEI_UUID,
    insert_before_first_slice,
    nal_type,
    sei_payloads,
    split_annexb,
    unescape_rbsp,
    user_data_sei,
)
from media_relay.types import AccessUnit

log = get_logger("gbops.sim.media")

# The capture-time SEI's UUID (LATENCY_SEI_UUID) is the NAL codec's (media_relay.nal), where the watermark path
# finds it too.

CODECS = ("h264", "h265")
_ENCODER_NAMES = {"h264": "libx264", "h265": "libx265"}
_MASK33 = (1 << 33) - 1


# ================================================================================================ picture
# BT.601 limited-range YUV of 75 % colour bars: white, yellow, cyan, green, magenta, red, blue, black.
_BARS = (
    (180, 128, 128), (162, 44, 142), (131, 156, 44), (112, 72, 58),
    (84, 184, 198), (65, 100, 212), (35, 212, 114), (16, 128, 128),
)
# Seven segments: a (top), b (top right), c (bottom right), d (bottom), e (bottom left), f (top left), g.
_SEGMENTS = {
    "0": "abcdef", "1": "bc", "2": "abdeg", "3": "abcdg", "4": "bcfg",
    "5": "acdfg", "6": "acdefg", "7": "abc", "8": "abcdefg", "9": "abcdfg", "-": "g", " ": "",
}


def _glyph(ch: str, height: int) -> np.ndarray:
    """A boolean mask (height x width) of one character of the clock: a digit, ``:`` or ``.``."""
    t = max(2, height // 9)  # stroke
    if ch in ":.":
        w = max(t * 2, height // 4)
        m = np.zeros((height, w), dtype=bool)
        x0 = (w - t) // 2
        rows = (height // 3, 2 * height // 3) if ch == ":" else (height - t,)
        for r in rows:
            r0 = min(max(r - t // 2, 0), height - t)
            m[r0:r0 + t, x0:x0 + t] = True
        return m
    w = max(t * 3, height * 5 // 9)
    m = np.zeros((height, w), dtype=bool)
    mid = (height - t) // 2
    gap = max(1, t // 3)  # a hairline between segments looks like a real display
    spans = {
        "a": (slice(0, t), slice(gap, w - gap)),
        "g": (slice(mid, mid + t), slice(gap, w - gap)),
        "d": (slice(height - t, height), slice(gap, w - gap)),
        "f": (slice(gap, mid + t // 2 - gap), slice(0, t)),
        "b": (slice(gap, mid + t // 2 - gap), slice(w - t, w)),
        "e": (slice(mid + t // 2 + gap, height - gap), slice(0, t)),
        "c": (slice(mid + t // 2 + gap, height - gap), slice(w - t, w)),
    }
    for seg in _SEGMENTS[ch]:
        m[spans[seg]] = True
    return m


def label_colour(label: str) -> tuple[int, int, int]:
    """The (Y, U, V) colour of a picture label (a device id): a hue from its SHA-256, strongly saturated,
    so that two labels' colours are told apart after lossy encoding (compare U and V)."""
    turn = int.from_bytes(hashlib.sha256(label.encode()).digest()[:2], "big") / 65536
    return 110, int(128 + 96 * math.cos(2 * math.pi * turn)), int(128 + 96 * math.sin(2 * math.pi * turn))


class TestPattern:
    """The simulator's picture: colour bars, a grey ramp, a moving box and the wall-clock time; with a
    ``label``, a band of the label's colour with its digits instead of the grey ramp.

    :meth:`render` returns one I420 buffer (``height * 3 // 2`` rows of ``width`` bytes: Y, then U, then
    V, contiguous), reused from call to call.
    """

    __test__ = False  # not a pytest class

    def __init__(self, width: int, height: int, label: str | None = None) -> None:
        if width % 2 or height % 2:
            raise ValueError("width and height must be even")
        self.width, self.height = width, height
        w, h = width, height
        self._base = np.empty(w * h * 3 // 2, dtype=np.uint8)
        y, u, v = self._planes(self._base)
        bars_h = h * 2 // 3
        bars_h -= bars_h % 2
        for i, (yy, uu, vv) in enumerate(_BARS):
            x0, x1 = w * i // 8 // 2 * 2, w * (i + 1) // 8 // 2 * 2
            y[:bars_h, x0:x1] = yy
            u[:bars_h // 2, x0 // 2:x1 // 2] = uu
            v[:bars_h // 2, x0 // 2:x1 // 2] = vv
        y[bars_h:, :] = np.linspace(16, 235, w).astype(np.uint8)[None, :]
        u[bars_h // 2:, :] = 128
        v[bars_h // 2:, :] = 128
        self._buf = np.empty_like(self._base)
        # The clock: 12 characters as tall as fits (at most a sixth of the picture) in 90 % of the width.
        text = "00:00:00.000"
        ch_h = max(10, h // 6)
        while ch_h > 10 and self._text_width(text, ch_h) > w * 9 // 10:
            ch_h -= 2
        self.clock_height = ch_h
        self._glyphs = {c: _glyph(c, ch_h) for c in "0123456789:."}
        self._pad = max(2, ch_h // 8)
        self._clock_w = self._text_width(text, ch_h)
        self._clock_x = max(0, (w - self._clock_w) // 2 - self._pad) // 2 * 2
        self._clock_y = max(0, h // 20) // 2 * 2
        self.box = max(8, h // 6) // 2 * 2
        self.bars_height = bars_h
        self.label = label
        if label is not None:
            self._draw_label(y, u, v, label)

    def label_patch(self) -> tuple[slice, slice]:
        """(rows, columns) of the luma plane showing only the label colour (left of its digits); halve
        both for the chroma planes."""
        top = self.bars_height + 2
        return slice(top, self.height - 2), slice(2, max(4, self.width // 10))

    def _draw_label(self, y: np.ndarray, u: np.ndarray, v: np.ndarray, label: str) -> None:
        w, h, top = self.width, self.height, self.bars_height
        cy, cu, cv = label_colour(label)
        y[top:, :] = cy
        u[top // 2:, :] = cu
        v[top // 2:, :] = cv
        digits = "".join(c for c in label if c.isdigit())
        if not digits:
            return
        ch_h = max(10, (h - top) * 2 // 3) // 2 * 2
        while ch_h > 10 and self._text_width(digits, ch_h) > w * 8 // 10:
            ch_h -= 2
        gap = max(2, ch_h // 9)
        x = max(w // 10 + 4, (w - self._text_width(digits, ch_h)) // 2)
        row = top + max(0, (h - top - ch_h) // 2)
        for c in digits:
            g = _glyph(c, ch_h)
            gw = min(g.shape[1], w - x)
            rows = min(ch_h, h - row)
            if gw <= 0 or rows <= 0:
                break
            y[row:row + rows, x:x + gw][g[:rows, :gw]] = 235
            x += g.shape[1] + gap

    @staticmethod
    def _text_width(text: str, height: int) -> int:
        gap = max(2, height // 9)
        return sum(_glyph(c, height).shape[1] + gap for c in text) - gap

    def _planes(self, buf: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        w, h = self.width, self.height
        n = w * h
        return (buf[:n].reshape(h, w), buf[n:n + n // 4].reshape(h // 2, w // 2),
                buf[n + n // 4:].reshape(h // 2, w // 2))

    def render(self, index: int, wall: float) -> np.ndarray:
        """Frame *index* showing wall-clock time *wall* (epoch seconds, shown in Beijing time)."""
        np.copyto(self._buf, self._base)
        y, u, v = self._planes(self._buf)
        w, h, b = self.width, self.height, self.box
        # A box bouncing left-right and up-down across the bars (period 8 s and 5 s at 25 fps); with a
        # label it stays above the label band.
        span_x = max(w - b, 2)
        span_y = max((self.bars_height if self.label is not None else h) - b, 2)
        px = abs((index * 4) % (2 * span_x) - span_x)
        py = abs((index * 3) % (2 * span_y) - span_y)
        px, py = px // 2 * 2, py // 2 * 2
        y[py:py + b, px:px + b] = 210
        u[py // 2:(py + b) // 2, px // 2:(px + b) // 2] = 16
        v[py // 2:(py + b) // 2, px // 2:(px + b) // 2] = 146
        self._draw_clock(y, u, v, wall)
        return self._buf.reshape(h * 3 // 2, w)

    def _draw_clock(self, y: np.ndarray, u: np.ndarray, v: np.ndarray, wall: float) -> None:
        ms = int(wall * 1000)
        lt = to_device_time(ms // 1000)  # Beijing time, whatever the host's zone
        text = f"{lt.hour:02d}:{lt.minute:02d}:{lt.second:02d}.{ms % 1000:03d}"
        ch_h, pad = self.clock_height, self._pad
        x0, y0 = self._clock_x, self._clock_y
        x1 = min(self.width, x0 + self._clock_w + 2 * pad)
        y1 = min(self.height, y0 + ch_h + 2 * pad)
        y[y0:y1, x0:x1] = 16
        u[y0 // 2:(y1 + 1) // 2, x0 // 2:(x1 + 1) // 2] = 128
        v[y0 // 2:(y1 + 1) // 2, x0 // 2:(x1 + 1) // 2] = 128
        gap = max(2, ch_h // 9)
        x = x0 + pad
        top = y0 + pad
        for c in text:
            g = self._glyphs[c]
            gw = min(g.shape[1], self.width - x)
            if gw <= 0:
                break
            rows = min(ch_h, self.height - top)
            region = y[top:top + rows, x:x + gw]
            region[g[:rows, :gw]] = 235
            x += g.shape[1] + gap


# ================================================================================================ SEI
def build_latency_sei(codec: str, epoch_ms: int) -> bytes:
    """An SEI NAL unit (with a 4-byte start code) carrying *epoch_ms* as ``user_data_unregistered``."""
    return b"\x00\x00\x00\x01" + user_data_sei(codec, LATENCY_SEI_UUID + str(int(epoch_ms)).encode("ascii"))


insert_sei = insert_before_first_slice  # the name the simulator's tests use


def read_latency_sei(data: bytes, codec: str) -> int | None:
    """The capture time (epoch ms) carried by an access unit from :class:`ClockEncoder`, or None."""
    sei_types = (H264_SEI,) if codec == "h264" else (H265_SEI_PREFIX, H265_SEI_SUFFIX)
    for nal in split_annexb(data):
        if nal_type(codec, nal) not in sei_types:
            continue
        for ptype, payload in sei_payloads(unescape_rbsp(nal[1 if codec == "h264" else 2:])):
            if ptype == 5 and payload[:16] == LATENCY_SEI_UUID:
                digits = payload[16:].split(b"\x00", 1)[0]
                if digits.isdigit():
                    return int(digits)
    return None


# ================================================================================================ encoder
@dataclass(frozen=True, slots=True)
class EncodedFrame:
    """One encoded picture: the access unit (Annex B, SEI included), its PS pack, its capture time."""

    au: AccessUnit
    ps: bytes
    capture_ms: int
    index: int


@dataclass(eq=False)
class Subscription:
    callback: Callable[[EncodedFrame], None]
    loop: asyncio.AbstractEventLoop | None


class ClockEncoder:
    """Encodes :class:`TestPattern` in a thread while anybody subscribes; see the module docstring.

    :meth:`subscribe` a callback (called on *loop* through ``call_soon_threadsafe``, one wake-up per loop
    and frame however many subscribers it has; with no loop, in the encoder thread); keep the returned
    :class:`Subscription` and :meth:`unsubscribe` it when done.  Counters: :attr:`frames`,
    :attr:`keyframes`, :attr:`bytes_out`, :attr:`cpu_seconds` (CPU time of the encoding thread itself;
    libx265 also works in a pool of its own threads, not counted there), :attr:`error` (why the thread
    died, if it did).
    """

    created = 0  # instances made in this process (tests assert the sharing with it)

    def __init__(self, codec: str = "h264", width: int = 640, height: int = 360, fps: int = 25,
                 bitrate: int = 1_000_000, *, gop: int | None = None, idr_min_interval: float = 0.25,
                 clock: Callable[[], float] = time.time, label: str | None = None) -> None:
        if codec not in CODECS:
            raise ValueError(f"codec must be one of {CODECS}, got {codec!r}")
        if not 1 <= fps <= 60 or bitrate <= 0:
            raise ValueError("fps must be 1..60 and bitrate > 0")
        self.codec = codec
        self.width, self.height = width, height
        self.fps = fps
        self.bitrate = bitrate
        self.gop = gop or 2 * fps
        self.idr_min_interval = idr_min_interval
        self.clock = clock
        self.label = label  # drawn into the picture (TestPattern label): the device this encoder belongs to
        self._lock = threading.Lock()
        self._subs: list[Subscription] = []
        self._thread: threading.Thread | None = None
        self._stop: threading.Event | None = None
        self._want_idr = False
        self.frames = 0
        self.keyframes = 0
        self.bytes_out = 0
        self.cpu_seconds = 0.0
        self.starts = 0
        self.error: str | None = None
        ClockEncoder.created += 1

    # ------------------------------------------------------------------ subscribers
    @property
    def subscribers(self) -> int:
        return len(self._subs)

    @property
    def running(self) -> bool:
        t = self._thread
        return t is not None and t.is_alive()

    def subscribe(self, callback: Callable[[EncodedFrame], None],
                  loop: asyncio.AbstractEventLoop | None = None) -> Subscription:
        sub = Subscription(callback, loop)
        with self._lock:
            self._subs = [*self._subs, sub]
            self._want_idr = True
            if self._stop is None or self._stop.is_set() or not self.running:  # (a failed thread too)
                self._start_thread()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            if sub not in self._subs:
                return
            self._subs = [s for s in self._subs if s is not sub]
            if not self._subs and self._stop is not None:
                self._stop.set()  # the thread ends after the frame in hand; nobody waits for it

    def request_idr(self) -> None:
        """Make the next picture an IDR (a device's IFrameCmd), within ``idr_min_interval``."""
        self._want_idr = True

    def _make_pattern(self) -> Any:
        """The picture source of the encoding thread (an object with ``render(index, wall)``)."""
        return TestPattern(self.width, self.height, self.label)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for a stopping encoder thread to end (tests); True when no thread runs."""
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout)
        return not self.running

    def _start_thread(self) -> None:
        stop = self._stop = threading.Event()
        self.starts += 1
        self._thread = threading.Thread(target=self._run, args=(stop,), daemon=True,
                                        name=f"sim-encoder-{self.codec}-{self.width}x{self.height}")
        self._thread.start()

    # ------------------------------------------------------------------ the thread
    def _open(self) -> Any:
        import av  # PyAV: imported here so the SIP-only simulator does not need it

        ctx = av.CodecContext.create(_ENCODER_NAMES[self.codec], "w")
        ctx.width, ctx.height = self.width, self.height
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = Fraction(1, self.fps)
        ctx.framerate = Fraction(self.fps, 1)
        ctx.bit_rate = self.bitrate
        ctx.gop_size = self.gop
        ctx.max_b_frames = 0
        ctx.thread_count = 1  # many small encoders are cheaper per core than one threaded one
        common = f"keyint={self.gop}:min-keyint={self.gop}:scenecut=0"
        if self.codec == "h264":
            opts = {"x264-params": f"{common}:repeat-headers=1"}
        else:
            opts = {"x265-params": f"{common}:bframes=0:repeat-headers=1:log-level=error"}
        ctx.options = {"preset": "ultrafast", "tune": "zerolatency", "forced-idr": "1", **opts}
        ctx.open()
        return ctx

    def _run(self, stop: threading.Event) -> None:
        cpu0 = time.thread_time()
        try:
            self._encode_loop(stop)
        except Exception as exc:  # a broken encoder must not take the simulator down
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("sim.encoder_failed", codec=self.codec, size=f"{self.width}x{self.height}")
        finally:
            self.cpu_seconds += time.thread_time() - cpu0

    def _encode_loop(self, stop: threading.Event) -> None:
        from av import VideoFrame
        from av.video.frame import PictureType

        from media_relay.ps import PsMuxer

        ctx = self._open()
        pattern = self._make_pattern()
        muxer = PsMuxer(self.codec)
        period = 1.0 / self.fps
        tick = 90000 // self.fps
        t0 = time.monotonic()
        n = 0
        last_idr = -1e9
        while not stop.is_set():
            delay = t0 + n * period - time.monotonic()
            if delay > 0:
                if stop.wait(delay):
                    break
            elif delay < -2 * period:  # fell behind (CPU starved): skip pictures, keep the clock
                n = int((time.monotonic() - t0) / period)
            wall = self.clock()
            frame = VideoFrame.from_ndarray(pattern.render(n, wall), format="yuv420p")
            frame.pts = n
            now = time.monotonic()
            if self._want_idr and now - last_idr >= self.idr_min_interval:
                self._want_idr = False
                frame.pict_type = PictureType.I
            capture_ms = int(wall * 1000)
            for packet in ctx.encode(frame):
                data = bytes(packet)
                if not data:
                    continue
                keyframe = bool(packet.is_keyframe)
                if keyframe:
                    last_idr = now
                    self.keyframes += 1
                data = insert_sei(data, build_latency_sei(self.codec, capture_ms), self.codec)
                pts = (packet.pts if packet.pts is not None else n) * tick & _MASK33
                au = AccessUnit("video", self.codec, data, pts=pts, dts=pts, keyframe=keyframe)
                ps = muxer.mux(au)
                self.frames += 1
                self.bytes_out += len(data)
                self._deliver(EncodedFrame(au, ps, capture_ms, n))
            n += 1

    def _deliver(self, frame: EncodedFrame) -> None:
        subs = self._subs  # replaced, never mutated: safe to read without the lock
        by_loop: dict[asyncio.AbstractEventLoop, list[Callable[[EncodedFrame], None]]] = {}
        for sub in subs:
            if sub.loop is None:
                _call(sub.callback, frame)
            else:
                by_loop.setdefault(sub.loop, []).append(sub.callback)
        for loop, callbacks in by_loop.items():
            try:
                loop.call_soon_threadsafe(_fan_out, callbacks, frame)
            except RuntimeError:  # that loop is closed: its subscribers are gone for good
                for sub in [s for s in subs if s.loop is loop]:
                    self.unsubscribe(sub)


def _call(callback: Callable[[EncodedFrame], None], frame: EncodedFrame) -> None:
    try:
        callback(frame)
    except Exception:
        log.exception("sim.frame_callback_failed")


def _fan_out(callbacks: list[Callable[[EncodedFrame], None]], frame: EncodedFrame) -> None:
    for cb in callbacks:
        _call(cb, frame)


_registry: dict[tuple[str, int, int, int, int, str | None], ClockEncoder] = {}
_registry_lock = threading.Lock()


def shared_encoder(codec: str = "h264", width: int = 640, height: int = 360, fps: int = 25,
                   bitrate: int = 1_000_000, label: str | None = None) -> ClockEncoder:
    """The process-wide encoder for these settings (made on first use, kept while the process lives;
    an idle one holds no thread and no codec).  ``label``: pictures naming a device (one encoder each)."""
    key = (codec, width, height, fps, bitrate, label)
    with _registry_lock:
        enc = _registry.get(key)
        if enc is None:
            enc = _registry[key] = ClockEncoder(codec, width, height, fps, bitrate, label=label)
        return enc


def shared_encoders() -> list[ClockEncoder]:
    with _registry_lock:
        return list(_registry.values())


# ================================================================================================ RTP
class RtpStream:
    """RTP for one call from a :class:`ClockEncoder`; *send* gets the packets of one frame as a list of
    bytes (RTP packets, without RFC 4571 framing)."""

    def __init__(self, encoder: ClockEncoder, ssrc: int, send: Callable[[list[bytes], EncodedFrame], None], *,
                 payload_type: int = 96, rng: random.Random | None = None) -> None:
        rng = rng or random.Random()
        self.encoder = encoder
        self.ssrc = ssrc & 0xFFFFFFFF
        self.payload_type = payload_type
        self.sequence = rng.randrange(0, 1 << 16)
        self.ts_base = rng.randrange(0, 1 << 32)
        self._send = send
        self._sub: Subscription | None = None
        self._synced = False
        self._last_ts: int | None = None
        self._rebase = False
        self.frames = 0
        self.packets = 0
        self.bytes = 0

    @property
    def active(self) -> bool:
        return self._sub is not None

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        if self._sub is None:
            self._sub = self.encoder.subscribe(self.on_frame, loop)

    def stop(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            self.encoder.unsubscribe(sub)

    def switch(self, encoder: ClockEncoder, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Stream from *encoder* from its next keyframe on (a dome that was moved gets pictures of its own);
        the RTP timestamps go on from the last one sent, one frame later."""
        if encoder is self.encoder:
            return
        active = self._sub is not None
        if active and loop is None:
            loop = self._sub.loop  # type: ignore[union-attr]
        self.stop()
        self.encoder = encoder
        self._synced = False
        self._rebase = self._last_ts is not None
        if active:
            self.start(loop)

    def resync(self) -> None:
        """Send nothing until the next keyframe (after frames had to be dropped)."""
        self._synced = False

    def on_frame(self, frame: EncodedFrame) -> None:
        if self._sub is None:
            return
        if not self._synced:
            if not frame.au.keyframe:
                return
            self._synced = True
        packets = self.packetize(frame)
        self.frames += 1
        self.packets += len(packets)
        self.bytes += sum(len(p) for p in packets)
        self._send(packets, frame)

    def packetize(self, frame: EncodedFrame) -> list[bytes]:
        from media_relay.rtp import packetize_ps

        if self._rebase and self._last_ts is not None:
            self._rebase = False
            step = 90000 // max(1, self.encoder.fps)
            self.ts_base = (self._last_ts + step - (frame.au.pts or 0)) & 0xFFFFFFFF
        ts = (self.ts_base + (frame.au.pts or 0)) & 0xFFFFFFFF
        self._last_ts = ts
        pkts = packetize_ps(frame.ps, ssrc=self.ssrc, sequence=self.sequence, timestamp=ts,
                            payload_type=self.payload_type)
        self.sequence = (self.sequence + len(pkts)) & 0xFFFF
        return [p.to_bytes() for p in pkts]


# ================================================================================================ calls
UDP = "udp"
TCP_CONNECT = "tcp-connect"  # offer a=setup:passive: the platform listens, the device connects
TCP_LISTEN = "tcp-listen"  # offer a=setup:active: the device listens, the platform connects

_TCP_BUFFER_LIMIT = 4 << 20  # drop frames (then resync at a keyframe) past this much unsent data
CONNECT_TIMEOUT = 5.0  # TCP where the device connects: give up (and BYE) after this long
ACCEPT_TIMEOUT = 20.0  # TCP where the platform connects: BYE when it has not within this long


class _TcpMediaProtocol(asyncio.Protocol):
    def __init__(self, media: CallMedia) -> None:
        self.media = media
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.media._tcp_made(self, transport)

    def data_received(self, data: bytes) -> None:
        pass  # RTCP or nothing: ignored

    def connection_lost(self, exc: Exception | None) -> None:
        self.media._tcp_lost(self, exc)


class CallMedia:
    """The media side of one call; used by :class:`~gbsim.runner.Simulator`.

    :meth:`bind` (at the INVITE, needs a running loop) makes the local socket and returns the port for
    the SDP answer; :meth:`start` (at the ACK) starts sending; :meth:`close` stops.  *on_end(reason)* is
    called when the media ends by itself (TCP connection refused or closed by the platform, no
    connection made in time), so the device can send BYE.
    """

    def __init__(self, encoder: ClockEncoder, *, mode: str, remote: tuple[str, int], ssrc: int,
                 local_host: str, on_end: Callable[[str], None], payload_type: int = 96,
                 rng: random.Random | None = None, connect_timeout: float | None = None,
                 accept_timeout: float | None = None) -> None:
        if mode not in (UDP, TCP_CONNECT, TCP_LISTEN):
            raise ValueError(f"unknown media mode {mode!r}")
        self.mode = mode
        self.remote = remote
        self.local_host = local_host
        self.on_end = on_end
        self.connect_timeout = CONNECT_TIMEOUT if connect_timeout is None else connect_timeout
        self.accept_timeout = ACCEPT_TIMEOUT if accept_timeout is None else accept_timeout
        self.stream = RtpStream(encoder, ssrc, self._send, payload_type=payload_type, rng=rng)
        self.sock: socket.socket | None = None  # UDP sender / TCP socket not yet handed over
        self.local_port: int | None = None
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] | None = None
        self.server: asyncio.AbstractServer | None = None
        self.acked = False
        self.closed = False
        self.dropped_frames = 0
        self._proto: _TcpMediaProtocol | None = None
        self._tasks: set[asyncio.Task] = set()
        self._serving: asyncio.Task | None = None
        self._accept_timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        from media_relay.rtp import Rfc4571Framer

        self._framer = Rfc4571Framer()

    # ------------------------------------------------------------------ set-up
    def bind(self) -> int:
        """Make the local socket (UDP sender / TCP socket to connect from / TCP listener)."""
        loop = self._loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.local_host else socket.AF_INET
        kind = socket.SOCK_DGRAM if self.mode == UDP else socket.SOCK_STREAM
        sock = socket.socket(family, kind)
        try:
            sock.setblocking(False)
            if self.mode == UDP:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
            sock.bind((self.local_host, 0))
            if self.mode == TCP_LISTEN:
                sock.listen(4)
        except OSError:
            sock.close()
            raise
        self.sock = sock
        self.local_port = sock.getsockname()[1]
        if self.mode == TCP_LISTEN:
            self.sock = None  # the _serve task owns it (never cancelled: it always closes or hands it on)
            self._serving = loop.create_task(self._serve(sock))
            self._accept_timer = loop.call_later(self.accept_timeout, self._accept_timeout)
        return self.local_port

    def start(self) -> None:
        """The call is confirmed (ACK): send from the next keyframe on."""
        if self.closed or self.acked:
            return
        self.acked = True
        if self.mode == UDP:
            self.stream.start(self._loop)
        elif self.mode == TCP_CONNECT:
            self._spawn(self._connect())
        elif self.transport is not None:  # TCP_LISTEN, the platform connected already
            self.stream.start(self._loop)

    def _spawn(self, coro: Any) -> None:
        assert self._loop is not None
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, listener: socket.socket) -> None:
        assert self._loop is not None
        try:
            server = await self._loop.create_server(lambda: _TcpMediaProtocol(self), sock=listener)
        except OSError as exc:
            listener.close()
            self._end(f"cannot listen for media: {exc}")
            return
        if self.closed or self.transport is not None:
            server.close()  # closed meanwhile, or the platform connected already
        else:
            self.server = server

    async def _connect(self) -> None:
        assert self._loop is not None and self.sock is not None
        sock, self.sock = self.sock, None  # this task owns it until a transport does
        try:
            await asyncio.wait_for(self._loop.sock_connect(sock, self.remote), self.connect_timeout)
            await self._loop.create_connection(lambda: _TcpMediaProtocol(self), sock=sock)
        except asyncio.CancelledError:
            sock.close()
            raise
        except (OSError, TimeoutError) as exc:
            sock.close()
            self._end(f"media connect to {self.remote[0]}:{self.remote[1]} failed: "
                      f"{exc or type(exc).__name__}")

    def _accept_timeout(self) -> None:
        self._accept_timer = None
        if self.transport is None:
            self._end(f"no media connection from the platform within {self.accept_timeout:g} s")

    def _tcp_made(self, proto: _TcpMediaProtocol, transport: asyncio.BaseTransport) -> None:
        if self.closed or self.transport is not None:
            transport.close()  # one connection per call; later ones are refused
            return
        self._proto = proto
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = (peer[0], peer[1]) if peer else None
        with contextlib.suppress(OSError, AttributeError):
            transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._accept_timer is not None:
            self._accept_timer.cancel()
            self._accept_timer = None
        if self.server is not None:
            self.server.close()  # stop listening; the accepted connection stays
            self.server = None
        if self.acked:
            self.stream.start(self._loop)

    def _tcp_lost(self, proto: _TcpMediaProtocol, exc: Exception | None) -> None:
        if proto is self._proto and not self.closed:
            self._end(f"media connection closed by the platform{f': {exc}' if exc else ''}")

    # ------------------------------------------------------------------ sending
    def _send(self, packets: list[bytes], frame: EncodedFrame) -> None:
        if self.closed:
            return
        if self.mode == UDP:
            sock = self.sock
            if sock is None:
                return
            for pkt in packets:
                try:
                    sock.sendto(pkt, self.remote)
                except BlockingIOError:
                    self.dropped_frames += 1
                    self.stream.resync()
                    return
                except OSError:
                    return  # unreachable for now: keep trying with the next frames
            return
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if transport.get_write_buffer_size() > _TCP_BUFFER_LIMIT:
            self.dropped_frames += 1
            self.stream.resync()
            return
        frame_ = self._framer.frame
        transport.write(b"".join(frame_(p) for p in packets))

    # ------------------------------------------------------------------ teardown
    def _end(self, reason: str) -> None:
        if self.closed:
            return
        self.close()
        self.on_end(reason)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.stream.stop()
        if self._accept_timer is not None:
            self._accept_timer.cancel()
            self._accept_timer = None
        current = asyncio.current_task() if self._loop is not None and self._loop.is_running() else None
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        if self.server is not None:
            self.server.close()
            self.server = None
        if self.transport is not None:
            self.transport.close()
            self.transport = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None
