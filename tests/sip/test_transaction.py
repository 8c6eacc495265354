"""RFC 3261 section 17 transactions under a fake clock, and two endpoints over a lossy link."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from sip_server.sip import (
    AckTimeout,
    Headers,
    MessageDropped,
    Outgoing,
    RequestReceived,
    ResponseReceived,
    SipEndpoint,
    SipRequest,
    SipResponse,
    TransactionTimeout,
    make_response,
    parse_message,
)
from sip_server.sip.transaction import INITIAL, TABLES, TERMINATED, TIMERS

DEV = ("192.0.2.5", 5060)  # a device
SRV = ("198.51.100.1", 5060)  # the platform


def request(method: str = "MESSAGE", *, branch: str | None = "z9hG4bKabc", cseq: int = 1, call_id: str = "c1",
            from_tag: str = "ft", via: str = "192.0.2.5:5060", uri: str = "sip:34020000002000000001@3402000000",
            body: bytes = b"") -> SipRequest:
    h = Headers()
    b = f";branch={branch}" if branch is not None else ""
    h.add("Via", f"SIP/2.0/UDP {via};rport{b}")
    h.add("From", f"<sip:34020000001320000001@3402000000>;tag={from_tag}")
    h.add("To", "<sip:34020000002000000001@3402000000>")
    h.add("Call-ID", call_id)
    h.add("CSeq", f"{cseq} {method}")
    h.add("Max-Forwards", "70")
    return SipRequest(method, uri, h, body)


def events(ep: SipEndpoint) -> list:
    out = []
    while (e := ep.next_event()) is not None:
        out.append(e)
    return out


def run_timers(ep: SipEndpoint, until: float) -> list[tuple[float, list[Outgoing], list]]:
    """Step the fake clock through every timer up to ``until``: [(time, sent, events)]."""
    steps = []
    while (t := ep.get_timer()) is not None and t <= until:
        ep.handle_timer(t)
        steps.append((t, ep.messages_to_send(), events(ep)))
    return steps


# ------------------------------------------------------------------ tables are consistent
def test_tables_are_well_formed() -> None:
    for kind, table in TABLES.items():
        states = {s for s, _ in table} | {INITIAL[kind].next_state}
        for (state, _inp), tr in table.items():
            assert tr.next_state in states | {TERMINATED}, (kind, state, tr)
            for op, arg in tr.actions:
                if op in ("arm", "rearm", "rearm_t2", "cancel"):
                    assert arg in TIMERS
    assert set("ABCDEFGHIJKLM") <= set(TIMERS)


# ------------------------------------------------------------------ client transactions
def test_timer_e_doubles_up_to_t2_and_timer_f_gives_up_at_64_t1() -> None:
    ep = SipEndpoint()
    key = ep.send_request(request(), DEV, 0.0)
    first = ep.messages_to_send()
    assert len(first) == 1 and first[0].addr == DEV and first[0].transport == "udp"
    steps = run_timers(ep, 100.0)
    retransmit_times = [t for t, sent, _ in steps if sent]
    assert retransmit_times == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert all(s[0].data == first[0].data for t, s, _ in steps if s)
    timeout = [(t, e) for t, _, evs in steps for e in evs]
    assert len(timeout) == 1
    t, ev = timeout[0]
    assert t == 32.0 and isinstance(ev, TransactionTimeout) and ev.key == key
    assert ep.transaction_count == 0 and ep.get_timer() is None


def test_timers_scale_with_t1_t2() -> None:
    ep = SipEndpoint(t1=0.1, t2=0.4)
    ep.send_request(request(), DEV, 10.0)
    steps = run_timers(ep, 100.0)
    gaps = [round(b - a, 6) for a, b in zip([10.0] + [t for t, s, _ in steps if s], [t for t, s, _ in steps if s],
                                              strict=False)]
    assert gaps[:4] == [0.1, 0.2, 0.4, 0.4]
    assert steps[-1][0] == pytest.approx(16.4) and isinstance(steps[-1][2][0], TransactionTimeout)


def test_timer_e_is_t2_in_proceeding_and_final_response_delivered_once() -> None:
    ep = SipEndpoint()
    req = request()
    key = ep.send_request(req, DEV, 0.0)
    ep.messages_to_send()
    ep.handle_timer(0.5)  # one retransmission at 0.5, next due at 1.5
    assert len(ep.messages_to_send()) == 1
    ep.receive_datagram(make_response(parse_message(req.to_bytes()), 100).to_bytes(), DEV, 0.6)
    (prov,) = events(ep)
    assert isinstance(prov, ResponseReceived) and prov.response.status == 100 and prov.request is req
    ep.handle_timer(1.5)
    assert len(ep.messages_to_send()) == 1
    assert ep.get_timer() == 5.5  # reset to T2 in Proceeding
    ok = make_response(parse_message(req.to_bytes()), 200, to_tag="x").to_bytes()
    ep.receive_datagram(ok, DEV, 2.0)
    (final,) = events(ep)
    assert isinstance(final, ResponseReceived) and final.response.status == 200 and final.key == key
    assert final.addr == DEV
    ep.receive_datagram(ok, DEV, 2.5)  # retransmitted final: absorbed
    assert events(ep) == []
    steps = run_timers(ep, 100.0)
    assert [t for t, _, _ in steps] == [7.0]  # Timer K = T4, and nothing else is left
    assert all(not s and not e for _, s, e in steps)
    assert ep.transaction_count == 0


def test_reliable_transport_no_retransmissions_and_zero_wait_timers() -> None:
    ep = SipEndpoint()
    req = request()
    ep.send_request(req, DEV, 0.0, "tcp")
    assert len(ep.messages_to_send()) == 1
    assert ep.get_timer() == 32.0  # only Timer F
    ep.receive_message(make_response(parse_message(req.to_bytes()), 200), DEV, 1.0, "tcp")
    assert isinstance(events(ep)[0], ResponseReceived)
    assert ep.transaction_count == 0  # Timer K is zero on TCP
    assert ep.get_timer() is None


def test_invite_client_timer_a_doubles_and_timer_b() -> None:
    ep = SipEndpoint()
    ep.send_request(request("INVITE"), DEV, 0.0)
    ep.messages_to_send()
    steps = run_timers(ep, 100.0)
    assert [t for t, s, _ in steps if s] == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert steps[-1][0] == 32.0 and isinstance(steps[-1][2][0], TransactionTimeout)


def test_invite_client_non_2xx_generates_ack_and_resends_it() -> None:
    ep = SipEndpoint()
    inv = request("INVITE", cseq=20, uri="sip:34020000001310000001@192.0.2.5:5060")
    key = ep.send_request(inv, DEV, 0.0)
    ep.messages_to_send()
    ep.receive_datagram(make_response(parse_message(inv.to_bytes()), 180, to_tag="dev").to_bytes(), DEV, 0.1)
    assert events(ep)[0].response.status == 180
    busy = make_response(parse_message(inv.to_bytes()), 486, to_tag="dev").to_bytes()
    ep.receive_datagram(busy, DEV, 0.2)
    (ev,) = events(ep)
    assert isinstance(ev, ResponseReceived) and ev.response.status == 486 and ev.key == key
    (ack_out,) = ep.messages_to_send()
    ack = parse_message(ack_out.data)
    assert ack.method == "ACK" and ack.uri == inv.uri and ack.cseq == (20, "ACK")
    assert ack.vias[0].branch == "z9hG4bKabc" and len(ack.vias) == 1
    assert ack.to_tag == "dev" and ack.from_tag == "ft" and ack.call_id == "c1"
    ep.receive_datagram(busy, DEV, 1.0)
    assert events(ep) == [] and [o.data for o in ep.messages_to_send()] == [ack_out.data]
    steps = run_timers(ep, 100.0)
    assert [t for t, _, _ in steps] == [32.2]  # Timer D
    assert ep.transaction_count == 0


def test_invite_client_2xx_delivered_once_and_tu_ack_resent() -> None:
    ep = SipEndpoint()
    inv = request("INVITE", cseq=20)
    ep.send_request(inv, DEV, 0.0)
    ep.messages_to_send()
    ok = make_response(parse_message(inv.to_bytes()), 200, to_tag="dev").to_bytes()
    ep.receive_datagram(ok, DEV, 0.3)
    (ev,) = events(ep)
    assert ev.response.status == 200
    assert ep.messages_to_send() == []  # the TU acknowledges a 2xx, not the transaction
    ep.receive_datagram(ok, DEV, 0.8)
    assert events(ep) == [] and ep.messages_to_send() == []
    ack = request("ACK", branch=None, cseq=20)
    ep.send_request(ack, ("192.0.2.5", 5062), 0.9)
    (sent,) = ep.messages_to_send()
    assert parse_message(sent.data).vias[0].branch.startswith("z9hG4bK")
    ep.receive_datagram(ok, DEV, 1.8)  # the ACK was lost: the 2xx comes again
    assert events(ep) == []
    assert ep.messages_to_send() == [sent]
    run_timers(ep, 100.0)
    assert ep.transaction_count == 0


def test_response_matched_by_call_id_cseq_when_branch_mangled() -> None:
    ep = SipEndpoint()
    req = request(cseq=7)
    ep.send_request(req, DEV, 0.0)
    resp = make_response(parse_message(req.to_bytes()), 200)
    resp.headers.set("Via", "SIP/2.0/UDP 192.0.2.5:5060;rport;branch=z9h64bKmangled")
    ep.receive_datagram(resp.to_bytes(), DEV, 0.1)
    (ev,) = events(ep)
    assert isinstance(ev, ResponseReceived) and ev.request is req


def test_stray_response_is_dropped() -> None:
    ep = SipEndpoint()
    resp = make_response(request(), 200)
    ep.receive_datagram(resp.to_bytes(), DEV, 0.0)
    (ev,) = events(ep)
    assert isinstance(ev, MessageDropped) and "stray" in ev.error and isinstance(ev.message, SipResponse)


def test_send_request_fills_branch_max_forwards_and_placeholder_via() -> None:
    ep = SipEndpoint()
    ep.local_addresses["udp"] = ("198.51.100.1", 5060)
    req = request(branch=None, via="0.0.0.0:0")
    req.headers.remove("Max-Forwards")
    key = ep.send_request(req, DEV, 0.0)
    via = req.vias[0]
    assert via.branch.startswith("z9hG4bK") and len(via.branch) > 12
    assert (via.host, via.port) == ("198.51.100.1", 5060)
    assert req.headers.get("Max-Forwards") == "70"
    assert key == ("c", via.branch, "MESSAGE")
    bare = SipRequest("OPTIONS", "sip:a@b", Headers([("From", "<sip:x@y>;tag=1"), ("To", "<sip:a@b>"),
                                                     ("Call-ID", "o1"), ("CSeq", "1 OPTIONS")]))
    ep.send_request(bare, DEV, 0.0)
    assert bare.vias[0].host == "198.51.100.1" and bare.vias[0].rport == ""
    with pytest.raises(ValueError):
        ep.send_request(request(branch=via.branch), DEV, 0.0)  # same branch + method exists
    with pytest.raises(ValueError):
        SipEndpoint().send_request(SipRequest("OPTIONS", "sip:a@b", Headers([("CSeq", "1 OPTIONS")])), DEV, 0.0)


# ------------------------------------------------------------------ server transactions
def test_retransmitted_request_gets_last_response_and_is_delivered_once() -> None:
    ep = SipEndpoint()
    data = request(branch="z9hG4bKdev1").to_bytes()
    ep.receive_datagram(data, ("203.0.113.7", 40000), 0.0)
    (ev,) = events(ep)
    assert isinstance(ev, RequestReceived) and ev.addr == ("203.0.113.7", 40000) and ev.transport == "udp"
    ep.receive_datagram(data, ("203.0.113.7", 40000), 0.5)  # before any response: absorbed
    assert events(ep) == [] and ep.messages_to_send() == []
    assert ep.send_response(ev.key, make_response(ev.request, 200, to_tag="srv"), 0.6)
    (out,) = ep.messages_to_send()
    assert out.addr == ("203.0.113.7", 40000)  # symmetric response routing
    via = parse_message(out.data).vias[0]
    assert via.rport == "40000" and via.received == "203.0.113.7"  # RFC 3581
    for t in (1.0, 2.0, 4.0):
        ep.receive_datagram(data, ("203.0.113.7", 40000), t)
        assert events(ep) == []
        assert ep.messages_to_send() == [out]
    assert not ep.send_response(ev.key, make_response(ev.request, 500), 4.1)  # second final refused
    steps = run_timers(ep, 100.0)
    assert [t for t, _, _ in steps] == [32.6]  # Timer J
    assert ep.transaction_count == 0
    assert not ep.send_response(ev.key, make_response(ev.request, 200), 40.0)


def test_provisional_then_final_non_invite_server() -> None:
    ep = SipEndpoint()
    data = request(branch="z9hG4bKdev2").to_bytes()
    ep.receive_datagram(data, DEV, 0.0)
    (ev,) = events(ep)
    ep.send_response(ev.key, make_response(ev.request, 100), 0.1)
    (trying,) = ep.messages_to_send()
    ep.receive_datagram(data, DEV, 0.5)
    assert ep.messages_to_send() == [trying]
    ep.send_response(ev.key, make_response(ev.request, 200), 0.6)
    assert parse_message(ep.messages_to_send()[0].data).status == 200


def test_received_only_when_host_differs_without_rport() -> None:
    ep = SipEndpoint()
    req = request(branch="z9hG4bKdev3")
    req.headers.set("Via", "SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bKdev3")
    ep.receive_datagram(req.to_bytes(), ("203.0.113.7", 5060), 0.0)
    (ev,) = events(ep)
    ep.send_response(ev.key, make_response(ev.request, 200), 0.0)
    via = parse_message(ep.messages_to_send()[0].data).vias[0]
    assert via.received == "203.0.113.7" and via.rport is None


def test_tcp_server_transaction_ends_at_once() -> None:
    ep = SipEndpoint()
    ep.receive_message(request(branch="z9hG4bKt"), DEV, 0.0, "tcp")
    (ev,) = events(ep)
    assert ev.transport == "tcp"
    ep.send_response(ev.key, make_response(ev.request, 200), 0.1)
    (out,) = ep.messages_to_send()
    assert out.transport == "tcp" and out.addr == DEV
    assert ep.transaction_count == 0 and ep.get_timer() is None


def test_invite_server_retransmits_final_until_ack_then_timer_i() -> None:
    ep = SipEndpoint()
    inv = request("INVITE", branch="z9hG4bKinv")
    ep.receive_datagram(inv.to_bytes(), DEV, 0.0)
    (ev,) = events(ep)
    ep.receive_datagram(inv.to_bytes(), DEV, 0.5)  # retransmitted before the TU answered: 100 Trying
    (trying,) = ep.messages_to_send()
    assert parse_message(trying.data).status == 100 and events(ep) == []
    ep.send_response(ev.key, make_response(ev.request, 486, to_tag="srv"), 1.0)
    (busy,) = ep.messages_to_send()
    # Timer G: T1, 2*T1, 4*T1, then T2
    ep.handle_timer(1.5)
    ep.handle_timer(2.5)
    ep.handle_timer(4.5)
    ep.handle_timer(8.5)
    assert ep.messages_to_send() == [busy] * 4
    assert ep.get_timer() == 12.5
    ep.receive_datagram(inv.to_bytes(), DEV, 9.0)
    assert ep.messages_to_send() == [busy]
    ack = request("ACK", branch="z9hG4bKinv")
    ack.headers.set("To", "<sip:34020000002000000001@3402000000>;tag=srv")
    ep.receive_datagram(ack.to_bytes(), DEV, 9.5)
    assert events(ep) == []  # an ACK for a non-2xx is absorbed
    ep.receive_datagram(ack.to_bytes(), DEV, 9.6)
    assert events(ep) == [] and ep.messages_to_send() == []
    steps = run_timers(ep, 100.0)
    assert [t for t, _, _ in steps] == [14.5]  # Timer I = T4; G and H cancelled
    assert all(not s for _, s, _ in steps)
    assert ep.transaction_count == 0


def test_invite_server_timer_h_without_ack() -> None:
    ep = SipEndpoint()
    inv = request("INVITE", branch="z9hG4bKinv2")
    ep.receive_datagram(inv.to_bytes(), DEV, 0.0)
    (ev,) = events(ep)
    ep.send_response(ev.key, make_response(ev.request, 404), 0.0)
    ep.messages_to_send()
    steps = run_timers(ep, 100.0)
    sends = [t for t, s, _ in steps if s]
    assert sends == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert steps[-1][0] == 32.0 and ep.transaction_count == 0


def test_invite_server_2xx_retransmitted_until_ack_which_is_delivered_once() -> None:
    ep = SipEndpoint()
    inv = request("INVITE", branch="z9hG4bKinv3", cseq=5)
    ep.receive_datagram(inv.to_bytes(), DEV, 0.0)
    (ev,) = events(ep)
    ep.send_response(ev.key, make_response(ev.request, 200, to_tag="srv"), 0.0)
    (ok,) = ep.messages_to_send()
    ep.handle_timer(0.5)
    ep.handle_timer(1.5)
    assert ep.messages_to_send() == [ok, ok]
    ep.receive_datagram(inv.to_bytes(), DEV, 1.6)  # INVITE retransmission in Accepted: absorbed
    assert events(ep) == []
    ack = request("ACK", branch="z9hG4bKack3", cseq=5)  # an ACK for a 2xx is its own transaction
    ep.receive_datagram(ack.to_bytes(), DEV, 2.0)
    (got,) = events(ep)
    assert isinstance(got, RequestReceived) and got.request.method == "ACK"
    ep.receive_datagram(ack.to_bytes(), DEV, 2.1)
    assert events(ep) == []
    steps = run_timers(ep, 100.0)
    assert all(not s and not e for _, s, e in steps)  # no more 2xx, no AckTimeout
    assert ep.transaction_count == 0


def test_invite_server_ack_timeout() -> None:
    ep = SipEndpoint()
    inv = request("INVITE", branch="z9hG4bKinv4")
    ep.receive_datagram(inv.to_bytes(), DEV, 0.0)
    (ev,) = events(ep)
    resp = make_response(ev.request, 200, to_tag="srv")
    ep.send_response(ev.key, resp, 0.0)
    steps = run_timers(ep, 100.0)
    timeouts = [e for _, _, evs in steps for e in evs]
    assert len(timeouts) == 1 and isinstance(timeouts[0], AckTimeout)
    assert timeouts[0].key == ev.key and timeouts[0].response is resp
    assert steps[-1][0] == 32.0


def test_ack_without_transaction_is_delivered() -> None:
    ep = SipEndpoint()
    ep.receive_datagram(request("ACK", branch="z9hG4bKlate").to_bytes(), DEV, 0.0)
    (ev,) = events(ep)
    assert isinstance(ev, RequestReceived) and ev.request.method == "ACK"


def test_rfc2543_matching_without_branch_and_with_malformed_cookie() -> None:
    for branch in (None, "z9h64bK43194494", "1234"):
        ep = SipEndpoint()
        data = request(branch=branch).to_bytes()
        ep.receive_datagram(data, DEV, 0.0)
        (ev,) = events(ep)
        assert ev.key[0] == "s2543"
        ep.receive_datagram(data, DEV, 0.4)
        assert events(ep) == []
        ep.send_response(ev.key, make_response(ev.request, 200), 0.5)
        (out,) = ep.messages_to_send()
        ep.receive_datagram(data, DEV, 1.0)
        assert ep.messages_to_send() == [out]
        # a new request (CSeq + 1) from the same device is a new transaction
        ep.receive_datagram(request(branch=branch, cseq=2).to_bytes(), DEV, 1.1)
        assert len(events(ep)) == 1


def test_same_branch_different_sent_by_or_method_are_different_transactions() -> None:
    ep = SipEndpoint()
    ep.receive_datagram(request(branch="z9hG4bKsame").to_bytes(), DEV, 0.0)
    ep.receive_datagram(request(branch="z9hG4bKsame", via="192.0.2.6:5060").to_bytes(), DEV, 0.0)
    inv = request("INVITE", branch="z9hG4bKsame")
    ep.receive_datagram(inv.to_bytes(), DEV, 0.0)
    cancel = request("CANCEL", branch="z9hG4bKsame")
    ep.receive_datagram(cancel.to_bytes(), DEV, 0.0)
    evs = events(ep)
    assert len(evs) == 4 and len({e.key for e in evs}) == 4
    assert ep.invite_key_for_cancel(evs[3].key) == evs[2].key
    assert ep.invite_key_for_cancel(evs[0].key) is None


def test_unusable_input_is_reported() -> None:
    ep = SipEndpoint()
    ep.receive_datagram(b"\r\n\r\n", DEV, 0.0)  # keepalive ping
    ep.receive_datagram(b"", DEV, 0.0)
    assert events(ep) == []
    ep.receive_datagram(b"not sip at all\r\n\r\n", DEV, 0.0)
    (ev,) = events(ep)
    assert isinstance(ev, MessageDropped) and ev.message is None and ev.data == b"not sip at all\r\n\r\n"
    no_via = request()
    no_via.headers.remove("Via")
    ep.receive_datagram(no_via.to_bytes(), DEV, 0.0)
    (ev,) = events(ep)
    assert isinstance(ev, MessageDropped) and isinstance(ev.message, SipRequest) and "Via" in ev.error
    # the caller may answer such a request statelessly
    bad = request()
    bad.headers.set("CSeq", "1 INVITE")
    ep.receive_message(bad, DEV, 0.0, "tcp")
    (ev,) = events(ep)
    assert isinstance(ev, MessageDropped) and "CSeq" in ev.error and ev.data
    ep.send_stateless(make_response(ev.message, 400), DEV, "tcp")
    (out,) = ep.messages_to_send()
    assert parse_message(out.data).status == 400 and out.transport == "tcp"


def test_memory_is_released() -> None:
    ep = SipEndpoint()
    for i in range(2000):
        ep.receive_datagram(request(branch=f"z9hG4bK{i}", call_id=f"c{i}").to_bytes(), DEV, i * 0.001)
        (ev,) = events(ep)
        ep.send_response(ev.key, make_response(ev.request, 200), i * 0.001)
        key = ep.send_request(request(branch=f"z9hG4bKout{i}", call_id=f"o{i}"), DEV, i * 0.001)
        resp = make_response(parse_message(ep.get_transaction(key).data), 200)
        ep.receive_datagram(resp.to_bytes(), DEV, i * 0.001 + 0.0005)
        assert isinstance(events(ep)[0], ResponseReceived)
    ep.messages_to_send()
    assert ep.transaction_count == 4000
    ep.handle_timer(1000.0)
    assert ep.transaction_count == 0
    assert ep.get_timer() is None and len(ep._timerq) == 0 and ep._timerq.heap_size == 0
    assert not ep._client_by_cseq and not ep._server_by_cseq


def test_finished_transactions_keep_only_bytes() -> None:
    ep = SipEndpoint()
    ep.receive_datagram(request(branch="z9hG4bKrel").to_bytes(), DEV, 0.0)
    (ev,) = events(ep)
    ep.send_response(ev.key, make_response(ev.request, 200), 0.0)
    txn = ep.get_transaction(ev.key)
    assert txn.state == "completed" and txn.request is None and txn.last_response is None
    assert txn.last_response_data and set(txn.timers) == {"J"}
    key = ep.send_request(request(branch="z9hG4bKrel2"), DEV, 0.0)
    client = ep.get_transaction(key)
    assert client.request is not None and client.data
    ep.receive_datagram(make_response(request(branch="z9hG4bKrel2"), 404).to_bytes(), DEV, 0.1)
    assert client.state == "completed" and client.request is None and client.data == b""
    assert set(client.timers) == {"K"}


def test_timer_queue_orders_fifo_and_heap_timers() -> None:
    from sip_server.sip.transaction import TimerQueue, Transaction

    q = TimerQueue(["J", "K"])
    t1 = Transaction("x", 1, None, DEV, "udp")
    t2 = Transaction("x", 2, None, DEV, "udp")
    q.arm(t1, "J", 32.0, 32.0)
    q.arm(t2, "K", 5.0, 5.0)
    q.arm(t1, "E", 0.5, 0.5)
    q.arm(t2, "E", 0.7, 0.7)
    q.arm(t2, "E", 1.0, 1.0)  # re-armed: the 0.7 entry goes stale
    assert len(q) == 4 and q.next_deadline() == 0.5
    q.cancel(t1, "E")
    assert q.next_deadline() == 1.0 and len(q) == 3
    order = []
    while (item := q.pop_due(100.0)) is not None:
        order.append((item[0].key, item[1][3], item[1][0]))
    assert order == [(2, "E", 1.0), (2, "K", 5.0), (1, "J", 32.0)]
    assert q.next_deadline() is None and len(q) == 0
    assert q.pop_due(1e9) is None


def test_server_guard_forgets_unanswered_transactions() -> None:
    ep = SipEndpoint(tu_timeout=60.0)
    ep.receive_datagram(request().to_bytes(), DEV, 0.0)
    events(ep)
    assert ep.transaction_count == 1
    ep.handle_timer(60.0)
    assert ep.transaction_count == 0


# ------------------------------------------------------------------ two endpoints over a lossy link
class LossyLink:
    """Carries datagrams between endpoints by address, dropping some; drives everyone's timers."""

    def __init__(self, endpoints: dict[tuple[str, int], SipEndpoint], drop: Callable[[Outgoing], bool],
                 on_event: Callable[[tuple[str, int], object, float], None]) -> None:
        self.endpoints = endpoints
        self.drop = drop
        self.on_event = on_event
        self.now = 0.0
        self.sent = self.dropped = 0

    def pump(self) -> bool:
        moved = False
        for addr, ep in self.endpoints.items():
            while (ev := ep.next_event()) is not None:
                self.on_event(addr, ev, self.now)
                moved = True
            for out in ep.messages_to_send():
                self.sent += 1
                moved = True
                if self.drop(out):
                    self.dropped += 1
                    continue
                self.endpoints[out.addr].receive_datagram(out.data, addr, self.now)
        return moved

    def run(self, until: float) -> None:
        while True:
            while self.pump():
                pass
            due = [t for ep in self.endpoints.values() if (t := ep.get_timer()) is not None]
            if not due or min(due) > until:
                return
            self.now = min(due)
            for ep in self.endpoints.values():
                ep.handle_timer(self.now)


