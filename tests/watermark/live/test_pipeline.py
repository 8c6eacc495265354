"""Decode once per Stream, watermark and encode per viewer: pictures, text, tags, threads, tear-down."""

from __future__ import annotations

import asyncio
import math
import threading

import av
import numpy as np
import pytest

from gbcore.ids import ChannelRef
from media_relay.stream import Stream
from media_relay.types import AccessUnit
from tests.outputs._media import FakeReader, encode_access_units
from watermark.overlay import Overlay
from watermark.pipeline import (
    EncoderSlots,
    TaggedSource,
    default_max_encoders,
    session_code,
)
from watermark.render import WatermarkText
from watermark.tag import SessionTag, find_tags

NOW = 1_790_000_000.0
W, H = 640, 360
FRAMES = 60
TEXT_A = WatermarkText(display_name="张三", account="zhangsan", phone="13812345678", client_ip="10.1.2.3",
                       session_code=session_code("session-a"))
TEXT_B = WatermarkText(display_name="李四", account="lisi", client_ip="192.168.40.77",
                       session_code=session_code("session-b"))
TAG_A = SessionTag("session-a", 7, "34020000001320000001", 1_790_000_000_000)
TAG_B = SessionTag("session-b", 8, "34020000001320000001", 1_790_000_001_000)


def decode(aus: list[AccessUnit], codec: str = "h264") -> list[av.VideoFrame]:
    ctx = av.CodecContext.create({"h264": "h264", "h265": "hevc"}[codec], "r")
    frames = []
    for au in aus:
        frames += ctx.decode(av.Packet(au.data))
    return frames + list(ctx.decode(None))


def luma(frame: av.VideoFrame) -> np.ndarray:
    return frame.to_ndarray(format="yuv420p")[: frame.height].astype(np.float64)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b) ** 2)) if a.size else 0.0
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def mask_of(boxes, width: int = W, height: int = H) -> np.ndarray:
    m = np.zeros((height, width), dtype=bool)
    for x0, y0, x1, y1 in boxes:
        m[y0:y1, x0:x1] = True
    return m


async def collect(source) -> list[AccessUnit]:
    return [au async for au in source]


async def feed(stream: Stream, aus: list[AccessUnit], interval: float = 0.004) -> None:
    for au in aus:
        stream._on_au(au)
        await asyncio.sleep(interval)
    await asyncio.sleep(0.3)
    stream.close("end of test media")


@pytest.mark.parametrize("codec", ["h264", "h265"])
async def test_two_viewers_share_one_decoder_and_get_their_own_watermark(hub, look, codec):
    src = encode_access_units(codec, frames=FRAMES, width=W, height=H, gop=25)
    stream = Stream(ChannelRef("34020000001180000001", "34020000001320000001"), "udp", port=0, ssrc="0")
    va = hub.viewer(stream, text=TEXT_A, tag=TAG_A, clock=lambda: NOW, max_frames=FRAMES + 5)
    vb = hub.viewer(stream, text=TEXT_B, tag=TAG_B, clock=lambda: NOW, max_frames=FRAMES + 5)
    assert len(hub.decoders) == 1 and len(stream.readers) == 1  # one reader, one decode for both
    out_a, out_b, _ = await asyncio.wait_for(asyncio.gather(collect(va), collect(vb), feed(stream, src)), 60)
    assert len(out_a) == len(out_b) == FRAMES
    assert all(au.codec == "h264" for au in out_a + out_b)  # H.265 sources come out H.264
    assert va.worker_threads and threading.get_ident() not in va.worker_threads
    assert va.worker_threads.isdisjoint(vb.worker_threads)  # one encoder thread per viewer
    assert va.params is not None and (va.params.width, va.params.height) == (W, H)

    ref = decode(src, codec)
    fa, fb = decode(out_a), decode(out_b)
    assert len(ref) == len(fa) == len(fb) == FRAMES
    boxes_a = Overlay(look, TEXT_A).layout(W, H, NOW)
    boxes_b = Overlay(look, TEXT_B).layout(W, H, NOW)
    mask_a = mask_of(b for p in boxes_a if (b := p.box(W, H)))
    mask_b = mask_of(b for p in boxes_b if (b := p.box(W, H)))
    outside = ~(mask_a | mask_b)
    assert mask_a.mean() > 0.02 and outside.mean() > 0.5
    for k in (3, 24, 40, FRAMES - 1):
        r, a, b = luma(ref[k]), luma(fa[k]), luma(fb[k])
        # the same picture outside the text boxes
        assert psnr(a[outside], r[outside]) > 35, k
        assert psnr(b[outside], r[outside]) > 35, k
        # different pictures inside them
        assert np.abs(a[mask_a | mask_b] - b[mask_a | mask_b]).mean() > 3, k
        # each viewer's text is its own: compare with the expected patch drawn on the reference
        exp_a = luma(Overlay(look, TEXT_A).apply(ref[k], NOW))
        exp_b = luma(Overlay(look, TEXT_B).apply(ref[k], NOW))
        assert psnr(a[mask_a], exp_a[mask_a]) > 30, k
        assert psnr(a[mask_a], exp_a[mask_a]) > psnr(a[mask_a], exp_b[mask_a]) + 6, k
        assert psnr(b[mask_b], exp_b[mask_b]) > 30, k
        assert psnr(b[mask_b], exp_b[mask_b]) > psnr(b[mask_b], exp_a[mask_b]) + 6, k
    assert va.boxes and set(va.boxes) == {p.box(W, H) for p in boxes_a if p.box(W, H)}

    # every keyframe of each output carries that viewer's signed tag, and only that one
    for out, tag in ((out_a, TAG_A), (out_b, TAG_B)):
        keyframes = [au for au in out if au.keyframe]
        assert len(keyframes) >= 3
        for au in keyframes:
            found = find_tags(au.data, "h264", hub.key)
            assert [(t.session_id, t.user_id, t.channel_id, t.start_ms, ok) for t, ok in found] == [
                (tag.session_id, tag.user_id, tag.channel_id, tag.start_ms, True)]
        assert not any(find_tags(au.data, "h264") for au in out if not au.keyframe)

    await va.aclose()
    await vb.aclose()
    assert not hub.decoders and not stream.readers


