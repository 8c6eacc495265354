"""PTZ, presets, tours, home and device commands through the portal (issue 14), on SQLite and PostgreSQL, with
a fake of the device-control service (tests/portal/test_ptz_fakes.py): both path forms, the caller's PTZ level
from their user record, 423 ``ptz_locked`` with exactly its body and nothing sent, the scope (403 and
``access.denied``), every command and refusal on the audit log, hostile bodies refused."""

from __future__ import annotations

import json
from typing import Any

import pytest

from device_control.types import CommandResult
from gbcore.ids import ChannelRef

from .conftest import Portal, bearer
from .org_data import CA1, CB1, IPC, NVR, build_tree
from .test_ptz_fakes import FakeControl

REF = ChannelRef(NVR, CA1)
DEV = f"/api/devices/{NVR}/channels/{CA1}"
SHORT = f"/api/channels/{CA1}"


async def _entries(portal: Portal, action: str) -> list[dict[str, Any]]:
    rows = [json.loads(e.data) async for e in portal.audit.store.iter_entries(0, 10**9)]
    return [e for e in rows if e["action"] == action]


@pytest.fixture
async def ctl(audited: Portal) -> dict[str, Any]:
    tree = await build_tree(audited.registry)
    control = FakeControl()
    audited.app.state.control = control
    await audited.add_user("low", permissions={"ptz.control", "live.view"}, org_nodes=[tree.va], ptz_level=2,
                           display_name="李四")
    await audited.add_user("high", permissions={"ptz.control"}, org_nodes=[tree.va], ptz_level=5,
                           display_name="张三")
    await audited.add_user("west", permissions={"ptz.control", "device.control"}, org_nodes=[tree.vb], ptz_level=9)
    await audited.add_user("viewer", permissions={"live.view", "device.read"}, org_nodes=[tree.va])
    await audited.add_user("operator", permissions={"device.control"}, org_nodes=[tree.va])
    return {"tree": tree, "control": control,
            **{name: bearer(await audited.login(name)) for name in ("low", "high", "west", "viewer", "operator")}}


async def test_move_and_stop_in_both_path_forms(audited: Portal, ctl: dict[str, Any]) -> None:
    control: FakeControl = ctl["control"]
    r = await audited.client.post(f"{DEV}/ptz", headers=ctl["low"], json={"action": "up_left", "speed": 200})
    assert r.status_code == 202, r.text
    lock = r.json()["lock"]
    assert lock["holder"] == {"username": "low", "display_name": "李四", "level": 2, "kind": "user"}
    assert lock["seconds_left"] == 30 and lock["mine"] is True
    assert (lock["device_id"], lock["channel_id"]) == (NVR, CA1)
    r = await audited.client.post(f"{SHORT}/ptz", headers=ctl["low"], json={"action": "stop"})
    assert r.status_code == 202, r.text
    assert control.sent == [("ptz", REF, "up_left", 200, "low"), ("ptz", REF, "stop", 128, "low")]
    # the lock state as another operator reads it
    r = await audited.client.get(f"{SHORT}/ptz", headers=ctl["high"])
    assert r.status_code == 200 and r.json()["lock"]["mine"] is False
    assert r.json()["lock"]["holder"]["username"] == "low"

    entries = await _entries(audited, "ptz.control")
    assert [(e["detail"]["action"], e["detail"]["speed"], e["detail"]["refused"]) for e in entries] == [
        ("up_left", 200, False), ("stop", 128, False)]
    first = entries[0]
    assert first["actor"]["name"] == "low" and first["target"] == {"type": "channel", "id": f"{NVR}/{CA1}"}
    assert first["detail"]["device_id"] == NVR and first["detail"]["channel_id"] == CA1
    assert first["detail"]["level"] == 2 and first["client_ip"] == "127.0.0.1"


