#!/usr/bin/env python3
"""Check a gbops audit log export offline:  python verify.py BUNDLE [--key verifier.key] [--pin FILE]...

This file is meant to be handed to an auditor on its own: it needs Python 3.11+ and the
``cryptography`` package, and imports nothing else from gbops (the writer and this checker share
no code).  BUNDLE is the directory or .zip written by ``gbops audit export``:

* ``entries.jsonl``: one entry per line, RFC 8785 canonical JSON, exactly the bytes that were hashed;
* ``checkpoint``: a C2SP signed note (tlog-checkpoint) for the tree that ends with the last entry;
* ``verifier.key``: the log's Ed25519 verifier key (C2SP vkey); pass your own pinned copy with
  ``--key`` (otherwise the bundle vouches for itself, which proves nothing about who signed);
* ``consistency.json``: only when the export starts after entry 0 (see below);
* ``checkpoints/``: earlier checkpoints the log signed, used to narrow down rewritten entries.

Everything is recomputed: each entry's leaf hash SHA-256(0x00 || line), the ``prev`` chain
(64 zeros before entry 0), contiguous ``seq``, the RFC 9162 Merkle root, the checkpoint signature.
``--pin`` adds checkpoints you saved earlier (e.g. from ``GET /api/audit/checkpoint``); a log
rewritten with recomputed hashes and re-signed still fails against them.

Exit status: 0 valid; 1 invalid (the message names the first entry that breaks); 2 the bundle
cannot be checked (unreadable, missing files, a pin outside the bundle).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import gc
import hashlib
import json
import operator
import os
import re
import sys
import zipfile
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import chain, islice, repeat
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = ["BundleError", "Invalid", "Report", "main", "verify_bundle"]

ZERO = "0" * 64
EMPTY_ROOT = hashlib.sha256(b"").digest()
FIELDS = {"seq", "time", "actor", "action", "target", "client_ip", "detail", "prev"}
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
ACTION_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
HEX64_RE = re.compile(r"^[0-9a-f]{64}$")
CHUNK = 1 << 14  # a bundle of a few CHUNKs of entries is split over several processes (jobs > 1)
BLOCK = 1 << 20  # bytes of lines per unit of work of the fast pass
# Characters at or above U+E000: there, ordering member names by UTF-16 code units (RFC 8785)
# differs from ordering by code points (Python's sort_keys), so such lines get the full check.
_HIGH_CHARS = re.compile(rb"[\xee-\xf4]")


class Invalid(Exception):
    """The bundle does not verify.  ``seq`` is the first entry that breaks, when there is one."""

    def __init__(self, message: str, seq: int | None = None) -> None:
        super().__init__(message)
        self.seq = seq


class BundleError(Exception):
    """The bundle cannot be checked at all."""


# ------------------------------------------------------------------------------------ RFC 8785
def _jcs_string(s: str) -> str:
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif o < 0x20:
            out.append({8: "\\b", 9: "\\t", 10: "\\n", 12: "\\f", 13: "\\r"}.get(o, f"\\u{o:04x}"))
        elif 0xD800 <= o <= 0xDFFF:
            raise ValueError("lone surrogate")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _jcs_number(x: float) -> str:
    """ECMAScript Number::toString of a finite double."""
    if x != x or x in (float("inf"), float("-inf")):
        raise ValueError("NaN/Infinity")
    if x == 0:
        return "0"
    mantissa, _, exp_text = repr(abs(x)).partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = (whole + frac).lstrip("0")
    exp10 = int(exp_text or 0) - len(frac)  # value = int(digits) * 10**exp10
    trimmed = digits.rstrip("0")
    exp10 += len(digits) - len(trimmed)
    k = len(trimmed)
    n = k + exp10  # value = 0.<trimmed> * 10**n
    if k <= n <= 21:
        s = trimmed + "0" * (n - k)
    elif 0 < n <= 21:
        s = trimmed[:n] + "." + trimmed[n:]
    elif -6 < n <= 0:
        s = "0." + "0" * -n + trimmed
    else:
        mant = trimmed if k == 1 else trimmed[0] + "." + trimmed[1:]
        s = f"{mant}e{'+' if n - 1 >= 0 else '-'}{abs(n - 1)}"
    return ("-" if x < 0 else "") + s


def jcs(value: Any) -> str:
    """RFC 8785 serialisation (independent of gbops' own implementation)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return _jcs_string(value)
    if isinstance(value, int):
        if abs(value) <= 2**53:
            return str(value)
        if abs(value) >= 2**1024 or int(float(value)) != value:
            raise ValueError("integer not exactly representable as a double")
        return _jcs_number(float(value))
    if isinstance(value, float):
        return _jcs_number(value)
    if isinstance(value, list):
        return "[" + ",".join(jcs(v) for v in value) + "]"
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: k.encode("utf-16-be", "surrogatepass"))
        return "{" + ",".join(_jcs_string(k) + ":" + jcs(value[k]) for k in keys) + "}"
    raise ValueError(f"not JSON: {type(value).__name__}")


