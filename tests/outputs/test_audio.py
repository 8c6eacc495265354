"""Camera audio on the outputs: G.711 -> AAC on the PS clock, HTTP-FLV with the Stream's audio (ffprobe and
ffmpeg as the oracle), WHEP with an Opus track that an aiortc client receives and decodes."""

from __future__ import annotations

import asyncio

import av
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from media_relay.outputs.audio import AacTranscoder, AudioDecoder, adts_header
from media_relay.outputs.flv import TAG_AUDIO, audio_codec_of, flv_stream, iter_tags
from media_relay.outputs.whep import WhepSession
from media_relay.types import AccessUnit
from tests.outputs._audio_media import (
    CLOCK,
    av_units,
    feed_ps,
    flv_timing,
    g711_units,
    new_stream,
    pcm_rms_at,
    ps_packs,
)
from tests.outputs._media import FakeReader


def decode_aac(aus: list[AccessUnit]) -> np.ndarray:
    ctx = av.CodecContext.create("aac", "r")
    out = []
    for au in aus:
        for f in ctx.decode(av.Packet(au.data)):
            out.append(f.to_ndarray().reshape(-1))
    return np.concatenate(out)


# ------------------------------------------------------------------------------------------ G.711 -> AAC
@pytest.mark.parametrize("codec", ["g711a", "g711u"])
def test_g711_to_aac_keeps_the_tone_and_the_ps_clock(codec):
    offset = (1 << 33) - 45_000  # the PS clock wraps half a second in
    units = g711_units(codec, 2.0, pts_offset=offset)
    aac = AacTranscoder()
    out = [a for u in units for a in aac.feed(u)] + aac.flush()
    step = 1024 * CLOCK // 8000
    assert all(a.kind == "audio" and a.codec == "aac" for a in out)
    assert abs(len(out) - 2.0 * 8000 / 1024) <= 2
    # the priming frame holds the 1024 samples before the first input sample; then 128 ms apart
    assert out[0].pts == (offset - step) % (1 << 33)
    assert all((b.pts - a.pts) % (1 << 33) == step for a, b in zip(out, out[1:], strict=False))
    assert out[0].data[:2] == b"\xff\xf1" and out[0].data[:7] == adts_header(len(out[0].data) - 7, 8000, 1)
    pcm = decode_aac(out)[1024:16000]
    spectrum = np.abs(np.fft.rfft(pcm)) ** 2
    freqs = np.fft.rfftfreq(len(pcm), 1 / 8000)
    assert spectrum[(freqs > 420) & (freqs < 460)].sum() / spectrum.sum() > 0.9
    assert 0.15 < float(np.sqrt(np.mean(pcm**2))) < 0.3  # 0.3 amplitude sine: RMS 0.21


