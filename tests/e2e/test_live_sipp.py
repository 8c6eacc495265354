"""Live video end to end with SIPp as the camera: INVITE -> RTP/PS -> HTTP-FLV -> ffprobe; idle BYE; fan-out."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time

import httpx
import pytest

from tests.conftest import need_tool
from tests.e2e.platform import STRONG_SIP_PASSWORD, PlatformProcess, free_port, read_flv

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SERVER_ID = "34020000002000000001"
DOMAIN = "3402000000"
DEVICE = "34020000001320000055"
CHANNEL = DEVICE[:10] + "131" + DEVICE[13:]


@pytest.fixture
def live_platform(tmp_path, request):
    low = free_port()
    # The fan-out test needs 20 viewers of one camera: more than this node's watermark encoders, so the
    # policy switches the visible watermark off for the admin role there (outputs keep the session tag).
    extra = {"GBOPS_WATERMARK_OFF_ROLES": "系统管理员"} if request.node.get_closest_marker("watermark_off") else {}
    p = PlatformProcess(tmp_path / "data", GBOPS_LIVE_IDLE_TIMEOUT="2",
                        GBOPS_RTP_PORTS=f"{low}-{low + 40}", GBOPS_MEDIA_HOST="127.0.0.1", **extra).start()
    yield p
    p.stop()


@pytest.fixture
def sipp_camera(live_platform, shared_dir, tmp_path):
    need_tool("sipp")
    port = free_port()
    run_dir = tmp_path / "sipp"
    env = {**os.environ, "GB_RUN_DIR": str(run_dir), "GB_MEDIA_SECONDS": "60"}
    proc = subprocess.Popen(
        ["sh", str(shared_dir / "peers" / "sipp" / "device.sh"), f"127.0.0.1:{live_platform.sip_port}",
         SERVER_ID, DOMAIN, DEVICE, STRONG_SIP_PASSWORD, str(port), "60", "12"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    live_platform.wait_for(
        lambda: live_platform.get(f"/api/devices/{DEVICE}/channels").json().get("items"), 20, "the SIPp camera")
    yield run_dir
    proc.terminate()
    proc.wait(10)


def sipp_messages(run_dir) -> str:
    return "".join(p.read_text("latin-1") for p in run_dir.glob("*_messages.log"))


def ffprobe_frames(path) -> dict:
    need_tool("ffprobe")
    r = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_frames", "-show_entries",
                        "stream=codec_name,width,height,nb_read_frames", "-of", "json", str(path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["streams"][0]


def test_sipp_camera_live_over_flv_then_bye_after_idle(live_platform, sipp_camera, tmp_path):
    p = live_platform
    t0 = time.monotonic()
    r = p.post(f"/api/channels/{CHANNEL}/live", json={"transport": "udp"})
    assert r.status_code == 201, r.text
    live = r.json()
    assert live["codec"] == "h264" and (live["width"], live["height"]) == (640, 360)
    assert time.monotonic() - t0 < 5
    flv = tmp_path / "live.flv"
    with open(flv, "wb") as f:
        assert read_flv(p, live["flv_url"], 5, f) > 50_000
    info = ffprobe_frames(flv)
    assert info["codec_name"] == "h264" and (info["width"], info["height"]) == (640, 360)
    assert int(info["nb_read_frames"]) >= 75  # 5 s at 25 fps, minus start-up

    streams = p.get("/api/streams").json()["items"]
    assert len(streams) in (0, 1)  # the FLV reader left: the stream idles for 2 s, then BYE
    r = httpx.delete(p.base + f"/api/sessions/{live['session_id']}",
                     headers={"Authorization": f"Bearer {p.login()}"})
    assert r.status_code in (204, 404)  # the player leaving may have ended it already
    p.wait_for(lambda: "BYE sip:" in sipp_messages(sipp_camera), 10, "the camera to receive BYE")
    p.wait_for(lambda: p.get("/api/streams").json()["items"] == [], 5, "the stream to be gone")

    # the viewing is evidenced on the audit log: who, which channel, from where, which session
    def entries(action):
        # a camera is (device, channel): audit targets name it as device_id/channel_id
        return p.get("/api/audit/entries", action=action, target=f"{DEVICE}/{CHANNEL}").json()["items"]

    [start] = p.wait_for(lambda: entries("live.start"), 5, "live.start on the audit log")
    [stop] = p.wait_for(lambda: entries("live.stop"), 5, "live.stop on the audit log")
    for e in (start, stop):
        assert e["actor"]["name"] == "admin" and e["target"] == {"type": "channel", "id": f"{DEVICE}/{CHANNEL}"}
        assert e["detail"]["session_id"] == live["session_id"] and e["client_ip"] == "127.0.0.1"
    assert start["detail"]["device_id"] == DEVICE and start["detail"]["codec"] == "h264"
    assert stop["detail"]["duration_s"] > 4 and stop["seq"] > start["seq"]


@pytest.mark.watermark_off
def test_twenty_viewers_cost_the_camera_one_stream(live_platform, sipp_camera, tmp_path):
    p = live_platform
    sessions = []
    for _ in range(20):
        r = p.post(f"/api/channels/{CHANNEL}/live")
        assert r.status_code == 201, r.text
        sessions.append(r.json())
    sizes: list[int] = [0] * 20

    def viewer(i):
        with open(tmp_path / f"v{i}.flv", "wb") as f:
            sizes[i] = read_flv(p, sessions[i]["flv_url"], 3, f)

    threads = [threading.Thread(target=viewer, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    streams = p.get("/api/streams").json()["items"]
    for t in threads:
        t.join(30)
    assert len(streams) == 1 and streams[0]["viewers"] == 20 and streams[0]["channel_id"] == CHANNEL
    assert all(s > 20_000 for s in sizes), sizes
    assert sipp_messages(sipp_camera).count("INVITE sip:") == 1
    for i in (0, 19):
        assert int(ffprobe_frames(tmp_path / f"v{i}.flv")["nb_read_frames"]) > 25


def test_live_errors_are_clear(live_platform):
    p = live_platform
    r = p.post("/api/channels/34020000001310009999/live")
    assert r.status_code == 404 and r.json()["error"] == "channel_not_found"
    r = p.post(f"/api/channels/{CHANNEL}/live", json={"transport": "carrier-pigeon"})
    assert r.status_code in (404, 422)
