"""Program stream demuxer / muxer: real vectors checked against ffprobe and libavformat, synthetic
edge cases (vendor PSM descriptors, unbounded PES, wrong lengths, garbage), round trips and fuzzing."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from media_relay.nal import param_sets, split_annexb, to_annexb
from media_relay.ps import PsDemuxer, PsError, PsMuxer, crc32_mpeg2
from media_relay.rtp import RtpPacket, packetize_ps
from media_relay.types import AccessUnit
from tests.media.conftest import (
    FFPROBE_CODEC,
    PS_VECTORS,
    ffprobe_packets,
    ffprobe_streams,
)

# --- helpers ------------------------------------------------------------------------------------


def demux(data: bytes, chunk_sizes: list[int] | None = None, dm: PsDemuxer | None = None) -> list[AccessUnit]:
    dm = dm if dm is not None else PsDemuxer()
    out: list[AccessUnit] = []
    if chunk_sizes is None:
        out += dm.feed(data)
    else:
        i = k = 0
        while i < len(data):
            step = chunk_sizes[k % len(chunk_sizes)]
            out += dm.feed(data[i : i + step])
            i += step
            k += 1
    out += dm.flush(eof=True)
    return out


def video(aus: list[AccessUnit]) -> list[AccessUnit]:
    return [a for a in aus if a.kind == "video"]


def audio(aus: list[AccessUnit]) -> list[AccessUnit]:
    return [a for a in aus if a.kind == "audio"]


def packs(data: bytes) -> list[bytes]:
    """Split a program stream at its pack headers (fine for the streams used here)."""
    starts = []
    i = data.find(b"\x00\x00\x01\xba")
    while i >= 0:
        starts.append(i)
        i = data.find(b"\x00\x00\x01\xba", i + 4)
    return [data[a:b] for a, b in zip(starts, starts[1:] + [len(data)], strict=True)]


def _pts(packet: dict) -> int | None:
    return int(packet["pts"]) if "pts" in packet else None


@pytest.fixture(scope="module")
def vectors(ps_dir: Path) -> dict[str, bytes]:
    return {name: (ps_dir / name).read_bytes() for name in PS_VECTORS}


@pytest.fixture(scope="module")
def demuxed(vectors: dict[str, bytes]) -> dict[str, list[AccessUnit]]:
    return {name: demux(data) for name, data in vectors.items()}


# --- the vectors against ffprobe ----------------------------------------------------------------


@pytest.mark.parametrize("name", PS_VECTORS)
@pytest.mark.parametrize("mode", ["whole", "random_chunks", "tiny_chunks"])
def test_vector_against_ffprobe(name: str, mode: str, ps_dir: Path, vectors: dict[str, bytes]) -> None:
    path = ps_dir / name
    data = vectors[name]
    if mode == "whole":
        chunks = None
    elif mode == "random_chunks":
        rnd = random.Random(name)
        chunks = [rnd.randint(1, 4000) for _ in range(500)]
    else:
        chunks = [1, 2, 3, 5, 7, 11, 13]
    dm = PsDemuxer()
    aus = demux(data, chunks, dm)
    vids = video(aus)
    streams = ffprobe_streams(path, count_frames=True)
    vstream = next(s for s in streams if s["codec_type"] == "video")
    assert len(vids) == int(vstream["nb_read_packets"]) == int(vstream["nb_read_frames"])
    assert dm.video_codec == FFPROBE_CODEC[vstream["codec_name"]]
    assert {a.codec for a in vids} == {dm.video_codec}
    vp = dm.video_params
    assert vp is not None and vp.codec == dm.video_codec
    assert (vp.width, vp.height) == (vstream["width"], vstream["height"])
    assert vp.extra["fps"] == 25

    ref = ffprobe_packets(path, "v:0")
    assert [a.pts for a in vids] == [_pts(p) for p in ref]
    assert [a.keyframe for a in vids] == ["K" in p["flags"] for p in ref]
    assert sum(a.keyframe for a in vids) >= 1
    assert vids[0].keyframe
    known = [a.pts for a in vids if a.pts is not None]
    assert known == sorted(known)  # no B-frames in these streams

    astreams = [s for s in streams if s["codec_type"] == "audio"]
    auds = audio(aus)
    if astreams:
        assert dm.audio_codec == FFPROBE_CODEC[astreams[0]["codec_name"]]
        assert len(auds) == int(astreams[0]["nb_read_packets"])
        assert [a.pts for a in auds] == [_pts(p) for p in ffprobe_packets(path, "a:0")]
        assert all(a.data[:2] in (b"\xff\xf1", b"\xff\xf9") for a in auds)  # ADTS kept
    else:
        assert auds == []
    assert dm.errors == 0 and dm.internal_errors == 0 and dm.psm_crc_errors == 0
    assert dm.video_frames == len(vids)


@pytest.mark.parametrize("name", PS_VECTORS)
def test_vector_against_libavformat(name: str, ps_dir: Path, demuxed: dict[str, list[AccessUnit]]) -> None:
    """Each access unit holds exactly the NAL units of libavformat's packet (audio: same bytes)."""
    import av
    with av.open(str(ps_dir / name)) as container:
        ref_video = [bytes(p) for p in container.demux(container.streams.video[0]) if p.size]
    ours = video(demuxed[name])
    assert len(ours) == len(ref_video)
    for k, (au, ref) in enumerate(zip(ours, ref_video, strict=True)):
        assert split_annexb(au.data) == split_annexb(ref), f"access unit {k}"
    with av.open(str(ps_dir / name)) as container:
        if container.streams.audio:
            ref_audio = [bytes(p) for p in container.demux(container.streams.audio[0]) if p.size]
            assert [a.data for a in audio(demuxed[name])] == ref_audio


