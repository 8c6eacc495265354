"""Every real device message in shared/vectors/sip parses, with the quirk each one shows."""

from __future__ import annotations

from pathlib import Path

import pytest

from sip_server.sip import (
    SipRequest,
    SipResponse,
    StreamFramer,
    parse_message,
    parse_name_addr,
    parse_uri,
    parse_via,
)

from ..conftest import SHARED

VECTOR_DIR = SHARED / "vectors" / "sip"
VECTORS = sorted(p.name for p in VECTOR_DIR.glob("*.sip")) if VECTOR_DIR.is_dir() else []


def load(sip_vectors: Path, name: str):
    data = (sip_vectors / name).read_bytes()
    return data, parse_message(data)


def declared_length(data: bytes) -> int:
    head = data.split(b"\r\n\r\n", 1)[0]
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    raise AssertionError("no Content-Length")


def test_vectors_present(sip_vectors: Path) -> None:
    assert len(list(sip_vectors.glob("*.sip"))) >= 30


@pytest.mark.parametrize("name", VECTORS)
def test_every_vector_parses_and_round_trips(sip_vectors: Path, name: str) -> None:
    data, msg = load(sip_vectors, name)
    assert len(msg.body) == declared_length(data)
    assert msg.body == data[len(data) - len(msg.body):]
    # vital headers are all usable
    assert msg.call_id
    num, method = msg.cseq
    assert num >= 1 and method.isupper()
    vias = msg.vias
    assert len(vias) == 1 and vias[0].transport == "UDP"
    parse_name_addr(msg.headers.get("From"))
    parse_name_addr(msg.headers.get("To"))
    for contact in msg.headers.get_all("Contact"):
        parse_name_addr(contact)
    if isinstance(msg, SipRequest):
        parse_uri(msg.uri)
        assert msg.method == method
    # serialise -> parse gives the same message; a stream framer cuts it identically
    again = parse_message(msg.to_bytes())
    assert again == msg
    framer = StreamFramer()
    got = []
    for i in range(0, len(data), 7):
        got += framer.feed(data[i : i + 7])
    assert got == [msg]


def test_padded_content_length_keepalive(sip_vectors: Path) -> None:
    data, msg = load(sip_vectors, "dahua_sd6c3230_keepalive.sip")
    assert b"Content-Length:   180" in data
    assert msg.headers.get("Content-Length") == "180"
    assert len(msg.body) == 180
    assert msg.body.startswith(b'<?xml version="1.0" encoding="GB2312" ?>\n<Notify>')
    assert b"\r" not in msg.body  # LF-only body stays as sent
    assert msg.cseq == (20, "MESSAGE")
    assert msg.headers.get("content-type") == "Application/MANSCDP+xml"


def test_padded_content_length_four_spaces_rtsp_body(sip_vectors: Path) -> None:
    _, msg = load(sip_vectors, "hikvision_nvr_info_pause_200ok_rtsp.sip")
    assert isinstance(msg, SipResponse)
    assert msg.status == 200 and msg.reason == "OK"
    assert msg.cseq == (21, "INFO")
    assert msg.headers.get("Content-Type") == "Application/RTSP"
    assert msg.body == b"RTSP/1.0 200 OK\r\nCSeq: 20\r\nRTP-Info: seq=9810092;rtptime=3450012\r\n"


def test_mixed_line_endings_body_is_untouched(sip_vectors: Path) -> None:
    _, msg = load(sip_vectors, "ezviz_x5s_nvr_recordinfo_response_sumnum9.sip")
    assert len(msg.body) == 2689
    assert msg.body.startswith(b'<?xml version="1.0" encoding="gb2312"?>\r\n<Response>\n')
    assert msg.uri == "sip:34020000002000000001@3402000000"
    uri = parse_uri(msg.uri)
    assert (uri.user, uri.host, uri.port) == ("34020000002000000001", "3402000000", None)


