"""HTTP-FLV muxing: H.264 and H.265 access units from real encoders -> FLV -> ffprobe / PyAV."""

from __future__ import annotations

import asyncio
import struct

import av
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media_relay.nal import parse_sps, split_annexb
from media_relay.outputs.flv import (
    CODEC_ID_AVC,
    CODEC_ID_HEVC,
    PKT_END_OF_SEQUENCE,
    PKT_NALU,
    PKT_SEQUENCE_HEADER,
    TAG_AUDIO,
    TAG_SCRIPT,
    TAG_VIDEO,
    FlvMuxer,
    TimestampUnwrapper,
    flv_stream,
    hevc_decoder_configuration_record,
    iter_tags,
    params_from_annexb,
)
from media_relay.types import AccessUnit, VideoParams
from tests.outputs._media import FakeReader, encode_access_units, encode_adts, ffprobe, split_adts

FRAMES = 50


async def collect(gen) -> bytes:
    return b"".join([chunk async for chunk in gen])


def read_script_tag(body: bytes) -> tuple[str, dict]:
    """Minimal AMF0 reader: a string, then an ECMA array of numbers/booleans/strings."""

    def value(i: int):
        kind = body[i]
        if kind == 0:
            return struct.unpack_from(">d", body, i + 1)[0], i + 9
        if kind == 1:
            return bool(body[i + 1]), i + 2
        if kind == 2:
            n = struct.unpack_from(">H", body, i + 1)[0]
            return body[i + 3 : i + 3 + n].decode(), i + 3 + n
        if kind == 8:
            i += 5
            out = {}
            while body[i : i + 3] != b"\x00\x00\x09":
                n = struct.unpack_from(">H", body, i)[0]
                key = body[i + 2 : i + 2 + n].decode()
                out[key], i = value(i + 2 + n)
            return out, i + 3
        raise AssertionError(f"unexpected AMF0 type {kind}")

    name, i = value(0)
    meta, i = value(i)
    assert i == len(body)
    return name, meta


def video_tags(data: bytes):
    return [t for t in iter_tags(data) if t.type == TAG_VIDEO]


