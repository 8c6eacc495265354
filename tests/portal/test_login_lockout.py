"""Login lockout that is not a denial of service (issue 11): wrong passwords are throttled and locked per
(account, source address); the account itself only at a much higher threshold across all addresses,
and never for an administrator logging in from the administration networks (loopback by default)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from gbcore.settings import Settings
from ops_portal import auth
from ops_portal.auth import LoginAttempt, LoginRefusal, LoginThrottle
from ops_portal.models import User, UserRole
from ops_portal.users import ensure_builtin_role

from .conftest import GOOD_PASSWORD, Portal

WRONG = "Wrong-Password-1"
A = "203.0.113.10"
B = "198.51.100.20"


class FakeClock:
    """Stands in for ``ops_portal.auth.utcnow``: the real time plus whatever the test skipped."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(auth, "utcnow", fake)
    return fake


def client_from(portal: Portal, address: str) -> httpx.AsyncClient:
    """A client of the same app whose requests come from ``address``."""
    transport = httpx.ASGITransport(app=portal.app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://portal.test")


async def login(client: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    return await client.post("/api/auth/login", json={"username": username, "password": password})


async def audit_rows(portal: Portal) -> list[dict[str, Any]]:
    return [json.loads(e.data) async for e in portal.audit.store.iter_entries(0, 10**9)]


async def make_admin(portal: Portal, username: str) -> User:
    """A user holding the built-in administrator role."""
    user = await portal.add_user(username)
    async with portal.sessionmaker() as session:
        role = await ensure_builtin_role(session)
        session.add(UserRole(user_id=user.id, role_id=role.id))
        await session.commit()
    return user


# ------------------------------------------------------------------------------------------ the throttle
def _settings(tmp_path: Path, **kw: Any) -> Settings:
    return Settings(data_dir=tmp_path, **kw)


def test_throttle_delays_grow_then_lock_one_address(tmp_path: Path) -> None:
    throttle = LoginThrottle(_settings(tmp_path, login_delay_failures=3, login_lock_failures=7,
                                       login_lock_minutes=15, login_account_lock_failures=1000))
    t = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)

    def attempt(at: datetime, address: str = A) -> LoginAttempt | LoginRefusal:
        return throttle.begin("Alice", address, at)

    for _ in range(3):
        a = attempt(t)
        assert isinstance(a, LoginAttempt)
        a.failed(t)
    # after 3 failures: 1 s, then 2 s, 4 s, 8 s (doubling) after each further failure
    waited = []
    for expected in (1, 2, 4, 8):
        r = attempt(t)
        assert isinstance(r, LoginRefusal) and r.kind == "throttled" and r.retry_after == expected
        assert isinstance(attempt(t + timedelta(seconds=expected - 0.5)), LoginRefusal)
        t += timedelta(seconds=expected)
        a = attempt(t)
        assert isinstance(a, LoginAttempt), expected
        failure = a.failed(t)
        waited.append(expected)
    assert failure.address_failures == 7 and failure.address_locked_until == t + timedelta(minutes=15)
    assert not failure.account_threshold
    # locked: even after any delay, for the lock's duration; the name is case-insensitive
    r = throttle.begin("alice", A, t + timedelta(minutes=14))
    assert isinstance(r, LoginRefusal) and r.kind == "locked" and r.until == t + timedelta(minutes=15)
    assert throttle.address_locked_until("ALICE", A, t) == t + timedelta(minutes=15)
    # another address is untouched, and so is another account from the same address
    assert isinstance(attempt(t, B), LoginAttempt)
    assert isinstance(throttle.begin("bob", A, t), LoginAttempt)
    # the lock runs out: a new series
    later = t + timedelta(minutes=15, seconds=1)
    for _ in range(3):
        a = attempt(later)
        assert isinstance(a, LoginAttempt)
        a.failed(later)
    assert isinstance(attempt(later), LoginRefusal)


def test_throttle_counts_attempts_in_flight(tmp_path: Path) -> None:
    """Concurrent guesses cannot overrun the budget: attempts in flight count."""
    throttle = LoginThrottle(_settings(tmp_path, login_delay_failures=3, login_lock_failures=5))
    t = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    admitted = [throttle.begin("alice", A, t) for _ in range(8)]
    assert [isinstance(a, LoginAttempt) for a in admitted] == [True] * 5 + [False] * 3
    for a in admitted[:5]:
        assert isinstance(a, LoginAttempt)
        a.failed(t)
    assert throttle.address_locked_until("alice", A, t) is not None


def test_throttle_success_resets_and_old_failures_expire(tmp_path: Path) -> None:
    throttle = LoginThrottle(_settings(tmp_path, login_delay_failures=3, login_lock_failures=5))
    t = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    for _ in range(2):
        a = throttle.begin("alice", A, t)
        assert isinstance(a, LoginAttempt)
        a.failed(t)
    a = throttle.begin("alice", A, t)
    assert isinstance(a, LoginAttempt)
    a.succeeded()
    for _ in range(2):
        a = throttle.begin("alice", A, t)
        assert isinstance(a, LoginAttempt)
        assert a.failed(t).address_failures in (1, 2)
    # a series older than the lock window is forgotten
    t += timedelta(minutes=16)
    a = throttle.begin("alice", A, t)
    assert isinstance(a, LoginAttempt) and a.failed(t).address_failures == 1


def test_throttle_ipv6_counts_per_64(tmp_path: Path) -> None:
    throttle = LoginThrottle(_settings(tmp_path, login_delay_failures=5, login_lock_failures=5))
    t = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    for i in range(5):
        a = throttle.begin("alice", f"2001:db8:1:2::{i + 1}", t)
        assert isinstance(a, LoginAttempt)
        a.failed(t)
    assert isinstance(throttle.begin("alice", "2001:db8:1:2::ffff", t), LoginRefusal)
    assert isinstance(throttle.begin("alice", "2001:db8:1:3::1", t), LoginAttempt)


def test_throttle_account_window(tmp_path: Path) -> None:
    throttle = LoginThrottle(_settings(tmp_path, login_delay_failures=5, login_lock_failures=5,
                                       login_account_lock_failures=10, login_lock_minutes=15))
    t = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    results = []
    for i in range(10):
        a = throttle.begin("alice", f"192.0.2.{i}", t)
        assert isinstance(a, LoginAttempt)
        results.append(a.failed(t))
    assert [r.account_threshold for r in results] == [False] * 9 + [True]
    assert results[-1].account_failures == 10
    # failures spread wider than the window do not add up
    t2 = t + timedelta(minutes=1)
    for i in range(9):
        a = throttle.begin("bob", f"192.0.2.{i}", t2 + timedelta(minutes=2 * i))
        assert isinstance(a, LoginAttempt)
        assert not a.failed(t2 + timedelta(minutes=2 * i)).account_threshold
    a = throttle.begin("bob", "192.0.2.99", t2 + timedelta(minutes=20))
    assert isinstance(a, LoginAttempt) and not a.failed(t2 + timedelta(minutes=20)).account_threshold


# ------------------------------------------------------------------------------------------ over HTTP
@pytest.fixture
async def from_a(audited: Portal) -> AsyncIterator[httpx.AsyncClient]:
    async with client_from(audited, A) as client:
        yield client


@pytest.fixture
async def from_b(audited: Portal) -> AsyncIterator[httpx.AsyncClient]:
    async with client_from(audited, B) as client:
        yield client


async def test_five_wrong_passwords_from_a_lock_a_only(
    audited: Portal, from_a: httpx.AsyncClient, from_b: httpx.AsyncClient, clock: FakeClock
) -> None:
    s = audited.settings
    assert (s.login_delay_failures, s.login_lock_failures) == (3, 5)  # the defaults
    user = await audited.add_user("alice")
    for _ in range(3):
        r = await login(from_a, "alice", WRONG)
        assert r.status_code == 401 and r.json()["error"] == "invalid_credentials"
    # from now on each attempt from A waits, longer each time; the password is not even checked
    r = await login(from_a, "alice", GOOD_PASSWORD)
    assert r.status_code == 429 and r.json()["error"] == "login_throttled"
    assert r.headers["retry-after"] == "1" and "秒后再试" in r.json()["message"]
    clock.advance(1)
    assert (await login(from_a, "alice", WRONG)).status_code == 401
    r = await login(from_a, "alice", WRONG)
    assert r.status_code == 429 and r.headers["retry-after"] == "2"
    clock.advance(2)
    r = await login(from_a, "alice", WRONG)  # the fifth failure locks A out of alice
    assert r.status_code == 423 and r.json()["error"] == "account_locked"
    assert "锁定" in r.json()["message"] and "locked" in r.json()["message"]
    clock.advance(60)
    r = await login(from_a, "alice", GOOD_PASSWORD)
    assert r.status_code == 423  # even the right password, from A

    # B is not affected: the right password logs in, and the account itself was never locked
    r = await login(from_b, "alice", GOOD_PASSWORD)
    assert r.status_code == 200, r.text
    async with audited.sessionmaker() as session:
        row = (await session.execute(select(User).where(User.id == user.id))).scalar_one()
        assert row.locked_until is None

    # A's lock was audited, with the address it was for
    rows = await audit_rows(audited)
    locks = [e for e in rows if e["action"] == "auth.lockout"]
    assert len(locks) == 1
    assert locks[0]["client_ip"] == A and locks[0]["target"] == {"type": "user", "id": str(user.id)}
    assert locks[0]["detail"]["scope"] == "address" and locks[0]["detail"]["failed_logins"] == 5
    refused = [e for e in rows if e["action"] == "auth.login_failed" and e["detail"]["reason"] == "locked"]
    assert [e["client_ip"] for e in refused] == [A]
    assert [e["client_ip"] for e in rows if e["action"] == "auth.login"] == [B]
    # throttled attempts are not written one by one
    assert len([e for e in rows if e["action"] == "auth.login_failed"]) == 4 + 1

    # the lock runs out
    clock.advance(s.login_lock_minutes * 60)
    assert (await login(from_a, "alice", GOOD_PASSWORD)).status_code == 200


async def test_unknown_names_are_throttled_the_same(
    audited: Portal, from_a: httpx.AsyncClient, clock: FakeClock
) -> None:
    await audited.add_user("alice")
    answers: dict[str, list[int]] = {}
    for name in ("alice", "ghost"):
        codes = []
        for _ in range(5):
            codes.append((await login(from_a, name, WRONG)).status_code)
            codes.append((await login(from_a, name, WRONG)).status_code)  # too early after the 3rd
            clock.advance(10)
        answers[name] = codes
    assert answers["alice"] == answers["ghost"] == [401, 401, 401, 429, 401, 429, 423, 423, 423, 423]


async def test_admin_never_locked_out_from_loopback(audited: Portal, clock: FakeClock) -> None:
    s = audited.settings
    s.login_account_lock_failures = 12
    admin = await make_admin(audited, "boss")
    await audited.add_user("carol")
    # 3 addresses x 4 failures (each stays under its own lock, waiting out the delays): the account-wide
    # threshold is reached for both accounts
    for name in ("boss", "carol"):
        for i in range(3):
            async with client_from(audited, f"192.0.2.{i + 1}") as client:
                for _ in range(4):
                    r = await login(client, name, WRONG)
                    assert r.status_code in (401, 423), r.text
                    clock.advance(10)
        assert r.status_code == 423  # the 12th failure locked the account
    async with audited.sessionmaker() as session:
        locked = {u.username: u.locked_until for u in (await session.execute(select(User))).scalars()}
    assert locked["boss"] is not None and locked["carol"] is not None

    async with client_from(audited, "192.0.2.200") as elsewhere:
        for name in ("boss", "carol"):
            r = await login(elsewhere, name, GOOD_PASSWORD)
            assert r.status_code == 423 and r.json()["error"] == "account_locked", name
    # loopback is the default administration network: the administrator still logs in there, nobody else
    r = await login(audited.client, "boss", GOOD_PASSWORD)
    assert r.status_code == 200, r.text
    assert (await login(audited.client, "carol", GOOD_PASSWORD)).status_code == 423
    # ... and logging in there does not lift the lock for everybody else
    async with client_from(audited, "192.0.2.200") as elsewhere:
        assert (await login(elsewhere, "boss", GOOD_PASSWORD)).status_code == 423
    # the same from ::1
    async with client_from(audited, "::1") as v6:
        assert (await login(v6, "boss", GOOD_PASSWORD)).status_code == 200

    # a further account-wide lock changes nothing for loopback
    s.login_account_lock_failures = 2
    async with client_from(audited, "192.0.2.50") as other:
        for _ in range(2):
            await login(other, "boss", WRONG)
            clock.advance(10)
    assert (await login(audited.client, "boss", GOOD_PASSWORD)).status_code == 200

    # GBOPS_ADMIN_NETWORKS replaces loopback
    s.admin_networks = "10.9.0.0/16"
    assert (await login(audited.client, "boss", GOOD_PASSWORD)).status_code == 423
    async with client_from(audited, "10.9.1.1") as admin_net:
        assert (await login(admin_net, "boss", GOOD_PASSWORD)).status_code == 200
        # a disabled administrator gets no exemption (and is refused anyway)
        async with audited.sessionmaker() as session:
            row = await session.get(User, admin.id)
            assert row is not None
            row.disabled = True
            await session.commit()
        assert (await login(admin_net, "boss", GOOD_PASSWORD)).status_code == 423

    rows = await audit_rows(audited)
    account_locks = [e for e in rows if e["action"] == "auth.lockout" and e["detail"]["scope"] == "account"]
    assert {e["target"]["id"] for e in account_locks} >= {str(admin.id)}
    assert all(e["detail"]["locked_until"].endswith("Z") for e in account_locks)
    assert account_locks[0]["detail"]["failures"] == 12
