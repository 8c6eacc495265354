"""The machine-readable time code of history pictures (gbsim/playback.py): drawn, encoded with H.264 at a
low bit rate, decoded with PyAV, scaled and overdrawn by translucent text, and read back."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from gbcore.timeutil import to_device_time
from gbsim.media import TestPattern
from gbsim.playback import CODE_TOP, HistoryPattern, draw_time_code, read_time_code

T0 = 1_735_689_600  # 2025-01-01 08:00:00 Beijing time


def _encode_decode(frames: list[np.ndarray], width: int, height: int, bitrate: int) -> list[av.VideoFrame]:
    enc = av.CodecContext.create("libx264", "w")
    enc.width, enc.height, enc.pix_fmt = width, height, "yuv420p"
    enc.time_base = Fraction(1, 10)
    enc.bit_rate = bitrate
    enc.options = {"preset": "ultrafast", "tune": "zerolatency"}
    enc.open()
    dec = av.CodecContext.create("h264", "r")
    out: list[av.VideoFrame] = []
    for i, buf in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(buf, format="yuv420p")
        frame.pts = i
        for packet in enc.encode(frame):
            out.extend(dec.decode(packet))
    for packet in enc.encode(None):
        out.extend(dec.decode(packet))
    return out


@pytest.mark.parametrize(("width", "height", "bitrate"), [(320, 180, 80_000), (640, 360, 150_000)])
def test_time_code_survives_h264_and_scaling(width: int, height: int, bitrate: int) -> None:
    pattern = HistoryPattern(width, height)
    seconds = [T0 + k // 3 for k in range(24)] + [T0 + 86_400 * 400 + 12_345]  # and a far jump
    bufs = [pattern.render(i, s + (i % 3) / 3) .copy() for i, s in enumerate(seconds)]
    assert [read_time_code(b[:height]) for b in bufs] == seconds  # the raw pictures
    decoded = _encode_decode(bufs, width, height, bitrate)
    assert len(decoded) == len(seconds)
    assert [read_time_code(f) for f in decoded] == seconds
    for w, h in ((160, 90), (1280, 720), (width, height * 2)):  # smaller, larger, stretched
        assert [read_time_code(f.reformat(width=w, height=h)) for f in decoded[::4]] == seconds[::4]
    # A decoded frame's luma plane as an array works as well as the frame.
    y = decoded[0].to_ndarray(format="yuv420p")[:height]
    assert read_time_code(y) == seconds[0]


def test_time_code_under_translucent_text_and_noise() -> None:
    width, height = 320, 180
    rng = np.random.default_rng(3)
    y = np.full((height, width), 128, dtype=np.uint8)
    draw_time_code(y, T0 + 42)
    # Watermark-like overdraw: white strokes with a dark outline at 35 % opacity across the whole band.
    over = y.astype(np.float32)
    band = int(height * CODE_TOP)
    for row in range(band, height, 7):
        over[row:row + 2, :] = over[row:row + 2, :] * 0.65 + 235 * 0.35
        over[row + 2:row + 3, :] = over[row + 2:row + 3, :] * 0.65 + 16 * 0.35
    over += rng.normal(0, 6, over.shape)
    assert read_time_code(np.clip(over, 0, 255).astype(np.uint8)) == T0 + 42


def test_no_code_is_none_and_a_flipped_cell_is_caught() -> None:
    live = TestPattern(320, 180).render(0, T0)[:180]
    assert read_time_code(live) is None
    assert read_time_code(np.zeros((180, 320), dtype=np.uint8)) is None
    assert read_time_code(np.zeros((20, 40), dtype=np.uint8)) is None
    y = np.full((180, 320), 128, dtype=np.uint8)
    draw_time_code(y, T0)
    # Flip one data cell (row 0, column 5): the CRC rejects the code instead of giving a wrong second.
    x0, x1 = round(5 * 320 / 22), round(6 * 320 / 22)
    top = round(180 * CODE_TOP)
    y[top:top + 15, x0:x1] = 251 - y[top + 7, x0 + 3]
    assert read_time_code(y) is None
    with pytest.raises(ValueError):
        read_time_code(np.zeros((2, 3, 4), dtype=np.uint8))


def test_picture_shows_the_content_time_as_text() -> None:
    """The clock digits at the top are the content's Beijing time (compare with the live pattern's clock
    drawn for the same instant), and the date line differs between two days."""
    t = T0 + 3 * 3600 + 25 * 60 + 7  # 11:25:07 Beijing
    hist = HistoryPattern(320, 180)
    live = TestPattern(320, 180)
    a = hist.render(0, t)[:180].copy()
    b = live.render(0, t)[:180]
    rows = slice(0, hist.clock_height + 12)
    assert np.array_equal(a[rows], b[rows])  # the same clock text (the box is below it at index 0)
    other_day = hist.render(0, t + 86_400)[:180]
    date_rows = slice(hist.clock_height + 12, hist.clock_height + 12 + hist.date_height + 8)
    assert not np.array_equal(a[date_rows], other_day[date_rows])
    assert to_device_time(t).hour == 11
