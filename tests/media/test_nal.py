"""NAL unit framing, type helpers, access-unit classification and SPS parsing (H.264 / H.265)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from media_relay import nal as N
from media_relay.nal import (
    AU_FIRST_SLICE,
    AU_OTHER,
    AU_PREFIX,
    AU_SLICE,
    BitReader,
    BitstreamError,
    NalError,
    annexb_to_avcc,
    au_boundary,
    avcc_to_annexb,
    is_keyframe,
    param_sets,
    parse_h264_sps,
    parse_h265_sps,
    parse_sps,
    split_annexb,
    to_annexb,
    unescape_rbsp,
)
from tests.media._bits import BitWriter, H264Sps, H265Sps, StRps, escape
from tests.media.conftest import encode, ffmpeg_trace_headers

# --- framing ------------------------------------------------------------------------------------


def test_split_annexb_start_codes() -> None:
    data = b"\x00\x00\x00\x01\x67\x42\x00\x00\x01\x68\xce\x00\x00\x00\x00\x01\x65\x88\x00\x00\x01\x41\x9a"
    assert split_annexb(data) == [b"\x67\x42", b"\x68\xce", b"\x65\x88", b"\x41\x9a"]


def test_split_annexb_edge_cases() -> None:
    assert split_annexb(b"") == []
    assert split_annexb(b"\x00\x00\x00") == []
    assert split_annexb(b"\x65\x88\x84") == [b"\x65\x88\x84"]  # a lone NAL unit without start code
    assert split_annexb(b"\x12\x34\x00\x00\x01\x09\xf0") == [b"\x12\x34", b"\x09\xf0"]
    assert split_annexb(b"\x00\x00\x00\x00\x00\x01\x09\xf0\x00\x00") == [b"\x09\xf0"]
    assert split_annexb(b"\x00\x00\x01\x00\x00\x01\x09") == [b"\x09"]  # empty units dropped
    # 00 00 03 inside a unit is not a start code
    assert split_annexb(b"\x00\x00\x01\x65\x00\x00\x03\x01\x02") == [b"\x65\x00\x00\x03\x01\x02"]


def test_annexb_avcc_round_trip() -> None:
    nals = [b"\x67\x42\xc0\x1e", b"\x68\xce\x3c\x80", b"\x65" + bytes(range(200))]
    annexb = to_annexb(nals)
    assert annexb.count(b"\x00\x00\x00\x01") == 3
    for size in (1, 2, 3, 4):
        avcc = annexb_to_avcc(annexb, size)
        assert avcc[:size] == len(nals[0]).to_bytes(size, "big")
        assert avcc_to_annexb(avcc, size) == annexb
    with pytest.raises(NalError):
        annexb_to_avcc(to_annexb([bytes(300)[:1] + b"\x01" * 299]), 1)
    with pytest.raises(NalError):
        avcc_to_annexb(b"\x00\x00\x00\x09\x65", 4)  # length past the end
    with pytest.raises(NalError):
        avcc_to_annexb(b"\x00\x00", 4)  # truncated prefix
    with pytest.raises(NalError):
        avcc_to_annexb(b"", 5)


@given(st.lists(st.binary(min_size=1, max_size=50).filter(lambda b: b[-1] != 0), max_size=8))
def test_annexb_split_join_property(nals: list[bytes]) -> None:
    # Units that contain start-code-like sequences must be escaped first, as encoders do.
    nals = [escape(n) for n in nals]
    nals = [n + b"\x80" if n.endswith(b"\x03") else n for n in nals]  # 00 00 03 ends an escaped unit
    assert split_annexb(to_annexb(nals)) == nals
    assert avcc_to_annexb(annexb_to_avcc(to_annexb(nals))) == to_annexb(nals)


def test_unescape_rbsp() -> None:
    assert unescape_rbsp(b"\x00\x00\x03\x01") == b"\x00\x00\x01"
    assert unescape_rbsp(b"\x00\x00\x03\x00\x00\x03") == b"\x00\x00\x00\x00"
    assert unescape_rbsp(b"\x00\x00\x03\x03") == b"\x00\x00\x03"
    assert unescape_rbsp(b"\x00\x03\x00\x00\x03\x00") == b"\x00\x03\x00\x00\x00"


@given(st.binary(max_size=64))
def test_escape_unescape_property(rbsp: bytes) -> None:
    escaped = escape(rbsp)
    assert b"\x00\x00\x00" not in escaped and b"\x00\x00\x01" not in escaped
    assert unescape_rbsp(escaped) == rbsp


# --- types --------------------------------------------------------------------------------------


def test_types_and_keyframes() -> None:
    assert N.h264_nal_type(b"\x65") == 5 and N.h264_nal_type(b"\x67") == 7
    assert N.h265_nal_type(b"\x40\x01") == 32 and N.h265_nal_type(b"\x26\x01") == 19
    assert N.nal_type("h265", b"\x42\x01") == 33
    assert N.is_vcl("h264", b"\x41") and not N.is_vcl("h264", b"\x06")
    assert N.is_vcl("h265", b"\x02\x01") and not N.is_vcl("h265", b"\x4e\x01")
    assert is_keyframe("h264", [b"\x67", b"\x68", b"\x65\x88"])
    assert not is_keyframe("h264", [b"\x41\x9a"])
    for t in range(16, 24):
        assert is_keyframe("h265", [bytes((t << 1, 1))])
    for t in (0, 1, 9, 15, 32, 39):
        assert not is_keyframe("h265", [bytes((t << 1, 1))])
    with pytest.raises(NalError):
        N.h264_nal_type(b"")
    with pytest.raises(NalError):
        is_keyframe("vp8", [])


def test_param_sets() -> None:
    assert param_sets("h264", [b"\x09\xf0", b"\x67\x42", b"\x68\xce", b"\x67\x99", b"\x65"]) == {
        "sps": b"\x67\x42",
        "pps": b"\x68\xce",
    }
    h265 = [b"\x46\x01\x50", b"\x40\x01\x0c", b"\x42\x01\x01", b"\x44\x01\xc1", b"\x26\x01\xaf"]
    assert param_sets("h265", h265) == {"vps": h265[1], "sps": h265[2], "pps": h265[3]}


def test_au_boundary() -> None:
    assert au_boundary("h264", b"\x65\x88") == AU_FIRST_SLICE  # first_mb_in_slice = 0
    assert au_boundary("h264", b"\x41\x9a") == AU_FIRST_SLICE
    assert au_boundary("h264", b"\x41\x4a") == AU_SLICE  # first_mb_in_slice = 1
    for b in (0x09, 0x67, 0x68, 0x06):
        assert au_boundary("h264", bytes((b, 0))) == AU_PREFIX
    assert au_boundary("h264", b"\x0c\xff") == AU_OTHER  # filler
    assert au_boundary("h265", b"\x26\x01\xaf") == AU_FIRST_SLICE
    assert au_boundary("h265", b"\x02\x01\x40") == AU_SLICE
    assert au_boundary("h265", b"\x46\x01\x50") == AU_PREFIX  # AUD
    assert au_boundary("h265", b"\x4e\x01\x05") == AU_PREFIX  # prefix SEI
    assert au_boundary("h265", b"\x50\x01\x05") == AU_OTHER  # suffix SEI
    assert au_boundary("h265", b"\x02\x09\x80") == AU_OTHER  # nuh_layer_id 1
    assert au_boundary("h264", b"") == AU_OTHER


# --- bit reader ---------------------------------------------------------------------------------


def test_bit_reader() -> None:
    w = BitWriter().u(3, 5).ue(0).ue(7).se(-4).se(3).u(32, 0xDEADBEEF).flag(1)
    r = BitReader(w.rbsp())
    assert (r.u(3), r.ue(), r.ue(), r.se(), r.se(), r.u(32), r.flag()) == (5, 0, 7, -4, 3, 0xDEADBEEF, True)
    with pytest.raises(BitstreamError):
        BitReader(b"\x00\x00\x00\x00\x00").ue()  # no terminating 1 bit
    with pytest.raises(BitstreamError):
        BitReader(b"\x00\x00\x00\x00\x01").ue()  # longer than 32 bits
    with pytest.raises(BitstreamError):
        BitReader(b"\xff").u(9)


# --- SPS: real encoders -------------------------------------------------------------------------

X264_CASES = [
    # (width, height, pix_fmt, rate, options, expected (profile_idc, chroma_format_idc, bit depth, interlaced))
    (1920, 1080, "yuv420p", 25, {}, (100, 1, 8, False)),
    (642, 362, "yuv420p", 30, {}, (100, 1, 8, False)),
    (322, 246, "yuv420p", 25, {"profile": "baseline"}, (66, 1, 8, False)),
    (640, 480, "yuv422p", 25, {}, (122, 2, 8, False)),
    (640, 480, "yuv444p", 50, {}, (244, 3, 8, False)),
    (318, 238, "gray", 25, {}, (100, 0, 8, False)),
    (320, 240, "yuv420p10le", 25, {}, (110, 1, 10, False)),
    (720, 576, "yuv420p", 25, {"x264-params": "interlaced=1"}, (100, 1, 8, True)),
    (352, 288, "yuv420p", 25, {"x264-params": "cqm=jvt"}, (100, 1, 8, False)),  # scaling matrices
]


@pytest.mark.parametrize("width,height,pix_fmt,rate,options,expected", X264_CASES)
def test_h264_sps_from_x264(width, height, pix_fmt, rate, options, expected) -> None:
    data = encode("libx264", width, height, pix_fmt=pix_fmt, rate=rate, options=options, frames=1)
    nals = split_annexb(data)
    sps = param_sets("h264", nals)["sps"]
    info = parse_sps("h264", sps)
    assert info is not None
    assert (info.width, info.height) == (width, height)
    assert (info.profile_idc, info.chroma_format_idc, info.bit_depth_luma, info.interlaced) == expected
    assert info.fps == pytest.approx(rate)
    assert info.codec_string == "avc1." + sps[1:4].hex().upper()
    assert is_keyframe("h264", nals)


X265_CASES = [
    (1920, 1080, "yuv420p", 25, {}, (1, 1, 8)),
    (642, 362, "yuv420p", 30, {}, (1, 1, 8)),  # conformance window
    (640, 360, "yuv422p", 25, {}, (4, 2, 8)),
    (640, 360, "yuv444p", 50, {}, (4, 3, 8)),
    (640, 360, "gray", 25, {}, (4, 0, 8)),
    (640, 360, "yuv420p10le", 25, {}, (2, 1, 10)),
    (640, 360, "yuv420p", 25, {"x265-params": "scaling-list=default"}, (1, 1, 8)),
]


@pytest.mark.parametrize("width,height,pix_fmt,rate,options,expected", X265_CASES)
def test_h265_sps_from_x265(width, height, pix_fmt, rate, options, expected) -> None:
    data = encode("libx265", width, height, pix_fmt=pix_fmt, rate=rate, options=options, frames=1)
    nals = split_annexb(data)
    ps = param_sets("h265", nals)
    assert set(ps) == {"vps", "sps", "pps"}
    info = parse_sps("h265", ps["sps"])
    assert info is not None
    assert (info.width, info.height) == (width, height)
    assert (info.profile_idc, info.chroma_format_idc, info.bit_depth_luma) == expected
    assert info.fps == pytest.approx(rate)
    assert info.codec_string.startswith(f"hvc1.{expected[0]}.")
    assert is_keyframe("h265", nals)


# --- SPS: hand-built parameter sets, checked against ffmpeg's own parser ------------------------


def _splice_sps(codec: str, sps: bytes, tmp_path) -> object:
    """An x264/x265 stream with its SPS replaced, for ffmpeg's trace_headers filter."""
    data = encode("libx264" if codec == "h264" else "libx265", 64, 64, frames=1)
    nals = [sps if N.param_set_kind(codec, n) == "sps" else n for n in split_annexb(data)]
    path = tmp_path / f"spliced.{'h264' if codec == 'h264' else 'hevc'}"
    path.write_bytes(to_annexb(nals))
    return path


