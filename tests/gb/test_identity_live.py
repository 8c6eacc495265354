"""Device identity and SIP-over-TCP limits against the real SipService over real sockets on 127.0.0.1.

A device registers (digest) over UDP or TCP; a spoofer on another socket (another source port: another
address) or another TCP connection claims the device's id. Its requests get 403 and change nothing: the
next query and INVITE still go to the registered device, a stopped device goes offline, no channel
appears. The TCP limits (unregistered idle timeout, caps) are provoked with real connections.
"""

from __future__ import annotations

import asyncio
import itertools

import pytest

from sip_server.gb import events as ev
from sip_server.gb import manscdp
from sip_server.gb.server import GbConfig
from sip_server.service import DeviceNotReachable, InviteRefused, SipService
from sip_server.sip import StreamFramer, build_authorization, make_response, parse_message

PASSWORD = "Gate-7-camera#pw"
DEV = "34020000001320000001"
CHANNEL = "34020000001310000001"
SERVER_ID = "34020000002000000001"
DOMAIN = "3402000000"

_seq = itertools.count(1)


def request_bytes(method: str, local: tuple[str, int], transport: str, *, from_user: str = DEV,
                  body: bytes = b"", extra: tuple[str, ...] = (), call_id: str | None = None,
                  cseq: int | None = None) -> bytes:
    n = next(_seq)
    cseq = cseq or n
    lines = [
        f"{method} sip:{SERVER_ID}@{DOMAIN} SIP/2.0",
        f"Via: SIP/2.0/{transport.upper()} {local[0]}:{local[1]};rport;branch=z9hG4bK{method.lower()}{n}",
        f"From: <sip:{from_user}@{DOMAIN}>;tag=t{n}",
        f"To: <sip:{SERVER_ID}@{DOMAIN}>",
        f"Call-ID: {call_id or f'{method.lower()}{n}@test'}",
        f"CSeq: {cseq} {method}",
        "Max-Forwards: 70",
        *extra,
    ]
    if body:
        lines.append("Content-Type: Application/MANSCDP+xml")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def keepalive_body(dev: str = DEV) -> bytes:
    return manscdp.build_message("Notify", "Keepalive", next(_seq), dev, extra={"Status": "OK"})


def catalog_notify_body() -> bytes:
    items = [manscdp.CatalogItem(device_id="34020000001310000999", name="fake", status="ON", event="ADD"),
             manscdp.CatalogItem(device_id=CHANNEL, name="东门", status="OFF", event="OFF")]
    return manscdp.build_catalog_notify(next(_seq), DEV, 2, items)


class Peer:
    """A device (or a spoofer) on its own UDP socket or TCP connection. Requests from the platform are
    recorded and answered 200 (``answer`` may override), responses are matched by Call-ID."""

    def __init__(self, transport: str = "udp") -> None:
        self.transport = transport
        self.requests: list = []
        self.responses: dict[str, asyncio.Future] = {}
        self.answer = None  # callable(request) -> status, or None for 200
        self.local: tuple[str, int] = ("127.0.0.1", 0)
        self._udp = None
        self._writer = None
        self._reader_task = None
        self.server: tuple[str, int] | None = None
        self.closed = asyncio.Event()

    async def open(self, server: tuple[str, int], bind: str = "127.0.0.1") -> Peer:
        loop = asyncio.get_running_loop()
        self.server = server
        if self.transport == "udp":
            peer = self

            class Proto(asyncio.DatagramProtocol):
                def datagram_received(self, data, addr):
                    peer._on_message(parse_message(data))

            self._udp, _ = await loop.create_datagram_endpoint(Proto, local_addr=(bind, 0))
            self.local = self._udp.get_extra_info("sockname")[:2]
        else:
            reader, self._writer = await asyncio.open_connection(*server, local_addr=(bind, 0))
            self.local = self._writer.get_extra_info("sockname")[:2]
            self._reader_task = asyncio.ensure_future(self._read(reader))
        return self

    async def _read(self, reader) -> None:
        framer = StreamFramer()
        try:
            while data := await reader.read(65536):
                for msg in framer.feed(data):
                    self._on_message(msg)
        except (ConnectionError, OSError):
            pass
        finally:
            self.closed.set()

    def _on_message(self, msg) -> None:
        if msg.is_request:
            self.requests.append(msg)
            if msg.method != "ACK":
                status = self.answer(msg) if self.answer else 200
                self.send(make_response(msg, status, to_tag="dev").to_bytes())
            return
        if msg.status < 200:
            return
        fut = self.responses.pop(msg.call_id, None)
        if fut is not None and not fut.done():
            fut.set_result(msg)

    def send(self, data: bytes) -> None:
        if self._udp is not None:
            self._udp.sendto(data, self.server)
        else:
            self._writer.write(data)

    async def request(self, data: bytes, timeout: float = 3.0):
        call_id = parse_message(data).call_id
        fut = asyncio.get_running_loop().create_future()
        self.responses[call_id] = fut
        self.send(data)
        return await asyncio.wait_for(fut, timeout)

    async def message(self, body: bytes, *, method: str = "MESSAGE", from_user: str = DEV):
        return await self.request(request_bytes(method, self.local, self.transport, from_user=from_user,
                                                body=body))

    async def register(self, password: str = PASSWORD, dev: str = DEV, expires: int = 3600):
        call_id = f"reg{next(_seq)}@test"
        contact = (f"Contact: <sip:{dev}@{self.local[0]}:{self.local[1]}>", f"Expires: {expires}")
        first = await self.request(request_bytes("REGISTER", self.local, self.transport, from_user=dev,
                                                 extra=contact, call_id=call_id, cseq=1))
        if first.status != 401:
            return first
        authz = build_authorization(first.headers.get("WWW-Authenticate"), method="REGISTER",
                                    uri=f"sip:{SERVER_ID}@{DOMAIN}", username=dev, password=password,
                                    cnonce="0a4f113b")
        return await self.request(request_bytes("REGISTER", self.local, self.transport, from_user=dev,
                                                extra=(*contact, f"Authorization: {authz}"), call_id=call_id,
                                                cseq=2))

    def methods(self) -> list[tuple[str, str | None]]:
        out = []
        for r in self.requests:
            cmd = None
            if r.body and r.method in ("MESSAGE", "SUBSCRIBE"):
                cmd = manscdp.parse(r.body).cmd_type
            out.append((r.method, cmd))
        return out

    def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._writer is not None:
            self._writer.close()
        if self._reader_task is not None:
            self._reader_task.cancel()


