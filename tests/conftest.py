"""Shared test fixtures.

Tests that need an outside tool or service call :func:`need`: on a laptop without it they skip,
under ``CI=true`` they fail instead, because CI installs and starts everything the suite needs.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need(condition: bool, why: str) -> None:
    """Skip (laptop) or fail (CI) when a prerequisite is missing."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"prerequisite missing under CI: {why}")
    pytest.skip(why)


def need_tool(name: str) -> str:
    path = shutil.which(name)
    need(path is not None, f"{name} is not installed")
    assert path is not None
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    need(SHARED.is_dir(), f"shared/ not found at {SHARED}")
    return SHARED


@pytest.fixture(scope="session")
def sip_vectors(shared_dir: Path) -> Path:
    return shared_dir / "vectors" / "sip"
