"""``GET /api/security/check`` and its PDF/XLSX report on the real portal (users and devices in the database,
SQLite and PostgreSQL): a weak device password found from its stored HA1, a device on the shared default set
through the device password route, a weak user password (an argon2 hash from before the password rule, found
by the probe, then by the login's verdict), an old password, an administrator without a second factor; each
cleared through the platform's own routes; a curious tenant refused; the files open and are audited."""

from __future__ import annotations

import asyncio
import subprocess
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select, update

from gbcore.db import utcnow
from gbcore.settings import Settings
from ops_portal.models import User
from tests.conftest import need_tool
from tests.portal.conftest import GOOD_PASSWORD, Portal, bearer

SHARED = "Shared-Default-77"
DEV_WEAK = "34020000001320000101"
DEV_SHARED = "34020000001320000102"
DEV_NONE = "34020000001320000103"
ADMIN, ADMIN_PW = "sec-admin", "Grey-Heron-Lake-42"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", sip_password=SHARED, sip_allow_unknown=False)


async def check(p: Portal, h: dict[str, str]) -> dict[str, Any]:
    r = await p.client.get("/api/security/check", headers=h)
    assert r.status_code == 200, r.text
    return r.json()


def subjects(report: dict[str, Any], code: str) -> list[str]:
    return [s["id"] for f in report["findings"] if f["code"] == code for s in f["subjects"]]


async def set_user(p: Portal, username: str, **values: Any) -> None:
    async with p.sessionmaker() as session:
        await session.execute(update(User).where(User.username == username).values(**values))
        await session.commit()


async def enable_totp(p: Portal, h: dict[str, str], password: str) -> None:
    """The user's own enrolment through the accounts routes, with a code computed like an authenticator app."""
    from ops_portal import totp

    r = await p.client.post("/api/auth/totp/setup", headers=h)
    assert r.status_code == 200, r.text
    code = totp.totp(totp.decode_secret(r.json()["secret"]), time.time())
    r = await p.client.post("/api/auth/totp/enable", json={"code": code, "password": password}, headers=h)
    assert r.status_code == 200, r.text