def _bad_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class _Numbers:
    """Decoder hooks that notice numbers Python's own serialiser would not write as RFC 8785 does."""

    odd = False

    def float(self, text: str) -> float:
        self.odd = True
        return float(text)

    def int(self, text: str) -> int | float:
        value = int(text)
        if -(2**53) <= value <= 2**53:
            return value
        self.odd = True
        return float(text)  # a JSON number is a double


_numbers = _Numbers()
# Duplicate member names need no hook: the re-serialised line would lack one and differ.
_raw_decode = json.JSONDecoder(
    parse_float=_numbers.float, parse_int=_numbers.int, parse_constant=_bad_constant
).raw_decode
_encode = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":"), check_circular=False).encode
try:  # the json module's C serialiser, made once (JSONEncoder.encode makes one per call)
    from json.encoder import c_make_encoder, encode_basestring

    if c_make_encoder is not None:
        _c_encoder = c_make_encoder(None, _bad_constant, encode_basestring, None, ":", ",", True, False, True)

        def _encode(value: Any) -> str:  # noqa: F811 - the faster equivalent
            return "".join(_c_encoder(value, 0))
except ImportError:  # pragma: no cover
    pass
_ACTOR = {"type", "id", "name"}
_TARGET = {"type", "id"}


def parse_entry(line: bytes) -> dict[str, Any]:
    """The entry on ``line``; ValueError unless it is canonical JSON of the expected shape."""
    _numbers.odd = False
    text = line.decode("utf-8")
    value = _raw_decode(text)[0]  # trailing bytes fail the comparison below
    if _numbers.odd or (not line.isascii() and _HIGH_CHARS.search(line)):
        canonical = jcs(value)
    else:  # the C serialiser writes exactly RFC 8785 for strings, integers and ASCII-ordered names
        canonical = _encode(value)
    if canonical != text:
        raise ValueError("not RFC 8785 canonical JSON")
    if type(value) is not dict or value.keys() != FIELDS:
        raise ValueError(f"an entry has exactly the members {sorted(FIELDS)}")
    seq, time, prev, actor, target = value["seq"], value["time"], value["prev"], value["actor"], value["target"]
    if type(seq) is not int or seq < 0:
        raise ValueError("seq is not a non-negative integer")
    if type(time) is not str or not TIME_RE.fullmatch(time):
        raise ValueError("time is not RFC 3339 UTC with milliseconds")
    if type(actor) is not dict or actor.keys() != _ACTOR or type(actor["type"]) is not str:
        raise ValueError("actor is not {type, id, name}")
    if type(target) is not dict or target.keys() != _TARGET or type(target["type"]) is not str:
        raise ValueError("target is not {type, id}")
    if type(value["action"]) is not str or not ACTION_RE.fullmatch(value["action"]):
        raise ValueError("action is not a dotted name")
    if value["client_ip"] is not None and type(value["client_ip"]) is not str:
        raise ValueError("client_ip is not a string")
    if type(value["detail"]) is not dict:
        raise ValueError("detail is not an object")
    if type(prev) is not str or not HEX64_RE.fullmatch(prev):
        raise ValueError("prev is not 64 lower-case hex digits")
    return value