async def test_higher_level_takes_over_and_lower_gets_423(audited: Portal, ctl: dict[str, Any]) -> None:
    control: FakeControl = ctl["control"]
    assert (await audited.client.post(f"{DEV}/ptz", headers=ctl["low"], json={"action": "left"})).status_code == 202
    # level 5 over level 2: at once
    r = await audited.client.post(f"{DEV}/ptz", headers=ctl["high"], json={"action": "right", "speed": 64})
    assert r.status_code == 202, r.text
    assert r.json()["lock"]["holder"]["username"] == "high"
    control.now += 12
    sent_before = list(control.sent)
    r = await audited.client.post(f"{DEV}/ptz", headers=ctl["low"], json={"action": "down", "speed": 10})
    assert r.status_code == 423, r.text
    body = r.json()
    assert set(body) == {"error", "message", "holder", "seconds_left"}
    assert body["error"] == "ptz_locked"
    assert body["holder"] == {"username": "high", "display_name": "张三", "level": 5}
    assert body["seconds_left"] == 18
    assert body["message"].startswith("云台被 张三（级别 5）控制中，剩余 18 秒 / ")
    assert control.sent == sent_before  # nothing reached the device
    # a preset call is refused the same way
    r = await audited.client.post(f"{SHORT}/presets", headers=ctl["low"], json={"action": "call", "preset": 1})
    assert r.status_code == 423 and r.json()["holder"]["username"] == "high"
    assert control.sent == sent_before

    refused = [e for e in await _entries(audited, "ptz.control") if e["detail"]["refused"]]
    assert len(refused) == 1 and refused[0]["actor"]["name"] == "low"
    assert refused[0]["detail"]["holder"] == "high" and refused[0]["detail"]["seconds_left"] == 18
    assert refused[0]["detail"]["action"] == "down" and refused[0]["detail"]["speed"] == 10
    assert [e["detail"]["refused"] for e in await _entries(audited, "ptz.preset")] == [True]

    # once the lock has ended the low-level user gets control
    control.now += 19
    r = await audited.client.post(f"{DEV}/ptz", headers=ctl["low"], json={"action": "down", "speed": 10})
    assert r.status_code == 202 and r.json()["lock"]["holder"]["username"] == "low"
    assert control.sent[-1] == ("ptz", REF, "down", 10, "low")


async def test_scope_and_permission(audited: Portal, ctl: dict[str, Any]) -> None:
    control: FakeControl = ctl["control"]
    for path in (f"{DEV}/ptz", f"{SHORT}/ptz"):
        r = await audited.client.post(path, headers=ctl["west"], json={"action": "up"})
        assert r.status_code == 403 and r.json()["error"] == "channel_forbidden", r.text
    r = await audited.client.get(f"{SHORT}/presets", headers=ctl["west"])
    assert r.status_code == 403
    r = await audited.client.post(f"{DEV}/ptz", headers=ctl["viewer"], json={"action": "up"})
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    assert control.sent == []
    denied = await _entries(audited, "access.denied")
    assert any(e["actor"]["name"] == "west" and e["target"] == {"type": "channel", "id": f"{NVR}/{CA1}"}
               for e in denied)
    assert any(e["actor"]["name"] == "viewer" and e["detail"]["error"] == "forbidden" for e in denied)
    # the west channel is the west user's
    r = await audited.client.post(f"/api/devices/{NVR}/channels/{CB1}/ptz", headers=ctl["west"], json={"action": "up"})
    assert r.status_code == 202 and control.sent == [("ptz", ChannelRef(NVR, CB1), "up", 128, "west")]


@pytest.mark.parametrize("body", [
    {"action": "spin"}, {"action": "up", "speed": 0}, {"action": "up", "speed": 256}, {"action": "up", "x": 1},
    {"speed": 5}, {"action": "up", "speed": "fast"}, {"action": ["up"]},
])
async def test_hostile_ptz_bodies(audited: Portal, ctl: dict[str, Any], body: dict[str, Any]) -> None:
    r = await audited.client.post(f"{DEV}/ptz", headers=ctl["low"], json=body)
    assert r.status_code == 422 and r.json()["error"] == "validation_error", r.text
    assert ctl["control"].sent == []


