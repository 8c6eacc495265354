"""The platform's per-installation keys: where each lives, the cluster-mode check, and ``gbops keys init``.

Five keys make an installation what it is: the audit log's signing key (checkpoints auditors verify with
the pinned ``vkey``), the watermark tag key (session tags in every watermarked picture), and three sealing
keys (cascade passwords, recordings at rest, TOTP secrets).  A single process generates each one in its
data directory at first use, as it always did.

A cluster must not: two nodes with two audit keys sign one log with two keys, two tag keys make half of the
tags unverifiable, and a recording sealed on one node would not open on another.  So with
``GBOPS_SECRETS_DIR`` every key is read from that folder under a fixed name (:data:`KEY_FILES`), the folder
every node is given (a Kubernetes Secret, a file copied by the installer), created once by
``gbops keys init``; and in cluster mode (Redis configured) :func:`check_shared_keys` refuses to start a
node whose keys are missing, loose or malformed instead of letting it generate its own.

Where a key lives is decided by the ``Settings`` properties (``audit_signing_key_path``, ...): the one
source of truth, which the domains read without importing the assembly.  :func:`key_paths` lists them.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gbcore.settings import SettingsError

__all__ = [
    "KEY_FILES",
    "KeyFile",
    "KeysInit",
    "check_shared_keys",
    "init_keys",
    "key_paths",
    "key_sources",
]


@dataclass(frozen=True, slots=True)
class KeyFile:
    """One of the installation's keys: its file name in the secrets folder, how people call it, the
    ``Settings`` property that resolves it, and the explicit per-key setting that overrides the folder."""

    name: str  # key of key_paths()
    file_name: str  # in GBOPS_SECRETS_DIR
    label: str  # Chinese / English
    prop: str  # Settings property
    explicit: str | None = None  # Settings field that, when set, wins
    env: str | None = None  # its environment variable, for messages


KEY_FILES: tuple[KeyFile, ...] = (
    KeyFile("audit_signing", "audit-signing.key", "审计签名密钥 / audit signing key", "audit_signing_key_path",
            "audit_key_path", "GBOPS_AUDIT_KEY_PATH"),
    KeyFile("watermark_tag", "watermark-tag.key", "水印标签密钥 / watermark tag key", "watermark_tag_key_path"),
    KeyFile("cascade", "cascade.key", "级联密码封存密钥 / cascade sealing key", "cascade_key_path"),
    KeyFile("record", "record.key", "录像加密密钥 / recording key", "record_key_path",
            "record_key_file", "GBOPS_RECORD_KEY_FILE"),
    KeyFile("totp", "totp.key", "双因素封存密钥 / TOTP sealing key", "totp_key_path"),
)


def key_paths(settings: Any) -> dict[str, Path]:
    """Every key's file as ``settings`` resolve it (explicit setting > ``GBOPS_SECRETS_DIR`` > data dir)."""
    return {k.name: Path(getattr(settings, k.prop)) for k in KEY_FILES}


def key_sources(settings: Any) -> dict[str, str]:
    """Where each key comes from: ``"setting"`` (its own setting), ``"secrets_dir"`` or ``"data_dir"``."""
    out: dict[str, str] = {}
    for k in KEY_FILES:
        if k.explicit is not None and getattr(settings, k.explicit):
            out[k.name] = "setting"
        elif settings.secrets_dir is not None:
            out[k.name] = "secrets_dir"
        else:
            out[k.name] = "data_dir"
    return out


# ------------------------------------------------------------------------------------------ the check
def _validate(key: KeyFile, path: Path, origin: str) -> str | None:
    """Why the file at ``path`` cannot serve as ``key`` (None: it can).  Never puts key material in a message."""
    try:
        st = path.stat()  # follows links: a Kubernetes Secret volume's files are links into ..data/
    except FileNotFoundError:
        return "不存在 / missing"
    except OSError as exc:
        return f"无法访问 / not accessible: {exc.strerror}"
    if not stat.S_ISREG(st.st_mode):
        return "不是普通文件 / not a regular file"
    mode = st.st_mode & 0o777
    if mode & 0o077:
        return f"权限过宽 ({mode:o})，组或其他用户可读，须 chmod 600 / readable by group or others (mode {mode:o}): chmod 600 it"
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"无法读取 / cannot be read: {exc.strerror}"
    try:
        if key.name == "audit_signing":
            from audit_log.note import NoteSigner

            signer = NoteSigner.from_skey(data.decode("ascii"))
            if signer.name != origin:
                return (f"名称 {signer.name!r} 与审计日志来源 {origin!r} 不符（GBOPS_SIP_ID / GBOPS_AUDIT_ORIGIN 须与生成时"
                        f"相同）/ named {signer.name!r} but the log origin is {origin!r} (GBOPS_SIP_ID / "
                        "GBOPS_AUDIT_ORIGIN must be those it was made with)")
        elif key.name == "watermark_tag":
            from watermark.tag import load_private_key

            load_private_key(path)
        else:
            from gbcore.secretbox import load_key

            load_key(path, create=False)
    except Exception:  # NoteError, TagError, SecretBoxError, ValueError, UnicodeDecodeError
        return "格式错误 / malformed"
    return None


