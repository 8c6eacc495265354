"""Watermark text and its rendering into ready-to-blend YUV 4:2:0 patches.

Text is drawn once with Pillow (white glyphs with a dark outline, so it reads on bright and dark
pictures), converted once to planar BT.601 limited-range Y/U/V plus alpha (alpha both at luma and at
chroma resolution), and cached by text.  The overlay then only blends integers into the frame planes.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from gbcore.timeutil import to_device_time
from watermark.font import font_face_index

FIELDS = ("name", "phone", "ip", "session", "time")


def mask_phone(phone: str | None) -> str | None:
    """Hide the middle of a phone number: ``13812345678`` -> ``138****5678``.

    Separators are dropped; a ``+86``/``86`` prefix on a 13-digit number is kept as ``+86 ``.
    Short numbers keep less: 7-10 digits keep 2 + 2, 4-6 digits keep the last 2, shorter are hidden.
    """
    if not phone:
        return None
    digits = re.sub(r"\D", "", phone)
    if not digits:
        return None
    prefix = ""
    if len(digits) == 13 and digits.startswith("86"):
        prefix, digits = "+86 ", digits[2:]
    n = len(digits)
    if n >= 11:
        head, tail = 3, 4
    elif n >= 7:
        head, tail = 2, 2
    elif n >= 4:
        head, tail = 0, 2
    else:
        head, tail = 0, 0
    return prefix + digits[:head] + "*" * (n - head - tail) + digits[n - tail:]


def format_time(now: float | datetime) -> str:
    """Wall-clock time in the device time zone (Beijing time unless ``GBOPS_DEVICE_TIMEZONE`` says
    otherwise), to the second, whatever the host's zone.  A naive datetime is taken as already local."""
    if isinstance(now, datetime) and now.tzinfo is None:
        return now.strftime("%Y-%m-%d %H:%M:%S")
    return to_device_time(now).strftime("%Y-%m-%d %H:%M:%S")


@dataclass(frozen=True, kw_only=True)
class WatermarkText:
    """What one viewer's watermark says."""

    display_name: str
    account: str
    phone: str | None = None
    client_ip: str
    session_code: str

    def name_line(self) -> str:
        if self.display_name and self.display_name != self.account:
            return f"{self.display_name} ({self.account})"
        return self.account or self.display_name

    def static_lines(self, fields: tuple[str, ...] = FIELDS) -> tuple[str, ...]:
        """Lines that do not change during a session, in ``fields`` order ('time' is skipped)."""
        lines: list[str] = []
        for field in fields:
            if field == "name":
                lines.append(self.name_line())
            elif field == "phone":
                masked = mask_phone(self.phone)
                if masked:
                    lines.append(masked)
            elif field == "ip":
                if self.client_ip:
                    lines.append(self.client_ip)
            elif field == "session":
                if self.session_code:
                    code = self.session_code.upper()
                    lines.append(code if code.startswith("#") else "#" + code)
        return tuple(line for line in lines if line)

    def lines(self, now: float | datetime, fields: tuple[str, ...] = FIELDS) -> tuple[str, ...]:
        """All lines, the clock last (when 'time' is in ``fields``)."""
        lines = self.static_lines(fields)
        return lines + (format_time(now),) if "time" in fields else lines


class Patch(NamedTuple):
    """A rendered text block: Y, alpha (h x w) and U, V, alpha_c (h/2 x w/2), all uint8; h, w even.

    ``alpha`` and ``alpha_c`` already include the opacity (0 = transparent, 255 = opaque).
    """

    y: np.ndarray
    u: np.ndarray
    v: np.ndarray
    alpha: np.ndarray
    alpha_c: np.ndarray

    @property
    def height(self) -> int:
        return self.y.shape[0]

    @property
    def width(self) -> int:
        return self.y.shape[1]


