"""Each upper platform registered to by one SIP node at a time (issue 17): gbops.cascade_links.LeasedUpperLinks."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import pytest

from cluster.client import connect
from cluster.keys import RedisKeys
from cluster.lease import LeaseTable, LocalLeases, RedisLeases
from gbops.cascade_links import LeasedUpperLinks, lease_name
from ops_portal.cascade.schemas import status_out
from sip_server.gb.upper import UpperConfig

from .conftest import eventually

TTL = 0.3


def cfg(pid: int, **changes: Any) -> UpperConfig:
    base = UpperConfig(platform_id=pid, server_id=f"3402000000200000000{pid}", server_domain="3402000000",
                       host="192.0.2.10", port=5060, transport="udp", local_id="34020000002000000099",
                       username="34020000002000000099", password="secret")
    return dataclasses.replace(base, **changes)


class FakeLinks:
    """The real links as the wrapper sees them: records every call; the current set is the last one."""

    def __init__(self) -> None:
        self.calls: list[list[UpperConfig]] = []
        self.current: dict[int, UpperConfig] = {}
        self.other: list[tuple[Any, ...]] = []

    def set_upper_platforms(self, configs: list[UpperConfig]) -> None:
        self.calls.append(list(configs))
        self.current = {c.platform_id: c for c in configs}

    def upper_status(self, platform_id: int) -> dict[str, Any] | None:
        if platform_id not in self.current:
            return None
        return {"state": "registered", "last_error": None, "last_keepalive": 1.0, "registered_until": 2.0,
                "calls": 0}

    def notify_catalog(self, platform_id: int, entries: Any, *, immediate: bool = False) -> None:
        self.other.append(("notify_catalog", platform_id, list(entries), immediate))

    def upper_alarm(self, platform_id: int, device_id: str, alarm: Any) -> bool:
        self.other.append(("upper_alarm", platform_id, device_id, alarm))
        return True

    def bye_upper(self, call_id: str, reason: str) -> None:
        self.other.append(("bye_upper", call_id, reason))


class Node:
    def __init__(self, name: str, leases: Any) -> None:
        self.name = name
        self.fake = FakeLinks()
        self.links = LeasedUpperLinks(self.fake, leases, ttl=TTL)


@pytest.fixture
async def make_node():
    made: list[Node] = []

    def make(name: str, leases: Any) -> Node:
        node = Node(name, leases)
        made.append(node)
        return node

    yield make
    for node in made:
        await node.links.stop()


@pytest.fixture
def table() -> LeaseTable:
    return LeaseTable()


def two(make_node, table: LeaseTable) -> tuple[Node, Node]:
    return make_node("n1", LocalLeases("n1", table)), make_node("n2", LocalLeases("n2", table))


def holder_of(pid: int, *nodes: Node) -> Node | None:
    found = [n for n in nodes if pid in n.links.held]
    assert len(found) <= 1, f"platform {pid} held by {[n.name for n in found]}"
    return found[0] if found else None


def assert_exclusive(*nodes: Node) -> None:
    """No platform on two nodes, and each node's real links carry exactly what it holds."""
    for node in nodes:
        assert set(node.fake.current) == node.links.held
    for i, a in enumerate(nodes):
        for b in nodes[i + 1:]:
            assert not (a.links.held & b.links.held)
            assert not (set(a.fake.current) & set(b.fake.current))


