"""Benchmark: the watermark overlay alone (draw a viewer's text in the YUV planes), per frame.

Moved here from the test suite (a test that only printed a timing asserted nothing).  Reference, in the
same run: a bare copy of the same yuv420p picture (``numpy.copyto`` of the planes, the memory-bandwidth
floor any per-viewer overlay pays at least once).  Printed: medians over ``--repeats`` runs of ms per
frame for copy + draw and for drawing in place, and the ratio of each to the bare copy.

    python bench/overlay.py [--frames 200] [--repeats 5] [--sizes 1280x720,1920x1080]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from watermark.overlay import bench as overlay_ms  # noqa: E402


def copy_ms(width: int, height: int, frames: int) -> float:
    rng = np.random.default_rng(1)
    src = rng.integers(16, 236, size=(height * 3 // 2, width), dtype=np.uint8)
    dst = np.empty_like(src)
    start = time.perf_counter()
    for _ in range(frames):
        np.copyto(dst, src)
    return (time.perf_counter() - start) * 1000.0 / frames


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--sizes", default="1280x720,1920x1080")
    args = ap.parse_args()
    print(f"{'size':>10} {'bare copy':>10} {'copy+draw':>10} {'in place':>10} {'ratio c+d':>10} {'ratio in':>9}")
    for size in args.sizes.split(","):
        w, h = (int(v) for v in size.split("x"))
        ref = statistics.median(copy_ms(w, h, args.frames) for _ in range(args.repeats))
        cd = statistics.median(overlay_ms(w, h, args.frames) for _ in range(args.repeats))
        ip = statistics.median(overlay_ms(w, h, args.frames, in_place=True) for _ in range(args.repeats))
        print(f"{size:>10} {ref:>8.3f}ms {cd:>8.3f}ms {ip:>8.3f}ms {cd / ref:>9.1f}x {ip / ref:>8.1f}x")


if __name__ == "__main__":
    main()
