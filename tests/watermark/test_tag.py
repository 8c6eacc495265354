"""Forensic session tag: SEI insertion, FLV/MP4/raw inspection, tamper detection, decodability."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from media_relay.nal import is_keyframe, split_annexb
from media_relay.outputs.flv import FlvMuxer, params_from_annexb
from media_relay.types import AccessUnit
from watermark.inspect import inspect_file, run_inspect
from watermark.tag import (
    KEY_FILE,
    SESSION_TAG_UUID,
    SessionTag,
    add_tag,
    find_tags,
    load_or_create_key,
    load_public_key,
    make_tag_nal,
    public_key_text,
)

ROOT = Path(__file__).resolve().parents[2]
FRAMES = 50
GOP = 10
TAG = SessionTag(session_id="sXq3-Zr9_kLmN0pQrStUvWxYz012345a", user_id=42, channel_id="34020000001320000001",
                 start_ms=1_718_000_000_123)
_ENCODERS = {"h264": ("libx264", {"preset": "ultrafast", "tune": "zerolatency"}),
             "h265": ("libx265", {"preset": "ultrafast", "x265-params": "log-level=error:bframes=0"})}


def _encode(codec: str) -> list[AccessUnit]:
    name, options = _ENCODERS[codec]
    ctx = av.CodecContext.create(name, "w")
    ctx.width, ctx.height, ctx.pix_fmt = 160, 96, "yuv420p"
    ctx.time_base = Fraction(1, 25)
    ctx.framerate = Fraction(25)
    ctx.gop_size = GOP
    ctx.max_b_frames = 0
    ctx.options = options
    packets = []
    for i in range(FRAMES):
        img = np.full((96 * 3 // 2, 160), 16 + (i * 4) % 200, dtype=np.uint8)
        img[: 96, (i * 3) % 160] = 235
        frame = av.VideoFrame.from_ndarray(img, format="yuv420p")
        frame.pts = i
        packets += ctx.encode(frame)
    packets += ctx.encode(None)
    aus = []
    for i, p in enumerate(packets):
        data = bytes(p)
        aus.append(AccessUnit("video", codec, data, pts=i * 3600, dts=i * 3600,
                              keyframe=is_keyframe(codec, split_annexb(data))))
    return aus


@pytest.fixture(scope="module", params=["h264", "h265"])
def stream(request, tmp_path_factory):
    """(codec, key, data dir, tagged access units, untagged access units)."""
    codec = request.param
    data_dir = tmp_path_factory.mktemp(f"data-{codec}")
    key = load_or_create_key(data_dir)
    aus = _encode(codec)
    nal = make_tag_nal(TAG, codec, key)
    tagged = [add_tag(au, nal) for au in aus]
    return codec, key, data_dir, tagged, aus


def _write_flv(path: Path, codec: str, aus: list[AccessUnit]) -> None:
    mux = FlvMuxer(codec)
    params = params_from_annexb(codec, aus[0].data)
    out = [mux.header(), mux.metadata(params, 25), mux.sequence_header(params)]
    out += [mux.video_tag(au, aus[0].dts) for au in aus]
    path.write_bytes(b"".join(out))


def _write_raw(path: Path, aus: list[AccessUnit]) -> None:
    path.write_bytes(b"".join(au.data for au in aus))


def _remux_mp4(raw: Path, mp4: Path, codec: str) -> None:
    """Stream copy (no re-encode) of a raw Annex B file into MP4."""
    with av.open(str(raw), format="h264" if codec == "h264" else "hevc") as src, av.open(str(mp4), "w") as dst:
        ins = src.streams.video[0]
        outs = dst.add_stream_from_template(ins)
        outs.time_base = Fraction(1, 25)
        for i, packet in enumerate(p for p in src.demux(ins) if p.size):
            packet.stream = outs
            packet.pts = packet.dts = i
            packet.time_base = Fraction(1, 25)
            dst.mux(packet)


def _gbops(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GBOPS_")}
    env.update(PYTHONPATH=str(ROOT), GBOPS_CONFIG=str(cwd / "none.toml"))
    return subprocess.run([sys.executable, "-m", "gbops.cli", "watermark", "inspect", *args], env=env,
                          capture_output=True, text=True, timeout=60, cwd=cwd)


def test_only_keyframes_tagged(stream) -> None:
    codec, key, _, tagged, plain = stream
    keyframes = sum(au.keyframe for au in plain)
    assert keyframes == FRAMES // GOP
    for before, after in zip(plain, tagged, strict=True):
        found = find_tags(after.data, codec, key)
        if before.keyframe:
            assert [(t.session_id, t.user_id, t.channel_id, t.start_ms, v) for t, v in found] == [
                (TAG.session_id, 42, TAG.channel_id, TAG.start_ms, True)]
            # inserted before the first slice, nothing else changed
            nals, orig = split_annexb(after.data), split_annexb(before.data)
            assert [n for n in nals if SESSION_TAG_UUID[:2] not in n or n in orig] == orig
        else:
            assert after.data == before.data and found == []


def test_flv_inspect(stream, tmp_path: Path) -> None:
    codec, key, data_dir, tagged, _ = stream
    flv = tmp_path / "captured.flv"
    _write_flv(flv, codec, tagged)
    result = inspect_file(flv, key.public_key())
    assert result.container == "flv" and result.codec == codec
    [found] = result.tags
    assert (found.tag.session_id, found.tag.user_id, found.tag.channel_id) == (TAG.session_id, 42, TAG.channel_id)
    assert found.valid is True and found.keyframes == FRAMES // GOP
    # through the CLI, the key taken from the data dir
    r = _gbops(str(flv), "--data-dir", str(data_dir), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert TAG.session_id in r.stdout and "42" in r.stdout and "VALID" in r.stdout and "INVALID" not in r.stdout
    # with a pinned public key file
    pub = tmp_path / "tag.pub"
    pub.write_text(public_key_text(key))
    r = _gbops(str(flv), "--key", str(pub), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr


def test_mp4_remux_keeps_tag(stream, tmp_path: Path) -> None:
    codec, key, _, tagged, _ = stream
    raw = tmp_path / f"tagged.{codec}"
    _write_raw(raw, tagged)
    mp4 = tmp_path / "export.mp4"
    _remux_mp4(raw, mp4, codec)
    assert mp4.read_bytes()[4:8] == b"ftyp"
    for path, container in ((mp4, "mp4"), (raw, "annexb")):
        result = inspect_file(path, key.public_key())
        assert result.container == container and result.codec == codec
        [found] = result.tags
        assert found.tag.session_id == TAG.session_id and found.valid is True
        assert found.keyframes == FRAMES // GOP


def test_tampered_tag_rejected(stream, tmp_path: Path) -> None:
    codec, key, data_dir, tagged, _ = stream
    flv = tmp_path / "altered.flv"
    _write_flv(flv, codec, tagged)
    data = flv.read_bytes()
    sid = TAG.session_id.encode()
    assert data.count(sid) == FRAMES // GOP
    flv.write_bytes(data.replace(sid, sid[:5] + bytes([sid[5] ^ 1]) + sid[6:]))  # one payload byte
    [found] = inspect_file(flv, key.public_key()).tags
    assert found.valid is False
    r = _gbops(str(flv), "--data-dir", str(data_dir), cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "INVALID" in r.stdout

    # a well-formed tag signed with someone else's key
    other = load_or_create_key(tmp_path / "other")
    forged = make_tag_nal(TAG, codec, other)
    forged_aus = [add_tag(au, forged) for au in _strip(tagged, codec)]
    raw = tmp_path / "forged.264"
    _write_raw(raw, forged_aus)
    assert run_inspect(raw, key_path=None, data_dir=data_dir, echo=lambda *_: None) == 1
    assert run_inspect(raw, key_path=None, data_dir=tmp_path / "other", echo=lambda *_: None) == 0


def _strip(aus: list[AccessUnit], codec: str) -> list[AccessUnit]:
    from dataclasses import replace

    from media_relay.nal import to_annexb

    return [replace(au, data=to_annexb(n for n in split_annexb(au.data) if not find_tags(b"\0\0\1" + n, codec)))
            for au in aus]


def test_no_tag_and_unreadable(stream, tmp_path: Path) -> None:
    codec, _, data_dir, _, plain = stream
    raw = tmp_path / "plain.264"
    _write_raw(raw, plain)
    assert run_inspect(raw, data_dir=data_dir, echo=lambda *_: None) == 2
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"hello, not a video")
    assert run_inspect(junk, data_dir=data_dir, echo=lambda *_: None) == 2
    broken = tmp_path / "broken.flv"
    broken.write_bytes(b"FLV\x01\x01\x00\x00\x00\x09\x00\x00\x00\x00\x09\x00\x00\xff")
    assert run_inspect(broken, data_dir=data_dir, echo=lambda *_: None) == 2
    r = _gbops(str(tmp_path / "missing.mp4"), cwd=tmp_path)
    assert r.returncode == 2


def test_tagged_stream_decodes(stream) -> None:
    codec, _, _, tagged, plain = stream

    def decode(aus: list[AccessUnit]) -> list[np.ndarray]:
        ctx = av.CodecContext.create(codec if codec == "h264" else "hevc", "r")
        frames = []
        for au in aus:
            for packet in ctx.parse(au.data):
                frames += [f.to_ndarray() for f in ctx.decode(packet)]
        for packet in ctx.parse(b""):
            frames += [f.to_ndarray() for f in ctx.decode(packet)]
        frames += [f.to_ndarray() for f in ctx.decode(None)]
        return frames

    a, b = decode(plain), decode(tagged)
    assert len(a) == len(b) == FRAMES
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_key_file(tmp_path: Path) -> None:
    key = load_or_create_key(tmp_path)
    path = tmp_path / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = load_or_create_key(tmp_path)
    assert public_key_text(again) == public_key_text(key)
    pub = load_public_key(public_key_text(key))
    assert public_key_text(pub) == public_key_text(key)
    assert "PRIVATE" not in public_key_text(key)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=400), codec=st.sampled_from(["h264", "h265"]), cut=st.integers(0, 400),
       flip=st.integers(0, 400))
def test_find_tags_never_raises(data: bytes, codec: str, cut: int, flip: int) -> None:
    key = _KEY
    find_tags(data, codec, key)
    nal = bytearray(make_tag_nal(TAG, codec, key))
    if flip < len(nal):
        nal[flip] ^= 0xFF
    blob = b"\x00\x00\x01" + bytes(nal[:cut]) + data
    for _tag, valid in find_tags(blob, codec, key):
        assert valid in (True, False)


_KEY = Ed25519PrivateKey.generate()


async def test_names_audit_entry(tmp_path: Path) -> None:
    """Beside the database, inspect names the audit-log entries of the tagged session."""
    from audit_log.log import Actor, AuditLog, Target
    from gbcore.db import begin_write, make_engine, make_sessionmaker
    from gbcore.settings import Settings
    from gbops.migrate import migrate

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    settings = Settings(data_dir=data_dir, database_url=None)
    engine = make_engine(settings.db_url)
    try:
        await migrate(engine)
        audit = AuditLog.from_settings(settings, make_sessionmaker(engine))
        async with audit.sessionmaker() as session:
            await begin_write(session)
            await audit.append(session, actor=Actor("user", "7", "bob"), action="device.password_set",
                               target=Target("device", "d1"))
            await audit.append(session, actor=Actor("user", "42", "alice"), action="live.start",
                               target=Target("channel", TAG.channel_id), session_id=TAG.session_id,
                               detail={"device_id": "d1", "transport": "udp", "codec": "h264"})
            await session.commit()
        await audit.stop()
    finally:
        await engine.dispose()
    key = load_or_create_key(data_dir)
    aus = [AccessUnit("video", "h264", b"\x00\x00\x00\x01\x65\x88\x84\x00", keyframe=True)]
    raw = tmp_path / "tagged.264"
    _write_raw(raw, [add_tag(au, make_tag_nal(TAG, "h264", key)) for au in aus])
    r = _gbops(str(raw), "--data-dir", str(data_dir), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "seq=1 live.start" in r.stdout and "alice" in r.stdout
