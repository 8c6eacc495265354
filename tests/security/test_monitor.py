"""The security monitor on SQLite and PostgreSQL: events stored in batches, alerts raised once per window and
stored, audited and posted, automatic blocks with their end, acknowledgement, blocks surviving a restart,
retention, and a full queue that drops instead of blocking."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gbcore.db import make_sessionmaker
from security.monitor import SecurityMonitor
from security.rules import DEFAULT_RULES


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Hook:
    def __init__(self) -> None:
        self.audited: list[tuple[str, str, dict]] = []
        self.posted: list[dict] = []

    async def audit(self, action: str, target: str, detail: dict) -> None:
        self.audited.append((action, target, detail))

    def post(self, payload: dict) -> None:
        self.posted.append(payload)


@pytest.fixture
async def parts(db_engine):
    clock, hook = Clock(), Hook()
    sm = make_sessionmaker(db_engine)
    monitor = SecurityMonitor(sm, rules=DEFAULT_RULES, audit=hook.audit, webhook=hook, autoblock=True,
                              autoblock_minutes=2.0, retention_days=30, clock=clock)
    await monitor.start()
    try:
        yield monitor, clock, hook, sm
    finally:
        await monitor.stop()


async def test_events_alerts_blocks_and_release(parts) -> None:
    monitor, clock, hook, sm = parts
    sub = monitor.subscribe()
    for _ in range(12):
        clock.t += 1
        monitor.emit("login_failed", source_ip="203.0.113.7", user="admin", detail={"reason": "bad_credentials"})
    monitor.emit("login_failed", source_ip="203.0.113.8", user="admin")
    await monitor.flush()
    total, events = await monitor.events(source_ip="203.0.113.7")
    assert total == 12 and events[0]["kind"] == "login_failed" and events[0]["kind_zh"] == "登录失败"
    assert events[0]["severity"] == "warning" and events[0]["detail"] == {"reason": "bad_credentials"}
    assert events[0]["time"] == datetime.fromtimestamp(clock.t, UTC)
    total, alerts = await monitor.alerts()
    assert total == 1
    alert = alerts[0]
    assert (alert["rule"], alert["key"], alert["state"], alert["count"]) == ("login_bruteforce", "203.0.113.7",
                                                                             "open", 12)
    assert alert["rule_zh"] == "同一地址多次登录失败" and alert["severity"] == "critical"
    assert alert["blocked_until"] is not None
    assert [a for a, _, _ in hook.audited] == ["security.alert", "security.block"]
    assert hook.audited[0][1] == f"security_alert:{alert['id']}"
    assert [p["rule"] for p in hook.posted] == ["login_bruteforce"] and hook.posted[0]["kind"] == "security_alert"
    assert monitor.is_blocked("203.0.113.7") and not monitor.is_blocked("203.0.113.8")
    assert [b["address"] for b in await monitor.blocks()] == ["203.0.113.7"]
    # the subscriber saw the events and the alert
    kinds = []
    while not sub.queue.empty():
        kinds.append((await sub.get())[0])
    assert kinds.count("event") == 13 and kinds.count("alert") == 1 and "block" in kinds

    # a block survives a restart of the monitor
    again = SecurityMonitor(sm, clock=clock)
    await again.start()
    try:
        assert again.is_blocked("203.0.113.7")
    finally:
        await again.stop()

    # the block ends by itself
    clock.t += 121
    assert not monitor.is_blocked("203.0.113.7")
    assert await monitor.release_expired() == 1
    await monitor.flush()
    assert ("security.unblock", "address:203.0.113.7", {"address": "203.0.113.7", "reason": "expired"}) \
        in hook.audited
    assert await monitor.blocks() == []

    # acknowledge
    done = await monitor.acknowledge(alert["id"], "secops", "已封禁并通知网络组")
    assert done is not None and done["state"] == "acknowledged" and done["ack_note"] == "已封禁并通知网络组"
    assert await monitor.acknowledge(999_999, "secops", "x") is None
    total, open_alerts = await monitor.alerts(state="open")
    assert total == 0


async def test_one_alert_per_window_and_new_after(parts) -> None:
    monitor, clock, hook, _ = parts
    for i in range(60):  # 60 distinct unknown ids in 60 s from one address
        clock.t += 1
        monitor.emit("sip_unknown_device", source_ip="198.51.100.3", device_id=f"3402000000132{i:07d}")
    await monitor.flush()
    total, alerts = await monitor.alerts()
    assert total == 1 and alerts[0]["rule"] == "sip_id_scan" and alerts[0]["count"] == 60  # updated count
    clock.t += 700  # the window is over: twenty more ids raise a second alert
    for i in range(20):
        clock.t += 1
        monitor.emit("sip_unknown_device", source_ip="198.51.100.3", device_id=f"3402000000133{i:07d}")
    await monitor.flush()
    total, alerts = await monitor.alerts(rule="sip_id_scan")
    assert total == 2
    assert len(hook.posted) == 2


async def test_autoblock_off_and_rules_that_never_block(db_engine) -> None:
    hook, clock = Hook(), Clock()
    monitor = SecurityMonitor(make_sessionmaker(db_engine), audit=hook.audit, webhook=hook, autoblock=False,
                              clock=clock)
    await monitor.start()
    try:
        for _ in range(10):
            monitor.emit("token_forged", source_ip="192.0.2.1")
        monitor.emit("login_locked", user="bob", source_ip="192.0.2.2")
        await monitor.flush()
        total, alerts = await monitor.alerts()
        assert total == 2 and all(a["blocked_until"] is None for a in alerts)
        assert not monitor.is_blocked("192.0.2.1")
        assert [a for a, _, _ in hook.audited] == ["security.alert", "security.alert"]
    finally:
        await monitor.stop()


async def test_manual_block_unblock_and_retention(parts) -> None:
    monitor, clock, _, _ = parts
    await monitor.block("192.0.2.50", 10, "manual test")
    assert monitor.is_blocked("192.0.2.50")
    assert await monitor.unblock("192.0.2.50") is True
    assert not monitor.is_blocked("192.0.2.50")
    assert await monitor.unblock("192.0.2.50") is False
    monitor.emit("config_change", user="admin", detail={"action": "user.create"})
    await monitor.flush()
    clock.t += 31 * 86400
    monitor.emit("config_change", user="admin", detail={"action": "role.update"})
    await monitor.flush()
    purged = await monitor.purge()
    assert purged["events"] == 1
    total, left = await monitor.events()
    assert total == 1 and left[0]["detail"]["action"] == "role.update"


async def test_emit_never_blocks_and_refuses_unknown_kinds(db_engine) -> None:
    monitor = SecurityMonitor(make_sessionmaker(db_engine), queue_size=5)
    for _ in range(20):  # not started: the queue fills, the rest is dropped and counted
        monitor.emit("route_unknown", source_ip="192.0.2.9", detail={"path": "/x"})
    assert monitor.dropped == 15
    with pytest.raises(ValueError):
        monitor.emit("no_such_kind")
    await monitor.start()
    await monitor.flush()
    await monitor.stop()
    assert monitor.stored == 5


async def test_exempt_addresses_are_never_blocked_automatically(db_engine) -> None:
    monitor = SecurityMonitor(make_sessionmaker(db_engine), autoblock=True, exempt="127.0.0.1, 10.9.0.0/16, ::1")
    await monitor.start()
    try:
        for address in ("127.0.0.1", "10.9.3.4", "::1", "10.8.0.1"):
            for _ in range(5):
                monitor.emit("token_forged", source_ip=address)
        await monitor.flush()
        total, alerts = await monitor.alerts()
        assert total == 4  # every address alerts ...
        assert {a["source_ip"] for a in alerts if a["blocked_until"]} == {"10.8.0.1"}  # ... one is blocked
        assert [b["address"] for b in await monitor.blocks()] == ["10.8.0.1"]
    finally:
        await monitor.stop()