def test_g711_to_aac_follows_a_gap_in_the_camera_audio():
    first = list(g711_units("g711a", 1.0))
    later = [AccessUnit("audio", "g711a", u.data, u.pts + 3 * CLOCK, u.pts + 3 * CLOCK) for u in first]
    aac = AacTranscoder()
    out = [a for u in first + later for a in aac.feed(u)]
    step = 1024 * CLOCK // 8000
    gaps = sorted((b.pts - a.pts) % (1 << 33) for a, b in zip(out, out[1:], strict=False))
    # the 2 s hole stays a hole (later audio keeps its own time); everything else 128 ms apart
    assert abs(gaps[-1] - (2 * CLOCK + step)) < 0.05 * CLOCK and set(gaps[:-1]) == {step}
    assert abs(out[-1].pts - (later[-1].pts - 2 * 1024 * CLOCK // 8000)) < 0.2 * CLOCK


def test_audio_decoder_gives_contiguous_48k_frames():
    dec = AudioDecoder()
    frames = [f for u in g711_units("g711u", 1.0) for f in dec.decode(u)]
    assert {(f.format.name, f.layout.name, f.sample_rate, f.samples) for f in frames} == {
        ("s16", "mono", 48000, 960)}  # 20 ms: one Opus packet each
    assert all(b.pts == a.pts + a.samples for a, b in zip(frames, frames[1:], strict=False))
    assert abs(sum(f.samples for f in frames) - 48000) < 1000
    rms, share = pcm_rms_at(frames)
    assert rms > 0.15 and share > 0.9


# ------------------------------------------------------------------------------------------ HTTP-FLV
@pytest.mark.parametrize("codec", ["aac", "g711a", "g711u"])
async def test_flv_of_a_stream_reader_carries_its_audio(tmp_path, codec):
    """The unwatermarked path (a Stream reader, as the tagged passthrough reads it): PS with audio ->
    FLV with AAC audio (G.711 transcoded), decodable, as long as the video."""
    stream = new_stream()
    reader = stream.add_reader()
    feeder = asyncio.create_task(feed_ps(stream, ps_packs(av_units(codec, 3.0), codec), 0.002))
    assert audio_codec_of(reader) is None  # nothing demuxed yet: decided at the first keyframe
    data = b"".join([c async for c in flv_stream(reader)])
    await feeder
    assert data[4] == 0x05  # audio and video announced
    atags = [t for t in iter_tags(data) if t.type == TAG_AUDIO]
    assert atags and {t.body[0] >> 4 for t in atags} == {10}  # AAC
    path = tmp_path / f"{codec}.flv"
    path.write_bytes(data)
    info = flv_timing(path)
    audio, video = info["audio"], info["video"]
    assert video["codec_name"] == "h264" and int(video["nb_read_frames"]) == 75
    assert audio["codec_name"] == "aac" and audio["sample_rate"] == ("16000" if codec == "aac" else "8000")
    assert int(audio["nb_read_frames"]) >= 20
    assert abs(audio["start"] - video["start"]) < 0.5, info
    assert abs(audio["end"] - video["end"]) < 0.5, info


async def test_flv_without_audio_does_not_announce_it():
    stream = new_stream()
    reader = stream.add_reader()
    video = [au for au in av_units("g711a", 1.0) if au.kind == "video"]
    feeder = asyncio.create_task(feed_ps(stream, ps_packs(video, None), 0.001, tail=0.1))
    data = b"".join([c async for c in flv_stream(reader)])
    await feeder
    assert data[4] == 0x01 and not any(t.type == TAG_AUDIO for t in iter_tags(data))


# ------------------------------------------------------------------------------------------ WHEP
class AvViewer:
    """A browser-like WHEP client: recvonly audio and video; the tracks as they arrive."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc.addTransceiver("audio", direction="recvonly")
        self.pc.addTransceiver("video", direction="recvonly")
        loop = asyncio.get_running_loop()
        self.tracks = {"audio": loop.create_future(), "video": loop.create_future()}
        self.pc.on("track", lambda track: self.tracks[track.kind].set_result(track))

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def accept(self, answer: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    async def recv(self, kind: str, n: int, timeout: float = 15.0) -> list:
        track = await asyncio.wait_for(self.tracks[kind], timeout)
        return [await asyncio.wait_for(track.recv(), timeout) for _ in range(n)]


def audio_m_section(sdp: str) -> str:
    return "m=audio" + sdp.split("m=audio", 1)[1].split("m=video", 1)[0]


@pytest.mark.usefixtures("loopback_ice")
@pytest.mark.parametrize("codec", ["g711a", "aac"])
async def test_whep_sends_the_audio_as_opus(codec):
    aus = av_units(codec, 2.0)
    source = FakeReader(aus, interval=2.0 / len(aus), loop=True)  # about real time
    session = WhepSession(source)
    viewer = AvViewer()
    try:
        answer = await session.answer(await viewer.offer())
        audio = audio_m_section(answer)
        assert "opus/48000/2" in audio and "a=sendonly" in audio
        assert audio.split("\r\n")[0].split()[3] == next(
            line.split(":")[1].split()[0] for line in audio.split("\r\n") if "opus/48000" in line)  # first
        await viewer.accept(answer)
        video_frames = await viewer.recv("video", 5)
        assert {(f.width, f.height) for f in video_frames} == {(320, 240)}
        frames = (await viewer.recv("audio", 60))[10:]  # past the decoder's start
        # one Opus packet per 20 ms (several packets under one RTP timestamp would be dropped)
        steps = [b.pts - a.pts for a, b in zip(frames, frames[1:], strict=False)]
        assert sorted(steps)[len(steps) // 2] == 960, steps
        rms, share = pcm_rms_at(frames)
        assert rms > 0.05 and share > 0.5, (rms, share)  # the camera's 440 Hz tone, through Opus
        stats = await session.stats()
        assert stats["audio_frames_sent"] >= 50
    finally:
        await session.close()
        await viewer.pc.close()
    assert source.closed


@pytest.mark.usefixtures("loopback_ice")
async def test_whep_offer_without_audio_still_plays_video():
    aus = av_units("g711a", 2.0)
    session = WhepSession(FakeReader(aus, interval=2.0 / len(aus), loop=True))
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="recvonly")
    got = asyncio.get_running_loop().create_future()
    pc.on("track", got.set_result)
    try:
        await pc.setLocalDescription(await pc.createOffer())
        answer = await session.answer(pc.localDescription.sdp)
        assert "m=audio" not in answer and session.audio_track is None
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        track = await asyncio.wait_for(got, 10)
        frames = [await asyncio.wait_for(track.recv(), 10) for _ in range(5)]
        assert frames[-1].width == 320
    finally:
        await session.close()
        await pc.close()
