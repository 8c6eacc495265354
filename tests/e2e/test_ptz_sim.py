"""Device control end to end: `gbops run` against simulated domes (each command arrives as the exact PTZCmd,
the move watchdog, presets, a platform tour, priority between two users with the 423 details, restore to the
home preset) and alarms (a simulator alarm through the API and the live feed within a second)."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import pytest

from gbsim import SimConfig, Simulator
from sip_server.gb import ptz
from tests.e2e.platform import STRONG_SIP_PASSWORD, PlatformProcess, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FIRST = "34020000001180000001"
PASSWORD = "Dome-ctl#2026pw"


class User:
    def __init__(self, platform: PlatformProcess, token: str) -> None:
        self.platform, self.token = platform, token

    def post(self, path: str, json=None) -> httpx.Response:
        return httpx.post(self.platform.base + path, json=json, headers={"Authorization": f"Bearer {self.token}"},
                          timeout=10)

    def get(self, path: str, **params) -> httpx.Response:
        return httpx.get(self.platform.base + path, params=params,
                         headers={"Authorization": f"Bearer {self.token}"}, timeout=10)


def make_user(p: PlatformProcess, name: str, level: int, device: str, channel: str) -> User:
    r = p.post("/api/roles", {"name": f"ptz:{name}", "permissions": ["ptz.control", "live.view", "device.read"],
                              "channels": [{"device_id": device, "channel_id": channel}]})
    assert r.status_code == 201, r.text
    r = p.post("/api/users", {"username": name, "password": PASSWORD, "role_ids": [r.json()["id"]],
                              "ptz_level": level, "display_name": name.upper()})
    assert r.status_code == 201, r.text
    r = httpx.post(p.base + "/api/auth/login", json={"username": name, "password": PASSWORD})
    r.raise_for_status()
    token = r.json()["access_token"]
    if r.json().get("must_change_password"):
        httpx.post(p.base + "/api/auth/password", headers={"Authorization": f"Bearer {token}"},
                   json={"old_password": PASSWORD, "new_password": PASSWORD + "x"}).raise_for_status()
        r = httpx.post(p.base + "/api/auth/login", json={"username": name, "password": PASSWORD + "x"})
        r.raise_for_status()
        token = r.json()["access_token"]
    return User(p, token)


@pytest.fixture
async def rig(tmp_path):
    low = free_port()
    p = PlatformProcess(tmp_path / "data", GBOPS_PTZ_MAX_MOVE="1.5", GBOPS_PTZ_LOCK_SECONDS="2",
                        GBOPS_PTZ_RESTORE_BELOW_LEVEL="5", GBOPS_RTP_PORTS=f"{low}-{low + 10}", TZ="UTC",
                        GBOPS_ALARM_SUBSCRIBE="true").start()
    sim = Simulator(SimConfig(server=("127.0.0.1", p.sip_port), devices=1, channels=2,
                              password=STRONG_SIP_PASSWORD, first_id=FIRST, size="320x180", fps=10,
                              alarm_latch=False))
    await sim.start()
    try:
        assert await sim.wait_until(lambda s: s.registered == 1, 20), sim.progress_line()
        device = sim.device_ids[0]
        channel = sim.cfg.channel_ids(0)[0]
        await asyncio.to_thread(p.wait_for, lambda: any(
            c["channel_id"] == channel for c in p.get(f"/api/devices/{device}/channels").json()["items"]),
            20, "the catalog")
        yield p, sim, device, channel
    finally:
        await sim.stop()
        p.stop()


async def wait_log(sim: Simulator, device: str, channel: str, n: int, timeout: float = 5.0) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = sim.ptz_log(device, channel)
        if len(log) >= n:
            return log
        await asyncio.sleep(0.05)
    return sim.ptz_log(device, channel)


async def test_every_action_arrives_as_its_ptzcmd_and_a_lost_stop_is_sent(rig):
    p, sim, device, channel = rig
    base = f"/api/devices/{device}/channels/{channel}"
    sent = 0
    for action in ("up", "down", "left", "right", "up_left", "up_right", "down_left", "down_right", "zoom_in",
                   "zoom_out", "focus_near", "focus_far", "iris_open", "iris_close", "stop"):
        r = await asyncio.to_thread(p.post, base + "/ptz", {"action": action, "speed": 0x80})
        assert r.status_code == 202, r.text
        assert r.json()["lock"]["holder"]["username"] == "admin"
        sent += 1
        log = await wait_log(sim, device, channel, sent)
        assert log[-1].text.upper() == (ptz.STOP if action == "stop" else ptz.ptz_command(action, 0x80)), action
    # the worked strings of GB/T 28181 A.3: up at tilt speed 0x80, stop all
    texts = [e.text.upper() for e in sim.ptz_log(device, channel)]
    assert texts[0] == "A50F01080080003D" and texts[-1] == "A50F0100000000B5"
    # a move nobody stops: the platform stops it after GBOPS_PTZ_MAX_MOVE (1.5 s)
    t0 = time.monotonic()
    r = await asyncio.to_thread(p.post, base + "/ptz", {"action": "left", "speed": 200})
    assert r.status_code == 202
    log = await wait_log(sim, device, channel, sent + 2, timeout=6)
    assert log[-1].text.upper() == ptz.STOP, [e.text for e in log[-3:]]
    assert 1.2 <= log[-1].wall - log[-2].wall <= 3.5, log[-1].wall - log[-2].wall
    assert time.monotonic() - t0 < 6
    entries = (await asyncio.to_thread(p.get, "/api/audit/entries", action="ptz.control")).json()["items"]
    assert any(e["actor"]["type"] == "system" and e["detail"].get("reason") == "max_move" for e in entries)
    assert sum(e["actor"]["name"] == "admin" for e in entries) >= 15


async def test_presets_and_a_platform_tour(rig):
    p, sim, device, channel = rig
    base = f"/api/devices/{device}/channels/{channel}"
    for n in (3, 7):
        r = await asyncio.to_thread(p.post, base + "/presets", {"action": "set", "preset": n, "name": f"门口{n}"})
        assert r.status_code in (200, 202), r.text
    presets = (await asyncio.to_thread(p.get, base + "/presets")).json()["items"]
    assert {(x["preset"], x["name"]) for x in presets} >= {(3, "门口3"), (7, "门口7")}
    r = await asyncio.to_thread(p.post, base + "/presets", {"action": "call", "preset": 3})
    assert r.status_code in (200, 202), r.text
    await asyncio.sleep(0.3)
    assert sim.ptz_view(device, channel).preset == 3
    before = len(sim.ptz_log(device, channel))
    r = await asyncio.to_thread(p.post, base + "/tours", {"name": "巡航一", "loop": False,
                                                         "points": [{"preset": 7, "dwell_s": 2},
                                                                    {"preset": 3, "dwell_s": 2}]})
    assert r.status_code == 201, r.text
    tour = r.json()
    r = await asyncio.to_thread(p.post, base + f"/tours/{tour['id']}/start")
    assert r.status_code in (200, 202), r.text
    log = await wait_log(sim, device, channel, before + 2, timeout=6)
    calls = [e for e in log[before:] if e.text.upper()[6:8] == "82"]
    assert [int(e.text[10:12], 16) for e in calls][:2] == [7, 3], [e.text for e in log[before:]]
    assert 1.6 <= calls[1].wall - calls[0].wall <= 3.5
    r = await asyncio.to_thread(p.post, base + "/presets", {"action": "delete", "preset": 7})
    assert r.status_code in (200, 202, 423), r.text


async def test_priority_lock_and_restore(rig):
    p, sim, device, channel = rig
    base = f"/api/devices/{device}/channels/{channel}"
    r = await asyncio.to_thread(p.post, base + "/presets", {"action": "set", "preset": 9, "name": "home"})
    assert r.status_code in (200, 202), r.text
    r = await asyncio.to_thread(lambda: httpx.put(p.base + base + "/ptz/home", json={"preset": 9, "enabled": True},
                                                  headers={"Authorization": f"Bearer {p.login()}"}, timeout=10))
    assert r.status_code == 200, r.text
    await asyncio.sleep(2.5)  # the admin's lock from setting the preset ends
    low = await asyncio.to_thread(make_user, p, "guard-low", 2, device, channel)
    mid = await asyncio.to_thread(make_user, p, "guard-mid", 2, device, channel)
    high = await asyncio.to_thread(make_user, p, "chief-high", 7, device, channel)
    r = await asyncio.to_thread(low.post, base + "/ptz", {"action": "right", "speed": 60})
    assert r.status_code == 202, r.text
    # the same level: refused with who holds it and for how long, nothing sent
    n = len(sim.ptz_log(device, channel))
    r = await asyncio.to_thread(mid.post, base + "/ptz", {"action": "left", "speed": 60})
    assert r.status_code == 423, r.text
    body = r.json()
    assert body["error"] == "ptz_locked" and body["holder"]["username"] == "guard-low"
    assert body["holder"]["level"] == 2 and 0 < body["seconds_left"] <= 2
    assert body["message"].startswith("云台被")
    await asyncio.sleep(0.3)
    assert len(sim.ptz_log(device, channel)) == n
    # a higher level takes it at once
    r = await asyncio.to_thread(high.post, base + "/ptz", {"action": "stop", "speed": 1})
    assert r.status_code == 202 and r.json()["lock"]["holder"]["username"] == "chief-high", r.text
    # the high-level lock ends: no restore
    n = len(sim.ptz_log(device, channel))
    await asyncio.sleep(3.0)
    assert not [e for e in sim.ptz_log(device, channel)[n:] if e.text.upper() == ptz.preset_command("call", 9)]
    # the low-level user gets it back once the lock ended; when theirs ends, the home preset is called
    r = await asyncio.to_thread(low.post, base + "/ptz", {"action": "up", "speed": 60})
    assert r.status_code == 202, r.text
    r = await asyncio.to_thread(low.post, base + "/ptz", {"action": "stop", "speed": 1})
    n = len(sim.ptz_log(device, channel))
    log = await wait_log(sim, device, channel, n + 1, timeout=5)
    assert log[-1].text.upper() == ptz.preset_command("call", 9), [e.text for e in log[n:]]
    refused = (await asyncio.to_thread(p.get, "/api/audit/entries", action="ptz.control")).json()["items"]
    assert any(e["actor"]["name"] == "guard-mid" and e["detail"].get("refused") for e in refused)


async def test_alarm_reaches_the_api_and_the_live_feed_within_a_second(rig):
    p, sim, device, channel = rig
    got: list[dict] = []
    ready = threading.Event()

    def listen() -> None:
        with httpx.stream("GET", p.base + "/api/alarms/stream", headers={"Authorization": f"Bearer {p.login()}"},
                          timeout=15) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            ready.set()
            for line in r.iter_lines():
                if line.startswith("data:"):
                    got.append({**json.loads(line[5:]), "_at": time.monotonic()})
                    return

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    assert await asyncio.to_thread(ready.wait, 10)
    await asyncio.sleep(0.3)
    sent = time.monotonic()
    assert sim.raise_alarm(device, channel, priority=1, method=5, alarm_type=2, description="越界报警")
    await asyncio.to_thread(t.join, 10)
    assert got, "no alarm on the live feed"
    assert got[0]["_at"] - sent < 1.0 and got[0]["channel_id"] == channel and got[0]["priority"] == 1
    items = (await asyncio.to_thread(p.get, "/api/alarms", device_id=device)).json()["items"]
    assert items and items[0]["description"] == "越界报警" and items[0]["method"] == 5
    assert items[0]["channel_id"] == channel and items[0]["time"].endswith("+08:00")
    # the platform subscribed to the device's alarms (GBOPS_ALARM_SUBSCRIBE): the device sent this alarm as a
    # MESSAGE and as a NOTIFY of the subscription, and it is stored once
    stats = sim.stats()
    assert stats["subscriptions"] >= 1 and stats["alarm_notifies"] >= 1, stats
    assert len(items) == 1, items
