"""RFC 8785 canonical JSON (two independent implementations agree, and agree with ECMAScript), and
C2SP signed notes / checkpoints."""

from __future__ import annotations

import base64
import json
import math
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit_log import note as notes
from audit_log.canonical import CanonicalJSONError, canonical_json, loads_canonical
from audit_log.note import NoteError, NoteSigner, NoteVerifier, load_or_create_signer
from tests.conftest import need_tool

sys.path.insert(0, str(Path(notes.__file__).parent))
import verify as standalone  # noqa: E402


# ------------------------------------------------------------------------------------------- RFC 8785
def test_rfc8785_examples() -> None:
    # RFC 8785 section 3.2.2 / appendix B style cases
    assert canonical_json({"b": 1, "a": [True, False, None]}) == b'{"a":[true,false,null],"b":1}'
    assert canonical_json("€$\u000f\nA'B\"\\\\\"/") == '"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"'.encode()
    assert canonical_json([1e30, 4.5, 0.002, 1e-27, -0.0, 333333333.3333333]) == (
        b"[1e+30,4.5,0.002,1e-27,0,333333333.3333333]"
    )
    # member order by UTF-16 code units: U+1F600 (D83D DE00) sorts before U+FF61
    assert canonical_json({"\uff61": 1, "\U0001f600": 2, "\u00e9": 3, "\r": 4, "1": 5}) == (
        '{"\\r":4,"1":5,"é":3,"😀":2,"｡":1}'.encode()
    )
    for hexbits, text in [
        ("0000000000000001", "5e-324"), ("7fefffffffffffff", "1.7976931348623157e+308"),
        ("44b52d02c7e14af6", "1e+23"), ("444b1ae4d6e2ef50", "1e+21"), ("444b1ae4d6e2ef4f", "999999999999999900000"),
        ("3eb0c6f7a0b5ed8d", "0.000001"), ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
        ("41b3de4355555553", "333333333.3333332"), ("c3e0000000000000", "-9223372036854776000"),
    ]:
        value = struct.unpack(">d", bytes.fromhex(hexbits))[0]
        assert canonical_json(value).decode() == text
        assert standalone.jcs(value) == text


@pytest.mark.parametrize("bad", [math.nan, math.inf, 2**53 + 1, 10**400, "\ud800", {1: 2}, {"a": {"\udc00": 1}}, b"x", {1.5}])
def test_values_without_a_canonical_form(bad: object) -> None:
    with pytest.raises(CanonicalJSONError):
        canonical_json(bad)


@pytest.mark.parametrize(
    "text",
    [b'{"b":1,"a":2}', b'{"a": 1}', b'{"a":1.0}', b'{"a":1e2}', b'{"a":"\\u0041"}', b'{"a":1,"a":1}',
     b'{"a":-0}', b'{"a":NaN}', b'\xff', b'{"a":"\\/"}', b"[1,]", b'{"a":9007199254740993}',
     b'{"a":1152921504606846976}', b'{"a":31646496655669032}'],
)
def test_not_canonical_is_refused(text: bytes) -> None:
    with pytest.raises(CanonicalJSONError):
        loads_canonical(text)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300)
@given(JSON)
def test_round_trip_and_both_implementations_agree(value: object) -> None:
    try:
        data = canonical_json(value)
    except CanonicalJSONError:  # lone surrogates from st.text()
        with pytest.raises(ValueError):
            standalone.jcs(value).encode("utf-8")
        return
    assert standalone.jcs(value).encode("utf-8") == data
    assert canonical_json(loads_canonical(data)) == data
    assert standalone.jcs(json.loads(data, parse_int=standalone._numbers.int)).encode() == data


