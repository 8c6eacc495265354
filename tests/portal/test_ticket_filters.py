"""``GET /api/tickets`` filtered by contract, organisation node and free text (issue 18), within the caller's
scope, on SQLite and PostgreSQL; and the contract SLA CSV writing its share as a percentage.

The tree of ``org_data``: BG ├ VA (CA1, CA2 of the NVR) └ VB (CB1 of the NVR); the IPC's CX1 under no node.
"""

from __future__ import annotations

from typing import Any

from tests.portal.conftest import Portal, bearer

from .org_data import CA1, CA2, CB1, CX1, IPC, NVR, Tree, build_tree

CONTRACT = {"customer": "市公安局", "storage_days": 30, "repair_limit_hours": 24,
            "valid_from": "2020-01-01T00:00:00Z"}


async def _setup(portal: Portal) -> tuple[Tree, dict[str, str], dict[str, int], dict[str, int]]:
    """The tree, the administrator's headers, ticket ids by subject and contract ids by name."""
    tree = await build_tree(portal.registry)
    await portal.add_user("boss")
    admin = bearer(await portal.login("boss"))
    c = portal.client

    async def contract(name: str, **scope: Any) -> int:
        r = await c.post("/api/contracts", json={**CONTRACT, "name": name, **scope}, headers=admin)
        assert r.status_code == 201, r.text
        return r.json()["id"]

    contracts = {"ipc": await contract("独立相机合同", channel_ids=[f"{IPC}/{CX1}"])}  # before its ticket

    async def ticket(body: dict[str, Any]) -> int:
        r = await c.post("/api/tickets", json=body, headers=admin)
        assert r.status_code == 201, r.text
        return r.json()["id"]

    tickets = {
        "ca1": await ticket({"device_id": NVR, "channel_id": CA1, "note": "画面全黑 Black picture"}),
        "ca2": await ticket({"device_id": NVR, "channel_id": CA2, "note": "镜头模糊"}),
        "cb1": await ticket({"device_id": NVR, "channel_id": CB1, "note": "no signal"}),
        "cx1": await ticket({"device_id": IPC, "channel_id": CX1, "note": "丢包 100%_x"}),
        "nvr": await ticket({"device_id": NVR, "note": "硬盘故障"}),  # the whole NVR
    }
    # written after the tickets: their tickets carry no contract id, the filter finds them by the scope
    contracts["east"] = await contract("东区合同", org_node_ids=[tree.va])
    contracts["west"] = await contract("西门合同", channel_ids=[f"{NVR}/{CB1}"])
    return tree, admin, tickets, contracts


