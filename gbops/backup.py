"""Encrypted backups of the platform, their restore, and the daily scheduled backup (issue 16).

What a backup holds: every table's rows (read in one consistent snapshot of a running platform), the schema
revision, and the small files of the data directory that the database needs to be useful: the keys
(``keys/``: recording and cascade keys; ``watermark-tag.key``), the audit log's signing key and pinned
checkpoint (``audit/``), the TLS certificate and key (``tls/``, or the configured files), ticket snapshots
and generated reports (and the initial admin password file while it exists: the platform deletes it at the
first password change).  What it does not hold: recordings, download files, logs, earlier backups (the
``EXCLUDED_*`` names below).

File format (version 1)::

    magic "GBOPSBAK" | u16 format version | u16 n | n bytes of header JSON
    frames: u8 final flag | u32 length | AES-256-GCM ciphertext+tag of one chunk

The header JSON names the KDF (scrypt: n, r, p, salt), the cipher, the chunk size, the compression, and a
16-byte key check value.  The 64 bytes derived from the passphrase are the AES key (32) and the check value
(16, so that a wrong passphrase is told apart from a damaged file).  Chunk ``i`` (at most 1 MiB of the
zlib-compressed plain stream) is sealed with the nonce ``0^4 || i`` (the key is unique to the file: a fresh
salt) and the associated data ``header || i || final``: a chunk moved, dropped, flipped or a file cut short
(no final chunk) or extended (bytes after it) does not open.

The plain stream is JSON lines: a ``begin`` record (format, creation time, schema revision, audit origin),
per table a ``table`` record (its columns), one JSON array per row (typed values: ``{"$": "dt"|"d"|"t"|"b"|
"n"|"u"|"f"|"j", "v": ...}`` for datetimes, dates, times, bytes, decimals, UUIDs, non-finite floats and JSON
column values) and a ``table_end``; a ``file`` record per file (base64); then a ``manifest`` (rows, bytes
and SHA-256 of every part) and ``end``.  A restore reads the whole file once to check it (every chunk, the
manifest) before it touches anything, then again to write.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import math
import os
import re
import struct
import sys
import time
import unicodedata
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO
from zoneinfo import ZoneInfo

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from sqlalchemy import MetaData, Table, func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gbcore.log import get_logger
from gbcore.periodic import PeriodicTask

__all__ = [
    "BACKUP_SUFFIX",
    "BackupError",
    "BackupResult",
    "BackupScheduler",
    "RestoreResult",
    "backup_status",
    "check_passphrase",
    "create_backup",
    "default_backup_name",
    "read_passphrase_file",
    "restore_backup",
]

log = get_logger("gbops.backup")

MAGIC = b"GBOPSBAK"
FORMAT_VERSION = 1
CHUNK_SIZE = 1 << 20
MAX_HEADER = 4096
SCRYPT_N = 1 << 17  # 128 MiB, about 0.3 s: once per file
SCRYPT_R = 8
SCRYPT_P = 1
MAX_SCRYPT_N = 1 << 20  # a header asking for more is refused
MAX_SCRYPT_MEMORY = 512 << 20  # bytes (128 * n * r): a damaged header may not make a restore allocate more
MIN_PASSPHRASE = 12
BACKUP_SUFFIX = ".gbbak"
BACKUP_NAME_RE = re.compile(r"^gbops-backup-(\d{8})-(\d{6})" + re.escape(BACKUP_SUFFIX) + "$")
BEIJING = ZoneInfo("Asia/Shanghai")

#: Top-level names of the data directory that are never backed up.
EXCLUDED_TOP = frozenset({
    "recordings", "downloads", "backups", "logs", "log",
    "gbops.db", "gbops.db-wal", "gbops.db-shm", "gbops.db-journal",
})
EXCLUDED_SUFFIXES = (".log", ".tmp", ".partial")
#: Tables whose rows show that a database has been used (a restore refuses such a database).
USED_MARKERS = ("users", "devices", "audit_entries", "platform_runs")
_PROGRESS_ROWS = 10_000
_BATCH = 1000


class BackupError(Exception):
    """A backup or restore that cannot be done; the message is for people (中文 / English)."""

    def __init__(self, message: str, code: str = "backup") -> None:
        super().__init__(message)
        self.code = code


@dataclass
class BackupResult:
    path: Path
    bytes: int
    sha256: str
    revision: str
    tables: int
    rows: int
    files: list[str]
    created_at: datetime
    parts: list[dict[str, Any]] = field(default_factory=list)

    def audit_detail(self, trigger: str) -> dict[str, Any]:
        return {"file": self.path.name, "bytes": self.bytes, "sha256": self.sha256, "tables": self.tables,
                "rows": self.rows, "files": len(self.files), "revision": self.revision, "trigger": trigger}


@dataclass
class RestoreResult:
    sha256: str
    bytes: int
    revision: str
    created_at: datetime
    tables: int
    rows: int
    files: list[str]
    origin: str | None

    def audit_detail(self, name: str) -> dict[str, Any]:
        return {"file": name, "bytes": self.bytes, "sha256": self.sha256, "created_at": self.created_at,
                "revision": self.revision, "tables": self.tables, "rows": self.rows, "files": len(self.files)}


Progress = Callable[[str, int, int], None]


# ------------------------------------------------------------------------------------------ passphrase
def check_passphrase(passphrase: str) -> str | None:
    """Why ``passphrase`` may not protect a backup, or None.  The rule: at least :data:`MIN_PASSPHRASE`
    characters, and not weak by the platform's password rule (:func:`gbcore.passwords.weak_password_reason`:
    two character classes, not a common password).  A backup holds every key of the platform and can be
    attacked offline, so the floor is longer than for a login password."""
    from gbcore.passwords import weak_password_reason

    if len(passphrase) < MIN_PASSPHRASE:
        return f"备份口令至少 {MIN_PASSPHRASE} 个字符 / the backup passphrase must have at least {MIN_PASSPHRASE} characters"
    reason = weak_password_reason(passphrase)
    if reason:
        return f"备份口令太弱 / the backup passphrase is weak: {reason}"
    return None


def read_passphrase_file(path: Path) -> str:
    """The passphrase in ``path``: its first line (a trailing newline is not part of it)."""
    try:
        data = Path(path).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BackupError(f"无法读取口令文件 / cannot read the passphrase file {path}: {exc}", "passphrase") from None
    line = data.split("\n", 1)[0].rstrip("\r")
    if not line:
        raise BackupError(f"口令文件为空 / the passphrase file {path} is empty", "passphrase")
    return line


# ------------------------------------------------------------------------------------------ crypto
def _derive(passphrase: str, kdf: dict[str, Any]) -> tuple[bytes, bytes]:
    salt = base64.b64decode(kdf["salt"])
    out = Scrypt(salt=salt, length=64, n=int(kdf["n"]), r=int(kdf["r"]), p=int(kdf["p"])).derive(
        unicodedata.normalize("NFC", passphrase).encode("utf-8"))
    return out[:32], out[32:48]


def _nonce(index: int) -> bytes:
    return b"\x00\x00\x00\x00" + index.to_bytes(8, "big")


def _aad(header: bytes, index: int, final: bool) -> bytes:
    return header + index.to_bytes(8, "big") + (b"\x01" if final else b"\x00")


class _SealedWriter:
    """Compress, cut into chunks, seal each chunk; writes to ``fh``."""

    def __init__(self, fh: BinaryIO, passphrase: str, *, scrypt_n: int = SCRYPT_N) -> None:
        salt = os.urandom(16)
        kdf = {"name": "scrypt", "n": scrypt_n, "r": SCRYPT_R, "p": SCRYPT_P, "salt": base64.b64encode(salt).decode()}
        key, check = _derive(passphrase, kdf)
        meta = {"format": FORMAT_VERSION, "kdf": kdf, "cipher": "aes-256-gcm", "chunk": CHUNK_SIZE,
                "compression": "zlib", "check": base64.b64encode(check).decode()}
        body = json.dumps(meta, separators=(",", ":"), sort_keys=True).encode()
        self.header = MAGIC + struct.pack(">HH", FORMAT_VERSION, len(body)) + body
        self.fh = fh
        self.hash = hashlib.sha256()
        self.size = 0
        self._aead = AESGCM(key)
        self._z = zlib.compressobj(6)
        self._buf = bytearray()
        self._index = 0
        self._out(self.header)

    def _out(self, data: bytes) -> None:
        self.fh.write(data)
        self.hash.update(data)
        self.size += len(data)

    def _seal(self, chunk: bytes, final: bool) -> None:
        ct = self._aead.encrypt(_nonce(self._index), chunk, _aad(self.header, self._index, final))
        self._out(struct.pack(">BI", 1 if final else 0, len(ct)) + ct)
        self._index += 1

    def write(self, data: bytes) -> None:
        self._buf += self._z.compress(data)
        while len(self._buf) > CHUNK_SIZE:
            self._seal(bytes(self._buf[:CHUNK_SIZE]), False)
            del self._buf[:CHUNK_SIZE]

    def close(self) -> None:
        self._buf += self._z.flush()
        while len(self._buf) > CHUNK_SIZE:
            self._seal(bytes(self._buf[:CHUNK_SIZE]), False)
            del self._buf[:CHUNK_SIZE]
        self._seal(bytes(self._buf), True)
        self._buf.clear()


def _read_exact(fh: BinaryIO, n: int) -> bytes:
    data = fh.read(n)
    while len(data) < n:
        more = fh.read(n - len(data))
        if not more:
            break
        data += more
    return data


_DAMAGED = "备份文件已损坏或被篡改 / the backup file is damaged or was tampered with"


def _open_sealed(fh: BinaryIO, passphrase: str, file_hash: Any = None) -> Iterator[bytes]:
    """The plain (decompressed) stream of a backup file, chunk by chunk; raises :class:`BackupError`
    for a wrong passphrase, a foreign file, and any damage (flipped, moved, missing or extra bytes)."""

    def read(n: int) -> bytes:
        data = _read_exact(fh, n)
        if file_hash is not None:
            file_hash.update(data)
        return data

    head = read(len(MAGIC) + 4)
    if len(head) < len(MAGIC) + 4 or head[: len(MAGIC)] != MAGIC:
        raise BackupError("不是 gbops 备份文件 / not a gbops backup file", "format")
    version, n = struct.unpack(">HH", head[len(MAGIC):])
    if version != FORMAT_VERSION:
        raise BackupError(f"不支持的备份格式版本 {version} / unsupported backup format version {version}", "format")
    if n > MAX_HEADER:
        raise BackupError(_DAMAGED, "damaged")
    body = read(n)
    try:
        meta = json.loads(body)
        kdf = meta["kdf"]
        ok = (kdf["name"] == "scrypt" and meta["cipher"] == "aes-256-gcm" and meta["compression"] == "zlib"
              and meta["chunk"] == CHUNK_SIZE and 2 <= int(kdf["n"]) <= MAX_SCRYPT_N and 1 <= int(kdf["r"]) <= 32
              and 1 <= int(kdf["p"]) <= 4 and 128 * int(kdf["n"]) * int(kdf["r"]) <= MAX_SCRYPT_MEMORY
              and len(base64.b64decode(kdf["salt"])) >= 16)
        check = base64.b64decode(meta["check"])
    except (ValueError, KeyError, TypeError):
        raise BackupError(_DAMAGED, "damaged") from None
    if not ok:
        raise BackupError(_DAMAGED, "damaged")
    header = head + body
    key, expected = _derive(passphrase, kdf)
    if not hmac.compare_digest(check, expected):
        raise BackupError("备份口令错误 / wrong backup passphrase", "passphrase")
    aead = AESGCM(key)
    unz = zlib.decompressobj()
    index = 0
    while True:
        frame = read(5)
        if len(frame) < 5:
            raise BackupError(f"{_DAMAGED}: 文件不完整（被截断）/ the file is incomplete (truncated)", "damaged")
        flag, length = struct.unpack(">BI", frame)
        if flag not in (0, 1) or length > CHUNK_SIZE + 16 or length < 16:
            raise BackupError(f"{_DAMAGED} (chunk {index})", "damaged")
        ct = read(length)
        if len(ct) < length:
            raise BackupError(f"{_DAMAGED}: 文件不完整（被截断）/ the file is incomplete (truncated)", "damaged")
        try:
            chunk = aead.decrypt(_nonce(index), ct, _aad(header, index, flag == 1))
        except InvalidTag:
            raise BackupError(f"{_DAMAGED} (chunk {index})", "damaged") from None
        try:
            yield unz.decompress(chunk)
            if flag == 1:
                yield unz.flush()
        except zlib.error:
            raise BackupError(f"{_DAMAGED} (chunk {index})", "damaged") from None
        index += 1
        if flag == 1:
            if read(1):
                raise BackupError(f"{_DAMAGED}: 结尾之后还有数据 / data after the end", "damaged")
            if not unz.eof:
                raise BackupError(_DAMAGED, "damaged")
            return


def _records(fh: BinaryIO, passphrase: str, file_hash: Any = None) -> Iterator[tuple[bytes, Any]]:
    """(line, parsed JSON) of the plain stream."""
    pending = b""
    for data in _open_sealed(fh, passphrase, file_hash):
        pending += data
        *lines, pending = pending.split(b"\n")
        for line in lines:
            try:
                yield line, json.loads(line)
            except ValueError:
                raise BackupError(_DAMAGED, "damaged") from None
    if pending:
        raise BackupError(_DAMAGED, "damaged")


# ------------------------------------------------------------------------------------------ values
def _enc(v: Any) -> Any:
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else {"$": "f", "v": repr(v)}
    if isinstance(v, datetime):
        return {"$": "dt", "v": v.isoformat()}
    if isinstance(v, date):
        return {"$": "d", "v": v.isoformat()}
    if isinstance(v, dtime):
        return {"$": "t", "v": v.isoformat()}
    if isinstance(v, (bytes, bytearray, memoryview)):
        return {"$": "b", "v": base64.b64encode(bytes(v)).decode()}
    if isinstance(v, Decimal):
        return {"$": "n", "v": str(v)}
    if isinstance(v, uuid.UUID):
        return {"$": "u", "v": str(v)}
    if isinstance(v, (dict, list)):
        return {"$": "j", "v": v}
    raise BackupError(f"无法备份的值类型 / a value of type {type(v).__name__} cannot be backed up", "value")


_DEC: dict[str, Callable[[Any], Any]] = {
    "dt": datetime.fromisoformat, "d": date.fromisoformat, "t": dtime.fromisoformat,
    "b": base64.b64decode, "n": Decimal, "u": uuid.UUID, "f": float, "j": lambda v: v,
}


def _dec(v: Any) -> Any:
    if isinstance(v, dict):
        return _DEC[v["$"]](v["v"])
    return v


# ------------------------------------------------------------------------------------------ helpers
def _metadata() -> MetaData:
    from gbcore.db import Base
    from gbops.migrate import load_models

    load_models()
    return Base.metadata


def _script():
    from alembic.script import ScriptDirectory

    from gbops.migrate import alembic_config

    return ScriptDirectory.from_config(alembic_config())


async def _revision(conn: AsyncConnection) -> str | None:
    if "alembic_version" not in await _table_names(conn):
        return None
    return (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()


def _under(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def _skip_dirs(settings: Any) -> list[Path]:
    """Folders inside the data directory that are never backed up besides the fixed names."""
    dirs = [Path(settings.backup_dir)] if settings.backup_dir else []
    dirs += [Path(r.strip()) for r in (settings.record_dirs or "").split(",") if r.strip()]
    return dirs


# backup file roles of the keys (the first two kept from format 1's first files) -> gbops.secrets key names
_KEY_ROLES = {"audit_signing_key": "audit_signing", "record_key": "record", "watermark_tag_key": "watermark_tag",
              "cascade_key": "cascade", "totp_key": "totp"}


def _external_files(settings: Any) -> list[tuple[str, Path]]:
    """(role, path) of configured key files outside the data directory (an explicit setting, or a cluster's
    GBOPS_SECRETS_DIR: :func:`gbops.secrets.key_paths`)."""
    from gbops.secrets import key_paths

    data = Path(settings.data_dir)
    out: list[tuple[str, Path]] = []
    keys = key_paths(settings)
    candidates: list[tuple[str, Path | None]] = [(role, keys[name]) for role, name in _KEY_ROLES.items()]
    candidates += [("tls_cert", settings.tls_cert_file), ("tls_key", settings.tls_key_file)]
    for role, path in candidates:
        if path is not None and Path(path).is_file() and not _under(Path(path), data):
            out.append((role, Path(path)))
    return out


def _role_target(settings: Any, role: str, original: str) -> Path:
    """Where a restored outside-the-data-dir file goes: the restoring settings' path for it, else its default
    place in the data directory."""
    from gbops.secrets import key_paths

    data = Path(settings.data_dir)
    if role in _KEY_ROLES:
        return key_paths(settings)[_KEY_ROLES[role]]
    if role == "tls_cert" and settings.tls_cert_file:
        return Path(settings.tls_cert_file)
    if role == "tls_key" and settings.tls_key_file:
        return Path(settings.tls_key_file)
    return data / "tls" / f"restored-{Path(original).name}"


# where each key sits in a data directory when no setting moves it (a backup holds these as data files)
_DEFAULT_KEY_FILES = {"audit/signing.key": "audit_signing", "watermark-tag.key": "watermark_tag",
                      "keys/cascade.key": "cascade", "keys/record.key": "record", "keys/totp.key": "totp"}


def _key_target(settings: Any, rel: Path) -> Path | None:
    """Where a key the backup holds as a data file goes when the restoring settings keep that key elsewhere
    (a single process's backup restored into a cluster with GBOPS_SECRETS_DIR); None: into the data dir."""
    from gbops.secrets import key_paths

    name = _DEFAULT_KEY_FILES.get(rel.as_posix())
    if name is None:
        return None
    target = key_paths(settings)[name]
    return None if target == Path(settings.data_dir) / rel else target


def _data_files(settings: Any) -> list[tuple[str, Path]]:
    """(relative path, path) of the data directory's files that go into a backup, sorted."""
    root = Path(settings.data_dir)
    if not root.is_dir():
        return []
    skip = [d.resolve() for d in _skip_dirs(settings)]
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        rel_dir = here.relative_to(root)
        keep = []
        for d in sorted(dirnames):
            p = here / d
            if (rel_dir == Path(".") and d in EXCLUDED_TOP) or p.is_symlink() or p.resolve() in skip:
                continue
            keep.append(d)
        dirnames[:] = keep
        for name in sorted(filenames):
            p = here / name
            if rel_dir == Path(".") and name in EXCLUDED_TOP:
                continue
            if name.endswith(EXCLUDED_SUFFIXES) or BACKUP_NAME_RE.match(name) or name.endswith(BACKUP_SUFFIX):
                continue
            if p.is_symlink() or not p.is_file():
                continue
            found.append(((rel_dir / name).as_posix(), p))
    return found


def _line(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8") + b"\n"


def beijing_stamp(now: datetime) -> str:
    return now.astimezone(BEIJING).strftime("%Y%m%d-%H%M%S")


def default_backup_name(now: datetime) -> str:
    """``gbops-backup-YYYYMMDD-HHMMSS.gbbak`` in Beijing time."""
    return f"gbops-backup-{beijing_stamp(now)}{BACKUP_SUFFIX}"


def backup_dir(settings: Any) -> Path:
    return Path(settings.backup_dir) if settings.backup_dir else Path(settings.data_dir) / "backups"


# ------------------------------------------------------------------------------------------ backup
async def _dump(conn: AsyncConnection, writer: _SealedWriter, tables: list[Table],
                progress: Progress | None) -> tuple[list[dict[str, Any]], int]:
    parts: list[dict[str, Any]] = []
    total = 0
    for table in tables:
        cols = [c.name for c in table.columns]
        count = (await conn.execute(select(func.count()).select_from(table))).scalar_one()
        writer.write(_line({"t": "table", "name": table.name, "columns": cols}))
        digest = hashlib.sha256()
        n = 0
        order = list(table.primary_key.columns) or list(table.columns)
        result = await conn.stream(select(*table.columns).order_by(*order))
        last_report = time.monotonic()
        async for partition in result.partitions(_BATCH):
            buf = bytearray()
            for row in partition:
                line = _line([_enc(v) for v in row])
                digest.update(line)
                buf += line
            writer.write(bytes(buf))
            n += len(partition)
            if progress is not None and count >= _PROGRESS_ROWS and (time.monotonic() - last_report > 1
                                                                     or n == count):
                progress(table.name, n, count)
                last_report = time.monotonic()
        writer.write(_line({"t": "table_end", "name": table.name, "rows": n}))
        parts.append({"part": f"table:{table.name}", "rows": n, "sha256": digest.hexdigest()})
        total += n
    return parts, total


def _check_backup_paths(settings: Any, out: Path) -> None:
    if out.exists():
        raise BackupError(f"{out} 已存在 / already exists", "exists")
    if settings.database_url is None and not (Path(settings.data_dir) / "gbops.db").exists():
        raise BackupError(f"数据库不存在 / no database at {Path(settings.data_dir) / 'gbops.db'} (GBOPS_DATA_DIR?)",
                          "no_database")


async def create_backup(settings: Any, out_path: Path | str, passphrase: str, *, engine: AsyncEngine | None = None,
                        progress: Progress | None = None, scrypt_n: int = SCRYPT_N) -> BackupResult:
    """Write an encrypted backup of the platform to ``out_path`` (which must not exist); see the module
    docstring.  Safe on a running platform: the rows come from one read snapshot (SQLite: one read
    transaction, WAL; PostgreSQL: one REPEATABLE READ, READ ONLY transaction), and the pinned audit
    checkpoint is read before that snapshot begins, so the backup's log always extends it."""
    from gbcore.db import make_engine

    reason = check_passphrase(passphrase)
    if reason:
        raise BackupError(reason, "passphrase")
    out = Path(out_path)
    _check_backup_paths(settings, out)
    metadata = _metadata()
    head = _script().get_current_head()
    # the audit folder (the pinned checkpoint) is read before the database snapshot starts, so the snapshot holds
    # at least what it pins; the other files (keys, reports, snapshots) are read when they are written
    files: list[dict[str, Any]] = []
    for rel, path in _data_files(settings):
        early = path.read_bytes() if rel.startswith("audit/") else None
        files.append({"t": "file", "role": "data", "path": rel, "data": early, "src": path})
    for role, path in _external_files(settings):
        early = path.read_bytes() if role == "audit_signing_key" else None
        files.append({"t": "file", "role": role, "path": str(path), "data": early, "src": path})

    own = engine is None
    eng = make_engine(settings.db_url) if own else engine
    assert eng is not None
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    created = datetime.now(UTC)
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            writer = _SealedWriter(fh, passphrase, scrypt_n=scrypt_n)
            async with eng.connect() as conn:
                if conn.dialect.name == "postgresql":
                    conn = await conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
                async with conn.begin():
                    revision = await _revision(conn)  # the first read: the snapshot starts here
                    if revision != head:
                        raise BackupError(
                            f"数据库结构版本 {revision} 与本程序 ({head}) 不符：请用运行平台的同一版本 gbops 备份 / the "
                            f"database is at schema revision {revision}, this gbops at {head}: back up with the "
                            f"gbops version that runs the platform", "revision")
                    writer.write(_line({"t": "begin", "format": FORMAT_VERSION, "created_at": created.isoformat(),
                                        "revision": revision, "dialect": conn.dialect.name,
                                        "origin": settings.audit_log_origin, "sip_id": settings.sip_id}))
                    parts, rows = await _dump(conn, writer, list(metadata.sorted_tables), progress)
            names = []
            for f in files:
                data, src = f.pop("data"), f.pop("src")
                if data is None:
                    data = src.read_bytes()
                writer.write(_line({**f, "data": base64.b64encode(data).decode()}))
                parts.append({"part": f"file:{f['role']}:{f['path']}", "bytes": len(data),
                              "sha256": hashlib.sha256(data).hexdigest()})
                names.append(f["path"])
            writer.write(_line({"t": "manifest", "revision": revision, "tables": len(metadata.sorted_tables),
                                "rows": rows, "parts": parts}))
            writer.write(_line({"t": "end"}))
            writer.close()
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(partial, out)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        if own:
            await eng.dispose()
    return BackupResult(path=out, bytes=writer.size, sha256=writer.hash.hexdigest(), revision=revision,
                        tables=len(metadata.sorted_tables), rows=rows, files=names, created_at=created, parts=parts)


# ------------------------------------------------------------------------------------------ restore
@dataclass
class _Checked:
    begin: dict[str, Any]
    manifest: dict[str, Any]
    tables: dict[str, list[str]]  # name -> columns, in file order
    files: list[dict[str, Any]]  # role, path, data (bytes)
    sha256: str
    size: int


def _verify_file(path: Path, passphrase: str) -> _Checked:
    """Read and check the whole file (every chunk; structure; the manifest's counts and hashes)."""
    if not path.is_file():
        raise BackupError(f"备份文件不存在 / no backup file at {path}", "no_file")
    file_hash = hashlib.sha256()
    begin: dict[str, Any] | None = None
    manifest: dict[str, Any] | None = None
    tables: dict[str, list[str]] = {}
    files: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    current: str | None = None
    digest: Any = None
    n = 0
    ended = False
    with open(path, "rb") as fh:
        for line, rec in _records(fh, passphrase, file_hash):
            if ended:
                raise BackupError(_DAMAGED, "damaged")
            if current is not None:
                if isinstance(rec, list):
                    digest.update(line + b"\n")
                    n += 1
                    continue
                if rec.get("t") != "table_end" or rec.get("name") != current or rec.get("rows") != n:
                    raise BackupError(_DAMAGED, "damaged")
                parts.append({"part": f"table:{current}", "rows": n, "sha256": digest.hexdigest()})
                current = None
                continue
            kind = rec.get("t") if isinstance(rec, dict) else None
            if begin is None:
                if kind != "begin" or rec.get("format") != FORMAT_VERSION:
                    raise BackupError(_DAMAGED, "damaged")
                begin = rec
            elif kind == "table" and manifest is None:
                current, digest, n = rec["name"], hashlib.sha256(), 0
                tables[current] = list(rec["columns"])
            elif kind == "file" and manifest is None:
                data = base64.b64decode(rec["data"])
                files.append({"role": rec["role"], "path": rec["path"], "data": data})
                parts.append({"part": f"file:{rec['role']}:{rec['path']}", "bytes": len(data),
                              "sha256": hashlib.sha256(data).hexdigest()})
            elif kind == "manifest" and manifest is None:
                manifest = rec
            elif kind == "end" and manifest is not None:
                ended = True
            else:
                raise BackupError(_DAMAGED, "damaged")
        size = fh.tell()
    if not ended or begin is None or manifest is None or manifest.get("parts") != parts:
        raise BackupError(f"{_DAMAGED}: 清单不符 / the manifest does not match the content", "damaged")
    return _Checked(begin, manifest, tables, files, file_hash.hexdigest(), size)


async def _table_names(conn: AsyncConnection) -> set[str]:
    from sqlalchemy import inspect

    return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))