def test_tag_tag_quirk(sip_vectors: Path) -> None:
    _, msg = load(sip_vectors, "happytime_gb28181sim_bye_200ok_tag_tag.sip")
    assert msg.from_tag == "tag=EvsGbF23109712"
    assert msg.to_tag == "tag=62fd2b5740809ce9"
    frm = parse_name_addr(msg.headers.get("From"))
    assert frm.tag == "tag=EvsGbF23109712"
    assert frm.uri.host == "1306020049"
    assert msg.cseq == (112, "BYE")
    # the simulator echoes a malformed magic cookie
    assert msg.vias[0].branch == "z9h64bK43194494"
    assert msg.vias[0].rport == ""


def test_via_without_branch(sip_vectors: Path) -> None:
    data, msg = load(sip_vectors, "happytime_gb28181sim_keepalive_via_no_branch.sip")
    via = msg.vias[0]
    assert (via.transport, via.host, via.port) == ("UDP", "172.18.0.1", 5060)
    assert via.branch is None and via.rport is None and via.received is None
    assert via.params == {}
    # Content-Length counts a trailing empty line
    assert msg.body.endswith(b"</Notify>\r\n\r\n") and len(msg.body) == 152


def test_via_rport_forms(sip_vectors: Path) -> None:
    _, bare = load(sip_vectors, "hikvision_ipc_register_noauth.sip")
    assert bare.vias[0].rport == ""
    _, filled = load(sip_vectors, "hikvision_ipc_keepalive_gb2312_empty_info.sip")
    assert filled.vias[0].rport == "60719"
    _, absent = load(sip_vectors, "happytime_gb28181sim_catalog_response.sip")
    assert absent.vias[0].rport is None and absent.vias[0].branch == "z9hG4bK64142192"
    _, received = load(sip_vectors, "dahua_nvr_invite_200ok_tcp_active.sip")
    via = received.vias[0]
    assert via.received == "192.168.1.125" and via.rport == "5060"
    assert via.branch == "z9hG4bK.wAF3TBVMMrwiOOCPVxcc7D6ngsp4t9jK"


def test_route_header_with_own_id(sip_vectors: Path) -> None:
    _, msg = load(sip_vectors, "dahua_ipc_register_route_nat_rewrite.sip")
    routes = msg.headers.get_all("Route")
    assert routes == ["<sip:78978201001320000010@172.17.0.11:5060;lr>"]
    route = parse_name_addr(routes[0])
    assert route.uri.user == "78978201001320000010"
    assert route.uri.params == {"lr": None}
    assert route.uri.port == 5060
    assert msg.headers.get("Expires") == "3600"
    uri = parse_uri(msg.uri)
    assert (uri.host, uri.port) == ("172.17.0.11", 55241)
    contact = parse_name_addr(msg.headers.get("Contact"))
    assert contact.uri.port == 5061


def test_eight_digit_realm_authorization(sip_vectors: Path) -> None:
    from sip_server.sip import parse_auth_params

    _, msg = load(sip_vectors, "dahua_sd6c3230_register_auth_realm8digit.sip")
    scheme, params = parse_auth_params(msg.headers.get("Authorization"))
    assert scheme == "Digest"
    assert params["realm"] == "34020000"
    assert params["nonce"] == "1715926053"
    assert params["algorithm"] == "MD5"
    assert "qop" not in params
    assert msg.cseq == (2, "REGISTER")
    assert msg.headers.get("Route") == "<sip:34020000001320000002@192.168.6.106:5062;lr>"


def test_sorted_headers_register(sip_vectors: Path) -> None:
    _, msg = load(sip_vectors, "dahua_nvr_register_sorted_headers.sip")
    names = [n for n, _ in msg.headers.items()]
    assert names == sorted(names, key=str.lower)
    assert names[0] == "Call-ID" and names[-1] == "Via"
    assert msg.call_id == "b954e1e87c6d580eaec2c2755aba3e54"
    assert msg.from_tag == "d28d156d2c72dcfb6a49ceb55f9627e8"


