"""verify.py's fast pass (one regular expression per block of lines, level-by-level Merkle
subtrees, several processes) agrees with the exact per-entry check: it never accepts a line that
parse_entry refuses, accepts the usual lines, and the bundle-level answers (roots, the entry named
when something breaks) do not depend on which pass or how many processes ran."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit_log import verify as v
from audit_log.canonical import canonical_json
from audit_log.merkle import CompactRange
from audit_log.note import NoteSigner, format_checkpoint

PREV = "ab" * 32


def entry(**changes) -> dict:
    value = {"action": "live.start", "actor": {"id": "7", "name": "值班员", "type": "user"},
             "client_ip": "192.0.2.10", "detail": {"channel_id": "34020000001320000001", "n": 5},
             "prev": PREV, "seq": 3, "target": {"id": "ch1", "type": "channel"},
             "time": "2024-05-01T08:30:00.000Z"}
    value.update(changes)
    return value


def exact_accepts(line: bytes) -> bool:
    try:
        v.parse_entry(line)
    except (ValueError, UnicodeDecodeError):
        return False
    return True


# ------------------------------------------------------------------------------------- byte vectors
def test_usual_lines_take_the_fast_path() -> None:
    for value in [entry(), entry(client_ip=None, detail={}), entry(actor={"id": 12, "name": None, "type": "api"}),
                  entry(detail={"": 0, " ": -1, "a": True, "b": False, "c": None, "é": "x", "中": "☺"}),
                  entry(detail={"big": 999999999999999, "s": "a:b,c{}[]"})]:
        line = canonical_json(value)
        assert v.fast_canonical(line), line
        assert exact_accepts(line)


NOT_CANONICAL = [
    b'{"action":"live.start" ,',  # truncated / whitespace
    canonical_json(entry()).replace(b'"n":5', b'"n":05'),
    canonical_json(entry()).replace(b'"n":5', b'"n":5.0'),
    canonical_json(entry()).replace(b'"n":5', b'"n":-0'),
    canonical_json(entry()).replace(b'"n":5', b'"n":9007199254740993'),
    canonical_json(entry()).replace(b'"n":5', b'"n":1e1'),
    canonical_json(entry()).replace(b'"channel_id"', b'"o_channel_id"'),  # detail names out of order
    canonical_json(entry()).replace(b'"channel_id"', b'"n"'),  # duplicate detail name
    canonical_json(entry()).replace(b'"ch1"', b'"c\\u0068"'),  # needless escape
    canonical_json(entry()).replace(b'"ch1"', b'"c\\/"'),
    canonical_json(entry()).replace(b'"ch1"', b'"c\\u001F"'),  # upper-case hex
    canonical_json(entry()).replace(b'"ch1"', b'"c\x01"'),  # raw control character
    canonical_json(entry()).replace(b'"ch1"', b'"c\xff"'),  # not UTF-8
    canonical_json(entry()).replace(b'"seq":3', b'"seq":-3'),
    canonical_json(entry()).replace(b'"seq":3', b'"seq":"3"'),
    canonical_json(entry()).replace(PREV.encode(), PREV.upper().encode()),
    canonical_json(entry()).replace(b"08:30:00.000Z", b"08:30:00Z"),
    canonical_json(entry()).replace(b'"live.start"', b'"Live.start"'),
    canonical_json(entry()).replace(b'"action":"live.start",', b""),
    canonical_json(entry()).replace(b'"type":"user"', b'"type":1'),
    canonical_json(entry()).replace(b'"client_ip":"192.0.2.10"', b'"client_ip":1'),
    canonical_json(entry()) + b" ",
    canonical_json(entry()) + b"\n" + canonical_json(entry()),
    canonical_json(entry()).replace(b"\xe5\x80\xbc", b"\xee\x80\x80"),  # U+E000: left to the exact check
]


@pytest.mark.parametrize("line", NOT_CANONICAL)
def test_fast_path_refuses_what_it_cannot_vouch_for(line: bytes) -> None:
    assert not v.fast_canonical(line)


def test_lines_the_fast_path_leaves_to_the_exact_check() -> None:
    # canonical, but not of the shape the regex takes: parse_entry accepts them
    for value in [entry(detail={"x": 0.5}), entry(detail={"x": {"y": [1, 2]}}), entry(detail={"s": "a\nb\"c\\"}),
                  entry(detail={"\uff61": 1, "\U0001f600": 2})]:
        line = canonical_json(value)
        assert not v.fast_canonical(line)
        assert exact_accepts(line)


# ------------------------------------------------------------------------------------- fuzz
text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=6)  # no lone surrogates
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**53), 2**53), st.sampled_from([2**60, -(2**55)]), text,
                         st.floats(allow_nan=False, allow_infinity=False))
names = st.text(alphabet=st.characters(max_codepoint=0x1F700, blacklist_categories=("Cs",)), max_size=4)
details = st.dictionaries(names, st.one_of(json_scalars, st.lists(json_scalars, max_size=2)), max_size=4)
entries = st.builds(
    entry,
    actor=st.fixed_dictionaries({"id": json_scalars, "name": json_scalars, "type": text}),
    client_ip=st.one_of(st.none(), text),
    detail=details,
    seq=st.integers(0, 2**53),
)


def mutations(line: bytes) -> list[bytes]:
    """Non-canonical (or otherwise wrong) neighbours of a canonical line."""
    out = [line.replace(b":", b": ", 1), line.replace(b",", b" ,", 1), line[:-1], line + b"}",
           line.replace(b'"', b"'", 1), line.replace(b"0", b"00", 1), line.replace(b"1", b"1.0", 1),
           line.replace(b"e", b"\\u0065", 1), line.replace(b"a", b"\\u0061", 1)]
    value = json.loads(line)
    out.append(json.dumps(value, ensure_ascii=True, sort_keys=True, separators=(",", ":")).encode())
    out.append(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())  # not sorted
    return [m for m in out if m != line]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entries, st.data())
def test_fast_check_agrees_with_the_exact_one(value: dict, data: st.DataObject) -> None:
    line = canonical_json(value)
    assert exact_accepts(line)
    plain = all(type(x) is not float and type(x) is not list and (type(x) is not int or abs(x) < 10**15)
                for x in [*value["detail"].values(), *value["actor"].values()])
    plain = plain and value["seq"] < 10**15
    fast = v.fast_canonical(line)
    if plain and b"\\" not in line and not any(0xEE <= b <= 0xF4 for b in line) and not any(b < 0x20 for b in line):
        assert fast, line  # the usual shape is taken by the fast path
    for other in mutations(line) + [data.draw(st.binary(max_size=8)) + line[8:]]:
        if v.fast_canonical(other):
            assert exact_accepts(other), other  # never accepts what the exact check refuses


# ------------------------------------------------------------------------------------- blocks
def chain_lines(n: int, odd: set[int] = frozenset()) -> list[bytes]:
    prev, out = "0" * 64, []
    for i in range(n):
        detail = {"x": 0.5} if i in odd else {"i": i, "s": f"设备{i}"}
        line = canonical_json(entry(seq=i, prev=prev, detail=detail, time=f"2024-05-01T{8 + i // 3600:02d}:"
                                    f"{i // 60 % 60:02d}:{i % 60:02d}.000Z"))
        out.append(line)
        prev = hashlib.sha256(b"\x00" + line).hexdigest()
    return out


def test_block_fast_and_exact_give_the_same_answer() -> None:
    rows = chain_lines(300)
    block = b"\n".join(rows) + b"\n"
    fast = v._scan_fast(block, rows, 0)
    assert fast[0] and fast == v.scan_exact(rows, 0)
    # the first prev is checked by the caller against the line before
    assert v._scan_fast(b"\n".join(rows[1:]) + b"\n", rows[1:], 1)[2] == hashlib.sha256(b"\x00" + rows[0]).hexdigest()
    # each single-line fault: the fast pass refuses the block, so does the exact one
    for k, bad in [(7, rows[7].replace(b'"seq":7', b'"seq":8')), (9, rows[9].replace(b"08:00:09", b"07:00:09")),
                   (11, rows[11].replace(b'"i":11', b'"i":12')), (0, rows[0].replace(b"0" * 64, b"1" * 64))]:
        changed = rows[:k] + [bad] + rows[k + 1:]
        got = v._scan_fast(b"\n".join(changed) + b"\n", changed, 0)
        assert not got[0] and not v.scan_exact(changed, 0)[0]


def test_frontier_subtrees_match_leaf_by_leaf() -> None:
    leaves = [hashlib.sha256(bytes([i % 256, i // 256])).digest() for i in range(1000)]
    for start, stop, cuts in [(0, 1000, []), (3, 1000, [17, 64, 500]), (512, 999, [513])]:
        one = v.Frontier(start, CompactRange(start, _prefix(leaves, start)).hashes) if start else v.Frontier()
        many = v.Frontier(one.size, one.hashes)
        for leaf in leaves[start:stop]:
            one.add(leaf)
        for pos, size in v._pieces(start, stop, cuts):
            assert pos % size == 0 and not any(pos < c < pos + size for c in cuts)
            many.add_subtree(size, v._subtree(leaves[pos:pos + size]))
            assert many.size == pos + size
        assert many.root() == one.root() == _root(leaves[:stop])


def _prefix(leaves: list[bytes], n: int) -> list[bytes]:
    cr = CompactRange()
    cr.extend(leaves[:n])
    return cr.hashes


def _root(leaves: list[bytes]) -> bytes:
    cr = CompactRange()
    cr.extend(leaves)
    return cr.root()


# ------------------------------------------------------------------------------------- bundles
def write_bundle(path: Path, rows: list[bytes], signer: NoteSigner, witnesses: list[int]) -> None:
    path.mkdir(exist_ok=True)
    (path / "checkpoints").mkdir(exist_ok=True)
    cr = CompactRange()
    for i, row in enumerate(rows):
        cr.append(hashlib.sha256(b"\x00" + row).digest())
        if i + 1 in witnesses:
            (path / "checkpoints" / f"{i + 1:08d}").write_text(signer.sign(format_checkpoint(signer.name, i + 1,
                                                                                             cr.root())))
    (path / "entries.jsonl").write_bytes(b"\n".join(rows) + b"\n")
    (path / "checkpoint").write_text(signer.sign(format_checkpoint(signer.name, len(rows), cr.root())))


@pytest.mark.slow
def test_bundles_check_the_same_with_any_pass_and_process_count(tmp_path: Path, signer: NoteSigner,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(v, "BLOCK", 1 << 15)  # many blocks, several processes
    n = 20000
    rows = chain_lines(n, odd={5, 4000, 19999})  # a few lines only the exact check takes
    witnesses = [1, 777, 4096, 12345]
    write_bundle(tmp_path / "b", rows, signer, witnesses)
    for jobs in (1, 2):
        report = v.verify_bundle(tmp_path / "b", key_text=signer.vkey, jobs=jobs)
        assert report.entries == n and report.checked_checkpoints == witnesses
    # an edited entry in the middle of a fast block, with the chain and tree recomputed after it
    # and re-signed: the earlier checkpoints narrow it down; without them the root gives it away
    k = 9000
    bad = rows[:k] + [rows[k].replace(b'"i":9000', b'"i":9001')]
    prev = hashlib.sha256(b"\x00" + bad[k]).hexdigest()
    for line in rows[k + 1:]:
        value = json.loads(line)
        value["prev"] = prev
        line = canonical_json(value)
        bad.append(line)
        prev = hashlib.sha256(b"\x00" + line).hexdigest()
    write_bundle(tmp_path / "c", bad, signer, [])
    (tmp_path / "c" / "checkpoints" / "00004096").write_text((tmp_path / "b" / "checkpoints" / "00004096").read_text())
    (tmp_path / "c" / "checkpoints" / "00012345").write_text((tmp_path / "b" / "checkpoints" / "00012345").read_text())
    for jobs in (1, 2):
        with pytest.raises(v.Invalid, match="seq=4096..12344") as info:
            v.verify_bundle(tmp_path / "c", key_text=signer.vkey, jobs=jobs)
        assert info.value.seq == 4096
    # an edited entry without recomputation: named exactly, whichever pass and process count
    plain = list(rows)
    plain[k] = plain[k].replace(b'"i":9000', b'"i":9001')
    write_bundle(tmp_path / "d", rows, signer, [])
    (tmp_path / "d" / "entries.jsonl").write_bytes(b"\n".join(plain) + b"\n")
    for jobs in (1, 2):
        with pytest.raises(v.Invalid, match="altered") as info:
            v.verify_bundle(tmp_path / "d", key_text=signer.vkey, jobs=jobs)
        assert info.value.seq == k