# ------------------------------------------------------------------------------------------ H.264
async def test_h264_flv_is_read_by_ffprobe(tmp_path):
    aus = encode_access_units("h264", frames=FRAMES, bframes=2)
    assert any(au.pts != au.dts for au in aus)  # B-frames: composition times are exercised
    reader = FakeReader(aus)
    data = await collect(flv_stream(reader))
    assert reader.closed
    path = tmp_path / "h264.flv"
    path.write_bytes(data)

    info = ffprobe(path, "stream=codec_name,width,height,nb_read_frames,r_frame_rate", "format=format_name")
    (stream,) = info["streams"]
    assert stream["codec_name"] == "h264"
    assert (stream["width"], stream["height"]) == (320, 240)
    assert int(stream["nb_read_frames"]) == FRAMES
    assert stream["r_frame_rate"] == "25/1"
    assert info["format"]["format_name"] == "flv"
    # (ffmpeg takes width/height/framerate/videocodecid out of the metadata it reports: read it here)
    name, meta = read_script_tag(next(iter_tags(data)).body)
    assert name == "onMetaData"
    assert (meta["width"], meta["height"], meta["framerate"]) == (320, 240, 25)
    assert meta["videocodecid"] == CODEC_ID_AVC and meta["hasAudio"] is False

    # ffprobe's view of the timestamps: dts from 0 in 40 ms steps, pts = dts + composition time
    packets = ffprobe(path, "packet=pts,dts,flags", count_frames=False)["packets"]
    assert [int(p["dts"]) for p in packets] == [40 * i for i in range(FRAMES)]
    first_dts = aus[0].dts
    expected_pts = [((au.pts - first_dts) % (1 << 33)) // 90 for au in aus]
    assert [int(p["pts"]) for p in packets] == expected_pts
    assert [p["flags"].startswith("K") for p in packets] == [au.keyframe for au in aus]


async def test_h264_tags_layout():
    aus = encode_access_units("h264", frames=FRAMES, bframes=2)
    data = await collect(flv_stream(FakeReader(aus)))
    assert data[:13] == b"FLV\x01\x01\x00\x00\x00\x09\x00\x00\x00\x00"
    tags = list(iter_tags(data))
    assert tags[0].type == TAG_SCRIPT and b"onMetaData" in tags[0].body
    seq, *frames, eos = tags[1:]
    assert (seq.codec_id, seq.packet_type, seq.keyframe) == (CODEC_ID_AVC, PKT_SEQUENCE_HEADER, True)
    record = seq.payload
    sps = next(n for n in split_annexb(aus[0].data) if n[0] & 0x1F == 7)
    assert record[0] == 1 and record[1:4] == sps[1:4] and record[4] == 0xFF  # 4-byte NAL lengths
    assert record[6:8] == struct.pack(">H", len(sps)) and record[8 : 8 + len(sps)] == sps
    assert len(frames) == FRAMES
    for tag, au in zip(frames, aus, strict=True):
        assert tag.packet_type == PKT_NALU
        assert tag.keyframe == au.keyframe
        assert tag.composition_time == ((au.pts - au.dts) % (1 << 33)) // 90
        # the NAL units are the access unit's, length-prefixed (none of them is an AUD here)
        assert tag.nal_units() == list(split_annexb(au.data))
    assert eos.packet_type == PKT_END_OF_SEQUENCE and eos.timestamp == frames[-1].timestamp


# ------------------------------------------------------------------------------------------ H.265
async def test_h265_flv_codec_id_12_decodes(tmp_path):
    """ffprobe 5.1 (Debian) does not know CodecID 12; PyAV's FFmpeg (8.x) does, and we decode the
    hvcC + NAL units ourselves as well, so the file is checked either way."""
    aus = encode_access_units("h265", frames=FRAMES, bframes=2)
    data = await collect(flv_stream(FakeReader(aus)))
    path = tmp_path / "h265.flv"
    path.write_bytes(data)

    _, meta = read_script_tag(next(iter_tags(data)).body)
    assert (meta["width"], meta["height"], meta["videocodecid"]) == (320, 240, CODEC_ID_HEVC)
    tags = video_tags(data)
    seq, frames, eos = tags[0], tags[1:-1], tags[-1]
    assert {t.codec_id for t in tags} == {CODEC_ID_HEVC}
    assert seq.packet_type == PKT_SEQUENCE_HEADER and eos.packet_type == PKT_END_OF_SEQUENCE
    hvcc = seq.payload
    assert hvcc[0] == 1 and hvcc[21] & 3 == 3 and hvcc[22] == 3  # version, 4-byte lengths, VPS/SPS/PPS
    assert [hvcc[i] & 0x3F for i in _hvcc_array_offsets(hvcc)] == [32, 33, 34]

    # 1. our own reading: hvcC as extradata, length-prefixed NAL units as packets
    ctx = av.CodecContext.create("hevc", "r")
    ctx.extradata = hvcc
    decoded = []
    for tag in frames:
        packet = av.Packet(tag.payload)
        decoded += ctx.decode(packet)
    decoded += ctx.decode(None)
    assert len(decoded) == FRAMES
    assert {(f.width, f.height) for f in decoded} == {(320, 240)}

    # 2. FFmpeg's FLV demuxer as bundled with PyAV
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "hevc"
        frames_demuxed = list(container.decode(stream))
    assert len(frames_demuxed) == FRAMES

    # 3. the system ffprobe: reads it only if its FLV demuxer knows CodecID 12
    info = ffprobe(path, "stream=codec_name,width,height,nb_read_frames")
    stream_info = info["streams"][0]
    if stream_info.get("codec_name") == "hevc":
        assert int(stream_info["nb_read_frames"]) == FRAMES
        assert (stream_info["width"], stream_info["height"]) == (320, 240)
    else:  # Debian's ffmpeg 5.1: "none ([12][0][0][0])"
        assert "nb_read_frames" not in stream_info or stream_info["nb_read_frames"] in ("0", "N/A")


def test_hvcc_fields_match_the_sps():
    """The hvcC profile_tier_level bytes come unescaped from the SPS (x265's carry an emulation
    prevention byte there): rebuilt into an RFC 6381 string they match what the SPS parser reads."""
    (au,) = encode_access_units("h265", frames=1)
    params = params_from_annexb("h265", au.data)
    assert b"\x00\x00\x03" in params.sps[2:16]
    info = parse_sps("h265", params.sps)
    hvcc = hevc_decoder_configuration_record(params.vps, params.sps, params.pps)
    compat = int(f"{int.from_bytes(hvcc[2:6], 'big'):032b}"[::-1], 2)
    codec_string = (f"hvc1.{('', 'A', 'B', 'C')[hvcc[1] >> 6]}{hvcc[1] & 0x1F}.{compat:X}."
                    f"{'H' if hvcc[1] & 0x20 else 'L'}{hvcc[12]}"
                    + "".join(f".{b:X}" for b in hvcc[6:12].rstrip(b"\x00")))
    assert codec_string == info.codec_string
    assert (hvcc[16] & 3, hvcc[17] & 7, hvcc[18] & 7) == (info.chroma_format_idc, 0, 0)
    assert (hvcc[21] >> 3 & 7, hvcc[21] >> 2 & 1) == (1, 1)  # one temporal layer, temporal_id_nesting


def _hvcc_array_offsets(hvcc: bytes) -> list[int]:
    offsets, i = [], 23
    for _ in range(hvcc[22]):
        offsets.append(i)
        count = struct.unpack_from(">H", hvcc, i + 1)[0]
        i += 3
        for _ in range(count):
            i += 2 + struct.unpack_from(">H", hvcc, i)[0]
    return offsets


# ------------------------------------------------------------------------------------------ SPS parsing
@pytest.mark.parametrize("codec", ["h264", "h265"])
@pytest.mark.parametrize("size", [(1920, 1080), (352, 288), (640, 360)])
def test_sps_size(codec, size):
    (au,) = encode_access_units(codec, frames=1, width=size[0], height=size[1])
    params = params_from_annexb(codec, au.data)
    assert params is not None and (params.width, params.height) == size
    info = parse_sps(codec, params.sps)
    assert (info.chroma_format_idc, info.bit_depth_luma) == (1, 8)


# ------------------------------------------------------------------------------------------ timestamps
def test_timestamps_wrap_and_extended_byte():
    mux = FlvMuxer("h264")
    start = (1 << 33) - 90 * 100  # 100 ms before the 33-bit wrap
    tags = []
    for i in range(5):
        pts = (start + i * 3600) % (1 << 33)
        tags.append(mux.video_tag(AccessUnit("video", "h264", b"\x00\x00\x00\x01\x65\x88", pts, pts, i == 0),
                                  start))
    assert [_tag_ts(t) for t in tags] == [0, 40, 80, 120, 160]
    # 5 hours in: past 2**24 ms, so the extended byte is used
    late = (start + 5 * 3600 * 90_000) % (1 << 33)
    unwrapper_step = TimestampUnwrapper().max_forward
    assert 5 * 3600 * 90_000 > unwrapper_step  # a single jump that large is a discontinuity...
    mux2 = FlvMuxer("h264")
    t = None
    for sec in range(0, 5 * 3600 + 1, 5):  # ...so walk there in 5 s steps
        pts = (start + sec * 90_000) % (1 << 33)
        t = mux2.video_tag(AccessUnit("video", "h264", b"\x00\x00\x01\x41\x9a", pts, pts), start)
    assert pts == late
    ms = 5 * 3600 * 1000
    assert ms > 0xFFFFFF
    assert _tag_ts(t) == ms
    assert t[4:7] == (ms & 0xFFFFFF).to_bytes(3, "big") and t[7] == ms >> 24


def _tag_ts(tag: bytes) -> int:
    return int.from_bytes(tag[4:7], "big") | tag[7] << 24


def test_discontinuity_is_smoothed():
    mux = FlvMuxer("h264")
    ts = []
    for pts in (1000, 4600, 8200, 90_000 * 3600, 90_000 * 3600 + 3600):  # camera restarted its clock
        tag = mux.video_tag(AccessUnit("video", "h264", b"\x00\x00\x01\x41\x9a", pts, pts), 1000)
        ts.append(_tag_ts(tag))
    assert ts == [0, 40, 80, 120, 160]
    assert mux.clock.discontinuities == 1


def test_header_flags_and_aud_dropped():
    assert FlvMuxer("h265", audio=True).header()[4] == 0x05
    assert FlvMuxer("h264").header()[4] == 0x01
    with pytest.raises(ValueError):
        FlvMuxer("mpeg4")
    mux = FlvMuxer("h264")
    tag = mux.video_tag(AccessUnit("video", "h264", b"\x00\x00\x00\x01\x09\xf0\x00\x00\x01\x41\x9a",
                                   0, 0), 0)
    body = tag[11:-4]
    assert body[5:] == b"\x00\x00\x00\x02\x41\x9a"  # the AUD (type 9) is gone


# ------------------------------------------------------------------------------------------ flv_stream
async def test_waits_for_a_keyframe_with_params():
    aus = encode_access_units("h264", frames=FRAMES)
    gop2 = next(i for i, au in enumerate(aus) if au.keyframe and i > 0)
    # a source that starts mid-GOP and knows no params: the P-frames before the keyframe are skipped
    data = await collect(flv_stream(FakeReader(aus[3:])))
    frames = [t for t in video_tags(data) if t.packet_type == PKT_NALU]
    assert len(frames) == FRAMES - gop2 and frames[0].keyframe


async def test_params_from_source_when_not_in_band():
    aus = encode_access_units("h264", frames=10)
    params = params_from_annexb("h264", aus[0].data)
    stripped = [AccessUnit(a.kind, a.codec,
                           b"".join(b"\x00\x00\x00\x01" + n for n in split_annexb(a.data)
                                    if n[0] & 0x1F not in (7, 8)), a.pts, a.dts, a.keyframe) for a in aus]
    source_params = VideoParams("h264", sps=params.sps, pps=params.pps, extra={"framerate": 12.5})
    data = await collect(flv_stream(FakeReader(stripped, source_params)))
    tags = list(iter_tags(data))
    _, meta = read_script_tag(tags[0].body)
    assert meta["framerate"] == 12.5
    assert (meta["width"], meta["height"]) == (320, 240)  # from the SPS though the source had none
    ctx = av.CodecContext.create("h264", "r")
    ctx.extradata = tags[1].payload
    n = sum(len(ctx.decode(av.Packet(t.payload))) for t in tags[2:-1]) + len(ctx.decode(None))
    assert n == 10


async def test_new_sequence_header_when_params_change():
    a = encode_access_units("h264", frames=10, width=320, height=240)
    b = encode_access_units("h264", frames=10, width=160, height=120, pts_offset=36_000)
    data = await collect(flv_stream(FakeReader(a + b)))
    seqs = [t for t in video_tags(data) if t.packet_type == PKT_SEQUENCE_HEADER]
    assert len(seqs) == 2
    sizes = []
    for seq in seqs:
        sps = seq.payload[8 : 8 + struct.unpack_from(">H", seq.payload, 6)[0]]
        info = parse_sps("h264", sps)
        sizes.append((info.width, info.height))
    assert sizes == [(320, 240), (160, 120)]
    assert seqs[1].timestamp == 360  # in line with the tags around it


async def test_source_closed_when_client_leaves():
    aus = encode_access_units("h264", frames=FRAMES)
    reader = FakeReader(aus, interval=0.001, loop=True)
    gen = flv_stream(reader)
    first = await gen.__anext__()
    assert first.startswith(b"FLV")
    await gen.__anext__()
    await gen.aclose()
    assert reader.closed


async def test_cancelled_error_from_source_ends_the_stream():
    class Ending(FakeReader):
        async def get(self):
            if self.index >= 5:
                raise asyncio.CancelledError
            return await super().get()

    data = await collect(flv_stream(Ending(encode_access_units("h264", frames=FRAMES))))
    tags = video_tags(data)
    assert tags[-1].packet_type == PKT_END_OF_SEQUENCE
    assert sum(t.packet_type == PKT_NALU for t in tags) == 5


async def test_empty_source():
    assert await collect(flv_stream(FakeReader([], None))) == b""


# ------------------------------------------------------------------------------------------ audio
async def test_audio_aac_and_g711(tmp_path):
    video = encode_access_units("h264", frames=25)
    adts = split_adts(encode_adts(1.0))
    for codec, frames in (("aac", adts), ("g711a", [bytes(range(160))] * 50)):
        step = 1024 * 90_000 // 44_100 if codec == "aac" else 1800
        audio = [AccessUnit("audio", codec, f, i * step, i * step) for i, f in enumerate(frames)]
        merged = sorted(video + audio, key=lambda au: (au.dts, au.kind == "audio"))
        data = await collect(flv_stream(FakeReader(merged), audio=True, g711_to_aac=False))  # native G.711
        assert data[4] == 0x05
        atags = [t for t in iter_tags(data) if t.type == TAG_AUDIO]
        if codec == "aac":
            assert atags[0].body[:2] == b"\xaf\x00" and len(atags) == len(adts) + 1
        else:
            assert {t.body[0] for t in atags} == {0x72} and len(atags) == 50
        path = tmp_path / f"{codec}.flv"
        path.write_bytes(data)
        info = ffprobe(path, "stream=codec_name,codec_type,nb_read_frames,sample_rate")
        by_type = {s["codec_type"]: s for s in info["streams"]}
        assert by_type["video"]["codec_name"] == "h264" and int(by_type["video"]["nb_read_frames"]) == 25
        expected = {"aac": ("aac", "44100"), "g711a": ("pcm_alaw", "8000")}[codec]
        assert (by_type["audio"]["codec_name"], by_type["audio"]["sample_rate"]) == expected
        assert int(by_type["audio"]["nb_read_frames"]) >= len(frames) - 1


# ------------------------------------------------------------------------------------------ properties
_nal = st.binary(min_size=1, max_size=40).map(lambda b: bytes(x or 1 for x in b))  # no zero bytes


@given(st.lists(st.tuples(_nal, st.booleans()), min_size=1, max_size=8))
def test_split_annexb_round_trip(nals):
    stream = b"".join((b"\x00\x00\x00\x01" if four else b"\x00\x00\x01") + nal for nal, four in nals)
    assert list(split_annexb(stream)) == [nal for nal, _ in nals]


@given(st.integers(0, (1 << 33) - 1), st.lists(st.integers(0, 10 * 90_000), max_size=50))
def test_unwrapper_follows_wraps(start, steps):
    u = TimestampUnwrapper()
    assert u.unwrap(start) == start
    total = start
    for step in steps:
        total += step
        assert u.unwrap(total % (1 << 33)) == total
    assert u.discontinuities == 0


@settings(max_examples=200)
@given(st.sampled_from(["h264", "h265"]), st.binary(max_size=64), st.booleans())
def test_garbage_never_breaks_the_muxer(codec, payload, keyframe):
    sps = b"\x00\x00\x01" + bytes([0x67 if codec == "h264" else 0x42, 1]) + payload
    others = (b"\x00\x00\x01\x68\xce", b"") if codec == "h264" else (b"\x00\x00\x01\x44\x01\xc1",
                                                                  b"\x00\x00\x01\x40\x01\x0c")
    data = others[1] + sps + others[0]
    params = params_from_annexb(codec, data)  # None, or params with whatever size could be read
    assert params is None or params.codec == codec
    mux = FlvMuxer(codec)
    mux.video_tag(AccessUnit("video", codec, data, 0, 0, keyframe), 0)
    if params is not None:
        try:
            mux.sequence_header(params)
        except (ValueError, IndexError):
            pass  # flv_stream catches these and waits for the next keyframe
