"""``gbops audit export / verify / checkpoint / verifier-key`` as an operator and an auditor run them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from audit_log.log import AuditLog
from gbcore.db import make_engine, make_sessionmaker
from gbcore.settings import Settings
from gbops.migrate import migrate

from .conftest import fill

ROOT = Path(__file__).resolve().parents[2]


def gbops(*args: str, data_dir: Path, db_url: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GBOPS_")}
    env.update(GBOPS_DATA_DIR=str(data_dir), GBOPS_DATABASE_URL=db_url, GBOPS_CONFIG=str(data_dir / "none.toml"),
               PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "gbops.cli", "audit", *args], env=env, capture_output=True,
                          text=True, timeout=120, cwd=data_dir.parent)


@pytest.fixture
async def installed(db_url: str, tmp_path: Path):
    """An installation with 12 audited actions: data dir (signing key) and database."""
    data_dir = tmp_path / "data"
    settings = Settings(data_dir=data_dir, database_url=db_url)
    engine = make_engine(db_url)
    await migrate(engine)
    audit = AuditLog.from_settings(settings, make_sessionmaker(engine))
    await fill(audit, 12)
    await audit.checkpoint()
    (tmp_path / "verifier.key").write_text(audit.verifier_key + "\n")
    yield audit, data_dir
    await engine.dispose()


def test_export_then_verify(installed, db_url: str, tmp_path: Path) -> None:
    audit, data_dir = installed
    key = str(tmp_path / "verifier.key")
    r = gbops("export", "--out", str(tmp_path / "b1"), data_dir=data_dir, db_url=db_url)
    assert r.returncode == 0, r.stderr
    assert "seq 0..11" in r.stdout and f"{audit.origin}\n12\n" in r.stdout
    r = gbops("verify", str(tmp_path / "b1"), "--key", key, data_dir=data_dir, db_url=db_url)
    assert r.returncode == 0, r.stderr
    assert "VALID" in r.stdout

    # the export was recorded: entry 12, by the operator's OS account
    r = gbops("export", "--out", str(tmp_path / "b2.zip"), "--from", "3", "--to", "12", data_dir=data_dir,
              db_url=db_url)
    assert r.returncode == 0, r.stderr
    last = (tmp_path / "b2.zip")
    r = gbops("verify", str(last), "--key", key, data_dir=data_dir, db_url=db_url)
    assert r.returncode == 0, r.stderr
    import zipfile

    with zipfile.ZipFile(last) as zf:
        rows = zf.read("entries.jsonl").splitlines()
    export_entry = json.loads(rows[-1])
    assert export_entry["seq"] == 12 and export_entry["action"] == "audit.export"
    assert export_entry["actor"]["type"] == "system" and export_entry["detail"]["to"] == 11
    assert export_entry["target"] == {"type": "audit_log", "id": audit.origin}

    # a damaged bundle: exit 1 naming the entry; nothing to check: exit 2
    lines = (tmp_path / "b1" / "entries.jsonl").read_bytes().splitlines(keepends=True)
    del lines[5]
    (tmp_path / "b1" / "entries.jsonl").write_bytes(b"".join(lines))
    r = gbops("verify", str(tmp_path / "b1"), "--key", key, data_dir=data_dir, db_url=db_url)
    assert r.returncode == 1 and "seq=5" in r.stderr
    r = gbops("verify", str(tmp_path / "nope"), data_dir=data_dir, db_url=db_url)
    assert r.returncode == 2


def test_print_key_and_checkpoint(installed, db_url: str) -> None:
    audit, data_dir = installed
    r = gbops("verifier-key", data_dir=data_dir, db_url=db_url)
    assert r.returncode == 0 and r.stdout.strip() == audit.verifier_key
    r = gbops("checkpoint", data_dir=data_dir, db_url=db_url)
    assert r.returncode == 0 and r.stdout.startswith(f"{audit.origin}\n12\n") and "\u2014 " in r.stdout


def test_refusals(installed, db_url: str, tmp_path: Path) -> None:
    audit, data_dir = installed
    r = gbops("export", "--out", str(tmp_path / "x"), "--from", "5", "--to", "99", data_dir=data_dir, db_url=db_url)
    assert r.returncode == 2 and "bad range" in r.stderr
    r = gbops("export", "--out", str(tmp_path / "x"), data_dir=tmp_path / "other", db_url=db_url)
    assert r.returncode == 2 and "signing key" in r.stderr


async def test_export_of_a_tampered_log_fails(installed, db_url: str, tmp_path: Path) -> None:
    audit, data_dir = installed
    async with audit.sessionmaker() as session:
        if session.bind.dialect.name == "sqlite":
            await session.execute(text("DROP TRIGGER audit_entries_no_delete"))
        else:
            await session.execute(text("DROP TRIGGER audit_entries_append_only ON audit_entries"))
        await session.execute(text("DELETE FROM audit_entries WHERE seq >= 10"))
        await session.commit()
    r = await _agbops("export", "--out", str(tmp_path / "t"), data_dir=data_dir, db_url=db_url)
    assert r.returncode == 1 and "TAMPERED" in r.stderr and "deleted" in r.stderr
    r = await _agbops("verify", str(tmp_path / "t"), "--key", str(tmp_path / "verifier.key"), data_dir=data_dir,
                      db_url=db_url)
    assert r.returncode == 1 and "seq=10" in r.stderr


async def _agbops(*args: str, data_dir: Path, db_url: str) -> subprocess.CompletedProcess:
    import asyncio

    return await asyncio.to_thread(gbops, *args, data_dir=data_dir, db_url=db_url)
