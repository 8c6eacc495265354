"""Small secrets at rest (an upper platform's SIP password): AES-256-GCM under a key file of the data dir.

The key file holds 64 hex digits and is created 0600 on first use (as the recording key is).  A sealed
value is ``version (1 byte) || nonce (12 bytes) || ciphertext+tag``; ``aad`` binds it to where it belongs
(a purpose and a row id), so a sealed value copied to another row does not open.  Nothing here ever puts
key material or plain text in an exception, a log line or a repr.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["KEY_SIZE", "SecretBox", "SecretBoxError", "load_key"]

KEY_SIZE = 32
NONCE_SIZE = 12
VERSION = 1
MAX_SECRET = 4096  # bytes: passwords and tokens, not files


class SecretBoxError(Exception):
    """A key file that cannot be used, or a sealed value that does not open (``code`` says which)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def load_key(path: str | Path, *, create: bool = True) -> bytes:
    """The key in ``path`` (64 hex digits); a fresh one is written 0600 when the file is missing and
    ``create``.  Raises :class:`SecretBoxError` ``key_file`` for a missing, unreadable or malformed file."""
    path = Path(path)
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        if not create:
            raise SecretBoxError("key_file", f"密钥文件不存在 / the key file is missing: {path}") from None
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = secrets.token_bytes(KEY_SIZE)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process created it meanwhile: use theirs
            return load_key(path, create=False)
        except OSError as exc:
            raise SecretBoxError("key_file", f"无法创建密钥文件 / cannot create the key file {path}: "
                                 f"{exc.strerror}") from None
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            os.write(fd, key.hex().encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        return key
    except OSError as exc:
        raise SecretBoxError("key_file", f"无法读取密钥文件 / cannot read the key file {path}: {exc.strerror}") from None
    try:
        key = bytes.fromhex(text.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        key = b""
    if len(key) != KEY_SIZE:
        raise SecretBoxError("key_file", f"密钥文件格式错误（应为 64 个十六进制字符）/ the key file {path} is malformed "
                             "(expected 64 hex digits)")
    return key


class SecretBox:
    """Seal and open small secrets with one AES-256-GCM key."""

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_SIZE:
            raise SecretBoxError("bad_key", f"密钥长度应为 {KEY_SIZE} 字节 / the key must be {KEY_SIZE} bytes")
        self._aead = AESGCM(bytes(key))

    @classmethod
    def from_file(cls, path: str | Path, *, create: bool = True) -> SecretBox:
        return cls(load_key(path, create=create))

    def __repr__(self) -> str:
        return "SecretBox(<key hidden>)"

    def seal(self, secret: str | bytes, aad: bytes = b"") -> bytes:
        data = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
        if len(data) > MAX_SECRET:
            raise SecretBoxError("too_long", f"秘密过长（最多 {MAX_SECRET} 字节）/ the secret is longer than "
                                 f"{MAX_SECRET} bytes")
        nonce = secrets.token_bytes(NONCE_SIZE)
        return bytes((VERSION,)) + nonce + self._aead.encrypt(nonce, data, aad)

    def open(self, sealed: bytes, aad: bytes = b"") -> bytes:
        """The plain bytes; :class:`SecretBoxError` ``cannot_open`` for a wrong key, a wrong ``aad`` or
        damaged data."""
        sealed = bytes(sealed)
        if len(sealed) < 1 + NONCE_SIZE + 16 or sealed[0] != VERSION:
            raise SecretBoxError("cannot_open", "密文格式错误 / the sealed value is malformed")
        nonce, body = sealed[1 : 1 + NONCE_SIZE], sealed[1 + NONCE_SIZE :]
        try:
            return self._aead.decrypt(nonce, body, aad)
        except InvalidTag:
            raise SecretBoxError("cannot_open", "无法解密（密钥不符或数据损坏）/ cannot open the sealed value "
                                 "(wrong key or damaged data)") from None

    def open_text(self, sealed: bytes, aad: bytes = b"") -> str:
        try:
            return self.open(sealed, aad).decode("utf-8")
        except UnicodeDecodeError:
            raise SecretBoxError("cannot_open", "解密结果不是文本 / the sealed value is not text") from None
