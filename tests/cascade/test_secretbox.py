"""gbcore.secretbox: sealed small secrets under a 0600 key file."""

from __future__ import annotations

import stat

import pytest

from gbcore.secretbox import SecretBox, SecretBoxError, load_key


def test_key_file_created_0600_and_reused(tmp_path) -> None:
    path = tmp_path / "keys" / "cascade.key"
    key = load_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_key(path) == key and len(key) == 32
    with pytest.raises(SecretBoxError) as err:
        load_key(tmp_path / "missing.key", create=False)
    assert err.value.code == "key_file"


def test_malformed_key_file_refused_without_its_content(tmp_path) -> None:
    path = tmp_path / "bad.key"
    path.write_text("not-a-key-secretvalue\n")
    with pytest.raises(SecretBoxError) as err:
        load_key(path)
    assert "secretvalue" not in str(err.value)


def test_seal_open_round_trip_and_binding(tmp_path) -> None:
    box = SecretBox.from_file(tmp_path / "k")
    sealed = box.seal("Upper#Pass2026", b"row:1")
    assert b"Upper#Pass2026" not in sealed
    assert box.seal("Upper#Pass2026", b"row:1") != sealed  # a fresh nonce every time
    assert box.open_text(sealed, b"row:1") == "Upper#Pass2026"
    with pytest.raises(SecretBoxError):
        box.open(sealed, b"row:2")  # copied to another row
    with pytest.raises(SecretBoxError):
        SecretBox.from_file(tmp_path / "other").open(sealed, b"row:1")  # another key
    damaged = sealed[:-1] + bytes((sealed[-1] ^ 1,))
    with pytest.raises(SecretBoxError):
        box.open(damaged, b"row:1")
    with pytest.raises(SecretBoxError):
        box.open(b"\x01short", b"row:1")
    assert "key" in repr(box) and repr(box) == "SecretBox(<key hidden>)"
