"""Device routes, with data written through the registry's own write API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from device_registry.events import (
    CatalogReported,
    ChannelInfo,
    DeviceInfoReported,
    DeviceRegistered,
    DeviceUnregistered,
)
from device_registry.models import Device

from .conftest import Portal

NVR = "34020000001110000001"
IPC = "34020000001320000002"
OLD = "34020000001320000003"
CH1 = "34020000001320000101"
CH2 = "34020000001320000102"
T0 = datetime(2024, 5, 1, 8, 30, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def registered(device_id: str, t: datetime, addr: str = "192.0.2.10:5060") -> DeviceRegistered:
    return DeviceRegistered(device_id, t, addr, "udp", f"sip:{device_id}@{addr}", 3600, "IPC/1.0")


@pytest.fixture
async def devices(portal: Portal) -> None:
    reg = portal.registry
    await reg.apply(
        [
            registered(NVR, at(0)),
            DeviceInfoReported(NVR, at(1), "大门口录像机", "海康威视", "DS-7808N", "V4.1.0", "NVR", 8),
            CatalogReported(
                NVR,
                at(2),
                (
                    ChannelInfo(CH1, name="一号通道 大厅", status="ON", longitude=116.397, latitude=39.908,
                                manufacturer="海康威视", civil_code="340200", address="大厅入口", ptz_type=1),
                    ChannelInfo(CH2, name="二号通道 停车场", status="OFF"),
                ),
                True,
                "complete 2/2",
            ),
            registered(IPC, at(3), "192.0.2.11:5060"),
            registered(OLD, at(4), "192.0.2.12:5060"),
            DeviceUnregistered(OLD, at(5)),
        ]
    )
    # A device password: its HA1 values must never be served.
    await reg.set_device_password(IPC, "3402000000", "Device-Secret-77")


async def test_list_devices(portal: Portal, devices: None) -> None:
    headers = await portal.user_token()
    r = await portal.client.get("/api/devices", headers=headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["total"] == 3 and body["offset"] == 0 and body["limit"] == 50
    assert [d["device_id"] for d in body["items"]] == [NVR, IPC, OLD]
    nvr = body["items"][0]
    for key in (
        "device_id", "name", "manufacturer", "model", "firmware", "online", "last_seen", "remote_addr",
        "transport", "register_expires_at", "keepalive_interval", "channel_count", "catalog_state",
        "catalog_synced_at",
    ):
        assert key in nvr, key
    assert nvr["name"] == "大门口录像机"
    assert nvr["manufacturer"] == "海康威视"
    assert nvr["online"] is True
    assert nvr["transport"] == "udp"
    assert nvr["remote_addr"] == "192.0.2.10:5060"
    assert nvr["channel_count"] == 8
    assert nvr["catalog_state"] == "complete 2/2"
    assert nvr["last_seen"] == "2024-05-01T08:30:00.000Z"
    assert nvr["catalog_synced_at"] == "2024-05-01T08:30:02.000Z"
    assert nvr["register_expires_at"] == "2024-05-01T09:30:00.000Z"
    # Chinese text travels as UTF-8, intact.
    assert "大门口录像机".encode() in r.content
    assert r.headers["content-type"].startswith("application/json")


async def test_paging_and_filters(portal: Portal, devices: None) -> None:
    headers = await portal.user_token()
    get = portal.client.get

    r = (await get("/api/devices", params={"limit": 2}, headers=headers)).json()
    assert r["total"] == 3 and r["limit"] == 2 and [d["device_id"] for d in r["items"]] == [NVR, IPC]
    r = (await get("/api/devices", params={"limit": 2, "offset": 2}, headers=headers)).json()
    assert r["total"] == 3 and r["offset"] == 2 and [d["device_id"] for d in r["items"]] == [OLD]
    r = (await get("/api/devices", params={"offset": 10}, headers=headers)).json()
    assert r["total"] == 3 and r["items"] == []

    r = (await get("/api/devices", params={"online": "true"}, headers=headers)).json()
    assert r["total"] == 2 and {d["device_id"] for d in r["items"]} == {NVR, IPC}
    r = (await get("/api/devices", params={"online": "false"}, headers=headers)).json()
    assert r["total"] == 1 and r["items"][0]["device_id"] == OLD
    assert r["items"][0]["online"] is False and r["items"][0]["offline_reason"] == "unregistered"

    r = (await get("/api/devices", params={"q": "录像机"}, headers=headers)).json()
    assert [d["device_id"] for d in r["items"]] == [NVR]
    r = (await get("/api/devices", params={"q": "320000002"}, headers=headers)).json()
    assert [d["device_id"] for d in r["items"]] == [IPC]

    r = await get("/api/devices", params={"limit": 500}, headers=headers)
    assert r.status_code == 200
    for bad in ({"limit": 501}, {"limit": 0}, {"offset": -1}, {"online": "maybe"}):
        r = await get("/api/devices", params=bad, headers=headers)
        assert r.status_code == 422, bad
        assert r.json()["error"] == "validation_error"
        assert "请求参数无效" in r.json()["message"]


async def test_get_device_and_404(portal: Portal, devices: None) -> None:
    headers = await portal.user_token()
    r = await portal.client.get(f"/api/devices/{IPC}", headers=headers)
    assert r.status_code == 200
    assert r.json()["device_id"] == IPC and r.json()["online"] is True

    unknown = "34020000001329999999"
    for suffix in ("", "/channels", "/presence", "/catalog-sync"):
        r = await portal.client.get(f"/api/devices/{unknown}{suffix}", headers=headers)
        assert r.status_code == 404, suffix
        assert r.json() == {"error": "device_not_found", "message": f"设备不存在 / device not found: {unknown}"}
    r = await portal.client.post(f"/api/devices/{unknown}/catalog-sync", headers=headers)
    assert r.status_code == 404 and r.json()["error"] == "device_not_found"


async def test_password_ha1_never_served(portal: Portal, devices: None) -> None:
    async with portal.sessionmaker() as session:
        dev = (await session.execute(select(Device).where(Device.device_id == IPC))).scalar_one()
    secrets = [dev.password_ha1_md5, dev.password_ha1_sha256]
    assert all(secrets)

    portal.sip.online.add(IPC)
    headers = await portal.user_token()
    urls = ["/api/devices", "/api/devices?limit=500", f"/api/devices/{IPC}", f"/api/devices/{IPC}/channels",
            f"/api/devices/{IPC}/presence"]
    bodies = [(await portal.client.get(u, headers=headers)) for u in urls]
    bodies.append(await portal.client.post(f"/api/devices/{IPC}/catalog-sync", headers=headers))
    bodies.append(await portal.client.get(f"/api/devices/{IPC}/catalog-sync", headers=headers))
    for r in bodies:
        assert r.status_code in (200, 202), (r.url, r.text)
        for secret in secrets:
            assert secret not in r.text
        assert "ha1" not in r.text.lower()
        assert "password" not in r.text.lower()
        assert "Device-Secret-77" not in r.text


async def test_channels(portal: Portal, devices: None) -> None:
    headers = await portal.user_token()
    r = await portal.client.get(f"/api/devices/{NVR}/channels", headers=headers)
    assert r.status_code == 200
    items = r.json()["items"]
    assert [c["channel_id"] for c in items] == [CH1, CH2]
    ch1 = items[0]
    for key in ("channel_id", "name", "status", "online", "longitude", "latitude", "manufacturer", "model",
                "civil_code", "parent_id", "address", "ptz_type", "removed"):
        assert key in ch1, key
    assert ch1["name"] == "一号通道 大厅"
    assert ch1["address"] == "大厅入口"
    assert ch1["status"] == "ON" and ch1["online"] is True
    assert ch1["longitude"] == pytest.approx(116.397) and ch1["latitude"] == pytest.approx(39.908)
    assert ch1["ptz_type"] == 1 and ch1["removed"] is False
    assert items[1]["online"] is False
    assert "一号通道 大厅".encode() in r.content

    # A complete catalog without CH2 removes it.
    await portal.registry.apply(
        [CatalogReported(NVR, at(10), (ChannelInfo(CH1, name="一号通道 大厅", status="ON"),), True, "complete 1/1")]
    )
    r = await portal.client.get(f"/api/devices/{NVR}/channels", headers=headers)
    assert [c["channel_id"] for c in r.json()["items"]] == [CH1]
    r = await portal.client.get(f"/api/devices/{NVR}/channels", params={"include_removed": "true"}, headers=headers)
    items = r.json()["items"]
    assert [(c["channel_id"], c["removed"]) for c in items] == [(CH1, False), (CH2, True)]
    assert items[1]["removed_at"] == "2024-05-01T08:30:10.000Z"

    r = await portal.client.get(f"/api/devices/{IPC}/channels", headers=headers)
    assert r.status_code == 200 and r.json() == {"items": []}


async def test_presence(portal: Portal, devices: None) -> None:
    headers = await portal.user_token()
    r = await portal.client.get(f"/api/devices/{OLD}/presence", headers=headers)
    assert r.status_code == 200
    items = r.json()["items"]
    assert [(e["subject"], e["online"], e["reason"], e["at"]) for e in items] == [
        ("device", False, "unregistered", "2024-05-01T08:30:05.000Z"),
        ("device", True, "registered", "2024-05-01T08:30:04.000Z"),
    ]
    assert set(items[0]) >= {"subject", "channel_id", "online", "at", "reason", "detail"}

    r = await portal.client.get(f"/api/devices/{OLD}/presence", params={"limit": 1}, headers=headers)
    assert len(r.json()["items"]) == 1 and r.json()["items"][0]["online"] is False
    for before in ("2024-05-01T08:30:05Z", "2024-05-01T16:30:05+08:00", "2024-05-01T08:30:05"):
        r = await portal.client.get(f"/api/devices/{OLD}/presence", params={"before": before}, headers=headers)
        assert r.status_code == 200, r.text
        assert [e["reason"] for e in r.json()["items"]] == ["registered"], before
    r = await portal.client.get(f"/api/devices/{OLD}/presence", params={"before": "yesterday"}, headers=headers)
    assert r.status_code == 422

    # Channel transitions of the NVR are in its history too.
    r = await portal.client.get(f"/api/devices/{NVR}/presence", headers=headers)
    subjects = {(e["subject"], e["channel_id"]) for e in r.json()["items"]}
    assert ("device", None) in subjects and ("channel", CH1) in subjects


async def test_catalog_sync(portal: Portal, devices: None) -> None:
    headers = await portal.user_token()
    url = f"/api/devices/{NVR}/catalog-sync"

    r = await portal.client.get(url, headers=headers)
    assert r.status_code == 404 and r.json()["error"] == "catalog_sync_not_found"

    r = await portal.client.post(url, headers=headers)
    assert r.status_code == 409
    assert r.json()["error"] == "device_offline"
    assert "不在线" in r.json()["message"] and "offline" in r.json()["message"]
    assert portal.sip.started == []

    portal.sip.online.add(NVR)
    r = await portal.client.post(url, headers=headers)
    assert r.status_code == 202, r.text
    assert r.json() == {
        "device_id": NVR, "sn": 17, "state": "running", "received": 0, "expected": None, "pages": 0,
        "summary": "running 0/?",
    }
    assert portal.sip.started == [NVR]

    portal.sip.progress[NVR].update(state="complete", received=2, expected=2, pages=1, summary="complete 2/2")
    r = await portal.client.get(url, headers=headers)
    assert r.status_code == 200
    assert r.json()["state"] == "complete" and r.json()["received"] == 2 and r.json()["expected"] == 2


async def test_catalog_sync_device_vanishes(portal: Portal, devices: None) -> None:
    """is_online said yes, then the SIP service raised DeviceNotReachable: still a clean 409."""
    headers = await portal.user_token()
    portal.sip.vanishing.add(IPC)
    r = await portal.client.post(f"/api/devices/{IPC}/catalog-sync", headers=headers)
    assert r.status_code == 409 and r.json()["error"] == "device_offline"


async def test_catalog_sync_without_sip(portal_no_sip: Portal, devices: None) -> None:
    portal = portal_no_sip
    headers = await portal.user_token()
    for method in ("GET", "POST"):
        r = await portal.client.request(method, f"/api/devices/{NVR}/catalog-sync", headers=headers)
        assert r.status_code == 503
        assert r.json()["error"] == "sip_unavailable"
        assert "SIP" in r.json()["message"] and "not running" in r.json()["message"]
    # Everything else works without it.
    assert (await portal.client.get(f"/api/devices/{NVR}", headers=headers)).status_code == 200


async def test_set_device_password(portal: Portal, devices: None, caplog) -> None:
    from sip_server.sip import compute_ha1

    headers = await portal.user_token()
    url = f"/api/devices/{IPC}/password"
    for weak in ("12345678", "abcdefgh", f"x{IPC}y", "admin123"):
        r = await portal.client.put(url, json={"password": weak}, headers=headers)
        assert r.status_code == 422 and r.json()["error"] == "weak_password", (weak, r.text)
    assert IPC not in portal.sip.passwords
    secret = "Own-camera-pw#77"
    r = await portal.client.put(url, json={"password": secret}, headers=headers)
    assert r.status_code == 204, r.text
    realm = portal.settings.realm
    assert portal.sip.passwords[IPC] == {"MD5": compute_ha1(IPC, realm, secret, "MD5"),
                                         "SHA-256": compute_ha1(IPC, realm, secret, "SHA-256")}
    snap = {s.device_id: s for s in await portal.registry.snapshot()}[IPC]
    assert snap.password_ha1_md5 == portal.sip.passwords[IPC]["MD5"] and snap.password_realm == realm
    assert secret not in caplog.text
    dev = (await portal.client.get(f"/api/devices/{IPC}", headers=headers)).text
    assert secret not in dev and snap.password_ha1_md5 not in dev
    r = await portal.client.put(url, json={"password": None}, headers=headers)
    assert r.status_code == 204 and portal.sip.passwords[IPC] is None
    snap = {s.device_id: s for s in await portal.registry.snapshot()}[IPC]
    assert snap.password_ha1_md5 is None
