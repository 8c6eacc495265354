"""Toward upper platforms (sip_server/gb/upper.py), sans-IO with a fake clock: the upper is played by this test
(its own digest authenticator, its requests as bytes from its address), the platform is a GbServer."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sip_server.gb import events as ev
from sip_server.gb import manscdp
from sip_server.gb.server import GbConfig, GbServer
from sip_server.gb.upper import CatalogEntry, OfferError, UpperAnswer, UpperConfig, UpperOffer, parse_offer
from sip_server.sip import DigestAuthenticator, SipEndpoint, make_cancel, make_response, parse_message
from sip_server.sip.digest import parse_auth_params
from sip_server.sip.sdp import parse_sdp

UPPER_ID = "34010000002000000001"
UPPER_DOMAIN = "3401000000"
UPPER = ("198.51.100.7", 5060)
LOCAL_ID = "34020000002000000009"
PW = "Upper-pw-123"
WALL = 1_700_000_000.0
PID = 7
KUN = "堃"
YAN = "䶮"
_branches = itertools.count(1)


def upper_config(**kw) -> UpperConfig:
    base = dict(platform_id=PID, server_id=UPPER_ID, server_domain=UPPER_DOMAIN, host=UPPER[0], port=UPPER[1],
                transport="udp", local_id=LOCAL_ID, username=LOCAL_ID, password=PW)
    base.update(kw)
    return UpperConfig(**base)


class Rig:
    """The platform's GB core and a scripted upper platform."""

    def __init__(self, **gb) -> None:
        self.server = GbServer(GbConfig(**gb), SipEndpoint(), secret=b"k" * 32, wall_clock=lambda: WALL)
        self.server.endpoint.local_addresses = {"udp": ("192.0.2.10", 5060), "tcp": ("192.0.2.10", 5060),
                                                "tls": ("192.0.2.10", 5061)}
        self.auth = DigestAuthenticator(UPPER_DOMAIN, b"u" * 32)
        self.now = 0.0
        self.outgoing: list = []  # (message, Outgoing)
        self.seen: set = set()
        self.events: list = []
        self.answer_keepalives = True  # the upper answers keepalives 200 (while advancing the clock)

    # ------------------------------------------------------------------ plumbing
    def collect(self) -> None:
        for o in self.server.endpoint.messages_to_send():
            msg = parse_message(o.data)
            ident = (msg.headers.get("Via"), msg.headers.get("CSeq"), getattr(msg, "status", None))
            if ident in self.seen:  # a retransmission
                continue
            self.seen.add(ident)
            self.outgoing.append((msg, o))
        while (e := self.server.next_event()) is not None:
            self.events.append(e)

    def sent(self, method: str | None = None) -> list:
        """Requests (or, method "", responses) sent since the last call."""
        self.collect()
        if method is None:
            picked = self.outgoing
        elif method == "":
            picked = [x for x in self.outgoing if not x[0].is_request]
        else:
            picked = [x for x in self.outgoing if x[0].is_request and x[0].method == method]
        self.outgoing = [x for x in self.outgoing if x not in picked]
        return [m for m, _ in picked]

    def sent_with_transport(self) -> list:
        self.collect()
        out, self.outgoing = self.outgoing, []
        return out

    def take(self, kind=None) -> list:
        self.collect()
        out = [e for e in self.events if kind is None or isinstance(e, kind)]
        self.events = [e for e in self.events if not (kind is None or isinstance(e, kind))]
        return out

    def configure(self, *configs: UpperConfig) -> None:
        self.server.uppers.configure(list(configs), self.now)
        self.collect()

    def advance(self, to: float, step: float = 0.5) -> None:
        """Run every timer (endpoint and core) up to ``to``."""
        while self.now < to:
            self.now = min(to, self.now + step)
            self.server.endpoint.handle_timer(self.now)
            self.server.handle_sip_events(self.now)
            self.server.handle_timer(self.now)
            self.collect()
            if self.answer_keepalives:
                keepalives = [(m, o) for m, o in self.outgoing if m.is_request and m.method == "MESSAGE"
                              and b"<CmdType>Keepalive</CmdType>" in m.body]
                self.outgoing = [x for x in self.outgoing if x not in keepalives]
                for m, o in keepalives:
                    self.respond(m, 200, transport=o.transport)

    def feed(self, data: bytes, addr=UPPER, transport: str = "udp") -> None:
        self.server.receive_datagram(data, addr, self.now, transport)
        self.collect()

    def respond(self, req, status: int, headers=(), body: bytes = b"", addr=UPPER, transport: str = "udp") -> None:
        resp = make_response(req, status, to_tag="up1", headers=list(headers), body=body,
                             content_type="Application/MANSCDP+xml" if body else None)
        self.feed(resp.to_bytes(), addr, transport)

    def request(self, method: str, body: bytes = b"", *, call_id: str = "q1@upper", cseq: int = 1,
                headers: tuple = (), to_tag: str | None = None, addr=UPPER, transport: str = "udp",
                from_user: str = UPPER_ID, content_type: str = "Application/MANSCDP+xml", branch: str | None = None,
                uri: str | None = None) -> bytes:
        branch = branch or f"z9hG4bKup{next(_branches)}"
        to = f"<sip:{LOCAL_ID}@{UPPER_DOMAIN}>" + (f";tag={to_tag}" if to_tag else "")
        lines = [f"{method} {uri or f'sip:{LOCAL_ID}@192.0.2.10:5060'} SIP/2.0",
                 f"Via: SIP/2.0/{transport.upper()} {addr[0]}:{addr[1]};rport;branch={branch}",
                 f"From: <sip:{from_user}@{UPPER_DOMAIN}>;tag=uptag", f"To: {to}", f"Call-ID: {call_id}",
                 f"CSeq: {cseq} {method}", "Max-Forwards: 70", f"Contact: <sip:{from_user}@{addr[0]}:{addr[1]}>",
                 *[f"{k}: {v}" for k, v in headers]]
        if body:
            lines.append(f"Content-Type: {content_type}")
        data = ("\r\n".join(lines + [f"Content-Length: {len(body)}", "", ""])).encode() + body
        self.feed(data, addr, transport)
        return data

    # ------------------------------------------------------------------ registration
    def challenge(self, req, *, qop: str | None = "auth", stale: bool = False, transport: str = "udp",
                  addr=UPPER) -> None:
        self.respond(req, 401, [("WWW-Authenticate", self.auth.challenge(self.now, LOCAL_ID, qop=qop, stale=stale))],
                     addr=addr, transport=transport)

    def verify(self, req, password: str = PW) -> bool:
        return self.auth.verify(req.headers.get("Authorization"), method="REGISTER", bind=LOCAL_ID,
                                password=password, now=self.now).ok

    def register(self, config: UpperConfig | None = None, *, qop: str | None = "auth", granted: int = 3600):
        self.configure(config or upper_config())
        return self.complete_register(qop=qop, granted=granted)

    def complete_register(self, *, qop: str | None = "auth", granted: int = 3600, transport: str = "udp"):
        [first] = self.sent("REGISTER")
        assert first.headers.get("Authorization") is None
        self.challenge(first, qop=qop, transport=transport)
        [second] = self.sent("REGISTER")
        assert self.verify(second)
        self.respond(second, 200, [("Expires", str(granted))], transport=transport)
        assert self.state() == "registered"
        return first, second

    def state(self) -> str:
        return self.server.uppers.status(PID)["state"]

    def states(self) -> list[str]:
        return [e.state for e in self.take(ev.UpperStateChanged)]


