"""Device management (issue 18): add, edit, delete devices, edit channels, batch actions, scope, audit."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from audit_log.store import AuditEntryRow
from device_registry.events import (
    CatalogReported,
    ChannelInfo,
    DeviceInfoReported,
    DeviceRegistered,
    DeviceSeen,
)
from device_registry.models import Device, PresenceEvent
from device_registry.queries import device_password_facts, offline_devices
from gbcore.ids import ChannelRef

from .conftest import Portal, bearer
from .org_data import CA1, NVR, build_tree

DEV = "34020000001320000501"
DEV2 = "34020000001320000502"
DEV3 = "34020000001180000503"
CH = "34020000001310000501"
T0 = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
GOOD = "Cam-Pass-2024!"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def registered(device_id: str, t: datetime) -> DeviceRegistered:
    return DeviceRegistered(device_id, t, "192.0.2.30:5060", "udp", f"sip:{device_id}@192.0.2.30:5060", 3600, "sim")


async def admin(portal: Portal) -> dict[str, str]:
    return await portal.user_token("admin")


async def audit_rows(portal: Portal) -> list[tuple[str, str | None, dict[str, Any]]]:
    async with portal.sessionmaker() as session:
        rows = (await session.execute(select(AuditEntryRow.action, AuditEntryRow.target_id, AuditEntryRow.entry)
                                      .order_by(AuditEntryRow.seq))).all()
    return [(a, t, json.loads(e).get("detail") or {}) for a, t, e in rows if a.startswith(("device.", "channel."))]


async def device_row(portal: Portal, device_id: str) -> Device | None:
    async with portal.sessionmaker() as session:
        return await session.get(Device, device_id)


async def test_create_update_delete_are_audited(audited: Portal) -> None:
    p, h = audited, await admin(audited)
    body = {"device_id": DEV, "name": "东门相机", "password": GOOD, "transport": "tcp", "stream_form": "streamnumber",
            "expected_channels": 4, "longitude": 118.1, "latitude": 24.5, "address": "东门"}
    r = await p.client.post("/api/devices", headers=h, json=body)
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["device_id"] == DEV and out["name"] == "东门相机" and out["online"] is False
    assert (out["transport"], out["stream_form"], out["expected_channels"]) == ("tcp", "streamnumber", 4)
    assert (out["longitude"], out["latitude"], out["address"]) == (118.1, 24.5, "东门")
    assert (out["channels_online"], out["channels_total"]) == (0, 0)
    assert "password" not in r.text and "ha1" not in r.text
    # the password is effective at once: the SIP service has its HA1 values
    ha1 = p.sip.passwords[DEV]
    assert set(ha1) == {"MD5", "SHA-256"} and len(ha1["MD5"]) == 32

    r = await p.client.patch(f"/api/devices/{DEV}", headers=h,
                             json={"name": "东门入口", "password": "Other-Pass-99", "address": None})
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "东门入口" and r.json()["address"] is None and r.json()["transport"] == "tcp"
    assert p.sip.passwords[DEV] != ha1 and p.sip.passwords[DEV] is not None

    r = await p.client.delete(f"/api/devices/{DEV}", headers=h)
    assert r.status_code == 204, r.text
    assert p.sip.passwords[DEV] is None  # credentials cleared on delete
    assert (await p.client.get(f"/api/devices/{DEV}", headers=h)).status_code == 404
    assert DEV not in [d["device_id"] for d in (await p.client.get("/api/devices", headers=h)).json()["items"]]
    row = await device_row(p, DEV)
    assert row is not None and row.deleted_at is not None and row.password_ha1_md5 is None

    actions = await audit_rows(p)
    assert [(a, t) for a, t, _ in actions] == [("device.create", DEV), ("device.update", DEV), ("device.delete", DEV)]
    assert actions[0][2]["password_set"] is True and "password" not in actions[0][2]
    assert actions[1][2]["password_set"] is True and actions[1][2]["name"] == "东门入口"
    assert actions[2][2] == {"force": False, "was_online": False}

    # adding the same id again revives the row with fresh settings
    r = await p.client.post("/api/devices", headers=h, json={"device_id": DEV, "name": "新相机"})
    assert r.status_code == 201, r.text
    assert r.json()["address"] is None and r.json()["transport"] == "udp" and r.json()["stream_form"] == "none"
    assert p.sip.passwords[DEV] is None  # the platform's default password
    assert (await audit_rows(p))[-1][2]["revived"] is True


async def test_refusals(portal: Portal) -> None:
    p, h = portal, await admin(portal)
    for bad in ("3402000000132000050", "3402000000132000050x", "34020000002150000001", "34020000005010000001"):
        r = await p.client.post("/api/devices", headers=h, json={"device_id": bad, "name": "x"})
        assert r.status_code == 422 and r.json()["error"] == "bad_device_id", (bad, r.text)
    r = await p.client.post("/api/devices", headers=h, json={"device_id": DEV, "name": "x", "password": "12345678"})
    assert r.status_code == 422 and r.json()["error"] == "weak_password" and "/" in r.json()["message"]
    r = await p.client.post("/api/devices", headers=h, json={"device_id": DEV, "name": "x", "password": DEV + "a"})
    assert r.json()["error"] == "weak_password"
    r = await p.client.post("/api/devices", headers=h, json={"device_id": DEV, "name": "x", "org_node_id": 9999})
    assert r.status_code == 422 and r.json()["error"] == "bad_org_node"
    assert (await p.client.post("/api/devices", headers=h, json={"device_id": DEV, "name": "x"})).status_code == 201
    r = await p.client.post("/api/devices", headers=h, json={"device_id": DEV, "name": "y"})
    assert r.status_code == 409 and r.json()["error"] == "device_exists"
    r = await p.client.patch(f"/api/devices/{DEV}", headers=h, json={"password": "password"})
    assert r.status_code == 422 and r.json()["error"] == "weak_password"
    assert (await p.client.patch(f"/api/devices/{DEV2}", headers=h, json={"name": "z"})).status_code == 404

    # online: refused without force; with force the device goes, its presence history stays
    await p.registry.apply([registered(DEV, at(0)),
                            CatalogReported(DEV, at(1), (ChannelInfo(CH, name="c", status="ON"),), True, "1/1")])
    p.sip.online.add(DEV)
    r = await p.client.delete(f"/api/devices/{DEV}", headers=h)
    assert r.status_code == 409 and r.json()["error"] == "device_online"
    assert (await p.client.delete(f"/api/devices/{DEV}?force=true", headers=h)).status_code == 204
    async with p.sessionmaker() as session:
        history = (await session.execute(select(PresenceEvent.channel_id, PresenceEvent.online, PresenceEvent.reason)
                                         .where(PresenceEvent.device_id == DEV).order_by(PresenceEvent.id))).all()
    assert history == [(None, True, "registered"), (CH, True, "catalog_status"), (None, False, "deleted"),
                       (CH, False, "deleted")]
    assert (await p.client.delete(f"/api/devices/{DEV}", headers=h)).status_code == 404


async def test_a_deleted_device_is_unknown_to_the_registry_and_the_sip_snapshot(portal: Portal) -> None:
    p, h = portal, await admin(portal)
    await p.client.post("/api/devices", headers=h, json={"device_id": DEV, "name": "x"})
    await p.client.post("/api/devices", headers=h, json={"device_id": DEV2, "name": "y"})
    assert (await p.client.delete(f"/api/devices/{DEV}", headers=h)).status_code == 204
    assert [s.device_id for s in await p.registry.snapshot()] == [DEV2]
    counts = await p.registry.counts()
    assert counts["devices_total"] == 1
    async with p.sessionmaker() as session:  # no ticket for a deleted device, no security finding
        assert await offline_devices(session) == [DEV2]
        assert [f.device_id for f in await device_password_facts(session)] == [DEV2]
    # keepalives and info about a deleted device are ignored ...
    await p.registry.apply([DeviceSeen(DEV, at(1), "192.0.2.1:5060"), DeviceInfoReported(DEV, at(2), "other", None, None, None, None, None)])
    row = await device_row(p, DEV)
    assert row is not None and row.last_seen is None and row.name == "x" and row.deleted_at is not None
    # ... a registration the SIP service let through (GBOPS_SIP_ALLOW_UNKNOWN) brings it back
    await p.registry.apply([registered(DEV, at(3))])
    row = await device_row(p, DEV)
    assert row is not None and row.deleted_at is None and row.online is True


async def test_scoped_user_sees_and_writes_only_their_scope(portal: Portal) -> None:
    p, h = portal, await admin(portal)
    tree = await build_tree(p.registry)
    await p.add_user("east", org_nodes=[tree.va])
    he = bearer(await p.login("east"))
    assert (await p.client.post("/api/devices", headers=h,
                                json={"device_id": DEV2, "name": "west", "org_node_id": tree.vb})).status_code == 201
    # placing outside the scope, or nowhere, is refused
    r = await p.client.post("/api/devices", headers=he, json={"device_id": DEV, "name": "e", "org_node_id": tree.vb})
    assert r.status_code == 403 and r.json()["error"] == "org_node_forbidden"
    r = await p.client.post("/api/devices", headers=he, json={"device_id": DEV, "name": "e"})
    assert r.status_code == 422 and r.json()["error"] == "bad_org_node"
    r = await p.client.post("/api/devices", headers=he, json={"device_id": DEV, "name": "e", "org_node_id": tree.va})
    assert r.status_code == 201, r.text
    # the other scope's device: invisible and not writable
    listed = [d["device_id"] for d in (await p.client.get("/api/devices", headers=he)).json()["items"]]
    assert DEV in listed and DEV2 not in listed
    for method, url, kwargs in (("PATCH", f"/api/devices/{DEV2}", {"json": {"name": "mine"}}),
                                ("DELETE", f"/api/devices/{DEV2}", {})):
        r = await p.client.request(method, url, headers=he, **kwargs)
        assert r.status_code == 403 and r.json()["error"] == "device_forbidden", r.text
    r = await p.client.post("/api/devices/batch", headers=he,
                            json={"action": "move", "device_ids": [DEV2, DEV], "org_node_id": tree.va})
    assert r.status_code == 200, r.text
    assert [(x["device_id"], x["ok"], x["code"]) for x in r.json()["results"]] == [
        (DEV2, False, "device_forbidden"), (DEV, True, None)]
    # their own device cannot leave their scope
    r = await p.client.patch(f"/api/devices/{DEV}", headers=he, json={"org_node_id": tree.vb})
    assert r.status_code == 403 and r.json()["error"] == "org_node_forbidden"
    r = await p.client.patch(f"/api/devices/{DEV}", headers=he, json={"org_node_id": None})
    assert r.status_code == 422 and r.json()["error"] == "bad_org_node"
    # a device seen only through a granted channel is read-only to them
    r = await p.client.patch(f"/api/devices/{NVR}", headers=he, json={"name": "mine"})
    assert r.status_code == 403 and r.json()["error"] == "device_forbidden"
    # the export holds only their devices
    text = (await p.client.get("/api/devices/export?format=csv", headers=he)).content.decode("utf-8-sig")
    assert DEV in text and DEV2 not in text
    row = await device_row(p, DEV2)
    assert row is not None and row.name == "west" and row.deleted_at is None


async def test_channel_overrides_survive_a_later_catalog(portal: Portal) -> None:
    p, h = portal, await admin(portal)
    tree = await build_tree(p.registry)
    r = await p.client.patch(f"/api/devices/{NVR}/channels/{CA1}", headers=h, json={
        "name": "东门（运维命名）", "address": "东门岗亭", "longitude": 108.5, "latitude": 34.5, "org_node_id": tree.vb})
    assert r.status_code == 200, r.text
    assert (r.json()["name"], r.json()["org_node_id"], r.json()["longitude"]) == ("东门（运维命名）", tree.vb, 108.5)
    # the catalog says otherwise, and names its ParentID: the operator's values stay
    await p.registry.apply([CatalogReported(NVR, at(100), (
        ChannelInfo(CA1, name="Camera 01", status="ON", parent_id="34020000002160000001", address="gate",
                    longitude=100.0, latitude=30.0, model="X1"),), False, "1/?")])
    ch = await p.registry.get_channel(ChannelRef(NVR, CA1))
    assert (ch.name, ch.address, ch.longitude, ch.latitude, ch.org_node_id) == (
        "东门（运维命名）", "东门岗亭", 108.5, 34.5, tree.vb)
    assert ch.model == "X1"  # what the operator did not set follows the catalog
    # null gives a field back to the catalog
    r = await p.client.patch(f"/api/devices/{NVR}/channels/{CA1}", headers=h, json={"name": None, "org_node_id": None})
    assert r.status_code == 200
    await p.registry.apply([CatalogReported(NVR, at(101), (
        ChannelInfo(CA1, name="Camera 01", status="ON", parent_id="34020000002160000001"),), False, "1/?")])
    ch = await p.registry.get_channel(ChannelRef(NVR, CA1))
    assert (ch.name, ch.org_node_id, ch.address) == ("Camera 01", tree.va, "东门岗亭")
    # a device's operator-given name survives DeviceInfo
    assert (await p.client.patch(f"/api/devices/{NVR}", headers=h, json={"name": "主录像机"})).status_code == 200
    await p.registry.apply([DeviceInfoReported(NVR, at(102), "NVR-DEFAULT", "Hik", None, None, None, None)])
    row = await device_row(p, NVR)
    assert row is not None and (row.name, row.manufacturer) == ("主录像机", "Hik")
    r = await p.client.patch(f"/api/devices/{NVR}/channels/{CA1}", headers=h, json={"org_node_id": 99999})
    assert r.status_code == 422 and r.json()["error"] == "bad_org_node"
    r = await p.client.patch(f"/api/devices/{NVR}/channels/34020000001310009999", headers=h, json={"name": "n"})
    assert r.status_code == 404


async def test_list_sort_order_and_counts(portal: Portal) -> None:
    p, h = portal, await admin(portal)
    for device_id, name in ((DEV, "b"), (DEV2, "c"), (DEV3, "a")):
        assert (await p.client.post("/api/devices", headers=h, json={"device_id": device_id, "name": name})
                ).status_code == 201
    await p.registry.apply([registered(DEV2, at(0)), CatalogReported(DEV2, at(1), (
        ChannelInfo(CH, status="ON"), ChannelInfo("34020000001310000502", status="OFF")), True, "2/2")])
    _, page = await p.registry.list_devices(sort="name", order="desc")
    assert [d.device_id for d in page] == [DEV2, DEV, DEV3]
    _, page = await p.registry.list_devices(sort="device_id", order="desc")
    assert [d.device_id for d in page] == [DEV2, DEV, DEV3]
    _, page = await p.registry.list_devices(sort="last_seen", order="desc")
    assert page[0].device_id == DEV2  # devices never seen come last
    assert (await p.client.delete(f"/api/devices/{DEV}", headers=h)).status_code == 204
    total, page = await p.registry.list_devices(sort="name")
    assert total == 2 and [d.device_id for d in page] == [DEV3, DEV2]
    out = (await p.client.get(f"/api/devices/{DEV2}", headers=h)).json()
    assert (out["channels_online"], out["channels_total"]) == (1, 2)


async def test_batch_move_and_delete(audited: Portal) -> None:
    p, h = audited, await admin(audited)
    tree = await build_tree(p.registry)
    for device_id in (DEV, DEV2, DEV3):
        await p.client.post("/api/devices", headers=h, json={"device_id": device_id, "name": device_id[-3:]})
    r = await p.client.post("/api/devices/batch", headers=h, json={
        "action": "move", "device_ids": [DEV, DEV2, "34020000001320009999"], "org_node_id": tree.vb})
    assert [(x["ok"], x["code"]) for x in r.json()["results"]] == [(True, None), (True, None),
                                                                     (False, "device_not_found")]
    assert (await p.client.get(f"/api/devices/{DEV}", headers=h)).json()["org_node_id"] == tree.vb
    r = await p.client.post("/api/devices/batch", headers=h, json={"action": "move", "device_ids": [DEV],
                                                                    "org_node_id": 99999})
    assert r.status_code == 422 and r.json()["error"] == "bad_org_node"

    await p.registry.apply([registered(DEV3, at(0))])
    p.sip.online.add(DEV3)
    r = await p.client.post("/api/devices/batch", headers=h, json={"action": "delete", "device_ids": [DEV, DEV3]})
    assert [(x["device_id"], x["ok"], x["code"]) for x in r.json()["results"]] == [
        (DEV, True, None), (DEV3, False, "device_online")]
    assert p.sip.passwords[DEV] is None and (await p.client.get(f"/api/devices/{DEV}", headers=h)).status_code == 404
    r = await p.client.post("/api/devices/batch", headers=h, json={"action": "catalog_sync", "device_ids": [DEV3, DEV2]})
    assert [(x["ok"], x["code"]) for x in r.json()["results"]] == [(True, None), (False, "device_offline")]
    assert p.sip.started == [DEV3]
    r = await p.client.post("/api/devices/batch", headers=h,
                            json={"action": "delete", "device_ids": [DEV3], "force": True})
    assert r.json()["results"][0]["ok"] is True
    batches = [d for a, _, d in await audit_rows(p) if a == "device.batch"]
    assert [(b["action"], b["device_ids"], b["failed"]) for b in batches] == [
        ("move", [DEV, DEV2], 1), ("delete", [DEV], 1), ("catalog_sync", [DEV3], 1), ("delete", [DEV3], 0)]
    r = await p.client.post("/api/devices/batch", headers=h, json={"action": "delete", "device_ids": []})
    assert r.status_code == 422