async def test_findings_found_then_cleared(audited: Portal) -> None:
    p = audited
    await p.add_user(ADMIN, ADMIN_PW, display_name="安全管理员")  # every permission: an administrator
    h = bearer(await p.login(ADMIN, ADMIN_PW))
    realm = p.settings.realm

    # devices: the route refuses a weak password; one stored before that rule existed is still in the table
    r = await p.client.put(f"/api/devices/{DEV_WEAK}/password", json={"password": "admin123"}, headers=h)
    assert r.status_code == 422 and r.json()["error"] == "weak_password"
    await p.registry.set_device_password(DEV_WEAK, realm, "admin123")
    r = await p.client.put(f"/api/devices/{DEV_SHARED}/password", json={"password": SHARED}, headers=h)
    assert r.status_code == 204  # strong, but the same as GBOPS_SIP_PASSWORD
    await p.registry.set_device_password(DEV_NONE, realm, None)  # known device, no password of its own

    # users: an argon2 hash of a weak password from before the rule; a password 200 days old
    await p.add_user("legacy", GOOD_PASSWORD, permissions={"device.read"})
    await set_user(p, "legacy", password_hash=PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
                   .hash("Admin@123"), password_weak=None)
    await p.add_user("old-pw", GOOD_PASSWORD, permissions={"device.read"})
    await set_user(p, "old-pw", password_changed_at=utcnow() - timedelta(days=200))

    report = await check(p, h)
    assert subjects(report, "device_weak_password") == [DEV_WEAK]
    assert subjects(report, "device_shared_password") == [DEV_SHARED, DEV_NONE]
    shared = next(f for f in report["findings"] if f["code"] == "device_shared_password")["subjects"]
    assert "共享默认密码相同" in shared[0]["detail"] and "GBOPS_SIP_PASSWORD" in shared[1]["detail"]
    assert subjects(report, "user_weak_password") == ["legacy"]  # the argon2 probe
    assert report["checked"]["users_probed"] >= 1
    assert subjects(report, "password_old") == ["old-pw"]
    assert subjects(report, "admin_no_second_factor") == [ADMIN]
    assert subjects(report, "account_never_used") == ["legacy", "old-pw"]
    assert report["counts"]["critical"] >= 1 and report["total"] == len(report["findings"])
    for f in report["findings"]:
        assert " / " in f["title"] and " / " in f["fix"]
    text = str(report)
    assert "admin123" not in text and "Admin@123" not in text and SHARED not in text  # no password, ever
    # the time as people read it: Beijing
    assert report["generated_at"].endswith("Z") and len(report["generated_at_local"]) == 19

    # the legacy user logs in: from now on the login's verdict is stored (password_weak), no probe needed
    hl = bearer(await p.login("legacy", "Admin@123"))
    async with p.sessionmaker() as session:
        assert (await session.scalar(select(User.password_weak).where(User.username == "legacy"))) is True
    assert subjects(await check(p, h), "user_weak_password") == ["legacy"]

    # --- the fixes, through the platform's routes
    for dev in (DEV_WEAK, DEV_SHARED, DEV_NONE):
        r = await p.client.put(f"/api/devices/{dev}/password", json={"password": f"Own-{dev[-3:]}-Kestrel"},
                               headers=h)
        assert r.status_code == 204, r.text
    r = await p.client.post("/api/auth/password", json={"old_password": "Admin@123",
                                                       "new_password": "Brave-Otter-Pond-9"}, headers=hl)
    assert r.status_code == 200, r.text
    ho = bearer(await p.login("old-pw"))
    r = await p.client.post("/api/auth/password", json={"old_password": GOOD_PASSWORD,
                                                       "new_password": "Fresh-Password-31"}, headers=ho)
    assert r.status_code == 200, r.text
    await enable_totp(p, h, ADMIN_PW)

    report = await check(p, h)
    for code in ("device_weak_password", "device_shared_password", "user_weak_password", "password_old",
                 "admin_no_second_factor", "account_never_used"):
        assert subjects(report, code) == [], (code, report["findings"])


async def test_curious_tenant_is_refused(audited: Portal) -> None:
    p = audited
    await p.add_user("tenant", GOOD_PASSWORD, permissions={"device.read", "live.view", "audit.read"}, org_nodes=[])
    h = bearer(await p.login("tenant"))
    for path in ("/api/security/check", "/api/security/check/report?format=pdf",
                 "/api/security/check/report?format=xlsx"):
        r = await p.client.get(path, headers=h)
        assert r.status_code == 403, (path, r.text)
        assert r.json()["error"] == "forbidden" and "security.read" in r.json()["message"]
    r = await p.client.get("/api/security/check")
    assert r.status_code == 401


async def test_report_files_open_and_are_audited(audited: Portal, tmp_path: Path) -> None:
    from openpyxl import load_workbook

    p = audited
    await p.add_user(ADMIN, ADMIN_PW)
    # a display name with control characters (the API stores what it is given): listed, and the file still made
    await p.add_user("ctl-name", display_name="值班\x01员\x1f")
    h = bearer(await p.login(ADMIN, ADMIN_PW))
    await p.registry.set_device_password(DEV_WEAK, p.settings.realm, "admin123")

    r = await p.client.get("/api/security/check/report", params={"format": "xlsx"}, headers=h)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/vnd.openxmlformats")
    assert "attachment" in r.headers["content-disposition"] and ".xlsx" in r.headers["content-disposition"]
    (tmp_path / "c.xlsx").write_bytes(r.content)
    wb = load_workbook(tmp_path / "c.xlsx", read_only=True)
    assert wb.sheetnames == ["汇总 Summary", "发现 Findings", "对象 Subjects"]
    summary = [row for row in wb["汇总 Summary"].iter_rows(values_only=True)]
    assert summary[0][0] == "平台安全检查报告 / Platform security check"
    assert any("北京时间" in str(row[1]) for row in summary if len(row) > 1)
    rows = list(wb["对象 Subjects"].iter_rows(values_only=True))[1:]
    assert any(row[1] == "device_weak_password" and row[4] == DEV_WEAK for row in rows)
    xlsx_sha = r.headers["x-content-sha256"]

    r = await p.client.get("/api/security/check/report", params={"format": "pdf"}, headers=h)
    assert r.status_code == 200 and r.content.startswith(b"%PDF")
    (tmp_path / "c.pdf").write_bytes(r.content)
    pdftotext = need_tool("pdftotext")
    text = await asyncio.to_thread(lambda: subprocess.run([pdftotext, str(tmp_path / "c.pdf"), "-"], check=True,
                                                          capture_output=True, text=True).stdout)
    assert "平台安全检查报告" in text and "设备使用弱口令" in text and DEV_WEAK in text and "北京时间" in text
    assert "admin123" not in text

    r = await p.client.get("/api/security/check/report", params={"format": "csv"}, headers=h)
    assert r.status_code == 422

    r = await p.client.get("/api/audit/entries", params={"action": "security.check", "order": "oldest"}, headers=h)
    assert r.status_code == 200, r.text
    entries = r.json()["items"]
    assert [e["detail"]["format"] for e in entries] == ["xlsx", "pdf"]
    assert entries[0]["detail"]["sha256"] == xlsx_sha and entries[0]["actor"]["name"] == ADMIN


