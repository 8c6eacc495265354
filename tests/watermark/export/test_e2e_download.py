"""A live clip download end to end: ``gbops run`` + simulated camera -> POST downloads -> progress ->
the MP4 (watermarked, tagged for this user, SHA-256 as audited); other users cannot fetch it."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import time

import httpx
import pytest

from gbsim import SimConfig, Simulator
from tests.conftest import need_tool
from tests.e2e.platform import STRONG_SIP_PASSWORD, PlatformProcess, free_port
from watermark.inspect import inspect_file
from watermark.tag import load_private_key

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BOB_PASSWORD = "Clip-fetcher#2026"
ORDER = ("queued", "capturing", "encoding", "done")


@pytest.fixture
async def platform(tmp_path):
    low = free_port()
    p = PlatformProcess(tmp_path / "data", GBOPS_RTP_PORTS=f"{low}-{low + 20}", GBOPS_MEDIA_HOST="127.0.0.1",
                        GBOPS_LIVE_IDLE_TIMEOUT="1").start()
    yield p
    p.stop()


async def _add_user_with_download_permission(platform: PlatformProcess) -> None:
    """Bob: a second user whose role grants download.create on every channel (straight in the database)."""
    from gbcore.db import make_engine, make_sessionmaker
    from ops_portal.models import Role, RolePermission, UserRole
    from ops_portal.users import create_user

    engine = make_engine(f"sqlite+aiosqlite:///{platform.data_dir / 'gbops.db'}")
    try:
        async with make_sessionmaker(engine)() as session:
            bob = await create_user(session, "bob", BOB_PASSWORD, display_name="李四")
            role = Role(name="downloaders", full_scope=True)
            session.add(role)
            await session.flush()
            session.add_all([RolePermission(role_id=role.id, permission="download.create"),
                             UserRole(user_id=bob.id, role_id=role.id)])
            await session.commit()
    finally:
        await engine.dispose()


def _poll_until_done(platform: PlatformProcess, job_id: str, timeout: float) -> list[dict]:
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = platform.get(f"/api/downloads/{job_id}")
        assert r.status_code == 200, r.text
        seen.append(r.json())
        if seen[-1]["state"] in ("done", "failed"):
            return seen
        time.sleep(0.25)
    raise AssertionError(f"download not finished: {seen[-1]}\n{platform.log()[-3000:]}")


async def test_live_clip_download(platform, tmp_path) -> None:
    sim = Simulator(SimConfig(server=("127.0.0.1", platform.sip_port), devices=1, channels=1,
                              password=STRONG_SIP_PASSWORD, codec="h264", size="640x360", register_rate=50))
    await sim.start()
    try:
        assert await sim.wait_until(lambda s: s.registered == 1, 20), sim.progress_line()
        device, channel = sim.device_ids[0], sim.cfg.channel_ids(0)[0]
        await asyncio.to_thread(platform.wait_for, lambda: any(
            c["channel_id"] == channel for c in platform.get(f"/api/devices/{device}/channels").json()["items"]),
            20, "the catalog")
        me = (await asyncio.to_thread(platform.get, "/api/auth/me")).json()

        r = await asyncio.to_thread(platform.post, f"/api/channels/{channel}/downloads", {"seconds": 5})
        assert r.status_code == 202, r.text
        job = r.json()
        assert job["state"] in ORDER and job["seconds"] == 5 and job["file_url"] is None
        seen = await asyncio.to_thread(_poll_until_done, platform, job["job_id"], 60)
        final = seen[-1]
        assert final["state"] == "done", final
        states = [s["state"] for s in seen]
        assert [ORDER.index(s) for s in states] == sorted(ORDER.index(s) for s in states)
        percents = [s["percent"] for s in seen]
        assert percents == sorted(percents) and percents[-1] == 100
        assert any(s["state"] == "capturing" and 0 < s["seconds_captured"] < 5 for s in seen)
        assert 4.5 <= final["duration_s"] <= 5.1 and final["frames_encoded"] == final["frames_captured"]
        assert 110 <= final["frames_captured"] <= 130  # 25 fps camera (a loaded simulator may skip a few)
        assert final["eta_s"] is None

        # the file: exactly what was audited, tagged for this user and this job
        r = await asyncio.to_thread(platform.get, final["file_url"])
        assert r.status_code == 200 and r.headers["content-type"] == "video/mp4"
        mp4 = tmp_path / "clip.mp4"
        mp4.write_bytes(r.content)
        assert hashlib.sha256(r.content).hexdigest() == final["sha256"] and len(r.content) == final["size"]
        key = load_private_key(platform.data_dir / "watermark-tag.key")
        found = inspect_file(mp4, key.public_key())
        assert len(found.tags) == 1 and found.tags[0].valid is True
        tag = found.tags[0].tag
        assert (tag.session_id, tag.user_id, tag.channel_id) == (final["session_id"], me["id"], channel)
        probe = (await asyncio.to_thread(
            subprocess.run, [need_tool("ffprobe"), "-v", "error", "-count_frames", "-show_entries",
                             "stream=codec_name,width,height,nb_read_frames", "-of", "csv=p=0", str(mp4)],
            capture_output=True, text=True, check=True)).stdout.strip()
        assert probe == f"h264,640,360,{final['frames_encoded']}"

        # the audit log: request and complete of this session, the same SHA-256
        # (issue 11: the audit target is "device/channel"; this session's entries, whatever the filter)
        r = await asyncio.to_thread(platform.get, "/api/audit/downloads")
        items = [i for i in r.json()["items"] if i["session_id"] == final["session_id"]]
        assert {(i["device_id"], i["channel_id"]) for i in items} == {(device, channel)}
        by_action = {i["action"]: i for i in items}
        assert set(by_action) == {"download.request", "download.complete"}
        assert by_action["download.complete"]["sha256"] == final["sha256"]
        assert by_action["download.complete"]["bytes"] == final["size"]
        assert by_action["download.complete"]["watermark_id"] == final["watermark_id"]
        assert by_action["download.request"]["user"]["name"] == "admin"

        # another user sees neither the job nor the file
        await _add_user_with_download_permission(platform)
        login = await asyncio.to_thread(httpx.post, platform.base + "/api/auth/login",
                                        json={"username": "bob", "password": BOB_PASSWORD})
        bob = {"Authorization": f"Bearer {login.json()['access_token']}"}
        for path in (final["file_url"], f"/api/downloads/{final['job_id']}"):
            r = await asyncio.to_thread(httpx.get, platform.base + path, headers=bob)
            assert r.status_code in (403, 404), r.text
        r = await asyncio.to_thread(httpx.get, platform.base + "/api/downloads", headers=bob)
        assert r.status_code == 200 and r.json()["items"] == []

        # the capture did not keep the upstream alive (idle timeout 1 s)
        await asyncio.to_thread(platform.wait_for, lambda: platform.get("/api/streams").json()["items"] == [],
                                10, "the stream to end after the capture")
    finally:
        await sim.stop()