# ------------------------------------------------------------------------------------ fast pass
# A block of lines of the usual shape is checked without building a Python object per entry: a
# regular expression that accepts only RFC 8785 canonical text of exactly the entry schema, under
# conditions checked once per block that make its simple patterns exact:
#   * no byte below 0x20 but the newlines, and no backslash: so every string is '"[^"]*"' with no
#     escape at all, and every '"' in the block delimits a string;
#   * no UTF-8 lead byte of a character at or above U+E000 (where UTF-16 and code point order
#     differ) and valid UTF-8: so comparing member names as bytes orders them as RFC 8785 does;
#   * members in their fixed sorted order; integers of at most 15 digits (below 2**53), without
#     leading zeros or "-0"; ``detail`` a flat object of such scalars whose names are checked
#     strictly increasing; ``prev`` 64 characters that the chain check compares with real hashes
#     (and the first one with HEX64_RE); ``time`` checked with TIME_RE and never going back.
# Anything else (escapes, nested detail, floats, ...) sends the whole block through parse_entry,
# the exact check (:func:`scan_exact`).  tests/audit/test_verify_fast.py compares the two.
_S = rb'"[^"]*"'
_SCALAR = rb'(?:"[^"]*"|0|-?[1-9][0-9]{0,14}|true|false|null)'
_MEMBER = rb'"[^"]*":' + _SCALAR
_LINE = re.compile(
    rb'\{"action":"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)+",'
    rb'"actor":\{"id":' + _SCALAR + rb',"name":' + _SCALAR + rb',"type":' + _S + rb'\},'
    rb'"client_ip":(?:' + _S + rb'|null),'
    rb'"detail":(\{(?:' + _MEMBER + rb'(?:,' + _MEMBER + rb')*)?\}),'
    rb'"prev":"([^"]{64})",'
    rb'"seq":(0|[1-9][0-9]{0,14}),'
    rb'"target":\{"id":' + _SCALAR + rb',"type":' + _S + rb'\},'
    rb'"time":"([^"]{24})"\}\n'
)
# One detail member per match, from the "{" or "," before it to the end of its value: consecutive
# matches walk the members of a detail that _LINE accepted, so findall lists exactly its names.
_DETAIL_NAMES = re.compile(rb'[{,]"([^"]*)":(?:"[^"]*"|[^,}"]*)')
_NOT_PLAIN = bytes(range(0x0A)) + bytes(range(0x0B, 0x20)) + b"\\" + bytes(range(0xEE, 0xF5))
_TIMES_DIGITS = bytes.maketrans(b"0123456789", b"0000000000")
_group = re.Match.group


def _fast_fields(block: bytes, n: int) -> tuple[list[bytes], list[bytes], list[bytes], list[bytes]] | None:
    """details, prevs, seqs, times of the n lines of ``block`` (each ending with a newline) if
    every line is of the usual shape (see above), else None."""
    if len(block.translate(None, _NOT_PLAIN)) != len(block):
        return None
    if not block.isascii():
        try:
            block.decode("utf-8")
        except UnicodeDecodeError:
            return None
    ms = list(iter(_LINE.scanner(block).match, None))
    if len(ms) != n or (ms and ms[-1].end() != len(block)):
        return None
    return (list(map(_group, ms, repeat(1))), list(map(_group, ms, repeat(2))),
            list(map(_group, ms, repeat(3))), list(map(_group, ms, repeat(4))))


def fast_canonical(line: bytes) -> bool:
    """True only if ``line`` (without its newline) is an entry that parse_entry accepts and whose
    detail names are strictly increasing (what the fast pass checks for one line); False says
    nothing (the line needs parse_entry)."""
    got = _fast_fields(line + b"\n", 1)
    if got is None:
        return False
    names = _DETAIL_NAMES.findall(got[0][0])
    time = got[3][0].decode("ascii", "replace")
    prev = got[1][0].decode("ascii", "replace")  # in a block: the chain or HEX64_RE checks it
    return sorted(set(names)) == names and TIME_RE.fullmatch(time) is not None and HEX64_RE.fullmatch(prev) is not None


def _names_increase(details: list[bytes]) -> bool:
    """Whether the member names of each detail are strictly increasing (so also unique)."""
    names = list(map(_DETAIL_NAMES.findall, details))
    flat = list(chain.from_iterable(names))
    owner = chain.from_iterable(map(repeat, range(len(names)), map(len, names)))
    keyed = list(zip(owner, flat, strict=True))
    return all(map(operator.lt, keyed, islice(keyed, 1, None)))


def _subtree(leaves: list[bytes]) -> bytes:
    """The root of a perfect subtree (len(leaves) a power of two), level by level."""
    sha256 = hashlib.sha256
    level = leaves
    while len(level) > 1:
        it = iter(level)
        level = [sha256(b"\x01" + left + right).digest() for left, right in zip(it, it, strict=True)]
    return level[0]


def _pieces(start: int, stop: int, cuts: list[int]) -> list[tuple[int, int]]:
    """[start, stop) as aligned perfect subtrees (offset, size), largest first, never across a cut."""
    out = []
    bounds = [c for c in cuts if start < c < stop] + [stop]
    pos = start
    for bound in bounds:
        while pos < bound:
            size = 1 << ((bound - pos).bit_length() - 1)
            if pos:
                size = min(size, pos & -pos)
            out.append((pos, size))
            pos += size
    return out