async def until(pred, limit: float = 5.0) -> bool:
    for _ in range(int(limit * 50)):
        if pred():
            return True
        await asyncio.sleep(0.02)
    return pred()


class Service:
    def __init__(self, **kw) -> None:
        cfg = dict(default_password=PASSWORD, catalog_subscribe_expires=0, keepalive_interval=60.0)
        cfg.update(kw.pop("cfg", {}))
        self.security: list[tuple] = []
        self.events: list = []
        self.svc = SipService(GbConfig(**cfg), host="127.0.0.1", port=0,
                              on_security_event=lambda *a: self.security.append(a), **kw)
        self.svc.add_listener(self.events.append)
        self.peers: list[Peer] = []

    async def peer(self, transport: str = "udp", bind: str = "127.0.0.1") -> Peer:
        p = await Peer(transport).open(("127.0.0.1", self.svc.bound_port), bind)
        self.peers.append(p)
        return p


@pytest.fixture
async def service():
    holder: list[Service] = []

    async def make(**kw) -> Service:
        s = Service(**kw)
        await s.svc.start()
        holder.append(s)
        return s

    yield make
    for s in holder:
        for p in s.peers:
            p.close()
        await s.svc.close()


# ------------------------------------------------------------------------------------------ UDP
async def test_udp_spoofer_is_refused_and_the_device_keeps_its_route(service):
    s = await service()
    svc = s.svc
    dev = await s.peer()
    assert (await dev.register()).status == 200
    assert svc.is_online(DEV) and svc.gb.routes[DEV].addr == dev.local
    spoofer = await s.peer()  # another source port on the same host: another address
    assert spoofer.local != dev.local
    before = svc.gb.presence.get(DEV).last_seen

    resp = await spoofer.message(keepalive_body())
    assert resp.status == 403
    resp = await spoofer.message(catalog_notify_body(), method="NOTIFY")
    assert resp.status == 403
    resp = await spoofer.request(request_bytes("BYE", spoofer.local, "udp", extra=("Contact: <sip:x@1.2.3.4>",)))
    assert resp.status == 403
    assert svc.gb.routes[DEV].addr == dev.local and svc.gb.presence.get(DEV).last_seen == before
    assert not [e for e in s.events if isinstance(e, ev.CatalogChanged | ev.DeviceKeepalive)]
    assert [(k, d, a) for k, d, a, _ in s.security] == [("address_mismatch", DEV, spoofer.local)] * 3
    assert s.security[0][3]["method"] == "MESSAGE" and "registered address" in s.security[0][3]["reason"]

    # the next DeviceStatus query goes to the device, and its answer is used
    dev.requests.clear()

    def answer(req):
        if req.method == "MESSAGE" and manscdp.parse(req.body).cmd_type == "DeviceStatus":
            sn = manscdp.parse(req.body).sn
            body = manscdp.build_device_status_response(sn, DEV, device_time="2024-05-04T14:43:16")
            asyncio.get_running_loop().call_soon(dev.send, request_bytes("MESSAGE", dev.local, "udp", body=body))
        return 200

    dev.answer = answer
    status = await asyncio.wait_for(svc.device_status(DEV), 5)
    assert status is not None
    assert ("MESSAGE", "DeviceStatus") in dev.methods()
    # and so does the next INVITE (the device refuses it: the viewer learns the device's answer)
    dev.answer = lambda req: 486 if req.method == "INVITE" else 200
    with pytest.raises(InviteRefused) as refused:
        await svc.invite(DEV, CHANNEL, media_ip="127.0.0.1", media_port=30000, ssrc="0200000001",
                         transport="udp", timeout=5)
    assert refused.value.status == 486
    assert ("INVITE", None) in dev.methods()
    assert spoofer.requests == []  # nothing ever went to the spoofer


