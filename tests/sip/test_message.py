"""The message codec: headers, start lines, framing, URIs, name-addr, Via, make_response."""

from __future__ import annotations

import pytest

from sip_server.sip import (
    Headers,
    SipParseError,
    SipRequest,
    SipResponse,
    StreamFramer,
    make_cancel,
    make_response,
    parse_message,
    parse_name_addr,
    parse_uri,
    parse_via,
)
from sip_server.sip.message import MAX_BODY_BYTES, MAX_HEADER_BYTES

REGISTER = (
    b"REGISTER sip:34020000002000000001@3402000000 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.168.1.64:5060;rport;branch=z9hG4bK1371463273\r\n"
    b"From: <sip:34020000001320000003@3402000000>;tag=2043466181\r\n"
    b"To: <sip:34020000001320000003@3402000000>\r\n"
    b"Call-ID: 1011047669\r\n"
    b"CSeq: 1 REGISTER\r\n"
    b"Contact: <sip:34020000001320000003@192.168.1.64:5060>\r\n"
    b"Max-Forwards: 70\r\n"
    b"User-Agent: IP Camera\r\n"
    b"Expires: 3600\r\n"
    b"Content-Length: 0\r\n\r\n"
)

MESSAGE = (
    b"MESSAGE sip:34020000002000000001@3402000000 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.168.1.64:5060;rport;branch=z9hG4bK1\r\n"
    b"From: <sip:34020000001320000003@3402000000>;tag=1\r\n"
    b"To: <sip:34020000002000000001@3402000000>\r\n"
    b"Call-ID: 77\r\n"
    b"CSeq: 20 MESSAGE\r\n"
    b"Content-Type: Application/MANSCDP+xml\r\n"
    b"Content-Length:   10\r\n\r\n"
    b"0123456789"
)


# ------------------------------------------------------------------ Headers
def test_headers_case_insensitive_and_compact() -> None:
    h = Headers()
    h.add("i", "abc")
    h.add("v", "SIP/2.0/UDP a;branch=z9hG4bK1")
    h.add("VIA", "SIP/2.0/UDP b;branch=z9hG4bK2")
    h.add("x-Custom", "1")
    assert h.get("Call-ID") == "abc" and h.get("call-id") == "abc" and h.get("I") == "abc"
    assert "CALL-ID" in h and "i" in h and "Contact" not in h
    assert h.get_all("Via") == ["SIP/2.0/UDP a;branch=z9hG4bK1", "SIP/2.0/UDP b;branch=z9hG4bK2"]
    assert h.items()[0] == ("Call-ID", "abc")
    assert h.items()[-1] == ("x-Custom", "1")
    assert h.get("missing") is None and h.get("missing", "d") == "d"
    assert len(h) == 4


@pytest.mark.parametrize(
    "compact,canonical",
    [("i", "Call-ID"), ("m", "Contact"), ("e", "Content-Encoding"), ("l", "Content-Length"),
     ("c", "Content-Type"), ("f", "From"), ("s", "Subject"), ("k", "Supported"), ("t", "To"),
     ("v", "Via"), ("u", "Allow-Events"), ("o", "Event")],
)
def test_every_compact_form(compact: str, canonical: str) -> None:
    h = Headers([(compact, "x")])
    assert h.get(canonical) == "x"
    assert h.items() == [(canonical, "x")]


def test_headers_set_remove_copy_eq() -> None:
    h = Headers([("X-A", "1"), ("X-B", "2"), ("x-a", "3"), ("X-C", "4")])
    h.set("X-A", "9")
    assert h.items() == [("X-A", "9"), ("X-B", "2"), ("X-C", "4")]
    h.set("X-D", "5")
    assert h.get_all("x-d") == ["5"]
    c = h.copy()
    h.remove("x-b")
    h.remove("nonexistent")
    assert "X-B" not in h and "X-B" in c
    assert c != h
    c.remove("X-B")
    assert c == h
    h.replace_first("X-A", "10")
    assert h.get("x-a") == "10"
    with pytest.raises(ValueError):
        h.add("X", "a\r\nInjected: 1")
    with pytest.raises(SipParseError):
        h.add("Bad Name", "1")


