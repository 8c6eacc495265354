"""History calls of the GB core (sans-IO): s=Playback / s=Download offers, a=filesize answers, and the
device's in-call MediaStatus (NotifyType 121) that says the file has been sent to the end."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sip_server.gb import events as ev
from sip_server.gb import manscdp
from sip_server.gb.invite import InviteAnswered, MediaStatusReceived, SessionEnded
from sip_server.sip import parse_message
from sip_server.sip.sdp import parse_sdp
from tests.gb.test_invite import CHANNEL, events, online_server, respond, sent
from tests.gb.test_server import ADDR, DEV

START, END = 1_735_689_600, 1_735_693_200  # 2025-01-01T08:00:00+08:00 .. 09:00
ANSWER = (b"v=0\r\no=34020000001310000001 0 0 IN IP4 192.168.1.64\r\ns=Playback\r\nc=IN IP4 192.168.1.64\r\n"
          b"t=1735689600 1735693200\r\nm=video 9000 RTP/AVP 96\r\na=sendonly\r\na=rtpmap:96 PS/90000\r\n"
          b"y=1000001234\r\n")


def history_invite(server, session_name="Playback", speed=None, ssrc="1000001234"):
    call_id = server.invites.invite(DEV, CHANNEL, media_ip="192.0.2.1", media_port=30002, ssrc=ssrc,
                                    transport="udp", now=1.0, session_name=session_name, start=START, end=END,
                                    speed=speed)
    [req] = [m for m in sent(server) if getattr(m, "method", None) == "INVITE"]
    return call_id, req


def answered_call(session_name="Playback", body=ANSWER, speed=None):
    server = online_server()
    call_id, req = history_invite(server, session_name, speed)
    respond(server, req, 200, body)
    sent(server)
    [answered] = [e for e in events(server) if isinstance(e, InviteAnswered)]
    return server, call_id, answered


def in_call_message(call_id: str, body: bytes, *, to_tag: str = "x", cseq: int = 3, branch: str = "ms") -> bytes:
    head = (f"MESSAGE sip:34020000002000000001@3402000000 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {ADDR[0]}:{ADDR[1]};rport;branch=z9hG4bK{branch}{cseq}\r\n"
            f"From: <sip:{CHANNEL}@3402000000>;tag=devtag\r\n"
            f"To: <sip:34020000002000000001@3402000000>" + (f";tag={to_tag}" if to_tag else "") + "\r\n"
            f"Call-ID: {call_id}\r\nCSeq: {cseq} MESSAGE\r\nContent-Type: Application/MANSCDP+xml\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    return head + body


def media_status(notify_type="121", device=CHANNEL) -> bytes:
    return manscdp.build_media_status_notify(17, device, notify_type)


# ------------------------------------------------------------------------------------------ the offer
def test_playback_offer_names_the_channel_and_the_window():
    server = online_server()
    call_id, req = history_invite(server)
    assert req.headers.get("Subject") == f"{CHANNEL}:1000001234,34020000002000000001:0"
    sdp = parse_sdp(req.body)
    assert sdp.session_name == "Playback" and sdp.uri == f"{CHANNEL}:0"
    assert sdp.time == f"{START} {END}" and sdp.time_range == (START, END)
    assert sdp.ssrc == "1000001234" and sdp.media_address() == ("192.0.2.1", 30002)
    assert sdp.video.direction == "recvonly" and sdp.video.attr("downloadspeed") is None
    assert server.invites.by_call[call_id].session_name == "Playback"


def test_download_offer_asks_for_the_speed_and_reads_the_filesize():
    body = ANSWER.replace(b"s=Playback", b"s=Download") + b"a=filesize:734003200\r\n"
    server = online_server()
    call_id, req = history_invite(server, "Download", speed=4)
    sdp = parse_sdp(req.body)
    assert sdp.session_name == "Download" and sdp.uri == f"{CHANNEL}:0" and sdp.time == f"{START} {END}"
    assert sdp.video.attr("downloadspeed") == "4"
    respond(server, req, 200, body)
    [answered] = [e for e in events(server) if isinstance(e, InviteAnswered)]
    assert answered.call_id == call_id and answered.filesize == 734003200 and answered.ssrc == "1000001234"


@pytest.mark.parametrize("extra,size", [(b"", None), (b"a=filesize:\r\n", None), (b"a=filesize:12x\r\n", None),
                                        (b"a=filesize:-5\r\n", None), (b"a=filesize: 1024 \r\n", 1024)])
def test_filesize_is_taken_only_when_readable(extra, size):
    _, _, answered = answered_call("Download", ANSWER + extra)
    assert answered.filesize == size


def test_filesize_at_session_level_is_read_too():
    body = ANSWER.replace(b"t=1735689600 1735693200\r\n", b"t=1735689600 1735693200\r\na=filesize:99\r\n")
    _, _, answered = answered_call("Download", body)
    assert answered.filesize == 99


def test_live_offer_is_unchanged():
    server = online_server()
    server.invites.invite(DEV, CHANNEL, media_ip="192.0.2.1", media_port=30002, ssrc="0200001234",
                          transport="udp", now=1.0)
    [req] = [m for m in sent(server) if getattr(m, "method", None) == "INVITE"]
    sdp = parse_sdp(req.body)
    assert sdp.session_name == "Play" and sdp.time == "0 0" and sdp.uri is None


@pytest.mark.parametrize("kw", [
    dict(session_name="Playback", start=END, end=START),
    dict(session_name="Playback", start=START, end=START),
    dict(session_name="Playback", start=None, end=END),
    dict(session_name="Playback", start=-1, end=END),
    dict(session_name="Playback", start=True, end=END),
    dict(session_name="Playback", start=float(START), end=END),
    dict(session_name="Playback", start=START, end=END, speed=4),
    dict(session_name="Download", start=START, end=END, speed=0),
    dict(session_name="Download", start=START, end=END, speed=2.5),
    dict(session_name="Play", start=START, end=END),
    dict(session_name="Talk", start=START, end=END),
])
def test_bad_windows_are_refused_before_anything_is_sent(kw):
    server = online_server()
    with pytest.raises(ValueError) as err:
        server.invites.invite(DEV, CHANNEL, media_ip="192.0.2.1", media_port=30002, ssrc="1000001234",
                              transport="udp", now=1.0, **kw)
    assert " / " in str(err.value)  # 中文 / English
    assert sent(server) == [] and server.invites.by_call == {} and server.invites.by_key == {}


# ------------------------------------------------------------------------------------------ MediaStatus
def test_media_status_in_the_call_is_answered_and_reported():
    server, call_id, _ = answered_call()
    server.receive_datagram(in_call_message(call_id, media_status()), ADDR, 5.0)
    [ok] = sent(server)
    assert ok.status == 200 and ok.call_id == call_id
    assert events(server) == [MediaStatusReceived(call_id, DEV, CHANNEL, "121")]
    assert call_id in server.invites.by_call  # the media side drains, then BYEs
    server.invites.end(call_id, 6.0, "file ended")
    [bye] = [m for m in sent(server) if getattr(m, "method", None) == "BYE"]
    assert bye.call_id == call_id
    assert [type(e) for e in events(server)] == [SessionEnded]


def test_media_status_is_matched_by_call_id_even_without_a_to_tag():
    server, call_id, _ = answered_call("Download")
    server.receive_datagram(in_call_message(call_id, media_status(device=DEV), to_tag=""), ADDR, 5.0)
    assert [m.status for m in sent(server)] == [200]
    assert events(server) == [MediaStatusReceived(call_id, DEV, CHANNEL, "121")]


def test_media_status_from_another_address_is_refused():
    server, call_id, _ = answered_call()
    server.receive_datagram(in_call_message(call_id, media_status()), ("192.168.1.99", 5060), 5.0)
    [refused] = sent(server)
    assert refused.status == 403
    evs = events(server)
    assert not [e for e in evs if isinstance(e, MediaStatusReceived)]
    assert [e.kind for e in evs if isinstance(e, ev.SecurityEvent)] == ["address_mismatch"]
    assert call_id in server.invites.by_call


def test_media_status_for_an_unknown_call_gets_481_and_allocates_nothing():
    server, call_id, _ = answered_call()
    before = dict(server.invites.by_call)
    server.receive_datagram(in_call_message("nosuchcall@dev", media_status()), ADDR, 5.0)
    [resp] = sent(server)
    assert resp.status == 481
    [rejected] = events(server)
    assert isinstance(rejected, ev.MessageRejected) and rejected.status == 481
    assert "unknown call" in rejected.reason and rejected.device_id == CHANNEL
    assert server.invites.by_call == before
    # also when it comes out of any dialog (no To tag): no call to end, nothing to report but the refusal
    server.receive_datagram(in_call_message("other@dev", media_status(), to_tag="", branch="ms2"), ADDR, 6.0)
    assert [m.status for m in sent(server)] == [481]


def test_media_status_before_the_answer_is_answered_but_ends_nothing():
    server = online_server()
    call_id, _ = history_invite(server)
    server.receive_datagram(in_call_message(call_id, media_status()), ADDR, 5.0)
    assert [m.status for m in sent(server)] == [200]
    assert events(server) == []


def test_media_status_without_notify_type_is_a_bad_request():
    server, call_id, _ = answered_call()
    body = manscdp.build_message("Notify", "MediaStatus", 3, CHANNEL)
    server.receive_datagram(in_call_message(call_id, body), ADDR, 5.0)
    [resp] = sent(server)
    assert resp.status == 400
    [rejected] = events(server)
    assert isinstance(rejected, ev.MessageRejected) and "NotifyType" in rejected.reason


def test_other_messages_in_the_call_are_ordinary_messages():
    server, call_id, _ = answered_call()
    keepalive = manscdp.build_message("Notify", "Keepalive", 4, DEV, extra={"Status": "OK"})
    raw = in_call_message(call_id, keepalive).replace(f"From: <sip:{CHANNEL}@".encode(), f"From: <sip:{DEV}@".encode())
    server.receive_datagram(raw, ADDR, 5.0)
    assert [m.status for m in sent(server)] == [200]
    assert [type(e) for e in events(server)] == [ev.DeviceKeepalive]


def test_ordinary_messages_still_work_beside_calls():
    server, _, _ = answered_call()
    keepalive = manscdp.build_message("Notify", "Keepalive", 4, DEV, extra={"Status": "OK"})
    raw = in_call_message("fresh@dev", keepalive, to_tag="").replace(f"From: <sip:{CHANNEL}@".encode(),
                                                                      f"From: <sip:{DEV}@".encode())
    server.receive_datagram(raw, ADDR, 5.0)
    assert [m.status for m in sent(server)] == [200]
    assert [type(e) for e in events(server)] == [ev.DeviceKeepalive]


# ------------------------------------------------------------------------------------------ fuzz
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=400))
def test_media_status_parser_raises_only_its_own_error(data):
    try:
        status = manscdp.as_media_status(manscdp.parse(data))
    except manscdp.ManscdpError:
        return
    assert status.notify_type  # whatever it accepted has a NotifyType


_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=30)


@FUZZ
@given(notify=st.one_of(st.from_regex(r"[0-9A-Za-z_-]{1,16}", fullmatch=True), _TEXT),
       sn=st.integers(0, 2**31), charset=st.sampled_from(["GB2312", "UTF-8", "GBK"]))
def test_media_status_round_trips_or_is_refused(notify, sn, charset):
    body = manscdp.build_media_status_notify(sn, DEV, notify, charset=charset)
    try:
        status = manscdp.as_media_status(manscdp.parse(body))
    except manscdp.ManscdpError:
        assert not notify.strip() or len(notify.strip()) > 16 or not notify.strip().isascii() or any(
            not (c.isalnum() or c in "_-") for c in notify.strip())
        return
    assert status == manscdp.MediaStatus(DEV, sn, notify.strip())


@FUZZ
@given(body=st.binary(max_size=300), to_tag=st.sampled_from(["", "x"]), known=st.booleans())
def test_any_in_call_message_body_gets_one_final_answer(body, to_tag, known):
    server, call_id, _ = answered_call()
    server.receive_datagram(in_call_message(call_id if known else "stray@dev", body, to_tag=to_tag), ADDR, 5.0)
    out = [m for m in (parse_message(o.data) for o in server.endpoint.messages_to_send())]
    assert len(out) == 1 and not out[0].is_request and out[0].status in (200, 400, 403, 481)
    evs = events(server)
    if any(isinstance(e, MediaStatusReceived) for e in evs):
        assert known and out[0].status == 200
