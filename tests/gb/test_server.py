"""The GB/T 28181 core (sans-IO) fed with real devices' bytes from ../shared/vectors/sip."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sip_server.gb import events as ev
from sip_server.gb import manscdp
from sip_server.gb.server import GbConfig, GbServer
from sip_server.sip import SipEndpoint, build_authorization, compute_ha1, parse_message

PASSWORD = "Gate-7-camera#pw"
DEV = "34020000001320000001"
ADDR = ("192.168.1.64", 5060)


def make_server(**cfg) -> GbServer:
    config = GbConfig(default_password=PASSWORD, **cfg)
    return GbServer(config, SipEndpoint(), secret=b"k" * 32, wall_clock=lambda: 1_700_000_000.0)


def feed(server: GbServer, data: bytes, addr=ADDR, now: float = 0.0, transport: str = "udp"):
    server.receive_datagram(data, addr, now, transport)
    out = [parse_message(o.data) for o in server.endpoint.messages_to_send()]
    events = []
    while (e := server.next_event()) is not None:
        events.append(e)
    return out, events


def register_bytes(dev: str, cseq: int = 1, authz: str | None = None, expires: int = 3600,
                   call_id: str = "c1@dev", branch: str | None = None) -> bytes:
    branch = branch or "z9hG4bK" + call_id.replace("@", "-")
    lines = [
        "REGISTER sip:34020000002000000001@3402000000 SIP/2.0",
        f"Via: SIP/2.0/UDP {ADDR[0]}:{ADDR[1]};rport;branch={branch}{cseq}",
        f"From: <sip:{dev}@3402000000>;tag=f1",
        f"To: <sip:{dev}@3402000000>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        f"Contact: <sip:{dev}@{ADDR[0]}:{ADDR[1]}>",
        f"Expires: {expires}",
    ]
    if authz:
        lines.append(f"Authorization: {authz}")
    return ("\r\n".join(lines + ["Content-Length: 0", "", ""])).encode()


def register(server: GbServer, dev: str = DEV, password: str = PASSWORD, now: float = 0.0, expires: int = 3600,
             call_id: str = "c1@dev"):
    [challenge], _ = feed(server, register_bytes(dev, 1, expires=expires, call_id=call_id), now=now)
    assert challenge.status == 401
    authz = build_authorization(challenge.headers.get("WWW-Authenticate"), method="REGISTER",
                                uri="sip:34020000002000000001@3402000000", username=dev, password=password,
                                cnonce="0a4f113b")
    return feed(server, register_bytes(dev, 2, authz, expires=expires, call_id=call_id), now=now)


def vector(sip_vectors: Path, name: str) -> bytes:
    return (sip_vectors / name).read_bytes()


def message_bytes(dev: str, body: bytes, cseq: int = 20, branch: str = "z9hG4bKm") -> bytes:
    head = (f"MESSAGE sip:34020000002000000001@3402000000 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {ADDR[0]}:{ADDR[1]};rport;branch={branch}{cseq}\r\n"
            f"From: <sip:{dev}@3402000000>;tag=m{cseq}\r\nTo: <sip:34020000002000000001@3402000000>\r\n"
            f"Call-ID: m{cseq}@dev\r\nCSeq: {cseq} MESSAGE\r\nContent-Type: Application/MANSCDP+xml\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    return head + body


# ------------------------------------------------------------------------------------------ registrar
@pytest.mark.parametrize("name", [
    "dahua_sd6c3230_register_noauth.sip",
    "hikvision_ipc_register_noauth.sip",
    "happytime_gb28181sim_register_noauth.sip",
    "dahua_nvr_register_sorted_headers.sip",
    "dahua_ipc_register_route_nat_rewrite.sip",
])
def test_real_first_register_gets_an_md5_challenge(sip_vectors, name):
    server = make_server()
    [resp], events = feed(server, vector(sip_vectors, name))
    assert resp.status == 401
    challenge = resp.headers.get("WWW-Authenticate")
    assert challenge.startswith("Digest ") and "algorithm=MD5" in challenge and 'qop="auth"' in challenge
    assert 'realm="3402000000"' in challenge
    # the response goes back to the source address, whatever Via/Contact say (NAT)
    assert events == []


@pytest.mark.parametrize("name", [
    "dahua_sd6c3230_register_auth_realm8digit.sip",
    "hikvision_18digit_register_auth_opaque.sip",
    "hikvision_18digit_unregister_auth.sip",
])
def test_real_authorization_with_a_nonce_we_never_issued_is_refused(sip_vectors, name):
    server = make_server()
    [resp], events = feed(server, vector(sip_vectors, name))
    assert resp.status == 403
    [rejected] = events
    assert isinstance(rejected, ev.RegisterRejected) and rejected.status == 403
    assert server.metrics.auth_failures == 1


def test_register_with_digest_goes_online_with_gb_date_and_queries():
    server = make_server()
    out, events = register(server)
    ok, *queries = out
    assert ok.status == 200
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}", ok.headers.get("Date"))
    assert ok.headers.get("Expires") == "3600"
    [online] = events
    assert isinstance(online, ev.DeviceOnline) and online.transition and online.remote_addr == ADDR
    cmds = [(q.method, manscdp.parse(q.body).cmd_type) for q in queries]
    assert cmds == [("MESSAGE", "DeviceInfo"), ("MESSAGE", "ConfigDownload"), ("MESSAGE", "Catalog"),
                    ("SUBSCRIBE", "Catalog")]
    for q in queries:
        assert q.uri == f"sip:{DEV}@{ADDR[0]}:{ADDR[1]}"
        assert q.headers.get("Content-Type") == "Application/MANSCDP+xml"


def test_refresh_is_not_a_transition_and_does_not_requery():
    server = make_server()
    register(server)
    out, events = register(server, now=100.0, call_id="c2@dev")
    assert [m.status for m in out] == [200]
    assert [type(e) for e in events] == [ev.DeviceOnline] and not events[0].transition


def test_wrong_password_403_and_lockout_after_five_failures():
    server = make_server()
    for i in range(5):
        out, events = register(server, password="Wrong-pass#1", now=float(i), call_id=f"w{i}")
        assert out[0].status == 403 and not events[0].locked_out
    out, events = register(server, password="Wrong-pass#1", now=6.0, call_id="w6")
    assert out[0].status == 403 and events[0].locked_out
    # locked: even the right password is refused, without a challenge
    [resp], events = feed(server, register_bytes(DEV, 1, call_id="ok1"), now=7.0)
    assert resp.status == 403 and "locked" in resp.reason.lower()
    assert server.metrics.lockouts == 1
    # ten minutes later it works again
    out, _ = register(server, now=7.0 + 601, call_id="ok2")
    assert out[0].status == 200


def test_address_lockout_spares_devices_already_online_behind_the_same_nat():
    server = make_server()
    register(server, dev="34020000001320000002")
    for i in range(6):
        register(server, dev="34020000001320000099", password="Wrong-pass#1", now=float(i), call_id=f"x{i}")
    out, _ = register(server, dev="34020000001320000002", now=10.0, call_id="r2")
    assert out[0].status == 200  # refresh of a live registration from the locked address
    [resp], _ = feed(server, register_bytes("34020000001320000003", 1, call_id="n3"), now=11.0)
    assert resp.status == 403  # a new device from the locked address waits


def test_unknown_devices_refused_when_setting_says_so():
    server = make_server(allow_unknown=False)
    [resp], events = feed(server, register_bytes(DEV))
    assert resp.status == 403 and events[0].reason == "unknown device"
    server.set_device_credentials(DEV, None)
    out, _ = register(server, call_id="c2@dev")
    assert out[0].status == 200


def test_per_device_password_overrides_the_default():
    server = make_server()
    own = "Own-device-pw#9"
    server.set_device_credentials(DEV, {"MD5": compute_ha1(DEV, "3402000000", own)})
    assert register(server)[0][0].status == 403
    assert register(server, password=own, now=1, call_id="c9")[0][0].status == 200


def test_unregister_goes_offline_once():
    server = make_server()
    register(server)
    out, events = register(server, expires=0, now=5.0, call_id="u1")
    assert out[0].status == 200 and events == [ev.DeviceOffline(DEV, "unregistered")]


def test_too_short_expiry_gets_423():
    server = make_server()
    out, events = register(server, expires=10)
    assert out[0].status == 423 and out[0].headers.get("Min-Expires") == "60" and events == []


# ------------------------------------------------------------------------------------------ keepalive
@pytest.mark.parametrize("name,device", [
    ("dahua_sd6c3230_keepalive.sip", None),
    ("dahua_ipc_hfw4150d_keepalive.sip", None),
    ("hikvision_ipc_keepalive_gb2312_empty_info.sip", None),
    ("hikvision_ipc_keepalive_utf8_empty_info.sip", None),
    ("happytime_gb28181sim_keepalive_via_no_branch.sip", None),
])
def test_real_keepalives(sip_vectors, name, device):
    data = vector(sip_vectors, name)
    msg = parse_message(data)
    dev = manscdp.parse(msg.body).device_id
    from_user = re.search(rb"From:\s*<sip:(\w+)@", data).group(1).decode()
    # from a device that is not registered: refused, so that it registers again
    [resp], events = feed(make_server(), data)
    assert resp.status == 403 and isinstance(events[0], ev.MessageRejected)
    server = make_server()
    register(server, dev=from_user)
    server.endpoint.messages_to_send()
    [resp], events = feed(server, data, now=30.0)
    assert resp.status == 200
    [ka] = events
    assert isinstance(ka, ev.DeviceKeepalive) and ka.device_id in (from_user, dev)
    assert server.presence.get(from_user).last_seen == 30.0


def test_keepalive_timeout_after_three_intervals():
    server = make_server(keepalive_interval=60)
    register(server)
    server.handle_timer(179.0)
    assert not [e for e in iter(server.next_event, None) if isinstance(e, ev.DeviceOffline)]
    server.handle_timer(180.0)
    assert [e for e in iter(server.next_event, None) if isinstance(e, ev.DeviceOffline)] == [
        ev.DeviceOffline(DEV, "keepalive_timeout")]


def test_malformed_manscdp_gets_400_and_no_crash():
    server = make_server()
    register(server)
    [resp], events = feed(server, message_bytes(DEV, b"<Notify><CmdType>Keepalive</CmdType><SN>x</SN"), now=1)
    assert resp.status == 400 and isinstance(events[0], ev.MessageRejected)


def test_final_notify_without_a_body_is_accepted():
    """RFC 6665: the NOTIFY that ends a subscription may carry no body (a lower platform shutting down sends
    one); it is answered 200, not refused as bad MANSCDP."""
    server = make_server()
    register(server)

    def notify(state: str, cseq: int) -> bytes:
        data = message_bytes(DEV, b"", cseq=cseq).replace(b"MESSAGE sip:", b"NOTIFY sip:", 1).replace(
            f"CSeq: {cseq} MESSAGE".encode(), f"CSeq: {cseq} NOTIFY".encode())
        return data.replace(b"Content-Length: 0", f"Subscription-State: {state}\r\nContent-Length: 0".encode())

    [resp], events = feed(server, notify("terminated;reason=noresource", 70), now=1)
    assert resp.status == 200 and not any(isinstance(e, ev.MessageRejected) for e in events)
    [resp], events = feed(server, notify("active;expires=600", 71), now=2)
    assert resp.status == 400  # an active NOTIFY still needs its body


# ------------------------------------------------------------------------------------------ queries
def body_of(sip_vectors, name) -> bytes:
    return parse_message(vector(sip_vectors, name)).body


def test_catalog_response_vector_completes_sync(sip_vectors):
    server = make_server()
    register(server, dev="34020000001320000001")
    data = vector(sip_vectors, "hikvision_ipc_catalog_response_civilcode10.sip")
    msg = parse_message(data)
    from_user = re.search(rb"From:\s*<sip:(\w+)@", data).group(1).decode()
    server.catalog.start(from_user, manscdp.parse(msg.body).sn, 0.0)
    register(server, dev=from_user, call_id="c-cat@dev")  # from ADDR: the catalog answer is believed from there
    server.endpoint.messages_to_send()
    out, events = feed(server, data, now=1.0)
    assert out[0].status == 200
    [done] = [e for e in events if isinstance(e, ev.CatalogFinished)]
    assert done.complete and len(done.items) == 1


def test_nvr_catalog_one_item_per_message_stays_partial_on_timeout(sip_vectors):
    nvr = "34020000001180000001"
    server = make_server()
    register(server, dev=nvr)
    sn = 4
    server.catalog.start(nvr, sn, 0.0)
    names = []
    for i, name in enumerate(["dahua_nvr_catalog_response_body_sn4_item2_rtsp_ipaddress.xml",
                              "dahua_nvr_catalog_response_body_sn4_item4.xml"]):
        out, events = feed(server, message_bytes(nvr, vector(sip_vectors, name), cseq=30 + i), now=1.0 + i)
        assert out[0].status == 200
        [progress] = events
        assert isinstance(progress, ev.CatalogProgress) and progress.progress["received"] == i + 1
        assert progress.progress["expected"] == 4
    server.handle_timer(100.0)
    finished = [e for e in iter(server.next_event, None) if isinstance(e, ev.CatalogFinished)]
    assert len(finished) == 1 and not finished[0].complete and "partial 2/4" in finished[0].state
    names = sorted(i.name for i in finished[0].items)
    assert "1.64 海康摄像机" in names


def test_device_info_and_status_answers_match_pending_queries(sip_vectors):
    dev = "34020000001320000001"
    server = make_server()
    out, _ = register(server, dev=dev)
    queries = {manscdp.parse(q.body).cmd_type: manscdp.parse(q.body).sn for q in out[1:]}
    info = manscdp.build_device_info_response(queries["DeviceInfo"], dev, device_name="东门 IPC",
                                              manufacturer="Hikvision", model="DS-2CD", firmware="V5.5",
                                              channel=1)
    out, events = feed(server, message_bytes(dev, info, cseq=40), now=1.0)
    assert out[0].status == 200
    got = [e for e in events if isinstance(e, ev.DeviceInfoReceived)]
    assert got and got[0].info.device_name == "东门 IPC"
    sn = server.query(dev, "DeviceStatus", 2.0)
    status = manscdp.build_device_status_response(sn, dev, device_time="2026-11-21T10:00:00")
    _, events = feed(server, message_bytes(dev, status, cseq=41), now=3.0)
    answered = [e for e in events if isinstance(e, ev.QueryAnswered)]
    assert answered and answered[0].cmd_type == "DeviceStatus" and answered[0].result.online is True


def test_query_without_answer_fails_after_timeout():
    server = make_server(query_timeout=5)
    register(server)
    sn = server.query(DEV, "DeviceStatus", 1.0)
    server.handle_timer(7.0)
    failed = [e for e in iter(server.next_event, None) if isinstance(e, ev.QueryFailed)]
    assert any(f.sn == sn and f.reason == "timeout" for f in failed)


def test_heartbeat_interval_from_config_download_sets_the_timeout():
    server = make_server(keepalive_interval=60)
    out, _ = register(server)
    sn = {manscdp.parse(q.body).cmd_type: manscdp.parse(q.body).sn for q in out[1:]}["ConfigDownload"]
    body = manscdp.build_message("Response", "ConfigDownload", sn, DEV, extra={
        "Result": "OK", "BasicParam": {"HeartBeatInterval": "10", "HeartBeatCount": "3"}})
    _, events = feed(server, message_bytes(DEV, body, cseq=50), now=1.0)
    assert ev.KeepaliveIntervalReported(DEV, 10.0, 3) in events
    server.handle_timer(29.0)
    assert not any(isinstance(e, ev.DeviceOffline) for e in iter(server.next_event, None))
    server.handle_timer(31.0)
    assert ev.DeviceOffline(DEV, "keepalive_timeout") in list(iter(server.next_event, None))


# ------------------------------------------------------------------------------------------ subscription
def answer(server: GbServer, request, status: int, now: float, **headers) -> None:
    from sip_server.sip import make_response

    resp = make_response(request, status, to_tag="dev1")
    for k, v in headers.items():
        resp.headers.add(k.replace("_", "-"), v)
    server.receive_datagram(resp.to_bytes(), ADDR, now)


def test_catalog_subscription_is_made_refreshed_and_notifies_apply():
    server = make_server(keepalive_interval=1000)
    out, _ = register(server)
    [sub] = [q for q in out if getattr(q, "method", None) == "SUBSCRIBE"]
    assert sub.headers.get("Event").startswith("Catalog;id=") and sub.headers.get("Expires") == "3600"
    assert manscdp.parse(sub.body).cmd_type == "Catalog"
    answer(server, sub, 200, 1.0, Expires="600")
    assert server.subscription(DEV).state == "active"
    server.endpoint.messages_to_send()
    list(iter(server.next_event, None))
    server.handle_timer(1.0 + 539)
    assert not [m for m in server.endpoint.messages_to_send() if getattr(parse_message(m.data), "method", None) == "SUBSCRIBE"]
    # the refresh goes out 60 s before the granted time runs out (and not before 80 % of it)
    server.handle_timer(1.0 + 541)
    refresh = [parse_message(m.data) for m in server.endpoint.messages_to_send()]
    assert [m.method for m in refresh if getattr(m, "method", None) == "SUBSCRIBE"] == ["SUBSCRIBE"]

    items = [manscdp.CatalogItem(device_id="34020000001310000009", name="新增 通道", status="ON", event="ADD"),
             manscdp.CatalogItem(device_id="34020000001310000001", name="东门", status="OFF", event="OFF")]
    body = manscdp.build_catalog_notify(99, DEV, 2, items)
    notify = message_bytes(DEV, body, cseq=60).replace(b"MESSAGE sip:", b"NOTIFY sip:", 1).replace(
        b"CSeq: 60 MESSAGE", b"CSeq: 60 NOTIFY")
    out, events = feed(server, notify, now=545.0)
    assert out[0].status == 200
    [changed] = [e for e in events if isinstance(e, ev.CatalogChanged)]
    assert [(i.device_id, i.event) for i in changed.items] == [("34020000001310000009", "ADD"),
                                                               ("34020000001310000001", "OFF")]


def test_devices_that_refuse_subscription_are_left_alone():
    server = make_server()
    out, _ = register(server)
    [sub] = [q for q in out if getattr(q, "method", None) == "SUBSCRIBE"]
    answer(server, sub, 489, 1.0)
    assert server.subscription(DEV).state == "refused" and "489" in server.subscription(DEV).reason
    server.handle_timer(3000.0)
    assert not [m for m in server.endpoint.messages_to_send() if getattr(parse_message(m.data), "method", None) == "SUBSCRIBE"]


def test_subscription_can_be_switched_off():
    server = make_server(catalog_subscribe_expires=0)
    out, _ = register(server)
    assert [q.method for q in out[1:]] == ["MESSAGE"] * 3
