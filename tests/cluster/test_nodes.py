from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.nodes import Heartbeat, LocalNodeDirectory, NodeInfo, NodeLoad, RedisNodeDirectory

from .conftest import eventually

T0 = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)


def info(node_id: str = "node-a", **kw) -> NodeInfo:
    base = dict(node_id=node_id, roles=("sip", "media"), address="10.0.0.5", http_url="http://10.0.0.5:8080",
                load=NodeLoad(streams=3, encoders=1, cpu=0.25), last_seen=T0, draining=False,
                started=T0 - timedelta(hours=1))
    base.update(kw)
    return NodeInfo(**base)


def test_json_round_trip():
    n = info()
    data = n.as_json()
    assert data == {
        "node_id": "node-a", "roles": ["sip", "media"], "address": "10.0.0.5",
        "http_url": "http://10.0.0.5:8080", "load": {"streams": 3, "encoders": 1, "cpu": 0.25},
        "last_seen": "2026-12-07T08:00:00+00:00", "draining": False, "started": "2026-12-07T07:00:00+00:00",
    }
    assert NodeInfo.from_json(data) == n
    assert NodeInfo.from_json(json.dumps(data)) == n
    assert NodeInfo.from_json(n.encode()) == n
    # an offset other than UTC is read as the same instant, in UTC
    data["last_seen"] = "2026-12-07T16:00:00+08:00"
    assert NodeInfo.from_json(data).last_seen == T0
    assert NodeInfo.from_json(data).last_seen.utcoffset() == timedelta(0)


@pytest.mark.parametrize("change", [
    {"node_id": "bad id"}, {"node_id": ""}, {"node_id": "x" * 65}, {"node_id": 5},
    {"roles": "sip"}, {"roles": [1]}, {"roles": ["a"] * 17}, {"address": None}, {"address": "a\nb"},
    {"http_url": 5}, {"load": []}, {"load": {"streams": -1}}, {"load": {"cpu": "high"}},
    {"load": {"streams": True}}, {"load": {"cpu": float("nan")}}, {"last_seen": "yesterday"},
    {"last_seen": "2026-12-07T08:00:00"}, {"started": None}, {"draining": "no"},
])
def test_invalid_fields_refused(change):
    data = info().as_json()
    data.update(change)
    with pytest.raises(ValueError):
        NodeInfo.from_json(data)


@pytest.mark.parametrize("raw", [b"\xff\xfe", b"[1,2]", "null", "{", "[" * 100000, b"x" * 20000, 42, None])
def test_garbage_refused_with_value_error(raw):
    with pytest.raises(ValueError):
        NodeInfo.from_json(raw)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
_field_values = {
    "node_id": st.text(max_size=70) | st.just("node-a"),
    "roles": st.lists(st.text(max_size=8), max_size=20) | _json,
    "address": st.text(max_size=20) | _json,
    "http_url": st.none() | st.text(max_size=20) | _json,
    "load": st.fixed_dictionaries({}, optional={"streams": _json | st.integers(), "encoders": _json,
                                                 "cpu": st.floats()}) | _json,
    "last_seen": st.datetimes(timezones=st.none() | st.timezones()).map(lambda d: d.isoformat()) | _json,
    "draining": st.booleans() | _json,
    "started": st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()) | _json,
}


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    _json,
    st.binary(max_size=200),
    st.text(max_size=200),
    st.fixed_dictionaries({}, optional=_field_values),
    st.fixed_dictionaries({}, optional=_field_values).map(json.dumps),
))
def test_from_json_raises_only_value_error(data):
    try:
        parsed = NodeInfo.from_json(data)
    except ValueError:
        return
    assert NodeInfo.from_json(parsed.as_json()) == parsed


