"""Test helpers: a bit writer and SPS builders for H.264 / H.265 (syntax per ITU-T H.264 7.3.2.1.1
and H.265 7.3.2.2), used to produce parameter sets that no encoder at hand writes."""

from __future__ import annotations

from dataclasses import dataclass, field


class BitWriter:
    def __init__(self) -> None:
        self.bits: list[int] = []

    def u(self, n: int, value: int) -> BitWriter:
        assert 0 <= value < (1 << n) or n == 0
        self.bits.extend((value >> (n - 1 - i)) & 1 for i in range(n))
        return self

    def flag(self, value: bool | int) -> BitWriter:
        return self.u(1, 1 if value else 0)

    def ue(self, value: int) -> BitWriter:
        v = value + 1
        n = v.bit_length()
        self.u(n - 1, 0)
        return self.u(n, v)

    def se(self, value: int) -> BitWriter:
        return self.ue(2 * value - 1 if value > 0 else -2 * value)

    def rbsp(self) -> bytes:
        bits = self.bits + [1]  # rbsp_stop_one_bit
        while len(bits) % 8:
            bits.append(0)
        return bytes(int("".join(map(str, bits[i : i + 8])), 2) for i in range(0, len(bits), 8))


def escape(rbsp: bytes) -> bytes:
    """Insert emulation prevention bytes (H.264 / H.265 7.4.1)."""
    out = bytearray()
    zeros = 0
    for b in rbsp:
        if zeros >= 2 and b <= 3:
            out.append(3)
            zeros = 0
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
    return bytes(out)


@dataclass
class H264Sps:
    profile_idc: int = 100
    constraints: int = 0
    level_idc: int = 40
    sps_id: int = 0
    chroma_format_idc: int = 1
    separate_colour_plane: bool = False
    bit_depth_luma: int = 8
    bit_depth_chroma: int = 8
    scaling_lists: dict[int, list[int]] | None = None  # list index -> delta_scale values
    log2_max_frame_num: int = 4
    poc_type: int = 0
    poc_cycle: list[int] = field(default_factory=list)
    width_mbs: int = 120
    height_map_units: int = 68
    frame_mbs_only: bool = True
    crop: tuple[int, int, int, int] | None = (0, 0, 0, 4)
    sar: tuple[int, int] | int | None = None  # (w, h) -> Extended_SAR; int -> aspect_ratio_idc
    video_signal: bool = False
    chroma_loc: bool = False
    timing: tuple[int, int] | None = (1, 50)  # num_units_in_tick, time_scale

    def nal(self) -> bytes:
        w = BitWriter()
        w.u(8, self.profile_idc).u(8, self.constraints).u(8, self.level_idc).ue(self.sps_id)
        if self.profile_idc in (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135):
            w.ue(self.chroma_format_idc)
            if self.chroma_format_idc == 3:
                w.flag(self.separate_colour_plane)
            w.ue(self.bit_depth_luma - 8).ue(self.bit_depth_chroma - 8).flag(0)
            w.flag(self.scaling_lists is not None)
            if self.scaling_lists is not None:
                for i in range(8 if self.chroma_format_idc != 3 else 12):
                    deltas = self.scaling_lists.get(i)
                    w.flag(deltas is not None)
                    last = 8
                    for d in deltas or ():  # the decoder stops reading once nextScale is 0
                        w.se(d)
                        last = (last + d + 256) % 256
                        if last == 0:
                            break
        w.ue(self.log2_max_frame_num - 4).ue(self.poc_type)
        if self.poc_type == 0:
            w.ue(2)
        elif self.poc_type == 1:
            w.flag(0).se(-3).se(5).ue(len(self.poc_cycle))
            for off in self.poc_cycle:
                w.se(off)
        w.ue(4).flag(0)  # max_num_ref_frames, gaps_in_frame_num_value_allowed_flag
        w.ue(self.width_mbs - 1).ue(self.height_map_units - 1).flag(self.frame_mbs_only)
        if not self.frame_mbs_only:
            w.flag(1)
        w.flag(1)  # direct_8x8_inference_flag
        w.flag(self.crop is not None)
        if self.crop is not None:
            for c in self.crop:
                w.ue(c)
        vui = self.sar is not None or self.video_signal or self.chroma_loc or self.timing is not None
        w.flag(vui)
        if vui:
            _vui_head(w, self.sar, self.video_signal, self.chroma_loc)
            w.flag(self.timing is not None)
            if self.timing is not None:
                w.u(32, self.timing[0]).u(32, self.timing[1]).flag(1)
            w.flag(0).flag(0).flag(0).flag(0)  # nal_hrd, vcl_hrd, pic_struct, bitstream_restriction
        return bytes((0x67,)) + escape(w.rbsp())


def _vui_head(w: BitWriter, sar, video_signal: bool, chroma_loc: bool) -> None:
    w.flag(sar is not None)
    if isinstance(sar, tuple):
        w.u(8, 255).u(16, sar[0]).u(16, sar[1])
    elif sar is not None:
        w.u(8, sar)
    w.flag(1).flag(0)  # overscan_info_present_flag, overscan_appropriate_flag
    w.flag(video_signal)
    if video_signal:
        w.u(3, 5).flag(1).flag(1).u(8, 1).u(8, 1).u(8, 1)
    w.flag(chroma_loc)
    if chroma_loc:
        w.ue(1).ue(1)