async def test_presets_set_call_delete(audited: Portal, ctl: dict[str, Any]) -> None:
    control: FakeControl = ctl["control"]
    r = await audited.client.post(f"{DEV}/presets", headers=ctl["low"],
                                  json={"action": "set", "preset": 3, "name": "  东门入口 "})
    assert r.status_code == 200, r.text
    assert r.json()["preset"] == 3 and r.json()["lock"]["holder"]["username"] == "low"
    r = await audited.client.get(f"{SHORT}/presets", headers=ctl["low"])
    assert r.json() == {"items": [{"preset": 3, "name": "东门入口"}]}
    assert (await audited.client.post(f"{DEV}/presets", headers=ctl["low"],
                                      json={"action": "call", "preset": 3})).status_code == 200
    r = await audited.client.post(f"{DEV}/presets", headers=ctl["low"], json={"action": "call", "preset": 9})
    assert r.status_code == 404 and r.json()["error"] == "preset_not_found"
    assert (await audited.client.post(f"{DEV}/presets", headers=ctl["low"],
                                      json={"action": "delete", "preset": 3})).status_code == 200
    assert (await audited.client.get(f"{DEV}/presets", headers=ctl["low"])).json() == {"items": []}
    for bad in ({"action": "set", "preset": 0}, {"action": "set", "preset": 256}, {"action": "move", "preset": 1},
                {"action": "set", "preset": 1, "name": "x" * 33}):
        assert (await audited.client.post(f"{DEV}/presets", headers=ctl["low"], json=bad)).status_code == 422
    r = await audited.client.post(f"{DEV}/presets", headers=ctl["low"], json={"action": "set", "preset": 1, "name": " "})
    assert r.status_code == 422 and r.json()["error"] == "bad_name"
    assert [s[2:4] for s in control.sent] == [("set", 3), ("call", 3), ("call", 9), ("delete", 3)]
    entries = await _entries(audited, "ptz.preset")
    assert [(e["detail"]["action"], e["detail"]["preset"], e["detail"]["refused"], e["detail"].get("error"))
            for e in entries] == [("set", 3, False, None), ("call", 3, False, None),
                                  ("call", 9, False, "preset_not_found"), ("delete", 3, False, None)]
    assert entries[0]["detail"]["name"] == "东门入口"


async def test_tours(audited: Portal, ctl: dict[str, Any]) -> None:
    control: FakeControl = ctl["control"]
    tour = {"name": "东门巡航", "points": [{"preset": 1, "dwell_s": 5}, {"preset": 2, "dwell_s": 2.5}], "loop": True}
    r = await audited.client.post(f"{DEV}/tours", headers=ctl["low"], json=tour)
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["id"] >= 1 and made["points"] == tour["points"] and made["mode"] == "platform"
    assert made["owner"] == "low" and made["owner_level"] == 2 and made["running"] is False
    tid = made["id"]
    r = await audited.client.get(f"{SHORT}/tours", headers=ctl["low"])
    assert [t["id"] for t in r.json()["items"]] == [tid]
    r = await audited.client.post(f"{SHORT}/tours/{tid}/start", headers=ctl["low"])
    assert r.status_code == 200 and r.json()["running"] is True
    # a higher manual operator may stop it; starting it again over them is refused for the low user
    r = await audited.client.post(f"{DEV}/ptz", headers=ctl["high"], json={"action": "left"})
    assert r.status_code == 202
    r = await audited.client.post(f"{DEV}/tours/{tid}/start", headers=ctl["low"])
    assert r.status_code == 423
    r = await audited.client.post(f"{DEV}/tours/{tid}/stop", headers=ctl["high"])
    assert r.status_code == 200 and r.json()["running"] is False
    assert (await audited.client.post(f"{DEV}/tours/999/start", headers=ctl["high"])).status_code == 404
    r = await audited.client.delete(f"{DEV}/tours/{tid}", headers=ctl["high"])
    assert r.status_code == 204 and control.tours == {}
    for bad in ({**tour, "points": [{"preset": 1, "dwell_s": 1.9}]}, {**tour, "points": []}, {**tour, "name": ""},
                {**tour, "mode": "random"}, {**tour, "points": [{"preset": 300, "dwell_s": 5}]}):
        assert (await audited.client.post(f"{DEV}/tours", headers=ctl["low"], json=bad)).status_code == 422
    entries = await _entries(audited, "ptz.tour")
    assert [(e["actor"]["name"], e["detail"]["action"], e["detail"]["refused"]) for e in entries] == [
        ("low", "create", False), ("low", "start", False), ("low", "start", True), ("high", "stop", False),
        ("high", "start", False), ("high", "delete", False)]
    assert entries[0]["detail"]["points"] == tour["points"] and entries[-2]["detail"]["error"] == "tour_not_found"


