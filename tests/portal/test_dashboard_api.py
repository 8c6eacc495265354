"""The console's home page (issue 18): ``GET /api/dashboard`` (threshold, per top-level organisation node,
devices gone offline in the last hour, open and overdue tickets) and ``GET /api/dashboard/trend`` (the last
7 days' rate and the worst channels), for a full-scope and for scoped users."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from device_registry.events import (
    CatalogReported,
    ChannelInfo,
    ChannelStatusChanged,
    DeviceRegistered,
    DeviceWentOffline,
)
from device_registry.models import OrgNode
from gbcore.db import utcnow

from .conftest import Portal, bearer

NVR = "34020000001180000001"
IPC = "34020000001320000009"
DEV3 = "34020000001320000003"
DEV4 = "34020000001320000004"
DEV5 = "34020000001320000005"
BG = "34020000002150000001"
VA = "34020000002160000001"
VB = "34020000002160000002"
CA1 = "34020000001310000001"
CA2 = "34020000001310000002"
CB1 = "34020000001310000003"
CX1 = "34020000001310000009"
C3 = "34020000001310000030"


@dataclass
class Fixture:
    now: datetime
    bg: int
    va: int
    vb: int


def _reg(device_id: str, at: datetime) -> DeviceRegistered:
    return DeviceRegistered(device_id, at, "192.0.2.10:5060", "udp", f"sip:{device_id}@192.0.2.10", 3600, "sim/1.0")


@pytest.fixture
async def fx(portal: Portal) -> Fixture:
    """BG ─ VA: CA1 (online), CA2 (offline for 9 days); BG ─ VB: CB1 (offline for the last day);
    IPC with CX1 (no node, online); DEV3 with C3 (no node) gone offline 10 minutes ago; DEV4 offline for
    2 hours; DEV5 offline 30 minutes ago and back 20 minutes ago."""
    now = utcnow()
    t0 = now - timedelta(days=9)
    await portal.registry.start_platform_run(now - timedelta(days=10))
    await portal.registry.apply([
        _reg(NVR, t0),
        CatalogReported(NVR, t0 + timedelta(seconds=1), (
            ChannelInfo(BG, name="业务分组"),
            ChannelInfo(VA, name="东区", business_group_id=BG, parent_id=BG),
            ChannelInfo(VB, name="西区", business_group_id=BG, parent_id=BG),
            ChannelInfo(CA1, name="东门", status="ON", parent_id=VA),
            ChannelInfo(CA2, name="东区停车场", status="OFF", parent_id=VA),
            ChannelInfo(CB1, name="西门", status="ON", parent_id=VB),
        ), True, "complete 6/6"),
        _reg(IPC, t0 + timedelta(seconds=2)),
        CatalogReported(IPC, t0 + timedelta(seconds=3), (ChannelInfo(CX1, name="独立相机", status="ON"),), True,
                        "complete 1/1"),
        _reg(DEV3, t0 + timedelta(seconds=4)),
        CatalogReported(DEV3, t0 + timedelta(seconds=5), (ChannelInfo(C3, name="三号相机", status="ON"),), True,
                        "complete 1/1"),
        _reg(DEV4, t0 + timedelta(seconds=6)),
        _reg(DEV5, t0 + timedelta(seconds=7)),
        ChannelStatusChanged(NVR, CB1, now - timedelta(days=1), "OFF"),
        DeviceWentOffline(DEV4, now - timedelta(hours=2), "keepalive_timeout"),
        DeviceWentOffline(DEV5, now - timedelta(minutes=30), "keepalive_timeout"),
        _reg(DEV5, now - timedelta(minutes=20)),
        DeviceWentOffline(DEV3, now - timedelta(minutes=10), "registration_expired"),
    ])
    async with portal.sessionmaker() as session:
        ids = dict((await session.execute(select(OrgNode.code, OrgNode.id))).all())
    return Fixture(now=now, bg=ids[BG], va=ids[VA], vb=ids[VB])


async def _headers(portal: Portal, username: str, **kw) -> dict[str, str]:
    await portal.add_user(username, **kw)
    return bearer(await portal.login(username))


async def test_full_scope_figures(portal: Portal, fx: Fixture) -> None:
    headers = await _headers(portal, "boss")
    r = await portal.client.get("/api/dashboard", headers=headers)
    assert r.status_code == 200, r.text
    d = r.json()
    # channels: CA1, CA2, CB1, CX1, C3; online now: CA1 and CX1 (C3's device is offline)
    assert (d["channels_total"], d["channels_online"]) == (5, 2)
    assert (d["devices_total"], d["devices_online"]) == (5, 3)
    assert d["online_rate"] == pytest.approx(0.4)
    assert d["threshold"] == pytest.approx(portal.settings.online_rate_threshold)
    assert d["meets_threshold"] is False
    by_org = {o["org_node_id"]: o for o in d["by_org"]}
    assert set(by_org) == {fx.bg, None}  # the top-level node (VA and VB roll up into BG), and no node
    assert (by_org[fx.bg]["channels_total"], by_org[fx.bg]["channels_online"]) == (3, 1)
    assert by_org[fx.bg]["name"] == "业务分组" and by_org[fx.bg]["meets_threshold"] is False
    assert (by_org[None]["channels_total"], by_org[None]["channels_online"]) == (2, 1)
    assert by_org[None]["rate"] == pytest.approx(0.5)
    # offline within the hour and still offline: DEV3 only (DEV4 is 2 hours ago, DEV5 came back)
    assert d["offline_recent_total"] == 1
    [recent] = d["offline_recent"]
    assert recent["device_id"] == DEV3 and recent["reason"] == "registration_expired"
    at = datetime.fromisoformat(recent["offline_at"].replace("Z", "+00:00"))
    assert abs((at - (fx.now - timedelta(minutes=10))).total_seconds()) < 1
    assert (d["open_tickets"], d["overdue_tickets"]) == (0, 0)


async def test_threshold_follows_the_settings(portal: Portal, fx: Fixture) -> None:
    portal.settings.online_rate_threshold = 0.4
    headers = await _headers(portal, "boss")
    d = (await portal.client.get("/api/dashboard", headers=headers)).json()
    assert d["threshold"] == pytest.approx(0.4) and d["meets_threshold"] is True
    assert {o["org_node_id"]: o["meets_threshold"] for o in d["by_org"]} == {fx.bg: False, None: True}


async def test_scoped_user_sees_only_its_scope(portal: Portal, fx: Fixture) -> None:
    east = await _headers(portal, "east", org_nodes=[fx.va])
    d = (await portal.client.get("/api/dashboard", headers=east)).json()
    assert (d["channels_total"], d["channels_online"], d["devices_total"]) == (2, 1, 1)
    assert [(o["org_node_id"], o["channels_total"], o["channels_online"]) for o in d["by_org"]] == [(fx.va, 2, 1)]
    assert d["offline_recent_total"] == 0 and d["offline_recent"] == []

    # a user granted C3 alone sees DEV3 go offline; its channel counts under no node it holds: the tree's root
    third = await _headers(portal, "third", channels=[(DEV3, C3)])
    d = (await portal.client.get("/api/dashboard", headers=third)).json()
    assert (d["channels_total"], d["channels_online"]) == (1, 0)
    assert [r["device_id"] for r in d["offline_recent"]] == [DEV3] and d["offline_recent_total"] == 1
    assert [(o["org_node_id"], o["channels_total"]) for o in d["by_org"]] == [(None, 1)]

    r = await portal.client.get("/api/dashboard/trend", headers=east)
    assert r.status_code == 200, r.text
    assert [(w["device_id"], w["channel_id"]) for w in r.json()["worst"]] == [(NVR, CA2)]


async def test_tickets_open_and_overdue(portal: Portal, fx: Fixture) -> None:
    from ops_portal.tickets.models import Ticket

    now = utcnow()
    async with portal.sessionmaker() as session:
        common = dict(kind="fault", source="user", repair_limit_hours=24.0)
        session.add_all([
            Ticket(device_id=NVR, channel_id=CA2, state="reported", reported_at=now - timedelta(hours=1),
                   deadline=now + timedelta(hours=23), **common),
            # waiting past its deadline: open and overdue
            Ticket(device_id=NVR, channel_id=CB1, state="repairing", reported_at=now - timedelta(days=2),
                   deadline=now - timedelta(days=1), **common),
            # repaired later than the limit: overdue, not open
            Ticket(device_id=IPC, channel_id=CX1, state="confirmed", reported_at=now - timedelta(days=3),
                   deadline=now - timedelta(days=2), repair_seconds=30 * 3600.0, **common),
        ])
        await session.commit()
    boss = await _headers(portal, "boss")
    d = (await portal.client.get("/api/dashboard", headers=boss)).json()
    assert (d["open_tickets"], d["overdue_tickets"]) == (2, 2)
    # the same counts as the tickets page's filters
    for params, n in (({"overdue": "true"}, 2), ({"open": "true"}, 2)):
        r = await portal.client.get("/api/tickets", params=params, headers=boss)
        assert r.status_code == 200 and r.json()["total"] == n, (params, r.text)
    east = await _headers(portal, "east", org_nodes=[fx.va])
    d = (await portal.client.get("/api/dashboard", headers=east)).json()
    assert (d["open_tickets"], d["overdue_tickets"]) == (1, 0)
    nobody = await _headers(portal, "viewer", permissions={"device.read"})
    d = (await portal.client.get("/api/dashboard", headers=nobody)).json()
    assert d["open_tickets"] is None and d["overdue_tickets"] is None


async def test_trend_days_and_worst_channels(portal: Portal, fx: Fixture) -> None:
    headers = await _headers(portal, "boss")
    r = await portal.client.get("/api/dashboard/trend", headers=headers)
    assert r.status_code == 200, r.text
    body = r.json()
    tz = ZoneInfo("Asia/Shanghai")
    today = fx.now.astimezone(tz).date()
    assert [x["date"] for x in body["days"]] == [(today - timedelta(days=6 - i)).isoformat() for i in range(7)]
    start = datetime.fromisoformat(body["start"].replace("Z", "+00:00"))
    assert start.astimezone(tz).date() == today - timedelta(days=6) and start.astimezone(tz).hour == 0
    assert body["threshold"] == pytest.approx(portal.settings.online_rate_threshold)
    # until yesterday at this time CA2 alone was offline (4 of 5 online); since then CB1 too
    assert body["days"][0]["rate"] == pytest.approx(0.8)
    # today so far: CB1 offline since yesterday, C3 for the last 10 minutes
    assert body["days"][-1]["rate"] is not None and body["days"][-1]["rate"] < 0.6
    assert len(body["series"]) > 100
    assert all(p["rate"] is None or 0 <= p["rate"] <= 1 for p in body["series"])
    worst = body["worst"]
    assert [(w["device_id"], w["channel_id"]) for w in worst] == [(NVR, CA2), (NVR, CB1), (DEV3, C3)]
    span = (datetime.fromisoformat(body["end"].replace("Z", "+00:00")) - start).total_seconds()
    assert worst[0]["availability"] == 0 and worst[0]["online"] is False
    assert worst[1]["availability"] == pytest.approx((span - 86400) / span, abs=1e-3)
    assert worst[1]["offline_s"] == pytest.approx(86400, abs=5) and worst[1]["outages"] == 1
    assert worst[2]["offline_s"] == pytest.approx(600, abs=5)
    assert body["rate"] is not None and body["rate"] < 0.85

    # kept for a while: a second call answers the same computation
    again = (await portal.client.get("/api/dashboard/trend", headers=headers)).json()
    assert again["computed_at"] == body["computed_at"]


async def test_needs_device_read(portal: Portal, fx: Fixture) -> None:
    headers = await _headers(portal, "reporter", permissions={"report.read"})
    for path in ("/api/dashboard", "/api/dashboard/trend"):
        r = await portal.client.get(path, headers=headers)
        assert r.status_code == 403, (path, r.text)
    r = await portal.client.get("/api/dashboard/trend")
    assert r.status_code == 401
