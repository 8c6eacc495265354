"""Simulated devices against the real platform SIP service (sip_server.service) over loopback."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from gbsim import SimConfig, Simulator
from sip_server.gb import events as ev
from sip_server.gb.server import GbConfig
from sip_server.service import SipService

PASSWORD = "Loop-Back-pw#42"


@pytest.fixture
async def service():
    svc = SipService(GbConfig(default_password=PASSWORD, keepalive_interval=5.0), host="127.0.0.1", port=0,
                     writer=None)
    events: list = []
    svc.add_listener(events.append)
    svc.events = events  # type: ignore[attr-defined]
    await svc.start()
    yield svc
    await svc.close()


def cfg(svc: SipService, **kw) -> SimConfig:
    base = dict(server=("127.0.0.1", svc.bound_port), devices=10, channels=4, password=PASSWORD,
                keepalive=1.0, expires=3600, start_spread=0.5)
    base.update(kw)
    return SimConfig(**base)


def all_online(svc: SipService, sim: Simulator) -> bool:
    return sim.online == len(sim.device_ids) and all(svc.is_online(d) for d in sim.device_ids)


async def test_50_udp_and_10_tcp_devices_come_online(service: SipService) -> None:
    udp = Simulator(cfg(service, devices=50, first_id="34020000001180000001", charset="gb2312"))
    tcp = Simulator(cfg(service, devices=10, first_id="34020000001180001001", transport="tcp",
                        charset="utf-8"))
    await udp.start()
    await tcp.start()
    try:
        assert await udp.wait_until(lambda s: all_online(service, s), 20), udp.progress_line()
        assert await tcp.wait_until(lambda s: all_online(service, s), 20), tcp.progress_line()
        # The platform's queries after registering (DeviceInfo, ConfigDownload, Catalog) are answered.
        everyone = set(udp.device_ids) | set(tcp.device_ids)

        def catalogs_done(_: Simulator) -> bool:
            done = {e.device_id for e in service.events if isinstance(e, ev.CatalogFinished) and e.complete}
            return everyone <= done

        assert await udp.wait_until(catalogs_done, 20)
        finished = {e.device_id: e for e in service.events if isinstance(e, ev.CatalogFinished)}
        some_tcp = finished[tcp.device_ids[0]]
        assert len(some_tcp.items) == 4
        names = {i.name for e in finished.values() for i in e.items}
        assert "东门入口 1号" in names and any(n.startswith("大华1.") for n in names)
        infos = {e.device_id for e in service.events if isinstance(e, ev.DeviceInfoReceived)}
        assert everyone <= infos
        intervals = {e.interval for e in service.events if isinstance(e, ev.KeepaliveIntervalReported)}
        assert intervals == {1.0}
        assert udp.queries_answered == 150 and tcp.queries_answered == 30
        assert udp.failed == 0 and tcp.failed == 0
        # A query the portal would send goes over the device's own TCP connection.
        status = await service.device_status(tcp.device_ids[1])
        assert status.online is True
    finally:
        await udp.stop(unregister=True)
        await tcp.stop(unregister=True)
    offline = Counter(e.reason for e in service.events if isinstance(e, ev.DeviceOffline))
    assert offline["unregistered"] == 60
    assert not any(service.is_online(d) for d in everyone)


async def test_stop_without_unregister_is_noticed_by_missed_keepalives(service: SipService) -> None:
    sim = Simulator(cfg(service, devices=5, keepalive=1.0))
    await sim.start()
    assert await sim.wait_until(lambda s: all_online(service, s), 15)
    # Wait until the platform has learnt the 1 s heartbeat from ConfigDownload/BasicParam.
    assert await sim.wait_until(lambda s: len(
        [e for e in service.events if isinstance(e, ev.KeepaliveIntervalReported)]) == 5, 10)
    await sim.stop(unregister=False)
    assert all(service.is_online(d) for d in sim.device_ids)
    for _ in range(100):
        if not any(service.is_online(d) for d in sim.device_ids):
            break
        await asyncio.sleep(0.1)
    reasons = {e.reason for e in service.events if isinstance(e, ev.DeviceOffline)}
    assert reasons == {"keepalive_timeout"}
    assert not any(service.is_online(d) for d in sim.device_ids)


async def test_wrong_password_is_refused_and_retried_later(service: SipService) -> None:
    sim = Simulator(cfg(service, devices=2, password="not-the-password", retry_min=30.0))
    await sim.start()
    try:
        assert await sim.wait_until(lambda s: s.failed == 2, 10)
        assert all(d.last_error and d.last_error.startswith("403") for d in sim.devices)
        assert not any(service.is_online(d) for d in sim.device_ids)
    finally:
        await sim.stop()