@functools.lru_cache(maxsize=32)
def load_font(font_path: str, size_px: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(font_path, size_px, index=font_face_index(font_path))


def render_rgba(lines: tuple[str, ...] | list[str], font_path: str, size_px: int) -> Image.Image:
    """Draw ``lines`` as white text with a dark outline on a transparent RGBA image (even size)."""
    font = load_font(font_path, size_px)
    stroke = max(1, round(size_px / 14))
    pad = stroke + 1
    ascent, descent = font.getmetrics()
    line_h = ascent + descent + 2 * stroke
    gap = max(1, size_px // 6)
    widths = [int(font.getlength(line)) + 2 * stroke for line in lines] or [0]
    w = max(widths) + 2 * pad
    h = len(lines) * line_h + max(0, len(lines) - 1) * gap + 2 * pad
    w += w & 1
    h += h & 1
    # Coverage masks: outline+glyph (where anything is drawn) and glyph alone (what is white).
    cover = Image.new("L", (w, h), 0)
    glyph = Image.new("L", (w, h), 0)
    dc, dg = ImageDraw.Draw(cover), ImageDraw.Draw(glyph)
    for i, line in enumerate(lines):
        xy = (pad + stroke, pad + stroke + i * (line_h + gap))
        dc.text(xy, line, font=font, fill=255, stroke_width=stroke, stroke_fill=255)
        dg.text(xy, line, font=font, fill=255)
    a = np.asarray(cover, dtype=np.float32)
    g = np.minimum(np.asarray(glyph, dtype=np.float32), a)
    # White over black, weighted by coverage: straight (non-premultiplied) grey level = g / a.
    grey = np.where(a > 0, 255.0 * g / np.maximum(a, 1.0), 0.0)
    rgba = np.empty((h, w, 4), dtype=np.uint8)
    rgba[..., 0] = rgba[..., 1] = rgba[..., 2] = np.rint(grey).astype(np.uint8)
    rgba[..., 3] = a.astype(np.uint8)
    return Image.fromarray(rgba, "RGBA")


def rgba_to_patch(rgba: np.ndarray, opacity: float) -> Patch:
    """Convert an RGBA image (h x w x 4, even h and w) to BT.601 limited-range 4:2:0 planes + alpha."""
    h, w = rgba.shape[:2]
    if h & 1 or w & 1:
        raise ValueError("patch height and width must be even")
    rgb = rgba[..., :3].astype(np.float32)
    a = rgba[..., 3].astype(np.float32) * float(min(max(opacity, 0.0), 1.0))
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = 16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0
    u = 128.0 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255.0
    v = 128.0 + (112.0 * r - 93.786 * g - 18.214 * b) / 255.0

    def pool(x: np.ndarray) -> np.ndarray:  # sum over each 2x2 block
        return x.reshape(h // 2, 2, w // 2, 2).sum(axis=(1, 3))

    a_sum = pool(a)
    safe = np.maximum(a_sum, 1e-6)
    # Chroma of a block = alpha-weighted mean of its four pixels; neutral where nothing is drawn.
    u_c = np.where(a_sum > 0, pool(u * a) / safe, 128.0)
    v_c = np.where(a_sum > 0, pool(v * a) / safe, 128.0)

    def u8(x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.clip(np.rint(x), 0, 255).astype(np.uint8))

    return Patch(y=u8(y), u=u8(u_c), v=u8(v_c), alpha=u8(a), alpha_c=u8(a_sum / 4.0))


@functools.lru_cache(maxsize=512)
def _render_cached(lines: tuple[str, ...], font_path: str, size_px: int, opacity: float) -> Patch:
    patch = rgba_to_patch(np.asarray(render_rgba(lines, font_path, size_px)), opacity)
    for arr in patch:
        arr.setflags(write=False)  # shared between viewers through the cache
    return patch


def render_patch(lines: tuple[str, ...] | list[str], font_path: str, size_px: int,
                 opacity: float = 0.35) -> Patch:
    """Rendered (Y, U, V, alpha, alpha_c) patch for ``lines``; cached by text, font, size and opacity."""
    return _render_cached(tuple(lines), str(font_path), int(size_px), round(float(opacity), 4))
