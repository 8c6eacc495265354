"""`gbops run` with a fleet of simulated devices: 500 over UDP and 100 over TCP, on SQLite and PostgreSQL.

All must come online with their catalogs; when the simulator stops without unregistering, the platform
must notice every device offline within the keepalive window (3 missed keepalives) and record why.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from gbsim import SimConfig, Simulator
from tests.e2e.platform import STRONG_SIP_PASSWORD, PlatformProcess

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

KEEPALIVE = 2.0
MISSES = 3


@pytest.fixture
async def platform(tmp_path, db_url):
    env = {"GBOPS_SIP_KEEPALIVE_INTERVAL": str(KEEPALIVE), "GBOPS_SIP_KEEPALIVE_MISSES": str(MISSES)}
    if db_url.startswith("postgresql"):
        env["GBOPS_DATABASE_URL"] = db_url
    p = PlatformProcess(tmp_path / "data", **env).start()
    yield p
    p.stop()


def online_total(platform: PlatformProcess) -> int:
    return platform.get("/api/devices", online="true", limit=1).json()["total"]


async def wait_async(predicate, timeout: float, what: str, platform: PlatformProcess):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await asyncio.to_thread(predicate)
        if last:
            return last
        await asyncio.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}; last={last!r}\n{platform.log()[-3000:]}")


async def test_600_simulated_devices_online_then_offline_within_keepalive_window(platform):
    common = dict(server=("127.0.0.1", platform.sip_port), password=STRONG_SIP_PASSWORD, keepalive=KEEPALIVE,
                  register_rate=400.0, charset="gb2312")
    udp = Simulator(SimConfig(devices=500, channels=2, transport="udp", first_id="34020000001180000001",
                              **common))
    tcp = Simulator(SimConfig(devices=100, channels=1, transport="tcp", first_id="34020000001320100001",
                              charset="utf-8", **{k: v for k, v in common.items() if k != "charset"}))
    await udp.start()
    await tcp.start()
    try:
        assert await udp.wait_until(lambda s: s.registered == 500, 60), udp.progress_line()
        assert await tcp.wait_until(lambda s: s.registered == 100, 60), tcp.progress_line()
        await wait_async(lambda: online_total(platform) == 600, 30, "600 devices online", platform)

        # catalogs arrived, Chinese names intact, for an NVR (one item per MESSAGE) and a TCP IPC
        nvr = udp.device_ids[-1]
        chans = await wait_async(
            lambda: (items := platform.get(f"/api/devices/{nvr}/channels").json()["items"]) and len(items) == 2
            and items, 30, "the NVR's two channels", platform)
        assert all(any("\u4e00" <= ch <= "\u9fff" for ch in c["name"]) for c in chans), chans
        ipc = tcp.device_ids[0]
        dev = platform.get(f"/api/devices/{ipc}").json()
        assert dev["transport"] == "tcp" and dev["online"]
        status = await asyncio.to_thread(platform.get, f"/api/devices/{ipc}/status")
        assert status.status_code == 200 and status.json()["online"] is True, status.text
        await wait_async(lambda: len(platform.get(f"/api/devices/{ipc}/channels").json()["items"]) == 1, 30,
                         "the TCP IPC's channel", platform)
    finally:
        stopped_at = time.monotonic()
        await udp.stop(unregister=False)
        await tcp.stop(unregister=False)

    window = KEEPALIVE * MISSES
    await wait_async(lambda: online_total(platform) == 0, window + 10, "all devices offline", platform)
    took = time.monotonic() - stopped_at
    assert took <= window + 3, f"offline detection took {took:.1f} s for a {window:.0f} s window"
    events = platform.get(f"/api/devices/{nvr}/presence").json()["items"]
    last_device_event = next(e for e in events if e["subject"] == "device")
    assert last_device_event["online"] is False and last_device_event["reason"] == "keepalive_timeout"
    metrics = platform.get("/api/sip/metrics").json()
    assert metrics["devices_online"] == 0 and metrics["registrations_ok"] >= 600