def test_video_params(demuxed: dict[str, list[AccessUnit]], vectors: dict[str, bytes]) -> None:
    for name, codec in (("zlm_h264_aac.ps", "h264"), ("zlm_h265_aac.ps", "h265")):
        dm = PsDemuxer()
        demux(vectors[name], dm=dm)
        first_key = next(a for a in demuxed[name] if a.keyframe)
        ps = param_sets(codec, split_annexb(first_key.data))
        vp = dm.video_params
        assert vp is not None
        assert vp.sps == ps["sps"] and vp.pps == ps["pps"] and vp.vps == ps.get("vps")
        assert (vp.width, vp.height) == (640, 360)
        assert vp.extra["codec_string"].startswith("avc1." if codec == "h264" else "hvc1.")
        assert dm.sps_info is not None and dm.sps_info.codec == codec


def test_no_psm_streams_are_probed(vectors: dict[str, bytes]) -> None:
    for name, codec in (
        ("ffmpeg_vob_h264_noPSM_E2.ps", "h264"),
        ("ffmpeg_mpeg1_h264_noPSM_E2.ps", "h264"),
        ("ffmpeg_mpeg1_h265_noPSM.ps", "h265"),
    ):
        dm = PsDemuxer()
        demux(vectors[name], dm=dm)
        assert dm.video_codec == codec and dm.video_codec_probed
        assert dm.psms == 0
    dm = PsDemuxer()
    demux(vectors["zlm_h265_aac.ps"], dm=dm)
    assert not dm.video_codec_probed and dm.psms == 16


# --- RTP path: one pack per RTP frame, flush on the marker --------------------------------------


@pytest.mark.parametrize("name", ["zlm_h264_aac.ps", "zlm_h265_aac.ps", "gst_mpegpsmux_h264.ps"])
def test_rtp_path_with_flush(name: str, vectors: dict[str, bytes], demuxed) -> None:
    seq = 65000
    wire = []
    for k, pack in enumerate(packs(vectors[name])):
        pkts = packetize_ps(pack, ssrc=100000001, sequence=seq, timestamp=k * 3600, mtu_payload=1400)
        seq += len(pkts)
        wire += [p.to_bytes() for p in pkts]
    dm = PsDemuxer()
    out: list[AccessUnit] = []
    for raw in wire:
        p = RtpPacket.parse(raw)
        out += dm.feed(p.payload)
        if p.marker:
            out += dm.flush()
    out += dm.flush()
    assert video(out) == video(demuxed[name])
    assert audio(out) == audio(demuxed[name])


