"""Forensic session tag: a signed SEI message in every keyframe of a viewer's stream.

Each keyframe of an output stream or exported file carries one SEI NAL unit with a
``user_data_unregistered`` message (``payloadType`` 5): H.264 NAL type 6, H.265 prefix SEI NAL
type 39.  Inserting it changes no coded picture (no re-encode), and because it travels inside the
access unit it survives remuxing (FLV <-> MP4 <-> raw Annex B).

Byte layout of the SEI payload (all integers big-endian)::

    offset  size  field
    0       16    uuid_iso_iec_11578 = SESSION_TAG_UUID (6f1e2a9c-4b57-4d0b-9a8e-53e55a10c7a6)
    16      1     version = 3 (1 and 2 are still read, see below)
    17      1     algorithm = 1 (Ed25519)
    18      8     key id: first 8 bytes of SHA-256 over the raw 32-byte Ed25519 public key
    26      8     start time, Unix epoch milliseconds (unsigned)
    34      8     user id (unsigned)
    42      1     S = length of the session id
    43      S     session id, UTF-8
    43+S    1     C = length of the channel id
    44+S    C     channel id, UTF-8
    44+S+C  1     D = length of the device id (the channel's device: a channel id is unique only within
                  its device, so the pair names the camera)
    45+S+C  D     device id, UTF-8 (empty when the source is not a platform channel)
    45+S+C+D 64   Ed25519 signature over bytes [0, 45+S+C+D) of this payload (UUID included)

Version 3 (issue 13, history video) adds what the viewer was given, signed with the rest, between the
device id and the signature::

    45+S+C+D 1    kind: 1 live, 2 playback, 3 download
    46+S+C+D 8    window start, Unix epoch seconds (unsigned; 0 when the session has no window)
    54+S+C+D 8    window end, Unix epoch seconds (unsigned; 0 when the session has no window)
    62+S+C+D 64   Ed25519 signature over bytes [0, 62+S+C+D) of this payload

So a version 3 payload is ``126 + S + C + D`` bytes, a version 2 payload (issue 11, no kind, no
window) ``109 + S + C + D``.  Version 1 tags (written before issue 11) have no device field either (the
signature follows the channel id, payload ``108 + S + C`` bytes).  Versions 1 and 2 are still read and
verified, with ``device_id`` '' (version 1), ``kind`` '' and ``window`` None.  The SEI NAL unit around
it is::

    H.264:  06 | 05 | payloadSize | payload | 80            (NAL header, payloadType, ..., RBSP stop bit)
    H.265:  4E 01 | 05 | payloadSize | payload | 80        (prefix SEI, nuh_layer_id 0, TemporalId 0)

``payloadSize`` is coded as in H.264 7.3.2.3.1: ``n // 255`` bytes of ``FF`` then ``n % 255``.
Emulation prevention bytes (``00 00 0x`` -> ``00 00 03 0x`` for x <= 3) are inserted over the
whole NAL unit after its header, so an auditor first removes every ``03`` that follows ``00 00``.

The platform key is an Ed25519 private key kept in ``<data_dir>/watermark-tag.key`` (a cluster's nodes:
``GBOPS_SECRETS_DIR/watermark-tag.key``, ``Settings.watermark_tag_key_path``) (PKCS#8 PEM, mode 0600, never
logged); :func:`public_key_text` gives the public half that auditors pin.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import os
import struct
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from media_relay.nal import (
    H264_SEI,
    H265_SEI_PREFIX,
    H265_SEI_SUFFIX,
    START_CODE,
    NalError,
    insert_before_first_slice,
    nal_type,
    sei_payloads,
    split_annexb,
    unescape_rbsp,
    user_data_sei,
)
from media_relay.types import AccessUnit

__all__ = [
    "SESSION_TAG_UUID",
    "KEY_FILE",
    "KINDS",
    "TagError",
    "SessionTag",
    "key_id_of",
    "encode_payload",
    "parse_payload",
    "make_tag_nal",
    "add_tag",
    "find_tags",
    "load_or_create_key",
    "load_private_key",
    "load_public_key",
    "public_key_text",
    "window_seconds",
]

SESSION_TAG_UUID = bytes.fromhex("6f1e2a9c4b574d0b9a8e53e55a10c7a6")
VERSION = 3
VERSIONS = (1, 2, 3)  # read; version 1 has no device id, versions 1 and 2 no kind and no window
#: what the viewer was given (version 3): the code in the payload per kind
KINDS = {"live": 1, "playback": 2, "download": 3}
_KIND_NAMES = {v: k for k, v in KINDS.items()}
_V3 = struct.Struct(">BQQ")  # kind, window start s, window end s
ALG_ED25519 = 1
KEY_FILE = "watermark-tag.key"
SIG_LEN = 64
KEY_ID_LEN = 8
_FIXED = struct.Struct(">BB8sQQ")  # version, algorithm, key id, start ms, user id
_HEAD = len(SESSION_TAG_UUID) + _FIXED.size  # 42
_SEI_USER_DATA_UNREGISTERED = 5
_MAX_U64 = (1 << 64) - 1


class TagError(ValueError):
    """A malformed session tag payload, or a tag that cannot be encoded."""


@dataclass(frozen=True, slots=True)
class SessionTag:
    session_id: str
    user_id: int
    channel_id: str
    start_ms: int  # Unix epoch milliseconds
    key_id: bytes = b""  # set by make_tag_nal from the signing key
    version: int = VERSION
    signature: bytes = b""  # set when parsed from a stream
    device_id: str = ""  # the channel's device (version 2); '' in version 1 tags and for non-channel sources
    kind: str = "live"  # live | playback | download (version 3); '' in version 1 and 2 tags
    window: tuple[int, int] | None = None  # (start, end) Unix seconds of the history shown (version 3)

    @property
    def signed_fields(self) -> tuple:
        return (self.version, self.key_id, self.start_ms, self.user_id, self.session_id, self.channel_id,
                self.device_id, self.kind, self.window)

    @property
    def channel_key(self) -> str:
        """``device_id/channel_id`` (the audit target of the session), or the bare channel id without a device."""
        return f"{self.device_id}/{self.channel_id}" if self.device_id else self.channel_id


def window_seconds(window: tuple[Any, Any] | None) -> tuple[int, int] | None:
    """``(start, end)`` as whole Unix seconds (start rounded down, end up) from aware datetimes or numbers;
    None stays None.  Raises TagError for a naive datetime or an end before the start."""
    if window is None:
        return None
    out = []
    for i, value in enumerate(window):
        if isinstance(value, datetime):
            if value.tzinfo is None:
                raise TagError("window times must carry a time zone")
            value = value.timestamp()
        value = float(value)
        out.append(math.floor(value) if i == 0 else math.ceil(value))
    start, end = out
    if not 0 <= start <= end <= _MAX_U64:
        raise TagError("window end before its start, or out of range")
    return start, end


def key_id_of(key: Ed25519PublicKey | Ed25519PrivateKey) -> bytes:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).digest()[:KEY_ID_LEN]


def _short_str(value: str, what: str) -> bytes:
    data = value.encode("utf-8")
    if len(data) > 255:
        raise TagError(f"{what} longer than 255 bytes")
    return bytes([len(data)]) + data


def _signed_part(tag: SessionTag) -> bytes:
    if not 0 <= tag.user_id <= _MAX_U64 or not 0 <= tag.start_ms <= _MAX_U64:
        raise TagError("user id and start time must fit an unsigned 64-bit integer")
    if len(tag.key_id) != KEY_ID_LEN:
        raise TagError("key id must be 8 bytes")
    if tag.version not in VERSIONS:
        raise TagError(f"unknown session tag version {tag.version}")
    if tag.version == 1 and tag.device_id:
        raise TagError("a version 1 session tag cannot carry a device id")
    if tag.version < 3 and (tag.kind not in ("", "live") or tag.window is not None):
        raise TagError(f"a version {tag.version} session tag cannot carry a kind or a window")
    body = (SESSION_TAG_UUID + _FIXED.pack(tag.version, ALG_ED25519, tag.key_id, tag.start_ms, tag.user_id)
            + _short_str(tag.session_id, "session id") + _short_str(tag.channel_id, "channel id"))
    if tag.version >= 2:
        body += _short_str(tag.device_id, "device id")
    if tag.version >= 3:
        if tag.kind not in KINDS:
            raise TagError(f"unknown session kind {tag.kind!r}")
        start, end = tag.window if tag.window is not None else (0, 0)
        if not 0 <= start <= end <= _MAX_U64:
            raise TagError("window end before its start, or out of range")
        body += _V3.pack(KINDS[tag.kind], start, end)
    return body


def encode_payload(tag: SessionTag, key: Ed25519PrivateKey) -> bytes:
    """The ``user_data_unregistered`` payload (UUID first) of ``tag`` signed with ``key``."""
    body = _signed_part(replace(tag, key_id=key_id_of(key)))
    return body + key.sign(body)


def parse_payload(payload: bytes) -> tuple[SessionTag, bytes]:
    """``(tag, signed_bytes)`` from a payload starting with :data:`SESSION_TAG_UUID`; raises TagError."""
    if payload[:16] != SESSION_TAG_UUID:
        raise TagError("not a session tag")
    if len(payload) < _HEAD + 2 + SIG_LEN:
        raise TagError("session tag too short")
    version, alg, key_id, start_ms, user_id = _FIXED.unpack_from(payload, 16)
    if version not in VERSIONS or alg != ALG_ED25519:
        raise TagError(f"unsupported session tag version {version} / algorithm {alg}")
    pos = _HEAD
    fields = []
    for _ in range(2 if version == 1 else 3):
        if pos >= len(payload):
            raise TagError("session tag truncated")
        n = payload[pos]
        end = pos + 1 + n
        if end > len(payload):
            raise TagError("session tag truncated")
        try:
            fields.append(payload[pos + 1 : end].decode("utf-8"))
        except UnicodeDecodeError:
            raise TagError("session tag string is not UTF-8") from None
        pos = end
    kind, window = "", None
    if version >= 3:
        if pos + _V3.size > len(payload):
            raise TagError("session tag truncated")
        code, w_start, w_end = _V3.unpack_from(payload, pos)
        pos += _V3.size
        # a kind this reader does not know is still shown (and the signature still checked)
        kind = _KIND_NAMES.get(code, f"#{code}")
        window = None if (w_start, w_end) == (0, 0) else (w_start, w_end)
    signature = payload[pos : pos + SIG_LEN]
    if len(signature) != SIG_LEN or len(payload) != pos + SIG_LEN:
        raise TagError("session tag signature truncated or trailing bytes")
    tag = SessionTag(session_id=fields[0], user_id=user_id, channel_id=fields[1], start_ms=start_ms,
                     key_id=key_id, version=version, signature=signature,
                     device_id=fields[2] if version >= 2 else "", kind=kind, window=window)
    return tag, payload[:pos]


def make_tag_nal(tag: SessionTag, codec: str, key: Ed25519PrivateKey) -> bytes:
    """A complete SEI NAL unit (header included, emulation prevention applied, no start code)."""
    if codec not in ("h264", "h265"):
        raise TagError(f"unknown video codec {codec!r}")
    return user_data_sei(codec, encode_payload(tag, key))


def add_tag(au: AccessUnit, tag_nal: bytes) -> AccessUnit:
    """``au`` with ``tag_nal`` placed before its first slice when it is a video keyframe, else ``au``."""
    if au.kind != "video" or not au.keyframe or tag_nal in au.data:
        return au
    return replace(au, data=insert_before_first_slice(au.data, START_CODE + tag_nal, au.codec))


def tag_payloads(nal: bytes, codec: str) -> list[bytes]:
    """The session tag payloads (UUID first) carried by one NAL unit."""
    try:
        t = nal_type(codec, nal)
    except NalError:
        return []
    if codec == "h264":
        if t != H264_SEI:
            return []
        body = nal[1:]
    else:
        if t not in (H265_SEI_PREFIX, H265_SEI_SUFFIX):
            return []
        body = nal[2:]
    if SESSION_TAG_UUID[:2] not in body:  # cheap reject before unescaping
        return []
    return [p for ptype, p in sei_payloads(unescape_rbsp(body))
            if ptype == _SEI_USER_DATA_UNREGISTERED and p[:16] == SESSION_TAG_UUID]


def verify(tag: SessionTag, signed: bytes, key: Ed25519PublicKey) -> bool:
    if tag.key_id != key_id_of(key):
        return False
    try:
        key.verify(tag.signature, signed)
    except InvalidSignature:
        return False
    return True


def find_tags(annexb: bytes, codec: str,
              key: Ed25519PublicKey | Ed25519PrivateKey | None = None) -> list[tuple[SessionTag, bool | None]]:
    """Every well-formed session tag in an Annex B byte stream, in stream order, with its signature
    check against ``key`` (None when no key is given).  Never raises on malformed input data."""
    if codec not in ("h264", "h265"):
        raise TagError(f"unknown video codec {codec!r}")
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    out: list[tuple[SessionTag, bool | None]] = []
    for nal in split_annexb(annexb):
        for payload in tag_payloads(nal, codec):
            try:
                tag, signed = parse_payload(payload)
            except TagError:
                continue
            out.append((tag, None if pub is None else verify(tag, signed, pub)))
    return out


# ------------------------------------------------------------------------------------------- keys
def load_private_key(path: Path | str) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise TagError(f"{path} does not hold an Ed25519 private key")
    return key


def load_or_create_key(data_dir: Path | str, *, path: Path | str | None = None) -> Ed25519PrivateKey:
    """The platform's tag signing key, created (mode 0600) if absent: from ``path`` when given (the
    assembly passes ``Settings.watermark_tag_key_path``: a cluster's shared ``GBOPS_SECRETS_DIR``), else
    from ``<data_dir>/watermark-tag.key``."""
    path = Path(path) if path is not None else Path(data_dir) / KEY_FILE
    if path.exists():
        return load_private_key(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # created by a concurrent process meanwhile
        return load_private_key(path)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return key


def public_key_text(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The public key as PEM (SubjectPublicKeyInfo), for auditors to pin; also readable by openssl."""
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def load_public_key(data: bytes | str) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM, from a PEM private key, or from 32 raw bytes in hex or base64."""
    raw = data.encode() if isinstance(data, str) else bytes(data)
    text = raw.strip()
    if b"-----BEGIN" in text:
        if b"PRIVATE KEY" in text:
            priv = serialization.load_pem_private_key(text, password=None)
            if isinstance(priv, Ed25519PrivateKey):
                return priv.public_key()
            raise TagError("not an Ed25519 key")
        pub = serialization.load_pem_public_key(text)
        if isinstance(pub, Ed25519PublicKey):
            return pub
        raise TagError("not an Ed25519 key")
    for decode in (bytes.fromhex, base64.b64decode):
        try:
            b = decode(text.decode("ascii"))
        except (ValueError, binascii.Error, UnicodeDecodeError):
            continue
        if len(b) == 32:
            return Ed25519PublicKey.from_public_bytes(b)
    raise TagError("unrecognised public key format (PEM, or 32 bytes in hex or base64)")