def check_shared_keys(settings: Any) -> None:
    """In cluster mode, refuse to start unless every key is a shared one that is there, 0600 and well formed.

    A node never generates a key in cluster mode: each must come from ``GBOPS_SECRETS_DIR`` (or its own
    explicit setting), made once by ``gbops keys init``.  Raises :class:`~gbcore.settings.SettingsError`
    naming every problem and the fix.  Does nothing for a single process (keys are created at first use)."""
    if not settings.clustered:
        return
    sources = key_sources(settings)
    paths = key_paths(settings)
    unshared = [k for k in KEY_FILES if sources[k.name] == "data_dir"]
    if unshared:
        names = "\n".join(f"  - {k.label}" + (f"（或 / or {k.env}）" if k.env else "") for k in unshared)
        raise SettingsError(
            "集群模式需要共享密钥目录 GBOPS_SECRETS_DIR，节点不会自行生成密钥；以下密钥没有来源 / cluster mode needs the "
            "shared keys folder GBOPS_SECRETS_DIR: a node never generates its own keys, and these have no "
            f"source:\n{names}\n修复 / fix: 在一台机器上执行一次 `gbops keys init --dir <目录>`，把该目录交给每个节点，并设置 "
            "GBOPS_SECRETS_DIR=<目录> / run `gbops keys init --dir <folder>` once, give that folder to every node "
            "and set GBOPS_SECRETS_DIR=<folder>")
    problems: list[tuple[KeyFile, Path, str]] = []
    for k in KEY_FILES:
        why = _validate(k, paths[k.name], settings.audit_log_origin)
        if why is not None:
            problems.append((k, paths[k.name], why))
    if not problems:
        return
    lines = "\n".join(f"  - {k.label}: {p}: {why}" for k, p, why in problems)
    folder = settings.secrets_dir if settings.secrets_dir is not None else "<GBOPS_SECRETS_DIR>"
    fixes = []
    if any(why.startswith("不存在") for _, _, why in problems):
        fixes.append(f"缺少的密钥由 `gbops keys init --dir {folder}` 生成（只在一台机器上执行一次，再把该目录分发给每个节点）/ "
                     f"create the missing keys with `gbops keys init --dir {folder}` (once, on one machine; then give "
                     "that folder to every node)")
    if any("chmod" in why for _, _, why in problems):
        fixes.append("收紧权限：chmod 600 <文件>（Kubernetes Secret 卷：defaultMode: 0400）/ tighten the mode: chmod 600 "
                     "<file> (Kubernetes Secret volume: defaultMode: 0400)")
    if not fixes:
        fixes.append("从最初生成的密钥目录重新分发这些文件 / give the node these files again from the folder they were "
                     "made in")
    raise SettingsError(
        "集群模式下共享密钥不可用，节点不会自行生成密钥 / cluster mode: the shared keys are not usable, and a node never "
        f"generates its own:\n{lines}\n" + "\n".join(f"修复 / fix: {f}" for f in fixes))


# ------------------------------------------------------------------------------------------ keys init
@dataclass
class KeysInit:
    """What ``init_keys`` did: file names created, kept (there already) and replaced (``force``)."""

    directory: Path
    created: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    audit_vkey: str = ""  # the verifier key auditors pin (of the key now in the folder)
    watermark_public_key: str = ""  # PEM, for `gbops watermark inspect --key`


def _new_audit_key(origin: str) -> bytes:
    from audit_log.note import NoteSigner

    return (NoteSigner.generate(origin).skey + "\n").encode("ascii")


def _new_tag_key(_origin: str) -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _new_box_key(_origin: str) -> bytes:
    from gbcore.secretbox import KEY_SIZE

    return os.urandom(KEY_SIZE).hex().encode("ascii") + b"\n"


_GENERATORS: dict[str, Callable[[str], bytes]] = {
    "audit_signing": _new_audit_key,
    "watermark_tag": _new_tag_key,
    "cascade": _new_box_key,
    "record": _new_box_key,
    "totp": _new_box_key,
}


def _write_key(path: Path, data: bytes, *, replace: bool) -> bool:
    """Write ``data`` to ``path`` mode 0600 atomically; without ``replace`` never over an existing file
    (False: one was there, maybe made by a concurrent run)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        if replace:
            os.replace(tmp, path)
            return True
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def init_keys(directory: Path | str, *, origin: str, force: bool = False) -> KeysInit:
    """Generate every key into ``directory`` (created 0700), each file 0600 under its fixed name.

    An existing key is kept unless ``force`` (replacing a key makes what it sealed or signed unreadable
    or unverifiable, so it is never done by default).  ``origin`` names the audit key: it must be the
    ``audit_log_origin`` of the nodes (GBOPS_SIP_ID / GBOPS_AUDIT_ORIGIN)."""
    from audit_log.note import NoteSigner
    from watermark.tag import load_private_key, public_key_text

    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    result = KeysInit(folder)
    for k in KEY_FILES:
        path = folder / k.file_name
        existed = path.exists() or path.is_symlink()
        if existed and not force:
            result.kept.append(k.file_name)
            continue
        wrote = _write_key(path, _GENERATORS[k.name](origin), replace=force)
        (result.replaced if existed else result.created if wrote else result.kept).append(k.file_name)
    audit = folder / "audit-signing.key"
    with contextlib.suppress(Exception):  # a kept key that is malformed: reported by check_shared_keys
        result.audit_vkey = NoteSigner.from_skey(audit.read_text("ascii")).vkey
    with contextlib.suppress(Exception):
        result.watermark_public_key = public_key_text(load_private_key(folder / "watermark-tag.key"))
    return result