def test_flush_emits_the_frame_at_once(vectors: dict[str, bytes]) -> None:
    """GB devices send one frame per pack: with flush() on the marker there is no frame of delay."""
    dm = PsDemuxer()
    for pack in packs(vectors["zlm_h264_aac.ps"])[:40]:
        got = video(dm.feed(pack))
        assert got == []  # the access unit is not known to be complete before the marker
        after = dm.flush()
        has_video = b"\x00\x00\x01\xe0" in pack
        assert len(video(after)) == (1 if has_video else 0)
    # without flush, a frame comes out when the next one begins
    dm = PsDemuxer()
    counts = [len(video(dm.feed(p))) for p in packs(vectors["zlm_h264_aac.ps"])[:40]]
    assert sum(counts) >= 25 and counts[0] == 0


# --- muxer --------------------------------------------------------------------------------------


def _mux_file(aus: list[AccessUnit], video_codec: str, audio_codec: str | None) -> tuple[bytes, list[bytes]]:
    mx = PsMuxer(video_codec, audio_codec)
    out = [mx.mux(a) for a in aus if a.kind == "video" or audio_codec]
    return b"".join(out), out


@pytest.mark.parametrize(
    "name,video_codec,audio_codec",
    [
        ("zlm_h264_aac.ps", "h264", None),
        ("zlm_h265_aac.ps", "h265", None),
        ("zlm_h264_aac.ps", "h264", "aac"),
        ("zlm_h265_aac.ps", "h265", "aac"),
        ("gst_mpegpsmux_h264.ps", "h264", None),  # PTS + DTS
    ],
)
def test_mux_round_trip(name, video_codec, audio_codec, demuxed, tmp_path: Path) -> None:
    aus = demuxed[name] if audio_codec else video(demuxed[name])
    data, per_au = _mux_file(aus, video_codec, audio_codec)
    path = tmp_path / "ours.ps"
    path.write_bytes(data)
    streams = ffprobe_streams(path, count_frames=True)
    vstream = next(s for s in streams if s["codec_type"] == "video")
    vids = video(aus)
    assert FFPROBE_CODEC[vstream["codec_name"]] == video_codec
    assert (vstream["width"], vstream["height"]) == (640, 360)
    assert int(vstream["nb_read_frames"]) == int(vstream["nb_read_packets"]) == len(vids)
    ref = ffprobe_packets(path, "v:0")
    assert [_pts(p) for p in ref] == [a.pts for a in vids]
    assert ["K" in p["flags"] for p in ref] == [a.keyframe for a in vids]
    astreams = [s for s in streams if s["codec_type"] == "audio"]
    if audio_codec:
        assert len(astreams) == 1 and FFPROBE_CODEC[astreams[0]["codec_name"]] == audio_codec
        assert int(astreams[0]["nb_read_frames"]) == len(audio(aus))
    else:
        assert astreams == []
    # our demuxer reads our own output back identically, whole and one pack + flush at a time
    dm = PsDemuxer()
    back = demux(data, dm=dm)
    assert video(back) == vids and audio(back) == audio(aus)
    assert dm.errors == 0 and dm.psm_crc_errors == 0
    dm = PsDemuxer()
    back = []
    for pack in per_au:
        back += dm.feed(pack) + dm.flush()
    assert back == aus


def test_mux_layout() -> None:
    mx = PsMuxer("h265", "g711a")
    key = AccessUnit("video", "h265", b"\x00\x00\x00\x01\x26\x01\xaf" + bytes(100), 90000, None, True)
    pack = mx.mux(key)
    assert pack[:4] == b"\x00\x00\x01\xba" and pack[4] & 0xC0 == 0x40
    assert pack[14:18] == b"\x00\x00\x01\xbb"
    psm_at = pack.index(b"\x00\x00\x01\xbc")
    psm_len = int.from_bytes(pack[psm_at + 4 : psm_at + 6], "big")
    psm = pack[psm_at : psm_at + 6 + psm_len]
    assert crc32_mpeg2(psm) == 0  # the CRC_32 makes the register end at zero
    assert b"\x24\xe0\x00\x00" in psm and b"\x90\xc0\x00\x00" in psm
    pes_at = pack.index(b"\x00\x00\x01\xe0")
    assert pack[pes_at + 6] == 0x84 and pack[pes_at + 7] == 0x80 and pack[pes_at + 8] == 5  # PTS only
    # a non-key frame: no system header, no PSM; audio goes to 0xC0
    p2 = mx.mux(AccessUnit("video", "h265", b"\x00\x00\x00\x01\x02\x01\xd0", 93600, 90000, False))
    assert b"\x00\x00\x01\xbb" not in p2 and b"\x00\x00\x01\xbc" not in p2
    assert p2[14:17] == b"\x00\x00\x01" and p2[17] == 0xE0 and p2[21] == 0xC0  # PTS + DTS
    a = mx.mux(AccessUnit("audio", "g711a", bytes(160), 91000))
    assert a[14:18] == b"\x00\x00\x01\xc0"
    dm = PsDemuxer()
    got = demux(pack + p2 + a, dm=dm)
    assert [(x.kind, x.codec, x.pts) for x in got] == [
        ("video", "h265", 90000),
        ("audio", "g711a", 91000),
        ("video", "h265", 93600),
    ]
    assert dm.audio_codec == "g711a"


