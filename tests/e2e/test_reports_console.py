"""The console's 服务合同 and 在线率报表 pages (issue 18) in Debian Chromium (Playwright) against a real ``gbops run``,
the browser in Los Angeles and the console's own Content-Security-Policy in force (no ``bypass_csp``).

A simulated NVR (gbsim, 3 channels) registers under an organisation node. At 1366x768 an operator creates a
contract through the form with that node ticked in the scope (storage days 3 refused in the browser, in words,
before anything is sent), generates this month's report for the contract from the 在线率报表 page, watches the
jobs finish, downloads the CSV from the page (fetched with the token, saved through a blob URL) and parses its
channel table; sees the chart (an SVG with the threshold line and the rate's points), the explanation of the rate
and the per-channel table with percentages (sortable); opens the contract's SLA page, reads its summary in words
and exports sla.csv. At 390x844 neither page scrolls sideways. No JavaScript or console error. Screenshots under
``$GBOPS_TEST_ARTIFACTS`` (``tmp_path`` when unset)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from ops_portal.availability.reports import read_csv_channels
from tests.e2e.console_support import SimThread, browser_ready
from tests.e2e.platform import PlatformProcess
from tests.e2e.test_devices_console import _open_console, _submit

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DEVICE = "34020000001180000078"  # an NVR (type code 118)
DEVICE_PASSWORD = "Gate-South#2026x"
CHANNELS = 3
ORG_NAME = "南区分局"
CONTRACT = "南区视频运维合同"
PERCENT = re.compile(r"^\d{1,3}(\.\d)?%$")


def _no_sideways(page: Any) -> None:
    page.wait_for_timeout(300)  # a layout pass after the resize or navigation (no event to wait for)
    wide = page.evaluate("document.documentElement.scrollWidth")
    assert wide <= 390, wide


def test_contract_form_report_download_chart_and_sla(tmp_path: Path) -> None:
    sync_playwright, shots = browser_ready(tmp_path)
    from playwright.sync_api import expect

    p = PlatformProcess(tmp_path / "data").start()
    sims = SimThread()
    try:
        p.login()
        r = p.post("/api/org/nodes", {"name": ORG_NAME})
        assert r.status_code == 201, r.text
        org_id = r.json()["id"]
        r = p.post("/api/devices", {"device_id": DEVICE, "name": "南门录像机", "password": DEVICE_PASSWORD,
                                    "org_node_id": org_id})
        assert r.status_code == 201, r.text
        sims.start("cam", p.sip_port, DEVICE, 1, channels=CHANNELS, password=DEVICE_PASSWORD, seed=19)
        p.wait_for(lambda: p.get("/api/availability/online-rate", org_node_id=org_id).json()
                   .get("channels_online") == CHANNELS, 30, "the device's channels online")

        with sync_playwright() as pw:
            browser, page, errors, console = _open_console(pw, p.base)

            # ---- a contract through the form: storage days 3 refused in the browser, then saved
            assert page.text_content("a[data-route=contracts]") == "服务合同"
            page.click("a[data-route=contracts]")
            page.wait_for_selector("#ctr-table")
            page.click("#ctr-add")
            page.wait_for_selector("#ctr-add-dialog #ctr-f-name")
            labels = page.eval_on_selector_all("#ctr-add-dialog input, #ctr-add-dialog select, #ctr-add-dialog textarea",
                                               "els => els.map(e => e.closest('label') && "
                                               "e.closest('label').textContent.trim() ? e.id : 'unlabelled:' + e.id)")
            assert not [x for x in labels if x.startswith("unlabelled:")], labels
            page.fill("#ctr-f-name", CONTRACT)
            page.fill("#ctr-f-customer", "南区公安分局")
            page.check(f"#ctr-org-{org_id}")
            page.fill("#ctr-f-storage_days", "3")
            page.fill("#ctr-f-repair_limit_hours", "24")
            page.fill("#ctr-f-threshold", "90")
            page.fill("#ctr-f-min_width", "1920")
            page.fill("#ctr-f-min_height", "1080")
            page.click("#ctr-add-dialog button[type=submit]")
            page.wait_for_selector("#ctr-add-dialog .msg.error:not(.hidden)")
            assert page.inner_text("#ctr-add-dialog .msg.error") == "录像存储天数不得少于 7 天"
            assert p.get("/api/contracts").json()["items"] == []  # nothing was sent
            page.screenshot(path=str(shots / "contracts-01-storage-refused.png"), full_page=True)
            page.fill("#ctr-f-storage_days", "30")
            _submit(page, "#ctr-add-dialog")
            contracts = p.get("/api/contracts").json()["items"]
            assert len(contracts) == 1, contracts
            contract = contracts[0]
            assert contract["name"] == CONTRACT and contract["org_node_ids"] == [org_id]
            assert contract["storage_days"] == 30 and contract["repair_limit_hours"] == 24
            assert contract["online_rate_threshold"] == pytest.approx(0.9)
            assert contract["quality_terms"] == {"min_width": 1920, "min_height": 1080}
            row = f"#ctr-table tr[data-contract='{contract['id']}']"
            page.wait_for_selector(row)
            assert ORG_NAME in page.inner_text(row + " .ctr-scope")
            assert page.inner_text(row + " .ctr-threshold").startswith("90%")
            page.screenshot(path=str(shots / "contracts-02-list.png"), full_page=True)

            # ---- this month's report for the contract, from the page
            page.click("a[data-route=reports]")
            page.wait_for_selector("#rep-form")
            assert page.input_value("#rep-kind") == "month"
            page.select_option("#rep-scope", f"contract:{contract['id']}")
            page.click("#rep-generate")
            csv_row = "#rep-jobs tr[data-format=csv]"
            expect(page.locator(csv_row + " .rep-state")).to_have_attribute("data-state", "done", timeout=60000)
            for fmt in ("xlsx", "pdf"):
                expect(page.locator(f"#rep-jobs tr[data-format={fmt}] .rep-state")).to_have_attribute(
                    "data-state", "done", timeout=90000)
            reports = p.get("/api/reports").json()["items"]
            assert sorted(x["format"] for x in reports) == ["csv", "pdf", "xlsx"], reports
            assert all(x["kind"] == "month" and x["contract_id"] == contract["id"] for x in reports), reports
            assert "服务合同" in page.inner_text(csv_row)  # the scope in words
            assert PERCENT.match(page.inner_text(csv_row + " .rep-jobrate").split()[0])

            # the CSV through the page's blob download, parsed
            with page.expect_download() as got:
                page.click(csv_row + " .rep-dl")
            assert got.value.suggested_filename.endswith(".csv"), got.value.suggested_filename
            rows = read_csv_channels(Path(got.value.path()).read_bytes().decode("utf-8-sig"))
            assert len(rows) == CHANNELS and {x["device_id"] for x in rows} == {DEVICE}, rows
            for x in rows:
                assert 99 <= float(x["availability"]) <= 100, x  # a percentage: online since it registered

            # ---- the chart: an SVG with the threshold line and the rate's points; the rule explained
            # a horizontal line has a zero-height box, which Playwright calls hidden: attached, in a visible chart
            page.wait_for_selector("#rep-chart-svg #rep-threshold-line", state="attached")
            assert page.is_visible("#rep-chart-svg")
            assert page.locator("#rep-chart-svg circle.pass").count() >= 1
            assert page.locator("#rep-chart-svg path.rate-line").count() == 1
            assert "考核值 90%" in page.text_content("#rep-chart-svg")
            assert "在线时长" in page.inner_text("#rep-explain-rule")
            summary = page.inner_text("#rep-summary")
            assert "考核值 90%" in summary and "达标" in summary, summary

            # ---- the per-channel table with percentages, sortable
            expect(page.locator("#rep-channels tbody tr")).to_have_count(CHANNELS)
            for cell in page.locator("#rep-channels .rep-ch-rate").all_inner_texts():
                assert PERCENT.match(cell), cell
            page.click("#rep-channels th[data-col=channel_id] button")
            page.wait_for_selector("#rep-channels th[data-col=channel_id][aria-sort=ascending]")
            ids = [r.split("/")[1] for r in page.eval_on_selector_all(
                "#rep-channels tbody tr", "rs => rs.map(r => r.dataset.channel)")]
            assert ids == sorted(ids) and len(ids) == CHANNELS, ids
            page.click("#rep-channels th[data-col=channel_id] button")
            page.wait_for_selector("#rep-channels th[data-col=channel_id][aria-sort=descending]")
            ids = [r.split("/")[1] for r in page.eval_on_selector_all(
                "#rep-channels tbody tr", "rs => rs.map(r => r.dataset.channel)")]
            assert ids == sorted(ids, reverse=True), ids
            page.screenshot(path=str(shots / "reports-01-generated.png"), full_page=True)

            # ---- 390 px: no sideways scrolling
            page.set_viewport_size({"width": 390, "height": 844})
            _no_sideways(page)
            page.screenshot(path=str(shots / "reports-02-phone.png"), full_page=True)
            page.set_viewport_size({"width": 1366, "height": 768})

            # ---- the contract's SLA page, exported
            page.click("a[data-route=contracts]")
            page.wait_for_selector(row)
            page.click(row + " .ctr-sla")
            page.wait_for_selector("#ctr-sla-words")
            words = page.inner_text("#ctr-sla-words")
            assert "共报修 0 张工单" in words and "24 小时" in words, words
            assert CONTRACT in page.inner_text("#view h1")
            with page.expect_download() as got:
                page.click("#ctr-sla-export")
            sla = Path(got.value.path()).read_bytes().decode("utf-8-sig")
            assert got.value.suggested_filename == f"sla-contract-{contract['id']}.csv"
            assert sla.startswith("指标 / metric") and "repair_limit_hours,24" in sla.replace(".0", ""), sla[:300]
            page.screenshot(path=str(shots / "contracts-03-sla.png"), full_page=True)
            page.set_viewport_size({"width": 390, "height": 844})
            _no_sideways(page)
            page.screenshot(path=str(shots / "contracts-04-sla-phone.png"), full_page=True)
            page.click("#ctr-back")
            page.wait_for_selector(row)
            _no_sideways(page)
            page.screenshot(path=str(shots / "contracts-05-list-phone.png"), full_page=True)

            page.set_viewport_size({"width": 1366, "height": 768})

            # ---- a dialog closes with Escape; delete after the confirmation
            page.click("#ctr-add")
            page.wait_for_selector("#ctr-add-dialog")
            page.keyboard.press("Escape")
            page.wait_for_selector("#ctr-add-dialog", state="detached")
            page.click(row + " .ctr-delete")
            page.wait_for_selector("#ctr-delete-dialog")
            assert "工单保留" in page.inner_text("#ctr-delete-dialog")
            page.click("#ctr-delete-confirm")
            page.wait_for_selector(row, state="detached")
            assert p.get("/api/contracts").json()["items"] == []

            # ---- English
            page.click("a[data-route=reports]")
            page.wait_for_selector("#rep-form")
            page.click("#lang")
            expect(page.locator("#view h1")).to_have_text("Online-rate reports")
            page.wait_for_selector("#rep-chart-svg", state="attached")
            expect(page.locator("#rep-jobs tbody tr").first).to_contain_text("Done")
            page.screenshot(path=str(shots / "reports-03-english.png"), full_page=True)

            assert errors == [], errors
            assert console == [], console
            browser.close()
    finally:
        sims.close()
        p.stop()
