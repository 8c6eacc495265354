"""Visible watermark: font search, text, patch rendering and the per-viewer overlay."""

from __future__ import annotations

import math

import av
import numpy as np
import pytest
from PIL import ImageFont

from watermark import font as font_mod
from watermark.font import FontMissing, find_cjk_font
from watermark.overlay import Overlay, WatermarkSettings
from watermark.render import WatermarkText, format_time, mask_phone, render_patch

NOW = 1_790_000_000.0
USER_A = WatermarkText(display_name="张三", account="zhangsan", phone="13812345678",
                       client_ip="10.1.2.3", session_code="a1b2c3")
USER_B = WatermarkText(display_name="李四", account="lisi", phone=None,
                       client_ip="192.168.40.77", session_code="9F8E7D")


@pytest.fixture(scope="module")
def font_path() -> str:
    return find_cjk_font()


def test_pattern(width: int, height: int) -> av.VideoFrame:
    """A yuv420p picture with gradients, texture and colour (decoded through libx264 is not needed)."""
    yy, xx = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(7)
    y = 16 + (xx * 150 // width + yy * 50 // height) + rng.integers(0, 20, size=(height, width))
    u = 128 + (xx[::2, ::2] * 60 // width) - 30
    v = 128 + (yy[::2, ::2] * 60 // height) - 30
    data = np.concatenate([y.ravel(), u.ravel(), v.ravel()]).astype(np.uint8)
    return av.VideoFrame.from_ndarray(data.reshape(height * 3 // 2, width), format="yuv420p")


test_pattern.__test__ = False  # a helper, not a test


def planes(frame: av.VideoFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    arr = frame.to_ndarray(format="yuv420p")
    h, w = frame.height, frame.width
    y = arr[:h].astype(np.float64)
    chroma = arr[h:].reshape(2, h // 2, w // 2).astype(np.float64)
    return y, chroma[0], chroma[1]


def box_mask(boxes, width: int, height: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    for x0, y0, x1, y1 in boxes:
        mask[y0:y1, x0:x1] = True
    return mask


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b) ** 2)) if a.size else 0.0
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def reference_blend(clean: np.ndarray, patch_value: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha.astype(np.float64) / 255.0
    return clean * (1 - a) + patch_value.astype(np.float64) * a


# ---------------------------------------------------------------- text and font
def test_phone_masking() -> None:
    assert mask_phone("13812345678") == "138****5678"
    assert mask_phone("138-1234-5678") == "138****5678"
    assert mask_phone("+86 138 1234 5678") == "+86 138****5678"
    assert mask_phone("0105551234") == "01******34"
    assert mask_phone("12345") == "***45"
    assert mask_phone("123") == "***"
    assert mask_phone(None) is None and mask_phone("") is None


def test_watermark_lines() -> None:
    lines = USER_A.lines(NOW)
    assert lines == ("张三 (zhangsan)", "138****5678", "10.1.2.3", "#A1B2C3", format_time(NOW))
    assert USER_B.static_lines() == ("李四 (lisi)", "192.168.40.77", "#9F8E7D")
    same = WatermarkText(display_name="ops", account="ops", client_ip="", session_code="#x1")
    assert same.static_lines(("name", "ip", "session")) == ("ops", "#X1")


def test_font_missing(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setattr(font_mod, "KNOWN_FONT_PATHS", (str(tmp_path / "none.ttc"),))
    monkeypatch.setattr(font_mod, "FC_MATCH", None)
    with pytest.raises(FontMissing) as err:
        find_cjk_font(str(tmp_path / "configured-but-missing.ttf"))
    msg = str(err.value)
    assert "未找到可显示中文的字体" in msg and "No Chinese (CJK) font found" in msg
    assert "apt-get install fonts-noto-cjk" in msg and "fonts-wqy-microhei" in msg
    assert msg.index("未找到") < msg.index("No Chinese")
    with pytest.raises(FontMissing):
        Overlay(WatermarkSettings(), USER_A)


def test_font_configured_path_first(font_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(font_mod, "KNOWN_FONT_PATHS", ())
    monkeypatch.setattr(font_mod, "FC_MATCH", None)
    assert find_cjk_font(font_path) == font_path


def test_chinese_renders(font_path: str) -> None:
    zhang = render_patch(["张三"], font_path, 32, 1.0)
    li = render_patch(["李四"], font_path, 32, 1.0)
    assert zhang.y.shape == zhang.alpha.shape and zhang.u.shape == zhang.alpha_c.shape
    assert zhang.u.shape == (zhang.height // 2, zhang.width // 2)
    assert (zhang.alpha > 0).sum() > 200  # ink, not an empty box
    assert zhang.alpha.shape != li.alpha.shape or not np.array_equal(zhang.alpha, li.alpha)
    # Real glyphs, not tofu: characters missing from the font all draw the same notdef box.
    tofu = render_patch(["\ue000\ue001"], font_path, 32, 1.0)
    assert zhang.alpha.shape != tofu.alpha.shape or not np.array_equal(zhang.alpha, tofu.alpha)
    # The ink sits where the font itself puts ink for these characters (same extent, +- the outline).
    font = ImageFont.truetype(font_path, 32)
    left, top, right, bottom = font.getbbox("张三")
    rows, cols = np.nonzero(zhang.alpha)
    assert abs((cols.max() - cols.min()) - (right - left)) <= 8
    assert abs((rows.max() - rows.min()) - (bottom - top)) <= 8
    # White text (high luma where opaque) with a dark outline (low luma where opaque, too).
    opaque = zhang.alpha == 255
    assert zhang.y[opaque].max() >= 230 and zhang.y[opaque].min() <= 30
    # Opacity scales alpha only.
    faint = render_patch(["张三"], font_path, 32, 0.35)
    assert faint.alpha.max() == round(255 * 0.35)
    assert render_patch(["张三"], font_path, 32, 1.0) is zhang  # cached


# ---------------------------------------------------------------- overlay
def test_two_viewers_differ_only_in_text_boxes() -> None:
    w, h = 1280, 720
    clean = test_pattern(w, h)
    ov_a = Overlay(WatermarkSettings(), USER_A)
    ov_b = Overlay(WatermarkSettings(), USER_B)
    fa, fb = ov_a.apply(clean, NOW), ov_b.apply(clean, NOW)
    assert fa is not clean and fb is not clean
    assert len(ov_a.last_boxes) >= 9 * 2  # static block + clock, at least a 3 x 3 grid
    cy, cu, cv = planes(clean)
    assert psnr(cy, planes(test_pattern(w, h))[0]) == math.inf  # the clean frame was not touched
    union = box_mask(ov_a.last_boxes + ov_b.last_boxes, w, h)
    union_c = union.reshape(h // 2, 2, w // 2, 2).any(axis=(1, 3))
    for frame in (fa, fb):
        y, u, v = planes(frame)
        outside = [psnr(y[~union], cy[~union]), psnr(u[~union_c], cu[~union_c]),
                   psnr(v[~union_c], cv[~union_c])]
        assert min(outside) > 35, outside
        assert outside == [math.inf] * 3  # nothing at all is drawn outside the boxes
        assert psnr(y[union], cy[union]) < 30  # and the boxes themselves are visibly changed
    ya, yb = planes(fa)[0], planes(fb)[0]
    assert np.mean(np.abs(ya[union] - yb[union])) > 3


def test_each_viewer_gets_own_text(font_path: str) -> None:
    w, h = 1280, 720
    clean = test_pattern(w, h)
    cy = planes(clean)[0]
    settings = WatermarkSettings()
    ov_a = Overlay(settings, USER_A)
    fa_y = planes(ov_a.apply(clean, NOW))[0]
    size = ov_a.font_px(h)
    expected_a = render_patch(USER_A.static_lines(), font_path, size, settings.opacity)
    expected_b = render_patch(USER_B.static_lines(), font_path, size, settings.opacity)
    # The static blocks fully inside the picture.
    inside = [pl for pl in ov_a.layout(w, h, NOW) if pl.patch.height == expected_a.height
              and pl.x >= 0 and pl.y >= 0 and pl.x + pl.patch.width <= w and pl.y + pl.patch.height <= h]
    assert len(inside) >= 6
    for pl in inside:
        region = fa_y[pl.y:pl.y + expected_a.height, pl.x:pl.x + expected_a.width]
        clean_region = cy[pl.y:pl.y + expected_a.height, pl.x:pl.x + expected_a.width]
        want_a = reference_blend(clean_region, expected_a.y, expected_a.alpha)
        assert np.max(np.abs(region - want_a)) <= 1.5
        # B's patch blended at the same place does not match.
        bh, bw = min(expected_b.height, region.shape[0]), min(expected_b.width, region.shape[1])
        want_b = reference_blend(clean_region[:bh, :bw], expected_b.y[:bh, :bw], expected_b.alpha[:bh, :bw])
        assert np.mean(np.abs(region[:bh, :bw] - want_b)) > 2
        assert np.max(np.abs(region[:bh, :bw] - want_b)) > 30


def test_clock_and_drift_move_with_time() -> None:
    ov = Overlay(WatermarkSettings(), USER_A)
    clean = test_pattern(640, 360)
    a = planes(ov.apply(clean, NOW))[0]
    boxes_a = list(ov.last_boxes)
    b = planes(ov.apply(clean, NOW + 10))[0]
    assert boxes_a != ov.last_boxes and not np.array_equal(a, b)
    still = Overlay(WatermarkSettings(drift=0.0), USER_A)
    s1 = planes(still.apply(clean, NOW))[0]
    boxes_s = list(still.last_boxes)
    s2 = planes(still.apply(clean, NOW + 1))[0]
    assert boxes_s == still.last_boxes and not np.array_equal(s1, s2)  # only the clock changed


def test_other_formats_and_disabled() -> None:
    ov = Overlay(WatermarkSettings(), USER_A)
    rgb = test_pattern(320, 240).reformat(format="rgb24")
    out = ov.apply(rgb, NOW)
    assert out.format.name == "yuv420p" and ov.last_boxes
    nv12 = test_pattern(320, 240).reformat(format="nv12")
    assert ov.apply(nv12, NOW).format.name == "yuv420p"
    off = Overlay(WatermarkSettings(enabled=False), USER_A)
    frame = test_pattern(320, 240)
    assert off.apply(frame, NOW) is frame and off.last_boxes == []
    # In place: the caller's frame is written.
    frame2 = test_pattern(320, 240)
    assert ov.apply(frame2, NOW, in_place=True) is frame2
    assert not np.array_equal(planes(frame2)[0], planes(test_pattern(320, 240))[0])


def _x264_roundtrip(frames: list[av.VideoFrame]) -> list[av.VideoFrame]:
    enc = av.CodecContext.create("libx264", "w")
    enc.width, enc.height, enc.pix_fmt = frames[0].width, frames[0].height, "yuv420p"
    enc.time_base = __import__("fractions").Fraction(1, 25)
    enc.options = {"preset": "ultrafast", "tune": "zerolatency", "crf": "23"}
    packets = []
    for i, f in enumerate(frames):
        f.pts = i
        packets += enc.encode(f)
    packets += enc.encode(None)
    dec = av.CodecContext.create("h264", "r")
    out: list[av.VideoFrame] = []
    for p in packets:
        out += dec.decode(p)
    out += dec.decode(None)
    return out


def test_overlay_survives_x264() -> None:
    w, h = 640, 360
    clean = test_pattern(w, h)
    ov = Overlay(WatermarkSettings(), USER_A)
    marked = [ov.apply(clean, NOW) for _ in range(3)]
    boxes = ov.last_boxes
    dec_clean = _x264_roundtrip([test_pattern(w, h) for _ in range(3)])[-1]
    dec_marked = _x264_roundtrip(marked)[-1]
    cy, my = planes(dec_clean)[0], planes(dec_marked)[0]
    ref_y = planes(marked[-1])[0]
    mask = box_mask(boxes, w, h)
    diff_in = np.mean(np.abs(my[mask] - cy[mask]))
    assert diff_in > 4, diff_in  # the text is still clearly there after compression
    # ...and the decoded watermark is close to what was drawn.
    assert psnr(my[mask], ref_y[mask]) > 25
    assert np.mean(np.abs(my[~mask] - cy[~mask])) < diff_in / 3
