"""The security check on a real ``gbops run`` (the assembly's wiring): a simulated camera that registered with the
shared default password is found on it, the backup and clock facts come from the running platform (no
"unknown" finding for them), plain HTTP on loopback is only information, and a backup made by ``gbops backup``
next to the running platform clears "no backup"."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gbsim import SimConfig, Simulator
from tests.e2e.platform import STRONG_SIP_PASSWORD, PlatformProcess

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CAMERA = "34020000001320000401"


def findings(platform: PlatformProcess) -> dict[str, Any]:
    r = platform.get("/api/security/check")
    assert r.status_code == 200, r.text
    return {f["code"]: f for f in r.json()["findings"]}


def ids(found: dict[str, Any], code: str) -> list[str]:
    return [s["id"] for s in found.get(code, {"subjects": []})["subjects"]]


def test_check_on_a_running_platform(tmp_path: Path) -> None:
    platform = PlatformProcess(tmp_path / "data").start()
    try:
        async def register() -> None:
            sim = Simulator(SimConfig(server=("127.0.0.1", platform.sip_port), devices=1, channels=1,
                                      password=STRONG_SIP_PASSWORD, first_id=CAMERA, size="320x180"))
            await sim.start()
            try:
                assert await sim.wait_until(lambda s: s.registered == 1, 30), sim.progress_line()
            finally:
                await sim.stop()

        asyncio.run(register())
        found = findings(platform)
        assert CAMERA in ids(found, "device_shared_password")
        assert "backup" not in ids(found, "facts_unknown") and "time" not in ids(found, "facts_unknown")
        assert "backup_missing" in found
        assert found["http_plain"]["severity"] == "info"  # loopback only (tests/e2e/platform.py)
        assert "clock_local_reference" in found  # no GBOPS_NTP_SERVERS: the host clock is the reference
        assert STRONG_SIP_PASSWORD not in str(found)

        env = {**{k: v for k, v in os.environ.items() if not k.startswith("GBOPS_")},
               "GBOPS_DATA_DIR": str(platform.data_dir), "GBOPS_CONFIG": str(platform.data_dir / "none.toml"),
               "GBOPS_SIP_PASSWORD": STRONG_SIP_PASSWORD, "GBOPS_BACKUP_PASSPHRASE": "Backup-Pass-Phrase-9"}
        b = subprocess.run([sys.executable, "-m", "gbops.cli", "backup"], env=env, capture_output=True, text=True,
                           timeout=120)
        assert b.returncode == 0, b.stdout + b.stderr
        found = findings(platform)
        assert "backup_missing" not in found and "backup_stale" not in found
    finally:
        platform.stop()
