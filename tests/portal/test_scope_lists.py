"""Every list answer of a scoped user holds only in-scope objects (issue 11), on SQLite and PostgreSQL.

The walk itself is in tests/portal/test_authz_walk.py (:func:`walk_lists` here does it).  The list
endpoints are walked from the OpenAPI document (every ``GET`` without path parameters that answers
JSON), not from a hand list, with out-of-scope objects of every kind present: audit entries (live views,
downloads, devices, tickets, other users), upstream streams, tickets and their notifications, download jobs,
roles and contracts naming other channels.  No item may name an out-of-scope channel (``device_id`` +
``channel_id``, a ``device_id/channel_id`` target, a bare channel id that only exists outside the scope) or an
invisible device.  The same user does see its in-scope objects there (the walk is not vacuous).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from device_registry.events import CatalogReported, ChannelInfo, DeviceRegistered

from .conftest import Portal, bearer
from .org_data import CA1, CA2, CB1, CX1, IPC, NVR, Tree, build_tree

#: A second IPC reporting the same channel id as the in-scope CB1 (default ids shipped by vendors).
IPC2 = "34020000001320000077"
OUT_PAIRS = {(NVR, CA1), (NVR, CA2), (IPC, CX1), (IPC2, CB1)}
OUT_DEVICES = {IPC, IPC2}
OUT_ONLY_IDS = {CA1, CA2, CX1}  # channel ids that exist only outside the scope
IN_PAIR = (NVR, CB1)


class FakeManager:
    def describe(self) -> list[dict[str, Any]]:
        return [{"device_id": d, "channel_id": c, "transport": "udp", "codec": "h264", "viewers": 1,
                 "since": 1_700_000_000.0} for d, c in sorted(OUT_PAIRS | {IN_PAIR})]


class FakeMedia:
    manager = FakeManager()
    sessions: dict = {}
    transforms = None
    whep = None

    def describe_streams(self) -> list[dict[str, Any]]:
        return self.manager.describe()


async def _populate(portal: Portal, tree: Tree) -> dict[str, Any]:
    from audit_log.log import Actor, Target
    from ops_portal.contracts import Contract
    from ops_portal.models import Role, RoleChannel, UserRole
    from ops_portal.tickets.models import Notification, Ticket
    from watermark.models import DownloadJob

    t = datetime.now(UTC) - timedelta(minutes=5)
    await portal.registry.apply([
        DeviceRegistered(IPC2, t, "192.0.2.77:5060", "udp", f"sip:{IPC2}@192.0.2.77:5060", 3600, "sim/1.0"),
        CatalogReported(IPC2, t + timedelta(seconds=1), (ChannelInfo(CB1, name="别家相机", status="ON"),), True,
                        "complete 1/1"),
    ])
    other = await portal.add_user("other-tenant", permissions={"live.view", "download.create"})
    admin = await portal.add_user("boss")
    now = datetime.now(UTC)
    async with portal.sessionmaker() as s:
        role = Role(name="east-and-ipc", full_scope=False)
        s.add(role)
        await s.flush()
        for d, c in ((NVR, CA1), (IPC, CX1)):
            s.add(RoleChannel(role_id=role.id, device_id=d, channel_id=c))
        s.add(UserRole(user_id=other.id, role_id=role.id))
        s.add(Contract(name="东区合同", customer="别家", org_node_ids=[tree.va], channel_ids=[CA1, CX1],
                       valid_from=now - timedelta(days=1)))
        tickets = {}
        for d, c in sorted(OUT_PAIRS | {IN_PAIR}):
            ticket = Ticket(kind="fault", source="user", state="reported", device_id=d, channel_id=c, note="x",
                            detail={}, reported_at=now, repair_limit_hours=48.0, deadline=now + timedelta(hours=48))
            s.add(ticket)
            await s.flush()
            tickets[(d, c)] = ticket.id
            s.add(Notification(at=now, kind="ticket_opened", ticket_id=ticket.id, channel_id=c, message=f"{d}/{c}"))
        device_ticket = Ticket(kind="fault", source="auto_offline", state="reported", device_id=IPC, channel_id=None,
                               note="", detail={}, reported_at=now, repair_limit_hours=48.0,
                               deadline=now + timedelta(hours=48))
        s.add(device_ticket)
        await s.flush()
        s.add(Notification(at=now, kind="ticket_opened", ticket_id=device_ticket.id, channel_id=None, message=IPC))
        for i, (d, c) in enumerate(sorted(OUT_PAIRS | {IN_PAIR})):
            job_id = f"{i:016x}"
            s.add(DownloadJob(id=job_id, user_id=other.id, username="other-tenant", channel_id=c, device_id=d,
                              seconds=10, state="done", session_id=f"dl-{job_id}", watermark_id="ABCD1234",
                              created_at=now))
        await s.commit()

    audit = portal.audit
    user_actor = Actor("user", str(other.id), "other-tenant")
    for d, c in sorted(OUT_PAIRS | {IN_PAIR}):
        await audit.record(actor=user_actor, action="live.start", target=Target("channel", f"{d}/{c}"),
                           session_id=f"sess-{d[-4:]}-{c[-4:]}", watermark_id="WM123456",
                           detail={"device_id": d, "channel_id": c})
        await audit.record(actor=user_actor, action="download.request", target=Target("channel", f"{d}/{c}"),
                           detail={"device_id": d, "channel_id": c, "job_id": "x"})
        await audit.record(actor=Actor.system(), action="ticket.create", target=Target("ticket", str(tickets[(d, c)])),
                           detail={"device_id": d, "channel_id": c})
    # entries from before channel identity: bare channel ids (CX1 only outside; CB1 shared by two devices)
    for c in (CX1, CB1):
        await audit.record(actor=user_actor, action="live.stop", target=Target("channel", c),
                           detail={"reason": "player disconnected"})
    await audit.record(actor=Actor.user(admin), action="device.catalog_sync", target=Target("device", IPC),
                       detail={"sn": 1})
    await audit.record(actor=Actor.device(IPC2), action="device.catalog_sync", target=Target("device", IPC2),
                       detail={"sn": 2})
    await audit.record(actor=Actor.user(admin), action="user.update", target=Target("user", str(other.id)),
                       detail={"fields": ["phone"]})
    await audit.record(actor=Actor.user(admin), action="org.update", target=Target("org_node", str(tree.va)),
                       detail={"fields": ["name"]})
    return {"other": other}


def _example(schema: dict[str, Any], name: str = "") -> Any:
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return _example([s for s in schema[key] if s.get("type") != "null"][0], name)
    if "enum" in schema:
        return schema["enum"][0]
    if schema.get("format") == "date-time":
        shift = timedelta(minutes=1) if name in ("to", "end", "until") else -timedelta(days=1)
        return (datetime.now(UTC) + shift).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"integer": 1, "boolean": True, "number": 1}.get(schema.get("type", ""), "x")


def _lists_objects(schema: dict[str, Any], components: dict[str, Any], depth: int = 0) -> bool:
    """Whether a response schema holds an array of objects somewhere (a list answer); an untyped answer
    (``dict[str, Any]``) counts too: it may hold anything."""
    if depth > 6:
        return False
    if "$ref" in schema:
        return _lists_objects(components[schema["$ref"].rsplit("/", 1)[-1]], components, depth + 1)
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            return any(_lists_objects(s, components, depth + 1) for s in schema[key])
    if schema.get("type") == "array":
        items = schema.get("items", {})
        return "$ref" in items or items.get("type") == "object" or not items or _lists_objects(items, components,
                                                                                                 depth + 1)
    props = schema.get("properties")
    if props is None:
        return schema.get("type") in ("object", None) and not schema.get("enum")
    return any(_lists_objects(p, components, depth + 1) for p in props.values())


def _list_endpoints(portal: Portal) -> list[tuple[str, list[dict[str, Any]]]]:
    """Every GET without path parameters whose 200 answer is JSON with a list of objects in it (from the
    OpenAPI document)."""
    spec = portal.app.openapi()
    components = spec.get("components", {}).get("schemas", {})
    out = []
    for path, ops in spec["paths"].items():
        op = ops.get("get")
        if op is None or "{" in path:
            continue
        content = op.get("responses", {}).get("200", {}).get("content", {})
        if "application/json" not in content or not _lists_objects(content["application/json"].get("schema", {}),
                                                                   components):
            continue
        out.append((path, [p for p in op.get("parameters", []) if p["in"] == "query"]))
    return out


def _refs(value: Any, where: str, out: list[tuple[str, str, str | None, str | None]]) -> None:
    """(where, kind, device_id, channel_id) of everything in ``value`` that names a channel or device."""
    if isinstance(value, dict):
        d, c = value.get("device_id"), value.get("channel_id")
        if isinstance(c, str) and c:
            out.append((where, "channel", d if isinstance(d, str) and d else None, c))
        elif isinstance(d, str) and d:
            out.append((where, "device", d, None))
        for key, kind in (("channel_ids", "channel"), ("device_ids", "device")):
            for item in value.get(key) or []:
                if isinstance(item, str):
                    out.append((where, kind, item if kind == "device" else None, item if kind == "channel" else None))
        target = value.get("target")
        if isinstance(target, dict) and isinstance(target.get("id"), str):
            if target.get("type") == "channel":
                dev, sep, ch = target["id"].partition("/")
                out.append((where, "channel", dev, ch) if sep else (where, "channel", None, dev))
            elif target.get("type") == "device":
                out.append((where, "device", target["id"], None))
        for k, v in value.items():
            _refs(v, f"{where}.{k}", out)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _refs(v, f"{where}[{i}]", out)
    elif isinstance(value, str) and "/" in value:
        dev, _, ch = value.partition("/")
        if (dev, ch) in OUT_PAIRS:
            out.append((where, "channel", dev, ch))


def _violations(refs: list[tuple[str, str, str | None, str | None]]) -> list[Any]:
    bad = []
    for where, kind, d, c in refs:
        if kind == "device" and d in OUT_DEVICES:
            bad.append((where, d))
        elif kind == "channel" and ((d is not None and (d, c) in OUT_PAIRS) or (d is None and c in OUT_ONLY_IDS)
                                    or d in OUT_DEVICES):
            bad.append((where, d, c))
    return bad


async def walk_lists(audited: Portal, with_booleans: bool) -> None:
    """As a scoped user, GET every list endpoint with out-of-scope objects present; nothing out of scope."""
    tree = await build_tree(audited.registry)
    await _populate(audited, tree)
    audited.app.state.media = FakeMedia()
    # every permission, only the west node (its channel CB1 of the NVR): CA1/CA2, the IPCs are outside
    await audited.add_user("west", org_nodes=[tree.vb])
    headers = bearer(await audited.login("west"))
    endpoints = _list_endpoints(audited)
    walked, seen, failures = [], [], []
    for path, params in endpoints:
        query = {}
        for p in params:
            if p.get("required"):
                query[p["name"]] = _example(p.get("schema", {}), p["name"])
            elif with_booleans and p.get("schema", {}).get("type") == "boolean":
                query[p["name"]] = "true"
        r = await audited.client.get(path, params=query, headers=headers)
        assert r.status_code == 200, (path, query, r.status_code, r.text[:300])
        refs: list[Any] = []
        _refs(r.json(), path, refs)
        failures.extend(_violations(refs))
        seen.extend(refs)
        walked.append(path)
    assert not failures, failures
    # the walk covers the lists of this issue and sees the in-scope objects in them
    for path in ("/api/audit/entries", "/api/audit/downloads", "/api/streams", "/api/notifications",
                 "/api/tickets", "/api/devices", "/api/channels", "/api/roles", "/api/contracts", "/api/downloads"):
        assert path in walked, path
    for path in ("/api/audit/entries", "/api/audit/downloads", "/api/streams", "/api/notifications", "/api/tickets"):
        assert any(w == path or w.startswith(path + ".") or w.startswith(path + "[")
                   for w, kind, d, c in seen if kind == "channel" and c == CB1 and d in (NVR, None)), path


async def test_scoped_auditor_sees_entries_of_in_scope_objects_and_own_actions(audited: Portal) -> None:
    import json

    tree = await build_tree(audited.registry)
    made = await _populate(audited, tree)
    await audited.add_user("east-auditor", permissions={"audit.read"}, org_nodes=[tree.va])
    h = bearer(await audited.login("east-auditor"))
    items = (await audited.client.get("/api/audit/entries?limit=500", headers=h)).json()["items"]
    targets = {(i["target"]["type"], i["target"]["id"]) for i in items}
    # its channels, its NVR (one of its channels is in scope), its node, its tickets, its own login
    assert ("channel", f"{NVR}/{CA1}") in targets and ("channel", f"{NVR}/{CA2}") in targets
    assert ("org_node", str(tree.va)) in targets
    assert any(i["action"] == "auth.login" and i["actor"]["name"] == "east-auditor" for i in items)
    assert any(i["action"] == "ticket.create" and i["detail"]["channel_id"] == CA1 for i in items)
    # not: the west channel, the IPCs, the other user's account changes, bare ids shared by two devices
    assert ("channel", f"{NVR}/{CB1}") not in targets and ("channel", CB1) not in targets
    assert ("channel", CX1) not in targets and ("device", IPC) not in targets
    assert ("user", str(made["other"].id)) not in targets
    assert all(i["actor"]["id"] != IPC2 for i in items)
    downloads = (await audited.client.get("/api/audit/downloads", headers=h)).json()["items"]
    assert {(d["device_id"], d["channel_id"]) for d in downloads} == {(NVR, CA1), (NVR, CA2)}
    # a full-scope auditor sees everything, the ambiguous old entry included
    await audited.add_user("chief-auditor", permissions={"audit.read", "audit.export"})
    h_all = bearer(await audited.login("chief-auditor"))
    everything = (await audited.client.get("/api/audit/entries?limit=500", headers=h_all)).json()
    assert everything["total"] > len(items)
    assert ("channel", CB1) in {(i["target"]["type"], i["target"]["id"]) for i in everything["items"]}
    # the whole-log export (which cannot be cut to a scope) is for full-scope holders only
    await audited.add_user("east-exporter", permissions={"audit.read", "audit.export"}, org_nodes=[tree.va])
    h_exp = bearer(await audited.login("east-exporter"))
    r = await audited.client.post("/api/audit/export", headers=h_exp)
    assert r.status_code == 403 and r.json()["error"] == "audit_export_full_scope_only"
    assert "east-exporter" not in json.dumps(r.json())
