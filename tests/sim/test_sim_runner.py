"""The asyncio Simulator over real sockets, against the stub platform in tests/sim/fakes.py."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import pytest

from gbsim import SimConfig, Simulator, run_simulator
from sip_server.gb import manscdp
from tests.sim.fakes import PASSWORD, AsyncStub


@pytest.fixture
async def stub():
    s = AsyncStub()
    await s.start()
    yield s
    await s.close()


def sim_cfg(stub: AsyncStub, **kw) -> SimConfig:
    base = dict(server=("127.0.0.1", stub.port), devices=6, channels=2, password=PASSWORD, keepalive=0.5,
                expires=3600, start_spread=0.2)
    base.update(kw)
    return SimConfig(**base)


async def test_udp_devices_register_and_stay_online(stub: AsyncStub) -> None:
    sim = Simulator(sim_cfg(stub, devices=25, devices_per_socket=10))
    await sim.start()
    try:
        assert len(sim.local_addresses) == 3
        assert len({port for _, port in sim.local_addresses}) == 3
        assert await sim.wait_until(lambda s: s.online == 25, 10)
        assert set(stub.platform.registered) == set(sim.device_ids)
        assert len({addr for addr, _ in stub.platform.registered.values()}) == 3
        await asyncio.sleep(1.2)
        assert sim.online == 25 and sim.failed == 0
        assert min(stub.platform.keepalives[d] for d in sim.device_ids) >= 2
    finally:
        await sim.stop(unregister=True)
    assert stub.platform.unregistered == set(sim.device_ids)
    assert not stub.platform.registered
    assert sim.registered == 0


async def test_tcp_one_connection_per_device_and_queries(stub: AsyncStub) -> None:
    sim = Simulator(sim_cfg(stub, devices=5, transport="tcp", channels=3, charset="utf-8"))
    await sim.start()
    try:
        assert await sim.wait_until(lambda s: s.online == 5, 10)
        assert len(stub.tcp_conns) == 5
        addrs = {addr for addr, transport in stub.platform.registered.values()}
        assert len(addrs) == 5
        target = sim.device_ids[3]
        addr, _ = stub.platform.registered[target]
        stub.send_to_device(target, stub.platform.query(target, "Catalog", transport="TCP", port=stub.port))
        assert await sim.wait_until(
            lambda s: sum(1 for u, b in stub.platform.responses if b.cmd_type == "Catalog") == 3, 5)
        pages = [b for u, b in stub.platform.responses if b.cmd_type == "Catalog"]
        assert all(b.device_id == target and b.charset == "UTF-8" for b in pages)
        assert all(manscdp.as_catalog(b).sum_num == 3 for b in pages)
        assert sim.queries_answered == 1
    finally:
        await sim.stop(unregister=True)
    assert stub.platform.unregistered == set(sim.device_ids)


async def test_tcp_reconnects_after_the_connection_drops(stub: AsyncStub) -> None:
    sim = Simulator(sim_cfg(stub, devices=2, transport="tcp", retry_min=0.2, retry_max=0.5))
    await sim.start()
    try:
        assert await sim.wait_until(lambda s: s.online == 2, 10)
        first = dict(stub.platform.registered)
        for t in list(stub.tcp_conns.values()):
            t.close()
        assert await sim.wait_until(lambda s: s.registered == 0, 5)
        assert await sim.wait_until(lambda s: s.online == 2, 10)
        assert all(stub.platform.registered[d][0] != first[d][0] for d in sim.device_ids)
    finally:
        await sim.stop()


async def test_tcp_connection_closed_before_connect_returns_is_retried(stub: AsyncStub, monkeypatch) -> None:
    """A platform over its per-address cap accepts and closes at once; under load the close lands before the
    connect task resumes. The device must try a new connection, not register on the dead one (which left it
    waiting out Timer F again and again: CI's 100-device fleet saw 5 devices never register)."""
    loop = asyncio.get_running_loop()
    real = loop.create_connection
    closed_early = []

    async def cap_first_three(factory, *args, **kw):
        transport, proto = await real(factory, *args, **kw)
        if len(closed_early) < 3:
            closed_early.append(transport.get_extra_info("sockname"))
            transport.abort()
            for _ in range(3):  # connection_lost runs before the caller resumes
                await asyncio.sleep(0)
            assert proto.lost
        return transport, proto

    monkeypatch.setattr(loop, "create_connection", cap_first_three)
    sim = Simulator(sim_cfg(stub, devices=3, transport="tcp", retry_min=0.2, retry_max=0.5, start_spread=0))
    await sim.start()
    try:
        assert await sim.wait_until(lambda s: s.online == 3, 10), sim.progress_line()
        assert len(closed_early) == 3
        assert sim.fleet.stats()["register_failures"] >= 3  # each early close counted as a failed link
    finally:
        await sim.stop()


async def test_tcp_connect_refused_counts_failed() -> None:
    stub = AsyncStub()
    await stub.start()
    port = stub.port
    await stub.close()
    sim = Simulator(SimConfig(server=("127.0.0.1", port), devices=2, channels=1, password=PASSWORD,
                              transport="tcp", retry_min=10.0, start_spread=0))
    await sim.start()
    try:
        assert await sim.wait_until(lambda s: s.failed == 2, 5)
        assert sim.registered == 0
    finally:
        await sim.stop()


async def test_stop_without_unregister_sends_nothing(stub: AsyncStub) -> None:
    sim = Simulator(sim_cfg(stub, devices=4))
    await sim.start()
    assert await sim.wait_until(lambda s: s.online == 4, 10)
    await sim.stop(unregister=False)
    before = sum(stub.platform.keepalives.values())
    await asyncio.sleep(1.0)
    assert sum(stub.platform.keepalives.values()) == before
    assert not stub.platform.unregistered
    assert set(stub.platform.registered) == set(sim.device_ids)


async def test_wrong_password_is_counted_as_failed(stub: AsyncStub) -> None:
    sim = Simulator(sim_cfg(stub, devices=3, password="wrong-password", retry_min=30.0))
    await sim.start()
    try:
        assert await sim.wait_until(lambda s: s.failed == 3, 5)
        assert "failed" in sim.progress_line() and "3 failed" in sim.progress_line()
        assert stub.platform.counts["auth_failures"] == 3
    finally:
        await sim.stop()


async def test_unresponsive_platform_times_out_and_stop_does_not_hang(stub: AsyncStub) -> None:
    stub.silent = True
    sim = Simulator(sim_cfg(stub, devices=2))
    await sim.start()
    await asyncio.sleep(0.5)
    assert sim.registered == 0
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await sim.stop(unregister=True, grace=1.0)
    assert loop.time() - t0 < 2.0


async def test_run_simulator_prints_progress_and_unregisters(stub: AsyncStub) -> None:
    lines: list[str] = []
    cfg = sim_cfg(stub, devices=4, progress_interval=0.3)
    stats = await run_simulator(cfg, duration=1.2, out=lines.append)
    assert any("4/4 registered" in line and "0 failed" in line for line in lines), lines
    assert "queries answered" in lines[-1] and "cpu" in lines[-1]
    assert stats["registrations"] == 4 and stats["keepalives_ok"] >= 4
    assert stub.platform.unregistered == set(cfg.device_ids())


async def test_run_simulator_stops_on_sigterm(stub: AsyncStub) -> None:
    lines: list[str] = []
    cfg = sim_cfg(stub, devices=2, progress_interval=0.2)
    loop = asyncio.get_running_loop()
    loop.call_later(0.8, os.kill, os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(run_simulator(cfg, duration=None, out=lines.append), 10)
    assert stub.platform.unregistered == set(cfg.device_ids())


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_under_uvloop(transport: str) -> None:
    """``gbops sim`` runs on uvloop, whose transports differ from asyncio's."""
    import uvloop

    async def scenario() -> None:
        stub = AsyncStub()
        await stub.start()
        try:
            sim = Simulator(sim_cfg(stub, devices=6, transport=transport, devices_per_socket=4))
            await sim.start()
            try:
                assert await sim.wait_until(lambda s: s.online == 6, 10), sim.progress_line()
                target = sim.device_ids[0]
                stub.send_to_device(target, stub.platform.query(target, "DeviceInfo", transport=transport.upper()))
                assert await sim.wait_until(lambda s: s.queries_answered == 1, 5)
            finally:
                await sim.stop()
            assert stub.platform.unregistered == set(sim.device_ids)
        finally:
            await stub.close()

    uvloop.run(scenario())


async def test_gbops_sim_command(stub: AsyncStub) -> None:
    """The ``gbops sim`` contract: the CLI builds a SimConfig and runs run_simulator on uvloop."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gbops.cli", "sim", "--server", f"127.0.0.1:{stub.port}", "--devices", "3",
        "--channels", "2", "--keepalive", "0.5", "--duration", "2.5", "--transport", "tcp",
        env={**os.environ, "GBOPS_SIM_PASSWORD": PASSWORD},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    text = out.decode()
    assert proc.returncode == 0, err.decode()[-2000:]
    assert "3/3 registered" in text, text
    assert len(stub.platform.unregistered) == 3