async def test_directory_publish_list_get_remove(backend):
    d = backend.directory()
    assert await d.nodes() == []
    await d.publish(info("node-b"), 30)
    await d.publish(info("node-a", roles=("worker",)), 30)
    listed = await d.nodes()
    assert [n.node_id for n in listed] == ["node-a", "node-b"]
    assert listed[0].roles == ("worker",)
    assert await d.get("node-b") == info("node-b")
    assert await d.get("node-z") is None
    assert await d.get("bad id") is None
    await d.publish(info("node-b", draining=True), 30)  # a heartbeat replaces the entry
    assert (await d.get("node-b")).draining is True
    await d.remove("node-b")
    assert [n.node_id for n in await d.nodes()] == ["node-a"]
    assert await d.get("node-b") is None


async def test_directory_entries_expire(backend):
    d = backend.directory()
    await d.publish(info("node-a"), 0.2)
    await d.publish(info("node-b"), 30)
    assert len(await d.nodes()) == 2
    await eventually(lambda: _ids(d, ["node-b"]), timeout=3)
    assert await d.get("node-a") is None


async def _ids(d, expected):
    return [n.node_id for n in await d.nodes()] == expected


async def test_redis_index_pruned_and_garbled_entries_skipped(redis_client, keys, caplog):
    d = RedisNodeDirectory(redis_client, keys)
    await d.publish(info("node-a"), 30)
    await d.publish(info("node-gone"), 30)
    await redis_client.delete(keys("node", "node-gone"))  # expired
    # hostile content: garbage, an entry posing as another node, an index member that is no node id
    await redis_client.set(keys("node", "node-bad"), b"\xff{not json")
    await redis_client.zadd(keys("nodes"), {"node-bad": 1})
    await redis_client.set(keys("node", "node-liar"), info("node-a").encode())
    await redis_client.zadd(keys("nodes"), {"node-liar": 1, "bad id\n": 1, b"\xff\xfe": 1})
    with caplog.at_level("WARNING", logger="gbops.cluster.nodes"):
        assert [n.node_id for n in await d.nodes()] == ["node-a"]
        assert [n.node_id for n in await d.nodes()] == ["node-a"]
        assert await d.get("node-bad") is None
    warnings = [r for r in caplog.records if r.getMessage() == "cluster.node_entry_invalid"]
    assert len(warnings) == 2  # once per bad entry, not on every listing
    members = sorted(await redis_client.zrange(keys("nodes"), 0, -1))
    assert members == [b"node-a", b"node-bad", b"node-liar"]


async def test_heartbeat_publishes_and_removes_on_stop(backend):
    d = backend.directory()
    started = info("node-hb", last_seen=T0)
    beats = []

    def current():
        beats.append(1)
        return started

    hb = Heartbeat(d, current, interval=0.05, ttl=5)
    hb.start()
    first = await eventually(lambda: d.get("node-hb"))
    assert first.last_seen > T0  # stamped at each beat
    await eventually(lambda: len(beats) >= 3)
    await hb.stop()
    assert await d.get("node-hb") is None
    assert await d.nodes() == []


class _FlakyDirectory(LocalNodeDirectory):
    def __init__(self):
        super().__init__()
        self.fail = 2

    async def publish(self, info, ttl):
        if self.fail:
            self.fail -= 1
            raise ConnectionError("redis down")
        await super().publish(info, ttl)


async def test_heartbeat_survives_publish_failures():
    d = _FlakyDirectory()
    hb = Heartbeat(d, lambda: info("node-hb"), interval=0.05, ttl=5)
    hb.start()
    await eventually(lambda: d.get("node-hb"))
    assert hb.task.running and hb.task.runs >= 3
    await hb.stop()
    assert await d.get("node-hb") is None


async def test_heartbeat_stop_with_redis_down_does_not_raise(redis_prefix):
    from cluster.client import connect
    from cluster.keys import RedisKeys

    dead = connect("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    hb = Heartbeat(RedisNodeDirectory(dead, RedisKeys(redis_prefix)), lambda: info("node-hb"), interval=0.05,
                   ttl=5)
    hb.start()
    await eventually(lambda: hb.task.failures >= 2)
    assert hb.task.running
    await hb.stop()
    await dead.aclose()
