"""INVITE sessions of the GB core (sans-IO), answered with real devices' SDP from ../shared/vectors/sip."""

from __future__ import annotations

import pytest

from sip_server.gb.invite import InviteAnswered, InviteFailed, SessionEnded
from sip_server.sip import make_response, parse_message
from sip_server.sip.sdp import parse_sdp
from tests.gb.test_server import ADDR, DEV, register
from tests.gb.test_server import make_server as _make_server

CHANNEL = "34020000001310000001"


def make_server():
    return _make_server(catalog_subscribe_expires=0)


def online_server():
    server = make_server()
    register(server)
    server.endpoint.messages_to_send()
    list(iter(server.next_event, None))
    return server


def sent(server):
    return [parse_message(o.data) for o in server.endpoint.messages_to_send()]


def invite(server, transport="udp", ssrc="0200001234"):
    call_id = server.invites.invite(DEV, CHANNEL, media_ip="192.0.2.1", media_port=30002, ssrc=ssrc,
                                    transport=transport, now=1.0)
    [req] = [m for m in sent(server) if getattr(m, "method", None) == "INVITE"]
    return call_id, req


def events(server):
    return list(iter(server.next_event, None))


def respond(server, req, status, body=b"", contact=f"<sip:{CHANNEL}@192.168.1.64:5060>", now=2.0):
    resp = make_response(req, status, to_tag="devtag", body=body,
                         content_type="application/sdp" if body else None)
    if contact and status < 300:
        resp.headers.add("Contact", contact)
    server.receive_datagram(resp.to_bytes(), ADDR, now)


@pytest.mark.parametrize("transport,proto,setup", [("udp", "RTP/AVP", None),
                                                   ("tcp-passive", "TCP/RTP/AVP", "passive"),
                                                   ("tcp-active", "TCP/RTP/AVP", "active")])
def test_offer_is_what_gb_devices_expect(transport, proto, setup):
    server = online_server()
    call_id, req = invite(server, transport)
    assert req.uri == f"sip:{CHANNEL}@{ADDR[0]}:{ADDR[1]}"
    assert req.headers.get("Subject") == f"{CHANNEL}:0200001234,34020000002000000001:0"
    sdp = parse_sdp(req.body)
    assert sdp.session_name == "Play" and sdp.ssrc == "0200001234"
    assert sdp.media_address() == ("192.0.2.1", 30002)
    v = sdp.video
    assert v.proto == proto and v.formats == ["96", "98", "97"] and v.direction == "recvonly"
    assert ("rtpmap", "96 PS/90000") in v.attrs and ("rtpmap", "98 H264/90000") in v.attrs
    assert v.setup == setup
    assert req.call_id == call_id


@pytest.mark.parametrize("name,ssrc", [
    ("dahua_sd6c3230_invite_200ok.sip", "0000001002"),
    ("hikvision_ipc_invite_200ok_udp_setup_active.sip", "0000630886"),
    ("dahua_nvr_invite_200ok_tcp_active.sip", "0200005549"),
    ("happytime_gb28181sim_invite_200ok_tcp_active.sip", "1054605000"),
])
def test_real_answers_are_acked_and_their_ssrc_wins(sip_vectors, name, ssrc):
    server = online_server()
    call_id, req = invite(server)
    body = parse_message((sip_vectors / name).read_bytes()).body
    respond(server, req, 200, body)
    out = sent(server)
    acks = [m for m in out if getattr(m, "method", None) == "ACK"]
    assert len(acks) == 1 and acks[0].uri == f"sip:{CHANNEL}@192.168.1.64:5060"
    assert acks[0].headers.get("CSeq") == "1 ACK" and "devtag" in acks[0].headers.get("To")
    [answered] = [e for e in events(server) if isinstance(e, InviteAnswered)]
    assert answered.call_id == call_id and answered.ssrc == ssrc
    assert answered.remote_media == parse_sdp(body).media_address()


def test_refusal_reports_the_sip_status():
    server = online_server()
    call_id, req = invite(server)
    respond(server, req, 486)
    [failed] = [e for e in events(server) if isinstance(e, InviteFailed)]
    assert failed.status == 486 and "486" in failed.reason and failed.call_id == call_id


def test_answer_with_port_zero_fails_and_is_byed():
    server = online_server()
    _, req = invite(server)
    body = b"v=0\r\no=x 0 0 IN IP4 192.168.1.64\r\ns=Play\r\nc=IN IP4 192.168.1.64\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\n"
    respond(server, req, 200, body)
    methods = [getattr(m, "method", None) for m in sent(server)]
    assert "ACK" in methods and "BYE" in methods
    [failed] = [e for e in events(server) if isinstance(e, InviteFailed)]
    assert "port 0" in failed.reason


