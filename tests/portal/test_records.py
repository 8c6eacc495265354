"""``GET .../records``: the device's files (RecordInfo) and the platform's segments of a time range, both path
forms, Beijing time in and out whatever the host's zone, clear errors, the channel's scope (SQLite and
PostgreSQL).  The SIP and recording services are fakes that follow docs/issue13-seams.md."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gbcore.ids import ChannelRef

from .conftest import Portal, bearer
from .org_data import CA1, CB1, IPC, NVR, build_tree
from .test_playback_fakes import (
    DAY_START,
    FakeRecordings,
    HistorySip,
    device_files,
    fake_sip,
    platform_segments,
)

__all__ = ["fake_sip"]  # the HistorySip fixture overrides the conftest's

REF = ChannelRef(NVR, CA1)


@pytest.fixture
async def rec(audited: Portal) -> dict[str, Any]:
    tree = await build_tree(audited.registry)
    sip: HistorySip = audited.sip  # type: ignore[assignment]
    sip.online.add(NVR)
    # 24 files of 10 minutes from 08:00 Beijing, 10:00-11:00 missing
    sip.records[(NVR, CA1)] = device_files(NVR, DAY_START + timedelta(hours=8), 24, skip=range(12, 18))
    recordings = FakeRecordings()
    recordings.segs[REF] = platform_segments(REF, DAY_START + timedelta(hours=9), 5)
    audited.app.state.recordings = recordings
    await audited.add_user("east", permissions={"playback.view"}, org_nodes=[tree.va])
    await audited.add_user("west", permissions={"playback.view"}, org_nodes=[tree.vb])
    await audited.add_user("noperm", permissions={"live.view"}, org_nodes=[tree.va])
    return {"tree": tree, "sip": sip, "recordings": recordings,
            "east": bearer(await audited.login("east")), "west": bearer(await audited.login("west")),
            "noperm": bearer(await audited.login("noperm"))}


DAY = {"start": "2025-03-01T00:00:00", "end": "2025-03-02T00:00:00"}  # Beijing time, no offset


async def test_device_records_in_beijing_time_both_forms(audited: Portal, rec: dict[str, Any],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # the host's own zone must not matter
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        for url in (f"/api/channels/{CA1}/records", f"/api/devices/{NVR}/channels/{CA1}/records"):
            r = await audited.client.get(url, headers=rec["east"], params={**DAY, "source": "device"})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["complete"] is True and body["sum_num"] == 18 and len(body["items"]) == 18
            assert body["start"] == "2025-03-01T00:00:00+08:00" and body["end"] == "2025-03-02T00:00:00+08:00"
            first = body["items"][0]
            assert first == {"start": "2025-03-01T08:00:00+08:00", "end": "2025-03-01T08:10:00+08:00",
                             "source": "device", "type": "time", "size": 1_000_000, "file_path": "/rec/0.ps",
                             "name": "file0", "open": False}
            starts = [i["start"] for i in body["items"]]
            assert starts == sorted(starts)
            # the gap: nothing between 10:00 and 11:00
            assert not [s for s in starts if "T10:" in s]
            assert body["items"][4]["type"] == "alarm"
        # the device was asked for exactly that day, in UTC at the service seam, with the configured timeout
        _, channel, start, end, kind, timeout = rec["sip"].queries[-1]
        assert channel == CA1 and kind == "all" and timeout == audited.settings.record_query_timeout
        assert start == datetime(2025, 2, 28, 16, 0, tzinfo=UTC) and end == datetime(2025, 3, 1, 16, 0, tzinfo=UTC)
    finally:
        monkeypatch.undo()
        time.tzset()


async def test_offsets_in_input_are_honoured(audited: Portal, rec: dict[str, Any]) -> None:
    r = await audited.client.get(f"/api/channels/{CA1}/records", headers=rec["east"],
                                 params={"start": "2025-03-01T00:00:00Z", "end": "2025-03-01T01:00:00+00:00",
                                         "source": "device"})
    assert r.status_code == 200, r.text
    # 08:00-09:00 Beijing: six files
    assert [i["start"][11:16] for i in r.json()["items"]] == ["08:00", "08:10", "08:20", "08:30", "08:40", "08:50"]
    assert rec["sip"].queries[-1][2] == datetime(2025, 3, 1, 0, 0, tzinfo=UTC)


async def test_all_sources_sorted_and_platform_alone(audited: Portal, rec: dict[str, Any]) -> None:
    r = await audited.client.get(f"/api/channels/{CA1}/records", headers=rec["east"], params=DAY)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["sum_num"] == 18 + 5 and body["complete"] is True and body["errors"] == []
    assert [i["start"] for i in body["items"]] == sorted(i["start"] for i in body["items"])
    platform = [i for i in body["items"] if i["source"] == "platform"]
    assert len(platform) == 5 and platform[0]["start"] == "2025-03-01T09:00:00+08:00"
    assert platform[0]["end"] == "2025-03-01T09:01:00+08:00" and platform[0]["type"] == "time"
    assert platform[-1]["open"] is True and platform[0]["size"] == 500_000
    r = await audited.client.get(f"/api/devices/{NVR}/channels/{CA1}/records", headers=rec["east"],
                                 params={**DAY, "source": "platform"})
    assert r.status_code == 200 and {i["source"] for i in r.json()["items"]} == {"platform"}
    assert len(rec["sip"].queries) == 1  # the device was not asked for platform records


async def test_partial_answer_and_unreachable_sources(audited: Portal, rec: dict[str, Any]) -> None:
    sip: HistorySip = rec["sip"]
    sip.incomplete = True
    r = await audited.client.get(f"/api/channels/{CA1}/records", headers=rec["east"], params={**DAY, "source": "device"})
    assert r.status_code == 200 and r.json()["complete"] is False and r.json()["sum_num"] == 18
    assert len(r.json()["items"]) == 9
    sip.incomplete = False
    sip.online.discard(NVR)
    r = await audited.client.get(f"/api/channels/{CA1}/records", headers=rec["east"], params={**DAY, "source": "device"})
    assert r.status_code == 409 and r.json()["error"] == "device_offline"
    assert "设备不在线" in r.json()["message"] and "offline" in r.json()["message"]
    # all: the platform's records still come, the device's absence is said
    r = await audited.client.get(f"/api/channels/{CA1}/records", headers=rec["east"], params=DAY)
    body = r.json()
    assert r.status_code == 200 and body["complete"] is False and len(body["items"]) == 5
    assert body["errors"][0]["source"] == "device" and body["errors"][0]["error"] == "device_offline"
    audited.app.state.recordings = None
    r = await audited.client.get(f"/api/channels/{CA1}/records", headers=rec["east"],
                                 params={**DAY, "source": "platform"})
    assert r.status_code == 503 and r.json()["error"] == "recording_unavailable"
    # the device vanishing between the check and the query (DeviceNotReachable) is 409 too
    sip.online.add(NVR)

    from sip_server.service import DeviceNotReachable, QueryError

    sip.fail_with = DeviceNotReachable(NVR)
    r = await audited.client.get(f"/api/channels/{CA1}/records", headers=rec["east"], params={**DAY, "source": "device"})
    assert r.status_code == 409 and r.json()["error"] == "device_offline"
    # the device refusing the query MESSAGE
    sip.fail_with = QueryError("device refused RecordInfo: 403 Forbidden")
    r = await audited.client.get(f"/api/channels/{CA1}/records", headers=rec["east"], params={**DAY, "source": "device"})
    assert r.status_code == 502 and r.json()["error"] == "record_query_failed"
    assert "403" in r.json()["message"]
    assert "/etc/passwd" not in r.text


@pytest.mark.parametrize(("params", "code"), [
    ({"start": "2025-03-02T00:00:00", "end": "2025-03-01T00:00:00"}, "bad_window"),
    ({"start": "2025-03-01T00:00:00", "end": "2025-03-01T00:00:00"}, "bad_window"),
    ({"start": "2025-01-01T00:00:00", "end": "2025-03-01T00:00:00"}, "window_too_long"),
    ({"start": "yesterday", "end": "2025-03-01T00:00:00"}, "bad_time"),
    ({"start": "2025-13-01T00:00:00", "end": "2025-03-01T00:00:00"}, "bad_time"),
    ({"start": "0001-01-01T00:00:00", "end": "2025-03-01T00:00:00"}, "bad_time"),
])
async def test_bad_windows_are_clear(audited: Portal, rec: dict[str, Any], params: dict[str, str], code: str) -> None:
    r = await audited.client.get(f"/api/channels/{CA1}/records", headers=rec["east"], params=params)
    assert r.status_code == 422 and r.json()["error"] == code, r.text
    assert " / " in r.json()["message"]  # 中文 / English
    assert not rec["sip"].queries


async def test_scope_and_permission(audited: Portal, rec: dict[str, Any]) -> None:
    # west holds playback.view for the west node only: CA1 is not theirs (403 + access.denied)
    for url in (f"/api/channels/{CA1}/records", f"/api/devices/{NVR}/channels/{CA1}/records"):
        r = await audited.client.get(url, headers=rec["west"], params=DAY)
        assert r.status_code == 403 and r.json()["error"] == "channel_forbidden"
        assert set(r.json()) <= {"error", "message"}
    r = await audited.client.get(f"/api/channels/{CB1}/records", headers=rec["west"], params=DAY)
    assert r.status_code == 200
    # a device's channel outside the scope (IPC's own) and a permission missing
    r = await audited.client.get(f"/api/devices/{IPC}/channels/{CA1}/records", headers=rec["east"], params=DAY)
    assert r.status_code == 403
    r = await audited.client.get(f"/api/channels/{CA1}/records", headers=rec["noperm"], params=DAY)
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    assert [q[1] for q in rec["sip"].queries] == [CB1]  # nothing was asked of the device for refused calls
    rows = [json.loads(e.data) async for e in audited.audit.store.iter_entries(0, 10**9)]
    denied = [e for e in rows if e["action"] == "access.denied"]
    assert any(e["detail"]["error"] == "channel_forbidden" and e["actor"]["name"] == "west" for e in denied)
    # unknown channel for a full-scope user: 404
    await audited.add_user("boss", permissions={"playback.view"})
    boss = bearer(await audited.login("boss"))
    r = await audited.client.get("/api/channels/34020000001310009999/records", headers=boss, params=DAY)
    assert r.status_code == 404 and r.json()["error"] == "channel_not_found"

