"""MPEG-2 program stream (ISO/IEC 13818-1 section 2.5) as GB/T 28181 devices send it (sans-IO).

``PsDemuxer`` turns arbitrary chunks of a program stream (typically RTP payloads) into
:class:`~media_relay.types.AccessUnit` objects; ``PsMuxer`` writes one pack per access unit, the way a
GB/T 28181 camera does.

Video access units are found from the elementary stream itself (ITU-T H.264 7.4.1.2.3 /
H.265 7.4.2.4.4: access unit delimiters, parameter sets, SEI and the first slice of a picture start
a new one), so that muxers which put several pictures in one PES packet, or split a picture over
packs (ffmpeg), are read as well as the one-picture-per-PES streams cameras send. The PTS of a PES
packet belongs to the first access unit that starts in it (ISO/IEC 13818-1 2.4.3.7).
"""

from __future__ import annotations

from .nal import (
    AU_FIRST_SLICE,
    AU_PREFIX,
    AU_SLICE,
    SpsInfo,
    au_boundary,
    is_keyframe,
    nal_headers_plausible,
    param_set_kind,
    parse_sps,
    split_annexb,
    to_annexb,
)
from .types import AccessUnit, VideoParams

__all__ = [
    "PsError",
    "PsDemuxer",
    "PsMuxer",
    "STREAM_TYPES",
    "crc32_mpeg2",
]


class PsError(ValueError):
    """Invalid program stream data or muxer arguments."""


# stream_type (ISO/IEC 13818-1 Table 2-34, GB/T 28181 Annex C) -> codec
STREAM_TYPES = {
    0x1B: "h264",
    0x24: "h265",
    0x0F: "aac",
    0x90: "g711a",
    0x91: "g711u",
}
_CODEC_STREAM_TYPE = {v: k for k, v in STREAM_TYPES.items()}
_VIDEO = frozenset(("h264", "h265"))
_AUDIO = frozenset(("aac", "g711a", "g711u"))

PACK_START = 0xBA
SYSTEM_HEADER = 0xBB
PSM_ID = 0xBC
PRIVATE_1 = 0xBD
PADDING = 0xBE
PRIVATE_2 = 0xBF
END_CODE = 0xB9

_SC = b"\x00\x00\x01"
_TS_MASK = (1 << 33) - 1

# --- CRC-32/MPEG-2 (ISO/IEC 13818-1 Annex A: polynomial 0x04C11DB7, MSB first, no final xor) ----


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        c = i << 24
        for _ in range(8):
            c = ((c << 1) ^ 0x04C11DB7) if c & 0x80000000 else (c << 1)
        table.append(c & 0xFFFFFFFF)
    return table


_CRC_TABLE = _crc_table()


def crc32_mpeg2(data: bytes | bytearray | memoryview, crc: int = 0xFFFFFFFF) -> int:
    table = _CRC_TABLE
    for b in bytes(data):
        crc = ((crc << 8) & 0xFFFFFFFF) ^ table[(crc >> 24) ^ b]
    return crc


def _read_ts(b: bytes | bytearray, i: int) -> int:
    """A 33-bit PTS/DTS/MPEG-1 SCR coded as 4 bits prefix, 3+15+15 bits with marker bits."""
    return ((b[i] >> 1) & 0x07) << 30 | b[i + 1] << 22 | (b[i + 2] >> 1) << 15 | b[i + 3] << 7 | b[i + 4] >> 1


def _find_sync(buf: bytes | bytearray, start: int, end: int | None = None) -> int:
    """Offset ``j`` in [start, end) of the next pack / system / PSM / PES start code (stream id
    0xB9..0xEF, which may lie past ``end``), or -1."""
    n = len(buf)
    if end is None or end > n:
        end = n
    while True:
        j = buf.find(_SC, start, min(n, end + 3))
        if j < 0 or j >= end or j + 3 >= n:
            return -1
        if 0xB9 <= buf[j + 3] <= 0xEF:
            return j
        start = j + 1


