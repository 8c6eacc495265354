"""Issue 11: the session tag names the camera (device id + channel id, version 2); version 1 tags, written
before, are still read and verified."""

from __future__ import annotations

import struct
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from watermark.tag import (
    SESSION_TAG_UUID,
    SessionTag,
    TagError,
    encode_payload,
    key_id_of,
    parse_payload,
    verify,
)

KEY = Ed25519PrivateKey.generate()
TAG = SessionTag(session_id="dl-0123456789abcdef", user_id=7, channel_id="34020000001310000001",
                 start_ms=1_790_000_000_000, device_id="34020000001180000002", version=2)


def test_version_2_carries_and_signs_the_device() -> None:
    payload = encode_payload(TAG, KEY)
    assert payload[16] == 2
    assert len(payload) == 109 + len(TAG.session_id) + len(TAG.channel_id) + len(TAG.device_id)
    tag, signed = parse_payload(payload)
    assert (tag.device_id, tag.channel_id, tag.version) == (TAG.device_id, TAG.channel_id, 2)
    assert tag.channel_key == "34020000001180000002/34020000001310000001"
    assert verify(tag, signed, KEY.public_key())
    # another device in the signed bytes: the signature no longer holds
    forged = payload.replace(b"34020000001180000002", b"34020000001180000001")
    ftag, fsigned = parse_payload(forged)
    assert ftag.device_id == "34020000001180000001" and not verify(ftag, fsigned, KEY.public_key())


def _v1_payload(tag: SessionTag, key: Ed25519PrivateKey) -> bytes:
    """A version 1 payload exactly as written before issue 11 (no device field)."""
    body = (SESSION_TAG_UUID + struct.pack(">BB8sQQ", 1, 1, key_id_of(key), tag.start_ms, tag.user_id)
            + bytes([len(tag.session_id)]) + tag.session_id.encode()
            + bytes([len(tag.channel_id)]) + tag.channel_id.encode())
    return body + key.sign(body)


def test_version_1_tags_still_parse_and_verify() -> None:
    payload = _v1_payload(TAG, KEY)
    tag, signed = parse_payload(payload)
    assert (tag.version, tag.device_id, tag.channel_id, tag.session_id) == (1, "", TAG.channel_id, TAG.session_id)
    assert tag.channel_key == TAG.channel_id
    assert verify(tag, signed, KEY.public_key())
    # and we can still write one (same bytes), but never with a device
    assert encode_payload(replace(TAG, version=1, device_id=""), KEY)[:-64] == payload[:-64]
    with pytest.raises(TagError):
        encode_payload(replace(TAG, version=1), KEY)
    with pytest.raises(TagError):
        parse_payload(payload[:16] + bytes([3]) + payload[17:])
