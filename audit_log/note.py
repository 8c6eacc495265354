"""C2SP signed notes with Ed25519 keys, and C2SP ``tlog-checkpoint`` bodies.

Signed note (https://c2sp.org/signed-note)::

    <text: UTF-8, one or more lines, each ending in a newline>
    <blank line>
    — <key name> <base64(4-byte key ID || signature)>
    ...

* An Ed25519 key's ID is the first 4 bytes of ``SHA-256(<key name> || 0x0A || 0x01 || <32-byte
  public key>)``; the signature is Ed25519 over the note text (every byte up to and including the
  text's final newline).
* The verifier key text form (``vkey``) is ``<name>+<8 lower-case hex key ID>+<base64(0x01 ||
  public key)>``.
* The private key is kept as ``PRIVATE+KEY+<name>+<8 hex key ID>+<base64(0x01 || 32-byte seed)>``
  in a file readable by its owner only (mode 0600).
* A note verifies when at least one signature line is from a known key (same name and key ID)
  and every such line's signature is valid; lines from unknown keys are ignored.

Checkpoint body (https://c2sp.org/tlog-checkpoint): ``<origin>\\n<tree size>\\n<base64 root
hash>\\n`` then optional non-empty extension lines.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

__all__ = [
    "ALG_ED25519",
    "Checkpoint",
    "NoteError",
    "NoteSigner",
    "NoteVerifier",
    "format_checkpoint",
    "key_id",
    "load_or_create_signer",
    "open_note",
    "parse_checkpoint",
    "split_note",
]

ALG_ED25519 = 0x01
SIG_PREFIX = "\u2014 "  # em dash, space
MAX_SIGNATURES = 100


class NoteError(ValueError):
    """A malformed note or checkpoint, a bad signature, or no signature from a known key."""


def check_key_name(name: str) -> str:
    if not name or "+" in name or any(c.isspace() for c in name) or not name.isprintable():
        raise NoteError(f"invalid key name {name!r}: non-empty, no spaces, no '+'")
    return name


def key_id(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([ALG_ED25519]) + public_key).digest()[:4]


def _b64decode(text: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise NoteError(f"invalid base64: {text[:40]!r}") from None


@dataclass(frozen=True, slots=True)
class NoteVerifier:
    name: str
    key_id: bytes
    public_key: Ed25519PublicKey

    @classmethod
    def from_vkey(cls, vkey: str) -> NoteVerifier:
        parts = vkey.strip().split("+", 2)
        if len(parts) != 3:
            raise NoteError("a verifier key is <name>+<hex key id>+<base64 key>")
        name, hex_id, b64 = parts
        check_key_name(name)
        raw = _b64decode(b64)
        if len(raw) != 33 or raw[0] != ALG_ED25519:
            raise NoteError("only Ed25519 verifier keys (algorithm 0x01, 32 bytes) are supported")
        if len(hex_id) != 8 or hex_id != hex_id.lower():
            raise NoteError("the key id of a verifier key is 8 lower-case hex digits")
        kid = key_id(name, raw[1:])
        if kid.hex() != hex_id:
            raise NoteError("the verifier key's id does not match its name and public key")
        return cls(name, kid, Ed25519PublicKey.from_public_bytes(raw[1:]))

    @property
    def vkey(self) -> str:
        raw = self.public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
        return f"{self.name}+{self.key_id.hex()}+{base64.b64encode(bytes([ALG_ED25519]) + raw).decode()}"


class NoteSigner:
    """An Ed25519 note signing key with its name.  Never logged, never repr'd."""

    __slots__ = ("_private", "key_id", "name", "verifier")

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        self.name = check_key_name(name)
        self._private = private_key
        public = private_key.public_key()
        self.key_id = key_id(name, public.public_bytes(Encoding.Raw, PublicFormat.Raw))
        self.verifier = NoteVerifier(name, self.key_id, public)

    def __repr__(self) -> str:
        return f"NoteSigner(name={self.name!r}, key_id={self.key_id.hex()})"

    @classmethod
    def generate(cls, name: str) -> NoteSigner:
        return cls(name, Ed25519PrivateKey.generate())

    @classmethod
    def from_skey(cls, text: str) -> NoteSigner:
        parts = text.strip().split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise NoteError("a signing key is PRIVATE+KEY+<name>+<hex key id>+<base64 key>")
        name, hex_id, b64 = parts[2:]
        raw = _b64decode(b64)
        if len(raw) != 33 or raw[0] != ALG_ED25519:
            raise NoteError("only Ed25519 signing keys are supported")
        signer = cls(name, Ed25519PrivateKey.from_private_bytes(raw[1:]))
        if signer.key_id.hex() != hex_id:
            raise NoteError("the signing key's id does not match its name and key")
        return signer

    @property
    def skey(self) -> str:
        seed = self._private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        b64 = base64.b64encode(bytes([ALG_ED25519]) + seed).decode()
        return f"PRIVATE+KEY+{self.name}+{self.key_id.hex()}+{b64}"

    @property
    def vkey(self) -> str:
        return self.verifier.vkey

    def sign(self, text: str) -> str:
        """The signed note: ``text`` (which must end in a newline), a blank line, one signature."""
        _check_text(text)
        sig = self._private.sign(text.encode("utf-8"))
        b64 = base64.b64encode(self.key_id + sig).decode()
        return f"{text}\n{SIG_PREFIX}{self.name} {b64}\n"


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise NoteError("note text must end with a newline")
    if "\n\n" in text or text.startswith("\n"):
        raise NoteError("note text must not contain blank lines")
    for ch in text:
        if ch != "\n" and (ord(ch) < 0x20 or ord(ch) == 0x7F):
            raise NoteError("note text must not contain control characters")


