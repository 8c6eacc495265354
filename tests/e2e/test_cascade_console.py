"""The console's 级联平台 page in Debian Chromium (Playwright), on the portal served by uvicorn in-process with the
cascade service (``cascade.service.CascadeService`` over a stub of its SIP side, tests/portal/test_cascade_routes.py)
and the platform's audit log: a
platform added through the form is listed with its state in words (注册中, then 已注册 with the keepalive in
Beijing time), the password never comes back to the page, an organisation node ticked in the share editor and
saved makes the catalog preview list its channels, an upper's request shows as "实时视频", and the page reads
in English after the language toggle.

Screenshots are kept under ``$GBOPS_TEST_ARTIFACTS`` (``tmp_path`` when unset)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.console_support import ConsoleServer, browser_ready, console_page
from tests.portal.org_data import CA1, CA2, NVR
from tests.portal.test_cascade_routes import SYSTEM_ID, real_service

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

USER, PASSWORD = "cascade-admin", "Upper-Platform-Owl-42"
SECRET = "Digest-Of-The-Upper-93"


class Server(ConsoleServer):
    """The portal app with the cascade service and the audit log."""

    async def make_app(self, settings: Any, registry: Any) -> tuple[Any, Any]:
        from audit_log.log import AuditLog
        from ops_portal.app import create_app
        from tests.portal.conftest import FakeSip

        sip = FakeSip(online={NVR})
        self.audit = AuditLog.from_settings(settings, registry.sessionmaker)
        app = create_app(settings=settings, sessionmaker=registry.sessionmaker, registry=registry, sip=sip,
                         audit=self.audit)
        self.cascade, self.links = await real_service(registry.sessionmaker, self.audit, settings,
                                                      self.tmp / "keys" / "cascade.key")
        app.state.cascade = self.cascade
        return app, sip

    async def add_users(self, portal: Any) -> None:
        await portal.add_user(USER, PASSWORD, display_name="级联管理员")


def test_cascade_page_add_share_preview_requests(tmp_path: Path) -> None:
    from audit_log.log import Actor, Target

    sync_playwright, shots = browser_ready(tmp_path)
    server = Server(tmp_path).start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        with sync_playwright() as pw:
            browser, page, errors = console_page(pw, base, USER, PASSWORD)
            assert page.text_content("a[data-route=cascade]") == "级联平台"
            page.click("a[data-route=cascade]")
            page.wait_for_selector("#cascade-table td.empty")
            assert page.text_content("#cascade-table td.empty") == "尚未添加上级平台"

            # --- add a platform through the form
            page.click("#cascade-new")
            page.wait_for_selector("dialog.modal #cas-name")
            form = page.inner_text("dialog.modal")
            for label in ("上级平台编码", "本平台编码", "认证密码", "注册有效期（秒）", "心跳周期（秒）", "云台控制级别",
                          "留空则使用本平台编码", "标准要求不低于 3600"):
                assert label in form, label
            page.fill("#cas-name", "省公安厅视频共享平台")
            page.fill("#cas-server-id", "44000000002000000001")
            page.fill("#cas-host", "198.51.100.7")
            page.fill("#cas-local-id", "34020000002000000001")
            page.fill("#cas-password", SECRET)
            page.select_option("#cas-transport", "tcp")
            page.fill("#cas-expires", "600")  # below the standard's floor: saved, with a warning
            page.click("dialog.modal button[type=submit]")
            page.wait_for_selector("#cascade-table tr[data-platform='1']")
            assert page.query_selector("dialog.modal") is None
            row = page.inner_text("#cascade-table tr[data-platform='1']")
            assert "省公安厅视频共享平台" in row and "198.51.100.7:5060" in row and "TCP" in row, row
            assert "注册中" in row and "配置有警告" in row, row
            (config,) = server.links.configs  # what signalling was given
            assert (config.server_domain, config.local_id, config.username, config.expires, config.transport) == (
                "4400000000", SYSTEM_ID, SYSTEM_ID, 600, "tcp")
            assert config.password == SECRET
            assert SECRET not in page.content()

            # --- the live status: registered, the keepalive in Beijing time (the browser is in Los Angeles)
            server.links.states[1] = {"state": "registered", "last_error": None, "last_keepalive": 1_714_550_400.0,
                                      "registered_until": 1_714_551_000.0}
            page.wait_for_function("document.querySelector(\"#cascade-table tr[data-platform='1']\")"
                                   ".textContent.includes('已注册')", timeout=8000)
            row = page.inner_text("#cascade-table tr[data-platform='1']")
            assert "16:00:00" in row and "16:10:00" in row, row
            assert page.inner_text("#cascade-table tr[data-platform='1'] .cas-streams") == "0"
            page.screenshot(path=str(shots / "cascade-01-list.png"))

            # --- the edit form: the password field is empty and says so; saving without it keeps it
            page.click("#cascade-table tr[data-platform='1'] button[data-act=edit]")
            page.wait_for_selector("dialog.modal #cas-password")
            assert page.input_value("#cas-password") == ""
            assert page.get_attribute("#cas-password", "placeholder") == "留空则不修改"
            page.fill("#cas-keepalive-s", "30")
            page.click("dialog.modal button[type=submit]")
            page.wait_for_function("!document.querySelector('dialog.modal')")
            assert server.links.configs[0].keepalive_s == 30 and server.links.configs[0].password == SECRET

            # --- the share editor: tick VA (东区), save; the preview lists its channels
            page.click("#cascade-table tr[data-platform='1'] button[data-act=share]")
            page.wait_for_selector("#cas-share-nodes input[data-org]")
            va_box = page.query_selector("#cas-share-nodes label:has-text('东区') input")
            assert va_box is not None
            va_box.check()
            page.click("#cas-share-save")
            page.wait_for_function("document.querySelector('#cas-share-summary').textContent === '共享给上级的通道：2 个'")
            page.screenshot(path=str(shots / "cascade-02-share.png"))

            page.click("#cascade-detail button[data-tab=preview]")
            page.wait_for_selector("#cascade-preview")
            # our system, 东区's parent node (structure only), the shared 东区, its two channels (西区's 西门 is
            # not shared)
            assert page.inner_text("#cas-preview-summary") == "上级将收到 5 条目录，其中通道 2 个"
            rows = page.inner_text("#cascade-preview tbody")
            assert "本平台（系统）" in rows and "虚拟组织" in rows and "东区" in rows, rows
            assert "东门" in rows and "东区停车场" in rows and "西门" not in rows, rows
            assert page.inner_text("#cascade-preview tbody tr:first-child").split("\t")[1] == SYSTEM_ID
            assert CA1 in rows and CA2 in rows and "在线" in rows and "离线" in rows
            assert page.query_selector(f"#cascade-preview tr[data-id='{CA1}'][data-kind=channel]") is not None
            page.screenshot(path=str(shots / "cascade-03-preview.png"))

            # --- an upper's request on the audit log, in words
            server.call(server.audit.record(
                actor=Actor.platform("44000000002000000001", "省公安厅视频共享平台"), action="cascade.invite",
                target=Target("channel", f"{NVR}/{CA1}"),
                detail={"platform_id": 1, "server_id": "44000000002000000001", "device_id": NVR, "channel_id": CA1,
                        "kind": "live", "result": "ok", "status": 200}))
            page.click("#cascade-detail button[data-tab=requests]")
            page.wait_for_selector("#cascade-requests tr[data-action='cascade.invite']")
            invite = page.inner_text("#cascade-requests tr[data-action='cascade.invite']")
            assert "实时视频" in invite and CA1 in invite and "成功" in invite, invite
            edits = page.inner_text("#cascade-requests tbody")
            assert "添加上级平台" in edits and "修改上级平台共享范围" in edits, edits
            page.screenshot(path=str(shots / "cascade-04-requests.png"))

            # --- English
            page.click("#lang")
            page.wait_for_selector("#cascade-table tr[data-platform='1']")
            assert page.text_content("a[data-route=cascade]") == "Upper platforms"
            assert "Registered" in page.inner_text("#cascade-table tr[data-platform='1']")
            page.click("#lang")

            # --- disable, then delete with confirmation
            page.wait_for_selector("#cascade-table tr[data-platform='1'] button[data-act=toggle]")
            page.click("#cascade-table tr[data-platform='1'] button[data-act=toggle]")
            page.wait_for_function("document.querySelector(\"#cascade-table tr[data-platform='1']\")"
                                   ".textContent.includes('已停用')")
            assert server.links.configs == []  # unregistered
            page.once("dialog", lambda d: d.accept())
            page.click("#cascade-table tr[data-platform='1'] button[data-act=delete]")
            page.wait_for_selector("#cascade-table td.empty")
            assert server.call(server.cascade.list_platforms()) == []
            assert SECRET not in page.content()
            assert not errors, errors
            browser.close()
    finally:
        server.stop()
