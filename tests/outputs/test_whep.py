"""WHEP sessions: an aiortc client in this process negotiates with WhepSession and receives the video."""

from __future__ import annotations

import asyncio

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from media_relay.outputs.transcode import Transcoder
from media_relay.outputs.whep import RtpClock, WhepError, WhepRegistry, WhepSession, h264_source
from tests.outputs._media import FakeReader, encode_access_units

pytestmark = pytest.mark.usefixtures("loopback_ice")


class Viewer:
    """A WHEP client: recvonly video (and audio, as browsers offer), the track when it arrives."""

    def __init__(self, *, audio: bool = False, codecs: str | None = None) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        if audio:
            self.pc.addTransceiver("audio", direction="recvonly")
        video = self.pc.addTransceiver("video", direction="recvonly")
        if codecs:
            video.setCodecPreferences([c for c in RTCRtpReceiver.getCapabilities("video").codecs
                                       if c.mimeType.lower() == codecs])
        self.track = asyncio.get_running_loop().create_future()
        self.pc.on("track", lambda track: track.kind == "video" and self.track.set_result(track))

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def accept(self, answer: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    async def frames(self, n: int, timeout: float = 10.0):
        track = await asyncio.wait_for(self.track, timeout)
        return [await asyncio.wait_for(track.recv(), timeout) for _ in range(n)]


def live_reader(codec: str, **kw) -> FakeReader:
    return FakeReader(encode_access_units(codec, frames=50, width=320, height=240, **kw),
                      interval=0.01, loop=True)


async def test_h264_passthrough_and_close():
    reader = live_reader("h264")
    registry = WhepRegistry()
    viewer = Viewer(audio=True)
    session, answer = await registry.create(reader, await viewer.offer())
    assert registry.get(session.id) is session and len(registry) == 1
    assert "H264/90000" in answer and "packetization-mode=1" in answer
    assert "VP8" not in answer and "typ host" in answer and "a=sendonly" in answer
    await viewer.accept(answer)

    frames = await viewer.frames(10)
    assert {(f.width, f.height) for f in frames} == {(320, 240)}
    assert session.state == "connected"
    stats = await session.stats()
    assert stats["frames_sent"] >= 10 and stats["keyframes_sent"] >= 1
    assert stats["packets_sent"] > 10 and stats["codec"]["mimeType"] == "video/H264"
    assert stats["codec"]["parameters"]["packetization-mode"] == "1"

    (listed,) = await registry.describe()
    assert listed["id"] == session.id and listed["state"] == "connected"

    assert await registry.close(session.id)
    assert session.closed and session.state == "closed" and reader.closed and len(registry) == 0
    assert not await registry.close(session.id)
    track = await viewer.track
    with pytest.raises(MediaStreamError):  # the viewer sees the end (RTCP BYE / DTLS close)
        while True:
            await asyncio.wait_for(track.recv(), 5)
    await viewer.pc.close()


async def test_h265_source_through_transcoder():
    reader = live_reader("h265")
    source = h264_source(reader)
    assert isinstance(source, Transcoder)
    assert h264_source(live_reader("h264")).codec == "h264"
    registry = WhepRegistry()
    viewer = Viewer()
    session, answer = await registry.create(source, await viewer.offer())
    await viewer.accept(answer)
    frames = await viewer.frames(5)
    assert {(f.width, f.height) for f in frames} == {(320, 240)}
    # a PLI from the viewer reaches the transcoder (aiortc calls the sender's _send_keyframe on PLI/FIR)
    session.sender._send_keyframe()
    session.sender._send_keyframe()  # rate-limited: one request per second
    assert session.keyframe_requests == 1 and source._force_keyframe
    await registry.close_all()
    assert len(registry) == 0 and source.closed and reader.closed
    await viewer.pc.close()


async def test_keyframe_request_reaches_reader():
    reader = live_reader("h264")
    session = WhepSession(reader)
    viewer = Viewer()
    await viewer.accept(await session.answer(await viewer.offer()))
    await viewer.frames(1)
    session.sender._send_keyframe()
    assert reader.keyframe_requests == 1
    await session.close()
    await viewer.pc.close()


async def test_offer_without_h264_is_refused():
    reader = live_reader("h264")
    registry = WhepRegistry()
    viewer = Viewer(codecs="video/vp8")
    with pytest.raises(WhepError) as err:
        await registry.create(reader, await viewer.offer())
    assert err.value.status in (400, 406)
    assert reader.closed and len(registry) == 0
    await viewer.pc.close()


async def test_bad_offers():
    registry = WhepRegistry()
    for offer in ("v=0\r\n", "not sdp at all"):
        reader = live_reader("h264")
        with pytest.raises(WhepError):
            await registry.create(reader, offer)
        assert reader.closed
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("audio", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    with pytest.raises(WhepError):
        await registry.create(live_reader("h264"), pc.localDescription.sdp)
    await pc.close()
    assert len(registry) == 0


async def test_session_ends_with_the_source():
    reader = FakeReader(encode_access_units("h264", frames=20), interval=0.01)
    registry = WhepRegistry()
    viewer = Viewer()
    session, answer = await registry.create(reader, await viewer.offer())
    await viewer.accept(answer)
    await viewer.frames(3)
    await asyncio.wait_for(session.wait_closed(), 5)
    assert len(registry) == 0 and session.track.frames_sent == 20
    await viewer.pc.close()


async def test_never_connected_times_out():
    reader = live_reader("h264")
    registry = WhepRegistry()
    viewer = Viewer()
    session, _ = await registry.create(reader, await viewer.offer(), connect_timeout=0.3)
    await asyncio.wait_for(session.wait_closed(), 5)  # the viewer never applied the answer
    assert reader.closed and len(registry) == 0
    await viewer.pc.close()


async def test_registry_limit_and_reanswer():
    registry = WhepRegistry(max_sessions=1)
    viewer = Viewer()
    offer = await viewer.offer()
    session, _ = await registry.create(live_reader("h264"), offer)
    with pytest.raises(WhepError) as err:
        await session.answer(offer)
    assert err.value.status == 409
    second = live_reader("h264")
    with pytest.raises(WhepError) as err:
        await registry.create(second, offer)
    assert err.value.status == 503 and second.closed
    await registry.close_all()
    await viewer.pc.close()


def test_rtp_clock_follows_source_but_not_ahead_of_wall_clock():
    now = [100.0]
    clock = RtpClock(now=lambda: now[0])
    # a burst: the GOP since the last keyframe arrives at once (source spacing 40 ms)
    burst = [clock.stamp(1000 + i * 3600) for i in range(5)]
    assert burst == [0, 1, 2, 3, 4]
    # then live, one frame every 40 ms: stamps advance by the source spacing
    live = []
    for i in range(5, 10):
        now[0] += 0.04
        live.append(clock.stamp(1000 + i * 3600))
    steps = [b - a for a, b in zip(live, live[1:], strict=False)]
    assert steps == [3600] * 4
    # late frames keep the source spacing (jitter is not baked into the timestamps)
    now[0] += 0.2
    late = clock.stamp(1000 + 10 * 3600)
    assert late - live[-1] == 3600
    # no source timestamps: the wall clock
    t0 = clock.stamp(None)
    now[0] += 1.0
    assert clock.stamp(None) - t0 == 90_000


async def test_registry_under_a_caller_chosen_id_and_on_closed():
    """The HTTP layer's pattern: answer with a bare session, file it under the viewer session's id."""
    reader = live_reader("h264")
    registry = WhepRegistry()
    viewer = Viewer()
    whep = WhepSession(reader)
    answer = await whep.answer(await viewer.offer())
    registry.add("viewer-1", whep)
    closed = []
    whep.on_closed = lambda: closed.append(True)
    assert whep.id == "viewer-1" and registry.get("viewer-1") is whep
    await viewer.accept(answer)
    await viewer.frames(2)
    await viewer.pc.close()  # the viewer goes away: DTLS close -> connection closed -> session ends
    await asyncio.wait_for(whep.wait_closed(), 10)
    assert closed == [True] and "viewer-1" not in registry and reader.closed