H264_BUILT = {
    "high_scaling_poc1_field": H264Sps(
        scaling_lists={0: [3, -2] + [0] * 14, 2: [-8], 6: [1] * 64, 7: [5, -5] + [0] * 62},
        poc_type=1,
        poc_cycle=[2, -1, 4],
        frame_mbs_only=False,
        width_mbs=45,
        height_map_units=18,
        crop=(1, 2, 0, 3),
        sar=(10, 11),
        timing=(1001, 60000),
    ),
    "high444_separate_planes": H264Sps(
        profile_idc=244,
        chroma_format_idc=3,
        separate_colour_plane=True,
        scaling_lists={8: [2] * 64, 3: [-1] * 16, 11: [-1] * 64},
        width_mbs=40,
        height_map_units=30,
        crop=(3, 5, 1, 1),
        timing=None,
        sar=1,
        video_signal=True,
        chroma_loc=True,
    ),
    "high422_poc2": H264Sps(
        profile_idc=122,
        chroma_format_idc=2,
        bit_depth_luma=10,
        bit_depth_chroma=10,
        poc_type=2,
        width_mbs=80,
        height_map_units=45,
        crop=(0, 0, 0, 0),
        timing=(1, 30),
    ),
    "baseline_big": H264Sps(profile_idc=66, width_mbs=240, height_map_units=135, crop=None, timing=(1, 120)),
}


