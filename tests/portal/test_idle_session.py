"""Idle session timeout (issue 16, GB/T 22239 level 2): a token unused for ``GBOPS_SESSION_IDLE_MINUTES`` is
refused with 401 ``session_idle``; its use is recorded at most once a minute.  And the token misuse the
security monitor hears of: forged, revoked, expired (lifetime or idle) tokens and access outside the
account's validity window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from ops_portal.models import AuthToken, User
from security.events import ListSink

from .conftest import Portal, bearer
from .test_login_lockout import FakeClock


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    from ops_portal import auth, deps

    fake = FakeClock()
    monkeypatch.setattr(auth, "utcnow", fake)
    monkeypatch.setattr(deps, "utcnow", fake)
    return fake


@pytest.fixture
def sink(portal: Portal) -> ListSink:
    portal.app.state.security = ListSink()
    return portal.app.state.security


async def last_used(portal: Portal) -> datetime | None:
    async with portal.sessionmaker() as session:
        return (await session.execute(select(AuthToken.last_used_at).order_by(AuthToken.id.desc()).limit(1))).scalar()


async def test_idle_session_ends(portal: Portal, clock: FakeClock, sink: ListSink) -> None:
    assert portal.settings.session_idle_minutes == 30  # the default
    await portal.add_user("alice")
    alice = bearer(await portal.login("alice"))
    logged_in = await last_used(portal)
    assert logged_in is not None

    # used within the minute: nothing written
    clock.advance(20)
    assert (await portal.client.get("/api/devices", headers=alice)).status_code == 200
    assert await last_used(portal) == logged_in
    # used 29 minutes later: still alive, and the use is recorded
    clock.advance(29 * 60)
    assert (await portal.client.get("/api/devices", headers=alice)).status_code == 200
    touched = await last_used(portal)
    assert touched is not None and touched - logged_in >= timedelta(minutes=29)
    clock.advance(29 * 60)  # 58 minutes after login, 29 after the last use
    assert (await portal.client.get("/api/auth/me", headers=alice)).status_code == 200

    clock.advance(30 * 60 + 1)
    r = await portal.client.get("/api/devices", headers=alice)
    assert r.status_code == 401
    assert r.json() == {"error": "session_idle", "message": "会话空闲超时，请重新登录 / session idle timeout, log in again"}
    assert r.headers["www-authenticate"].startswith("Bearer")
    # an idle token stays dead (its refusals do not revive it)
    assert (await portal.client.get("/api/auth/me", headers=alice)).json()["error"] == "session_idle"
    idle = [e for e in sink.events if e["kind"] == "token_expired"]
    assert idle and idle[0]["detail"]["reason"] == "idle" and idle[0]["user"] == "alice"
    assert idle[0]["source_ip"] == "127.0.0.1"

    # a new login is a new session
    assert (await portal.client.get("/api/devices", headers=bearer(await portal.login("alice")))).status_code == 200


async def test_idle_limit_is_a_setting(portal: Portal, clock: FakeClock) -> None:
    portal.settings.session_idle_minutes = 0  # off: only the token's lifetime ends it
    await portal.add_user("bob")
    bob = bearer(await portal.login("bob"))
    clock.advance(11 * 3600)
    assert (await portal.client.get("/api/devices", headers=bob)).status_code == 200
    portal.settings.session_idle_minutes = 5
    clock.advance(5 * 60)
    assert (await portal.client.get("/api/devices", headers=bob)).json()["error"] == "session_idle"


async def test_token_misuse_events(portal: Portal, clock: FakeClock, sink: ListSink) -> None:
    await portal.add_user("carol")
    r = await portal.client.get("/api/devices", headers=bearer("not-a-token-anybody-issued"))
    assert r.status_code == 401 and r.json()["error"] == "invalid_token"
    assert sink.events[-1]["kind"] == "token_forged" and sink.events[-1]["user"] is None

    carol = bearer(await portal.login("carol"))
    assert (await portal.client.post("/api/auth/logout", headers=carol)).status_code == 204
    assert (await portal.client.get("/api/devices", headers=carol)).status_code == 401
    assert sink.events[-1]["kind"] == "token_revoked" and sink.events[-1]["user"] == "carol"

    carol = bearer(await portal.login("carol"))
    async with portal.sessionmaker() as session:
        await session.execute(update(AuthToken).where(AuthToken.revoked_at.is_(None)).values(
            expires_at=datetime.now(UTC) - timedelta(seconds=1)))
        await session.commit()
    assert (await portal.client.get("/api/devices", headers=carol)).status_code == 401
    assert sink.events[-1]["kind"] == "token_expired" and sink.events[-1]["detail"]["reason"] == "lifetime"

    carol = bearer(await portal.login("carol"))
    async with portal.sessionmaker() as session:
        await session.execute(update(User).where(User.username == "carol").values(
            valid_until=datetime.now(UTC) + timedelta(minutes=10)))
        await session.commit()
    clock.advance(11 * 60)
    r = await portal.client.get("/api/devices", headers=carol)
    assert r.status_code == 401 and r.json()["error"] == "account_expired"
    assert sink.events[-1]["kind"] == "outside_validity" and sink.events[-1]["detail"]["at"] == "request"
    r = await portal.client.post("/api/auth/login", json={"username": "carol", "password": "Correct-Horse-42"})
    assert r.status_code == 403
    assert sink.events[-1]["kind"] == "outside_validity" and sink.events[-1]["detail"]["at"] == "login"
    assert all(e["source_ip"] == "127.0.0.1" for e in sink.events)


async def test_login_failure_events(portal: Portal, clock: FakeClock, sink: ListSink) -> None:
    await portal.add_user("dave")
    await portal.add_user("olga", disabled=True)

    async def attempt(username: str, password: str) -> int:
        r = await portal.client.post("/api/auth/login", json={"username": username, "password": password})
        return r.status_code

    assert await attempt("nobody", "Wrong-Password-1") == 401
    assert sink.events[-1]["kind"] == "login_failed" and sink.events[-1]["user"] is None  # the name is not kept
    assert sink.events[-1]["detail"]["reason"] == "unknown_user"
    assert await attempt("olga", "Correct-Horse-42") == 403
    assert sink.events[-1]["kind"] == "login_failed" and sink.events[-1]["detail"]["reason"] == "disabled"

    statuses = []
    for _ in range(portal.settings.login_lock_failures):
        statuses.append(await attempt("dave", "Wrong-Password-1"))
        clock.advance(400)
    assert statuses[-1] == 423
    dave = [e for e in sink.events if e["user"] == "dave"]
    assert [e["kind"] for e in dave].count("login_failed") == portal.settings.login_lock_failures
    locked = [e for e in dave if e["kind"] == "login_locked"]
    assert len(locked) == 1 and locked[0]["detail"]["scope"] == "address"
    assert await attempt("dave", "Correct-Horse-42") == 423  # refused while locked: another event
    assert sink.events[-1]["kind"] == "login_locked" and sink.events[-1]["user"] == "dave"
    assert "Correct-Horse-42" not in repr(sink.events) and "Wrong-Password-1" not in repr(sink.events)


async def test_idle_token_opens_no_output(portal: Portal, clock: FakeClock) -> None:
    """The FLV/WHEP outputs accept a bearer token too: an idle one is refused there as well, and asking for
    an output is not a use that keeps the session alive."""
    from types import SimpleNamespace

    portal.app.state.media = SimpleNamespace(sessions={})  # a media service with no live session
    await portal.add_user("carol")
    carol = bearer(await portal.login("carol"))
    clock.advance(10 * 60)
    # a live session that does not exist: a valid token gets 404, and the request does not touch the token
    assert (await portal.client.get("/flv/nosuchsession.flv", headers=carol)).status_code == 404
    before = await last_used(portal)
    clock.advance(21 * 60)  # 31 minutes after the login, 21 after the FLV request
    assert await last_used(portal) == before
    r = await portal.client.get("/flv/nosuchsession.flv", headers=carol)
    assert r.status_code == 401 and r.json()["error"] == "session_idle"
