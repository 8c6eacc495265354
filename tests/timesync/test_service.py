"""The time service on a real database (SQLite and PostgreSQL): samples from DeviceStatus answers, the
schedule, the skew alert once per crossing, the ticket, the 24 h reads and compliance, and the platform's own
NTP check (servers answering, silent, or off by more than 0.5 s) with the NTP server's answers following it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select

from gbcore.db import make_sessionmaker
from gbcore.timeutil import gb_time
from security.events import ListSink
from timesync import ntp
from timesync.client import ServerAnswer
from timesync.models import ClockSampleRow
from timesync.service import DeviceOffline, NoAnswer, NoDeviceTime, TimeConfig, TimeService

T0 = datetime(2026, 12, 7, 4, 0, 0, tzinfo=UTC).timestamp() + 0.37
GOOD = "34020000001320000001"
BAD = "34020000001320000002"
SILENT = "34020000001320000003"


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeSip:
    """Answers DeviceStatus like a device whose clock is ``skews[device]`` ahead (whole seconds), delivering
    the answer the way the SIP adapter does: as an on_device_time call."""

    def __init__(self, clock: Clock, skews: dict[str, float | None]) -> None:
        self.clock = clock
        self.skews = skews
        self.online = set(skews)
        self.service: TimeService | None = None
        self.asked: list[str] = []

    async def device_status(self, device_id: str) -> Any:
        if device_id not in self.online:
            raise type("DeviceNotReachable", (Exception,), {})(device_id)
        self.asked.append(device_id)
        sent = self.clock()
        received = sent + 0.03
        s = self.skews[device_id]
        text = None if s is None else gb_time(sent + 0.015 + s, millis=False)
        assert self.service is not None
        self.service.on_device_time(device_id, text, sent, received)
        return {"device_time": text}

    def is_online(self, device_id: str) -> bool:
        return device_id in self.online


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def world(db_engine, clock):
    sink = ListSink()
    tickets: list[tuple[str, dict]] = []
    sip = FakeSip(clock, {GOOD: 0.2, BAD: 3.0, SILENT: None})

    async def open_ticket(device_id: str, detail: dict) -> None:
        tickets.append((device_id, detail))

    cfg = TimeConfig(ntp_port=0, clock_check_interval=300, clock_first_check_delay=5, clock_skew_limit=1.0,
                     clock_skew_ticket=True)
    svc = TimeService(make_sessionmaker(db_engine), cfg, sink=sink, device_status=sip.device_status,
                      is_online=sip.is_online, online_devices=lambda: sorted(sip.online), open_ticket=open_ticket,
                      clock=clock)
    sip.service = svc
    yield svc, sip, sink, tickets
    await svc.stop()


async def test_immediate_checks_flag_3s_not_02s(world) -> None:
    svc, sip, sink, tickets = world
    assert await svc.device_clock(GOOD) == {"skew_s": None, "uncertainty_s": None, "worst_24h_s": None,
                                            "within_limit": None, "samples": 0, "last_checked": None, "limit_s": 1.0}
    good = await svc.check_device(GOOD)
    bad = await svc.check_device(BAD)
    assert good["within_limit"] is True and abs(good["skew_s"] - 0.2) <= good["uncertainty_s"]
    assert bad["within_limit"] is False and abs(bad["skew_s"] - 3.0) <= bad["uncertainty_s"]
    assert sink.kinds() == ["clock_skew"]
    assert sink.events[0]["device_id"] == BAD and sink.events[0]["detail"]["limit_s"] == 1.0
    await asyncio.sleep(0)
    assert [d for d, _ in tickets] == [BAD]
    # a second sample over the limit: no second alert, no second ticket (once per crossing)
    await svc.check_device(BAD)
    await asyncio.sleep(0)
    assert sink.kinds() == ["clock_skew"] and len(tickets) == 1
    # the clock is set right: back within; over again later is a new crossing
    sip.skews[BAD] = 0.0
    sip.clock.now += 1000
    assert (await svc.check_device(BAD))["within_limit"] is True
    sip.skews[BAD] = -4.0
    sip.clock.now += 1000
    assert (await svc.check_device(BAD))["within_limit"] is False
    assert sink.kinds() == ["clock_skew", "clock_skew"]

    clock_bad = await svc.device_clock(BAD)
    assert clock_bad["samples"] == 4 and clock_bad["worst_24h_s"] is not None and clock_bad["worst_24h_s"] < -3
    assert clock_bad["last_checked"] == datetime.fromtimestamp(sip.clock.now + 0.03, UTC)
    comp = await svc.compliance([GOOD, BAD, SILENT])
    assert comp["measured"] == 2 and comp["within"] == 1 and comp["unmeasured"] == 1 and comp["share"] == 0.5
    assert [d["device_id"] for d in comp["devices_over"]] == [BAD]
    both = await svc.device_clocks([GOOD, BAD, SILENT])
    assert both[GOOD]["within_limit"] is True and both[BAD]["within_limit"] is False
    assert both[SILENT]["samples"] == 0 and both[BAD] == await svc.device_clock(BAD)


async def test_offline_and_no_device_time(world) -> None:
    svc, sip, _, _ = world
    sip.online.discard(GOOD)
    with pytest.raises(DeviceOffline):
        await svc.check_device(GOOD)
    with pytest.raises(NoDeviceTime):
        await svc.check_device(SILENT)


async def test_schedule_first_check_then_interval(world) -> None:
    svc, sip, sink, _ = world
    await svc.start()  # online devices are due after the first-check delay
    await asyncio.sleep(1.5)
    assert sip.asked == []
    sip.clock.now += 6
    for _ in range(40):
        if len(set(sip.asked)) == 3:
            break
        await asyncio.sleep(0.1)
    assert sorted(set(sip.asked)) == sorted([GOOD, BAD, SILENT])
    n = len(sip.asked)
    await asyncio.sleep(1.5)
    assert len(sip.asked) == n  # nothing due before the interval
    sip.clock.now += 301
    for _ in range(40):
        if len(sip.asked) >= n + 3:
            break
        await asyncio.sleep(0.1)
    assert len(sip.asked) == n + 3
    # an answer someone else asked for counts as a sample and moves the schedule
    svc.on_device_time(GOOD, gb_time(sip.clock.now + 0.2, millis=False), None, sip.clock.now)
    await asyncio.sleep(0.2)
    assert (await svc.device_clock(GOOD))["samples"] == 3
    # a device going offline leaves the schedule; coming online puts it back within the delay
    svc.device_offline(BAD)
    sip.clock.now += 301
    sip.online.discard(BAD)
    await asyncio.sleep(1.3)
    assert sip.asked.count(BAD) == 2


async def test_retention_keeps_the_window(world, db_engine) -> None:
    svc, sip, _, _ = world
    await svc.check_device(GOOD)
    sip.clock.now += 8 * 86400
    await svc.check_device(GOOD)
    assert await svc.trim() == 1
    async with make_sessionmaker(db_engine)() as session:
        assert await session.scalar(select(func.count()).select_from(ClockSampleRow)) == 1
    assert (await svc.device_clock(GOOD))["samples"] == 1
    assert await svc.compliance([]) == svc._compliance({}, 0)


def _answer(offset: float | None, stratum: int = 2, leap: int = 0) -> ServerAnswer:
    if offset is None:
        return ServerAnswer("192.0.2.1:123", None, None, "no answer (timeout)")
    return ServerAnswer("192.0.2.1:123", "192.0.2.1",
                        ntp.Measurement(offset, 0.004, stratum, leap, b"GPS\0", 0.0, 0.001))


async def test_own_clock_check_and_ntp_answers_follow(db_engine, clock) -> None:
    sink = ListSink()
    answers: list[list[ServerAnswer]] = [[_answer(0.01)], [_answer(None)], [_answer(None)], [_answer(0.8)],
                                         [_answer(0.02)]]

    async def query(servers, **_kw) -> list[ServerAnswer]:
        return answers.pop(0)

    cfg = TimeConfig(ntp_port=0, ntp_servers=(("192.0.2.1", 123),))
    svc = TimeService(make_sessionmaker(db_engine), cfg, sink=sink, clock=clock, query_servers=query)
    assert svc.synchronised is None and svc.reference().stratum == 16  # not checked yet: not claiming sync
    st = await svc.check_ntp()
    assert st["synchronised"] is True and st["offset_s"] == 0.01 and st["healthy"] is True
    ref = svc.reference()
    assert (ref.leap, ref.stratum, ref.ref_id) == (0, 3, bytes([192, 0, 2, 1]))
    st = await svc.check_ntp()
    assert st["synchronised"] is False and st["healthy"] is False and st["offset_s"] is None
    assert (svc.reference().leap, svc.reference().stratum) == (3, 16)
    assert sink.kinds() == ["ntp_unsynced"]
    await svc.check_ntp()  # still unsynchronised: no second event
    assert sink.kinds() == ["ntp_unsynced"]
    st = await svc.check_ntp()  # answering, but 0.8 s off: still unsynchronised
    assert st["synchronised"] is False and st["offset_s"] == 0.8
    st = await svc.check_ntp()
    assert st["synchronised"] is True and sink.kinds() == ["ntp_unsynced"]
    assert st["servers"][0]["ok"] is True and st["checked_at"] == datetime.fromtimestamp(clock.now, UTC)


async def test_no_servers_host_clock_is_the_reference(db_engine, clock) -> None:
    svc = TimeService(make_sessionmaker(db_engine), TimeConfig(ntp_port=0, ntp_local_stratum=7), clock=clock)
    st = svc.status()
    assert st["synchronised"] is True and st["reference"] == "local" and st["stratum"] == 7
    assert st["ref_id"] == "LOCL" and st["ntp_server"]["running"] is False
    assert "disabled" not in str(st["ntp_server"]["error"])  # not started yet
    await svc.start()
    try:
        assert "disabled" in svc.status()["ntp_server"]["error"]
    finally:
        await svc.stop()


async def test_hostile_device_answers(world) -> None:
    """A device that floods DeviceStatus answers nobody asked for adds one sample per 10 s; one that claims the
    year 9999 is simply far off (flagged), not an error; one that does not answer is NoAnswer (504 in the API)."""
    svc, sip, sink, _ = world
    for i in range(50):
        svc.on_device_time(GOOD, gb_time(sip.clock.now + 0.2, millis=False), None, sip.clock.now + i * 0.01)
    await asyncio.sleep(0.3)
    assert (await svc.device_clock(GOOD))["samples"] == 1
    svc.on_device_time(GOOD, gb_time(sip.clock.now + 11.2, millis=False), None, sip.clock.now + 11)
    await asyncio.sleep(0.2)
    assert (await svc.device_clock(GOOD))["samples"] == 2

    svc.on_device_time(BAD, "9999-12-31T23:59:59", None, sip.clock.now)
    await asyncio.sleep(0.2)
    far = await svc.device_clock(BAD)
    assert far["within_limit"] is False and far["skew_s"] > 1e11
    assert sink.kinds() == ["clock_skew"], sink.events
    svc.on_device_time(SILENT, "<script>", None, sip.clock.now)  # unreadable: no sample
    await asyncio.sleep(0.2)
    assert (await svc.device_clock(SILENT))["samples"] == 0

    async def never(device_id: str) -> None:
        raise RuntimeError("DeviceStatus query to x failed: timeout")

    svc.device_status = never
    with pytest.raises(NoAnswer):
        await svc.check_device(GOOD)
