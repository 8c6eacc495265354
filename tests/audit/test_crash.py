"""kill -9 in the middle of a load of audited actions: after a restart every action that was
acknowledged is on the log exactly once, no action is there without its entry (or the other way
round), and the chain verifies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from audit_log.export import export_bundle
from audit_log.log import AuditLog
from audit_log.verify import verify_bundle
from device_registry.models import Device
from gbcore.db import make_engine, make_sessionmaker
from gbcore.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
KILL_AFTER = 2500  # of 5000


def run_until_acks(db_url: str, data_dir: Path, acks_wanted: int) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("crash_worker.py")), db_url, str(data_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    acked: list[str] = []
    deadline = time.monotonic() + 240
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("ack "):
                acked.append(line.split()[1])
            elif line.startswith("error"):
                pytest.fail(line)
            if len(acked) >= acks_wanted or line.startswith("done") or time.monotonic() > deadline:
                break
        else:
            pytest.fail(f"worker ended early: {proc.stderr.read() if proc.stderr else ''}")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    return acked


@pytest.mark.slow
async def test_kill_9_in_the_middle(db_url: str, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    acked = run_until_acks(db_url, data_dir, KILL_AFTER)
    assert len(acked) >= KILL_AFTER

    # a fresh process (this one) opens what the killed one left behind
    engine = make_engine(db_url)
    try:
        sessionmaker = make_sessionmaker(engine)
        audit = AuditLog.from_settings(Settings(data_dir=data_dir), sessionmaker, create_key=False)
        async with sessionmaker() as session:
            with_password = set(
                (await session.scalars(select(Device.device_id).where(Device.password_ha1_md5.is_not(None)))).all()
            )
        entries = [json.loads(e.data) async for e in audit.store.iter_entries(0, 10**9)]
        assert [e["seq"] for e in entries] == list(range(len(entries)))
        audited = [e["target"]["id"] for e in entries if e["action"] == "device.password_set"]
        assert len(audited) == len(set(audited))  # exactly one entry per action
        assert set(acked) <= set(audited)  # every acknowledged action is on the log
        assert set(audited) == with_password  # and nothing happened without its entry, or vice versa
        assert entries[0]["action"] == "auth.login"

        result = await export_bundle(audit, tmp_path / "bundle")
        assert result.problems == []
        report = verify_bundle(tmp_path / "bundle", key_text=audit.verifier_key)
        assert report.entries == len(entries)
    finally:
        await engine.dispose()
