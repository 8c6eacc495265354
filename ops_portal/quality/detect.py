"""Video-quality checks on the Y/U/V planes of decoded pictures: pure numpy, no I/O, no state.

Only picture quality is judged (exposure, freezing, focus, colour, occlusion); never what or who is in
the picture.  Thresholds are in :class:`Thresholds`; each finding carries the measurement behind it.

* **black**: mean luma below ``black_mean`` and 99 % of pixels below ``black_p99`` (lens cap, dead sensor).
* **overexposed**: at least ``overexposed_share`` of the pixels near white (luma >= 235).
* **frozen**: consecutive samples (taken seconds apart) differ by less than ``frozen_mad`` grey levels on
  average (mean absolute difference of 4x-subsampled luma): a stuck encoder repeats the same picture;
  a live picture always has noise or motion.
* **blur**: sharpness (variance of the 4-neighbour Laplacian of luma) below ``blur_ratio`` of the
  channel's own baseline (a running mean over its healthy samples, see :func:`update_baseline`); without a
  baseline of ``baseline_min_samples`` samples, blur is not judged (scenes differ too much for one
  absolute threshold).
* **color_cast**: the mean chroma is off neutral (U, V = 128) by more than ``cast_offset`` (grey-world).
* **occlusion**: one connected region of flat, similar blocks (a grid of ``grid`` blocks; a block is flat
  when its luma deviation is below ``flat_std``; neighbours join when their means differ by less than
  ``join_delta``) covering at least ``occlusion_share`` of the picture: something in front of the lens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "ANOMALIES",
    "Finding",
    "Planes",
    "Thresholds",
    "detect",
    "frozen",
    "planes_from_i420",
    "sharpness",
    "thumbnail",
    "update_baseline",
]

ANOMALIES: dict[str, str] = {
    "black": "黑屏 / black picture",
    "overexposed": "画面过曝 / overexposed",
    "frozen": "画面冻结 / frozen picture",
    "blur": "画面模糊（失焦） / blurred or out of focus",
    "color_cast": "严重偏色 / strong colour cast",
    "occlusion": "画面遮挡 / picture occluded",
    "low_resolution": "分辨率低于合同要求 / resolution below the contract's",
}


@dataclass(frozen=True)
class Planes:
    """One picture in YUV 4:2:0: ``y`` (H x W), ``u`` and ``v`` (H/2 x W/2), uint8."""

    y: np.ndarray
    u: np.ndarray
    v: np.ndarray

    @property
    def width(self) -> int:
        return int(self.y.shape[1])

    @property
    def height(self) -> int:
        return int(self.y.shape[0])


def planes_from_i420(buf: np.ndarray, width: int, height: int) -> Planes:
    """Split a contiguous I420 buffer (``height * 3 // 2`` rows of ``width``, or flat) into planes."""
    flat = np.asarray(buf, dtype=np.uint8).reshape(-1)
    n = width * height
    y = flat[:n].reshape(height, width)
    u = flat[n : n + n // 4].reshape(height // 2, width // 2)
    v = flat[n + n // 4 : n + n // 2].reshape(height // 2, width // 2)
    return Planes(y, u, v)


@dataclass(frozen=True)
class Thresholds:
    black_mean: float = 28.0
    black_p99: float = 45.0
    overexposed_share: float = 0.6
    frozen_mad: float = 0.25
    blur_ratio: float = 0.35
    baseline_min_samples: int = 3
    cast_offset: float = 28.0
    grid: tuple[int, int] = (9, 16)  # rows, columns
    flat_std: float = 3.0
    join_delta: float = 4.0
    occlusion_share: float = 0.6


@dataclass(frozen=True)
class Finding:
    anomaly: str
    message: str
    metrics: dict[str, Any] = field(default_factory=dict)


def sharpness(y: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian of luma (higher: sharper)."""
    f = y.astype(np.float32)
    lap = f[1:-1, :-2] + f[1:-1, 2:] + f[:-2, 1:-1] + f[2:, 1:-1] - 4.0 * f[1:-1, 1:-1]
    return float(lap.var())


def thumbnail(y: np.ndarray, step: int = 4) -> np.ndarray:
    """4x-subsampled luma, what :func:`frozen` compares (small enough to keep between samples)."""
    return np.ascontiguousarray(y[::step, ::step])


def frozen(thumbs: Sequence[np.ndarray], mad: float = Thresholds.frozen_mad) -> tuple[bool, float | None]:
    """Whether every consecutive pair of luma thumbnails is (nearly) identical; and the largest mean
    absolute difference seen.  Fewer than two samples, or samples of different sizes: not judged."""
    if len(thumbs) < 2 or any(t.shape != thumbs[0].shape for t in thumbs):
        return False, None
    worst = max(
        float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean()) for a, b in zip(thumbs, thumbs[1:], strict=False)
    )
    return worst < mad, worst


def update_baseline(baseline: float | None, samples: int, value: float, cap: int = 20) -> tuple[float, int]:
    """A running mean of a channel's sharpness over its last ~``cap`` healthy samples."""
    if baseline is None or samples <= 0:
        return value, 1
    n = min(samples, cap - 1)
    return (baseline * n + value) / (n + 1), samples + 1


def _block_stats(y: np.ndarray, grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = grid
    h, w = y.shape[0] // rows * rows, y.shape[1] // cols * cols
    blocks = y[:h, :w].astype(np.float32).reshape(rows, h // rows, cols, w // cols)
    return blocks.mean(axis=(1, 3)), blocks.std(axis=(1, 3))


def _largest_flat_region(mean: np.ndarray, std: np.ndarray, flat_std: float, join_delta: float) -> int:
    rows, cols = mean.shape
    flat = std < flat_std
    seen = np.zeros_like(flat)
    best = 0
    for r0 in range(rows):
        for c0 in range(cols):
            if not flat[r0, c0] or seen[r0, c0]:
                continue
            seen[r0, c0] = True
            stack, size = [(r0, c0)], 0
            while stack:
                r, c = stack.pop()
                size += 1
                for rr, cc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
                    if (0 <= rr < rows and 0 <= cc < cols and flat[rr, cc] and not seen[rr, cc]
                            and abs(mean[rr, cc] - mean[r, c]) < join_delta):
                        seen[rr, cc] = True
                        stack.append((rr, cc))
            best = max(best, size)
    return best


def detect(
    planes: Planes,
    *,
    previous: Sequence[np.ndarray] = (),
    baseline: float | None = None,
    baseline_samples: int = 0,
    min_size: tuple[int, int] | None = None,
    thresholds: Thresholds = Thresholds(),
) -> list[Finding]:
    """Findings for one picture.  ``previous``: luma thumbnails of the channel's earlier samples (oldest
    first) for the frozen check; ``baseline``: the channel's sharpness baseline; ``min_size``: the
    contract's minimum (width, height)."""
    t = thresholds
    y = planes.y
    out: list[Finding] = []
    if min_size is not None and (planes.width < min_size[0] or planes.height < min_size[1]):
        out.append(Finding("low_resolution", ANOMALIES["low_resolution"],
                           {"width": planes.width, "height": planes.height,
                            "min_width": min_size[0], "min_height": min_size[1]}))
    mean_y = float(y.mean())
    p99 = float(np.percentile(y, 99))
    bright_share = float((y >= 235).mean())
    if mean_y < t.black_mean and p99 < t.black_p99:
        out.append(Finding("black", ANOMALIES["black"], {"mean_luma": round(mean_y, 2), "p99_luma": p99}))
        return out  # a black picture is also flat, blurred and unchanging: one finding says it all
    if bright_share >= t.overexposed_share:
        out.append(Finding("overexposed", ANOMALIES["overexposed"],
                           {"white_share": round(bright_share, 3), "mean_luma": round(mean_y, 2)}))
        return out

    thumbs = [*previous, thumbnail(y)]
    is_frozen, mad = frozen(thumbs, t.frozen_mad)
    if is_frozen:
        out.append(Finding("frozen", ANOMALIES["frozen"], {"samples": len(thumbs), "max_mean_abs_diff": mad}))

    du = float(planes.u.mean()) - 128.0
    dv = float(planes.v.mean()) - 128.0
    offset = float(np.hypot(du, dv))
    if offset > t.cast_offset:
        out.append(Finding("color_cast", ANOMALIES["color_cast"],
                           {"u_offset": round(du, 2), "v_offset": round(dv, 2), "offset": round(offset, 2)}))

    mean_b, std_b = _block_stats(y, t.grid)
    region = _largest_flat_region(mean_b, std_b, t.flat_std, t.join_delta)
    share = region / float(mean_b.size)
    occluded = share >= t.occlusion_share
    if occluded:
        out.append(Finding("occlusion", ANOMALIES["occlusion"], {"flat_region_share": round(share, 3)}))

    sharp = sharpness(y)
    if not occluded and baseline is not None and baseline_samples >= t.baseline_min_samples and baseline > 0:
        ratio = sharp / baseline
        if ratio < t.blur_ratio:
            out.append(Finding("blur", ANOMALIES["blur"],
                               {"sharpness": round(sharp, 2), "baseline": round(baseline, 2),
                                "ratio": round(ratio, 3)}))
    return out
