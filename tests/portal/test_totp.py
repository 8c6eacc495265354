"""The TOTP second factor (issue 16): the RFC 6238 core against the RFC's own test vectors, and the flows
through the portal: set-up, confirm, log in with a code, a replayed code refused, turning it off, an
administrator's reset, and a role that requires it (a session that may only enrol)."""

from __future__ import annotations

import base64
import json
import os
import stat
from datetime import datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select, update

from ops_portal import totp
from ops_portal.models import AuthToken, User
from security.events import ListSink

from .conftest import GOOD_PASSWORD, Portal, bearer
from .test_login_lockout import FakeClock, client_from

# ------------------------------------------------------------------------------------------ RFC 6238 core
# RFC 6238 Appendix B: the seeds are the ASCII strings below; 8-digit codes for each time and mode.
SEED = {
    "sha1": b"12345678901234567890",
    "sha256": b"12345678901234567890123456789012",
    "sha512": b"1234567890123456789012345678901234567890123456789012345678901234",
}
RFC_VECTORS = [
    (59, "sha1", "94287082"), (59, "sha256", "46119246"), (59, "sha512", "90693936"),
    (1111111109, "sha1", "07081804"), (1111111109, "sha256", "68084774"), (1111111109, "sha512", "25091201"),
    (1111111111, "sha1", "14050471"), (1111111111, "sha256", "67062674"), (1111111111, "sha512", "99943326"),
    (1234567890, "sha1", "89005924"), (1234567890, "sha256", "91819424"), (1234567890, "sha512", "93441116"),
    (2000000000, "sha1", "69279037"), (2000000000, "sha256", "90698825"), (2000000000, "sha512", "38618901"),
    (20000000000, "sha1", "65353130"), (20000000000, "sha256", "77737706"), (20000000000, "sha512", "47863826"),
]


@pytest.mark.parametrize(("now", "algorithm", "expected"), RFC_VECTORS)
def test_rfc6238_appendix_b_vectors(now: int, algorithm: str, expected: str) -> None:
    assert totp.totp(SEED[algorithm], now, digits=8, algorithm=algorithm) == expected
    # what users type: the same value truncated to 6 digits (the low-order digits of the same number)
    assert totp.totp(SEED[algorithm], now, algorithm=algorithm) == expected[-6:]


def test_rfc4226_hotp_vectors() -> None:
    # RFC 4226 Appendix D, counters 0..9
    expected = ["755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583", "399871", "520489"]
    assert [totp.hotp(SEED["sha1"], c) for c in range(10)] == expected


def test_verify_window_and_replay() -> None:
    key = SEED["sha1"]
    now = 1111111111.0
    step = totp.time_step(now)
    code = totp.totp(key, now)
    assert totp.verify(key, code, now) == step
    assert totp.verify(key, code, now, last_step=step) is None  # the same code again: refused
    assert totp.verify(key, code, now + 30) == step  # one step late: still accepted (clock drift)
    assert totp.verify(key, code, now - 30) == step  # one step early too
    assert totp.verify(key, code, now + 60) is None and totp.verify(key, code, now - 60) is None
    later = totp.totp(key, now + 30)
    assert totp.verify(key, later, now, last_step=step) == step + 1  # the next step's code after this one
    assert totp.verify(key, totp.totp(key, now - 30), now, last_step=step) is None  # an older one: refused
    assert totp.verify(key, "000000" if code != "000000" else "111111", now) is None
    assert totp.verify(key, f" {code[:3]} {code[3:]} ", now) == step  # spaces forgiven
    for bad in (None, "", "12345", "1234567", "12a456", "１２３４５６", code + "0"):
        assert totp.verify(key, bad, now) is None, bad