@pytest.mark.parametrize("seed", range(5))
def test_lossy_link_message_transactions(seed: int) -> None:
    rng = random.Random(seed)
    client, server = SipEndpoint(), SipEndpoint()
    delivered: list[str] = []
    finals: dict[object, int] = {}
    timeouts: list[object] = []

    def on_event(addr, ev, now):
        if addr == SRV and isinstance(ev, RequestReceived):
            delivered.append(ev.request.call_id)
            server.send_response(ev.key, make_response(ev.request, 200, to_tag="srv"), now)
        elif addr == DEV and isinstance(ev, ResponseReceived):
            finals[ev.key] = finals.get(ev.key, 0) + 1
        elif isinstance(ev, TransactionTimeout):
            timeouts.append(ev.key)

    link = LossyLink({DEV: client, SRV: server}, lambda out: rng.random() < 0.3, on_event)
    keys = [client.send_request(request(branch=f"z9hG4bKm{i}", call_id=f"m{i}"), SRV, 0.0) for i in range(30)]
    link.run(200.0)
    assert link.dropped > 10
    assert sorted(delivered) == sorted(f"m{i}" for i in range(30))  # each request delivered exactly once
    for key in keys:
        assert finals.get(key, 0) + timeouts.count(key) == 1
    assert len(timeouts) <= 1
    assert client.transaction_count == 0 and server.transaction_count == 0


