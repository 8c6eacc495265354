"""Watermarked viewers keep the channel's audio: PS (a real camera capture with AAC, our muxer with G.711)
-> Stream -> shared decoder -> per-viewer watermark encoder -> HTTP-FLV (AAC; ffprobe/ffmpeg decode it,
as long as the video) or WHEP (Opus from the camera's own audio, received by an aiortc client)."""

from __future__ import annotations

import asyncio

import pytest

from media_relay.outputs.flv import TAG_AUDIO, flv_stream, iter_tags
from media_relay.outputs.whep import WhepSession
from tests.outputs._audio_media import (
    av_units,
    feed_ps,
    flv_timing,
    new_stream,
    pcm_rms_at,
    ps_packs,
    vector_packs,
)
from tests.outputs.conftest import loopback_ice  # noqa: F401 - fixture
from tests.outputs.test_audio import AvViewer
from watermark.pipeline import session_code
from watermark.render import WatermarkText
from watermark.tag import SessionTag, find_tags

NOW = 1_790_000_000.0
TEXT_A = WatermarkText(display_name="张三", account="zhangsan", client_ip="10.1.2.3",
                       session_code=session_code("session-a"))
TEXT_B = WatermarkText(display_name="李四", account="lisi", client_ip="10.1.2.4",
                       session_code=session_code("session-b"))
TAG_A = SessionTag("session-a", 7, "34020000001320000001", 1_790_000_000_000)
TAG_B = SessionTag("session-b", 8, "34020000001320000001", 1_790_000_001_000)


async def flv_bytes(source) -> bytes:
    return b"".join([c async for c in flv_stream(source)])


@pytest.mark.parametrize("media", ["zlm_h264_aac", "g711a"])
async def test_watermarked_flv_viewers_get_the_audio(hub, shared_dir, tmp_path, media):
    if media == "g711a":
        packs, rate, video_frames = ps_packs(av_units("g711a", 3.0), "g711a"), "8000", 75
    else:  # a real ZLMediaKit capture: H.264 640x360 and AAC-LC 8 kHz mono
        packs, rate, video_frames = vector_packs(shared_dir / "vectors" / "ps" / f"{media}.ps", 3.0), "8000", None
    stream = new_stream()
    va = hub.viewer(stream, text=TEXT_A, tag=TAG_A, clock=lambda: NOW, max_frames=200)
    vb = hub.viewer(stream, text=TEXT_B, tag=TAG_B, clock=lambda: NOW, max_frames=200)
    decoder = va.decoder
    data_a, data_b, _ = await asyncio.wait_for(
        asyncio.gather(flv_bytes(va), flv_bytes(vb), feed_ps(stream, packs, 0.003)), 60)
    for data, tag, name in ((data_a, TAG_A, "a"), (data_b, TAG_B, "b")):
        assert data[4] == 0x05
        path = tmp_path / f"{media}-{name}.flv"
        path.write_bytes(data)
        info = flv_timing(path)
        audio, video = info["audio"], info["video"]
        assert video["codec_name"] == "h264" and audio["codec_name"] == "aac"
        assert audio["sample_rate"] == rate and audio["channels"] == 1
        if video_frames:
            assert int(video["nb_read_frames"]) == video_frames
        assert int(audio["nb_read_frames"]) >= 15
        assert abs(audio["start"] - video["start"]) < 0.5, info
        assert abs(audio["end"] - video["end"]) < 0.5, info
        # still the watermarked, tagged picture
        keyframes = [t for t in iter_tags(data) if t.type == 9 and t.keyframe and t.packet_type == 1]
        found = find_tags(b"".join(b"\x00\x00\x00\x01" + n for n in keyframes[0].nal_units()), "h264", hub.key)
        assert [(t.session_id, ok) for t, ok in found] == [(tag.session_id, True)]
    if media == "g711a":
        n = decoder.aac_units  # G.711 -> AAC once per Stream, for both viewers
        assert n >= 15
        counts = [sum(t.type == TAG_AUDIO and t.body[1] == 1 for t in iter_tags(d)) for d in (data_a, data_b)]
        assert all(n - 3 <= c <= n for c in counts), (n, counts)
    await va.aclose()
    await vb.aclose()
    assert not hub.decoders and not stream.readers


@pytest.mark.usefixtures("loopback_ice")
async def test_watermarked_whep_viewer_gets_the_camera_audio_as_opus(hub):
    stream = new_stream()
    packs = ps_packs(av_units("g711a", 4.0), "g711a")
    viewer_source = hub.viewer(stream, text=TEXT_A, tag=TAG_A, clock=lambda: NOW)
    session = WhepSession(viewer_source)
    client = AvViewer()
    feeder = asyncio.create_task(feed_ps(stream, packs, 4.0 / len(packs)))  # about real time
    try:
        answer = await session.answer(await client.offer())
        assert "opus/48000/2" in answer and viewer_source.audio_format == "raw"
        await client.accept(answer)
        video = await client.recv("video", 3)
        assert video[0].width == 320
        frames = (await client.recv("audio", 60))[10:]
        rms, share = pcm_rms_at(frames)
        assert rms > 0.05 and share > 0.5, (rms, share)
        assert viewer_source.decoder.aac_units == 0  # the camera's G.711 itself, no AAC generation
        assert viewer_source.audio_queued >= 50 and viewer_source.audio_codec == "g711a"
    finally:
        await session.close()
        await client.pc.close()
        feeder.cancel()
    assert not hub.decoders
