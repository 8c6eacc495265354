"""Issue 11 end to end: two simulated NVRs shipping identical channel ids, two tenants scoped to one NVR
each.  Each plays and downloads only their own NVR's picture (the simulator draws each device's own colour
and id into its pictures, so the decoded frame proves the camera), the shorthand route answers 409, and
grants, streams, availability items and tickets keep the two cameras apart."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import av
import httpx
import numpy as np
import pytest

from gbsim import SimConfig, Simulator
from gbsim.media import TestPattern, label_colour
from tests.e2e.platform import STRONG_SIP_PASSWORD, PlatformProcess, free_port, read_flv

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

NVR_A, NVR_B = "34020000001180000001", "34020000001180000002"
PASSWORD = "Tenant-Pass-2026!"
WIDTH, HEIGHT = 640, 360
PERMISSIONS = ["device.read", "live.view", "download.create", "ticket.read", "ticket.write", "report.read"]


@pytest.fixture
async def platform(tmp_path):
    low = free_port()
    p = PlatformProcess(tmp_path / "data", GBOPS_RTP_PORTS=f"{low}-{low + 40}", GBOPS_MEDIA_HOST="127.0.0.1",
                        GBOPS_LIVE_IDLE_TIMEOUT="1").start()
    yield p
    p.stop()


class Tenant:
    def __init__(self, platform: PlatformProcess, username: str, device_id: str) -> None:
        self.platform, self.username, self.device_id = platform, username, device_id
        self.token = ""

    def h(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def get(self, path: str, **params) -> httpx.Response:
        return httpx.get(self.platform.base + path, params=params, headers=self.h(), timeout=10)

    def post(self, path: str, json=None) -> httpx.Response:
        return httpx.post(self.platform.base + path, json=json, headers=self.h(), timeout=10)


def make_tenant(platform: PlatformProcess, username: str, device_id: str, channel_id: str) -> Tenant:
    r = platform.post("/api/roles", {"name": f"tenant:{username}", "permissions": PERMISSIONS,
                                     "channels": [{"device_id": device_id, "channel_id": channel_id}]})
    assert r.status_code == 201, r.text
    assert r.json()["channels"] == [{"device_id": device_id, "channel_id": channel_id}]
    r = platform.post("/api/users", {"username": username, "password": PASSWORD, "role_ids": [r.json()["id"]]})
    assert r.status_code == 201, r.text
    base = platform.base
    r = httpx.post(base + "/api/auth/login", json={"username": username, "password": PASSWORD})
    r.raise_for_status()
    if r.json().get("must_change_password"):
        new = PASSWORD + "x"
        httpx.post(base + "/api/auth/password", headers={"Authorization": f"Bearer {r.json()['access_token']}"},
                   json={"old_password": PASSWORD, "new_password": new}).raise_for_status()
        r = httpx.post(base + "/api/auth/login", json={"username": username, "password": new})
        r.raise_for_status()
    tenant = Tenant(platform, username, device_id)
    tenant.token = r.json()["access_token"]
    return tenant


def last_picture(path) -> np.ndarray:
    """The last decoded picture as I420 rows (height * 3 / 2, width)."""
    frame = None
    with av.open(str(path)) as c:
        for frame in c.decode(c.streams.video[0]):  # noqa: B007 - keep the last
            pass
    assert frame is not None, "no picture decoded"
    assert (frame.width, frame.height) == (WIDTH, HEIGHT)
    return frame.to_ndarray(format="yuv420p")


def camera_of(picture: np.ndarray) -> str:
    """Which NVR's colour the label band of a decoded picture shows (the watermark is drawn over the
    picture: medians of the chroma planes over the band's colour-only patch)."""
    rows, cols = TestPattern(WIDTH, HEIGHT, NVR_A).label_patch()
    u = picture[HEIGHT:HEIGHT + HEIGHT // 4].reshape(HEIGHT // 2, WIDTH // 2)
    v = picture[HEIGHT + HEIGHT // 4:].reshape(HEIGHT // 2, WIDTH // 2)
    cu = float(np.median(u[rows.start // 2:rows.stop // 2, cols.start // 2:cols.stop // 2]))
    cv = float(np.median(v[rows.start // 2:rows.stop // 2, cols.start // 2:cols.stop // 2]))
    dist = {d: abs(cu - label_colour(d)[1]) + abs(cv - label_colour(d)[2]) for d in (NVR_A, NVR_B)}
    best = min(dist, key=dist.get)
    assert dist[best] < 40, (dist, cu, cv)
    return best


def start_live(tenant: Tenant, route: str) -> dict:
    r = tenant.post(route, {"transport": "udp"})
    assert r.status_code == 201, r.text
    return r.json()


def watch(tenant: Tenant, live: dict, path) -> None:
    with open(path, "wb") as f:
        assert read_flv(tenant.platform, live["flv_url"], 2.0, f) > 5_000


def download(tenant: Tenant, channel_id: str, path) -> dict:
    r = tenant.post(f"/api/devices/{tenant.device_id}/channels/{channel_id}/downloads", {"seconds": 5})
    assert r.status_code == 202, r.text
    job = r.json()
    assert (job["device_id"], job["channel_id"]) == (tenant.device_id, channel_id)
    deadline = time.monotonic() + 60
    while job["state"] not in ("done", "failed") and time.monotonic() < deadline:
        time.sleep(0.5)
        job = tenant.get(f"/api/downloads/{job['job_id']}").json()
    assert job["state"] == "done", job
    r = httpx.get(tenant.platform.base + job["file_url"], headers=tenant.h(), timeout=30)
    assert r.status_code == 200
    path.write_bytes(r.content)
    return job


async def test_two_nvrs_with_identical_channel_ids_stay_two_cameras(platform, tmp_path):
    sim = Simulator(SimConfig(server=("127.0.0.1", platform.sip_port), devices=2, channels=1, device_type="118",
                              password=STRONG_SIP_PASSWORD, size=f"{WIDTH}x{HEIGHT}", first_id=NVR_A,
                              register_rate=50, same_channel_ids=True, label_pictures=True))
    await sim.start()
    try:
        assert sim.device_ids == [NVR_A, NVR_B]
        channel = sim.cfg.channel_ids(0)[0]
        assert sim.cfg.channel_ids(1) == [channel]
        assert await sim.wait_until(lambda s: s.registered == 2, 20), sim.progress_line()
        for device in (NVR_A, NVR_B):
            await asyncio.to_thread(platform.wait_for, lambda d=device: any(
                c["channel_id"] == channel for c in platform.get(f"/api/devices/{d}/channels").json()["items"]),
                20, f"the catalog of {device}")

        # the shorthand is ambiguous for the administrator, who sees both
        r = await asyncio.to_thread(platform.post, f"/api/channels/{channel}/live")
        assert r.status_code == 409 and r.json()["error"] == "ambiguous_channel", r.text
        assert r.json()["devices"] == [NVR_A, NVR_B]
        r = await asyncio.to_thread(platform.post, "/api/roles", {"name": "bare", "channel_ids": [channel]})
        assert r.status_code == 409

        a = await asyncio.to_thread(make_tenant, platform, "tenant-a", NVR_A, channel)
        b = await asyncio.to_thread(make_tenant, platform, "tenant-b", NVR_B, channel)

        # live: A by the shorthand (unique in A's scope), B by the device form; each sees its own camera
        live_a = await asyncio.to_thread(start_live, a, f"/api/channels/{channel}/live")
        live_b = await asyncio.to_thread(start_live, b, f"/api/devices/{NVR_B}/channels/{channel}/live")
        assert (live_a["device_id"], live_b["device_id"]) == (NVR_A, NVR_B)
        # two upstreams (one per camera), not one shared by the channel id
        streams = (await asyncio.to_thread(platform.get, "/api/streams")).json()["items"]
        assert sorted((s["device_id"], s["channel_id"]) for s in streams) == [(NVR_A, channel), (NVR_B, channel)]
        await asyncio.to_thread(watch, a, live_a, tmp_path / "a.flv")
        await asyncio.to_thread(watch, b, live_b, tmp_path / "b.flv")
        assert camera_of(await asyncio.to_thread(last_picture, tmp_path / "a.flv")) == NVR_A
        assert camera_of(await asyncio.to_thread(last_picture, tmp_path / "b.flv")) == NVR_B

        # the other tenant's camera is refused in both path forms
        for tenant, other in ((a, NVR_B), (b, NVR_A)):
            r = await asyncio.to_thread(tenant.post, f"/api/devices/{other}/channels/{channel}/live")
            assert r.status_code == 403 and r.json()["error"] == "channel_forbidden"
            r = await asyncio.to_thread(tenant.post, f"/api/devices/{other}/channels/{channel}/downloads",
                                        {"seconds": 5})
            assert r.status_code == 403

        # downloads: each file shows its own camera, and its signed tag names the device
        job_a = await asyncio.to_thread(download, a, channel, tmp_path / "a.mp4")
        job_b = await asyncio.to_thread(download, b, channel, tmp_path / "b.mp4")
        assert camera_of(await asyncio.to_thread(last_picture, tmp_path / "a.mp4")) == NVR_A
        assert camera_of(await asyncio.to_thread(last_picture, tmp_path / "b.mp4")) == NVR_B
        out = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "gbops.cli", "watermark", "inspect",
                                                       str(tmp_path / "b.mp4"), "--data-dir", str(platform.data_dir)],
                                      capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
        assert f"设备 / device:    {NVR_B}" in out.stdout and job_b["session_id"] in out.stdout

        def audited() -> bool:  # the audit target names the camera: "device/channel"
            items = platform.get("/api/audit/entries", action="download.complete").json()["items"]
            return {f"{NVR_A}/{channel}", f"{NVR_B}/{channel}"} <= {e["target"]["id"] for e in items}

        await asyncio.to_thread(platform.wait_for, audited, 10, "download.complete of both cameras")
        assert job_a["session_id"] != job_b["session_id"]

        # availability items and tickets: each tenant has its own camera only
        now = datetime.now(UTC)
        for tenant in (a, b):
            r = await asyncio.to_thread(tenant.get, "/api/availability/channels",
                                        **{"from": (now - timedelta(hours=1)).isoformat(), "to": now.isoformat()})
            assert r.status_code == 200, r.text
            assert [(i["device_id"], i["channel_id"]) for i in r.json()["items"]] == [(tenant.device_id, channel)]
        r = await asyncio.to_thread(b.post, "/api/tickets", {"kind": "fault", "channel_id": channel, "note": "黑屏"})
        assert r.status_code == 201, r.text
        assert r.json()["device_id"] == NVR_B
        assert (await asyncio.to_thread(a.get, "/api/tickets")).json()["items"] == []
        assert [t["device_id"] for t in (await asyncio.to_thread(b.get, "/api/tickets")).json()["items"]] == [NVR_B]
    finally:
        await sim.stop()