class PsDemuxer:
    """Program stream demultiplexer: ``feed`` chunks, get access units back; never raises on input.

    Call ``flush()`` at the end of each RTP frame (marker bit) and at the end of input: the pending
    video access unit is then emitted at once instead of when the next one begins. Call
    ``discontinuity()`` when packets were lost: partial data is dropped and the demuxer resynchronises
    on the next start code.
    """

    PROBE_LIMIT = 1 << 20  # bytes of video probed without a PSM before giving up
    MAX_ES_BUFFER = 16 << 20  # an elementary stream NAL unit larger than this is dropped

    def __init__(self) -> None:
        self._buf = bytearray()
        self._need = 0  # len(_buf) needed before parsing can progress
        self._skip_left = 0  # bytes of a skipped packet still to discard
        self._cont_sid: int | None = None  # video PES of unknown length being read to the next start code
        self._garbage = False
        self._eof = False
        # program
        self.stream_types: dict[int, int] = {}
        self.video_codec: str | None = None
        self.audio_codec: str | None = None
        self.video_stream_id: int | None = None
        self.audio_stream_id: int | None = None
        self.video_codec_probed = False
        self.scr: int | None = None  # last system clock reference base (90 kHz)
        self.mux_rate: int | None = None  # units of 50 bytes/s
        self.mpeg1 = False  # the last pack header was an MPEG-1 one
        self.video_params: VideoParams | None = None
        self.sps_info: SpsInfo | None = None
        # video elementary stream assembly
        self._es = bytearray()
        self._es_scan = 0
        self._segs: list[tuple[int, int]] = []  # (offset in _es, PES serial) per PES payload
        self._pes_serial = 0
        self._pes_ts: dict[int, tuple[int | None, int | None]] = {}  # unused PTS/DTS per PES serial
        self._probe_at = 512
        self._nal_start: int | None = None
        self._au: list[bytes] = []
        self._au_started = False
        self._au_vcl = False
        self._au_pts: int | None = None
        self._au_dts: int | None = None
        self._params: dict[str, bytes] = {}
        self._out: list[AccessUnit] = []
        # counters
        self.bytes_in = 0
        self.packs = 0
        self.system_headers = 0
        self.psms = 0
        self.psm_crc_errors = 0
        self.video_pes = 0
        self.audio_pes = 0
        self.skipped_pes = 0
        self.video_frames = 0
        self.audio_frames = 0
        self.errors = 0
        self.garbage_bytes = 0
        self.dropped_frames = 0
        self.discontinuities = 0
        self.internal_errors = 0

    # --- public API ---------------------------------------------------------------------------

    def feed(self, data: bytes | bytearray | memoryview) -> list[AccessUnit]:
        self.bytes_in += len(data)
        self._buf += data
        if len(self._buf) >= self._need or self._skip_left or self._cont_sid is not None:
            self._guarded(False)
        out, self._out = self._out, []
        return out

    def flush(self, *, eof: bool = False) -> list[AccessUnit]:
        """End of a frame (RTP marker): parse what is complete and emit the pending access unit.

        A PES packet still incomplete is kept for the next ``feed``, unless ``eof`` (end of input):
        then what there is of it is used.
        """
        self._eof = eof
        try:
            self._guarded(True)
        finally:
            self._eof = False
        out, self._out = self._out, []
        return out

    def discontinuity(self) -> None:
        """Data was lost: drop partial input and the access unit being assembled, then resync."""
        self.discontinuities += 1
        self._buf.clear()
        self._need = 0
        self._skip_left = 0
        self._cont_sid = None
        if self._au:
            self.dropped_frames += 1
        self._reset_es()

    @property
    def counters(self) -> dict[str, int]:
        return {
            k: getattr(self, k)
            for k in (
                "bytes_in",
                "packs",
                "system_headers",
                "psms",
                "psm_crc_errors",
                "video_pes",
                "audio_pes",
                "skipped_pes",
                "video_frames",
                "audio_frames",
                "errors",
                "garbage_bytes",
                "dropped_frames",
                "discontinuities",
                "internal_errors",
            )
        }

    # --- top level ----------------------------------------------------------------------------

    def _guarded(self, final: bool) -> None:
        try:
            self._parse(final)
            if final and self.video_codec is None and self._es:
                self._probe(True)
            if final and self.video_codec is not None:
                self._es_process(True)
        except Exception:  # a bug must not take the media session down: count it and resync
            self.internal_errors += 1
            self.errors += 1
            self._buf.clear()
            self._need = 0
            self._skip_left = 0
            self._cont_sid = None
            self._reset_es()

    def _parse(self, final: bool) -> None:
        buf = self._buf
        n = len(buf)
        pos = 0
        self._need = 0
        if self._skip_left:
            k = min(self._skip_left, n)
            self._skip_left -= k
            pos = k
        while True:
            if self._cont_sid is not None:
                pos = self._continue_pes(pos, n, final)
                if self._cont_sid is not None:
                    break
            if n - pos < 4:
                if final and self._eof and n > pos and buf[pos:n].strip(b"\x00"):
                    self._note_garbage(n - pos)
                    pos = n
                break
            if buf[pos] or buf[pos + 1] or buf[pos + 2] != 1 or buf[pos + 3] < END_CODE:
                j = _find_sync(buf, pos + 1)
                if j < 0:
                    keep = n if final and self._eof else max(pos, n - 3)
                    self._note_garbage(keep - pos)
                    pos = keep
                    break
                self._note_garbage(j - pos)
                pos = j
                continue
            self._garbage = False
            sid = buf[pos + 3]
            if sid == PACK_START:
                if n - pos < 5:
                    self._need = pos + 5
                    break
                b4 = buf[pos + 4]
                if b4 & 0xC0 == 0x40:  # ISO/IEC 13818-1 pack header
                    if n - pos < 14:
                        self._need = pos + 14
                        break
                    size = 14 + (buf[pos + 13] & 0x07)
                    if n - pos < size:
                        self._need = pos + size
                        break
                    self.scr = (
                        ((b4 >> 3) & 0x07) << 30
                        | (b4 & 0x03) << 28
                        | buf[pos + 5] << 20
                        | (buf[pos + 6] >> 3) << 15
                        | (buf[pos + 6] & 0x03) << 13
                        | buf[pos + 7] << 5
                        | buf[pos + 8] >> 3
                    )
                    self.mux_rate = buf[pos + 10] << 14 | buf[pos + 11] << 6 | buf[pos + 12] >> 2
                    self.mpeg1 = False
                elif b4 & 0xF0 == 0x20:  # ISO/IEC 11172-1 pack header
                    size = 12
                    if n - pos < size:
                        self._need = pos + size
                        break
                    self.scr = _read_ts(buf, pos + 4)
                    self.mux_rate = (buf[pos + 9] & 0x7F) << 15 | buf[pos + 10] << 7 | buf[pos + 11] >> 1
                    self.mpeg1 = True
                else:
                    self.errors += 1
                    pos += 4
                    continue
                self.packs += 1
                pos += size
                continue
            if sid == END_CODE:
                pos += 4
                continue
            if n - pos < 6:
                self._need = pos + 6
                break
            length = buf[pos + 4] << 8 | buf[pos + 5]
            end = pos + 6 + length
            if 0xE0 <= sid <= 0xEF or 0xC0 <= sid <= 0xDF:
                if self._selected(sid):
                    if length == 0:
                        if sid >= 0xE0:
                            p = self._start_unbounded(pos, n)
                            if p < 0:
                                self._need = pos + 9 + (buf[pos + 8] if n - pos > 8 else 0)
                                break
                            pos = p
                            continue
                        self.errors += 1  # audio PES without a length: resync
                        pos += 4
                        continue
                    if end > n:
                        if not (final and self._eof):
                            self._need = end
                            break
                        self.errors += 1  # cut short by the end of input
                        end = n
                    pos = self._pes(pos, end, n, sid, final)
                    continue
                self.skipped_pes += 1
            elif sid == PSM_ID:
                if end > n:
                    self._need = end
                    break
                self._psm(pos, end)
                pos = end
                continue
            elif sid == SYSTEM_HEADER:
                self.system_headers += 1
            else:  # private streams, padding, other streams
                self.skipped_pes += 1
            if end > n:
                self._skip_left = end - n
                pos = n
                break
            pos = end
        if pos:
            del buf[:pos]
            if self._need:
                self._need -= pos

    def _note_garbage(self, count: int) -> None:
        if count <= 0:
            return
        self.garbage_bytes += count
        if not self._garbage:
            self.errors += 1
            self._garbage = True

    def _selected(self, sid: int) -> bool:
        if sid >= 0xE0:
            if self.video_stream_id is None:
                self.video_stream_id = sid
                self._apply_stream_type(sid)
            return sid == self.video_stream_id
        if self.audio_stream_id is None:
            self.audio_stream_id = sid
            self._apply_stream_type(sid)
        return sid == self.audio_stream_id

    # --- PES ----------------------------------------------------------------------------------

    def _pes_header(self, pos: int, limit: int) -> tuple[int, int | None, int | None]:
        """Parse a PES header at ``pos``: (payload start, pts, dts); payload start -1 when invalid,
        -2 when more bytes are needed (only when ``limit`` is the end of the buffer)."""
        buf = self._buf
        pts = dts = None
        if limit - pos < 7:
            return -2, None, None
        b6 = buf[pos + 6]
        if b6 & 0xC0 == 0x80:  # ISO/IEC 13818-1 PES header
            if limit - pos < 9:
                return -2, None, None
            flags = buf[pos + 7]
            hstart = pos + 9
            pstart = hstart + buf[pos + 8]
            if pstart > limit:
                return -2, None, None
            ptsdts = flags >> 6
            if ptsdts == 2 and pstart - hstart >= 5:
                pts = _read_ts(buf, hstart)
            elif ptsdts == 3 and pstart - hstart >= 10:
                pts = _read_ts(buf, hstart)
                dts = _read_ts(buf, hstart + 5)
            elif ptsdts:
                return -1, None, None
            return pstart, pts, dts
        # ISO/IEC 11172-1 packet header: stuffing, optional STD buffer, then PTS / PTS+DTS / 0x0F
        k = pos + 6
        stop = min(limit, k + 16)
        while k < stop and buf[k] == 0xFF:
            k += 1
        if k < limit and buf[k] & 0xC0 == 0x40:
            k += 2
        if k >= limit:
            return -2, None, None
        c = buf[k]
        if c & 0xF0 == 0x20:
            if k + 5 > limit:
                return -2, None, None
            pts = _read_ts(buf, k)
            k += 5
        elif c & 0xF0 == 0x30:
            if k + 10 > limit:
                return -2, None, None
            pts = _read_ts(buf, k)
            dts = _read_ts(buf, k + 5)
            k += 10
        elif c == 0x0F:
            k += 1
        else:
            return -1, None, None
        return k, pts, dts

    def _pes(self, pos: int, end: int, n: int, sid: int, final: bool) -> int:
        """A complete PES packet [pos, end): dispatch it; returns the position to go on from."""
        buf = self._buf
        pstart, pts, dts = self._pes_header(pos, end)
        if pstart < 0:
            self.errors += 1
            return end
        video = sid >= 0xE0
        cont = False
        # The declared length is checked against what follows: the next packet or pack must start
        # right there. Devices exist that get PES_packet_length wrong in both directions.
        look = buf[end : end + 3]
        if look and (look != _SC[: len(look)] or (final and len(look) < 3 and any(look))):
            q = _find_sync(buf, pstart, end)
            if q >= 0:  # too long: cut at the start code inside it
                self.errors += 1
                end = q
            elif video:  # too short: read on to the next start code
                self.errors += 1
                cont = True
        if video:
            self.video_pes += 1
            self._video_pes_start(pts, dts)
            self._video_data(buf[pstart:end])
            if cont:
                self._cont_sid = sid
        else:
            self.audio_pes += 1
            self._audio(bytes(buf[pstart:end]), pts, dts)
        return end

    def _start_unbounded(self, pos: int, n: int) -> int:
        """Video PES with PES_packet_length 0: header now, payload up to the next start code."""
        pstart, pts, dts = self._pes_header(pos, n)
        if pstart == -2:
            return -1
        if pstart < 0:
            self.errors += 1
            return pos + 4
        self.video_pes += 1
        self._video_pes_start(pts, dts)
        self._cont_sid = self._buf[pos + 3]
        return pstart

    def _continue_pes(self, pos: int, n: int, final: bool) -> int:
        buf = self._buf
        q = _find_sync(buf, pos)
        if q >= 0:
            stop = q
            self._cont_sid = None
        elif final:
            stop = n
            self._cont_sid = None
        else:
            stop = max(pos, n - 3)  # a start code may straddle the end
        if stop > pos:
            self._video_data(buf[pos:stop])
        return stop

    # --- PSM ----------------------------------------------------------------------------------

    def _psm(self, pos: int, end: int) -> None:
        buf = self._buf
        self.psms += 1
        if end - pos < 16:
            self.errors += 1
            return
        if crc32_mpeg2(buf[pos:end]) != 0:
            self.psm_crc_errors += 1  # tolerated: some devices write no or a wrong CRC
        body_end = end - 4  # CRC_32
        k = pos + 8
        info_len = buf[k] << 8 | buf[k + 1]
        k += 2 + info_len  # program descriptors (vendor ones included) skipped by length
        if k + 2 > body_end:
            self.errors += 1
            return
        es_map_len = buf[k] << 8 | buf[k + 1]
        k += 2
        stop = min(k + es_map_len, body_end)
        types: dict[int, int] = {}
        while k + 4 <= stop:
            stream_type, es_id = buf[k], buf[k + 1]
            types[es_id] = stream_type
            k += 4 + (buf[k + 2] << 8 | buf[k + 3])
        if not types:
            return
        self.stream_types = types
        video_ids = [i for i in types if 0xE0 <= i <= 0xEF]
        audio_ids = [i for i in types if 0xC0 <= i <= 0xDF]
        if video_ids and self.video_stream_id not in video_ids:
            known = [i for i in video_ids if STREAM_TYPES.get(types[i]) in _VIDEO]
            self.video_stream_id = (known or video_ids)[0]
        if audio_ids and self.audio_stream_id not in audio_ids:
            known = [i for i in audio_ids if STREAM_TYPES.get(types[i]) in _AUDIO]
            self.audio_stream_id = (known or audio_ids)[0]
        if self.video_stream_id is not None:
            self._apply_stream_type(self.video_stream_id)
        if self.audio_stream_id is not None:
            self._apply_stream_type(self.audio_stream_id)

    def _apply_stream_type(self, sid: int) -> None:
        codec = STREAM_TYPES.get(self.stream_types.get(sid, -1))
        if sid >= 0xE0:
            if codec in _VIDEO and codec != self.video_codec:
                if self.video_codec is not None:  # the device switched codecs
                    self._es_process(True)
                    self._reset_es()
                    self._params = {}
                    self.video_params = None
                    self.sps_info = None
                self.video_codec = codec
                self.video_codec_probed = False
                if self._es:
                    self._es_scan = 0
                    self._es_process(False)
        elif codec in _AUDIO:
            self.audio_codec = codec

    # --- audio --------------------------------------------------------------------------------

    def _audio(self, payload: bytes, pts: int | None, dts: int | None) -> None:
        codec = self.audio_codec
        if codec is None:
            # Without a PSM only AAC can be recognised (ADTS syncword); G.711 has no signature.
            if len(payload) >= 7 and payload[0] == 0xFF and payload[1] & 0xF6 == 0xF0:
                codec = self.audio_codec = "aac"
            else:
                return
        if not payload:
            return
        self.audio_frames += 1
        self._out.append(AccessUnit("audio", codec, payload, pts, dts, False))

    # --- video elementary stream --------------------------------------------------------------

    def _video_pes_start(self, pts: int | None, dts: int | None) -> None:
        self._pes_serial += 1
        self._segs.append((len(self._es), self._pes_serial))
        if pts is not None:
            self._pes_ts[self._pes_serial] = (pts, dts)

    def _video_data(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        self._es += data
        if self.video_codec is None:
            if len(self._es) >= self._probe_at:
                self._probe(False)
        else:
            self._es_process(False)

    def _probe(self, final: bool) -> None:
        """Guess H.264 vs H.265 from NAL unit headers (streams without a PSM, e.g. ffmpeg's)."""
        es = self._es
        nals = split_annexb(es)
        if not final and nals:
            nals.pop()  # may be incomplete
        s264 = nal_headers_plausible("h264", nals)
        s265 = nal_headers_plausible("h265", nals)
        best, other = ("h264", "h265") if s264 >= s265 else ("h265", "h264")
        hi, lo = max(s264, s265), min(s264, s265)
        if (hi >= 8 and hi - lo >= 8) or ((final or len(es) >= self.PROBE_LIMIT) and hi > 0 and hi > lo):
            self.video_codec = best
            self.video_codec_probed = True
            self._es_scan = 0
            self._es_process(final)
            return
        if final or len(es) >= self.PROBE_LIMIT:
            self.errors += 1
            self._reset_es()
            return
        self._probe_at = len(es) * 2

    def _seg_at(self, offset: int) -> tuple[int, int]:
        segs = self._segs
        for k in range(len(segs) - 1, -1, -1):
            if segs[k][0] <= offset:
                return segs[k]
        return segs[0] if segs else (0, 0)

    def _es_process(self, final: bool) -> None:
        es = self._es
        n = len(es)
        pos = self._es_scan
        while True:
            i = es.find(_SC, pos)
            if i < 0:
                pos = max(pos, n - 2)
                break
            h = i + 3
            if h + 3 > n and not final:
                pos = i
                break
            if self._nal_start is not None:
                self._nal_close(i)
            elif es[:i].strip(b"\x00"):
                self.errors += 1  # data before the first start code: the head of a lost NAL unit
            self._nal_open(i, h)
            pos = h
        self._es_scan = pos
        if final:
            if self._nal_start is not None:
                self._nal_close(n)
            if self._au_vcl:
                self._emit_au()
            # else: parameter sets / SEI without a picture yet: they join the next picture
            self._reset_es(keep_au=not self._eof)
            return
        # Drop what is no longer needed: everything before the current NAL unit.
        cut = self._nal_start if self._nal_start is not None else max(0, min(pos, n - 2))
        if cut > 0:
            if self._nal_start is None and es[:cut].strip(b"\x00"):
                self.errors += 1
            del es[:cut]
            self._es_scan -= cut
            if self._nal_start is not None:
                self._nal_start -= cut
            segs = [(o - cut, s) for o, s in self._segs]
            while len(segs) > 1 and segs[1][0] <= 0:
                segs.pop(0)
            self._segs = segs
        elif self._nal_start is not None and n - self._nal_start > self.MAX_ES_BUFFER:
            self.errors += 1
            self._reset_es()

    def _nal_close(self, end: int) -> None:
        es = self._es
        start = self._nal_start
        assert start is not None
        while end > start and es[end - 1] == 0:
            end -= 1
        self._nal_start = None
        if end <= start:
            return
        nal = bytes(es[start:end])
        self._au.append(nal)
        kind = param_set_kind(self.video_codec or "", nal) if self.video_codec else None
        if kind is not None and self._params.get(kind) != nal:
            self._params[kind] = nal
            self._update_params(kind, nal)

    def _nal_open(self, i: int, h: int) -> None:
        codec = self.video_codec
        assert codec is not None
        es = self._es
        cls = au_boundary(codec, es[h : h + 3])
        seg_off, serial = self._seg_at(h)
        if self._au_vcl:
            new_au = cls == AU_PREFIX or cls == AU_FIRST_SLICE
            if not new_au and cls == AU_SLICE and i - seg_off <= 1:
                # A slice right at the start of a PES packet with another PTS: its first slice was
                # lost, but it is still another picture.
                ts = self._pes_ts.get(serial)
                if ts is not None and self._au_pts is not None and ts[0] != self._au_pts:
                    new_au = True
            if new_au:
                self._emit_au()
        if not self._au_started:
            self._au_started = True
            ts = self._pes_ts.pop(serial, None)
            if ts is not None:
                self._au_pts, self._au_dts = ts
            if self._pes_ts:
                for k in [k for k in self._pes_ts if k < serial]:
                    del self._pes_ts[k]
        if cls == AU_FIRST_SLICE or cls == AU_SLICE:
            if not self._au_vcl and self._au_pts is None and i - seg_off <= 1:
                # The access unit began without a timestamp (an SEI sent after the previous
                # picture in its PES, or parameter sets in a PES of their own) and its picture
                # starts a PES that has one: that timestamp is the picture's.
                ts = self._pes_ts.pop(serial, None)
                if ts is not None:
                    self._au_pts, self._au_dts = ts
            self._au_vcl = True
        self._nal_start = h

    def _emit_au(self) -> None:
        nals = self._au
        if nals and self.video_codec is not None:
            self.video_frames += 1
            self._out.append(
                AccessUnit(
                    "video",
                    self.video_codec,
                    to_annexb(nals),
                    self._au_pts,
                    self._au_dts,
                    is_keyframe(self.video_codec, nals),
                )
            )
        self._au = []
        self._au_started = False
        self._au_vcl = False
        self._au_pts = self._au_dts = None

    def _reset_es(self, keep_au: bool = False) -> None:
        self._es = bytearray()
        self._es_scan = 0
        self._segs = []
        self._pes_ts = {}
        self._nal_start = None
        self._probe_at = 512
        if not keep_au:
            self._au = []
            self._au_started = False
            self._au_vcl = False
            self._au_pts = self._au_dts = None

    def _update_params(self, kind: str, nal: bytes) -> None:
        codec = self.video_codec
        assert codec is not None
        if kind == "sps":
            info = parse_sps(codec, nal)
            if info is None:
                self.errors += 1
            else:
                self.sps_info = info
        info = self.sps_info
        extra: dict = {}
        if info is not None:
            extra = {
                "profile_idc": info.profile_idc,
                "level_idc": info.level_idc,
                "fps": info.fps,
                "codec_string": info.codec_string,
                "chroma_format_idc": info.chroma_format_idc,
                "bit_depth": info.bit_depth_luma,
                "interlaced": info.interlaced,
            }
        self.video_params = VideoParams(
            codec=codec,
            vps=self._params.get("vps"),
            sps=self._params.get("sps"),
            pps=self._params.get("pps"),
            width=info.width if info else None,
            height=info.height if info else None,
            extra=extra,
        )


# --- muxer --------------------------------------------------------------------------------------


def _ts_bytes(prefix: int, ts: int) -> bytes:
    ts &= _TS_MASK
    return bytes(
        (
            (prefix << 4) | ((ts >> 29) & 0x0E) | 1,
            (ts >> 22) & 0xFF,
            ((ts >> 14) & 0xFE) | 1,
            (ts >> 7) & 0xFF,
            ((ts << 1) & 0xFE) | 1,
        )
    )


def pack_header(scr: int, mux_rate: int, scr_ext: int = 0) -> bytes:
    """ISO/IEC 13818-1 pack header (14 bytes, no stuffing)."""
    scr &= _TS_MASK
    return b"\x00\x00\x01\xba" + bytes(
        (
            0x40 | ((scr >> 27) & 0x38) | 0x04 | ((scr >> 28) & 0x03),
            (scr >> 20) & 0xFF,
            ((scr >> 12) & 0xF8) | 0x04 | ((scr >> 13) & 0x03),
            (scr >> 5) & 0xFF,
            ((scr << 3) & 0xF8) | 0x04 | ((scr_ext >> 7) & 0x03),
            ((scr_ext << 1) & 0xFE) | 0x01,
            (mux_rate >> 14) & 0xFF,
            (mux_rate >> 6) & 0xFF,
            ((mux_rate << 2) & 0xFC) | 0x03,
            0xF8,  # reserved + pack_stuffing_length 0
        )
    )


class PsMuxer:
    """One pack per access unit, as a GB/T 28181 camera sends it.

    Keyframes (and the first pack) carry a system header and a program stream map. Access units
    larger than a PES packet are split over several PES packets; only the first carries PTS/DTS.
    """

    MAX_PES_PAYLOAD = 0xFFFF - 3  # PES_packet_length counts the 3 fixed header bytes

    def __init__(
        self,
        video_codec: str,
        audio_codec: str | None = None,
        *,
        mux_rate: int = 6250,
        video_stream_id: int = 0xE0,
        audio_stream_id: int = 0xC0,
    ) -> None:
        if video_codec not in _VIDEO:
            raise PsError(f"unsupported video codec {video_codec!r}")
        if audio_codec is not None and audio_codec not in _AUDIO:
            raise PsError(f"unsupported audio codec {audio_codec!r}")
        if not 0 < mux_rate < (1 << 22):
            raise PsError("mux_rate out of range")
        if not 0xE0 <= video_stream_id <= 0xEF or not 0xC0 <= audio_stream_id <= 0xDF:
            raise PsError("invalid stream id")
        self.video_codec = video_codec
        self.audio_codec = audio_codec
        self.mux_rate = mux_rate
        self.video_stream_id = video_stream_id
        self.audio_stream_id = audio_stream_id
        self.psm_version = 0
        self.packs = 0
        self._headers = self.system_header() + self.psm()

    def system_header(self) -> bytes:
        streams = [(self.video_stream_id, 1, 400)]  # P-STD buffer: 400 x 1024 bytes
        if self.audio_codec is not None:
            streams.append((self.audio_stream_id, 0, 32))  # 32 x 128 bytes
        body = bytearray()
        rate_bound = self.mux_rate
        body += bytes(
            (0x80 | (rate_bound >> 15) & 0x7F, (rate_bound >> 7) & 0xFF, ((rate_bound << 1) & 0xFE) | 1)
        )
        audio_bound = 1 if self.audio_codec else 0
        body += bytes(((audio_bound << 2) | 0x00, 0xE0 | 1, 0x7F))  # locks set, marker, video_bound 1
        for sid, scale, size in streams:
            body += bytes((sid, 0xC0 | (scale << 5) | (size >> 8), size & 0xFF))
        return b"\x00\x00\x01\xbb" + len(body).to_bytes(2, "big") + bytes(body)

    def psm(self) -> bytes:
        es_map = bytearray()
        es_map += bytes((_CODEC_STREAM_TYPE[self.video_codec], self.video_stream_id, 0, 0))
        if self.audio_codec is not None:
            es_map += bytes((_CODEC_STREAM_TYPE[self.audio_codec], self.audio_stream_id, 0, 0))
        body = bytearray()
        body += bytes((0x80 | 0x20 | (self.psm_version & 0x1F), 0xFF))  # current_next, reserved, marker
        body += b"\x00\x00"  # program_stream_info_length
        body += len(es_map).to_bytes(2, "big") + es_map
        length = len(body) + 4
        head = b"\x00\x00\x01\xbc" + length.to_bytes(2, "big") + bytes(body)
        return head + crc32_mpeg2(head).to_bytes(4, "big")

    def mux(self, au: AccessUnit, *, scr: int | None = None) -> bytes:
        if au.kind == "video":
            if au.codec != self.video_codec:
                raise PsError(f"muxer set up for {self.video_codec}, got {au.codec}")
            sid = self.video_stream_id
        elif au.kind == "audio":
            if self.audio_codec is None or au.codec != self.audio_codec:
                raise PsError(f"muxer set up for audio {self.audio_codec}, got {au.codec}")
            sid = self.audio_stream_id
        else:
            raise PsError(f"unknown access unit kind {au.kind!r}")
        if scr is None:
            scr = au.dts if au.dts is not None else au.pts
            if scr is None:
                scr = 0
        parts = [pack_header(scr, self.mux_rate)]
        if self.packs == 0 or (au.kind == "video" and au.keyframe):
            parts.append(self._headers)
        self.packs += 1
        data = au.data
        first = True
        offset = 0
        size = len(data)
        while first or offset < size:
            if first and au.pts is not None:
                if au.dts is not None:  # written even when equal, so that a round trip is exact
                    flags, ts = 0xC0, _ts_bytes(0x3, au.pts) + _ts_bytes(0x1, au.dts)
                else:
                    flags, ts = 0x80, _ts_bytes(0x2, au.pts)
            else:
                flags, ts = 0x00, b""
            chunk = data[offset : offset + self.MAX_PES_PAYLOAD - len(ts)]
            offset += len(chunk)
            # '10', not scrambled, priority 0, data_alignment_indicator on the first PES of the unit
            b6 = 0x84 if first else 0x80
            length = 3 + len(ts) + len(chunk)
            parts.append(b"\x00\x00\x01" + bytes((sid, length >> 8, length & 0xFF, b6, flags, len(ts))))
            parts.append(ts)
            parts.append(chunk)
            first = False
        return b"".join(parts)
