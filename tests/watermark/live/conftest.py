"""Fixtures of the live watermark tests: the look (a CJK font, no drift) and a hub of 4 encoders."""

from __future__ import annotations

import pytest

from watermark.font import find_cjk_font
from watermark.overlay import WatermarkSettings
from watermark.pipeline import WatermarkHub
from watermark.tag import load_or_create_key


@pytest.fixture(scope="module")
def look() -> WatermarkSettings:
    return WatermarkSettings(font_path=find_cjk_font(), drift=0.0)


@pytest.fixture
def hub(look, tmp_path) -> WatermarkHub:
    return WatermarkHub(look, load_or_create_key(tmp_path), max_encoders=4)
