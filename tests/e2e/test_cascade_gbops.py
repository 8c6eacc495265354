"""Cascade with real peers both ways: a second ``gbops run`` is the upper platform.

simulator -> lower ``gbops run`` -> (REGISTER as a platform, catalog, INVITE) -> upper ``gbops run``. The upper accepts
the lower as a device of type 200 with digest, syncs its catalog (the shared channels with their Chinese names and
coordinates, nothing unshared), and its viewer plays a channel live: frames that came from the simulator behind the
lower platform. The lower's one upstream serves its own viewer and the upper at once.
"""

from __future__ import annotations

import asyncio
import time

import av
import httpx
import pytest

from gbsim import SimConfig, Simulator
from tests.e2e.platform import STRONG_SIP_PASSWORD, PlatformProcess, free_port, read_flv

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

UPPER_ID = "34010000002000000001"
UPPER_DOMAIN = "3401000000"
LOWER_ID = "34020000002000000001"


def _platform(path, **env) -> PlatformProcess:
    low = free_port()
    return PlatformProcess(path, GBOPS_RTP_PORTS=f"{low}-{low + 40}", GBOPS_MEDIA_HOST="127.0.0.1",
                           GBOPS_LIVE_IDLE_TIMEOUT="1", **env)


@pytest.fixture
async def pair(tmp_path):
    upper = _platform(tmp_path / "upper", GBOPS_SIP_ID=UPPER_ID, GBOPS_SIP_DOMAIN=UPPER_DOMAIN).start()
    lower = _platform(tmp_path / "lower", GBOPS_SIP_ID=LOWER_ID, GBOPS_CASCADE_NOTIFY_INTERVAL="1").start()
    yield upper, lower
    lower.stop()
    upper.stop()


def call(p: PlatformProcess, method: str, path: str, json=None) -> httpx.Response:
    return httpx.request(method, p.base + path, json=json, headers={"Authorization": f"Bearer {p.login()}"},
                         timeout=10)


def read_flv_file(p: PlatformProcess, url: str, seconds: float, path) -> int:
    with open(path, "wb") as f:
        return read_flv(p, url, seconds, f)


def decode(path) -> tuple[str, int]:
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        return stream.codec_context.name, sum(1 for _ in c.decode(stream))


