"""INVITE / ACK / BYE / CANCEL handling of the sans-IO fleet (no sockets, a fake clock), the SDP offer
and answer, and the pieces of gbsim/media.py that need no network (picture, SEI)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from gbsim import Fleet, SimConfig
from gbsim.device import (
    MEDIA_TCP_CONNECT,
    MEDIA_TCP_LISTEN,
    MEDIA_UDP,
    SdpError,
    build_sdp_answer,
    parse_sdp_offer,
)
from gbsim.media import (
    LATENCY_SEI_UUID,
    TestPattern,
    build_latency_sei,
    insert_sei,
    read_latency_sei,
)
from sip_server.sip import SipRequest, SipResponse, make_response, parse_message
from sip_server.sip.sdp import build_offer
from tests.sim.fakes import PASSWORD, StubPlatform
from tests.sim.media_fakes import in_dialog, make_invite, sdp_lines

SERVER = ("127.0.0.1", 5060)


class Rig:
    """A Fleet, the stub registrar, and a stand-in for the runner's media side (binds fake ports)."""

    def __init__(self, **kw) -> None:
        base = dict(server=SERVER, devices=2, channels=4, password=PASSWORD, keepalive=30.0, devices_per_socket=2,
                    seed=5)
        base.update(kw)
        self.fleet = Fleet(SimConfig(**base), rng=random.Random(5), wall=lambda: 1_790_000_000.0)
        self.platform = StubPlatform()
        self.now = 0.0
        self.responses: list[SipResponse] = []
        self.requests: list[SipRequest] = []  # non-registration requests from the devices (BYE)
        self.media: list[tuple[str, str]] = []  # (event kind, Call-ID)
        self.bind_ok = True
        self._port = 40000

    def pump(self) -> None:
        for _ in range(100):
            events = self.fleet.take_media_events()
            for ev in events:
                self.media.append((ev.kind, ev.call.call_id))
                if ev.kind == "prepare":
                    if self.bind_ok:
                        self._port += 2
                        self.fleet.media_ready(ev.call, ("127.0.0.1", self._port), self.now)
                    else:
                        self.fleet.media_failed(ev.call, "no port", self.now)
            out = self.fleet.outgoing()
            if not out and not events:
                return
            for index, data, _addr in out:
                msg = parse_message(data)
                if isinstance(msg, SipResponse):
                    self.responses.append(msg)
                    continue
                if msg.method in ("REGISTER", "MESSAGE"):
                    for reply in self.platform.handle(msg, ("127.0.0.1", 6000 + index), self.now):
                        self.fleet.receive(index, reply, SERVER, self.now)
                else:
                    self.requests.append(msg)
                    self.fleet.receive(index, make_response(msg, 200).to_bytes(), SERVER, self.now)
        raise AssertionError("pump did not settle")

    def up(self) -> None:
        for link in self.fleet.links:
            self.fleet.link_up(link.index, ("127.0.0.1", 6000 + link.index), self.now)
        self.run_until(1.0)

    def run_until(self, until: float) -> None:
        self.pump()
        while (t := self.fleet.get_timer()) is not None and t <= until:
            self.now = max(self.now, t)
            self.fleet.handle_timer(self.now)
            self.pump()
        self.now = until

    def send(self, req: SipRequest, link: int = 0) -> SipResponse | None:
        before = len(self.responses)
        self.fleet.receive(link, req.to_bytes(), SERVER, self.now)
        self.pump()
        finals = [r for r in self.responses[before:] if r.status >= 200 and r.cseq[1] == req.method]
        return finals[-1] if finals else None

    def invite(self, channel: str, **kw) -> tuple[SipRequest, SipResponse | None]:
        inv = make_invite(channel, ("127.0.0.1", 6000), SERVER, media_port=30000, **kw)
        return inv, self.send(inv)


