"""Export bundles and the offline checker: a valid bundle passes; every kind of tampering fails and
names the first entry that breaks; verify.py runs on its own; the CLI."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from audit_log import verify as verify_module
from audit_log.export import ExportError, export_bundle
from audit_log.log import AuditLog
from audit_log.note import NoteSigner
from audit_log.verify import BundleError, Invalid, verify_bundle

from .conftest import fill

VERIFY_PY = Path(verify_module.__file__)


@pytest.fixture
async def bundle(audit: AuditLog, tmp_path: Path) -> Path:
    """20 entries, checkpoints signed at 5 and 12 along the way, exported to a directory."""
    await fill(audit, 5)
    await audit.checkpoint()
    await fill(audit, 7, prefix="b")
    await audit.checkpoint()
    await fill(audit, 8, prefix="c")
    result = await export_bundle(audit, tmp_path / "bundle")
    assert result.problems == [] and result.tree_size == 20
    return tmp_path / "bundle"


def key_file(audit: AuditLog, tmp_path: Path) -> Path:
    path = tmp_path / "pinned-verifier.key"
    path.write_text(audit.verifier_key + "\n")
    return path


def lines(bundle: Path) -> list[bytes]:
    return (bundle / "entries.jsonl").read_bytes().splitlines()


def write_lines(bundle: Path, rows: list[bytes]) -> None:
    (bundle / "entries.jsonl").write_bytes(b"".join(r + b"\n" for r in rows))


def canon(value: dict) -> bytes:
    from audit_log.canonical import canonical_json

    return canonical_json(value)


def leaf(data: bytes) -> str:
    return hashlib.sha256(b"\x00" + data).hexdigest()


def check(bundle: Path, audit: AuditLog, **kw) -> verify_module.Report:
    return verify_bundle(bundle, key_text=audit.verifier_key, **kw)


def test_valid_bundle(audit: AuditLog, bundle: Path) -> None:
    report = check(bundle, audit)
    assert (report.first_seq, report.entries, report.tree_size) == (0, 20, 20)
    assert report.checked_checkpoints == [5, 12]
    assert report.warnings == []
    names = {p.name for p in bundle.iterdir()}
    assert names == {"entries.jsonl", "checkpoint", "checkpoints", "verifier.key", "verify.py", "README.txt"}
    assert (bundle / "verifier.key").read_text().strip() == audit.verifier_key
    assert [json.loads(row)["seq"] for row in lines(bundle)] == list(range(20))
    assert "seq=0..19" in (bundle / "README.txt").read_text()
    # without --key the bundle's own key is used, with a warning
    assert verify_bundle(bundle).warnings


async def test_partial_exports_and_zip(audit: AuditLog, bundle: Path, tmp_path: Path) -> None:
    for start, end in [(0, 7), (1, 1), (5, 19), (7, 12), (19, 19), (3, 16)]:
        out = tmp_path / f"part-{start}-{end}.zip"
        result = await export_bundle(audit, out, start=start, end=end)
        assert result.problems == []
        assert result.bundle_sha256 == hashlib.sha256(out.read_bytes()).hexdigest()
        report = check(out, audit)
        assert (report.first_seq, report.entries, report.tree_size) == (start, end - start + 1, end + 1)
        with zipfile.ZipFile(out) as zf:
            assert ("consistency.json" in zf.namelist()) == (start > 0)
    # an earlier export's checkpoint pins the start of an incremental one
    first = await export_bundle(audit, tmp_path / "first", end=9)
    later = await export_bundle(audit, tmp_path / "later", start=10)
    report = check(tmp_path / "later", audit, pins=[first.checkpoint])
    assert 10 in report.checked_checkpoints
    with pytest.raises(ExportError):
        await export_bundle(audit, tmp_path / "bad", start=5, end=20)
    with pytest.raises(ExportError, match="exists"):
        await export_bundle(audit, tmp_path / "later")
    assert later.first_seq == 10


# ------------------------------------------------------------------------------------------ tampering
def edit_entry(rows: list[bytes], k: int, **changes) -> None:
    value = json.loads(rows[k])
    value.update(changes)
    rows[k] = canon(value)


def recompute_from(rows: list[bytes], k: int) -> None:
    for i in range(k + 1, len(rows)):
        value = json.loads(rows[i])
        value["prev"] = leaf(rows[i - 1])
        rows[i] = canon(value)


def resign(bundle: Path, rows: list[bytes], signer: NoteSigner, origin: str) -> None:
    from audit_log.merkle import root_from_leaf_hashes

    root = root_from_leaf_hashes(bytes.fromhex(leaf(r)) for r in rows)
    body = f"{origin}\n{len(rows)}\n{base64.b64encode(root).decode()}\n"
    (bundle / "checkpoint").write_text(signer.sign(body))


CASES = {
    # name: (mutation, seq named, words in the message)
    "edited": (lambda rows: edit_entry(rows, 7, actor={"type": "user", "id": "1", "name": "mallory"}), 7,
               "altered"),
    "edited_not_canonical": (lambda rows: rows.__setitem__(3, rows[3].replace(b'"seq":3', b'"seq": 3')), 3,
                             "malformed"),
    "deleted_middle": (lambda rows: rows.pop(9), 9, "missing (deleted)"),
    "deleted_tail": (lambda rows: rows.__delitem__(slice(17, None)), 17, "missing (deleted)"),
    "inserted_copy": (lambda rows: rows.insert(11, rows[10]), 10, "appears twice"),
    "inserted_new": (lambda rows: rows.insert(6, rows[6].replace(b'"seq":6', b'"seq":600')), 6, "inserted"),
    "reordered": (lambda rows: rows.__setitem__(slice(12, 14), [rows[13], rows[12]]), 12, "reordered"),
    "broken_prev_chain": (lambda rows: edit_entry(rows, 15, prev="ab" * 32), 15, "breaks the chain"),
    "last_entry_edited": (lambda rows: edit_entry(rows, 19, client_ip="203.0.113.9"), 19, "root mismatch"),
    "appended_unsigned": (lambda rows: rows.append(canon({**json.loads(rows[19]), "seq": 20,
                                                            "prev": leaf(rows[19])})), 20, "not covered"),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_tampered_entries_are_caught(audit: AuditLog, bundle: Path, case: str) -> None:
    mutate, seq, words = CASES[case]
    rows = lines(bundle)
    mutate(rows)
    write_lines(bundle, rows)
    with pytest.raises(Invalid, match=words.replace("(", r"\(").replace(")", r"\)")) as info:
        check(bundle, audit)
    assert info.value.seq == seq, str(info.value)
    assert f"seq={seq}" in str(info.value)


async def test_recomputed_hashes_are_caught_by_earlier_checkpoints(audit: AuditLog, bundle: Path,
                                                                    tmp_path: Path) -> None:
    pinned = (bundle / "checkpoints" / "12").read_text()  # what an auditor saved earlier
    rows = lines(bundle)
    edit_entry(rows, 8, detail={"i": 8, "name": "nothing to see"})
    recompute_from(rows, 8)
    write_lines(bundle, rows)
    resign(bundle, rows, audit.signer, audit.origin)  # even with the log's own key
    with pytest.raises(Invalid, match="rewritten") as info:
        check(bundle, audit)
    assert "seq=5..11" in str(info.value) and info.value.seq == 5
    shutil.rmtree(bundle / "checkpoints")  # hide the earlier checkpoints: the bundle looks valid ...
    check(bundle, audit)
    with pytest.raises(Invalid, match="rewritten"):  # ... but not against a checkpoint pinned before
        check(bundle, audit, pins=[pinned])


async def test_pinned_checkpoint_catches_a_shortened_log(audit: AuditLog, bundle: Path) -> None:
    pinned = (bundle / "checkpoint").read_text()
    rows = lines(bundle)[:15]
    write_lines(bundle, rows)
    resign(bundle, rows, audit.signer, audit.origin)
    shutil.rmtree(bundle / "checkpoints")
    check(bundle, audit)
    with pytest.raises(Invalid, match="deleted") as info:
        check(bundle, audit, pins=[pinned])
    assert info.value.seq == 15


async def test_signature_problems(audit: AuditLog, bundle: Path, tmp_path: Path) -> None:
    note = (bundle / "checkpoint").read_text()
    body, sig_line = note.split("\n\n")
    b64 = sig_line.strip().rsplit(" ", 1)[1]
    raw = bytearray(base64.b64decode(b64))
    raw[10] ^= 1
    (bundle / "checkpoint").write_text(body + "\n\n" + sig_line.replace(b64, base64.b64encode(bytes(raw)).decode()))
    with pytest.raises(Invalid, match="bad signature"):
        check(bundle, audit)
    (bundle / "checkpoint").write_text(body.replace("\n20\n", "\n19\n") + "\n\n" + sig_line)
    with pytest.raises(Invalid, match="bad signature"):
        check(bundle, audit)
    # re-signed with another key (and that key put in the bundle): the pinned key refuses it
    (bundle / "checkpoint").write_text(note)
    intruder = NoteSigner.generate(audit.origin)
    resign(bundle, lines(bundle), intruder, audit.origin)
    (bundle / "verifier.key").write_text(intruder.vkey + "\n")
    with pytest.raises(Invalid, match="unknown key"):
        check(bundle, audit)
    assert verify_bundle(bundle).warnings  # only the bundle's own key vouches for it


async def test_unreadable_bundles(tmp_path: Path, audit: AuditLog) -> None:
    with pytest.raises(BundleError):
        verify_bundle(tmp_path / "nothing", key_text=audit.verifier_key)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError):
        verify_bundle(tmp_path / "empty", key_text=audit.verifier_key)


async def test_export_refuses_to_sign_an_empty_log(audit: AuditLog, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="empty"):
        await export_bundle(audit, tmp_path / "x")


# ------------------------------------------------------------------------------------------ standalone
def crypto_only(tmp_path: Path) -> Path:
    """A directory holding only ``cryptography`` and what it loads (links into this environment)."""
    import cryptography

    site = Path(cryptography.__file__).parents[1]
    deps = tmp_path / "crypto-only"
    deps.mkdir()
    for entry in site.iterdir():
        if entry.name in ("cryptography", "cffi", "pycparser") or entry.name.startswith("_cffi_backend"):
            (deps / entry.name).symlink_to(entry)
    return deps


def run_alone(cwd: Path, deps: Path, *args: str) -> subprocess.CompletedProcess:
    """``python -S``: no site-packages (where gbops is installed); PYTHONPATH is the directory with
    verify.py and the cryptography-only directory, nothing else."""
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": f"{cwd}{os.pathsep}{deps}"}
    return subprocess.run([sys.executable, "-S", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=60)


def test_verify_py_runs_on_its_own(audit: AuditLog, bundle: Path, tmp_path: Path) -> None:
    """verify.py copied alone into an empty directory: nothing of gbops is importable there."""
    alone = tmp_path / "auditor"
    alone.mkdir()
    shutil.copy(VERIFY_PY, alone / "verify.py")
    deps = crypto_only(tmp_path)
    key = key_file(audit, tmp_path)
    for module in ("audit_log", "gbops", "sqlalchemy"):
        probe = run_alone(alone, deps, "-c", f"import {module}")
        assert probe.returncode != 0 and "ModuleNotFoundError" in probe.stderr, module
    r = run_alone(alone, deps, "verify.py", str(bundle), "--key", str(key))
    assert r.returncode == 0, r.stderr
    assert "VALID" in r.stdout and "seq=0..19" in r.stdout
    # the copy inside the bundle works the same
    r = run_alone(bundle, deps, "verify.py", ".", "--key", str(key))
    assert r.returncode == 0, r.stderr
    rows = lines(bundle)
    rows.pop(4)
    write_lines(bundle, rows)
    r = run_alone(alone, deps, "verify.py", str(bundle), "--key", str(key))
    assert r.returncode == 1 and "seq=4" in r.stderr and "INVALID" in r.stderr
    r = run_alone(alone, deps, "verify.py", str(tmp_path / "missing"), "--key", str(key))
    assert r.returncode == 2


def test_verify_imports_nothing_from_the_platform() -> None:
    import ast

    tree = ast.parse(VERIFY_PY.read_text())
    modules = {
        (node.module or "").split(".")[0] if isinstance(node, ast.ImportFrom) else alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert modules - set(sys.stdlib_module_names) == {"cryptography"}


def synthetic_bundle(path: Path, n: int, signer: NoteSigner) -> None:
    from audit_log.merkle import CompactRange
    from audit_log.note import format_checkpoint

    path.mkdir()
    prev = bytes(32)
    cr = CompactRange()
    with open(path / "entries.jsonl", "wb") as f:
        for i in range(n):
            data = canon({"action": "live.start", "actor": {"id": "1", "name": "观察员", "type": "user"},
                          "client_ip": None, "detail": {"i": i}, "prev": prev.hex(), "seq": i,
                          "target": {"id": f"ch{i % 7}", "type": "channel"}, "time": "2024-05-01T08:30:00.000Z"})
            f.write(data + b"\n")
            prev = bytes.fromhex(leaf(data))
            cr.append(prev)
    (path / "checkpoint").write_text(signer.sign(format_checkpoint(signer.name, n, cr.root())))


@pytest.mark.slow
def test_big_bundle_in_several_processes(tmp_path: Path, signer: NoteSigner) -> None:
    n = 3 * verify_module.CHUNK + 123
    synthetic_bundle(tmp_path / "big", n, signer)
    for jobs in (1, 2):
        report = verify_bundle(tmp_path / "big", key_text=signer.vkey, jobs=jobs)
        assert report.entries == n
    rows = lines(tmp_path / "big")
    edit_entry(rows, 2 * verify_module.CHUNK + 5, client_ip="203.0.113.1")  # in the third chunk
    write_lines(tmp_path / "big", rows)
    for jobs in (1, 2):
        with pytest.raises(Invalid, match="altered") as info:
            verify_bundle(tmp_path / "big", key_text=signer.vkey, jobs=jobs)
        assert info.value.seq == 2 * verify_module.CHUNK + 5