def test_get_all_splits_lists_respecting_quotes_and_angles() -> None:
    h = Headers()
    h.add("Contact", '"Doe, John" <sip:a@b;x=1,2>;expires=60, <sip:c@d>')
    h.add("Contact", "<sip:e@f>")
    h.add("Via", "SIP/2.0/UDP a:1;branch=z9hG4bKa , SIP/2.0/TCP b;branch=z9hG4bKb")
    h.add("Route", "<sip:p1;lr>,<sip:p2;lr>")
    h.add("Subject", "a, b")
    assert h.get_all("Contact") == ['"Doe, John" <sip:a@b;x=1,2>;expires=60', "<sip:c@d>", "<sip:e@f>"]
    assert [parse_via(v).host for v in h.get_all("Via")] == ["a", "b"]
    assert h.get_all("Route") == ["<sip:p1;lr>", "<sip:p2;lr>"]
    assert h.get_all("Subject") == ["a, b"]  # not a list header


# ------------------------------------------------------------------ parse_message
def test_parse_register() -> None:
    msg = parse_message(REGISTER)
    assert isinstance(msg, SipRequest) and msg.is_request
    assert msg.method == "REGISTER" and msg.uri == "sip:34020000002000000001@3402000000"
    assert msg.call_id == "1011047669"
    assert msg.cseq == (1, "REGISTER")
    assert msg.from_tag == "2043466181" and msg.to_tag is None
    assert msg.vias[0].branch == "z9hG4bK1371463273"
    assert msg.body == b""


def test_padded_content_length_and_body_bytes() -> None:
    msg = parse_message(MESSAGE + b"trailing garbage on UDP is ignored")
    assert msg.body == b"0123456789"
    assert msg.headers.get("Content-Length") == "10"


def test_missing_content_length_on_udp_takes_rest() -> None:
    data = MESSAGE.replace(b"Content-Length:   10\r\n", b"")
    assert parse_message(data).body == b"0123456789"


def test_short_body_is_an_error() -> None:
    with pytest.raises(SipParseError, match="shorter"):
        parse_message(MESSAGE[:-1])


def test_lf_only_and_leading_crlf_and_folding() -> None:
    data = b"\r\n\r\n" + MESSAGE.replace(b"\r\n", b"\n")
    data = data.replace(b"Subject", b"")
    msg = parse_message(data)
    assert msg.body == b"0123456789" and msg.call_id == "77"
    folded = REGISTER.replace(b"User-Agent: IP Camera\r\n", b"User-Agent: IP\r\n   \t Camera\r\n\tv1\r\n")
    assert parse_message(folded).headers.get("User-Agent") == "IP Camera v1"


def test_compact_and_odd_case_names_in_message() -> None:
    data = (
        b"OPTIONS sip:a@b SIP/2.0\r\n"
        b"v: SIP/2.0/UDP h;branch=z9hG4bKx\r\nf: <sip:x@y>;tag=1\r\nt: <sip:a@b>\r\n"
        b"i: cid\r\nCSEQ: 3 OPTIONS\r\ncall-info : <http://x>\r\nl: 0\r\n\r\n"
    )
    msg = parse_message(data)
    assert msg.call_id == "cid" and msg.cseq == (3, "OPTIONS") and msg.from_tag == "1"
    assert msg.headers.get("Call-Info") == "<http://x>"
    assert [n for n, _ in msg.headers.items()] == ["Via", "From", "To", "Call-ID", "CSeq", "Call-Info",
                                                    "Content-Length"]


def test_multiple_same_headers_kept_in_order() -> None:
    data = REGISTER.replace(b"Max-Forwards: 70\r\n", b"Route: <sip:a;lr>\r\nMax-Forwards: 70\r\nRoute: <sip:b;lr>\r\n")
    assert parse_message(data).headers.get_all("route") == ["<sip:a;lr>", "<sip:b;lr>"]