def _h264_expected(t: dict[str, int]) -> tuple[int, int]:
    chroma = t.get("chroma_format_idc", 1)
    if t.get("separate_colour_plane_flag", 0):
        chroma = 0
    sub_w, sub_h = {0: (1, 1), 1: (2, 2), 2: (2, 1), 3: (1, 1)}[chroma]
    fmo = t["frame_mbs_only_flag"]
    cx = 1 if chroma == 0 else sub_w
    cy = (2 - fmo) * (1 if chroma == 0 else sub_h)
    width = (t["pic_width_in_mbs_minus1"] + 1) * 16 - cx * (
        t.get("frame_crop_left_offset", 0) + t.get("frame_crop_right_offset", 0)
    )
    height = (2 - fmo) * (t["pic_height_in_map_units_minus1"] + 1) * 16 - cy * (
        t.get("frame_crop_top_offset", 0) + t.get("frame_crop_bottom_offset", 0)
    )
    return width, height


@pytest.mark.parametrize("name", sorted(H264_BUILT))
def test_h264_built_sps_against_ffmpeg(name: str, tmp_path) -> None:
    spec = H264_BUILT[name]
    sps = spec.nal()
    info = parse_h264_sps(sps)
    assert info is not None
    trace = ffmpeg_trace_headers(_splice_sps("h264", sps, tmp_path), "h264")
    assert trace["profile_idc"] == info.profile_idc == spec.profile_idc
    assert (info.width, info.height) == _h264_expected(trace)
    assert info.interlaced == (not spec.frame_mbs_only)
    if spec.timing:
        assert (trace["num_units_in_tick"], trace["time_scale"]) == spec.timing
        assert info.fps == pytest.approx(spec.timing[1] / spec.timing[0] / 2)
    else:
        assert info.fps is None
    if isinstance(spec.sar, tuple):
        assert info.sar == spec.sar
    elif spec.sar == 1:
        assert info.sar == (1, 1)


