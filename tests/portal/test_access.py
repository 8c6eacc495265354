"""Access control (issue 6): permissions, data scope, validity window, users and roles administration."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from gbcore.db import utcnow
from gbcore.ids import ChannelRef
from ops_portal.access import Scope, load_access
from ops_portal.models import Role, User, UserRole
from ops_portal.users import ADMIN_ROLE_NAME, ADMIN_USERNAME, ensure_admin

from .conftest import GOOD_PASSWORD, Portal, bearer
from .org_data import CA1, CA2, CB1, CX1, IPC, NVR, Tree, build_tree


@pytest.fixture
async def tree(portal: Portal) -> Tree:
    return await build_tree(portal.registry)


async def _headers(portal: Portal, username: str, **kw) -> dict[str, str]:
    await portal.add_user(username, **kw)
    return bearer(await portal.login(username))


# ------------------------------------------------------------------------------------------ scope
def test_scope_allows_channel_by_own_node_then_device_node() -> None:
    scope = Scope(False, frozenset({1}), frozenset({ChannelRef("D1", "X")}))
    assert scope.allows(ChannelRef("D1", "X"), None, None)
    assert not scope.allows(ChannelRef("D2", "X"), None, None)  # the same channel id on another device
    assert scope.allows(ChannelRef("D1", "Y"), 1, 2)
    assert not scope.allows(ChannelRef("D1", "Y"), 2, 1)  # the channel's own node wins over its device's
    assert scope.allows(ChannelRef("D1", "Y"), None, 1)
    assert not scope.allows(ChannelRef("D1", "Y"), None, None)
    assert Scope.everything().allows(ChannelRef("any", "thing"), None, None)


async def test_scoped_user_sees_exactly_its_node(portal: Portal, tree: Tree) -> None:
    headers = await _headers(portal, "east", org_nodes=[tree.va])
    r = await portal.client.get("/api/channels", headers=headers)
    assert r.status_code == 200, r.text
    assert sorted(c["channel_id"] for c in r.json()["items"]) == [CA1, CA2]
    assert r.json()["total"] == 2

    r = await portal.client.get("/api/devices", headers=headers)
    assert [d["device_id"] for d in r.json()["items"]] == [NVR] and r.json()["total"] == 1
    r = await portal.client.get(f"/api/devices/{NVR}/channels", headers=headers)
    assert sorted(c["channel_id"] for c in r.json()["items"]) == [CA1, CA2]
    r = await portal.client.get(f"/api/devices/{IPC}", headers=headers)
    assert r.status_code == 403 and r.json()["error"] == "device_forbidden"
    # an unknown device answers like a forbidden one: ids do not reveal what exists
    r = await portal.client.get("/api/devices/34020000001320009999", headers=headers)
    assert r.status_code == 403 and r.json()["error"] == "device_forbidden"

    r = await portal.client.get("/api/org/tree", params={"members": "true"}, headers=headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert sorted(c["channel_id"] for c in body["channels"]) == [CA1, CA2]
    nodes = {n["id"]: n for n in body["nodes"]}
    assert set(nodes) == {tree.bg, tree.va}  # the granted node, and its parent as the path to it
    assert nodes[tree.va]["in_scope"] and not nodes[tree.bg]["in_scope"]
    assert nodes[tree.va]["channels"] == 2 and nodes[tree.va]["channels_online"] == 1
    assert nodes[tree.bg]["total_channels"] == 2 and nodes[tree.bg]["children"] == [tree.va]
    assert body["unassigned"]["channels"] == 0

    # live: outside the scope 403, inside the check passes (no media service here: 503)
    r = await portal.client.post(f"/api/channels/{CB1}/live", headers=headers, json={})
    assert r.status_code == 403 and r.json()["error"] == "channel_forbidden"
    r = await portal.client.post("/api/channels/34020000001310009999/live", headers=headers, json={})
    assert r.status_code == 403 and r.json()["error"] == "channel_forbidden"
    r = await portal.client.post(f"/api/channels/{CA1}/live", headers=headers, json={})
    assert r.status_code == 503, r.text

    r = await portal.client.get("/api/dashboard", headers=headers)
    assert r.status_code == 200
    d = r.json()
    assert (d["channels_total"], d["channels_online"], d["devices_total"]) == (2, 1, 1)
    assert d["online_rate"] == 0.5


async def test_full_scope_user_sees_everything_and_404s(portal: Portal, tree: Tree) -> None:
    headers = await _headers(portal, "boss")
    r = await portal.client.get("/api/channels", headers=headers)
    assert sorted(c["channel_id"] for c in r.json()["items"]) == sorted([CA1, CA2, CB1, CX1])
    r = await portal.client.get("/api/channels", params={"org_node_id": tree.bg, "has_location": "true"},
                                headers=headers)
    assert sorted(c["channel_id"] for c in r.json()["items"]) == sorted([CA1, CB1])
    r = await portal.client.get("/api/org/tree", headers=headers)
    body = r.json()
    assert body["unassigned"] == {"devices": 2, "channels": 1, "channels_online": 1}  # devices: no node yet
    assert {n["id"]: n["total_channels"] for n in body["nodes"]}[tree.bg] == 3
    assert body["channels"] is None
    r = await portal.client.post("/api/channels/34020000001310009999/live", headers=headers, json={})
    assert r.status_code == 404 and r.json()["error"] == "channel_not_found"


async def test_explicit_channel_grant(portal: Portal, tree: Tree) -> None:
    headers = await _headers(portal, "one", channels=[CB1])
    r = await portal.client.get("/api/channels", headers=headers)
    assert [c["channel_id"] for c in r.json()["items"]] == [CB1]
    r = await portal.client.get("/api/org/tree", params={"members": "true"}, headers=headers)
    assert [c["channel_id"] for c in r.json()["channels"]] == [CB1]
    r = await portal.client.post(f"/api/channels/{CA1}/live", headers=headers)
    assert r.status_code == 403


async def test_scope_includes_descendants(portal: Portal, tree: Tree) -> None:
    headers = await _headers(portal, "top", org_nodes=[tree.bg])
    r = await portal.client.get("/api/channels", headers=headers)
    assert sorted(c["channel_id"] for c in r.json()["items"]) == sorted([CA1, CA2, CB1])


async def test_permission_is_checked(portal: Portal, tree: Tree) -> None:
    headers = await _headers(portal, "viewer", permissions={"live.view"})
    r = await portal.client.get("/api/devices", headers=headers)
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    assert "device.read" in r.json()["message"]
    r = await portal.client.get("/api/access/me", headers=headers)
    assert r.status_code == 200 and r.json()["permissions"] == ["live.view"] and r.json()["full_scope"]


# ------------------------------------------------------------------------------------------ validity
async def test_validity_window(portal: Portal) -> None:
    now = utcnow()
    await portal.add_user("late", valid_from=now + timedelta(days=1))
    r = await portal.client.post("/api/auth/login", json={"username": "late", "password": GOOD_PASSWORD})
    assert r.status_code == 403 and r.json()["error"] == "account_not_yet_valid"
    assert "账户尚未生效" in r.json()["message"] and "not valid before" in r.json()["message"]

    await portal.add_user("gone", valid_until=now - timedelta(minutes=1))
    r = await portal.client.post("/api/auth/login", json={"username": "gone", "password": GOOD_PASSWORD})
    assert r.status_code == 403 and r.json()["error"] == "account_expired"
    assert "账户已过有效期" in r.json()["message"] and "expired" in r.json()["message"]
    # a wrong password still says only "wrong credentials": the window is not revealed to guessers
    r = await portal.client.post("/api/auth/login", json={"username": "gone", "password": "Wrong-Password-1"})
    assert r.status_code == 401

    # a token stops working once the window ends
    await portal.add_user("soon")
    headers = bearer(await portal.login("soon"))
    assert (await portal.client.get("/api/devices", headers=headers)).status_code == 200
    async with portal.sessionmaker() as session:
        user = (await session.execute(select(User).where(User.username == "soon"))).scalar_one()
        user.valid_until = utcnow() - timedelta(seconds=1)
        await session.commit()
        assert (await load_access(session, user)).scope.empty
    r = await portal.client.get("/api/devices", headers=headers)
    assert r.status_code == 401 and r.json()["error"] == "account_expired"


# ------------------------------------------------------------------------------------------ admin
async def test_admin_gets_builtin_role(portal: Portal) -> None:
    password = await ensure_admin(portal.sessionmaker, portal.settings)
    async with portal.sessionmaker() as session:
        admin = (await session.execute(select(User).where(User.username == ADMIN_USERNAME))).scalar_one()
        access = await load_access(session, admin)
    assert access.roles == (ADMIN_ROLE_NAME,) and access.scope.all
    from ops_portal.deps import PERMISSIONS

    assert access.permissions == PERMISSIONS
    # an admin left without a role (a database from before roles) gets it back at start
    async with portal.sessionmaker() as session:
        await session.execute(UserRole.__table__.delete())
        await session.commit()
    assert await ensure_admin(portal.sessionmaker, portal.settings) is None
    async with portal.sessionmaker() as session:
        assert (await load_access(session, admin)).roles == (ADMIN_ROLE_NAME,)
    assert password


async def _admin(portal: Portal) -> dict[str, str]:
    password = await ensure_admin(portal.sessionmaker, portal.settings)
    token = await portal.login(ADMIN_USERNAME, password)
    new = "Qz7-Vortex-Lamp-42"
    r = await portal.client.post("/api/auth/password", headers=bearer(token),
                                 json={"old_password": password, "new_password": new})
    assert r.status_code == 200
    return bearer(token)


async def test_user_lifecycle(audited: Portal) -> None:
    portal = audited
    admin = await _admin(portal)
    r = await portal.client.get("/api/roles", headers=admin)
    builtin = [x for x in r.json()["items"] if x["builtin"]][0]
    r = await portal.client.post("/api/roles", headers=admin, json={
        "name": "值班员", "permissions": ["live.view", "device.read"], "full_scope": True})
    assert r.status_code == 201, r.text
    duty = r.json()["id"]

    r = await portal.client.post("/api/users", headers=admin, json={
        "username": "carol", "display_name": "卡罗", "phone": "13800000000", "ptz_level": 7, "role_ids": [duty]})
    assert r.status_code == 201, r.text
    created = r.json()
    uid, otp = created["user"]["id"], created["one_time_password"]
    assert created["user"]["must_change_password"] and created["user"]["roles"] == ["值班员"]
    assert (await portal.client.post("/api/users", headers=admin, json={"username": "carol"})).status_code == 409
    r = await portal.client.post("/api/users", headers=admin, json={"username": "weak", "password": "123456"})
    assert r.status_code == 422 and r.json()["error"] == "weak_password"

    # first login: must change the password, then works with the role's permissions only
    token = await portal.login("carol", otp)
    carol = bearer(token)
    assert (await portal.client.get("/api/devices", headers=carol)).status_code == 403  # password change first
    r = await portal.client.post("/api/auth/password", headers=carol,
                                 json={"old_password": otp, "new_password": "Tulip-Marble-Orbit-58"})
    assert r.status_code == 200
    assert (await portal.client.get("/api/devices", headers=carol)).status_code == 200
    assert (await portal.client.get("/api/users", headers=carol)).status_code == 403

    # a manager cannot hand out what it does not hold
    r = await portal.client.patch(f"/api/users/{uid}", headers=admin, json={"ptz_level": 9, "valid_until": None})
    assert r.status_code == 200 and r.json()["ptz_level"] == 9

    # disable: tokens stop working; enable again
    r = await portal.client.patch(f"/api/users/{uid}", headers=admin, json={"disabled": True})
    assert r.status_code == 200 and r.json()["disabled"]
    assert (await portal.client.get("/api/devices", headers=carol)).status_code == 401
    await portal.client.patch(f"/api/users/{uid}", headers=admin, json={"disabled": False})

    # reset: a new one-time password, sessions ended
    carol = bearer(await portal.login("carol", "Tulip-Marble-Orbit-58"))
    r = await portal.client.post(f"/api/users/{uid}/password", headers=admin)
    assert r.status_code == 200 and r.json()["revoked_tokens"] == 1
    assert (await portal.client.get("/api/devices", headers=carol)).status_code == 401
    carol = bearer(await portal.login("carol", r.json()["one_time_password"]))
    r = await portal.client.post(f"/api/users/{uid}/revoke", headers=admin)
    assert r.json()["revoked_tokens"] == 1
    assert (await portal.client.get("/api/auth/me", headers=carol)).status_code == 401

    # the built-in role can be neither deleted nor changed
    assert (await portal.client.delete(f"/api/roles/{builtin['id']}", headers=admin)).status_code == 409
    r = await portal.client.patch(f"/api/roles/{builtin['id']}", headers=admin, json={"permissions": []})
    assert r.status_code == 409 and r.json()["error"] == "builtin_role"

    assert (await portal.client.delete(f"/api/users/{uid}", headers=admin)).status_code == 204
    assert (await portal.client.get(f"/api/users/{uid}", headers=admin)).status_code == 404
    assert (await portal.client.delete(f"/api/roles/{duty}", headers=admin)).status_code == 204

    r = await portal.client.get("/api/audit/entries", headers=admin, params={"limit": 200})
    actions = [e["action"] for e in r.json()["items"]]
    for action in ("role.create", "user.create", "grant.add", "user.update", "user.disable", "user.enable",
                   "user.password_reset", "user.sessions_revoke", "user.delete", "role.delete"):
        assert action in actions, action


async def test_cannot_lock_everybody_out(portal: Portal) -> None:
    admin = await _admin(portal)
    async with portal.sessionmaker() as session:
        admin_id = (await session.execute(select(User.id).where(User.username == ADMIN_USERNAME))).scalar_one()
    # the only manager: cannot be disabled, expired, stripped of its role
    r = await portal.client.patch(f"/api/users/{admin_id}", headers=admin, json={"disabled": True})
    assert r.status_code == 409 and r.json()["error"] == "last_manager"
    r = await portal.client.patch(f"/api/users/{admin_id}", headers=admin,
                                  json={"valid_until": (utcnow() - timedelta(days=1)).isoformat()})
    assert r.status_code == 409
    r = await portal.client.patch(f"/api/users/{admin_id}", headers=admin, json={"role_ids": []})
    assert r.status_code == 409
    assert (await portal.client.delete(f"/api/users/{admin_id}", headers=admin)).status_code == 409
    assert (await portal.client.get("/api/users", headers=admin)).status_code == 200  # nothing changed
    async with portal.sessionmaker() as session:
        admin_user = await session.get(User, admin_id)
        assert not admin_user.disabled and admin_user.valid_until is None


async def test_no_escalation(portal: Portal, tree: Tree) -> None:
    await _admin(portal)
    # a user manager limited to VA, without role.manage
    headers = await _headers(portal, "lesser", permissions={"user.manage", "device.read"}, org_nodes=[tree.va])
    async with portal.sessionmaker() as session:
        builtin = (await session.execute(select(Role).where(Role.builtin.is_(True)))).scalar_one()
        admin_id = (await session.execute(select(User.id).where(User.username == ADMIN_USERNAME))).scalar_one()
    r = await portal.client.post("/api/users", headers=headers, json={"username": "mallory", "role_ids": [builtin.id]})
    assert r.status_code == 403 and r.json()["error"] == "grant_exceeds_own"
    # nor take over the administrator's account
    r = await portal.client.post(f"/api/users/{admin_id}/password", headers=headers)
    assert r.status_code == 403
    r = await portal.client.post("/api/roles", headers=headers, json={"name": "x"})
    assert r.status_code == 403 and r.json()["error"] == "forbidden"

    role_mgr = await _headers(portal, "rolemgr", permissions={"role.manage", "live.view"}, org_nodes=[tree.va])
    r = await portal.client.post("/api/roles", headers=role_mgr, json={"name": "wide", "full_scope": True})
    assert r.status_code == 403 and r.json()["error"] == "grant_exceeds_own"
    r = await portal.client.post("/api/roles", headers=role_mgr, json={"name": "west", "org_node_ids": [tree.vb]})
    assert r.status_code == 403
    r = await portal.client.post("/api/roles", headers=role_mgr, json={"name": "more", "permissions": ["audit.read"]})
    assert r.status_code == 403
    r = await portal.client.post("/api/roles", headers=role_mgr,
                                 json={"name": "east-live", "permissions": ["live.view"], "org_node_ids": [tree.va],
                                       "channel_ids": [CA1]})
    assert r.status_code == 201, r.text
    # issue 11: role scopes list channels as {device_id, channel_id} (a unique bare id is still accepted)
    assert r.json()["org_node_ids"] == [tree.va] and r.json()["channels"] == [{"device_id": NVR, "channel_id": CA1}]
