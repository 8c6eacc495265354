"""Two-step verification in the console, in Debian Chromium (Playwright), on the portal served by uvicorn
in-process: a user sets up an authenticator on 我的账户 (the key shown in groups of 4 and the otpauth link,
confirmed with a code this test computes from the key the page showed), logs out, is asked for the code at
login, is refused a wrong one and let in with a right one; an administrator sees 最后登录 / 密码修改时间 on the
user list and resets the second factor; a user whose role requires it gets the enrolment screen and nothing
else until done; an idle session ends with the words 会话空闲超时.

Screenshots are kept under ``$GBOPS_TEST_ARTIFACTS`` (``tmp_path`` when unset)."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ops_portal import totp
from tests.e2e.console_support import ConsoleServer, browser_ready, console_page

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

USER, ADMIN, DUTY = "zhang.wei", "sec-admin", "duty-lead"
PASSWORD = "Second-Factor-Owl-42"
WAIT = 30_000  # ms: the machine is shared


class Server(ConsoleServer):
    async def make_app(self, settings: Any, registry: Any) -> tuple[Any, Any]:
        from audit_log.log import AuditLog
        from ops_portal.app import create_app
        from security.events import ListSink
        from tests.portal.conftest import FakeSip

        settings.totp_required_roles = f"role:{DUTY}"
        self.settings = settings
        self.audit = AuditLog.from_settings(settings, registry.sessionmaker)
        sip = FakeSip()
        app = create_app(settings=settings, sessionmaker=registry.sessionmaker, registry=registry, sip=sip,
                         audit=self.audit)
        app.state.security = self.sink = ListSink()
        return app, sip

    async def add_users(self, portal: Any) -> None:
        await portal.add_user(USER, PASSWORD, display_name="张伟", permissions={"device.read"})
        await portal.add_user(ADMIN, PASSWORD, display_name="安全管理员")
        await portal.add_user(DUTY, PASSWORD, display_name="值班主管", permissions={"device.read"})


def code_for(secret_text: str, *, ahead: int = 0) -> str:
    """The code of the key the page showed, ``ahead`` steps after now (one step ahead is still accepted and
    is never the step a previous code used)."""
    key = totp.decode_secret(secret_text)
    return totp.totp(key, time.time() + ahead * totp.PERIOD)


def log_in(page: Any, username: str, *, otp: str | None = None) -> None:
    page.wait_for_selector("#login-form", timeout=WAIT)
    page.fill("#login-username", username)
    page.fill("#login-password", PASSWORD)
    if otp is not None:
        page.fill("#login-otp", otp)
    page.click("#login-submit")


def enrol(page: Any, shots: Path, name: str) -> str:
    """Set up an authenticator on the card shown; returns the key as the page showed it."""
    page.click("#totp-start")
    page.wait_for_selector("#totp-secret", timeout=WAIT)
    shown = page.text_content("#totp-secret").strip()
    assert re.fullmatch(r"[A-Z2-7]{4}( [A-Z2-7]{4}){7}", shown), shown  # 32 characters in groups of 4
    uri = page.input_value("#totp-uri")
    assert uri.startswith("otpauth://totp/") and f"secret={shown.replace(' ', '')}" in uri
    page.screenshot(path=str(shots / f"totp-{name}-setup.png"))
    page.fill("#totp-code", "000000" if code_for(shown) != "000000" else "111111")
    page.fill("#totp-password", PASSWORD)
    page.click("#totp-confirm")
    page.wait_for_selector("#totp-card .msg.error:not(.hidden)", timeout=WAIT)
    assert "验证码错误" in page.text_content("#totp-card .msg.error")
    page.fill("#totp-code", code_for(shown))
    page.click("#totp-confirm")
    return shown


def test_totp_enrol_login_reset_and_required(tmp_path: Path) -> None:
    sync_playwright, shots = browser_ready(tmp_path)
    server = Server(tmp_path).start()
    try:
        with sync_playwright() as pw:
            browser, page, errors = console_page(pw, server.base, USER, PASSWORD)

            # --- 我的账户: set up the authenticator
            page.click("#whoami")
            page.wait_for_selector("#totp-card #totp-state", timeout=WAIT)
            assert "未启用" in page.text_content("#totp-state")
            assert "验证器应用" in page.inner_text("#totp-card")
            before = datetime.now(UTC)
            secret = enrol(page, shots, "user")
            page.wait_for_selector("#totp-disable-form", timeout=WAIT)
            state = page.text_content("#totp-state")
            assert "已启用" in state
            # the time it went on, in Beijing time, whatever the browser's zone (Los Angeles here)
            beijing = (before + timedelta(hours=8)).strftime("%H:")
            assert beijing in state, state
            page.screenshot(path=str(shots / "totp-user-enabled.png"))
            page.click("#lang")  # the same card in English
            page.wait_for_selector("#totp-state", timeout=WAIT)
            page.wait_for_function("(document.querySelector('#totp-card h2')?.innerText || '') === 'Two-step verification'",
                                   timeout=WAIT)
            assert "On since" in page.text_content("#totp-state")
            page.click("#lang")
            page.wait_for_function("(document.querySelector('#totp-card h2')?.innerText || '') === '两步验证'", timeout=WAIT)

            # --- log out, log in: the code is asked for
            page.click("#logout")
            log_in(page, USER)
            page.wait_for_selector("#login-otp-field:not(.hidden)", timeout=WAIT)
            assert "两步验证" in page.text_content("#login-form .msg.info")  # a step, not a failure
            page.screenshot(path=str(shots / "totp-login-asks-code.png"))
            wrong = "000000" if code_for(secret, ahead=1) != "000000" else "111111"
            page.fill("#login-otp", wrong)
            page.click("#login-submit")
            page.wait_for_function(
                "(document.querySelector('#login-form .msg.error')?.textContent || '').includes('验证码错误')", timeout=WAIT)
            assert page.query_selector(".sidenav") is None
            page.fill("#login-otp", code_for(secret, ahead=1))
            page.click("#login-submit")
            page.wait_for_selector(".sidenav", timeout=WAIT)
            page.click("#logout")

            # --- the administrator: last login and password dates, reset of the second factor
            log_in(page, ADMIN)
            page.wait_for_selector(".sidenav", timeout=WAIT)
            page.click("a[data-route=users]")
            page.wait_for_selector(f"#users-table tr[data-user='{USER}'] .totp-reset", timeout=WAIT)
            head = page.inner_text("#users-table thead")
            assert "最后登录" in head and "密码修改时间" in head
            row = page.inner_text(f"#users-table tr[data-user='{USER}']")
            assert "两步验证" in row and "从未登录" not in row
            assert "从未登录" in page.inner_text(f"#users-table tr[data-user='{DUTY}']")
            page.screenshot(path=str(shots / "totp-users.png"))
            page.once("dialog", lambda d: d.accept())
            page.click(f"#users-table tr[data-user='{USER}'] .totp-reset")
            page.wait_for_function(
                f"!document.querySelector(\"#users-table tr[data-user='{USER}'] .totp-reset\")", timeout=WAIT)
            page.click("#logout")
            log_in(page, USER)  # no code any more
            page.wait_for_selector(".sidenav", timeout=WAIT)
            page.click("#logout")

            # --- a role that requires it: the enrolment screen, nothing else until done
            log_in(page, DUTY)
            page.wait_for_selector("#totp-card", timeout=WAIT)
            assert page.query_selector(".sidenav") is None
            assert "您的角色要求使用两步验证" in page.inner_text("#totp-card")
            page.screenshot(path=str(shots / "totp-forced.png"))
            enrol(page, shots, "duty")
            page.wait_for_selector(".sidenav", timeout=WAIT)
            page.click("#whoami")
            page.wait_for_selector("#totp-state", timeout=WAIT)
            assert "不能停用" in page.inner_text("#totp-card")
            assert page.query_selector("#totp-disable-form") is None

            # --- idle: the next request after the limit brings back the login form, saying why
            server.settings.session_idle_minutes = 0.03  # 1.8 s
            time.sleep(3)
            page.click("a[data-route=dashboard]")
            page.wait_for_selector("#login-form", timeout=WAIT)
            assert "会话空闲超时" in page.inner_text("#login-form")
            page.screenshot(path=str(shots / "totp-idle.png"))
            server.settings.session_idle_minutes = 30

            assert errors == []
            browser.close()
        kinds = server.sink.kinds()
        assert "totp_failed" in kinds and "token_expired" in kinds
    finally:
        server.stop()
