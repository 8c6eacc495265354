"""SIPp playing a GB/T 28181 camera (../shared/peers/sipp/device.sh) against a real `gbops run`."""

from __future__ import annotations

import os
import subprocess

import httpx
import pytest

from tests.conftest import need_tool
from tests.e2e.platform import STRONG_SIP_PASSWORD, PlatformProcess, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SERVER_ID = "34020000002000000001"
DOMAIN = "3402000000"


def run_sipp_device(shared_dir, platform: PlatformProcess, device_id: str, password: str, tmp_path,
                    seconds: int = 12, keepalives: int = 3, wait: bool = False) -> subprocess.Popen:
    need_tool("sipp")
    script = shared_dir / "peers" / "sipp" / "device.sh"
    port = free_port()
    run_dir = tmp_path / f"sipp-{device_id}-{port}"
    env = {**os.environ, "GB_RUN_DIR": str(run_dir)}
    proc = subprocess.Popen(
        ["sh", str(script), f"127.0.0.1:{platform.sip_port}", SERVER_ID, DOMAIN, device_id, password,
         str(port), str(seconds), str(keepalives)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    if wait:
        proc.wait(timeout=seconds + 20)
    return proc


@pytest.fixture
def platform(tmp_path):
    p = PlatformProcess(tmp_path / "data").start()
    yield p
    p.stop()


def test_sipp_camera_registers_reports_its_channel_and_unregisters(platform, shared_dir, tmp_path):
    device_id = "34020000001320000077"
    channel_id = device_id[:10] + "131" + device_id[13:]
    proc = run_sipp_device(shared_dir, platform, device_id, STRONG_SIP_PASSWORD, tmp_path)
    try:
        dev = platform.wait_for(
            lambda: (r := platform.get(f"/api/devices/{device_id}")).status_code == 200 and r.json()["online"]
            and r.json(), 15, "the SIPp device online")
        assert dev["remote_addr"].startswith("127.0.0.1:")
        assert dev["transport"] == "udp"
        channels = platform.wait_for(
            lambda: platform.get(f"/api/devices/{device_id}/channels").json()["items"], 15, "its catalog")
        assert [c["channel_id"] for c in channels] == [channel_id]
        assert channels[0]["name"] == "SIPp Camera 01"
        assert channels[0]["online"] is True
        info = platform.wait_for(
            lambda: (d := platform.get(f"/api/devices/{device_id}").json())["manufacturer"] and d, 10,
            "DeviceInfo applied")
        assert info["manufacturer"] == "SIPp" and info["model"] == "sipp-ipc"
        status = platform.get(f"/api/devices/{device_id}/status")
        assert status.status_code == 200, status.text
        assert status.json()["result"] == "OK" and status.json()["online"] is True
    finally:
        out = proc.communicate(timeout=40)[0].decode("utf-8", "replace")
    assert proc.returncode == 0, out + platform.log()[-3000:]

    platform.wait_for(lambda: not platform.get(f"/api/devices/{device_id}").json()["online"], 10,
                      "the device offline after its unregister")
    events = platform.get(f"/api/devices/{device_id}/presence").json()["items"]
    device_events = [(e["online"], e["reason"]) for e in reversed(events) if e["subject"] == "device"]
    assert device_events == [(True, "registered"), (False, "unregistered")]
    channel_events = [(e["online"], e["reason"]) for e in reversed(events) if e["subject"] == "channel"]
    assert channel_events[-1] == (False, "device_offline")


def test_wrong_password_is_refused_then_locked_out(platform, shared_dir, tmp_path):
    device_id = "34020000001320000088"
    for attempt in range(6):
        proc = run_sipp_device(shared_dir, platform, device_id, "Wrong-pass#123", tmp_path, seconds=3,
                               keepalives=1, wait=True)
        assert proc.returncode != 0, f"attempt {attempt}: a wrong password was accepted"
    log = platform.log()
    assert log.count("register.rejected") >= 6
    assert "locked_out=True" in log
    # now even the right password is refused for the locked-out device id
    proc = run_sipp_device(shared_dir, platform, device_id, STRONG_SIP_PASSWORD, tmp_path, seconds=3,
                           keepalives=1, wait=True)
    assert proc.returncode != 0
    assert "locked out" in platform.log()
    r = platform.get(f"/api/devices/{device_id}")
    assert r.status_code == 404 or r.json()["online"] is False
    metrics = platform.get("/api/sip/metrics").json()
    assert metrics["lockouts"] >= 1 and metrics["locked_refusals"] >= 1 and metrics["auth_failures"] >= 6


def test_per_device_password_overrides_the_default(platform, shared_dir, tmp_path):
    device_id = "34020000001320000066"
    own = "Own-camera-pw#66"
    r = httpx.put(platform.base + f"/api/devices/{device_id}/password", json={"password": own},
                  headers={"Authorization": f"Bearer {platform.login()}"})
    assert r.status_code == 204, r.text
    proc = run_sipp_device(shared_dir, platform, device_id, STRONG_SIP_PASSWORD, tmp_path, seconds=3,
                           keepalives=1, wait=True)
    assert proc.returncode != 0, "the platform default password still worked for a device with its own"
    proc = run_sipp_device(shared_dir, platform, device_id, own, tmp_path, seconds=4, keepalives=1, wait=True)
    assert proc.returncode == 0, proc.stdout.read().decode("utf-8", "replace")
    platform.wait_for(lambda: [(e["online"], e["reason"]) for e in reversed(
        platform.get(f"/api/devices/{device_id}/presence").json()["items"]) if e["subject"] == "device"] == [
        (True, "registered"), (False, "unregistered")], 5, "registered then unregistered")