def _check_empty_dir(settings: Any) -> None:
    data = Path(settings.data_dir)
    if data.exists() and not data.is_dir():
        raise BackupError(f"{data} 不是目录 / is not a directory", "target")
    if data.is_dir():
        left = sorted(p.name for p in data.iterdir() if p.name not in ("gbops.db", "gbops.db-wal", "gbops.db-shm"))
        if left:
            raise BackupError(
                f"数据目录 {data} 不是空的（{', '.join(left[:5])}）：只能恢复到空的数据目录和空数据库 / the data "
                f"directory {data} is not empty ({', '.join(left[:5])}): a backup is restored only into an empty data "
                "directory and an empty database", "target")


async def _check_empty_target(settings: Any, engine: AsyncEngine, revision: str) -> None:
    _check_empty_dir(settings)
    async with engine.connect() as conn:
        names = await _table_names(conn)
        current = await _revision(conn) if "alembic_version" in names else None
        used = []
        for t in USED_MARKERS:
            if t in names and (await conn.execute(text(f'SELECT count(*) FROM "{t}"'))).scalar():
                used.append(t)
        ours = names & set(_metadata().tables)
        if used or (ours and "alembic_version" not in names):
            raise BackupError(
                f"目标数据库不是空的（{', '.join(used or sorted(ours)[:5])} 有数据）：请先新建一个空数据库 / the target "
                f"database is not empty ({', '.join(used or sorted(ours)[:5])}): create an empty database first", "target")
    if current is not None and current != revision:
        ancestors = {r.revision for r in _script().iterate_revisions(revision, "base")}
        if current not in ancestors:
            raise BackupError(
                f"目标数据库已处于结构版本 {current}（备份为 {revision}）：请新建一个空数据库 / the target database is "
                f"already at schema revision {current} (the backup is at {revision}): create an empty database",
                "target")


