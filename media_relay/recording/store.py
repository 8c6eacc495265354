"""Segment files on the recording roots: writing every copy, reading access units back, checking and repairing.

A segment lives at the same relative path under every root: ``<device>/<channel>/<YYYYMMDD>/<HHMMSS_ffffff>``
(UTC start) with ``.ps`` (plaintext program stream) or ``.gbr`` (encrypted, see
:mod:`media_relay.recording.crypto`).  The bytes as stored are identical on every root, so one SHA-256
proves any copy.  Blocking file I/O: the service runs the slow parts (hashing, repair, reading) in threads.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from gbcore.ids import ChannelRef, valid_gb_id
from gbcore.log import get_logger
from media_relay.ps import PsDemuxer
from media_relay.recording.crypto import ChunkReader, CryptoError
from media_relay.recording.types import RecordingError
from media_relay.types import AccessUnit

__all__ = ["CopyCheck", "SegmentSink", "check_copy", "file_sha256", "free_mb", "read_units", "repair_copy",
           "segment_path", "unwrap_ticks"]

log = get_logger("gbops.recording")

PTS_WRAP = 1 << 33
_PACK = b"\x00\x00\x01\xba"
_HALF = 1 << 32


def unwrap_ticks(pts: int, base: int) -> int:
    """``pts - base`` in 90 kHz ticks across a 33-bit wrap (a difference beyond half the range is negative)."""
    d = (pts - base) % PTS_WRAP
    return d - PTS_WRAP if d >= _HALF else d


def segment_path(channel: ChannelRef, start: datetime, encrypted: bool) -> str:
    if not valid_gb_id(channel.device_id) or not valid_gb_id(channel.channel_id):
        raise RecordingError("bad_channel", "通道编号无效 / invalid channel id")
    s = start.astimezone(UTC)
    ext = "gbr" if encrypted else "ps"
    return f"{channel.device_id}/{channel.channel_id}/{s:%Y%m%d}/{s:%H%M%S_%f}.{ext}"


def free_mb(root: Path) -> float:
    usage = shutil.disk_usage(root)
    return usage.free / (1 << 20)


def file_sha256(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while True:
            data = f.read(1 << 20)
            if not data:
                break
            h.update(data)
            size += len(data)
    return h.hexdigest(), size


@dataclass
class SegmentSink:
    """The stored bytes of one segment, written to every root at once and hashed on the way.

    A root whose write fails (disk full, I/O error) is dropped from this segment (``failed``); the copy is
    repaired from another root by the next check.  When every root failed, ``write`` raises ``OSError``.
    """

    roots: list[Path]
    rel: str
    files: dict[Path, BinaryIO] = field(default_factory=dict)
    failed: dict[Path, str] = field(default_factory=dict)
    size: int = 0

    def __post_init__(self) -> None:
        self._sha = hashlib.sha256()
        last: OSError | None = None
        for root in self.roots:
            path = root / self.rel
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                self.files[root] = open(path, "wb", buffering=0)  # noqa: SIM115 - closed in close()
            except OSError as exc:
                self.failed[root] = exc.strerror or str(exc)
                last = exc
        if not self.files:
            raise last or OSError("no recording root")

    def write(self, data: bytes) -> None:
        if not data:
            return
        self._sha.update(data)
        self.size += len(data)
        last: OSError | None = None
        for root, f in list(self.files.items()):
            try:
                f.write(data)
            except OSError as exc:
                last = exc
                self.failed[root] = exc.strerror or str(exc)
                del self.files[root]
                try:
                    f.close()
                except OSError:
                    pass
        if not self.files:
            raise last or OSError("every recording root failed")

    def close(self, *, sync: bool = True) -> str:
        """Close every copy (fsync first when ``sync``); the SHA-256 of the bytes as stored."""
        for root, f in list(self.files.items()):
            try:
                if sync:
                    os.fsync(f.fileno())
                f.close()
            except OSError as exc:
                self.failed[root] = exc.strerror or str(exc)
        return self._sha.hexdigest()


def read_units(f: BinaryIO, cipher: str, key: bytes | None, identity: str, *, partial: bool = False
               ) -> Iterator[AccessUnit]:
    """The access units of one stored segment, in the order they were written (decrypting chunk by chunk).

    The recorder wrote one pack per access unit, so the demuxer is flushed at every pack start (as at an RTP
    marker): a video unit comes out when its pack ends, not when the next video unit begins.  ``00 00 01 BA``
    cannot occur inside H.264/H.265 data (emulation prevention); a chance occurrence inside audio data only
    flushes a video unit that was complete already (an incomplete PES is kept by the demuxer).
    """
    demux = PsDemuxer()
    buf = b""
    for chunk in ChunkReader(f, cipher, key, identity, partial=partial).chunks():
        buf += chunk
        pos = 0
        while True:
            j = buf.find(_PACK, pos + 1)
            if j < 0:
                break
            yield from demux.feed(buf[pos:j])
            yield from demux.flush()
            pos = j
        buf = buf[pos:]
    if buf:
        yield from demux.feed(buf)
    yield from demux.flush(eof=True)


@dataclass(frozen=True)
class CopyCheck:
    root: Path
    ok: bool
    reason: str | None  # "missing" | "size" | "sha256" | an OS error


def check_copy(root: Path, rel: str, sha256: str, size: int, *, full: bool) -> CopyCheck:
    path = root / rel
    try:
        st = path.stat()
    except FileNotFoundError:
        return CopyCheck(root, False, "missing")
    except OSError as exc:
        return CopyCheck(root, False, exc.strerror or "error")
    if st.st_size != size:
        return CopyCheck(root, False, "size")
    if full:
        try:
            digest, _ = file_sha256(path)
        except OSError as exc:
            return CopyCheck(root, False, exc.strerror or "error")
        if digest != sha256:
            return CopyCheck(root, False, "sha256")
    return CopyCheck(root, True, None)


def repair_copy(good: Path, bad_root: Path, rel: str, sha256: str) -> None:
    """Copy ``good`` over ``bad_root/rel`` (through a temporary file and a rename), checking the hash of
    what was copied; raises :class:`CryptoError` when the good copy is not good after all, ``OSError``."""
    target = bad_root / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".repair")
    h = hashlib.sha256()
    try:
        with open(good, "rb") as src, open(tmp, "wb") as dst:
            while True:
                data = src.read(1 << 20)
                if not data:
                    break
                h.update(data)
                dst.write(data)
            dst.flush()
            os.fsync(dst.fileno())
        if h.hexdigest() != sha256:
            raise CryptoError("修复源副本的校验值不符 / the copy to repair from does not match its SHA-256")
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
