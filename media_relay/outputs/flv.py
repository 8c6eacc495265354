"""HTTP-FLV output: access units -> an FLV byte stream that flv.js / mpegts.js play in a browser.

Layout of the stream (Adobe FLV spec v10.1, annex E):

* the 9-byte FLV header and PreviousTagSize0,
* an ``onMetaData`` script tag (AMF0: width, height, framerate, videocodecid),
* the video sequence header: an AVCDecoderConfigurationRecord (H.264, CodecID 7) or an
  HEVCDecoderConfigurationRecord (H.265, CodecID 12: the non-Adobe convention of the Chinese CDNs and
  of the flv.js / mpegts.js forks; ISO/IEC 14496-15 for both records),
* one video tag per access unit: NAL units with 4-byte length prefixes, the keyframe flag and the
  composition time (pts - dts) in ms; tag timestamps are the dts in ms relative to the first access unit,
  32 bits spread over the 24-bit field and the extended byte,
* when the source has audio: AAC tags (an AudioSpecificConfig sequence header, then raw frames; G.711
  is transcoded to AAC by :mod:`media_relay.outputs.audio`), timed from the same PS clock and base.

The module is pure Python (no PyAV), so the HTTP layer may import it cheaply.  NAL unit work (Annex B
splitting, SPS parsing) is :mod:`media_relay.nal`'s; this module adds what the outputs share on top
(:func:`params_from_annexb`, a 33-bit timestamp unwrapper) and :func:`iter_tags`, a reader used by the
tests and handy for debugging captured streams.
"""

from __future__ import annotations

import asyncio
import inspect
import struct
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from media_relay.nal import (
    H264_AUD,
    H264_FILLER,
    H265_AUD,
    H265_FD,
    nal_type,
    param_sets,
    parse_h264_sps,
    parse_h265_sps,
    parse_sps,
    split_annexb,
    unescape_rbsp,
)
from media_relay.types import AccessUnit, VideoParams

FLV_CONTENT_TYPE = "video/x-flv"

TAG_AUDIO = 8
TAG_VIDEO = 9
TAG_SCRIPT = 18

CODEC_ID_AVC = 7
CODEC_ID_HEVC = 12  # not in Adobe's spec; the de-facto value used by Chinese CDNs and flv.js forks

FRAME_KEY = 1
FRAME_INTER = 2

PKT_SEQUENCE_HEADER = 0
PKT_NALU = 1
PKT_END_OF_SEQUENCE = 2

SOUND_FORMAT = {"aac": 10, "g711a": 7, "g711u": 8}

PTS_WRAP = 1 << 33
CLOCK = 90_000


# ----------------------------------------------------------------------------------- source protocol
@runtime_checkable
class AccessUnitSource(Protocol):
    """What the outputs read: a Stream reader, or a :class:`~media_relay.outputs.transcode.Transcoder`.

    ``get()`` raises :class:`EOFError` (or :class:`asyncio.CancelledError`) when the stream ends; the
    first access unit is a keyframe with its parameter sets in front.
    """

    @property
    def codec(self) -> str | None: ...

    @property
    def params(self) -> VideoParams | None: ...

    async def get(self) -> AccessUnit: ...

    def close(self) -> None: ...


async def next_au(source: AccessUnitSource) -> AccessUnit | None:
    """``await source.get()``, or None when the source has ended.

    A :class:`asyncio.CancelledError` counts as "ended" only when it comes from the source; when the task
    running this is itself being cancelled (client went away) it propagates.
    """
    try:
        return await source.get()
    except EOFError:
        return None
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        return None


async def close_source(source: object) -> None:
    """``await source.aclose()`` if it has one, else ``source.close()`` (sync or async), ignoring
    errors: used on tear-down paths."""
    close = getattr(source, "aclose", None) or getattr(source, "close", None)
    if close is None:
        return
    try:
        result = close()
        if inspect.isawaitable(result):
            await result
    except Exception:  # noqa: BLE001 - tear-down must not mask the original outcome
        pass