@pytest.mark.parametrize("seed", range(5))
def test_lossy_link_invite_with_2xx_and_ack(seed: int) -> None:
    rng = random.Random(100 + seed)
    client, server = SipEndpoint(), SipEndpoint()
    got: dict[str, list] = {"invite": [], "ack": [], "final": [], "ack_timeout": [], "timeout": []}

    def on_event(addr, ev, now):
        if addr == SRV and isinstance(ev, RequestReceived):
            if ev.request.method == "INVITE":
                got["invite"].append(ev.request.call_id)
                server.send_response(ev.key, make_response(ev.request, 180, to_tag="srv"), now)
                server.send_response(ev.key, make_response(ev.request, 200, to_tag="srv", body=b"v=0\r\n",
                                                           content_type="application/sdp"), now)
            else:
                got["ack"].append(ev.request.call_id)
        elif addr == SRV and isinstance(ev, AckTimeout):
            got["ack_timeout"].append(ev.key)
        elif addr == DEV and isinstance(ev, ResponseReceived) and ev.response.status >= 200:
            got["final"].append(ev.response.call_id)
            ack = request("ACK", branch=None, call_id=ev.response.call_id, cseq=ev.response.cseq[0], via=f"{DEV[0]}:{DEV[1]}")
            client.send_request(ack, SRV, now)
        elif isinstance(ev, TransactionTimeout):
            got["timeout"].append(ev.key)

    link = LossyLink({DEV: client, SRV: server}, lambda out: rng.random() < 0.25, on_event)
    for i in range(20):
        client.send_request(request("INVITE", branch=f"z9hG4bKi{i}", call_id=f"i{i}"), SRV, 0.0)
    link.run(300.0)
    assert sorted(got["invite"]) == sorted(f"i{i}" for i in range(20))
    assert link.dropped > 10
    # each 2xx reached the client TU exactly once, and each ACK the server TU exactly once, although
    # INVITEs, 2xx and ACKs were lost on the way (lost ACKs are resent on the retransmitted 2xx)
    assert sorted(got["final"]) == sorted(f"i{i}" for i in range(20))
    assert sorted(got["ack"]) == sorted(f"i{i}" for i in range(20))
    assert got["ack_timeout"] == [] and got["timeout"] == []
    assert client.transaction_count == 0 and server.transaction_count == 0
