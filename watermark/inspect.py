"""``gbops watermark inspect FILE``: find and verify the session tags of a leaked copy.

Reads an FLV (H.264 codec id 7, H.265 codec id 12), an MP4/MOV (demuxed with PyAV) or a raw
H.264 / H.265 Annex B file, lists each distinct session tag with the number of keyframes that
carried it and its signature check, and, when a database is at hand, the audit-log entries whose
``detail.session_id`` is the tag's session (best effort: read only, never required).

Exit status: 0 at least one tag with a valid signature; 1 tags found but none valid; 2 no tag
found, the file cannot be read, or no key to check against.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gbcore.timeutil import to_device_time
from media_relay.nal import START_CODE, NalError, avcc_to_annexb, split_annexb
from media_relay.outputs.flv import CODEC_ID_AVC, CODEC_ID_HEVC, PKT_NALU, iter_tags
from watermark.tag import KEY_FILE, SessionTag, TagError, find_tags, load_private_key, load_public_key

__all__ = ["InspectError", "FoundTag", "InspectResult", "inspect_file", "audit_entries_for", "run_inspect"]

_FLV_CODECS = {CODEC_ID_AVC: "h264", CODEC_ID_HEVC: "h265"}
_AV_CODECS = {"h264": "h264", "hevc": "h265"}


class InspectError(Exception):
    """The file cannot be read as FLV, MP4 or Annex B video."""


@dataclass(slots=True)
class FoundTag:
    tag: SessionTag
    valid: bool | None
    keyframes: int = 0


@dataclass(slots=True)
class InspectResult:
    container: str  # "flv" | "mp4" | "annexb"
    codec: str | None
    tags: list[FoundTag] = field(default_factory=list)

    @property
    def any_valid(self) -> bool:
        return any(t.valid for t in self.tags)


def _looks_annexb(data: bytes) -> bool:
    return data.startswith(b"\x00\x00\x01") or data.startswith(b"\x00\x00\x00\x01")


def _flv_units(data: bytes) -> Iterator[tuple[str, bytes]]:
    for tag in iter_tags(data):
        if not tag.is_video or len(tag.body) < 5 or tag.packet_type != PKT_NALU:
            continue
        codec = _FLV_CODECS.get(tag.codec_id)
        if codec is not None:
            yield codec, avcc_to_annexb(tag.payload)


def _length_size(codec: str, extradata: bytes | None) -> int:
    """NAL length size from an avcC (byte 4) or hvcC (byte 21) record; 4 when unknown."""
    if extradata and extradata[0] == 1:
        idx = 4 if codec == "h264" else 21
        if len(extradata) > idx:
            return (extradata[idx] & 3) + 1
    return 4


def _mp4_units(path: Path) -> Iterator[tuple[str, bytes]]:
    import av

    try:
        container = av.open(str(path))
    except av.FFmpegError as exc:
        raise InspectError(f"无法打开 / cannot open: {exc}") from None
    with container:
        streams = [s for s in container.streams.video if s.codec_context.name in _AV_CODECS]
        if not streams:
            raise InspectError("没有 H.264/H.265 视频流 / no H.264 or H.265 video stream")
        stream = streams[0]
        codec = _AV_CODECS[stream.codec_context.name]
        size = _length_size(codec, stream.codec_context.extradata)
        for packet in container.demux(stream):
            data = bytes(packet)
            if not data:
                continue
            yield codec, data if _looks_annexb(data) else avcc_to_annexb(data, size)


def _raw_codec_guess(path: Path) -> tuple[str, ...]:
    if path.suffix.lower() in (".h265", ".265", ".hevc"):
        return ("h265", "h264")
    return ("h264", "h265")


def _count(units: Iterator[tuple[str, bytes]], key: Ed25519PublicKey | None) -> tuple[str | None, list[FoundTag]]:
    """Count each distinct tag once per access unit that carries it."""
    found: dict[tuple, FoundTag] = {}
    codec_seen: str | None = None
    for codec, annexb in units:
        codec_seen = codec_seen or codec
        seen_here: set[tuple] = set()
        for tag, valid in find_tags(annexb, codec, key):
            k = (tag.signed_fields, tag.signature, valid)
            if k not in found:
                found[k] = FoundTag(tag, valid)
            if k not in seen_here:
                found[k].keyframes += 1
                seen_here.add(k)
    return codec_seen, list(found.values())


def inspect_file(path: Path | str, key: Ed25519PublicKey | None = None) -> InspectResult:
    """The session tags of an FLV, MP4 or raw Annex B file; raises InspectError when unreadable."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            head = f.read(12)
    except OSError as exc:
        raise InspectError(f"无法读取 / cannot read: {exc}") from None
    try:
        if head[:3] == b"FLV":
            codec, tags = _count(_flv_units(path.read_bytes()), key)
            return InspectResult("flv", codec, tags)
        if head[4:8] == b"ftyp":
            codec, tags = _count(_mp4_units(path), key)
            return InspectResult("mp4", codec, tags)
        data = path.read_bytes()
        if b"\x00\x00\x01" not in data[:4096]:
            raise InspectError("不是 FLV、MP4 或 Annex B 视频 / not an FLV, MP4 or Annex B video file")
        nals = split_annexb(data)  # raw stream: no access-unit framing, count each tag NAL unit
        for codec in _raw_codec_guess(path):
            _, tags = _count(((codec, START_CODE + n) for n in nals), key)
            if tags:
                return InspectResult("annexb", codec, tags)
        return InspectResult("annexb", None, [])
    except (ValueError, NalError) as exc:  # FLV framing errors, truncated NAL lengths
        raise InspectError(f"文件已损坏 / damaged file: {exc}") from None


