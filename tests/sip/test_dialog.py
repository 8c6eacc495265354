"""The INVITE dialog table (sip_server.sip.dialog): every row, refusals, whole dialogs, in-dialog requests."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sip_server.gb
import sip_server.sip
from sip_server.sip import (
    Headers,
    SipEndpoint,
    SipRequest,
    make_response,
    parse_message,
    parse_name_addr,
)
from sip_server.sip.dialog import (
    CALLING,
    CANCEL_PENDING,
    CANCELLING,
    CONFIRMED,
    INPUTS,
    INVITE_UAC,
    MANSRTSP_TYPE,
    OUTCOMES,
    PROCEEDING,
    STATES,
    TERMINATED,
    TERMINATING,
    Dialog,
    DialogError,
    IllegalTransition,
)
from sip_server.sip.message import contact_value, format_hostport, via_value

PLATFORM = "34020000002000000001"
CHANNEL = "34020000001310000001"
DEVICE_ADDR = ("192.168.1.64", 5060)

# The table as reviewed: state -> {input: next state}. Written out separately from the module so that an
# accidental edit of INVITE_UAC fails here.
SPEC = """
calling         1xx:proceeding 2xx:confirmed 3xx:terminated timeout:terminated hangup:cancel_pending
                abort:cancel_pending bye_in:terminated info_in:calling ack_in:calling
proceeding      1xx:proceeding 2xx:confirmed 3xx:terminated timeout:terminated hangup:cancelling
                abort:cancelling bye_in:terminated info_in:proceeding ack_in:proceeding
cancel_pending  1xx:cancelling 2xx:terminating 3xx:terminated timeout:terminated hangup:cancel_pending
                abort:cancel_pending bye_in:terminated info_in:cancel_pending ack_in:cancel_pending
cancelling      1xx:cancelling 2xx:terminating 3xx:terminated timeout:terminated hangup:cancelling
                abort:cancelling bye_in:terminated info_in:cancelling ack_in:cancelling
confirmed       2xx:confirmed hangup:terminating abort:terminating info:confirmed bye_in:terminated
                info_in:confirmed ack_in:confirmed
terminating     2xx:terminating hangup:terminating abort:terminating bye_in:terminated ack_in:terminating
                bye_done:terminated
