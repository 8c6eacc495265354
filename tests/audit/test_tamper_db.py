"""Tampering with a real log in the database (SQLite, and PostgreSQL as superuser), after the
append-only triggers were dropped: the export notices and signs nothing new, and ``verify`` fails
naming the entry; a checkpoint pinned before catches what hides from everything else."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from sqlalchemy import text

from audit_log.canonical import canonical_json
from audit_log.export import export_bundle
from audit_log.log import AuditLog
from audit_log.note import NoteSigner
from audit_log.verify import Invalid, verify_bundle

from .conftest import fill

TRIGGERS = {
    "sqlite": ["audit_entries_guard", "audit_entries_no_update", "audit_entries_no_delete",
               "audit_checkpoints_no_update", "audit_checkpoints_no_delete", "audit_tree_nodes_no_update",
               "audit_tree_nodes_no_delete"],
    "postgresql": [f"{name} ON {table}" for table in ("audit_entries", "audit_checkpoints", "audit_tree_nodes")
                   for name in (f"{table}_append_only", f"{table}_no_truncate")]
    + ["audit_entries_guard ON audit_entries"],
}


def leaf(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


class Db:
    def __init__(self, audit: AuditLog) -> None:
        self.audit = audit

    async def sql(self, statement: str, **params) -> None:
        async with self.audit.sessionmaker() as session:
            await session.execute(text(statement), params)
            await session.commit()

    async def drop_triggers(self) -> None:
        async with self.audit.sessionmaker() as session:
            dialect = session.bind.dialect.name
            for trigger in TRIGGERS[dialect]:
                await session.execute(text(f"DROP TRIGGER {trigger}"))
            if dialect == "postgresql":
                await session.execute(text("ALTER TABLE audit_entries DROP CONSTRAINT uq_audit_entries_prev"))
            await session.commit()

    async def entry(self, seq: int) -> dict:
        e = await self.audit.store.get_entry(seq)
        assert e is not None
        return json.loads(e.data)

    async def put(self, seq: int, value: dict, *, leaf_column: bool = True) -> bytes:
        data = canonical_json(value)
        params = {"s": seq, "e": data, "l": leaf(data), "p": bytes.fromhex(value["prev"])}
        cols = "entry = :e, prev = :p" + (", leaf_hash = :l" if leaf_column else "")
        await self.sql(f"UPDATE audit_entries SET {cols} WHERE seq = :s", **params)
        return data


@pytest.fixture
async def db(audit: AuditLog) -> Db:
    await fill(audit, 5)
    await audit.checkpoint()
    await fill(audit, 7, prefix="b")
    await audit.checkpoint()
    await fill(audit, 8, prefix="c")
    await audit.checkpoint()  # 20 entries; pinned in the data directory as well
    d = Db(audit)
    await d.drop_triggers()
    return d


async def export_and_verify(audit: AuditLog, out: Path, *, tampered: bool = True, key: str | None = None,
                            pins: list[str] | None = None) -> Invalid:
    result = await export_bundle(audit, out)
    assert bool(result.problems) is tampered, result.problems
    with pytest.raises(Invalid) as info:
        verify_bundle(out, key_text=key or audit.verifier_key, pins=pins)
    return info.value


async def test_edit_a_field(db: Db, audit: AuditLog, tmp_path: Path) -> None:
    value = await db.entry(7)
    value["detail"]["name"] = "nothing happened"
    await db.put(7, value)
    err = await export_and_verify(audit, tmp_path / "b")
    assert err.seq == 7 and "altered" in str(err)


async def test_edit_and_recompute_every_hash_after_it(db: Db, audit: AuditLog, tmp_path: Path,
                                                      data_dir: Path) -> None:
    pinned_by_auditor = (await audit.latest_checkpoint()).note
    value = await db.entry(8)
    value["client_ip"] = "198.51.100.66"
    prev = await db.put(8, value)
    for seq in range(9, 20):
        value = await db.entry(seq)
        value["prev"] = leaf(prev).hex()
        prev = await db.put(seq, value)
    # 1) the checkpoints signed before are still in the database
    err = await export_and_verify(audit, tmp_path / "b1")
    assert err.seq == 5 and "rewritten" in str(err) and "seq=5..11" in str(err)
    # 2) the attacker also wipes the signed checkpoints and the tree: the pinned file still knows
    await db.sql("DELETE FROM audit_checkpoints")
    await db.sql("DELETE FROM audit_tree_nodes")
    err = await export_and_verify(audit, tmp_path / "b2")
    assert "root mismatch" in str(err) or "rewritten" in str(err)
    # 3) ... and the file: now the platform signs the rewritten log, only the auditor's pin catches it
    (data_dir / "audit" / "checkpoint").unlink()
    result = await export_bundle(audit, tmp_path / "b3")
    assert result.problems == []
    verify_bundle(tmp_path / "b3", key_text=audit.verifier_key)
    with pytest.raises(Invalid, match="rewritten"):
        verify_bundle(tmp_path / "b3", key_text=audit.verifier_key, pins=[pinned_by_auditor])


async def test_delete_the_tail(db: Db, audit: AuditLog, tmp_path: Path) -> None:
    await db.sql("DELETE FROM audit_entries WHERE seq >= 17")
    err = await export_and_verify(audit, tmp_path / "b")
    assert err.seq == 17 and "deleted" in str(err)


async def test_delete_a_middle_entry(db: Db, audit: AuditLog, tmp_path: Path) -> None:
    await db.sql("DELETE FROM audit_entries WHERE seq = 9")
    err = await export_and_verify(audit, tmp_path / "b")
    assert err.seq == 9 and "missing" in str(err)


async def test_reorder_two(db: Db, audit: AuditLog, tmp_path: Path) -> None:
    a, b = await audit.store.get_entry(12), await audit.store.get_entry(13)
    await db.sql("UPDATE audit_entries SET entry = :e WHERE seq = 12", e=b.data)
    await db.sql("UPDATE audit_entries SET entry = :e WHERE seq = 13", e=a.data)
    err = await export_and_verify(audit, tmp_path / "b")
    assert err.seq == 12 and "reordered" in str(err)


async def test_insert_one(db: Db, audit: AuditLog, tmp_path: Path) -> None:
    await db.sql("UPDATE audit_entries SET seq = seq + 1000 WHERE seq >= 10")
    await db.sql("UPDATE audit_entries SET seq = seq - 999 WHERE seq >= 1000")
    forged = await db.entry(11)  # the old entry 10
    forged["detail"] = {"note": "forged"}
    data = canonical_json(forged)
    await db.sql(
        "INSERT INTO audit_entries (seq, time, action, actor_type, target_type, prev, leaf_hash, entry) "
        "SELECT 10, time, action, actor_type, target_type, :p, :l, :e FROM audit_entries WHERE seq = 11",
        p=hashlib.sha256(b"x").digest(), l=leaf(data), e=data,
    )
    err = await export_and_verify(audit, tmp_path / "b")
    assert err.seq == 10 and "twice" in str(err)


async def test_resign_with_another_key(db: Db, audit: AuditLog, tmp_path: Path) -> None:
    value = await db.entry(19)
    value["detail"] = {}
    await db.put(19, value)
    await db.sql("DELETE FROM audit_checkpoints")
    await db.sql("DELETE FROM audit_tree_nodes")
    (audit.checkpoint_file).unlink()
    intruder = AuditLog(audit.sessionmaker, NoteSigner.generate(audit.origin), data_dir=tmp_path / "elsewhere")
    err = await export_and_verify(intruder, tmp_path / "b", tampered=False, key=audit.verifier_key)
    assert "unknown key" in str(err)