@dataclass
class StRps:
    """Explicit: negative / positive POC deltas (absolute steps). Inter: (delta_rps, [(used, use_delta)])."""

    negative: list[int] = field(default_factory=list)
    positive: list[int] = field(default_factory=list)
    inter: tuple[int, list[tuple[int, int]]] | None = None


@dataclass
class H265Sps:
    max_sub_layers: int = 1
    sub_layer_flags: list[tuple[int, int]] = field(default_factory=list)  # (profile, level) present
    profile_idc: int = 1
    tier: int = 0
    level_idc: int = 93
    sps_id: int = 0
    chroma_format_idc: int = 1
    separate_colour_plane: bool = False
    width: int = 1920
    height: int = 1088
    conf: tuple[int, int, int, int] | None = (0, 0, 0, 4)
    bit_depth_luma: int = 8
    bit_depth_chroma: int = 8
    log2_max_poc_lsb: int = 8
    sub_layer_ordering_info: bool = True
    scaling_list_data: bool = False
    pcm: bool = False
    st_rps: list[StRps] = field(default_factory=list)
    long_term: list[int] = field(default_factory=list)
    sar: tuple[int, int] | int | None = None
    video_signal: bool = False
    chroma_loc: bool = False
    field_seq: bool = False
    default_display_window: bool = False
    timing: tuple[int, int] | None = (1001, 30000)

    def nal(self) -> bytes:
        w = BitWriter()
        msl = self.max_sub_layers - 1
        w.u(4, 0).u(3, msl).flag(1)
        # profile_tier_level(1, msl)
        w.u(2, 0).u(1, self.tier).u(5, self.profile_idc)
        w.u(32, 1 << (31 - self.profile_idc))
        w.u(4, 0b1001).u(43, 0).u(1, 0)
        w.u(8, self.level_idc)
        flags = self.sub_layer_flags or [(0, 0)] * msl
        for p, lv in flags:
            w.flag(p).flag(lv)
        if msl > 0:
            for _ in range(msl, 8):
                w.u(2, 0)
        for p, lv in flags:
            if p:
                w.u(8, self.profile_idc).u(32, 0).u(48, 0)
            if lv:
                w.u(8, self.level_idc)
        w.ue(self.sps_id).ue(self.chroma_format_idc)
        if self.chroma_format_idc == 3:
            w.flag(self.separate_colour_plane)
        w.ue(self.width).ue(self.height)
        w.flag(self.conf is not None)
        if self.conf is not None:
            for c in self.conf:
                w.ue(c)
        w.ue(self.bit_depth_luma - 8).ue(self.bit_depth_chroma - 8).ue(self.log2_max_poc_lsb - 4)
        w.flag(self.sub_layer_ordering_info)
        for _ in range(0 if self.sub_layer_ordering_info else msl, msl + 1):
            w.ue(4).ue(2).ue(0)
        w.ue(0).ue(3).ue(0).ue(3).ue(1).ue(1)  # CB 8..64, TB 4..32, hierarchy depths
        w.flag(self.scaling_list_data)
        if self.scaling_list_data:
            w.flag(1)
            for size_id in range(4):
                for matrix_id in range(0, 6, 3 if size_id == 3 else 1):
                    if (size_id + matrix_id) % 2:
                        w.flag(0).ue(0)  # predicted from the reference list
                    else:
                        w.flag(1)
                        if size_id > 1:
                            w.se(8)
                        for k in range(min(64, 1 << (4 + 2 * size_id))):
                            w.se(1 if k % 3 else -1)
        w.flag(1).flag(1)  # amp, sao
        w.flag(self.pcm)
        if self.pcm:
            w.u(4, 7).u(4, 7).ue(0).ue(1).flag(1)
        w.ue(len(self.st_rps))
        for idx, rps in enumerate(self.st_rps):
            if idx:
                w.flag(rps.inter is not None)
            if rps.inter is not None:
                delta_rps, entries = rps.inter
                w.flag(delta_rps < 0).ue(abs(delta_rps) - 1)
                for used, use_delta in entries:
                    w.flag(used)
                    if not used:
                        w.flag(use_delta)
            else:
                w.ue(len(rps.negative)).ue(len(rps.positive))
                for d in rps.negative:
                    w.ue(d - 1).flag(1)
                for d in rps.positive:
                    w.ue(d - 1).flag(1)
        w.flag(bool(self.long_term))
        if self.long_term:
            w.ue(len(self.long_term))
            for lsb in self.long_term:
                w.u(self.log2_max_poc_lsb, lsb).flag(1)
        w.flag(1).flag(1)  # sps_temporal_mvp_enabled_flag, strong_intra_smoothing_enabled_flag
        vui = True
        w.flag(vui)
        _vui_head(w, self.sar, self.video_signal, self.chroma_loc)
        w.flag(0).flag(self.field_seq).flag(0)
        w.flag(self.default_display_window)
        if self.default_display_window:
            w.ue(1).ue(2).ue(3).ue(4)
        w.flag(self.timing is not None)
        if self.timing is not None:
            w.u(32, self.timing[0]).u(32, self.timing[1]).flag(0).flag(0)  # poc_proportional, hrd
        w.flag(0)  # bitstream_restriction_flag
        w.flag(0)  # sps_extension_present_flag
        return bytes((0x42, 0x01)) + escape(w.rbsp())
