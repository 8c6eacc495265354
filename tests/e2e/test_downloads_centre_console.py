"""The console's 下载中心 (issue 18) in Debian Chromium (Playwright) against a real ``gbops run`` and a simulated
camera streaming H.264, the console's Content-Security-Policy in force (no ``bypass_csp``).

Bob (download.create, display name 李四) asks for a 12 s live clip; on 下载中心 his row shows the progress bar
with its percent and a measured estimate of the time left ("剩余 约 N 秒") while it captures, the page refreshes
by itself until the row is 已完成, and 保存文件 saves the MP4 whose SHA-256 is the job's.  The administrator
(user.manage) switches to 全部用户 and sees Bob's job named "李四 (bob)" with the channel's name; the user filter
narrows the list, the CSV export carries Bob's row in Beijing time; at 390 px nothing scrolls sideways; the
English switch translates the page.  No JavaScript or console error.  Screenshots under
``$GBOPS_TEST_ARTIFACTS`` (``tmp_path`` when unset)."""

from __future__ import annotations

import csv
import hashlib
import io
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.console_support import CHROMIUM, SimThread, browser_ready, login
from tests.e2e.platform import ADMIN_NEW_PASSWORD, STRONG_SIP_PASSWORD, PlatformProcess, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BOB, BOB_PASSWORD, BOB_NAME = "bob", "Clip-fetcher#2026", "李四"
CLIP_SECONDS = 12


def _add_bob(p: PlatformProcess) -> None:
    """Bob: a user whose role grants download.create on every channel (straight in the platform's database)."""
    import asyncio

    from gbcore.db import make_engine, make_sessionmaker
    from ops_portal.models import Role, RolePermission, UserRole
    from ops_portal.users import create_user

    async def go() -> None:
        engine = make_engine(f"sqlite+aiosqlite:///{p.data_dir / 'gbops.db'}")
        try:
            async with make_sessionmaker(engine)() as session:
                bob = await create_user(session, BOB, BOB_PASSWORD, display_name=BOB_NAME)
                role = Role(name="clip-downloaders", full_scope=True)
                session.add(role)
                await session.flush()
                session.add_all([RolePermission(role_id=role.id, permission="download.create"),
                                 UserRole(user_id=bob.id, role_id=role.id)])
                await session.commit()
        finally:
            await engine.dispose()

    asyncio.run(go())


def _open_console(browser: Any, base: str, username: str, password: str) -> tuple[Any, list[str], list[str]]:
    page = browser.new_page(viewport={"width": 1366, "height": 768}, timezone_id="America/Los_Angeles",
                            accept_downloads=True)
    errors: list[str] = []
    console: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: console.append(f"{m.text} @ {m.location.get('url', '')}") if m.type == "error"
            else None)
    login(page, base, username, password)
    return page, errors, console