def test_mux_scr() -> None:
    mx = PsMuxer("h264")
    au = AccessUnit("video", "h264", b"\x00\x00\x00\x01\x65\x88", (1 << 33) - 10, (1 << 33) - 3610, True)
    for scr, expected in ((None, (1 << 33) - 3610), (123456789, 123456789)):
        dm = PsDemuxer()
        got = demux(mx.mux(au, scr=scr), dm=dm)
        assert dm.scr == expected and dm.mux_rate == mx.mux_rate
        assert got == [au]


def test_mux_big_frame_split_over_pes(demuxed, tmp_path: Path) -> None:
    """Frames over 64 KiB go into several PES packets; only the first carries the PTS."""
    base = video(demuxed["zlm_h264_aac.ps"])
    filler = b"\x0c" + b"\xff" * 150_000 + b"\x80"  # H.264 filler data NAL unit
    aus = [
        AccessUnit(a.kind, a.codec, a.data + to_annexb([filler]), a.pts, a.dts, a.keyframe)
        if k % 50 == 0
        else a
        for k, a in enumerate(base[:120])
    ]
    data, per_au = _mux_file(aus, "h264", None)
    first = per_au[0]
    assert first.count(b"\x00\x00\x01\xe0") == 3
    heads = [first.index(b"\x00\x00\x01\xe0")]
    while True:
        i = first.find(b"\x00\x00\x01\xe0", heads[-1] + 4)
        if i < 0:
            break
        heads.append(i)
    assert [first[h + 7] >> 6 for h in heads] == [2, 0, 0]
    assert all(int.from_bytes(first[h + 4 : h + 6], "big") <= 0xFFFF for h in heads)
    assert demux(data) == aus
    for size in (1400, 5000):
        assert demux(data, [size]) == aus
    path = tmp_path / "big.ps"
    path.write_bytes(data)
    vstream = ffprobe_streams(path, count_frames=True)[0]
    assert int(vstream["nb_read_frames"]) == 120


def test_muxer_rejects() -> None:
    with pytest.raises(PsError):
        PsMuxer("vp8")
    with pytest.raises(PsError):
        PsMuxer("h264", "opus")
    mx = PsMuxer("h264")
    with pytest.raises(PsError):
        mx.mux(AccessUnit("video", "h265", b"", 0))
    with pytest.raises(PsError):
        mx.mux(AccessUnit("audio", "aac", b"", 0))
    with pytest.raises(PsError):
        mx.mux(AccessUnit("data", "h264", b"", 0))


# --- synthetic streams: vendor quirks -----------------------------------------------------------

SPS264 = None


def _gb_stream(demuxed, n: int = 30) -> tuple[list[AccessUnit], list[bytes]]:
    aus = video(demuxed["zlm_h264_aac.ps"])[:n]
    mx = PsMuxer("h264")
    return aus, [mx.mux(a) for a in aus]


