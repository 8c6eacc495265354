"""A person's view: Debian Chromium (driven by Playwright) opens /live/{channel} and the video plays."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import need, need_tool
from tests.e2e.platform import ADMIN_NEW_PASSWORD, STRONG_SIP_PASSWORD, PlatformProcess, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DEVICE = "34020000001320000044"
CHANNEL = DEVICE[:10] + "131" + DEVICE[13:]


def test_live_page_plays_in_chromium(tmp_path, shared_dir):
    need_tool("sipp")
    chromium = "/usr/bin/chromium"
    need(os.path.exists(chromium), "Debian chromium is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover
        need(False, "playwright is not installed")
        raise
    low = free_port()
    p = PlatformProcess(tmp_path / "data", GBOPS_RTP_PORTS=f"{low}-{low + 20}", GBOPS_MEDIA_HOST="127.0.0.1",
                        GBOPS_WEBRTC_LOOPBACK="true").start()
    cam = subprocess.Popen(
        ["sh", str(shared_dir / "peers" / "sipp" / "device.sh"), f"127.0.0.1:{p.sip_port}",
         "34020000002000000001", "3402000000", DEVICE, STRONG_SIP_PASSWORD, str(free_port()), "60", "12"],
        env={**os.environ, "GB_RUN_DIR": str(tmp_path / "sipp"), "GB_MEDIA_SECONDS": "60"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        p.wait_for(lambda: p.get(f"/api/devices/{DEVICE}/channels").json().get("items"), 20, "the camera")
        p.login()  # changes the initial admin password to ADMIN_NEW_PASSWORD
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns",
                "--autoplay-policy=no-user-gesture-required"])
            page = browser.new_page(bypass_csp=True)  # lets the test evaluate its checks; the page keeps its CSP otherwise
            page.goto(p.base + f"/live/{CHANNEL}")
            page.fill("#username", "admin")
            page.fill("#password", ADMIN_NEW_PASSWORD)
            page.click("#login button")
            page.wait_for_function("document.getElementById('video').currentTime > 0.5", timeout=20_000)
            t1 = page.evaluate("document.getElementById('video').currentTime")
            page.wait_for_timeout(1500)
            t2 = page.evaluate("document.getElementById('video').currentTime")
            size = page.evaluate("[document.getElementById('video').videoWidth, "
                                 "document.getElementById('video').videoHeight]")
            shots = os.environ.get("GBOPS_TEST_ARTIFACTS")  # keep the picture for a person to look at
            page.screenshot(path=str((Path(shots) if shots else tmp_path) / "live.png"))
            browser.close()
        assert t2 > t1 + 0.5, (t1, t2)
        assert size == [640, 360]
    finally:
        cam.terminate()
        cam.wait(10)
        p.stop()