def body_of(msg) -> manscdp.ManscdpMessage:
    return manscdp.parse(msg.body)


# ================================================================================== registration
@pytest.mark.parametrize("qop", ["auth", None])
def test_register_digest_with_and_without_qop(qop):
    rig = Rig()
    first, second = rig.register(qop=qop)
    assert first.uri == f"sip:{UPPER_ID}@{UPPER_DOMAIN}"
    assert first.headers.get("From").startswith(f"<sip:{LOCAL_ID}@{UPPER_DOMAIN}>")
    assert first.headers.get("Expires") == "3600" and first.headers.get("X-GB-ver") is None
    assert first.headers.get("Contact") == f"<sip:{LOCAL_ID}@192.0.2.10:5060>"
    _, params = parse_auth_params(second.headers.get("Authorization"))
    assert params["username"] == LOCAL_ID and params["uri"] == f"sip:{UPPER_ID}@{UPPER_DOMAIN}"
    if qop:
        assert params["qop"] == "auth" and params["nc"] == "00000001" and params["cnonce"]
    else:
        assert "qop" not in params and "nc" not in params and "cnonce" not in params
    assert second.call_id == first.call_id and second.cseq[0] == first.cseq[0] + 1
    assert rig.states() == ["registering", "registered"]
    status = rig.server.uppers.status(PID)
    assert status == {"state": "registered", "last_error": None, "last_keepalive": None,
                      "registered_until": WALL + 3600, "calls": 0}
    assert PW not in repr(upper_config())


def test_register_goes_from_our_sip_socket_to_the_upper_and_says_2022():
    rig = Rig()
    rig.configure(upper_config(gb_version="2022", transport="tcp"))
    [(req, out)] = rig.sent_with_transport()
    assert out.addr == UPPER and out.transport == "tcp"
    assert req.headers.get("X-GB-ver") == "3.0"
    assert req.headers.get("Via").startswith("SIP/2.0/TCP 192.0.2.10:5060")


def test_refresh_before_the_expiry_the_upper_granted_and_a_new_nonce_is_answered():
    rig = Rig()
    _, second = rig.register(granted=600)  # asked 3600, granted 600
    rig.states()
    rig.advance(539)
    assert rig.sent("REGISTER") == []
    rig.advance(541)
    [refresh] = rig.sent("REGISTER")
    assert refresh.call_id == second.call_id and refresh.cseq[0] == second.cseq[0] + 1
    assert refresh.headers.get("Authorization")  # the cached challenge, nc 2
    assert parse_auth_params(refresh.headers.get("Authorization"))[1]["nc"] == "00000002"
    rig.challenge(refresh)  # the upper's nonce expired: a fresh challenge, not a wrong password
    [again] = rig.sent("REGISTER")
    assert rig.verify(again)
    rig.respond(again, 200, [("Expires", "600")])
    assert rig.state() == "registered" and rig.states() == []


def test_stale_nonce_is_answered_again():
    rig = Rig()
    rig.configure(upper_config())
    [first] = rig.sent("REGISTER")
    rig.challenge(first)
    [second] = rig.sent("REGISTER")
    rig.challenge(second, stale=True)
    [third] = rig.sent("REGISTER")
    assert rig.verify(third)
    rig.respond(third, 200, [("Expires", "3600")])
    assert rig.state() == "registered"


def test_keepalives_then_the_upper_restarts_offline_and_register_again():
    rig = Rig()
    rig.answer_keepalives = False
    rig.register()
    rig.states()
    rig.advance(60)
    [ka] = rig.sent("MESSAGE")
    body = body_of(ka)
    assert (body.root, body.cmd_type, body.device_id, body.get("Status")) == ("Notify", "Keepalive", LOCAL_ID, "OK")
    assert ka.uri == f"sip:{UPPER_ID}@{UPPER[0]}:{UPPER[1]}"
    rig.respond(ka, 200)
    assert rig.server.uppers.status(PID)["last_keepalive"] == WALL
    # the upper goes away: three keepalives get no answer (32 s transaction timeout each)
    rig.advance(240 + 33)
    assert rig.states() == ["offline", "registering"]
    status = rig.server.uppers.status(PID)
    assert "3 keepalives failed" in status["last_error"] and status["registered_until"] is None
    registers = rig.sent("REGISTER")
    assert len(registers) >= 1
    # it is back: the new REGISTER is challenged and accepted
    rig.challenge(registers[-1])
    [authed] = rig.sent("REGISTER")
    rig.respond(authed, 200, [("Expires", "3600")])
    assert rig.states() == ["registered"]


def test_keepalive_errors_count_too():
    rig = Rig()
    rig.answer_keepalives = False
    rig.register()
    rig.states()
    for t in (60, 120, 180):
        rig.advance(t)
        [ka] = rig.sent("MESSAGE")
        rig.respond(ka, 404)
    assert rig.states() == ["offline", "registering"]
    assert len(rig.sent("REGISTER")) == 1


