"""The PTZ routes over the real :class:`device_control.service.ControlService` (its tables on SQLite and
PostgreSQL, a fake clock) with a fake DeviceCommands port: the routes read the service's own answers
(LockState, Preset, Tour, Home, CommandResult), which the fake service of test_ptz.py only copies."""

from __future__ import annotations

from typing import Any

import pytest

from device_control.service import ControlService
from device_control.types import Preset
from gbcore.ids import ChannelRef
from tests.device_control.conftest import FakeClock, FakeCommands

from .conftest import Portal, bearer
from .org_data import CA1, NVR, build_tree

REF = ChannelRef(NVR, CA1)
DEV = f"/api/devices/{NVR}/channels/{CA1}"
SHORT = f"/api/channels/{CA1}"


@pytest.fixture
async def real(audited: Portal) -> dict[str, Any]:
    tree = await build_tree(audited.registry)
    clock = FakeClock()
    commands = FakeCommands(clock)
    audited.app.state.control = ControlService(commands, audited.sessionmaker, lock_seconds=30, max_move=10,
                                               clock=clock)
    await audited.add_user("low", permissions={"ptz.control"}, org_nodes=[tree.va], ptz_level=2)
    await audited.add_user("high", permissions={"ptz.control", "device.control"}, org_nodes=[tree.va], ptz_level=5)
    return {"clock": clock, "commands": commands,
            **{name: bearer(await audited.login(name)) for name in ("low", "high")}}


async def test_lock_and_presets(audited: Portal, real: dict[str, Any]) -> None:
    commands: FakeCommands = real["commands"]
    r = await audited.client.post(f"{DEV}/ptz", headers=real["low"], json={"action": "left"})
    assert r.status_code == 202, r.text
    assert r.json()["lock"]["holder"]["username"] == "low" and r.json()["lock"]["seconds_left"] == 30
    assert r.json()["lock"]["mine"] is True
    real["clock"].t += 12
    r = await audited.client.get(f"{SHORT}/ptz", headers=real["high"])
    lock = r.json()["lock"]
    assert r.status_code == 200 and lock["holder"]["level"] == 2 and lock["seconds_left"] == 18
    assert lock["mine"] is False
    r = await audited.client.post(f"{SHORT}/ptz", headers=real["high"], json={"action": "stop"})
    assert r.status_code == 202 and r.json()["lock"]["holder"]["username"] == "high"
    r = await audited.client.post(f"{SHORT}/presets", headers=real["low"], json={"action": "call", "preset": 1})
    assert r.status_code == 423 and r.json()["holder"]["username"] == "high" and r.json()["seconds_left"] == 30
    assert commands.sent == [("ptz", REF, "left", 128), ("ptz", REF, "stop", 128)]

    commands.device_presets = [Preset(2, "停车场"), Preset(1)]
    r = await audited.client.post(f"{DEV}/presets", headers=real["high"],
                                  json={"action": "set", "preset": 1, "name": "东门"})
    assert r.status_code == 200 and r.json()["lock"]["holder"]["username"] == "high", r.text
    r = await audited.client.get(f"{DEV}/presets", headers=real["low"])
    assert r.json() == {"items": [{"preset": 1, "name": "东门"}, {"preset": 2, "name": "停车场"}]}
    commands.offline = True
    r = await audited.client.get(f"{DEV}/presets", headers=real["low"])
    assert r.status_code == 409 and r.json()["error"] == "device_offline"


async def test_tours_home_and_device_command(audited: Portal, real: dict[str, Any]) -> None:
    commands: FakeCommands = real["commands"]
    tour = {"name": "东门巡航", "points": [{"preset": 1, "dwell_s": 5}, {"preset": 2, "dwell_s": 2.5}]}
    r = await audited.client.post(f"{DEV}/tours", headers=real["low"], json=tour)
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["points"] == tour["points"] and made["owner"] == "low" and made["running"] is False
    r = await audited.client.post(f"{SHORT}/tours/{made['id']}/start", headers=real["low"])
    assert r.status_code == 200 and r.json()["running"] is True, r.text
    assert commands.sent == [("preset", REF, "call", 1, None)]
    r = await audited.client.get(f"{SHORT}/tours", headers=real["high"])
    assert [(t["id"], t["running"]) for t in r.json()["items"]] == [(made["id"], True)]
    r = await audited.client.post(f"{DEV}/tours/{made['id']}/stop", headers=real["high"])
    assert r.status_code == 200 and r.json()["running"] is False
    assert (await audited.client.post(f"{DEV}/tours/999/start", headers=real["low"])).status_code == 404
    assert (await audited.client.delete(f"{DEV}/tours/{made['id']}", headers=real["low"])).status_code == 204
    assert (await audited.client.get(f"{SHORT}/tours", headers=real["low"])).json() == {"items": []}

    r = await audited.client.get(f"{DEV}/ptz/home", headers=real["low"])
    assert r.json() == {"device_id": NVR, "channel_id": CA1, "preset": None, "enabled": False,
                        "restore_below_level": 0}
    r = await audited.client.put(f"{SHORT}/ptz/home", headers=real["low"], json={"preset": 4, "enabled": True})
    assert r.status_code == 200 and (r.json()["preset"], r.json()["enabled"]) == (4, True), r.text
    assert (await audited.client.get(f"{SHORT}/ptz/home", headers=real["high"])).json()["preset"] == 4

    r = await audited.client.post(f"/api/devices/{NVR}/control", headers=real["high"],
                                  json={"command": "iframe", "channel_id": CA1})
    assert r.status_code == 200 and (r.json()["result"], r.json()["answered"]) == ("OK", True), r.text
    assert commands.sent[-1] == ("device_control", NVR, "iframe", None, CA1)
