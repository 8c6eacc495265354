"""``GET/PUT .../recording``: the platform's recording plan of a channel with its state and storage, both path
forms, ``record.manage`` to change it (``record.plan`` on the audit log), clear validation (SQLite and
PostgreSQL).  The recording service is a fake following docs/issue13-seams.md."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from gbcore.ids import ChannelRef
from media_relay.recording.types import ScheduleWindow

from .conftest import Portal, bearer
from .org_data import CA1, NVR, build_tree
from .test_playback_fakes import DAY_START, FakeRecordings, fake_sip, platform_segments

__all__ = ["fake_sip"]

REF = ChannelRef(NVR, CA1)


@pytest.fixture
async def rp(audited: Portal, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    from audit_log import actions

    if "record.plan" not in actions.ACTIONS:  # until audit_log.actions lists it (the lead's wiring)
        monkeypatch.setitem(actions.ACTIONS, "record.plan", "修改录像计划 / recording plan changed")
    tree = await build_tree(audited.registry)
    recordings = FakeRecordings()
    recordings.segs[REF] = platform_segments(REF, DAY_START, 3)
    audited.app.state.recordings = recordings
    await audited.add_user("viewer", permissions={"playback.view"}, org_nodes=[tree.va])
    await audited.add_user("keeper", permissions={"playback.view", "record.manage"}, org_nodes=[tree.va])
    await audited.add_user("westkeeper", permissions={"playback.view", "record.manage"}, org_nodes=[tree.vb])
    return {"recordings": recordings, "viewer": bearer(await audited.login("viewer")),
            "keeper": bearer(await audited.login("keeper")), "west": bearer(await audited.login("westkeeper"))}


async def test_plan_state_and_storage(audited: Portal, rp: dict[str, Any]) -> None:
    r = await audited.client.get(f"/api/channels/{CA1}/recording", headers=rp["viewer"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["mode"] == "off" and body["state"] == "off" and body["schedule"] == []
    assert body["segments"] == 3 and body["bytes_stored"] == 1_500_000 and body["seconds_stored"] == 180
    assert body["oldest"] == "2025-03-01T00:00:00+08:00" and body["newest_end"] == "2025-03-01T00:03:00+08:00"
    assert body["retention_days"] == 7 and body["device_id"] == NVR

    plan = {"mode": "schedule", "stream": "sub",
            "schedule": [{"days": [1, 2, 3, 4, 5], "from": "08:00", "to": "18:30"},
                         {"days": [6, 7, 6], "from": "22:00", "to": "06:00"}]}
    r = await audited.client.put(f"/api/devices/{NVR}/channels/{CA1}/recording", headers=rp["keeper"], json=plan)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["mode"] == "schedule" and body["stream"] == "sub" and body["state"] == "recording"
    assert body["schedule"] == [{"days": [1, 2, 3, 4, 5], "from": "08:00", "to": "18:30"},
                                {"days": [6, 7], "from": "22:00", "to": "06:00"}]
    assert body["updated_by"] == "keeper" and body["updated_at"] == "2025-03-01T09:02:03+08:00"
    saved, actor = rp["recordings"].set_calls[-1]
    assert actor == "keeper" and saved.channel == REF
    assert saved.schedule == (ScheduleWindow((1, 2, 3, 4, 5), "08:00", "18:30"), ScheduleWindow((6, 7), "22:00", "06:00"))
    r = await audited.client.get(f"/api/channels/{CA1}/recording", headers=rp["viewer"])
    assert r.json()["mode"] == "schedule"
    rows = [json.loads(e.data) async for e in audited.audit.store.iter_entries(0, 10**9)]
    entry = [e for e in rows if e["action"] == "record.plan"][-1]
    assert entry["actor"]["name"] == "keeper" and entry["target"]["id"] == REF.key
    assert entry["detail"]["mode"] == "schedule" and entry["detail"]["schedule"][1]["from"] == "22:00"

    r = await audited.client.put(f"/api/channels/{CA1}/recording", headers=rp["keeper"], json={"mode": "off"})
    assert r.status_code == 200 and r.json()["mode"] == "off" and r.json()["schedule"] == []


@pytest.mark.parametrize(("plan", "code"), [
    ({"mode": "schedule"}, "bad_schedule"),
    ({"mode": "schedule", "schedule": [{"days": [1], "from": "08:00", "to": "08:00"}]}, "bad_schedule"),
    ({"mode": "schedule", "schedule": [{"days": [8], "from": "08:00", "to": "09:00"}]}, "validation_error"),
    ({"mode": "schedule", "schedule": [{"days": [1], "from": "8:00", "to": "25:00"}]}, "validation_error"),
    ({"mode": "sometimes"}, "validation_error"),
    ({"mode": "continuous", "stream": "third"}, "validation_error"),
])
async def test_bad_plans(audited: Portal, rp: dict[str, Any], plan: dict[str, Any], code: str) -> None:
    r = await audited.client.put(f"/api/channels/{CA1}/recording", headers=rp["keeper"], json=plan)
    assert r.status_code == 422 and r.json()["error"] == code, r.text
    assert not [p for p, _ in rp["recordings"].set_calls if p.mode == "schedule" and not p.schedule]


async def test_permission_and_scope(audited: Portal, rp: dict[str, Any]) -> None:
    r = await audited.client.put(f"/api/channels/{CA1}/recording", headers=rp["viewer"], json={"mode": "continuous"})
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    for method in ("GET", "PUT"):
        r = await audited.client.request(method, f"/api/channels/{CA1}/recording", headers=rp["west"],
                                         json={"mode": "continuous"} if method == "PUT" else None)
        assert r.status_code == 403 and r.json()["error"] == "channel_forbidden"
    assert not rp["recordings"].set_calls
    audited.app.state.recordings = None
    r = await audited.client.get(f"/api/channels/{CA1}/recording", headers=rp["viewer"])
    assert r.status_code == 503 and r.json()["error"] == "recording_unavailable"


def test_segments_fixture_is_sane() -> None:
    segs = platform_segments(REF, DAY_START, 2)
    assert segs[1].start - segs[0].start == timedelta(seconds=60) and segs[1].open and not segs[0].open
