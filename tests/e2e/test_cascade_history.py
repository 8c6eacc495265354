"""History video through the cascade: the upper ``gbops run`` plays back and downloads a window of the
simulator's recordings behind the lower ``gbops run``.

The upper's playback is an ``s=Playback`` INVITE to the lower (a device of type 200 there); the lower forwards
it as its own history call to the simulator and sends the RTP/PS up. The simulator draws the recording's Unix
second into every picture (``gbsim.playback``), so the frames decoded at the upper say which moment of the
recording really came through both platforms. The upper's RecordInfo for the shared channel is the device's,
forwarded by the lower. Pause and resume at the upper travel as MANSRTSP INFO to the
lower, which forwards them into its call with the device (the simulator counts them). A download at the upper
(``s=Download``) ends with the device's MediaStatus 121 relayed by the lower, and its MP4 decodes.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

import pytest

from gbsim import SimConfig, Simulator
from tests.e2e.platform import STRONG_SIP_PASSWORD, PlatformProcess
from tests.e2e.test_cascade_gbops import LOWER_ID, UPPER_DOMAIN, UPPER_ID, call, pair  # noqa: F401 - fixture
from tests.e2e.test_history_sim import (
    FlvCapture,
    _iso,
    _job_done,
    fetch_file,
    ffprobe_duration,
    frames_with_codes,
    recorded_moment,
    start_playback,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FIRST = "34020000001320000001"


def _registered_pair(upper: PlatformProcess, lower: PlatformProcess, device: str, channel: str) -> int:
    """Configure the upper at the lower, share ``device/channel``, wait until the upper has it in its catalog;
    returns the platform's id at the lower."""
    r = call(lower, "POST", "/api/cascade/platforms", {
        "name": "市级视频共享平台", "server_id": UPPER_ID, "server_domain": UPPER_DOMAIN, "host": "127.0.0.1",
        "port": upper.sip_port, "transport": "udp", "local_id": LOWER_ID, "username": LOWER_ID,
        "password": STRONG_SIP_PASSWORD, "expires": 3600, "keepalive_s": 5, "charset": "GB2312",
        "gb_version": "2016", "ptz_level": 5, "watermark": "tag", "enabled": True})
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    r = call(lower, "PUT", f"/api/cascade/platforms/{pid}/share",
             {"org_nodes": [], "channels": [{"device_id": device, "channel_id": channel}]})
    assert r.status_code == 200, r.text
    lower.wait_for(lambda: lower.get(f"/api/cascade/platforms/{pid}/status").json()["state"] == "registered", 30,
                   "registered with the upper")
    upper.wait_for(lambda: (d := upper.get(f"/api/devices/{LOWER_ID}")).status_code == 200 and d.json()["online"],
                   30, "the lower online at the upper")
    upper.post(f"/api/devices/{LOWER_ID}/catalog-sync")
    upper.wait_for(lambda: any(c["channel_id"] == channel
                               for c in upper.get(f"/api/devices/{LOWER_ID}/channels").json()["items"]),
                   30, "the shared channel at the upper")
    return pid


def _codes(path) -> list[int]:
    return [c for _, c in frames_with_codes(path) if c is not None]


def _wait_codes(path, n: int, timeout: float) -> list[int]:
    """The drawn seconds of the pictures captured so far, once there are at least ``n`` of them."""
    deadline = time.monotonic() + timeout
    codes: list[int] = []
    while time.monotonic() < deadline:
        try:
            codes = _codes(path)
        except Exception:  # noqa: BLE001 - the file is still being written (no header yet, a cut tag)
            codes = []
        if len(codes) >= n:
            return codes
        time.sleep(0.5)
    raise AssertionError(f"only {len(codes)} decodable pictures with a time code after {timeout} s")


async def _until(predicate, timeout: float, what: str, platform: PlatformProcess | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.25)
    log = f"\n--- platform log ---\n{platform.log()[-3000:]}" if platform is not None else ""
    raise AssertionError(f"timed out waiting for {what}{log}")


