"""Media legs toward upper platforms (cascade): a channel's Stream, fed with a real PS capture over RTP by a
test device, sent up as RTP/PS over UDP, TCP active (a listener that opens late) and TCP passive; the
receiver reassembles the PS and ffprobe decodes it. Also: nothing before start(), our SSRC, one upstream
for a local viewer and an upper, the idle teardown after the leg closes, on_end once, the watermark
factory used with the platform as the viewer, backpressure and a passive accept timeout."""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gbcore.ids import ChannelRef
from media_relay.rtp import Rfc4571Framer, RtpPacket, packetize_ps
from media_relay.service import MediaService
from media_relay.signalling import InviteAnswer
from media_relay.stream import MediaError
from media_relay.types import AccessUnit, VideoParams
from media_relay.upward import UpwardLeg, UpwardTarget, check_target, with_parameter_sets
from media_relay.viewers import Viewer
from tests.media.conftest import FFPROBE_CODEC, ffprobe_streams
from tests.media.fake_signalling import FakeSignalling

DEV = "34020000001320000001"
CHANNEL = ChannelRef(DEV, "34020000001310000001")
PLATFORM = Viewer(user_id=0, username="upper:34020000002000000001", display_name="省厅平台")
SSRC = 123456789
PHASE_ONE = 120  # packs the device sends before the test lets the rest go (keyframes follow at 131, 197, ...)

_ports = iter(range(35000, 36000, 20))


def packs_of(data: bytes) -> list[bytes]:
    starts = []
    i = data.find(b"\x00\x00\x01\xba")
    while i >= 0:
        starts.append(i)
        i = data.find(b"\x00\x00\x01\xba", i + 4)
    return [data[a:b] for a, b in zip(starts, [*starts[1:], len(data)], strict=True)]


class PsDevice:
    """Answers the INVITE and sends the capture as RTP/PS over UDP to the offered port: the first
    ``PHASE_ONE`` packs at once, the rest after :meth:`go`."""

    def __init__(self, ps: bytes, interval: float = 0.003) -> None:
        self.packs = packs_of(ps)
        self.interval = interval
        self.limit = PHASE_ONE
        self._more = asyncio.Event()
        self.paused = asyncio.Event()  # reached the limit
        self.done = asyncio.Event()
        self.tasks: set[asyncio.Task] = set()

    def go(self) -> None:
        self.limit = len(self.packs)
        self.paused.clear()
        self._more.set()

    async def _send(self, port: int, ssrc: int) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                           remote_addr=("127.0.0.1", port))
        seq = 1
        try:
            for k, pack in enumerate(self.packs):
                while k >= self.limit:
                    self.paused.set()
                    self._more.clear()
                    await self._more.wait()
                for p in packetize_ps(pack, ssrc=ssrc, sequence=seq, timestamp=k * 3600):
                    transport.sendto(p.to_bytes())
                    seq += 1
                await asyncio.sleep(self.interval)
        finally:
            transport.close()
            self.done.set()

    async def on_invite(self, channel: ChannelRef, *, media_ip: str, media_port: int, ssrc: str,
                        transport: str) -> InviteAnswer:
        self.tasks.add(asyncio.ensure_future(self._send(media_port, int(ssrc))))
        return InviteAnswer(f"call-{len(self.tasks)}@fake", ssrc, None, transport)

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


