"""``gbops audit export``: write a bundle that an auditor checks with ``verify.py`` and nothing else.

Bundle layout (a directory, or the same inside a .zip)::

    entries.jsonl      the entries seq=FROM..TO, one per line, bytes exactly as stored and hashed
    checkpoint         signed checkpoint of the tree of TO+1 entries (the last exported entry)
    consistency.json   only when FROM > 0: how the exported entries attach to the earlier ones
    checkpoints/       earlier checkpoints the log signed (for narrowing down rewritten entries)
    verifier.key       the log's Ed25519 verifier key (vkey)
    verify.py          the checker (standard library + cryptography)
    README.txt         how to check the bundle, with and without verify.py

The export re-hashes every entry from seq 0 and compares the tree with the checkpoints signed before
(up to :data:`MAX_WITNESSES` of them, evenly spread, always the newest; and the checkpoint pinned in
the data directory).  When they disagree the log
was tampered with: the export then signs nothing new - the bundle carries the newest checkpoint
signed before, so that ``verify.py`` fails on it too - and :class:`ExportResult.problems` says what
is wrong.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from .log import AuditLog
from .merkle import CompactRange, leaf_hash
from .note import NoteError, format_checkpoint, open_note, parse_checkpoint
from .store import ZERO_HASH, AuditIntegrityError

__all__ = ["ExportError", "ExportResult", "export_bundle"]

MAX_WITNESSES = 1000


class ExportError(ValueError):
    """Nothing to export, or a bad range."""


@dataclass
class ExportResult:
    path: Path
    first_seq: int
    last_seq: int
    tree_size: int
    checkpoint: str
    entries_sha256: str
    bundle_sha256: str | None = None  # of the .zip, when one was written
    problems: list[str] = field(default_factory=list)


def _b64(h: bytes) -> str:
    return base64.b64encode(h).decode()


README = """\
gbops 审计日志导出包 / gbops audit log export
=============================================

日志 / log:        {origin}
条目 / entries:    seq={first}..{last} ({count})
树大小 / tree size: {size}
根哈希 / root:      {root}

快速检查 / Quick check (Python 3.11+, `pip install cryptography`):

    python verify.py . --key <你事先保存的 verifier.key / the verifier.key you pinned before>

    exit 0 = 有效 valid; 1 = 无效 invalid (names the first entry that breaks); 2 = cannot check.
    Add --pin FILE for every checkpoint you saved earlier (GET /api/audit/checkpoint).

By hand (no gbops code needed):

1. entries.jsonl: each line is one entry, RFC 8785 canonical JSON in UTF-8, ending in "\\n" (not
   part of the entry).  Members: seq (0, 1, 2, ... with no gaps), time (RFC 3339 UTC, ms), actor
   {{type,id,name}}, action, target {{type,id}}, client_ip, detail, prev.
2. Leaf hash of a line: SHA-256 of one 0x00 byte followed by the line's bytes.
   `prev` of entry n is the lowercase hex leaf hash of entry n-1 (64 zeros for entry 0).
3. Merkle tree (RFC 9162 section 2.1): MTH of one leaf is its leaf hash; for n > 1 leaves, with k
   the largest power of two < n, MTH = SHA-256(0x01 || MTH(first k) || MTH(the rest)).
4. checkpoint is a C2SP signed note (tlog-checkpoint): lines "<origin>", "<tree size>",
   "<base64 root>", a blank line, then "— <key name> <base64(4-byte key id || Ed25519 signature)>".
   The signature covers the three lines including their newlines.  verifier.key is
   "<name>+<hex key id>+<base64(0x01 || 32-byte Ed25519 public key)>"; the key id is the first 4
   bytes of SHA-256(<name> || 0x0A || 0x01 || public key).  Check that key against a copy you
   obtained independently: a bundle cannot vouch for its own key.
5. The tree size must be {size} and the root computed in step 3 must equal the checkpoint's root.
6. consistency.json (only when the export does not start at seq 0): `prefix` are the hashes of the
   perfect subtrees covering entries 0..{first_minus_1} (largest first); folding them right to
   left with step 3's node hash gives `old_root`; appending this bundle's leaves to them gives the
   checkpoint's root.  `prev_inclusion` is the RFC 9162 inclusion proof of `prev_leaf` (entry
   {first_minus_1}) in the tree of `old_size` entries, `consistency` the consistency proof from
   `old_size` to the tree size.  A checkpoint of `old_size` entries saved from an earlier export
   must have `old_root` as its root.