# ------------------------------------------------------------------------------------- audit log
async def _audit_lookup(db_url: str, session_ids: set[str]) -> dict[str, list[dict[str, Any]]]:
    from sqlalchemy import text

    from gbcore.db import make_engine

    engine = make_engine(db_url)
    out: dict[str, list[dict[str, Any]]] = {}
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(text(
                "SELECT seq, entry FROM audit_entries WHERE action LIKE 'live.%' OR action LIKE 'playback.%' "
                "OR action LIKE 'download.%' ORDER BY seq"))
            for seq, entry in rows:
                try:
                    value = json.loads(bytes(entry))
                except ValueError:
                    continue
                sid = (value.get("detail") or {}).get("session_id")
                if sid in session_ids:
                    out.setdefault(sid, []).append(
                        {"seq": seq, "action": value.get("action"), "time": value.get("time"),
                         "actor": (value.get("actor") or {}).get("name")})
    finally:
        await engine.dispose()
    return out


def audit_entries_for(settings: Any, session_ids: set[str]) -> dict[str, list[dict[str, Any]]] | None:
    """Audit entries per session id, or None when no database is at hand or it cannot be read."""
    if not session_ids or settings is None:
        return None
    if settings.database_url is None and not (Path(settings.data_dir) / "gbops.db").exists():
        return None
    try:
        return asyncio.run(_audit_lookup(settings.db_url, session_ids))
    except Exception:
        return None


# ------------------------------------------------------------------------------------------ CLI
def _local(ms: int) -> str:
    try:
        return to_device_time(ms / 1000).isoformat(timespec="milliseconds")
    except (OverflowError, OSError, ValueError):
        return f"{ms} ms"


_KIND_TEXT = {"live": "直播 / live", "playback": "回放 / playback", "download": "下载 / download"}


def _kind_text(kind: str) -> str:
    if not kind:
        return "- (旧版标签 / older tag version)"
    return _KIND_TEXT.get(kind, f"未知 / unknown ({kind})")


def _window_text(window: tuple[int, int] | None) -> str:
    """The window in Beijing time, ``2025-01-01T08:00:00+08:00 ~ 2025-01-01T08:10:00+08:00 (600 s)``."""
    if window is None:
        return "-"
    start, end = window

    def local(seconds: int) -> str:
        try:
            return to_device_time(seconds).isoformat(timespec="seconds")
        except (OverflowError, OSError, ValueError):
            return f"{seconds} s"

    return f"{local(start)} ~ {local(end)} ({end - start} s)"


def _verifier(key_path: Path | None, data_dir: Path | None) -> tuple[Ed25519PublicKey | None, str]:
    if key_path is not None:
        return load_public_key(key_path.read_bytes()), str(key_path)
    if data_dir is not None and (data_dir / KEY_FILE).is_file():
        return load_private_key(data_dir / KEY_FILE).public_key(), str(data_dir / KEY_FILE)
    return None, ""


def run_inspect(path: Path, *, key_path: Path | None = None, data_dir: Path | None = None,
                settings: Any = None, echo: Any = print) -> int:
    """The ``gbops watermark inspect`` command; returns its exit status."""
    try:
        key, key_from = _verifier(key_path, data_dir)
    except (OSError, ValueError, TagError) as exc:
        echo(f"无法读取公钥 / cannot read the key: {exc}")
        return 2
    try:
        result = inspect_file(path, key)
    except InspectError as exc:
        echo(f"{path}: {exc}")
        return 2
    echo(f"文件 / file: {path} ({result.container}, {result.codec or '?'})")
    if not result.tags:
        echo("未发现会话标签 / no session tag found")
        return 2
    if key is None:
        echo("没有公钥，签名未校验 / no key (--key or --data-dir): signatures NOT CHECKED")
    else:
        echo(f"校验公钥 / verified with: {key_from}")
    audit = audit_entries_for(settings, {t.tag.session_id for t in result.tags})
    for i, found in enumerate(result.tags, 1):
        tag = found.tag
        sig = {True: "有效 / VALID", False: "无效 / INVALID", None: "未校验 / NOT CHECKED"}[found.valid]
        echo(f"标签 / tag {i}:")
        echo(f"  会话 / session:   {tag.session_id}")
        echo(f"  用户 / user:      {tag.user_id}")
        echo(f"  设备 / device:    {tag.device_id or '-'}")
        echo(f"  通道 / channel:   {tag.channel_id}")
        echo(f"  开始 / start:     {_local(tag.start_ms)}")
        echo(f"  类型 / kind:      {_kind_text(tag.kind)}")
        echo(f"  时段 / window:    {_window_text(tag.window)}")
        echo(f"  密钥 / key id:    {tag.key_id.hex()}")
        echo(f"  关键帧 / keyframes: {found.keyframes}")
        echo(f"  签名 / signature: {sig}")
        if audit is not None:
            entries = audit.get(tag.session_id, [])
            if not entries:
                echo("  审计日志 / audit log: 无此会话记录 / no entry for this session")
            for e in entries:
                echo(f"  审计日志 / audit log: seq={e['seq']} {e['action']} {e['time']} {e['actor'] or ''}".rstrip())
    if key is None:
        return 2
    return 0 if result.any_valid else 1