H265_BUILT = {
    "inter_rps_sub_layers_scaling_pcm": H265Sps(
        max_sub_layers=3,
        sub_layer_flags=[(1, 1), (0, 1)],
        st_rps=[
            StRps([1, 2], [1]),
            StRps(inter=(-1, [(1, 0)] * 4)),
            StRps(inter=(2, [(0, 1), (1, 0), (0, 0), (1, 0)])),
            StRps(inter=(-1, [(1, 0)] * 3)),
        ],
        long_term=[3, 17],
        scaling_list_data=True,
        pcm=True,
        sar=(4, 3),
        video_signal=True,
        chroma_loc=True,
        default_display_window=True,
    ),
    "main10_422_conf": H265Sps(
        profile_idc=4,
        chroma_format_idc=2,
        bit_depth_luma=10,
        bit_depth_chroma=10,
        width=1280,
        height=728,
        conf=(2, 4, 1, 7),
        st_rps=[StRps([1], []), StRps([2, 1], [3])],
        timing=(1, 50),
        max_sub_layers=2,
        sub_layer_ordering_info=False,
    ),
    "444_separate_planes_field": H265Sps(
        profile_idc=4,
        chroma_format_idc=3,
        separate_colour_plane=True,
        width=720,
        height=576,
        conf=None,
        field_seq=True,
        timing=None,
        max_sub_layers=7,
        sub_layer_flags=[(1, 0), (0, 1), (1, 1), (0, 0), (1, 0), (0, 1)],
    ),
}