def test_wrong_password_is_a_clear_offline_state_without_a_hot_loop():
    rig = Rig()
    rig.configure(upper_config(password="not-the-password"))
    [first] = rig.sent("REGISTER")
    rig.challenge(first)
    [second] = rig.sent("REGISTER")
    assert not rig.verify(second)
    rig.challenge(second)  # a new challenge to our answer: wrong password
    assert rig.sent("REGISTER") == []
    status = rig.server.uppers.status(PID)
    assert status["state"] == "offline"
    assert "密码错误或被拒绝" in status["last_error"] and "refused: 401" in status["last_error"]
    rig.advance(59.5)
    assert rig.sent("REGISTER") == []  # >= 60 s after a refusal
    counts = 0
    start = rig.now
    while rig.now < start + 600:
        rig.advance(rig.now + 1)
        for req in rig.sent("REGISTER"):
            counts += 1
            if req.headers.get("Authorization") is None:
                rig.challenge(req)
            else:
                rig.respond(req, 403)
    assert 0 < counts <= 2 * (600 // 60 + 1)  # a challenge and an answer per minute at most


def test_403_is_refused_and_retried_after_a_minute():
    rig = Rig(cascade_retry=90.0)
    rig.configure(upper_config())
    [first] = rig.sent("REGISTER")
    rig.respond(first, 403)
    assert rig.server.uppers.status(PID)["last_error"] == "密码错误或被拒绝 / refused: 403 Forbidden"
    rig.advance(89.5)
    assert rig.sent("REGISTER") == []
    rig.advance(100)
    assert len(rig.sent("REGISTER")) == 1


def test_no_answer_at_first_start_backs_off_doubling():
    rig = Rig(cascade_retry_initial=5.0, cascade_retry=60.0)
    rig.configure(upper_config())
    rig.sent()
    times = []
    while rig.now < 400:
        rig.advance(rig.now + 0.5)
        if rig.sent("REGISTER"):
            times.append(rig.now)
    # each try times out after 32 s, then waits 5, 10, 20, 40, 60 (+ up to 10 % jitter)
    waits = [b - a - 32 for a, b in zip([0.0, *times], times, strict=False)]
    assert len(waits) >= 4
    for got, want in zip(waits, [5, 10, 20, 40, 60], strict=False):
        assert want - 0.5 <= got <= want * 1.1 + 0.5
    assert rig.state() in ("offline", "registering") and "no answer" in rig.server.uppers.status(PID)["last_error"]


def test_tcp_connection_loss_is_offline_then_register_again():
    rig = Rig()
    rig.configure(upper_config(transport="tcp"))
    rig.complete_register(transport="tcp")
    rig.states()
    rig.server.connection_lost(UPPER, "tcp", now=rig.now)
    rig.collect()
    assert rig.states() == ["offline", "registering"]
    assert "TCP connection" in rig.server.uppers.status(PID)["last_error"]
    [(req, out)] = rig.sent_with_transport()
    assert req.method == "REGISTER" and out.transport == "tcp" and out.addr == UPPER


# ================================================================================== SIP over TLS (sips)
UPPER_TLS = (UPPER[0], 5061)


def tls_rig(**gb) -> Rig:
    rig = Rig(cascade_catalog_items_tcp=8, **gb)
    rig.configure(upper_config(port=UPPER_TLS[1], transport="tls"))
    return rig


def test_tls_registers_over_its_connection_and_serves_the_upper_like_tcp():
    rig = tls_rig()
    [(first, out)] = rig.sent_with_transport()
    assert out.addr == UPPER_TLS and out.transport == "tls"
    assert first.method == "REGISTER" and first.headers.get("Via").startswith("SIP/2.0/TLS 192.0.2.10:5061")
    assert first.headers.get("Contact") == f"<sip:{LOCAL_ID}@192.0.2.10:5061>"
    rig.challenge(first, transport="tls", addr=UPPER_TLS)
    [(second, out)] = rig.sent_with_transport()
    assert out.transport == "tls" and rig.verify(second)
    rig.respond(second, 200, [("Expires", "3600")], addr=UPPER_TLS, transport="tls")
    assert rig.state() == "registered" and rig.states() == ["registering", "registered"]
    # keepalives go over TLS too
    rig.answer_keepalives = False
    rig.advance(61)
    [(ka, out)] = [x for x in rig.sent_with_transport() if x[0].is_request]
    assert ka.method == "MESSAGE" and out.transport == "tls" and out.addr == UPPER_TLS
    # the upper's query on the connection (its source port is the connection's, the host is the upper's)
    rig.request("MESSAGE", manscdp.build_query("Catalog", 31, LOCAL_ID), addr=(UPPER[0], 40123), transport="tls")
    [ok] = rig.sent("")
    assert ok.status == 200
    assert rig.take(ev.UpperCatalogQuery) == [ev.UpperCatalogQuery(PID, 31, LOCAL_ID)]
    # the catalog is paged as on a stream (8 items a MESSAGE), over TLS
    many = [CatalogEntry(f"340200000013100{i:05d}", f"通道{i}", "channel", parent_id=LOCAL_ID) for i in range(10)]
    rig.server.uppers.answer_catalog(PID, 31, many, rig.now)
    [(page1, out)] = rig.sent_with_transport()
    assert out.transport == "tls" and manscdp.as_catalog(body_of(page1)).num == 8
    rig.respond(page1, 200, addr=UPPER_TLS, transport="tls")
    [page2] = rig.sent("MESSAGE")
    assert manscdp.as_catalog(body_of(page2)).num == 2


def test_tls_upper_is_not_believed_over_plain_tcp_or_udp_or_from_another_host():
    rig = tls_rig()
    [first] = rig.sent("REGISTER")
    rig.challenge(first, transport="tls", addr=UPPER_TLS)
    [second] = rig.sent("REGISTER")
    rig.respond(second, 200, [("Expires", "3600")], addr=UPPER_TLS, transport="tls")
    rig.take()
    for addr, transport in ((UPPER_TLS, "tcp"), (UPPER, "udp"), (("203.0.113.66", 5061), "tls")):
        rig.request("MESSAGE", manscdp.build_query("Catalog", 5, LOCAL_ID), addr=addr, transport=transport)
        [refused] = rig.sent("")
        assert refused.status == 403, (addr, transport)
        [sec] = rig.take(ev.SecurityEvent)
        assert sec.kind == "address_mismatch" and "tls 198.51.100.7:5061" in sec.detail
    assert rig.take(ev.UpperCatalogQuery) == []


def test_certificate_failure_is_a_clear_reason_and_retried_like_a_refusal():
    rig = tls_rig(cascade_retry=90.0)
    [first] = rig.sent("REGISTER")
    rig.server.connect_failed(UPPER_TLS, "tls", "certificate", "self-signed certificate", rig.now)
    rig.collect()
    status = rig.server.uppers.status(PID)
    assert status["state"] == "offline"
    assert status["last_error"] == "证书校验失败 / certificate verification failed: self-signed certificate"
    assert [e.reason for e in rig.take(ev.UpperStateChanged)] == [
        None, "证书校验失败 / certificate verification failed: self-signed certificate"]
    # the REGISTER's transaction ending later (no answer) does not overwrite the reason or retry sooner
    rig.advance(89.5)
    assert rig.sent("REGISTER") == []
    assert "证书校验失败" in rig.server.uppers.status(PID)["last_error"]
    rig.advance(100)
    [again] = rig.sent("REGISTER")
    assert again.headers.get("Via").startswith("SIP/2.0/TLS")
    assert rig.state() == "registering" and "证书校验失败" in rig.server.uppers.status(PID)["last_error"]


def test_connect_failure_backs_off_and_other_peers_or_transports_are_not_touched():
    rig = tls_rig(cascade_retry_initial=5.0)
    rig.sent()
    # not this upper: another address, the same address over plain TCP, or a UDP "connection"
    rig.server.connect_failed(UPPER_TLS, "tcp", "connect", "refused", rig.now)
    rig.server.connect_failed(("198.51.100.8", 5061), "tls", "certificate", "x", rig.now)
    rig.server.connect_failed(UPPER_TLS, "udp", "connect", "x", rig.now)
    assert rig.state() == "registering" and rig.server.uppers.status(PID)["last_error"] is None
    rig.server.connect_failed(UPPER_TLS, "tls", "connect", "Connection refused", rig.now)
    assert rig.server.uppers.status(PID)["last_error"] == "无法连接 / cannot connect: Connection refused"
    rig.advance(4.5)
    assert rig.sent("REGISTER") == []
    rig.advance(6.0)  # the first start's back-off (5 s + jitter), not a refusal's minute
    assert len(rig.sent("REGISTER")) == 1
    rig.server.connect_failed(UPPER_TLS, "tls", "tls", "WRONG_VERSION_NUMBER", rig.now)
    assert rig.server.uppers.status(PID)["last_error"] == "TLS 握手失败 / TLS handshake failed: WRONG_VERSION_NUMBER"


def test_tls_connection_loss_then_a_failing_certificate_when_registering_again():
    rig = tls_rig()
    [first] = rig.sent("REGISTER")
    rig.challenge(first, transport="tls", addr=UPPER_TLS)
    [second] = rig.sent("REGISTER")
    rig.respond(second, 200, [("Expires", "3600")], addr=UPPER_TLS, transport="tls")
    rig.states()
    rig.server.connection_lost(UPPER_TLS, "tls", now=rig.now)
    rig.collect()
    assert rig.states() == ["offline", "registering"]
    assert rig.server.uppers.status(PID)["last_error"] == "连接断开 / TLS connection to the upper lost"
    [(req, out)] = rig.sent_with_transport()
    assert req.method == "REGISTER" and out.transport == "tls" and out.addr == UPPER_TLS
    # the new connection's certificate no longer verifies: offline with that reason
    rig.server.connect_failed(UPPER_TLS, "tls", "certificate", "certificate has expired", rig.now)
    rig.collect()
    assert rig.states() == ["offline"]
    assert rig.server.uppers.status(PID)["last_error"].startswith("证书校验失败 / certificate verification failed")


# ================================================================================== identity, OPTIONS
def test_options_from_the_upper_is_answered_with_allow():
    rig = Rig()
    rig.register()
    rig.request("OPTIONS")
    [ok] = rig.sent("")
    assert ok.status == 200 and "OPTIONS" in ok.headers.get("Allow") and "INVITE" in ok.headers.get("Allow")


def test_a_request_claiming_the_upper_from_elsewhere_is_refused():
    rig = Rig()
    rig.register()
    rig.take()
    body = manscdp.build_query("Catalog", 5, LOCAL_ID)
    rig.request("MESSAGE", body, addr=("203.0.113.66", 5060))
    [refused] = rig.sent("")
    assert refused.status == 403
    [sec] = rig.take(ev.SecurityEvent)
    assert sec.kind == "address_mismatch" and sec.device_id == UPPER_ID and sec.remote_addr[0] == "203.0.113.66"
    assert rig.take(ev.UpperCatalogQuery) == []
    # the same port on another transport is not the upper either
    rig.request("OPTIONS", transport="tcp")
    assert rig.sent("")[0].status == 403


# ================================================================================== catalog
def entries() -> list[CatalogEntry]:
    return [
        CatalogEntry(LOCAL_ID, "下级平台", "system", manufacturer="gbops", model="platform", civil_code="340200",
                     address="合肥"),
        CatalogEntry("340200", "芜湖市", "region"),
        CatalogEntry("34020000002150000001", "业务分组", "business_group", parent_id=LOCAL_ID, civil_code="340200"),
        CatalogEntry("34020000002160000001", "虚拟组织", "virtual_org", business_group_id="34020000002150000001"),
        CatalogEntry("34020000001310000001", f"东门{KUN}{YAN}", "channel", parent_id=f"{LOCAL_ID}/34020000002160000001",
                     civil_code="340200", manufacturer="Dahua", model="SD6C", owner="owner", address="东门",
                     status="OFF", longitude=118.38, latitude=31.33),
    ]


def catalog_query(rig: Rig, sn: int = 77) -> None:
    rig.request("MESSAGE", manscdp.build_query("Catalog", sn, LOCAL_ID))
    [ok] = rig.sent("")
    assert ok.status == 200
    assert rig.take(ev.UpperCatalogQuery) == [ev.UpperCatalogQuery(PID, sn, LOCAL_ID)]


def test_catalog_is_sent_serially_one_item_per_udp_message():
    rig = Rig()
    rig.register()
    catalog_query(rig)
    items = entries()
    rig.server.uppers.answer_catalog(PID, 77, items, rig.now)
    got = []
    for _ in range(len(items)):
        [msg] = rig.sent("MESSAGE")  # only one in flight: the next waits for this one's 200
        page = manscdp.as_catalog(body_of(msg))
        assert page.sn == 77 and page.sum_num == len(items) and page.num == 1 and len(page.items) == 1
        assert page.device_id == LOCAL_ID
        got += page.items
        assert rig.take(ev.UpperCatalogSent) == []
        rig.respond(msg, 200)
    assert rig.take(ev.UpperCatalogSent) == [ev.UpperCatalogSent(PID, 77, 5, 5, None)]
    assert [i.device_id for i in got] == [e.device_id for e in items]
    system, region, group, vo, channel = got
    assert (system.manufacturer, system.parent_id, system.register_way, system.status) == ("gbops", None, 1, "ON")
    assert region.raw.keys() == {"DeviceID", "Name"}
    assert group.parent_id == LOCAL_ID and group.civil_code == "340200" and group.business_group_id is None
    assert vo.business_group_id == "34020000002150000001" and vo.parent_id is None
    assert set(vo.raw) == {"DeviceID", "Name", "BusinessGroupID"}
    assert channel.name == f"东门{KUN}{YAN}" and channel.status == "OFF" and channel.parental == 0
    assert (channel.longitude, channel.latitude, channel.owner) == (118.38, 31.33, "owner")
    assert channel.parent_id == f"{LOCAL_ID}/34020000002160000001" and channel.business_group_id is None


@pytest.mark.parametrize("charset,declared,codec", [("GB2312", "GB2312", "gb18030"), ("GB18030", "GB18030", "gb18030"),
                                                   ("UTF-8", "UTF-8", "utf-8")])
def test_catalog_charset_keeps_rare_characters(charset, declared, codec):
    rig = Rig(cascade_catalog_items_tcp=8)
    rig.configure(upper_config(transport="tcp", charset=charset))
    rig.complete_register(transport="tcp")
    rig.request("MESSAGE", manscdp.build_query("Catalog", 78, LOCAL_ID), transport="tcp")
    rig.sent("")
    rig.server.uppers.answer_catalog(PID, 78, entries(), rig.now)
    [msg] = rig.sent("MESSAGE")  # 5 items fit one TCP message
    assert msg.body.startswith(f'<?xml version="1.0" encoding="{declared}"?>'.encode())
    assert f"东门{KUN}{YAN}".encode(codec) in msg.body
    page = manscdp.as_catalog(body_of(msg))
    assert page.num == 5 and page.sum_num == 5 and page.items[4].name == f"东门{KUN}{YAN}"


def test_catalog_pages_over_tcp_and_sumnum_across_messages():
    rig = Rig(cascade_catalog_items_tcp=8)
    rig.configure(upper_config(transport="tcp"))
    rig.complete_register(transport="tcp")
    many = [CatalogEntry(f"340200000013100{i:05d}", f"通道{i}", "channel", parent_id=LOCAL_ID) for i in range(19)]
    rig.server.uppers.answer_catalog(PID, 9, many, rig.now)
    nums = []
    while True:
        msgs = rig.sent("MESSAGE")
        if not msgs:
            break
        [msg] = msgs
        page = manscdp.as_catalog(body_of(msg))
        assert page.sum_num == 19
        nums.append(page.num)
        rig.respond(msg, 200, transport="tcp")
    assert nums == [8, 8, 3]
    assert rig.take(ev.UpperCatalogSent) == [ev.UpperCatalogSent(PID, 9, 19, 19, None)]


def test_catalog_stops_at_a_failed_message():
    rig = Rig()
    rig.register()
    rig.server.uppers.answer_catalog(PID, 12, entries()[:3], rig.now)
    [m1] = rig.sent("MESSAGE")
    rig.respond(m1, 200)
    [m2] = rig.sent("MESSAGE")
    rig.respond(m2, 500)
    assert rig.sent("MESSAGE") == []
    [done] = rig.take(ev.UpperCatalogSent)
    assert (done.sent, done.total) == (1, 3) and "500" in done.error
    # a timeout stops it too
    rig.server.uppers.answer_catalog(PID, 13, entries()[:2], rig.now)
    rig.sent("MESSAGE")
    rig.advance(rig.now + 40)
    [done] = rig.take(ev.UpperCatalogSent)
    assert (done.sent, done.total) == (0, 2) and "no answer" in done.error


def test_empty_catalog_is_sumnum_zero():
    rig = Rig()
    rig.register()
    rig.server.uppers.answer_catalog(PID, 14, [], rig.now)
    [msg] = rig.sent("MESSAGE")
    page = manscdp.as_catalog(body_of(msg))
    assert page.sum_num == 0 and page.items == []
    rig.respond(msg, 200)
    assert rig.take(ev.UpperCatalogSent) == [ev.UpperCatalogSent(PID, 14, 0, 0, None)]


# ================================================================================== subscriptions
def subscribe(rig: Rig, expires: int = 600, to_tag: str | None = None, call_id: str = "sub1@upper", sn: int = 31):
    rig.request("SUBSCRIBE", manscdp.build_query("Catalog", sn, LOCAL_ID), call_id=call_id, to_tag=to_tag,
                cseq=sn, headers=(("Event", f"Catalog;id={sn}"), ("Expires", str(expires))))
    [ok] = rig.sent("")
    return ok


def change(i: int, event: str = "OFF") -> CatalogEntry:
    return CatalogEntry(f"340200000013100{i:05d}", f"通道{i}", "channel", parent_id=LOCAL_ID, event=event)


def test_catalog_subscribe_notify_batching_by_count_and_by_time():
    rig = Rig(cascade_notify_batch=3, cascade_notify_interval=60.0)
    rig.register()
    ok = subscribe(rig)
    assert ok.status == 200 and ok.headers.get("Expires") == "600" and ok.to_tag
    assert body_of(ok).get("Result") == "OK"
    assert rig.take(ev.UpperCatalogSubscribed) == [ev.UpperCatalogSubscribed(PID, 31, 600)]
    up = rig.server.uppers
    up.notify_catalog(PID, [change(1), change(2)], rig.now)
    assert rig.sent("NOTIFY") == []
    up.notify_catalog(PID, [change(3, "ADD")], rig.now)
    [notify] = rig.sent("NOTIFY")
    assert notify.call_id == "sub1@upper" and notify.headers.get("Event") == "Catalog;id=31"
    assert notify.headers.get("Subscription-State").startswith("active;expires=")
    assert f";tag={ok.to_tag}" in notify.headers.get("From") and "tag=uptag" in notify.headers.get("To")
    page = manscdp.as_catalog(body_of(notify))
    assert page.is_notify and page.sum_num == 3 and page.device_id == LOCAL_ID
    assert [(i.device_id, i.event) for i in page.items][-1] == ("34020000001310000003", "ADD")
    assert page.items[0].name is None and page.items[2].name == "通道3"  # OFF: id and event; ADD: the full item
    rig.respond(notify, 200)
    # by time: one change waits for the interval
    rig.advance(rig.now + 10)
    up.notify_catalog(PID, [change(4, "ON")], rig.now)
    rig.advance(rig.now + 59)
    assert rig.sent("NOTIFY") == []
    rig.advance(rig.now + 1.5)
    [late] = rig.sent("NOTIFY")
    assert [(i.device_id, i.event) for i in manscdp.as_catalog(body_of(late)).items] == [
        ("34020000001310000004", "ON")]
    assert late.cseq[0] == notify.cseq[0] + 1
    # the initial NOTIFY of offline items goes at once
    up.notify_catalog(PID, [change(5)], rig.now, immediate=True)
    [initial] = rig.sent("NOTIFY")
    assert [i.device_id for i in manscdp.as_catalog(body_of(initial)).items] == ["34020000001310000005"]


def test_subscription_refresh_unsubscribe_and_expiry():
    rig = Rig()
    rig.register()
    ok = subscribe(rig, 600)
    rig.take()
    rig.advance(500)
    refreshed = subscribe(rig, 600, to_tag=ok.to_tag, sn=32)
    assert refreshed.status == 200 and refreshed.to_tag == ok.to_tag
    assert rig.take(ev.UpperCatalogSubscribed) == []
    rig.advance(700)  # would have lapsed at 600 without the refresh
    assert rig.sent("NOTIFY") == []
    subscribe(rig, 0, to_tag=ok.to_tag, sn=33)
    [bye] = rig.sent("NOTIFY")
    assert bye.headers.get("Subscription-State").startswith("terminated")
    assert rig.take(ev.UpperCatalogSubscribed) == [ev.UpperCatalogSubscribed(PID, 31, 0)]
    # a new one lapses when not refreshed
    subscribe(rig, 60, call_id="sub2@upper", sn=40)
    rig.take()
    rig.advance(rig.now + 61)
    [ended] = rig.sent("NOTIFY")
    assert ended.headers.get("Subscription-State") == "terminated;reason=timeout"
    assert rig.take(ev.UpperCatalogSubscribed) == [ev.UpperCatalogSubscribed(PID, 40, 0)]


def test_changes_without_a_subscription_are_dropped_or_pushed():
    rig = Rig(cascade_notify_batch=1)
    rig.register()
    rig.server.uppers.notify_catalog(PID, [change(1)], rig.now)
    assert rig.sent() == []
    rig = Rig(cascade_notify_batch=1, cascade_push_unsubscribed=True)
    rig.register()
    rig.server.uppers.notify_catalog(PID, [change(1)], rig.now)
    [msg] = rig.sent("MESSAGE")
    body = body_of(msg)
    assert (body.root, body.cmd_type, body.device_id) == ("Notify", "Catalog", LOCAL_ID)


def test_alarm_and_position_subscriptions_are_accepted():
    rig = Rig()
    rig.register()
    for cmd in ("Alarm", "MobilePosition"):
        rig.request("SUBSCRIBE", manscdp.build_query(cmd, 50, LOCAL_ID), call_id=f"{cmd}@upper",
                    headers=(("Event", "presence"), ("Expires", "3600")))
        [ok] = rig.sent("")
        assert ok.status == 200 and ok.headers.get("Expires") == "3600"
        assert body_of(ok).cmd_type == cmd and body_of(ok).get("Result") == "OK"


def test_positions_and_alarms_go_in_the_uppers_subscriptions():
    rig = Rig()
    rig.register()
    pos = manscdp.MobilePosition("34020000001320000001", 1, "2026-03-01T08:00:00", 118.1, 24.5, 30.0, 90.0, None)
    up = rig.server.uppers
    assert not up.send_position(PID, "34020000001310009999", pos, rig.now)  # no subscription: nothing sent
    assert rig.sent("NOTIFY") == [] and rig.sent("MESSAGE") == []
    for cmd, sn in (("MobilePosition", 50), ("Alarm", 51)):
        rig.request("SUBSCRIBE", manscdp.build_query(cmd, sn, LOCAL_ID), call_id=f"{cmd}@upper", cseq=sn,
                    headers=(("Event", "presence"), ("Expires", "60")))
        [ok] = rig.sent("")
        assert ok.status == 200
    assert up.send_position(PID, "34020000001310009999", pos, rig.now)
    [n] = rig.sent("NOTIFY")
    assert n.headers.get("Call-ID") == "MobilePosition@upper" and n.headers.get("Event") == "presence"
    got = manscdp.as_mobile_position(body_of(n))
    assert (got.device_id, got.longitude, got.latitude) == ("34020000001310009999", 118.1, 24.5)
    alarm = manscdp.Alarm("34020000001340000001", 5, 1, 5, "2026-03-01T08:00:00", "越界", None, None, None)
    assert up.send_alarm(PID, "34020000001310009998", alarm, rig.now)
    [n] = rig.sent("NOTIFY")  # in the alarm subscription's dialog, not a MESSAGE
    assert n.headers.get("Call-ID") == "Alarm@upper" and manscdp.as_alarm(body_of(n)).alarm_priority == 1
    assert rig.sent("MESSAGE") == []
    rig.advance(rig.now + 61)  # not refreshed: both end
    assert {m.headers.get("Call-ID") for m in rig.sent("NOTIFY")} == {"MobilePosition@upper", "Alarm@upper"}
    assert not up.send_position(PID, "34020000001310009999", pos, rig.now)
    assert up.send_alarm(PID, "34020000001310009998", alarm, rig.now)
    assert len(rig.sent("MESSAGE")) == 1  # back to MESSAGE without a subscription


# ================================================================================== queries and control
def test_device_queries_and_control_and_their_answers():
    rig = Rig()
    rig.register()
    channel = "34020000001310000001"
    for cmd in ("DeviceInfo", "DeviceStatus", "RecordInfo"):
        rig.request("MESSAGE", manscdp.build_query(cmd, 60, channel))
        assert rig.sent("")[0].status == 200
        [q] = rig.take(ev.UpperDeviceQuery)
        assert (q.platform_id, q.sn, q.cmd_type, q.device_id) == (PID, 60, cmd, channel)
    rig.request("MESSAGE", manscdp.build_device_control(61, channel, "PTZCmd", "A50F010800FA00B7"))
    assert rig.sent("")[0].status == 200
    [ctl] = rig.take(ev.UpperControl)
    assert (ctl.sn, ctl.target_id, ctl.message.get("PTZCmd")) == (61, channel, "A50F010800FA00B7")
    up = rig.server.uppers
    up.answer_control(PID, 61, channel, True, rig.now)
    [m] = rig.sent("MESSAGE")
    assert manscdp.as_control_result(body_of(m)).result == "OK"
    up.answer_device_info(PID, 60, channel, {"DeviceName": f"东门{KUN}", "Manufacturer": "gbops"}, rig.now)
    [m] = rig.sent("MESSAGE")
    info = manscdp.as_device_info(body_of(m))
    assert (info.result, info.device_name, info.manufacturer) == ("OK", f"东门{KUN}", "gbops")
    up.answer_device_status(PID, 60, channel, {"Online": "ONLINE", "Status": "OK"}, rig.now)
    [m] = rig.sent("MESSAGE")
    assert manscdp.as_device_status(body_of(m)).online is True
    records = [{"DeviceID": channel, "Name": "rec", "StartTime": f"2025-03-01T0{i}:00:00",
                "EndTime": f"2025-03-01T0{i}:30:00", "Type": "time"} for i in range(3)]
    up.answer_record_info(PID, 60, channel, "东门", records, rig.now)
    pages = []
    for _ in range(3):
        [m] = rig.sent("MESSAGE")
        pages.append(manscdp.as_record_info(body_of(m)))
        rig.respond(m, 200)
    assert [p.sum_num for p in pages] == [3, 3, 3] and [len(p.items) for p in pages] == [1, 1, 1]
    assert pages[2].items[0].start_time == "2025-03-01T02:00:00"


def test_teleboot_from_the_upper_is_refused_with_403():
    """An upper platform never reboots our devices: 403 on the wire, and the event still reaches the cascade
    layer so the refusal is evidence."""
    rig = Rig()
    rig.register()
    channel = "34020000001310000001"
    rig.request("MESSAGE", manscdp.build_device_control(62, channel, "TeleBoot", "Boot"))
    assert rig.sent("")[0].status == 403
    [ctl] = rig.take(ev.UpperControl)
    assert (ctl.sn, ctl.target_id, ctl.message.get("TeleBoot")) == (62, channel, "Boot")


def test_alarm_forwarded_to_a_registered_upper_with_its_id_and_charset():
    rig = Rig()
    alarm = manscdp.Alarm("34020000001340000001", 5, 1, 5, "2026-03-01T08:00:00", f"周界{KUN}越界", 118.1, 24.5, 2)
    assert not rig.server.uppers.send_alarm(PID, "34020000001310009999", alarm, rig.now)  # not registered yet
    rig.register()
    assert rig.server.uppers.send_alarm(PID, "34020000001310009999", alarm, rig.now)
    [m] = rig.sent("MESSAGE")
    got = manscdp.as_alarm(body_of(m))
    assert (got.device_id, got.alarm_priority, got.alarm_method, got.alarm_time, got.alarm_description) == (
        "34020000001310009999", 1, 5, "2026-03-01T08:00:00", f"周界{KUN}越界")
    assert got.alarm_type == 2


def test_bad_manscdp_from_the_upper_is_400():
    rig = Rig()
    rig.register()
    rig.request("MESSAGE", b"<Query><CmdType>Catalog</CmdType></Query>")
    assert rig.sent("")[0].status == 400
    assert rig.take(ev.MessageRejected)


# ================================================================================== calls from the upper
CHANNEL = "34020000001310000001"


def offer_sdp(*, session="Play", proto="RTP/AVP", setup=None, t="0 0", uri=None, speed=None, ssrc="0100000001") -> bytes:
    lines = ["v=0", f"o={UPPER_ID} 0 0 IN IP4 198.51.100.8", f"s={session}"]
    if uri:
        lines.append(f"u={uri}")
    lines += ["c=IN IP4 198.51.100.8", f"t={t}", f"m=video 40000 {proto} 96 97 98", "a=recvonly",
              "a=rtpmap:96 PS/90000"]
    if setup:
        lines += [f"a=setup:{setup}", "a=connection:new"]
    if speed:
        lines.append(f"a=downloadspeed:{speed}")
    lines.append(f"y={ssrc}")
    return ("\r\n".join(lines) + "\r\n").encode()


def invite(rig: Rig, body: bytes, call_id: str = "call1@upper", subject: str = f"{CHANNEL}:0100000001,{UPPER_ID}:0"):
    rig.request("INVITE", body, call_id=call_id, headers=(("Subject", subject),), content_type="application/sdp",
                uri=f"sip:{CHANNEL}@192.0.2.10:5060")
    [trying] = rig.sent("")
    assert trying.status == 100
    [inv] = rig.take(ev.UpperInvite)
    return inv


@pytest.mark.parametrize("kind,body,expect", [
    ("udp live", offer_sdp(), UpperOffer("Play", "198.51.100.8", 40000, "udp", None, "0100000001", None, None, None,
                                         None, (96, 97, 98))),
    ("tcp active playback", offer_sdp(session="Playback", proto="TCP/RTP/AVP", setup="active", t="1735689600 1735693200",
                                      uri=f"{CHANNEL}:0", ssrc="1100000002"),
     UpperOffer("Playback", "198.51.100.8", 40000, "tcp", "active", "1100000002", 1735689600, 1735693200, None,
                f"{CHANNEL}:0", (96, 97, 98))),
    ("tcp passive download", offer_sdp(session="Download", proto="TCP/RTP/AVP", setup="passive",
                                       t="1735689600 1735693200", uri=f"{CHANNEL}:0", speed=4, ssrc="1100000003"),
     UpperOffer("Download", "198.51.100.8", 40000, "tcp", "passive", "1100000003", 1735689600, 1735693200, 4,
                f"{CHANNEL}:0", (96, 97, 98))),
])
def test_invite_offers_are_parsed(kind, body, expect):
    rig = Rig()
    rig.register()
    inv = invite(rig, body)
    assert inv.offer == expect and inv.target_id == CHANNEL and inv.platform_id == PID
    assert rig.server.uppers.status(PID)["calls"] == 1


def test_unusable_offer_is_refused():
    rig = Rig()
    rig.register()
    rig.request("INVITE", offer_sdp(session="Playback"), call_id="bad@upper", content_type="application/sdp")
    assert rig.sent("")[0].status == 488  # a playback without a window
    assert rig.take(ev.UpperInvite) == []


def answered_call(rig: Rig, transport="tcp", setup="passive"):
    rig.register()
    inv = invite(rig, offer_sdp(proto="TCP/RTP/AVP" if transport == "tcp" else "RTP/AVP",
                                setup="active" if transport == "tcp" else None))
    rig.server.uppers.answer_invite(inv.call_id, 200, UpperAnswer("192.0.2.10", 30000, "0000000077", transport,
                                                                  setup if transport == "tcp" else None), None, rig.now)
    [ok] = rig.sent("")
    return inv, ok


def test_answer_sdp_and_ack():
    rig = Rig()
    inv, ok = answered_call(rig)
    assert ok.status == 200 and ok.to_tag and ok.headers.get("Contact") == f"<sip:{LOCAL_ID}@192.0.2.10:5060>"
    sdp = parse_sdp(ok.body)
    assert sdp.origin.split()[0] == LOCAL_ID and sdp.session_name == "Play" and sdp.time == "0 0"
    assert sdp.media_address() == ("192.0.2.10", 30000) and sdp.ssrc == "0000000077" and sdp.media_format == ""
    v = sdp.video
    assert v.proto == "TCP/RTP/AVP" and v.formats == ["96"] and v.direction == "sendonly"
    assert ("rtpmap", "96 PS/90000") in v.attrs and v.setup == "passive" and ("connection", "new") in v.attrs
    assert b"f=\r\n" in ok.body
    rig.request("ACK", call_id=inv.call_id, to_tag=ok.to_tag, branch="z9hG4bKack1")
    assert rig.take(ev.UpperAck) == [ev.UpperAck(PID, inv.call_id)]


def test_playback_answer_echoes_the_window_over_udp():
    rig = Rig()
    rig.register()
    inv = invite(rig, offer_sdp(session="Playback", t="1735689600 1735693200", uri=f"{CHANNEL}:0"))
    rig.server.uppers.answer_invite(inv.call_id, 200, UpperAnswer("192.0.2.10", 30002, "1000000001", "udp", None),
                                    None, rig.now)
    [ok] = rig.sent("")
    sdp = parse_sdp(ok.body)
    assert sdp.session_name == "Playback" and sdp.time == "1735689600 1735693200" and sdp.video.proto == "RTP/AVP"
    assert sdp.video.setup is None


def test_no_ack_in_time_ends_the_call():
    rig = Rig()
    inv, ok = answered_call(rig, "udp")
    rig.advance(rig.now + 33)
    [bye] = rig.sent("BYE")
    assert bye.call_id == inv.call_id and f"tag={ok.to_tag}" in bye.headers.get("From")
    assert rig.take(ev.UpperBye) == [ev.UpperBye(PID, inv.call_id, "no ACK")]
    assert rig.server.uppers.status(PID)["calls"] == 0


def test_bye_from_the_upper():
    rig = Rig()
    inv, ok = answered_call(rig)
    rig.request("ACK", call_id=inv.call_id, to_tag=ok.to_tag)
    rig.request("BYE", call_id=inv.call_id, to_tag=ok.to_tag, cseq=2)
    [done] = rig.sent("")
    assert done.status == 200
    [bye] = rig.take(ev.UpperBye)
    assert bye.call_id == inv.call_id and "BYE" in bye.reason


def test_our_bye_goes_in_the_dialog():
    rig = Rig()
    inv, ok = answered_call(rig)
    rig.request("ACK", call_id=inv.call_id, to_tag=ok.to_tag)
    rig.server.uppers.bye(inv.call_id, rig.now, "media lost")
    [(bye, out)] = rig.sent_with_transport()
    assert bye.method == "BYE" and out.addr == UPPER
    assert bye.uri == f"sip:{UPPER_ID}@{UPPER[0]}:{UPPER[1]}"  # the upper's Contact
    assert f"tag={ok.to_tag}" in bye.headers.get("From") and "tag=uptag" in bye.headers.get("To")
    assert rig.take(ev.UpperBye) == [] and rig.server.uppers.status(PID)["calls"] == 0


def test_cancel_before_the_answer():
    rig = Rig()
    rig.register()
    data = rig.request("INVITE", offer_sdp(), call_id="c9@upper", content_type="application/sdp",
                       headers=(("Subject", f"{CHANNEL}:1,{UPPER_ID}:0"),))
    rig.sent("")
    [inv] = rig.take(ev.UpperInvite)
    rig.feed(make_cancel(parse_message(data)).to_bytes())
    statuses = sorted(r.status for r in rig.sent(""))
    assert statuses == [200, 487]
    assert rig.take(ev.UpperBye) == [ev.UpperBye(PID, inv.call_id, "上级取消 / cancelled by the upper")]
    # the answer that comes too late sends nothing
    rig.server.uppers.answer_invite(inv.call_id, 200, UpperAnswer("192.0.2.10", 1, "1", "udp", None), None, rig.now)
    assert rig.sent() == []


def test_info_in_the_call_and_a_spoofed_bye():
    rig = Rig()
    inv, ok = answered_call(rig)
    rig.request("ACK", call_id=inv.call_id, to_tag=ok.to_tag)
    rtsp = b"PAUSE RTSP/1.0\r\nCSeq: 1\r\nPauseTime: now\r\n"
    rig.request("INFO", rtsp, call_id=inv.call_id, to_tag=ok.to_tag, cseq=2, content_type="Application/MANSRTSP")
    assert rig.sent("")[0].status == 200
    assert rig.take(ev.UpperInfo) == [ev.UpperInfo(PID, inv.call_id, rtsp)]
    rig.request("BYE", call_id=inv.call_id, to_tag=ok.to_tag, cseq=3, addr=("203.0.113.9", 5060))
    assert rig.sent("")[0].status == 403
    assert rig.take(ev.UpperBye) == [] and rig.server.uppers.status(PID)["calls"] == 1


def test_error_answer_and_media_status():
    rig = Rig()
    rig.register()
    inv = invite(rig, offer_sdp())
    rig.server.uppers.answer_invite(inv.call_id, 404, None, "未共享的通道 / channel not shared", rig.now)
    [nf] = rig.sent("")
    assert nf.status == 404 and rig.server.uppers.status(PID)["calls"] == 0
    inv2 = invite(rig, offer_sdp(session="Download", t="1 100", uri=f"{CHANNEL}:0"), call_id="dl@upper")
    rig.server.uppers.answer_invite(inv2.call_id, 200, UpperAnswer("192.0.2.10", 30004, "1000000004", "udp", None),
                                    None, rig.now)
    rig.sent("")
    assert rig.server.uppers.media_status(inv2.call_id, rig.now)
    [m] = rig.sent("MESSAGE")
    assert m.call_id == inv2.call_id and body_of(m).get("NotifyType") == "121" and body_of(m).device_id == CHANNEL


# ================================================================================== reconfiguration
def test_removing_an_upper_unregisters_and_ends_its_calls():
    rig = Rig()
    inv, ok = answered_call(rig)
    rig.states()
    rig.server.uppers.configure([], rig.now)
    sent = rig.sent()
    [unreg] = [m for m in sent if m.is_request and m.method == "REGISTER"]
    assert unreg.headers.get("Expires") == "0" and unreg.headers.get("Authorization")
    assert [m.call_id for m in sent if m.is_request and m.method == "BYE"] == [inv.call_id]
    assert rig.states() == ["disabled"] and rig.server.uppers.status(PID) is None
    # a changed one registers again
    rig.configure(upper_config())
    rig.sent()
    rig.configure(upper_config(keepalive_s=30))
    assert len(rig.sent("REGISTER")) == 1  # a new registration (the old one was never registered)


# ================================================================================== fuzz

_SDP_LINES = st.sampled_from([
    "v=0", "o=x 0 0 IN IP4 1.2.3.4", "s=Play", "s=Playback", "s=Download", "s=", "c=IN IP4 1.2.3.4", "c=IN IP9",
    "t=0 0", "t=5 1", "t=1 9", "t=a b", "m=video 40000 RTP/AVP 96", "m=video 0 TCP/RTP/AVP 96",
    "m=video 9 TCP/RTP/AVP x", "a=setup:active", "a=setup:actpass", "a=downloadspeed:4", "a=downloadspeed:x",
    "y=0100000001", "y=abc", "y=", "u=34020000001310000001:0", "f=", "m=audio 1 RTP/AVP 8",
])


@settings(max_examples=300, deadline=None)
@given(st.lists(_SDP_LINES | st.text(max_size=30), max_size=14))
def test_parse_offer_only_raises_offer_error(lines):
    try:
        offer = parse_offer("\r\n".join(lines).encode("utf-8", "surrogatepass"))
    except OfferError as exc:
        assert exc.status in (400, 488)
    else:
        assert offer.session in ("Play", "Playback", "Download") and 0 < offer.port <= 65535
        assert offer.transport in ("udp", "tcp") and offer.payloads


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_parse_offer_on_bytes(data):
    try:
        parse_offer(data)
    except OfferError:
        pass