async def test_spoofed_keepalives_cannot_keep_a_stopped_device_online(service):
    s = await service(cfg={"keepalive_interval": 0.5, "keepalive_misses": 2})
    svc = s.svc
    dev = await s.peer()
    assert (await dev.register()).status == 200
    dev.close()  # the device is gone (no unregister)
    spoofer = await s.peer()
    statuses = []
    for _ in range(6):  # keepalives every 0.25 s for 1.5 s: the device's window is 1 s
        statuses.append((await spoofer.message(keepalive_body())).status)
        await asyncio.sleep(0.25)
    assert set(statuses) == {403}
    assert not svc.is_online(DEV)
    assert [e.reason for e in s.events if isinstance(e, ev.DeviceOffline)] == ["keepalive_timeout"]
    with pytest.raises(DeviceNotReachable):
        await svc.device_status(DEV)


async def test_security_events_are_rate_limited_per_address(service):
    s = await service(security_event_limit=10, security_event_window=60.0)
    dev = await s.peer()
    assert (await dev.register()).status == 200
    spoofer = await s.peer()
    for _ in range(15):
        assert (await spoofer.message(keepalive_body())).status == 403  # every one refused...
    assert len(s.security) == 10  # ...only ten recorded
    assert s.svc.metrics()["security_events_suppressed"] == 5
    assert s.svc.metrics()["identity_refusals"] == 15
    other = await s.peer(bind="127.0.0.2")  # another address has its own budget
    assert (await other.message(keepalive_body())).status == 403
    assert len(s.security) == 11 and s.security[-1][2][0] == "127.0.0.2"


async def test_seven_wrong_passwords_from_elsewhere_do_not_lock_out_the_device(service):
    s = await service(cfg={"lockout_failures": 5})
    svc = s.svc
    dev = await s.peer()
    assert (await dev.register()).status == 200
    attacker = await s.peer(bind="127.0.0.2")
    for _ in range(7):
        assert (await attacker.register(password="Wrong-pass#1")).status == 403
    assert svc.is_online(DEV)
    for _ in range(3):  # refreshes from its own address, during the lock
        assert (await dev.register()).status == 200
    assert svc.is_online(DEV) and svc.gb.routes[DEV].addr == dev.local
    resp = await attacker.register()  # the right password: still refused, the address is locked
    assert resp.status == 403 and "locked" in resp.reason.lower()
    assert [k for k, *_ in s.security] == ["lockout"]


# ------------------------------------------------------------------------------------------ TCP
async def test_tcp_device_is_believed_only_on_its_own_connection(service):
    s = await service()
    svc = s.svc
    dev = await s.peer("tcp")
    assert (await dev.register()).status == 200
    assert svc.gb.routes[DEV].transport == "tcp" and svc.gb.routes[DEV].addr == dev.local
    spoofer = await s.peer("tcp")  # another connection from the same host
    assert (await spoofer.message(keepalive_body())).status == 403
    assert (await spoofer.message(catalog_notify_body(), method="NOTIFY")).status == 403
    udp = await s.peer("udp")
    assert (await udp.message(keepalive_body())).status == 403
    assert (await dev.message(keepalive_body())).status == 200
    assert not [e for e in s.events if isinstance(e, ev.CatalogChanged)]
    # queries go down the device's connection
    dev.requests.clear()
    task = asyncio.ensure_future(svc.device_status(DEV))
    assert await until(lambda: ("MESSAGE", "DeviceStatus") in dev.methods())
    task.cancel()
    assert spoofer.requests == [] and udp.requests == []
    # the device's connection closes: nothing more is believed until it registers again
    dev.close()
    assert await until(lambda: not svc.gb.routes[DEV].connected)
    again = await s.peer("tcp")
    assert (await again.message(keepalive_body())).status == 403
    assert (await again.register()).status == 200
    assert (await again.message(keepalive_body())).status == 200


