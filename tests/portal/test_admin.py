"""The first administrator: generated or configured password, never a default."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import func, select

from gbcore.log import KvFormatter
from gbcore.passwords import weak_password_reason
from gbcore.settings import SettingsError
from ops_portal.models import User
from ops_portal.users import INITIAL_PASSWORD_FILE, WeakPasswordError, ensure_admin

from .conftest import Portal, bearer


def all_log_text(caplog: pytest.LogCaptureFixture) -> str:
    """Everything the log records could put in a log file, in both output formats."""
    parts = [caplog.text]
    for record in caplog.records:
        parts.append(KvFormatter().format(record))
        parts.append(KvFormatter(json_lines=True).format(record))
        parts.append(repr(record.__dict__))
    return "\n".join(parts)


async def admin_count(portal: Portal) -> int:
    async with portal.sessionmaker() as session:
        return await session.scalar(select(func.count()).select_from(User).where(User.username == "admin"))


async def test_generated_admin_password(
    portal: Portal, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    password = await ensure_admin(portal.sessionmaker, portal.settings)
    assert password is not None
    assert weak_password_reason(password, "admin") is None
    assert len(password) >= 16

    path = Path(portal.settings.data_dir) / INITIAL_PASSWORD_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text("utf-8").strip() == password
    assert not path.with_name(path.name + ".tmp").exists()

    # It logs in once, and must be changed right away.
    r = await portal.client.post("/api/auth/login", json={"username": "admin", "password": password})
    assert r.status_code == 200, r.text
    assert r.json()["must_change_password"] is True
    headers = bearer(r.json()["access_token"])
    assert (await portal.client.get("/api/devices", headers=headers)).status_code == 403
    r = await portal.client.post(
        "/api/auth/password", headers=headers, json={"old_password": password, "new_password": "Ops-Team-Secret-7"}
    )
    assert r.status_code == 200, r.text
    assert not path.exists()  # the file has done its job
    r = await portal.client.post("/api/auth/login", json={"username": "admin", "password": password})
    assert r.status_code == 401

    # Idempotent: a second start creates nothing and prints nothing.
    assert await ensure_admin(portal.sessionmaker, portal.settings) is None
    assert await admin_count(portal) == 1

    logged = all_log_text(caplog)
    assert "admin.created" in logged
    assert password not in logged
    out = capsys.readouterr()
    assert password not in out.out and password not in out.err


async def test_generated_passwords_differ(portal: Portal, tmp_path: Path) -> None:
    first = await ensure_admin(portal.sessionmaker, portal.settings)
    async with portal.sessionmaker() as session:
        admin = (await session.execute(select(User).where(User.username == "admin"))).scalar_one()
        await session.delete(admin)
        await session.commit()
    second = await ensure_admin(portal.sessionmaker, portal.settings)
    assert first and second and first != second


async def test_stale_file_gets_tightened(portal: Portal) -> None:
    path = Path(portal.settings.data_dir) / INITIAL_PASSWORD_FILE
    path.parent.mkdir(parents=True)
    path.write_text("old\n")
    path.chmod(0o644)
    password = await ensure_admin(portal.sessionmaker, portal.settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == password


async def test_configured_admin_password(portal: Portal, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    portal.settings.admin_password = SecretStr("Night-Shift-Ops-9")
    assert await ensure_admin(portal.sessionmaker, portal.settings) is None
    assert not (Path(portal.settings.data_dir) / INITIAL_PASSWORD_FILE).exists()
    r = await portal.client.post(
        "/api/auth/login", json={"username": "admin", "password": "Night-Shift-Ops-9"}
    )
    assert r.status_code == 200
    assert r.json()["must_change_password"] is True
    assert "Night-Shift-Ops-9" not in all_log_text(caplog)


@pytest.mark.parametrize("weak", ["admin123", "12345678", "Admin-2024", "abc"])
async def test_configured_weak_admin_password_refused(portal: Portal, weak: str) -> None:
    portal.settings.admin_password = SecretStr(weak)
    with pytest.raises(WeakPasswordError) as info:
        await ensure_admin(portal.sessionmaker, portal.settings)
    assert isinstance(info.value, SettingsError)
    assert "GBOPS_ADMIN_PASSWORD" in str(info.value)
    assert weak not in str(info.value)
    assert await admin_count(portal) == 0


async def test_existing_admin_left_alone(portal: Portal) -> None:
    await portal.add_user("admin", "Somebody-Chose-1")
    portal.settings.admin_password = SecretStr("weak")  # not even looked at
    assert await ensure_admin(portal.sessionmaker, portal.settings) is None
    assert (await portal.client.post(
        "/api/auth/login", json={"username": "admin", "password": "Somebody-Chose-1"}
    )).status_code == 200
