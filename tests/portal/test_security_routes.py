"""Security monitoring through the portal (issue 16), on SQLite and PostgreSQL, with the real monitor: 403s and
unknown routes become events, a curious tenant without ``security.read`` is refused (and that is an event too),
the lists in Beijing time with their words, acknowledging with a required note (audited), blocked addresses
refused on every request and lifted (audited), and the live feed delivering an alert as it is raised."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from gbops.security_wiring import monitor_audit
from security.monitor import SecurityMonitor

from .conftest import Portal, bearer
from .org_data import CB1, IPC, NVR, build_tree
from .test_alarms import Feed


async def _entries(portal: Portal, action: str) -> list[dict[str, Any]]:
    rows = [json.loads(e.data) async for e in portal.audit.store.iter_entries(0, 10**9)]
    return [e for e in rows if e["action"] == action]


@pytest.fixture
async def sec(audited: Portal) -> Any:
    monitor = SecurityMonitor(audited.sessionmaker, autoblock=True, autoblock_minutes=5,
                              audit=monitor_audit(audited.audit))
    await monitor.start()
    audited.app.state.security = monitor
    tree = await build_tree(audited.registry)
    await audited.add_user("secops", permissions={"security.read", "security.manage"})
    await audited.add_user("watcher", permissions={"security.read"})
    await audited.add_user("tenant", permissions={"device.read", "live.view", "alarm.read"}, org_nodes=[tree.va])
    tokens = {n: bearer(await audited.login(n)) for n in ("secops", "watcher", "tenant")}
    yield {"monitor": monitor, **tokens}
    await monitor.stop()


async def test_curious_tenant_is_refused_and_every_refusal_is_an_event(audited: Portal, sec: Any) -> None:
    c, monitor = audited.client, sec["monitor"]
    for path in ("/api/security/events", "/api/security/alerts", "/api/security/blocks", "/api/security/stream",
                 "/api/security/vocabulary"):
        r = await c.get(path, headers=sec["tenant"])
        assert r.status_code == 403 and r.json()["error"] == "forbidden", (path, r.text)
    r = await c.post("/api/security/alerts/1/ack", json={"note": "x"}, headers=sec["watcher"])
    assert r.status_code == 403
    r = await c.delete("/api/security/blocks/192.0.2.1", headers=sec["watcher"])
    assert r.status_code == 403
    # the tenant probes a device and a channel outside its scope
    assert (await c.get(f"/api/devices/{IPC}", headers=sec["tenant"])).status_code == 403
    assert (await c.get(f"/api/devices/{NVR}/channels/{CB1}/records", headers=sec["tenant"])).status_code == 403
    assert (await c.get("/api/no/such/route", headers=sec["tenant"])).status_code == 404
    await monitor.flush()
    r = await c.get("/api/security/events", params={"kind": "access_denied", "user": "tenant"},
                    headers=sec["watcher"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["total"] == 7  # five refused security reads, two probes (the watcher's two are its own)
    paths = [i["detail"]["path"] for i in body["items"]]
    assert f"/api/devices/{IPC}" in paths and f"/api/devices/{NVR}/channels/{CB1}/records" in paths
    item = body["items"][0]
    assert item["kind_zh"] == "越权访问被拒绝" and item["severity_zh"] == "警告" and item["source_ip"] == "127.0.0.1"
    assert item["time"].endswith("+08:00")
    r = await c.get("/api/security/events", params={"kind": "route_unknown"}, headers=sec["watcher"])
    assert [i["detail"]["path"] for i in r.json()["items"]] == ["/api/no/such/route"]
    # filters are checked
    assert (await c.get("/api/security/events", params={"kind": "nope"}, headers=sec["watcher"])).status_code == 422
    r = await c.get("/api/security/events", params={"since": "2099-01-01T00:00:00"}, headers=sec["watcher"])
    assert r.json()["total"] == 0


async def test_alert_ack_requires_a_note_and_is_audited(audited: Portal, sec: Any) -> None:
    c, monitor = audited.client, sec["monitor"]
    for _ in range(20):
        monitor.emit("access_denied", user="tenant", source_ip="192.0.2.5", detail={"path": "/api/x"})
    await monitor.flush()
    r = await c.get("/api/security/alerts", params={"state": "open"}, headers=sec["watcher"])
    items = r.json()["items"]
    assert [i["rule"] for i in items] == ["access_probing"]
    alert = items[0]
    assert alert["rule_zh"] == "同一用户多次越权访问" and alert["state_zh"] == "未处理" and alert["key"] == "tenant"
    assert alert["rule_text_zh"].startswith("同一用户多次越权访问：5 分钟内达到 20 次")
    assert alert["first_at"].endswith("+08:00")
    url = f"/api/security/alerts/{alert['id']}/ack"
    assert (await c.post(url, json={"note": ""}, headers=sec["secops"])).status_code == 422
    assert (await c.post(url, json={"note": "   "}, headers=sec["secops"])).status_code == 422
    r = await c.post(url, json={"note": "已联系该租户"}, headers=sec["secops"])
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "acknowledged" and r.json()["ack_user"] == "secops"
    assert (await c.post(url, json={"note": "again"}, headers=sec["secops"])).status_code == 409
    assert (await c.post("/api/security/alerts/99999/ack", json={"note": "x"},
                         headers=sec["secops"])).status_code == 404
    entries = await _entries(audited, "security.alert_ack")
    assert len(entries) == 1 and entries[0]["detail"]["note"] == "已联系该租户"
    assert entries[0]["actor"]["name"] == "secops"
    r = await c.get("/api/security/alerts", params={"state": "open"}, headers=sec["watcher"])
    assert r.json()["total"] == 0


async def test_blocked_address_is_refused_everywhere_until_unblocked(audited: Portal, sec: Any) -> None:
    c, monitor = audited.client, sec["monitor"]
    outsider = httpx.AsyncClient(transport=httpx.ASGITransport(app=audited.app, client=("198.51.100.9", 4000)),
                                 base_url="http://portal.test")
    async with outsider:
        assert (await outsider.get("/api/health")).status_code == 200
        for _ in range(5):  # five forged tokens: an alert that blocks the address
            r = await outsider.get("/api/devices", headers=bearer("forged-" + "x" * 30))
            assert r.status_code == 401
        await monitor.flush()
        assert monitor.is_blocked("198.51.100.9")  # token_forged events from ops_portal/auth.py
        for path in ("/api/health", "/", "/api/auth/login"):
            r = await outsider.get(path)
            assert r.status_code == 403 and r.json() == {"error": "address_blocked",
                                                          "message": "来源地址已被封禁 / source address blocked"}
        await monitor.flush()
        r = await c.get("/api/security/events", params={"kind": "blocked_request"}, headers=sec["watcher"])
        assert r.json()["total"] == 1  # one per address and minute
        r = await c.get("/api/security/blocks", headers=sec["watcher"])
        blocks = r.json()["items"]
        assert [b["address"] for b in blocks] == ["198.51.100.9"] and blocks[0]["until"].endswith("+08:00")
        assert blocks[0]["reason"].startswith("同一地址多次使用伪造令牌")
        r = await c.delete("/api/security/blocks/198.51.100.9", headers=sec["secops"])
        assert r.status_code == 204, r.text
        assert (await outsider.get("/api/health")).status_code == 200
        assert (await c.delete("/api/security/blocks/198.51.100.9", headers=sec["secops"])).status_code == 404
    entries = await _entries(audited, "security.unblock")
    assert [e["detail"] for e in entries] == [{"address": "198.51.100.9", "reason": "manual"}]
    assert [e["action"] for e in await _entries(audited, "security.block")] == ["security.block"]


async def test_manual_block_refuses_requests(audited: Portal, sec: Any) -> None:
    monitor = sec["monitor"]
    await monitor.block("198.51.100.20", 5, "test")
    outsider = httpx.AsyncClient(transport=httpx.ASGITransport(app=audited.app, client=("198.51.100.20", 4000)),
                                 base_url="http://portal.test")
    async with outsider:
        r = await outsider.post("/api/auth/login", json={"username": "secops", "password": "whatever-long"})
        assert r.status_code == 403 and r.json()["error"] == "address_blocked"
    assert (await audited.client.get("/api/health")).status_code == 200  # others are not affected


async def test_live_feed_delivers_alerts(audited: Portal, sec: Any) -> None:
    monitor = sec["monitor"]
    async with Feed(audited, sec["watcher"], path="/api/security/stream") as feed:
        first = await feed.next()
        assert feed.status == 200 and first.startswith("retry: 3000\n")
        for _ in range(300):
            if monitor._subscribers:
                break
            await asyncio.sleep(0.01)
        monitor.emit("login_locked", user="bob", source_ip="192.0.2.77")
        text = ""
        for _ in range(5):
            text += await feed.next(timeout=10)
            if "event: alert" in text:
                break
        blocks = [b for b in text.split("\n\n") if "event: alert" in b]
        assert blocks, text
        data = json.loads(next(line for line in blocks[0].splitlines() if line.startswith("data: "))[6:])
        assert data["rule"] == "login_locked" and data["rule_zh"] == "账户被锁定" and data["key"] == "bob"
        assert "event: event" in text


async def test_without_a_monitor_lists_are_empty_and_actions_answer_503(audited: Portal) -> None:
    await audited.add_user("secops", permissions={"security.read", "security.manage"})
    token = bearer(await audited.login("secops"))
    for path in ("/api/security/events", "/api/security/alerts"):
        r = await audited.client.get(path, headers=token)
        assert r.status_code == 200 and r.json()["total"] == 0 and r.json()["items"] == []
    assert (await audited.client.get("/api/security/blocks", headers=token)).json() == {"items": []}
    r = await audited.client.post("/api/security/alerts/1/ack", json={"note": "x"}, headers=token)
    assert r.status_code == 503 and r.json()["error"] == "security_unavailable"
    r = await audited.client.get("/api/security/stream", headers=token)
    assert r.status_code == 503


async def test_a_reader_without_the_full_scope_sees_no_device(audited: Portal, sec: Any) -> None:
    monitor = sec["monitor"]
    tree = await build_tree(audited.registry)
    await audited.add_user("local-sec", permissions={"security.read"}, org_nodes=[tree.va])
    narrow = bearer(await audited.login("local-sec"))
    monitor.emit("sip_auth_failed", source_ip="192.0.2.9", device_id=IPC)
    monitor.emit("clock_skew", device_id=IPC, detail={"skew_s": 3.1})
    monitor.emit("login_failed", source_ip="192.0.2.9", user="ghost")
    for _ in range(5):
        monitor.emit("sip_unknown_device", source_ip="192.0.2.9", device_id=IPC)
    monitor.emit("sip_locked", source_ip="192.0.2.9", device_id=IPC)
    await monitor.flush()
    full = (await audited.client.get("/api/security/events", headers=sec["watcher"])).json()
    assert {i["kind"] for i in full["items"]} >= {"sip_auth_failed", "clock_skew", "login_failed"}
    mine = (await audited.client.get("/api/security/events", headers=narrow)).json()
    assert [i["kind"] for i in mine["items"]] == ["login_failed"] and IPC not in json.dumps(mine)
    alerts = (await audited.client.get("/api/security/alerts", headers=narrow)).json()
    assert {a["rule"] for a in alerts["items"]} == {"sip_locked"}  # not the clock alert of the device
    assert IPC not in json.dumps(alerts)
    everything = (await audited.client.get("/api/security/alerts", headers=sec["watcher"])).json()
    assert {a["rule"] for a in everything["items"]} == {"sip_locked", "clock_skew"}
