"""Several SIP nodes (gbops.cluster_sip): which node restores which device, moves without an offline transition,
orphans taken over once, and a portal's device commands answered by the device's home node.

Real :class:`sip_server.service.SipService` objects (not listening: the presence and routing state is what is
tested), the in-memory bus, directory and homes of :mod:`cluster`, and a registry double that serves snapshots."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from cluster.bus import LocalCommandBus, LocalNetwork
from cluster.nodes import LocalNodeDirectory, NodeInfo, NodeLoad
from device_registry.queries import DeviceSnapshot
from gbops.cluster_media import Home, LocalDeviceHomes, RedisDeviceHomes, serve_signalling
from gbops.cluster_sip import SIP_CALL, ClusterSip, SipCluster
from sip_server.gb import events as sip_events
from sip_server.gb.manscdp import DeviceStatus
from sip_server.gb.server import GbConfig
from sip_server.service import DeviceNotReachable, QueryError, SipService

DEV = [f"3402000000132000{i:04d}" for i in range(1, 7)]


def snap(device_id: str, online: bool = True, **kw) -> DeviceSnapshot:
    now = datetime.now(UTC)
    fields = dict(device_id=device_id, online=online, register_expires_at=now + timedelta(hours=1),
                  keepalive_interval=60, last_seen=now, remote_addr="192.0.2.10:5060", transport="udp",
                  password_ha1_md5=None, password_ha1_sha256=None, password_realm=None)
    fields.update(kw)
    return DeviceSnapshot(**fields)


class Registry:
    def __init__(self, snapshots: list[DeviceSnapshot]) -> None:
        self.snapshots = {s.device_id: s for s in snapshots}

    async def snapshot(self, device_ids=None) -> list[DeviceSnapshot]:
        return [s for d, s in sorted(self.snapshots.items()) if device_ids is None or d in device_ids]


def sip_node(node_id: str) -> NodeInfo:
    return NodeInfo(node_id=node_id, roles=("sip",), address="127.0.0.1", http_url=None, load=NodeLoad())


def service() -> SipService:
    return SipService(GbConfig(default_password="Gate-7-camera#pw"), host="127.0.0.1", port=0)


async def make(name: str, network, directory, homes, registry, address: str, **kw) -> tuple[SipCluster, SipService]:
    bus = LocalCommandBus(name, network)
    sip = service()
    node = SipCluster(bus, directory, homes, sip, registry, address=address, reconcile=60, **kw)
    serve_signalling(bus, sip, homes=homes, address=address)  # sip.device, as gbops.app wires a SIP node
    await bus.start()
    await directory.publish(sip_node(name), 60)
    return node, sip


async def test_restore_takes_unclaimed_devices_once_and_leaves_another_live_nodes_devices() -> None:
    network, directory, homes = LocalNetwork(), LocalNodeDirectory(), LocalDeviceHomes()
    registry = Registry([snap(d) for d in DEV[:4]] + [snap(DEV[4], online=False)])
    await homes.set(DEV[0], "sip-b", "10.0.0.2:5060")  # registered at b, which is alive
    await homes.set(DEV[1], "gone", "10.0.0.9:5060")  # its node is gone: an orphan
    await homes.set(DEV[2], "old-a", "10.0.0.1:5060")  # a's address before its restart (a new node id)
    a, sip_a = await make("sip-a", network, directory, homes, registry, "10.0.0.1:5060")
    b, sip_b = await make("sip-b", network, directory, homes, registry, "10.0.0.2:5060")
    await directory.publish(sip_node("old-a"), 60)  # killed moments ago: still in the directory

    held_a = await a.restore()
    held_b = await b.restore()

    assert held_a == {DEV[1], DEV[2], DEV[3]}  # orphan, its own address, unclaimed (first come)
    assert held_b == {DEV[0]}  # its own; the unclaimed one went to a, not to both
    assert sorted(sip_a.held_devices()) == sorted(held_a) and sip_b.held_devices() == [DEV[0]]
    assert not sip_a.is_online(DEV[4]) and not sip_b.is_online(DEV[4])  # offline in the store: nobody's
    assert (await homes.get_many([DEV[1], DEV[3]])) == {DEV[1]: a.home, DEV[3]: a.home}
    # credentials are everyone's: a device may register at any node
    assert sip_b.gb.known >= set(DEV[:5]) and sip_a.gb.known >= set(DEV[:5])


async def test_a_device_registering_elsewhere_is_forgotten_without_an_offline_transition() -> None:
    network, directory, homes = LocalNetwork(), LocalNodeDirectory(), LocalDeviceHomes()
    registry = Registry([snap(DEV[0]), snap(DEV[1])])
    a, sip_a = await make("sip-a", network, directory, homes, registry, "10.0.0.1:5060")
    b, sip_b = await make("sip-b", network, directory, homes, registry, "10.0.0.2:5060")
    await a.restore()
    await b.restore()
    assert sorted(sip_a.held_devices()) == DEV[:2]
    events: list[object] = []
    sip_a.add_listener(events.append)

    # the device registers at b: b announces it, a forgets it at once
    for fn in sip_b._listeners:
        fn(sip_events.DeviceOnline(DEV[0], ("192.0.2.10", 5060), "udp", None, 3600, None, True))
    await asyncio.sleep(0.05)
    assert sip_a.held_devices() == [DEV[1]] and a.released == 1
    assert not any(isinstance(e, sip_events.DeviceWentOffline) for e in events)

    # a missed announcement is healed by the reconcile: the home names another live node
    await homes.set(DEV[1], "sip-b", "10.0.0.2:5060")
    await a.reconcile()
    assert sip_a.held_devices() == [] and a.released == 2
    # a home on a node that is gone, or on this node's own address, is not a reason to let go
    sip_a.restore([snap(DEV[2])], presence_of={DEV[2]})
    await homes.set(DEV[2], "gone", "10.0.0.9:5060")
    await a.reconcile()
    assert sip_a.held_devices() == [DEV[2]]


async def test_orphans_of_a_dead_node_are_adopted_by_one_node_only_after_the_grace() -> None:
    network, directory, homes = LocalNetwork(), LocalNodeDirectory(), LocalDeviceHomes()
    registry = Registry([snap(d) for d in DEV[:3]])
    for d in DEV[:3]:
        await homes.set(d, "dead", "10.0.0.3:5060")
    now = [100.0]
    a, sip_a = await make("sip-a", network, directory, homes, registry, "10.0.0.1:5060", adopt_grace=30,
                          clock=lambda: now[0])
    b, sip_b = await make("sip-b", network, directory, homes, registry, "10.0.0.2:5060", adopt_grace=30,
                          clock=lambda: now[0])
    await directory.publish(sip_node("dead"), 60)
    assert await a.restore() == set() and await b.restore() == set()  # its node is alive: not ours
    await directory.remove("dead")  # stopped: it may be restarting on its address
    assert await a.adopt_orphans() == [] and await b.adopt_orphans() == []
    now[0] += 20
    assert await a.adopt_orphans() == []  # still within the grace
    await directory.publish(sip_node("dead"), 60)  # back (a restart): the grace starts again next time
    assert await a.adopt_orphans() == [] and await b.adopt_orphans() == []
    await directory.remove("dead")
    now[0] += 20
    assert await a.adopt_orphans() == [] and await b.adopt_orphans() == []  # a new absence: a new grace
    now[0] += 31

    taken = await asyncio.gather(a.adopt_orphans(), b.adopt_orphans())
    assert sorted(taken[0] + taken[1]) == DEV[:3]  # each device once
    assert not set(taken[0]) & set(taken[1])
    assert sorted(sip_a.held_devices() + sip_b.held_devices()) == DEV[:3]
    assert await a.adopt_orphans() == [] and await b.adopt_orphans() == []  # nothing left to take


async def test_device_commands_are_answered_by_the_home_node_with_typed_failures() -> None:
    network, directory, homes = LocalNetwork(), LocalNodeDirectory(), LocalDeviceHomes()
    registry = Registry([snap(DEV[0])])
    a, sip_a = await make("sip-a", network, directory, homes, registry, "10.0.0.1:5060")
    b, sip_b = await make("sip-b", network, directory, homes, registry, "10.0.0.2:5060")
    await homes.set(DEV[0], "sip-b", "10.0.0.2:5060")
    await a.restore()
    await b.restore()
    asked: list[tuple] = []

    async def device_status(device_id, channel_id=None):
        asked.append(("status", device_id, channel_id))
        return DeviceStatus(device_id, 7, "OK", True, "OK", "ON", "OFF", "2026-12-07T20:00:00",
                            alarms=[("34020000001340000001", "OFFDUTY")])

    async def preset_query(device_id, channel_id=None, timeout=None):
        raise QueryError("设备未应答 / no answer")

    sip_b.device_status = device_status
    sip_b.preset_query = preset_query
    portal = ClusterSip(sip_a, LocalCommandBus("sip-a", network), directory, homes, timeout=2)

    assert not sip_a.is_online(DEV[0]) and await portal.online(DEV[0])  # asked of b
    assert portal.is_online(DEV[0])
    st = await portal.device_status(DEV[0], "34020000001320000009")
    assert asked == [("status", DEV[0], "34020000001320000009")]
    assert st.online is True and st.alarms == [("34020000001340000001", "OFFDUTY")]
    with pytest.raises(QueryError, match="no answer"):
        await portal.preset_query(DEV[0], None)
    from sip_server.gb.manscdp import RecordItem
    from sip_server.gb.records import RecordQuery

    async def record_info(device_id, channel_id, start, end, *, type="all", timeout=None):
        asked.append(("records", channel_id, start, end, type, timeout))
        return RecordQuery(device_id, channel_id, 9, 0.0, items=[RecordItem(channel_id, name="cam",
                           start_time="2026-12-07T08:00:00", end_time="2026-12-07T09:00:00", file_size=10)],
                           sum_num=1, complete=True, messages=1, done=True)

    async def device_control(device_id, target_id, element, value, *, wait, timeout=None, **build):
        asked.append(("control", target_id, element, value, wait, build))
        return "12", True

    sip_b.record_info, sip_b.device_control = record_info, device_control
    start = datetime(2026, 12, 7, 0, 0, tzinfo=UTC)
    found = await portal.record_info(DEV[0], "34020000001320000009", start, start + timedelta(days=1), type="time",
                                     timeout=3)
    assert asked[-1] == ("records", "34020000001320000009", start, start + timedelta(days=1), "time", 3)
    assert found.complete and found.items[0].start == datetime(2026, 12, 7, 8, 0) and found.items[0].file_size == 10
    assert await portal.device_control(DEV[0], "34020000001320000009", "PTZCmd", "A50F010800FA00B7", wait=False,
                                       preset_name="门口") == ("12", True)
    assert asked[-1] == ("control", "34020000001320000009", "PTZCmd", "A50F010800FA00B7", False,
                         {"preset_name": "门口"})
    progress = await portal.start_catalog_sync(DEV[0])  # b sends the Catalog query
    assert progress["device_id"] == DEV[0] and progress["state"] == "running"
    assert (await portal.catalog_progress(DEV[0]))["sn"] == progress["sn"]

    sip_b.release(DEV[0])  # no longer online at b
    with pytest.raises(DeviceNotReachable):
        await portal.device_status(DEV[0])
    await directory.remove("sip-b")  # b gone: the device is nowhere
    assert not await portal.online(DEV[0])
    with pytest.raises(DeviceNotReachable):
        await sip_a.device_status(DEV[0])  # and the local service is asked, which does not hold it either


async def test_a_deleted_device_is_forgotten_by_every_node() -> None:
    network, directory, homes = LocalNetwork(), LocalNodeDirectory(), LocalDeviceHomes()
    registry = Registry([snap(DEV[0])])
    a, sip_a = await make("sip-a", network, directory, homes, registry, "10.0.0.1:5060")
    b, sip_b = await make("sip-b", network, directory, homes, registry, "10.0.0.2:5060")
    await homes.set(DEV[0], "sip-a", "10.0.0.1:5060")
    await a.restore()
    await b.restore()
    assert DEV[0] in sip_a.gb.known and DEV[0] in sip_b.gb.known and sip_a.is_online(DEV[0])
    del registry.snapshots[DEV[0]]  # the operator deleted it (the store hides it from now on)
    portal = ClusterSip(sip_a, LocalCommandBus("sip-a", network), directory, homes)
    assert portal.forget_device(DEV[0]) is True
    assert DEV[0] not in sip_a.gb.known and not sip_a.is_online(DEV[0])
    for _ in range(50):
        if DEV[0] not in sip_b.gb.known:
            break
        await asyncio.sleep(0.02)
    assert DEV[0] not in sip_b.gb.known


async def test_sip_call_refuses_unknown_operations_and_bad_ids() -> None:
    from cluster.bus import RemoteError

    network, directory, homes = LocalNetwork(), LocalNodeDirectory(), LocalDeviceHomes()
    a, _ = await make("sip-a", network, directory, homes, Registry([]), "10.0.0.1:5060")
    caller = LocalCommandBus("caller", network)
    await caller.start()
    for payload in ({"op": "teleboot", "device_id": DEV[0]}, {"op": "device_status", "device_id": "../x"},
                    {"op": "record_info", "device_id": DEV[0], "channel_id": DEV[1], "start": "yesterday",
                     "end": "now"}):
        with pytest.raises(RemoteError):
            await caller.call("sip-a", SIP_CALL, payload, timeout=2)


async def test_a_password_set_on_one_node_is_reloaded_from_the_store_by_the_others() -> None:
    network, directory, homes = LocalNetwork(), LocalNodeDirectory(), LocalDeviceHomes()
    registry = Registry([snap(DEV[0])])
    a, sip_a = await make("sip-a", network, directory, homes, registry, "10.0.0.1:5060")
    b, sip_b = await make("sip-b", network, directory, homes, registry, "10.0.0.2:5060")
    await a.restore()
    await b.restore()
    reloaded: list[tuple] = []
    sip_b.forget_device = lambda d: reloaded.append((d, "forgotten"))  # a device the store does not know
    original = sip_b.restore
    sip_b.restore = lambda snaps, presence_of=None: (reloaded.append(tuple(s.device_id for s in snaps)),
                                                    original(snaps, presence_of=presence_of))
    portal = ClusterSip(sip_a, LocalCommandBus("sip-a", network), directory, homes)
    portal.set_device_password_ha1(DEV[0], {"MD5": "0" * 32})
    portal.set_device_password_ha1(DEV[5], None)
    for _ in range(50):
        if len(reloaded) == 2:
            break
        await asyncio.sleep(0.02)
    assert reloaded == [(DEV[0],), (DEV[5], "forgotten")]  # the digest from the store; a deleted one forgotten


async def test_redis_homes_claim_is_compare_and_set(redis_url: str, redis_prefix: str) -> None:
    from cluster.client import connect
    from cluster.keys import RedisKeys

    redis = connect(redis_url)
    try:
        homes = RedisDeviceHomes(redis, RedisKeys(redis_prefix), batch=2)
        a, b = Home("sip-a", "10.0.0.1:5060"), Home("sip-b", "10.0.0.2:5060")
        assert await homes.claim(DEV[0], None, a)
        assert not await homes.claim(DEV[0], None, b)  # taken meanwhile
        assert await homes.claim(DEV[0], a, b)
        await homes.set(DEV[1], "sip-a")
        await redis.set(RedisKeys(redis_prefix)("device", DEV[2]), b"bad id!|x")
        assert await homes.get_many(DEV[:4]) == {DEV[0]: b, DEV[1]: Home("sip-a")}
        assert await homes.get(DEV[0]) == "sip-b"
    finally:
        await redis.aclose()


class FakeSide:
    """A signalling side (local SipSignalling or RemoteSignalling) that records what it was asked."""

    def __init__(self, online: set[str]) -> None:
        self.online = online
        self.listeners: list = []
        self.asked: list[tuple] = []
        self.refreshed: list[str] = []

    def subscribe(self, fn) -> None:
        self.listeners.append(fn)

    def emit(self, event) -> None:
        for fn in self.listeners:
            fn(event)

    def is_online(self, device_id: str) -> bool:
        return device_id in self.online

    def route_address(self, device_id: str):
        return ("192.0.2.1", 5060) if device_id in self.online else None

    async def refresh(self, device_id: str) -> bool:
        self.refreshed.append(device_id)
        return device_id in self.online

    async def invite(self, channel, **kw):
        from media_relay.signalling import InviteAnswer

        self.asked.append(("invite", channel.device_id))
        return InviteAnswer(f"call-{len(self.asked)}-{id(self)}", kw["ssrc"], None, kw["transport"])

    def bye(self, call_id: str, reason: str) -> None:
        self.asked.append(("bye", call_id))

    def info(self, call_id: str, body: bytes, content_type: str = "Application/MANSRTSP") -> bool:
        self.asked.append(("info", call_id))
        return True


async def test_routed_signalling_uses_the_local_sip_for_its_devices_and_the_home_node_for_the_others() -> None:
    from gbcore.ids import ChannelRef
    from gbops.cluster_sip import RoutedSignalling
    from media_relay.signalling import DeviceWentOffline, SessionEnded

    local, remote = FakeSide({DEV[0]}), FakeSide({DEV[1]})
    routed = RoutedSignalling(local, remote)
    heard: list = []
    routed.subscribe(heard.append)
    kw = dict(media_ip="127.0.0.2", media_port=30000, ssrc="0100000001", transport="udp")

    await routed.prepare(DEV[0])
    await routed.prepare(DEV[1])
    assert remote.refreshed == [DEV[1]]  # the local device is not asked of anyone else
    assert routed.is_online(DEV[0]) and routed.is_online(DEV[1]) and not routed.is_online(DEV[2])
    mine = await routed.invite(ChannelRef(DEV[0], "34020000001320000009"), **kw)
    theirs = await routed.invite(ChannelRef(DEV[1], "34020000001320000009"), **kw)
    assert local.asked == [("invite", DEV[0])] and remote.asked == [("invite", DEV[1])]
    routed.info(theirs.call_id, b"PLAY")
    routed.bye(mine.call_id, "closed")
    assert local.asked[-1] == ("bye", mine.call_id) and remote.asked[-1] == ("info", theirs.call_id)

    # the cluster topic repeats this node's own events: only the remote call's and remote devices' pass
    ref = ChannelRef(DEV[0], "34020000001320000009")
    remote.emit(SessionEnded(mine.call_id, ref, "device", "echo of a local call"))
    remote.emit(DeviceWentOffline(DEV[0], "echo of a local device"))
    assert heard == []
    local.emit(SessionEnded(mine.call_id, ref, "device", "local"))
    remote.emit(SessionEnded(theirs.call_id, ChannelRef(DEV[1], ref.channel_id), "device", "remote"))
    remote.online.discard(DEV[1])
    remote.emit(DeviceWentOffline(DEV[1], "keepalive timeout"))
    assert [getattr(e, "reason", None) for e in heard] == ["local", "remote", "keepalive timeout"]
    routed.bye(theirs.call_id, "again")  # ended: no longer the remote's
    assert local.asked[-1] == ("bye", theirs.call_id)
