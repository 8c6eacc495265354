"""Issue 11, channel identity: a channel is (device id, channel id).  Two NVRs reporting the same channel id
are two cameras: grants, scope checks, the shorthand route (409 ambiguous_channel), organisation
assignment and tickets keep them apart."""

from __future__ import annotations

from datetime import timedelta

import pytest

from device_registry.events import CatalogReported, ChannelInfo
from gbcore.ids import ChannelRef

from .conftest import Portal, bearer
from .org_data import CA1, CB1, NVR, T0, Tree, _registered, build_tree

NVR2 = "34020000001180000002"  # another tenant's NVR shipping the same default channel ids
A = ChannelRef(NVR, CA1)
B = ChannelRef(NVR2, CA1)


@pytest.fixture
async def tree(portal: Portal) -> Tree:
    t = await build_tree(portal.registry)
    await portal.registry.apply([
        _registered(NVR2, T0 + timedelta(seconds=10), "198.51.100.20:5060"),
        CatalogReported(NVR2, T0 + timedelta(seconds=11),
                        (ChannelInfo(CA1, name="乙方大门", status="ON"), ChannelInfo(CB1, name="乙方后门", status="ON")),
                        True, "complete 2/2"),
    ])
    return t


async def _headers(portal: Portal, username: str, **kw) -> dict[str, str]:
    await portal.add_user(username, **kw)
    return bearer(await portal.login(username))


def _live(ref: ChannelRef | str) -> str:
    if isinstance(ref, str):
        return f"/api/channels/{ref}/live"
    return f"/api/devices/{ref.device_id}/channels/{ref.channel_id}/live"


async def test_the_shorthand_answers_409_when_the_id_is_not_unique(portal: Portal, tree: Tree) -> None:
    admin = await _headers(portal, "boss")
    for route in (_live(CA1), f"/api/channels/{CA1}/downloads"):
        r = await portal.client.post(route, headers=admin, json={"seconds": 5})
        assert r.status_code == 409, r.text
        assert r.json()["error"] == "ambiguous_channel"
        assert r.json()["devices"] == [NVR, NVR2]
        assert "通道编码不唯一" in r.json()["message"] and "not unique" in r.json()["message"]
    # the unambiguous form passes the scope check (and then finds no media service in this test app)
    for ref in (A, B):
        r = await portal.client.post(_live(ref), headers=admin)
        assert r.status_code == 503 and r.json()["error"] == "media_unavailable", r.text
        r = await portal.client.post(f"/api/devices/{ref.device_id}/channels/{ref.channel_id}/downloads",
                                     headers=admin, json={"seconds": 5})
        assert r.status_code == 503 and r.json()["error"] == "media_unavailable", r.text
    # an id that only one device has still works as the shorthand; an unknown camera is 404 for full scope
    r = await portal.client.post(_live("34020000001310000009"), headers=admin)
    assert r.status_code == 503
    r = await portal.client.post(_live(ChannelRef(NVR2, "34020000001310000009")), headers=admin)
    assert r.status_code == 404 and r.json()["error"] == "channel_not_found"


async def test_each_tenant_reaches_only_its_own_camera(portal: Portal, tree: Tree) -> None:
    tenant_a = await _headers(portal, "tenant-a", channels=[A])
    tenant_b = await _headers(portal, "tenant-b", channels=[B])
    for headers, mine, other in ((tenant_a, A, B), (tenant_b, B, A)):
        # the shorthand resolves to the one camera in the caller's scope: no 409, no hint of the other device
        r = await portal.client.post(_live(CA1), headers=headers)
        assert r.status_code == 503, r.text
        r = await portal.client.post(_live(mine), headers=headers)
        assert r.status_code == 503, r.text
        r = await portal.client.post(_live(other), headers=headers)
        assert r.status_code == 403 and r.json()["error"] == "channel_forbidden"
        r = await portal.client.post(f"/api/devices/{other.device_id}/channels/{CA1}/downloads", headers=headers,
                                     json={"seconds": 5})
        assert r.status_code == 403
        # lists: exactly the own camera, with its device
        r = await portal.client.get("/api/channels", headers=headers)
        assert [(c["device_id"], c["channel_id"]) for c in r.json()["items"]] == [tuple(mine)]
        r = await portal.client.get("/api/devices", headers=headers)
        assert [d["device_id"] for d in r.json()["items"]] == [mine.device_id]
        r = await portal.client.get(f"/api/devices/{other.device_id}/channels", headers=headers)
        assert r.status_code == 403
        r = await portal.client.get(f"/api/devices/{mine.device_id}/channels", headers=headers)
        assert [(c["device_id"], c["channel_id"]) for c in r.json()["items"]] == [tuple(mine)]
        r = await portal.client.get("/api/access/me", headers=headers)
        assert r.json()["channels"] == [mine.as_dict()]


