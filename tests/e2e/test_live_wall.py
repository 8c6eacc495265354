"""The console's live wall (issue 18) in Debian Chromium (Playwright) against a real ``gbops run`` with two simulated
cameras (gbsim, streaming): two panes of four play (frames advance), each names its channel, a snapshot downloads a
PNG of the picture, the audio toggle flips ``muted``, closing a pane leaves no console error and no 4xx/5xx, nine
panes, a camera that goes offline makes its pane retry with back-off ("重试中（第 N 次，X 秒后）"), the wall fills the
height at 1366x768 (no page scroll) and nothing scrolls sideways at 390x844. Screenshots under
``$GBOPS_TEST_ARTIFACTS``."""

from __future__ import annotations

import re
import struct
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.console_support import CHROMIUM, SimThread, browser_ready
from tests.e2e.platform import ADMIN_NEW_PASSWORD, STRONG_SIP_PASSWORD, PlatformProcess, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CAM_A = "34020000001320000061"
CAM_B = "34020000001320000071"


def _start_cam(sims: SimThread, name: str, sip_port: int, first_id: str) -> Any:
    """One streaming camera (one channel, 640x360 H.264) on the SimThread's loop."""
    from gbsim import SimConfig, Simulator

    async def go() -> Any:
        sim = Simulator(SimConfig(server=("127.0.0.1", sip_port), devices=1, channels=1, password=STRONG_SIP_PASSWORD,
                                  first_id=first_id, size="640x360", seed=18))
        await sim.start()
        sims.sims[name] = sim
        return sim

    return sims.call(go())


def _pane(i: int) -> str:
    return f".pane[data-pane='{i}']"


def _advancing(page: Any, i: int) -> tuple[float, float, list[int]]:
    """The pane's video plays: (currentTime, currentTime 1.5 s later, [videoWidth, videoHeight])."""
    video = f"document.querySelector(\"{_pane(i)} video\")"
    page.wait_for_function(f"{video}.currentTime > 0.5 && {video}.videoWidth > 0", timeout=30_000)
    t1 = page.evaluate(f"{video}.currentTime")
    page.wait_for_timeout(1500)  # frames have to advance over some time: nothing to await instead
    t2 = page.evaluate(f"{video}.currentTime")
    return t1, t2, page.evaluate(f"[{video}.videoWidth, {video}.videoHeight]")


