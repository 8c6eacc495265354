"""The web console in Debian Chromium (Playwright): an administrator grants an operator one organisation node,
the operator sees only that node's channels, plays one, sees it on the map; the audit viewer shows live.start.

Screenshots of every step are kept under ``$GBOPS_TEST_ARTIFACTS`` (``tmp_path`` when unset)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import need
from tests.e2e.platform import ADMIN_NEW_PASSWORD, STRONG_SIP_PASSWORD, PlatformProcess, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
LEAFLET = ROOT / "ops_portal" / "web" / "static" / "leaflet" / "leaflet.js"
CHROMIUM = "/usr/bin/chromium"
FIRST = "34020000001180000001"  # two simulated NVRs of two channels each
OPERATOR, OPERATOR_PASSWORD = "op-east", "East-gate#Watch9"


def _browser(pw):
    return pw.chromium.launch(executable_path=CHROMIUM, args=[
        "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns",
        "--autoplay-policy=no-user-gesture-required"])


def _login(page, base: str, username: str, password: str) -> None:
    page.goto(base + "/")  # redirects to /console/
    page.wait_for_selector("#login-form")
    page.fill("#login-username", username)
    page.fill("#login-password", password)
    page.click("#login-submit")


def _change_password(page, new: str) -> None:
    page.wait_for_selector("#password-form")
    page.fill("#pw-new", new)
    page.fill("#pw-confirm", new)
    page.click("#pw-submit")
    page.wait_for_selector(".sidenav")


def _logout(page) -> None:
    page.click("#logout")
    page.wait_for_selector("#login-form")


def test_console_pages_and_headers(tmp_path) -> None:
    """The page route: redirect, strict CSP, assets by exact name only (no way out of the directory)."""
    p = PlatformProcess(tmp_path / "data", GBOPS_MAP_TILE_URL="https://{s}.tiles.example.org/{z}/{x}/{y}.png").start()
    try:
        r = httpx.get(p.base + "/", follow_redirects=False)
        assert r.status_code == 307 and r.headers["location"] == "/console/"
        r = httpx.get(p.base + "/console/")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        csp = r.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self';" in csp and "unsafe" not in csp
        assert "img-src 'self' data: blob: https://*.tiles.example.org https://tile.openstreetmap.org " in csp
        assert 'content="https://{s}.tiles.example.org/{z}/{x}/{y}.png"' in r.text
        r = httpx.get(p.base + "/console/assets/app.js")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
        for bad in ("../../console.py", "..%2F..%2Fconsole.py", "index.html", "App.js", ".hidden.js"):
            assert httpx.get(p.base + "/console/assets/" + bad).status_code == 404, bad
    finally:
        p.stop()


def test_console_operator_scope_live_map_audit(tmp_path, request) -> None:
    need(os.path.exists(CHROMIUM), "Debian chromium is not installed (apt-get install chromium)")
    need(LEAFLET.exists(), "Leaflet is not installed (make test fetches it from npm into ops_portal/web/static)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover
        need(False, "playwright is not installed")
        raise
    shots = Path(os.environ.get("GBOPS_TEST_ARTIFACTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)

    def shot(page, name: str) -> None:
        page.screenshot(path=str(shots / f"console-{name}.png"))

    low = free_port()
    p = PlatformProcess(tmp_path / "data", GBOPS_RTP_PORTS=f"{low}-{low + 20}", GBOPS_MEDIA_HOST="127.0.0.1",
                        GBOPS_WEBRTC_LOOPBACK="true").start()
    sim = subprocess.Popen(
        [sys.executable, "-m", "gbops.cli", "sim", "--server", f"127.0.0.1:{p.sip_port}", "--devices", "2",
         "--channels", "2", "--password", STRONG_SIP_PASSWORD, "--first-id", FIRST, "--size", "640x360"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    initial = (p.data_dir / "initial-admin-password.txt").read_text().strip()
    try:
        with sync_playwright() as pw:
            browser = _browser(pw)
            # bypass_csp lets the test evaluate its checks; the console keeps its strict CSP otherwise
            page = browser.new_page(viewport={"width": 1400, "height": 900}, bypass_csp=True)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))

            # --- the administrator: first login forces a new password
            _login(page, p.base, "admin", initial)
            _change_password(page, ADMIN_NEW_PASSWORD)
            p.token = page.evaluate("sessionStorage.getItem('gbops.token')")
            devices = p.wait_for(lambda: [d["device_id"] for d in p.get("/api/devices").json()["items"]
                                          if d["online"] and d["channel_count"] == 2] if p.get(
                "/api/devices").status_code == 200 else None, 30, "two simulated NVRs")
            devices = sorted(devices)
            p.wait_for(lambda: len(p.get("/api/channels").json()["items"]) == 4, 20, "four channels")
            page.wait_for_selector("#stat-channels")
            page.click("#view button")  # refresh the dashboard now that the devices are in
            page.wait_for_function("document.querySelector('#stat-channels .stat-value').textContent.trim() === '4 / 4'")
            shot(page, "01-dashboard")

            # one organisation node holding the first NVR (by API: the console only reads the tree so far)
            node = p.post("/api/org/nodes", {"name": "东门片区"}).json()
            r = p.post(f"/api/org/nodes/{node['id']}/members", {"device_ids": [devices[0]]})
            assert r.status_code in (200, 201), r.text
            granted = {c["channel_id"] for c in p.get(f"/api/devices/{devices[0]}/channels").json()["items"]}
            assert len(granted) == 2

            # --- a role scoped to that node, through the console
            page.click("a[data-route=roles]")
            page.click("#role-new")
            page.fill("#role-name", "东门值守")
            for perm in ("device.read", "live.view"):
                page.check(f"input[data-perm='{perm}']")
            page.check(f"#role-nodes input[data-org='{node['id']}']")
            shot(page, "02-role")
            page.click("dialog.modal button[type=submit]")
            page.wait_for_selector("#roles-table tr[data-role='东门值守']")

            # --- an operator with that role; the console shows the one-time password
            page.click("a[data-route=users]")
            page.click("#user-new")
            page.fill("#user-username", OPERATOR)
            page.fill("#user-display-name", "东门值班员")
            page.check("#user-roles input[data-role='东门值守']")
            page.click("dialog.modal button[type=submit]")
            one_time = page.text_content("#onetime-password", timeout=10_000).strip()
            assert len(one_time) >= 12
            shot(page, "03-user-created")
            page.click("dialog.modal button[type=button]")
            page.wait_for_selector(f"#users-table tr[data-user='{OPERATOR}']")
            _logout(page)

            # --- the operator: forced password change, then only the granted channels
            _login(page, p.base, OPERATOR, one_time)
            _change_password(page, OPERATOR_PASSWORD)
            nav = page.eval_on_selector_all(".sidenav a", "els => els.map(e => e.dataset.route)")
            # no administration pages offered (the device and organisation pages are read-only to this role)
            assert nav == ["dashboard", "tree", "devices", "org", "live", "map", "time"], nav
            page.click("a[data-route=tree]")
            page.wait_for_selector(".tree-row.channel")
            shown = set(page.eval_on_selector_all(".tree-row.channel", "els => els.map(e => e.dataset.channel)"))
            assert shown == granted, (shown, granted)
            assert page.query_selector(f".tree-row.org[data-org='{node['id']}']") is not None
            shot(page, "04-operator-tree")

            # --- live: play a granted channel in pane 1 of 4 and watch the video advance
            channel = sorted(granted)[0]
            page.click("a[data-route=live]")
            page.click("#view .seg-btn[data-layout='4']")
            page.click(f".tree-row.channel[data-channel='{channel}']")
            video = ".pane[data-pane='0'] video"
            page.wait_for_function(f"document.querySelector(\"{video}\").currentTime > 0.5", timeout=20_000)
            t1 = page.evaluate(f"document.querySelector(\"{video}\").currentTime")
            page.wait_for_timeout(1500)
            t2 = page.evaluate(f"document.querySelector(\"{video}\").currentTime")
            size = page.evaluate(f"[document.querySelector(\"{video}\").videoWidth, "
                                 f"document.querySelector(\"{video}\").videoHeight]")
            assert t2 > t1 + 0.5, (t1, t2)
            assert size == [640, 360]
            assert page.get_attribute(".pane[data-pane='0']", "data-channel") == channel
            assert len(page.query_selector_all(".wall .pane")) == 4
            shot(page, "05-live")
            page.click(".pane[data-pane='0'] button[aria-label]:not(:has(.fs))")  # close the pane
            page.wait_for_function("!document.querySelector(\".pane[data-pane='0']\").dataset.channel")

            # --- map: the granted channels with coordinates, on the plain background (no tile URL set)
            page.click("a[data-route=map]")
            page.wait_for_selector(".gb-marker")
            markers = set(page.eval_on_selector_all(".gb-marker", "els => els.map(e => e.dataset.channel)"))
            assert markers == granted, markers
            assert page.query_selector("#map.plain.leaflet-container") is not None
            shot(page, "06-map")

            # --- English on request
            page.click("#lang")
            page.wait_for_selector("a[data-route=map]:text('Map')")
            page.click("#lang")
            _logout(page)

            # --- the administrator's audit viewer: the operator's live.start
            _login(page, p.base, "admin", ADMIN_NEW_PASSWORD)
            page.wait_for_selector(".sidenav")
            page.click("a[data-route=audit]")
            page.fill("#audit-action", "live.start")
            page.click("#audit-filter button[type=submit]")
            page.wait_for_function("(() => { const rows = [...document.querySelectorAll('#audit-table tbody tr')];"
                                   " return rows.length > 0 && rows.every(r => r.dataset.action === 'live.start'); })()")
            rows = page.eval_on_selector_all("#audit-table tbody tr", "els => els.map(e => e.innerText)")
            assert rows and all("live.start" in r for r in rows), rows
            # words, not only the code: the action's name in the console's language
            assert all("开始实时预览" in r or "live view started" in r for r in rows), rows
            assert any(OPERATOR in r and channel in r for r in rows), rows
            shot(page, "07-audit")
            assert not errors, errors
            browser.close()
    finally:
        sim.terminate()
        sim.wait(10)
        p.stop()