def test_invite_answered_with_sdp_then_ack_starts_and_bye_stops() -> None:
    rig = Rig()
    rig.up()
    dev = rig.fleet.devices[1]  # second device on a shared UDP link: routed by channel id
    channel = dev.channel_ids[2]
    inv, resp = rig.invite(channel, ssrc="0200001234")
    assert resp is not None and resp.status == 200
    assert resp.to_tag and resp.headers.get("Content-Type") == "application/sdp"
    assert resp.headers.get("Contact") == f"<sip:{channel}@127.0.0.1:6000>"
    lines = sdp_lines(resp.body.decode())
    assert lines[:6] == ["v=0", f"o={channel} 0 0 IN IP4 127.0.0.1", "s=Play", "c=IN IP4 127.0.0.1", "t=0 0",
                         "m=video 40002 RTP/AVP 96"]
    assert "a=sendonly" in lines and "a=rtpmap:96 PS/90000" in lines and "y=0200001234" in lines
    assert "f=v/2/4/25/1/1000a///" in lines
    assert not any(x.startswith("a=setup") for x in lines)
    assert rig.media == [("prepare", inv.call_id)]
    call = dev.calls[inv.call_id]
    assert call.mode == MEDIA_UDP and call.ssrc_int == 200001234 and call.remote_media == ("127.0.0.1", 30000)
    assert rig.fleet.calls == 1 and rig.fleet.streaming == 0

    rig.send(in_dialog(inv, resp, "ACK", 20))
    assert rig.media[-1] == ("start", inv.call_id) and rig.fleet.streaming == 1
    rig.send(in_dialog(inv, resp, "ACK", 20))  # a repeated ACK changes nothing
    assert len(rig.media) == 2

    info = rig.send(in_dialog(inv, resp, "INFO", 21))
    assert info is not None and info.status == 200
    bye = rig.send(in_dialog(inv, resp, "BYE", 22))
    assert bye is not None and bye.status == 200
    assert rig.media[-1] == ("stop", inv.call_id) and rig.fleet.calls == 0
    again = rig.send(in_dialog(inv, resp, "BYE", 23))
    assert again is not None and again.status == 481
    stats = rig.fleet.stats()
    assert stats["invites_received"] == 1 and stats["calls_answered"] == 1 and stats["byes_received"] == 1


@pytest.mark.parametrize(("mode", "device_mode", "setup"), [
    ("tcp-passive", MEDIA_TCP_CONNECT, "a=setup:active"),
    ("tcp-active", MEDIA_TCP_LISTEN, "a=setup:passive"),
])
def test_tcp_offers_get_the_opposite_setup(mode: str, device_mode: str, setup: str) -> None:
    rig = Rig(devices=1, channels=1)
    rig.up()
    dev = rig.fleet.devices[0]
    inv, resp = rig.invite(dev.channel_ids[0], mode=mode)
    assert resp is not None and resp.status == 200
    lines = sdp_lines(resp.body.decode())
    assert "m=video 40002 TCP/RTP/AVP 96" in lines and setup in lines and "a=connection:new" in lines
    assert dev.calls[inv.call_id].mode == device_mode


def test_ssrc_from_subject_or_made_up_and_h265_f_line() -> None:
    rig = Rig(devices=1, channels=1, codec="h265", size="1920x1080", bitrate=4_000_000)
    rig.up()
    ch = rig.fleet.devices[0].channel_ids[0]
    _, resp = rig.invite(ch, ssrc=None, subject_ssrc="0200000777")
    assert resp is not None and "y=0200000777" in sdp_lines(resp.body.decode())
    assert "f=v/5/6/25/1/4000a///" in sdp_lines(resp.body.decode())
    _, resp = rig.invite(ch, ssrc=None, subject_ssrc="bogus")
    assert resp is not None and resp.status == 200
    y = next(x for x in sdp_lines(resp.body.decode()) if x.startswith("y="))
    assert len(y) == 12 and y[2:].isdigit() and y[2:8] == "020000"  # 0 (live) + domain[3:8] + 4 digits


def test_refusals() -> None:
    rig = Rig(devices=1, channels=2)
    rig.up()
    dev = rig.fleet.devices[0]
    ch = dev.channel_ids[0]
    # unknown channel on a single-device link still reaches the device, which refuses it
    _, resp = rig.invite("34020000001319999999")
    assert resp is not None and resp.status == 404
    # no PS offered
    _, resp = rig.invite(ch, rtpmaps=("a=rtpmap:98 H264/90000",))
    assert resp is not None and resp.status == 488
    # audio broadcast
    _, resp = rig.invite(ch, session="Talk")
    assert resp is not None and resp.status == 488
    # the media side has no socket
    rig.bind_ok = False
    inv, resp = rig.invite(ch)
    assert resp is not None and resp.status == 500
    assert rig.media[-2:] == [("prepare", inv.call_id), ("stop", inv.call_id)]
    assert rig.fleet.calls == 0
    assert rig.fleet.stats()["calls_refused"] == 4