# ----------------------------------------------------------------------------------- in-band parameter sets
_PARAM_NAMES = {"h264": ("sps", "pps"), "h265": ("vps", "sps", "pps")}
_DROP_TYPES = {"h264": {H264_AUD, H264_FILLER}, "h265": {H265_AUD, H265_FD}}  # AUD, filler data


def params_from_annexb(codec: str, data: bytes, base: VideoParams | None = None) -> VideoParams | None:
    """Parameter sets found in-band in ``data`` (Annex B), completed from ``base``; None if incomplete.

    Width and height come from the SPS (what the decoder will actually produce).
    """
    found = param_sets(codec, split_annexb(data))
    merged = {
        name: found.get(name) or (getattr(base, name) if base is not None and base.codec == codec else None)
        for name in _PARAM_NAMES[codec]
    }
    if any(v is None for v in merged.values()):
        return None
    info = parse_sps(codec, merged["sps"])  # type: ignore[arg-type]
    if info is not None:
        width, height = info.width, info.height
    else:
        width = base.width if base is not None else None
        height = base.height if base is not None else None
    extra = dict(base.extra) if base is not None else {}
    return VideoParams(codec=codec, width=width, height=height, extra=extra, **merged)


# ----------------------------------------------------------------------------------- decoder config records
def avc_decoder_configuration_record(sps: bytes, pps: bytes | list[bytes]) -> bytes:
    """AVCDecoderConfigurationRecord (ISO/IEC 14496-15 5.3.3.1) with 4-byte NAL lengths."""
    pps_list = [pps] if isinstance(pps, bytes) else list(pps)
    out = bytearray([1, sps[1], sps[2], sps[3], 0xFC | 3, 0xE0 | 1])
    out += struct.pack(">H", len(sps)) + sps
    out.append(len(pps_list))
    for p in pps_list:
        out += struct.pack(">H", len(p)) + p
    if sps[1] in (100, 110, 122, 144):
        info = parse_h264_sps(sps)
        chroma, depth_l, depth_c = (1, 8, 8) if info is None else (
            info.chroma_format_idc, info.bit_depth_luma, info.bit_depth_chroma)
        out += bytes([0xFC | chroma, 0xF8 | (depth_l - 8), 0xF8 | (depth_c - 8), 0])
    return bytes(out)


def hevc_decoder_configuration_record(vps: bytes, sps: bytes, pps: bytes | list[bytes]) -> bytes:
    """HEVCDecoderConfigurationRecord (ISO/IEC 14496-15 8.3.3.1) with 4-byte NAL lengths."""
    info = parse_h265_sps(sps)
    if info is None:
        raise ValueError("invalid H.265 SPS")
    # The SPS RBSP starts with sps_video_parameter_set_id u(4), sps_max_sub_layers_minus1 u(3) and
    # sps_temporal_id_nesting_flag u(1), then the 12 bytes of the general profile_tier_level.
    rbsp = unescape_rbsp(sps[2:])
    max_sub_layers, nesting = ((rbsp[0] >> 1) & 7) + 1, rbsp[0] & 1
    pps_list = [pps] if isinstance(pps, bytes) else list(pps)
    out = bytearray([1])
    out += rbsp[1:13]  # profile space/tier/idc, 32 compat flags, 48 constraint flags, level
    out += struct.pack(">H", 0xF000)  # reserved '1111' + min_spatial_segmentation_idc 0
    out.append(0xFC)  # reserved '111111' + parallelismType 0 (unknown)
    out.append(0xFC | info.chroma_format_idc)
    out.append(0xF8 | (info.bit_depth_luma - 8))
    out.append(0xF8 | (info.bit_depth_chroma - 8))
    out += struct.pack(">H", 0)  # avgFrameRate unspecified
    out.append(max_sub_layers << 3 | nesting << 2 | 3)  # numTemporalLayers, temporalIdNested, 4-byte lengths
    arrays = [(32, [vps]), (33, [sps]), (34, pps_list)]
    out.append(len(arrays))
    for nal_unit_type, nals in arrays:
        out.append(0x80 | nal_unit_type)  # array_completeness 1
        out += struct.pack(">H", len(nals))
        for nal in nals:
            out += struct.pack(">H", len(nal)) + nal
    return bytes(out)


