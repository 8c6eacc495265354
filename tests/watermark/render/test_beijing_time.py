"""The watermark clock, exports and ``gbops watermark inspect`` show Beijing time on a UTC host."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime

import av
import numpy as np
import pytest

from gbcore import timeutil
from tests.outputs._media import encode_access_units
from watermark.export import export_mp4
from watermark.font import find_cjk_font
from watermark.inspect import _local
from watermark.overlay import Overlay, WatermarkSettings
from watermark.render import WatermarkText, format_time, render_patch
from watermark.tag import SessionTag, load_or_create_key

NOW = 1_790_000_000.0  # 2026-09-21 14:13:20 UTC
BEIJING = "2026-09-21 22:13:20"
UTC_TEXT = "2026-09-21 14:13:20"
TEXT = WatermarkText(display_name="张三", account="zhangsan", client_ip="10.1.2.3", session_code="AB12CD34")


@pytest.fixture
def utc_host(utc_host):  # noqa: F811 - the shared one (tests/conftest.py), checked here on a known instant
    assert time.strftime("%H:%M:%S", time.localtime(NOW)) == "14:13:20"  # the host really is UTC
    yield


@pytest.fixture(scope="module")
def look() -> WatermarkSettings:
    return WatermarkSettings(font_path=find_cjk_font(), drift=0.0)


def test_clock_text_is_beijing_time(utc_host):
    assert format_time(NOW) == BEIJING
    assert format_time(datetime.fromtimestamp(NOW, UTC)) == BEIJING  # an aware datetime is converted
    assert format_time(datetime(2026, 9, 21, 22, 13, 20)) == BEIJING  # a naive one is taken as local
    assert TEXT.lines(NOW)[-1] == BEIJING


def test_clock_follows_the_device_timezone_setting(utc_host):
    try:
        timeutil.set_device_timezone("Asia/Tokyo")
        assert format_time(NOW) == "2026-09-21 23:13:20"
    finally:
        timeutil.set_device_timezone(timeutil.DEFAULT_TIMEZONE)
    assert format_time(NOW) == BEIJING


def test_rendered_watermark_draws_beijing_time(utc_host, look):
    """What a live viewer's overlay draws at ``NOW``: the clock patch is the Beijing text's."""
    overlay = Overlay(look, TEXT)
    size = overlay.font_px(360)
    beijing = render_patch((BEIJING,), overlay.font_path, size, look.opacity)
    utc = render_patch((UTC_TEXT,), overlay.font_path, size, look.opacity)
    patches = [pl.patch for pl in overlay.layout(640, 360, NOW)]
    assert any(p is beijing for p in patches)
    assert not any(p is utc for p in patches)


def _luma(frame: av.VideoFrame) -> np.ndarray:
    return frame.to_ndarray(format="yuv420p")[: frame.height].astype(np.float64)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def test_export_draws_its_start_time_in_beijing_time(utc_host, look, tmp_path):
    src = encode_access_units("h264", frames=10, width=640, height=360, gop=10)
    tag = SessionTag("dl-beijing", 1, "34020000001320000001", int(NOW * 1000))
    result = export_mp4(src, tmp_path / "clip.mp4", text=TEXT, settings=look, tag=tag,
                        key=load_or_create_key(tmp_path / "data"), start_time=NOW, fps=25.0, crf=16)
    assert result.start_time == NOW
    with av.open(str(result.path)) as c:
        out = _luma(next(c.decode(video=0)))
    ctx = av.CodecContext.create("h264", "r")
    source = next(f for au in src for f in ctx.decode(av.Packet(au.data)))
    overlay = Overlay(look, TEXT)
    # what the first picture would show with either clock (naive datetimes are drawn as they are)
    ref_bj = _luma(overlay.apply(source, datetime(2026, 9, 21, 22, 13, 20)))
    ref_utc = _luma(overlay.apply(source, datetime(2026, 9, 21, 14, 13, 20)))
    differs = np.abs(ref_bj - ref_utc) > 8  # where the two clocks' glyphs differ
    assert differs.mean() > 0.001
    assert _psnr(out[differs], ref_bj[differs]) > 30
    assert _psnr(out[differs], ref_bj[differs]) > _psnr(out[differs], ref_utc[differs]) + 10


def test_inspect_prints_the_session_start_in_beijing_time(utc_host):
    assert _local(int(NOW * 1000)) == "2026-09-21T22:13:20.000+08:00"