async def test_a_scoped_user_with_both_cameras_gets_409_listing_only_its_devices(portal: Portal, tree: Tree) -> None:
    both = await _headers(portal, "both", channels=[A, B])
    r = await portal.client.post(_live(CA1), headers=both)
    assert r.status_code == 409 and r.json()["devices"] == [NVR, NVR2]
    # through the organisation tree: NVR's CA1 via its node VA, NVR2's CB1 granted; CB1 is also NVR's (VB)
    mixed = await _headers(portal, "mixed", org_nodes=[tree.va], channels=[ChannelRef(NVR2, CB1)])
    r = await portal.client.post(_live(CA1), headers=mixed)
    assert r.status_code == 503  # only NVR's CA1 is visible to this user
    r = await portal.client.post(_live(CB1), headers=mixed)
    assert r.status_code == 503  # only NVR2's CB1 (NVR's CB1 is on VB, out of scope)
    r = await portal.client.post(_live(ChannelRef(NVR, CB1)), headers=mixed)
    assert r.status_code == 403


async def test_role_scopes_name_the_device(portal: Portal, tree: Tree) -> None:
    admin = await _headers(portal, "boss")
    r = await portal.client.post("/api/roles", headers=admin, json={"name": "ambiguous", "channel_ids": [CA1]})
    assert r.status_code == 409 and r.json()["error"] == "ambiguous_channel"
    assert r.json()["devices"] == [NVR, NVR2]
    r = await portal.client.post("/api/roles", headers=admin,
                                 json={"name": "tenant-b", "permissions": ["live.view"], "channels": [B.as_dict()]})
    assert r.status_code == 201, r.text
    role = r.json()
    assert role["channels"] == [{"device_id": NVR2, "channel_id": CA1}]
    # a unique bare id is still accepted, and mixed with objects
    r = await portal.client.patch(f"/api/roles/{role['id']}", headers=admin,
                                  json={"channels": [B.as_dict(), "34020000001310000009"]})
    assert r.status_code == 200, r.text
    assert r.json()["channels"] == [{"device_id": NVR2, "channel_id": CA1},
                                    {"device_id": "34020000001320000009", "channel_id": "34020000001310000009"}]
    r = await portal.client.get(f"/api/roles/{role['id']}", headers=admin)
    assert r.json()["channels"][0] == {"device_id": NVR2, "channel_id": CA1}

    # a manager holding NVR's CA1 cannot hand out NVR2's camera of the same id
    mgr = await _headers(portal, "mgr", permissions={"role.manage", "live.view"}, channels=[A])
    r = await portal.client.post("/api/roles", headers=mgr, json={"name": "steal", "channels": [B.as_dict()]})
    assert r.status_code == 403 and r.json()["error"] == "grant_exceeds_own"
    r = await portal.client.post("/api/roles", headers=mgr, json={"name": "own", "channels": [CA1]})
    assert r.status_code == 201, r.text  # the bare id resolves among the manager's own channels
    assert r.json()["channels"] == [A.as_dict()]


async def test_org_assignment_moves_only_that_devices_channel(portal: Portal, tree: Tree) -> None:
    admin = await _headers(portal, "boss")
    r = await portal.client.post(f"/api/org/nodes/{tree.vb}/members", headers=admin, json={"channel_ids": [CA1]})
    assert r.status_code == 409 and r.json()["error"] == "ambiguous_channel"
    r = await portal.client.post(f"/api/org/nodes/{tree.vb}/members", headers=admin, json={"channels": [B.as_dict()]})
    assert r.status_code == 200, r.text
    assert r.json()["channels"] == 1
    a = await portal.registry.get_channel(A)
    b = await portal.registry.get_channel(B)
    assert a.org_node_id == tree.va and b.org_node_id == tree.vb
    west = await _headers(portal, "west", org_nodes=[tree.vb])
    r = await portal.client.post(_live(CA1), headers=west)
    assert r.status_code == 503  # NVR2's CA1 is now the only CA1 of VB


async def test_tickets_keep_the_two_cameras_apart(portal: Portal, tree: Tree) -> None:
    admin = await _headers(portal, "boss")
    tenant_a = await _headers(portal, "tenant-a", channels=[A])
    tenant_b = await _headers(portal, "tenant-b", channels=[B])
    r = await portal.client.post("/api/tickets", headers=admin, json={"kind": "fault", "channel_id": CA1})
    assert r.status_code == 409 and r.json()["devices"] == [NVR, NVR2]
    r = await portal.client.post("/api/tickets", headers=tenant_b, json={"kind": "fault", "channel_id": CA1,
                                                                           "note": "乙方大门黑屏"})
    assert r.status_code == 201, r.text
    ticket_b = r.json()
    assert (ticket_b["device_id"], ticket_b["channel_id"]) == (NVR2, CA1)
    r = await portal.client.post("/api/tickets", headers=tenant_a,
                                 json={"kind": "fault", "channel_id": CA1, "device_id": NVR2})
    assert r.status_code == 403
    r = await portal.client.post("/api/tickets", headers=tenant_a,
                                 json={"kind": "fault", "channel_id": CA1, "device_id": NVR})
    assert r.status_code == 201
    ticket_a = r.json()
    r = await portal.client.get("/api/tickets", headers=tenant_a)
    assert [t["id"] for t in r.json()["items"]] == [ticket_a["id"]]
    r = await portal.client.get("/api/tickets", headers=tenant_b)
    assert [t["id"] for t in r.json()["items"]] == [ticket_b["id"]]
    r = await portal.client.get(f"/api/tickets/{ticket_b['id']}", headers=tenant_a)
    assert r.status_code == 403
    r = await portal.client.get("/api/tickets", headers=admin, params={"channel_id": CA1, "device_id": NVR2})
    assert [t["id"] for t in r.json()["items"]] == [ticket_b["id"]]
