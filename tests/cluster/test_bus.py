from __future__ import annotations

import asyncio
import json
import time

import pytest

from cluster.bus import CommandTimeout, LocalCommandBus, NodeUnavailable, RedisCommandBus, RemoteError

from .conftest import eventually


async def two_nodes(backend, **kwargs):
    a, b = backend.bus("node-a", **kwargs), backend.bus("node-b", **kwargs)
    for bus in (a, b):
        await bus.start()
    return a, b


async def test_request_reply(backend):
    a, b = await two_nodes(backend)
    seen = []

    async def ptz(payload):
        seen.append(payload)
        return {"ok": True, "device": payload["device_id"], "名称": "前门"}

    b.register("device.ptz", ptz)
    reply = await a.call("node-b", "device.ptz", {"device_id": "34020000001320000001", "speed": 3}, timeout=5)
    assert reply == {"ok": True, "device": "34020000001320000001", "名称": "前门"}
    assert seen == [{"device_id": "34020000001320000001", "speed": 3}]
    # a node calls itself the same way
    b.register("ping", lambda p: _echo(p))
    assert await b.call("node-b", "ping", {"n": 1}, timeout=5) == {"n": 1}


async def _echo(payload):
    return payload


async def test_typed_errors_round_trip(backend, caplog):
    a, b = await two_nodes(backend)

    async def offline(payload):
        raise RemoteError("device_offline", "设备离线 / device offline")

    async def broken(payload):
        raise KeyError("secret-internal-detail")

    async def not_a_dict(payload):
        return ["x"]

    b.register("offline", offline)
    b.register("broken", broken)
    b.register("bad_result", not_a_dict)
    with pytest.raises(RemoteError) as err:
        await a.call("node-b", "offline", {}, timeout=5)
    assert (err.value.code, err.value.message) == ("device_offline", "设备离线 / device offline")
    with caplog.at_level("ERROR", logger="gbops.cluster.bus"):
        with pytest.raises(RemoteError) as err:
            await a.call("node-b", "broken", {}, timeout=5)
    assert err.value.code == "internal"
    assert "KeyError" in err.value.message and "Traceback" not in err.value.message
    assert any(r.getMessage() == "cluster.handler_failed" and r.exc_info for r in caplog.records)
    with pytest.raises(RemoteError) as err:
        await a.call("node-b", "bad_result", {}, timeout=5)
    assert err.value.code == "internal"
    with pytest.raises(RemoteError) as err:
        await a.call("node-b", "no.such.method", {}, timeout=5)
    assert err.value.code == "unknown_method"


async def test_timeout(backend):
    a, b = await two_nodes(backend)
    release = asyncio.Event()

    async def slow(payload):
        await release.wait()
        return {}

    b.register("slow", slow)
    with pytest.raises(CommandTimeout):
        await a.call("node-b", "slow", {}, timeout=0.3)
    release.set()
    b.register("fast", _echo)
    assert await a.call("node-b", "fast", {"x": 1}, timeout=5) == {"x": 1}  # the bus is still fine


async def test_node_unavailable_at_once(backend):
    a, b = await two_nodes(backend)
    started = time.monotonic()
    with pytest.raises(NodeUnavailable):
        await a.call("node-x", "ping", {}, timeout=30)
    with pytest.raises(NodeUnavailable):
        await a.call("bad id", "ping", {}, timeout=30)
    await b.close()
    with pytest.raises(NodeUnavailable):
        await a.call("node-b", "ping", {}, timeout=30)
    assert time.monotonic() - started < 30  # no waiting for the timeout


async def test_concurrent_calls_run_concurrently(backend):
    a, b = await two_nodes(backend)
    active, peak = [0], [0]
    gate = asyncio.Event()

    async def work(payload):
        active[0] += 1
        peak[0] = max(peak[0], active[0])
        if active[0] >= 10:
            gate.set()
        await gate.wait()  # every handler waits for all ten: only concurrency lets them finish
        active[0] -= 1
        return {"n": payload["n"]}

    b.register("work", work)
    replies = await asyncio.gather(*(a.call("node-b", "work", {"n": i}, timeout=10) for i in range(10)))
    assert [r["n"] for r in replies] == list(range(10))
    assert peak[0] == 10


async def test_concurrency_is_bounded(backend):
    a, b = await two_nodes(backend, concurrency=2)
    active, peak = [0], [0]

    async def work(payload):
        active[0] += 1
        peak[0] = max(peak[0], active[0])
        await asyncio.sleep(0.05)
        active[0] -= 1
        return {}

    b.register("work", work)
    await asyncio.gather(*(a.call("node-b", "work", {}, timeout=10) for _ in range(6)))
    assert peak[0] == 2


