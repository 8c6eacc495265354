"""Audio for the browser outputs: G.711 -> AAC for HTTP-FLV, any camera audio -> PCM frames for WebRTC.

GB/T 28181 cameras send AAC (ADTS, PS stream type 0x0F) or G.711 (A-law 0x90, mu-law 0x91, 8 kHz mono).
Browsers play AAC from FLV (mpegts.js) but not G.711, and WebRTC wants Opus, which aiortc encodes
itself from :class:`av.AudioFrame`.  So:

* :class:`AacTranscoder` turns G.711 access units into AAC-LC access units (ADTS, 8 kHz mono, the
  format the PS demuxer yields for AAC cameras), keeping their 90 kHz timestamps on the PS clock.
* :class:`AudioDecoder` turns AAC or G.711 access units into s16 mono 48 kHz frames with contiguous
  sample timestamps (gaps in the camera's audio stay gaps) for an aiortc audio track.

Both are plain objects for one worker thread (codec work never runs on the event loop); the callers
own the thread: the watermark pipeline's shared decoder (once per Stream), the FLV output (per
viewer, only on the unwatermarked paths) and the WHEP session.
"""

from __future__ import annotations

import bisect
import fractions
import logging

import av
import numpy as np

from media_relay.outputs.flv import PTS_WRAP, TimestampUnwrapper, audio_codec_of
from media_relay.types import AccessUnit

__all__ = ["AacTranscoder", "AudioDecoder", "adts_header", "audio_codec_of"]

log = logging.getLogger("gbops.media.audio")

CLOCK = 90_000
G711_CODECS = {"g711a": "pcm_alaw", "g711u": "pcm_mulaw"}
G711_RATE = 8000
AAC_FRAME = 1024
_AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)


def adts_header(payload_len: int, rate: int, channels: int) -> bytes:
    """The 7-byte ADTS header (no CRC) of one AAC-LC frame of ``payload_len`` bytes."""
    sfi = _AAC_RATES.index(rate)
    length = payload_len + 7
    return bytes((
        0xFF, 0xF1,  # sync word, MPEG-4, layer 0, protection absent
        (1 << 6) | (sfi << 2) | (channels >> 2),  # profile AAC-LC (object type 2, minus 1)
        ((channels & 3) << 6) | (length >> 11),
        (length >> 3) & 0xFF,
        ((length & 7) << 5) | 0x1F,  # buffer fullness 0x7FF (VBR)
        0xFC,
    ))


class _PcmDecoder:
    """G.711 or AAC access unit -> decoded frames (a new context when the codec changes)."""

    def __init__(self) -> None:
        self._ctx: av.CodecContext | None = None
        self._codec: str | None = None
        self.errors = 0

    def decode(self, au: AccessUnit) -> list[av.AudioFrame]:
        if au.codec != self._codec or self._ctx is None:
            if au.codec in G711_CODECS:
                ctx = av.CodecContext.create(G711_CODECS[au.codec], "r")
                ctx.sample_rate = G711_RATE
                ctx.layout = "mono"
            elif au.codec == "aac":
                ctx = av.CodecContext.create("aac", "r")  # reads the ADTS headers itself
            else:
                return []
            self._ctx, self._codec = ctx, au.codec
        out: list[av.AudioFrame] = []
        for packet in _adts_frames(au.data) if au.codec == "aac" else (au.data,):
            try:
                out.extend(self._ctx.decode(av.Packet(packet)))
            except av.error.FFmpegError as exc:
                self.errors += 1
                log.debug("audio decode error: %s", exc)
        return out


def _adts_frames(data: bytes) -> list[bytes]:
    """The ADTS frames of an access unit (a PES packet may carry several); the rest as one frame."""
    out, i = [], 0
    while i + 7 <= len(data) and data[i] == 0xFF and data[i + 1] & 0xF6 == 0xF0:
        length = ((data[i + 3] & 3) << 11) | (data[i + 4] << 3) | (data[i + 5] >> 5)
        if length < 7 or i + length > len(data):
            break
        out.append(data[i : i + length])
        i += length
    if i < len(data):
        out.append(data[i:])
    return out


class _SampleClock:
    """Maps a contiguous sample counter to 90 kHz PS timestamps, re-anchored when the camera's
    timestamps and the sample count drift apart by more than ``slack`` seconds (lost audio, a reset)."""

    def __init__(self, rate: int, slack: float = 0.1) -> None:
        self.rate = rate
        self.slack = slack
        self.unwrapper = TimestampUnwrapper()
        self._anchors: list[tuple[int, int]] = []  # (sample index, unwrapped 90 kHz pts)

    def note(self, sample: int, pts: int | None) -> None:
        """The input that starts at ``sample`` has the PS timestamp ``pts``."""
        if pts is None:
            return
        ticks = self.unwrapper.unwrap(pts)
        if self._anchors and abs(self.ticks(sample) - ticks) <= self.slack * CLOCK:
            return
        self._anchors.append((sample, ticks))
        del self._anchors[:-8]

    def ticks(self, sample: int) -> int:
        if not self._anchors:
            return sample * CLOCK // self.rate
        i = max(0, bisect.bisect_right(self._anchors, (sample, 1 << 62)) - 1)
        start, ticks = self._anchors[i]
        return ticks + (sample - start) * CLOCK // self.rate


