"""Recorded segments at rest: chunked authenticated encryption (AES-256-GCM, or SM4-GCM), or plaintext.

File format (``cipher`` other than ``none``)::

    header   magic "GBREC\\x01" (6) | cipher id (1) | reserved 0 (1) | chunk size (4, big endian) | salt (16)
    chunk i  ciphertext of plaintext bytes [i * chunk_size, (i + 1) * chunk_size) | GCM tag (16)

Every chunk but the last holds exactly ``chunk_size`` plaintext bytes (the last one fewer, possibly none),
so chunk ``i`` begins at
``HEADER_SIZE + i * (chunk_size + 16)``: reading from any point costs one chunk, not the file.  The key
of a file is HKDF-SHA256(master key, salt, cipher name) (a fresh salt per file), the nonce of chunk ``i``
is ``i`` (96 bits, big endian), unique under that key.  The associated data of chunk ``i`` is the header,
the segment's identity (its path relative to the root), ``i`` and a final flag (1 on the last chunk only):
a chunk moved to another place or another file, a file cut short after any chunk, or bytes appended after
the final chunk all fail authentication.

``cipher`` ``none`` (``GBOPS_RECORD_ENCRYPT=false``) stores the program stream as it is.

The master key is 32 random bytes, kept hex-encoded in the key file (created 0600, its folder 0700, when
missing).  SM4 (GB/T 32907) uses a 128-bit key derived the same way, when the installed ``cryptography``
offers it (:func:`sm4_available`).

Sans-IO in spirit: writers hand back the bytes to store; readers take a binary file object.
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from media_relay.recording.types import RecordingError

__all__ = [
    "CIPHERS",
    "CHUNK_SIZE",
    "HEADER_SIZE",
    "MAGIC",
    "TAG_SIZE",
    "ChunkReader",
    "ChunkWriter",
    "CryptoError",
    "load_key",
    "sm4_available",
]

MAGIC = b"GBREC\x01"
HEADER_SIZE = 28
TAG_SIZE = 16
CHUNK_SIZE = 64 * 1024
MAX_CHUNK_SIZE = 16 << 20
KEY_SIZE = 32
CIPHERS = ("none", "aes-256-gcm", "sm4-gcm")
_CIPHER_IDS = {"aes-256-gcm": 1, "sm4-gcm": 2}
_CIPHER_NAMES = {v: k for k, v in _CIPHER_IDS.items()}


class CryptoError(RecordingError):
    """A segment that does not decrypt: wrong key, tampered, truncated, or not a recording."""

    def __init__(self, message: str) -> None:
        super().__init__("corrupt", message)


def sm4_available() -> bool:
    """Whether the installed ``cryptography`` (its OpenSSL) does SM4 in GCM mode."""
    try:
        enc = Cipher(algorithms.SM4(bytes(16)), modes.GCM(bytes(12))).encryptor()
        enc.update(b"x")
        enc.finalize()
        return True
    except Exception:  # missing algorithm or mode (UnsupportedAlgorithm, AttributeError)
        return False


def load_key(path: str | Path, *, create: bool = True) -> bytes:
    """The master key in ``path`` (64 hex digits); a fresh one is written 0600 when the file is missing
    and ``create`` (:func:`gbcore.secretbox.load_key`).  Raises :class:`RecordingError` (``key_file``) for an
    unreadable or malformed file (the message never contains key material)."""
    from gbcore.secretbox import SecretBoxError
    from gbcore.secretbox import load_key as load

    try:
        return load(path, create=create)
    except SecretBoxError as exc:
        raise RecordingError("key_file", f"录像密钥 / recording key: {exc}") from None


def _header(cipher_id: int, chunk_size: int, salt: bytes) -> bytes:
    return MAGIC + bytes((cipher_id, 0)) + chunk_size.to_bytes(4, "big") + salt


def _aad(header: bytes, identity: bytes, index: int, final: bool) -> bytes:
    return b"".join((header, struct.pack(">H", len(identity)), identity, struct.pack(">QB", index, final)))


def _nonce(index: int) -> bytes:
    return index.to_bytes(12, "big")


class _Aead:
    """One file's AEAD: encrypt/decrypt a chunk by index (AES-256-GCM via AESGCM; SM4-GCM via Cipher)."""

    def __init__(self, cipher: str, master: bytes, salt: bytes) -> None:
        if len(master) != KEY_SIZE:
            raise RecordingError("key_file", "录像密钥长度错误 / the recording key has the wrong length")
        self.cipher = cipher
        length = 32 if cipher == "aes-256-gcm" else 16
        key = HKDF(algorithm=hashes.SHA256(), length=length, salt=salt,
                   info=b"gbops-record/" + cipher.encode()).derive(master)
        if cipher == "aes-256-gcm":
            self._aes = AESGCM(key)
            self._key = b""
        elif cipher == "sm4-gcm":
            if not sm4_available():
                raise RecordingError("cipher_unavailable", "此系统的加密库不支持 SM4-GCM / SM4-GCM is not available "
                                     "in this system's cryptography library")
            self._aes = None
            self._key = key
        else:
            raise RecordingError("bad_cipher", f"未知的加密算法 / unknown cipher {cipher!r}")

    def seal(self, index: int, data: bytes, aad: bytes) -> bytes:
        if self._aes is not None:
            return self._aes.encrypt(_nonce(index), data, aad)
        enc = Cipher(algorithms.SM4(self._key), modes.GCM(_nonce(index))).encryptor()
        enc.authenticate_additional_data(aad)
        out = enc.update(data) + enc.finalize()
        return out + enc.tag

    def open(self, index: int, data: bytes, aad: bytes) -> bytes:
        if len(data) < TAG_SIZE:
            raise InvalidTag()
        if self._aes is not None:
            return self._aes.decrypt(_nonce(index), data, aad)
        dec = Cipher(algorithms.SM4(self._key), modes.GCM(_nonce(index), data[-TAG_SIZE:])).decryptor()
        dec.authenticate_additional_data(aad)
        return dec.update(data[:-TAG_SIZE]) + dec.finalize()


