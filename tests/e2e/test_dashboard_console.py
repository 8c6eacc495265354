"""The console's home page (issue 18) in Debian Chromium (Playwright) against a real ``gbops run`` with simulated
devices, the browser in Los Angeles and the console's own Content-Security-Policy in force.

Three simulated devices of two channels register; one of them then unregisters (stopped cleanly). At 1366x768
the dashboard shows the devices (2 / 3) and channels (4 / 6) with numbers, the online rate as a percentage
against the platform's threshold with 未达标 in words and the line explaining what it counts, the per-organisation
table, the stopped device among the devices gone offline in the last hour (its reason in words), its channels
among the worst channels of the last 7 days, the 7-day chart (SVG with the threshold line and today's
rate, seven Beijing days)
and the tickets card; a card's link opens its page. At 390x844 nothing scrolls sideways; the English switch
translates the page. No JavaScript or console error. Screenshots under ``$GBOPS_TEST_ARTIFACTS`` (``tmp_path``
when unset)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.e2e.console_support import SimThread, browser_ready
from tests.e2e.platform import STRONG_SIP_PASSWORD, PlatformProcess
from tests.e2e.test_devices_console import _open_console

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

STAYS = "34020000001180000101"  # 2 NVRs that stay: ...0101 and ...0102
GONE = "34020000001180000201"  # the NVR stopped
CHANNELS = 2


def test_dashboard_cards_links_and_recently_offline(tmp_path: Path) -> None:
    sync_playwright, shots = browser_ready(tmp_path)
    from playwright.sync_api import expect

    p = PlatformProcess(tmp_path / "data").start()
    sims = SimThread()
    try:
        p.login()
        sims.start("stays", p.sip_port, STAYS, 2, channels=CHANNELS, password=STRONG_SIP_PASSWORD)
        sims.start("gone", p.sip_port, GONE, 1, channels=CHANNELS, password=STRONG_SIP_PASSWORD)
        p.wait_for(lambda: (d := p.get("/api/dashboard").json())["devices_online"] == 3
                   and d["channels_total"] == 3 * CHANNELS and d["channels_online"] == 3 * CHANNELS,
                   30, "3 devices and their channels online")
        sims.stop("gone")
        p.wait_for(lambda: p.get(f"/api/devices/{GONE}").json().get("online") is False, 20, "the stopped device offline")
        threshold = p.get("/api/dashboard").json()["threshold"]
        assert threshold > 4 / 6  # the default 85 %: the rate is below it

        with sync_playwright() as pw:
            browser, page, errors, console = _open_console(pw, p.base)
            page.goto(p.base + "/console/#/dashboard")
            page.wait_for_selector("#stat-channels")
            expect(page.locator("#stat-channels .stat-value")).to_have_text("4 / 6")
            expect(page.locator("#stat-devices .stat-value")).to_have_text("2 / 3")
            rate = page.inner_text("#stat-rate .stat-value")
            assert rate.startswith("66.7%") and "未达标" in rate, rate
            assert "fail" in page.get_attribute("#stat-rate .stat-value", "class")
            explain = page.inner_text("#stat-rate .stat-sub")
            assert "在线通道数 ÷ 通道总数" in explain and f"{round(threshold * 100)}%" in explain, explain
            assert page.inner_text("#stat-streams .stat-value").strip() in {"0", "—"}
            assert page.inner_text("#stat-tickets .stat-value").strip().isdigit()
            assert page.get_attribute("#dash-overdue-link", "href") == "#/tickets?overdue=true"

            # per organisation: the simulated devices' channels under no node
            org_rows = page.locator("#dash-org-body tbody tr")
            expect(org_rows).not_to_have_count(0)
            assert "4 / 6" in page.inner_text("#dash-org-body tbody")

            # the stopped device gone offline within the hour, its reason in words
            gone_row = f"#dash-offline-body tr[data-device='{GONE}']"
            page.wait_for_selector(gone_row)
            assert "设备注销" in page.inner_text(gone_row)
            assert page.locator("#dash-offline-body tbody tr").count() == 1
            beijing_day = time.strftime("%Y/%-m/%-d", time.gmtime(time.time() + 8 * 3600))
            assert beijing_day in page.inner_text(gone_row)

            # the 7-day trend: the chart with its threshold line, seven Beijing days; the worst channels
            page.wait_for_selector("#dash-trend svg.dash-chart")
            assert page.locator("#dash-trend svg.dash-chart line.threshold").count() == 1
            assert page.locator("#dash-days li").count() == 7
            today = time.strftime("%m-%d", time.gmtime(time.time() + 8 * 3600))
            last_day = page.inner_text("#dash-days li:last-child")
            assert today in last_day and "%" in last_day, last_day  # today so far: a rate
            assert page.locator("#dash-trend svg.dash-chart circle.day").count() >= 1
            page.wait_for_selector(f"#dash-worst-body tr[data-device='{GONE}']")
            worst = page.locator("#dash-worst-body tbody tr")
            assert worst.count() == CHANNELS
            assert "离线" in worst.first.inner_text()
            for sel, href in (("#stat-devices", "#/devices"), ("#stat-channels", "#/tree"), ("#stat-rate", "#/reports"),
                              ("#stat-streams", "#/live"), ("#dash-trend h2 a", "#/reports"),
                              ("#dash-org h2 a", "#/org"), ("#dash-worst h2 a", "#/reports")):
                assert page.get_attribute(sel, "href") == href, sel
            page.screenshot(path=str(shots / "dashboard-01-desktop.png"), full_page=True)

            # a card's link opens its page
            page.click("#stat-devices")
            page.wait_for_selector("#devm-table")
            assert page.url.endswith("#/devices")
            page.go_back()
            page.wait_for_selector(f"#dash-offline-body tr[data-device='{GONE}'] a")
            page.click(f"#dash-offline-body tr[data-device='{GONE}'] a")
            page.wait_for_url(f"**#/device/{GONE}")
            page.wait_for_selector("#view dl.facts")  # the device page drawn (before leaving it)
            assert GONE in page.inner_text("#view")
            page.goto(p.base + "/console/#/dashboard")
            page.wait_for_selector("#dash-trend svg.dash-chart")

            # 390 px: nothing scrolls sideways, panels stacked
            page.set_viewport_size({"width": 390, "height": 844})
            page.wait_for_timeout(300)  # a layout pass after the resize (no event to wait for)
            wide = page.evaluate("document.documentElement.scrollWidth")
            assert wide <= 390, (wide, page.evaluate(
                "[...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > 392 && !e.closest('.dash-table-wrap'))"
                ".slice(0, 8).map(e => e.tagName + '#' + e.id + '.' + e.className + ':' + e.getBoundingClientRect().right)"))
            expect(page.locator("#stat-channels .stat-value")).to_have_text("4 / 6")
            page.screenshot(path=str(shots / "dashboard-02-phone.png"), full_page=True)

            # English
            page.click("#lang")
            expect(page.locator("#view h1")).to_have_text("Operations overview")
            page.wait_for_selector(f"#dash-offline-body tr[data-device='{GONE}']")
            assert "unregistered by the device" in page.inner_text(f"#dash-offline-body tr[data-device='{GONE}']")
            assert "Below the threshold" in page.inner_text("#stat-rate")
            page.screenshot(path=str(shots / "dashboard-03-phone-english.png"), full_page=True)
            page.set_viewport_size({"width": 1366, "height": 768})
            page.screenshot(path=str(shots / "dashboard-04-english.png"), full_page=True)

            assert errors == [], errors
            assert console == [], console
            browser.close()
    finally:
        sims.close()
        p.stop()
