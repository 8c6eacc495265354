"""History video end to end: `gbops run` against the simulator's recording store (device records, device
playback with pause/seek/speed, MediaStatus 121, device and platform downloads, platform recording and
playback). The simulator draws the recording's own Unix second as a time code (``gbsim.playback``), so the
decoded pictures say which moment of the recording the platform really played."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta, timezone

import av
import httpx
import pytest

from gbsim import SimConfig, Simulator
from gbsim.playback import read_time_code
from tests.e2e.platform import STRONG_SIP_PASSWORD, PlatformProcess, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FIRST = "34020000001320000001"


def sim_config(p: PlatformProcess, **extra) -> SimConfig:
    return SimConfig(server=("127.0.0.1", p.sip_port), devices=1, channels=1, password=STRONG_SIP_PASSWORD,
                     size="320x180", fps=10, bitrate=300_000, first_id=FIRST, record_hours=3,
                     history_bye_timeout=5, **extra)


async def start_sim(p: PlatformProcess, **extra) -> tuple[Simulator, str, str]:
    sim = Simulator(sim_config(p, **extra))
    await sim.start()
    assert await sim.wait_until(lambda s: s.registered == 1, 20), sim.progress_line()
    device = sim.device_ids[0]
    channel = sim.cfg.channel_ids(0)[0]
    await asyncio.to_thread(p.wait_for, lambda: any(
        c["channel_id"] == channel for c in p.get(f"/api/devices/{device}/channels").json()["items"]),
        20, "the catalog")
    return sim, device, channel


@pytest.fixture
async def platform(tmp_path):
    low = free_port()
    p = PlatformProcess(tmp_path / "data", GBOPS_RTP_PORTS=f"{low}-{low + 60}", GBOPS_MEDIA_HOST="127.0.0.1",
                        GBOPS_LIVE_IDLE_TIMEOUT="1", GBOPS_RECORD_SEGMENT_SECONDS="3", TZ="UTC").start()
    yield p
    p.stop()


@pytest.fixture
async def rig(platform):
    sim, device, channel = await start_sim(platform)
    try:
        yield platform, sim, device, channel
    finally:
        await sim.stop()


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


class FlvCapture:
    """Reads an HTTP-FLV response in a thread into a file until stopped or the response ends."""

    def __init__(self, platform: PlatformProcess, url: str, path) -> None:
        self.platform, self.url, self.path = platform, url, path
        self.ended = threading.Event()  # the response completed by itself
        self._stop = threading.Event()
        self.bytes = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with open(self.path, "wb") as f, httpx.stream("GET", self.platform.base + self.url, timeout=30) as r:
            assert r.status_code == 200
            for chunk in r.iter_bytes():
                f.write(chunk)
                f.flush()
                self.bytes += len(chunk)
                if self._stop.is_set():
                    return
        self.ended.set()

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        self.thread.join(timeout)


def frames_with_codes(path) -> list[tuple[float, int | None]]:
    """(FLV presentation time in seconds, the drawn Unix second) of every decoded picture."""
    out = []
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        for frame in c.decode(stream):
            t = float(frame.pts * stream.time_base) if frame.pts is not None else None
            out.append((t, read_time_code(frame)))
    return out


def ffprobe_duration(path) -> float:
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0",
                            str(path)], capture_output=True, text=True, check=True)
    return float(probe.stdout.strip())


def fetch_file(p: PlatformProcess, job_id: str, path) -> None:
    with httpx.stream("GET", p.base + f"/api/downloads/{job_id}/file",
                      headers={"Authorization": f"Bearer {p.login()}"}, timeout=30) as resp:
        assert resp.status_code == 200, resp.read()
        path.write_bytes(resp.read())


def inspect(p: PlatformProcess, path) -> str:
    out = subprocess.run([sys.executable, "-m", "gbops.cli", "watermark", "inspect", str(path)],
                         capture_output=True, text=True, env=p.env)
    return out.stdout + out.stderr


def start_playback(p: PlatformProcess, device: str, channel: str, start: float, end: float, source="device"):
    r = p.post(f"/api/devices/{device}/channels/{channel}/playback",
               {"start": _iso(start), "end": _iso(end), "source": source})
    assert r.status_code == 201, r.text
    return r.json()


def control(p: PlatformProcess, session_id: str, **body) -> dict:
    r = p.post(f"/api/sessions/{session_id}/control", body)
    assert r.status_code == 200, r.text
    return r.json()


def recorded_moment(sim: Simulator, device: str, channel: str, seconds: float) -> float:
    """A moment with ``seconds`` of recording after it, in the last hour of the simulated store."""
    store = sim.fleet.devices[0].record_store(channel)
    t = time.time() - 1800
    t = store.next_recorded(t, time.time()) or t
    assert store.seconds_in(t, t + seconds, time.time()) >= seconds - 1
    return float(int(t))


async def test_device_records_query_in_beijing_time(rig):
    p, sim, device, channel = rig
    now = time.time()
    r = await asyncio.to_thread(p.get, f"/api/devices/{device}/channels/{channel}/records",
                                start=_iso(now - 3 * 3600), end=_iso(now), source="device")
    assert r.status_code == 200, r.text
    body = r.json()
    items = body["items"]
    assert body["complete"] is True and body["sum_num"] == len(items) > 8  # several MESSAGEs reassembled
    assert all(i["source"] == "device" and i["start"].endswith("+08:00") for i in items)
    starts = [datetime.fromisoformat(i["start"]) for i in items]
    assert starts == sorted(starts)
    gaps = [b - a for a, b in zip([datetime.fromisoformat(i["end"]) for i in items][:-1], starts[1:],
                                  strict=True)]
    assert max(gaps) >= timedelta(minutes=59)  # the simulated missing hour shows
    # the shorthand path answers the same channel (its id is unique here)
    r2 = await asyncio.to_thread(p.get, f"/api/channels/{channel}/records", start=_iso(now - 3600),
                                 end=_iso(now), source="device")
    assert r2.status_code == 200 and r2.json()["items"]
    bad = await asyncio.to_thread(p.get, f"/api/devices/{device}/channels/{channel}/records",
                                  start=_iso(now), end=_iso(now - 60), source="device")
    assert bad.status_code == 422, bad.text


async def test_device_playback_start_pause_seek_speed_and_end(rig, tmp_path):
    p, sim, device, channel = rig
    start = recorded_moment(sim, device, channel, 120)
    # 1. the first picture shows the requested start
    t0 = time.monotonic()
    s = await asyncio.to_thread(start_playback, p, device, channel, start, start + 120)
    assert time.monotonic() - t0 < 2.5, "playback must start within about 2 s"
    assert s["watermark_id"]
    cap = FlvCapture(p, s["flv_url"], tmp_path / "a.flv")
    await asyncio.sleep(3)
    state = await asyncio.to_thread(control, p, s["session_id"], action="seek", position=60)
    assert state["kind"] == "playback"
    await asyncio.sleep(3)
    await asyncio.to_thread(control, p, s["session_id"], action="speed", scale=4)
    speed_at = time.monotonic()
    await asyncio.sleep(3)
    speed_wall = time.monotonic() - speed_at
    await asyncio.to_thread(control, p, s["session_id"], action="pause")
    await asyncio.sleep(0.7)
    at_pause = await asyncio.to_thread(frames_with_codes, tmp_path / "a.flv")
    await asyncio.sleep(2.5)
    got = (await asyncio.to_thread(p.get, f"/api/sessions/{s['session_id']}")).json()
    assert got["paused"] is True and got["state"] == "paused" and got["scale"] == 4
    paused = await asyncio.to_thread(frames_with_codes, tmp_path / "a.flv")
    # paused: no picture moves on (the connection stays open; nothing times out)
    assert len(paused) - len(at_pause) <= 1, (len(at_pause), len(paused))
    await asyncio.to_thread(control, p, s["session_id"], action="speed", scale=1)
    await asyncio.to_thread(control, p, s["session_id"], action="resume")
    await asyncio.sleep(3)
    cap.stop()
    frames = await asyncio.to_thread(frames_with_codes, tmp_path / "a.flv")
    resumed = [c for _, c in frames[len(paused):] if c is not None]
    paused_at = max(c for _, c in paused if c is not None)
    assert resumed and paused_at - 1 <= resumed[0] <= paused_at + 3, (paused_at, resumed[:5])
    frames = paused
    codes = [(t, c) for t, c in frames if c is not None]
    assert len(codes) > 20, frames[:10]
    assert abs(codes[0][1] - start) <= 1, (codes[0], start)
    # seek to 60 s shows start + 60 (and what came before it was from the first minute)
    after_seek = [c for _, c in codes if c >= start + 59]
    assert after_seek and abs(min(after_seek) - (start + 60)) <= 2, codes
    # 4x: about 4 s of content per second of FLV time (the FLV timestamps run at wall speed)
    fast = [(t, c) for t, c in codes if c >= start + 60 + 4]
    assert len(fast) >= 2
    content = fast[-1][1] - fast[0][1]
    flv = fast[-1][0] - fast[0][0]
    assert flv > 1.0 and 3.0 <= content / flv <= 5.2, (content, flv, fast[:3], fast[-3:])
    assert content <= 4.8 * speed_wall + 2


async def test_device_playback_ends_with_media_status(rig, tmp_path):
    p, sim, device, channel = rig
    start = recorded_moment(sim, device, channel, 6)
    s = await asyncio.to_thread(start_playback, p, device, channel, start, start + 6)
    cap = FlvCapture(p, s["flv_url"], tmp_path / "b.flv")
    assert await asyncio.to_thread(cap.ended.wait, 20), "the FLV response must complete at MediaStatus 121"
    await asyncio.to_thread(p.wait_for, lambda: p.get(f"/api/sessions/{s['session_id']}").status_code == 404,
                            10, "the session ends")
    assert sim.stats().get("media_status_sent", 0) >= 1
    codes = [c for _, c in await asyncio.to_thread(frames_with_codes, tmp_path / "b.flv") if c is not None]
    assert codes and abs(codes[0] - start) <= 1 and codes[-1] >= start + 4
    # the viewer's signed tag names them, says playback and carries the window (Beijing time)
    text = await asyncio.to_thread(inspect, p, tmp_path / "b.flv")
    assert "admin" in text and "playback" in text, text
    window_start = datetime.fromtimestamp(start, UTC).astimezone(timezone(timedelta(hours=8))).strftime("%Y-%m-%dT%H:%M:%S")
    assert window_start in text, text
    entries = await asyncio.to_thread(p.wait_for, lambda: p.get("/api/audit/entries",
                                                                 action="playback.stop").json()["items"],
                                      10, "playback.stop on the audit log")
    stop = entries[0]
    assert stop["target"]["id"] == f"{device}/{channel}" and stop["actor"]["name"] == "admin"
    assert stop["detail"]["device_id"] == device and stop["detail"]["channel_id"] == channel
    starts = (await asyncio.to_thread(p.get, "/api/audit/entries", action="playback.start")).json()["items"]
    assert starts and starts[0]["target"]["id"] == f"{device}/{channel}"


def _job_done(p: PlatformProcess, job_id: str):
    job = p.get(f"/api/downloads/{job_id}").json()
    return job if job["state"] in ("done", "failed") else None


async def test_device_download_of_a_window(rig, tmp_path):
    p, sim, device, channel = rig
    start = recorded_moment(sim, device, channel, 16)
    r = await asyncio.to_thread(p.post, f"/api/devices/{device}/channels/{channel}/downloads",
                                {"start": _iso(start), "end": _iso(start + 16), "source": "device"})
    assert r.status_code in (201, 202), r.text
    job = await asyncio.to_thread(p.wait_for, lambda: _job_done(p, r.json()["job_id"]), 90, "the download")
    assert job["state"] == "done", job
    path = tmp_path / "window.mp4"
    await asyncio.to_thread(fetch_file, p, job["job_id"], path)
    duration = await asyncio.to_thread(ffprobe_duration, path)
    assert abs(duration - 16) <= 1.0, duration
    codes = [c for _, c in await asyncio.to_thread(frames_with_codes, path) if c is not None]
    assert codes and abs(codes[0] - start) <= 1 and abs(codes[-1] - (start + 15)) <= 1.5
    text = await asyncio.to_thread(inspect, p, path)
    assert "admin" in text and "download" in text, text
    rows = (await asyncio.to_thread(p.get, "/api/audit/downloads")).json()["items"]
    done = [x for x in rows if x["action"] == "download.complete" and x["channel_id"] == channel]
    assert done and done[0]["sha256"] and done[0]["source"] == "device"
    assert datetime.fromisoformat(done[0]["window_start"]).timestamp() == start
    assert datetime.fromisoformat(done[0]["window_end"]).timestamp() == start + 16


async def test_platform_recording_playback_and_download(rig, tmp_path):
    p, sim, device, channel = rig
    base = f"/api/devices/{device}/channels/{channel}"
    r = await asyncio.to_thread(lambda: httpx.put(p.base + base + "/recording", json={"mode": "continuous"},
                                                  headers={"Authorization": f"Bearer {p.login()}"}, timeout=10))
    assert r.status_code == 200, r.text
    begin = time.time()
    await asyncio.sleep(14)
    state = (await asyncio.to_thread(p.get, base + "/recording")).json()
    assert state["state"] == "recording", state
    now = time.time()
    recs = (await asyncio.to_thread(p.get, base + "/records", start=_iso(begin - 60), end=_iso(now),
                                    source="platform")).json()
    items = recs["items"]
    assert len(items) >= 3 and all(i["source"] == "platform" for i in items), recs
    first = datetime.fromisoformat(items[0]["start"]).timestamp()
    # continuous: each segment starts where the previous ended
    for a, b in zip(items, items[1:], strict=False):
        gap = datetime.fromisoformat(b["start"]) - datetime.fromisoformat(a["end"])
        assert abs(gap.total_seconds()) < 0.5, (a, b)
    # platform playback of what was recorded
    s = await asyncio.to_thread(start_playback, p, device, channel, first, first + 6, "platform")
    cap = FlvCapture(p, s["flv_url"], tmp_path / "p.flv")
    assert await asyncio.to_thread(cap.ended.wait, 20), "platform playback ends after the last segment"
    n = len(await asyncio.to_thread(frames_with_codes, tmp_path / "p.flv"))
    assert n >= 40, n  # 6 s at 10 fps, watermarked and decodable
    # platform download of a window
    r = await asyncio.to_thread(p.post, base + "/downloads",
                                {"start": _iso(first + 1), "end": _iso(first + 7), "source": "platform"})
    assert r.status_code in (201, 202), r.text
    job = await asyncio.to_thread(p.wait_for, lambda: _job_done(p, r.json()["job_id"]), 60, "the download")
    assert job["state"] == "done", job
    path = tmp_path / "platform.mp4"
    await asyncio.to_thread(fetch_file, p, job["job_id"], path)
    duration = await asyncio.to_thread(ffprobe_duration, path)
    assert abs(duration - 6) <= 1.0, duration
    # off closes the open segment at once
    r = await asyncio.to_thread(lambda: httpx.put(p.base + base + "/recording", json={"mode": "off"},
                                                  headers={"Authorization": f"Bearer {p.login()}"}, timeout=10))
    assert r.status_code == 200
    entries = (await asyncio.to_thread(p.get, "/api/audit/entries", action="record.segment")).json()["items"]
    assert len(entries) >= 3 and all(e["detail"].get("sha256") for e in entries)
    # the files: encrypted (no PS pack start, no MP4 box in the clear), their SHA-256 the audited one, and
    # the frames' timestamps continuous across the segment boundaries
    await asyncio.to_thread(p.wait_for, lambda: all(not i.get("open") for i in p.get(
        base + "/records", start=_iso(begin - 60), end=_iso(time.time()), source="platform").json()["items"]),
        10, "the open segment closed")
    files = await asyncio.to_thread(check_recorded_files, p.data_dir, {e["detail"]["sha256"] for e in entries})
    assert len(files) >= 3


def check_recorded_files(data_dir, audited: set[str]) -> list:
    import hashlib

    from media_relay.recording.crypto import load_key
    from media_relay.recording.store import read_units

    root = data_dir / "recordings"
    key = load_key(data_dir / "keys" / "record.key", create=False)
    files = sorted(root.rglob("*.gbr"))
    pts: list[int] = []
    for path in files:
        raw = path.read_bytes()
        assert b"\x00\x00\x01\xba" not in raw and b"ftyp" not in raw, path
        assert hashlib.sha256(raw).hexdigest() in audited, path
        with open(path, "rb") as f:
            pts += [au.pts for au in read_units(f, "aes-256-gcm", key, str(path.relative_to(root)))
                    if au.kind == "video"]
    steps = {b - a for a, b in zip(pts, pts[1:], strict=False)}
    assert steps == {9000}, sorted(steps)[:10]  # 10 fps: every frame once, none lost at the boundaries
    assert len(pts) / 10 >= 10, len(pts)
    return files


async def test_device_refusal_and_bad_input_leave_nothing_allocated(platform, tmp_path):
    p = platform
    sim, device, channel = await start_sim(p, refuse_history=486)
    try:
        base = f"/api/devices/{device}/channels/{channel}"
        start = time.time() - 1800
        r = await asyncio.to_thread(p.post, base + "/playback", {"start": _iso(start), "end": _iso(start + 60),
                                                                 "source": "device"})
        assert r.status_code == 502, r.text
        assert r.json()["error"] == "device_refused" and r.json()["sip_status"] == 486, r.json()
        for body, code in (({"start": _iso(start + 60), "end": _iso(start)}, "bad_window"),
                           ({"start": _iso(start - 25 * 3600), "end": _iso(start)}, "window_too_long"),
                           ({"start": "yesterday", "end": _iso(start)}, "bad_time")):
            r = await asyncio.to_thread(p.post, base + "/playback", {**body, "source": "device"})
            assert r.status_code == 422 and r.json()["error"] == code, r.text
        r = await asyncio.to_thread(p.post, "/api/devices/34020000001320009999/channels/34020000001320009999"
                                    "/playback", {"start": _iso(start), "end": _iso(start + 60)})
        assert r.status_code == 404, r.text
        # a download the device refuses fails with the reason
        r = await asyncio.to_thread(p.post, base + "/downloads", {"start": _iso(start), "end": _iso(start + 10),
                                                                  "source": "device"})
        assert r.status_code in (201, 202), r.text
        job = await asyncio.to_thread(p.wait_for, lambda: _job_done(p, r.json()["job_id"]), 30, "the download")
        assert job["state"] == "failed" and "486" in job["reason"], job
        # nothing left: no stream, no session, no call at the device
        assert (await asyncio.to_thread(p.get, "/api/streams")).json()["items"] == []
        assert sim.stats().get("calls", 0) == 0
    finally:
        await sim.stop()


async def test_recorder_survives_the_device_going_away(platform):
    p = platform
    sim, device, channel = await start_sim(p)
    base = f"/api/devices/{device}/channels/{channel}"
    try:
        r = await asyncio.to_thread(lambda: httpx.put(p.base + base + "/recording", json={"mode": "continuous"},
                                                      headers={"Authorization": f"Bearer {p.login()}"}, timeout=10))
        assert r.status_code == 200, r.text
        await asyncio.to_thread(p.wait_for, lambda: p.get(base + "/recording").json()["state"] == "recording",
                                15, "recording")
    finally:
        await sim.stop()  # unregisters: the device is gone
    await asyncio.to_thread(p.wait_for, lambda: p.get(base + "/recording").json()["state"] in ("waiting", "failed"),
                            20, "the recorder notices")
    before = (await asyncio.to_thread(p.get, base + "/recording")).json()["segments"]
    sim, device, channel = await start_sim(p)  # the device comes back
    try:
        back = time.time()
        state = await asyncio.to_thread(p.wait_for, lambda: (lambda s: s if s["state"] == "recording" else None)(
            p.get(base + "/recording").json()), 75, "recording again")
        await asyncio.sleep(8)
        items = (await asyncio.to_thread(p.get, base + "/records", start=_iso(back - 5), end=_iso(time.time()),
                                         source="platform")).json()["items"]
        assert items and (await asyncio.to_thread(p.get, base + "/recording")).json()["segments"] > before, state
    finally:
        await sim.stop()
