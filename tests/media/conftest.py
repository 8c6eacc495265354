"""Fixtures for the media core tests: the PS vectors and cached ffprobe / ffmpeg results."""

from __future__ import annotations

import fractions
import functools
import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import need, need_tool

PS_VECTORS = (
    "zlm_h264_aac.ps",
    "zlm_h265_aac.ps",
    "gst_mpegpsmux_h264.ps",
    "ffmpeg_vob_h264_noPSM_E2.ps",
    "ffmpeg_mpeg1_h264_noPSM_E2.ps",
    "ffmpeg_mpeg1_h265_noPSM.ps",
)

FFPROBE_CODEC = {"h264": "h264", "hevc": "h265", "aac": "aac"}


@pytest.fixture(scope="session")
def ps_dir(shared_dir: Path) -> Path:
    path = shared_dir / "vectors" / "ps"
    need(path.is_dir(), f"PS vectors not found at {path}")
    return path


@functools.cache
def _run_json(*args: str) -> dict:
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=60).stdout
    return json.loads(out)


def ffprobe_streams(path: Path, *, count_frames: bool = False) -> list[dict]:
    """Streams with codec_name, width, height, nb_read_packets (and nb_read_frames)."""
    exe = need_tool("ffprobe")
    args = [exe, "-v", "error", "-count_packets"]
    if count_frames:
        args.append("-count_frames")
    args += [
        "-show_entries",
        "stream=index,codec_type,codec_name,width,height,nb_read_packets,nb_read_frames",
        "-of",
        "json",
        str(path),
    ]
    return _run_json(*args)["streams"]


def ffprobe_packets(path: Path, selector: str) -> list[dict]:
    """Packets of one stream (``selector`` e.g. "v:0") with pts, dts and flags."""
    exe = need_tool("ffprobe")
    return _run_json(
        exe, "-v", "error", "-select_streams", selector, "-show_entries", "packet=pts,dts,flags",
        "-of", "json", str(path),
    )["packets"]  # fmt: skip


_TRACE_LINE = re.compile(r"\]\s+\d+\s+(\w+)(?:\[[^\]]*\])*\s+[01]+\s+=\s+(-?\d+)\s*$")


def ffmpeg_trace_headers(path: Path, fmt: str, section: str = "Sequence Parameter Set") -> dict[str, int]:
    """First value of each syntax element of the first ``section`` that ffmpeg's trace_headers
    bitstream filter prints (an independent parser to check ours against)."""
    exe = need_tool("ffmpeg")
    proc = subprocess.run(
        [exe, "-hide_banner", "-f", fmt, "-i", str(path), "-c", "copy", "-bsf:v", "trace_headers",
         "-f", fmt, "-y", "/dev/null"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    out: dict[str, int] = {}
    inside = False
    for line in proc.stderr.splitlines():
        m = _TRACE_LINE.search(line)
        if m is None:
            if "trace_headers" in line:
                if inside and out:
                    break
                inside = line.rstrip().endswith("] " + section)
            continue
        if inside and m.group(1) not in out:
            out[m.group(1)] = int(m.group(2))
    return out


def encode(codec: str, width: int, height: int, *, pix_fmt: str = "yuv420p", rate: int = 25,
           frames: int = 2, options: dict | None = None) -> bytes:  # fmt: skip
    """Encode a few black frames with PyAV; Annex B bytes."""
    import av
    import numpy as np

    cc = av.CodecContext.create(codec, "w")
    cc.width, cc.height, cc.pix_fmt = width, height, pix_fmt
    cc.time_base = fractions.Fraction(1, rate)
    cc.framerate = fractions.Fraction(rate, 1)
    opts = dict(options or {})
    if codec == "libx265":
        extra = opts.get("x265-params")
        opts["x265-params"] = (extra + ":" if extra else "") + "log-level=none"
    cc.options = opts
    out = bytearray()
    for i in range(frames):
        frame = av.VideoFrame.from_ndarray(np.zeros((height, width, 3), np.uint8), format="rgb24")
        frame = frame.reformat(format=pix_fmt)
        frame.pts = i
        for packet in cc.encode(frame):
            out += bytes(packet)
    for packet in cc.encode(None):
        out += bytes(packet)
    return bytes(out)