def test_response_parse() -> None:
    msg = parse_message(b"SIP/2.0 401 Unauthorized\r\nCall-ID: x\r\nContent-Length: 0\r\n\r\n")
    assert isinstance(msg, SipResponse) and not msg.is_request
    assert (msg.status, msg.reason) == (401, "Unauthorized")
    assert parse_message(b"SIP/2.0 200 \r\n\r\n").reason == ""


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\r\n\r\n",
        b"garbage",
        b"INVITE sip:a@b SIP/3.0\r\n\r\n",
        b"INVITE sip:a@b\r\n\r\n",
        b"SIP/2.0 99 Low\r\n\r\n",
        b"SIP/2.0 2000 OK\r\n\r\n",
        b"SIP/2.0 abc OK\r\n\r\n",
        b"OPTIONS sip:a@b SIP/2.0\r\nNoColon\r\n\r\n",
        b"OPTIONS sip:a@b SIP/2.0\r\n continuation first\r\n\r\n",
        b"OPTIONS sip:a@b SIP/2.0\r\nBad Name: 1\r\n\r\n",
        b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: -1\r\n\r\n",
        b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: \xd9\xa1\r\n\r\na",
        b"OPTIONS sip:a@b SIP/2.0\r\nX: a\rb\r\n\r\n",
        b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 5\r\n",
        b"BAD@METHOD sip:a@b SIP/2.0\r\n\r\n",
    ],
)
def test_malformed_messages_raise_parse_error(data: bytes) -> None:
    with pytest.raises(SipParseError):
        parse_message(data)