def test_to_uri_with_port_80(sip_vectors: Path) -> None:
    _, msg = load(sip_vectors, "dahua_nvr_invite_200ok_tcp_active.sip")
    to = parse_name_addr(msg.headers.get("To"))
    assert to.uri.port == 80 and to.tag == "3e86e5287e6934107873f8a078dd3039"
    assert b"m=video 10032 TCP/RTP/AVP 96" in msg.body


def test_nonstandard_101_provisional(sip_vectors: Path) -> None:
    _, msg = load(sip_vectors, "dahua_sd6c3230_invite_101_dialog_establishement.sip")
    assert isinstance(msg, SipResponse)
    assert (msg.status, msg.reason) == (101, "Dialog Establishement")
    assert msg.to_tag == "1504032660"
    assert msg.body == b""


def test_spvmn_domain_uris(sip_vectors: Path) -> None:
    _, msg = load(sip_vectors, "hikvision_nvr_catalog_response_sumnum8_num2.sip")
    uri = parse_uri(msg.uri)
    assert uri.user == "34020000001110000001" and uri.host == "3402000000.spvmn.cn"
    assert parse_name_addr(msg.headers.get("From")).uri.host == "3402000000.spvmn.cn"
    assert len(msg.body) == 909


def test_eighteen_digit_ids_and_admin_username(sip_vectors: Path) -> None:
    from sip_server.sip import parse_auth_params

    _, msg = load(sip_vectors, "hikvision_18digit_register_auth_opaque.sip")
    assert parse_uri(msg.uri).user == "130909115229300920"
    assert parse_name_addr(msg.headers.get("From")).uri.user == "130909113319427420"
    _, params = parse_auth_params(msg.headers.get("Authorization"))
    assert params["username"] == "admin" and params["realm"] == "hik"
    assert params["opaque"] == "a853e4f25298413f9bf3a9aa6767857d"
    assert msg.headers.get("Expires") == "7200"
    _, unreg = load(sip_vectors, "hikvision_18digit_unregister_auth.sip")
    assert unreg.headers.get("Expires") == "0"


def test_header_order_variants(sip_vectors: Path) -> None:
    _, msg = load(sip_vectors, "hikvision_ipc_keepalive_gb2312_empty_info.sip")
    names = [n for n, _ in msg.headers.items()]
    assert names.index("To") < names.index("From")
    assert b'encoding="GB2312"' in msg.body and b"<Info>\n</Info>" in msg.body
    _, happy = load(sip_vectors, "happytime_gb28181sim_register_noauth.sip")
    names = [n for n, _ in happy.headers.items()]
    assert names.index("Contact") < names.index("Call-ID")


def test_gb2312_body_bytes_are_not_decoded(sip_vectors: Path) -> None:
    _, msg = load(sip_vectors, "dahua_sd6c3230_catalog_response.sip")
    assert isinstance(msg.body, bytes) and len(msg.body) == 898
    assert msg.body.decode("gb2312")  # raw bytes, still decodable by the application


def test_sdp_bodies(sip_vectors: Path) -> None:
    _, msg = load(sip_vectors, "hikvision_nvr_playback_invite_200ok.sip")
    assert msg.headers.get("Content-Type") == "application/SDP"
    assert len(msg.body) == 282 and msg.body.startswith(b"v=0\r\n")
    _, happy = load(sip_vectors, "happytime_gb28181sim_invite_200ok_tcp_active.sip")
    assert parse_name_addr(happy.headers.get("Contact")).uri.host == "1306020049"
    assert happy.headers.get("Max-Forwards") == "70"


def test_via_parse_of_vector_lines() -> None:
    via = parse_via("SIP/2.0/UDP 192.0.2.40:5060;received=192.168.1.125;rport=5060;branch=z9hG4bK.wAF3")
    assert list(via.params) == ["received", "rport", "branch"]
