"""Device identity in the GB core (sans-IO): only an authenticated REGISTER moves a device, lockout is no
denial of service, the Date header is Beijing time whatever the host's zone, and the Contact carries a
real host:port. The same checks over real sockets are in tests/gb/test_identity_live.py."""

from __future__ import annotations

import time

import pytest

from sip_server.gb import events as ev
from sip_server.gb import manscdp
from sip_server.gb.invite import SessionEnded
from sip_server.sip import build_authorization, parse_message
from tests.gb.test_server import (
    ADDR,
    DEV,
    PASSWORD,
    feed,
    make_server,
    message_bytes,
    register,
    register_bytes,
)

SPOOF = ("192.168.1.200", 5060)  # another host
SPOOF_PORT = (ADDR[0], ADDR[1] + 1)  # the device's host, another port (another socket, or a NAT rebinding)
CHANNEL = "34020000001310000001"


def online(**cfg):
    server = make_server(**cfg)
    out, events = register(server)
    assert out[0].status == 200 and isinstance(events[0], ev.DeviceOnline)
    return server


def drain(server):
    return list(iter(server.next_event, None))


def keepalive(dev: str = DEV, cseq: int = 40) -> bytes:
    return message_bytes(dev, manscdp.build_message("Notify", "Keepalive", cseq, dev, extra={"Status": "OK"}),
                         cseq=cseq)


def catalog_notify(cseq: int = 60) -> bytes:
    items = [manscdp.CatalogItem(device_id="34020000001310000999", name="fake", status="ON", event="ADD"),
             manscdp.CatalogItem(device_id=CHANNEL, name="东门", status="OFF", event="OFF")]
    body = manscdp.build_catalog_notify(99, DEV, 2, items)
    return message_bytes(DEV, body, cseq=cseq).replace(b"MESSAGE sip:", b"NOTIFY sip:", 1).replace(
        f"CSeq: {cseq} MESSAGE".encode(), f"CSeq: {cseq} NOTIFY".encode())


def register_from(server, addr, *, dev: str = DEV, password: str = PASSWORD, now: float = 0.0,
                  call_id: str = "c1@dev", transport: str = "udp"):
    [challenge], _ = feed(server, register_bytes(dev, 1, call_id=call_id), addr=addr, now=now, transport=transport)
    if challenge.status != 401:
        return [challenge], drain(server)
    authz = build_authorization(challenge.headers.get("WWW-Authenticate"), method="REGISTER",
                                uri="sip:34020000002000000001@3402000000", username=dev, password=password,
                                cnonce="0a4f113b")
    return feed(server, register_bytes(dev, 2, authz, call_id=call_id), addr=addr, now=now, transport=transport)


def refused(out, events) -> ev.SecurityEvent:
    assert [m.status for m in out] == [403]
    assert "registered address" in out[0].reason
    [sec] = [e for e in events if isinstance(e, ev.SecurityEvent)]
    assert sec.kind == "address_mismatch" and sec.device_id == DEV
    assert not [e for e in events if not isinstance(e, ev.SecurityEvent)]  # nothing else happened
    return sec


# ------------------------------------------------------------------------------------------ spoofing
@pytest.mark.parametrize("source", [SPOOF, SPOOF_PORT])
def test_spoofed_keepalive_is_refused_and_moves_nothing(source):
    server = online()
    drain(server)
    sec = refused(*feed(server, keepalive(), addr=source, now=30.0))
    assert sec.remote_addr == source and sec.method == "MESSAGE" and "registered address" in sec.detail
    assert server.routes[DEV].addr == ADDR
    assert server.presence.get(DEV).last_seen == 0.0
    assert server.metrics.keepalives == 0 and server.metrics.identity_refusals == 1
    # the next query goes to the registered address, not the spoofer
    assert server.query(DEV, "DeviceStatus", 31.0) is not None
    [query] = server.endpoint.messages_to_send()
    assert query.addr == ADDR and manscdp.parse(parse_message(query.data).body).cmd_type == "DeviceStatus"
    # the real device's own keepalive is still believed
    out, events = feed(server, keepalive(cseq=41), now=32.0)
    assert out[0].status == 200 and isinstance(events[0], ev.DeviceKeepalive)
    assert server.presence.get(DEV).last_seen == 32.0


def test_spoofed_keepalives_cannot_keep_a_stopped_device_online():
    server = online(keepalive_interval=60)
    drain(server)
    for i, t in enumerate(range(30, 180, 30)):  # the device is gone; a spoofer keeps "its" heartbeat going
        refused(*feed(server, keepalive(cseq=50 + i), addr=SPOOF, now=float(t)))
    server.handle_timer(181.0)
    assert ev.DeviceOffline(DEV, "keepalive_timeout") in drain(server)
    # offline now: still refused (not registered), never brought back by a keepalive
    [resp], events = feed(server, keepalive(cseq=70), addr=SPOOF, now=200.0)
    assert resp.status == 403 and not server.presence.is_online(DEV)