def test_downloads_centre_progress_save_and_everyones_jobs(tmp_path: Path) -> None:
    sync_playwright, shots = browser_ready(tmp_path)
    from playwright.sync_api import expect

    low = free_port()
    p = PlatformProcess(tmp_path / "data", GBOPS_RTP_PORTS=f"{low}-{low + 20}", GBOPS_MEDIA_HOST="127.0.0.1",
                        GBOPS_LIVE_IDLE_TIMEOUT="1").start()
    sims = SimThread()
    try:
        p.login()
        _add_bob(p)

        async def start_sim() -> Any:
            from gbsim import SimConfig, Simulator

            sim = Simulator(SimConfig(server=("127.0.0.1", p.sip_port), devices=1, channels=1,
                                      password=STRONG_SIP_PASSWORD, codec="h264", size="640x360", register_rate=50))
            await sim.start()
            sims.sims["cam"] = sim
            return sim

        sim = sims.call(start_sim())
        device, channel = sim.device_ids[0], sim.cfg.channel_ids(0)[0]
        p.wait_for(lambda: any(c["channel_id"] == channel
                               for c in p.get(f"/api/devices/{device}/channels").json().get("items", [])), 30,
                   "the catalog")
        channel_name = next(c["name"] for c in p.get(f"/api/devices/{device}/channels").json()["items"]
                            if c["channel_id"] == channel)

        r = httpx.post(p.base + "/api/auth/login", json={"username": BOB, "password": BOB_PASSWORD})
        assert r.status_code == 200, r.text
        bob_h = {"Authorization": "Bearer " + r.json()["access_token"]}
        r = httpx.post(p.base + f"/api/devices/{device}/channels/{channel}/downloads", json={"seconds": CLIP_SECONDS},
                       headers=bob_h, timeout=30)
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]
        row = f"#downloads-table tr[data-job='{job_id}']"

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu",
                                                                         "--disable-background-networking"])
            # ---- Bob: his job captures, with percent and an estimate of the time left, then is saved
            page, errors, console = _open_console(browser, p.base, BOB, BOB_PASSWORD)
            page.click("a[data-route=downloads]")
            page.wait_for_selector(row)
            assert not page.is_visible("#dl-tab-all")  # no user.manage: no 全部用户
            try:
                page.wait_for_selector(f"{row}[data-state=capturing] .dlc-eta", timeout=30_000)
            except Exception as exc:
                job = httpx.get(p.base + f"/api/downloads/{job_id}", headers=bob_h).json()
                raise AssertionError(f"no ETA while capturing: {page.inner_text('#downloads')!r} {job}\n"
                                     f"{p.log()[-3000:]}") from exc
            text = page.inner_text(row)
            assert re.search(r"读取录像 \d+%", text), text
            assert re.search(r"剩余 约 \d+ (秒|分钟)", text), text
            assert channel_name in text and f"{device} / {channel}" in text, text
            assert page.get_attribute(f"{row} [role=progressbar]", "aria-valuenow") is not None
            assert page.inner_text("#dl-eta-note").startswith("剩余时间按任务开始以来的进度速率估算")
            page.screenshot(path=str(shots / "downloads-01-progress.png"), full_page=True)
            # the page refreshes by itself (every 2 s) until the job is done
            page.wait_for_selector(f"{row}[data-state=done]", timeout=90_000)
            text = page.inner_text(row)
            assert "已完成 100%" in text and "剩余" not in text and "SHA-256" in text, text
            job = httpx.get(p.base + f"/api/downloads/{job_id}", headers=bob_h).json()
            assert job["state"] == "done" and job["eta_seconds"] is None and job["finished_at"], job
            assert job["watermark_id"] in text
            with page.expect_download() as got:
                page.click(f"{row} .dl-save")
            saved = Path(got.value.path()).read_bytes()
            assert hashlib.sha256(saved).hexdigest() == job["sha256"] and len(saved) == job["size"]
            assert got.value.suggested_filename.endswith(".mp4"), got.value.suggested_filename
            page.screenshot(path=str(shots / "downloads-02-done.png"), full_page=True)
            assert errors == [] and console == [], (errors, console)

            # ---- the administrator: everyone's jobs, Bob's with his name; filter; CSV
            page, errors, console = _open_console(browser, p.base, "admin", ADMIN_NEW_PASSWORD)
            page.click("a[data-route=downloads]")
            page.wait_for_selector("#downloads p.muted")  # the administrator's own list is empty
            page.click("#dl-tab-all")
            page.wait_for_selector(f"#downloads-table[data-mode=all] tr[data-job='{job_id}']")
            text = page.inner_text(row)
            assert f"{BOB_NAME} ({BOB})" in text and "已完成" in text and channel_name in text, text
            assert "用户" in page.inner_text("#downloads-table thead")
            expect(page.locator("#dl-page")).to_have_text("第 1–1 条，共 1 条")
            page.screenshot(path=str(shots / "downloads-03-everyone.png"), full_page=True)

            page.fill("#dl-f-user", "nobody")
            page.click("#dl-apply")
            page.wait_for_selector(row, state="detached")
            expect(page.locator("#downloads")).to_have_text("还没有下载任务")
            page.fill("#dl-f-user", BOB)
            page.click("#dl-apply")
            page.wait_for_selector(row)

            with page.expect_download() as got:
                page.click("#dl-export")
            exported = Path(got.value.path()).read_bytes().decode("utf-8-sig")
            assert got.value.suggested_filename.endswith(".csv"), got.value.suggested_filename
            rows = list(csv.DictReader(io.StringIO(exported)))
            assert [r["任务编号 / job id"] for r in rows] == [job_id], rows
            assert rows[0]["用户名 / username"] == BOB and rows[0]["姓名 / display name"] == BOB_NAME
            assert rows[0]["SHA-256"] == job["sha256"] and rows[0]["结果 / result"] == "成功 / done"
            assert rows[0]["通道编号 / channel id"] == channel and rows[0]["设备编号 / device id"] == device
            assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", rows[0]["创建时间 / created"]), rows[0]

            # ---- 390 px: no sideways scrolling
            page.set_viewport_size({"width": 390, "height": 844})
            page.wait_for_timeout(300)  # a layout pass after the resize (no event to wait for)
            wide = page.evaluate("document.documentElement.scrollWidth")
            assert wide <= 390, wide
            page.screenshot(path=str(shots / "downloads-04-phone.png"), full_page=True)

            # ---- English
            page.click("#lang")
            page.wait_for_selector("#dl-tab-all")
            expect(page.locator("#dl-tab-all")).to_have_text("All users")
            page.set_viewport_size({"width": 1366, "height": 768})
            page.screenshot(path=str(shots / "downloads-05-english.png"), full_page=True)
            assert errors == [] and console == [], (errors, console)
            browser.close()
    finally:
        sims.close()
        p.stop()