async def test_bad_arguments(backend):
    a, b = await two_nodes(backend)
    b.register("echo", _echo)
    with pytest.raises(ValueError):
        await a.call("node-b", "echo", {"x": object()}, timeout=5)
    with pytest.raises(ValueError):
        await a.call("node-b", "echo", {"big": "x" * (1024 * 1024 + 1)}, timeout=5)
    with pytest.raises(ValueError):
        await a.call("node-b", "echo", ["not a dict"], timeout=5)
    with pytest.raises(ValueError):
        await a.call("node-b", "echo", {}, timeout=0)
    with pytest.raises(ValueError):
        a.register("bad method", _echo)


async def test_publish_subscribe(backend):
    a, b = await two_nodes(backend)
    got_a, got_b, other = [], [], []
    a.subscribe("devices", got_a.append)
    b.subscribe("devices", got_b.append)
    b.subscribe("devices", lambda p: 1 / 0)  # a failing callback is logged, the others still get it
    b.subscribe("alarms", other.append)
    await _subscribed(backend, a, b)
    await a.publish("devices", {"device_id": "34020000001320000001", "online": False})
    await eventually(lambda: got_a and got_b)
    assert got_a == got_b == [{"device_id": "34020000001320000001", "online": False}]
    assert other == []


async def _subscribed(backend, *buses):
    if backend.kind != "redis":
        return
    for bus in buses:
        await eventually(lambda bus=bus: bus._subscribed == set(bus.subscriptions))


# ---------------------------------------------------------------------------------------------- Redis only
async def _push(redis_client, keys, node_id, request):
    raw = request if isinstance(request, bytes) else json.dumps(request).encode()
    await redis_client.lpush(keys("rpc", node_id), raw)


async def test_late_request_is_dropped(redis_client, keys):
    b = RedisCommandBus(redis_client, keys, "node-b")
    ran = []

    async def act(payload):
        ran.append(payload)
        return {}

    b.register("act", act)
    await _push(redis_client, keys, "node-b", {"id": "late1", "method": "act", "payload": {"n": 1},
                                              "reply_to": "node-a", "deadline": time.time() - 1})
    await _push(redis_client, keys, "node-b", {"id": "ontime1", "method": "act", "payload": {"n": 2},
                                              "reply_to": "node-a", "deadline": time.time() + 30})
    await b.start()
    try:
        await eventually(lambda: redis_client.exists(keys("reply", "ontime1")))
        assert ran == [{"n": 2}]
        assert b.dropped == 1
        assert not await redis_client.exists(keys("reply", "late1"))
    finally:
        await b.close()


async def test_requests_are_served_in_arrival_order(redis_client, keys):
    b = RedisCommandBus(redis_client, keys, "node-b", concurrency=1)
    order = []

    async def act(payload):
        order.append(payload["n"])
        return {}

    b.register("act", act)
    for n in range(5):
        await _push(redis_client, keys, "node-b", {"id": f"r{n}", "method": "act", "payload": {"n": n},
                                                  "reply_to": "node-a", "deadline": time.time() + 30})
    await b.start()
    try:
        await eventually(lambda: len(order) == 5)
        assert order == [0, 1, 2, 3, 4]
    finally:
        await b.close()


async def test_hostile_requests_do_not_kill_the_loop(redis_client, keys, caplog):
    b = RedisCommandBus(redis_client, keys, "node-b")
    b.register("echo", _echo)
    await b.start()
    try:
        hostile = [
            b"\xff\xfe garbage", b"[1,2,3]", b"null", b"{" * 50000, b"x" * (1024 * 1024 + 10),
            json.dumps({"id": "a b", "method": "echo", "payload": {}, "deadline": time.time() + 30}).encode(),
            json.dumps({"id": "x1", "method": "echo", "payload": {}, "deadline": "soon"}).encode(),
            json.dumps({"id": "x2", "method": "echo", "payload": {}, "deadline": float("inf")}).encode(),
            b'{"id": "x3", "method": "echo", "payload": {}, "deadline": NaN}',
        ]
        for raw in hostile:
            await _push(redis_client, keys, "node-b", raw)
        # a well-formed id with a malformed body gets a reply saying so
        await _push(redis_client, keys, "node-b", {"id": "x4", "method": 5, "payload": [],
                                                  "deadline": time.time() + 30})
        await eventually(lambda: b.dropped == len(hostile))
        reply = await redis_client.blpop([keys("reply", "x4")], timeout=5)
        assert json.loads(reply[1])["code"] == "bad_request"
        a = RedisCommandBus(redis_client, keys, "node-a")
        assert await a.call("node-b", "echo", {"still": "alive"}, timeout=5) == {"still": "alive"}
        assert b.status()["running"] and b.status()["handled"] >= 1
    finally:
        await b.close()