async def watch_exclusive(*nodes: Node, seconds: float) -> None:
    """Check the exclusivity on every tick for ``seconds`` (renewals and standby attempts go on meanwhile)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert_exclusive(*nodes)
        await asyncio.sleep(0.01)


async def test_each_platform_on_exactly_one_node(make_node, table: LeaseTable) -> None:
    a, b = two(make_node, table)
    configs = [cfg(1), cfg(2)]
    a.links.set_upper_platforms(configs)
    b.links.set_upper_platforms(configs)
    await eventually(lambda: (a.links.held | b.links.held) == {1, 2}, timeout=TTL * 3)
    assert_exclusive(a, b)
    await watch_exclusive(a, b, seconds=TTL * 3)  # several renewals and refused attempts later: unchanged
    for pid in (1, 2):
        node = holder_of(pid, a, b)
        assert node is not None
        assert node.fake.current[pid] == cfg(pid)
        assert table.current(lease_name(pid)) == node.name
    assert all(c == sorted(c, key=lambda x: x.platform_id) for n in (a, b) for c in n.fake.calls)


async def test_stopping_the_holder_hands_the_platform_over(make_node, table: LeaseTable) -> None:
    a, b = two(make_node, table)
    a.links.set_upper_platforms([cfg(1)])
    await eventually(lambda: a.links.held == {1}, timeout=TTL * 3)
    b.links.set_upper_platforms([cfg(1)])
    await watch_exclusive(a, b, seconds=TTL)
    assert holder_of(1, a, b) is a
    await a.links.stop()
    # un-configured first, then the lease released: the other node takes over within a standby period or so
    assert a.fake.calls[-1] == [] and a.links.held == set()
    await eventually(lambda: b.links.held == {1}, timeout=TTL * 2)
    assert b.fake.current == {1: cfg(1)}
    assert table.current(lease_name(1)) == "n2"
    assert_exclusive(a, b)


async def test_a_frozen_holder_loses_the_platform_when_its_lease_expires(make_node, table: LeaseTable) -> None:
    a, b = two(make_node, table)
    a.links.set_upper_platforms([cfg(1)])
    await eventually(lambda: a.links.held == {1}, timeout=TTL * 3)
    b.links.set_upper_platforms([cfg(1)])
    await eventually(lambda: (b.links.upper_status(1) or {}).get("node_id") == "n1", timeout=TTL * 3)
    for role in a.links._roles.values():
        role._task.cancel()  # a freezes: no renewal, no release
    assert table.current(lease_name(1)) == "n1"  # still a's until the ttl runs out
    await eventually(lambda: b.links.held == {1}, timeout=TTL * 4)
    assert b.fake.current == {1: cfg(1)}
    assert table.current(lease_name(1)) == "n2"
    await a.links.stop()  # a wakes up: it lets the platform go and cannot release b's lease
    assert a.fake.current == {}
    assert table.current(lease_name(1)) == "n2"


async def test_removing_a_platform_unconfigures_it_and_releases_its_lease(make_node, table: LeaseTable) -> None:
    a, b = two(make_node, table)
    a.links.set_upper_platforms([cfg(1), cfg(2)])
    await eventually(lambda: a.links.held == {1, 2}, timeout=TTL * 3)
    b.links.set_upper_platforms([cfg(2)])
    await eventually(lambda: (b.links.upper_status(2) or {}).get("node_id") == "n1", timeout=TTL * 3)
    a.links.set_upper_platforms([cfg(1)])
    assert a.fake.calls[-1] == [cfg(1)]  # at once, before the lease goes
    assert a.links.held == {1} and a.links.upper_status(2) is None
    await eventually(lambda: table.current(lease_name(2)) != "n1", timeout=TTL * 2)
    await eventually(lambda: b.links.held == {2}, timeout=TTL * 2)  # the node still wanting it takes it
    assert b.fake.current == {2: cfg(2)}
    await watch_exclusive(a, b, seconds=TTL)
    assert a.fake.current == {1: cfg(1)}


async def test_removed_lease_is_released_without_another_node(make_node, table: LeaseTable) -> None:
    a = make_node("n1", LocalLeases("n1", table))
    a.links.set_upper_platforms([cfg(1), cfg(2)])
    await eventually(lambda: a.links.held == {1, 2}, timeout=TTL * 3)
    a.links.set_upper_platforms([])
    assert a.fake.calls[-1] == [] and a.links.held == set()
    await eventually(lambda: not table.current(lease_name(1)) and not table.current(lease_name(2)), timeout=TTL)


async def test_a_platform_added_again_at_once_keeps_its_lease(make_node, table: LeaseTable) -> None:
    a = make_node("n1", LocalLeases("n1", table))
    a.links.set_upper_platforms([cfg(1)])
    await eventually(lambda: a.links.held == {1}, timeout=TTL * 3)
    a.links.set_upper_platforms([])
    a.links.set_upper_platforms([cfg(1)])  # the old role is still releasing
    await eventually(lambda: a.links.held == {1}, timeout=TTL * 3)
    role = a.links._roles[1]
    calls = len(a.fake.calls)
    await asyncio.sleep(TTL)  # three renewals: the old role's release must not have taken the new lease
    assert role.held and role.losses == 0 and role.acquisitions == 1
    assert len(a.fake.calls) == calls and a.fake.current == {1: cfg(1)}
    assert table.current(lease_name(1)) == "n1"


async def test_a_changed_config_of_a_held_platform_is_applied_again(make_node, table: LeaseTable) -> None:
    a, b = two(make_node, table)
    a.links.set_upper_platforms([cfg(1)])
    await eventually(lambda: a.links.held == {1}, timeout=TTL * 3)
    b.links.set_upper_platforms([cfg(1)])
    await eventually(lambda: (b.links.upper_status(1) or {}).get("node_id") == "n1", timeout=TTL * 3)
    calls_a, calls_b = len(a.fake.calls), len(b.fake.calls)
    a.links.set_upper_platforms([cfg(1)])  # the same: nothing to do
    assert len(a.fake.calls) == calls_a
    changed = cfg(1, host="192.0.2.20", password="another")
    a.links.set_upper_platforms([changed])
    b.links.set_upper_platforms([changed])
    assert a.fake.calls[calls_a:] == [[changed]]
    assert len(b.fake.calls) == calls_b  # not held there: nothing reaches its links
    await a.links.stop()
    await eventually(lambda: b.links.held == {1}, timeout=TTL * 2)
    assert b.fake.current == {1: changed}  # the new holder registers with the changed config


async def test_upper_status_names_the_other_node(make_node, table: LeaseTable) -> None:
    a, b = two(make_node, table)
    a.links.set_upper_platforms([cfg(1)])
    await eventually(lambda: a.links.held == {1}, timeout=TTL * 3)
    b.links.set_upper_platforms([cfg(1)])
    await eventually(lambda: (b.links.upper_status(1) or {}).get("state") == "other_node", timeout=TTL * 3)
    await eventually(lambda: b.links.upper_status(1)["node_id"] == "n1", timeout=TTL * 3)
    assert b.links.upper_status(1) == {"state": "other_node", "node_id": "n1", "last_error": None,
                                       "last_keepalive": None, "registered_until": None, "calls": 0}
    assert a.links.upper_status(1) == a.fake.upper_status(1)
    assert a.links.upper_status(1)["state"] == "registered"
    assert a.links.upper_status(9) is None and b.links.upper_status(9) is None
    st = b.links.status()
    assert st["node_id"] == "n2" and st["held"] == [] and st["platforms"][1]["holder"] == "n1"
    assert st["platforms"][1]["lease"] == "cascade:1" and st["platforms"][1]["role"]["running"]
    await a.links.stop()
    await eventually(lambda: b.links.upper_status(1) == b.fake.upper_status(1) is not None, timeout=TTL * 2)


async def test_set_before_start_outside_the_event_loop(make_node, table: LeaseTable) -> None:
    a = make_node("n1", LocalLeases("n1", table))
    await asyncio.to_thread(a.links.set_upper_platforms, [cfg(1)])  # no running loop there: nothing starts
    await asyncio.sleep(TTL / 3)
    assert a.links.held == set() and table.current(lease_name(1)) is None
    await a.links.start()
    await eventually(lambda: a.links.held == {1}, timeout=TTL * 3)
    assert a.fake.current == {1: cfg(1)}
    await a.links.stop()
    assert a.fake.calls[-1] == [] and table.current(lease_name(1)) is None
    a.links.set_upper_platforms([cfg(1), cfg(2)])  # stopped: recorded, not taken
    await asyncio.sleep(TTL / 3)
    assert a.links.held == set() and table.current(lease_name(2)) is None
    await a.links.start()
    await eventually(lambda: a.links.held == {1, 2}, timeout=TTL * 3)


async def test_other_calls_go_to_the_real_links(make_node, table: LeaseTable) -> None:
    a = make_node("n1", LocalLeases("n1", table))
    a.links.notify_catalog(1, [])
    a.links.notify_catalog(1, [], immediate=True)
    assert a.links.upper_alarm(1, "34020000001320000001", "alarm") is True
    a.links.bye_upper("call-1", "gone")
    assert a.fake.other == [("notify_catalog", 1, [], False), ("notify_catalog", 1, [], True),
                            ("upper_alarm", 1, "34020000001320000001", "alarm"), ("bye_upper", "call-1", "gone")]


async def test_redis_one_node_per_platform(redis_url: str, redis_prefix: str, make_node) -> None:
    client = connect(redis_url)
    try:
        keys = RedisKeys(redis_prefix)
        a = make_node("n1", RedisLeases(client, keys, "n1"))
        b = make_node("n2", RedisLeases(client, keys, "n2"))
        configs = [cfg(1), cfg(2), cfg(3)]
        a.links.set_upper_platforms(configs)
        b.links.set_upper_platforms(configs)
        await eventually(lambda: (a.links.held | b.links.held) == {1, 2, 3}, timeout=TTL * 4)
        await watch_exclusive(a, b, seconds=TTL * 2)
        observer = RedisLeases(client, keys, "observer")
        for pid in (1, 2, 3):
            node = holder_of(pid, a, b)
            assert node is not None and await observer.holder(lease_name(pid)) == node.name
        first = holder_of(1, a, b)
        other = b if first is a else a
        await first.links.stop()
        await eventually(lambda: other.links.held == {1, 2, 3}, timeout=TTL * 3)
        assert set(other.fake.current) == {1, 2, 3} and first.fake.current == {}
        assert await observer.holder(lease_name(1)) == other.name
        await other.links.stop()
        assert await observer.holder(lease_name(1)) is None
    finally:
        await client.aclose()


def test_status_schema_carries_other_node_and_node_id() -> None:
    out = status_out(4, {"state": "other_node", "node_id": "sip-2", "last_error": None, "last_keepalive": None,
                         "registered_until": None, "streams": []})
    assert out.state == "other_node" and out.node_id == "sip-2"
    assert out.model_dump()["node_id"] == "sip-2"
    unknown = status_out(4, {"state": "other_node", "node_id": None})
    assert unknown.state == "other_node" and unknown.node_id is None
    # every existing behaviour: the other states pass, an unknown one is offline, node_id only with other_node
    for state in ("registered", "registering", "offline", "disabled"):
        out = status_out(4, {"state": state, "node_id": "sip-2"})
        assert out.state == state and out.node_id is None
    assert status_out(4, {"state": "weird"}).state == "offline"
    assert status_out(4, None).state == "offline" and status_out(4, None).node_id is None


async def test_events_of_this_nodes_devices_are_forwarded_to_the_holder(make_node, table: LeaseTable) -> None:
    """Only the node a device registered at hears its alarms and catalog changes: for an upper held by another
    node they travel over the bus to the holder, which sends them; a node that holds nothing forwards nothing
    to itself, and the holder refuses a malformed forward."""
    from cluster.bus import LocalCommandBus, LocalNetwork, RemoteError
    from gbops.cascade_links import FORWARD
    from sip_server.gb.manscdp import Alarm, MobilePosition
    from sip_server.gb.upper import CatalogEntry

    network = LocalNetwork()
    a, b = two(make_node, table)
    for node in (a, b):
        bus = LocalCommandBus(node.name, network)
        await bus.start()
        node.links.serve(bus)
    a.links.set_upper_platforms([cfg(1)])
    await eventually(lambda: a.links.held == {1}, timeout=TTL * 3)
    b.links.set_upper_platforms([cfg(1)])
    await eventually(lambda: b.links.upper_status(1)["node_id"] == "n1", timeout=TTL * 3)

    entry = CatalogEntry(device_id="34020000001310000001", name="东门", kind="channel", status="OFF", event="OFF")
    alarm = Alarm("34020000001340000001", 5, 1, 5, "2026-12-07T20:00:00", "越界", 108.9, 34.2, 2,
                  raw={"AlarmType": "2"})
    position = MobilePosition("34020000001320000001", 6, "2026-12-07T20:00:01", 108.9, 34.2, 1.0, 90.0, None)
    b.links.notify_catalog(1, [entry])
    assert b.links.upper_alarm(1, "34020000001340000001", alarm) is True
    assert b.links.upper_position(1, "34020000001320000001", position) is True
    await eventually(lambda: len(a.fake.other) == 2, timeout=2)
    assert a.fake.other == [("notify_catalog", 1, [entry], False), ("upper_alarm", 1, "34020000001340000001", alarm)]
    assert b.fake.other == []  # nothing sent from the node that does not hold the upper
    # FakeLinks has no upper_position: the holder's failure is logged by the sender, nothing else breaks
    a.links.notify_catalog(1, [entry], immediate=True)  # the holder sends its own
    assert a.fake.other[-1] == ("notify_catalog", 1, [entry], True)

    caller = LocalCommandBus("x", network)
    await caller.start()
    for bad in ({"op": "teleboot", "platform_id": 1}, {"op": "alarm", "platform_id": "1"},
                {"op": "alarm", "platform_id": 1, "device_id": "34020000001340000001", "alarm": {"nope": 1}}):
        with pytest.raises(RemoteError):
            await caller.call("n1", FORWARD, bad, timeout=2)
    assert (await caller.call("n2", FORWARD, {"op": "notify_catalog", "platform_id": 1, "entries": []},
                              timeout=2)) == {"sent": False}  # n2 does not hold it