# ----------------------------------------------------------------------------------- timestamps
class TimestampUnwrapper:
    """33-bit 90 kHz timestamps -> a monotonic-ish unbounded counter.

    The first value maps to itself.  Wrap-arounds are followed; a jump of more than ``max_forward``
    or ``max_backward`` ticks is taken as a discontinuity (camera restart, new session) and smoothed
    over: the counter continues ``step`` ticks after the last value instead of jumping.
    """

    def __init__(self, *, max_forward: int = 10 * CLOCK, max_backward: int = 2 * CLOCK,
                 step: int = CLOCK // 25) -> None:
        self.max_forward = max_forward
        self.max_backward = max_backward
        self.step = step
        self.last_raw: int | None = None
        self.last: int = 0
        self.discontinuities = 0

    def unwrap(self, raw: int) -> int:
        raw %= PTS_WRAP
        if self.last_raw is None:
            self.last_raw = raw
            self.last = raw
            return raw
        delta = (raw - self.last_raw) % PTS_WRAP
        if delta >= PTS_WRAP // 2:
            delta -= PTS_WRAP
        if delta > self.max_forward or delta < -self.max_backward:
            self.discontinuities += 1
            delta = self.step
        self.last_raw = raw
        self.last += delta
        return self.last


def _signed_33(delta: int) -> int:
    delta %= PTS_WRAP
    return delta - PTS_WRAP if delta >= PTS_WRAP // 2 else delta


# ----------------------------------------------------------------------------------- AMF0
def _amf_string(s: str) -> bytes:
    b = s.encode()
    return struct.pack(">H", len(b)) + b


def amf0_value(v: object) -> bytes:
    if isinstance(v, bool):
        return b"\x01" + (b"\x01" if v else b"\x00")
    if isinstance(v, int | float):
        return b"\x00" + struct.pack(">d", float(v))
    if isinstance(v, str):
        return b"\x02" + _amf_string(v)
    if isinstance(v, dict):
        body = b"".join(_amf_string(str(k)) + amf0_value(val) for k, val in v.items())
        return b"\x08" + struct.pack(">I", len(v)) + body + b"\x00\x00\x09"
    raise TypeError(f"no AMF0 encoding for {type(v).__name__}")


# ----------------------------------------------------------------------------------- ADTS
def _split_adts(data: bytes) -> list[tuple[bytes, bytes]]:
    """ADTS frames -> [(AudioSpecificConfig, raw AAC frame)]; data without a sync word -> []."""
    out = []
    i = 0
    while i + 7 <= len(data):
        if data[i] != 0xFF or (data[i + 1] & 0xF6) != 0xF0:
            break
        protection_absent = data[i + 1] & 1
        profile = data[i + 2] >> 6
        sfi = (data[i + 2] >> 2) & 0x0F
        channels = ((data[i + 2] & 1) << 2) | (data[i + 3] >> 6)
        length = ((data[i + 3] & 3) << 11) | (data[i + 4] << 3) | (data[i + 5] >> 5)
        header = 7 if protection_absent else 9
        if length < header or i + length > len(data):
            break
        asc = struct.pack(">H", ((profile + 1) << 11) | (sfi << 7) | (channels << 3))
        out.append((asc, data[i + header : i + length]))
        i += length
    return out


_AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)


# ----------------------------------------------------------------------------------- the muxer
def _tag(tag_type: int, ts_ms: int, body: bytes) -> bytes:
    ts = ts_ms & 0xFFFFFFFF
    size = len(body)
    header = bytes([tag_type]) + size.to_bytes(3, "big")
    header += (ts & 0xFFFFFF).to_bytes(3, "big") + bytes([ts >> 24]) + b"\x00\x00\x00"
    return header + body + struct.pack(">I", 11 + size)