def test_live_wall_panes_snapshot_audio_close_retry(tmp_path: Path) -> None:
    sync_playwright, shots = browser_ready(tmp_path)
    low = free_port()
    p = PlatformProcess(tmp_path / "data", GBOPS_RTP_PORTS=f"{low}-{low + 40}", GBOPS_MEDIA_HOST="127.0.0.1",
                        GBOPS_WEBRTC_LOOPBACK="true").start()
    sims = SimThread()
    try:
        _start_cam(sims, "a", p.sip_port, CAM_A)
        _start_cam(sims, "b", p.sip_port, CAM_B)
        p.login()  # the initial password changed: ADMIN_NEW_PASSWORD
        chans = {}
        for dev in (CAM_A, CAM_B):
            items = p.wait_for(lambda d=dev: p.get(f"/api/devices/{d}/channels").json().get("items"), 30,
                               f"the catalog of {dev}")
            chans[dev] = items[0]
        a, b = chans[CAM_A], chans[CAM_B]

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns",
                "--autoplay-policy=no-user-gesture-required"])
            page = browser.new_page(viewport={"width": 1366, "height": 768}, timezone_id="America/Los_Angeles",
                                    accept_downloads=True, bypass_csp=True)
            errors: list[str] = []
            console: list[str] = []
            bad: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: console.append(f"{m.text} @ {m.location.get('url', '')}")
                    if m.type == "error" else None)
            page.on("response", lambda r: bad.append(f"{r.status} {r.request.method} {r.url}")
                    if r.status >= 400 else None)
            page.goto(p.base + "/console/")
            page.wait_for_selector("#login-form")
            page.fill("#login-username", "admin")
            page.fill("#login-password", ADMIN_NEW_PASSWORD)
            page.click("#login-submit")
            page.wait_for_selector(".sidenav")

            # ---- four panes, HTTP-FLV (mpegts.js), both cameras
            page.goto(p.base + "/console/#/live")
            page.wait_for_selector("#wall")
            page.click("#view .seg-btn[data-layout='4']")
            assert page.locator("#wall .pane").count() == 4
            assert sorted(page.eval_on_selector_all("#view .seg-btn", "els => els.map(e => +e.dataset.layout)")) \
                == [1, 4, 9, 16]
            page.select_option("#live-player", "flv")
            page.click(f".tree-row.channel[data-channel='{a['channel_id']}']")
            page.click(f".tree-row.channel[data-channel='{b['channel_id']}']")
            for i, ch in ((0, a), (1, b)):
                t1, t2, size = _advancing(page, i)
                assert t2 > t1 + 0.5, (i, t1, t2)
                assert size == [640, 360], size
                assert page.get_attribute(_pane(i), "data-channel") == ch["channel_id"]
                # the name stays on the picture (not only while the pointer is over the pane)
                label = page.locator(f"{_pane(i)} .pane-title")
                assert label.inner_text() == (ch.get("name") or ch["channel_id"])
                page.mouse.move(0, 0)
                assert label.evaluate("e => getComputedStyle(e.closest('.pane-bar')).opacity") == "1"
                assert label.is_visible()
            # the wall fills the height: no page scroll at 1366x768
            assert page.evaluate("document.documentElement.scrollHeight <= window.innerHeight"), page.evaluate(
                "[document.documentElement.scrollHeight, innerHeight, document.getElementById('wall').style.height,"
                " JSON.stringify(document.getElementById('wall').getBoundingClientRect()),"
                " JSON.stringify(document.querySelector('.tree-panel').getBoundingClientRect()),"
                " getComputedStyle(document.querySelector('.tree-panel')).maxHeight,"
                " [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().bottom > 770)"
                ".slice(0, 8).map(e => e.tagName + '.' + e.className + '#' + e.id + ':' +"
                " Math.round(e.getBoundingClientRect().bottom))]")
            wall_h = page.evaluate("document.getElementById('wall').getBoundingClientRect().bottom")
            assert wall_h > 768 - 80, wall_h
            page.screenshot(path=str(shots / "live-wall-01-four.png"))

            # ---- snapshot: a PNG of the picture, named with the channel and the Beijing time
            page.click(_pane(0))
            with page.expect_download() as dl:
                page.click(f"{_pane(0)} button.snapshot")
            name = dl.value.suggested_filename
            assert re.fullmatch(r".+_\d{8}-\d{6}\.png", name), name
            assert name.startswith(re.sub(r"[\\/:*?\"<>|\s]+", "_", a.get("name") or a["channel_id"])), name
            png = Path(dl.value.path()).read_bytes()
            assert png[:8] == b"\x89PNG\r\n\x1a\n"
            assert struct.unpack(">II", png[16:24]) == (640, 360)
            beijing = time.strftime("%Y%m%d", time.gmtime(time.time() + 8 * 3600))
            assert name.rsplit("_", 1)[1][:8] == beijing, name

            # ---- audio: muted by default, the button flips it
            video0 = f"document.querySelector(\"{_pane(0)} video\")"
            assert page.evaluate(f"{video0}.muted") is True
            page.click(f"{_pane(0)} button.audio")
            assert page.evaluate(f"{video0}.muted") is False
            assert page.get_attribute(f"{_pane(0)} button.audio", "aria-pressed") == "true"
            page.click(f"{_pane(0)} button.audio")
            assert page.evaluate(f"{video0}.muted") is True

            # ---- close pane 0: its session ends, no console error, no 4xx/5xx
            page.click(f"{_pane(0)} button.pane-close")
            page.wait_for_function(f"!document.querySelector(\"{_pane(0)}\").dataset.channel")
            page.wait_for_timeout(1500)  # a late failed request would arrive in this time: nothing else to await
            assert console == [], console
            assert bad == [], bad
            assert errors == [], errors

            # ---- nine panes: the other camera plays on; the layout is remembered
            page.click("#view .seg-btn[data-layout='9']")
            assert page.locator("#wall .pane").count() == 9
            assert page.get_attribute(_pane(1), "data-channel") == b["channel_id"]
            assert page.evaluate("localStorage.getItem('gbops.layout')") == "9"
            assert page.evaluate("document.documentElement.scrollHeight <= window.innerHeight")
            page.screenshot(path=str(shots / "live-wall-02-nine.png"))

            # ---- camera B goes offline: its pane retries with back-off, in words
            sims.stop("b")
            page.wait_for_function(f"+(document.querySelector(\"{_pane(1)}\").dataset.retry || 0) >= 2",
                                   timeout=45_000)
            status = page.inner_text(f"{_pane(1)} .pane-status")
            assert re.search(r"重试中（第 \d+ 次，\d+ 秒后）", status), status
            page.wait_for_function(f"document.querySelector(\"{_pane(1)}\").dataset.retry === '3'", timeout=15_000)
            t3 = time.monotonic()
            assert "第 3 次，4 秒后" in page.inner_text(f"{_pane(1)} .pane-status")
            page.wait_for_function(f"document.querySelector(\"{_pane(1)}\").dataset.retry === '4'", timeout=15_000)
            t4 = time.monotonic()
            assert 3.0 <= t4 - t3 <= 7.0, t4 - t3  # 4 s between the third and the fourth try
            assert "第 4 次，8 秒后" in page.inner_text(f"{_pane(1)} .pane-status")
            assert "failed" in (page.get_attribute(_pane(1), "class") or "")
            page.screenshot(path=str(shots / "live-wall-03-retry.png"))

            # closing the retrying pane stops its retries
            page.click(f"{_pane(1)} button.pane-close")
            page.wait_for_function(f"!document.querySelector(\"{_pane(1)}\").dataset.retry")
            assert page.inner_text(f"{_pane(1)} .pane-status") == ""

            # ---- a phone: nothing scrolls sideways
            page.set_viewport_size({"width": 390, "height": 844})
            page.wait_for_timeout(300)  # a layout pass after the resize (no event to wait for)
            wide = page.evaluate("document.documentElement.scrollWidth")
            assert wide <= 390, wide
            page.screenshot(path=str(shots / "live-wall-04-phone.png"), full_page=True)
            page.set_viewport_size({"width": 1366, "height": 768})

            # ---- English: the retry line and the buttons in English
            page.click("#lang")
            page.wait_for_selector(f"{_pane(0)} button.snapshot[aria-label='Snapshot']")
            page.click("#lang")

            browser.close()
        assert errors == [], errors
        assert console == [], console
        assert bad == [], bad
    finally:
        sims.close()
        p.stop()
