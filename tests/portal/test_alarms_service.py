"""The alarm routes over the real :class:`alarms.service.AlarmService` (its table on SQLite and PostgreSQL): the
list, acknowledging and the live feed read the service's own records and subscription, which the fake of
test_alarms.py only copies."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from alarms.service import AlarmService

from .conftest import Portal, bearer
from .org_data import CA1, CB1, NVR, build_tree
from .test_alarms import Feed, _events
from .test_alarms_fakes import RECEIVED, alarm

T = datetime(2025, 3, 1, 6, 5, 9, tzinfo=UTC)  # 14:05:09 Beijing time


@pytest.fixture
async def real(audited: Portal) -> dict[str, Any]:
    tree = await build_tree(audited.registry)
    service = AlarmService(audited.sessionmaker, clock=lambda: RECEIVED)
    audited.app.state.alarms = service
    await service.record(NVR, alarm(CA1, time=T, description="东门移动侦测", longitude=108.94, latitude=34.34))
    await service.record(NVR, alarm(CB1, priority=2, time=T))
    await audited.add_user("east", permissions={"alarm.read", "alarm.ack"}, org_nodes=[tree.va])
    return {"service": service, "east": bearer(await audited.login("east"))}


async def test_list_and_acknowledge(audited: Portal, real: dict[str, Any]) -> None:
    r = await audited.client.get("/api/alarms", headers=real["east"])
    assert r.status_code == 200, r.text
    assert r.json() == {"total": 1, "offset": 0, "limit": 100, "items": [
        {"id": 1, "device_id": NVR, "channel_id": CA1, "priority": 1, "method": 5, "type": 2,
         "time": "2025-03-01T14:05:09+08:00", "description": "东门移动侦测", "longitude": 108.94, "latitude": 34.34,
         "acknowledged": False, "acknowledged_by": None, "acknowledged_at": None, "note": None,
         "received_at": "2025-03-01T14:05:10+08:00"}]}
    r = await audited.client.post("/api/alarms/1/ack", headers=real["east"], json={"note": " 已派人查看 "})
    assert r.status_code == 200, r.text
    assert (r.json()["acknowledged"], r.json()["acknowledged_by"], r.json()["note"]) == (True, "east", "已派人查看")
    assert r.json()["acknowledged_at"] == "2025-03-01T14:05:10+08:00"
    for alarm_id in (2, 999):  # another tenant's alarm and an unknown one
        r = await audited.client.post(f"/api/alarms/{alarm_id}/ack", headers=real["east"], json={})
        assert r.status_code == 404 and r.json()["error"] == "alarm_not_found"
    assert not (await real["service"].get(2)).acknowledged


async def test_feed(audited: Portal, real: dict[str, Any]) -> None:
    service: AlarmService = real["service"]
    async with Feed(audited, real["east"]) as feed:
        assert ": connected" in await feed.next()
        for _ in range(300):
            if service.subscribers:
                break
            await asyncio.sleep(0.01)
        await service.record(NVR, alarm(CB1, priority=1))  # outside
        await service.record(NVR, alarm(CA1, priority=2, time=T, description="东门又一次"))
        events = _events(await feed.next())
        assert [(e["channel_id"], e["priority"], e["description"]) for e in events] == [(CA1, 2, "东门又一次")]
    assert service.subscribers == 0
