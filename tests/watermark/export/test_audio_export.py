"""Issue 13: the exported MP4 keeps the camera's audio.  AAC passes through as it is (the very bytes),
G.711 (A-law, mu-law, 8 kHz) is transcoded to AAC-LC; the spool keeps audio units; the audio lines up with
the video and decodes.  The media is made here with PyAV: H.264 pictures and a 440 Hz tone."""

from __future__ import annotations

import fractions
import json
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest

from media_relay.nal import is_keyframe, split_annexb
from media_relay.outputs.audio import adts_header
from media_relay.types import AccessUnit
from watermark.export import AccessUnitSpool, export_mp4
from watermark.inspect import inspect_file
from watermark.overlay import WatermarkSettings
from watermark.render import WatermarkText
from watermark.tag import SessionTag, load_or_create_key

FPS = 25
TONE = 440.0
START = 1_790_000_000.0  # wall clock of the first picture


# ------------------------------------------------------------------------------------- media makers
def h264_units(seconds: float, *, base: int = 900_000, gop: int = FPS, size: tuple[int, int] = (320, 180),
               fps: int = FPS) -> list[AccessUnit]:
    """H.264 access units (Annex B, keyframe every ``gop``) with 90 kHz pts from ``base``; each picture
    has a moving bar so that it is not a still."""
    w, h = size
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = w, h, "yuv420p"
    ctx.time_base = fractions.Fraction(1, fps)
    ctx.framerate = fractions.Fraction(fps)
    ctx.gop_size = gop
    ctx.max_b_frames = 0
    ctx.options = {"preset": "ultrafast", "tune": "zerolatency"}
    packets = []
    for i in range(round(seconds * fps)):
        img = np.full((h * 3 // 2, w), 60 + (i * 3) % 120, dtype=np.uint8)
        img[: h, (i * 7) % w] = 235
        frame = av.VideoFrame.from_ndarray(img, format="yuv420p")
        frame.pts = i
        packets += ctx.encode(frame)
    packets += ctx.encode(None)
    step = 90_000 // fps
    out = []
    for p in packets:
        data = bytes(p)
        out.append(AccessUnit("video", "h264", data, base + p.pts * step, base + p.pts * step,
                              is_keyframe("h264", split_annexb(data))))
    return out


def _tone(rate: int, seconds: float, channels: int = 1) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    mono = np.sin(2 * np.pi * TONE * t) * 0.4
    return np.repeat(mono[None, :], channels, axis=0).astype(np.float32)


def aac_units(seconds: float, *, base: int = 900_000, rate: int = 16_000, channels: int = 1) -> list[AccessUnit]:
    """AAC-LC access units as a PS demuxer gives them: one ADTS frame each, 90 kHz pts from ``base``."""
    enc = av.CodecContext.create("aac", "w")
    enc.sample_rate, enc.layout, enc.format = rate, "mono" if channels == 1 else "stereo", "fltp"
    enc.bit_rate = 48_000
    enc.time_base = fractions.Fraction(1, rate)
    enc.open()
    pcm = _tone(rate, seconds, channels)
    packets = []
    for i in range(0, pcm.shape[1] - 1023, 1024):
        frame = av.AudioFrame.from_ndarray(pcm[:, i : i + 1024].copy(), format="fltp", layout=enc.layout.name)
        frame.sample_rate, frame.pts = rate, i
        packets += enc.encode(frame)
    packets += enc.encode(None)
    out = []
    for p in packets:
        if p.pts is None or p.pts < 0:
            continue
        data = bytes(p)
        pts = base + p.pts * 90_000 // rate
        out.append(AccessUnit("audio", "aac", adts_header(len(data), rate, channels) + data, pts, pts))
    return out


def g711_units(seconds: float, codec: str, *, base: int = 900_000) -> list[AccessUnit]:
    """G.711 A-law ("g711a") or mu-law ("g711u") 8 kHz mono, 40 ms per access unit."""
    enc = av.CodecContext.create({"g711a": "pcm_alaw", "g711u": "pcm_mulaw"}[codec], "w")
    enc.sample_rate, enc.layout, enc.format = 8000, "mono", "s16"
    enc.time_base = fractions.Fraction(1, 8000)
    enc.open()
    pcm = (_tone(8000, seconds)[0] * 32767).astype(np.int16)
    out = []
    for i in range(0, len(pcm) - 319, 320):
        frame = av.AudioFrame.from_ndarray(pcm[None, i : i + 320].copy(), format="s16", layout="mono")
        frame.sample_rate, frame.pts = 8000, i
        data = b"".join(bytes(p) for p in enc.encode(frame))
        pts = base + i * 90_000 // 8000
        out.append(AccessUnit("audio", codec, data, pts, pts))
    return out


def interleave(*streams: list[AccessUnit]) -> list[AccessUnit]:
    """Units of several streams in timestamp order (stable: video before audio at equal times)."""
    tagged = [(au.pts, n, i, au) for n, s in enumerate(streams) for i, au in enumerate(s)]
    return [au for *_, au in sorted(tagged, key=lambda t: t[:3])]


def ffprobe(path: Path) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def decode_all(path: Path) -> tuple[int, np.ndarray, int]:
    """(pictures decoded, mono audio samples as float, audio sample rate) of a media file."""
    pictures, chunks, rate = 0, [], 0
    with av.open(str(path)) as c:
        for packet in c.demux():
            for frame in packet.decode():
                if isinstance(frame, av.VideoFrame):
                    pictures += 1
                else:
                    rate = frame.sample_rate
                    chunks.append(frame.to_ndarray().reshape(frame.to_ndarray().shape[0], -1)[0])
    return pictures, (np.concatenate(chunks) if chunks else np.zeros(0)), rate


def tone_strength(samples: np.ndarray, rate: int) -> float:
    """Share of the signal's energy at the test tone (1.0: a pure tone)."""
    spectrum = np.abs(np.fft.rfft(samples)) ** 2
    freqs = np.fft.rfftfreq(len(samples), 1 / rate)
    near = np.abs(freqs - TONE) < 20
    return float(spectrum[near].sum() / max(spectrum.sum(), 1e-12))


# ------------------------------------------------------------------------------------- tests
def _export(units: list[AccessUnit], tmp_path: Path, key_dir: Path, requester: WatermarkText, name: str):
    spool = AccessUnitSpool(tmp_path / f"{name}.capture")
    for au in units:
        spool.append(au)
    spool.close()
    tag = SessionTag("dl-audio", 9, "34020000001310000001", int(START * 1000), device_id="34020000001320000001",
                     kind="download", window=(int(START), int(START) + 4))
    result = export_mp4(spool, tmp_path / f"{name}.mp4", text=requester, settings=WatermarkSettings(), tag=tag,
                        key=load_or_create_key(key_dir), start_time=START, fps=spool.fps(),
                        total_frames=spool.frames)
    return spool, result


def test_spool_keeps_audio_and_video_in_order(tmp_path: Path) -> None:
    units = interleave(h264_units(1.0), aac_units(1.0), g711_units(1.0, "g711u"))
    units.append(AccessUnit("audio", "opus", b"\x01\x02", 1, 1))  # not a camera codec: not kept
    spool = AccessUnitSpool(tmp_path / "s.capture")
    for au in units:
        spool.append(au)
    def key(au: AccessUnit) -> tuple:
        return au.kind, au.codec, au.data, au.pts, au.keyframe

    # same kinds, codecs, bytes, timestamps and keyframe flags, same order (the spool keeps no video dts)
    assert [key(au) for au in spool] == [key(au) for au in units[:-1]]
    assert spool.frames == FPS and spool.audio_units == len(units) - 1 - FPS
    assert spool.codec == "h264" and spool.audio_codec in ("aac", "g711u")
    assert spool.fps() == pytest.approx(FPS)


@pytest.mark.parametrize("rate,channels", [(16_000, 1), (48_000, 2)])
def test_aac_is_passed_through_unchanged(tmp_path: Path, key_dir: Path, requester: WatermarkText, rate: int,
                                         channels: int) -> None:
    video, audio = h264_units(4.0), aac_units(4.0, rate=rate, channels=channels)
    _, result = _export(interleave(video, audio), tmp_path, key_dir, requester, "aac")
    info = ffprobe(result.path)
    kinds = sorted(s["codec_type"] for s in info["streams"])
    assert kinds == ["audio", "video"]
    a = next(s for s in info["streams"] if s["codec_type"] == "audio")
    v = next(s for s in info["streams"] if s["codec_type"] == "video")
    assert (a["codec_name"], int(a["sample_rate"]), a["channels"]) == ("aac", rate, channels)
    assert v["codec_name"] == "h264"
    assert float(info["format"]["duration"]) == pytest.approx(4.0, abs=0.3)
    assert float(a["duration"]) == pytest.approx(float(v["duration"]), abs=0.3)
    # the AAC frames in the file are the camera's, byte for byte (ADTS header off): no re-encode
    sent = [au.data[7:] for au in audio]
    with av.open(str(result.path)) as c:
        stored = [bytes(p) for p in c.demux(c.streams.audio[0]) if p.size]
    assert stored and stored == sent[: len(stored)] and len(stored) >= len(sent) - 2
    assert result.audio_frames == len(stored)
    pictures, samples, out_rate = decode_all(result.path)
    assert pictures == result.frames == len(video)
    assert out_rate == rate and tone_strength(samples, rate) > 0.8
    # the tag is there as before
    assert inspect_file(result.path, load_or_create_key(key_dir).public_key()).tags[0].valid is True


@pytest.mark.parametrize("codec", ["g711a", "g711u"])
def test_g711_is_transcoded_to_aac(tmp_path: Path, key_dir: Path, requester: WatermarkText, codec: str) -> None:
    video = h264_units(4.0)
    _, result = _export(interleave(video, g711_units(4.0, codec)), tmp_path, key_dir, requester, codec)
    info = ffprobe(result.path)
    a = next(s for s in info["streams"] if s["codec_type"] == "audio")
    v = next(s for s in info["streams"] if s["codec_type"] == "video")
    assert (a["codec_name"], a["profile"], int(a["sample_rate"]), a["channels"]) == ("aac", "LC", 8000, 1)
    assert float(a["duration"]) == pytest.approx(float(v["duration"]), abs=0.3)
    assert float(info["format"]["duration"]) == pytest.approx(4.0, abs=0.3)
    pictures, samples, rate = decode_all(result.path)
    assert pictures == len(video)
    assert rate == 8000 and len(samples) > 3.5 * 8000 and tone_strength(samples, rate) > 0.8


def test_audio_is_in_step_with_the_video(tmp_path: Path, key_dir: Path, requester: WatermarkText) -> None:
    """Audio that starts 1 s after the video starts 1 s into the file; audio before the first picture is
    dropped, not shifted."""
    video = h264_units(4.0, base=900_000)
    early = aac_units(0.5, base=900_000 - 45_000)  # half a second before the first picture: dropped
    late = aac_units(2.0, base=900_000 + 90_000)
    _, result = _export(interleave(video, early, late), tmp_path, key_dir, requester, "sync")
    with av.open(str(result.path)) as c:
        a = c.streams.audio[0]
        first = next(p for p in c.demux(a) if p.size)
        assert float(first.pts * a.time_base) == pytest.approx(1.0, abs=0.07)


def test_video_without_audio_has_no_audio_track(tmp_path: Path, key_dir: Path, requester: WatermarkText) -> None:
    _, result = _export(h264_units(2.0), tmp_path, key_dir, requester, "mute")
    assert [s["codec_type"] for s in ffprobe(result.path)["streams"]] == ["video"]
    assert result.audio_frames == 0


def test_damaged_audio_is_skipped_not_fatal(tmp_path: Path, key_dir: Path, requester: WatermarkText) -> None:
    video = h264_units(2.0)
    junk = [AccessUnit("audio", "aac", bytes([0xFF, 0xF1]) + bytes(range(40)), 900_000 + i * 9000,
                       900_000 + i * 9000) for i in range(10)]
    _, result = _export(interleave(video, junk, aac_units(2.0)), tmp_path, key_dir, requester, "junk")
    pictures, samples, rate = decode_all(result.path)
    assert pictures == len(video) and tone_strength(samples, rate) > 0.5
