"""The console's 安全检查 page in Debian Chromium (Playwright), on the portal served by uvicorn in-process with the
platform's audit log: the check runs when the page opens, the counts by severity and the findings grouped by
severity are shown in words with their fix (a device whose stored HA1 is a weak password, a user who never
logged in), the time in Beijing time from a browser in Los Angeles; the device's password set through the API
and "重新检查" clears the finding; the PDF and XLSX reports download and open; the page reads in English after
the language toggle; no password ever reaches the page.

Screenshots are kept under ``$GBOPS_TEST_ARTIFACTS`` (``tmp_path`` when unset)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.e2e.console_support import ConsoleServer, browser_ready, console_page

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

USER, PASSWORD = "sec-checker", "Night-Owl-Check-42"
WEAK_DEV = "34020000001320000301"


class Server(ConsoleServer):
    """The portal app with the audit log; one device whose own password (stored as HA1) is a common one."""

    async def make_app(self, settings: Any, registry: Any) -> tuple[Any, Any]:
        from audit_log.log import AuditLog
        from ops_portal.app import create_app
        from tests.portal.conftest import FakeSip

        sip = FakeSip()
        self.audit = AuditLog.from_settings(settings, registry.sessionmaker)
        app = create_app(settings=settings, sessionmaker=registry.sessionmaker, registry=registry, sip=sip,
                         audit=self.audit)
        # stored before the password rule existed (the route refuses it today)
        await registry.set_device_password(WEAK_DEV, settings.realm, "admin123")
        return app, sip

    async def add_users(self, portal: Any) -> None:
        await portal.add_user(USER, PASSWORD, display_name="安全检查员")
        await portal.add_user("never-here", "Silent-Lake-Stone-7", permissions={"device.read"})


def test_security_check_page(tmp_path: Path) -> None:
    sync_playwright, shots = browser_ready(tmp_path)
    server = Server(tmp_path).start()
    try:
        with sync_playwright() as pw:
            browser, page, errors = console_page(pw, server.base, USER, PASSWORD)
            assert page.text_content("a[data-route=security-check]") == "安全检查"
            page.click("a[data-route=security-check]")
            page.wait_for_selector("#sc-counts", timeout=30000)

            critical = int(page.text_content("#sc-counts [data-severity=critical] .stat-value"))
            assert critical >= 1
            card = "#sc-findings .sc-finding[data-code=device_weak_password]"
            text = page.inner_text(card)
            assert "设备使用弱口令" in text and WEAK_DEV in text and "常见弱口令" in text and "修复建议" in text
            assert page.is_visible("#sc-findings .sc-group[data-severity=critical] .sc-finding[data-code=device_weak_password]")
            never = page.inner_text("#sc-findings .sc-finding[data-code=account_never_used]")
            assert "never-here" in never and "从未登录" in never
            when = page.text_content("#sc-when")
            beijing = datetime.now(ZoneInfo("Asia/Shanghai"))
            assert f"{beijing.year}/{beijing.month}/{beijing.day}" in when, when  # Beijing, not Los Angeles
            page.screenshot(path=str(shots / "security-check-01.png"), full_page=True)

            # --- the reports
            with page.expect_download(timeout=60000) as info:
                page.click("#sc-pdf")
            pdf = tmp_path / "check.pdf"
            info.value.save_as(pdf)
            assert info.value.suggested_filename.endswith(".pdf") and pdf.read_bytes().startswith(b"%PDF")
            with page.expect_download(timeout=60000) as info:
                page.click("#sc-xlsx")
            xlsx = tmp_path / "check.xlsx"
            info.value.save_as(xlsx)
            from openpyxl import load_workbook

            rows = list(load_workbook(xlsx, read_only=True)["对象 Subjects"].iter_rows(values_only=True))
            assert any(row[4] == WEAK_DEV for row in rows)

            # --- the fix: the device's own strong password through the API, then check again
            status = page.evaluate("""async (dev) => {
                const r = await fetch(`/api/devices/${dev}/password`, {method: "PUT",
                  headers: {"Content-Type": "application/json",
                            Authorization: "Bearer " + sessionStorage.getItem("gbops.token")},
                  body: JSON.stringify({password: "Own-Strong-Kestrel-9"})});
                return r.status; }""", WEAK_DEV)
            assert status == 204
            page.click("#sc-run")
            page.wait_for_function("document.querySelector('#sc-counts') && "
                                   "!document.querySelector('.sc-finding[data-code=device_weak_password]')",
                                   timeout=30000)
            assert page.query_selector(".sc-finding[data-code=account_never_used]") is not None

            # --- English
            page.click("#lang")
            page.wait_for_selector("#sc-counts", timeout=30000)
            assert page.text_content("a[data-route=security-check]") == "Security check"
            assert "accounts never logged in" in page.inner_text(".sc-finding[data-code=account_never_used]")
            assert "never logged in" in page.inner_text(".sc-finding[data-code=account_never_used] .sc-subjects")
            page.screenshot(path=str(shots / "security-check-02-en.png"), full_page=True)
            page.click("#lang")

            content = page.content()
            assert "admin123" not in content and "Own-Strong-Kestrel-9" not in content
            assert not errors, errors
            browser.close()
    finally:
        server.stop()
