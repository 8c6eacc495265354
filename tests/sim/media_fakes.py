"""A small GB/T 28181 platform for the simulator's media tests: registrar (StubPlatform) plus a UAC that
INVITEs simulated channels the way platforms do, and RTP receivers for UDP, TCP passive and TCP active.

SIP runs over UDP through a real :class:`~sip_server.sip.SipEndpoint` (client INVITE/BYE transactions,
server transactions for the devices' REGISTER/MESSAGE/BYE)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
import socket
import time
from dataclasses import dataclass, field

from media_relay.rtp import Rfc4571Framer, RtpPacket
from sip_server.sip import Headers, SipEndpoint, SipRequest, SipResponse, make_response, parse_name_addr
from sip_server.sip.endpoint import RequestReceived, ResponseReceived, TransactionTimeout
from tests.sim.fakes import REALM, SERVER_ID, StubPlatform

HOST = "127.0.0.1"


# ================================================================================================ RTP in
@dataclass
class RtpSink:
    """Collects RTP packets with their arrival times (wall clock, epoch seconds)."""

    packets: list[tuple[float, RtpPacket]] = field(default_factory=list)
    closed: bool = False

    def add(self, data: bytes) -> None:
        self.packets.append((time.time(), RtpPacket.parse(data)))

    @property
    def count(self) -> int:
        return len(self.packets)

    def frames(self) -> list[tuple[float, int, bytes]]:
        """``(arrival of the last packet, RTP timestamp, PS bytes)`` per frame (marker-delimited)."""
        out: list[tuple[float, int, bytes]] = []
        parts: list[bytes] = []
        for arrival, pkt in self.packets:
            parts.append(pkt.payload)
            if pkt.marker:
                out.append((arrival, pkt.timestamp, b"".join(parts)))
                parts = []
        return out

    def ps(self) -> bytes:
        return b"".join(pkt.payload for _, pkt in self.packets)


class _UdpSinkProtocol(asyncio.DatagramProtocol):
    def __init__(self, sink: RtpSink) -> None:
        self.sink = sink

    def datagram_received(self, data: bytes, addr) -> None:  # type: ignore[override]
        self.sink.add(data)


class _TcpSinkProtocol(asyncio.Protocol):
    def __init__(self, sink: RtpSink, owner: MediaReceiver) -> None:
        self.sink = sink
        self.owner = owner
        self.framer = Rfc4571Framer()

    def connection_made(self, transport) -> None:
        self.owner.conns.append(transport)

    def data_received(self, data: bytes) -> None:
        for pkt in self.framer.feed(data):
            self.sink.add(pkt)

    def connection_lost(self, exc) -> None:
        self.sink.closed = True


class MediaReceiver:
    """The platform's end of one call's media: ``udp``, ``tcp-passive`` (we listen; the offer says
    ``a=setup:passive``) or ``tcp-active`` (we connect to the port the device answers)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.sink = RtpSink()
        self.port = 0
        self.conns: list[asyncio.BaseTransport] = []
        self._udp: asyncio.DatagramTransport | None = None
        self._server: asyncio.AbstractServer | None = None

    async def open(self) -> int:
        loop = asyncio.get_running_loop()
        if self.mode == "udp":
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
            sock.bind((HOST, 0))
            self._udp, _ = await loop.create_datagram_endpoint(lambda: _UdpSinkProtocol(self.sink), sock=sock)
            self.port = sock.getsockname()[1]
        elif self.mode == "tcp-passive":
            self._server = await loop.create_server(lambda: _TcpSinkProtocol(self.sink, self), HOST, 0)
            self.port = self._server.sockets[0].getsockname()[1]
        else:
            self.port = 9  # not used: the device listens; a platform still puts some port in the offer
        return self.port

    async def connect(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_connection(lambda: _TcpSinkProtocol(self.sink, self), host, port)

    def sdp_media(self) -> tuple[str, list[str]]:
        if self.mode == "udp":
            return "RTP/AVP", []
        setup = "passive" if self.mode == "tcp-passive" else "active"
        return "TCP/RTP/AVP", [f"a=setup:{setup}", "a=connection:new"]

    def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._server is not None:
            self._server.close()
        for t in self.conns:
            t.close()


# ================================================================================================ SIP
@dataclass
class PlatformCall:
    channel_id: str
    ssrc: str
    invite: SipRequest
    media: MediaReceiver
    response: SipResponse | None = None
    answer_sdp: str = ""
    remote_target: str = ""
    to_header: str = ""
    cseq: int = 20
    bye_status: int | None = None


class _SipProtocol(asyncio.DatagramProtocol):
    def __init__(self, platform: GbPlatform) -> None:
        self.platform = platform

    def datagram_received(self, data: bytes, addr) -> None:  # type: ignore[override]
        self.platform._receive(data, addr)


class GbPlatform:
    """Registrar + INVITing UAC over UDP; see the module docstring."""

    def __init__(self) -> None:
        self.stub = StubPlatform()
        self.endpoint = SipEndpoint()
        self.port = 0
        self.byes_from_devices: list[SipRequest] = []
        self._transport: asyncio.DatagramTransport | None = None
        self._waiters: dict[object, asyncio.Future] = {}
        self._timer: asyncio.Task | None = None
        self._cseq = itertools.count(20)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(lambda: _SipProtocol(self), local_addr=(HOST, 0))
        self.port = self._transport.get_extra_info("sockname")[1]
        self.endpoint.local_addresses["udp"] = (HOST, self.port)
        self._timer = loop.create_task(self._tick())

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
        if self._transport is not None:
            self._transport.close()

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(0.05)
            self.endpoint.handle_timer(loop.time())
            self._flush()

    def _flush(self) -> None:
        assert self._transport is not None
        for out in self.endpoint.messages_to_send():
            self._transport.sendto(out.data, out.addr)
        while (ev := self.endpoint.next_event()) is not None:
            if isinstance(ev, RequestReceived):
                req = ev.request
                if req.method == "BYE":
                    self.byes_from_devices.append(req)
                    self.endpoint.send_response(ev.key, make_response(req, 200), time.monotonic())
                elif req.method != "ACK":
                    resp = self.stub.on_request(req, ev.addr, time.monotonic(), "udp")
                    if resp is not None:
                        self.endpoint.send_response(ev.key, resp, time.monotonic())
            elif isinstance(ev, ResponseReceived):
                fut = self._waiters.get(ev.key)
                if fut is not None and ev.response.status >= 200 and not fut.done():
                    fut.set_result(ev.response)
            elif isinstance(ev, TransactionTimeout):
                fut = self._waiters.get(ev.key)
                if fut is not None and not fut.done():
                    fut.set_exception(TimeoutError(f"no answer to {ev.request.method}"))
        for out in self.endpoint.messages_to_send():
            self._transport.sendto(out.data, out.addr)

    def _receive(self, data: bytes, addr) -> None:
        self.endpoint.receive_datagram(data, addr, asyncio.get_running_loop().time(), "udp")
        self._flush()

    async def _request(self, req: SipRequest, addr: tuple[str, int], timeout: float = 5.0) -> SipResponse:
        loop = asyncio.get_running_loop()
        key = self.endpoint.send_request(req, addr, loop.time(), "udp")
        fut = self._waiters[key] = loop.create_future()
        self._flush()
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._waiters.pop(key, None)

    def device_addr(self, device_id: str) -> tuple[str, int]:
        addr, _ = self.stub.registered[device_id]
        return addr

    # ------------------------------------------------------------------ calls
    async def invite(self, device_id: str, channel_id: str, mode: str, *, ssrc: str | None = None,
                     session: str = "Play", refuse_media: bool = False) -> PlatformCall:
        """INVITE *channel_id* (on *device_id*), ACK the 200 and, for TCP active, connect to the device.
        *refuse_media*: offer a port nobody listens on (TCP passive) / do not connect (TCP active)."""
        media = MediaReceiver(mode)
        port = await media.open()
        if refuse_media:
            media.close()
        ssrc = ssrc or f"0{REALM[3:8]}{secrets.randbelow(9999) + 1:04d}"
        dev_host, dev_port = self.device_addr(device_id)
        cseq = next(self._cseq)
        invite = make_invite(channel_id, (dev_host, dev_port), (HOST, self.port), media_port=port, mode=mode,
                             ssrc=ssrc, cseq=cseq, session=session)
        call = PlatformCall(channel_id, ssrc, invite, media, cseq=cseq)
        resp = await self._request(invite, (dev_host, dev_port))
        call.response = resp
        if resp.status != 200:
            media.close()
            return call
        call.answer_sdp = resp.body.decode()
        call.remote_target = str(parse_name_addr(resp.headers.get("Contact") or "").uri)
        call.to_header = resp.headers.get("To") or ""
        self._send_ack(call)
        if mode == "tcp-active" and not refuse_media:
            host, port = answer_media(call.answer_sdp)
            await media.connect(host, port)
        return call

    def _in_dialog(self, call: PlatformCall, method: str, cseq: int) -> SipRequest:
        assert call.response is not None
        return in_dialog(call.invite, call.response, method, cseq, via=(HOST, self.port))

    def _send_ack(self, call: PlatformCall) -> None:
        ack = self._in_dialog(call, "ACK", call.cseq)
        self.endpoint.send_request(ack, self.device_addr_for(call), asyncio.get_running_loop().time(), "udp")
        self._flush()

    def device_addr_for(self, call: PlatformCall) -> tuple[str, int]:
        uri = call.invite.uri  # sip:channel@host:port
        hostport = uri.split("@", 1)[1]
        host, _, port = hostport.rpartition(":")
        return host, int(port)

    async def bye(self, call: PlatformCall) -> int:
        call.cseq += 1
        resp = await self._request(self._in_dialog(call, "BYE", call.cseq), self.device_addr_for(call))
        call.bye_status = resp.status
        return resp.status


def make_invite(channel_id: str, device: tuple[str, int], platform: tuple[str, int], *, media_port: int,
                mode: str = "udp", ssrc: str | None = "0200000001", cseq: int = 20, session: str = "Play",
                extra_sdp: tuple[str, ...] = (), rtpmaps: tuple[str, ...] | None = None,
                subject_ssrc: str | None = None) -> SipRequest:
    """A live-view INVITE as GB/T 28181 platforms send it (Subject, recvonly offer, PS/H264/MPEG4, y=)."""
    host, port = platform
    if mode == "udp":
        proto, setup = "RTP/AVP", []
    else:
        proto = "TCP/RTP/AVP"
        setup = [f"a=setup:{'passive' if mode == 'tcp-passive' else 'active'}", "a=connection:new"]
    maps = list(rtpmaps) if rtpmaps is not None else [
        "a=rtpmap:96 PS/90000", "a=rtpmap:98 H264/90000", "a=rtpmap:97 MPEG4/90000"]
    formats = " ".join(m.split(":")[1].split()[0] for m in maps) or "96"
    sdp = "\r\n".join([
        "v=0", f"o={SERVER_ID} 0 0 IN IP4 {host}", f"s={session}", f"c=IN IP4 {host}", "t=0 0",
        f"m=video {media_port} {proto} {formats}", *setup, "a=recvonly", *maps, *extra_sdp,
        *([f"y={ssrc}"] if ssrc else []), "",
    ]).encode()
    h = Headers()
    h.add("Via", f"SIP/2.0/UDP {host}:{port};rport;branch=z9hG4bK{secrets.token_hex(8)}")
    h.add("From", f"<sip:{SERVER_ID}@{REALM}>;tag={secrets.token_hex(4)}")
    h.add("To", f"<sip:{channel_id}@{REALM}>")
    h.add("Call-ID", f"{secrets.token_hex(8)}@{host}")
    h.add("CSeq", f"{cseq} INVITE")
    h.add("Contact", f"<sip:{SERVER_ID}@{host}:{port}>")
    h.add("Subject", f"{channel_id}:{subject_ssrc or ssrc or '0'},{SERVER_ID}:0")
    h.add("Max-Forwards", "70")
    h.add("Content-Type", "APPLICATION/SDP")
    return SipRequest("INVITE", f"sip:{channel_id}@{device[0]}:{device[1]}", h, sdp)


def in_dialog(invite: SipRequest, response: SipResponse, method: str, cseq: int,
              via: tuple[str, int] | None = None) -> SipRequest:
    """ACK / BYE / INFO from the platform within the dialog the 200 OK to *invite* set up."""
    src = invite.headers
    host, port = via or (HOST, 5060)
    h = Headers()
    h.add("Via", f"SIP/2.0/UDP {host}:{port};rport;branch=z9hG4bK{secrets.token_hex(8)}")
    h.add("From", src.get("From") or "")
    h.add("To", response.headers.get("To") or "")
    h.add("Call-ID", src.get("Call-ID") or "")
    h.add("CSeq", f"{cseq} {method}")
    h.add("Max-Forwards", "70")
    target = str(parse_name_addr(response.headers.get("Contact") or "").uri)
    return SipRequest(method, target, h, b"")


async def until(predicate, limit: float = 3.0) -> bool:
    """Poll *predicate* every 20 ms for at most *limit* seconds."""
    for _ in range(max(1, int(limit / 0.02))):
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return bool(predicate())


def answer_media(sdp: str) -> tuple[str, int]:
    host, port = "", 0
    for line in sdp.splitlines():
        if line.startswith("c=IN IP4 "):
            host = line.split()[-1]
        elif line.startswith("m=video "):
            port = int(line.split()[1])
    return host, port


def sdp_lines(sdp: str) -> list[str]:
    return [line.strip() for line in sdp.splitlines() if line.strip()]