async def test_hostile_reply_is_a_bus_error(redis_client, keys):
    """A forged or garbled reply (anyone can push on a reply key) is refused, never trusted."""
    from cluster.bus import BusError

    await redis_client.set(keys("bus", "node-b"), b"1", px=30000)  # node-b looks alive; the test answers
    a = RedisCommandBus(redis_client, keys, "node-a")
    for reply, code in ((b"\xff not json", "bad_reply"), (b'{"ok": true, "result": 5}', "bad_reply"),
                        (b'{"ok": false, "code": "x y\\n", "message": 7}', "internal")):
        call = asyncio.ensure_future(a.call("node-b", "act", {}, timeout=5))
        item = await redis_client.brpop([keys("rpc", "node-b")], timeout=5)
        request = json.loads(item[1])
        assert request["method"] == "act" and request["reply_to"] == "node-a"
        await redis_client.lpush(keys("reply", request["id"]), reply)
        with pytest.raises(BusError) as err:
            await call
        assert err.value.code == code


async def test_liveness_key_follows_the_bus(redis_client, keys):
    b = RedisCommandBus(redis_client, keys, "node-b", liveness_ttl=30)
    assert not await redis_client.exists(keys("bus", "node-b"))
    await b.start()
    pttl = await redis_client.pttl(keys("bus", "node-b"))
    assert 0 < pttl <= 30000
    await b.close()
    assert not await redis_client.exists(keys("bus", "node-b"))
    await b.close()  # twice is fine


async def test_hostile_broadcast_is_skipped(redis_client, keys):
    b = RedisCommandBus(redis_client, keys, "node-b")
    got = []
    b.subscribe("devices", got.append)
    await b.start()
    try:
        await eventually(lambda: b._subscribed == {"devices"})
        for raw in (b"\xff", b"[1]", b"{" * 10000):
            await redis_client.publish(keys("topic", "devices"), raw)
        await b.publish("devices", {"ok": 1})
        await eventually(lambda: got)
        assert got == [{"ok": 1}]
    finally:
        await b.close()


async def test_subscribe_after_start(redis_client, keys):
    b = RedisCommandBus(redis_client, keys, "node-b")
    await b.start()
    try:
        got = []
        b.subscribe("late", got.append)
        await eventually(lambda: b._subscribed == {"late"})
        await b.publish("late", {"n": 1})
        await eventually(lambda: got == [{"n": 1}])
    finally:
        await b.close()


async def test_publish_failure_is_not_raised(redis_prefix):
    from cluster.client import connect
    from cluster.keys import RedisKeys

    dead = connect("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    bus = RedisCommandBus(dead, RedisKeys(redis_prefix), "node-a")
    await bus.publish("devices", {"n": 1})  # best effort: logged
    from cluster.bus import BusError

    with pytest.raises(BusError) as err:  # a caller catches BusError only, whatever went wrong
        await bus.call("node-b", "ping", {}, timeout=1)
    assert err.value.code == "bus_unavailable"
    with pytest.raises(Exception):  # noqa: B017 - start must tell that Redis is unreachable
        await bus.start()
    await dead.aclose()


# ---------------------------------------------------------------------------------------------- memory only
async def test_local_payload_is_a_copy_and_unknown_network_node():
    a = LocalCommandBus("node-a")
    await a.start()
    got = []

    async def keep(payload):
        got.append(payload)
        payload["mutated"] = True
        return {"v": [1]}

    a.register("keep", keep)
    sent = {"x": 1}
    assert await a.call("node-a", "keep", sent, timeout=1) == {"v": [1]}
    assert sent == {"x": 1}
    other = LocalCommandBus("node-b")  # another network: invisible
    await other.start()
    with pytest.raises(NodeUnavailable):
        await other.call("node-a", "keep", {}, timeout=1)
    with pytest.raises(ValueError):
        await LocalCommandBus("node-a", a.network).start()  # one id per network
    await a.close()
    await other.close()


async def test_waits_longer_than_the_command_timeout(redis_url, keys):
    """Blocking pops must not be cut by the socket read timeout of plain commands."""
    from cluster.client import connect

    client = connect(redis_url, socket_timeout=0.3)
    a = RedisCommandBus(client, keys, "node-a", poll=1.0)
    b = RedisCommandBus(client, keys, "node-b", poll=1.0)
    await a.start()
    await b.start()

    async def slow(payload):
        await asyncio.sleep(0.8)  # the work itself takes this long: longer than the read timeout
        return {"done": True}

    b.register("slow", slow)
    try:
        assert await a.call("node-b", "slow", {}, timeout=5) == {"done": True}
        assert await a.call("node-b", "slow", {}, timeout=5) == {"done": True}  # the loop survived its poll
    finally:
        await a.close()
        await b.close()
        await client.aclose()


async def test_a_burst_beyond_the_pools_waits_instead_of_failing(backend):
    kwargs = {"max_calls": 4} if backend.kind == "redis" else {}
    a, b = await two_nodes(backend, **kwargs)
    b.register("echo", _echo)
    replies = await asyncio.gather(*(a.call("node-b", "echo", {"n": i}, timeout=20) for i in range(300)))
    assert [r["n"] for r in replies] == list(range(300))