def _row_order(table: Table, cols: list[str], rows: list[list[Any]]) -> list[list[Any]]:
    """Parents before children for a table that refers to itself (an org tree), however deep."""
    selfs = [fk for fk in table.foreign_keys if fk.column.table is table]
    if not selfs:
        return rows
    child, parent = cols.index(selfs[0].parent.name), cols.index(selfs[0].column.name)
    keys = {r[parent] for r in rows}
    roots: list[list[Any]] = []
    children: dict[Any, list[list[Any]]] = {}
    for r in rows:
        up = r[child]
        if up is None or up not in keys or up == r[parent]:
            roots.append(r)
        else:
            children.setdefault(up, []).append(r)
    out: list[list[Any]] = []
    stack = list(reversed(roots))
    while stack:
        r = stack.pop()
        out.append(r)
        stack.extend(reversed(children.get(r[parent], [])))
    if len(out) < len(rows):  # a cycle: the rest as they came (the database says whether it may be)
        placed = {id(r) for r in out}
        out += [r for r in rows if id(r) not in placed]
    return out


async def _insert_rows(conn: AsyncConnection, table: Table, cols: list[str], rows: list[list[Any]]) -> None:
    if rows:
        await conn.execute(table.insert(), [dict(zip(cols, (_dec(v) for v in r), strict=True)) for r in rows])


