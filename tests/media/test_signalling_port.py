"""The media relay's typed seams: a test double of :class:`media_relay.signalling.Signalling` drives the
StreamManager (INVITE, typed refusals, the device's BYE and going offline, our BYE after the idle delay),
and ``MediaService.open_viewer`` / ``open_output`` compose a viewer's source from the injected
:class:`media_relay.viewers.ViewerTransformFactory`."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from gbcore.ids import ChannelRef
from media_relay.ports import PortPool, SsrcAllocator
from media_relay.rtp import packetize_ps
from media_relay.service import MediaService
from media_relay.signalling import DeviceRefused, InviteAnswer, Signalling, SignallingTimeout
from media_relay.stream import MediaError, StreamManager
from media_relay.viewers import (
    TransformCapacityExceeded,
    Viewer,
    ViewerPlan,
    ViewerTransformFactory,
)
from tests.media.fake_signalling import FakeSignalling

DEV = "34020000001320000001"
CHANNEL = ChannelRef(DEV, "34020000001310000001")


def _packs(data: bytes) -> list[bytes]:
    starts = []
    i = data.find(b"\x00\x00\x01\xba")
    while i >= 0:
        starts.append(i)
        i = data.find(b"\x00\x00\x01\xba", i + 4)
    return [data[a:b] for a, b in zip(starts, starts[1:] + [len(data)], strict=True)]


class _Sender(asyncio.DatagramProtocol):
    pass


def udp_device(ps: bytes, tasks: set[asyncio.Task]):
    """An ``on_invite`` answering 200 and sending ``ps`` as RTP over UDP to the offered port."""

    async def send(port: int, ssrc: int) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(_Sender, remote_addr=("127.0.0.1", port))
        seq = 1
        try:
            for k, pack in enumerate(_packs(ps)[:200]):
                for p in packetize_ps(pack, ssrc=ssrc, sequence=seq, timestamp=k * 3600):
                    transport.sendto(p.to_bytes())
                    seq += 1
                await asyncio.sleep(0.002)
        finally:
            transport.close()

    async def on_invite(channel: ChannelRef, *, media_ip: str, media_port: int, ssrc: str,
                        transport: str) -> InviteAnswer:
        tasks.add(asyncio.ensure_future(send(media_port, int(ssrc))))
        return InviteAnswer(f"call-{len(tasks)}@fake", ssrc, None, transport)

    return on_invite


@pytest.fixture
def ps(shared_dir) -> bytes:
    return (shared_dir / "vectors" / "ps" / "zlm_h264_aac.ps").read_bytes()


@pytest.fixture
async def tasks():
    running: set[asyncio.Task] = set()
    yield running
    for t in running:
        t.cancel()
    await asyncio.gather(*running, return_exceptions=True)


def manager(signalling: Signalling, **kw: Any) -> StreamManager:
    return StreamManager(signalling, ports=PortPool(32000, 32099, "127.0.0.1"), ssrcs=SsrcAllocator("3402000000"),
                         media_host="127.0.0.1", media_ip="127.0.0.1", **kw)


# ------------------------------------------------------------------------------------- the signalling port
async def test_a_protocol_double_drives_the_stream_manager(ps, tasks) -> None:
    signalling = FakeSignalling({DEV})
    signalling.on_invite = udp_device(ps, tasks)
    assert isinstance(signalling, Signalling)
    mgr = manager(signalling, idle_timeout=0.1)
    try:
        reader = await asyncio.wait_for(mgr.open_reader(CHANNEL), 10)
        au = await asyncio.wait_for(reader.get(), 5)
        assert au.keyframe and reader.codec == "h264"
        channel, offer = signalling.invites[0]
        assert channel == CHANNEL and offer["media_ip"] == "127.0.0.1" and offer["transport"] == "udp"
        call_id = mgr.streams[(CHANNEL, "main")].call_id
        reader.close()  # the last reader leaves: BYE after the idle delay
        for _ in range(50):
            if signalling.byes:
                break
            await asyncio.sleep(0.02)
        assert signalling.byes == [(call_id, "idle: no viewer left")] and (CHANNEL, "main") not in mgr.streams
    finally:
        mgr.close_all("test over")


async def test_the_device_hanging_up_or_going_offline_ends_the_stream(ps, tasks) -> None:
    signalling = FakeSignalling({DEV})
    signalling.on_invite = udp_device(ps, tasks)
    mgr = manager(signalling)
    try:
        reader = await asyncio.wait_for(mgr.open_reader(CHANNEL), 10)
        signalling.device_hung_up(mgr.streams[(CHANNEL, "main")].call_id, "BYE from the device")
        assert (CHANNEL, "main") not in mgr.streams and reader.stream.close_reason == "BYE from the device"
        assert signalling.byes == []  # the device ended the call: no BYE back
        reader = await asyncio.wait_for(mgr.open_reader(CHANNEL), 10)
        signalling.device_went_offline(DEV, "keepalive_timeout")
        assert (CHANNEL, "main") not in mgr.streams and reader.stream.close_reason == "device offline: keepalive_timeout"
    finally:
        mgr.close_all("test over")


@pytest.mark.parametrize(("error", "status"), [(DeviceRefused(486, "Busy Here"), 486),
                                               (SignallingTimeout("no answer"), None)])
async def test_typed_refusals_become_media_errors(error: Exception, status: int | None) -> None:
    async def refuse(*_a: Any, **_kw: Any) -> InviteAnswer:
        raise error

    signalling = FakeSignalling({DEV}, on_invite=refuse)
    mgr = manager(signalling)
    with pytest.raises(MediaError) as caught:
        await mgr.open_reader(CHANNEL)
    assert caught.value.code == "device_refused" and caught.value.status == status
    assert str(caught.value) == str(error) and not mgr.streams
    with pytest.raises(MediaError) as caught:
        await manager(FakeSignalling()).open_reader(CHANNEL)
    assert caught.value.code == "device_offline"


# ------------------------------------------------------------------------------------- viewer composition
@dataclass
class Plan:
    on: bool
    code: str | None = "ABCD1234"
    released: int = 0

    def release(self) -> None:
        self.released += 1


class Wrapped:
    """A source made by the factory: records what it wraps."""

    def __init__(self, kind: str, inner: Any) -> None:
        self.kind = kind
        self.inner = inner
        self.closed = False
        self.codec = "h264"
        self.params = None

    async def get(self) -> Any:
        return await self.inner.get()

    def close(self) -> None:
        self.closed = True


@dataclass
class Factory:
    on: bool = False
    full: bool = False
    plans: list[tuple[Viewer, ChannelRef, str, Plan]] = field(default_factory=list)

    def plan(self, viewer: Viewer, channel: ChannelRef, session_id: str) -> Plan:
        if self.full:
            raise TransformCapacityExceeded(3)
        plan = Plan(self.on)
        self.plans.append((viewer, channel, session_id, plan))
        return plan

    def draw(self, reader: Any, plan: ViewerPlan, output: str) -> Wrapped | None:
        if not plan.on:
            return None
        reader.close()
        return Wrapped(f"drawn-{output}", reader.stream)

    def tag(self, source: Any, plan: ViewerPlan) -> Wrapped:
        return Wrapped("tagged", source)


@pytest.mark.parametrize("on", [False, True])
async def test_open_viewer_composes_the_injected_transform(ps, tasks, on: bool) -> None:
    factory = Factory(on=on)
    assert isinstance(factory, ViewerTransformFactory)
    signalling = FakeSignalling({DEV})
    signalling.on_invite = udp_device(ps, tasks)
    media = MediaService(signalling, rtp_ports=(32100, 32199), domain="3402000000", media_host="127.0.0.1",
                         media_ip="127.0.0.1", transforms=factory)
    viewer = Viewer(user_id=7, username="alice", display_name="Alice", client_ip="192.0.2.1", roles=("viewer",))
    try:
        session = await asyncio.wait_for(media.open_viewer(CHANNEL, viewer, transport="udp"), 10)
        [(planned_for, channel, session_id, plan)] = factory.plans
        assert (planned_for, channel, session_id) == (viewer, CHANNEL, session.session_id)
        assert session.plan is plan and session.user_id == 7 and session.client_ip == "192.0.2.1"

        attached = media.open_output(session.session_id, "flv")
        assert attached is session and media.open_output(session.session_id, "flv") is None  # once
        source = session.source
        if on:
            assert source.kind == "drawn-flv" and source.inner is session.reader.stream and session.reader.closed
        else:
            assert source.kind == "tagged" and source.inner is session.reader
            au = await asyncio.wait_for(source.get(), 5)
            assert au.keyframe
        assert media.close_session(session.session_id, "test")
        assert plan.released == 1 and source.closed  # the slot is freed, the output ends with the session
    finally:
        await media.close()


async def test_no_capacity_opens_nothing() -> None:
    signalling = FakeSignalling({DEV})
    media = MediaService(signalling, rtp_ports=(32200, 32299), domain="3402000000", transforms=Factory(full=True))
    with pytest.raises(TransformCapacityExceeded) as caught:
        await media.open_viewer(CHANNEL, Viewer(user_id=1, username="bob"))
    assert caught.value.limit == 3 and not signalling.invites and not media.sessions
