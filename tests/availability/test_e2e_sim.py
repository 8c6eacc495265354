"""`gbops run` with 8 simulated cameras: 2 go silent for a known time, the day report shows it.

Detection delay: a silent device is declared offline when ``keepalive_interval x misses`` has passed since
its last keepalive (here 2 s x 3 = 6 s), and that moment is when the presence history records it offline;
it is online again at its next REGISTER.  So the report shows an outage of (true outage - detection
delay), with the delay between ``interval x (misses - 1)`` (it went silent just before a keepalive was due)
and ``interval x misses`` (just after one), plus timer and write slack.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from gbsim import SimConfig, Simulator
from ops_portal.availability.reports import read_csv_channels
from tests.e2e.platform import STRONG_SIP_PASSWORD, PlatformProcess

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

KEEPALIVE = 2.0
MISSES = 3
OUTAGE = 20.0
SLACK = 1.5


@pytest.fixture
async def platform(tmp_path, db_url):
    env = {"GBOPS_SIP_KEEPALIVE_INTERVAL": str(KEEPALIVE), "GBOPS_SIP_KEEPALIVE_MISSES": str(MISSES)}
    if db_url.startswith("postgresql"):
        env["GBOPS_DATABASE_URL"] = db_url
    p = await asyncio.to_thread(PlatformProcess(tmp_path / "data", **env).start, 120)
    yield p
    await asyncio.to_thread(p.stop)


async def wait_for(platform: PlatformProcess, predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await asyncio.to_thread(predicate)
        if last:
            return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last={last!r}\n{platform.log()[-3000:]}")


def rate_now(platform: PlatformProcess) -> dict:
    r = platform.get("/api/availability/online-rate")
    assert r.status_code == 200, r.text
    return r.json()


async def test_day_report_shows_the_outage_of_two_stopped_cameras(platform) -> None:
    common = dict(server=("127.0.0.1", platform.sip_port), password=STRONG_SIP_PASSWORD, keepalive=KEEPALIVE,
                  register_rate=100.0, channels=1)
    stay = Simulator(SimConfig(devices=6, first_id="34020000001320000001", **common))
    flaky_cfg = SimConfig(devices=2, first_id="34020000001320000101", **common)
    flaky = Simulator(flaky_cfg)
    back = None
    await stay.start()
    await flaky.start()
    try:
        await wait_for(platform, lambda: rate_now(platform)["channels_online"] == 8, 30, "8 channels online")
        day = datetime.now(ZoneInfo("Asia/Shanghai")).date()
        t_stop = time.monotonic()
        await flaky.stop(unregister=False)
        await wait_for(platform, lambda: rate_now(platform)["channels_online"] == 6, KEEPALIVE * MISSES + 5,
                       "2 channels offline")
        now = rate_now(platform)
        assert now["channels_total"] == 8 and now["rate"] == 0.75 and now["breach"] is True
        await asyncio.sleep(max(0.0, t_stop + OUTAGE - time.monotonic()))
        back = Simulator(flaky_cfg)  # the same two cameras power up again
        await back.start()
        await wait_for(platform, lambda: rate_now(platform)["channels_online"] == 8, 15, "8 channels online again")
    finally:
        await stay.stop(unregister=False)
        if back is not None:
            await back.stop(unregister=False)

    r = await asyncio.to_thread(platform.post, "/api/reports", {"kind": "day", "date": day.isoformat(),
                                                                "format": "csv"})
    assert r.status_code == 202, r.text
    rid = r.json()["id"]
    body = await wait_for(platform, lambda: (b := platform.get(f"/api/reports/{rid}").json())["state"] == "done"
                          and b, 30, "the day report")
    csv_text = (await asyncio.to_thread(platform.get, f"/api/reports/{rid}/file")).content.decode("utf-8-sig")
    rows = {row["device_id"]: row for row in read_csv_channels(csv_text)}
    assert len(rows) == 8
    for dev in flaky.device_ids:
        row = rows[dev]
        offline = float(row["offline_s"])
        assert int(row["outages"]) == 1, row
        assert OUTAGE - KEEPALIVE * MISSES - SLACK <= offline <= OUTAGE - KEEPALIVE * (MISSES - 1) + SLACK, row
        assert float(row["longest_outage_s"]) == offline
    for dev in stay.device_ids:
        assert float(rows[dev]["offline_s"]) == 0 and int(rows[dev]["outages"]) == 0
    online = sum(float(r["online_s"]) for r in rows.values())
    offline = sum(float(r["offline_s"]) for r in rows.values())
    summary = body["summary"]
    assert summary["time_weighted_rate"] == pytest.approx(online / (online + offline), abs=1e-4)  # CSV: ms
    assert summary["time_weighted_rate"] < 1 and summary["threshold"] == 0.85
    assert summary["unknown_s"] == 0  # the platform ran throughout
    assert body["sha256"] and body["checkpoint_size"] is not None  # recorded in the audit log
