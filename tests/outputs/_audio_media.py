"""Test media with sound: PS streams (our own muxer, or a real camera capture) carrying H.264 and AAC or
G.711, fed through a Stream's demuxer as the RTP ingest does; FLV timing read back with ffprobe."""

from __future__ import annotations

import asyncio
import fractions
import functools
import json
import subprocess
from pathlib import Path

import av
import numpy as np

from gbcore.ids import ChannelRef
from media_relay.ps import PsMuxer
from media_relay.stream import Stream
from media_relay.types import AccessUnit
from tests.conftest import need_tool
from tests.outputs._media import encode_access_units, encode_adts, split_adts

CLOCK = 90_000
TONE_HZ = 440
CHANNEL = "34020000001320000001"
DEVICE = "34020000001180000001"


def tone(seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32)


@functools.lru_cache(maxsize=4)
def g711_units(codec: str, seconds: float, *, frame: int = 160, pts_offset: int = 0) -> tuple[AccessUnit, ...]:
    """A 440 Hz tone as G.711 (A-law 'g711a' / mu-law 'g711u', 8 kHz mono), ``frame`` samples per unit,
    encoded with PyAV, timestamps on the 90 kHz PS clock."""
    ctx = av.CodecContext.create({"g711a": "pcm_alaw", "g711u": "pcm_mulaw"}[codec], "w")
    ctx.sample_rate, ctx.layout, ctx.format = 8000, "mono", "s16"
    ctx.time_base = fractions.Fraction(1, 8000)
    ctx.open()
    pcm = (tone(seconds, 8000) * 32767).astype(np.int16)
    out = []
    for i in range(0, len(pcm) - frame + 1, frame):
        f = av.AudioFrame.from_ndarray(pcm[None, i : i + frame].copy(), format="s16", layout="mono")
        f.sample_rate, f.pts, f.time_base = 8000, i, ctx.time_base
        data = b"".join(bytes(p) for p in ctx.encode(f))
        pts = (pts_offset + i * CLOCK // 8000) % (1 << 33)
        out.append(AccessUnit("audio", codec, data, pts, pts))
    return tuple(out)


@functools.lru_cache(maxsize=4)
def aac_units(seconds: float, rate: int = 16000, pts_offset: int = 0) -> tuple[AccessUnit, ...]:
    frames = split_adts(encode_adts(seconds, rate))
    return tuple(AccessUnit("audio", "aac", f, (pts_offset + i * 1024 * CLOCK // rate) % (1 << 33),
                            (pts_offset + i * 1024 * CLOCK // rate) % (1 << 33))
                 for i, f in enumerate(frames))


def interleave(video: list[AccessUnit], audio: list[AccessUnit] | tuple[AccessUnit, ...]) -> list[AccessUnit]:
    """Decoding order as a camera sends: by timestamp, video first on a tie."""
    return sorted([*video, *audio], key=lambda au: (au.dts if au.dts is not None else au.pts,
                                                    au.kind == "audio"))


def av_units(audio_codec: str, seconds: float = 3.0, *, width: int = 320, height: int = 240,
             pts_offset: int = 90_000) -> list[AccessUnit]:
    """H.264 test pattern (25 fps, GOP 1 s) and a tone of ``seconds``, interleaved."""
    video = encode_access_units("h264", frames=int(seconds * 25), width=width, height=height, gop=25,
                                pts_offset=pts_offset)
    if audio_codec == "aac":
        audio = aac_units(seconds, pts_offset=pts_offset)
    else:
        audio = g711_units(audio_codec, seconds, pts_offset=pts_offset)
    return interleave(video, audio)


def ps_packs(aus: list[AccessUnit], audio_codec: str) -> list[bytes]:
    """One PS pack per access unit (system header and PSM with the keyframes), as GB/T 28181 cameras do."""
    mux = PsMuxer("h264", audio_codec)
    return [mux.mux(au) for au in aus]


def vector_packs(path: Path, seconds: float) -> list[bytes]:
    """The packs of a real PS capture (split at pack headers), the first ``seconds`` of it."""
    data = path.read_bytes()
    starts = []
    i = data.find(b"\x00\x00\x01\xba")
    while i >= 0:
        starts.append(i)
        i = data.find(b"\x00\x00\x01\xba", i + 4)
    packs = [data[a:b] for a, b in zip(starts, [*starts[1:], len(data)], strict=True)]
    # about 25 video packs per second plus the audio ones
    return packs[: int(seconds * 33)]


def new_stream() -> Stream:
    return Stream(ChannelRef(DEVICE, CHANNEL), "udp", port=0, ssrc="0")


async def feed_ps(stream: Stream, packs: list[bytes], interval: float = 0.004, *, close: bool = True,
                  tail: float = 0.5) -> None:
    """Packs through the Stream's own demuxer (one pack per RTP frame: flushed as a marker would)."""
    for pack in packs:
        for au in stream.demuxer.feed(pack) + stream.demuxer.flush():
            stream._on_au(au)
        await asyncio.sleep(interval)
    for au in stream.demuxer.flush(eof=True):
        stream._on_au(au)
    await asyncio.sleep(tail)
    if close:
        stream.close("end of test media")


def flv_timing(path: Path) -> dict[str, dict]:
    """Per stream type of an FLV: codec, sample rate, decoded frames, and the first and last packet
    times (end = last pts + its duration), from ffprobe; ffmpeg must decode it without an error."""
    probe = need_tool("ffprobe")
    r = subprocess.run([probe, "-v", "error", "-count_frames", "-show_entries",
                        "stream=index,codec_type,codec_name,sample_rate,channels,nb_read_frames",
                        "-show_entries", "packet=stream_index,pts_time,duration_time", "-of", "json", str(path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr
    info = json.loads(r.stdout)
    out: dict[str, dict] = {}
    for s in info["streams"]:
        packets = [p for p in info["packets"] if p["stream_index"] == s["index"]]
        times = [float(p["pts_time"]) for p in packets]
        ends = [float(p["pts_time"]) + float(p.get("duration_time") or 0) for p in packets]
        out[s["codec_type"]] = {**s, "start": min(times), "end": max(ends), "packets": len(packets)}
    ffmpeg = need_tool("ffmpeg")
    r = subprocess.run([ffmpeg, "-v", "error", "-xerror", "-i", str(path), "-f", "null", "-"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr
    return out


def pcm_rms_at(frames: list[av.AudioFrame], hz: float = TONE_HZ) -> tuple[float, float]:
    """(RMS, share of the energy at ``hz``) of received PCM frames (any layout, s16)."""
    chans = [f.to_ndarray().reshape(-1).astype(np.float64) for f in frames]
    rate = frames[0].sample_rate
    layout_channels = len(frames[0].layout.channels)
    samples = np.concatenate(chans)[::layout_channels] / 32768.0  # packed s16: first channel
    rms = float(np.sqrt(np.mean(samples**2)))
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples)))) ** 2
    freqs = np.fft.rfftfreq(len(samples), 1 / rate)
    band = (freqs > hz - 20) & (freqs < hz + 20)
    return rms, float(spectrum[band].sum() / max(spectrum.sum(), 1e-12))