def test_spoofed_catalog_notify_and_response_change_nothing():
    server = online()
    drain(server)
    refused(*feed(server, catalog_notify(), addr=SPOOF, now=5.0))
    sn = server.catalog.get(DEV).sn
    item = manscdp.CatalogItem(device_id="34020000001310000999", name="fake", status="ON")
    page = manscdp.build_catalog_response(sn, DEV, 1, [item])
    refused(*feed(server, message_bytes(DEV, page, cseq=61), addr=SPOOF, now=6.0))
    progress = server.catalog.get(DEV).progress()
    assert progress["received"] == 0 and progress["state"] == "running"
    # from the device itself the same NOTIFY applies
    out, events = feed(server, catalog_notify(cseq=62), now=7.0)
    assert out[0].status == 200 and [type(e) for e in events] == [ev.CatalogChanged]


def test_request_with_a_bad_from_is_checked_against_the_body_device_id():
    server = online()
    drain(server)
    data = keepalive().replace(f"From: <sip:{DEV}@".encode(), b"From: <sip:nobody-x@")
    refused(*feed(server, data, addr=SPOOF, now=5.0))


def test_any_other_method_claiming_the_device_is_refused_too():
    server = online()
    drain(server)
    options = (f"OPTIONS sip:34020000002000000001@3402000000 SIP/2.0\r\n"
               f"Via: SIP/2.0/UDP {SPOOF[0]}:{SPOOF[1]};branch=z9hG4bKopt1\r\n"
               f"From: <sip:{DEV}@3402000000>;tag=o1\r\nTo: <sip:34020000002000000001@3402000000>\r\n"
               f"Call-ID: opt1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()
    refused(*feed(server, options, addr=SPOOF, now=5.0))
    out, _ = feed(server, options.replace(b"z9hG4bKopt1", b"z9hG4bKopt2"), now=6.0)
    assert out[0].status == 200


def test_spoofed_bye_does_not_end_the_session(sip_vectors):
    server = online(catalog_subscribe_expires=0)
    server.endpoint.messages_to_send()
    drain(server)
    call_id = server.invites.invite(DEV, CHANNEL, media_ip="192.0.2.1", media_port=30002, ssrc="0200001234",
                                    transport="udp", now=1.0)
    [invite] = [parse_message(o.data) for o in server.endpoint.messages_to_send()]
    assert invite.method == "INVITE"
    from sip_server.sip import make_response

    body = parse_message((sip_vectors / "dahua_sd6c3230_invite_200ok.sip").read_bytes()).body
    ok = make_response(invite, 200, to_tag="devtag", body=body, content_type="application/sdp")
    ok.headers.add("Contact", f"<sip:{CHANNEL}@{ADDR[0]}:{ADDR[1]}>")
    server.receive_datagram(ok.to_bytes(), ADDR, 2.0)
    server.endpoint.messages_to_send()
    drain(server)

    def bye(branch: str) -> bytes:
        return (f"BYE sip:34020000002000000001@3402000000 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.9:5060;branch={branch}\r\n"
                f"From: <sip:{CHANNEL}@3402000000>;tag=devtag\r\nTo: <sip:34020000002000000001@3402000000>;tag=x\r\n"
                f"Call-ID: {call_id}\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n").encode()

    refused(*feed(server, bye("z9hG4bKbye1"), addr=SPOOF, now=5.0))
    assert call_id in server.invites.by_call
    out, events = feed(server, bye("z9hG4bKbye2"), now=6.0)
    assert out[0].status == 200
    assert [e for e in events if isinstance(e, SessionEnded)] == [
        SessionEnded(call_id, DEV, CHANNEL, "device", "device ended the session (BYE)")]


def test_tcp_device_is_believed_only_on_its_own_connection():
    server = make_server()
    out, _ = register_from(server, ADDR, transport="tcp")
    assert out[0].status == 200 and server.routes[DEV].transport == "tcp"
    drain(server)
    server.endpoint.messages_to_send()
    refused(*feed(server, keepalive(), addr=ADDR, now=1.0, transport="udp"))  # same ip:port, other transport
    refused(*feed(server, keepalive(cseq=41), addr=SPOOF_PORT, now=1.0, transport="tcp"))  # another connection
    out, _ = feed(server, keepalive(cseq=42), addr=ADDR, now=2.0, transport="tcp")
    assert out[0].status == 200
    # the connection it registered on closes: a new one (even from the same ip:port) is not believed...
    server.connection_lost(ADDR, "tcp")
    refused(*feed(server, keepalive(cseq=43), addr=ADDR, now=3.0, transport="tcp"))
    # ...until the device registers again on it
    out, _ = register_from(server, ADDR, transport="tcp", now=4.0, call_id="c2@dev")
    assert out[0].status == 200
    out, _ = feed(server, keepalive(cseq=44), addr=ADDR, now=5.0, transport="tcp")
    assert out[0].status == 200


# ------------------------------------------------------------------------------------------ lockout
def test_wrong_passwords_from_elsewhere_lock_the_attacker_not_the_device():
    server = online(lockout_failures=5)
    drain(server)
    locks = []
    for i in range(7):
        out, events = register_from(server, SPOOF, password="Wrong-pass#1", now=1.0 + i, call_id=f"w{i}")
        assert out[0].status == 403
        locks += [e for e in events if isinstance(e, ev.SecurityEvent)]
    assert server.metrics.lockouts >= 1
    assert server.presence.is_online(DEV)
    # the device's refreshes from its registered address keep working (during the lock)
    for i in range(3):
        out, events = register_from(server, ADDR, now=20.0 + i, call_id=f"r{i}")
        assert out[0].status == 200, out[0].reason
        assert isinstance(events[0], ev.DeviceOnline) and not events[0].transition
    assert server.presence.is_online(DEV) and server.routes[DEV].addr == ADDR
    # the attacker's address is locked: even the right password is refused, without a challenge
    [resp], events = feed(server, register_bytes(DEV, 1, call_id="ok1"), addr=SPOOF, now=30.0)
    assert resp.status == 403 and "locked" in resp.reason.lower()
    # and so is the id, for any new address
    [resp], _ = feed(server, register_bytes(DEV, 1, call_id="ok2"), addr=("10.9.9.9", 5060), now=31.0)
    assert resp.status == 403 and "locked" in resp.reason.lower()
    # other device ids from the attacker's address are locked out too
    [resp], _ = feed(server, register_bytes("34020000001320000002", 1, call_id="ok3"), addr=SPOOF, now=32.0)
    assert resp.status == 403
    assert locks and locks[0].kind == "lockout" and locks[0].remote_addr == SPOOF


def test_a_device_failing_from_its_own_address_locks_only_itself_there():
    server = online(lockout_failures=2)
    drain(server)
    for i in range(3):
        out, _ = register_from(server, ADDR, password="Wrong-pass#1", now=1.0 + i, call_id=f"w{i}")
        assert out[0].status == 403
    [resp], _ = feed(server, register_bytes(DEV, 1, call_id="n1"), now=5.0)
    assert resp.status == 403 and "locked" in resp.reason.lower()
    assert server.presence.is_online(DEV)  # the registration it holds is not taken away


# ------------------------------------------------------------------------------------------ Date, Contact


def test_register_date_header_is_beijing_time_on_a_utc_host(utc_host):
    assert time.strftime("%H", time.localtime(1_700_000_000)) == "22"  # the host really is on UTC
    server = make_server()  # wall clock 1_700_000_000 = 2023-11-14T22:13:20Z
    out, _ = register(server)
    assert out[0].status == 200 and out[0].headers.get("Date") == "2023-11-15T06:13:20.000"
    out, _ = register(server, expires=0, now=1.0, call_id="u1")
    assert out[0].headers.get("Date") == "2023-11-15T06:13:20.000"


def test_contact_carries_a_host_and_port_not_the_domain():
    server = make_server()
    server.endpoint.local_addresses.update({"udp": ("10.1.2.3", 5060), "tcp": ("10.1.2.3", 5060)})
    out, _ = register(server)
    [sub] = [m for m in out if getattr(m, "method", None) == "SUBSCRIBE"]
    assert sub.headers.get("Contact") == "<sip:34020000002000000001@10.1.2.3:5060>"
    assert sub.headers.get("Via").startswith("SIP/2.0/UDP 10.1.2.3:5060;")
    server.endpoint.local_address_for = lambda addr, transport: ("172.16.0.5", 5060)  # the interface facing it
    server.invites.invite(DEV, CHANNEL, media_ip="192.0.2.1", media_port=30002, ssrc="0200001234",
                          transport="udp", now=1.0)
    [inv] = [parse_message(o.data) for o in server.endpoint.messages_to_send()
             if parse_message(o.data).method == "INVITE"]
    assert inv.headers.get("Contact") == "<sip:34020000002000000001@172.16.0.5:5060>"
    assert inv.headers.get("Via").startswith("SIP/2.0/UDP 172.16.0.5:5060;")


def test_configured_contact_host_wins():
    server = make_server(contact_host="203.0.113.7:15060")
    out, _ = register(server)
    [sub] = [m for m in out if getattr(m, "method", None) == "SUBSCRIBE"]
    assert sub.headers.get("Contact") == "<sip:34020000002000000001@203.0.113.7:15060>"