class AacTranscoder:
    """G.711 access units -> AAC-LC access units (ADTS, 8 kHz mono), on one worker thread.

    Output timestamps are the input's: an AAC frame's pts is the PS pts of its first sample (the
    encoder's priming frame gets the 1024 samples before the first input), so audio and video stay on
    one clock.  AAC access units pass through :meth:`feed` unchanged.
    """

    def __init__(self, bitrate: int = 32_000) -> None:
        self.bitrate = bitrate
        self._decoder = _PcmDecoder()
        self._enc: av.CodecContext | None = None
        self._buf = np.zeros(0, dtype=np.float32)
        self._samples_in = 0  # samples handed to the encoder or waiting in _buf
        self._clock = _SampleClock(G711_RATE)
        self.frames_out = 0

    def _open(self) -> av.CodecContext:
        enc = av.CodecContext.create("aac", "w")
        enc.sample_rate = G711_RATE
        enc.layout = "mono"
        enc.format = "fltp"
        enc.bit_rate = self.bitrate
        enc.time_base = fractions.Fraction(1, G711_RATE)
        enc.open()
        return enc

    def feed(self, au: AccessUnit) -> list[AccessUnit]:
        if au.kind != "audio" or au.codec == "aac":
            return [au]
        if au.codec not in G711_CODECS:
            return []
        pcm = [f for f in self._decoder.decode(au) if f.samples]
        if not pcm:
            return []
        self._clock.note(self._samples_in, au.pts)
        for frame in pcm:
            samples = frame.to_ndarray().reshape(-1).astype(np.float32) / 32768.0
            self._buf = np.concatenate((self._buf, samples))
            self._samples_in += len(samples)
        return self._encode_ready()

    def _encode_ready(self) -> list[AccessUnit]:
        if self._enc is None:
            self._enc = self._open()
        out: list[AccessUnit] = []
        while len(self._buf) >= AAC_FRAME:
            chunk, self._buf = self._buf[:AAC_FRAME], self._buf[AAC_FRAME:]
            frame = av.AudioFrame.from_ndarray(chunk[None, :].copy(), format="fltp", layout="mono")
            frame.sample_rate = G711_RATE
            frame.pts = self._samples_in - len(self._buf) - AAC_FRAME
            frame.time_base = self._enc.time_base
            out.extend(self._packets(self._enc.encode(frame)))
        return out

    def flush(self) -> list[AccessUnit]:
        if self._enc is None:
            return []
        return self._packets(self._enc.encode(None))

    def _packets(self, packets: list[av.Packet]) -> list[AccessUnit]:
        out = []
        for p in packets:
            data = bytes(p)
            if not data:
                continue
            pts = self._clock.ticks(p.pts if p.pts is not None else 0) % PTS_WRAP
            out.append(AccessUnit("audio", "aac", adts_header(len(data), G711_RATE, 1) + data, pts, pts))
            self.frames_out += 1
        return out


class AudioDecoder:
    """AAC or G.711 access units -> s16 mono 48 kHz :class:`av.AudioFrame` s of 20 ms for an aiortc audio
    track (aiortc encodes each to one Opus packet; a longer frame would become several packets with one
    RTP timestamp, which receivers drop), on one worker thread.

    Frame pts count samples at 48 kHz (``time_base`` 1/48000), contiguous while the camera's audio is;
    a gap in its timestamps longer than ``max_gap`` seconds becomes the same gap in the pts.
    """

    RATE = 48_000
    FRAME = 960  # 20 ms
    TIME_BASE = fractions.Fraction(1, RATE)

    def __init__(self, max_gap: float = 0.2) -> None:
        self.max_gap = max_gap
        self._decoder = _PcmDecoder()
        self._resampler: av.AudioResampler | None = None
        self._unwrapper = TimestampUnwrapper()
        self._first: int | None = None
        self._buf = np.zeros(0, dtype=np.int16)
        self._next = 0  # pts of the first sample in _buf
        self.frames_out = 0

    @property
    def errors(self) -> int:
        return self._decoder.errors

    def _resample(self, frame: av.AudioFrame) -> list[av.AudioFrame]:
        frame.pts = None
        if self._resampler is None:
            self._resampler = av.AudioResampler(format="s16", layout="mono", rate=self.RATE)
        try:
            return self._resampler.resample(frame)
        except ValueError:  # the camera changed its sample rate or channels
            self._resampler = av.AudioResampler(format="s16", layout="mono", rate=self.RATE)
            return self._resampler.resample(frame)

    def decode(self, au: AccessUnit) -> list[av.AudioFrame]:
        frames = self._decoder.decode(au)
        if not frames:
            return []
        if au.pts is not None:
            ticks = self._unwrapper.unwrap(au.pts)
            if self._first is None:
                self._first = ticks
            expected = (ticks - self._first) * self.RATE // CLOCK
            if expected - (self._next + len(self._buf)) > self.max_gap * self.RATE:
                self._buf = self._buf[:0]  # the camera skipped audio: keep the gap
                self._next = expected
        for frame in frames:
            for pcm in self._resample(frame):
                self._buf = np.concatenate((self._buf, pcm.to_ndarray().reshape(-1)))
        out: list[av.AudioFrame] = []
        while len(self._buf) >= self.FRAME:
            chunk, self._buf = self._buf[: self.FRAME], self._buf[self.FRAME :]
            pcm = av.AudioFrame.from_ndarray(chunk[None, :].copy(), format="s16", layout="mono")
            pcm.sample_rate = self.RATE
            pcm.pts = self._next
            pcm.time_base = self.TIME_BASE
            self._next += self.FRAME
            out.append(pcm)
        self.frames_out += len(out)
        return out