def test_header_only_datagram_without_blank_line() -> None:
    msg = parse_message(b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: 1\r\n")
    assert msg.call_id == "1" and msg.body == b""


def test_non_utf8_header_bytes_round_trip() -> None:
    data = REGISTER.replace(b"User-Agent: IP Camera", b"User-Agent: \xba\xa3\xbf\xb5")
    msg = parse_message(data)
    assert msg.to_bytes() == data


def test_to_bytes_writes_content_length_from_body() -> None:
    h = Headers([("Call-ID", "1"), ("Content-Length", "999"), ("Content-Length", "5")])
    req = SipRequest("MESSAGE", "sip:a@b", h, b"hello")
    data = req.to_bytes()
    assert data == b"MESSAGE sip:a@b SIP/2.0\r\nCall-ID: 1\r\nContent-Length: 5\r\n\r\nhello"
    assert bytes(req) == data
    resp = SipResponse(200, "OK", Headers([("Call-ID", "1")]))
    assert resp.to_bytes() == b"SIP/2.0 200 OK\r\nCall-ID: 1\r\nContent-Length: 0\r\n\r\n"


def test_bad_accessors_raise_parse_error() -> None:
    req = SipRequest("OPTIONS", "sip:a@b", Headers([("CSeq", "x OPTIONS")]))
    with pytest.raises(SipParseError):
        _ = req.cseq
    with pytest.raises(SipParseError):
        _ = req.call_id
    with pytest.raises(SipParseError):
        _ = req.top_via
    assert req.from_tag is None and req.vias == []


# ------------------------------------------------------------------ StreamFramer
def test_framer_partial_and_multiple_and_keepalives() -> None:
    f = StreamFramer()
    assert f.feed(b"\r\n\r\n") == []
    assert f.feed(MESSAGE[:30]) == []
    assert f.feed(MESSAGE[30:-3]) == []
    out = f.feed(MESSAGE[-3:] + b"\r\n\r\n" + REGISTER + MESSAGE[:5])
    assert [m.method for m in out] == ["MESSAGE", "REGISTER"]
    assert out[0].body == b"0123456789"
    assert f.feed(MESSAGE[5:]) == [parse_message(MESSAGE)]
    assert f.buffered == 0


def test_framer_lf_only_stream() -> None:
    f = StreamFramer()
    data = MESSAGE.replace(b"\r\n", b"\n")
    out = []
    for b in data:
        out += f.feed(bytes([b]))
    assert len(out) == 1 and out[0].body == b"0123456789"


def test_framer_requires_content_length() -> None:
    f = StreamFramer()
    with pytest.raises(SipParseError, match="mandatory"):
        f.feed(REGISTER.replace(b"Content-Length: 0\r\n", b""))


def test_framer_limits() -> None:
    f = StreamFramer()
    with pytest.raises(SipParseError, match="too large"):
        f.feed(b"OPTIONS sip:a@b SIP/2.0\r\nX: " + b"a" * MAX_HEADER_BYTES)
    assert f.buffered == 0
    f = StreamFramer()
    big = REGISTER.replace(b"Content-Length: 0", f"Content-Length: {MAX_BODY_BYTES + 1}".encode())
    with pytest.raises(SipParseError, match="too large"):
        f.feed(big)
    f = StreamFramer()
    ok = REGISTER.replace(b"Content-Length: 0", f"Content-Length: {MAX_BODY_BYTES}".encode())
    assert f.feed(ok) == []


# ------------------------------------------------------------------ URIs
@pytest.mark.parametrize(
    "text,user,host,port",
    [
        ("sip:34020000001320000001@3402000000", "34020000001320000001", "3402000000", None),
        ("sip:34020000001320000001@34020000", "34020000001320000001", "34020000", None),
        ("sip:34020000001110000001@3402000000.spvmn.cn", "34020000001110000001", "3402000000.spvmn.cn", None),
        ("sip:34020000002000000001@192.168.1.125:5060", "34020000002000000001", "192.168.1.125", 5060),
        ("sip:alice@[2001:db8::1]:5070", "alice", "2001:db8::1", 5070),
        ("SIP:proxy.example.com", None, "proxy.example.com", None),
        ("sips:bob:secret@example.com;transport=tcp?subject=x", "bob", "example.com", None),
    ],
)
def test_parse_uri(text: str, user: str | None, host: str, port: int | None) -> None:
    uri = parse_uri(text)
    assert (uri.user, uri.host, uri.port) == (user, host, port)
    assert parse_uri(str(uri)) == uri


def test_uri_params_and_headers() -> None:
    uri = parse_uri("sip:a@b:5060;transport=TCP;lr;user=phone?h1=v1&h2=v2")
    assert uri.params == {"transport": "TCP", "lr": None, "user": "phone"}
    assert uri.headers == {"h1": "v1", "h2": "v2"}
    assert str(uri) == "sip:a@b:5060;transport=TCP;lr;user=phone?h1=v1&h2=v2"
    assert str(parse_uri("sip:x@[::1]")) == "sip:x@[::1]"
    assert parse_uri("sips:a:pw@h").password == "pw"


@pytest.mark.parametrize(
    "text",
    ["", "http://x", "sip:", "sip:@host", "sip:a@", "sip:a@host:", "sip:a@host:99999", "sip:a@host:x",
     "sip:a@[::1", "sip:a@[zz]", "sip:a b@host", "sip:a@ho st", "sip:a@host;=x", "sip:a@host?bad",
     "sip:a@host;p=<x>", "tel:+123"],
)
def test_bad_uris(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_uri(text)


# ------------------------------------------------------------------ name-addr
def test_name_addr_forms() -> None:
    na = parse_name_addr('"Cam \\"1\\"" <sip:34020000001320000001@3402000000>;tag=abc;expires=60')
    assert na.display == 'Cam "1"' and na.tag == "abc" and na.params["expires"] == "60"
    assert parse_name_addr(str(na)) == na
    bare = parse_name_addr("sip:a@b;tag=x")
    assert bare.display is None and bare.tag == "x" and bare.uri.params == {}
    tok = parse_name_addr("Camera One <sip:a@b;lr>")
    assert tok.display == "Camera One" and tok.uri.params == {"lr": None} and tok.tag is None
    assert parse_name_addr("<sip:a@b>;tag=tag=abc").tag == "tag=abc"
    assert parse_name_addr('<sip:a@b>;+sip.instance="<urn:x;y>"').params["+sip.instance"] == '"<urn:x;y>"'


@pytest.mark.parametrize(
    "text",
    ["", '"unterminated <sip:a@b>', '"x" sip:a@b', "<sip:a@b", "<sip:a@b> junk", "<http://x>",
     '<sip:a@b>;tag="x', "<sip:a@b>;bad name=1"],
)
def test_bad_name_addrs(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_name_addr(text)


# ------------------------------------------------------------------ Via
def test_via_forms() -> None:
    v = parse_via("SIP/2.0/UDP 192.168.6.71:5060;rport;branch=z9hG4bK1442331620")
    assert (v.transport, v.host, v.port, v.branch, v.rport, v.received) == (
        "UDP", "192.168.6.71", 5060, "z9hG4bK1442331620", "", None)
    assert str(v) == "SIP/2.0/UDP 192.168.6.71:5060;rport;branch=z9hG4bK1442331620"
    assert parse_via("SIP/2.0/UDP 172.18.0.1:5060").branch is None
    assert parse_via("SIP/2.0/UDP 192.0.2.10:5060;rport;branch=z9h64bK43194494").branch == "z9h64bK43194494"
    spaced = parse_via("SIP / 2.0 / tcp   [2001:db8::9] ; branch = z9hG4bKx ;received=2001:db8::1")
    assert (spaced.transport, spaced.host, spaced.port) == ("TCP", "2001:db8::9", None)
    assert spaced.branch == "z9hG4bKx" and spaced.received == "2001:db8::1"
    assert spaced.sent_by == ("2001:db8::9", 5060)
    assert parse_via("SIP/2.0/TLS h").sent_by == ("h", 5061)


@pytest.mark.parametrize("text", ["", "SIP/2.0 UDP h", "SIP/2.0/UDP", "HTTP/1.1/TCP h", "SIP/2.0/UDP h:x",
                                  "SIP/2.0/UDP h;branch=a b"])
def test_bad_vias(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_via(text)


# ------------------------------------------------------------------ make_response / make_cancel
def test_make_response_copies_headers() -> None:
    data = REGISTER.replace(b"Via: SIP/2.0/UDP 192.168.1.64:5060;rport;branch=z9hG4bK1371463273\r\n",
                            b"Via: SIP/2.0/UDP 192.168.1.64:5060;rport;branch=z9hG4bK1, SIP/2.0/UDP p;branch=z9hG4bKp\r\n"
                            b"Via: SIP/2.0/UDP q;branch=z9hG4bKq\r\n")
    req = parse_message(data)
    resp = make_response(req, 401, to_tag="srv", headers=[("WWW-Authenticate", 'Digest realm="x"')])
    assert resp.status == 401 and resp.reason == "Unauthorized"
    assert [v.host for v in resp.vias] == ["192.168.1.64", "p", "q"]
    assert resp.headers.get("From") == req.headers.get("From")
    assert resp.to_tag == "srv"
    assert resp.call_id == req.call_id and resp.cseq == req.cseq
    assert resp.headers.get("WWW-Authenticate") == 'Digest realm="x"'
    assert "Contact" not in resp.headers and "Expires" not in resp.headers
    again = parse_message(resp.to_bytes())
    assert again.headers.get("Content-Length") == "0"
    again.headers.remove("Content-Length")
    assert again == resp
    # an existing To tag is kept; 100 Trying gets none
    tagged = make_response(parse_message(resp.to_bytes().replace(b"SIP/2.0 401 Unauthorized", b"INFO sip:a SIP/2.0")), 200, to_tag="other")
    assert tagged.to_tag == "srv"
    assert make_response(req, 100, to_tag="x").to_tag is None
    assert make_response(req, 299).reason == "Unknown"
    body = make_response(req, 200, "Fine", body=b"<x/>", content_type="Application/MANSCDP+xml")
    assert body.reason == "Fine" and body.headers.get("Content-Type") == "Application/MANSCDP+xml"
    assert b"Content-Length: 4\r\n\r\n<x/>" in body.to_bytes()


def test_make_cancel() -> None:
    invite = parse_message(REGISTER.replace(b"REGISTER", b"INVITE"))
    cancel = make_cancel(invite)
    assert cancel.method == "CANCEL" and cancel.uri == invite.uri
    assert cancel.cseq == (1, "CANCEL")
    assert cancel.vias[0].branch == invite.vias[0].branch
    assert cancel.headers.get("From") == invite.headers.get("From")
