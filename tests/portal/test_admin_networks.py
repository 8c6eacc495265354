"""Management access limited by address (issue 16, GB/T 22239 level 2): with ``GBOPS_ADMIN_ALLOW_CIDRS`` set,
a request that needs an administration-level permission from anywhere else answers 403
``admin_network_refused`` (a security event ``admin_network``), and a holder of such a permission cannot
even log in from there.  ``X-Forwarded-For`` counts only from ``GBOPS_TRUSTED_PROXIES``."""

from __future__ import annotations

import json

import httpx
import pytest

from security.events import ListSink

from .conftest import GOOD_PASSWORD, Portal, bearer

INSIDE = "10.20.30.40"
OUTSIDE = "203.0.113.5"
PROXY = "192.0.2.1"
STRANGER_PROXY = "198.51.100.7"


def client_from(portal: Portal, address: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=portal.app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://portal.test")


async def login(client: httpx.AsyncClient, username: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return await client.post("/api/auth/login", json={"username": username, "password": GOOD_PASSWORD},
                             headers=headers or {})


@pytest.fixture
def sink(portal: Portal) -> ListSink:
    portal.app.state.security = ListSink()
    return portal.app.state.security


async def test_management_only_from_allowed_networks(audited: Portal) -> None:
    portal = audited
    sink = portal.app.state.security = ListSink()
    portal.settings.admin_allow_cidrs = "10.0.0.0/8, 2001:db8::/32"
    await portal.add_user("root")  # every permission
    await portal.add_user("auditor", permissions={"security.read", "device.read"})  # one of the admin level
    await portal.add_user("viewer", permissions={"device.read", "live.view"})
    inside, outside = client_from(portal, INSIDE), client_from(portal, OUTSIDE)
    try:
        # an operator without administration permissions works from anywhere
        r = await login(outside, "viewer")
        assert r.status_code == 200
        assert (await outside.get("/api/devices", headers=bearer(r.json()["access_token"]))).status_code == 200

        # administrators cannot log in from outside (the password was right: the answer says why)
        for name in ("root", "auditor"):
            r = await login(outside, name)
            assert r.status_code == 403, name
            assert r.json()["error"] == "admin_network_refused"
            assert "管理操作只允许从指定的管理网络进行" in r.json()["message"]
        events = [e for e in sink.events if e["kind"] == "admin_network"]
        assert [(e["user"], e["source_ip"]) for e in events] == [("root", OUTSIDE), ("auditor", OUTSIDE)]
        entries = [json.loads(e.data) async for e in portal.audit.store.iter_entries(0, 10**9)]
        refused = [e for e in entries if e["action"] == "auth.login_failed"]
        assert {e["detail"]["reason"] for e in refused} == {"admin_network"}
        assert {e["client_ip"] for e in refused} == {OUTSIDE}

        # from inside they can, and manage
        r = await login(inside, "root")
        assert r.status_code == 200
        root = bearer(r.json()["access_token"])
        assert (await inside.get("/api/users", headers=root)).status_code == 200

        # the same token carried outside: management refused, functions still work
        r = await outside.get("/api/users", headers=root)
        assert r.status_code == 403 and r.json()["error"] == "admin_network_refused"
        assert sink.events[-1]["kind"] == "admin_network" and sink.events[-1]["detail"]["permission"] == "user.manage"
        assert sink.events[-1]["detail"]["route"] == "GET /api/users" and sink.events[-1]["user"] == "root"
        r = await outside.post("/api/roles", headers=root, json={"name": "sneaky"})
        assert r.status_code == 403 and r.json()["error"] == "admin_network_refused"
        assert (await outside.get("/api/devices", headers=root)).status_code == 200

        # IPv6 ranges count too
        r = await login(client_from(portal, "2001:db8::7"), "root")
        assert r.status_code == 200
    finally:
        await inside.aclose()
        await outside.aclose()


async def test_forwarded_for_only_from_trusted_proxies(portal: Portal, sink: ListSink) -> None:
    portal.settings.admin_allow_cidrs = "10.0.0.0/8"
    portal.settings.trusted_proxies = PROXY
    await portal.add_user("root")
    proxy, stranger = client_from(portal, PROXY), client_from(portal, STRANGER_PROXY)
    try:
        # the trusted proxy vouches for an inside client
        r = await login(proxy, "root", {"X-Forwarded-For": INSIDE})
        assert r.status_code == 200
        root = bearer(r.json()["access_token"])
        assert (await proxy.get("/api/users", headers={**root, "X-Forwarded-For": INSIDE})).status_code == 200
        # ... and for an outside one: refused, and the event names the real client
        r = await proxy.get("/api/users", headers={**root, "X-Forwarded-For": f"{INSIDE}, {OUTSIDE}"})
        assert r.status_code == 403 and r.json()["error"] == "admin_network_refused"
        assert sink.events[-1]["kind"] == "admin_network" and sink.events[-1]["source_ip"] == OUTSIDE
        r = await login(proxy, "root", {"X-Forwarded-For": OUTSIDE})
        assert r.status_code == 403

        # anybody else writing the header is not believed: the peer is the client
        r = await login(stranger, "root", {"X-Forwarded-For": INSIDE})
        assert r.status_code == 403 and r.json()["error"] == "admin_network_refused"
        assert sink.events[-1]["source_ip"] == STRANGER_PROXY
        r = await stranger.get("/api/users", headers={**root, "X-Forwarded-For": INSIDE})
        assert r.status_code == 403 and r.json()["error"] == "admin_network_refused"
        # the proxy itself is not inside either (no header: the proxy's own address)
        assert (await proxy.get("/api/users", headers=root)).status_code == 403
    finally:
        await proxy.aclose()
        await stranger.aclose()


async def test_no_setting_means_everywhere(portal: Portal, sink: ListSink) -> None:
    assert portal.settings.admin_allow_cidrs == ""
    await portal.add_user("root")
    outside = client_from(portal, OUTSIDE)
    try:
        r = await login(outside, "root")
        assert r.status_code == 200
        assert (await outside.get("/api/users", headers=bearer(r.json()["access_token"]))).status_code == 200
    finally:
        await outside.aclose()
    assert "admin_network" not in sink.kinds()


def test_malformed_setting_is_refused_at_start(tmp_path) -> None:
    from pydantic import ValidationError

    from gbcore.settings import Settings

    with pytest.raises(ValidationError, match="GBOPS_ADMIN_ALLOW_CIDRS"):
        Settings(data_dir=tmp_path, admin_allow_cidrs="10.0.0.0/8, intranet")