def _hik_psm() -> bytes:
    """A PSM in the style of some vendors: program descriptors and per-stream descriptors."""
    prog_desc = bytes((0x40, 0x0E)) + b"VENDOR-INFO-01" + bytes((0x41, 0x04, 1, 2, 3, 4))
    es_video = bytes((0x1B, 0xE0)) + (10).to_bytes(2, "big") + bytes((0x42, 0x08)) + bytes(range(8))
    es_audio = bytes((0x90, 0xC0)) + (6).to_bytes(2, "big") + bytes((0x43, 0x04, 0, 0x1F, 0x40, 0x10))
    body = bytes((0xE1, 0xFF)) + len(prog_desc).to_bytes(2, "big") + prog_desc
    body += (len(es_video) + len(es_audio)).to_bytes(2, "big") + es_video + es_audio
    head = b"\x00\x00\x01\xbc" + (len(body) + 4).to_bytes(2, "big") + body
    return head + crc32_mpeg2(head).to_bytes(4, "big")


def _pes(sid: int, payload: bytes, pts: int | None = None) -> bytes:
    from media_relay.ps import _ts_bytes

    ts = _ts_bytes(2, pts) if pts is not None else b""
    length = 3 + len(ts) + len(payload)
    return (
        b"\x00\x00\x01"
        + bytes((sid,))
        + length.to_bytes(2, "big")
        + bytes((0x80, 0x80 if ts else 0, len(ts)))
        + ts
        + payload
    )


def test_vendor_psm_private_streams_and_g711(demuxed) -> None:
    aus, per_au = _gb_stream(demuxed, 10)
    stream = bytearray()
    for k, (au, pack) in enumerate(zip(aus, per_au, strict=True)):
        pack = pack.replace(b"\x00\x00\x01\xbc", b"\x00\x00\x01\xbd\x00\x04priv" + b"\x00\x00\x01\xbc", 1)
        stream += pack
        if au.keyframe:
            stream += _hik_psm()
        stream += _pes(0xBD, b"vendor private data")  # private stream 1
        priv2 = b"\x00\x00\x01\xe0 a start code inside private stream 2"
        stream += b"\x00\x00\x01\xbf" + len(priv2).to_bytes(2, "big") + priv2
        stream += b"\x00\x00\x01\xbe\x00\x08" + b"\xff" * 8  # padding
        stream += _pes(0xE1, b"\x00\x00\x00\x01\x65\x88second video")  # another video stream: ignored
        stream += _pes(0xC0, bytes((0xD5,)) * 160, pts=au.pts + 100 if au.pts is not None else None)
        if k == 5:
            stream += b"\x00\x00\x01\xb9"  # program end code
    dm = PsDemuxer()
    got = demux(bytes(stream), dm=dm)
    assert video(got) == aus
    auds = audio(got)
    assert len(auds) == 10 and {a.codec for a in auds} == {"g711a"} and auds[0].data == b"\xd5" * 160
    assert dm.audio_codec == "g711a" and dm.stream_types == {0xE0: 0x1B, 0xC0: 0x90}
    assert dm.video_stream_id == 0xE0
    assert dm.errors == 0 and dm.psm_crc_errors == 0
    assert dm.skipped_pes >= 40
    for sizes in ([1], [3, 700], [1400]):
        assert demux(bytes(stream), sizes) == got


def test_psm_with_bad_crc_is_still_used() -> None:
    psm = bytearray(_hik_psm())
    psm[-1] ^= 0xFF
    dm = PsDemuxer()
    dm.feed(bytes(psm))
    assert dm.psm_crc_errors == 1 and dm.video_codec == "h264" and dm.audio_codec == "g711a"


def test_g711u_and_unknown_audio_without_psm() -> None:
    mx = PsMuxer("h264", "g711u")
    au = AccessUnit("audio", "g711u", bytes(160), 1000)
    assert demux(mx.mux(au)) == [au]
    # without a PSM, audio that is not ADTS cannot be named and is dropped
    dm = PsDemuxer()
    assert demux(_pes(0xC0, bytes(160), 5), dm=dm) == []
    dm = PsDemuxer()
    adts = bytes((0xFF, 0xF1, 0x50, 0x80, 0x02, 0x1F, 0xFC)) + bytes(9)
    got = demux(_pes(0xC0, adts, 5), dm=dm)
    assert [(a.codec, a.data) for a in got] == [("aac", adts)] and dm.audio_codec == "aac"


def _set_pes_lengths(stream: bytes, sid: int, fn) -> bytes:
    """Rewrite PES_packet_length of each PES of ``sid`` with fn(length)."""
    out = bytearray(stream)
    i = out.find(b"\x00\x00\x01" + bytes((sid,)))
    while i >= 0:
        length = int.from_bytes(out[i + 4 : i + 6], "big")
        out[i + 4 : i + 6] = fn(length).to_bytes(2, "big")
        i = out.find(b"\x00\x00\x01" + bytes((sid,)), i + 6 + length)
    return bytes(out)