def test_media_off_keeps_the_old_488() -> None:
    rig = Rig(devices=1, channels=1, media=False)
    rig.up()
    _, resp = rig.invite(rig.fleet.devices[0].channel_ids[0])
    assert resp is not None and resp.status == 488
    assert rig.media == []


def test_cancel_before_the_answer_gets_487() -> None:
    rig = Rig(devices=1, channels=1)
    rig.up()
    ch = rig.fleet.devices[0].channel_ids[0]
    inv = make_invite(ch, ("127.0.0.1", 6000), SERVER, media_port=30000)
    rig.fleet.receive(0, inv.to_bytes(), SERVER, rig.now)
    # Do not pump: the media side has not answered yet when the CANCEL comes.
    from sip_server.sip.message import make_cancel

    cancel = make_cancel(inv)
    rig.fleet.receive(0, cancel.to_bytes(), SERVER, rig.now)
    rig.bind_ok = True
    rig.pump()
    by_method = {(r.cseq[1], r.status) for r in rig.responses}
    assert ("CANCEL", 200) in by_method and ("INVITE", 487) in by_method
    assert ("INVITE", 200) not in by_method
    assert rig.fleet.calls == 0 and ("stop", inv.call_id) in rig.media


def test_no_ack_ends_the_call_with_bye_and_stop_hangs_up() -> None:
    rig = Rig(devices=1, channels=1)
    rig.up()
    ch = rig.fleet.devices[0].channel_ids[0]
    inv, resp = rig.invite(ch)
    assert resp is not None and resp.status == 200
    rig.run_until(rig.now + 40)  # Timer L (64*T1) passes without an ACK
    assert [r.method for r in rig.requests] == ["BYE"]
    bye = rig.requests[0]
    assert bye.call_id == inv.call_id and bye.uri == "sip:34020000002000000001@127.0.0.1:5060"
    assert bye.headers.get("From") == f"{inv.headers.get('To')};tag={resp.to_tag}"
    assert bye.headers.get("To") == inv.headers.get("From")
    assert rig.fleet.calls == 0

    inv2, resp2 = rig.invite(ch)
    assert resp2 is not None and resp2.status == 200
    rig.send(in_dialog(inv2, resp2, "ACK", 20))
    rig.fleet.stop(rig.now, unregister=True)
    rig.pump()
    assert [r.method for r in rig.requests] == ["BYE", "BYE"] and rig.requests[1].call_id == inv2.call_id
    assert rig.media[-1] == ("stop", inv2.call_id)


def test_silent_stop_and_lost_media_connection() -> None:
    rig = Rig(devices=1, channels=1)
    rig.up()
    ch = rig.fleet.devices[0].channel_ids[0]
    inv, resp = rig.invite(ch, mode="tcp-passive")
    assert resp is not None
    rig.send(in_dialog(inv, resp, "ACK", 20))
    call = rig.fleet.devices[0].calls[inv.call_id]
    rig.fleet.media_failed(call, "media connection closed by the platform", rig.now)
    rig.pump()
    assert [r.method for r in rig.requests] == ["BYE"] and rig.fleet.calls == 0

    inv, resp = rig.invite(ch)
    assert resp is not None
    rig.send(in_dialog(inv, resp, "ACK", 20))
    rig.fleet.stop(rig.now, unregister=False)
    rig.pump()
    assert len(rig.requests) == 1  # no BYE: the device just went silent
    assert rig.media[-1] == ("stop", inv.call_id)


# ================================================================================================ SDP
def test_parse_offer_session_and_media_levels() -> None:
    offer = parse_sdp_offer(
        b"v=0\r\no=34020000002000000001 0 0 IN IP4 10.0.0.1\r\ns=Playback\r\nc=IN IP4 10.0.0.1\r\n"
        b"t=1714833796 1714835786\r\nm=audio 5000 RTP/AVP 8\r\nc=IN IP4 10.0.0.9\r\n"
        b"m=video 6000 TCP/RTP/AVP 96 98\r\nc=IN IP4 10.0.0.2\r\na=setup:ACTIVE\r\na=recvonly\r\n"
        b"a=rtpmap:96 PS/90000\r\na=rtpmap:98 H264/90000\r\ny=1200000013\r\n")
    assert (offer.session, offer.origin, offer.host, offer.port) == ("Playback", "34020000002000000001",
                                                                     "10.0.0.2", 6000)
    assert offer.tcp and offer.mode == MEDIA_TCP_LISTEN and offer.ps_payload() == 96
    assert offer.ssrc == "1200000013" and offer.timing == "1714833796 1714835786"
    answer = build_sdp_answer(channel_id="c", host="10.0.0.5", port=7000, offer=offer, payload=96,
                              ssrc="1200000013", codec="h264", size=(1280, 720), fps=25, bitrate=2_000_000)
    lines = sdp_lines(answer.decode())
    assert "s=Playback" in lines and "t=1714833796 1714835786" in lines and "f=v/2/5/25/1/2000a///" in lines
    for bad in (b"v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 5000 RTP/AVP 8\r\n",
                b"v=0\r\nm=video 5000 RTP/AVP 96\r\n",
                b"v=0\r\nc=IN IP4 1.2.3.4\r\nm=video 0 RTP/AVP 96\r\n"):
        with pytest.raises(SdpError):
            parse_sdp_offer(bad)


