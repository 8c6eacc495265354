"""Main and sub-stream on the console's live wall (issue 18) in Debian Chromium (Playwright) against a real ``gbops
run`` with two watermark encoders and two simulated cameras, whose main stream is 640x360 and sub-stream 352x288:
camera A has its stream identification form set in device management, camera B has none.

A pane plays A on its main stream, its 主码流 button reopens it on the sub-stream (the picture is then 352 wide and
the main upstream ends); a main-stream pane refused for want of an encoder shows the refusal in words and the
action 改用子码流 instead of retrying, and a click on it plays the sub-stream; with both encoders held by main-stream
panes, 全部改用子码流 ends them first and then opens every pane on the sub-stream (it could not fit otherwise); B's
stream button is disabled with the reason in words; 报修 from a pane creates a ticket whose snapshot is the pane's
picture. No page error, no console error beyond the refusals' own 503 answers, no 404. Screenshots under
``$GBOPS_TEST_ARTIFACTS``."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.console_support import CHROMIUM, SimThread, browser_ready, login
from tests.e2e.platform import ADMIN_NEW_PASSWORD, STRONG_SIP_PASSWORD, PlatformProcess, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FIRST_ID = "34020000001320000081"


def _start_cams(sims: SimThread, sip_port: int) -> Any:
    from gbsim import SimConfig, Simulator

    async def go() -> Any:
        sim = Simulator(SimConfig(server=("127.0.0.1", sip_port), devices=2, channels=1,
                                  password=STRONG_SIP_PASSWORD, size="640x360", sub_size="352x288",
                                  first_id=FIRST_ID, register_rate=50, seed=18))
        await sim.start()
        sims.sims["cams"] = sim
        return sim

    return sims.call(go())


def _pane(i: int) -> str:
    return f".pane[data-pane='{i}']"


def _video(i: int) -> str:
    return f"document.querySelector(\"{_pane(i)} video\")"


def _plays_at(page: Any, i: int, width: int, timeout: int = 30_000) -> None:
    """Pane ``i`` shows pictures ``width`` wide that advance."""
    v = _video(i)
    page.wait_for_function(f"{v}.videoWidth === {width} && {v}.currentTime > 0.3 && "
                           f"document.querySelector(\"{_pane(i)}\").classList.contains('playing')", timeout=timeout)
    t1 = page.evaluate(f"{v}.currentTime")
    page.wait_for_timeout(1200)  # frames have to advance over some time: nothing to await instead
    assert page.evaluate(f"{v}.currentTime") > t1 + 0.4, i
    assert page.evaluate(f"{v}.videoWidth") == width, i


def _stream_button(page: Any, i: int) -> dict[str, Any]:
    return page.eval_on_selector(f"{_pane(i)} button.stream", "b => ({text: b.textContent, stream: b.dataset.stream, "
                                 "disabled: b.disabled, title: b.title, hidden: b.classList.contains('hidden')})")


def _streams_of(p: PlatformProcess, device: str) -> list[str]:
    return sorted(s["stream"] for s in p.get("/api/streams").json()["items"] if s["device_id"] == device)


def test_live_wall_main_and_sub_stream(tmp_path: Path) -> None:
    sync_playwright, shots = browser_ready(tmp_path)
    low = free_port()
    p = PlatformProcess(tmp_path / "data", GBOPS_RTP_PORTS=f"{low}-{low + 60}", GBOPS_MEDIA_HOST="127.0.0.1",
                        GBOPS_LIVE_IDLE_TIMEOUT="1", GBOPS_WATERMARK_MAX_ENCODERS="2").start()
    sims = SimThread()
    try:
        sim = _start_cams(sims, p.sip_port)
        dev_a, dev_b = sim.device_ids
        ch_a, ch_b = (sim.cfg.channel_ids(i)[0] for i in range(2))
        for dev, ch in ((dev_a, ch_a), (dev_b, ch_b)):
            p.wait_for(lambda d=dev, c=ch: any(x["channel_id"] == c for x in
                                               p.get(f"/api/devices/{d}/channels").json().get("items") or []),
                       30, f"the catalog of {dev}")
        r = httpx.patch(f"{p.base}/api/devices/{dev_a}", json={"stream_form": "streamnumber"},
                        headers={"Authorization": f"Bearer {p.login()}"}, timeout=30)
        assert r.status_code == 200, r.text

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--autoplay-policy=no-user-gesture-required"])
            page = browser.new_page(viewport={"width": 1366, "height": 768}, timezone_id="America/Los_Angeles",
                                    bypass_csp=True)
            errors: list[str] = []
            console: list[str] = []
            bad: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: console.append(f"{m.text} @ {m.location.get('url', '')}")
                    if m.type == "error" else None)
            page.on("response", lambda r: bad.append(f"{r.status} {r.request.method} {r.url}")
                    if r.status >= 400 else None)
            login(page, p.base, "admin", ADMIN_NEW_PASSWORD)

            page.goto(p.base + "/console/#/live")
            page.wait_for_selector("#wall")
            page.click("#view .seg-btn[data-layout='4']")
            page.select_option("#live-player", "flv")
            assert page.input_value("#live-stream") == ""  # the platform's default until chosen
            row_a = f".tree-row.channel[data-channel='{ch_a}']"
            row_b = f".tree-row.channel[data-channel='{ch_b}']"
            assert ch_a != ch_b

            # ---- pane 1: camera A on its main stream; the stream button offers the sub-stream
            page.click(row_a)
            _plays_at(page, 0, 640)
            btn = _stream_button(page, 0)
            assert btn == {**btn, "text": "主码流", "stream": "main", "disabled": False, "hidden": False}, btn
            assert "子码流" in btn["title"], btn

            # ---- 子码流: the pane reopens on the sub-stream; the main session ended first (its upstream goes)
            page.click(f"{_pane(0)} button.stream")
            _plays_at(page, 0, 352)
            btn = _stream_button(page, 0)
            assert (btn["text"], btn["stream"], btn["disabled"]) == ("子码流", "sub", False), btn
            p.wait_for(lambda: _streams_of(p, dev_a) == ["sub"], 20, "only A's sub-stream upstream")
            page.screenshot(path=str(shots / "live-wall-streams-01-sub.png"))

            # ---- pane 2: camera B (no sub-stream form): main stream, the sub-stream choice disabled, in words
            page.click(row_b)
            _plays_at(page, 1, 640)
            btn = _stream_button(page, 1)
            assert btn["disabled"] is True and btn["text"] == "主码流", btn
            assert "设备管理" in btn["title"] and "子码流" in btn["title"], btn

            # ---- pane 3: A's main stream does not fit (1.25 of 2 encoders held): the action, not advice
            page.click(row_a)
            page.wait_for_selector(f"{_pane(2)}[data-offer='use_sub_stream'] .pane-offer button.use-sub",
                                   timeout=30_000)
            status = page.inner_text(f"{_pane(2)} .pane-status")
            assert "水印编码器" in status and "子码流" in status, status
            assert "failed" in (page.get_attribute(_pane(2), "class") or "")
            page.wait_for_timeout(2500)  # a retry would have started within 1 s: nothing to await instead
            assert page.get_attribute(_pane(2), "data-retry") is None
            assert page.is_visible(f"{_pane(2)} .pane-offer button.use-sub")
            page.screenshot(path=str(shots / "live-wall-streams-02-offer.png"))
            page.click(f"{_pane(2)} .pane-offer button.use-sub")
            _plays_at(page, 2, 352)
            assert page.get_attribute(_pane(2), "data-offer") is None
            assert not page.is_visible(f"{_pane(2)} .pane-offer button.use-sub")
            assert _stream_button(page, 2)["stream"] == "sub"

            # ---- the wall's choice for new panes, remembered
            page.select_option("#live-stream", "main")
            assert page.evaluate("localStorage.getItem('gbops.live.stream')") == "main"

            # ---- both encoders held by main-stream panes, a fourth refused: 全部改用子码流 ends the main sessions
            # first, then opens the sub-streams (three of them fit only in the encoders freed)
            page.click(f"{_pane(1)} button.pane-close")
            page.wait_for_function(f"!document.querySelector(\"{_pane(1)}\").dataset.channel")
            page.click(f"{_pane(0)} button.stream")
            _plays_at(page, 0, 640)
            page.click(f"{_pane(2)} button.stream")
            _plays_at(page, 2, 640)
            page.click(_pane(3))
            page.click(row_a)
            page.wait_for_selector(f"{_pane(3)}[data-offer='use_sub_stream']", timeout=30_000)
            before = len(bad)
            page.click("#live-all-sub")
            for i in (0, 2, 3):
                _plays_at(page, i, 352)
                assert _stream_button(page, i)["stream"] == "sub", i
            assert bad[before:] == [], bad[before:]  # no sub-stream was asked while the main sessions held the encoders
            p.wait_for(lambda: _streams_of(p, dev_a) == ["sub"], 20, "only A's sub-stream upstream")
            page.screenshot(path=str(shots / "live-wall-streams-03-all-sub.png"))

            # ---- 报修 from pane 1: the ticket carries the picture of that moment (352x288)
            page.click(_pane(0))
            page.click(f"{_pane(0)} button.repair")
            page.wait_for_selector("#tk-repair-dialog #tk-r-shot img")
            page.wait_for_function("document.querySelector('#tk-r-shot img').naturalWidth === 352")
            assert dev_a in page.inner_text("#tk-repair-dialog")
            page.fill("#tk-r-note", "实时画面报修测试")
            page.screenshot(path=str(shots / "live-wall-streams-04-repair.png"))
            page.click("#tk-repair-dialog button[type=submit]")
            page.wait_for_function("(document.getElementById('toast').textContent || '').includes('已附上现场画面')",
                                   timeout=15_000)
            tickets = p.get("/api/tickets", device_id=dev_a).json()["items"]
            assert len(tickets) == 1 and tickets[0]["channel_id"] == ch_a, tickets
            assert tickets[0]["note"] == "实时画面报修测试" and tickets[0]["snapshot_url"], tickets[0]
            snap = p.get(f"/api/tickets/{tickets[0]['id']}/snapshot")
            assert snap.status_code == 200, snap.text
            assert snap.headers["content-type"].startswith("image/"), snap.headers
            from PIL import Image

            with Image.open(io.BytesIO(snap.content)) as img:
                assert img.size == (352, 288), img.size

            # ---- no action offered (B has no sub-stream): the pane retries with back-off as before
            page.click(f"{_pane(0)} button.stream")  # A's main again: 1.75 of 2 encoders
            _plays_at(page, 0, 640)
            page.click(_pane(1))
            page.click(row_b)
            page.wait_for_function(f"+(document.querySelector(\"{_pane(1)}\").dataset.retry || 0) >= 2",
                                   timeout=30_000)
            assert page.get_attribute(_pane(1), "data-offer") is None
            assert not page.is_visible(f"{_pane(1)} .pane-offer button")
            status = page.inner_text(f"{_pane(1)} .pane-status")
            assert "水印编码器" in status and "自动重试" in status and "子码流" not in status, status
            btn = _stream_button(page, 1)
            assert btn["disabled"] is True and "设备管理" in btn["title"], btn
            page.click(f"{_pane(1)} button.pane-close")
            page.wait_for_function(f"!document.querySelector(\"{_pane(1)}\").dataset.retry")

            # ---- nothing went wrong in the browser: the refusals' 503 answers are the only failed loads
            page.wait_for_timeout(1000)  # a late failed request would arrive in this time: nothing else to await
            assert errors == [], errors
            refusals = [b for b in bad if b.startswith("503 POST ") and b.endswith("/live")]
            assert len(refusals) >= 4 and [b for b in bad if b not in refusals] == [], bad
            # Chromium logs each failed load on the console: only those of the refusals
            assert [c for c in console if not ("status of 503" in c and c.endswith("/live"))] == [], console
            assert not any(b.startswith("404 ") for b in bad), bad

            # ---- a phone: nothing scrolls sideways with the wall's new controls
            page.set_viewport_size({"width": 390, "height": 844})
            page.wait_for_timeout(300)  # a layout pass after the resize (no event to wait for)
            wide = page.evaluate("document.documentElement.scrollWidth")
            assert wide <= 390, wide
            page.screenshot(path=str(shots / "live-wall-streams-05-phone.png"), full_page=True)
            page.set_viewport_size({"width": 1366, "height": 768})

            # ---- English
            page.click("#lang")
            page.wait_for_selector("#live-all-sub:has-text('All panes to sub-stream')")
            labels = page.eval_on_selector_all("#live-stream option", "os => os.map(o => o.textContent)")
            assert labels == ["Platform default", "Main", "Sub"], labels
            assert page.input_value("#live-stream") == "main"  # remembered
            page.click("#lang")
            assert errors == [], errors
            browser.close()
    finally:
        sims.close()
        p.stop()
