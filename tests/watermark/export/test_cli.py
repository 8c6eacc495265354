"""``gbops watermark export``: an operator exports a file for a requester known to the platform."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gbcore.db import make_engine, make_sessionmaker
from gbops.migrate import migrate
from ops_portal.users import create_user
from watermark.inspect import inspect_file
from watermark.tag import load_private_key


def _cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GBOPS_")}
    env["GBOPS_CONFIG"] = str(data_dir / "none.toml")
    return subprocess.run([sys.executable, "-m", "gbops.cli", "watermark", "export", *args, "--data-dir",
                           str(data_dir)], capture_output=True, text=True, timeout=120, env=env)


@pytest.fixture
async def installation(tmp_path: Path) -> tuple[Path, int]:
    data = tmp_path / "data"
    data.mkdir()
    engine = make_engine(f"sqlite+aiosqlite:///{data / 'gbops.db'}")
    try:
        await migrate(engine)
        from audit_log.log import AuditLog
        from gbcore.settings import Settings

        AuditLog.from_settings(Settings(data_dir=data), make_sessionmaker(engine))  # creates its key
        async with make_sessionmaker(engine)() as session:
            user = await create_user(session, "wangwu", "Requester#2026x", display_name="王五")
            user.phone = "13900001111"
            await session.commit()
            return data, user.id
    finally:
        await engine.dispose()


async def _audit_entries(data: Path) -> list[dict]:
    from sqlalchemy import text

    engine = make_engine(f"sqlite+aiosqlite:///{data / 'gbops.db'}")
    try:
        async with make_sessionmaker(engine)() as session:
            rows = (await session.execute(text("SELECT entry FROM audit_entries ORDER BY seq"))).all()
            return [json.loads(r[0]) for r in rows]
    finally:
        await engine.dispose()


async def test_export_for_a_user_records_the_download(installation, ps_dir, tmp_path) -> None:
    data, user_id = installation
    out = tmp_path / "for-wangwu.mp4"
    proc = _cli(data, str(ps_dir / "gst_mpegpsmux_h264.ps"), "--out", str(out), "--user", "wangwu",
                "--channel", "34020000001310000001", "--start", "2026-11-21T08:30:00+08:00")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    assert proc.stdout.strip() == f"{digest}  {out}"
    assert "导出 / exporting:" in proc.stderr and "100%" in proc.stderr and "download.complete" in proc.stderr
    found = inspect_file(out, load_private_key(data / "watermark-tag.key").public_key())
    assert len(found.tags) == 1 and found.tags[0].valid
    tag = found.tags[0].tag
    assert tag.user_id == user_id and tag.channel_id == "34020000001310000001" and tag.session_id.startswith("cli-")
    entries = [e for e in await _audit_entries(data) if e["action"] == "download.complete"]
    assert len(entries) == 1
    e = entries[0]
    assert e["actor"]["name"] == "wangwu" and e["detail"]["sha256"] == digest
    assert e["detail"]["bytes"] == out.stat().st_size and e["detail"]["session_id"] == tag.session_id
    assert e["detail"]["start"].startswith("2026-11-21T00:30:00")  # the given wall clock, in UTC


async def test_unknown_user_is_refused(installation, ps_dir, tmp_path) -> None:
    data, _ = installation
    proc = _cli(data, str(ps_dir / "zlm_h264_aac.ps"), "--out", str(tmp_path / "x.mp4"), "--user", "nobody")
    assert proc.returncode == 2 and "nobody" in proc.stderr
    assert not (tmp_path / "x.mp4").exists()


def test_without_a_database_the_export_still_works(ps_dir, tmp_path) -> None:
    data = tmp_path / "empty"
    data.mkdir()
    out = tmp_path / "y.mp4"
    proc = _cli(data, str(ps_dir / "zlm_h265_aac.ps"), "--out", str(out), "--user", "guest")
    assert proc.returncode == 0, proc.stderr
    assert "no database" in proc.stderr
    assert inspect_file(out, load_private_key(data / "watermark-tag.key").public_key()).tags[0].valid