async def _ids(portal: Portal, headers: dict[str, str], **params: Any) -> list[int]:
    r = await portal.client.get("/api/tickets", params={"limit": 500, **params}, headers=headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["total"] == len(body["items"]), body
    return sorted(x["id"] for x in body["items"])


def _of(tickets: dict[str, int], *names: str) -> list[int]:
    return sorted(tickets[n] for n in names)


async def test_filter_by_contract_org_node_and_text(portal: Portal) -> None:
    tree, admin, tk, ct = await _setup(portal)
    ids = lambda **p: _ids(portal, admin, **p)  # noqa: E731

    # a contract: the tickets of the channels its scope covers (a device ticket: of a device with such a channel)
    assert await ids(contract_id=ct["east"]) == _of(tk, "ca1", "ca2", "nvr")
    assert await ids(contract_id=ct["west"]) == _of(tk, "cb1", "nvr")
    assert await ids(contract_id=ct["ipc"]) == _of(tk, "cx1")
    # the tickets reported under a contract stay (its SLA report's) when its scope changes later
    r = await portal.client.patch(f"/api/contracts/{ct['ipc']}", json={"channel_ids": []}, headers=admin)
    assert r.status_code == 200, r.text
    assert await ids(contract_id=ct["ipc"]) == _of(tk, "cx1")
    r = await portal.client.get("/api/tickets", params={"contract_id": 99999}, headers=admin)
    assert r.status_code == 404 and r.json()["error"] == "contract_not_found"

    # an organisation node: its channels and its descendants'
    assert await ids(org_node_id=tree.bg) == _of(tk, "ca1", "ca2", "cb1", "nvr")
    assert await ids(org_node_id=tree.va) == _of(tk, "ca1", "ca2", "nvr")
    assert await ids(org_node_id=tree.vb) == _of(tk, "cb1", "nvr")
    r = await portal.client.get("/api/tickets", params={"org_node_id": 99999}, headers=admin)
    assert r.status_code == 404 and r.json()["error"] == "org_node_not_found"

    # free text, case-insensitive: description, channel name (that device's channel), channel id, device id
    assert await ids(q="BLACK") == _of(tk, "ca1")
    assert await ids(q="东门") == _of(tk, "ca1")  # CA1's name
    assert await ids(q="独立相机") == _of(tk, "cx1")  # the IPC's channel name
    assert await ids(q=CB1[-6:]) == _of(tk, "cb1")
    assert await ids(q="1320000009") == _of(tk, "cx1")  # a piece of the IPC's device id
    assert await ids(q=NVR) == _of(tk, "ca1", "ca2", "cb1", "nvr")
    assert await ids(q="%") == _of(tk, "cx1")  # LIKE's own characters are plain text
    assert await ids(q="_x") == _of(tk, "cx1")
    assert await ids(q="nothing like this") == []
    assert await ids(q="   ") == sorted(tk.values())  # blank: no filter
    assert await ids(q="\x00\x01") == sorted(tk.values())  # control characters are no search (nor a 500)
    assert await ids(q="Bl\x00ack") == _of(tk, "ca1")
    r = await portal.client.get("/api/tickets", params={"q": "x" * 65}, headers=admin)
    assert r.status_code == 422

    # combined with the other filters, counts and pages right
    assert await ids(contract_id=ct["east"], q="模糊") == _of(tk, "ca2")
    assert await ids(org_node_id=tree.va, device_id=NVR, q="硬盘") == _of(tk, "nvr")
    seen = []
    for offset in (0, 1, 2):
        r = await portal.client.get("/api/tickets", params={"org_node_id": tree.va, "limit": 1, "offset": offset},
                                    headers=admin)
        body = r.json()
        assert body["total"] == 3 and len(body["items"]) == 1, body
        seen.append(body["items"][0]["id"])
    assert seen == sorted(_of(tk, "ca1", "ca2", "nvr"), reverse=True)  # newest first


async def test_scoped_caller_cannot_probe(portal: Portal) -> None:
    tree, _, tk, ct = await _setup(portal)
    await portal.add_user("east", permissions={"ticket.read", "report.read"}, org_nodes=[tree.va])
    east = bearer(await portal.login("east"))
    ids = lambda **p: _ids(portal, east, **p)  # noqa: E731

    assert await ids() == _of(tk, "ca1", "ca2", "nvr")
    # its own contract and node; the node above its channels (shown in its tree): only what it may see
    assert await ids(contract_id=ct["east"]) == _of(tk, "ca1", "ca2", "nvr")
    assert await ids(org_node_id=tree.va) == _of(tk, "ca1", "ca2", "nvr")
    assert await ids(org_node_id=tree.bg) == _of(tk, "ca1", "ca2", "nvr")
    # free text finds nothing outside its scope
    assert await ids(q="no signal") == []
    assert await ids(q="独立相机") == []
    assert await ids(q=NVR) == _of(tk, "ca1", "ca2", "nvr")

    async def answer(**params: Any) -> tuple[int, dict[str, Any]]:
        r = await portal.client.get("/api/tickets", params=params, headers=east)
        return r.status_code, r.json()

    # a contract or node outside its scope answers exactly as one that does not exist
    for key, other in (("contract_id", ct["west"]), ("contract_id", ct["ipc"]), ("org_node_id", tree.vb)):
        missing = 99999
        got, unknown = await answer(**{key: other}), await answer(**{key: missing})
        assert got[0] == unknown[0] == 404, (key, got, unknown)
        assert got[1]["error"] == unknown[1]["error"], (got, unknown)
        assert got[1]["message"].replace(str(other), "N") == unknown[1]["message"].replace(str(missing), "N")

    # the contract list offers exactly the contracts it may filter by; another's contract, its SLA report and
    # its CSV (channel ids of other tenants' overdue tickets) answer as an unknown one
    r = await portal.client.get("/api/contracts", headers=east)
    assert [c["id"] for c in r.json()["items"]] == [ct["east"]]
    for suffix in ("", "/sla", "/sla.csv"):
        r = await portal.client.get(f"/api/contracts/{ct['east']}{suffix}", headers=east)
        assert r.status_code == 200, (suffix, r.text)
        for other in (ct["west"], ct["ipc"], 99999):
            r = await portal.client.get(f"/api/contracts/{other}{suffix}", headers=east)
            assert r.status_code == 404 and r.json()["error"] == "contract_not_found", (suffix, other, r.text)


async def test_sla_csv_share_is_a_percentage(portal: Portal) -> None:
    """100 % within the limit is written 100 (not 1.0), under a header marked (%)."""
    tree, admin, tk, ct = await _setup(portal)
    c = portal.client
    tid = tk["cx1"]  # reported under the IPC's contract (limit 24 h): repaired at once
    for action, note in (("acknowledge", None), ("start_repair", None), ("feedback", "换网线")):
        r = await c.post(f"/api/tickets/{tid}/transitions", json={"action": action, "note": note}, headers=admin)
        assert r.status_code == 200, r.text
    r = await c.get(f"/api/contracts/{ct['ipc']}/sla", headers=admin)
    assert r.json()["share_within_limit"] == 1.0  # the API keeps its ratio
    r = await c.get(f"/api/contracts/{ct['ipc']}/sla.csv", headers=admin)
    assert r.status_code == 200, r.text
    rows = [line.split(",") for line in r.text.lstrip("\ufeff").splitlines()]
    assert ["share_within_limit(%)", "100"] in rows, rows
    assert not [row for row in rows if row[0] == "share_within_limit"]


async def test_availability_scope_cannot_be_probed_either(portal: Portal) -> None:
    """The online-rate, channel-availability and report routes answer another tenant's node or contract exactly
    as an unknown one (they answered an empty figure before: the id's existence leaked)."""
    tree, _, _, ct = await _setup(portal)
    await portal.add_user("east", permissions={"ticket.read", "report.read"}, org_nodes=[tree.va])
    east = bearer(await portal.login("east"))
    period = {"from": "2024-01-01T00:00:00+08:00", "to": "2024-01-02T00:00:00+08:00"}

    async def answer(path: str, **params: Any) -> tuple[int, dict[str, Any]]:
        if path == "/api/reports":
            r = await portal.client.post(path, json={"kind": "day", "on": "2024-01-01", "format": "csv", **params},
                                         headers=east)
        else:
            r = await portal.client.get(path, params={**(period if "channels" in path else {}), **params},
                                        headers=east)
        return r.status_code, r.json()

    for path in ("/api/availability/online-rate", "/api/availability/channels", "/api/reports"):
        for key, own in (("org_node_id", tree.va), ("org_node_id", tree.bg), ("contract_id", ct["east"])):
            got = await answer(path, **{key: own})
            assert got[0] in (200, 202), (path, key, got)
        for key, other in (("contract_id", ct["west"]), ("contract_id", ct["ipc"]), ("org_node_id", tree.vb)):
            got, unknown = await answer(path, **{key: other}), await answer(path, **{key: 99999})
            assert got[0] == unknown[0] == 404, (path, key, got, unknown)
            assert got[1]["error"] == unknown[1]["error"], (got, unknown)
