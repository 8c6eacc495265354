"""``gbops security check`` on an installation's data directory: text, JSON, the PDF/XLSX report (audited),
the exit status, and the backup facts read by the assembly (a backup file makes the finding go away)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SHARED = "Shared-Default-77"
WEAK_DEV = "34020000001320000201"


def run_cli(data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("GBOPS_")}
    return subprocess.run([sys.executable, "-m", "gbops.cli", "security", "check", *args],
                          env={**base, "GBOPS_DATA_DIR": str(data_dir), "GBOPS_CONFIG": str(data_dir / "none.toml"),
                               "GBOPS_SIP_PASSWORD": SHARED, **env},
                          capture_output=True, text=True, timeout=120)


async def _install(data_dir: Path) -> None:
    """A data directory as a platform leaves it: database, audit key, a user, a device with a weak HA1."""
    from audit_log.log import AuditLog
    from device_registry.service import Registry
    from gbcore.db import make_engine, make_sessionmaker
    from gbcore.settings import Settings
    from gbops.migrate import migrate
    from ops_portal.users import create_user

    settings = Settings(data_dir=data_dir, sip_password=SHARED)
    engine = make_engine(settings.db_url)
    try:
        await migrate(engine)
        sessionmaker = make_sessionmaker(engine)
        audit = AuditLog.from_settings(settings, sessionmaker)
        await audit.start()
        await audit.stop()
        async with sessionmaker() as session:
            await create_user(session, "zhao.liu", "Quiet-Harbour-Lamp-8")
            await session.commit()
        await Registry(sessionmaker).set_device_password(WEAK_DEV, settings.realm, "admin123")
    finally:
        await engine.dispose()


@pytest.fixture
def installed(tmp_path: Path) -> Path:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    asyncio.run(_install(data_dir))
    return data_dir


def test_text_and_json(installed: Path) -> None:
    r = run_cli(installed)
    assert r.returncode == 1, r.stderr  # critical findings (a weak device password, no backup)
    assert "设备使用弱口令 / devices with weak SIP passwords" in r.stdout and WEAK_DEV in r.stdout
    assert "修复 / fix:" in r.stdout and "北京时间" in r.stdout
    assert "admin123" not in r.stdout + r.stderr and SHARED not in r.stdout + r.stderr

    r = run_cli(installed, "--format", "json")
    report = json.loads(r.stdout)
    codes = {f["code"]: f for f in report["findings"]}
    assert [s["id"] for s in codes["device_weak_password"]["subjects"]] == [WEAK_DEV]
    assert "backup_missing" in codes  # the assembly's backup facts are read by the command
    assert "user_password_unknown" in codes or "account_never_used" in codes
    unknown = [s["id"] for s in codes.get("facts_unknown", {"subjects": []})["subjects"]]
    assert "backup" not in unknown and "time" not in unknown
    assert codes["clock_local_reference"]["severity"] == "info"  # no GBOPS_NTP_SERVERS: the host clock


def test_backup_file_clears_the_finding(installed: Path) -> None:
    from gbcore.settings import Settings
    from gbops.backup import backup_status

    folder = Path(backup_status(Settings(data_dir=installed))["dir"])
    r = run_cli(installed, "--format", "json")
    assert "backup_missing" in {f["code"] for f in json.loads(r.stdout)["findings"]}
    # a real backup by the backup command (the passphrase from the environment, never an argument)
    b = subprocess.run([sys.executable, "-m", "gbops.cli", "backup"],  # into the backup folder, by its name
                       env={**{k: v for k, v in os.environ.items() if not k.startswith("GBOPS_")},
                            "GBOPS_DATA_DIR": str(installed), "GBOPS_CONFIG": str(installed / "none.toml"),
                            "GBOPS_SIP_PASSWORD": SHARED, "GBOPS_BACKUP_PASSPHRASE": "Backup-Pass-Phrase-9"},
                       capture_output=True, text=True, timeout=120)
    if b.returncode != 0 or not backup_status(Settings(data_dir=installed))["count"]:
        pytest.fail(f"gbops backup did not leave a backup in {folder}: {b.stdout}\n{b.stderr}")
    codes = {f["code"] for f in json.loads(run_cli(installed, "--format", "json").stdout)["findings"]}
    assert "backup_missing" not in codes and "backup_stale" not in codes


def test_pdf_and_xlsx_reports_are_audited(installed: Path, tmp_path: Path) -> None:
    from openpyxl import load_workbook

    r = run_cli(installed, "--out", str(tmp_path / "check.pdf"))
    assert r.returncode == 1, r.stderr
    assert (tmp_path / "check.pdf").read_bytes().startswith(b"%PDF") and "sha256:" in r.stdout
    r = run_cli(installed, "--out", str(tmp_path / "check.xlsx"))
    wb = load_workbook(tmp_path / "check.xlsx", read_only=True)
    rows = list(wb["对象 Subjects"].iter_rows(values_only=True))
    assert any(row[4] == WEAK_DEV for row in rows)
    entries = asyncio.run(_audit_actions(installed))
    assert entries.count("security.check") == 2
    r = run_cli(installed, "--out", str(tmp_path / "check.csv"))
    assert r.returncode == 2 and ".pdf" in r.stderr


async def _audit_actions(data_dir: Path) -> list[str]:
    from sqlalchemy import select

    from audit_log.store import AuditEntryRow
    from gbcore.db import make_engine, make_sessionmaker
    from gbcore.settings import Settings

    engine = make_engine(Settings(data_dir=data_dir).db_url)
    try:
        async with make_sessionmaker(engine)() as session:
            return list(await session.scalars(select(AuditEntryRow.action).order_by(AuditEntryRow.seq)))
    finally:
        await engine.dispose()


def test_no_database(tmp_path: Path) -> None:
    r = run_cli(tmp_path / "empty")
    assert r.returncode == 2 and "no database" in r.stderr
