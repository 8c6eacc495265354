from __future__ import annotations

import asyncio

import pytest

from cluster.lease import LeaseTable, LocalLeases

from .conftest import eventually


async def test_lease_is_exclusive(backend):
    a, b = backend.leases("node-a"), backend.leases("node-b")
    assert await a.acquire("job:reports", 5)
    assert not await b.acquire("job:reports", 5)
    assert await a.acquire("job:reports", 5)  # already ours: True again
    assert await a.holder("job:reports") == "node-a"
    assert await b.holder("job:reports") == "node-a"
    assert await b.acquire("job:tickets", 5)  # another name is independent


async def test_only_the_owner_renews_and_releases(backend):
    a, b = backend.leases("node-a"), backend.leases("node-b")
    assert await a.acquire("stream:dev/ch", 5)
    assert not await b.renew("stream:dev/ch", 5)
    assert not await b.release("stream:dev/ch")
    assert await b.holder("stream:dev/ch") == "node-a"
    assert await a.renew("stream:dev/ch", 5)
    assert await a.release("stream:dev/ch")
    assert await a.holder("stream:dev/ch") is None
    assert not await a.renew("stream:dev/ch", 5)  # released: not ours any more
    assert not await a.release("stream:dev/ch")
    assert await b.acquire("stream:dev/ch", 5)


async def test_expired_lease_is_taken_over_and_old_owner_cannot_renew(backend):
    a, b = backend.leases("node-a"), backend.leases("node-b")
    assert await a.acquire("job:backups", 0.2)
    assert not await b.acquire("job:backups", 5)
    await eventually(lambda: b.acquire("job:backups", 5), timeout=3)
    assert await a.holder("job:backups") == "node-b"
    assert not await a.renew("job:backups", 5)
    assert not await a.release("job:backups")
    assert await b.holder("job:backups") == "node-b"


async def test_acquire_by_owner_refreshes_the_ttl(backend):
    a, b = backend.leases("node-a"), backend.leases("node-b")
    assert await a.acquire("job:quality", 0.3)
    assert await a.acquire("job:quality", 30)  # ours: now 30 s
    await asyncio.sleep(0.5)  # past the first ttl (a wait for a non-event: nothing to poll)
    assert not await b.acquire("job:quality", 5)
    assert await b.holder("job:quality") == "node-a"


async def test_bad_arguments_refused(backend):
    a = backend.leases("node-a")
    for ttl in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            await a.acquire("job:x", ttl)
    with pytest.raises(ValueError):
        await a.acquire("job x", 5)
    with pytest.raises(ValueError):
        await a.acquire("", 5)


async def test_local_leases_expire_by_the_injected_clock():
    now = [100.0]
    table = LeaseTable(clock=lambda: now[0])
    a, b = LocalLeases("node-a", table), LocalLeases("node-b", table)
    assert await a.acquire("job:audit-checkpoint", 10)
    now[0] += 9.9
    assert not await b.acquire("job:audit-checkpoint", 10)
    assert await a.renew("job:audit-checkpoint", 10)
    now[0] += 9.9
    assert await a.holder("job:audit-checkpoint") == "node-a"
    now[0] += 0.2
    assert await a.holder("job:audit-checkpoint") is None
    assert await b.acquire("job:audit-checkpoint", 10)
    assert not await a.renew("job:audit-checkpoint", 10)
    # one LocalLeases alone gets a private table with the given clock
    c = LocalLeases("node-c", clock=lambda: now[0])
    assert await c.acquire("job:audit-checkpoint", 1)


async def test_only_the_owner_transfers_and_the_new_owner_then_holds_it(backend):
    a, b, c = backend.leases("node-a"), backend.leases("node-b"), backend.leases("node-c")
    assert await a.acquire("stream:dev/ch", 5)
    assert not await c.transfer("stream:dev/ch", "node-c", 5)  # not ours: nothing changes
    assert await a.holder("stream:dev/ch") == "node-a"
    assert await a.transfer("stream:dev/ch", "node-b", 5)
    assert await c.holder("stream:dev/ch") == "node-b"
    assert not await a.renew("stream:dev/ch", 5)  # the old owner has nothing left to renew or release
    assert not await a.release("stream:dev/ch")
    assert not await c.acquire("stream:dev/ch", 5)
    assert await b.renew("stream:dev/ch", 5) and await b.release("stream:dev/ch")
    assert not await a.transfer("stream:dev/ch", "node-b", 5)  # free: no one's to give
    assert await a.holder("stream:dev/ch") is None
    with pytest.raises(ValueError):
        await a.transfer("stream:dev/ch", "node-b", 0)


async def test_a_transferred_lease_keeps_the_given_ttl(backend):
    a, b = backend.leases("node-a"), backend.leases("node-b")
    assert await a.acquire("stream:dev/ch2", 30)
    assert await a.transfer("stream:dev/ch2", "node-b", 0.2)
    await eventually(lambda: a.acquire("stream:dev/ch2", 5), timeout=3)  # the short ttl given ran out
    assert await b.holder("stream:dev/ch2") == "node-a"
