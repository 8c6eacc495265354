"""``POST .../playback``, ``GET /api/sessions/{id}``, ``POST /api/sessions/{id}/control``: a playback session
like live (single-use output URLs, the live FLV/WHEP routes), ``playback.start`` / ``playback.stop`` on the
audit log with the window in Beijing time, clear errors, and only the owner controls a session (SQLite and
PostgreSQL).  The media service is a fake following docs/issue13-seams.md."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from media_relay.stream import MediaError
from ops_portal.live import live_audit

from .conftest import Portal, bearer
from .org_data import CA1, CB1, NVR, build_tree
from .test_playback_fakes import FakeMedia, FakeRecordings, fake_sip, settle

__all__ = ["fake_sip"]

WINDOW = {"start": "2025-03-01T08:00:00", "end": "2025-03-01T09:00:00"}  # Beijing time


@pytest.fixture
async def pb(audited: Portal) -> dict[str, Any]:
    tree = await build_tree(audited.registry)
    audited.sip.online.add(NVR)
    media = FakeMedia()
    media.on_session_closed = live_audit.stop_recorder(audited.audit)
    audited.app.state.media = media
    audited.app.state.recordings = FakeRecordings()
    await audited.add_user("owner", permissions={"playback.view"}, org_nodes=[tree.va])
    await audited.add_user("curious", permissions={"playback.view", "live.view"}, org_nodes=[tree.va, tree.vb])
    await audited.add_user("west", permissions={"playback.view"}, org_nodes=[tree.vb])
    return {"tree": tree, "media": media, "owner": bearer(await audited.login("owner")),
            "curious": bearer(await audited.login("curious")), "west": bearer(await audited.login("west"))}


async def _entries(portal: Portal, action: str) -> list[dict[str, Any]]:
    rows = [json.loads(e.data) async for e in portal.audit.store.iter_entries(0, 10**9)]
    return [e for e in rows if e["action"] == action]


async def test_playback_session_audit_and_outputs(audited: Portal, pb: dict[str, Any]) -> None:
    media: FakeMedia = pb["media"]
    r = await audited.client.post(f"/api/devices/{NVR}/channels/{CA1}/playback", headers=pb["owner"],
                                  json={**WINDOW, "source": "device"})
    assert r.status_code == 201, r.text
    s = r.json()
    sid = s["session_id"]
    assert s["kind"] == "playback" and s["source"] == "device" and s["watermark_id"] == "WM7Q"
    assert s["start"] == "2025-03-01T08:00:00+08:00" and s["end"] == "2025-03-01T09:00:00+08:00"
    assert s["flv_url"].startswith(f"/flv/{sid}.flv?t=") and s["whep_url"].startswith(f"/whep/{sid}?t=")
    assert s["expires_at"].endswith("+08:00")
    opened = media.opened[-1]
    assert opened["kind"] == "playback" and opened["source"] == "device"
    assert opened["window"] == (datetime(2025, 3, 1, 0, 0, tzinfo=UTC), datetime(2025, 3, 1, 1, 0, tzinfo=UTC))
    assert opened["viewer"].username == "owner" and opened["viewer"].client_ip == "127.0.0.1"

    start = (await _entries(audited, "playback.start"))[-1]
    assert start["actor"]["name"] == "owner" and start["target"] == {"type": "channel", "id": f"{NVR}/{CA1}"}
    assert start["client_ip"] == "127.0.0.1"
    assert start["detail"]["start"] == "2025-03-01T08:00:00+08:00" and start["detail"]["end"] == "2025-03-01T09:00:00+08:00"
    assert start["detail"]["device_id"] == NVR and start["detail"]["channel_id"] == CA1
    assert start["detail"]["source"] == "device"
    assert json.dumps(start).count("WM7Q") >= 1 and s["flv_url"].split("?t=")[1] not in json.dumps(start)

    # the FLV output is the live route: the URL once (the recording ends at once here: EOF), then nothing
    r = await audited.client.get(s["flv_url"])
    assert r.status_code == 200 and r.headers["content-type"] == "video/x-flv"
    assert (await audited.client.get(s["flv_url"])).status_code == 404
    await settle(audited.audit)
    stop = (await _entries(audited, "playback.stop"))[-1]
    assert stop["actor"]["name"] == "owner" and stop["client_ip"] == "127.0.0.1"
    assert stop["detail"]["start"] == "2025-03-01T08:00:00+08:00" and stop["detail"]["end"] == "2025-03-01T09:00:00+08:00"
    assert stop["detail"]["device_id"] == NVR and stop["detail"]["channel_id"] == CA1
    assert "WM7Q" in json.dumps(stop)
    assert not await _entries(audited, "live.stop")  # a playback session is not a live one


async def test_platform_playback_and_shorthand(audited: Portal, pb: dict[str, Any]) -> None:
    audited.sip.online.discard(NVR)  # platform playback does not need the device
    r = await audited.client.post(f"/api/channels/{CA1}/playback", headers=pb["owner"],
                                  json={"start": "2025-03-01T00:00:00Z", "end": "2025-03-01T00:30:00Z",
                                        "source": "platform"})
    assert r.status_code == 201, r.text
    assert r.json()["source"] == "platform" and r.json()["start"] == "2025-03-01T08:00:00+08:00"
    assert pb["media"].opened[-1]["source"] == "platform"
    r = await audited.client.post(f"/api/channels/{CA1}/playback", headers=pb["owner"], json=WINDOW)
    assert r.status_code == 409 and r.json()["error"] == "device_offline"  # device source (the default)


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"start": "2025-03-01T09:00:00", "end": "2025-03-01T08:00:00"}, 422, "bad_window"),
    ({"start": "2025-03-01T00:00:00", "end": "2025-03-02T00:00:01"}, 422, "window_too_long"),
    ({"start": "2999-03-01T00:00:00", "end": "2999-03-01T01:00:00"}, 422, "bad_window"),
    ({"start": "03/01/2025 08:00", "end": "2025-03-01T09:00:00"}, 422, "bad_time"),
])
async def test_bad_windows(audited: Portal, pb: dict[str, Any], body: dict[str, str], status: int, code: str) -> None:
    r = await audited.client.post(f"/api/channels/{CA1}/playback", headers=pb["owner"], json=body)
    assert r.status_code == status and r.json()["error"] == code, r.text
    assert not pb["media"].opened and not await _entries(audited, "playback.start")


async def test_window_cap_is_the_setting(audited: Portal, pb: dict[str, Any]) -> None:
    audited.settings.playback_max_window_hours = 0.5
    r = await audited.client.post(f"/api/channels/{CA1}/playback", headers=pb["owner"], json=WINDOW)
    assert r.status_code == 422 and r.json()["error"] == "window_too_long" and "0.5" in r.json()["message"]


async def test_device_refusal_and_unknown_channel(audited: Portal, pb: dict[str, Any]) -> None:
    pb["media"].fail = MediaError("device_refused", "488 Not Acceptable Here", 488)
    r = await audited.client.post(f"/api/channels/{CA1}/playback", headers=pb["owner"], json=WINDOW)
    assert r.status_code == 502 and r.json()["error"] == "device_refused" and r.json()["sip_status"] == 488
    assert "设备拒绝" in r.json()["message"] and "488" in r.json()["message"]
    pb["media"].fail = MediaError("no_media", "无媒体 / no media arrived")
    r = await audited.client.post(f"/api/channels/{CA1}/playback", headers=pb["owner"], json=WINDOW)
    assert r.status_code == 504 and r.json()["error"] == "no_media"
    assert not pb["media"].sessions and not await _entries(audited, "playback.start")
    await audited.add_user("boss", permissions={"playback.view"})
    boss = bearer(await audited.login("boss"))
    r = await audited.client.post("/api/channels/34020000001310009999/playback", headers=boss, json=WINDOW)
    assert r.status_code == 404 and r.json()["error"] == "channel_not_found"


async def test_scope_refusal_is_audited(audited: Portal, pb: dict[str, Any]) -> None:
    for url in (f"/api/channels/{CA1}/playback", f"/api/devices/{NVR}/channels/{CA1}/playback"):
        r = await audited.client.post(url, headers=pb["west"], json=WINDOW)
        assert r.status_code == 403 and r.json()["error"] == "channel_forbidden"
    assert not pb["media"].opened
    denied = await _entries(audited, "access.denied")
    assert len(denied) == 2 and all(e["actor"]["name"] == "west" for e in denied)


async def test_control_and_state_for_the_owner_only(audited: Portal, pb: dict[str, Any]) -> None:
    media: FakeMedia = pb["media"]
    s = (await audited.client.post(f"/api/channels/{CA1}/playback", headers=pb["owner"], json=WINDOW)).json()
    sid = s["session_id"]
    r = await audited.client.get(f"/api/sessions/{sid}", headers=pb["owner"])
    assert r.status_code == 200, r.text
    state = r.json()
    assert state["kind"] == "playback" and state["paused"] is False and state["scale"] == 1.0
    assert state["start"] == "2025-03-01T08:00:00+08:00" and state["source"] == "device"
    for action, extra, check in (("pause", {}, lambda b: b["paused"] is True and b["state"] == "paused"),
                                 ("resume", {}, lambda b: b["paused"] is False),
                                 ("seek", {"position": 30}, lambda b: b["position"] == 30),
                                 ("speed", {"scale": 4}, lambda b: b["scale"] == 4),
                                 ("speed", {"scale": 0.25}, lambda b: b["scale"] == 0.25)):
        r = await audited.client.post(f"/api/sessions/{sid}/control", headers=pb["owner"], json={"action": action, **extra})
        assert r.status_code == 200 and check(r.json()), (action, r.text)
    assert [c[1] for c in media.controls] == ["pause", "resume", "seek", "speed", "speed"]
    controls = await _entries(audited, "playback.control")
    assert [(e["detail"]["command"], e["detail"]["value"]) for e in controls] == [
        ("pause", None), ("resume", None), ("seek", 30), ("speed", 4), ("speed", 0.25)]
    assert all(e["actor"]["name"] == "owner" and e["target"]["id"] == f"{NVR}/{CA1}" for e in controls)
    # bad input, said clearly, nothing sent to the media service
    for body, code in (({"action": "seek"}, "bad_position"), ({"action": "seek", "position": 3600}, "bad_position"),
                       ({"action": "speed", "scale": 3}, "bad_scale"), ({"action": "speed"}, "bad_scale")):
        r = await audited.client.post(f"/api/sessions/{sid}/control", headers=pb["owner"], json=body)
        assert r.status_code == 422 and r.json()["error"] == code, r.text
    r = await audited.client.post(f"/api/sessions/{sid}/control", headers=pb["owner"], json={"action": "rewind"})
    assert r.status_code == 422
    assert len(media.controls) == 5
    # a curious user who can see the same channel: the session does not exist for them
    for method, url, body in (("GET", f"/api/sessions/{sid}", None),
                              ("POST", f"/api/sessions/{sid}/control", {"action": "pause"}),
                              ("DELETE", f"/api/sessions/{sid}", None)):
        r = await audited.client.request(method, url, headers=pb["curious"], json=body)
        assert r.status_code == 404 and r.json()["error"] == "session_not_found", (method, r.text)
    assert len(media.controls) == 5 and media.sessions[sid].playback.paused is False
    r = await audited.client.get("/api/sessions/nonexistent", headers=pb["owner"])
    assert r.status_code == 404


async def test_control_of_a_live_session_and_refused_control(audited: Portal, pb: dict[str, Any]) -> None:
    media: FakeMedia = pb["media"]
    r = await audited.client.post(f"/api/channels/{CB1}/live", headers=pb["curious"], json={})
    assert r.status_code == 201, r.text
    sid = r.json()["session_id"]
    r = await audited.client.get(f"/api/sessions/{sid}", headers=pb["curious"])
    assert r.status_code == 200 and r.json()["kind"] == "live"
    r = await audited.client.post(f"/api/sessions/{sid}/control", headers=pb["curious"], json={"action": "pause"})
    assert r.status_code == 409 and r.json()["error"] == "not_playback"
    s = (await audited.client.post(f"/api/channels/{CB1}/playback", headers=pb["curious"], json=WINDOW)).json()
    r = await audited.client.post(f"/api/sessions/{s['session_id']}/control", headers=pb["curious"],
                                  json={"action": "speed", "scale": 8})
    assert r.status_code == 502 and r.json()["error"] == "control_refused"
    assert media.sessions[s["session_id"]].playback.scale == 1.0