def test_secret_encoding_and_uri() -> None:
    secret = totp.new_secret()
    assert len(secret) == 32 and secret == secret.upper() and "=" not in secret
    assert len(totp.decode_secret(secret)) == totp.SECRET_BYTES
    assert totp.decode_secret(secret.lower()) == totp.decode_secret(totp.group_secret(secret))
    assert totp.group_secret("JBSWY3DPEHPK3PXP") == "JBSW Y3DP EHPK 3PXP"
    assert secret != totp.new_secret()
    uri = totp.provisioning_uri("JBSWY3DPEHPK3PXP", "alice", "视频平台")
    assert uri.startswith("otpauth://totp/%E8%A7%86%E9%A2%91%E5%B9%B3%E5%8F%B0:alice?secret=JBSWY3DPEHPK3PXP&")
    assert "issuer=%E8%A7%86%E9%A2%91%E5%B9%B3%E5%8F%B0" in uri and "digits=6" in uri and "period=30" in uri
    for bad in ("", "   ", "1!!", "A"):
        with pytest.raises(totp.TotpError):
            totp.decode_secret(bad)


@given(st.text(max_size=40))
def test_decode_secret_never_fails_otherwise(text: str) -> None:
    try:
        key = totp.decode_secret(text)
    except totp.TotpError:
        return
    assert isinstance(key, bytes) and key


@given(st.text(max_size=20), st.floats(min_value=0, max_value=2**40, allow_nan=False))
def test_verify_takes_any_text(code: str, now: float) -> None:
    step = totp.verify(SEED["sha1"], code, now)
    assert step is None or (abs(step - totp.time_step(now)) <= 1 and totp.normalise_code(code) is not None)


# ------------------------------------------------------------------------------------------ portal helpers
@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """The accounts code's clock (login, the TOTP routes, the idle check), which a test moves on."""
    from ops_portal import auth, deps
    from ops_portal.accounts import auth_routes

    fake = FakeClock()
    for module in (auth, auth_routes, deps):
        monkeypatch.setattr(module, "utcnow", fake)
    return fake


@pytest.fixture
def sink(portal: Portal) -> ListSink:
    portal.app.state.security = ListSink()
    return portal.app.state.security


def code_at(secret: str, when: datetime) -> str:
    return totp.totp(totp.decode_secret(secret), when.timestamp())


async def login(portal: Portal, username: str, password: str = GOOD_PASSWORD, otp: str | None = None,
                client: Any = None) -> Any:
    body: dict[str, Any] = {"username": username, "password": password}
    if otp is not None:
        body["otp"] = otp
    return await (client or portal.client).post("/api/auth/login", json=body)


async def enrol(portal: Portal, headers: dict[str, str], clock: FakeClock, password: str = GOOD_PASSWORD) -> str:
    """Set up and confirm the second factor; the secret."""
    r = await portal.client.post("/api/auth/totp/setup", headers=headers)
    assert r.status_code == 200, r.text
    secret = r.json()["secret"]
    r = await portal.client.post("/api/auth/totp/enable", headers=headers,
                                 json={"code": code_at(secret, clock()), "password": password})
    assert r.status_code == 200, r.text
    assert r.json()["enabled"] is True
    clock.advance(30)  # the confirming code's step is used up
    return secret


async def user_row(portal: Portal, username: str) -> User:
    async with portal.sessionmaker() as session:
        return (await session.execute(select(User).where(User.username == username))).scalar_one()


async def audit_actions(portal: Portal) -> list[dict[str, Any]]:
    return [json.loads(e.data) async for e in portal.audit.store.iter_entries(0, 10**9)]


