"""What a platform sees: org nodes with their descendants, explicit channels, ids mapped both ways."""

from __future__ import annotations

import pytest

from cascade.errors import CascadeError
from cascade.registry_reads import ChannelFacts
from cascade.share import SharedChannel, resolve_share, upward_conflicts
from gbcore.ids import ChannelRef

from .conftest import ACTOR, CAM1, CAM2, CAM3, CAM4, CAM5, GROUP, LOCAL_ID, NVR_A, NVR_B, platform_data

UP_B1 = "11000000001310000091"


@pytest.fixture
async def pid(env, tree) -> int:
    return (await env.service.create_platform(platform_data(), actor=ACTOR))["id"]


async def test_group_with_descendants_needs_an_id_for_the_second_cam1(env, tree, pid) -> None:
    with pytest.raises(CascadeError) as err:
        await env.service.put_share(pid, [tree.ids[GROUP]], [], actor=ACTOR)
    assert (err.value.code, err.value.status) == ("upward_id_conflict", 409)
    assert err.value.detail["conflicts"] == [{"upward_id": CAM1, "channels": [
        {"device_id": NVR_A, "channel_id": CAM1}, {"device_id": NVR_B, "channel_id": CAM1}]}]
    assert "upward_id" in str(err.value) and "请为这些通道指定" in str(err.value)

    out = await env.service.put_share(
        pid, [tree.ids[GROUP]], [{"device_id": NVR_B, "channel_id": CAM1, "upward_id": UP_B1, "name": "改名"}],
        actor=ACTOR)
    assert out["org_nodes"] == [tree.ids[GROUP]] and out["resolved"] == 4 and out["conflicts"] == []
    assert out["channels"] == [{"device_id": NVR_B, "channel_id": CAM1, "upward_id": UP_B1, "name": "改名",
                                "civil_code": None}]
    share, _ = await env.service.share_map(pid)
    # descendants: VO1, VO2 and the operator's node under VO2
    assert {tree.ids[k] for k in (GROUP, "34020000002160000001", "34020000002160000002", "manual")} == share.org_nodes
    assert set(share.by_ref) == {ChannelRef(NVR_A, CAM1), ChannelRef(NVR_A, CAM2), ChannelRef(NVR_B, CAM1),
                                 ChannelRef(NVR_B, CAM3)}
    # both ways
    assert share.channel(CAM1) == ChannelRef(NVR_A, CAM1) and share.channel(UP_B1) == ChannelRef(NVR_B, CAM1)
    assert share.upward_id(ChannelRef(NVR_B, CAM1)) == UP_B1 and share.upward_id(ChannelRef(NVR_B, CAM5)) is None
    assert share.channel(CAM5) is None and share.channel(CAM4) is None
    (_, target, detail, actor), = env.audit.of("cascade.share")
    assert target == f"cascade:{pid}" and detail["before_count"] == 0 and detail["after_count"] == 4


async def test_plain_channel_ids(env, tree, pid) -> None:
    out = await env.service.put_share(pid, [], [CAM4, {"channel_id": CAM2}], actor=ACTOR)
    assert [(c["device_id"], c["channel_id"], c["upward_id"]) for c in out["channels"]] == [
        (NVR_A, CAM2, CAM2), (NVR_B, CAM4, CAM4)]
    with pytest.raises(CascadeError) as err:
        await env.service.put_share(pid, [], [CAM1], actor=ACTOR)
    assert (err.value.code, err.value.status) == ("channel_ambiguous", 409)
    assert err.value.detail["devices"] == [NVR_A, NVR_B] and "通道编号不唯一，请指定设备" in str(err.value)
    assert "give device_id" in str(err.value) and NVR_A in str(err.value)


async def test_unknown_things_refused(env, tree, pid) -> None:
    for nodes, channels, code in (([999999], [], "org_node_not_found"),
                                  ([], ["34020000001310000099"], "channel_not_found"),
                                  ([], [{"device_id": NVR_A, "channel_id": CAM4}], "channel_not_found")):
        with pytest.raises(CascadeError) as err:
            await env.service.put_share(pid, nodes, channels, actor=ACTOR)
        assert (err.value.code, err.value.status) == (code, 404)
    with pytest.raises(CascadeError) as err:
        await env.service.put_share(pid, [], [CAM2, {"device_id": NVR_A, "channel_id": CAM2}], actor=ACTOR)
    assert err.value.code == "duplicate_channel"
    with pytest.raises(CascadeError) as err:
        await env.service.put_share(pid, ["1"], [], actor=ACTOR)
    assert err.value.status == 422
    assert env.audit.of("cascade.share") == []


async def test_explicit_ids_collide(env, tree, pid) -> None:
    # an explicit id equal to another shared channel's default id, and our own system id
    with pytest.raises(CascadeError) as err:
        await env.service.put_share(pid, [], [CAM4, {"channel_id": CAM2, "upward_id": CAM4}], actor=ACTOR)
    assert err.value.code == "upward_id_conflict"
    with pytest.raises(CascadeError) as err:
        await env.service.put_share(pid, [], [{"channel_id": CAM2, "upward_id": LOCAL_ID}], actor=ACTOR)
    assert err.value.code == "upward_id_conflict"


def _facts(ref: ChannelRef) -> ChannelFacts:
    return ChannelFacts(ref, None, None, None, None, None, None, None, True, True, None)


def test_resolution_is_deterministic_when_a_late_channel_collides() -> None:
    a, b = ChannelRef(NVR_A, CAM1), ChannelRef(NVR_B, CAM1)
    share = resolve_share(1, frozenset({5}), {}, [_facts(b), _facts(a)])
    assert share.channel(CAM1) == a and share.conflicts == ((b, CAM1),)
    explicit = {b: SharedChannel(b, CAM1, explicit=True)}
    share = resolve_share(1, frozenset({5}), explicit, [_facts(a), _facts(b)])
    assert share.channel(CAM1) == b and share.conflicts == ((a, CAM1),)  # the explicit one keeps its id
    assert upward_conflicts([], [a, b]) == {CAM1: [a, b]}
    assert upward_conflicts([], [a], reserved={CAM1}) == {CAM1: [a]}