def test_numbers_agree_with_ecmascript() -> None:
    node = need_tool("node")
    rng = __import__("random").Random(7)
    values = [struct.unpack(">d", rng.getrandbits(64).to_bytes(8, "big"))[0] for _ in range(3000)]
    values = [v for v in values if math.isfinite(v)] + [rng.uniform(-1e6, 1e6) for _ in range(1000)]
    script = "const a=JSON.parse(require('fs').readFileSync(0));console.log(JSON.stringify(a.map(String)))"
    hexes = [struct.pack(">d", v).hex() for v in values]
    script = (
        "const h=JSON.parse(require('fs').readFileSync(0));"
        "console.log(JSON.stringify(h.map(x=>String(Buffer.from(x,'hex').readDoubleBE(0)))))"
    )
    out = subprocess.run([node, "-e", script], input=json.dumps(hexes).encode(), capture_output=True, check=True)
    for value, js in zip(values, json.loads(out.stdout), strict=True):
        expect = "0" if js == "0" or value == 0 else js
        assert canonical_json(value).decode() == expect, value


# ------------------------------------------------------------------------------------------- signed notes
def test_known_signed_note() -> None:
    """The example of the Go note package (golang.org/x/mod/sumdb/note)."""
    vkey = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
    text = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
    note = text + "\n\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
    verifier = NoteVerifier.from_vkey(vkey)
    assert verifier.vkey == vkey
    assert notes.open_note(note, [verifier]) == text
    assert standalone.parse_vkeys(vkey)[0].key_id == verifier.key_id
    with pytest.raises(NoteError, match="bad signature"):
        notes.open_note(note.replace("cryptography", "Cryptography"), [verifier])


def test_sign_open_and_checkpoint() -> None:
    signer = NoteSigner.generate("example.com/log")
    other = NoteSigner.generate("example.com/log")
    body = notes.format_checkpoint("example.com/log", 42, bytes(range(32)))
    assert body == f"example.com/log\n42\n{base64.b64encode(bytes(range(32))).decode()}\n"
    signed = signer.sign(body)
    assert signed.startswith(body + "\n\u2014 example.com/log ")
    assert notes.open_note(signed, [signer.verifier]) == body
    cp = notes.parse_checkpoint(body)
    assert (cp.origin, cp.size, cp.root) == ("example.com/log", 42, bytes(range(32)))
    with pytest.raises(NoteError, match="unknown key"):
        notes.open_note(signed, [other.verifier])
    # a second signature by an unknown key is ignored; a bad one by a known key is not
    cosigned = signed + other.sign(body).split("\n\n", 1)[1]
    assert notes.open_note(cosigned, [signer.verifier]) == body
    sig_line = signed.rsplit("\n", 2)[1]
    raw = base64.b64decode(sig_line.rsplit(" ", 1)[1])
    tampered = signed.replace(sig_line.rsplit(" ", 1)[1], base64.b64encode(raw[:-1] + bytes([raw[-1] ^ 1])).decode())
    with pytest.raises(NoteError, match="bad signature"):
        notes.open_note(tampered, [signer.verifier])
    assert NoteSigner.from_skey(signer.skey).vkey == signer.vkey
    assert "PRIVATE" not in repr(signer) and signer.skey.split("+", 4)[-1] not in repr(signer)


@pytest.mark.parametrize(
    "body", ["o\n01\nAAAA\n", "o\n1\n" + "A" * 44 + "\n\n", "o\n-1\nx\n", "o\n1\n", "\n1\n" + "A" * 43 + "=\n"]
)
def test_bad_checkpoints(body: str) -> None:
    with pytest.raises(NoteError):
        notes.parse_checkpoint(body)


def test_key_file_is_private_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "audit" / "signing.key"
    with pytest.raises(NoteError, match="does not exist"):
        load_or_create_signer(path, "gbops/x/audit", create=False)
    signer = load_or_create_signer(path, "gbops/x/audit")
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_signer(path, "gbops/x/audit").vkey == signer.vkey
    with pytest.raises(NoteError, match="named"):
        load_or_create_signer(path, "another/origin")
    os.chmod(path, 0o644)
    with pytest.raises(NoteError, match="0600|readable"):
        load_or_create_signer(path, "gbops/x/audit")