# ------------------------------------------------------------------------------------------ flows
async def test_enrol_login_replay_disable(audited: Portal, clock: FakeClock) -> None:
    portal = audited
    sink = portal.app.state.security = ListSink()
    await portal.add_user("alice")
    headers = bearer(await portal.login("alice"))
    r = await portal.client.get("/api/auth/totp", headers=headers)
    assert r.json() == {"enabled": False, "enabled_at": None, "required": False, "pending": False}

    r = await portal.client.post("/api/auth/totp/setup", headers=headers)
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    setup = r.json()
    secret = setup["secret"]
    assert setup["secret_grouped"].replace(" ", "") == secret and setup["digits"] == 6 and setup["period"] == 30
    assert setup["otpauth_uri"].startswith("otpauth://totp/") and f"secret={secret}" in setup["otpauth_uri"]
    assert setup["account"] == "alice"
    # not in force before it is confirmed: logging in needs no code yet
    assert (await portal.client.get("/api/auth/totp", headers=headers)).json()["pending"] is True
    assert (await login(portal, "alice")).status_code == 200

    # the secret is stored sealed (never the base32 text, nor its bytes) under a 0600 key file
    row = await user_row(portal, "alice")
    assert row.totp_secret is not None and secret.encode() not in row.totp_secret
    assert totp.decode_secret(secret) not in row.totp_secret
    key_file = portal.settings.data_dir / "keys" / "totp.key"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600

    wrong = "000000" if code_at(secret, clock()) != "000000" else "111111"
    r = await portal.client.post("/api/auth/totp/enable", headers=headers,
                                 json={"code": wrong, "password": GOOD_PASSWORD})
    assert r.status_code == 422 and r.json()["error"] == "totp_invalid"
    # a stolen session alone cannot turn it on: the password is asked again
    r = await portal.client.post("/api/auth/totp/enable", headers=headers,
                                 json={"code": code_at(secret, clock()), "password": "Wrong-Password-1"})
    assert r.status_code == 403 and r.json()["error"] == "wrong_password"
    assert (await login(portal, "alice")).status_code == 200  # still off

    r = await portal.client.post("/api/auth/totp/enable", headers=headers,
                                 json={"code": code_at(secret, clock()), "password": GOOD_PASSWORD})
    assert r.status_code == 200 and r.json()["enabled"] is True
    r = await portal.client.post("/api/auth/totp/setup", headers=headers)
    assert r.status_code == 409 and r.json()["error"] == "totp_already_enabled"
    me = (await portal.client.get("/api/auth/me", headers=headers)).json()
    assert me["totp_enabled"] is True
    clock.advance(30)

    # the password alone is no longer enough: 401 totp_required, which is not a failure
    r = await login(portal, "alice")
    assert r.status_code == 401 and r.json()["error"] == "totp_required"
    assert "6 位动态验证码" in r.json()["message"]
    assert "access_token" not in r.json()
    # a wrong code: 401 totp_invalid, a failure and a security event
    r = await login(portal, "alice", otp=wrong)
    assert r.status_code == 401 and r.json()["error"] == "totp_invalid"
    # the enrolment's wrong code and wrong password were events too
    assert [e["detail"].get("at") for e in sink.events if e["kind"] == "totp_failed"] == ["totp_enable", None]
    assert [e["detail"].get("at") for e in sink.events if e["kind"] == "login_failed"] == ["totp_enable"]
    totp_events = [e for e in sink.events if e["kind"] == "totp_failed" and "at" not in e["detail"]]
    assert len(totp_events) == 1 and totp_events[0]["user"] == "alice" and totp_events[0]["source_ip"]
    assert (await user_row(portal, "alice")).failed_logins == 1

    good = code_at(secret, clock())
    r = await login(portal, "alice", otp=good)
    assert r.status_code == 200, r.text
    # the same code again (same step, and the next step's window): refused once used
    r = await login(portal, "alice", otp=good)
    assert r.status_code == 401 and r.json()["error"] == "totp_invalid"
    clock.advance(30)
    r = await login(portal, "alice", otp=good)  # still inside the ±1 window, but used
    assert r.status_code == 401 and r.json()["error"] == "totp_invalid"
    clock.advance(31)
    r = await login(portal, "alice", otp=code_at(secret, clock()))
    assert r.status_code == 200, r.text
    headers = bearer(r.json()["access_token"])
    clock.advance(30)

    # turning it off needs the password and a fresh code
    r = await portal.client.post("/api/auth/totp/disable", headers=headers,
                                 json={"password": "Wrong-Password-1", "code": code_at(secret, clock())})
    assert r.status_code == 403 and r.json()["error"] == "wrong_password"
    r = await portal.client.post("/api/auth/totp/disable", headers=headers, json={"password": GOOD_PASSWORD,
                                                                                  "code": wrong})
    assert r.status_code == 422 and r.json()["error"] == "totp_invalid"
    r = await portal.client.post("/api/auth/totp/disable", headers=headers,
                                 json={"password": GOOD_PASSWORD, "code": code_at(secret, clock())})
    assert r.status_code == 200 and r.json()["enabled"] is False
    assert (await login(portal, "alice")).status_code == 200
    row = await user_row(portal, "alice")
    assert row.totp_secret is None and row.totp_enabled_at is None

    entries = await audit_actions(portal)
    actions = [e["action"] for e in entries]
    assert actions.count("auth.totp_enable") == 1 and actions.count("auth.totp_disable") == 1
    failed = [e for e in entries if e["action"] == "auth.login_failed"]
    assert [e["detail"]["reason"] for e in failed].count("totp_failed") == 3
    logins = [e for e in entries if e["action"] == "auth.login" and e["detail"].get("second_factor") == "totp"]
    assert len(logins) == 2
    # nothing secret anywhere on the log
    assert secret not in json.dumps(entries) and good not in json.dumps([e["detail"] for e in entries])


