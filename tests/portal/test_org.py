"""Organisation tree administration: create, rename, move (no cycles), assign members, delete."""

from __future__ import annotations

from .conftest import Portal, bearer
from .org_data import CA1, CX1, IPC, build_tree


async def test_org_node_lifecycle(audited: Portal) -> None:
    portal = audited
    tree = await build_tree(portal.registry)
    await portal.add_user("boss")
    h = bearer(await portal.login("boss"))
    r = await portal.client.post("/api/org/nodes", headers=h, json={"name": "南区", "parent_id": tree.bg})
    assert r.status_code == 201, r.text
    south = r.json()["id"]
    assert r.json()["kind"] == "manual" and r.json()["parent_id"] == tree.bg
    r = await portal.client.post("/api/org/nodes", headers=h, json={"name": "南区一街", "parent_id": south})
    street = r.json()["id"]

    # rename; moving a node under its own descendant is refused
    r = await portal.client.patch(f"/api/org/nodes/{south}", headers=h, json={"name": "南区（新）"})
    assert r.status_code == 200 and r.json()["name"] == "南区（新）"
    r = await portal.client.patch(f"/api/org/nodes/{south}", headers=h, json={"parent_id": street})
    assert r.status_code == 409 and r.json()["error"] == "org_cycle"
    r = await portal.client.patch(f"/api/org/nodes/{south}", headers=h, json={"parent_id": south})
    assert r.status_code == 409

    # assign a device and a channel; the scoped tree follows
    r = await portal.client.post(f"/api/org/nodes/{street}/members", headers=h,
                                 json={"device_ids": [IPC], "channel_ids": [CX1]})
    assert r.status_code == 200 and r.json() == {"node_id": street, "devices": 1, "channels": 1}
    await portal.add_user("southern", org_nodes=[south])
    hs = bearer(await portal.login("southern"))
    r = await portal.client.get("/api/channels", headers=hs)
    assert [c["channel_id"] for c in r.json()["items"]] == [CX1]
    r = await portal.client.get("/api/devices", headers=hs)
    assert [d["device_id"] for d in r.json()["items"]] == [IPC]
    # a scoped org manager cannot touch nodes or channels outside its scope
    r = await portal.client.post(f"/api/org/nodes/{street}/members", headers=hs, json={"channel_ids": [CA1]})
    assert r.status_code == 403
    r = await portal.client.patch(f"/api/org/nodes/{tree.va}", headers=hs, json={"name": "x"})
    assert r.status_code == 403
    r = await portal.client.post("/api/org/nodes", headers=hs, json={"name": "root"})
    assert r.status_code == 403

    # delete: refused while not empty, then forced: children and members move to the parent
    r = await portal.client.delete(f"/api/org/nodes/{south}", headers=h)
    assert r.status_code == 409 and r.json()["error"] == "org_node_not_empty"
    r = await portal.client.delete(f"/api/org/nodes/{south}", headers=h, params={"force": "true"})
    assert r.status_code == 200 and r.json()["moved_to"] == tree.bg and r.json()["children"] == 1
    r = await portal.client.get("/api/org/tree", headers=h)
    nodes = {n["id"]: n for n in r.json()["nodes"]}
    assert south not in nodes and nodes[street]["parent_id"] == tree.bg
    assert nodes[street]["channels"] == 1
    # the user whose role granted the deleted node lost it
    r = await portal.client.get("/api/channels", headers=hs)
    assert r.json()["items"] == []
    r = await portal.client.delete(f"/api/org/nodes/{street}", headers=h, params={"force": "true"})
    assert r.status_code == 200 and r.json()["moved_to"] == tree.bg

    r = await portal.client.get("/api/audit/entries", headers=h, params={"limit": 100})
    actions = [e["action"] for e in r.json()["items"]]
    for action in ("org.create", "org.update", "org.assign", "org.delete"):
        assert action in actions