class ChunkWriter:
    """Plaintext in, bytes to store out (``write`` and ``finish`` return them).

    ``cipher`` ``none`` passes the plaintext through (buffered to whole chunks too, so that the stored
    file grows in the same steps).  ``finish`` must be called once, at the end; nothing after it.
    """

    def __init__(self, cipher: str, key: bytes | None, identity: str, *, chunk_size: int = CHUNK_SIZE) -> None:
        if cipher not in CIPHERS:
            raise RecordingError("bad_cipher", f"未知的加密算法 / unknown cipher {cipher!r}")
        if not 0 < chunk_size <= MAX_CHUNK_SIZE:
            raise ValueError("chunk size out of range")
        self.cipher = cipher
        self.chunk_size = chunk_size
        self.identity = identity.encode()
        self._buf = bytearray()
        self._index = 0
        self.plain_bytes = 0
        self.stored_bytes = 0
        self.finished = False
        self._aead: _Aead | None = None
        self._pending_header = b""
        if cipher != "none":
            if key is None:
                raise RecordingError("key_file", "加密录像需要密钥 / encrypted recording needs a key")
            salt = secrets.token_bytes(16)
            self.header = _header(_CIPHER_IDS[cipher], chunk_size, salt)
            self._aead = _Aead(cipher, key, salt)
            self._pending_header = self.header

    def write(self, data: bytes) -> bytes:
        if self.finished:
            raise ValueError("writer already finished")
        self.plain_bytes += len(data)
        self._buf += data
        if len(self._buf) < self.chunk_size:
            return b""
        out = [self._pending_header]
        self._pending_header = b""
        size = self.chunk_size
        while len(self._buf) >= size:
            out.append(self._seal(bytes(self._buf[:size]), False))
            del self._buf[:size]
        return self._count(b"".join(out))

    def finish(self) -> bytes:
        """The final chunk (possibly empty plaintext); the file is complete after these bytes."""
        if self.finished:
            raise ValueError("writer already finished")
        self.finished = True
        out = self._pending_header + self._seal(bytes(self._buf), True)
        self._pending_header = b""
        self._buf.clear()
        return self._count(out)

    def _seal(self, plain: bytes, final: bool) -> bytes:
        if self._aead is None:
            return plain
        index = self._index
        self._index += 1
        return self._aead.seal(index, plain, _aad(self.header, self.identity, index, final))

    def _count(self, data: bytes) -> bytes:
        self.stored_bytes += len(data)
        return data