@pytest.mark.parametrize("transport", ["udp", "tcp-active", "tcp-passive"])
async def test_upper_gbops_sees_shared_channels_and_plays_live_through_the_lower(pair, tmp_path, transport):
    upper, lower = pair
    sim = Simulator(SimConfig(server=("127.0.0.1", lower.sip_port), devices=2, channels=2,
                              password=STRONG_SIP_PASSWORD, codec="h264", size="640x360",
                              first_id="34020000001180000001", register_rate=50))
    await sim.start()
    try:
        assert await sim.wait_until(lambda s: s.registered == 2, 20), sim.progress_line()
        nvr = sim.device_ids[0]
        other = sim.device_ids[1]
        chans = await asyncio.to_thread(lower.wait_for, lambda: (items := lower.get(
            f"/api/devices/{nvr}/channels").json()["items"]) and len(items) == 2 and items, 20, "the NVR's catalog")
        shared, unshared = chans[0]["channel_id"], chans[1]["channel_id"]
        other_chans = await asyncio.to_thread(lower.wait_for, lambda: (items := lower.get(
            f"/api/devices/{other}/channels").json()["items"]) and len(items) == 2 and items, 20,
            "the second device's catalog")

        # the lower registers to the upper as a platform (the upper's device password is its default one)
        r = await asyncio.to_thread(call, lower, "POST", "/api/cascade/platforms", {
            "name": "市公安局视频共享平台", "server_id": UPPER_ID, "server_domain": UPPER_DOMAIN,
            "host": "127.0.0.1", "port": upper.sip_port, "transport": "udp" if transport == "udp" else "tcp",
            "local_id": LOWER_ID, "username": LOWER_ID, "password": STRONG_SIP_PASSWORD,
            "expires": 3600, "keepalive_s": 5, "charset": "GB2312", "gb_version": "2016", "ptz_level": 5,
            "watermark": "tag", "enabled": True})
        assert r.status_code == 201, r.text
        pid = r.json()["id"]
        assert "password" not in r.text.lower().replace('"has_password"', "")
        r = await asyncio.to_thread(call, lower, "PUT", f"/api/cascade/platforms/{pid}/share", {
            "org_nodes": [], "channels": [{"device_id": nvr, "channel_id": shared},
                                          {"device_id": other, "channel_id": other_chans[0]["channel_id"],
                                           "upward_id": "34020000001310009999"}]})
        assert r.status_code == 200, r.text

        status = await asyncio.to_thread(lower.wait_for, lambda: (s := lower.get(
            f"/api/cascade/platforms/{pid}/status").json())["state"] == "registered" and s, 30,
            "registered with the upper")
        assert status["last_error"] in (None, "")

        # the upper sees the lower as a device and syncs its catalog: shared channels only, names intact
        await asyncio.to_thread(upper.wait_for, lambda: upper.get(f"/api/devices/{LOWER_ID}").status_code == 200
                                and upper.get(f"/api/devices/{LOWER_ID}").json()["online"], 30, "the lower online")
        await asyncio.to_thread(upper.post, f"/api/devices/{LOWER_ID}/catalog-sync")
        up_chans = await asyncio.to_thread(upper.wait_for, lambda: (items := upper.get(
            f"/api/devices/{LOWER_ID}/channels").json()["items"]) and len(items) == 2 and items, 30,
            "the lower's shared channels at the upper")
        by_id = {c["channel_id"]: c for c in up_chans}
        assert set(by_id) == {shared, "34020000001310009999"}
        assert unshared not in by_id
        assert by_id[shared]["name"] == chans[0]["name"]
        assert any("\u4e00" <= ch <= "\u9fff" for ch in by_id[shared]["name"])

        # a local viewer at the lower, then the upper's viewer: one upstream to the device
        local = await asyncio.to_thread(lower.post, f"/api/devices/{nvr}/channels/{shared}/live",
                                        {"transport": "udp"})
        assert local.status_code == 201, local.text
        up_transport = {"udp": "udp", "tcp-active": "tcp-active", "tcp-passive": "tcp-passive"}[transport]
        t0 = time.monotonic()
        live = await asyncio.to_thread(upper.post, f"/api/devices/{LOWER_ID}/channels/{shared}/live",
                                       {"transport": up_transport})
        assert live.status_code == 201, (live.text, lower.log()[-3000:])
        started = time.monotonic() - t0
        path = tmp_path / f"upper-{transport}.flv"
        n = await asyncio.to_thread(read_flv_file, upper, live.json()["flv_url"], 3, path)
        assert n > 10_000
        name, frames = await asyncio.to_thread(decode, path)
        assert name == "h264" and frames >= 30, (frames, started)
        streams = lower.get("/api/streams").json()["items"]
        assert len([s for s in streams if (s["device_id"], s["channel_id"]) == (nvr, shared)]) == 1, streams
        assert sim.calls == 1, "the lower's viewer and the upper share one INVITE to the device"
        status = lower.get(f"/api/cascade/platforms/{pid}/status").json()
        assert status["streams"] == 1

        # evidence at the lower: the upper's INVITE, naming the platform and the channel
        requests = lower.get(f"/api/cascade/platforms/{pid}/requests").json()["items"]
        invites = [e for e in requests if e["action"] == "cascade.invite"]
        assert invites and invites[0]["detail"]["channel_id"] == shared
        assert STRONG_SIP_PASSWORD not in lower.get("/api/audit/entries", limit=500).text

        if transport == "udp":
            # a share change reaches the upper by its catalog subscription (NOTIFY ADD, batched for 1 s here)
            r = await asyncio.to_thread(call, lower, "PUT", f"/api/cascade/platforms/{pid}/share", {
                "org_nodes": [], "channels": [{"device_id": nvr, "channel_id": shared},
                                              {"device_id": nvr, "channel_id": unshared}]})
            assert r.status_code == 200, r.text
            await asyncio.to_thread(upper.wait_for, lambda: unshared in {c["channel_id"] for c in upper.get(
                f"/api/devices/{LOWER_ID}/channels").json()["items"]}, 30, "the newly shared channel at the upper")

        # the upper's viewer has left (its player closed): after the upper's idle delay its BYE ends the leg
        r = await asyncio.to_thread(call, upper, "DELETE", f"/api/sessions/{live.json()['session_id']}")
        assert r.status_code in (204, 404), r.text  # 404: the session ended with its player already
        await asyncio.to_thread(lower.wait_for, lambda: lower.get(
            f"/api/cascade/platforms/{pid}/status").json()["streams"] == 0, 20, "the upward leg ended")
    finally:
        await sim.stop()