def test_unbounded_video_pes(demuxed) -> None:
    aus, per_au = _gb_stream(demuxed)
    stream = _set_pes_lengths(b"".join(per_au), 0xE0, lambda n: 0)
    for sizes in (None, [1], [7, 1400], [100_000]):
        dm = PsDemuxer()
        assert demux(stream, sizes, dm=dm) == aus
        assert dm.errors == 0
    # with RTP framing and flush on each marker, each frame comes out on its own flush
    dm = PsDemuxer()
    for au, pack in zip(aus, per_au, strict=True):
        pack = _set_pes_lengths(pack, 0xE0, lambda n: 0)
        assert dm.feed(pack) + dm.flush() == [au]


@pytest.mark.parametrize("delta", [-7, -1, 1, 9, 300])
def test_wrong_pes_length_is_tolerated(demuxed, delta: int) -> None:
    aus, per_au = _gb_stream(demuxed)
    stream = _set_pes_lengths(b"".join(per_au), 0xE0, lambda n: max(1, n + delta))
    for sizes in (None, [1400]):
        dm = PsDemuxer()
        got = demux(stream, sizes, dm=dm)
        # too long: cut at the next pack header; too short: read on up to the next start code
        assert video(got) == aus
        assert dm.errors >= len(aus) - 1
    # one pack and flush at a time (RTP markers)
    dm = PsDemuxer()
    got = []
    for pack in per_au:
        got += dm.feed(_set_pes_lengths(pack, 0xE0, lambda n: max(1, n + delta))) + dm.flush()
    got += dm.flush(eof=True)
    assert got == aus


