"""SipTransport: two real transports on 127.0.0.1 exchanging SIP over UDP and TCP."""

from __future__ import annotations

import asyncio
import socket

import pytest

from sip_server.sip import (
    Headers,
    MessageDropped,
    RequestReceived,
    ResponseReceived,
    SipEndpoint,
    SipRequest,
    TransactionTimeout,
    make_response,
)
from sip_server.transport import SipTransport


def message(to_addr: tuple[str, int], transport: str, body: bytes = b"<Notify/>") -> SipRequest:
    h = Headers()
    h.add("Via", f"SIP/2.0/{transport.upper()} 0.0.0.0:0;rport")
    h.add("From", "<sip:34020000001320000001@3402000000>;tag=abc")
    h.add("To", "<sip:34020000002000000001@3402000000>")
    h.add("Call-ID", f"call-{transport}-{id(body)}")
    h.add("CSeq", "20 MESSAGE")
    h.add("Content-Type", "Application/MANSCDP+xml")
    return SipRequest("MESSAGE", f"sip:34020000002000000001@{to_addr[0]}:{to_addr[1]}", h, body)


class Peer:
    """A transport whose TU answers every request with 200 and records everything."""

    def __init__(self, *, t1: float = 0.5, answer: bool = True) -> None:
        self.endpoint = SipEndpoint(t1=t1, t2=max(t1 * 8, 0.01))
        self.events: list = []
        self.answer = answer
        self.changed = asyncio.Event()
        self.transport = SipTransport(self.endpoint, "127.0.0.1", 0, on_event=self.on_event)

    def on_event(self, ev) -> None:
        self.events.append(ev)
        self.changed.set()
        if self.answer and isinstance(ev, RequestReceived) and ev.request.method != "ACK":
            resp = make_response(ev.request, 200, to_tag="srv")
            assert self.transport.send_response(ev.key, resp)

    async def wait_for(self, kind: type, count: int = 1, limit: float = 5.0) -> list:
        async def _wait() -> list:
            while True:
                found = [e for e in self.events if isinstance(e, kind)]
                if len(found) >= count:
                    return found
                self.changed.clear()
                await self.changed.wait()

        return await asyncio.wait_for(_wait(), limit)


@pytest.fixture()
async def pair():
    a, b = Peer(), Peer()
    await a.transport.start()
    await b.transport.start()
    yield a, b
    await a.transport.close()
    await b.transport.close()


async def test_local_addresses_with_port_zero(pair) -> None:
    a, b = pair
    udp, tcp = a.transport.local_addresses
    assert udp[0] == "127.0.0.1" and udp[1] > 0 and tcp == udp
    assert a.endpoint.local_addresses == {"udp": udp, "tcp": tcp}
    assert b.transport.local_addresses[0] != udp


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_message_exchange(pair, transport: str) -> None:
    a, b = pair
    b_addr = b.transport.local_addresses[0 if transport == "udp" else 1]
    req = message(b_addr, transport)
    key = a.transport.send_request(req, b_addr, transport)
    (resp,) = await a.wait_for(ResponseReceived)
    assert resp.key == key and resp.response.status == 200 and resp.request is req
    (got,) = await b.wait_for(RequestReceived)
    assert got.transport == transport and got.request.body == b"<Notify/>"
    assert got.request.call_id == req.call_id
    # the placeholder sent-by was replaced by a's real address
    via = got.request.vias[0]
    assert (via.host, via.port) == a.transport.local_addresses[0]
    # the response went back to the request's source and carries rport/received
    top = resp.response.vias[0]
    assert top.received == "127.0.0.1" and top.rport == str(got.addr[1])
    if transport == "tcp":
        # b reuses the connection a opened to send a request the other way
        back = message(got.addr, "tcp", body=b"<Query/>")
        b.transport.send_request(back, got.addr, "tcp")
        (rev,) = await a.wait_for(RequestReceived)
        assert rev.request.body == b"<Query/>" and rev.transport == "tcp"
        (ok,) = await b.wait_for(ResponseReceived)
        assert ok.response.status == 200
        assert len(b.transport._conns) <= 2  # one connection, known by peer address (and target)


async def test_udp_timeout_through_the_transport_timer() -> None:
    peer = Peer(t1=0.01)
    await peer.transport.start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            silent = s.getsockname()
            peer.transport.send_request(message(silent, "udp"), silent)
            (ev,) = await peer.wait_for(TransactionTimeout, limit=5.0)
            assert ev.request.method == "MESSAGE"
            # the request was retransmitted on the wire (Timer E)
            s.setblocking(False)
            count = 0
            while True:
                try:
                    s.recvfrom(4096)
                    count += 1
                except BlockingIOError:
                    break
            assert count >= 3
    finally:
        await peer.transport.close()
    assert peer.endpoint.transaction_count == 0


async def test_tcp_framing_error_drops_connection(pair) -> None:
    a, b = pair
    host, port = b.transport.local_addresses[1]
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"MESSAGE sip:x@y SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n\r\n")  # no Content-Length
    await writer.drain()
    (ev,) = await b.wait_for(MessageDropped)
    assert ev.transport == "tcp" and "Content-Length" in ev.error
    assert await asyncio.wait_for(reader.read(), 5.0) == b""  # closed by the transport
    writer.close()


async def test_async_handler_and_raw_tcp_device(pair) -> None:
    _, b = pair
    b.answer = False

    async def handler(ev) -> None:
        b.events.append(ev)
        b.changed.set()
        if isinstance(ev, RequestReceived):
            await asyncio.sleep(0.01)
            b.endpoint.send_response(ev.key, make_response(ev.request, 200, to_tag="x"), b.transport.now())

    b.transport.on_event = handler
    host, port = b.transport.local_addresses[1]
    reader, writer = await asyncio.open_connection(host, port)
    req = message((host, port), "tcp")
    req.headers.set("Via", "SIP/2.0/TCP 10.1.1.1:5060;branch=z9hG4bKraw")
    writer.write(b"\r\n\r\n" + req.to_bytes()[:40])
    await writer.drain()
    await asyncio.sleep(0.01)
    writer.write(req.to_bytes()[40:])
    await writer.drain()
    data = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
    assert data.startswith(b"SIP/2.0 200 OK\r\n")
    assert b"received=127.0.0.1" in data
    writer.close()


async def test_udp_send_error_is_logged_not_raised(pair, caplog) -> None:
    caplog.set_level("WARNING", logger="gbops.sip.transport")
    a, _ = pair
    a.transport.send_stateless(message(("127.0.0.1", 9), "udp"), ("256.1.1.1", 9), "udp")
    a.transport.send_stateless(message(("127.0.0.1", 9), "udp"), ("127.0.0.1", 9), "sctp")
    await asyncio.sleep(0.01)
    assert any(r.getMessage() == "sip.unsupported_transport" for r in caplog.records)


def test_message_exchange_on_uvloop() -> None:
    import uvloop

    async def main() -> list[int]:
        a, b = Peer(), Peer()
        await a.transport.start()
        await b.transport.start()
        try:
            for transport, index in (("udp", 0), ("tcp", 1)):
                addr = b.transport.local_addresses[index]
                a.transport.send_request(message(addr, transport), addr, transport)
            got = await a.wait_for(ResponseReceived, 2)
            return sorted(e.response.status for e in got)
        finally:
            await a.transport.close()
            await b.transport.close()

    assert uvloop.run(main()) == [200, 200]