async def test_home(audited: Portal, ctl: dict[str, Any]) -> None:
    r = await audited.client.get(f"{DEV}/ptz/home", headers=ctl["low"])
    assert r.status_code == 200 and r.json()["preset"] is None and r.json()["enabled"] is False
    r = await audited.client.put(f"{SHORT}/ptz/home", headers=ctl["low"], json={"preset": 4, "enabled": True})
    assert r.status_code == 200, r.text
    assert r.json() == {"device_id": NVR, "channel_id": CA1, "preset": 4, "enabled": True, "restore_below_level": 0}
    assert (await audited.client.get(f"{SHORT}/ptz/home", headers=ctl["high"])).json()["preset"] == 4
    assert (await audited.client.put(f"{DEV}/ptz/home", headers=ctl["low"], json={"preset": 0})).status_code == 422
    assert (await audited.client.put(f"{DEV}/ptz/home", headers=ctl["west"], json={"preset": 1})).status_code == 403
    home = (await _entries(audited, "ptz.tour"))[-1]
    assert home["detail"]["action"] == "home" and home["detail"]["preset"] == 4 and home["detail"]["enabled"] is True


async def test_device_commands(audited: Portal, ctl: dict[str, Any]) -> None:
    control: FakeControl = ctl["control"]
    r = await audited.client.post(f"/api/devices/{NVR}/control", headers=ctl["operator"], json={"command": "teleboot"})
    assert r.status_code == 200, r.text
    assert r.json()["result"] == "OK" and r.json()["answered"] is True and r.json()["message"].startswith("设备已执行")
    control.results["iframe"] = CommandResult(None, False)
    r = await audited.client.post(f"/api/devices/{NVR}/control", headers=ctl["operator"],
                                  json={"command": "iframe", "channel_id": CA1})
    assert r.status_code == 200 and r.json()["answered"] is False
    assert r.json()["message"].startswith("设备没有返回结果")
    assert control.sent[-1] == ("device", NVR, "iframe", {"channel_id": CA1}, "operator")
    # a channel of the device outside the caller's scope, a device outside it, no permission
    r = await audited.client.post(f"/api/devices/{NVR}/control", headers=ctl["operator"],
                                  json={"command": "record_start", "channel_id": CB1})
    assert r.status_code == 403 and r.json()["error"] == "channel_forbidden"
    r = await audited.client.post(f"/api/devices/{IPC}/control", headers=ctl["operator"], json={"command": "teleboot"})
    assert r.status_code == 403 and r.json()["error"] == "device_forbidden"
    r = await audited.client.post(f"/api/devices/{NVR}/control", headers=ctl["low"], json={"command": "teleboot"})
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    for bad in ({"command": "selfdestruct"}, {"command": "guard", "params": {"a b": 1}},
                {"command": "guard", "params": {"x": "y" * 129}}, {"command": "guard", "channel_id": "../x"}):
        r = await audited.client.post(f"/api/devices/{NVR}/control", headers=ctl["operator"], json=bad)
        assert r.status_code == 422, (bad, r.text)
    control.offline.add(NVR)
    r = await audited.client.post(f"/api/devices/{NVR}/control", headers=ctl["operator"], json={"command": "guard"})
    assert r.status_code == 409 and r.json()["error"] == "device_offline"
    entries = await _entries(audited, "device.control")
    assert [(e["detail"]["command"], e["detail"].get("answered"), e["detail"].get("error")) for e in entries] == [
        ("teleboot", True, None), ("iframe", False, None), ("guard", None, "device_offline")]
    assert entries[0]["target"] == {"type": "device", "id": NVR}


async def test_without_the_control_service(audited: Portal, ctl: dict[str, Any]) -> None:
    audited.app.state.control = None
    r = await audited.client.post(f"{DEV}/ptz", headers=ctl["low"], json={"action": "up"})
    assert r.status_code == 503 and r.json()["error"] == "control_unavailable"