def test_garbage_resync(demuxed) -> None:
    aus, per_au = _gb_stream(demuxed, 40)
    rnd = random.Random(7)
    stream = bytearray()
    spoiled = set()
    for k, pack in enumerate(per_au):
        if k % 5 == 2:
            # Junk right after a video PES reads as a PES_packet_length too short: it ends up in
            # the tail of the frame before.
            stream += bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 300)))
            spoiled.add(k - 1)
        if k % 9 == 4:
            pack = pack[: len(pack) // 2]  # a pack cut short (lost packets)
            spoiled.add(k)
        stream += pack
    for sizes in (None, [1], [1400]):
        dm = PsDemuxer()
        got = video(demux(bytes(stream), sizes, dm=dm))
        assert dm.errors > 0 and dm.internal_errors == 0
        intact = [a for k, a in enumerate(aus) if k not in spoiled and k - 1 not in spoiled]
        assert len(intact) >= 15
        for a in intact:
            assert a in got
    # junk before a pack that follows audio (or at the start) is skipped as garbage
    dm = PsDemuxer()
    demux(b"\x12\x34junk" + b"".join(per_au), dm=dm)
    assert dm.garbage_bytes == 6


def test_discontinuity_drops_partial_frame(demuxed) -> None:
    aus, per_au = _gb_stream(demuxed, 10)
    dm = PsDemuxer()
    out = dm.feed(per_au[0]) + dm.flush()
    out += dm.feed(per_au[1][: len(per_au[1]) // 2])  # half a frame, then loss is reported
    dm.discontinuity()
    out += dm.feed(per_au[1][len(per_au[1]) // 2 :])  # the rest of it is garbage now
    for pack in per_au[2:]:
        out += dm.feed(pack) + dm.flush()
    assert video(out) == [aus[0]] + aus[2:]
    assert dm.discontinuities == 1


def test_codec_switch_by_psm(demuxed) -> None:
    h264 = video(demuxed["zlm_h264_aac.ps"])[:20]
    h265 = video(demuxed["zlm_h265_aac.ps"])[:20]
    m4, m5 = PsMuxer("h264"), PsMuxer("h265")
    stream = b"".join(m4.mux(a) for a in h264) + b"".join(m5.mux(a) for a in h265)
    dm = PsDemuxer()
    got = demux(stream, [999], dm=dm)
    assert got == h264 + h265
    assert dm.video_codec == "h265" and dm.video_params is not None and dm.video_params.vps is not None


def test_pts_wrap_and_no_pts(demuxed) -> None:
    base = video(demuxed["zlm_h264_aac.ps"])[:10]
    top = (1 << 33) - 5 * 3600
    aus = [
        AccessUnit(
            a.kind, a.codec, a.data, (top + k * 3600) % (1 << 33) if k != 7 else None, None, a.keyframe
        )
        for k, a in enumerate(base)
    ]
    mx = PsMuxer("h264")
    assert demux(b"".join(mx.mux(a) for a in aus)) == aus


def test_mpeg1_pack_and_packet_headers() -> None:
    """ISO/IEC 11172-1 pack header (12 bytes) and packet header with stuffing, STD buffer, PTS+DTS."""
    from media_relay.ps import _ts_bytes

    pack = b"\x00\x00\x01\xba" + _ts_bytes(2, 900) + bytes((0x80, 0x1B, 0x83))
    nal = b"\x00\x00\x00\x01\x65\x88\x84\x00\x21"
    head = b"\xff\xff" + b"\x60\x2e" + _ts_bytes(3, 7200) + _ts_bytes(1, 3600)
    pes = b"\x00\x00\x01\xe0" + (len(head) + len(nal)).to_bytes(2, "big") + head + nal
    head2 = b"\x0f"
    nal2 = b"\x00\x00\x01\x41\x9a\x21"
    pes2 = b"\x00\x00\x01\xe0" + (len(head2) + len(nal2)).to_bytes(2, "big") + head2 + nal2
    dm = PsDemuxer()
    dm.video_codec = "h264"
    got = demux(pack + pes + pack + pes2, dm=dm)
    assert dm.mpeg1 and dm.scr == 900 and dm.mux_rate == (0x1B << 7) | 0x41
    assert [(a.pts, a.dts, a.keyframe) for a in got] == [(7200, 3600, True), (None, None, False)]


def test_multi_slice_pictures_and_pes_per_nal() -> None:
    """Pictures of several slices, each NAL unit in its own PES (as some cameras send)."""
    sps, pps = b"\x67\x42\xc0\x1e\xda\x02\x80\xbf\xe5\xc0\x44", b"\x68\xce\x3c\x80"
    frames = []
    for k in range(6):
        idr = k % 3 == 0
        hdr = 0x65 if idr else 0x41
        slices = [
            bytes((hdr, 0x88 if s == 0 else 0x40 + s, 0x10 + k)) for s in range(3)
        ]  # first_mb 0, then >0
        nals = ([b"\x09\xf0", sps, pps] if idr else [b"\x09\xf0"]) + slices
        frames.append((k * 3600, nals))
    stream = bytearray()
    mx = PsMuxer("h264")
    for pts, nals in frames:
        stream += mx.mux(AccessUnit("video", "h264", b"", pts))[:14]  # a bare pack header
        for j, n in enumerate(nals):
            stream += _pes(0xE0, b"\x00\x00\x00\x01" + n, pts=pts if j == 0 else None)
    dm = PsDemuxer()
    dm.video_codec = "h264"
    got = demux(bytes(stream), dm=dm)
    assert [(a.pts, split_annexb(a.data), a.keyframe) for a in got] == [
        (pts, nals, pts % 10800 == 0) for pts, nals in frames
    ]


def test_trailing_sei_and_separate_parameter_set_pes() -> None:
    """Vendor layouts: an SEI after the picture in each frame's PES; SPS/PPS in a PES without PTS."""
    sps, pps = b"\x67\x42\xc0\x1e\xda\x02\x80\xbf\xe5\xc0\x44", b"\x68\xce\x3c\x80"
    sei = b"\x06\x05\x01\xaa\x80"
    stream = bytearray()
    for k in range(5):
        slice_ = bytes((0x65 if k == 0 else 0x41, 0x88, k))
        if k == 0:
            stream += _pes(0xE0, to_annexb([sps, pps]))  # no PTS
        stream += _pes(0xE0, to_annexb([slice_, sei]), pts=k * 3600)
    for sizes in (None, [5]):
        dm = PsDemuxer()
        dm.video_codec = "h264"
        got = demux(bytes(stream), sizes, dm=dm)
        assert [a.pts for a in got] == [0, 3600, 7200, 10800, 14400]
        assert [a.keyframe for a in got] == [True, False, False, False, False]
        # H.264 7.4.1.2.3: an SEI after the last slice begins the next access unit
        assert split_annexb(got[1].data)[0] == sei and split_annexb(got[0].data)[:2] == [sps, pps]
    # one PES + flush at a time (RTP markers) gives the same
    dm = PsDemuxer()
    dm.video_codec = "h264"
    got = []
    i = 0
    while i < len(stream):
        length = int.from_bytes(stream[i + 4 : i + 6], "big")
        got += dm.feed(bytes(stream[i : i + 6 + length])) + dm.flush()
        i += 6 + length
    got += dm.flush(eof=True)
    assert [a.pts for a in got] == [0, 3600, 7200, 10800, 14400]


def test_lost_first_slice_split_by_pts() -> None:
    """A picture whose first slice was lost still becomes its own access unit (new PTS)."""
    a = b"\x00\x00\x00\x01\x41\x88\x01\x00\x00\x00\x01\x41\x48\x02"
    b = b"\x00\x00\x00\x01\x41\x48\x03"  # only a second slice survived
    dm = PsDemuxer()
    dm.video_codec = "h264"
    got = demux(_pes(0xE0, a, 0) + _pes(0xE0, b, 3600) + _pes(0xE0, a, 7200), dm=dm)
    assert [x.pts for x in got] == [0, 3600, 7200]


# --- fuzz ---------------------------------------------------------------------------------------

_FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check_outputs(dm: PsDemuxer, aus: list[AccessUnit]) -> None:
    assert dm.internal_errors == 0
    for a in aus:
        assert a.kind in ("video", "audio")
        assert a.codec in ("h264", "h265", "aac", "g711a", "g711u")
        assert a.pts is None or 0 <= a.pts < (1 << 33)


@_FUZZ
@given(st.lists(st.binary(max_size=300), max_size=12))
def test_fuzz_feed_random(chunks: list[bytes]) -> None:
    dm = PsDemuxer()
    out: list[AccessUnit] = []
    for c in chunks:
        out += dm.feed(c)
    out += dm.flush()
    _check_outputs(dm, out)


_SAMPLES: dict[str, bytes] = {}


def _sample(name: str) -> bytes:
    if name not in _SAMPLES:
        from tests.conftest import SHARED

        path = SHARED / "vectors" / "ps" / name
        _SAMPLES[name] = path.read_bytes()[:12_000] if path.exists() else b""
    return _SAMPLES[name]


@_FUZZ
@given(st.data())
def test_fuzz_feed_mutated_vectors(data) -> None:
    sample = bytearray(_sample(data.draw(st.sampled_from(PS_VECTORS))))
    if not sample:
        return
    for _ in range(data.draw(st.integers(0, 6))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert", "zero_len"]))
        i = data.draw(st.integers(0, len(sample) - 1))
        if op == "flip":
            sample[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "cut":
            del sample[i : i + data.draw(st.integers(1, 500))]
        elif op == "insert":
            sample[i:i] = data.draw(st.binary(min_size=1, max_size=40))
        else:
            j = sample.find(b"\x00\x00\x01", i)
            if j >= 0 and j + 6 <= len(sample):
                sample[j + 4 : j + 6] = b"\x00\x00"
        if not sample:
            return
    sizes = data.draw(st.lists(st.integers(1, 3000), min_size=1, max_size=5))
    dm = PsDemuxer()
    out = demux(bytes(sample), sizes, dm=dm)
    _check_outputs(dm, out)
    if data.draw(st.booleans()):
        dm.discontinuity()
        _check_outputs(dm, demux(bytes(sample), dm=dm))


def test_flush_keeps_a_split_start_code(demuxed) -> None:
    """A marker flush must not throw away the first bytes of a start code cut by a packet boundary."""
    aus, per_au = _gb_stream(demuxed, 6)
    dm = PsDemuxer()
    got: list[AccessUnit] = []
    for k, pack in enumerate(per_au):
        cut = 2 if k % 2 else 3
        got += dm.feed(pack[:cut]) + dm.flush() + dm.feed(pack[cut:]) + dm.flush()
    assert got == aus and dm.errors == 0