async def test_wrong_codes_are_throttled_and_locked_like_passwords(portal: Portal, clock: FakeClock,
                                                                   sink: ListSink) -> None:
    await portal.add_user("bob")
    secret = await enrol(portal, bearer(await portal.login("bob")), clock)
    wrong = "000000" if code_at(secret, clock()) != "000000" else "111111"
    statuses = []
    for _ in range(portal.settings.login_lock_failures):
        statuses.append((await login(portal, "bob", otp=wrong)).status_code)
        clock.advance(400)  # past any delay
    assert statuses[-1] == 423  # the address is locked out of the account
    assert "login_locked" in sink.kinds()
    r = await login(portal, "bob", otp=code_at(secret, clock()))
    assert r.status_code == 423  # even the right code: the lock holds, the code is not looked at


async def test_admin_resets_second_factor(audited: Portal, clock: FakeClock) -> None:
    portal = audited
    await portal.add_user("root")
    await portal.add_user("carol")
    await portal.add_user("mallory", permissions={"device.read"})
    carol = bearer(await portal.login("carol"))
    await enrol(portal, carol, clock)
    carol_id = (await user_row(portal, "carol")).id

    r = await portal.client.post(f"/api/users/{carol_id}/totp/reset", headers=bearer(await portal.login("mallory")))
    assert r.status_code == 403  # a curious user without user.manage
    assert (await user_row(portal, "carol")).totp_enabled_at is not None

    root = bearer(await portal.login("root"))
    r = await portal.client.get("/api/users", headers=root)
    listed = {u["username"]: u for u in r.json()["items"]}
    assert listed["carol"]["totp_enabled"] is True and listed["carol"]["last_login_at"]
    assert listed["carol"]["password_changed_at"]
    r = await portal.client.post(f"/api/users/{carol_id}/totp/reset", headers=root)
    assert r.status_code == 200 and r.json()["revoked_tokens"] >= 1
    assert (await portal.client.get("/api/auth/me", headers=carol)).status_code == 401  # sessions ended
    assert (await login(portal, "carol")).status_code == 200  # no code needed any more
    entry = [e for e in await audit_actions(portal) if e["action"] == "user.totp_reset"]
    assert len(entry) == 1 and entry[0]["detail"]["was_enabled"] is True and entry[0]["actor"]["name"] == "root"
    assert entry[0]["target"] == {"type": "user", "id": str(carol_id)}


