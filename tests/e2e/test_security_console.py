"""The console's 安全告警 page in Debian Chromium (Playwright), on the portal served by uvicorn in-process with the
real security monitor (SQLite) and the audit log: a security alert raised while the page is open arrives live
through the event stream (rule in words, not a code; Beijing time), is acknowledged with a required note (on the
audit log), the events table shows the new events and filters them, a blocked address is lifted with the
unblock button, each event's detail is shown in words (labels, codes in words, times in Beijing time; a key
without words still shown, as it is), and the page reads in English after the language toggle.

Screenshots are kept under ``$GBOPS_TEST_ARTIFACTS`` (``tmp_path`` when unset)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.console_support import ConsoleServer, browser_ready, console_page

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

USER, PASSWORD = "sec-officer", "Watch-The-Gate-73"


class Server(ConsoleServer):
    """The portal app with the security monitor and the audit log."""

    async def make_app(self, settings: Any, registry: Any) -> tuple[Any, Any]:
        from audit_log.log import AuditLog
        from gbops.security_wiring import monitor_audit
        from ops_portal.app import create_app
        from security.monitor import SecurityMonitor
        from tests.portal.conftest import FakeSip

        sip = FakeSip()
        self.audit = AuditLog.from_settings(settings, registry.sessionmaker)
        self.monitor = SecurityMonitor(registry.sessionmaker, audit=monitor_audit(self.audit), autoblock=True,
                                       autoblock_minutes=30)
        await self.monitor.start()
        app = create_app(settings=settings, sessionmaker=registry.sessionmaker, registry=registry, sip=sip,
                         audit=self.audit, security=self.monitor)
        return app, sip

    async def add_users(self, portal: Any) -> None:
        await portal.add_user(USER, PASSWORD, display_name="安全员", permissions={"security.read", "security.manage"})

    async def attack(self, address: str, n: int) -> None:
        for i in range(n):
            self.monitor.emit("token_forged", source_ip=address, detail={"path": f"/api/devices/{i}"})
        await self.monitor.flush()

    async def detailed_events(self) -> None:
        """Events with the details their producers send (the login lockout, the SIP feed, the audit feed, the
        clock check), one key without words."""
        self.monitor.emit("login_locked", source_ip="203.0.113.7", user="somebody",
                          detail={"scope": "address", "reason": "bad_credentials",
                                  "locked_until": "2026-03-01T04:05:00+00:00"})
        self.monitor.emit("sip_auth_failed", source_ip="203.0.113.8", device_id="34020000001320000001",
                          detail={"status": 403, "reason": "wrong response", "port": 5062, "locked_out": False})
        self.monitor.emit("device_new_address", source_ip="203.0.113.9", device_id="34020000001320000002",
                          detail={"before": "192.0.2.10", "after": "203.0.113.9", "port": 5060, "transport": "TCP",
                                  "firmware_hint": "v5"})
        self.monitor.emit("config_change", source_ip="198.51.100.20", user="admin",
                          detail={"action": "user.create", "action_zh": "新建用户", "action_en": "user created",
                                  "target": "user:7", "actor_type": "user"})
        self.monitor.emit("ntp_unsynced", detail={
            "reason": "offset +2.500 s beyond 0.5 s", "offset_s": 2.5,
            "servers": [{"server": "ntp.example.cn:123", "ok": True, "offset_s": 2.5},
                        {"server": "192.0.2.123:123", "ok": False, "error": "timeout"}]})
        await self.monitor.flush()

    async def audited(self, action: str) -> list[dict]:
        rows = [json.loads(e.data) async for e in self.audit.store.iter_entries(0, 10**9)]
        return [r for r in rows if r["action"] == action]


def test_alert_arrives_live_and_is_acknowledged(tmp_path: Path) -> None:
    sync_playwright, shots = browser_ready(tmp_path)
    server = Server(tmp_path).start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        with sync_playwright() as pw:
            browser, page, errors = console_page(pw, base, USER, PASSWORD)
            assert page.text_content("a[data-route=security]") == "安全告警"
            page.click("a[data-route=security]")
            page.wait_for_selector("#sec-alerts td.empty")
            assert page.text_content("#sec-alerts td.empty") == "没有未处理的安全告警"
            page.wait_for_function("document.querySelector('#sec-live').textContent === '实时推送已连接'")
            assert "令牌" in page.inner_text("#sec-kind")  # kinds in words

            # --- an alert raised now arrives without a reload
            server.call(server.attack("198.51.100.66", 5))
            page.wait_for_selector("#sec-alerts tr.sec-alert.fresh", timeout=30_000)
            row = page.inner_text("#sec-alerts tr.sec-alert")
            assert "同一地址多次使用伪造令牌" in row and "198.51.100.66" in row and "严重" in row, row
            assert "token_forgery" not in row and "token_forged" not in row  # words, not codes
            page.wait_for_selector("#sec-events tr.sec-event.fresh")
            events = page.inner_text("#sec-events")
            assert "伪造或无效的令牌" in events and "198.51.100.66" in events
            # the block of that alert is listed
            page.wait_for_selector("#sec-blocks tr[data-address='198.51.100.66']", timeout=30_000)
            page.screenshot(path=str(shots / "security-01-live-alert.png"))

            # --- acknowledge: the note is required
            page.click("#sec-alerts button[data-ack]")
            page.wait_for_selector("dialog.modal #sec-note")
            page.click("dialog.modal button[type=submit]")
            assert page.query_selector("dialog.modal") is not None  # an empty note is not sent
            page.fill("#sec-note", "已核实：外部扫描，已封禁")
            page.click("dialog.modal button[type=submit]")
            page.wait_for_selector("#sec-alerts td.empty", timeout=30_000)
            assert page.query_selector("dialog.modal") is None
            page.check("#sec-show-acked")
            page.wait_for_selector("#sec-alerts tr.sec-alert")
            assert "sec-officer 已确认" in page.inner_text("#sec-alerts tr.sec-alert")
            acks = server.call(server.audited("security.alert_ack"))
            assert [a["detail"]["note"] for a in acks] == ["已核实：外部扫描，已封禁"]

            # --- the events filter
            page.select_option("#sec-kind", "login_failed")
            page.click("#sec-search")
            page.wait_for_selector("#sec-events td.empty")
            page.select_option("#sec-kind", "token_forged")
            page.click("#sec-search")
            page.wait_for_function("document.querySelectorAll('#sec-events tr.sec-event').length === 5")
            page.screenshot(path=str(shots / "security-02-acknowledged.png"))

            # --- unblock
            page.once("dialog", lambda d: d.accept())
            page.click("#sec-blocks button[data-unblock='198.51.100.66']")
            page.wait_for_selector("#sec-blocks td.empty", timeout=30_000)
            assert not server.monitor.is_blocked("198.51.100.66")
            assert [e["detail"]["reason"] for e in server.call(server.audited("security.unblock"))] == ["manual"]

            # --- the details in words (labels, codes in words, Beijing time), an unknown key still shown
            page.select_option("#sec-kind", "")
            with page.expect_response(lambda r: "/api/security/events" in r.url):
                page.click("#sec-search")  # all kinds again (the answer drawn before the new events come)
            page.wait_for_function("document.querySelectorAll('#sec-events tr.sec-event').length === 5")
            server.call(server.detailed_events())
            for kind in ("login_locked", "sip_auth_failed", "device_new_address", "config_change", "ntp_unsynced"):
                page.wait_for_selector(f"#sec-events tr.sec-event.fresh[data-kind={kind}]", timeout=30_000)
            locked = page.inner_text("#sec-events tr[data-kind=login_locked] td.sec-detail")
            assert "锁定范围：来源地址" in locked and "原因：用户名或密码错误" in locked, locked
            assert "锁定至：2026/3/1 12:05:00" in locked, locked  # 04:05 UTC in Beijing time
            sip = page.inner_text("#sec-events tr[data-kind=sip_auth_failed] td.sec-detail")
            assert "原因：密码错误" in sip and "应答：403 拒绝" in sip and "来源端口：5062" in sip, sip
            assert "因此锁定：否" in sip and "wrong response" not in sip, sip
            moved = page.inner_text("#sec-events tr[data-kind=device_new_address] td.sec-detail")
            assert "原地址：192.0.2.10" in moved and "传输协议：TCP" in moved, moved
            assert "firmware_hint: v5" in moved, moved  # a key without words, shown as it is
            assert page.get_attribute("#sec-events tr[data-kind=device_new_address] .sec-dkey.unknown",
                                      "data-code") == "firmware_hint"
            # every other key has its words: no code marker on the details
            assert page.eval_on_selector_all("#sec-events td.sec-detail [data-code]",
                                             "els => els.map(e => e.dataset.code)") == ["firmware_hint"]
            changed = page.inner_text("#sec-events tr[data-kind=config_change] td.sec-detail")
            assert "操作：新建用户" in changed and "操作对象：用户 7" in changed and "操作者：用户" in changed, changed
            assert "user.create" not in changed and "user:7" not in changed, changed
            ntp = page.inner_text("#sec-events tr[data-kind=ntp_unsynced] td.sec-detail")
            assert "原因：偏差 +2.500 秒，超过 0.5 秒" in ntp and "时钟偏差：+2.5 秒" in ntp, ntp
            assert "ntp.example.cn:123: +2.5 秒" in ntp and "192.0.2.123:123: timeout" in ntp, ntp
            page.screenshot(path=str(shots / "security-03-details-zh.png"))

            # --- English
            page.click("#lang")
            page.wait_for_selector("#sec-alert-table")
            assert page.text_content("a[data-route=security]") == "Security alerts"
            assert "Live alerts" in page.inner_text("#sec-live-panel")
            page.wait_for_selector("#sec-events tr[data-kind=login_locked]")
            locked = page.inner_text("#sec-events tr[data-kind=login_locked] td.sec-detail")
            assert "Locked: source address" in locked and "Reason: wrong user name or password" in locked, locked
            assert "Locked until: 01/03/2026, 12:05:00" in locked, locked
            sip = page.inner_text("#sec-events tr[data-kind=sip_auth_failed] td.sec-detail")
            assert "Reason: wrong password" in sip and "Answer: 403 refused" in sip and "Locked out by it: no" in sip, sip
            moved = page.inner_text("#sec-events tr[data-kind=device_new_address] td.sec-detail")
            assert "Previous address: 192.0.2.10" in moved and "firmware_hint: v5" in moved, moved
            changed = page.inner_text("#sec-events tr[data-kind=config_change] td.sec-detail")
            assert "Action: user created" in changed and "Target: user 7" in changed, changed
            ntp = page.inner_text("#sec-events tr[data-kind=ntp_unsynced] td.sec-detail")
            assert "Reason: offset +2.500 s, beyond 0.5 s" in ntp and "Clock offset: +2.5 s" in ntp, ntp
            assert not any("\u4e00" <= c <= "\u9fff" for c in locked + sip + changed + ntp), (locked, sip, changed, ntp)
            page.screenshot(path=str(shots / "security-04-details-en.png"))
            assert not errors, errors
            browser.close()
    finally:
        server.call(server.monitor.stop())
        server.stop()
