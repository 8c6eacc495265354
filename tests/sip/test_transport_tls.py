"""SipTransport over TLS: real transports on 127.0.0.1 with the platform's server context (gbcore.tls), the
client verifying it; Via says TLS; requests go back over the peer's TLS connection and never over a plain one;
a plain-TCP speaker on the TLS port gets nothing; the caps count a connection before its handshake; a TLS
port that cannot be bound is a warning; an outbound TLS connection whose peer fails verification (or that
cannot be made at all) is reported with why, and nothing is sent over it."""

from __future__ import annotations

import asyncio
import socket

import pytest

from gbcore import tls
from gbcore.settings import Settings
from sip_server.sip import RequestReceived, ResponseReceived, SipEndpoint, parse_message
from sip_server.transport import SipTransport
from tests.sip.test_transport import Peer, message


@pytest.fixture(scope="module")
def material(tmp_path_factory):
    return tls.load_certificate(Settings(data_dir=tmp_path_factory.mktemp("tls")), announce=False)


class TlsPeer(Peer):
    def __init__(self, *, server=None, client=None, **caps) -> None:
        super().__init__()
        self.transport = SipTransport(self.endpoint, "127.0.0.1", 0, on_event=self.on_event,
                                      tls_port=0 if server is not None else None, tls_context=server,
                                      tls_client_context=client, tls_handshake_timeout=2.0, **caps)


async def _closed(reader: asyncio.StreamReader, limit: float = 3.0) -> bytes:
    got = b""
    async with asyncio.timeout(limit):
        while chunk := await reader.read(4096):
            got += chunk
    return got


async def test_request_and_answer_over_tls_and_back_over_the_same_connection(material) -> None:
    server = TlsPeer(server=tls.server_context(material))
    client = TlsPeer(client=tls.client_context(material.cert_file))
    await server.transport.start()
    await client.transport.start()
    try:
        tls_addr = server.transport.tls_address
        assert tls_addr is not None and tls_addr[1] not in (a[1] for a in server.transport.local_addresses)
        assert server.endpoint.local_addresses["tls"] == tls_addr
        client.transport.send_request(message(tls_addr, "tls"), tls_addr, "tls")
        (got,) = await server.wait_for(RequestReceived)
        assert got.transport == "tls" and got.request.headers.get("Via").startswith("SIP/2.0/TLS ")
        (answer,) = await client.wait_for(ResponseReceived)
        assert answer.response.status == 200
        # the server's own request to that peer goes back over the connection the peer opened
        server.transport.send_request(message(got.addr, "tls"), got.addr, "tls")
        (back,) = await client.wait_for(RequestReceived)
        assert back.transport == "tls" and back.addr == tls_addr
        assert back.request.headers.get("Via").startswith(f"SIP/2.0/TLS 127.0.0.1:{tls_addr[1]}")
        assert server.transport.tcp_connections == 1
    finally:
        await client.transport.close()
        await server.transport.close()


async def test_tls_is_never_sent_over_a_plain_connection(material) -> None:
    server = TlsPeer(server=tls.server_context(material))  # no client context: cannot open TLS itself
    client = Peer()
    await server.transport.start()
    await client.transport.start()
    try:
        tcp_addr = server.transport.local_addresses[1]
        client.transport.send_request(message(tcp_addr, "tcp"), tcp_addr, "tcp")
        (got,) = await server.wait_for(RequestReceived)
        assert got.transport == "tcp"
        server.transport.send_request(message(got.addr, "tls"), got.addr, "tls")  # to the same address
        await asyncio.sleep(0.5)
        assert not [e for e in client.events if isinstance(e, RequestReceived)]
        server.transport.send_request(message(got.addr, "tcp"), got.addr, "tcp")  # the control: TCP arrives
        await client.wait_for(RequestReceived)
    finally:
        await client.transport.close()
        await server.transport.close()