def test_answer_to_the_platforms_offer_is_byte_identical() -> None:
    """The simulator answers with the project's SDP codec (gb_sdp); the bytes are those it always sent."""
    tcp = parse_sdp_offer(build_offer(origin_id="34020000002000000001", ip="10.0.0.1", port=30002,
                                      ssrc="0200001234", transport="tcp-active"))
    assert build_sdp_answer(channel_id="34020000001310000001", host="127.0.0.1", port=40000, offer=tcp, payload=96,
                            ssrc="0200001234", codec="h264", size=(1280, 720), fps=25, bitrate=2_000_000) == (
        b"v=0\r\no=34020000001310000001 0 0 IN IP4 127.0.0.1\r\ns=Play\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        b"m=video 40000 TCP/RTP/AVP 96\r\na=sendonly\r\na=rtpmap:96 PS/90000\r\na=setup:passive\r\n"
        b"a=connection:new\r\ny=0200001234\r\nf=v/2/5/25/1/2000a///\r\n")
    udp = parse_sdp_offer(build_offer(origin_id="34020000002000000001", ip="10.0.0.1", port=30002,
                                      ssrc="1100000001", session_name="Playback", time="1714804996 1714806786",
                                      uri="34020000001310000001:0"))
    assert build_sdp_answer(channel_id="34020000001310000001", host="::1", port=40000, offer=udp, payload=96,
                            ssrc="1100000001", codec="h265", size=(640, 360), fps=15, bitrate=500) == (
        b"v=0\r\no=34020000001310000001 0 0 IN IP6 ::1\r\ns=Playback\r\nc=IN IP6 ::1\r\n"
        b"t=1714804996 1714806786\r\nm=video 40000 RTP/AVP 96\r\na=sendonly\r\na=rtpmap:96 PS/90000\r\n"
        b"y=1100000001\r\nf=v/5/4/15/1/1a///\r\n")


# ================================================================================================ media pieces
@pytest.mark.parametrize("codec", ["h264", "h265"])
def test_latency_sei_round_trip(codec: str) -> None:
    slice_nal = b"\x00\x00\x00\x01" + (b"\x65\x88\x84" if codec == "h264" else b"\x26\x01\xaf\x00")
    params = b"\x00\x00\x00\x01" + (b"\x67\x42\x00\x1e" if codec == "h264" else b"\x42\x01\x01")
    au = insert_sei(params + slice_nal, build_latency_sei(codec, 1_790_000_000_123), codec)
    assert au.startswith(params) and au.endswith(slice_nal)  # before the slice, after the parameter sets
    assert LATENCY_SEI_UUID in au
    assert read_latency_sei(au, codec) == 1_790_000_000_123
    assert read_latency_sei(params + slice_nal, codec) is None


def test_pattern_draws_the_clock_and_moves() -> None:
    p = TestPattern(640, 360)
    a = p.render(0, 1_790_000_000.0).copy()
    b = p.render(0, 1_790_000_000.5).copy()  # only the clock's milliseconds differ
    c = p.render(25, 1_790_000_000.0).copy()  # only the box moved
    assert a.shape == (540, 640) and a.dtype == np.uint8
    rows = np.nonzero((a != b).any(axis=1))[0]
    assert rows.size and rows.max() < p.clock_height + 40  # the difference is in the clock strip
    assert (a != c).any()
    y = a[:360]
    clock = y[p._clock_y:p._clock_y + p.clock_height + 2 * p._pad]
    assert (clock == 235).sum() > 1000  # big white digits on black