async def test_decoder_closes_with_its_last_viewer_and_slots_come_back(hub):
    src = encode_access_units("h264", frames=50, width=320, height=240, gop=10)
    stream = Stream(ChannelRef("34020000001180000001", "34020000001320000002"), "udp", port=0, ssrc="0")
    for au in src[:10]:
        stream._on_au(au)
    slot = hub.slots.reserve()
    va = hub.viewer(stream, text=TEXT_A, tag=TAG_A)
    va.on_close.append(slot.release)
    vb = hub.viewer(stream, text=TEXT_B, tag=TAG_B)
    first = await asyncio.wait_for(va.get(), 10)
    assert first.keyframe and find_tags(first.data, "h264", hub.key)[0][0].session_id == "session-a"
    decoder = va.decoder
    assert vb.decoder is decoder and hub.slots.in_use == 1
    await va.aclose()
    assert not decoder.closed and hub.slots.in_use == 0  # B still watches
    for au in src[10:30]:
        stream._on_au(au)
        await asyncio.sleep(0.005)
    assert (await asyncio.wait_for(vb.get(), 10)).keyframe  # B's encoder starts with an IDR
    await vb.aclose()
    assert decoder.closed and not hub.decoders and not stream.readers
    await asyncio.sleep(0.2)
    assert not any(t.name.startswith(("wm-encode", "wm-decode")) and t.is_alive() for t in threading.enumerate())
    # a new viewer after that gets a new decoder
    vc = hub.viewer(stream, text=TEXT_A, tag=TAG_A)
    assert vc.decoder is not decoder and len(hub.decoders) == 1
    await vc.aclose()


async def test_tag_only_source_passes_the_stream_through(hub):
    src = encode_access_units("h265", frames=30, gop=12)
    reader = FakeReader(src)
    tagged = hub.tagged(reader, TAG_B)
    assert isinstance(tagged, TaggedSource) and tagged.codec == "h265"
    out = [au async for au in tagged]
    assert len(out) == len(src)
    for before, after in zip(src, out, strict=True):
        if before.keyframe:
            (tag, ok), = find_tags(after.data, "h265", hub.key)
            assert ok and tag.session_id == "session-b" and tag.user_id == 8
            assert len(after.data) > len(before.data)
        else:
            assert after.data == before.data
    tagged.close()
    assert reader.closed


def test_encoder_slots_and_default_limit():
    slots = EncoderSlots(2)
    a, b = slots.reserve(), slots.reserve()
    assert a and b and slots.reserve() is None
    a.release()
    a.release()  # idempotent
    assert slots.in_use == 1 and slots.reserve() is not None
    assert default_max_encoders(3.0, cores=2) == 6
    assert default_max_encoders(0.1, cores=1) == 1
    assert session_code("x") == session_code("x") != session_code("y") and len(session_code("x")) == 8
