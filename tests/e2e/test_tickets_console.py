"""The console's 故障工单 page (``#/tickets``, issue 18) in Debian Chromium (Playwright), the browser in Los Angeles
and the console's own Content-Security-Policy in force, on a real ``gbops run`` with a simulated camera
(``gbops sim``) registered with the platform's SIP password.

At 1366x768 the administrator opens the page, reports a fault of the camera's channel through 新建工单（报修）
(the channel found with the dialog's search), sees the ticket in the list as 待受理 with its SLA countdown
(剩余 47 小时 … 分 of the default 48 h limit) and the header bell counting one ticket waiting for repair; the
detail dialog (``#/tickets?id=N`` in the address) takes it through 受理 → 开始维修 → 修复反馈 → 确认修复 with its
buttons, only the moves the API allows being offered, the state checked through the API after each and every
move on the audit log; 修复反馈 without a note is refused in the dialog with nothing sent; the history names who
did what; a PNG made here is uploaded as the snapshot and shown (fetched with the token: a blob URL). The
filters are the server's and stay in the address; the address with ``?id=N`` opens the dialog after a reload.
At 390x844 the list and the dialog have no sideways scrolling (less important columns hidden), and the English
switch translates the states. No JavaScript or console error. Screenshots under ``$GBOPS_TEST_ARTIFACTS``."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.console_support import CHROMIUM, browser_ready
from tests.e2e.platform import ADMIN_NEW_PASSWORD, STRONG_SIP_PASSWORD, PlatformProcess

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DEVICE = "34020000001180000181"  # an NVR (type 118): the simulator gives two channels
DESKTOP = {"width": 1366, "height": 768}
PHONE = {"width": 390, "height": 844}
NOTE = "画面黑屏，无法连接"
FEEDBACK = "更换电源适配器后恢复"
CONTRACT = "东区维保合同"


def _open_console(pw: Any, base: str) -> tuple[Any, Any, list[str]]:
    """Chromium logged in as the administrator, the console's CSP in force: (browser, page, errors), ``errors``
    collecting JavaScript errors and console errors (failed requests included)."""
    browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu",
                                                                 "--disable-background-networking"])
    page = browser.new_page(viewport=DESKTOP, timezone_id="America/Los_Angeles")
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(f"page: {e}"))
    page.on("console", lambda m: errors.append(f"console: {m.text} @ {m.location.get('url', '')}")
            if m.type == "error" else None)
    page.goto(base + "/console/")
    page.wait_for_selector("#login-form")
    page.fill("#login-username", "admin")
    page.fill("#login-password", ADMIN_NEW_PASSWORD)
    page.click("#login-submit")
    page.wait_for_selector(".sidenav")
    return browser, page, errors


def _ensure_bell(page: Any) -> None:
    """The header bell: the shell mounts it (once the lead wires it); until then the test mounts it the same way."""
    if page.locator("#tk-bell").count():
        return
    page.evaluate("import('/console/assets/tickets.js').then((m) => { m.mountTicketBell("
                  "document.querySelector('.topbar-right') || document.querySelector('header')); })")
    page.wait_for_selector("#tk-bell")


def _png() -> bytes:
    from PIL import Image

    img = Image.new("RGB", (320, 240), (30, 120, 200))
    for x in range(100, 220):
        for y in range(80, 160):
            img.putpixel((x, y), (240, 200, 40))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _no_sideways_scroll(page: Any) -> None:
    widths = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert widths[0] <= widths[1], f"sideways scrolling: {widths}"


def _channels(p: PlatformProcess) -> list[dict[str, Any]]:
    items = p.get("/api/channels").json()["items"]
    return sorted((c for c in items if c["device_id"] == DEVICE), key=lambda c: c["channel_id"])


def _row(ticket_id: int) -> str:
    return f"#tk-table tr[data-ticket='{ticket_id}']"


def test_tickets_page_report_flow_snapshot(tmp_path: Path) -> None:
    sync_playwright, shots = browser_ready(tmp_path)
    from playwright.sync_api import expect

    p = PlatformProcess(tmp_path / "data").start()
    sim_log = open(tmp_path / "sim.log", "wb")  # noqa: SIM115 - closed at the end
    sim = subprocess.Popen(
        [sys.executable, "-m", "gbops.cli", "sim", "--server", f"127.0.0.1:{p.sip_port}", "--devices", "1",
         "--channels", "2", "--password", STRONG_SIP_PASSWORD, "--first-id", DEVICE],
        stdout=sim_log, stderr=subprocess.STDOUT)
    try:
        p.login()  # the initial administrator password changed to ADMIN_NEW_PASSWORD
        channels = p.wait_for(lambda: _channels(p) if len(_channels(p)) == 2 else None, 30,
                              "the simulated camera's two channels")
        chan, chan2 = channels[0], channels[1]
        # the second channel is under a contract with a repair limit of 3.6 s: its ticket is soon overdue
        r = p.post("/api/contracts", {"name": CONTRACT, "channel_ids": [chan2["channel_id"]], "repair_limit_hours": 0.001,
                                      "valid_from": "2020-01-01T00:00:00Z"})
        assert r.status_code == 201, r.text
        assert p.get("/api/tickets").json()["total"] == 0

        with sync_playwright() as pw:
            browser, page, errors = _open_console(pw, p.base)
            assert page.text_content("a[data-route=tickets]") == "故障工单"
            page.click("a[data-route=tickets]")
            page.wait_for_selector("#tk-table")
            assert page.url.endswith("#/tickets")
            _ensure_bell(page)
            expect(page.locator("#tk-bell-count")).to_have_text("0")
            heads = page.inner_text("#tk-table thead")
            for word in ("编号", "状态", "故障点位", "类型", "报修人", "报修时间", "修复期限", "合同"):
                assert word in heads, (word, heads)
            expect(page.locator("#tk-table tbody")).to_contain_text("没有符合条件的工单")

            # ---- 报修: the channel found by the dialog's search, every input labelled
            page.click("#tk-new")
            page.wait_for_selector("#tk-repair-dialog #tk-r-search")
            labels = page.eval_on_selector_all(
                "#tk-repair-dialog input, #tk-repair-dialog select, #tk-repair-dialog textarea",
                "els => els.map(e => e.closest('label') && e.closest('label').textContent.trim() ? e.id"
                " : 'unlabelled:' + e.id)")
            assert not [x for x in labels if x.startswith("unlabelled:")], labels
            kinds = page.eval_on_selector_all("#tk-r-kind option", "os => os.map(o => o.text)")
            assert kinds == ["点位故障", "视频质量异常"], kinds
            page.click("#tk-repair-dialog button[type=submit]")  # nothing chosen: said in words, nothing sent
            expect(page.locator("#tk-repair-dialog .msg.error")).to_have_text(
                "请选择故障通道，或填写设备编码和通道编码")
            page.fill("#tk-r-search", chan["channel_id"])
            expect(page.locator("#tk-r-device")).to_have_value(DEVICE)  # the one match is taken
            expect(page.locator("#tk-r-channel")).to_have_value(chan["channel_id"])
            page.fill("#tk-r-note", NOTE)
            page.click("#tk-repair-dialog button[type=submit]")
            page.wait_for_selector("#tk-repair-dialog", state="detached")

            listed = p.get("/api/tickets").json()
            assert listed["total"] == 1, listed
            ticket = listed["items"][0]
            tid = ticket["id"]
            assert (ticket["device_id"], ticket["channel_id"], ticket["note"], ticket["state"], ticket["kind"]) == (
                DEVICE, chan["channel_id"], NOTE, "reported", "fault")
            assert ticket["reporter_name"]

            # the new ticket's dialog opens by itself, the address names it; Escape closes it
            page.wait_for_selector(f"#tk-detail[data-ticket='{tid}'] #tk-act-acknowledge")
            assert page.url.endswith(f"#/tickets?id={tid}"), page.url
            expect(page.locator("#tk-detail .tk-d-sla .tk-countdown")).to_contain_text("剩余")
            page.keyboard.press("Escape")
            page.wait_for_selector("#tk-detail", state="detached")
            assert page.url.endswith("#/tickets"), page.url

            # ---- in the list: state in words, the channel by name and device, the live countdown
            row = _row(tid)
            page.wait_for_selector(row)
            assert page.inner_text(row + " .tk-state-cell") == "待受理"
            assert page.inner_text(row + " .tk-chan-name") == (chan["name"] or chan["channel_id"])
            assert DEVICE in page.inner_text(row + " .tk-device")
            countdown = page.inner_text(row + " .tk-countdown")
            assert re.fullmatch(r"剩余 4[78] 小时 \d{1,2} 分", countdown), countdown
            assert "late" not in page.get_attribute(row + " .tk-countdown", "class")
            assert page.inner_text(row + " .tk-contract") == "默认时限"
            beijing = page.inner_text(row + " .tk-reported")
            assert re.match(r"\d{4}/\d{1,2}/\d{1,2} \d{2}:\d{2}:\d{2}", beijing), beijing
            expect(page.locator("#tk-bell-count")).to_have_text("1")  # one ticket waiting for repair
            page.click("#tk-bell-button")
            expect(page.locator("#tk-bell-open")).to_have_text("待修复 1")
            expect(page.locator("#tk-bell-overdue")).to_have_text("已超期 0")
            assert page.get_attribute("#tk-bell-overdue", "href") == "#/tickets?overdue=true&open=true"
            page.keyboard.press("Escape")
            expect(page.locator("#tk-bell-panel")).to_be_hidden()
            page.screenshot(path=str(shots / "tickets-01-reported.png"), full_page=True)

            # ---- the detail from the row's button
            page.click(row + " .tk-open")
            page.wait_for_selector(f"#tk-detail[data-ticket='{tid}'] #tk-act-acknowledge")
            assert page.url.endswith(f"#/tickets?id={tid}"), page.url

            # ---- the flow through the buttons: only the allowed moves offered, each checked through the API
            steps = [("acknowledge", "acknowledged", "已受理", ["acknowledge"]),
                     ("start_repair", "repairing", "维修中", ["start_repair", "feedback"]),
                     ("feedback", "repaired", "已修复待确认", ["feedback"]),
                     ("confirm", "confirmed", "已确认", ["confirm", "reopen"])]
            for action, state, words, offered in steps:
                shown = page.eval_on_selector_all("#tk-flow button", "bs => bs.map(b => b.id.slice(7))")
                assert shown == offered, (action, shown)
                if action == "feedback":
                    page.click("#tk-act-feedback")  # no note: refused in the dialog, nothing sent
                    expect(page.locator("#tk-flow-error")).to_have_text("修复反馈须填写说明")
                    assert p.get(f"/api/tickets/{tid}").json()["state"] == "repairing"
                    page.fill("#tk-comment", FEEDBACK)
                page.click(f"#tk-act-{action}")
                expect(page.locator("#tk-detail .tk-d-state")).to_have_text(words)
                assert p.get(f"/api/tickets/{tid}").json()["state"] == state
                expect(page.locator(row + " .tk-state-cell")).to_have_text(words)
                if action == "feedback":
                    page.screenshot(path=str(shots / "tickets-02-repaired.png"), full_page=True)
            expect(page.locator("#tk-flow")).to_have_text("当前状态没有可执行的处理。")
            done = p.get(f"/api/tickets/{tid}").json()
            assert done["allowed_actions"] == [] and done["feedback_note"] == FEEDBACK and done["within_limit"]
            moves = page.eval_on_selector_all("#tk-history tbody tr", "rs => rs.map(r => [...r.cells].map("
                                                                     "c => c.textContent))")
            assert [m[1] for m in moves] == ["报修", "受理", "开始维修", "修复反馈", "确认修复"], moves
            assert [m[2] for m in moves] == ["— → 待受理", "待受理 → 已受理", "已受理 → 维修中", "维修中 → 已修复待确认",
                                             "已修复待确认 → 已确认"], moves
            assert all(m[3] == "admin" for m in moves), moves
            assert any(m[4] == FEEDBACK for m in moves), moves
            expect(page.locator("#tk-detail .tk-d-sla .tk-countdown")).to_have_text(re.compile(r"^时限内修复"))
            audit = p.get("/api/audit/entries", action="ticket.transition", target=str(tid), order="oldest").json()
            assert [(e["detail"]["action"], e["detail"]["to"], e["actor"]["name"]) for e in audit["items"]] == [
                ("acknowledge", "acknowledged", "admin"), ("start_repair", "repairing", "admin"),
                ("feedback", "repaired", "admin"), ("confirm", "confirmed", "admin")], audit
            expect(page.locator("#tk-bell-count")).to_have_text("0")  # nothing waits for repair any more

            # ---- the snapshot: uploaded with PUT, shown from a blob URL (the GET sends the token)
            expect(page.locator("#tk-snap-view")).to_have_text("尚无现场图片")
            page.set_input_files("#tk-snap-file", files=[{"name": "scene.png", "mimeType": "image/png",
                                                          "buffer": _png()}])
            page.click("#tk-snap-upload")
            page.wait_for_selector("#tk-snap-img")
            assert page.get_attribute("#tk-snap-img", "src").startswith("blob:")
            expect(page.locator("#tk-snap-img")).to_have_js_property("complete", True)
            size = page.eval_on_selector("#tk-snap-img", "i => [i.naturalWidth, i.naturalHeight]")
            assert size == [320, 240], size
            assert p.get(f"/api/tickets/{tid}").json()["snapshot_url"] == f"/api/tickets/{tid}/snapshot"
            fetched = p.get("/api/audit/entries", action="ticket.snapshot_fetch", target=str(tid)).json()
            assert fetched["total"] >= 1, fetched
            page.screenshot(path=str(shots / "tickets-03-confirmed-snapshot.png"), full_page=True)

            # ---- Escape closes the dialog and the address forgets it
            page.keyboard.press("Escape")
            page.wait_for_selector("#tk-detail", state="detached")
            assert page.url.endswith("#/tickets"), page.url
            expect(page.locator(row + " .tk-countdown")).to_have_text(re.compile(r"^时限内修复"))

            # ---- filters: the server's, kept in the address
            page.select_option("#tk-state", "reported")
            expect(page.locator("#tk-table tbody")).to_contain_text("没有符合条件的工单")
            assert page.url.endswith("#/tickets?state=reported"), page.url
            page.select_option("#tk-state", "confirmed")
            page.wait_for_selector(row)
            page.select_option("#tk-overdue", "true")
            expect(page.locator("#tk-table tbody")).to_contain_text("没有符合条件的工单")
            page.click("#tk-reset")
            page.wait_for_selector(row)
            assert page.url.endswith("#/tickets"), page.url

            # ---- openRepairDialog(channel), as channel pages and live panes call it: the channel preset; the
            # contract's limit of 3.6 s runs out and the countdown says 已超时 in red
            page.evaluate("([d, c, n]) => { import('/console/assets/tickets.js').then((m) => "
                          "m.openRepairDialog({device_id: d, channel_id: c, name: n})); }",
                          [DEVICE, chan2["channel_id"], chan2["name"]])
            page.wait_for_selector("#tk-repair-dialog .tk-r-preset")
            assert page.inner_text("#tk-repair-dialog .tk-r-preset .tk-chan-name") == chan2["name"]
            assert page.locator("#tk-repair-dialog #tk-r-search").count() == 0
            page.select_option("#tk-r-kind", "quality")
            page.select_option("#tk-r-anomaly", "frozen")
            page.click("#tk-repair-dialog button[type=submit]")
            page.wait_for_selector("#tk-repair-dialog", state="detached")
            late = p.get("/api/tickets", channel_id=chan2["channel_id"]).json()["items"]
            assert [(t["kind"], t["anomaly"], t["device_id"]) for t in late] == [("quality", "frozen", DEVICE)], late
            late_id = late[0]["id"]
            page.wait_for_selector(f"#tk-detail[data-ticket='{late_id}']")
            page.keyboard.press("Escape")
            page.wait_for_selector("#tk-detail", state="detached")
            p.wait_for(lambda: p.get(f"/api/tickets/{late_id}").json()["overdue"], 15, "the ticket overdue")
            page.click("#tk-refresh")
            late_row = _row(late_id)
            expect(page.locator(late_row + " .tk-countdown")).to_have_text(re.compile(r"^已超时 \d+ 分$"))
            assert "late" in page.get_attribute(late_row + " .tk-countdown", "class")
            colour = page.eval_on_selector(late_row + " .tk-countdown", "e => getComputedStyle(e).color")
            assert colour == "rgb(180, 35, 24)", colour
            assert page.inner_text(late_row + " .tk-contract") == CONTRACT
            assert "视频质量异常" in page.inner_text(late_row + " .tk-kind")
            assert "画面冻结" in page.inner_text(late_row + " .tk-kind")
            page.select_option("#tk-overdue", "true")
            page.wait_for_selector(f"{row}", state="detached")
            assert page.locator("#tk-table tbody tr").count() == 1 and page.locator(late_row).count() == 1
            assert page.url.endswith("#/tickets?overdue=true"), page.url
            page.screenshot(path=str(shots / "tickets-04-overdue.png"), full_page=True)
            page.click("#tk-reset")
            page.wait_for_selector(row)

            # ---- the address with ?id= opens the dialog after a reload
            page.goto(f"{p.base}/console/#/tickets?id={tid}")
            page.wait_for_selector(f"#tk-detail[data-ticket='{tid}'] #tk-snap-img")
            expect(page.locator("#tk-detail .tk-d-state")).to_have_text("已确认")
            page.keyboard.press("Escape")
            page.wait_for_selector("#tk-detail", state="detached")

            # ---- 390 px: nothing scrolls sideways but the table's own box
            page.set_viewport_size(PHONE)
            page.wait_for_timeout(300)  # a layout pass after the resize (no event to wait for)
            _no_sideways_scroll(page)
            assert page.is_visible(row + " .tk-state-cell") and page.is_visible(row + " .tk-countdown")
            assert not page.is_visible(row + " .tk-reported")  # a less important column hidden
            page.screenshot(path=str(shots / "tickets-05-phone.png"), full_page=True)
            page.click(row + " .tk-open")
            page.wait_for_selector("#tk-detail #tk-snap-img")
            _no_sideways_scroll(page)
            page.screenshot(path=str(shots / "tickets-06-phone-detail.png"), full_page=True)
            page.keyboard.press("Escape")
            page.wait_for_selector("#tk-detail", state="detached")

            # ---- English
            page.click("#lang")
            expect(page.locator("#view h1")).to_have_text("Fault tickets")
            page.wait_for_selector(row)
            assert page.inner_text(row + " .tk-state-cell") == "confirmed"
            page.set_viewport_size(DESKTOP)
            page.screenshot(path=str(shots / "tickets-07-english.png"), full_page=True)

            assert errors == [], errors
            browser.close()
    finally:
        sim.terminate()
        sim.wait(10)
        sim_log.close()
        p.stop()
