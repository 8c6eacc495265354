"""The recording file format: round trips, tamper and truncation detection, the key file."""

from __future__ import annotations

import io
import os
import stat

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media_relay.recording.crypto import (
    HEADER_SIZE,
    TAG_SIZE,
    ChunkReader,
    ChunkWriter,
    CryptoError,
    load_key,
    sm4_available,
)
from media_relay.recording.types import RecordingError

KEY = bytes(range(32))
CIPHERS = ["aes-256-gcm", "none"] + (["sm4-gcm"] if sm4_available() else [])


def seal(data: bytes, cipher: str = "aes-256-gcm", *, identity: str = "d/c/20250101/000000_000000.gbr",
         chunk: int = 1024, pieces: int = 7, key: bytes = KEY) -> bytes:
    w = ChunkWriter(cipher, key, identity, chunk_size=chunk)
    out = bytearray()
    step = max(1, len(data) // pieces)
    for i in range(0, len(data), step):
        out += w.write(data[i : i + step])
    out += w.finish()
    assert w.stored_bytes == len(out)
    return bytes(out)


def unseal(stored: bytes, cipher: str = "aes-256-gcm", *, identity: str = "d/c/20250101/000000_000000.gbr",
           key: bytes = KEY, partial: bool = False) -> bytes:
    return ChunkReader(io.BytesIO(stored), cipher, key, identity, partial=partial).read_all()


@pytest.mark.parametrize("cipher", CIPHERS)
@pytest.mark.parametrize("size", [0, 1, 1023, 1024, 1025, 5000, 4096])
def test_round_trip(cipher: str, size: int) -> None:
    data = os.urandom(size)
    stored = seal(data, cipher)
    assert unseal(stored, cipher) == data
    if cipher == "none":
        assert stored == data
    else:
        # header, whole chunks of 1024 + tag, one final (shorter, possibly empty) chunk + tag
        assert len(stored) == HEADER_SIZE + (size // 1024 + 1) * TAG_SIZE + size


@settings(max_examples=40, deadline=None)
@given(data=st.binary(max_size=3000), chunk=st.integers(1, 700), pieces=st.integers(1, 20))
def test_round_trip_any_split(data: bytes, chunk: int, pieces: int) -> None:
    assert unseal(seal(data, chunk=chunk, pieces=pieces)) == data


def test_seek_to_a_chunk_reads_only_from_there() -> None:
    data = os.urandom(10 * 1024 + 17)
    r = ChunkReader(io.BytesIO(seal(data)), "aes-256-gcm", KEY, "d/c/20250101/000000_000000.gbr")
    assert b"".join(r.chunks(first=7)) == data[7 * 1024 :]


def test_sm4_gcm_offered_when_the_library_has_it() -> None:
    if not sm4_available():
        with pytest.raises(RecordingError):
            ChunkWriter("sm4-gcm", KEY, "x")
        return
    data = os.urandom(3000)
    stored = seal(data, "sm4-gcm")
    assert unseal(stored, "sm4-gcm") == data
    with pytest.raises(CryptoError):  # the cipher is part of the header, checked against the record
        unseal(stored, "aes-256-gcm")


@pytest.mark.parametrize("cipher", [c for c in CIPHERS if c != "none"])
def test_every_flipped_byte_is_detected(cipher: str) -> None:
    data = os.urandom(2500)
    stored = seal(data, cipher)
    for pos in range(0, len(stored), 37):
        bad = bytearray(stored)
        bad[pos] ^= 0x01
        with pytest.raises(CryptoError):
            unseal(bytes(bad), cipher)


def test_truncation_and_appending_are_detected() -> None:
    data = os.urandom(5000)
    stored = seal(data)
    whole = 1024 + TAG_SIZE
    for cut in (HEADER_SIZE, HEADER_SIZE + whole, HEADER_SIZE + 3 * whole, len(stored) - 1, HEADER_SIZE + 100):
        with pytest.raises(CryptoError):
            unseal(stored[:cut])
    with pytest.raises(CryptoError):
        unseal(stored + b"\x00")
    # a file still being written reads to its last complete chunk
    assert unseal(stored[: HEADER_SIZE + 3 * whole + 10], partial=True) == data[: 3 * 1024]


def test_swapped_chunks_and_other_files_are_detected() -> None:
    data = os.urandom(4000)
    stored = seal(data)
    whole = 1024 + TAG_SIZE
    c0 = stored[HEADER_SIZE : HEADER_SIZE + whole]
    c1 = stored[HEADER_SIZE + whole : HEADER_SIZE + 2 * whole]
    swapped = stored[:HEADER_SIZE] + c1 + c0 + stored[HEADER_SIZE + 2 * whole :]
    with pytest.raises(CryptoError):
        unseal(swapped)
    with pytest.raises(CryptoError):  # the same bytes presented as another segment
        unseal(stored, identity="d/c/20250101/000100_000000.gbr")
    with pytest.raises(CryptoError):  # the wrong key
        unseal(stored, key=bytes(32))
    # a chunk taken from another file of the same key at the same index
    other = seal(os.urandom(4000))
    mixed = stored[: HEADER_SIZE + whole] + other[HEADER_SIZE + whole : HEADER_SIZE + 2 * whole] + \
        stored[HEADER_SIZE + 2 * whole :]
    with pytest.raises(CryptoError):
        unseal(mixed)


def test_ciphertext_hides_program_stream_and_mp4_signatures() -> None:
    ps_like = (b"\x00\x00\x01\xba" + os.urandom(60) + b"\x00\x00\x00\x18ftypisom" + bytes(200)) * 200
    stored = seal(ps_like)
    assert b"\x00\x00\x01\xba" not in stored
    assert b"ftyp" not in stored
    assert unseal(stored) == ps_like


def test_key_file_created_0600_and_read_back(tmp_path) -> None:
    path = tmp_path / "keys" / "record.key"
    old = os.umask(0)
    try:
        key = load_key(path)
    finally:
        os.umask(old)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_key(path) == key
    assert load_key(path, create=False) == key


def test_bad_key_files(tmp_path) -> None:
    with pytest.raises(RecordingError) as exc:
        load_key(tmp_path / "none.key", create=False)
    assert exc.value.code == "key_file"
    bad = tmp_path / "bad.key"
    bad.write_text("secret-but-not-hex")
    with pytest.raises(RecordingError) as exc:
        load_key(bad)
    assert "secret" not in str(exc.value)
    short = tmp_path / "short.key"
    short.write_text("ab" * 16)
    with pytest.raises(RecordingError):
        load_key(short)
