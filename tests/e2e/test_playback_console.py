"""The console's history pages in Debian Chromium (Playwright), on the portal served by uvicorn in-process
with fakes of the services behind it (docs/issue13-seams.md): the playback page draws a channel's day from
its records (device files coloured by type, the gap, platform segments) in Beijing time, a click asks for a
playback of that moment, a dragged range is downloaded with its progress shown; the download centre lists
the job; the recording page shows the plan and saves a new one.

Screenshots are kept under ``$GBOPS_TEST_ARTIFACTS`` (``tmp_path`` when unset)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gbcore.ids import ChannelRef
from tests.e2e.console_support import ConsoleServer, browser_ready, console_page
from tests.portal.org_data import CA1, NVR
from tests.portal.test_playback_fakes import (
    DAY_START,
    FakeMedia,
    FakeRecordings,
    HistorySip,
    device_files,
    platform_segments,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

USER, PASSWORD = "replayer", "Replay-Night-Owl-42"
REF = ChannelRef(NVR, CA1)


@dataclass
class Progress:
    """What the downloads route reads of a running job (watermark.downloads.JobProgress's surface)."""

    state: str = "capturing"
    done: float = 0.0
    seconds_captured: float = 0.0
    frames_captured: int = 0
    frames_encoded: int = 0

    def percent(self, seconds: int) -> float:
        return self.done

    def eta(self, seconds: int, now: float) -> float:
        return 1.0


class SteppingDownloads:
    """A download manager whose jobs advance at every read: capturing 40 %, 80 %, then done."""

    def __init__(self) -> None:
        from tests.portal.test_playback_downloads import FakeDownloads

        self.inner = FakeDownloads()
        self.progress: dict[str, Progress] = {}
        self.submitted = self.inner.submitted

    async def submit(self, **kw: Any) -> Any:
        job = await self.inner.submit(**kw)
        job.state = "capturing"
        self.progress[job.id] = Progress()
        return job

    async def get(self, job_id: str) -> Any:
        job = self.inner.jobs.get(job_id)
        prog = self.progress.get(job_id)
        if job is not None and prog is not None and job.state != "done":
            prog.done += 40
            if prog.done > 100:
                job.state, job.size, job.sha256 = "done", 4_200_000, "ef" * 32
                job.finished_at = datetime.now(UTC)
        return job

    async def list_jobs(self, user_id: int | None, limit: int) -> list[Any]:
        return await self.inner.list_jobs(user_id, limit)

    def file_path(self, row: Any) -> None:
        return None


class Server(ConsoleServer):
    """The portal app with fake media, recordings and downloads behind the history routes."""

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.media = FakeMedia()
        self.recordings = FakeRecordings()
        self.downloads = SteppingDownloads()

    async def make_app(self, settings: Any, registry: Any) -> tuple[Any, Any]:
        from ops_portal.app import create_app

        sip = HistorySip(online={NVR})
        # 08:00-12:00 Beijing in files of 10 minutes, 10:00-11:00 missing; every fifth an alarm file
        sip.records[(NVR, CA1)] = device_files(NVR, DAY_START + timedelta(hours=8), 24, skip=range(12, 18))
        self.recordings.segs[REF] = platform_segments(REF, DAY_START + timedelta(hours=14), 30, seconds=120)
        app = create_app(settings=settings, sessionmaker=registry.sessionmaker, registry=registry, sip=sip,
                         media=self.media)
        app.state.recordings = self.recordings
        app.state.downloads = self.downloads
        return app, sip

    async def add_users(self, portal: Any) -> None:
        await portal.add_user(USER, PASSWORD)


def test_playback_page_timeline_play_and_download(tmp_path: Path) -> None:
    sync_playwright, shots = browser_ready(tmp_path)
    server = Server(tmp_path).start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        with sync_playwright() as pw:
            browser, page, errors = console_page(pw, base, USER, PASSWORD)
            nav = page.eval_on_selector_all(".sidenav a", "els => els.map(e => e.dataset.route)")
            assert {"playback", "downloads", "recording"} <= set(nav), nav
            assert page.text_content("a[data-route=playback]") == "录像回放"

            # --- the playback page of the channel's day (2025-03-01, Beijing)
            page.goto(base + f"/console/#/playback?channel={CA1}&device={NVR}&day=2025-03-01")
            page.wait_for_function("document.querySelectorAll('.pb-rec.device').length === 18")
            assert len(page.query_selector_all(".pb-rec.platform")) == 30
            assert len(page.query_selector_all(".pb-rec.device.type-alarm")) == 3  # files 4, 9, 19 (14 is in the gap)
            first = page.query_selector(".pb-rec.device")
            assert first.get_attribute("title").endswith("08:00:00 – 08:10:00"), first.get_attribute("title")
            left = float(page.evaluate("parseFloat(document.querySelector('.pb-rec.device').style.left)"))
            assert abs(left - 100 * 8 / 24) < 0.01  # 08:00 Beijing is a third of the day
            lefts = page.eval_on_selector_all(".pb-rec.device", "els => els.map(e => parseFloat(e.style.left))")
            assert not [x for x in lefts if 100 * 10 / 24 <= x < 100 * 11 / 24 - 0.01]  # the gap shows
            assert "设备录像 18 段" in page.text_content("#pb-records-note")
            page.screenshot(path=str(shots / "playback-01-timeline.png"))

            lane = page.query_selector(".pb-lane[data-source=device]").bounding_box()
            assert lane is not None

            def x_at(hours: float) -> float:
                return lane["x"] + lane["width"] * hours / 24

            y = lane["y"] + lane["height"] / 2
            # --- a click at 09:00 asks for playback from 09:00 Beijing (= 01:00 UTC), from the device
            page.select_option("#pb-player", "flv")
            page.mouse.click(x_at(9), y)
            for _ in range(100):
                if server.media.opened:
                    break
                page.wait_for_timeout(50)
            opened = server.media.opened[-1]
            assert opened["kind"] == "playback" and opened["source"] == "device"
            start, end = opened["window"]
            assert abs((start - datetime(2025, 3, 1, 1, 0, tzinfo=UTC)).total_seconds()) <= 60, start
            assert end - start == timedelta(hours=1)

            # --- drag 08:00 -> 08:30 on the device lane: a selection, then download it
            page.mouse.move(x_at(8), y)
            page.mouse.down()
            page.mouse.move(x_at(8.25), y, steps=5)
            page.mouse.move(x_at(8.5), y, steps=5)
            page.mouse.up()
            page.wait_for_function("!document.querySelector('#pb-download').disabled")
            info = page.text_content("#pb-selection-info")
            assert info.startswith("08:") and "– 08:" in info, info
            page.click("#pb-download")
            page.wait_for_selector(".pb-job[data-state=done]", timeout=15_000)
            sub = server.downloads.submitted[-1]
            assert sub["source"] == "device"
            a, b = sub["window"]
            assert abs((a - datetime(2025, 3, 1, 0, 0, tzinfo=UTC)).total_seconds()) <= 60, a
            assert abs((b - datetime(2025, 3, 1, 0, 30, tzinfo=UTC)).total_seconds()) <= 60, b
            job_text = page.text_content(".pb-job")
            assert "已完成 100%" in job_text and "null" not in job_text, job_text
            page.screenshot(path=str(shots / "playback-02-download.png"))

            # --- the download centre: the job with its window (Beijing time) and result
            page.click("a[data-route=downloads]")
            page.wait_for_selector("#downloads-table tbody tr")
            row = page.inner_text("#downloads-table tbody tr")
            assert "设备录像" in row and "已完成" in row and "SHA-256 efefef" in row, row
            assert "08:" in row, row
            page.screenshot(path=str(shots / "playback-03-downloads.png"))

            # --- the recording page of the channel: state, storage, a new plan
            page.goto(base + f"/console/#/recording/{CA1}?device={NVR}")
            page.wait_for_selector("#rec-state")
            assert page.get_attribute("#rec-state", "data-state") == "off"
            assert "30 个片段" in page.text_content("#rec-facts")
            page.select_option("#rec-mode", "schedule")
            page.click("#rec-add")
            page.click("#rec-save")
            page.wait_for_function("document.querySelector('#rec-state').dataset.state === 'recording'")
            plan = server.recordings.plans[REF]
            assert plan.mode == "schedule" and plan.schedule[0].days == (1, 2, 3, 4, 5)
            assert plan.updated_by == USER
            page.screenshot(path=str(shots / "playback-04-recording.png"))
            assert not errors, errors
            browser.close()
    finally:
        server.stop()
