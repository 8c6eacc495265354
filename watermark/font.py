"""Locate a font that can draw Simplified Chinese for the visible watermark.

Search order: the configured path, the files of the Debian packages we document
(``fonts-noto-cjk``, ``fonts-wqy-microhei``, ``fonts-wqy-zenhei``), then fontconfig
(``fc-match :lang=zh-cn``, accepted only when the match really covers zh-cn).  When nothing is
found :class:`FontMissing` says so in Chinese and English, with the package to install.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

log = logging.getLogger("gbops.watermark.font")

# Debian/Ubuntu locations, most preferred first.
KNOWN_FONT_PATHS: tuple[str, ...] = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJKsc-Regular.otf",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
)

# Name of the fontconfig matcher; tests set it to None to simulate a machine without fontconfig.
FC_MATCH: str | None = "fc-match"

INSTALL_HINT = "apt-get install fonts-noto-cjk"


class FontMissing(RuntimeError):
    """No font able to render Simplified Chinese was found."""


def _fontconfig_match() -> str | None:
    exe = shutil.which(FC_MATCH) if FC_MATCH else None
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "-f", "%{file}\t%{lang}", ":lang=zh-cn"], capture_output=True,
                             text=True, timeout=5, check=False).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        log.debug("fc-match failed: %s", exc)
        return None
    path, _, langs = out.strip().partition("\t")
    # fc-match always answers with *some* font; accept it only if it covers Simplified Chinese.
    if path and "zh-cn" in langs.split("|") and os.path.isfile(path):
        return path
    return None


def find_cjk_font(configured: str | os.PathLike[str] | None = None) -> str:
    """Return the path of a font file that renders Simplified Chinese, or raise :class:`FontMissing`."""
    if configured:
        path = Path(configured)
        if path.is_file():
            return str(path)
        log.warning("configured watermark font %s does not exist; searching for another", path)
    for candidate in KNOWN_FONT_PATHS:
        if os.path.isfile(candidate):
            return candidate
    found = _fontconfig_match()
    if found:
        return found
    raise FontMissing(
        "未找到可显示中文的字体，无法绘制水印。请安装中文字体：" + INSTALL_HINT
        + "（或 apt-get install fonts-wqy-microhei），或在配置中指定字体文件路径。"
        + " / No Chinese (CJK) font found, cannot draw the watermark. Install one with `"
        + INSTALL_HINT + "` (or `apt-get install fonts-wqy-microhei`), or set the font path in the settings."
    )


def font_face_index(path: str) -> int:
    """Face to use inside a font collection: the Simplified Chinese one of Noto Sans CJK."""
    name = os.path.basename(path)
    if name.startswith("NotoSansCJK") and name.endswith(".ttc"):
        return 2  # collection order: JP, KR, SC, TC, HK
    return 0