@pytest.mark.parametrize("name", sorted(H265_BUILT))
def test_h265_built_sps_against_ffmpeg(name: str, tmp_path) -> None:
    spec = H265_BUILT[name]
    sps = spec.nal()
    info = parse_h265_sps(sps)
    assert info is not None
    trace = ffmpeg_trace_headers(_splice_sps("h265", sps, tmp_path), "hevc")
    assert trace["pic_width_in_luma_samples"] == spec.width
    assert trace["num_short_term_ref_pic_sets"] == len(spec.st_rps)
    chroma = 0 if spec.separate_colour_plane else spec.chroma_format_idc
    sub_w, sub_h = {0: (1, 1), 1: (2, 2), 2: (2, 1), 3: (1, 1)}[chroma]
    conf = spec.conf or (0, 0, 0, 0)
    assert (info.width, info.height) == (
        spec.width - sub_w * (conf[0] + conf[1]),
        spec.height - sub_h * (conf[2] + conf[3]),
    )
    assert info.profile_idc == trace["general_profile_idc"] == spec.profile_idc
    assert info.level_idc == trace["general_level_idc"]
    assert info.bit_depth_luma == spec.bit_depth_luma
    assert info.interlaced == spec.field_seq
    if spec.timing:
        # ffmpeg read the timing after the RPS and long-term sets: our walk through them agrees
        assert (trace["vui_num_units_in_tick"], trace["vui_time_scale"]) == spec.timing
        assert info.fps == pytest.approx(spec.timing[1] / spec.timing[0])
    else:
        assert info.fps is None


def test_sps_parsers_reject() -> None:
    good = H264_BUILT["high422_poc2"].nal()
    assert parse_h264_sps(good) is not None
    assert parse_h264_sps(b"") is None
    assert parse_h264_sps(b"\x68" + good[1:]) is None  # a PPS header
    assert parse_h264_sps(good[:6]) is None  # truncated before the picture size
    assert parse_h264_sps(b"\x67\x64\x00\x28" + b"\x00" * 8) is None  # Exp-Golomb runs off the end
    good265 = H265_BUILT["main10_422_conf"].nal()
    assert parse_h265_sps(good265) is not None
    assert parse_h265_sps(good265[:12]) is None
    assert parse_h265_sps(b"\x40\x01" + good265[2:]) is None  # a VPS header
    with pytest.raises(NalError):
        parse_sps("mpeg2", good)


def test_sps_truncated_vui_keeps_size() -> None:
    sps = H265_BUILT["main10_422_conf"].nal()
    info = parse_h265_sps(sps)
    assert info is not None and info.fps == 50
    cut = parse_h265_sps(sps[:-8])  # VUI timing cut off
    assert cut is not None and (cut.width, cut.height) == (info.width, info.height) and cut.fps is None


# --- fuzz ---------------------------------------------------------------------------------------

_FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FUZZ
@given(st.binary(max_size=80))
def test_fuzz_h264_sps(body: bytes) -> None:
    info = parse_h264_sps(b"\x67" + body)
    assert info is None or (0 < info.width <= 65536 and 0 < info.height <= 65536)


@_FUZZ
@given(st.binary(max_size=80))
def test_fuzz_h265_sps(body: bytes) -> None:
    info = parse_h265_sps(b"\x42\x01" + body)
    assert info is None or (0 < info.width <= 65536 and 0 < info.height <= 65536)


@_FUZZ
@given(st.data())
def test_fuzz_mutated_sps(data) -> None:
    """Bit flips and truncations of valid SPSs: None or an SpsInfo, never another exception."""
    sources = [s.nal() for s in H264_BUILT.values()] + [s.nal() for s in H265_BUILT.values()]
    sps = bytearray(data.draw(st.sampled_from(sources)))
    for _ in range(data.draw(st.integers(0, 4))):
        i = data.draw(st.integers(1, len(sps) - 1))
        sps[i] ^= 1 << data.draw(st.integers(0, 7))
    sps = sps[: data.draw(st.integers(1, len(sps)))]
    for codec in ("h264", "h265"):
        try:
            parse_sps(codec, bytes(sps))
        except ValueError:
            pass  # only ValueError subclasses may escape, and parse_sps returns None anyway
    N.nal_headers_plausible("h264", [bytes(sps)])
    N.nal_headers_plausible("h265", [bytes(sps)])


@pytest.mark.parametrize("codec", ["h264", "h265"])
@pytest.mark.parametrize("size", [16, 254, 255, 256, 600])
def test_sei_payloads_read_back_what_user_data_sei_wrote(codec: str, size: int) -> None:
    # payload sizes around the 255 boundary of the ff-coded size, zero runs that need emulation prevention
    payload = bytes(range(16)) + bytes(size - 16)
    nal = N.user_data_sei(codec, payload)
    rbsp = N.unescape_rbsp(nal[1 if codec == "h264" else 2:])
    assert list(N.sei_payloads(rbsp)) == [(5, payload)]
    assert list(N.sei_payloads(rbsp[:-3])) == []  # truncated: nothing half-read