class UdpReceiver(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.packets: list[bytes] = []

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.packets.append(data)


class TcpReceiver(asyncio.Protocol):
    """RFC 4571 frames from one connection (``read=False``: reads nothing until :meth:`resume`)."""

    def __init__(self, read: bool = True) -> None:
        self.framer = Rfc4571Framer()
        self.packets: list[bytes] = []
        self.transport: asyncio.Transport | None = None
        self.lost = asyncio.Event()
        self.read = read

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        if not self.read:
            transport.pause_reading()

    def resume(self) -> None:
        assert self.transport is not None
        self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        self.packets.extend(self.framer.feed(data))

    def connection_lost(self, exc: Any) -> None:
        self.lost.set()


@dataclass
class Env:
    media: MediaService
    signalling: FakeSignalling
    device: PsDevice


@pytest.fixture(params=["zlm_h264_aac.ps"])
async def env(request, shared_dir: Path):
    ps = (shared_dir / "vectors" / "ps" / request.param).read_bytes()
    device = PsDevice(ps)
    signalling = FakeSignalling({DEV}, on_invite=device.on_invite)
    low = next(_ports)
    media = MediaService(signalling, rtp_ports=(low, low + 19), domain="3402000000", media_host="127.0.0.1",
                         media_ip="127.0.0.1", idle_timeout=0.3)
    yield Env(media, signalling, device)
    await media.close()
    await device.stop()


async def until(predicate: Any, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def settle(count: Any, quiet: float = 0.3, timeout: float = 10.0) -> None:
    """Until ``count()`` stops changing for ``quiet`` seconds."""
    deadline = time.monotonic() + timeout
    last, since = count(), time.monotonic()
    while time.monotonic() - since < quiet:
        if time.monotonic() > deadline:
            raise AssertionError("never settled")
        await asyncio.sleep(0.05)
        now = count()
        if now != last:
            last, since = now, time.monotonic()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_rtp(raw: list[bytes], ssrc: int = SSRC) -> bytes:
    """The PS carried by ``raw`` RTP packets, checking SSRC, payload type, sequence and marker bits."""
    pkts = [RtpPacket.parse(d) for d in raw]
    assert pkts and {p.ssrc for p in pkts} == {ssrc} and {p.payload_type for p in pkts} == {96}
    for a, b in zip(pkts, pkts[1:], strict=False):
        assert b.sequence == (a.sequence + 1) & 0xFFFF
        if b.timestamp != a.timestamp:
            assert a.marker  # the last packet of a unit
    assert pkts[-1].marker
    first = pkts[0].payload
    assert first[:4] == b"\x00\x00\x01\xba" and b"\x00\x00\x01\xbb" in first[:64]  # a keyframe pack first
    return b"".join(p.payload for p in pkts)


def probe(ps: bytes, tmp_path: Path, name: str) -> dict[str, dict]:
    path = tmp_path / name
    path.write_bytes(ps)
    streams = ffprobe_streams(path, count_frames=True)
    return {FFPROBE_CODEC.get(s["codec_name"], s["codec_name"]): s for s in streams}


async def run_phases(env: Env, leg: UpwardLeg, received: Any) -> None:
    """The device's first phase flows while the leg waits (nothing may arrive), then start() and the rest."""
    await asyncio.wait_for(env.device.paused.wait(), 10)
    await asyncio.sleep(0.3)
    assert received() == 0 and leg.packets == 0 and leg.state in ("waiting", "connecting")
    leg.start()
    leg.start()  # idempotent
    env.device.go()
    await asyncio.wait_for(env.device.done.wait(), 20)
    await settle(received)


# ------------------------------------------------------------------------------------- transports
@pytest.mark.parametrize("vector", ["zlm_h264_aac.ps", "zlm_h265_aac.ps"])
async def test_udp_leg_sends_decodable_ps(shared_dir: Path, tmp_path: Path, vector: str) -> None:
    ps = (shared_dir / "vectors" / "ps" / vector).read_bytes()
    device = PsDevice(ps)
    signalling = FakeSignalling({DEV}, on_invite=device.on_invite)
    low = next(_ports)
    media = MediaService(signalling, rtp_ports=(low, low + 19), domain="3402000000", media_host="127.0.0.1",
                         media_ip="127.0.0.1")
    loop = asyncio.get_running_loop()
    sink, receiver = await loop.create_datagram_endpoint(UdpReceiver, local_addr=("127.0.0.1", 0))
    port = sink.get_extra_info("sockname")[1]
    try:
        leg = await asyncio.wait_for(media.open_upward(CHANNEL, PLATFORM, UpwardTarget("127.0.0.1", port, "udp",
                                                                                        None, SSRC)), 10)
        assert leg.local_ip == "127.0.0.1" and low <= leg.local_port <= low + 19 and leg.ssrc == SSRC
        await run_phases(Env(media, signalling, device), leg, lambda: len(receiver.packets))
        stream = check_rtp(receiver.packets)
        codec = "h264" if "h264" in vector else "h265"
        found = probe(stream, tmp_path, "udp.ps")
        assert int(found[codec]["nb_read_frames"]) > 50 and "aac" in found  # from keyframe 100 on, with audio
        assert leg.packets == len(receiver.packets) and leg.bytes == sum(map(len, receiver.packets))
        [item] = media.upward_legs()
        assert item["id"] == leg.id and item["channel"] == CHANNEL.key and item["transport"] == "udp"
        assert item["ssrc"] == SSRC and item["state"] == "sending" and item["packets"] == leg.packets
        assert item["target"] == f"127.0.0.1:{port}" and item["started_at"] is not None
        assert leg.stats()["codec"] == codec
        await leg.close("BYE from the upper")
        assert not media.upward_legs() and leg.state == "ended"
    finally:
        sink.close()
        await media.close()
        await device.stop()
    assert media.manager.ports.in_use() == 0


async def test_tcp_active_retries_until_the_upper_listens(env: Env, tmp_path: Path) -> None:
    port = free_port()
    receiver = TcpReceiver()
    ended: list[str] = []
    leg = await asyncio.wait_for(env.media.open_upward(CHANNEL, PLATFORM,
                                                       UpwardTarget("127.0.0.1", port, "tcp", "active", SSRC),
                                                       on_end=ended.append), 10)
    assert leg.state == "connecting"
    await asyncio.sleep(0.6)  # the upper opens its listener late: our connects are refused meanwhile
    assert leg.connect_attempts >= 2 and leg.state == "connecting"
    server = await asyncio.get_running_loop().create_server(lambda: receiver, "127.0.0.1", port)
    try:
        await until(lambda: receiver.transport is not None, what="the connection")
        peer = receiver.transport.get_extra_info("peername")
        assert peer[1] == leg.local_port  # we connect from the port the answer names
        await run_phases(env, leg, lambda: len(receiver.packets))
        found = probe(check_rtp(receiver.packets), tmp_path, "active.ps")
        assert int(found["h264"]["nb_read_frames"]) > 50
        assert leg.packets == len(receiver.packets)
        receiver.transport.close()  # the upper hangs up: the leg ends by itself, once
        await until(lambda: ended, what="on_end")
        await asyncio.sleep(0.1)
        assert len(ended) == 1 and "TCP" in ended[0] and not env.media.upward
        await leg.close("late close")
        assert len(ended) == 1
    finally:
        server.close()


async def test_tcp_active_gives_up_when_nobody_listens(env: Env) -> None:
    env.media.upward_connect_timeout = 0.5
    ended: list[str] = []
    leg = await asyncio.wait_for(env.media.open_upward(CHANNEL, PLATFORM, UpwardTarget(
        "127.0.0.1", free_port(), "tcp", "active", SSRC), on_end=ended.append), 10)
    await until(lambda: ended, what="on_end")
    assert "cannot connect" in ended[0] and leg.connect_attempts >= 2 and leg.state == "ended"
    assert not env.media.upward and env.media.manager.ports.in_use() == 1  # only the device leg's port


async def test_tcp_passive_takes_the_first_connection(env: Env, tmp_path: Path) -> None:
    leg = await asyncio.wait_for(env.media.open_upward(CHANNEL, PLATFORM,
                                                       UpwardTarget("127.0.0.1", 0, "tcp", "passive", SSRC)), 10)
    loop = asyncio.get_running_loop()
    stranger = socket.socket()
    stranger.bind(("127.0.0.2", 0))  # not the upper's address: it gets nothing
    stranger.setblocking(False)
    await loop.sock_connect(stranger, ("127.0.0.1", leg.local_port))
    _, intruder = await loop.create_connection(TcpReceiver, sock=stranger)
    await asyncio.wait_for(intruder.lost.wait(), 5)
    assert leg.refused_peers == 1 and leg.state == "connecting"
    _, receiver = await loop.create_connection(TcpReceiver, "127.0.0.1", leg.local_port)
    await until(lambda: leg.state != "connecting", what="the accept")
    try:
        _, second = await loop.create_connection(TcpReceiver, "127.0.0.1", leg.local_port)
        await asyncio.wait_for(second.lost.wait(), 5)  # a later connection is not served
    except ConnectionRefusedError:
        pass  # or the listener has already gone
    await run_phases(env, leg, lambda: len(receiver.packets))
    found = probe(check_rtp(receiver.packets), tmp_path, "passive.ps")
    assert int(found["h264"]["nb_read_frames"]) > 50 and "aac" in found
    await leg.close("BYE from the upper")
    await asyncio.wait_for(receiver.lost.wait(), 5)


async def test_tcp_passive_nobody_connecting_ends_the_leg(env: Env) -> None:
    env.media.upward_accept_timeout = 0.3
    ended: list[str] = []
    leg = await asyncio.wait_for(env.media.open_upward(CHANNEL, PLATFORM, UpwardTarget(
        "127.0.0.1", 0, "tcp", "passive", SSRC), on_end=ended.append), 10)
    leg.start()
    await until(lambda: ended, what="on_end")
    await asyncio.sleep(0.1)
    assert len(ended) == 1 and "no TCP connection" in ended[0] and not env.media.upward
    with pytest.raises(OSError):
        await asyncio.get_running_loop().create_connection(asyncio.Protocol, "127.0.0.1", leg.local_port)


async def test_a_slow_tcp_upper_costs_drops_not_memory(env: Env, tmp_path: Path) -> None:
    leg = await asyncio.wait_for(env.media.open_upward(CHANNEL, PLATFORM,
                                                       UpwardTarget("127.0.0.1", 0, "tcp", "passive", SSRC)), 10)
    leg.max_buffer = 32 * 1024
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", leg.local_port))
    sock.setblocking(False)
    _, receiver = await asyncio.get_running_loop().create_connection(lambda: TcpReceiver(read=False), sock=sock)
    await until(lambda: leg._tcp is not None, what="the accept")
    leg._tcp.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    biggest = max(map(len, env.device.packs)) + 4096
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, leg._buffered())
            await asyncio.sleep(0.005)

    watcher = asyncio.ensure_future(watch())
    try:
        await run_phases(env, leg, lambda: leg.units)
    finally:
        watcher.cancel()
    assert leg.dropped > 0 and leg.stats()["dropped"] == leg.dropped
    assert peak <= leg.max_buffer + biggest  # bounded: at most one unit over the limit
    receiver.resume()
    await settle(lambda: len(receiver.packets))
    found = probe(check_rtp(receiver.packets), tmp_path, "slow.ps")  # what got through still decodes
    assert int(found["h264"]["nb_read_frames"]) > 0


# ------------------------------------------------------------------------------------- one upstream
async def test_a_viewer_and_an_upper_share_one_upstream(env: Env) -> None:
    loop = asyncio.get_running_loop()
    sink, _ = await loop.create_datagram_endpoint(UdpReceiver, local_addr=("127.0.0.1", 0))
    try:
        session = await asyncio.wait_for(env.media.open_viewer(CHANNEL, Viewer(user_id=7, username="alice")), 10)
        leg = await asyncio.wait_for(env.media.open_upward(CHANNEL, PLATFORM, UpwardTarget(
            "127.0.0.1", sink.get_extra_info("sockname")[1], "udp", None, SSRC)), 10)
        assert len(env.signalling.invites) == 1  # one INVITE to the device for both
        stream = env.media.manager.streams[(CHANNEL, "main")]
        call_id = stream.call_id
        assert leg.reader.stream is stream and len(stream.readers) == 2
        env.media.close_session(session.session_id, "viewer left")
        await asyncio.sleep(0.6)  # longer than the idle delay: the upper still reads
        assert not stream.closed and not env.signalling.byes
        await leg.close("BYE from the upper")
        assert leg.reader.closed and not stream.readers and not stream.closed  # the idle delay first ...
        await until(lambda: env.signalling.byes, what="the BYE to the device")
        assert stream.closed and env.signalling.byes == [(call_id, "idle: no viewer left")]
        assert env.media.manager.ports.in_use() == 0
    finally:
        sink.close()


async def test_the_upstream_ending_ends_the_leg_once(env: Env) -> None:
    ended: list[str] = []
    leg = await asyncio.wait_for(env.media.open_upward(CHANNEL, PLATFORM, UpwardTarget(
        "127.0.0.1", free_port(), "udp", None, SSRC), on_end=ended.append), 10)
    leg.start()
    call_id = env.media.manager.streams[(CHANNEL, "main")].call_id
    env.signalling.device_hung_up(call_id, "BYE from the device")
    await until(lambda: ended, what="on_end")
    await leg.close("after the end")
    await asyncio.sleep(0.1)
    assert ended == ["upstream ended: BYE from the device"] and leg.state == "ended" and not leg.file_ended
    assert not env.media.upward and env.media.manager.ports.in_use() == 0


async def test_udp_send_errors_are_counted_then_end_the_leg(env: Env) -> None:
    ended: list[str] = []
    leg = await asyncio.wait_for(env.media.open_upward(CHANNEL, PLATFORM, UpwardTarget(
        "127.0.0.1", free_port(), "udp", None, SSRC), on_end=ended.append), 10)  # nobody listens there
    leg.udp_error_limit = 0.3
    await asyncio.wait_for(env.device.paused.wait(), 10)
    leg.start()
    env.device.go()
    await until(lambda: leg.send_errors >= 2, what="ICMP errors")
    assert leg.state == "sending"  # not fatal at once
    await until(lambda: ended, what="on_end")
    assert "keeps refusing" in ended[0] and leg.send_errors >= 3 and leg.stats()["send_errors"] == leg.send_errors


async def test_bad_targets_and_offline_devices_open_nothing(env: Env) -> None:
    with pytest.raises(MediaError) as caught:
        await env.media.open_upward(CHANNEL, PLATFORM, UpwardTarget("upper.example", 9000, "udp", None, SSRC))
    assert caught.value.code == "bad_target"
    env.signalling.online.clear()
    with pytest.raises(MediaError) as caught:
        await env.media.open_upward(CHANNEL, PLATFORM, UpwardTarget("127.0.0.1", 9000, "udp", None, SSRC))
    assert caught.value.code == "device_offline"
    assert not env.media.upward and env.media.manager.ports.in_use() == 0


def test_check_target() -> None:
    assert check_target(UpwardTarget("192.0.2.1", 9000, "udp", None, SSRC)) is None
    assert check_target(UpwardTarget("192.0.2.1", 0, "tcp", "passive", SSRC)) is None
    assert "setup" in check_target(UpwardTarget("192.0.2.1", 9000, "tcp", None, SSRC))
    assert "transport" in check_target(UpwardTarget("192.0.2.1", 9000, "sctp", None, SSRC))
    assert "SSRC" in check_target(UpwardTarget("192.0.2.1", 9000, "udp", None, 1 << 32))
    assert "port" in check_target(UpwardTarget("192.0.2.1", 0, "udp", None, SSRC))
    assert "cannot send" in check_target(UpwardTarget("0.0.0.0", 9000, "udp", None, SSRC))
    assert "payload" in check_target(UpwardTarget("192.0.2.1", 9000, "udp", None, SSRC, payload_type=200))


def test_keyframes_get_the_parameter_sets_they_lack() -> None:
    sps, pps = b"\x67\x64\x00\x1f\xac", b"\x68\xee\x3c\x80"
    idr = AccessUnit("video", "h264", b"\x00\x00\x00\x01\x65\x88\x84", 0, 0, True)
    params = VideoParams("h264", sps=sps, pps=pps)
    assert with_parameter_sets(idr, params) == b"\x00\x00\x00\x01" + sps + b"\x00\x00\x00\x01" + pps + idr.data
    full = AccessUnit("video", "h264", b"\x00\x00\x00\x01" + sps + b"\x00\x00\x00\x01" + pps + idr.data[4:],
                      0, 0, True)
    assert with_parameter_sets(full, params) is full.data
    assert with_parameter_sets(idr, None) is idr.data


# ------------------------------------------------------------------------------------- the watermark
@dataclass
class Plan:
    on: bool
    code: str | None = "UP123456"
    released: int = 0

    def release(self) -> None:
        self.released += 1


class PassThrough:
    """A source made by the fake factory: hands on what it reads, says what it is."""

    def __init__(self, kind: str, inner: Any) -> None:
        self.kind = kind
        self.inner = inner
        self.closed = False

    @property
    def codec(self) -> str | None:
        return self.inner.codec

    @property
    def params(self) -> Any:
        return self.inner.params

    async def get(self) -> AccessUnit:
        return await self.inner.get()

    def close(self) -> None:
        self.closed = True
        self.inner.close()


@dataclass
class Factory:
    on: bool = True
    plans: list[tuple[Viewer, ChannelRef, str, Plan]] = field(default_factory=list)
    drawn: list[tuple[Plan, str]] = field(default_factory=list)
    tagged: list[tuple[Any, Plan]] = field(default_factory=list)

    def plan(self, viewer: Viewer, channel: ChannelRef, session_id: str) -> Plan:
        plan = Plan(self.on)
        self.plans.append((viewer, channel, session_id, plan))
        return plan

    def draw(self, reader: Any, plan: Plan, output: str) -> PassThrough | None:
        if not plan.on:
            return None
        self.drawn.append((plan, output))
        own = reader.stream.add_reader()  # like the shared decoder: its own reader on the Stream
        reader.close()
        return PassThrough("drawn", own)

    def tag(self, source: Any, plan: Plan) -> PassThrough:
        self.tagged.append((source, plan))
        return PassThrough("tagged", source)


@pytest.mark.parametrize("visible", [False, True])
async def test_the_platform_is_the_viewer_of_the_tag_and_the_overlay(shared_dir: Path, visible: bool) -> None:
    ps = (shared_dir / "vectors" / "ps" / "zlm_h264_aac.ps").read_bytes()
    device = PsDevice(ps)
    signalling = FakeSignalling({DEV}, on_invite=device.on_invite)
    factory = Factory(on=True)
    low = next(_ports)
    media = MediaService(signalling, rtp_ports=(low, low + 19), domain="3402000000", media_host="127.0.0.1",
                         media_ip="127.0.0.1", transforms=factory, idle_timeout=0.2)
    loop = asyncio.get_running_loop()
    sink, receiver = await loop.create_datagram_endpoint(UdpReceiver, local_addr=("127.0.0.1", 0))
    try:
        leg = await asyncio.wait_for(media.open_upward(
            CHANNEL, PLATFORM, UpwardTarget("127.0.0.1", sink.get_extra_info("sockname")[1], "udp", None, SSRC),
            visible_watermark=visible), 10)
        [(viewer, channel, session_id, plan)] = factory.plans
        assert (viewer, channel, session_id) == (PLATFORM, CHANNEL, leg.id)
        if visible:
            assert factory.drawn == [(plan, "flv")] and not factory.tagged and leg.source.kind == "drawn"
            assert plan.released == 0  # the overlay's encoder slot is in use
        else:
            # the tag only, on the Stream's reader; the slot the plan reserved is handed back at once
            [(inner, tagged_plan)] = factory.tagged
            assert tagged_plan is plan and inner is leg.reader and not factory.drawn
            assert leg.source.kind == "tagged" and plan.released == 1
        await run_phases(Env(media, signalling, device), leg, lambda: len(receiver.packets))
        assert check_rtp(receiver.packets)  # what the factory's source handed on went up
        await leg.close("BYE from the upper")
        assert plan.released >= 1 and leg.source.closed
        await until(lambda: signalling.byes, what="the idle BYE")  # the drawn path's own reader went too
    finally:
        sink.close()
        await media.close()
        await device.stop()
