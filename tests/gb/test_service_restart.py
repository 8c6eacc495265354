"""SipService + registry across a platform restart (in process, real sockets, SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio

from device_registry.service import Registry, RegistryWriter
from gbcore.db import make_sessionmaker
from gbsim import SimConfig, Simulator
from sip_server.gb.server import GbConfig
from sip_server.service import SipService

PASSWORD = "Gate-7-camera#pw"


async def start_service(db_engine, port: int = 0) -> tuple[SipService, RegistryWriter, Registry]:
    registry = Registry(make_sessionmaker(db_engine))
    writer = RegistryWriter(registry)
    await writer.start()
    svc = SipService(GbConfig(default_password=PASSWORD, keepalive_interval=1.0, keepalive_misses=3),
                     host="127.0.0.1", port=port, writer=writer)
    svc.restore(await registry.snapshot())
    await svc.start()
    return svc, writer, registry


async def stop_service(svc: SipService, writer: RegistryWriter) -> None:
    await svc.close()
    await writer.stop(grace=10)


async def wait(pred, limit: float) -> bool:
    for _ in range(int(limit * 20)):
        if pred():
            return True
        await asyncio.sleep(0.05)
    return pred()


async def test_quick_restart_keeps_devices_online_and_long_outage_is_not_blamed_on_devices(db_engine):
    svc, writer, registry = await start_service(db_engine)
    port = svc.bound_port
    sim = Simulator(SimConfig(server=("127.0.0.1", port), devices=3, channels=1, password=PASSWORD,
                              keepalive=1.0, register_rate=100))
    await sim.start()
    try:
        assert await sim.wait_until(lambda s: s.online == 3, 15), sim.progress_line()
        ids = sim.device_ids
        assert await wait(lambda: all(svc.is_online(d) for d in ids), 5)

        # 1. restart within the keepalive window: restored as online, keepalives accepted, no re-register
        await stop_service(svc, writer)
        svc, writer, registry = await start_service(db_engine, port)
        assert all(svc.is_online(d) for d in ids)
        keepalives_before = svc.metrics()["keepalives"]
        await asyncio.sleep(2.5)
        assert svc.metrics()["keepalives"] > keepalives_before
        assert svc.metrics()["registrations_ok"] == 0 and svc.metrics()["locked_refusals"] == 0
        await writer.flush()
        rows = await registry.list_presence(ids[0])
        assert [(r.online, r.reason) for r in rows if r.subject == "device"] == [(True, "registered")]
    finally:
        await sim.stop(unregister=False)

    # 2. the platform is down longer than the keepalive window: its downtime is not the devices' fault, so
    #    they are restored online with a fresh window (no false offline); these ones really stopped, so they
    #    go offline once that window passes without a keepalive, for their missed keepalives
    await stop_service(svc, writer)
    await asyncio.sleep(3.5)
    svc, writer, registry = await start_service(db_engine, port)
    try:
        assert all(svc.is_online(d) for d in ids)
        assert await wait(lambda: not any(svc.is_online(d) for d in ids), 10)
        await writer.flush()
        rows = await registry.list_presence(ids[0])
        assert [(r.online, r.reason) for r in rows if r.subject == "device"][0] == (False, "keepalive_timeout")
        device = await registry.get_device(ids[0])
        assert device.online is False
    finally:
        await stop_service(svc, writer)


class _Capture:
    def __init__(self) -> None:
        self.events: list = []

    def submit(self, event) -> None:
        self.events.append(event)


def test_catalog_notify_events_become_registry_events():
    from device_registry import events as reg
    from sip_server.gb import events as ev
    from sip_server.gb.manscdp import CatalogItem

    writer = _Capture()
    svc = SipService(GbConfig(default_password=PASSWORD), host="127.0.0.1", port=0, writer=writer)
    dev = "34020000001180000001"
    items = (CatalogItem(device_id="34020000001310000001", event="VLOST"),
             CatalogItem(device_id="34020000001310000002", event="DEL"),
             CatalogItem(device_id="34020000001310000003", name="新增 通道", status="ON", event="ADD"))
    svc._handle(ev.CatalogChanged(dev, items))
    states = [(e.channel_id, e.status) for e in writer.events if isinstance(e, reg.ChannelStatusChanged)]
    assert states == [("34020000001310000001", "VLOST"), ("34020000001310000002", "DEL")]
    [added] = [e for e in writer.events if isinstance(e, reg.CatalogReported)]
    assert not added.complete and [c.name for c in added.channels] == ["新增 通道"]
