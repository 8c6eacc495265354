"""Periodic password change (issue 16, GB/T 22239 level 2): a password older than
``GBOPS_PASSWORD_MAX_AGE_DAYS`` must be changed at the next login, with the reason in words; the dates and
the weak-password flag the security check reads are kept on every login, change and reset; existing
accounts get a password date from the migration."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, text, update

from gbcore.db import make_engine
from gbops.migrate import migrate
from ops_portal.models import User
from ops_portal.users import create_user

from .conftest import GOOD_PASSWORD, Portal, bearer

NEW_PASSWORD = "Fresh-Password-2027"


async def age_password(portal: Portal, username: str, days: float) -> None:
    async with portal.sessionmaker() as session:
        await session.execute(update(User).where(User.username == username).values(
            password_changed_at=datetime.now(UTC) - timedelta(days=days)))
        await session.commit()


async def row(portal: Portal, username: str) -> User:
    async with portal.sessionmaker() as session:
        return (await session.execute(select(User).where(User.username == username))).scalar_one()


async def login(portal: Portal, username: str, password: str = GOOD_PASSWORD) -> Any:
    return await portal.client.post("/api/auth/login", json={"username": username, "password": password})


async def test_old_password_must_be_changed(audited: Portal) -> None:
    portal = audited
    assert portal.settings.password_max_age_days == 90  # the default
    await portal.add_user("alice")
    await portal.add_user("bob")
    await age_password(portal, "alice", 91)
    await age_password(portal, "bob", 89)

    r = await login(portal, "bob")
    assert r.status_code == 200 and r.json()["must_change_password"] is False
    assert r.json()["password_change_reason"] is None

    r = await login(portal, "alice")
    assert r.status_code == 200
    body = r.json()
    assert body["must_change_password"] is True
    assert body["password_change_reason"].startswith("密码已超过 90 天未修改")
    alice = bearer(body["access_token"])
    r = await portal.client.get("/api/devices", headers=alice)
    assert r.status_code == 403 and r.json()["error"] == "password_change_required"
    assert "密码已超过 90 天未修改" in r.json()["message"]  # the reason, in words, on every refusal

    # the new password may not be the old one, then it is accepted and dated
    r = await portal.client.post("/api/auth/password", headers=alice,
                                 json={"old_password": GOOD_PASSWORD, "new_password": GOOD_PASSWORD})
    assert r.status_code == 422
    before = datetime.now(UTC)
    r = await portal.client.post("/api/auth/password", headers=alice,
                                 json={"old_password": GOOD_PASSWORD, "new_password": NEW_PASSWORD})
    assert r.status_code == 200, r.text
    assert (await portal.client.get("/api/devices", headers=alice)).status_code == 200
    user = await row(portal, "alice")
    assert user.password_changed_at is not None and user.password_changed_at >= before
    assert user.must_change_password is False and user.password_weak is False
    r = await login(portal, "alice", NEW_PASSWORD)
    assert r.json()["must_change_password"] is False

    entries = [json.loads(e.data) async for e in portal.audit.store.iter_entries(0, 10**9)]
    expired = [e for e in entries if e["action"] == "auth.login" and e["detail"].get("password_expired")]
    assert len(expired) == 1


async def test_policy_off_and_shorter(portal: Portal) -> None:
    await portal.add_user("carol")
    await age_password(portal, "carol", 3650)
    portal.settings.password_max_age_days = 0  # never
    assert (await login(portal, "carol")).json()["must_change_password"] is False
    portal.settings.password_max_age_days = 30
    await age_password(portal, "carol", 31)
    r = await login(portal, "carol")
    assert r.json()["must_change_password"] is True and "30 天" in r.json()["password_change_reason"]
    assert (await row(portal, "carol")).must_change_password is True  # kept for the next login too
    portal.settings.password_max_age_days = 0
    assert (await login(portal, "carol")).json()["must_change_password"] is True


async def test_login_records_last_login_and_weakness(portal: Portal) -> None:
    async with portal.sessionmaker() as session:  # an account made before the rule, with a weak password
        await create_user(session, "dave", "password", check_strength=False)
        await session.commit()
    dave = await row(portal, "dave")
    assert dave.last_login_at is None and dave.password_weak is True and dave.password_changed_at is not None
    await portal.add_user("erin")
    async with portal.sessionmaker() as session:  # not known: the login decides
        await session.execute(update(User).values(password_weak=None))
        await session.commit()

    before = datetime.now(UTC)
    assert (await login(portal, "dave", "password")).status_code == 200
    assert (await login(portal, "erin")).status_code == 200
    dave, erin = await row(portal, "dave"), await row(portal, "erin")
    assert dave.password_weak is True and erin.password_weak is False
    assert dave.last_login_at is not None and dave.last_login_at >= before
    # a failed login changes neither
    last = erin.last_login_at
    assert (await login(portal, "erin", "Wrong-Password-1")).status_code == 401
    assert (await row(portal, "erin")).last_login_at == last


async def test_admin_reset_dates_the_password(portal: Portal) -> None:
    await portal.add_user("root")
    await portal.add_user("frank")
    await age_password(portal, "frank", 400)
    root = bearer(await portal.login("root"))
    frank_id = (await row(portal, "frank")).id
    r = await portal.client.post(f"/api/users/{frank_id}/password", headers=root)
    assert r.status_code == 200
    frank = await row(portal, "frank")
    assert datetime.now(UTC) - frank.password_changed_at < timedelta(minutes=1)
    assert frank.password_weak is False and frank.must_change_password is True
    r = await login(portal, "frank", r.json()["one_time_password"])
    assert r.json()["must_change_password"] is True and r.json()["password_change_reason"] is None  # a reset
    users = (await portal.client.get("/api/users", headers=root)).json()["items"]
    assert all(u["password_changed_at"] for u in users)


async def test_migration_dates_existing_passwords(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'old.db'}")
    try:
        await migrate(engine, "0014")
        async with engine.begin() as conn:
            await conn.execute(text(
                "INSERT INTO users (username, display_name, password_hash, must_change_password, disabled, "
                "failed_logins, created_at, updated_at, ptz_level) VALUES ('old', '', 'x', 0, 0, 0, "
                "'2025-01-02 03:04:05.000000', '2025-06-07 08:09:10.000000', 5)"))
        await migrate(engine)
        async with engine.connect() as conn:
            changed, weak, totp_on = (await conn.execute(text(
                "SELECT password_changed_at, password_weak, totp_enabled_at FROM users"))).one()
        assert str(changed).startswith("2025-06-07 08:09:10")
        assert weak is None and totp_on is None
    finally:
        await engine.dispose()
