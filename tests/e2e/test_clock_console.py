"""The console's 时间同步 page in Debian Chromium (Playwright), on the portal served by uvicorn in-process with the
time service (:class:`timesync.service.TimeService`, on the test's SQLite database) over a stub of its SIP side
whose devices answer DeviceStatus with their (wrong) clocks: the platform clock block (NTP server, synchronised,
reference), the compliance share explained in words, and per device the skew, worst 24 h, within the limit and
the last check in Beijing time (the browser is in Los Angeles); 立即检测 samples a device; English after the
language toggle.  Screenshots under ``$GBOPS_TEST_ARTIFACTS`` (``tmp_path`` when unset)."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.console_support import ConsoleServer, browser_ready, console_page
from tests.portal.org_data import IPC, NVR

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

USER, PASSWORD = "time-keeper", "Clock-Tower-Owl-42"


class Sip:
    def __init__(self, skews: dict[str, float]) -> None:
        self.skews = skews
        self.service: Any = None

    async def device_status(self, device_id: str) -> Any:
        from gbcore.timeutil import gb_time

        if device_id not in self.skews:
            raise type("DeviceNotReachable", (Exception,), {})(device_id)
        sent = time.time()
        self.service.on_device_time(device_id, gb_time(sent + 0.01 + self.skews[device_id], millis=False), sent,
                                    sent + 0.02)

    def is_online(self, device_id: str) -> bool:
        return device_id in self.skews


class Server(ConsoleServer):
    async def make_app(self, settings: Any, registry: Any) -> tuple[Any, Any]:
        from ops_portal.app import create_app
        from tests.portal.conftest import FakeSip
        from timesync.service import TimeConfig, TimeService

        fake = FakeSip(online={NVR, IPC})
        app = create_app(settings=settings, sessionmaker=registry.sessionmaker, registry=registry, sip=fake)
        self.sip = Sip({NVR: 3.0, IPC: 0.2})
        self.time = TimeService(registry.sessionmaker, TimeConfig(ntp_host="127.0.0.1", ntp_port=0),
                                device_status=self.sip.device_status, is_online=self.sip.is_online)
        self.sip.service = self.time
        app.state.timesync = self.time
        return app, fake

    async def add_users(self, portal: Any) -> None:
        await portal.add_user(USER, PASSWORD, display_name="时间管理员")


def test_clock_page_platform_compliance_devices_check(tmp_path: Path) -> None:
    sync_playwright, shots = browser_ready(tmp_path)
    server = Server(tmp_path).start()
    try:
        server.call(server.time.check_device(NVR))  # 3 s ahead: over; IPC not sampled yet
        with sync_playwright() as pw:
            browser, page, errors = console_page(pw, server.base, USER, PASSWORD)
            assert page.text_content("a[data-route=time]") == "时间同步"
            page.click("a[data-route=time]")
            page.wait_for_selector(f"#clock-devices tr[data-device='{NVR}']")
            platform = page.inner_text("#clock-platform")
            assert "平台时钟" in platform and "已关闭（GBOPS_NTP_PORT=0）" in platform, platform
            assert page.inner_text("#clock-sync") == "已同步"
            assert "本机时钟（未配置上级 NTP 服务器，层级 10）" in page.inner_text("#clock-reference")
            comp = page.inner_text("#clock-compliance")
            assert "24 小时内时钟误差不超过 1 秒的设备占比" in comp, comp
            assert page.inner_text("#clock-share") == "0%"
            assert "0 / 1 台设备达标" in comp and NVR in comp, comp

            nvr = page.inner_text(f"#clock-devices tr[data-device='{NVR}']")
            assert "超限" in nvr, nvr
            skew_text = page.inner_text(f"#clock-devices tr[data-device='{NVR}'] .clk-skew")  # "+2.501 s ± 0.51"
            value, uncertainty = float(skew_text.split()[0]), float(skew_text.split()[-1])
            assert abs(value - 3.0) <= uncertainty + 0.01, skew_text
            checked = page.inner_text(f"#clock-devices tr[data-device='{NVR}'] .clk-checked")
            # Beijing time (UTC+8) although the browser is in Los Angeles
            beijing_hour = time.strftime("%H", time.gmtime(time.time() + 8 * 3600))
            assert re.search(rf"\b{beijing_hour}:\d\d:\d\d", checked), checked
            ipc = page.inner_text(f"#clock-devices tr[data-device='{IPC}']")
            assert "无采样" in ipc, ipc
            page.screenshot(path=str(shots / "clock-01-page.png"))

            # 立即检测 on the 0.2 s device: within, and the share moves to 1 of 2
            page.click(f"#clock-devices tr[data-device='{IPC}'] button[data-act=check]")
            page.wait_for_function(
                f"document.querySelector(\"#clock-devices tr[data-device='{IPC}'] .clk-within\")"
                ".textContent === '达标'", timeout=15000)
            assert page.inner_text("#clock-share") == "50.0%"
            skew = page.inner_text(f"#clock-devices tr[data-device='{IPC}'] .clk-skew")
            value = float(skew.split()[0])
            assert -0.4 <= value <= 0.8, skew
            page.screenshot(path=str(shots / "clock-02-checked.png"))

            # English
            page.click("#lang")
            page.wait_for_function("document.querySelector('#clock-compliance') && "
                                   "document.querySelector('#clock-compliance').textContent.includes('share of')",
                                   timeout=15000)
            assert page.text_content("a[data-route=time]") == "Time sync"
            assert "share of devices whose clock error stayed within 1 s over 24 h" in page.inner_text(
                "#clock-compliance")
            assert "Check now" in page.inner_text(f"#clock-devices tr[data-device='{IPC}']")
            assert errors == [], errors
            browser.close()
    finally:
        server.stop()