async def test_upper_plays_back_controls_and_downloads_device_history_through_the_lower(pair, tmp_path):  # noqa: F811
    upper, lower = pair
    sim = Simulator(SimConfig(server=("127.0.0.1", lower.sip_port), devices=1, channels=1,
                              password=STRONG_SIP_PASSWORD, size="320x180", fps=10, bitrate=300_000, first_id=FIRST,
                              record_hours=3, history_bye_timeout=5))
    await sim.start()
    try:
        assert await sim.wait_until(lambda s: s.registered == 1, 20), sim.progress_line()
        device, channel = sim.device_ids[0], sim.cfg.channel_ids(0)[0]
        await asyncio.to_thread(lower.wait_for, lambda: any(
            c["channel_id"] == channel for c in lower.get(f"/api/devices/{device}/channels").json()["items"]),
            20, "the device's catalog at the lower")
        pid = await asyncio.to_thread(_registered_pair, upper, lower, device, channel)
        base = f"/api/devices/{LOWER_ID}/channels/{channel}"

        # the upper's RecordInfo for the shared channel: the device's recordings, forwarded by the lower
        start = recorded_moment(sim, device, channel, 120)
        r = await asyncio.to_thread(upper.get, base + "/records", start=_iso(start - 600), end=_iso(start + 600),
                                    source="device")
        assert r.status_code == 200, r.text
        items = r.json()["items"]
        spans = [(datetime.fromisoformat(i["start"]).timestamp(), datetime.fromisoformat(i["end"]).timestamp())
                 for i in items]
        covered = sum(max(0.0, min(b, start + 120) - max(a, start)) for a, b in spans)
        assert all(i["start"].endswith("+08:00") for i in items) and covered >= 119, (start, r.json())

        # playback at the upper: the first pictures show the requested moment of the device's recording
        s = await asyncio.to_thread(start_playback, upper, LOWER_ID, channel, start, start + 120, "device")
        cap = FlvCapture(upper, s["flv_url"], tmp_path / "playback.flv")
        try:
            codes = await asyncio.to_thread(_wait_codes, tmp_path / "playback.flv", 20, 45)
            assert abs(codes[0] - start) <= 1, (codes[:5], start)
            assert codes[-1] > codes[0], codes[-5:]
            status = (await asyncio.to_thread(lower.get, f"/api/cascade/platforms/{pid}/status")).json()
            [leg] = status["stream_list"]
            assert leg["kind"] == "playback" and leg["channel_id"] == channel, leg

            # pause and resume at the upper reach the simulator (MANSRTSP forwarded by the lower)
            before = sim.stats().get("controls_received", 0)
            r = await asyncio.to_thread(call, upper, "POST", f"/api/sessions/{s['session_id']}/control",
                                        {"action": "pause"})
            assert r.status_code == 200, r.text
            await _until(lambda: sim.stats().get("controls_received", 0) >= before + 1, 20,
                         "the pause at the simulator", lower)
            got = (await asyncio.to_thread(upper.get, f"/api/sessions/{s['session_id']}")).json()
            assert got["paused"] is True, got
            r = await asyncio.to_thread(call, upper, "POST", f"/api/sessions/{s['session_id']}/control",
                                        {"action": "resume"})
            assert r.status_code == 200, r.text
            await _until(lambda: sim.stats().get("controls_received", 0) >= before + 2, 20,
                         "the resume at the simulator", lower)
            assert sim.stats().get("controls_refused", 0) == 0, sim.stats()
            # after the resume the recording plays on at the upper
            paused_at = len(await asyncio.to_thread(_codes, tmp_path / "playback.flv"))
            after = await asyncio.to_thread(_wait_codes, tmp_path / "playback.flv", paused_at + 10, 30)
            assert after[-1] > codes[-1], (codes[-3:], after[-3:])
        finally:
            cap.stop()
        r = await asyncio.to_thread(call, upper, "DELETE", f"/api/sessions/{s['session_id']}")
        assert r.status_code in (204, 404), r.text
        await asyncio.to_thread(lower.wait_for, lambda: lower.get(
            f"/api/cascade/platforms/{pid}/status").json()["streams"] == 0, 30, "the playback leg ended")

        # download of a 10 s window at the upper: s=Download through the lower, an MP4 that decodes
        window = recorded_moment(sim, device, channel, 10)
        r = await asyncio.to_thread(upper.post, base + "/downloads",
                                    {"start": _iso(window), "end": _iso(window + 10), "source": "device"})
        assert r.status_code in (201, 202), r.text
        job = await asyncio.to_thread(upper.wait_for, lambda: _job_done(upper, r.json()["job_id"]), 120,
                                      "the download at the upper")
        assert job["state"] == "done", (job, lower.log()[-3000:])
        path = tmp_path / "window.mp4"
        await asyncio.to_thread(fetch_file, upper, job["job_id"], path)
        duration = await asyncio.to_thread(ffprobe_duration, path)
        assert abs(duration - 10) <= 1.5, duration
        codes = await asyncio.to_thread(_codes, path)
        assert codes and abs(codes[0] - window) <= 1 and abs(codes[-1] - (window + 9)) <= 1.5, (window, codes[:3],
                                                                                               codes[-3:])
        await asyncio.to_thread(lower.wait_for, lambda: lower.get(
            f"/api/cascade/platforms/{pid}/status").json()["streams"] == 0, 30, "the download leg ended")

        # the lower's evidence: the upper's playback and download INVITEs, each with its window
        requests = (await asyncio.to_thread(lower.get, f"/api/cascade/platforms/{pid}/requests")).json()["items"]
        invites = [e["detail"] for e in requests if e["action"] == "cascade.invite"]
        by_kind = {d["kind"]: d for d in invites if d.get("result") == "ok"}
        assert {"playback", "download"} <= set(by_kind), invites
        for kind, begin in (("playback", start), ("download", window)):
            d = by_kind[kind]
            assert d["channel_id"] == channel and d["device_id"] == device, d
            assert datetime.fromisoformat(d["start"]).timestamp() == begin, (kind, d, begin)
            assert d["start"].endswith("+08:00"), d
        stats = sim.stats()
        # one history call each (the upper's playback, its download), the RecordInfo asked once, the end of
        # the downloaded file told by the device (and relayed up: the upper's job completed)
        assert stats["history_calls"] == 2 and stats["record_queries"] >= 1, stats
        assert stats["media_status_sent"] >= 1, stats
    finally:
        await sim.stop()
