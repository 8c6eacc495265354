"""Registry reads, device passwords and platform runs."""

from __future__ import annotations

import hashlib

from device_registry.events import DeviceSeen, DeviceWentOffline, KeepaliveIntervalSet

from ._support import DEV, reg, t


def _id(n: int) -> str:
    return f"3402000000132{n:07d}"


async def test_list_devices_filter_search_paging(registry) -> None:
    events = [reg(_id(n), n, addr=f"10.0.{n}.1:5060") for n in range(1, 8)]
    events += [DeviceWentOffline(_id(n), t(100), "keepalive_timeout") for n in (2, 4)]
    await registry.apply(events)

    total, page = await registry.list_devices()
    assert total == 7 and [d.device_id for d in page] == [_id(n) for n in range(1, 8)]
    total, page = await registry.list_devices(offset=2, limit=3)
    assert total == 7 and [d.device_id for d in page] == [_id(3), _id(4), _id(5)]
    total, page = await registry.list_devices(online=False)
    assert total == 2 and [d.device_id for d in page] == [_id(2), _id(4)]
    total, page = await registry.list_devices(online=True, limit=2)
    assert total == 5 and len(page) == 2
    total, page = await registry.list_devices(q="10.0.6.")
    assert [d.device_id for d in page] == [_id(6)]
    total, page = await registry.list_devices(q=_id(3)[-5:])
    assert [d.device_id for d in page] == [_id(3)]
    # LIKE wildcards in the search text are literal
    assert (await registry.list_devices(q="%"))[0] == 0
    assert (await registry.list_devices(q="_"))[0] == 0


async def test_snapshot(registry) -> None:
    await registry.apply([reg(DEV, 0, expires=600), KeepaliveIntervalSet(DEV, 30), DeviceSeen(DEV, t(5))])
    await registry.set_device_password(DEV, "3402000000", "secret")
    await registry.set_device_password("34020000001320000009", "3402000000", "other")
    snaps = await registry.snapshot()
    assert [s.device_id for s in snaps] == [DEV, "34020000001320000009"]
    s = snaps[0]
    assert s.online is True
    assert s.register_expires_at == t(600)
    assert s.keepalive_interval == 30
    assert s.last_seen == t(5)
    assert (s.remote_addr, s.transport) == ("192.168.1.64:5060", "udp")
    assert s.password_realm == "3402000000"
    assert snaps[1].online is False and snaps[1].keepalive_interval == 60


async def test_set_device_password_stores_only_ha1(registry) -> None:
    await registry.set_device_password(DEV, "3402000000", "12345678")
    dev = await registry.get_device(DEV)
    assert dev.password_ha1_md5 == hashlib.md5(f"{DEV}:3402000000:12345678".encode()).hexdigest()
    assert dev.password_ha1_sha256 == hashlib.sha256(f"{DEV}:3402000000:12345678".encode()).hexdigest()
    assert dev.password_realm == "3402000000"
    assert dev.online is False
    # registering keeps the password; changing it replaces both values
    await registry.apply([reg(DEV, 0)])
    await registry.set_device_password(DEV, "3402000000", "new")
    dev = await registry.get_device(DEV)
    assert dev.online is True
    assert dev.password_ha1_md5 == hashlib.md5(f"{DEV}:3402000000:new".encode()).hexdigest()
    await registry.set_device_password(DEV, "3402000000", None)
    dev = await registry.get_device(DEV)
    assert (dev.password_ha1_md5, dev.password_ha1_sha256, dev.password_realm) == (None, None, None)


async def test_platform_runs(registry) -> None:
    from sqlalchemy import select

    from device_registry.models import PlatformRun

    first = await registry.start_platform_run(t(0))
    await registry.apply([reg(DEV, 10), DeviceSeen(DEV, t(70))])
    # crash: no end_platform_run; the next start closes the run at the last activity seen
    second = await registry.start_platform_run(t(500))
    await registry.end_platform_run(second, t(600), clean=True)
    third = await registry.start_platform_run(t(700))
    assert first < second < third
    async with registry.sessionmaker() as session:
        runs = {r.id: r for r in await session.scalars(select(PlatformRun))}
    assert (runs[first].stopped_at, runs[first].clean) == (t(70), False)
    assert (runs[second].started_at, runs[second].stopped_at, runs[second].clean) == (t(500), t(600), True)
    assert (runs[third].stopped_at, runs[third].clean) == (None, False)