async def test_plain_sip_on_the_tls_port_gets_nothing(material) -> None:
    server = TlsPeer(server=tls.server_context(material))
    await server.transport.start()
    try:
        host, port = server.transport.tls_address
        reader, writer = await asyncio.open_connection(host, port)
        msg = message((host, port), "tcp")
        writer.write(msg.to_bytes())
        got = await _closed(reader)
        writer.close()
        assert b"SIP/2.0" not in got
        assert server.transport.tls_handshake_failed == 1
        await asyncio.sleep(0.1)
        assert not [e for e in server.events if isinstance(e, RequestReceived)]
        assert server.transport.tcp_connections == 0  # released
        parse_message(msg.to_bytes())  # (what was sent is a valid SIP message)
    finally:
        await server.transport.close()


async def test_caps_count_a_connection_before_its_handshake(material) -> None:
    server = TlsPeer(server=tls.server_context(material), tcp_max_per_address=2, tcp_idle_timeout=1.0)
    await server.transport.start()
    try:
        host, port = server.transport.tls_address
        tcp = server.transport.local_addresses[1]
        held = [await asyncio.open_connection(*tcp), await asyncio.open_connection(host, port)]
        await asyncio.sleep(0.1)
        reader, writer = await asyncio.open_connection(host, port)
        assert await _closed(reader, 1.0) == b""  # refused at once, before any handshake
        writer.close()
        assert server.transport.tcp_refused == 1
        # the silent ones are closed by the unregistered idle timeout (TLS: or its handshake deadline)
        for r, _ in held:
            assert await _closed(r, 4.0) == b""
        for _, w in held:
            w.close()
    finally:
        await server.transport.close()


async def test_tls_port_in_use_is_a_warning_not_a_failure(material, caplog) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        endpoint = SipEndpoint()
        transport = SipTransport(endpoint, "127.0.0.1", 0, tls_port=busy.getsockname()[1],
                                 tls_context=tls.server_context(material))
        await transport.start()
        try:
            assert transport.tls_address is None and "tls" not in endpoint.local_addresses
            assert len(transport.local_addresses) == 2  # UDP and TCP serve on
            assert any(r.getMessage() == "sip.tls_listen_failed" and r.levelname == "WARNING" for r in caplog.records)
        finally:
            await transport.close()


async def test_outbound_tls_to_a_peer_failing_verification_is_reported_and_nothing_is_sent(material, tmp_path) -> None:
    other = tmp_path / "other.crt", tmp_path / "other.key"
    tls.generate_self_signed(Settings(data_dir=tmp_path / "x"), *other)
    failures: list = []
    failed = asyncio.Event()

    def on_connect_failed(*args) -> None:
        failures.append(args)
        failed.set()

    server = TlsPeer(server=tls.server_context(material))
    client = TlsPeer(client=tls.client_context(other[0]))  # trusts another certificate only
    client.transport.on_connect_failed = on_connect_failed
    await server.transport.start()
    await client.transport.start()
    try:
        # no TLS listener of its own: the client's TLS address (Via, Contact) is its TCP one
        assert client.endpoint.local_addresses["tls"] == client.transport.local_addresses[1]
        tls_addr = server.transport.tls_address
        client.transport.send_request(message(tls_addr, "tls"), tls_addr, "tls")
        await asyncio.wait_for(failed.wait(), 5)
        [(addr, transport, kind, detail)] = failures
        assert (addr, transport, kind) == (tls_addr, "tls", "certificate")
        assert "certificate" in detail  # e.g. "self-signed certificate" / "unable to get local issuer certificate"
        await asyncio.sleep(0.2)
        assert not [e for e in server.events if isinstance(e, RequestReceived)]
        # the same peer trusted: the message arrives (the control)
        client.transport.tls_client_context = tls.client_context(material.cert_file)
        client.transport.send_request(message(tls_addr, "tls"), tls_addr, "tls")
        (got,) = await server.wait_for(RequestReceived)
        assert got.transport == "tls"
        # nothing listening: a connect failure
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            closed = s.getsockname()
        failed.clear()
        client.transport.send_request(message(closed, "tls"), closed, "tls")
        await asyncio.wait_for(failed.wait(), 5)
        assert failures[1][:3] == (closed, "tls", "connect")
    finally:
        await client.transport.close()
        await server.transport.close()
