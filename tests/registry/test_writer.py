"""RegistryWriter: batching, flush/stop, retries, and throughput on both databases."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError, OperationalError

from device_registry.events import DeviceSeen, DeviceUnregistered
from device_registry.models import Device, PresenceEvent
from device_registry.service import RegistryWriter

from ._support import reg, t

N_DEVICES = 2_000
N_KEEPALIVES = 10_000


def _id(n: int) -> str:
    return f"3402000000132{n:07d}"


async def test_throughput_registrations_and_keepalives(registry, db_url: str) -> None:
    backend = db_url.split("+", 1)[0]
    writer = RegistryWriter(registry)
    await writer.start()
    try:
        started = time.perf_counter()
        for n in range(N_DEVICES):
            writer.submit(reg(_id(n), 0, addr=f"10.{n // 250}.{n % 250}.1:5060"))
        await writer.flush()
        registered = time.perf_counter()
        for k in range(N_KEEPALIVES):
            n = k % N_DEVICES
            writer.submit(DeviceSeen(_id(n), t(60 * (1 + k // N_DEVICES))))
        await writer.flush()
        done = time.perf_counter()
    finally:
        await writer.stop()
    print(
        f"\n[{backend}] {N_DEVICES} DeviceRegistered: {registered - started:.3f}s "
        f"({N_DEVICES / (registered - started):,.0f}/s); {N_KEEPALIVES} DeviceSeen: {done - registered:.3f}s "
        f"({N_KEEPALIVES / (done - registered):,.0f}/s); total {done - started:.3f}s"
    )
    async with registry.sessionmaker() as session:
        assert (
            await session.scalar(select(func.count()).select_from(Device).where(Device.online)) == N_DEVICES
        )
        assert await session.scalar(select(func.count()).select_from(PresenceEvent)) == N_DEVICES
        # 5 rounds of keepalives: the last one at 300 s
        assert await session.scalar(select(func.min(Device.last_seen))) == t(300)
        assert await session.scalar(select(func.max(Device.last_seen))) == t(300)
    assert writer.rejected == [] and writer.pending == 0


async def test_order_is_kept_across_batches(registry) -> None:
    writer = RegistryWriter(registry, max_batch=3, max_delay=0.01)
    await writer.start()
    dev = _id(1)
    for i in range(10):
        writer.submit(reg(dev, i * 10))
        writer.submit(DeviceUnregistered(dev, t(i * 10 + 5)))
    await writer.stop()
    rows = await registry.list_presence(dev, limit=100)
    assert len(rows) == 20
    assert [r.online for r in reversed(rows)] == [True, False] * 10


async def test_max_delay_writes_without_flush(registry) -> None:
    writer = RegistryWriter(registry, max_delay=0.05)
    await writer.start()
    writer.submit(reg(_id(1), 0))
    for _ in range(100):
        await asyncio.sleep(0.02)
        if writer.written == 1:
            break
    assert writer.written == 1
    assert (await registry.get_device(_id(1))).online
    await writer.stop()


async def test_stop_flushes_and_refuses_more(registry) -> None:
    writer = RegistryWriter(registry, max_delay=10)
    await writer.start()
    for n in range(5):
        writer.submit(reg(_id(n), 0))
    await writer.stop()
    assert (await registry.list_devices())[0] == 5
    with pytest.raises(RuntimeError):
        writer.submit(reg(_id(9), 0))
    await writer.stop()  # twice is fine


class FlakyRegistry:
    """A stand-in for Registry: fails the first ``transient`` calls, and any batch holding
    an event about ``poison``."""

    def __init__(self, transient: int = 0, poison: str | None = None) -> None:
        self.transient = transient
        self.poison = poison
        self.applied: list[object] = []
        self.calls = 0

    async def apply(self, events: Sequence[object]) -> None:
        self.calls += 1
        if self.transient > 0:
            self.transient -= 1
            raise OperationalError("SELECT 1", {}, Exception("database is locked"))
        if any(getattr(e, "device_id", None) == self.poison for e in events):
            raise IntegrityError("INSERT", {}, Exception("bad row"))
        self.applied.extend(events)


async def test_transient_failures_are_retried(caplog: pytest.LogCaptureFixture) -> None:
    fake = FlakyRegistry(transient=3)
    writer = RegistryWriter(fake, max_backoff=0.05)  # type: ignore[arg-type]
    await writer.start()
    events = [reg(_id(n), 0) for n in range(10)]
    for ev in events:
        writer.submit(ev)
    with caplog.at_level(logging.WARNING):
        await writer.flush()
    await writer.stop()
    assert fake.applied == events
    assert writer.failures == 3 and writer.rejected == []
    assert "retrying" in caplog.text


async def test_a_bad_event_is_isolated_and_kept(caplog: pytest.LogCaptureFixture) -> None:
    fake = FlakyRegistry(poison=_id(37))
    writer = RegistryWriter(fake, max_batch=64, max_backoff=0.01)  # type: ignore[arg-type]
    await writer.start()
    events = [reg(_id(n), 0) for n in range(100)]
    with caplog.at_level(logging.ERROR):
        for ev in events:
            writer.submit(ev)
        await writer.flush()
    await writer.stop()
    assert writer.rejected == [events[37]]
    assert fake.applied == events[:37] + events[38:]
    assert "rejected" in caplog.text and _id(37) in caplog.text


async def test_queue_over_limit_is_logged_and_kept(caplog: pytest.LogCaptureFixture) -> None:
    fake = FlakyRegistry()
    writer = RegistryWriter(fake, max_queue=10)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING):
        for n in range(50):
            writer.submit(reg(_id(n), 0))
    assert writer.pending == 50
    assert "behind" in caplog.text
    await writer.start()
    await writer.stop()
    assert len(fake.applied) == 50


async def test_stop_with_grace_gives_up_when_database_stays_down(caplog: pytest.LogCaptureFixture) -> None:
    fake = FlakyRegistry(transient=10**9)
    writer = RegistryWriter(fake, max_backoff=0.01)  # type: ignore[arg-type]
    await writer.start()
    writer.submit(reg(_id(1), 0))
    with caplog.at_level(logging.ERROR):
        await writer.stop(grace=0.2)
    assert "1 event(s) not written" in caplog.text
    assert not writer.running


async def test_flush_without_start_raises() -> None:
    writer = RegistryWriter(FlakyRegistry())  # type: ignore[arg-type]
    await writer.flush()  # nothing submitted: fine
    writer.submit(reg(_id(1), 0))
    with pytest.raises(RuntimeError):
        await writer.flush()
    with pytest.raises(TypeError):
        writer.submit("not an event")  # type: ignore[arg-type]


async def test_throughput_restart_storm(registry, db_url: str) -> None:
    """Known devices with channels all drop and register again (e.g. after a network outage)."""
    from device_registry.events import CatalogReported, ChannelInfo, DeviceWentOffline

    backend = db_url.split("+", 1)[0]
    chans = tuple(ChannelInfo(f"3402000000131{c:07d}", status="ON", name=f"通道{c}") for c in range(4))
    setup = [reg(_id(n), 0) for n in range(N_DEVICES)]
    setup += [CatalogReported(_id(n), t(1), chans, True, "complete 4/4") for n in range(N_DEVICES)]
    for start in range(0, len(setup), 1000):
        await registry.apply(setup[start : start + 1000])

    writer = RegistryWriter(registry)
    await writer.start()
    try:
        started = time.perf_counter()
        for n in range(N_DEVICES):
            writer.submit(DeviceWentOffline(_id(n), t(100), "keepalive_timeout"))
        await writer.flush()
        offline = time.perf_counter()
        for n in range(N_DEVICES):
            writer.submit(reg(_id(n), 200))
        await writer.flush()
        done = time.perf_counter()
    finally:
        await writer.stop()
    print(
        f"\n[{backend}] {N_DEVICES} devices x 4 channels: offline {offline - started:.3f}s, "
        f"re-register {done - offline:.3f}s ({N_DEVICES / (done - offline):,.0f}/s)"
    )
    async with registry.sessionmaker() as session:
        # per device: 1 + 4 online, 1 + 4 offline, 1 + 4 online again
        assert await session.scalar(select(func.count()).select_from(PresenceEvent)) == N_DEVICES * 15
        assert (
            await session.scalar(select(func.count()).select_from(Device).where(Device.online)) == N_DEVICES
        )