async def test_tcp_connection_that_never_registers_is_closed(service):
    s = await service(tcp_idle_timeout=0.5)
    silent = await s.peer("tcp")
    chatty = await s.peer("tcp")  # talks, but never completes an authenticated REGISTER
    registered = await s.peer("tcp")
    assert (await registered.register()).status == 200
    assert (await chatty.message(keepalive_body(dev="34020000001320000002"))).status == 403
    await asyncio.wait_for(silent.closed.wait(), 3)
    await asyncio.wait_for(chatty.closed.wait(), 3)
    assert not registered.closed.is_set()
    assert (await registered.message(keepalive_body())).status == 200
    assert s.svc.metrics()["tcp_idle_closed"] == 2 and s.svc.metrics()["tcp_connections"] == 1


async def test_tcp_connection_caps(service):
    s = await service(tcp_max_connections=5, tcp_max_per_address=3)
    held = [await s.peer("tcp") for _ in range(3)]  # three connections, nobody registered on them
    assert await until(lambda: s.svc.metrics()["tcp_connections"] == 3)
    fourth = await s.peer("tcp")  # the per-address cap: closed at once
    await asyncio.wait_for(fourth.closed.wait(), 3)
    assert s.svc.metrics()["tcp_refused"] == 1
    # a device registering on one of them frees its place in its address's budget (cameras behind one
    # NAT address are not capped; half-open connections are)
    assert (await held[0].register()).status == 200
    more = await s.peer("tcp")
    assert (await more.message(keepalive_body(dev="34020000001320000003"))).status == 403  # served
    other = await s.peer("tcp", bind="127.0.0.2")  # another address: room left globally
    assert await until(lambda: s.svc.metrics()["tcp_connections"] == 5)
    sixth = await s.peer("tcp", bind="127.0.0.3")  # the global cap: closed at once
    await asyncio.wait_for(sixth.closed.wait(), 3)
    assert s.svc.metrics()["tcp_refused"] == 2
    for p in [*held, more, other]:
        assert not p.closed.is_set()
    assert (await held[0].message(keepalive_body())).status == 200  # the held ones work
    # a slot freed is a slot usable again
    other.close()
    assert await until(lambda: s.svc.metrics()["tcp_connections"] == 4)
    seventh = await s.peer("tcp", bind="127.0.0.3")
    assert (await seventh.message(keepalive_body(dev="34020000001320000003"))).status == 403  # served
    assert not seventh.closed.is_set()


async def test_advertised_address_is_used_in_via_and_contact(service):
    s = await service(advertised_address="203.0.113.9")  # no port: the listening port
    svc = s.svc
    dev = await s.peer()
    assert (await dev.register()).status == 200
    task = asyncio.ensure_future(svc.invite(DEV, CHANNEL, media_ip="127.0.0.1", media_port=30000,
                                            ssrc="0200000001", transport="udp", timeout=3))
    assert await until(lambda: any(r.method == "INVITE" for r in dev.requests))
    task.cancel()
    [inv] = [r for r in dev.requests if r.method == "INVITE"]
    port = svc.bound_port
    assert inv.headers.get("Contact") == f"<sip:{SERVER_ID}@203.0.113.9:{port}>"
    assert inv.headers.get("Via").startswith(f"SIP/2.0/UDP 203.0.113.9:{port};")
    queries = [r for r in dev.requests if r.method == "MESSAGE"]
    assert queries and all(q.headers.get("Via").startswith(f"SIP/2.0/UDP 203.0.113.9:{port};") for q in queries)


async def test_default_contact_is_the_listening_address(service):
    s = await service()
    dev = await s.peer()
    assert (await dev.register()).status == 200
    task = asyncio.ensure_future(s.svc.invite(DEV, CHANNEL, media_ip="127.0.0.1", media_port=30000,
                                              ssrc="0200000001", transport="udp", timeout=3))
    assert await until(lambda: any(r.method == "INVITE" for r in dev.requests))
    task.cancel()
    [inv] = [r for r in dev.requests if r.method == "INVITE"]
    assert inv.headers.get("Contact") == f"<sip:{SERVER_ID}@127.0.0.1:{s.svc.bound_port}>"
