"""The catalog an upper gets: order, ParentID / BusinessGroupID rules, overrides, status."""

from __future__ import annotations

from datetime import timedelta

from device_registry.events import ChannelStatusChanged, DeviceWentOffline

from .conftest import (
    ACTOR,
    CAM1,
    CAM2,
    CAM3,
    CAM4,
    CAM5,
    CITY,
    GROUP,
    LOCAL_ID,
    NVR_A,
    NVR_B,
    REGION,
    T0,
    VO1,
    VO2,
    platform_data,
)

UP_B1 = "11000000001310000091"


async def _platform(env, tree, nodes=(REGION, GROUP), channels=None) -> int:
    pid = (await env.service.create_platform(platform_data(), actor=ACTOR))["id"]
    if channels is None:
        channels = [{"device_id": NVR_B, "channel_id": CAM1, "upward_id": UP_B1, "name": "改名",
                     "civil_code": "350100"}]
    await env.service.put_share(pid, [tree.ids[n] for n in nodes], channels, actor=ACTOR)
    return pid


async def test_order_and_parents(env, tree) -> None:
    pid = await _platform(env, tree)
    entries = await env.service.catalog_preview(pid)
    manual = f"{LOCAL_ID[:10]}216{tree.ids['manual']:07d}"
    assert [(e["kind"], e["device_id"]) for e in entries] == [
        ("system", LOCAL_ID),
        ("region", REGION), ("region", CITY),
        ("business_group", GROUP),
        ("virtual_org", VO1), ("virtual_org", VO2), ("virtual_org", manual),
        ("channel", CAM1), ("channel", CAM2), ("channel", UP_B1), ("channel", CAM3), ("channel", CAM4),
    ]
    by_id = {e["device_id"]: e for e in entries}
    system = by_id[LOCAL_ID]
    assert system["name"] == "测试平台" and system["parent_id"] is None and system["status"] == "ON"
    assert by_id[REGION]["parent_id"] is None and by_id[REGION]["name"] == "厦门市"
    assert by_id[GROUP]["parent_id"] == LOCAL_ID  # a group belongs to our system
    # a VO under the group: no ParentID, its group as BusinessGroupID; a VO under a VO: that VO as ParentID
    assert (by_id[VO1]["parent_id"], by_id[VO1]["business_group_id"]) == (None, GROUP)
    assert (by_id[VO2]["parent_id"], by_id[VO2]["business_group_id"]) == (VO1, GROUP)
    assert (by_id[manual]["parent_id"], by_id[manual]["business_group_id"]) == (VO2, GROUP)
    assert by_id[manual]["name"] == "运维手建节点"
    # channels: the nearest shared node as ParentID
    cam1 = by_id[CAM1]
    assert (cam1["parent_id"], cam1["business_group_id"]) == (VO1, GROUP)
    assert (cam1["name"], cam1["manufacturer"], cam1["model"], cam1["civil_code"], cam1["address"]) == (
        "大门 堃", "Hikvision", "DS-2CD", "350200", "一号门")
    assert (cam1["longitude"], cam1["latitude"]) == (118.1, 24.5)
    assert (cam1["parental"], cam1["register_way"], cam1["secrecy"], cam1["status"]) == (0, 1, 0, "ON")
    assert by_id[CAM2]["parent_id"] == VO2 and by_id[CAM2]["status"] == "OFF"
    assert by_id[CAM3]["parent_id"] == manual
    assert by_id[CAM4]["parent_id"] == CITY and by_id[CAM4]["civil_code"] == CITY
    # overrides win
    b1 = by_id[UP_B1]
    assert (b1["name"], b1["civil_code"], b1["parent_id"]) == ("改名", "350100", GROUP)
    assert CAM5 not in by_id  # never shared


async def test_shared_nodes_bring_their_ancestors_as_structure_only(env, tree) -> None:
    # only VO2 and CAM4 explicitly: VO2's parent VO1 and its group come along as structure (the upper must be
    # able to place VO2), but nothing under them that is not shared; CAM4's node is not shared
    pid = await _platform(env, tree, nodes=(VO2,), channels=[CAM4])
    entries = await env.service.catalog_preview(pid)
    by_id = {e["device_id"]: e for e in entries}
    order = [e["device_id"] for e in entries]
    assert order[0] == LOCAL_ID and order.index(GROUP) < order.index(VO1) < order.index(VO2)
    assert (by_id[VO2]["parent_id"], by_id[VO2]["business_group_id"]) == (VO1, GROUP)
    assert (by_id[VO1]["parent_id"], by_id[VO1]["business_group_id"]) == (None, GROUP)
    channels = {e["device_id"] for e in entries if e["kind"] == "channel"}
    assert CAM1 not in channels and CAM5 not in channels  # under the ancestors, not shared
    assert by_id[CAM4]["parent_id"] == LOCAL_ID  # none of its nodes is shared: our system
    assert by_id[CAM4]["civil_code"] == CITY  # still placed by its region


async def test_status_follows_channel_and_device(env, tree, registry) -> None:
    pid = await _platform(env, tree)
    await registry.apply([ChannelStatusChanged(NVR_A, CAM2, T0 + timedelta(seconds=5), "ON"),
                          DeviceWentOffline(NVR_B, T0 + timedelta(seconds=6), "keepalive_timeout")])
    status = {e["device_id"]: e["status"] for e in await env.service.catalog_preview(pid) if e["kind"] == "channel"}
    assert status == {CAM1: "ON", CAM2: "ON", UP_B1: "OFF", CAM3: "OFF", CAM4: "OFF"}
