"""Benchmark: watermarked MP4 export (the download pipeline) against the ``ffmpeg`` CLI.

A 1080p25 H.264 clip (moving test picture, ``--seconds`` long, made with PyAV) is exported
``--repeat`` times by :func:`watermark.export.export_mp4` (decode, per-frame overlay of the 5-line
Chinese watermark on a staggered 3x3 grid, libx264 ``--preset``/CRF 21, SEI session tag, MP4) and by
``ffmpeg -vf drawtext`` (the same 5 lines at the same 9 places, same font, preset and CRF).  Prints the
medians: frames per second, times real time, and the ratio ffmpeg-time / our-time (>1: we are faster).

    python bench/watermark_export.py [--seconds 20] [--repeat 3] [--preset ultrafast]
"""

from __future__ import annotations

import argparse
import fractions
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import av  # noqa: E402
import numpy as np  # noqa: E402

from watermark.export import export_mp4  # noqa: E402
from watermark.font import find_cjk_font  # noqa: E402
from watermark.overlay import WatermarkSettings  # noqa: E402
from watermark.render import WatermarkText  # noqa: E402
from watermark.tag import SessionTag, load_or_create_key  # noqa: E402

W, H, FPS = 1920, 1080, 25


def make_clip(path: Path, seconds: int) -> None:
    """A moving gradient with noise, so that the encoder has real work to do."""
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=FPS)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.codec_context.options = {"preset": "ultrafast", "crf": "23"}
        s.codec_context.time_base = fractions.Fraction(1, FPS)
        yy, xx = np.mgrid[0:H, 0:W]
        rng = np.random.default_rng(7)
        noise = rng.integers(0, 24, size=(H, W), dtype=np.uint8)
        for i in range(seconds * FPS):
            y = ((xx + yy + 4 * i) % 220 + 16).astype(np.uint8) + noise[:, (np.arange(W) + i) % W] // 2
            uv = np.full((H // 2, W), 128, np.uint8)
            frame = av.VideoFrame.from_ndarray(np.vstack([y, uv]), format="yuv420p")
            frame.pts = i
            out.mux(s.encode(frame))
        out.mux(s.encode(None))


def ffmpeg_export(src: Path, dst: Path, lines: list[str], font: str, preset: str) -> float:
    size = round(H * 0.028)
    filters = []
    for j in range(3):
        for i in range(3):
            x = round(i * W / 3 + (W / 6 if j % 2 else 0) + 40)
            y = round(j * H / 3 + 40)
            for k, line in enumerate(lines):
                text = line.replace(":", r"\:").replace("'", "")
                filters.append(f"drawtext=fontfile={font}:text='{text}':x={x}:y={y + k * size * 5 // 4}:"
                               f"fontsize={size}:fontcolor=white@0.35:borderw=2:bordercolor=black@0.35")
    t0 = time.perf_counter()
    subprocess.run([shutil.which("ffmpeg") or "ffmpeg", "-v", "error", "-y", "-i", str(src), "-vf", ",".join(filters),
                    "-c:v", "libx264", "-preset", preset, "-crf", "21", "-an", str(dst)], check=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--preset", default="ultrafast")
    args = ap.parse_args()
    font = find_cjk_font(None)
    text = WatermarkText(display_name="张三", account="zhangsan", phone="13812345678", client_ip="10.1.2.3",
                         session_code="AB12CD34")
    lines = [*text.static_lines(), "2026-11-21 08:30:00"]
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        clip = tmp / "clip.mp4"
        make_clip(clip, args.seconds)
        key = load_or_create_key(tmp / "data")
        tag = SessionTag(session_id="dl-bench", user_id=1, channel_id="34020000001310000001", start_ms=0)
        ours, theirs = [], []
        frames = duration = 0.0
        for _ in range(args.repeat):
            r = export_mp4(clip, tmp / "ours.mp4", text=text, settings=WatermarkSettings(font_path=font), tag=tag,
                           key=key, preset=args.preset, crf=21, start_time=1_790_000_000.0)
            ours.append(r.wall_s)
            frames, duration = r.frames, r.duration_s
            theirs.append(ffmpeg_export(clip, tmp / "ffmpeg.mp4", lines, font, args.preset))
        mo, mf = statistics.median(ours), statistics.median(theirs)
        print(f"watermark export 1080p25 H.264 {args.seconds} s ({int(frames)} frames), preset {args.preset}, "
              f"median of {args.repeat}:")
        print(f"  gbops export_mp4: {frames / mo:.1f} fps, {duration / mo:.2f}x real time ({mo:.2f} s)")
        print(f"  ffmpeg drawtext : {frames / mf:.1f} fps, {duration / mf:.2f}x real time ({mf:.2f} s)")
        print(f"  ratio ffmpeg time / gbops time: {mf / mo:.2f}")


if __name__ == "__main__":
    main()