7. checkpoints/ holds earlier signed checkpoints; the first N entries must hash to the root of each
   one of size N.
"""


class _Files:
    """The blocking file work of an export (run in a worker thread)."""

    def __init__(self, out: Path) -> None:
        self.out = out
        parent = out.parent if out.parent.exists() else None
        self.tmp = Path(tempfile.mkdtemp(prefix=".audit-export-", dir=parent))
        self._entries = open(self.tmp / "entries.jsonl", "wb")

    def write_entries(self, lines: list[bytes]) -> None:
        self._entries.write(b"".join(lines))

    def close_entries(self) -> None:
        self._entries.flush()
        self._entries.close()

    def write(self, name: str, text: str) -> None:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, "utf-8")

    def finish(self) -> str | None:
        (self.tmp / "checkpoints").mkdir(exist_ok=True)
        shutil.copyfile(Path(__file__).with_name("verify.py"), self.tmp / "verify.py")
        if self.out.exists():
            raise ExportError(f"{self.out} 已存在 / already exists")
        if self.out.suffix.lower() == ".zip":
            return _write_zip(self.tmp, self.out)
        self.tmp.rename(self.out)
        return None

    def discard(self) -> None:
        if not self._entries.closed:
            self._entries.close()
        if self.tmp.exists():
            shutil.rmtree(self.tmp, ignore_errors=True)


async def export_bundle(audit: AuditLog, out: Path | str, *, start: int = 0, end: int | None = None) -> ExportResult:
    """Write the bundle of entries ``start..end`` (inclusive; default: to the newest) to ``out``
    (a directory, or a .zip file when the name ends in .zip).  Raises :class:`ExportError` for an
    empty log or a bad range; tampering is reported in :attr:`ExportResult.problems`."""
    out = Path(out)
    store = audit.store
    head_size = await store.size()
    if head_size == 0:
        raise ExportError("审计日志为空 / the audit log is empty")
    last = head_size - 1 if end is None else end
    if not 0 <= start <= last < head_size:
        raise ExportError(
            f"导出范围无效 / bad range: seq {start}..{last}; the log holds seq 0..{head_size - 1}"
        )
    if await asyncio.to_thread(out.exists):
        raise ExportError(f"{out} 已存在 / already exists")
    size = last + 1
    problems: list[str] = []

    # Every checkpoint signed before, and the one pinned in the data directory.
    stored = await store.sample_checkpoints(MAX_WITNESSES)
    pinned_file = None
    try:
        pinned_file = audit.read_checkpoint_file()
    except AuditIntegrityError as exc:
        problems.append(str(exc))
    known: dict[int, bytes] = {cp.tree_size: cp.root_hash for cp in stored}
    if pinned_file is not None:
        _, pcp = pinned_file
        if pcp.size in known and known[pcp.size] != pcp.root:
            problems.append(f"检查点文件与数据库中前 {pcp.size} 条的根哈希不一致 / the checkpoint file and the database disagree about "
                f"the root of {pcp.size} entries")
        known.setdefault(pcp.size, pcp.root)
    newest_signed = max(known, default=0)
    if newest_signed > head_size:
        problems.append(
            f"审计日志只有 {head_size} 条，但已签名的检查点覆盖 {newest_signed} 条：条目被删除 / the log holds "
            f"{head_size} entries but a checkpoint of {newest_signed} entries was signed: entries were deleted"
        )

    files = await asyncio.to_thread(_Files, out)
    try:
        digest = hashlib.sha256()
        cr = CompactRange()
        prefix_hashes: list[bytes] = []
        prev_inclusion: list[bytes] = []
        prev_leaf = ZERO_HASH
        first_prev_leaf = ZERO_HASH
        expected = 0
        rewritten = False
        pending: list[bytes] = []
        async for entry in store.iter_entries(0, size):
            if entry.seq != expected and not problems:
                problems.append(f"审计条目 seq={expected} 缺失 / audit entry seq={expected} is missing from the database")
            leaf = leaf_hash(entry.data)
            if not problems:
                try:
                    prev = json.loads(entry.data).get("prev")
                except ValueError:
                    prev = None
                if prev != prev_leaf.hex():
                    problems.append(f"审计条目 seq={entry.seq} 与前一条不衔接 / audit entry seq={entry.seq} does not chain to the "
                        "entry before it")
            if entry.seq == start - 1:
                prev_inclusion = list(reversed(cr.hashes))  # PATH of the last leaf of a tree
                first_prev_leaf = leaf
            if entry.seq == start:
                prefix_hashes = cr.hashes
            if entry.seq >= start:
                line = entry.data + b"\n"
                pending.append(line)
                digest.update(line)
                if len(pending) >= 5000:
                    await asyncio.to_thread(files.write_entries, pending)
                    pending = []
            cr.append(leaf)
            prev_leaf = leaf
            expected = entry.seq + 1
            if not rewritten and cr.size in known and known[cr.size] != cr.root():
                rewritten = True
                problems.append(
                    f"审计日志前 {cr.size} 条与已签名的检查点不符：已被改写 / the first {cr.size} entries do not "
                    f"match the checkpoint signed for them: the log was rewritten"
                )
        await asyncio.to_thread(files.write_entries, pending)
        await asyncio.to_thread(files.close_entries)
        if expected != size and not problems:
            problems.append(f"审计条目 seq={expected} 缺失 / audit entry seq={expected} is missing from the database")
        root = cr.root()

        note = ""
        if not problems:
            try:
                cp = await audit.checkpoint(size=size)
                assert cp is not None
                if cp.root_hash != root:
                    problems.append("存储的默克尔树与条目不符：日志被改写 / the stored Merkle tree does not match the entries: "
                                    "the log was rewritten")
                note = cp.note
            except AuditIntegrityError as exc:
                problems.append(str(exc))
        if problems:
            # Sign nothing over a tampered log: hand over the newest checkpoint signed before.
            latest = max(stored, key=lambda c: c.tree_size, default=None)
            if pinned_file is not None and (latest is None or pinned_file[1].size > latest.tree_size):
                note = pinned_file[0]
            elif latest is not None:
                note = latest.note
            else:
                note = audit.signer.sign(format_checkpoint(audit.origin, 0, hashlib.sha256(b"").digest()))
        await asyncio.to_thread(files.write, "checkpoint", note)

        if start:
            doc: dict[str, object] = {
                "old_size": start,
                "old_root": _b64(CompactRange(start, prefix_hashes).root()),
                "prefix": [_b64(h) for h in prefix_hashes],
                "prev_leaf": _b64(first_prev_leaf),
                "prev_inclusion": [_b64(h) for h in prev_inclusion],
                "tree_size": size,
                "consistency": [],
            }
            try:
                doc["consistency"] = [_b64(h) for h in await store.consistency_proof(start, size)]
            except (ValueError, AuditIntegrityError) as exc:
                problems.append(f"无法生成一致性证明 / no consistency proof: {exc}")
            await asyncio.to_thread(files.write, "consistency.json", json.dumps(doc, indent=1) + "\n")

        # Earlier signed checkpoints inside the range (and beyond it when exporting to the head).
        witnesses = [c for c in stored if start < c.tree_size <= size or (size == head_size and c.tree_size > size)]
        written = {c.tree_size: c.note for c in witnesses}
        for c in witnesses:
            await asyncio.to_thread(files.write, f"checkpoints/{c.tree_size}", c.note)
        if pinned_file is not None:
            pnote, pcp = pinned_file
            if start < pcp.size and (pcp.size <= size or size == head_size) and written.get(pcp.size) != pnote:
                await asyncio.to_thread(files.write, f"checkpoints/{pcp.size}.pinned", pnote)

        await asyncio.to_thread(files.write, "verifier.key", audit.verifier_key + "\n")
        shown_size, shown_root = _checkpoint_body(note, audit)
        readme = README.format(
            origin=audit.origin, first=start, last=last, count=last - start + 1, size=shown_size,
            root=shown_root, first_minus_1=start - 1,
        )
        await asyncio.to_thread(files.write, "README.txt", readme)
        bundle_sha256 = await asyncio.to_thread(files.finish)
        return ExportResult(out, start, last, size, note, digest.hexdigest(), bundle_sha256, problems)
    finally:
        await asyncio.to_thread(files.discard)


def _checkpoint_body(note: str, audit: AuditLog) -> tuple[int, str]:
    try:
        cp = parse_checkpoint(open_note(note, [audit.signer.verifier]))
    except NoteError:
        return -1, "?"
    return cp.size, _b64(cp.root)


def _write_zip(folder: Path, out: Path) -> str:
    buf = out.with_name(out.name + ".tmp")
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(folder).as_posix())
    digest = hashlib.sha256()
    with open(buf, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    buf.rename(out)
    return digest.hexdigest()
