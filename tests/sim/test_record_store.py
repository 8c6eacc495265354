"""The simulated devices' recordings (gbsim/records.py): the store's files and gap, and RecordInfo answered
in several MESSAGEs (sans-IO fleet, fake clock), parsed back with sip_server.gb.manscdp."""

from __future__ import annotations

import re

import pytest

from gbcore.timeutil import from_device_time
from gbsim.records import RecordStore, parse_query_time, record_info_bodies
from sip_server.gb import manscdp
from sip_server.sip import parse_message
from tests.sim.fakes import PASSWORD
from tests.sim.test_sim_invite import SERVER, Rig

ORIGIN = 1_790_000_000.0  # the Rig's wall clock: 2026-09-21 21:33:20 Beijing time
DAY = 86_400


def _beijing(text: str) -> float:
    """A device time (Beijing, no offset) as Unix seconds."""
    dt = manscdp.parse_gb_time(text)
    assert dt is not None, text
    return from_device_time(dt).timestamp()


def test_store_covers_the_last_day_in_ten_minute_files_with_one_hour_missing() -> None:
    store = RecordStore("34020000001310000001", origin=ORIGIN, hours=24, file_seconds=600)
    files = store.files(0, 2e9, ORIGIN)
    assert files[0].start == store.begin and store.begin % 600 == 0 and ORIGIN - DAY - 600 < store.begin <= ORIGIN - DAY
    assert files[-1].end == int(ORIGIN)  # the file being written ends now
    assert all(f.end - f.start <= 600 and f.start % 600 == 0 or f.start == store.gap[1] for f in files)
    assert store.gap is not None and store.gap[1] - store.gap[0] == 3600 and store.gap[0] % 3600 == 0
    # Consecutive files touch, except across the one missing hour.
    holes = [(a.end, b.start) for a, b in zip(files, files[1:], strict=False) if a.end != b.start]
    assert holes == [store.gap]
    assert sum(f.seconds for f in files) == int(ORIGIN) - store.begin - 3600
    assert store.seconds_in(0, 2e9, ORIGIN) == sum(f.seconds for f in files)
    assert {f.type for f in files} == {"time", "alarm", "manual"}
    assert all(f.size == f.seconds * 1_000_000 // 8 for f in files)
    # Nothing before the store, in the gap or after now; the next content after the gap is its end.
    assert not store.recorded(store.begin - 1, ORIGIN) and not store.recorded(ORIGIN, ORIGIN)
    assert not store.recorded(store.gap[0] + 10, ORIGIN) and store.recorded(store.gap[0] - 1, ORIGIN)
    assert store.next_recorded(store.gap[0] + 10, ORIGIN) == store.gap[1]
    assert store.next_recorded(ORIGIN + 5, ORIGIN) is None
    # Files overlapping a query are reported whole; the type filter works.
    some = store.files(store.begin + 650, store.begin + 1250, ORIGIN)
    assert [(f.start, f.end) for f in some] == [(store.begin + 600, store.begin + 1200),
                                              (store.begin + 1200, store.begin + 1800)]
    alarms = store.files(0, 2e9, ORIGIN, "alarm")
    assert alarms and all(f.type == "alarm" for f in alarms)
    # Going on while the simulator runs: an hour later there is an hour more.
    assert store.seconds_in(0, 2e9, ORIGIN + 3600) == store.seconds_in(0, 2e9, ORIGIN) + 3600


def test_short_store_has_no_gap_and_empty_ranges() -> None:
    store = RecordStore("c", origin=ORIGIN, hours=2, file_seconds=300)
    assert store.gap is None
    assert store.files(ORIGIN + 10, ORIGIN + 100, ORIGIN) == []
    assert store.files(ORIGIN - 100, ORIGIN - 200, ORIGIN) == []
    with pytest.raises(ValueError):
        RecordStore("c", origin=ORIGIN, file_seconds=0)


def test_query_time_is_beijing_without_offset_whatever_the_host_zone(monkeypatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    assert parse_query_time("2025-01-01T08:00:00") == 1_735_689_600  # 00:00 UTC
    assert parse_query_time("2025-01-01T00:00:00+00:00") == 1_735_689_600
    assert parse_query_time("2025-13-01T00:00:00") is None and parse_query_time("") is None


def test_record_info_pages_build_and_parse() -> None:
    store = RecordStore("34020000001310000001", origin=ORIGIN, hours=3, file_seconds=600)
    files = store.files(0, 2e9, ORIGIN)
    bodies = record_info_bodies(77, "34020000001310000001", files, name="东门入口 1号", page_size=8)
    pages = [manscdp.as_record_info(manscdp.parse(b)) for b in bodies]
    assert len(pages) == -(-len(files) // 8)
    assert all(p.sn == 77 and p.sum_num == len(files) and len(p.items) <= 8 for p in pages)
    items = [i for p in pages for i in p.items]
    assert [(_beijing(i.start_time), _beijing(i.end_time)) for i in items] == [(f.start, f.end) for f in files]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", i.start_time) for i in items)
    empty = record_info_bodies(78, "34020000001310000001", [], name="x")
    assert len(empty) == 1 and b"RecordList" not in empty[0]
    page = manscdp.as_record_info(manscdp.parse(empty[0]))
    assert page.sum_num == 0 and page.items == []


class _Recorder(Rig):
    """The Rig with RecordInfo answers collected (and optionally held unanswered)."""

    def record_pages(self, device_index: int = 0) -> list[manscdp.RecordInfo]:
        dev = self.fleet.devices[device_index]
        return [manscdp.as_record_info(m) for user, m in self.platform.responses
                if user == dev.device_id and m.cmd_type == "RecordInfo"]


def _query(rig: Rig, target: str, start: str, end: str, type_: str = "all", device_index: int = 0):
    dev = rig.fleet.devices[device_index]
    req = rig.platform.query(dev.device_id, "RecordInfo", target=target, extra={
        "StartTime": start, "EndTime": end, "FilePath": None, "Address": None, "Secrecy": 0, "Type": type_})
    return req


def test_record_info_over_the_fleet_is_paged_serially_with_one_sn() -> None:
    rig = _Recorder(devices=1, channels=2, record_hours=24)
    rig.up()
    dev = rig.fleet.devices[0]
    channel = dev.channel_ids[1]
    store = dev.record_store(channel)
    # Hold the platform's answers: the device sends one page at a time (message_window 1).
    req = _query(rig, channel, "2026-09-20T21:30:00", "2026-09-21T21:33:20")
    rig.fleet.receive(0, req.to_bytes(), SERVER, rig.now)
    out = [parse_message(data) for _i, data, _a in rig.fleet.outgoing()]
    messages = [m for m in out if getattr(m, "method", None) == "MESSAGE"]
    assert len(messages) == 1 and [m.status for m in out if not hasattr(m, "method")] == [200]
    first = manscdp.as_record_info(manscdp.parse(messages[0].body))
    total = first.sum_num
    assert total == len(store.files(_beijing("2026-09-20T21:30:00"), _beijing("2026-09-21T21:33:20"), ORIGIN))
    assert total > 100 and len(first.items) == 8
    # Answering each page releases the next.
    for reply in rig.platform.handle(messages[0], ("127.0.0.1", 6000), rig.now):
        rig.fleet.receive(0, reply, SERVER, rig.now)
    rig.pump()
    pages = rig.record_pages()  # the first one included (the stub platform answered it)
    assert pages[0] == first
    assert len(pages) == -(-total // 8) and all(p.sn == first.sn and p.sum_num == total for p in pages)
    items = [i for p in pages for i in p.items]
    assert len(items) == total and all(i.device_id == channel for i in items)
    starts = [_beijing(i.start_time) for i in items]
    assert starts == sorted(starts)
    assert {i.type for i in items} <= {"time", "alarm", "manual"} and all(i.file_size for i in items)
    assert dev.stats.record_queries == 1


def test_record_info_empty_unknown_and_filtered() -> None:
    rig = _Recorder(devices=1, channels=2, record_file_minutes=30)
    rig.up()
    dev = rig.fleet.devices[0]
    channel = dev.channel_ids[0]
    rig.send(_query(rig, channel, "2027-01-01T00:00:00", "2027-01-02T00:00:00"))  # the future: nothing
    rig.send(_query(rig, "34020000001319999999", "2026-09-21T00:00:00", "2026-09-21T10:00:00"))  # not ours
    rig.send(_query(rig, channel, "garbage", "2026-09-21T10:00:00"))
    rig.send(_query(rig, channel, "2026-09-21T00:00:00", "2026-09-21T10:00:00", "alarm"))
    pages = rig.record_pages()
    assert [p.sum_num for p in pages[:3]] == [0, 0, 0] and all(p.items == [] for p in pages[:3])
    alarm = pages[3:]
    assert alarm and all(i.type == "alarm" for p in alarm for i in p.items)
    assert sum(len(p.items) for p in alarm) == alarm[0].sum_num > 0
    assert all(_beijing(i.end_time) - _beijing(i.start_time) <= 1800 for p in alarm for i in p.items)


def test_config_validation() -> None:
    from gbsim import SimConfig

    for bad in (dict(record_file_minutes=0), dict(record_page_size=0), dict(refuse_history=200),
                dict(record_hours=-1)):
        with pytest.raises(ValueError):
            SimConfig(server=SERVER, password=PASSWORD, **bad)
    assert SimConfig(server=SERVER, refuse_history=486).refuse_history == 486