async def test_check_survives_missing_sources(portal: Portal, tmp_path: Path) -> None:
    """No backup or time service wired, a broken advisory file: unknown findings, never a 500."""
    p = portal
    await p.add_user(ADMIN, ADMIN_PW)
    h = bearer(await p.login(ADMIN, ADMIN_PW))
    p.settings.data_dir.mkdir(parents=True, exist_ok=True)
    (p.settings.data_dir / "device_advisories.toml").write_text("[[advisory]\n", "utf-8")
    report = await check(p, h)
    assert subjects(report, "facts_unknown") == ["device_advisories", "backup", "time"]

    # wired by the assembly: a stale backup and an unsynchronised clock
    p.app.state.backup_status = lambda: {"last_at": (utcnow() - timedelta(days=3)).isoformat(), "count": 1,
                                         "last_file": "x.gbk", "scheduled": True}

    async def time_status() -> dict[str, Any]:
        return {"synchronised": False, "offset_s": 0.8, "servers": ["ntp.example"]}

    p.app.state.time_status = time_status
    (p.settings.data_dir / "device_advisories.toml").write_text(
        '[[advisory]]\nid = "LOCAL-T"\nvendor = "Acme"\n', "utf-8")
    report = await check(p, h)
    assert subjects(report, "facts_unknown") == []
    assert subjects(report, "backup_stale") == ["backup"] and subjects(report, "clock_unsynchronised") == ["clock"]

    def broken() -> dict[str, Any]:
        raise OSError("backup dir unreadable")

    p.app.state.backup_status = broken
    report = await check(p, h)
    assert subjects(report, "facts_unknown") == ["backup"]
    assert "backup dir unreadable" in next(f for f in report["findings"] if f["code"] == "facts_unknown")[
        "subjects"][0]["detail"]


async def test_identities_are_unique_and_weak_passwords_refused(audited: Portal) -> None:
    """GB/T 22239 identification (docs/security-gbt22239.md): one user name, one account; a weak password is
    refused when the account is created, so the check's user findings only meet passwords from before."""
    p = audited
    await p.add_user(ADMIN, ADMIN_PW)
    h = bearer(await p.login(ADMIN, ADMIN_PW))
    r = await p.client.post("/api/users", json={"username": "wang.wu", "password": "Tall-Pine-Ridge-5"}, headers=h)
    assert r.status_code == 201, r.text
    r = await p.client.post("/api/users", json={"username": "wang.wu", "password": "Other-Pine-Ridge-6"}, headers=h)
    assert r.status_code == 409 and r.json()["error"] == "username_taken"
    r = await p.client.post("/api/users", json={"username": "zhou.qi", "password": "admin@123"}, headers=h)
    assert r.status_code == 422 and r.json()["error"] == "weak_password"
    report = await check(p, h)
    assert subjects(report, "user_password_unknown") == [] and "wang.wu" in subjects(report, "account_never_used")
