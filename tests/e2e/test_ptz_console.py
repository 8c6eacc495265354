"""The console's PTZ pad and alarm page in Debian Chromium (Playwright), on the portal served by uvicorn
in-process with fakes of the device-control and alarm services (docs/issue14-seams.md): pressing a pad button
moves the dome and releasing it stops it (the fake sees move then stop), the arrow keys do the same on the
focused pane, a 423 shows the lock line ("云台被 张三（级别 5）控制中，剩余 18 秒") and sends nothing, an alarm
recorded by the service appears on the alarm page over the live feed and is acknowledged with a note.

Screenshots are kept under ``$GBOPS_TEST_ARTIFACTS`` (``tmp_path`` when unset)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from device_control.types import Operator, Preset
from gbcore.ids import ChannelRef
from tests.e2e.console_support import ConsoleServer, browser_ready, console_page
from tests.portal.org_data import CA1, CB1, NVR
from tests.portal.test_alarms_fakes import FakeAlarms, alarm
from tests.portal.test_ptz_fakes import FakeControl

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

USER, PASSWORD = "dome-operator", "Pan-Tilt-Zoom-Owl-42"
REF = ChannelRef(NVR, CA1)


class Server(ConsoleServer):
    """The portal app with fake device control and alarms."""

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.control = FakeControl()
        self.alarms = FakeAlarms()

    async def make_app(self, settings: Any, registry: Any) -> tuple[Any, Any]:
        from ops_portal.app import create_app
        from tests.portal.conftest import FakeSip

        sip = FakeSip(online={NVR})
        return create_app(settings=settings, sessionmaker=registry.sessionmaker, registry=registry, sip=sip,
                          control=self.control, alarms=self.alarms), sip

    async def add_users(self, portal: Any) -> None:
        await portal.add_user(USER, PASSWORD, ptz_level=3, display_name="值班员")


def _actions(server: Server) -> list[str]:
    return [s[2] for s in server.control.sent if s[0] == "ptz"]


def test_ptz_pad_lock_line_and_live_alarms(tmp_path: Path) -> None:
    sync_playwright, shots = browser_ready(tmp_path)
    server = Server(tmp_path).start()
    server.control.device_presets[REF] = [Preset(1, "东门"), Preset(2, "停车场")]
    base = f"http://127.0.0.1:{server.port}"
    try:
        with sync_playwright() as pw:
            browser, page, errors = console_page(pw, base, USER, PASSWORD,
                                                 extra_args=("--autoplay-policy=no-user-gesture-required",))
            assert page.text_content("a[data-route=alarms]") == "报警"

            # --- the live wall with the channel in pane 0 (no media service here: the picture fails, PTZ works)
            page.goto(base + f"/console/#/live?channel={CA1}&device={NVR}")
            pane = '.pane[data-pane="0"]'
            page.wait_for_function(f"document.querySelector('{pane}')?.dataset.channel === '{CA1}'")
            page.click(f"{pane} .ptz-toggle")
            page.wait_for_selector(f"{pane} .ptz-panel:not(.hidden)")
            page.wait_for_function(f"document.querySelector('{pane} .ptz-lock').textContent === '云台空闲'")
            page.wait_for_function(f"document.querySelectorAll('{pane} .ptz-presets option').length === 2")
            assert page.text_content(f"{pane} .ptz-presets option") == "1 · 东门"

            # press = move, release = stop
            up = page.query_selector(f"{pane} .ptz-btn[data-action=up]")
            assert up is not None and up.get_attribute("aria-label") == "上"
            box = up.bounding_box()
            assert box is not None
            page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            page.mouse.down()
            for _ in range(100):
                if _actions(server):
                    break
                page.wait_for_timeout(20)
            assert _actions(server) == ["up"]
            page.mouse.up()
            for _ in range(100):
                if len(_actions(server)) == 2:
                    break
                page.wait_for_timeout(20)
            assert _actions(server) == ["up", "stop"]
            assert server.control.sent[0][3] == 128 and server.control.sent[0][4] == USER
            page.wait_for_function(f"document.querySelector('{pane} .ptz-lock').textContent.startsWith('您正在控制云台')")

            # the arrow keys on the focused pane
            page.focus(pane)
            page.keyboard.down("ArrowLeft")
            for _ in range(100):
                if len(_actions(server)) == 3:
                    break
                page.wait_for_timeout(20)
            page.keyboard.up("ArrowLeft")
            for _ in range(100):
                if len(_actions(server)) == 4:
                    break
                page.wait_for_timeout(20)
            assert _actions(server) == ["up", "stop", "left", "stop"]
            page.screenshot(path=str(shots / "ptz-01-pad.png"))

            # --- someone of a higher level holds the dome: 423, the lock line, nothing sent
            server.control.holders[REF] = (Operator("99", "zhangsan", 5, "张三"), server.control.now + 18)
            right = page.query_selector(f"{pane} .ptz-btn[data-action=right]")
            assert right is not None
            rbox = right.bounding_box()
            assert rbox is not None
            page.mouse.move(rbox["x"] + rbox["width"] / 2, rbox["y"] + rbox["height"] / 2)
            page.mouse.down()
            page.wait_for_function(f"document.querySelector('{pane} .ptz-lock').textContent.startsWith('云台被')")
            line = page.text_content(f"{pane} .ptz-lock")
            assert re.fullmatch(r"云台被 张三（级别 5）控制中，剩余 1[78] 秒", line or ""), line
            page.mouse.up()
            page.wait_for_timeout(300)
            assert _actions(server) == ["up", "stop", "left", "stop"]
            assert "held" in (page.get_attribute(f"{pane} .ptz-lock", "class") or "")
            page.screenshot(path=str(shots / "ptz-02-locked.png"))

            # --- the alarm page: an alarm arrives over the live feed; acknowledged with a note
            page.click("a[data-route=alarms]")
            page.wait_for_function("document.querySelector('#alarm-live').textContent === '实时接收中'")
            page.wait_for_selector("#alarm-table td.empty")
            for _ in range(100):
                if server.alarms.subscribers:
                    break
                page.wait_for_timeout(20)
            at = datetime(2025, 3, 1, 6, 5, 9, tzinfo=UTC)
            server.call(server.alarms.record(NVR, alarm(CB1, priority=2, description="西门越界", time=at)))
            server.call(server.alarms.record(NVR, alarm(CA1, priority=1, method=5, type=2, description="东门移动侦测",
                                                        time=at)))
            page.wait_for_selector("tr.alarm-row[data-alarm='2']", timeout=5000)
            row = page.inner_text("tr.alarm-row[data-alarm='2']")
            assert "东门移动侦测" in row and "一级警情" in row and "视频报警 · 运动目标检测" in row, row
            assert "14:05:09" in row, row  # Beijing time, whatever the browser's zone
            assert page.query_selector("tr.alarm-row[data-alarm='1']") is not None  # full scope: both arrive
            page.screenshot(path=str(shots / "ptz-03-alarm.png"))
            page.click("tr.alarm-row[data-alarm='2'] button[data-ack]")
            page.fill("#alarm-note", "已通知保安")
            page.click("dialog.modal button[type=submit]")
            page.wait_for_function("document.querySelector(\"tr.alarm-row[data-alarm='2']\").textContent"
                                   ".includes('已处理')")
            acked = next(a for a in server.alarms.items if a.id == 2)
            assert acked.acknowledged and acked.ack_note == "已通知保安" and acked.acknowledged_by == USER
            page.screenshot(path=str(shots / "ptz-04-acked.png"))
            assert not errors, errors
            browser.close()
    finally:
        server.stop()