# The AVCC/HVCC payload of an access unit (length-prefixed NAL units, delimiters and filler dropped) is the same
# for every viewer of a Stream: made once and shared while the viewers of that Stream mux it (the readers hold the
# same AccessUnit object). Keyed by the identity of the unit's bytes, checked on use; the oldest entries go first.
_PAYLOADS: dict[tuple[int, str], tuple[bytes, bytes]] = {}
_PAYLOADS_MAX = 512


def avcc_payload(codec: str, data: bytes) -> bytes:
    """``data`` (Annex B) as length-prefixed NAL units without access unit delimiters and filler data."""
    key = (id(data), codec)
    hit = _PAYLOADS.get(key)
    if hit is not None and hit[0] is data:
        return hit[1]
    drop = _DROP_TYPES[codec]
    parts: list[bytes] = []
    for nal in split_annexb(data):
        if nal_type(codec, nal) in drop:
            continue
        parts.append(len(nal).to_bytes(4, "big"))
        parts.append(nal)
    payload = b"".join(parts)
    if len(_PAYLOADS) >= _PAYLOADS_MAX:
        del _PAYLOADS[next(iter(_PAYLOADS))]
    _PAYLOADS[key] = (data, payload)
    return payload


class FlvMuxer:
    """Builds FLV bytes; holds the timestamp state of one output stream.

    ``video_codec`` is 'h264' or 'h265'.  With ``audio=True`` the header announces audio and
    :meth:`audio_tag` muxes AAC (ADTS in, raw + AudioSpecificConfig out) and G.711 A-law / mu-law.
    """

    def __init__(self, video_codec: str, *, audio: bool = False) -> None:
        if video_codec not in _PARAM_NAMES:
            raise ValueError(f"FLV cannot carry video codec {video_codec!r}")
        self.video_codec = video_codec
        self.codec_id = CODEC_ID_HEVC if video_codec == "h265" else CODEC_ID_AVC
        self.audio = audio
        self.clock = TimestampUnwrapper()
        self.audio_clock: TimestampUnwrapper | None = None  # its own continuity, started from the video's
        self.last_video_ms = 0
        self.last_audio_ms = 0
        self._aac_config: bytes | None = None
        self.video_tags = 0
        self.audio_tags = 0

    # -- framing
    def header(self) -> bytes:
        flags = 0x01 | (0x04 if self.audio else 0)
        return b"FLV\x01" + bytes([flags]) + struct.pack(">I", 9) + struct.pack(">I", 0)

    def metadata(self, params: VideoParams | None, framerate: float | None = None, **extra: object) -> bytes:
        """The ``onMetaData`` script tag."""
        meta: dict[str, object] = {"duration": 0.0}
        if params is not None and params.width and params.height:
            meta["width"] = float(params.width)
            meta["height"] = float(params.height)
        if framerate:
            meta["framerate"] = float(framerate)
        meta["videocodecid"] = float(self.codec_id)
        meta["hasVideo"] = True
        meta["hasAudio"] = self.audio
        meta.update(extra)
        body = amf0_value("onMetaData") + amf0_value(meta)
        return _tag(TAG_SCRIPT, 0, body)

    def _video_body(self, frame_type: int, packet_type: int, cts_ms: int, payload: bytes) -> bytes:
        return (bytes([(frame_type << 4) | self.codec_id, packet_type])
                + (cts_ms & 0xFFFFFF).to_bytes(3, "big") + payload)

    def sequence_header(self, params: VideoParams) -> bytes:
        """AVC/HEVC decoder configuration record tag (timestamp of the last video tag, 0 at the start)."""
        if params.sps is None or params.pps is None:
            raise ValueError("SPS and PPS are needed for the sequence header")
        if self.video_codec == "h265":
            if params.vps is None:
                raise ValueError("VPS is needed for the H.265 sequence header")
            record = hevc_decoder_configuration_record(params.vps, params.sps, params.pps)
        else:
            record = avc_decoder_configuration_record(params.sps, params.pps)
        body = self._video_body(FRAME_KEY, PKT_SEQUENCE_HEADER, 0, record)
        return _tag(TAG_VIDEO, self.last_video_ms, body)

    def video_tag(self, au: AccessUnit, base_pts: int) -> bytes:
        """One video tag for ``au``; ``base_pts`` (90 kHz) is the timestamp that maps to 0 ms.

        ``base_pts`` is normally the dts (or pts) of the first access unit.  Parameter sets stay
        in-band; access unit delimiters and filler data are dropped.
        """
        ts_raw = au.dts if au.dts is not None else au.pts
        if ts_raw is None:
            ms = self.last_video_ms
        else:
            ms = max(0, (self.clock.unwrap(ts_raw) - base_pts) // 90)
        ms = max(ms, self.last_video_ms)  # FLV players want non-decreasing video timestamps
        cts = 0
        if au.pts is not None and au.dts is not None:
            cts = max(-(1 << 23), min((1 << 23) - 1, round(_signed_33(au.pts - au.dts) / 90)))
        payload = avcc_payload(self.video_codec, au.data)
        self.last_video_ms = ms
        self.video_tags += 1
        # one copy of the payload into the tag (header, video header, payload, previous-tag-size)
        size = 5 + len(payload)
        ts = ms & 0xFFFFFFFF
        return b"".join((
            bytes((TAG_VIDEO,)), size.to_bytes(3, "big"), (ts & 0xFFFFFF).to_bytes(3, "big"), bytes((ts >> 24, 0, 0, 0)),
            bytes((((FRAME_KEY if au.keyframe else FRAME_INTER) << 4) | self.codec_id, PKT_NALU)),
            (cts & 0xFFFFFF).to_bytes(3, "big"), payload, (11 + size).to_bytes(4, "big")))

    def end_of_sequence(self) -> bytes:
        body = self._video_body(FRAME_KEY, PKT_END_OF_SEQUENCE, 0, b"")
        return _tag(TAG_VIDEO, self.last_video_ms, body)

    def audio_tag(self, au: AccessUnit, base_pts: int) -> bytes:
        """Audio tag(s) for ``au``: AAC from ADTS (the AudioSpecificConfig tag is sent first and
        whenever it changes) or G.711.  Unknown codecs give b''."""
        if au.pts is None:
            ms = self.last_audio_ms
        else:
            if self.audio_clock is None:
                # Audio may run seconds ahead of video while a late joiner's GOP is decoded and
                # re-encoded: one unwrapper for both would take that as a discontinuity.
                self.audio_clock = TimestampUnwrapper()
                self.audio_clock.last_raw, self.audio_clock.last = self.clock.last_raw, self.clock.last
            ms = max(0, (self.audio_clock.unwrap(au.pts) - base_pts) // 90)
        ms = max(ms, self.last_audio_ms)
        out = bytearray()
        if au.codec == "aac":
            for asc, raw in _split_adts(au.data):
                if asc != self._aac_config:
                    self._aac_config = asc
                    out += _tag(TAG_AUDIO, ms, bytes([0xAF, 0]) + asc)
                out += _tag(TAG_AUDIO, ms, bytes([0xAF, 1]) + raw)
                self.audio_tags += 1
                sfi = (asc[0] & 7) << 1 | asc[1] >> 7
                if sfi < len(_AAC_RATES):
                    ms += 1024 * 1000 // _AAC_RATES[sfi]
        elif au.codec in ("g711a", "g711u"):
            # SoundFormat 7/8, rate field 0 (8 kHz is implied), 16-bit decoded, mono
            flags = (SOUND_FORMAT[au.codec] << 4) | 0x02
            out += _tag(TAG_AUDIO, ms, bytes([flags]) + au.data)
            self.audio_tags += 1
        self.last_audio_ms = ms
        return bytes(out)


# ----------------------------------------------------------------------------------- the HTTP body
def audio_codec_of(source: object) -> str | None:
    """The audio codec an access-unit source will deliver ('aac', 'g711a', 'g711u'), None if unknown.

    A source may say so itself (``audio_codec``); a Stream reader knows it from its Stream's demuxer
    (the PSM, or the first ADTS frame)."""
    codec = getattr(source, "audio_codec", None)
    if codec is None:
        demuxer = getattr(getattr(source, "stream", None), "demuxer", None)
        codec = getattr(demuxer, "audio_codec", None)
    return codec if isinstance(codec, str) else None


class _G711ToAac:
    """Per-output G.711 -> AAC on its own worker thread, made on the first G.711 access unit (the
    watermarked viewers get AAC from their shared decoder already; this serves the other paths)."""

    def __init__(self) -> None:
        import concurrent.futures

        from media_relay.outputs.audio import AacTranscoder

        self._aac = AacTranscoder()
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="flv-aac")

    async def feed(self, au: AccessUnit) -> list[AccessUnit]:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._aac.feed, au)

    def close(self) -> None:
        self._executor.shutdown(wait=False)