async def _reset_sequences(conn: AsyncConnection, tables: list[str]) -> None:
    for name in tables:
        cols = (await conn.execute(text(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = :t"), {"t": name})).scalars().all()
        for col in cols:
            seq = (await conn.execute(text("SELECT pg_get_serial_sequence(:t, :c)"),
                                      {"t": f'"{name}"', "c": col})).scalar()
            if seq:
                await conn.execute(text(f'SELECT setval(:s, coalesce((SELECT max("{col}") FROM "{name}"), 0) + 1, '
                                        "false)"), {"s": seq})


def _open_read(path: Path) -> BinaryIO:
    return open(path, "rb")  # noqa: SIM115 - the caller's with-block closes it


async def _load_tables(path: Path, passphrase: str, conn: AsyncConnection, checked: _Checked,
                       metadata: MetaData, progress: Progress | None) -> int:
    """Insert every table's rows, in an order that satisfies the foreign keys (one pass over the file when
    its order does, which it does when the backup was made by this version)."""
    reflected = MetaData()
    tables: dict[str, Table] = {}
    for name, cols in checked.tables.items():
        if name in metadata.tables and set(cols) <= set(metadata.tables[name].c.keys()):
            tables[name] = metadata.tables[name]
        else:  # a table or column this version no longer declares (dropped by a later migration): as the
            # database has it at the backup's revision
            tables[name] = await conn.run_sync(lambda c, n=name: Table(n, reflected, autoload_with=c))
    deps = {name: {fk.column.table.name for fk in t.foreign_keys if fk.column.table.name != name}
            & set(tables) for name, t in tables.items()}
    pending = list(checked.tables)
    done: set[str] = set()
    total = 0
    counts = {p["part"][6:]: p["rows"] for p in checked.manifest["parts"] if p["part"].startswith("table:")}
    while pending:
        ready_before = set(done)
        current: str | None = None
        take = self_ref = False
        batch: list[list[Any]] = []
        buffered: list[list[Any]] = []
        n = 0
        last_report = time.monotonic()
        with _open_read(path) as fh:
            for _line_bytes, rec in _records(fh, passphrase):
                if isinstance(rec, dict):
                    kind = rec.get("t")
                    if kind == "table":
                        current, n = rec["name"], 0
                        take = current in pending and deps[current] <= done
                        batch, buffered = [], []
                        self_ref = take and any(fk.column.table is tables[current]
                                                for fk in tables[current].foreign_keys)
                    elif kind == "table_end" and current is not None:
                        if take:
                            table, cols = tables[current], checked.tables[current]
                            ordered = _row_order(table, cols, buffered)
                            for i in range(0, len(ordered), _BATCH):
                                await _insert_rows(conn, table, cols, ordered[i:i + _BATCH])
                            await _insert_rows(conn, table, cols, batch)
                            pending.remove(current)
                            done.add(current)
                            total += n
                        current, take = None, False
                    elif kind == "manifest":
                        break
                    continue
                if not take or current is None:
                    continue
                n += 1
                if self_ref:  # a tree: parents first, so the table's rows are ordered once all are read
                    buffered.append(rec)
                    continue
                batch.append(rec)
                if len(batch) >= _BATCH:
                    await _insert_rows(conn, tables[current], checked.tables[current], batch)
                    batch = []
                if progress is not None and counts.get(current, 0) >= _PROGRESS_ROWS and (
                        time.monotonic() - last_report > 1):
                    progress(current, n, counts[current])
                    last_report = time.monotonic()
        if done == ready_before:
            raise BackupError(f"无法确定恢复顺序 / no order satisfies the foreign keys of {', '.join(pending)}", "order")
    return total


async def restore_backup(settings: Any, in_path: Path | str, passphrase: str, *,
                         progress: Progress | None = None, echo: Callable[[str], None] | None = None) -> RestoreResult:
    """Restore ``in_path`` into the empty data directory and empty database that ``settings`` name; see the
    module docstring.  Records ``backup.restore`` on the restored audit log and signs a checkpoint."""
    from gbcore.db import SQLITE_BEGIN_IMMEDIATE, make_engine, make_sessionmaker
    from gbops.migrate import migrate

    say = echo or (lambda _m: None)
    path = Path(in_path)
    checked = await asyncio.to_thread(_verify_file, path, passphrase)
    revision = checked.begin["revision"]
    if not _known(revision):
        raise BackupError(
            f"备份来自更新的数据库结构版本 {revision}，本程序不认识：请用不低于备份时的 gbops 版本恢复 / the backup is from "
            f"a newer schema revision {revision} than this gbops knows: restore with a gbops at least as new as the "
            "one that made it", "revision")
    origin = checked.begin.get("origin")
    if origin and origin != settings.audit_log_origin:
        raise BackupError(
            f"审计日志来源不符：备份为 {origin}，当前配置为 {settings.audit_log_origin}（请使用相同的 GBOPS_SIP_ID / "
            f"GBOPS_AUDIT_ORIGIN）/ the audit log origin differs: the backup is {origin}, these settings give "
            f"{settings.audit_log_origin} (use the same GBOPS_SIP_ID / GBOPS_AUDIT_ORIGIN)", "origin")
    # where every file goes; refuse before anything is written when one is there already with other content
    data_dir = Path(settings.data_dir)
    targets: list[tuple[Path, bytes]] = []
    for f in checked.files:
        if f["role"] == "data":
            rel = Path(f["path"])
            if rel.is_absolute() or ".." in rel.parts:
                raise BackupError(_DAMAGED, "damaged")
            dest = _key_target(settings, rel) or data_dir / rel
        else:
            dest = _role_target(settings, f["role"], f["path"])
        if dest.exists() and not _under(dest, data_dir):  # a key outside the data dir (shared by the nodes)
            if dest.read_bytes() != f["data"]:
                raise BackupError(f"{dest} 已存在且内容不同 / already exists with other content", "target")
            continue
        targets.append((dest, f["data"]))
    _check_empty_dir(settings)
    _make_dir(data_dir)
    engine = make_engine(settings.db_url)
    try:
        await _check_empty_target(settings, engine, revision)
        for dest, _ in targets:
            if dest.exists() and not _under(dest, data_dir):
                raise BackupError(f"{dest} 已存在 / already exists", "target")
        say(f"备份文件校验通过 / the backup file checks out: sha256 {checked.sha256}, schema {revision}, "
            f"{checked.manifest['rows']} rows")
        await migrate(engine, revision)
        metadata = _metadata()
        async with engine.connect() as conn:
            conn = await conn.execution_options(**{SQLITE_BEGIN_IMMEDIATE: True})
            async with conn.begin():
                if conn.dialect.name == "sqlite":
                    await conn.execute(text("PRAGMA defer_foreign_keys = ON"))
                # rows the migrations seed (the built-in role) make way for the backup's
                names = await _table_names(conn)
                for table in reversed(metadata.sorted_tables):
                    if table.name in names and table.name in checked.tables and (
                            await conn.execute(select(func.count()).select_from(table))).scalar():
                        await conn.execute(table.delete())
                rows = await _load_tables(path, passphrase, conn, checked, metadata, progress)
                if conn.dialect.name == "postgresql":
                    await _reset_sequences(conn, list(checked.tables))
        await migrate(engine)  # a backup of an older schema comes up to this version
        for dest, data in targets:
            _write_private(dest, data)
        result = RestoreResult(sha256=checked.sha256, bytes=checked.size, revision=revision,
                               created_at=datetime.fromisoformat(checked.begin["created_at"]),
                               tables=len(checked.tables), rows=rows, files=[str(d) for d, _ in targets],
                               origin=origin)
        await _record_restore(settings, make_sessionmaker(engine), result, path.name)
        return result
    finally:
        await engine.dispose()


def _known(revision: str) -> bool:
    try:
        return _script().get_revision(revision) is not None
    except Exception:
        return False


def _make_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)


def _exists(path: Path) -> bool:
    return path.exists()


def _write_private(dest: Path, data: bytes) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


async def _record_restore(settings: Any, sessionmaker: Any, result: RestoreResult, name: str) -> None:
    from audit_log.log import Actor, AuditLog, Target

    if not _exists(Path(settings.audit_signing_key_path)):
        raise BackupError("备份中没有审计签名密钥 / the backup holds no audit signing key", "audit")
    from audit_log.store import AuditIntegrityError

    audit = AuditLog.from_settings(settings, sessionmaker, create_key=False)
    try:
        await audit.check_against_pin(await audit.store.size())  # the restored log extends its pinned checkpoint
    except AuditIntegrityError as exc:
        raise BackupError(f"已恢复，但审计日志与备份中的检查点不符（备份来源已被篡改）/ restored, but the audit log does "
                          f"not extend the checkpoint pinned in the backup (the source was tampered with): {exc}",
                          "audit") from None
    async with sessionmaker() as session:
        from gbcore.db import begin_write

        await begin_write(session)
        await audit.append(session, actor=Actor("system", _os_user(), "gbops restore"), action="backup.restore",
                           target=Target("backup", name), detail=result.audit_detail(name))
        await session.commit()
    await audit.checkpoint()


def _os_user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


# ------------------------------------------------------------------------------------------ schedule, status
def prune_backups(folder: Path, keep: int) -> list[Path]:
    """Delete the oldest scheduled backups (by name) beyond ``keep``; returns those deleted."""
    names = sorted(p for p in folder.iterdir() if BACKUP_NAME_RE.match(p.name)) if folder.is_dir() else []
    gone = names[: max(0, len(names) - keep)]
    for p in gone:
        p.unlink(missing_ok=True)
    return gone


def _backup_time(p: Path) -> datetime:
    m = BACKUP_NAME_RE.match(p.name)
    if m:
        local = datetime.strptime(m.group(1) + m.group(2), "%Y%m%d%H%M%S").replace(tzinfo=BEIJING)
        return local.astimezone(UTC)
    return datetime.fromtimestamp(p.stat().st_mtime, UTC)


def backup_status(settings: Any) -> dict[str, Any]:
    """What the security check needs: ``last_at`` (UTC, or None), ``last_file``, ``count`` (backups in the
    backup folder), ``scheduled`` (a passphrase file and a schedule are configured), ``dir``."""
    folder = backup_dir(settings)
    found = [p for p in folder.iterdir() if p.is_file() and p.name.endswith(BACKUP_SUFFIX)] if folder.is_dir() else []
    latest = max(found, key=_backup_time, default=None)
    return {
        "last_at": _backup_time(latest) if latest is not None else None,
        "last_file": latest.name if latest is not None else None,
        "count": len(found),
        "scheduled": bool(settings.backup_passphrase_file and settings.backup_schedule),
        "dir": str(folder),
    }


def _until(settings: Any, now: datetime) -> float:
    hh, mm = (int(x) for x in settings.backup_schedule.split(":"))
    local = now.astimezone(BEIJING)
    at = datetime(local.year, local.month, local.day, hh, mm, tzinfo=BEIJING)
    if at <= local:
        at = datetime.combine(local.date() + timedelta(days=1), at.timetz())
    return max(1.0, (at - now).total_seconds())


class BackupScheduler:
    """A backup every day at ``backup_schedule`` (Beijing time) into ``backup_dir`` (default
    ``<data_dir>/backups``), named in Beijing time, keeping ``backup_keep`` of them; only when
    ``backup_passphrase_file`` is set.  Each backup runs in a thread with its own event loop and engine (the
    compression and encryption do not hold up the platform's loop).  Successes and failures are logged
    and recorded on the audit log (``backup.create`` / ``backup.failed``)."""

    def __init__(self, settings: Any, audit: Any = None, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 scrypt_n: int = SCRYPT_N) -> None:
        self.settings = settings
        self.audit = audit
        self.clock = clock
        self.scrypt_n = scrypt_n
        self.periodic = PeriodicTask("backup-scheduler", self.run_once, interval=lambda: _until(settings, clock()),
                                     logger=log, failure_event="backup.schedule_failed")

    @property
    def enabled(self) -> bool:
        return bool(self.settings.backup_passphrase_file and self.settings.backup_schedule)

    def start(self) -> None:
        if not self.enabled:
            return
        self.periodic.first_delay = _until(self.settings, self.clock())
        self.periodic.start()
        try:
            if Path(self.settings.backup_passphrase_file).stat().st_mode & 0o077:
                log.warning("backup.passphrase_file_readable", file=str(self.settings.backup_passphrase_file),
                            message="备份口令文件应为 0600 / the backup passphrase file should be mode 0600")
        except OSError as exc:
            log.error("backup.passphrase_file_missing", file=str(self.settings.backup_passphrase_file),
                      error=exc.strerror)
        log.info("backup.scheduled", at=self.settings.backup_schedule, dir=str(backup_dir(self.settings)),
                 keep=self.settings.backup_keep)

    async def stop(self) -> None:
        await self.periodic.stop(grace=30)

    async def run_once(self) -> BackupResult:
        from audit_log.log import Actor, Target

        s = self.settings
        out = backup_dir(s) / default_backup_name(self.clock())
        try:
            passphrase = read_passphrase_file(Path(s.backup_passphrase_file))
            result = await asyncio.to_thread(_backup_in_thread, s, out, passphrase, self.scrypt_n)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                raise
            message = str(exc) if isinstance(exc, BackupError) else f"{type(exc).__name__}: {exc}"
            log.error("backup.failed", file=out.name, error=message)
            if self.audit is not None:
                await self.audit.record(actor=Actor("system", None, "backup-scheduler"), action="backup.failed",
                                        target=Target("backup", out.name), detail={"error": message[:500]})
            raise
        gone = prune_backups(out.parent, s.backup_keep)
        log.info("backup.created", file=str(out), bytes=result.bytes, sha256=result.sha256, rows=result.rows,
                 pruned=[p.name for p in gone])
        if self.audit is not None:
            detail = result.audit_detail("schedule")
            detail["pruned"] = [p.name for p in gone]
            await self.audit.record(actor=Actor("system", None, "backup-scheduler"), action="backup.create",
                                    target=Target("backup", out.name), detail=detail)
        return result


def _backup_in_thread(settings: Any, out: Path, passphrase: str, scrypt_n: int) -> BackupResult:
    """One backup on an event loop and engine of its own (called in a worker thread)."""
    return asyncio.run(create_backup(settings, out, passphrase, scrypt_n=scrypt_n))


def print_progress(table: str, done: int, total: int) -> None:
    print(f"  {table}: {done}/{total}", file=sys.stderr, flush=True)