def test_device_bye_ends_the_session(sip_vectors):
    server = online_server()
    call_id, req = invite(server)
    respond(server, req, 200, parse_message((sip_vectors / "dahua_sd6c3230_invite_200ok.sip").read_bytes()).body)
    sent(server)
    events(server)
    bye = (f"BYE sip:34020000002000000001@3402000000 SIP/2.0\r\nVia: SIP/2.0/UDP {ADDR[0]}:{ADDR[1]};branch=z9hG4bKbye1\r\n"
           f"From: <sip:{CHANNEL}@3402000000>;tag=devtag\r\nTo: <sip:34020000002000000001@3402000000>;tag=x\r\n"
           f"Call-ID: {call_id}\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n").encode()
    server.receive_datagram(bye, ADDR, 5.0)
    [ok] = sent(server)
    assert ok.status == 200
    assert [e for e in events(server) if isinstance(e, SessionEnded)] == [
        SessionEnded(call_id, DEV, CHANNEL, "device", "device ended the session (BYE)")]


def test_platform_bye_uses_the_dialog():
    server = online_server()
    call_id, req = invite(server)
    respond(server, req, 200, b"v=0\r\ns=Play\r\nc=IN IP4 192.168.1.64\r\nt=0 0\r\nm=video 9000 RTP/AVP 96\r\ny=0200001234\r\n")
    sent(server)
    events(server)
    server.invites.end(call_id, 3.0)
    [bye] = [m for m in sent(server) if getattr(m, "method", None) == "BYE"]
    assert bye.call_id == call_id and bye.headers.get("CSeq") == "2 BYE" and "devtag" in bye.headers.get("To")
    assert bye.uri == f"sip:{CHANNEL}@192.168.1.64:5060"
    assert [type(e) for e in events(server)] == [SessionEnded]


def test_giving_up_before_any_answer_then_a_late_200_is_acked_and_byed():
    server = online_server()
    call_id, req = invite(server)
    server.invites.end(call_id, 1.5)  # no provisional yet: no CANCEL allowed, wait for the answer
    assert not [m for m in sent(server) if getattr(m, "method", None) == "CANCEL"]
    respond(server, req, 200, b"v=0\r\ns=Play\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\nm=video 9000 RTP/AVP 96\r\n")
    methods = [getattr(m, "method", None) for m in sent(server)]
    assert "ACK" in methods and "BYE" in methods
    assert not [e for e in events(server) if isinstance(e, InviteAnswered)]


def test_giving_up_after_trying_sends_cancel():
    server = online_server()
    call_id, req = invite(server)
    respond(server, req, 100)
    server.invites.end(call_id, 1.5)
    [cancel] = [m for m in sent(server) if getattr(m, "method", None) == "CANCEL"]
    assert cancel.call_id == call_id and cancel.headers.get("CSeq") == "1 CANCEL"


def test_offline_device_cannot_be_invited():
    server = make_server()
    assert server.invites.invite(DEV, CHANNEL, media_ip="1.1.1.1", media_port=1, ssrc="0", transport="udp",
                                 now=0.0) is None


def test_no_answer_at_all_fails_after_timer_b():
    server = online_server()
    call_id, _ = invite(server)
    server.endpoint.handle_timer(1.0 + 64 * 0.5 + 0.1)
    server.handle_sip_events(1.0 + 33)
    [failed] = [e for e in events(server) if isinstance(e, InviteFailed)]
    assert failed.call_id == call_id and "did not answer" in failed.reason


def test_platform_info_carries_mansrtsp_inside_the_dialog():
    server = online_server()
    call_id, req = invite(server)
    assert server.invites.info(call_id, b"PLAY RTSP/1.0\r\nCSeq: 1\r\n\r\n", 1.5) is None  # no dialog yet
    respond(server, req, 200, b"v=0\r\ns=Play\r\nc=IN IP4 192.168.1.64\r\nt=0 0\r\nm=video 9000 RTP/AVP 96\r\n")
    sent(server)
    events(server)
    body = b"PAUSE RTSP/1.0\r\nCSeq: 2\r\nPauseTime: now\r\n\r\n"
    assert server.invites.info(call_id, body, 3.0) is not None
    [info] = sent(server)
    assert info.method == "INFO" and info.headers.get("CSeq") == "2 INFO" and info.body == body
    assert info.headers.get("Content-Type") == "Application/MANSRTSP" and "devtag" in info.headers.get("To")
    assert info.uri == f"sip:{CHANNEL}@192.168.1.64:5060" and info.call_id == call_id
    server.invites.end(call_id, 4.0)
    [bye] = [m for m in sent(server) if getattr(m, "method", None) == "BYE"]
    assert bye.headers.get("CSeq") == "3 BYE"


def test_device_info_in_the_dialog_is_answered(sip_vectors):
    server = online_server()
    call_id, req = invite(server)
    respond(server, req, 200, parse_message((sip_vectors / "dahua_sd6c3230_invite_200ok.sip").read_bytes()).body)
    sent(server)
    events(server)
    info = (f"INFO sip:34020000002000000001@3402000000 SIP/2.0\r\nVia: SIP/2.0/UDP {ADDR[0]}:{ADDR[1]};branch=z9hG4bKinfo1\r\n"
            f"From: <sip:{CHANNEL}@3402000000>;tag=devtag\r\nTo: <sip:34020000002000000001@3402000000>;tag=x\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 3 INFO\r\nContent-Type: Application/MANSRTSP\r\nContent-Length: 0\r\n\r\n").encode()
    server.receive_datagram(info, ADDR, 5.0)
    [ok] = sent(server)
    assert ok.status == 200 and events(server) == []
    assert call_id in server.invites.by_call