async def flv_stream(source: AccessUnitSource, *, audio: bool | None = None, framerate: float | None = None,
                     close: bool = True, g711_to_aac: bool = True) -> AsyncIterator[bytes]:
    """The body of an HTTP-FLV response (``video/x-flv``) for ``source``.

    Waits for the first keyframe whose parameter sets are known (from ``source.params`` or in-band),
    then yields the header, ``onMetaData``, the sequence header and the first tag in one chunk, and a
    chunk per access unit after that.  A new sequence header is sent when the in-band parameter sets of
    a keyframe change.  When the source ends, an end-of-sequence tag closes the stream.  With
    ``close`` (default) the source is closed when the generator finishes or is closed.

    ``framerate`` for the metadata defaults to ``source.params.extra['framerate']``, else it is
    measured from the first two access units.

    ``audio``: mux the source's audio access units; None (default) decides at the first keyframe: on
    when the source has audio (:func:`audio_codec_of`, or audio arrived before that keyframe).  It
    must not be announced without coming (flv.js/mpegts.js then wait for it and show no picture).
    AAC passes through; G.711 is transcoded to AAC (browsers do not play G.711 from FLV) unless
    ``g711_to_aac`` is false.  Audio and video tag timestamps are both the PS PTS, from one base.
    """
    g711: _G711ToAac | None = None
    try:
        # --- wait for a keyframe we can describe
        seen_audio = False
        while True:
            au = await next_au(source)
            if au is None:
                return
            seen_audio = seen_audio or au.kind == "audio"
            if au.kind != "video" or not au.keyframe or au.codec not in _PARAM_NAMES:
                continue
            params = params_from_annexb(au.codec, au.data, getattr(source, "params", None))
            if params is None:
                continue
            if audio is None:
                audio = seen_audio or audio_codec_of(source) is not None
            mux = FlvMuxer(au.codec, audio=audio)
            try:
                sequence_header = mux.sequence_header(params)
            except (ValueError, IndexError):  # an SPS we cannot parse: try the next keyframe
                continue
            first = au
            break
        codec = first.codec
        pending: list[AccessUnit] = [first]
        fps = framerate or params.extra.get("framerate")
        ended = False
        if not fps:
            # peek at the next video access unit to measure the frame interval
            while True:
                nxt = await next_au(source)
                if nxt is None:
                    ended = True
                    break
                pending.append(nxt)
                if nxt.kind == "video":
                    a = first.dts if first.dts is not None else first.pts
                    b = nxt.dts if nxt.dts is not None else nxt.pts
                    if a is not None and b is not None:
                        d = _signed_33(b - a)
                        if 0 < d <= CLOCK:
                            fps = round(CLOCK / d, 3)
                    break
        base = first.dts if first.dts is not None else first.pts
        base = mux.clock.unwrap(base) if base is not None else 0
        chunk = mux.header() + mux.metadata(params, fps) + sequence_header
        sent_params = (params.vps, params.sps, params.pps)
        take = getattr(source, "get_nowait", None)  # a StreamReader's queue, read without waiting
        while True:
            for au in pending:
                if au.kind == "video":
                    if au.codec != codec:
                        return  # the source changed codec: the client has to reconnect
                    if au.keyframe:
                        inband = params_from_annexb(codec, au.data, params)
                        if inband is not None and (inband.vps, inband.sps, inband.pps) != sent_params:
                            try:
                                chunk += mux.sequence_header(inband)
                            except (ValueError, IndexError):
                                pass  # keep the previous header; the parameter sets are in-band anyway
                            else:
                                params = inband
                                sent_params = (params.vps, params.sps, params.pps)
                    chunk += mux.video_tag(au, base)
                elif audio and au.kind == "audio":
                    if au.codec in ("g711a", "g711u") and g711_to_aac:
                        if g711 is None:
                            g711 = _G711ToAac()
                        for aac in await g711.feed(au):
                            chunk += mux.audio_tag(aac, base)
                    else:
                        chunk += mux.audio_tag(au, base)
            pending = []
            if chunk:
                yield chunk
                chunk = b""
            if ended:
                break
            au = await next_au(source)
            if au is None:
                break
            pending.append(au)
            if take is not None:  # what came with it goes out in the same chunk (one write, one wake-up)
                try:
                    while len(pending) < 64 and (more := take()) is not None:
                        pending.append(more)
                except EOFError:
                    ended = True
        yield mux.end_of_sequence()
    finally:
        if g711 is not None:
            g711.close()
        if close:
            await close_source(source)


