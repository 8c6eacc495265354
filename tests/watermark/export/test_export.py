"""export_mp4 on real GB/T 28181 PS recordings: speed/progress fields, decodability, the session tag
(found by ``gbops watermark inspect``, refused once altered), the visible watermark (PSNR) and SHA-256."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest

from media_relay.nal import user_data_sei
from media_relay.ps import PsDemuxer
from tests.media.conftest import ffprobe_packets, ffprobe_streams
from watermark.export import AccessUnitSpool, ExportCancelled, ExportError, export_mp4
from watermark.inspect import inspect_file
from watermark.overlay import Overlay, WatermarkSettings
from watermark.render import WatermarkText
from watermark.tag import SessionTag, encode_payload, key_id_of, load_or_create_key, make_tag_nal

START = 1_790_000_000.0  # wall clock of the recording's first frame (2026-09-21 14:13:20 UTC)
USER_ID = 4242
SESSION = "dl-0123456789abcdef"
CHANNEL = "34020000001320000001"
VECTORS = ("zlm_h264_aac.ps", "zlm_h265_aac.ps")


def _tag() -> SessionTag:
    return SessionTag(session_id=SESSION, user_id=USER_ID, channel_id=CHANNEL, start_ms=int(START * 1000))


def _text() -> WatermarkText:
    return WatermarkText(display_name="张三", account="zhangsan", phone="13812345678", client_ip="10.1.2.3",
                         session_code="AB12CD34")


@pytest.fixture(scope="module", params=VECTORS)
def exported(request, shared_dir, tmp_path_factory):
    src = shared_dir / "vectors" / "ps" / request.param
    if not src.exists():
        from tests.conftest import need

        need(False, f"PS vector missing: {src}")
    tmp = tmp_path_factory.mktemp("export")
    key = load_or_create_key(tmp / "data")
    calls: list[tuple[int, int | None, float]] = []
    result = export_mp4(src, tmp / "out.mp4", text=_text(), settings=WatermarkSettings(), tag=_tag(), key=key,
                        progress=lambda *a: calls.append(a), start_time=START)
    return src, tmp, result, calls


def test_faster_than_real_time_with_consistent_fields(exported) -> None:
    src, _, result, _ = exported
    probe = [s for s in ffprobe_streams(src, count_frames=True) if s["codec_type"] == "video"][0]
    assert abs(result.frames - int(probe["nb_read_frames"])) <= 1
    assert result.duration_s == pytest.approx(result.frames / 25, abs=0.1)  # 25 fps vectors
    assert 0 < result.wall_s < result.duration_s, "the export must run faster than real time"
    assert result.speed == pytest.approx(result.duration_s / result.wall_s)
    assert result.start_time == START


def test_ffprobe_decodes_the_mp4(exported) -> None:
    src, _, result, _ = exported
    source = [s for s in ffprobe_streams(src, count_frames=True) if s["codec_type"] == "video"][0]
    out = ffprobe_streams(result.path, count_frames=True)
    assert [s["codec_type"] for s in out] == ["video"]
    assert out[0]["codec_name"] == "h264"
    assert (out[0]["width"], out[0]["height"]) == (source["width"], source["height"]) == (result.width,
                                                                                           result.height)
    assert abs(int(out[0]["nb_read_frames"]) - int(source["nb_read_frames"])) <= 1
    assert int(out[0]["nb_read_frames"]) == result.frames


def test_sha256_and_size_match_the_file(exported) -> None:
    _, _, result, _ = exported
    data = result.path.read_bytes()
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert result.bytes == len(data)
    assert not result.path.with_name(result.path.name + ".part").exists()


def test_progress_is_monotonic_and_ends_at_100_percent(exported) -> None:
    _, _, result, calls = exported
    assert len(calls) >= 2
    done = [c[0] for c in calls]
    seconds = [c[2] for c in calls]
    assert done == sorted(done) and seconds == sorted(seconds)
    assert all(total is None or d <= total for d, total, _ in calls)
    assert calls[-1][0] == calls[-1][1] == result.frames  # 100 %
    assert calls[-1][2] == pytest.approx(result.duration_s)
    assert calls[0][1] is not None and abs(calls[0][1] - result.frames) <= 1  # total known from the start


def test_every_keyframe_carries_the_signed_tag(exported) -> None:
    _, tmp, result, _ = exported
    key = load_or_create_key(tmp / "data")
    found = inspect_file(result.path, key.public_key())
    assert found.container == "mp4" and found.codec == "h264"
    assert len(found.tags) == 1
    tag = found.tags[0]
    assert tag.valid is True
    assert (tag.tag.session_id, tag.tag.user_id, tag.tag.channel_id) == (SESSION, USER_ID, CHANNEL)
    keyframes = sum("K" in p["flags"] for p in ffprobe_packets(result.path, "v:0"))
    assert keyframes >= result.duration_s // 2  # one every 2 s
    assert tag.keyframes == keyframes


def _inspect_cli(path: Path, data_dir: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GBOPS_")}
    env["GBOPS_CONFIG"] = str(data_dir / "none.toml")
    return subprocess.run([sys.executable, "-m", "gbops.cli", "watermark", "inspect", str(path), "--data-dir",
                           str(data_dir)], capture_output=True, text=True, timeout=60, env=env)


def test_gbops_watermark_inspect_finds_session_and_user(exported) -> None:
    _, tmp, result, _ = exported
    proc = _inspect_cli(result.path, tmp / "data")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert SESSION in proc.stdout and str(USER_ID) in proc.stdout and CHANNEL in proc.stdout
    assert "VALID" in proc.stdout and "INVALID" not in proc.stdout


def test_inspect_rejects_an_altered_tag(exported) -> None:
    """A copy whose tag claims another user (payload altered, signature kept) fails verification."""
    _, tmp, result, _ = exported
    key = load_or_create_key(tmp / "data")
    original = make_tag_nal(_tag(), "h264", key)  # Ed25519 signatures are deterministic
    payload = encode_payload(replace(_tag(), key_id=key_id_of(key)), key)
    assert payload[34:42] == USER_ID.to_bytes(8, "big")
    forged = payload[:34] + (USER_ID + 1).to_bytes(8, "big") + payload[42:]  # same signature
    altered_nal = user_data_sei("h264", forged)
    assert len(altered_nal) == len(original) and altered_nal != original
    data = result.path.read_bytes()
    n = data.count(original)
    assert n >= 2
    bad = tmp / "altered.mp4"
    bad.write_bytes(data.replace(original, altered_nal))
    proc = _inspect_cli(bad, tmp / "data")
    assert proc.returncode == 1, proc.stdout + proc.stderr  # tags found, none valid
    assert f"用户 / user:      {USER_ID + 1}" in proc.stdout
    assert "INVALID" in proc.stdout and "有效 / VALID" not in proc.stdout
    # one altered keyframe among valid ones: listed apart, as invalid
    (tmp / "once.mp4").write_bytes(data.replace(original, altered_nal, 1))
    found = inspect_file(tmp / "once.mp4", key.public_key())
    assert sorted((t.valid, t.keyframes) for t in found.tags) == [(False, 1), (True, n - 1)]


def _frames(path: Path) -> list[tuple[float, np.ndarray]]:
    with av.open(str(path)) as c:
        out = []
        for f in c.decode(c.streams.video[0]):
            out.append((f.time, f.to_ndarray(format="yuv420p")[: f.height]))
        return out


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255 * 255 / mse)


def test_watermark_is_visible_and_the_rest_of_the_picture_intact(exported) -> None:
    src, _, result, _ = exported
    source = _frames(src)
    output = _frames(result.path)
    assert abs(len(source) - len(output)) <= 1
    overlay = Overlay(WatermarkSettings(), _text())
    t0 = source[0][0]
    psnr_outside = []
    for (t, y_src), (_, y_out) in list(zip(source, output, strict=False))[::10]:
        h, w = y_src.shape
        mask = np.zeros((h, w), bool)
        for pl in overlay.layout(w, h, START + (t - t0)):  # the clock follows the media timestamps
            box = pl.box(w, h)
            if box is not None:
                x0, y0, x1, y1 = box
                mask[y0:y1, x0:x1] = True
        assert 0.05 < mask.mean() < 0.9
        diff = np.abs(y_src.astype(int) - y_out.astype(int))
        psnr_outside.append(_psnr(y_src[~mask], y_out[~mask]))
        # inside the boxes the text changes the picture far more than the encoding does outside
        assert diff[mask].mean() > 2.5 * diff[~mask].mean() + 2, (diff[mask].mean(), diff[~mask].mean())
    assert min(psnr_outside) > 35, psnr_outside


def test_access_unit_source_through_a_spool(ps_dir, key_dir, tmp_path) -> None:
    """The live-capture path: PS -> our demuxer -> spool file -> export."""
    demuxer = PsDemuxer()
    aus = demuxer.feed((ps_dir / "zlm_h264_aac.ps").read_bytes()) + demuxer.flush(eof=True)
    spool = AccessUnitSpool(tmp_path / "clip.capture")
    for au in aus:
        spool.append(au)
    spool.close()
    video = [a for a in aus if a.kind == "video"]
    assert spool.frames == len(video) and spool.codec == "h264"
    assert [a.data for a in spool if a.kind == "video"] == [a.data for a in video]
    calls = []
    result = export_mp4(spool, tmp_path / "clip.mp4", text=_text(), settings=WatermarkSettings(), tag=_tag(),
                        key=load_or_create_key(key_dir), progress=lambda *a: calls.append(a), start_time=START,
                        fps=25, total_frames=spool.frames)
    assert abs(result.frames - len(video)) <= 1
    assert result.duration_s == pytest.approx(len(video) / 25, abs=0.1)
    assert calls[-1][:2] == (result.frames, result.frames)
    assert inspect_file(result.path, load_or_create_key(key_dir).public_key()).tags[0].valid is True


def test_cancel_removes_the_partial_file(ps_dir, key_dir, tmp_path) -> None:
    cancel = threading.Event()

    def progress(done, total, seconds):
        if done >= 10:
            cancel.set()

    with pytest.raises(ExportCancelled):
        export_mp4(ps_dir / "zlm_h264_aac.ps", tmp_path / "c.mp4", text=_text(), settings=WatermarkSettings(),
                   tag=_tag(), key=load_or_create_key(key_dir), progress=progress, cancel=cancel)
    assert list(tmp_path.glob("c.mp4*")) == []


def test_unreadable_input_is_an_export_error(key_dir, tmp_path) -> None:
    bad = tmp_path / "noise.ps"
    bad.write_bytes(os.urandom(4096))
    with pytest.raises(ExportError):
        export_mp4(bad, tmp_path / "x.mp4", text=_text(), settings=WatermarkSettings(), tag=_tag(),
                   key=load_or_create_key(key_dir))
    assert list(tmp_path.glob("x.mp4*")) == []
