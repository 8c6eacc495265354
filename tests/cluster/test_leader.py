from __future__ import annotations

import asyncio

import pytest

from cluster.client import connect
from cluster.leader import LeasedRole
from cluster.lease import RedisLeases

from .conftest import eventually

TTL = 0.6


class Service:
    """What a role runs: records its starts and stops."""

    def __init__(self, fail_start: int = 0, fail_stop: bool = False):
        self.running = False
        self.starts = 0
        self.stops = 0
        self.fail_start = fail_start
        self.fail_stop = fail_stop

    async def on_acquire(self):
        self.starts += 1
        if self.fail_start:
            self.fail_start -= 1
            raise RuntimeError("cannot start")
        self.running = True

    async def on_lost(self):
        self.stops += 1
        self.running = False
        if self.fail_stop:
            raise RuntimeError("stop failed")


def role(leases, service, name="job:reports", ttl=TTL):
    return LeasedRole(leases, name, ttl=ttl, on_acquire=service.on_acquire, on_lost=service.on_lost)


async def test_one_holder_and_takeover_on_clean_stop(backend):
    sa, sb = Service(), Service()
    ra, rb = role(backend.leases("node-a"), sa), role(backend.leases("node-b"), sb)
    ra.start()
    await eventually(lambda: ra.held)
    rb.start()
    await eventually(lambda: rb.status()["running"])
    # b keeps trying but a keeps renewing: a outlives several ttls alone
    leases_b = backend.leases("node-b")
    for _ in range(3):
        await eventually(lambda: ra.acquisitions == 1 and ra.held, timeout=TTL)
        assert await leases_b.holder("job:reports") == "node-a"
        assert not rb.held and not sb.running
        await asyncio.sleep(TTL / 2)
    assert sa.running and sa.starts == 1
    await ra.stop()  # on_lost, then release: b takes over within ttl/3
    assert not ra.held and not sa.running and sa.stops == 1
    await eventually(lambda: rb.held and sb.running, timeout=TTL * 2)
    assert await leases_b.holder("job:reports") == "node-b"
    await rb.stop()
    assert await leases_b.holder("job:reports") is None


async def test_takeover_when_the_holder_stops_renewing(backend):
    sa, sb = Service(), Service()
    ra, rb = role(backend.leases("node-a"), sa), role(backend.leases("node-b"), sb)
    ra.start()
    await eventually(lambda: ra.held)
    rb.start()
    ra._task.cancel()  # the holder freezes: no renewal, no release
    await eventually(lambda: rb.held and sb.running, timeout=TTL * 4)
    assert await backend.leases("x").holder("job:reports") == "node-b"
    await rb.stop()


async def test_renewal_refused_means_lost(backend):
    sa = Service()
    ra = role(backend.leases("node-a"), sa)
    ra.start()
    await eventually(lambda: ra.held)
    other = backend.leases("node-b")
    # the lease vanishes and another node takes it (as after an expiry during a long pause)
    assert await backend.leases("node-a").release("job:reports")
    assert await other.acquire("job:reports", 30)
    await eventually(lambda: not ra.held and not sa.running, timeout=TTL * 2)
    assert ra.losses == 1 and sa.stops == 1
    assert await other.holder("job:reports") == "node-b"
    await ra.stop()
    assert await other.holder("job:reports") == "node-b"  # stop never releases another's lease
    assert sa.stops == 1


async def test_callback_failures_never_kill_the_loop(backend):
    s = Service(fail_start=1, fail_stop=True)
    r = role(backend.leases("node-a"), s)
    r.start()
    # the first start fails: on_lost undoes it (and fails too), the lease is released, retried later
    await eventually(lambda: r.held and s.running, timeout=TTL * 4)
    assert s.starts == 2 and s.stops == 1
    assert r.running
    await r.stop()  # on_lost raises: logged
    assert not r.held and s.stops == 2
    assert await backend.leases("x").holder("job:reports") is None


@pytest.mark.parametrize("failure", ["refused", "black_hole"])
async def test_on_lost_when_redis_becomes_unreachable(redis_url, keys, redis_proxy, failure):
    """A holder cut off from Redis stops acting before its lease can expire (and be taken) elsewhere."""
    client = connect(redis_proxy.url())
    leases = RedisLeases(client, keys, "node-a")
    s = Service()
    r = LeasedRole(leases, "job:tickets", ttl=TTL, on_acquire=s.on_acquire, on_lost=s.on_lost)
    r.start()
    await eventually(lambda: r.held)
    if failure == "refused":
        await redis_proxy.cut()  # connections dropped, new ones refused
    else:
        redis_proxy.freeze()  # requests vanish, no error comes back: only the timeouts notice
    await eventually(lambda: not r.held, timeout=TTL * 3)
    assert s.stops == 1 and not s.running
    assert r.last_error is not None
    # ... while the lease, still in Redis, has not expired yet: nobody else could have taken it
    observer = connect(redis_url)
    try:
        assert await observer.get(keys("lease", "job:tickets")) == b"node-a"
        ttl_left = await observer.pttl(keys("lease", "job:tickets"))
        assert ttl_left > 0
    finally:
        await observer.aclose()
    await r.stop()
    assert s.stops == 1
    await client.aclose()


async def test_status_for_pages(backend):
    r = role(backend.leases("node-a"), Service())
    assert r.status()["held"] is False and r.status()["running"] is False
    r.start()
    await eventually(lambda: r.held)
    st = r.status()
    assert st["name"] == "job:reports" and st["held"] and st["held_since"] is not None and st["ttl"] == TTL
    await r.stop()
    assert r.status()["running"] is False
