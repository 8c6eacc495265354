"""SDP model, parser and serialiser: round trips (hypothesis), parser fuzzing, byte-identical offers."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sip_server.sip import parse_message
from sip_server.sip.sdp import Media, Sdp, SdpError, build_offer, gb_offer, gb_sdp, origin_field, parse_sdp

PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------- the builder this replaced
def legacy_build_offer(*, origin_id: str, ip: str, port: int, ssrc: str, transport: str = "udp",
                       session_name: str = "Play", time: str = "0 0", uri: str | None = None,
                       speed: int | None = None) -> bytes:
    """sip_server.sip.sdp.build_offer as it was before the serialiser (kept here verbatim as the reference)."""
    tcp = transport.startswith("tcp")
    lines = [
        "v=0",
        f"o={origin_id} 0 0 IN IP4 {ip}",
        f"s={session_name}",
    ]
    if uri:
        lines.append(f"u={uri}")
    lines += [
        f"c=IN IP4 {ip}",
        f"t={time}",
        f"m=video {port} {'TCP/RTP/AVP' if tcp else 'RTP/AVP'} 96 98 97",
        "a=recvonly",
        "a=rtpmap:96 PS/90000",
        "a=rtpmap:98 H264/90000",
        "a=rtpmap:97 MPEG4/90000",
    ]
    if tcp:
        lines.append("a=setup:passive" if transport == "tcp-passive" else "a=setup:active")
        lines.append("a=connection:new")
    if speed is not None:
        lines.append(f"a=downloadspeed:{speed}")
    lines.append(f"y={ssrc}")
    return ("\r\n".join(lines) + "\r\n").encode()


@pytest.mark.parametrize("transport", ["udp", "tcp-passive", "tcp-active"])
def test_live_view_offers_are_byte_identical_to_the_old_builder(transport):
    kw = dict(origin_id="34020000002000000001", ip="192.0.2.1", port=30002, ssrc="0200001234", transport=transport)
    assert build_offer(**kw) == legacy_build_offer(**kw)
    assert gb_offer(**kw).to_bytes() == legacy_build_offer(**kw)


@pytest.mark.parametrize("transport", ["udp", "tcp-passive", "tcp-active"])
@pytest.mark.parametrize("kind", [
    dict(),
    dict(session_name="Playback", time="1714804996 1714806786", uri="34020000001310000001:0"),
    dict(session_name="Download", time="1714804996 1714806786", uri="34020000001310000001:0", speed=4),
    dict(uri=""),
])
def test_playback_and_download_offers_are_byte_identical_too(transport, kind):
    kw = dict(origin_id="34020000002000000001", ip="10.1.2.3", port=1, ssrc="1100000001", transport=transport, **kind)
    assert build_offer(**kw) == legacy_build_offer(**kw)


@given(port=st.integers(0, 65535), ssrc=st.from_regex(r"\A[0-9]{10}\Z"),
       ip=st.ip_addresses(v=4).map(str), transport=st.sampled_from(["udp", "tcp-passive", "tcp-active"]),
       speed=st.none() | st.integers(1, 8))
@PROPS
def test_offers_match_the_old_builder_for_any_ipv4_port_ssrc(port, ssrc, ip, transport, speed):
    kw = dict(origin_id="34020000002000000001", ip=ip, port=port, ssrc=ssrc, transport=transport, speed=speed)
    assert build_offer(**kw) == legacy_build_offer(**kw)


def test_ipv6_media_address_is_written_as_ip6():
    # the one intended difference from the old builder, which wrote "IN IP4 <ipv6 address>"
    sdp = parse_sdp(build_offer(origin_id="x", ip="2001:db8::1", port=9, ssrc="0"))
    assert b"c=IN IP6 2001:db8::1\r\n" in build_offer(origin_id="x", ip="2001:db8::1", port=9, ssrc="0")
    assert sdp.media_address() == ("2001:db8::1", 9)


# --------------------------------------------------------------------------- the simulator's answer
def test_the_simulators_answer_can_be_built():
    """What gbsim/device.py build_sdp_answer writes (tcp, the device listens), built with gb_sdp."""
    expected = (b"v=0\r\no=34020000001310000001 0 0 IN IP4 127.0.0.1\r\ns=Play\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                b"m=video 40000 TCP/RTP/AVP 96\r\na=sendonly\r\na=rtpmap:96 PS/90000\r\na=setup:passive\r\n"
                b"a=connection:new\r\ny=0200001234\r\nf=v/2/5/25/1/2000a///\r\n")
    answer = gb_sdp(origin_id="34020000001310000001", ip="127.0.0.1", port=40000, ssrc="0200001234",
                    payloads=[(96, "PS/90000")], direction="sendonly", tcp=True, setup="passive",
                    media_format="v/2/5/25/1/2000a///")
    assert answer.to_bytes() == expected
    assert parse_sdp(expected) == answer
    udp = gb_sdp(origin_id="34020000001310000001", ip="::1", port=40000, ssrc="0200001234",
                 payloads=[(96, "PS/90000")], direction="sendonly", session_name="Playback",
                 time="1714804996 1714806786", media_format="v/2/5/25/1/2000a///")
    assert udp.to_bytes() == (
        b"v=0\r\no=34020000001310000001 0 0 IN IP6 ::1\r\ns=Playback\r\nc=IN IP6 ::1\r\nt=1714804996 1714806786\r\n"
        b"m=video 40000 RTP/AVP 96\r\na=sendonly\r\na=rtpmap:96 PS/90000\r\ny=0200001234\r\nf=v/2/5/25/1/2000a///\r\n")
    assert udp.time_range == (1714804996, 1714806786)


@pytest.mark.parametrize("name", [
    "dahua_sd6c3230_invite_200ok.sip",
    "hikvision_ipc_invite_200ok_udp_setup_active.sip",
    "dahua_nvr_invite_200ok_tcp_active.sip",
    "happytime_gb28181sim_invite_200ok_tcp_active.sip",
    "hikvision_nvr_playback_invite_200ok.sip",
    "ezviz_x5s_nvr_playback_invite_200ok.sip",
])
def test_real_answers_survive_a_round_trip(sip_vectors, name):
    sdp = parse_sdp(parse_message((sip_vectors / name).read_bytes()).body)
    again = parse_sdp(sdp.to_bytes())
    assert again == sdp
    assert again.to_bytes() == sdp.to_bytes()
    assert sdp.video is not None and sdp.media_address() is not None


def test_playback_answer_fields(sip_vectors):
    sdp = parse_sdp(parse_message((sip_vectors / "hikvision_nvr_playback_invite_200ok.sip").read_bytes()).body)
    assert sdp.session_name == "Network Video Recorder" and sdp.time_range == (1714833796, 1714835786)
    assert sdp.media_format == "" and sdp.ssrc == "0000002000"
    assert ("filesize", "2124794308") in sdp.video.attrs
    live = parse_sdp(b"v=0\r\nt=0 0\r\n")
    assert live.time_range == (0, 0)
    assert parse_sdp(b"v=0\r\nt=now\r\n").time_range is None


def test_session_level_attributes_and_info_are_kept():
    sdp = parse_sdp(b"v=0\r\no=a 1 1 IN IP4 1.2.3.4\r\ns=Play\r\ni=VCam\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\n"
                    b"a=tool:x\r\nm=video 9 RTP/AVP 96\r\ni=ignored\r\na=recvonly\r\n")
    assert sdp.info == "VCam" and sdp.attrs == [("tool", "x")] and sdp.video.attrs == [("recvonly", None)]


# --------------------------------------------------------------------------- round trips
_line_char = st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"), blacklist_characters="\x85")
# a value as one SDP line carries it: no line break, no surrounding white space
value = st.text(_line_char, max_size=30).map(str.strip)
token = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._/+*!%~", min_size=1, max_size=12)
lower_token = st.text("abcdefghijklmnopqrstuvwxyz0123456789-._", min_size=1, max_size=10)
address = st.one_of(st.ip_addresses().map(str), st.from_regex(r"\A[a-z][a-z0-9.-]{0,20}\Z"))
attr = st.tuples(st.text(_line_char, min_size=1, max_size=15).map(str.strip).filter(lambda s: s and ":" not in s),
                 st.none() | value)
time_field = st.one_of(st.just("0 0"), st.tuples(st.integers(0, 2**32), st.integers(0, 2**32)).map(
    lambda t: f"{t[0]} {t[1]}"), value)

media = st.builds(Media, kind=st.sampled_from(["video", "audio"]) | lower_token, port=st.integers(0, 65535),
                  proto=st.sampled_from(["RTP/AVP", "TCP/RTP/AVP"]) | token, formats=st.lists(token, max_size=4),
                  attrs=st.lists(attr, max_size=6), connection=st.none() | address)
session = st.builds(Sdp, origin=value, session_name=st.sampled_from(["Play", "Playback", "Download"]) | value,
                    connection=st.none() | address, time=time_field, media=st.lists(media, max_size=3),
                    ssrc=st.none() | st.from_regex(r"\A[0-9]{10}\Z") | value, media_format=st.none() | value,
                    uri=st.none() | value, info=st.none() | value, attrs=st.lists(attr, max_size=3))


@given(session)
@PROPS
def test_parse_of_serialise_is_identity(sdp):
    assert parse_sdp(sdp.to_bytes()) == sdp


@given(port=st.integers(0, 65535), ssrc=st.from_regex(r"\A[0-9]{10}\Z"), ip=st.ip_addresses().map(str),
       transport=st.sampled_from(["udp", "tcp-passive", "tcp-active"]),
       kind=st.sampled_from(["Play", "Playback", "Download"]), start=st.integers(0, 2**31),
       speed=st.none() | st.integers(1, 8))
@PROPS
def test_offers_round_trip(port, ssrc, ip, transport, kind, start, speed):
    playback = kind != "Play"
    offer = gb_offer(origin_id="34020000002000000001", ip=ip, port=port, ssrc=ssrc, transport=transport,
                     session_name=kind, time=f"{start} {start + 600}" if playback else "0 0",
                     uri="34020000001310000001:0" if playback else None, speed=speed if kind == "Download" else None)
    parsed = parse_sdp(offer.to_bytes())
    assert parsed == offer
    assert parsed.media_address() == (ip, port) and parsed.ssrc == ssrc
    assert parsed.video.setup == {"udp": None, "tcp-passive": "passive", "tcp-active": "active"}[transport]
    assert parsed.origin == origin_field("34020000002000000001", ip)


# --------------------------------------------------------------------------- fuzzing the parser
@given(st.binary(max_size=400))
@PROPS
def test_parser_raises_only_sdp_error_on_arbitrary_bytes(data):
    try:
        parse_sdp(data)
    except SdpError:
        pass


_sdp_ish = st.lists(st.tuples(st.sampled_from("vosiucbtamyfkz=X "), st.text(max_size=25)), max_size=12).map(
    lambda lines: "v=0\n" + "\n".join(f"{k}={v}" for k, v in lines))


@given(st.one_of(_sdp_ish, st.text(max_size=200)))
@PROPS
def test_parser_on_sdp_like_text_raises_only_sdp_error_and_normalises(text):
    try:
        sdp = parse_sdp(text)
    except SdpError:
        return
    # whatever the parser accepted, its model serialises and reads back unchanged
    assert parse_sdp(sdp.to_bytes()) == sdp


@pytest.mark.parametrize("body", [b"v=0\r\nm=video \xc2\xb2 RTP/AVP 96\r\n", b"v=0\r\nm=video 70000 RTP/AVP\r\n",
                                  b"v=0\r\nc=IN IP4\r\n", b"x\r\n", b"", b"s=Play\r\n"])
def test_malformed_bodies_raise_sdp_error(body):
    with pytest.raises(SdpError):
        parse_sdp(body)


def test_connection_without_address_is_no_address():
    sdp = parse_sdp(b"v=0\r\nc=IN IP4 /127\r\nm=video 9 RTP/AVP 96\r\n")
    assert sdp.connection is None and sdp.media_address() is None