def scan_exact(rows: list[bytes], start: int) -> tuple[bool, list[bytes], str, str, str]:
    """The exact pass over consecutive lines whose first should be entry ``start``: parse_entry
    on each, seq contiguous, chained, time never going back; their leaf hashes and the first prev,
    first time and last time.  Anything wrong is left to the slow pass, which explains it."""
    sha256 = hashlib.sha256
    leaves: list[bytes] = []
    expected = start
    prev = first_prev = first_time = last_time = ""
    try:
        for raw in rows:
            value = parse_entry(raw)
            if value["seq"] != expected or (expected != start and value["prev"] != prev):
                return False, [], "", "", ""
            t = value["time"]
            if t < last_time:
                return False, [], "", "", ""
            if expected == start:
                first_prev, first_time = value["prev"], t
            last_time = t
            leaf = sha256(b"\x00" + raw).digest()
            leaves.append(leaf)
            prev = leaf.hex()
            expected += 1
    except (ValueError, UnicodeDecodeError):
        return False, [], "", "", ""
    return True, leaves, first_prev, first_time, last_time


def _scan_fast(block: bytes, rows: list[bytes], start: int) -> tuple[bool, list[bytes], str, str, str]:
    """scan_exact's answer when the block is of the usual shape, else (False, ...) ."""
    no: tuple[bool, list[bytes], str, str, str] = (False, [], "", "", "")
    n = len(rows)
    got = _fast_fields(block, n)
    if got is None:
        return no
    details, prevs, seqs, times = got
    if seqs != list(map(str.encode, map(str, range(start, start + n)))):
        return no
    if not _names_increase(details):
        return no
    if sorted(times) != times:
        return no
    joined = b"".join(times)
    if joined.translate(_TIMES_DIGITS) != b"0000-00-00T00:00:00.000Z" * n:
        return no
    sha256 = hashlib.sha256
    leaves = [sha256(b"\x00" + row).digest() for row in rows]
    if b"".join(prevs[1:]) != b"".join(leaves[:-1]).hex().encode():
        return no
    first_prev = prevs[0].decode("ascii", "replace")
    if not HEX64_RE.fullmatch(first_prev):
        return no
    return True, leaves, first_prev, times[0].decode(), times[-1].decode()


Scan = tuple[bool, list[tuple[int, bytes]], str, str, str, bytes]
_DATA: bytes = b""


def _init_worker(data: bytes) -> None:
    global _DATA
    _DATA = data
    gc.disable()  # the pass makes no reference cycles; collecting its many short-lived objects is waste


def scan_block(data: bytes, a: int, b: int, start: int, cuts: list[int]) -> Scan:
    """Check the lines data[a:b] (b just after a newline), the first of which should be entry
    ``start`` (the fast pass, else the exact one): whether all is well inside them, the perfect
    subtrees (size, hash) their leaves make (split at ``cuts``), and the first prev, first time,
    last time and last leaf for joining them with the lines before and after."""
    rows = data[a : b - 1].split(b"\n")
    good, leaves, first_prev, first_time, last_time = _scan_fast(data[a:b], rows, start)
    if not good:
        good, leaves, first_prev, first_time, last_time = scan_exact(rows, start)
        if not good:
            return False, [], "", "", "", b""
    subtrees = [(size, _subtree(leaves[p - start : p - start + size])) for p, size in _pieces(start, start + len(rows), cuts)]
    return True, subtrees, first_prev, first_time, last_time, leaves[-1]


def _scan_task(task: tuple[int, int, int, list[int]]) -> Scan:
    return scan_block(_DATA, *task)


# ------------------------------------------------------------------------------------ RFC 9162
def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _fold(hashes: list[bytes]) -> bytes:
    if not hashes:
        return EMPTY_ROOT
    h = hashes[-1]
    for left in reversed(hashes[:-1]):
        h = _node(left, h)
    return h


class Frontier:
    """Perfect subtree hashes covering [0, size): appends leaves, gives the root."""

    def __init__(self, size: int = 0, hashes: list[bytes] | None = None) -> None:
        self.size = size
        self.hashes = list(hashes or [])
        if len(self.hashes) != bin(size).count("1"):
            raise BundleError(f"consistency.json: a prefix of {size} entries has {bin(size).count('1')} hashes")

    def add(self, leaf: bytes) -> None:
        h, i = leaf, self.size
        while i & 1:
            h = _node(self.hashes.pop(), h)
            i >>= 1
        self.hashes.append(h)
        self.size += 1

    def add_subtree(self, n: int, h: bytes) -> None:
        """Append the hash of a perfect subtree of ``n`` (a power of two) leaves; ``size`` must be a
        multiple of ``n``."""
        if n & (n - 1) or self.size % n:
            raise ValueError("not an aligned perfect subtree")
        i = self.size // n
        while i & 1:
            h = _node(self.hashes.pop(), h)
            i >>= 1
        self.hashes.append(h)
        self.size += n

    def root(self) -> bytes:
        return _fold(self.hashes)


