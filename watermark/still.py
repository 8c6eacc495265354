"""The viewer's visible watermark on a still picture (ticket snapshots: video evidence too, issue 11).

The same text as on a live view (:class:`watermark.render.WatermarkText`: name and account, masked phone,
client IP, a session code, the time in Beijing time), drawn with the same renderer and CJK font
(:func:`watermark.render.render_rgba`), tiled over the whole picture so that a crop still carries it.
"""

from __future__ import annotations

import io
import time

from PIL import Image

from watermark.render import WatermarkText, render_rgba

__all__ = ["watermark_still"]

#: How opaque the drawn text is (the live default is of the same order).
OPACITY = 0.45


def watermark_still(data: bytes, text: WatermarkText, *, font_path: str, scale: float = 0.028,
                    now: float | None = None) -> tuple[bytes, str]:
    """``data`` (a JPEG or PNG image) with ``text`` drawn over it, tiled; returns (image bytes, media type):
    the same format as the input."""
    with Image.open(io.BytesIO(data)) as src:
        fmt = "PNG" if src.format == "PNG" else "JPEG"
        picture = src.convert("RGB")
    w, h = picture.size
    size_px = max(12, round(h * scale * 1.4))
    patch = render_rgba(text.lines(time.time() if now is None else now), font_path, size_px)
    alpha = patch.getchannel("A").point(lambda a: int(a * OPACITY))
    patch.putalpha(alpha)
    step_x = patch.width + max(size_px * 3, w // 8)
    step_y = patch.height + max(size_px * 2, h // 8)
    for row, y in enumerate(range(size_px // 2, max(h, 1), step_y)):
        offset = (row % 2) * (step_x // 2) - step_x // 2
        for x in range(offset, w, step_x):
            picture.paste(patch, (x, y), patch)
    out = io.BytesIO()
    if fmt == "PNG":
        picture.save(out, "PNG", optimize=False)
        return out.getvalue(), "image/png"
    picture.save(out, "JPEG", quality=90)
    return out.getvalue(), "image/jpeg"
