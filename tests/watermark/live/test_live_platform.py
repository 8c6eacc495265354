"""The live watermark in a running platform (``gbops run`` + simulated camera): encoder capacity (503 +
Retry-After), the session tag in a captured FLV checked by ``gbops watermark inspect``, and the policy
on the audit log."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import av
import httpx
import pytest

from gbsim import SimConfig, Simulator
from tests.e2e.platform import ADMIN_NEW_PASSWORD, STRONG_SIP_PASSWORD, PlatformProcess, free_port, read_flv
from watermark.tag import SESSION_TAG_UUID

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DEVICE = "34020000001320000001"
ADMIN_ROLE = "系统管理员"


def start_platform(data_dir, **env) -> PlatformProcess:
    low = free_port()
    p = PlatformProcess(data_dir, GBOPS_RTP_PORTS=f"{low}-{low + 40}", GBOPS_MEDIA_HOST="127.0.0.1",
                        GBOPS_LIVE_IDLE_TIMEOUT="1", **env).start()
    if not (data_dir / "initial-admin-password.txt").exists():  # a restart: the password was changed
        r = httpx.post(p.base + "/api/auth/login", json={"username": "admin", "password": ADMIN_NEW_PASSWORD})
        r.raise_for_status()
        p.token = r.json()["access_token"]
    return p


async def with_camera(platform: PlatformProcess, codec: str = "h264") -> tuple[Simulator, str]:
    sim = Simulator(SimConfig(server=("127.0.0.1", platform.sip_port), devices=1, channels=1,
                              password=STRONG_SIP_PASSWORD, codec=codec, size="640x360", first_id=DEVICE,
                              register_rate=50))
    await sim.start()
    assert await sim.wait_until(lambda s: s.registered == 1, 20), sim.progress_line()
    channel = sim.cfg.channel_ids(0)[0]

    def listed() -> bool:
        r = platform.get(f"/api/devices/{DEVICE}/channels")
        assert r.status_code in (200, 404), r.text
        return r.status_code == 200 and any(c["channel_id"] == channel for c in r.json()["items"])

    await asyncio.to_thread(platform.wait_for, listed, 20, "the catalog")
    return sim, channel


def capture(platform: PlatformProcess, url: str, path, seconds: float = 3.0) -> int:
    with open(path, "wb") as f:
        return read_flv(platform, url, seconds, f)


def inspect(path, data_dir) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gbops.cli", "watermark", "inspect", str(path),
                           "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=60)


def flv_codec(path) -> str:
    with av.open(str(path)) as c:
        return c.streams.video[0].codec_context.name


def policy_entries(platform: PlatformProcess) -> list[dict]:
    r = platform.get("/api/audit/entries", action="watermark.policy_change", order="oldest")
    assert r.status_code == 200, r.text
    return r.json()["items"]


def tamper(data: bytes) -> bytes:
    """Change one character of the session id inside every session tag of the file."""
    out = bytearray(data)
    pos = out.find(SESSION_TAG_UUID)
    n = 0
    while pos >= 0:
        i = pos + 43 + 2  # the third character of the session id (URL-safe base64: a letter or digit)
        out[i] = ord("A") if out[i] != ord("A") else ord("B")
        n += 1
        pos = out.find(SESSION_TAG_UUID, pos + 1)
    assert n >= 1
    return bytes(out)


async def test_capacity_tag_and_inspect(tmp_path):
    data = tmp_path / "data"
    platform = await asyncio.to_thread(start_platform, data, GBOPS_WATERMARK_MAX_ENCODERS="2")
    sim = None
    try:
        sim, channel = await with_camera(platform)
        url = f"/api/channels/{channel}/live"
        a = await asyncio.to_thread(platform.post, url)
        b = await asyncio.to_thread(platform.post, url)
        assert a.status_code == 201 and b.status_code == 201, (a.text, b.text)
        assert a.json()["watermark"] is True and len(a.json()["watermark_id"]) == 8
        # the third viewer: no encoder left on this node
        c = await asyncio.to_thread(platform.post, url)
        assert c.status_code == 503, c.text
        assert c.json()["error"] == "watermark_capacity"
        assert int(c.headers["Retry-After"]) > 0
        # this device has no sub-stream identification set: no sub-stream is offered, in words or as an action
        # (tests/e2e/test_sub_stream_sim.py: a device with one gets the use_sub_stream action)
        assert "子码流" not in c.json()["message"] and c.json()["actions"] == [] and c.json()["retry_after"] > 0
        # one viewer leaves: a new one gets in
        r = await asyncio.to_thread(httpx.delete, platform.base + f"/api/sessions/{a.json()['session_id']}",
                                    headers={"Authorization": f"Bearer {platform.login()}"})
        assert r.status_code == 204, r.text
        d = await asyncio.to_thread(platform.post, url)
        assert d.status_code == 201, d.text
        live = d.json()

        # the watermarked FLV: H.264, and every keyframe tagged with this session and user
        path = tmp_path / "live.flv"
        assert await asyncio.to_thread(capture, platform, live["flv_url"], path) > 10_000
        assert await asyncio.to_thread(flv_codec, path) == "h264"
        me = platform.get("/api/auth/me").json()
        result = await asyncio.to_thread(inspect, path, data)
        assert result.returncode == 0, result.stdout + result.stderr
        assert live["session_id"] in result.stdout
        assert f"用户 / user:      {me['id']}" in result.stdout
        assert channel in result.stdout and "有效 / VALID" in result.stdout
        assert "live.start" in result.stdout  # found on the audit log by its session id
        # altered payload: the signature no longer matches
        bad = tmp_path / "altered.flv"
        bad.write_bytes(tamper(path.read_bytes()))
        result = await asyncio.to_thread(inspect, bad, data)
        assert result.returncode == 1, result.stdout
        assert "无效 / INVALID" in result.stdout and "有效 / VALID" not in result.stdout.replace("无效 / INVALID", "")

        # the player went away: its encoder slot came back (b still holds one)
        e = await asyncio.to_thread(platform.wait_for, lambda: (
            r if (r := platform.post(url)).status_code == 201 else None), 10, "a free encoder slot")
        assert e.json()["watermark"] is True
        f = await asyncio.to_thread(platform.post, url)
        assert f.status_code == 503  # b and e
        # live.start records the watermark id
        starts = platform.get("/api/audit/entries", action="live.start").json()["items"]
        by_session = {s["detail"]["session_id"]: s for s in starts}
        assert by_session[live["session_id"]]["detail"]["watermark_id"] == live["watermark_id"]
        assert by_session[live["session_id"]]["detail"]["watermark"] == "on"
    finally:
        if sim is not None:
            await sim.stop()
        await asyncio.to_thread(platform.stop)


async def test_policy_change_is_audited_and_off_still_tags(tmp_path):
    data = tmp_path / "data"
    platform = await asyncio.to_thread(start_platform, data)
    try:
        (first,) = policy_entries(platform)
        assert first["detail"]["before"] is None
        assert first["detail"]["after"]["off_roles"] == [] and first["detail"]["after"]["default"] == "on"
        assert first["actor"]["type"] == "system"
    finally:
        await asyncio.to_thread(platform.stop)

    # switched off for the administrator role: recorded once, with before and after
    platform = await asyncio.to_thread(start_platform, data, GBOPS_WATERMARK_OFF_ROLES=f" {ADMIN_ROLE} ,")
    sim = None
    try:
        entries = policy_entries(platform)
        assert len(entries) == 2
        assert entries[1]["detail"]["before"] == first["detail"]["after"]
        assert entries[1]["detail"]["after"]["off_roles"] == [ADMIN_ROLE]
        # no visible watermark for admin, but the output is still tagged (and stays H.265)
        sim, channel = await with_camera(platform, "h265")
        r = await asyncio.to_thread(platform.post, f"/api/channels/{channel}/live")
        assert r.status_code == 201, r.text
        live = r.json()
        assert live["watermark"] is False
        path = tmp_path / "off.flv"
        assert await asyncio.to_thread(capture, platform, live["flv_url"], path) > 10_000
        assert await asyncio.to_thread(flv_codec, path) == "hevc"
        result = await asyncio.to_thread(inspect, path, data)
        assert result.returncode == 0 and live["session_id"] in result.stdout, result.stdout
    finally:
        if sim is not None:
            await sim.stop()
        await asyncio.to_thread(platform.stop)

    # same policy again: nothing new on the log
    platform = await asyncio.to_thread(start_platform, data, GBOPS_WATERMARK_OFF_ROLES=ADMIN_ROLE)
    try:
        assert len(policy_entries(platform)) == 2
    finally:
        await asyncio.to_thread(platform.stop)
