"""The time API: a device's clock (nulls before the first sample), an immediate check (409 offline), the
compliance share over the caller's devices, the platform's clock; permission and scope (a curious tenant
gets 403 for a device it cannot see, and its compliance counts only its own devices)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from device_registry.events import CatalogReported, ChannelInfo, DeviceRegistered
from gbcore.timeutil import gb_time
from security.events import ListSink
from timesync.service import TimeConfig, TimeService

from .conftest import Portal, bearer

NVR = "34020000001110000001"
IPC = "34020000001320000002"
MUTE = "34020000001320000003"
CH1 = "34020000001320000101"
T0 = datetime(2026, 12, 7, 4, 0, 0, tzinfo=UTC)


class Sip:
    """DeviceStatus answered by devices whose clocks are ``skews`` ahead (None: no DeviceTime)."""

    def __init__(self, skews: dict[str, float | None]) -> None:
        self.skews = skews
        self.online = set(skews)
        self.service: TimeService | None = None

    async def device_status(self, device_id: str) -> Any:
        import time

        if device_id not in self.online:
            raise type("DeviceNotReachable", (Exception,), {})(device_id)
        sent = time.time()
        s = self.skews[device_id]
        assert self.service is not None
        self.service.on_device_time(device_id, None if s is None else gb_time(sent + 0.01 + s, millis=False),
                                    sent, sent + 0.02)

    def is_online(self, device_id: str) -> bool:
        return device_id in self.online


@pytest.fixture
async def timed(portal: Portal) -> Any:
    reg = portal.registry
    await reg.apply([
        DeviceRegistered(NVR, T0, "192.0.2.10:5060", "udp", None, 3600, None),
        CatalogReported(NVR, T0 + timedelta(seconds=1), (ChannelInfo(CH1, name="大厅", status="ON"),), True, "ok"),
        DeviceRegistered(IPC, T0, "192.0.2.11:5060", "udp", None, 3600, None),
        DeviceRegistered(MUTE, T0, "192.0.2.12:5060", "udp", None, 3600, None),
    ])
    sip = Sip({NVR: 0.2, IPC: 3.0, MUTE: None})
    sink = ListSink()
    svc = TimeService(portal.sessionmaker, TimeConfig(ntp_port=0), sink=sink, device_status=sip.device_status,
                      is_online=sip.is_online)
    sip.service = svc
    portal.app.state.timesync = svc
    yield svc, sip, sink
    await svc.stop()


async def test_clock_before_and_after_a_check(portal: Portal, timed: Any) -> None:
    _svc, sip, sink = timed
    h = await portal.user_token("op")
    r = await portal.client.get(f"/api/devices/{NVR}/clock", headers=h)
    assert r.status_code == 200, r.text
    assert r.json() == {"skew_s": None, "uncertainty_s": None, "worst_24h_s": None, "within_limit": None,
                        "samples": 0, "last_checked": None, "limit_s": 1.0}
    r = await portal.client.post(f"/api/devices/{NVR}/clock/check", headers=h)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["within_limit"] is True and body["samples"] == 1 and body["last_checked"].endswith("Z")
    assert abs(body["skew_s"] - 0.2) <= body["uncertainty_s"] <= 0.6
    r = await portal.client.post(f"/api/devices/{IPC}/clock/check", headers=h)
    assert r.status_code == 200 and r.json()["within_limit"] is False and r.json()["skew_s"] > 2
    assert sink.kinds() == ["clock_skew"]
    r = await portal.client.get(f"/api/devices/{IPC}/clock", headers=h)
    assert r.json()["worst_24h_s"] > 2 and r.json()["samples"] == 1

    r = await portal.client.post(f"/api/devices/{MUTE}/clock/check", headers=h)
    assert r.status_code == 502 and r.json()["error"] == "no_device_time"
    sip.online.discard(NVR)
    r = await portal.client.post(f"/api/devices/{NVR}/clock/check", headers=h)
    assert r.status_code == 409 and r.json()["error"] == "device_offline"
    assert "/" in r.json()["message"]  # 中文 / English

    r = await portal.client.get("/api/time/compliance", headers=h)
    assert r.status_code == 200, r.text
    c = r.json()
    assert (c["share"], c["within"], c["measured"], c["unmeasured"]) == (0.5, 1, 2, 1)
    assert [d["device_id"] for d in c["devices_over"]] == [IPC]

    r = await portal.client.get("/api/time/devices", headers=h)
    assert r.status_code == 200
    items = {i["device_id"]: i for i in r.json()["items"]}
    assert items[NVR]["within_limit"] is True and items[IPC]["within_limit"] is False
    assert items[MUTE]["skew_s"] is None and r.json()["total"] == 3

    r = await portal.client.get("/api/time/status", headers=h)
    assert r.status_code == 200
    st = r.json()
    assert st["synchronised"] is True and st["reference"] == "local" and st["stratum"] == 10
    assert st["ntp_server"]["enabled"] is False


async def test_scope_and_permission(portal: Portal, timed: Any) -> None:
    await portal.client.post(f"/api/devices/{IPC}/clock/check", headers=await portal.user_token("admin2"))
    # a tenant that sees the NVR's channel only
    await portal.add_user("tenant", permissions={"device.read"}, channels=[(NVR, CH1)])
    h = bearer(await portal.login("tenant"))
    assert (await portal.client.get(f"/api/devices/{NVR}/clock", headers=h)).status_code == 200
    for method, path in (("get", f"/api/devices/{IPC}/clock"), ("post", f"/api/devices/{IPC}/clock/check"),
                         ("get", "/api/devices/34020000001320009999/clock")):
        r = await getattr(portal.client, method)(path, headers=h)
        assert r.status_code == 403 and r.json()["error"] == "device_forbidden", (path, r.text)
    c = (await portal.client.get("/api/time/compliance", headers=h)).json()
    assert c["measured"] == 0 and c["unmeasured"] == 1 and c["devices_over"] == []  # IPC is not its business
    listed = (await portal.client.get("/api/time/devices", headers=h)).json()
    assert [i["device_id"] for i in listed["items"]] == [NVR]
    # full scope: unknown device is 404
    admin = await portal.user_token("full")
    r = await portal.client.get("/api/devices/34020000001320009999/clock", headers=admin)
    assert r.status_code == 404
    # no device.read: 403 everywhere
    await portal.add_user("nobody", permissions={"audit.read"})
    h = bearer(await portal.login("nobody"))
    for path in (f"/api/devices/{NVR}/clock", "/api/time/compliance", "/api/time/status", "/api/time/devices"):
        assert (await portal.client.get(path, headers=h)).status_code == 403, path
    assert (await portal.client.get("/api/time/status")).status_code == 401


async def test_portal_without_the_time_service(portal: Portal) -> None:
    """The stored history still reads; the status says the service does not run; a check is 503."""
    await portal.registry.apply([DeviceRegistered(IPC, T0, "192.0.2.11:5060", "udp", None, 3600, None)])
    h = await portal.user_token("op")
    st = (await portal.client.get("/api/time/status", headers=h)).json()
    assert st["synchronised"] is None and st["ntp_server"]["running"] is False
    assert "not running" in st["ntp_server"]["error"]
    r = await portal.client.get(f"/api/devices/{IPC}/clock", headers=h)
    assert r.status_code == 200 and r.json()["samples"] == 0
    assert (await portal.client.get("/api/time/compliance", headers=h)).json()["unmeasured"] == 1
    r = await portal.client.post(f"/api/devices/{IPC}/clock/check", headers=h)
    assert r.status_code == 503 and r.json()["error"] == "time_unavailable"