# ----------------------------------------------------------------------------------- reading FLV back
@dataclass(frozen=True, slots=True)
class FlvTag:
    type: int
    timestamp: int  # ms, 32-bit
    body: bytes

    @property
    def is_video(self) -> bool:
        return self.type == TAG_VIDEO

    @property
    def codec_id(self) -> int:
        return self.body[0] & 0x0F

    @property
    def keyframe(self) -> bool:
        return self.body[0] >> 4 == FRAME_KEY

    @property
    def packet_type(self) -> int:
        return self.body[1]

    @property
    def composition_time(self) -> int:
        v = int.from_bytes(self.body[2:5], "big")
        return v - (1 << 24) if v & 0x800000 else v

    @property
    def payload(self) -> bytes:
        return self.body[5:]

    def nal_units(self) -> list[bytes]:
        """The NAL units of a NALU video tag (4-byte lengths)."""
        out, data, i = [], self.payload, 0
        while i + 4 <= len(data):
            n = struct.unpack_from(">I", data, i)[0]
            out.append(data[i + 4 : i + 4 + n])
            i += 4 + n
        return out


def iter_tags(data: bytes) -> Iterator[FlvTag]:
    """Parse an FLV file/stream (header, then tags); checks the PreviousTagSize fields."""
    if data[:3] != b"FLV":
        raise ValueError("not an FLV stream")
    offset = struct.unpack_from(">I", data, 5)[0]
    if struct.unpack_from(">I", data, offset)[0] != 0:
        raise ValueError("PreviousTagSize0 is not 0")
    i = offset + 4
    while i + 11 <= len(data):
        tag_type = data[i] & 0x1F
        size = int.from_bytes(data[i + 1 : i + 4], "big")
        ts = int.from_bytes(data[i + 4 : i + 7], "big") | (data[i + 7] << 24)
        end = i + 11 + size
        if end + 4 > len(data):
            raise ValueError("truncated tag")
        if struct.unpack_from(">I", data, end)[0] != 11 + size:
            raise ValueError("PreviousTagSize mismatch")
        yield FlvTag(tag_type, ts, data[i + 11 : end])
        i = end + 4