@dataclass(frozen=True, slots=True)
class Signature:
    name: str
    key_id: bytes
    signature: bytes


def split_note(note: str) -> tuple[str, list[Signature]]:
    """The text and the signature lines of a signed note (no signature is checked)."""
    if not note.endswith("\n"):
        raise NoteError("a signed note ends with a newline")
    cut = note.rfind("\n\n")
    if cut < 0:
        raise NoteError("no signature block (a blank line followed by signature lines)")
    text, block = note[: cut + 1], note[cut + 2 :]
    _check_text(text)
    sigs: list[Signature] = []
    for line in block[:-1].split("\n"):
        if not line.startswith(SIG_PREFIX):
            raise NoteError(f"malformed signature line {line[:60]!r}")
        name, sep, b64 = line[len(SIG_PREFIX) :].rpartition(" ")
        if not sep:
            raise NoteError(f"malformed signature line {line[:60]!r}")
        check_key_name(name)
        raw = _b64decode(b64)
        if len(raw) < 5:
            raise NoteError("signature too short")
        sigs.append(Signature(name, raw[:4], raw[4:]))
    if not sigs:
        raise NoteError("the note has no signatures")
    if len(sigs) > MAX_SIGNATURES:
        raise NoteError("too many signatures")
    return text, sigs


def open_note(note: str, verifiers: list[NoteVerifier]) -> str:
    """Check ``note`` against the known keys; returns its text.

    Raises :class:`NoteError` when a signature from a known key is invalid (``bad signature``) or
    when no line is from a known key (``unknown key``)."""
    text, sigs = split_note(note)
    known = {(v.name, v.key_id): v for v in verifiers}
    verified = 0
    for sig in sigs:
        v = known.get((sig.name, sig.key_id))
        if v is None:
            continue
        try:
            v.public_key.verify(sig.signature, text.encode("utf-8"))
        except InvalidSignature:
            raise NoteError(f"bad signature from key {sig.name}+{sig.key_id.hex()}") from None
        verified += 1
    if not verified:
        names = ", ".join(f"{s.name}+{s.key_id.hex()}" for s in sigs)
        raise NoteError(f"unknown key: the note is signed by {names}, none of them a known key")
    return text


# --------------------------------------------------------------------------------------- checkpoints
@dataclass(frozen=True, slots=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()


def format_checkpoint(origin: str, size: int, root: bytes, extensions: tuple[str, ...] = ()) -> str:
    if not origin or "\n" in origin:
        raise NoteError("checkpoint origin must be one non-empty line")
    if size < 0 or len(root) != 32:
        raise NoteError("bad checkpoint size or root")
    lines = [origin, str(size), base64.b64encode(root).decode(), *extensions]
    return "\n".join(lines) + "\n"


def parse_checkpoint(text: str) -> Checkpoint:
    lines = text.split("\n")
    if len(lines) < 4 or lines[-1] != "":
        raise NoteError("a checkpoint has an origin, a tree size and a root hash line")
    origin, size_text, root_text, *extensions = lines[:-1]
    if not origin:
        raise NoteError("checkpoint origin is empty")
    if not size_text.isdigit() or (size_text != "0" and size_text.startswith("0")) or not size_text.isascii():
        raise NoteError(f"checkpoint tree size {size_text!r} is not a decimal number")
    root = _b64decode(root_text)
    if len(root) != 32 or base64.b64encode(root).decode() != root_text:
        raise NoteError("checkpoint root hash is not base64 of 32 bytes")
    if any(not ext for ext in extensions):
        raise NoteError("checkpoint extension lines must not be empty")
    return Checkpoint(origin, int(size_text), root, tuple(extensions))


# --------------------------------------------------------------------------------------- key file
def load_or_create_signer(path: Path, name: str, *, create: bool = True) -> NoteSigner:
    """The signing key in ``path``; generated (mode 0600, directory 0700) when the file does not exist
    and ``create`` is true.

    Refuses a key file that others may read, and a key whose name is not ``name`` (the log's
    origin changed: the old key must be retired on purpose, not silently)."""
    path = Path(path)
    if not path.exists() and not create:
        raise NoteError(
            f"审计签名密钥不存在：{path}（平台首次启动时生成）/ the audit signing key {path} does not exist "
            "(the platform creates it at its first start)"
        )
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        signer = NoteSigner.generate(name)
        tmp = path.with_name(path.name + ".tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, (signer.skey + "\n").encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # never replaces a key another process created meanwhile
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise NoteError(
            f"审计签名密钥文件权限过宽 ({mode:o})，应为 0600 / the audit signing key {path} is readable by "
            f"others (mode {mode:o}): chmod 600 it"
        )
    signer = NoteSigner.from_skey(path.read_text("ascii"))
    if signer.name != name:
        raise NoteError(
            f"审计签名密钥的名称 {signer.name!r} 与日志来源 {name!r} 不符 / the audit signing key in {path} "
            f"is named {signer.name!r} but the log origin is {name!r}"
        )
    return signer
