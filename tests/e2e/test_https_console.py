"""The console over HTTPS in Debian Chromium: the browser asks for plain ``http://`` and is sent to HTTPS,
the administrator logs in (first login: new password), the console shell loads and calls the API, and every
request the page makes is HTTPS with the token in a header, never in a URL. The platform's certificate is
self-signed by the test (the browser context accepts it: ``ignore_https_errors``)."""

from __future__ import annotations

import pytest

from gbcore import tls
from gbcore.settings import Settings
from tests.e2e.console_support import CHROMIUM, browser_ready
from tests.e2e.platform import ADMIN_NEW_PASSWORD, PlatformProcess

TOKEN_KEY = "gbops.token"  # ops_portal/web/console/api.js

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_console_over_https(tmp_path) -> None:
    sync_playwright, shots = browser_ready(tmp_path)
    cert = tmp_path / "site.crt", tmp_path / "site.key"
    tls.generate_self_signed(Settings(data_dir=tmp_path / "gen", http_host="127.0.0.1"), *cert)
    p = PlatformProcess(tmp_path / "data", GBOPS_TLS_CERT_FILE=str(cert[0]), GBOPS_TLS_KEY_FILE=str(cert[1])).start()
    initial = (p.data_dir / "initial-admin-password.txt").read_text().strip()
    requests: list[str] = []
    api_answers: list[tuple[str, int, str | None]] = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            context = browser.new_context(ignore_https_errors=True)
            page = context.new_page()
            page.on("request", lambda req: requests.append(req.url))
            page.on("response", lambda resp: api_answers.append(
                (resp.url, resp.status, resp.headers.get("strict-transport-security")))
                if "/api/" in resp.url else None)

            # plain HTTP on the old port: 308 to HTTPS, then the console
            page.goto(f"http://127.0.0.1:{p.http_port}/", timeout=30_000)
            page.wait_for_selector("#login-form", timeout=30_000)
            assert page.url == f"https://127.0.0.1:{p.https_port}/console/"
            assert page.evaluate("window.isSecureContext") is True
            page.fill("#login-username", "admin")
            page.fill("#login-password", initial)
            page.click("#login-submit")
            page.wait_for_selector("#password-form", timeout=30_000)
            page.fill("#pw-new", ADMIN_NEW_PASSWORD)
            page.fill("#pw-confirm", ADMIN_NEW_PASSWORD)
            page.click("#pw-submit")
            page.wait_for_selector(".sidenav", timeout=30_000)
            page.screenshot(path=str(shots / "https-console.png"))
            # one API call from the page, as the console makes them (token from its session, in a header)
            status, protocol, token = page.evaluate("""async () => {
                const token = sessionStorage.getItem(TOKEN_KEY);
                const r = await fetch('/api/devices', {headers: {Authorization: 'Bearer ' + token}});
                return [r.status, location.protocol, token];
            }""".replace("TOKEN_KEY", repr(TOKEN_KEY)))
            browser.close()
    finally:
        p.stop()

    assert (status, protocol) == (200, "https:") and token
    logged_in = [a for a in api_answers if "/api/auth/login" in a[0]]
    assert logged_in and all(a[1] == 200 for a in logged_in[-1:])
    after_login = [a for a in api_answers if "/api/auth/" not in a[0]]
    assert after_login and any(a[1] == 200 for a in after_login), api_answers
    # every API answer came over HTTPS with HSTS
    assert all(u.startswith(f"https://127.0.0.1:{p.https_port}/") and hsts == "max-age=31536000"
               for u, _, hsts in api_answers), api_answers
    # the page's requests: only the first one (typed by the user) was plain HTTP
    assert requests[0] == f"http://127.0.0.1:{p.http_port}/"
    assert all(u.startswith(("https://", "data:", "blob:")) for u in requests[1:]), requests
    assert not any(token in u for u in requests)
    assert not any("token=" in u or "access_token" in u for u in requests)
    log = p.log()
    assert token not in log
