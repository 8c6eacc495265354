"""Fixtures of the download export tests: the real PS vectors, a signing key, a requester."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import need
from watermark.render import WatermarkText
from watermark.tag import load_or_create_key


@pytest.fixture(scope="session")
def ps_dir(shared_dir: Path) -> Path:
    path = shared_dir / "vectors" / "ps"
    need(path.is_dir(), f"PS vectors not found at {path}")
    return path


@pytest.fixture
def key_dir(tmp_path: Path) -> Path:
    load_or_create_key(tmp_path / "data")
    return tmp_path / "data"


@pytest.fixture
def requester() -> WatermarkText:
    return WatermarkText(display_name="张三", account="zhangsan", phone="13812345678", client_ip="10.1.2.3",
                         session_code="AB12CD34")


from tests.portal.conftest import audited, cheap_argon2, fake_sip, portal, settings  # noqa: E402,F401 - fixtures
