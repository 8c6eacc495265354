"""Property tests: the parsers raise nothing but SipParseError, and messages round-trip."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sip_server.sip import (
    Headers,
    SipParseError,
    SipRequest,
    SipResponse,
    StreamFramer,
    parse_auth_params,
    parse_message,
    parse_name_addr,
    parse_uri,
    parse_via,
)

from ..conftest import SHARED

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

VECTOR_DIR = SHARED / "vectors" / "sip"
SEEDS = [p.read_bytes() for p in sorted(VECTOR_DIR.glob("*.sip"))] if VECTOR_DIR.is_dir() else []
SEEDS.append(
    b"INVITE sip:34020000001310000001@3402000000 SIP/2.0\r\n"
    b"v: SIP/2.0/UDP [2001:db8::1]:5060;rport;branch=z9hG4bK1, SIP/2.0/TCP h;received=1.2.3.4\r\n"
    b'f: "Cam \\"x\\"" <sip:a@b>;tag=tag=1\r\nt: <sip:c@d:80>\r\ni: x@y\r\nCSeq: 1 INVITE\r\n'
    b"m: <sip:c@1.2.3.4:5060>, *\r\nSubject: a:1,b:2\r\nl: 4\r\n\r\nv=0\n"
)

TOKEN = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
tokens = st.text(alphabet=TOKEN, min_size=1, max_size=12)
# SIP-ish fragments make the text strategies reach deep into the parsers
FRAGMENTS = ['sip:', 'sips:', '@', ':', ';', '=', '"', '\\', '<', '>', ',', '[', ']', '?', '&', ' ', '\t',
             'tag=', 'branch=z9hG4bK', 'rport', 'SIP/2.0/UDP ', '3402000000', '::1', '5060', 'Digest ', 'lr']
sipish = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=4)), max_size=20).map("".join)
any_text = st.one_of(st.text(max_size=80), sipish)


def only_parse_errors(fn, value) -> None:
    try:
        fn(value)
    except SipParseError:
        pass


# ------------------------------------------------------------------ never anything but SipParseError
@FUZZ
@given(st.binary(max_size=600))
def test_parse_message_random_bytes(data: bytes) -> None:
    only_parse_errors(parse_message, data)


@FUZZ
@given(st.sampled_from(SEEDS), st.data())
def test_parse_message_mutated_vectors(seed: bytes, data: st.DataObject) -> None:
    buf = bytearray(seed)
    for _ in range(data.draw(st.integers(1, 6))):
        op = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        pos = data.draw(st.integers(0, max(0, len(buf) - 1)))
        if op == "flip" and buf:
            buf[pos] = data.draw(st.sampled_from(b"\x00\r\n :;,<>\"@=\\\x80\xff0aZ"))
        elif op == "insert":
            buf[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del buf[pos : pos + data.draw(st.integers(1, 8))]
        else:
            del buf[pos:]
    raw = bytes(buf)
    try:
        msg = parse_message(raw)
    except SipParseError:
        return
    # accessors of whatever parsed also stay within SipParseError
    for accessor in ("call_id", "cseq", "from_tag", "to_tag", "vias", "top_via"):
        only_parse_errors(lambda m, a=accessor: getattr(m, a), msg)
    for name in ("From", "To", "Contact", "Route"):
        for value in msg.headers.get_all(name):
            only_parse_errors(parse_name_addr, value)
    if isinstance(msg, SipRequest):
        only_parse_errors(parse_uri, msg.uri)
    for value in msg.headers.get_all("Authorization"):
        only_parse_errors(parse_auth_params, value)
    msg.to_bytes()
    framer = StreamFramer()
    only_parse_errors(framer.feed, raw)


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(SEEDS), st.binary(max_size=3), st.integers(0, 2000)), max_size=6))
def test_endpoint_never_raises_on_input(items: list[tuple[bytes, bytes, int]]) -> None:
    from sip_server.sip import MessageDropped, RequestReceived, SipEndpoint, make_response

    ep = SipEndpoint()
    now = 0.0
    for seed, junk, pos in items:
        now += 0.3
        ep.receive_datagram(seed[:pos] + junk + seed[pos:], ("192.0.2.9", 5060), now)
        while (ev := ep.next_event()) is not None:
            if isinstance(ev, RequestReceived) and ev.request.method != "ACK":
                ep.send_response(ev.key, make_response(ev.request, 200, to_tag="t"), now)
            elif isinstance(ev, MessageDropped) and isinstance(ev.message, SipRequest):
                ep.send_stateless(make_response(ev.message, 400), ev.addr)
        ep.messages_to_send()
    ep.handle_timer(now + 1000.0)
    assert ep.transaction_count == 0


@FUZZ
@given(st.lists(st.binary(max_size=200), max_size=8))
def test_stream_framer_garbage(chunks: list[bytes]) -> None:
    framer = StreamFramer(max_header_bytes=256, max_body_bytes=256)
    for chunk in chunks:
        try:
            framer.feed(chunk)
        except SipParseError:
            return


@FUZZ
@given(any_text)
def test_parse_uri_fuzz(text: str) -> None:
    only_parse_errors(parse_uri, text)
    only_parse_errors(parse_uri, "sip:" + text)


@FUZZ
@given(any_text)
def test_parse_name_addr_fuzz(text: str) -> None:
    only_parse_errors(parse_name_addr, text)
    only_parse_errors(parse_name_addr, "<sip:" + text)


@FUZZ
@given(any_text)
def test_parse_via_fuzz(text: str) -> None:
    only_parse_errors(parse_via, text)
    only_parse_errors(parse_via, "SIP/2.0/UDP " + text)


@FUZZ
@given(any_text)
def test_parse_auth_params_fuzz(text: str) -> None:
    only_parse_errors(parse_auth_params, text)
    only_parse_errors(parse_auth_params, "Digest " + text)


# ------------------------------------------------------------------ structured round trips
hosts = st.one_of(
    st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?(\.[a-z0-9]{1,8}){0,3}\Z"),
    st.from_regex(r"\A[0-9]{8}([0-9]{2})?\Z"),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
)
users = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._~-]{0,20}\Z")
ports = st.one_of(st.none(), st.integers(0, 65535))
PARAMCHAR = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!~*'"
paramchars = st.text(alphabet=PARAMCHAR, min_size=1, max_size=10)
uri_params = st.dictionaries(paramchars.map(str.lower), st.one_of(st.none(), paramchars), max_size=3)


@st.composite
def uris(draw) -> str:
    host = draw(hosts)
    host_s = f"[{host}]" if ":" in host else host
    port = draw(ports)
    user = draw(st.one_of(st.none(), users))
    text = draw(st.sampled_from(["sip", "sips"])) + ":" + (f"{user}@" if user else "") + host_s
    text += f":{port}" if port is not None else ""
    for k, v in draw(uri_params).items():
        text += f";{k}" if v is None else f";{k}={v}"
    return text


@given(uris())
def test_uri_round_trip(text: str) -> None:
    uri = parse_uri(text)
    assert str(uri) == text.replace("SIP:", "sip:")
    assert parse_uri(str(uri)) == uri


@given(uris(), st.one_of(st.none(), st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=20)),
       st.one_of(st.none(), tokens))
def test_name_addr_round_trip(uri: str, display: str | None, tag: str | None) -> None:
    from sip_server.sip.message import _quote

    text = (f"{_quote(display)} " if display else "") + f"<{uri}>" + (f";tag={tag}" if tag else "")
    na = parse_name_addr(text)
    assert na.display == (display or None) and na.tag == tag
    assert parse_name_addr(str(na)) == na


@given(st.sampled_from(["UDP", "TCP", "tls"]), hosts, ports, st.one_of(st.none(), tokens), st.booleans())
def test_via_round_trip(transport: str, host: str, port: int | None, branch: str | None, rport: bool) -> None:
    text = f"SIP/2.0/{transport} " + (f"[{host}]" if ":" in host else host) + (f":{port}" if port is not None else "")
    if rport:
        text += ";rport"
    if branch:
        text += f";branch={branch}"
    via = parse_via(text)
    assert (via.transport, via.host, via.port, via.branch) == (transport.upper(), host, port, branch)
    assert via.rport == ("" if rport else None)
    assert parse_via(str(via)) == via


header_values = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=40
).map(lambda s: s.strip(" \t"))
header_names = tokens.filter(lambda n: n.lower() not in ("l", "content-length"))


@st.composite
def messages(draw) -> SipRequest | SipResponse:
    headers = Headers()
    for name, value in draw(st.lists(st.tuples(header_names, header_values), max_size=8)):
        headers.add(name, value)
    body = draw(st.binary(max_size=200))
    headers.add("Content-Length", str(len(body)))
    if draw(st.booleans()):
        uri = draw(st.one_of(uris(), st.text(alphabet=TOKEN + ":@;=?&/", min_size=1, max_size=30)))
        return SipRequest(draw(tokens), uri, headers, body)
    reason = draw(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"),
                          max_size=30)).strip(" \t")
    return SipResponse(draw(st.integers(100, 699)), reason, headers, body)


@FUZZ
@given(messages())
def test_message_round_trip(msg: SipRequest | SipResponse) -> None:
    data = msg.to_bytes()
    again = parse_message(data)
    assert again == msg
    assert again.to_bytes() == data


@FUZZ
@given(st.lists(messages(), min_size=1, max_size=5), st.lists(st.booleans(), min_size=5, max_size=5), st.data())
def test_stream_framer_random_chunking(msgs: list, keepalives: list[bool], data: st.DataObject) -> None:
    stream = b""
    for i, m in enumerate(msgs):
        if keepalives[i]:
            stream += b"\r\n\r\n"
        stream += m.to_bytes()
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    framer = StreamFramer()
    got = []
    prev = 0
    for cut in [*cuts, len(stream)]:
        got += framer.feed(stream[prev:cut])
        prev = cut
    assert got == msgs
    assert framer.buffered == 0


def test_vectors_are_seeded() -> None:
    assert len(SEEDS) > 1 or not Path(VECTOR_DIR).is_dir()
