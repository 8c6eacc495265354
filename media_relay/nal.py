"""H.264 / H.265 NAL unit helpers (sans-IO).

Byte-stream framing (ITU-T H.264 / H.265 Annex B), length-prefixed framing (ISO/IEC 14496-15 "AVCC"),
NAL unit type helpers, access-unit boundary classification and a sequence parameter set parser that
recovers the picture size, profile, level and frame rate.

Every parser here raises only :class:`NalError` (a ``ValueError``); the SPS parsers return ``None``
on garbage instead of raising.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

__all__ = [
    "LATENCY_SEI_UUID",
    "NalError",
    "BitstreamError",
    "BitReader",
    "SpsInfo",
    "split_annexb",
    "to_annexb",
    "avcc_to_annexb",
    "annexb_to_avcc",
    "unescape_rbsp",
    "sei_payloads",
    "h264_nal_type",
    "h265_nal_type",
    "nal_type",
    "is_vcl",
    "is_keyframe",
    "param_sets",
    "param_set_kind",
    "au_boundary",
    "parse_h264_sps",
    "parse_h265_sps",
    "parse_sps",
    "AU_OTHER",
    "AU_PREFIX",
    "AU_FIRST_SLICE",
    "AU_SLICE",
    "nal_headers_plausible",
]

START_CODE = b"\x00\x00\x00\x01"
_SC3 = b"\x00\x00\x01"


class NalError(ValueError):
    """Malformed NAL unit data."""


class BitstreamError(NalError):
    """Read past the end of an RBSP or an out-of-range Exp-Golomb code."""


# --- H.264 NAL unit types (ITU-T H.264 Table 7-1) -----------------------------------------------
H264_SLICE = 1
H264_DPA = 2
H264_DPB = 3
H264_DPC = 4
H264_IDR = 5
H264_SEI = 6
H264_SPS = 7
H264_PPS = 8
H264_AUD = 9
H264_EOSEQ = 10
H264_EOSTREAM = 11
H264_FILLER = 12

# --- H.265 NAL unit types (ITU-T H.265 Table 7-1) -----------------------------------------------
H265_IRAP_FIRST = 16  # BLA_W_LP
H265_IRAP_LAST = 23  # RSV_IRAP_VCL23
H265_VPS = 32
H265_SPS = 33
H265_PPS = 34
H265_AUD = 35
H265_EOS = 36
H265_EOB = 37
H265_FD = 38
H265_SEI_PREFIX = 39
H265_SEI_SUFFIX = 40

VIDEO_CODECS = ("h264", "h265")


def _check_codec(codec: str) -> None:
    if codec not in VIDEO_CODECS:
        raise NalError(f"unknown video codec {codec!r}")


# --- Annex B / AVCC framing ---------------------------------------------------------------------


def split_annexb(data: bytes | bytearray | memoryview) -> list[bytes]:
    """Split an Annex B byte stream into NAL units (returned without start codes).

    Accepts 3- and 4-byte start codes (and any number of leading zero bytes); trailing zero bytes
    of a NAL unit (``trailing_zero_8bits`` or the first byte of a 4-byte start code) are removed.
    Data without any start code is returned as a single NAL unit; bytes before the first start code
    are returned as a NAL unit unless they are all zero.
    """
    data = bytes(data)
    n = len(data)
    out: list[bytes] = []
    i = data.find(_SC3)
    if i < 0:
        d = data.rstrip(b"\x00")
        return [d] if d else []
    if i > 0:
        head = data[:i].rstrip(b"\x00")
        if head:
            out.append(head)
    start = i + 3
    while True:
        j = data.find(_SC3, start)
        if j < 0:
            end = n
        else:
            end = j
        while end > start and data[end - 1] == 0:
            end -= 1
        if end > start:
            out.append(data[start:end])
        if j < 0:
            return out
        start = j + 3


def to_annexb(nals: Iterable[bytes]) -> bytes:
    """Join NAL units into an Annex B byte stream with 4-byte start codes."""
    return b"".join(START_CODE + bytes(n) for n in nals)


def avcc_to_annexb(data: bytes, length_size: int = 4) -> bytes:
    """Convert length-prefixed NAL units (ISO/IEC 14496-15) to Annex B with 4-byte start codes."""
    if length_size not in (1, 2, 3, 4):
        raise NalError(f"invalid NAL length size {length_size}")
    out = bytearray()
    i = 0
    n = len(data)
    while i < n:
        if i + length_size > n:
            raise NalError("truncated NAL length prefix")
        size = int.from_bytes(data[i : i + length_size], "big")
        i += length_size
        if i + size > n:
            raise NalError(f"NAL length {size} exceeds the remaining {n - i} bytes")
        out += START_CODE
        out += data[i : i + size]
        i += size
    return bytes(out)


def annexb_to_avcc(data: bytes, length_size: int = 4) -> bytes:
    """Convert an Annex B byte stream to length-prefixed NAL units."""
    if length_size not in (1, 2, 3, 4):
        raise NalError(f"invalid NAL length size {length_size}")
    limit = 1 << (8 * length_size)
    out = bytearray()
    for nal in split_annexb(data):
        if len(nal) >= limit:
            raise NalError(f"NAL unit of {len(nal)} bytes does not fit a {length_size}-byte length")
        out += len(nal).to_bytes(length_size, "big")
        out += nal
    return bytes(out)


def unescape_rbsp(data: bytes | bytearray | memoryview) -> bytes:
    """Remove emulation prevention bytes (``00 00 03`` -> ``00 00``) from a NAL unit payload."""
    data = bytes(data)
    if b"\x00\x00\x03" not in data:
        return data
    # Left-to-right non-overlapping replacement matches the decoding process: after an emulation
    # prevention byte the count of zero bytes starts again.
    return data.replace(b"\x00\x00\x03", b"\x00\x00")


def escape_rbsp(rbsp: bytes) -> bytes:
    """Insert emulation prevention bytes (``00 00 0x`` -> ``00 00 03 0x`` for x <= 3): the inverse of
    :func:`unescape_rbsp`."""
    out = bytearray()
    zeros = 0
    for byte in rbsp:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def sei_payloads(rbsp: bytes) -> Iterator[tuple[int, bytes]]:
    """``(payloadType, payload)`` of each SEI message of an SEI RBSP (NAL header removed, emulation
    prevention undone); stops at the trailing bits or at a truncated message."""
    pos, n = 0, len(rbsp)
    while pos < n and not (rbsp[pos] == 0x80 and pos == n - 1):
        ptype = 0
        while pos < n and rbsp[pos] == 0xFF:
            ptype += 255
            pos += 1
        if pos >= n:
            return
        ptype += rbsp[pos]
        pos += 1
        size = 0
        while pos < n and rbsp[pos] == 0xFF:
            size += 255
            pos += 1
        if pos >= n:
            return
        size += rbsp[pos]
        pos += 1
        if pos + size > n:
            return
        yield ptype, rbsp[pos : pos + size]
        pos += size


#: The UUID of the SEI ``user_data_unregistered`` message carrying a picture's capture time (the simulator writes
#: it, ``bench/latency.py`` reads it at the viewer, the watermark path carries it through its re-encode): these 16
#: bytes followed by the capture time in epoch milliseconds as ASCII digits (e.g. ``1790000000123``).
LATENCY_SEI_UUID = bytes.fromhex("9b12c6f311ba4eb9a77e04718d8a7591")


def user_data_sei(codec: str, payload: bytes) -> bytes:
    """An SEI NAL unit (header included, no start code) holding one ``user_data_unregistered`` message
    (payload type 5): ``payload`` must start with its 16-byte UUID. H.265 uses a prefix SEI, tid 1."""
    _check_codec(codec)
    n = len(payload)
    message = b"\x05" + b"\xff" * (n // 255) + bytes([n % 255]) + payload
    header = b"\x06" if codec == "h264" else b"\x4e\x01"
    return header + escape_rbsp(message + b"\x80")  # rbsp_trailing_bits


def insert_before_first_slice(data: bytes, nal_with_start_code: bytes, codec: str) -> bytes:
    """``data`` (one access unit, Annex B) with ``nal_with_start_code`` placed right before its first
    slice (where SEI belongs), or appended when there is no slice."""
    i = data.find(b"\x00\x00\x01")
    while i >= 0:
        if i + 3 < len(data) and is_vcl(codec, data[i + 3:i + 4]):
            sc = i - 1 if i > 0 and data[i - 1] == 0 else i  # the leading zero of a 4-byte start code
            return data[:sc] + nal_with_start_code + data[sc:]
        i = data.find(b"\x00\x00\x01", i + 3)
    return data + nal_with_start_code


# --- NAL unit types -----------------------------------------------------------------------------


def h264_nal_type(nal: bytes) -> int:
    if not nal:
        raise NalError("empty NAL unit")
    return nal[0] & 0x1F


def h265_nal_type(nal: bytes) -> int:
    if not nal:
        raise NalError("empty NAL unit")
    return (nal[0] >> 1) & 0x3F


def nal_type(codec: str, nal: bytes) -> int:
    _check_codec(codec)
    return h264_nal_type(nal) if codec == "h264" else h265_nal_type(nal)


def is_vcl(codec: str, nal: bytes) -> bool:
    t = nal_type(codec, nal)
    if codec == "h264":
        return 1 <= t <= 5
    return t <= 31


def is_keyframe(codec: str, nals: Iterable[bytes]) -> bool:
    """True when the access unit holds an IDR (H.264, type 5) or IRAP (H.265, types 16..23) picture."""
    _check_codec(codec)
    if codec == "h264":
        return any(n and (n[0] & 0x1F) == H264_IDR for n in nals)
    return any(n and H265_IRAP_FIRST <= ((n[0] >> 1) & 0x3F) <= H265_IRAP_LAST for n in nals)


def param_set_kind(codec: str, nal: bytes) -> str | None:
    """``"vps"``, ``"sps"``, ``"pps"`` or None."""
    if not nal:
        return None
    if codec == "h264":
        t = nal[0] & 0x1F
        return "sps" if t == H264_SPS else "pps" if t == H264_PPS else None
    if codec == "h265":
        t = (nal[0] >> 1) & 0x3F
        return {H265_VPS: "vps", H265_SPS: "sps", H265_PPS: "pps"}.get(t)
    raise NalError(f"unknown video codec {codec!r}")


def param_sets(codec: str, nals: Iterable[bytes]) -> dict[str, bytes]:
    """The first VPS / SPS / PPS found in ``nals``: a dict with the keys present among vps/sps/pps."""
    _check_codec(codec)
    out: dict[str, bytes] = {}
    for nal in nals:
        kind = param_set_kind(codec, nal)
        if kind is not None and kind not in out:
            out[kind] = bytes(nal)
    return out


# Access-unit boundary classes (H.264 7.4.1.2.3, H.265 7.4.2.4.4).
AU_OTHER = 0  # belongs to the current access unit (suffix SEI, end of sequence, filler, other layers)
AU_PREFIX = 1  # non-VCL that starts a new access unit when the current one already has a picture
AU_FIRST_SLICE = 2  # the first slice of a picture
AU_SLICE = 3  # a further slice of a picture


def au_boundary(codec: str, head: bytes | bytearray | memoryview) -> int:
    """Classify a NAL unit from its first bytes (header plus one byte) for access-unit splitting.

    H.264: a slice with ``first_mb_in_slice == 0`` (ue(v) code '1', i.e. the top bit of the first
    slice header byte) starts a picture. H.265: ``first_slice_segment_in_pic_flag``.
    """
    if not head:
        return AU_OTHER
    b0 = head[0]
    if codec == "h264":
        t = b0 & 0x1F
        if t in (1, 2, 5):
            if len(head) >= 2 and head[1] & 0x80:
                return AU_FIRST_SLICE
            return AU_SLICE
        if t in (3, 4):
            return AU_SLICE
        if t in (6, 7, 8, 9, 14, 15, 16, 17, 18):
            return AU_PREFIX
        return AU_OTHER
    if codec == "h265":
        if len(head) < 2:
            return AU_OTHER
        layer = ((b0 & 1) << 5) | (head[1] >> 3)
        if layer:
            return AU_OTHER
        t = (b0 >> 1) & 0x3F
        if t <= 31:
            if len(head) >= 3 and head[2] & 0x80:
                return AU_FIRST_SLICE
            return AU_SLICE
        if t in (32, 33, 34, 35, 39, 41, 42, 43, 44) or 48 <= t <= 55:
            return AU_PREFIX
        return AU_OTHER
    raise NalError(f"unknown video codec {codec!r}")


# --- bit reader ---------------------------------------------------------------------------------


class BitReader:
    """MSB-first bit reader over an RBSP (emulation prevention already removed)."""

    __slots__ = ("_value", "_nbits", "pos")

    def __init__(self, data: bytes) -> None:
        self._value = int.from_bytes(data, "big")
        self._nbits = len(data) * 8
        self.pos = 0

    @property
    def remaining(self) -> int:
        return self._nbits - self.pos

    def u(self, n: int) -> int:
        """Read an ``n``-bit unsigned integer (u(n))."""
        if n == 0:
            return 0
        end = self.pos + n
        if end > self._nbits:
            raise BitstreamError("read past the end of the RBSP")
        self.pos = end
        return (self._value >> (self._nbits - end)) & ((1 << n) - 1)

    def flag(self) -> bool:
        return self.u(1) == 1

    def skip(self, n: int) -> None:
        if self.pos + n > self._nbits:
            raise BitstreamError("skip past the end of the RBSP")
        self.pos += n

    def ue(self) -> int:
        """Unsigned Exp-Golomb code ue(v) (at most 32 leading zero bits)."""
        rest = self._nbits - self.pos
        if rest <= 0:
            raise BitstreamError("read past the end of the RBSP")
        window = self._value & ((1 << rest) - 1)
        if window == 0:
            raise BitstreamError("Exp-Golomb code runs past the end of the RBSP")
        zeros = rest - window.bit_length()
        if zeros > 31:
            raise BitstreamError("Exp-Golomb code longer than 32 bits")
        self.pos += zeros + 1
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        """Signed Exp-Golomb code se(v)."""
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


# --- SPS parsing --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SpsInfo:
    codec: str
    width: int
    height: int
    profile_idc: int
    level_idc: int  # H.264: level * 10; H.265: general_level_idc = level * 30
    sps_id: int
    chroma_format_idc: int = 1
    bit_depth_luma: int = 8
    bit_depth_chroma: int = 8
    interlaced: bool = False  # H.264 frame_mbs_only_flag == 0; H.265 field_seq_flag
    fps: float | None = None  # from VUI timing info
    sar: tuple[int, int] | None = None
    tier: int = 0  # H.265 general_tier_flag
    codec_string: str = ""  # RFC 6381 string, e.g. "avc1.42C01E"

    @property
    def level(self) -> float:
        return self.level_idc / (10 if self.codec == "h264" else 30)


# Table E-1: sample aspect ratios for aspect_ratio_idc 1..16 (same table in H.264 and H.265).
_SAR_TABLE = (
    (1, 1), (12, 11), (10, 11), (16, 11), (40, 33), (24, 11), (20, 11), (32, 11),
    (80, 33), (18, 11), (15, 11), (64, 33), (160, 99), (4, 3), (3, 2), (2, 1),
)  # fmt: skip

_H264_HIGH_PROFILES = frozenset((100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135))

_MAX_DIMENSION = 1 << 16


def _h264_scaling_list(r: BitReader, size: int) -> None:
    last = 8
    nxt = 8
    for _ in range(size):
        if nxt != 0:
            delta = r.se()
            if not -128 <= delta <= 127:
                raise BitstreamError("delta_scale out of range")
            nxt = (last + delta + 256) % 256
        last = last if nxt == 0 else nxt


def _vui_aspect(r: BitReader) -> tuple[int, int] | None:
    sar = None
    if r.flag():  # aspect_ratio_info_present_flag
        idc = r.u(8)
        if idc == 255:  # Extended_SAR
            sar = (r.u(16), r.u(16))
        elif 1 <= idc <= len(_SAR_TABLE):
            sar = _SAR_TABLE[idc - 1]
    return sar


def _vui_common_head(r: BitReader) -> tuple[int, int] | None:
    """aspect ratio, overscan, video signal type and chroma location (common to both codecs)."""
    sar = _vui_aspect(r)
    if r.flag():  # overscan_info_present_flag
        r.skip(1)
    if r.flag():  # video_signal_type_present_flag
        r.skip(4)  # video_format u(3), video_full_range_flag u(1)
        if r.flag():  # colour_description_present_flag
            r.skip(24)
    if r.flag():  # chroma_loc_info_present_flag
        r.ue()
        r.ue()
    return sar


def parse_h264_sps(nal: bytes) -> SpsInfo | None:
    """Parse an H.264 SPS NAL unit (header byte included). None when it is not a valid SPS."""
    if len(nal) < 4 or (nal[0] & 0x1F) != H264_SPS or nal[0] & 0x80:
        return None
    try:
        return _parse_h264_sps(nal)
    except NalError:
        return None


def _parse_h264_sps(nal: bytes) -> SpsInfo | None:
    rbsp = unescape_rbsp(nal[1:])
    r = BitReader(rbsp)
    profile_idc = r.u(8)
    constraints = r.u(8)
    level_idc = r.u(8)
    sps_id = r.ue()
    if sps_id > 31:
        return None
    chroma_format_idc = 1
    separate_colour_plane = False
    bit_depth_luma = bit_depth_chroma = 8
    if profile_idc in _H264_HIGH_PROFILES:
        chroma_format_idc = r.ue()
        if chroma_format_idc > 3:
            return None
        if chroma_format_idc == 3:
            separate_colour_plane = r.flag()
        bit_depth_luma = r.ue() + 8
        bit_depth_chroma = r.ue() + 8
        if bit_depth_luma > 14 or bit_depth_chroma > 14:
            return None
        r.skip(1)  # qpprime_y_zero_transform_bypass_flag
        if r.flag():  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma_format_idc != 3 else 12):
                if r.flag():  # seq_scaling_list_present_flag[i]
                    _h264_scaling_list(r, 16 if i < 6 else 64)
    log2_max_frame_num = r.ue() + 4
    if log2_max_frame_num > 16:
        return None
    poc_type = r.ue()
    if poc_type == 0:
        if r.ue() > 12:  # log2_max_pic_order_cnt_lsb_minus4
            return None
    elif poc_type == 1:
        r.skip(1)  # delta_pic_order_always_zero_flag
        r.se()  # offset_for_non_ref_pic
        r.se()  # offset_for_top_to_bottom_field
        cycle = r.ue()
        if cycle > 255:
            return None
        for _ in range(cycle):
            r.se()
    elif poc_type != 2:
        return None
    r.ue()  # max_num_ref_frames
    r.skip(1)  # gaps_in_frame_num_value_allowed_flag
    width_mbs = r.ue() + 1
    height_map_units = r.ue() + 1
    frame_mbs_only = r.flag()
    if not frame_mbs_only:
        r.skip(1)  # mb_adaptive_frame_field_flag
    r.skip(1)  # direct_8x8_inference_flag
    crop = (0, 0, 0, 0)
    if r.flag():  # frame_cropping_flag
        crop = (r.ue(), r.ue(), r.ue(), r.ue())
    chroma_array_type = 0 if separate_colour_plane else chroma_format_idc
    sub_w, sub_h = {0: (1, 1), 1: (2, 2), 2: (2, 1), 3: (1, 1)}[chroma_array_type]
    crop_x = 1 if chroma_array_type == 0 else sub_w
    crop_y = (2 - frame_mbs_only) * (1 if chroma_array_type == 0 else sub_h)
    width = width_mbs * 16 - crop_x * (crop[0] + crop[1])
    height = (2 - frame_mbs_only) * height_map_units * 16 - crop_y * (crop[2] + crop[3])
    if not (0 < width <= _MAX_DIMENSION and 0 < height <= _MAX_DIMENSION):
        return None
    fps = None
    sar = None
    if r.flag():  # vui_parameters_present_flag
        try:
            sar = _vui_common_head(r)
            if r.flag():  # timing_info_present_flag
                num_units_in_tick = r.u(32)
                time_scale = r.u(32)
                if num_units_in_tick and time_scale:
                    fps = time_scale / (2 * num_units_in_tick)
        except BitstreamError:
            pass  # truncated VUI: the picture size is still good
    return SpsInfo(
        codec="h264",
        width=width,
        height=height,
        profile_idc=profile_idc,
        level_idc=level_idc,
        sps_id=sps_id,
        chroma_format_idc=chroma_format_idc,
        bit_depth_luma=bit_depth_luma,
        bit_depth_chroma=bit_depth_chroma,
        interlaced=not frame_mbs_only,
        fps=fps,
        sar=sar,
        codec_string=f"avc1.{profile_idc:02X}{constraints:02X}{level_idc:02X}",
    )


def _h265_profile_tier_level(r: BitReader, max_sub_layers_minus1: int) -> tuple[int, int, int, int, int, int]:
    """Returns (profile_space, tier, profile_idc, compat_flags, constraint_48bits, level_idc)."""
    profile_space = r.u(2)
    tier = r.u(1)
    profile_idc = r.u(5)
    compat = r.u(32)
    constraints = r.u(48)
    level_idc = r.u(8)
    present = [(r.flag(), r.flag()) for _ in range(max_sub_layers_minus1)]
    if max_sub_layers_minus1 > 0:
        r.skip(2 * (8 - max_sub_layers_minus1))  # reserved_zero_2bits
    for profile_present, level_present in present:
        if profile_present:
            r.skip(88)
        if level_present:
            r.skip(8)
    return profile_space, tier, profile_idc, compat, constraints, level_idc


def _h265_scaling_list_data(r: BitReader) -> None:
    for size_id in range(4):
        for _matrix_id in range(0, 6, 3 if size_id == 3 else 1):
            if not r.flag():  # scaling_list_pred_mode_flag
                r.ue()  # scaling_list_pred_matrix_id_delta
            else:
                coef_num = min(64, 1 << (4 + (size_id << 1)))
                if size_id > 1:
                    r.se()  # scaling_list_dc_coef_minus8
                for _ in range(coef_num):
                    r.se()  # scaling_list_delta_coef


def _h265_st_ref_pic_sets(r: BitReader, count: int) -> None:
    """Walk ``count`` st_ref_pic_set() structures (H.265 7.3.7), tracking delta POCs (7.4.8)."""
    neg: list[list[int]] = []  # DeltaPocS0 per set (negative values)
    pos: list[list[int]] = []  # DeltaPocS1 per set (positive values)
    for idx in range(count):
        inter = r.flag() if idx != 0 else False
        if inter:
            # In the SPS delta_idx_minus1 is absent (inferred 0): the reference set is idx - 1.
            sign = r.u(1)
            abs_delta = r.ue() + 1
            if abs_delta > 1 << 15:
                raise BitstreamError("abs_delta_rps out of range")
            delta_rps = -abs_delta if sign else abs_delta
            ref_neg, ref_pos = neg[idx - 1], pos[idx - 1]
            ref_all = ref_neg + ref_pos  # j indexes S0 entries first, then S1, then delta_rps itself
            use = []
            for _ in range(len(ref_all) + 1):
                used_by_curr = r.flag()
                use.append(True if used_by_curr else r.flag())  # use_delta_flag inferred 1
            n_neg = len(ref_neg)
            s0: list[int] = []
            s1: list[int] = []
            for j in range(len(ref_pos) - 1, -1, -1):
                d = ref_pos[j] + delta_rps
                if d < 0 and use[n_neg + j]:
                    s0.append(d)
            if delta_rps < 0 and use[len(ref_all)]:
                s0.append(delta_rps)
            for j in range(n_neg):
                d = ref_neg[j] + delta_rps
                if d < 0 and use[j]:
                    s0.append(d)
            for j in range(n_neg - 1, -1, -1):
                d = ref_neg[j] + delta_rps
                if d > 0 and use[j]:
                    s1.append(d)
            if delta_rps > 0 and use[len(ref_all)]:
                s1.append(delta_rps)
            for j in range(len(ref_pos)):
                d = ref_pos[j] + delta_rps
                if d > 0 and use[n_neg + j]:
                    s1.append(d)
            if len(s0) + len(s1) > 32:
                raise BitstreamError("too many delta POCs")
            neg.append(s0)
            pos.append(s1)
        else:
            num_negative = r.ue()
            num_positive = r.ue()
            if num_negative > 16 or num_positive > 16:
                raise BitstreamError("num_negative_pics / num_positive_pics out of range")
            s0 = []
            poc = 0
            for _ in range(num_negative):
                poc -= r.ue() + 1
                r.skip(1)  # used_by_curr_pic_s0_flag
                s0.append(poc)
            s1 = []
            poc = 0
            for _ in range(num_positive):
                poc += r.ue() + 1
                r.skip(1)  # used_by_curr_pic_s1_flag
                s1.append(poc)
            neg.append(s0)
            pos.append(s1)


def parse_h265_sps(nal: bytes) -> SpsInfo | None:
    """Parse an H.265 SPS NAL unit (2-byte header included). None when it is not a valid SPS."""
    if len(nal) < 5 or ((nal[0] >> 1) & 0x3F) != H265_SPS or nal[0] & 0x80:
        return None
    try:
        return _parse_h265_sps(nal)
    except NalError:
        return None


def _parse_h265_sps(nal: bytes) -> SpsInfo | None:
    rbsp = unescape_rbsp(nal[2:])
    r = BitReader(rbsp)
    r.skip(4)  # sps_video_parameter_set_id
    max_sub_layers_minus1 = r.u(3)
    if max_sub_layers_minus1 > 6:
        return None
    r.skip(1)  # sps_temporal_id_nesting_flag
    profile_space, tier, profile_idc, compat, constraints, level_idc = _h265_profile_tier_level(
        r, max_sub_layers_minus1
    )
    sps_id = r.ue()
    if sps_id > 15:
        return None
    chroma_format_idc = r.ue()
    if chroma_format_idc > 3:
        return None
    separate_colour_plane = False
    if chroma_format_idc == 3:
        separate_colour_plane = r.flag()
    pic_width = r.ue()
    pic_height = r.ue()
    conf = (0, 0, 0, 0)
    if r.flag():  # conformance_window_flag
        conf = (r.ue(), r.ue(), r.ue(), r.ue())
    chroma_array_type = 0 if separate_colour_plane else chroma_format_idc
    sub_w, sub_h = {0: (1, 1), 1: (2, 2), 2: (2, 1), 3: (1, 1)}[chroma_array_type]
    width = pic_width - sub_w * (conf[0] + conf[1])
    height = pic_height - sub_h * (conf[2] + conf[3])
    if not (0 < width <= _MAX_DIMENSION and 0 < height <= _MAX_DIMENSION):
        return None
    bit_depth_luma = r.ue() + 8
    bit_depth_chroma = r.ue() + 8
    if bit_depth_luma > 16 or bit_depth_chroma > 16:
        return None
    tier_letter = "H" if tier else "L"
    space = ("", "A", "B", "C")[profile_space]
    compat_rev = int(f"{compat:032b}"[::-1], 2)
    cons = constraints.to_bytes(6, "big").rstrip(b"\x00")
    codec_string = f"hvc1.{space}{profile_idc}.{compat_rev:X}.{tier_letter}{level_idc}" + "".join(
        f".{b:X}" for b in cons
    )
    info = dict(
        codec="h265",
        width=width,
        height=height,
        profile_idc=profile_idc,
        level_idc=level_idc,
        sps_id=sps_id,
        chroma_format_idc=chroma_format_idc,
        bit_depth_luma=bit_depth_luma,
        bit_depth_chroma=bit_depth_chroma,
        tier=tier,
        codec_string=codec_string,
    )
    # Everything below only serves the frame rate: a truncated tail still gives the picture size.
    try:
        log2_max_poc_lsb = r.ue() + 4
        if log2_max_poc_lsb > 16:
            raise BitstreamError("log2_max_pic_order_cnt_lsb out of range")
        sub_layer_ordering_info = r.flag()
        for _ in range(0 if sub_layer_ordering_info else max_sub_layers_minus1, max_sub_layers_minus1 + 1):
            r.ue()  # sps_max_dec_pic_buffering_minus1
            r.ue()  # sps_max_num_reorder_pics
            r.ue()  # sps_max_latency_increase_plus1
        r.ue()  # log2_min_luma_coding_block_size_minus3
        r.ue()  # log2_diff_max_min_luma_coding_block_size
        r.ue()  # log2_min_luma_transform_block_size_minus2
        r.ue()  # log2_diff_max_min_luma_transform_block_size
        r.ue()  # max_transform_hierarchy_depth_inter
        r.ue()  # max_transform_hierarchy_depth_intra
        if r.flag():  # scaling_list_enabled_flag
            if r.flag():  # sps_scaling_list_data_present_flag
                _h265_scaling_list_data(r)
        r.skip(2)  # amp_enabled_flag, sample_adaptive_offset_enabled_flag
        if r.flag():  # pcm_enabled_flag
            r.skip(8)  # pcm_sample_bit_depth_luma_minus1 u(4), chroma u(4)
            r.ue()
            r.ue()
            r.skip(1)  # pcm_loop_filter_disabled_flag
        num_st_rps = r.ue()
        if num_st_rps > 64:
            raise BitstreamError("num_short_term_ref_pic_sets out of range")
        _h265_st_ref_pic_sets(r, num_st_rps)
        if r.flag():  # long_term_ref_pics_present_flag
            num_lt = r.ue()
            if num_lt > 32:
                raise BitstreamError("num_long_term_ref_pics_sps out of range")
            for _ in range(num_lt):
                r.skip(log2_max_poc_lsb + 1)  # lt_ref_pic_poc_lsb_sps, used_by_curr_pic_lt_sps_flag
        r.skip(2)  # sps_temporal_mvp_enabled_flag, strong_intra_smoothing_enabled_flag
        if r.flag():  # vui_parameters_present_flag
            info["sar"] = _vui_common_head(r)
            r.skip(1)  # neutral_chroma_indication_flag
            info["interlaced"] = r.flag()  # field_seq_flag
            r.skip(1)  # frame_field_info_present_flag
            if r.flag():  # default_display_window_flag
                for _ in range(4):
                    r.ue()
            if r.flag():  # vui_timing_info_present_flag
                num_units_in_tick = r.u(32)
                time_scale = r.u(32)
                if num_units_in_tick and time_scale:
                    info["fps"] = time_scale / num_units_in_tick
    except BitstreamError:
        pass
    return SpsInfo(**info)


def parse_sps(codec: str, nal: bytes) -> SpsInfo | None:
    """Parse an SPS of ``codec`` ("h264" / "h265"); None when ``nal`` is not a valid SPS."""
    _check_codec(codec)
    return parse_h264_sps(nal) if codec == "h264" else parse_h265_sps(nal)


def nal_headers_plausible(codec: str, nals: Sequence[bytes]) -> int:
    """Score how plausible ``nals`` are as units of ``codec`` (used to probe a stream without a PSM).

    +1 per plausible NAL header, -2 per impossible one, +8 per SPS that parses.
    """
    score = 0
    for nal in nals:
        if len(nal) < 2 or nal[0] & 0x80:
            score -= 2
            continue
        b0 = nal[0]
        if codec == "h264":
            t = b0 & 0x1F
            ref = b0 >> 5
            if t in (1, 5, 7, 8):
                ok = t == 1 or ref != 0
            elif t in (6, 9, 10, 11, 12):
                ok = ref == 0
            elif t in (14, 15, 20):
                ok = True
            else:
                ok = False
            if ok and t == H264_SPS and parse_h264_sps(nal) is not None:
                score += 8
        else:
            t = (b0 >> 1) & 0x3F
            layer = ((b0 & 1) << 5) | (nal[1] >> 3)
            tid1 = nal[1] & 7
            ok = layer == 0 and tid1 != 0 and (t <= 9 or 16 <= t <= 21 or 32 <= t <= 40)
            if ok and (16 <= t <= 21 or t in (32, 33)) and tid1 != 1:
                ok = False  # IRAP pictures, VPS and SPS have TemporalId 0
            if ok and t == H265_SPS and parse_h265_sps(nal) is not None:
                score += 8
        score += 1 if ok else -2
    return score