def verify_inclusion(index: int, size: int, leaf: bytes, proof: list[bytes], root: bytes) -> bool:
    """RFC 9162 2.1.3.2."""
    if not 0 <= index < size or any(len(h) != 32 for h in (leaf, root, *proof)):
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = _node(p, r)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = _node(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root


def verify_consistency(m: int, n: int, proof: list[bytes], root1: bytes, root2: bytes) -> bool:
    """RFC 9162 2.1.4.2 (0 < m; equal sizes: an empty proof and equal roots)."""
    if not 0 < m <= n:
        return False
    if m == n:
        return not proof and root1 == root2
    if not proof or any(len(h) != 32 for h in (root1, root2, *proof)):
        return False
    path = ([root1] if m & (m - 1) == 0 else []) + list(proof)
    fn, sn = m - 1, n - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = _node(c, fr), _node(c, sr)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = _node(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and fr == root1 and sr == root2


# ------------------------------------------------------------------------------------ signed notes
@dataclass(frozen=True)
class Key:
    name: str
    key_id: bytes
    public: Ed25519PublicKey


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BundleError(f"{what}: invalid base64") from None


def parse_vkeys(text: str) -> list[Key]:
    keys = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split("+", 2)
        if len(parts) != 3:
            raise BundleError(f"verifier key {line[:40]!r}: expected <name>+<hex id>+<base64 key>")
        name, hex_id, b64 = parts
        raw = _b64(b64, "verifier key")
        if len(raw) != 33 or raw[0] != 1:
            raise BundleError("verifier key: only Ed25519 (algorithm 0x01) is supported")
        kid = hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4]
        if kid.hex() != hex_id:
            raise BundleError("verifier key: the key id does not match the name and key")
        keys.append(Key(name, kid, Ed25519PublicKey.from_public_bytes(raw[1:])))
    if not keys:
        raise BundleError("no verifier key")
    return keys


@dataclass(frozen=True)
class Signed:
    origin: str
    size: int
    root: bytes
    source: str


def open_checkpoint(note: str, keys: list[Key], source: str) -> Signed:
    """A checkpoint note whose signature by one of ``keys`` verifies (else :class:`Invalid`)."""
    cut = note.rfind("\n\n")
    if not note.endswith("\n") or cut < 0:
        raise Invalid(f"{source}: not a signed note")
    text, block = note[: cut + 1], note[cut + 2 : -1]
    known = {(k.name, k.key_id): k for k in keys}
    good = 0
    for line in block.split("\n"):
        if not line.startswith("\u2014 "):
            raise Invalid(f"{source}: malformed signature line")
        name, _, b64 = line[2:].rpartition(" ")
        try:
            raw = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raise Invalid(f"{source}: bad signature (not base64)") from None
        key = known.get((name, raw[:4]))
        if key is None:
            continue
        try:
            key.public.verify(raw[4:], text.encode("utf-8"))
        except InvalidSignature:
            raise Invalid(f"{source}: bad signature by key {name}+{raw[:4].hex()}") from None
        good += 1
    if not good:
        signers = ", ".join(line[2:].rpartition(" ")[0] for line in block.split("\n"))
        raise Invalid(f"{source}: unknown key: signed by {signers}, not by a trusted verifier key")
    lines = text.split("\n")[:-1]
    if len(lines) < 3 or not lines[1].isdigit() or (len(lines[1]) > 1 and lines[1][0] == "0"):
        raise Invalid(f"{source}: not a tlog-checkpoint (origin, size, root)")
    root = _b64(lines[2], f"{source} root")
    if len(root) != 32:
        raise Invalid(f"{source}: root hash is not 32 bytes")
    origin = lines[0]
    if origin not in {k.name for k in keys}:
        raise Invalid(f"{source}: origin {origin!r} is not the log the key belongs to")
    return Signed(origin, int(lines[1]), root, source)


# ------------------------------------------------------------------------------------ bundle
class Bundle:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._zip: zipfile.ZipFile | None = None
        self._prefix = ""
        if path.is_dir():
            return
        if not path.is_file():
            raise BundleError(f"{path}: no such bundle")
        try:
            self._zip = zipfile.ZipFile(path)
        except zipfile.BadZipFile:
            raise BundleError(f"{path}: neither a directory nor a zip file") from None
        names = self._zip.namelist()
        tops = {n.split("/", 1)[0] for n in names if "/" in n}
        if "entries.jsonl" not in names and len(tops) == 1:
            self._prefix = tops.pop() + "/"

    def read(self, name: str) -> bytes | None:
        if self._zip is not None:
            try:
                return self._zip.read(self._prefix + name)
            except KeyError:
                return None
        p = self.path / name
        return p.read_bytes() if p.is_file() else None

    def list(self, folder: str) -> list[str]:
        if self._zip is not None:
            pre = self._prefix + folder + "/"
            return sorted(n[len(self._prefix):] for n in self._zip.namelist() if n.startswith(pre) and n != pre)
        d = self.path / folder
        return sorted(f"{folder}/{p.name}" for p in d.iterdir() if p.is_file()) if d.is_dir() else []


@dataclass
class Line:
    number: int
    leaf: bytes
    seq: int | None = None
    prev: str | None = None
    time: str | None = None
    problem: str | None = None


def _lines(data: bytes) -> Iterator[Line]:
    if data and not data.endswith(b"\n"):
        data += b"\n"  # reported below as a damaged last line
        damaged_last = True
    else:
        damaged_last = False
    start, number = 0, 0
    end = len(data)
    while start < end:
        stop = data.index(b"\n", start)
        raw = data[start:stop]
        number += 1
        line = Line(number, hashlib.sha256(b"\x00" + raw).digest())
        try:
            value = parse_entry(raw)
            line.seq, line.prev, line.time = value["seq"], value["prev"], value["time"]
        except (ValueError, UnicodeDecodeError) as exc:
            line.problem = str(exc)
            try:
                partial = json.loads(raw)
                if isinstance(partial, dict) and type(partial.get("seq")) is int:
                    line.seq = partial["seq"]
            except ValueError:
                pass
        if damaged_last and stop == end - 1:
            line.problem = line.problem or "the file does not end with a newline (truncated?)"
        yield line
        start = stop + 1


@dataclass
class Report:
    origin: str
    first_seq: int
    tree_size: int
    root: bytes
    entries: int
    checked_checkpoints: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _explain(entries: bytes, first_seq: int, prev: str) -> None:
    """The slow pass: find the first entry that breaks and raise :class:`Invalid` naming it."""
    expected = first_seq
    last_time = ""
    window: deque[Line] = deque()
    source = _lines(entries)

    def peek(i: int) -> Line | None:
        while len(window) <= i:
            nxt = next(source, None)
            if nxt is None:
                return None
            window.append(nxt)
        return window[i]

    while peek(0) is not None:
        line = window.popleft()
        where = f"line {line.number}"
        if line.problem is not None:
            seq = line.seq if line.seq is not None else expected
            raise Invalid(f"entry seq={seq} ({where}) is malformed or was edited: {line.problem}", seq)
        assert line.seq is not None and line.prev is not None and line.time is not None
        if line.seq != expected:
            nxt, after = peek(0), peek(1)
            if line.seq < expected:
                if line.seq == expected - 1:
                    raise Invalid(
                        f"entry seq={line.seq} appears twice ({where} and the line before): an entry was inserted",
                        line.seq,
                    )
                raise Invalid(f"entry seq={line.seq} ({where}) is out of order (reordered or inserted)", line.seq)
            if nxt is not None and nxt.seq == expected:
                if after is not None and after.seq == expected + 1 and line.seq != expected + 1:
                    raise Invalid(
                        f"{where} holds an inserted entry (seq={line.seq}) between seq={expected - 1} and "
                        f"seq={expected}",
                        expected,
                    )
                raise Invalid(
                    f"entries seq={expected} and seq={line.seq} are out of order ({where}): reordered", expected
                )
            raise Invalid(f"entry seq={expected} is missing (deleted): {where} holds seq={line.seq}", expected)
        if line.prev != prev:
            nxt = peek(0)
            if expected > first_seq and nxt is not None and nxt.prev == line.leaf.hex():
                raise Invalid(
                    f"entry seq={expected - 1} was altered: its hash no longer matches the prev recorded in "
                    f"entry seq={expected}",
                    expected - 1,
                )
            raise Invalid(
                f"entry seq={expected} ({where}) breaks the chain: its prev is not the hash of entry "
                f"seq={expected - 1}",
                expected,
            )
        if line.time < last_time:
            raise Invalid(f"entry seq={expected} ({where}) is older than the entry before it: reordered", expected)
        last_time = line.time
        prev = line.leaf.hex()
        expected += 1
    raise Invalid(f"entries.jsonl is damaged after seq={expected - 1}", expected)


def verify_bundle(
    path: Path | str, *, key_text: str | None = None, pins: list[str] | None = None, jobs: int = 1
) -> Report:
    """Check the bundle; returns a :class:`Report`, raises :class:`Invalid` or :class:`BundleError`.
    ``jobs`` > 1 checks big bundles in that many processes."""
    bundle = Bundle(Path(path))
    warnings: list[str] = []
    if key_text is None:
        own = bundle.read("verifier.key")
        if own is None:
            raise BundleError("no verifier.key in the bundle and no --key given")
        key_text = own.decode("utf-8", "replace")
        warnings.append("the bundle's own verifier.key was trusted: pass your pinned copy with --key")
    keys = parse_vkeys(key_text)

    note = bundle.read("checkpoint")
    entries = bundle.read("entries.jsonl")
    if note is None or entries is None:
        raise BundleError("the bundle lacks entries.jsonl or checkpoint")
    head = open_checkpoint(note.decode("utf-8", "replace"), keys, "checkpoint")

    witnesses: list[Signed] = []
    for name in bundle.list("checkpoints"):
        try:
            witnesses.append(open_checkpoint((bundle.read(name) or b"").decode("utf-8", "replace"), keys, name))
        except Invalid as exc:
            if "unknown key" in str(exc):
                warnings.append(f"{name}: signed by another key, not checked")
                continue
            raise
    pinned = [open_checkpoint(text, keys, f"pinned checkpoint {i + 1}") for i, text in enumerate(pins or [])]

    # ---- where the bundle starts
    first_seq = 0
    frontier = Frontier()
    prev = ZERO
    proof_doc = bundle.read("consistency.json")
    old_root = EMPTY_ROOT
    if proof_doc is not None:
        try:
            doc = json.loads(proof_doc)
            first_seq = int(doc["old_size"])
            prefix = [_b64(h, "prefix") for h in doc["prefix"]]
            old_root = _b64(doc["old_root"], "old_root")
            prev_leaf = _b64(doc["prev_leaf"], "prev_leaf")
            prev_inclusion = [_b64(h, "prev_inclusion") for h in doc["prev_inclusion"]]
            consistency = [_b64(h, "consistency") for h in doc["consistency"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"consistency.json is malformed: {exc}") from None
        frontier = Frontier(first_seq, prefix)
        if first_seq and frontier.root() != old_root:
            raise Invalid("consistency.json: the prefix hashes do not give old_root", first_seq)
        if first_seq and not verify_inclusion(first_seq - 1, first_seq, prev_leaf, prev_inclusion, old_root):
            raise Invalid(f"consistency.json: entry {first_seq - 1}'s leaf hash is not in the old tree", first_seq)
        prev = prev_leaf.hex() if first_seq else ZERO

    # ---- the entries: a fast pass (in parallel for big bundles); the slow pass explains a failure
    sizes_wanted = {w.size for w in witnesses} | {p.size for p in pinned}
    roots: dict[int, bytes] = {first_seq: frontier.root()} if first_seq in sizes_wanted else {}
    start_prev = prev
    if entries and not entries.endswith(b"\n"):  # a damaged last line
        _explain(entries, first_seq, start_prev)
    # Blocks of whole lines, about BLOCK bytes each (more of them when several processes share them).
    size = len(entries)
    step = max(1 << 16, min(BLOCK, size // (4 * jobs) + 1)) if jobs > 1 else BLOCK
    tasks: list[tuple[int, int, int, list[int]]] = []
    a, index = 0, first_seq
    cuts = sorted(sizes_wanted)
    while a < size:
        b = entries.find(b"\n", min(a + step, size) - 1) + 1
        n = entries.count(b"\n", a, b)
        tasks.append((a, b, index, [c for c in cuts if index < c < index + n]))
        a, index = b, index + n
    expected, last_time = first_seq, ""
    collecting = gc.isenabled()
    gc.disable()  # the pass makes no reference cycles; collecting its many short-lived objects is waste
    if jobs > 1 and len(tasks) > 2 and size > 4 * BLOCK:
        import multiprocessing
        import threading
        from concurrent.futures import ProcessPoolExecutor

        # fork shares the bytes read here with the workers at no cost; spawn (where fork is not
        # available or threads run) hands each worker a copy.
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1 else "spawn"
        pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context(method),
                                   initializer=_init_worker, initargs=(entries,))
        results: Iterator[Scan] = pool.map(_scan_task, tasks)
    else:
        pool = None
        results = (scan_block(entries, *task) for task in tasks)
    try:
        for good, subtrees, block_prev, first_time, block_last_time, last_leaf in results:
            if not (good and block_prev == prev and first_time >= last_time):
                _explain(entries, first_seq, start_prev)
            for n, h in subtrees:
                frontier.add_subtree(n, h)
                if frontier.size in sizes_wanted:
                    roots[frontier.size] = frontier.root()
            expected = frontier.size
            prev, last_time = last_leaf.hex(), block_last_time
    finally:
        if collecting:
            gc.enable()
        if pool is not None:
            pool.shutdown(cancel_futures=True)

    end = expected
    root = frontier.root()

    def localise(checks: list[Signed]) -> None:
        """Raise for the first signed checkpoint the entries do not match."""
        good = first_seq
        for cp in sorted(checks, key=lambda c: c.size):
            if cp.size in roots and roots[cp.size] != cp.root:
                raise Invalid(
                    f"entries before seq={cp.size} were rewritten: the first {cp.size} entries do not match "
                    f"{cp.source} (signed for {cp.size} entries); the last matching signed checkpoint covers "
                    f"{good} entries, so the change is in seq={good}..{cp.size - 1}",
                    good,
                )
            if cp.size in roots:
                good = cp.size

    # ---- the signed tree head
    if head.size > end:
        localise(witnesses)
        raise Invalid(
            f"entries seq={end}..{head.size - 1} are missing (deleted): the checkpoint covers {head.size} entries",
            end,
        )
    if head.size < end:
        raise Invalid(
            f"entry seq={head.size} and later are not covered by the checkpoint ({head.size} entries): "
            "entries were added after signing",
            head.size,
        )
    if root != head.root:
        localise(witnesses + pinned)
        raise Invalid(
            f"root mismatch: the {end} entries do not hash to the signed checkpoint's root: the last entry "
            f"(seq={end - 1}) was altered, or entries were rewritten with recomputed hashes (check against "
            "a checkpoint pinned earlier with --pin to narrow it down)",
            end - 1,
        )
    if proof_doc is not None and first_seq and not verify_consistency(first_seq, end, consistency, old_root, root):
        raise Invalid("consistency.json: the consistency proof does not connect the old tree to the checkpoint")

    # ---- earlier checkpoints and the auditor's pins
    localise(witnesses + pinned)
    for w in witnesses:
        if w.size > end:
            raise Invalid(
                f"{w.source} covers {w.size} entries but the log ends at {end}: entries seq={end}.. were deleted",
                end,
            )
    checked = sorted({w.size for w in witnesses if w.size in roots})
    for p in pinned:
        if p.size > end:
            raise Invalid(
                f"{p.source} covers {p.size} entries but this bundle's checkpoint only {end}: entries "
                f"seq={end}..{p.size - 1} were deleted (or the export stopped early: export up to the head)",
                end,
            )
        if p.size < first_seq:
            raise BundleError(f"{p.source} (size {p.size}) is before this bundle's first entry ({first_seq})")
        checked.append(p.size)
    return Report(head.origin, first_seq, head.size, root, end - first_seq, sorted(set(checked)), warnings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="verify.py", description="检查 gbops 审计日志导出包 / check a gbops audit log export offline"
    )
    parser.add_argument("bundle", type=Path, help="export directory or .zip")
    parser.add_argument("--key", type=Path, help="pinned verifier key file (vkey); default: the bundle's own")
    parser.add_argument("--pin", type=Path, action="append", default=[], help="a checkpoint saved earlier")
    parser.add_argument("--jobs", type=int, default=min(8, os.cpu_count() or 1), help="processes for big bundles")
    args = parser.parse_args(argv)
    try:
        key_text = args.key.read_text("utf-8") if args.key else None
        pins = [p.read_text("utf-8") for p in args.pin]
        report = verify_bundle(args.bundle, key_text=key_text, pins=pins, jobs=max(1, args.jobs))
    except Invalid as exc:
        where = f"，第一个出错的条目 seq={exc.seq}" if exc.seq is not None else ""
        print(f"无效{where} / INVALID: {exc}", file=sys.stderr)
        return 1
    except (BundleError, OSError) as exc:
        print(f"无法检查 / CANNOT CHECK: {exc}", file=sys.stderr)
        return 2
    for w in report.warnings:
        print(f"注意 / note: {w}", file=sys.stderr)
    last = report.first_seq + report.entries - 1
    print(
        f"有效 / VALID: {report.origin}: entries seq={report.first_seq}..{last} ({report.entries}), "
        f"tree size {report.tree_size}, root {base64.b64encode(report.root).decode()}"
        + (f"; also matches signed checkpoints of sizes {report.checked_checkpoints}" if report.checked_checkpoints else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
