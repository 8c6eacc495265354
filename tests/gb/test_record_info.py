"""RecordInfo (sans-IO): the query in Beijing time whatever the host zone, the answer's MESSAGEs reassembled by
SN/SumNum and sorted, SumNum 0, the timeout partial, refusals; the collector fuzzed with hypothesis."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sip_server.gb import events as ev
from sip_server.gb import manscdp
from sip_server.gb.records import RecordCollector, record_query_extra, sort_key
from sip_server.sip import make_response, parse_message
from tests.gb.test_server import ADDR, DEV, message_bytes, register
from tests.gb.test_server import make_server as _make_server

CHANNEL = "34020000001310000001"
T0 = datetime(2025, 1, 1, 0, 0, tzinfo=UTC)  # 2025-01-01T08:00:00 in Beijing


def online_server(**cfg):
    server = _make_server(catalog_subscribe_expires=0, **cfg)
    register(server)
    server.endpoint.messages_to_send()
    list(iter(server.next_event, None))
    return server


def drain(server):
    return [parse_message(o.data) for o in server.endpoint.messages_to_send()], list(iter(server.next_event, None))


def item(minute: int, length: int = 10, path: str | None = None, type: str = "time") -> manscdp.RecordItem:
    start = datetime(2025, 1, 1, 8, 0) + timedelta(minutes=minute)
    return manscdp.RecordItem(device_id=CHANNEL, name="东门", file_path=path or f"/rec/{minute}.ps",
                              start_time=manscdp.format_gb_time(start),
                              end_time=manscdp.format_gb_time(start + timedelta(minutes=length)),
                              secrecy=0, type=type, file_size=1024 * minute)


def page(sn: int, sum_num: int, items, device_id=CHANNEL) -> bytes:
    return manscdp.build_record_info_response(sn, device_id, sum_num, items, name="东门")


def ask(server, **kw):
    sn = server.query_records(DEV, CHANNEL, T0, T0 + timedelta(hours=1), 1.0, **kw)
    out, _ = drain(server)
    [query] = [m for m in out if getattr(m, "method", None) == "MESSAGE"]
    return sn, query


def answer(server, sn, sum_num, items, *, cseq, now=2.0, addr=ADDR):
    server.receive_datagram(message_bytes(DEV, page(sn, sum_num, items), cseq=cseq), addr, now)
    return drain(server)


# ------------------------------------------------------------------------------------------ the query
def test_query_asks_in_beijing_time_on_a_utc_host(utc_host):
    assert time.strftime("%H", time.localtime(T0.timestamp())) == "00"  # the host really is on UTC
    server = online_server()
    sn, query = ask(server)
    assert query.uri == f"sip:{DEV}@{ADDR[0]}:{ADDR[1]}" and DEV in query.headers.get("To")
    msg = manscdp.parse(query.body)
    assert (msg.root, msg.cmd_type, msg.sn, msg.device_id) == ("Query", "RecordInfo", sn, CHANNEL)
    assert msg.get("StartTime") == "2025-01-01T08:00:00" and msg.get("EndTime") == "2025-01-01T09:00:00"
    assert msg.get("Type") == "all" and msg.get("Secrecy") == "0"


def test_query_type_is_passed_and_checked():
    server = online_server()
    _, query = ask(server, type="alarm")
    assert manscdp.parse(query.body).get("Type") == "alarm"
    for bad in (dict(type="everything"),):
        with pytest.raises(ValueError):
            server.query_records(DEV, CHANNEL, T0, T0 + timedelta(hours=1), 1.0, **bad)
    with pytest.raises(ValueError, match=" / "):
        server.query_records(DEV, CHANNEL, T0, T0, 1.0)
    with pytest.raises(ValueError):
        server.query_records(DEV, CHANNEL, T0.replace(tzinfo=None), T0 + timedelta(hours=1), 1.0)
    assert drain(server)[0] == [] and len(server.records) == 1  # only the first, good query


def test_offline_device_cannot_be_asked():
    server = _make_server(catalog_subscribe_expires=0)
    assert server.query_records(DEV, CHANNEL, T0, T0 + timedelta(hours=1), 1.0) is None
    assert len(server.records) == 0


def test_record_extra_converts_any_zone_to_beijing():
    t = datetime(2025, 1, 1, 1, 30, tzinfo=UTC).astimezone(datetime.now().astimezone().tzinfo)
    extra = dict(record_query_extra(t, t + timedelta(minutes=1)))
    assert extra["StartTime"] == "2025-01-01T09:30:00" and extra["EndTime"] == "2025-01-01T09:31:00"


# ------------------------------------------------------------------------------------------ the answer
def test_answer_in_three_messages_is_reassembled_and_sorted():
    server = online_server()
    sn, _ = ask(server)
    items = [item(m) for m in range(0, 60, 10)]
    out, evs = answer(server, sn, 6, [items[4], items[5]], cseq=21)
    assert [m.status for m in out] == [200] and not [e for e in evs if isinstance(e, ev.RecordsFinished)]
    assert server.record_query(sn).received == 2
    _, evs = answer(server, sn, 6, [items[0], items[3]], cseq=22)
    assert not [e for e in evs if isinstance(e, ev.RecordsFinished)]
    _, evs = answer(server, sn, 6, [items[2], items[1]], cseq=23)
    [done] = [e for e in evs if isinstance(e, ev.RecordsFinished)]
    q = done.query
    assert done.device_id == DEV and done.sn == sn
    assert q.complete and q.sum_num == 6 and q.messages == 3 and q.items == items
    assert q.channel_id == CHANNEL and server.record_query(sn) is None
    # a late copy of a page changes nothing and answers no query (200 like any MESSAGE)
    out, evs = answer(server, sn, 6, [items[0]], cseq=24)
    assert [m.status for m in out] == [200] and not [e for e in evs if isinstance(e, ev.RecordsFinished)]


def test_a_page_sent_twice_is_not_counted_twice():
    server = online_server()
    sn, _ = ask(server)
    a, b = item(0), item(10)
    answer(server, sn, 2, [a], cseq=21)
    _, evs = answer(server, sn, 2, [a], cseq=22)  # the same page again (a new transaction)
    assert not [e for e in evs if isinstance(e, ev.RecordsFinished)]
    _, evs = answer(server, sn, 2, [b], cseq=23)
    [done] = [e for e in evs if isinstance(e, ev.RecordsFinished)]
    assert done.query.items == [a, b] and done.query.messages == 3


def test_files_that_differ_only_by_path_are_both_kept():
    server = online_server()
    sn, _ = ask(server)
    a, b = item(0, path="/a.ps"), item(0, path="/b.ps")
    _, evs = answer(server, sn, 2, [b, a], cseq=21)
    [done] = [e for e in evs if isinstance(e, ev.RecordsFinished)]
    assert done.query.items == [a, b] and done.query.complete


def test_sum_num_zero_is_an_empty_complete_answer():
    server = online_server()
    sn, _ = ask(server)
    body = (f'<?xml version="1.0" encoding="GB2312"?>\r\n<Response><CmdType>RecordInfo</CmdType><SN>{sn}</SN>'
            f"<DeviceID>{CHANNEL}</DeviceID><Name>Camera1</Name><SumNum>0</SumNum></Response>").encode()
    server.receive_datagram(message_bytes(DEV, body, cseq=21), ADDR, 2.0)
    out, evs = drain(server)
    [done] = [e for e in evs if isinstance(e, ev.RecordsFinished)]
    assert [m.status for m in out] == [200]
    assert done.query.complete and done.query.items == [] and done.query.sum_num == 0 and done.query.messages == 1


def test_timeout_keeps_what_arrived_as_partial():
    server = online_server(record_query_timeout=5.0)
    sn, _ = ask(server)  # at now=1.0
    answer(server, sn, 4, [item(20), item(0)], cseq=21)
    assert server.get_timer() == pytest.approx(6.0)
    server.handle_timer(5.9)
    assert not [e for e in drain(server)[1] if isinstance(e, ev.RecordsFinished)]
    server.handle_timer(6.0)
    [done] = [e for e in drain(server)[1] if isinstance(e, ev.RecordsFinished)]
    q = done.query
    assert not q.complete and q.sum_num == 4 and q.items == [item(0), item(20)] and q.messages == 1


def test_a_device_that_never_answers_times_out_empty():
    server = online_server()
    sn, _ = ask(server, timeout=2.0)
    server.handle_timer(3.0)
    [done] = [e for e in drain(server)[1] if isinstance(e, ev.RecordsFinished)]
    assert not done.query.complete and done.query.items == [] and done.query.messages == 0


def test_pages_from_another_device_do_not_feed_the_query():
    server = online_server()
    other = "34020000001320000002"
    register(server, dev=other, call_id="c2@dev")  # registered from the same address: believed as itself
    drain(server)
    sn, _ = ask(server)
    server.receive_datagram(message_bytes(other, page(sn, 1, [item(0)], device_id=other), cseq=31), ADDR, 2.0)
    assert not [e for e in drain(server)[1] if isinstance(e, ev.RecordsFinished)]
    assert server.record_query(sn).received == 0


def test_refused_query_fails():
    server = online_server()
    sn, query = ask(server)
    resp = make_response(query, 403, to_tag="d")
    server.receive_datagram(resp.to_bytes(), ADDR, 2.0)
    [failed] = [e for e in drain(server)[1] if isinstance(e, ev.QueryFailed)]
    assert failed.cmd_type == "RecordInfo" and failed.sn == sn and "403" in failed.reason
    assert server.record_query(sn) is None


# ------------------------------------------------------------------------------------------ fuzz
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_items = st.lists(st.builds(item, st.integers(0, 1440), st.integers(1, 60),
                            st.one_of(st.none(), st.sampled_from(["/x.ps", "/y.mp4", "D:\\rec\\1.dav"]))),
                  max_size=40)


@FUZZ
@given(items=_items, page_size=st.integers(1, 8), seed=st.integers(0, 2**32), repeats=st.integers(0, 3))
def test_collector_reassembles_any_paging_in_any_order(items, page_size, seed, repeats):
    unique = list({(i.start_time, i.end_time, i.file_path): i for i in items}.values())
    pages = [unique[k:k + page_size] for k in range(0, len(unique), page_size)] or [[]]
    rnd = random.Random(seed)
    pages += [rnd.choice(pages) for _ in range(repeats)]  # resent pages
    rnd.shuffle(pages)
    c = RecordCollector()
    c.start(DEV, CHANNEL, 7, 0.0, 10.0)
    done = None
    for n, p in enumerate(pages, 1):
        info = manscdp.as_record_info(manscdp.parse(page(7, len(unique), p)))
        result = c.add_page(DEV, info)
        if result is not None:
            done, messages = result, n
            break
    assert done is not None and done.complete and done.messages == messages
    assert done.items == sorted(unique, key=sort_key) and done.sum_num == len(unique)
    assert len(c) == 0 and c.get_timer() is None


@FUZZ
@given(pages=st.lists(st.tuples(st.integers(-1, 3), st.integers(0, 50), _items), max_size=8),
       max_items=st.integers(1, 30))
def test_collector_never_overflows_and_always_sorts(pages, max_items):
    c = RecordCollector(max_items=max_items)
    c.start(DEV, CHANNEL, 1, 0.0, 10.0)
    finished = []
    for sn, sum_num, items in pages:
        info = manscdp.RecordInfo(CHANNEL, sn, None, sum_num, items)
        result = c.add_page(DEV, info)
        if result is not None:
            finished.append(result)
    finished += c.handle_timer(10.0)
    assert len(finished) <= 1 and len(c) == 0
    if finished:
        q = finished[0]
        assert len(q.items) <= max_items and q.items == sorted(q.items, key=sort_key)
        assert len({(i.start_time, i.end_time, i.file_path) for i in q.items}) == len(q.items)
        assert q.complete == (q.messages > 0 and len(q.items) >= q.sum_num and not q.truncated)
        assert q.messages == sum(1 for sn, _, _ in pages if sn == 1) or q.complete or q.truncated


@FUZZ
@given(st.binary(max_size=600))
def test_hostile_answers_never_break_the_core(data):
    server = online_server()
    sn, _ = ask(server)
    server.receive_datagram(message_bytes(DEV, data, cseq=21), ADDR, 2.0)
    out, _ = drain(server)
    assert [m.status for m in out] in ([200], [400])
    q = server.record_query(sn)
    assert q is None or q.received == 0