terminated
"""


def spec() -> dict[tuple[str, str], str]:
    out: dict[tuple[str, str], str] = {}
    state = ""
    for line in SPEC.strip().splitlines():
        words = line.split()
        if not line.startswith(" "):
            state, words = words[0], words[1:]
        for w in words:
            event, _, nxt = w.partition(":")
            out[(state, event)] = nxt
    return out


# --------------------------------------------------------------------------- messages
def make_invite(transport: str = "udp") -> SipRequest:
    h = Headers()
    h.add("Via", via_value(transport))
    h.add("From", f"<sip:{PLATFORM}@3402000000>;tag=ourtag")
    h.add("To", f"<sip:{CHANNEL}@3402000000>")
    h.add("Call-ID", "call-1@3402000000")
    h.add("CSeq", "1 INVITE")
    h.add("Contact", contact_value(PLATFORM, "192.0.2.1:5060"))
    h.add("Content-Type", "APPLICATION/SDP")
    return SipRequest("INVITE", f"sip:{CHANNEL}@{DEVICE_ADDR[0]}:{DEVICE_ADDR[1]}", h, b"v=0\r\n")


def response(invite: SipRequest, status: int, tag: str | None = "devtag", contact: str | None = None,
             record_route: list[str] = ()):
    r = make_response(invite, status, to_tag=tag)
    for rr in record_route:
        r.headers.add("Record-Route", rr)
    if contact:
        r.headers.add("Contact", contact)
    return parse_message(r.to_bytes())


def device_request(method: str, cseq: int, body: bytes = b"", content_type: str | None = None):
    ct = f"Content-Type: {content_type}\r\n" if content_type else ""
    return parse_message(
        (f"{method} sip:{PLATFORM}@3402000000 SIP/2.0\r\nVia: SIP/2.0/UDP 192.168.1.64:5060;branch=z9hG4bK{method}\r\n"
         f"From: <sip:{CHANNEL}@3402000000>;tag=devtag\r\nTo: <sip:{PLATFORM}@3402000000>;tag=ourtag\r\n"
         f"Call-ID: call-1@3402000000\r\nCSeq: {cseq} {method}\r\n{ct}Content-Length: {len(body)}\r\n\r\n").encode()
        + body)


def dialog_in(state: str) -> Dialog:
    d = Dialog(make_invite())
    d.state = state
    return d


def message_for(d: Dialog, event: str):
    if event in ("1xx", "2xx", "3xx"):
        status = {"1xx": 180, "2xx": 200, "3xx": 486}[event]
        return response(d.invite, status, contact=f"<sip:{CHANNEL}@192.168.1.64:5060>")
    if event in ("bye_in", "info_in", "ack_in"):
        return device_request({"bye_in": "BYE", "info_in": "INFO", "ack_in": "ACK"}[event], 7)
    return None


# --------------------------------------------------------------------------- the table
def test_table_is_the_reviewed_spec():
    assert {k: t.next_state for k, t in INVITE_UAC.items()} == spec()
    assert set(s for s, _ in INVITE_UAC) | {TERMINATED} == set(STATES)
    assert set(e for _, e in INVITE_UAC) == set(INPUTS)
    assert not [k for k in INVITE_UAC if k[0] == TERMINATED]


@pytest.mark.parametrize("state,event", sorted(INVITE_UAC))
def test_every_legal_transition(state, event):
    d = dialog_in(state)
    msg = message_for(d, event)
    t = d.fire(event, msg)
    assert t is INVITE_UAC[(state, event)]
    assert d.state == t.next_state == spec()[(state, event)]
    ops = [op for op, _ in t.actions]
    assert set(ops) <= {"early", "establish", "send", "reply", "deliver", "failed", "ended"}
    for op, arg in t.actions:
        if op in ("failed", "ended"):
            assert arg in OUTCOMES
        if op == "send":
            assert arg in ("ACK", "CANCEL", "BYE", "INFO")
        if op == "reply":
            assert arg == "200"
    if "establish" in ops:
        assert d.remote_tag == "devtag" and d.remote_target == f"sip:{CHANNEL}@192.168.1.64:5060"
        assert ops.index("establish") < ops.index("send")  # the ACK needs the dialog
    if "early" in ops:
        assert d.remote_tag == "devtag" and d.dialog_state == "early"
    if event in ("bye_in", "info_in"):
        assert d.remote_cseq == 7 and ("reply", "200") in t.actions


ILLEGAL = sorted(set(itertools.product(STATES, INPUTS)) - set(INVITE_UAC))


@pytest.mark.parametrize("state,event", ILLEGAL)
def test_illegal_transitions_are_refused_and_change_nothing(state, event):
    d = dialog_in(state)
    before = (d.state, d.remote_tag, d.remote_target, d.local_cseq, d.route_set)
    assert not d.can(event)
    with pytest.raises(IllegalTransition) as err:
        d.fire(event, message_for(d, event))
    assert (err.value.state, err.value.event) == (state, event)
    assert isinstance(err.value, DialogError)
    assert (d.state, d.remote_tag, d.remote_target, d.local_cseq, d.route_set) == before


def test_some_refusals_that_matter():
    assert ("calling", "info") in ILLEGAL  # no INFO before the dialog is confirmed
    assert ("confirmed", "3xx") in ILLEGAL and ("confirmed", "timeout") in ILLEGAL
    assert ("terminated", "hangup") in ILLEGAL and ("terminated", "bye_in") in ILLEGAL
    assert ("terminating", "info") in ILLEGAL and ("terminating", "info_in") in ILLEGAL
    assert ("calling", "bye_done") in ILLEGAL


@given(st.lists(st.sampled_from(INPUTS), max_size=12))
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_path_reports_once_and_byes_only_a_dialog(events):
    """Walking the table with any legal inputs: one outcome at most, exactly one once the session is over
    for the TU; CANCEL only after a provisional; BYE only after the 2xx established the dialog; one answer."""
    d = Dialog(make_invite())
    reports = delivered = 0
    established = provisional = False
    for event in events:
        if not d.can(event):
            continue
        t = d.fire(event, message_for(d, event))
        provisional |= event == "1xx"
        for op, arg in t.actions:
            established |= op == "establish"
            reports += op in ("failed", "ended")
            delivered += op == "deliver"
            if (op, arg) == ("send", "CANCEL"):
                assert provisional
            if (op, arg) in (("send", "BYE"), ("send", "ACK")):
                assert established
        assert reports <= 1 and delivered <= 1
        assert reports == (1 if d.state in (TERMINATING, TERMINATED) else 0)


# --------------------------------------------------------------------------- whole dialogs
def sent(ep: SipEndpoint):
    return [parse_message(o.data) for o in ep.messages_to_send()]


def endpoint() -> SipEndpoint:
    ep = SipEndpoint()
    ep.local_addresses["udp"] = ("192.0.2.1", 5060)
    return ep


def test_a_whole_live_view_dialog(sip_vectors: Path):
    ep = endpoint()
    invite = make_invite()
    key = ep.send_request(invite, DEVICE_ADDR, 0.0, "udp")
    [wire_invite] = sent(ep)
    assert wire_invite.top_via.host == "192.0.2.1" and wire_invite.top_via.branch.startswith("z9hG4bK")
    d = Dialog(invite, "udp")
    assert d.state == CALLING and d.dialog_state is None and d.id == ("call-1@3402000000", "ourtag", None)

    # 100 Trying carries no tag: still no dialog
    assert d.fire("1xx", response(invite, 100, tag=None)).actions == (("early", ""),)
    assert d.state == PROCEEDING and d.dialog_state is None
    # Dahua's "101 Dialog Establishement" has a tag and a Contact: an early dialog
    d.fire("1xx", response(invite, 101, tag="early1", contact=f"<sip:{CHANNEL}@192.168.6.71:5060>"))
    assert d.dialog_state == "early" and d.remote_tag == "early1" and d.target == f"sip:{CHANNEL}@192.168.6.71:5060"

    ok = response(invite, 200, contact=f"<sip:{CHANNEL}@192.168.1.64:5060>",
                  record_route=["<sip:p1.example;lr>", "<sip:p2.example;lr>"])
    t = d.fire("2xx", ok)
    assert [a for a in t.actions if a[0] != "establish"] == [("send", "ACK"), ("deliver", "")]
    assert d.state == CONFIRMED and d.dialog_state == "confirmed" and d.remote_tag == "devtag"
    assert d.route_set == ["<sip:p2.example;lr>", "<sip:p1.example;lr>"]  # reversed (RFC 3261 12.1.2)

    ack = d.ack()
    ep.send_request(ack, DEVICE_ADDR, 1.0, "udp")
    [wire_ack] = sent(ep)
    assert wire_ack.method == "ACK" and wire_ack.uri == f"sip:{CHANNEL}@192.168.1.64:5060"
    assert wire_ack.headers.get("CSeq") == "1 ACK" and wire_ack.to_tag == "devtag"
    assert wire_ack.headers.get_all("Route") == d.route_set
    assert wire_ack.headers.get("From") == invite.headers.get("From")
    assert wire_ack.top_via.host == "192.0.2.1" and wire_ack.top_via.branch != wire_invite.top_via.branch
    assert key is not None

    # playback control inside the dialog: INFO with MANSRTSP, then our BYE
    assert d.fire("info").actions == (("send", "INFO"),)
    body = b"PAUSE RTSP/1.0\r\nCSeq: 2\r\nPauseTime: now\r\n\r\n"
    info = d.info(body)
    ep.send_request(info, DEVICE_ADDR, 2.0, "udp")
    [wire_info] = sent(ep)
    assert wire_info.method == "INFO" and wire_info.headers.get("CSeq") == "2 INFO"
    assert wire_info.headers.get("Content-Type") == MANSRTSP_TYPE == "Application/MANSRTSP"
    assert wire_info.body == body and wire_info.uri == d.target
    assert wire_info.to_tag == "devtag" and wire_info.from_tag == "ourtag" and wire_info.call_id == d.call_id
    assert wire_info.headers.get_all("Route") == d.route_set

    assert d.fire("hangup").actions == (("send", "BYE"), ("ended", "hangup"))
    bye = d.bye(extra=[("User-Agent", "gbops")])
    assert bye.headers.get("CSeq") == "3 BYE" and bye.headers.get("User-Agent") == "gbops"
    assert d.state == TERMINATING and d.dialog_state == "confirmed"
    d.fire("bye_done")
    assert d.state == TERMINATED and d.dialog_state == "terminated"


def test_a_bye_from_the_device():
    d = Dialog(make_invite())
    d.fire("2xx", response(d.invite, 200, contact=f"<sip:{CHANNEL}@192.168.1.64:5060>"))
    t = d.fire("ack_in", device_request("ACK", 1))
    assert t.actions == () and d.state == CONFIRMED
    t = d.fire("bye_in", device_request("BYE", 2))
    assert t.actions == (("reply", "200"), ("ended", "by_device"))
    assert d.state == TERMINATED and d.remote_cseq == 2
    with pytest.raises(IllegalTransition):
        d.fire("hangup")


def test_an_info_with_a_mansrtsp_body_from_the_device(sip_vectors: Path):
    d = Dialog(make_invite())
    d.fire("2xx", response(d.invite, 200))
    req = device_request("INFO", 20, b"PLAY RTSP/1.0\r\nCSeq: 20\r\nScale: 2.0\r\n\r\n", MANSRTSP_TYPE)
    assert d.fire("info_in", req).actions == (("reply", "200"),)
    assert d.state == CONFIRMED and d.remote_cseq == 20
    # the NVR's 200 to an INFO PAUSE (Application/RTSP body) belongs to the same kind of dialog
    ok = parse_message((sip_vectors / "hikvision_nvr_info_pause_200ok_rtsp.sip").read_bytes())
    assert ok.cseq == (21, "INFO") and ok.body.startswith(b"RTSP/1.0 200 OK")


def test_cancel_flows():
    d = Dialog(make_invite())
    assert d.fire("hangup").actions == () and d.state == CANCEL_PENDING
    t = d.fire("1xx", response(d.invite, 180))
    assert t.actions[-1] == ("send", "CANCEL") and d.state == CANCELLING
    cancel = d.cancel()
    assert cancel.method == "CANCEL" and cancel.headers.get("CSeq") == "1 CANCEL" and cancel.uri == d.invite.uri
    assert d.fire("3xx", response(d.invite, 487)).actions == (("ended", "cancelled"),)

    late = Dialog(make_invite())
    late.fire("hangup")
    t = late.fire("2xx", response(late.invite, 200, contact=f"<sip:{CHANNEL}@10.0.0.5:5060>"))
    assert [a for a in t.actions if a[0] == "send"] == [("send", "ACK"), ("send", "BYE")]
    assert late.ack().uri == late.bye().uri == f"sip:{CHANNEL}@10.0.0.5:5060"


def test_2xx_without_contact_or_tag_falls_back_on_the_invite():
    d = Dialog(make_invite())
    d.fire("1xx", response(d.invite, 183, tag="t1", contact="<sip:x@9.9.9.9>"))
    d.fire("2xx", response(d.invite, 200, tag=None))
    assert d.remote_tag is None and d.target == d.invite.uri  # the 2xx alone defines the dialog
    assert d.bye().headers.get("To") == f"<sip:{CHANNEL}@3402000000>"


def test_ack_echoes_the_2xx_to_and_requests_use_our_to():
    d = Dialog(make_invite())
    ok = response(d.invite, 200)
    ok.headers.replace_first("To", f'"cam" <sip:{CHANNEL}@192.168.1.64:80>;tag=devtag')
    d.fire("2xx", ok)
    assert d.ack().headers.get("To") == f'"cam" <sip:{CHANNEL}@192.168.1.64:80>;tag=devtag'
    assert d.bye().headers.get("To") == f"<sip:{CHANNEL}@3402000000>;tag=devtag"


def test_route_headers_can_be_left_out():
    d = Dialog(make_invite(), route_headers=False)
    d.fire("2xx", response(d.invite, 200, record_route=["<sip:p1.example;lr>"]))
    assert d.route_set == ["<sip:p1.example;lr>"]
    assert d.ack().headers.get_all("Route") == [] and d.bye().headers.get_all("Route") == []


def test_no_request_before_a_dialog_and_bad_invites():
    d = Dialog(make_invite())
    with pytest.raises(DialogError):
        d.bye()
    inv = make_invite()
    inv.headers.replace_first("From", f"<sip:{PLATFORM}@3402000000>")
    with pytest.raises(DialogError):
        Dialog(inv)


# --------------------------------------------------------------------------- Via and Contact in one place
def test_via_and_contact_values():
    assert via_value("udp") == "SIP/2.0/UDP 0.0.0.0:0;rport"
    assert via_value("tcp", "::1", 5060, branch="z9hG4bKx") == "SIP/2.0/TCP [::1]:5060;rport;branch=z9hG4bKx"
    assert via_value("udp", "10.0.0.1", 5060, rport=False) == "SIP/2.0/UDP 10.0.0.1:5060"
    assert contact_value(PLATFORM, format_hostport("2001:db8::1", 5060)) == f"<sip:{PLATFORM}@[2001:db8::1]:5060>"
    assert str(parse_name_addr(contact_value(PLATFORM, "gb.example:5060")).uri) == f"sip:{PLATFORM}@gb.example:5060"


def test_no_other_place_writes_a_via_or_contact():
    pattern = re.compile(r'"(Via|Contact)",\s*f"|SIP/2\.0/\{')
    offenders = []
    for pkg in (sip_server.sip, sip_server.gb):
        for path in sorted(Path(pkg.__file__).parent.glob("*.py")):
            if path.name == "message.py":
                continue
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if pattern.search(line):
                    offenders.append(f"{path.name}:{n}: {line.strip()}")
    assert offenders == []
