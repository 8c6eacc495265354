"""Video-quality detectors on synthetic pictures, the simulator's test pattern as the healthy case,
and findings turned into tickets with the picture attached."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import numpy as np
import pytest
from sqlalchemy import select

from gbsim.media import ClockEncoder
from ops_portal.quality.detect import Planes, detect, sharpness, thumbnail, update_baseline
from ops_portal.quality.sampler import decode_keyframe, record_findings, to_jpeg
from ops_portal.tickets.models import QualityBaseline, Ticket
from ops_portal.tickets.snapshots import snapshot_path

W, H = 320, 180
NOW = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
CH = "34020000001310000001"
DEV = "34020000001320000001"


def scene(seed: int = 1) -> Planes:
    """A textured, well exposed, neutral picture: gradients plus detail."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    y = 60 + 80 * (xx / W) + 40 * np.sin(yy / 9.0) + rng.normal(0, 18, (H, W))
    u = 128 + rng.normal(0, 6, (H // 2, W // 2))
    v = 128 + rng.normal(0, 6, (H // 2, W // 2))
    return Planes(*(np.clip(a, 0, 255).astype(np.uint8) for a in (y, u, v)))


def blurred(p: Planes, k: int = 9) -> Planes:
    y = p.y.astype(np.float32)
    for axis in (0, 1):
        acc = np.zeros_like(y)
        for d in range(-(k // 2), k // 2 + 1):
            acc += np.roll(y, d, axis=axis)
        y = acc / k
    return Planes(y.astype(np.uint8), p.u, p.v)


def kinds(findings) -> list[str]:
    return sorted(f.anomaly for f in findings)


def test_healthy_synthetic_scene_has_no_finding() -> None:
    assert detect(scene(1), previous=[thumbnail(scene(2).y)]) == []


def test_black_picture() -> None:
    rng = np.random.default_rng(3)
    p = scene()
    black = Planes(np.clip(16 + rng.normal(0, 2, p.y.shape), 0, 255).astype(np.uint8), p.u, p.v)
    found = detect(black)
    assert kinds(found) == ["black"] and found[0].metrics["mean_luma"] < 20


def test_overexposed_picture() -> None:
    p = scene()
    y = p.y.copy()
    y[:, : W * 3 // 4] = 250  # three quarters blown out
    assert kinds(detect(Planes(y, p.u, p.v))) == ["overexposed"]


def test_frozen_picture() -> None:
    p = scene(5)
    found = detect(p, previous=[thumbnail(p.y), thumbnail(p.y)])
    assert kinds(found) == ["frozen"] and found[0].metrics["samples"] == 3
    # the same scene with fresh sensor noise is not frozen
    assert detect(scene(6), previous=[thumbnail(scene(5).y)]) == []


def test_blur_against_the_channels_own_baseline() -> None:
    base, n = None, 0
    for seed in range(3):
        base, n = update_baseline(base, n, sharpness(scene(seed).y))
    assert n == 3
    soft = blurred(scene(9))
    found = detect(soft, baseline=base, baseline_samples=n)
    assert kinds(found) == ["blur"] and found[0].metrics["ratio"] < 0.35
    # without an established baseline, blur is not judged
    assert detect(soft, baseline=base, baseline_samples=2) == []
    assert detect(scene(9), baseline=base, baseline_samples=n) == []


def test_colour_cast() -> None:
    p = scene()
    found = detect(Planes(p.y, np.clip(p.u.astype(int) + 35, 0, 255).astype(np.uint8),
                          np.clip(p.v.astype(int) - 20, 0, 255).astype(np.uint8)))
    assert kinds(found) == ["color_cast"]
    assert found[0].metrics["u_offset"] > 30 and found[0].metrics["v_offset"] < -15


def test_occlusion() -> None:
    p = scene()
    y = p.y.copy()
    y[:, : W * 3 // 4] = 70  # something flat in front of three quarters of the lens
    found = detect(Planes(y, p.u, p.v))
    assert kinds(found) == ["occlusion"] and found[0].metrics["flat_region_share"] >= 0.6


def test_low_resolution_against_contract_terms() -> None:
    assert kinds(detect(scene(), min_size=(1920, 1080))) == ["low_resolution"]
    assert detect(scene(), min_size=(320, 180)) == []


def _keyframes(codec: str, count: int, gap: float) -> list:
    """``count`` keyframes of the simulator's encoder, at least ``gap`` seconds apart."""
    enc = ClockEncoder(codec, W * 2, H * 2, fps=25, bitrate=400_000, gop=25)
    got: list = []
    done = threading.Event()
    last = [0.0]

    def on_frame(frame) -> None:
        if frame.au.keyframe and len(got) < count and time.monotonic() - last[0] >= gap:
            got.append(frame.au)
            last[0] = time.monotonic()
            if len(got) == count:
                done.set()

    sub = enc.subscribe(on_frame)
    try:
        assert done.wait(15), enc.error
    finally:
        enc.unsubscribe(sub)
    return got


@pytest.mark.parametrize("codec", ["h264", "h265"])
def test_simulator_test_pattern_is_healthy(codec: str) -> None:
    aus = _keyframes(codec, 2, 1.1)
    pictures = [decode_keyframe(au.codec, au.data) for au in aus]
    assert pictures[0].planes.width == W * 2 and pictures[0].planes.height == H * 2
    assert detect(pictures[1].planes, previous=[thumbnail(pictures[0].planes.y)],
                  baseline=sharpness(pictures[0].planes.y), baseline_samples=5) == []
    jpeg = to_jpeg(pictures[1])
    assert jpeg[:3] == b"\xff\xd8\xff"


async def test_findings_become_tickets_once_with_the_picture(registry, tmp_path) -> None:
    from gbcore.db import begin_write

    data_dir = tmp_path / "data"
    p = scene()
    black = Planes(np.full_like(p.y, 16), p.u, p.v)
    for _ in range(2):  # the second sample of the same problem opens nothing new
        async with registry.sessionmaker() as session:
            await begin_write(session)
            findings, opened, payloads = await record_findings(
                session, channel_id=CH, device_id=DEV, pictures=[black], now=NOW, data_dir=data_dir,
                default_limit_hours=48)
            await session.commit()
        assert kinds(findings) == ["black"]
    async with registry.sessionmaker() as session:
        tickets = (await session.scalars(select(Ticket))).all()
        assert len(tickets) == 1
        t = tickets[0]
        assert (t.kind, t.source, t.anomaly, t.state, t.channel_id) == ("quality", "auto_quality", "black", "reported",
                                                                          CH)
        path = snapshot_path(data_dir, t.snapshot)
        assert path is not None and path.read_bytes()[:3] == b"\xff\xd8\xff"
        # healthy pictures feed the channel's sharpness baseline
        await begin_write(session)
        findings, opened, _ = await record_findings(
            session, channel_id=CH, device_id=DEV, pictures=[scene(1)], now=NOW, data_dir=data_dir,
            default_limit_hours=48)
        await session.commit()
        assert findings == [] and opened == []
        base = await session.get(QualityBaseline, (DEV, CH))  # issue 11: one baseline per camera
        assert base is not None and base.samples == 1 and base.sharpness == pytest.approx(sharpness(scene(1).y))