class ChunkReader:
    """Reads a stored segment back as plaintext chunks, checking each one.

    ``partial``: the segment is still being written (or was cut short by a crash): stop quietly after
    the last complete chunk instead of raising for the missing final chunk.
    """

    def __init__(self, f: BinaryIO, cipher: str, key: bytes | None, identity: str, *, partial: bool = False) -> None:
        if cipher not in CIPHERS:
            raise CryptoError(f"未知的加密算法 / unknown cipher {cipher!r}")
        self.f = f
        self.cipher = cipher
        self.identity = identity.encode()
        self.partial = partial
        self.chunk_size = CHUNK_SIZE
        self._aead: _Aead | None = None
        if cipher == "none":
            return
        if key is None:
            raise RecordingError("key_file", "读取加密录像需要密钥 / reading an encrypted recording needs the key")
        header = f.read(HEADER_SIZE)
        if len(header) < HEADER_SIZE or header[:6] != MAGIC:
            if partial and len(header) < HEADER_SIZE and MAGIC.startswith(header[:6]):
                self.header = b""
                return  # nothing written yet
            raise CryptoError("不是加密录像文件或文件头已损坏 / not an encrypted recording, or its header is damaged")
        name = _CIPHER_NAMES.get(header[6])
        if name != cipher:
            raise CryptoError("录像文件的加密算法与记录不符 / the file's cipher does not match its record")
        size = int.from_bytes(header[8:12], "big")
        if not 0 < size <= MAX_CHUNK_SIZE:
            raise CryptoError("录像文件头已损坏 / the recording's header is damaged")
        self.header = header
        self.chunk_size = size
        self._aead = _Aead(cipher, key, header[12:28])

    def chunks(self, first: int = 0) -> Iterator[bytes]:
        """Plaintext chunks from chunk ``first`` on; raises :class:`CryptoError` on any damage."""
        if self.cipher == "none":
            self.f.seek(first * self.chunk_size)
            while True:
                data = self.f.read(self.chunk_size)
                if not data:
                    return
                yield data
        if self._aead is None:  # partial file with no header yet
            return
        stored = self.chunk_size + TAG_SIZE
        self.f.seek(HEADER_SIZE + first * stored)
        index = first
        while True:
            data = self.f.read(stored)
            if len(data) == stored:  # a whole chunk is never the final one (that one is shorter)
                yield self._open(index, data, False)
                index += 1
                continue
            if self.partial:
                if data:  # the final chunk if the file was finished meanwhile, else one being written
                    try:
                        yield self._open(index, data, True)
                    except CryptoError:
                        pass
                return
            if not data:
                raise CryptoError("录像文件被截断 / the recording is truncated")
            yield self._open(index, data, True)
            if self.f.read(1):
                raise CryptoError("录像文件末尾有多余数据 / the recording has data after its end")
            return

    def _open(self, index: int, data: bytes, final: bool) -> bytes:
        assert self._aead is not None
        try:
            return self._aead.open(index, data, _aad(self.header, self.identity, index, final))
        except InvalidTag:
            raise CryptoError(f"录像数据校验失败（块 {index}）：已损坏、被篡改或密钥错误 / the recording fails "
                              f"authentication at chunk {index}: damaged, tampered with, or the wrong key") from None

    def read_all(self) -> bytes:
        return b"".join(self.chunks())