async def test_role_requires_second_factor(portal: Portal, clock: FakeClock) -> None:
    portal.settings.totp_required_roles = "值班主管, role:dave"
    await portal.add_user("dave")
    await portal.add_user("erin")  # a role not listed: nothing changes for her
    r = await login(portal, "erin")
    assert r.status_code == 200 and r.json()["totp_setup_required"] is False
    assert (await portal.client.get("/api/devices", headers=bearer(r.json()["access_token"]))).status_code == 200

    r = await login(portal, "dave")
    assert r.status_code == 200 and r.json()["totp_setup_required"] is True
    dave = bearer(r.json()["access_token"])
    for path in ("/api/devices", "/api/auth/me", "/api/users", "/api/access/me"):
        r = await portal.client.get(path, headers=dave)
        assert r.status_code == 403 and r.json()["error"] == "totp_setup_required", path
        assert "两步验证" in r.json()["message"]
    state = (await portal.client.get("/api/auth/totp", headers=dave)).json()
    assert state["required"] is True and state["enabled"] is False
    secret = await enrol(portal, dave, clock)
    assert (await portal.client.get("/api/devices", headers=dave)).status_code == 200  # the same session, now whole
    # it cannot be turned off while the role requires it
    r = await portal.client.post("/api/auth/totp/disable", headers=dave,
                                 json={"password": GOOD_PASSWORD, "code": code_at(secret, clock())})
    assert r.status_code == 409 and r.json()["error"] == "totp_required_by_role"
    r = await login(portal, "dave")
    assert r.status_code == 401 and r.json()["error"] == "totp_required"
    r = await login(portal, "dave", otp=code_at(secret, clock()))
    assert r.status_code == 200 and r.json()["totp_setup_required"] is False


async def test_password_change_comes_before_enrolment(portal: Portal, clock: FakeClock) -> None:
    portal.settings.totp_required_roles = "role:frank"
    await portal.add_user("frank", must_change_password=True)
    r = await login(portal, "frank")
    assert r.json()["must_change_password"] is True and r.json()["totp_setup_required"] is True
    frank = bearer(r.json()["access_token"])
    r = await portal.client.post("/api/auth/totp/setup", headers=frank)
    assert r.status_code == 403 and r.json()["error"] == "password_change_required"
    r = await portal.client.post("/api/auth/password", headers=frank,
                                 json={"old_password": GOOD_PASSWORD, "new_password": "Another-Good-Pass-77"})
    assert r.status_code == 200
    assert (await portal.client.get("/api/devices", headers=frank)).json()["error"] == "totp_setup_required"
    await enrol(portal, frank, clock, "Another-Good-Pass-77")
    assert (await portal.client.get("/api/devices", headers=frank)).status_code == 200


async def test_sealed_secret_is_bound_to_its_user(portal: Portal, clock: FakeClock) -> None:
    """A database writer who copies one user's sealed secret onto another account gains nothing."""
    await portal.add_user("grace")
    await portal.add_user("heidi")
    secret = await enrol(portal, bearer(await portal.login("grace")), clock)
    grace = await user_row(portal, "grace")
    async with portal.sessionmaker() as session:
        await session.execute(update(User).where(User.username == "heidi").values(
            totp_secret=grace.totp_secret, totp_enabled_at=grace.totp_enabled_at))
        await session.commit()
    r = await login(portal, "heidi", otp=code_at(secret, clock()))
    assert r.status_code == 401 and r.json()["error"] == "totp_invalid"


async def test_concurrent_logins_with_one_code(portal: Portal, clock: FakeClock) -> None:
    """Two requests racing with the same code: exactly one gets a token."""
    import asyncio

    await portal.add_user("ivan")
    secret = await enrol(portal, bearer(await portal.login("ivan")), clock)
    code = code_at(secret, clock())
    clients = [client_from(portal, f"198.51.100.{i}") for i in (1, 2)]
    try:
        answers = await asyncio.gather(*(login(portal, "ivan", otp=code, client=c) for c in clients))
    finally:
        for c in clients:
            await c.aclose()
    assert sorted(r.status_code for r in answers) == [200, 401]
    async with portal.sessionmaker() as session:
        tokens = (await session.execute(select(AuthToken).join(User).where(User.username == "ivan"))).scalars().all()
    assert len(tokens) == 2  # the enrolment login and one of the two


def test_base32_secret_of_setup_is_an_rfc4648_key() -> None:
    secret = totp.new_secret()
    assert base64.b32decode(secret + "=" * (-len(secret) % 8)) == totp.decode_secret(secret)
