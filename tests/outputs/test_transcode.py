"""Transcoder: H.265 (or H.264) access units -> PyAV decode -> frame hook -> libx264 H.264 access units."""

from __future__ import annotations

import asyncio
import threading

import av
import numpy as np

from media_relay.nal import split_annexb
from media_relay.outputs.flv import flv_stream
from media_relay.outputs.transcode import Transcoder
from media_relay.types import AccessUnit
from tests.outputs._media import FakeReader, encode_access_units, ffprobe

FRAMES = 50


def decode_h264(aus: list[AccessUnit]) -> list[av.VideoFrame]:
    ctx = av.CodecContext.create("h264", "r")
    frames = []
    for au in aus:
        frames += ctx.decode(av.Packet(au.data))
    return frames + ctx.decode(None)


async def test_h265_to_h264():
    src = encode_access_units("h265", frames=FRAMES, bframes=2)
    reader = FakeReader(src)
    threads = set()

    def hook(frame):
        threads.add(threading.get_ident())
        return frame

    t = Transcoder(reader, frame_filter=hook)
    assert t.codec == "h264" and t.params is None
    out = [au async for au in t]
    await t.aclose()

    assert len(out) == FRAMES
    assert all(au.codec == "h264" and au.kind == "video" for au in out)
    # keyframes where the source had them (GOP 12), the first one carrying SPS/PPS in-band
    assert [i for i, au in enumerate(out) if au.keyframe] == [0, 12, 24, 36, 48]
    assert {n[0] & 0x1F for n in split_annexb(out[0].data)} >= {7, 8, 5}
    # timestamps: the source's presentation times, in order, no B-frames
    assert [au.pts for au in out] == sorted(au.pts % (1 << 33) for au in src)
    assert all(au.pts == au.dts for au in out)
    assert t.params is not None and (t.params.width, t.params.height) == (320, 240)
    assert t.params.sps is not None and t.params.pps is not None
    # PyAV decodes the result at the same size
    frames = decode_h264(out)
    assert len(frames) == FRAMES and {(f.width, f.height) for f in frames} == {(320, 240)}
    # the codec work happened on the transcoder's worker thread
    assert threads and threading.get_ident() not in threads
    assert reader.closed
    assert t._enc is None and t._dec is None
    assert not any(th.name.startswith("transcode") for th in threading.enumerate())


async def test_frame_filter_draws_on_the_picture():
    src = encode_access_units("h264", frames=10)

    def blackout(frame: av.VideoFrame) -> av.VideoFrame:
        planes = frame.to_ndarray()  # yuv420p as one (h * 3/2, w) array
        planes[:64, :64] = 16  # black luma in the top-left corner: where the watermark would go
        new = av.VideoFrame.from_ndarray(planes, format="yuv420p")
        new.pts, new.time_base = frame.pts, frame.time_base
        return new

    t = Transcoder(FakeReader(src), frame_filter=blackout, crf=18)
    frames = decode_h264([au async for au in t])
    assert len(frames) == 10
    y = frames[5].to_ndarray()[:240]
    assert y[8:56, 8:56].mean() < 24
    assert y[100:200, 100:300].mean() > 40


async def test_request_keyframe_and_bad_data():
    src = list(encode_access_units("h264", frames=20, gop=100))
    garbage = AccessUnit("video", "h264", b"\x00\x00\x00\x01\x41" + bytes(range(256)) * 4,
                         src[10].pts, src[10].dts)
    t = Transcoder(FakeReader(src[:10] + [garbage] + src[10:]))
    out = []
    async for au in t:
        out.append(au)
        if len(out) == 5:
            t.request_keyframe()
    await t.aclose()
    keys = [i for i, au in enumerate(out) if au.keyframe]
    assert keys[0] == 0 and len(keys) == 2 and 5 <= keys[1] <= 8  # forced within the queued frames
    assert len(out) >= 19  # the garbage access unit cost at most itself (and maybe its frame)
    assert len(decode_h264(out)) == len(out)


async def test_close_mid_stream():
    reader = FakeReader(encode_access_units("h265", frames=FRAMES), interval=0.005, loop=True)
    t = Transcoder(reader)
    first = await t.get()
    assert first.keyframe
    for _ in range(3):
        await t.get()
    await t.aclose()
    assert reader.closed and t.closed
    assert t._enc is None and t._dec is None
    try:
        await asyncio.wait_for(t.get(), 1)
    except EOFError:
        pass
    else:  # one queued AU may still come out; the next get ends
        await asyncio.wait_for(_expect_eof(t), 1)


async def _expect_eof(t: Transcoder) -> None:
    while True:
        try:
            await t.get()
        except EOFError:
            return


async def test_flv_over_transcoder(tmp_path):
    """The Transcoder is a source like a reader: an H.265 camera becomes an H.264 HTTP-FLV stream."""
    src = encode_access_units("h265", frames=FRAMES)
    data = b"".join([c async for c in flv_stream(Transcoder(FakeReader(src)))])
    path = tmp_path / "t.flv"
    path.write_bytes(data)
    (stream,) = ffprobe(path, "stream=codec_name,width,height,nb_read_frames,profile")["streams"]
    assert stream["codec_name"] == "h264" and (stream["width"], stream["height"]) == (320, 240)
    assert abs(int(stream["nb_read_frames"]) - FRAMES) <= 1
    assert stream["profile"] == "Constrained Baseline"


def test_frame_filter_default_is_identity():
    t = Transcoder(FakeReader([]))
    frame = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")
    assert t.frame_filter(frame) is frame
    t._executor.shutdown()
