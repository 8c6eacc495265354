"""The portal with its audit log: every audited action produces exactly one entry (in the action's
own transaction), and the /api/audit routes."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import zipfile
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from audit_log.log import Actor, Target, download_detail
from audit_log.merkle import verify_consistency, verify_inclusion
from audit_log.note import open_note, parse_checkpoint
from audit_log.verify import verify_bundle
from device_registry.models import Device
from ops_portal.models import User

from .conftest import GOOD_PASSWORD, Portal, bearer

DEV = "34020000001320000009"


async def log_rows(portal: Portal) -> list[dict]:
    return [json.loads(e.data) async for e in portal.audit.store.iter_entries(0, 10**9)]


async def new_rows(portal: Portal, before: int) -> list[dict]:
    return (await log_rows(portal))[before:]


async def mark(portal: Portal) -> int:
    return await portal.audit.store.size()


async def only(portal: Portal, before: int, action: str) -> dict:
    rows = await new_rows(portal, before)
    assert [r["action"] for r in rows] == [action], rows
    return rows[0]


# ------------------------------------------------------------------------------------ one entry per action
async def test_login_and_logout(audited: Portal) -> None:
    user = await audited.add_user("alice")
    n = await mark(audited)
    token = await audited.login("alice")
    row = await only(audited, n, "auth.login")
    assert row["actor"] == {"type": "user", "id": str(user.id), "name": "alice"}
    assert row["target"] == {"type": "user", "id": str(user.id)}
    assert row["client_ip"] == "127.0.0.1"
    assert isinstance(row["detail"]["token_id"], int)
    assert token not in json.dumps(row)

    n = await mark(audited)
    r = await audited.client.post("/api/auth/logout", headers=bearer(token))
    assert r.status_code == 204
    row = await only(audited, n, "auth.logout")
    assert row["actor"]["name"] == "alice"


async def test_failed_login_and_lockout(audited: Portal) -> None:
    audited.settings.login_delay_failures = 5  # no delay before the lock (delays: test_login_lockout.py)
    user = await audited.add_user("alice")
    for i in range(4):
        n = await mark(audited)
        r = await audited.client.post("/api/auth/login", json={"username": "alice", "password": "Wrong-Pass-99"})
        assert r.status_code == 401
        row = await only(audited, n, "auth.login_failed")
        assert row["detail"] == {"reason": "bad_credentials", "failed_logins": i + 1}
        assert row["actor"]["type"] == "anonymous" and row["target"] == {"type": "user", "id": str(user.id)}
        assert "Wrong-Pass-99" not in json.dumps(row)
    n = await mark(audited)
    r = await audited.client.post("/api/auth/login", json={"username": "alice", "password": "Wrong-Pass-99"})
    assert r.status_code == 423
    row = await only(audited, n, "auth.lockout")
    assert row["detail"]["failed_logins"] == 5 and row["detail"]["locked_until"].endswith("Z")
    n = await mark(audited)  # while locked, even the right password is refused (and recorded)
    r = await audited.client.post("/api/auth/login", json={"username": "alice", "password": GOOD_PASSWORD})
    assert r.status_code == 423
    assert (await only(audited, n, "auth.login_failed"))["detail"]["reason"] == "locked"


async def test_unknown_user_name_is_not_recorded(audited: Portal) -> None:
    typed = "Correct-Horse-42-typed-into-the-name-field"
    audited.settings.login_delay_failures = 5  # no delay before the lock (delays: test_login_lockout.py)
    for i in range(5):
        n = await mark(audited)
        r = await audited.client.post("/api/auth/login", json={"username": typed, "password": "x"})
        row = await only(audited, n, "auth.lockout" if i == 4 else "auth.login_failed")
        assert r.status_code == (423 if i == 4 else 401)
        assert row["detail"]["reason"] == "unknown_user" and row["target"] == {"type": "user", "id": None}
        assert typed not in json.dumps(row)


async def test_disabled_user(audited: Portal) -> None:
    await audited.add_user("alice")
    async with audited.sessionmaker() as session:
        await session.execute(update(User).where(User.username == "alice").values(disabled=True))
        await session.commit()
    n = await mark(audited)
    r = await audited.client.post("/api/auth/login", json={"username": "alice", "password": GOOD_PASSWORD})
    assert r.status_code == 403
    assert (await only(audited, n, "auth.login_failed"))["detail"] == {"reason": "disabled"}


async def test_password_change(audited: Portal) -> None:
    headers = await audited.user_token("alice")
    n = await mark(audited)
    r = await audited.client.post("/api/auth/password", headers=headers,
                                  json={"old_password": "Wrong-Old-1", "new_password": "New-Secret-77x"})
    assert r.status_code == 403
    assert (await only(audited, n, "user.password_change_failed"))["detail"]["reason"] == "wrong_old_password"
    n = await mark(audited)
    r = await audited.client.post("/api/auth/password", headers=headers,
                                  json={"old_password": GOOD_PASSWORD, "new_password": "abc"})
    assert r.status_code == 422
    assert await new_rows(audited, n) == []  # refused before anything changed: nothing to record
    r = await audited.client.post("/api/auth/password", headers=headers,
                                  json={"old_password": GOOD_PASSWORD, "new_password": "New-Secret-77x"})
    assert r.status_code == 200, r.text
    row = await only(audited, n, "user.password_change")
    assert row["detail"] == {"revoked_tokens": 0}
    assert "New-Secret-77x" not in json.dumps(row)


async def test_device_password_set_and_cleared(audited: Portal) -> None:
    headers = await audited.user_token("alice")
    n = await mark(audited)
    r = await audited.client.put(f"/api/devices/{DEV}/password", headers=headers, json={"password": "Dev-Secret-77"})
    assert r.status_code == 204
    row = await only(audited, n, "device.password_set")
    assert row["target"] == {"type": "device", "id": DEV} and row["detail"] == {"cleared": False}
    assert "Dev-Secret-77" not in json.dumps(row)
    n = await mark(audited)
    r = await audited.client.put(f"/api/devices/{DEV}/password", headers=headers, json={"password": "weak"})
    assert r.status_code == 422
    assert await new_rows(audited, n) == []
    r = await audited.client.put(f"/api/devices/{DEV}/password", headers=headers, json={"password": None})
    assert r.status_code == 204
    assert (await only(audited, n, "device.password_set"))["detail"] == {"cleared": True}


async def test_device_password_and_its_entry_are_atomic(audited: Portal, monkeypatch: pytest.MonkeyPatch) -> None:
    """When the entry cannot be written, the password is not changed either."""
    headers = await audited.user_token("alice")
    n = await mark(audited)

    async def broken(*args, **kw):
        raise RuntimeError("disk full")

    monkeypatch.setattr(audited.audit.store, "append", broken)
    import httpx

    transport = httpx.ASGITransport(app=audited.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://portal.test") as client:
        r = await client.put(f"/api/devices/{DEV}/password", headers=headers, json={"password": "Dev-Secret-77"})
    assert r.status_code == 500
    monkeypatch.undo()
    async with audited.sessionmaker() as session:
        assert await session.get(Device, DEV) is None
    assert await new_rows(audited, n) == []


async def test_catalog_sync(audited: Portal) -> None:
    from device_registry.events import DeviceRegistered

    await audited.registry.apply([DeviceRegistered(DEV, datetime.now(UTC), "192.0.2.1:5060", "udp",
                                                   f"sip:{DEV}@192.0.2.1", 3600, "IPC")])
    headers = await audited.user_token("alice")
    n = await mark(audited)
    r = await audited.client.post(f"/api/devices/{DEV}/catalog-sync", headers=headers)
    assert r.status_code == 409  # offline: nothing happened, nothing recorded
    assert await new_rows(audited, n) == []
    audited.sip.online.add(DEV)
    r = await audited.client.post(f"/api/devices/{DEV}/catalog-sync", headers=headers)
    assert r.status_code == 202
    row = await only(audited, n, "device.catalog_sync")
    assert row["target"] == {"type": "device", "id": DEV} and row["detail"] == {"sn": 17}


async def test_export_route(audited: Portal) -> None:
    headers = await audited.user_token("alice")
    await audited.client.put(f"/api/devices/{DEV}/password", headers=headers, json={"password": "Dev-Secret-77"})
    n = await mark(audited)
    r = await audited.client.post("/api/audit/export", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/zip"
    assert r.headers["x-audit-tree-size"] == str(n)
    row = await only(audited, n, "audit.export")
    assert row["detail"]["sha256"] == hashlib.sha256(r.content).hexdigest()
    assert row["detail"]["to"] == n - 1 and row["actor"]["name"] == "alice"
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        names = set(zf.namelist())
        assert {"entries.jsonl", "checkpoint", "verifier.key", "verify.py", "README.txt"} <= names
    path = audited.settings.data_dir / "export.zip"
    path.write_bytes(r.content)
    report = verify_bundle(path, key_text=audited.audit.verifier_key)
    assert report.entries == n
    r = await audited.client.post("/api/audit/export?from=5&to=2", headers=headers)
    assert r.status_code == 404 and r.json()["error"] == "audit_export_range"


# ------------------------------------------------------------------------------------ reading the log
async def test_entries_filters_and_paging(audited: Portal) -> None:
    headers = await audited.user_token("alice")
    audit = audited.audit
    for i in range(6):
        await audit.record(actor=Actor("user", "9", "bob"), action="device.password_set",
                           target=Target("device", f"d{i % 2}"), detail={"i": i})
    r = await audited.client.get("/api/audit/entries", headers=headers)
    body = r.json()
    assert r.status_code == 200 and body["total"] == 7  # alice's login too
    assert [e["seq"] for e in body["items"]] == [6, 5, 4, 3, 2, 1, 0]
    first = body["items"][-1]
    assert first["action"] == "auth.login" and len(first["leaf_hash"]) == 64 and first["prev"] == "0" * 64
    r = await audited.client.get("/api/audit/entries?actor=bob&target=d1&order=oldest&limit=2", headers=headers)
    body = r.json()
    assert body["total"] == 3 and [e["detail"]["i"] for e in body["items"]] == [1, 3]
    r = await audited.client.get("/api/audit/entries?action=device.*&offset=5", headers=headers)
    assert r.json()["total"] == 6 and len(r.json()["items"]) == 1
    r = await audited.client.get("/api/audit/entries?action=auth.login", headers=headers)
    assert r.json()["total"] == 1
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    r = await audited.client.get("/api/audit/entries", headers=headers, params={"since": future})
    assert r.json()["total"] == 0
    r = await audited.client.get("/api/audit/entries", headers=headers, params={"until": future})
    assert r.json()["total"] == 7
    r = await audited.client.get("/api/audit/entries?limit=501", headers=headers)
    assert r.status_code == 422


async def test_download_history(audited: Portal) -> None:
    headers = await audited.user_token("alice")
    r = await audited.client.get("/api/audit/downloads", headers=headers)
    assert r.status_code == 200 and r.json() == {"total": 0, "offset": 0, "limit": 50, "items": []}
    start, end = datetime(2024, 5, 1, 8, tzinfo=UTC), datetime(2024, 5, 1, 9, tzinfo=UTC)
    await audited.audit.record(
        actor=Actor("user", "3", "carol"), action="download.complete", target=Target("channel", "ch7"),
        client_ip="192.0.2.7",
        detail=download_detail(device_id="dev7", channel_id="ch7", start=start, end=end, sha256="cd" * 32,
                               size=99, watermark_id="wm-1"),
    )
    r = await audited.client.get("/api/audit/downloads?channel_id=ch7", headers=headers)
    (item,) = r.json()["items"]
    assert item["user"]["name"] == "carol" and item["device_id"] == "dev7" and item["channel_id"] == "ch7"
    assert (item["start"], item["end"]) == ("2024-05-01T08:00:00.000Z", "2024-05-01T09:00:00.000Z")
    assert item["sha256"] == "cd" * 32 and item["bytes"] == 99 and item["watermark_id"] == "wm-1"
    assert item["client_ip"] == "192.0.2.7"
    r = await audited.client.get("/api/audit/downloads?actor=alice", headers=headers)
    assert r.json()["total"] == 0


async def test_checkpoint_and_proofs(audited: Portal) -> None:
    headers = await audited.user_token("alice")
    for i in range(9):
        await audited.audit.record(actor=Actor.system(), action="device.catalog_sync", target=Target("device", str(i)))
    r = await audited.client.get("/api/audit/checkpoint", headers=headers)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    vkey = (await audited.client.get("/api/audit/verifier-key", headers=headers)).text.strip()
    assert vkey == audited.audit.verifier_key
    from audit_log.note import NoteVerifier

    cp = parse_checkpoint(open_note(r.text, [NoteVerifier.from_vkey(vkey)]))
    assert cp.size == 10

    for seq in (0, 4, 9):
        for params in ({"seq": seq}, {"seq": seq, "size": 10}, {"seq": seq, "tree_size": 10}):
            r = await audited.client.get("/api/audit/proof/inclusion", headers=headers, params=params)
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["tree_size"] == 10 and body["checkpoint"] == r.json()["checkpoint"]
            verify_inclusion(seq, 10, base64.b64decode(body["leaf_hash"]),
                             [base64.b64decode(h) for h in body["proof"]], cp.root)
    r = await audited.client.get("/api/audit/proof/inclusion?seq=10", headers=headers)
    assert r.status_code == 404
    r = await audited.client.get("/api/audit/proof/inclusion?seq=1&size=3&tree_size=4", headers=headers)
    assert r.status_code == 422

    old = json.loads(json.dumps((await audited.client.get("/api/audit/proof/inclusion?seq=0&size=3",
                                                          headers=headers)).json()))
    for params in ({"from": 3, "to": 10}, {"old": 3, "new": 10}, {"from": 3}):
        r = await audited.client.get("/api/audit/proof/consistency", headers=headers, params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["old_root"] == old["root_hash"] and base64.b64decode(body["new_root"]) == cp.root
        verify_consistency(3, 10, [base64.b64decode(h) for h in body["proof"]], base64.b64decode(body["old_root"]),
                           cp.root)
    r = await audited.client.get("/api/audit/proof/consistency?from=11&to=12", headers=headers)
    assert r.status_code == 404
    r = await audited.client.get("/api/audit/proof/consistency", headers=headers)
    assert r.status_code == 422


async def test_routes_need_the_audit_permission(audited: Portal) -> None:
    await audited.add_user("newbie", must_change_password=True)
    token = await audited.login("newbie")
    for method, path in [("GET", "/api/audit/entries"), ("GET", "/api/audit/checkpoint"),
                         ("POST", "/api/audit/export"), ("GET", "/api/audit/downloads")]:
        r = await audited.client.request(method, path, headers=bearer(token))
        assert r.status_code == 403, path


async def test_portal_without_audit_log(portal: Portal) -> None:
    headers = await portal.user_token("alice")
    r = await portal.client.get("/api/audit/entries", headers=headers)
    assert r.status_code == 503 and r.json()["error"] == "audit_unavailable"
    r = await portal.client.put(f"/api/devices/{DEV}/password", headers=headers, json={"password": "Dev-Secret-77"})
    assert r.status_code == 204  # the actions work without auditing
    async with portal.sessionmaker() as session:
        assert (await session.scalar(select(Device.password_ha1_md5).where(Device.device_id == DEV))) is not None


async def test_action_names_for_people(audited: Portal) -> None:
    """The console shows words, not codes: every catalogued action has its Chinese and English name, without
    the developer's detail notes; the route needs audit.read."""
    from audit_log.actions import ACTIONS, action_label

    await audited.add_user("auditor", permissions={"audit.read"})
    r = await audited.client.get("/api/audit/actions", headers=bearer(await audited.login("auditor")))
    assert r.status_code == 200, r.text
    items = {i["action"]: i for i in r.json()["items"]}
    assert set(items) == set(ACTIONS)
    assert items["live.start"]["zh"] == "开始实时预览" and items["live.start"]["en"] == "live view started"
    assert items["security.sip_refused"]["zh"].startswith("拒绝冒充设备")
    assert all("detail" not in i["en"] and i["en"].isascii() and not i["zh"].isascii() for i in items.values()), items
    assert items["org.assign"]["zh"] == "分配设备/通道到组织节点"
    assert items["user.password_change_failed"]["en"] == "password change refused: wrong old password"
    assert action_label("no.such_action") == ("no.such_action", "no.such_action")

    await audited.add_user("viewer", permissions={"live.view"})
    r = await audited.client.get("/api/audit/actions", headers=bearer(await audited.login("viewer")))
    assert r.status_code == 403
