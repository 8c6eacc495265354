"""The audit log's tables and its append-only store.

Tables (see gbops/migrations/versions/0002_audit_log.py for the triggers):

* ``audit_entries``: one row per entry; ``entry`` holds the RFC 8785 bytes exactly as hashed,
  the other columns are copies for queries (the API answers from ``entry``).  The database refuses
  UPDATE, DELETE and TRUNCATE, and refuses an INSERT whose ``seq`` is not the head's + 1 or whose
  ``prev`` is not the head's leaf hash (PostgreSQL also checks the leaf hash against the bytes).
* ``audit_checkpoints``: every signed checkpoint (C2SP signed note), append-only as well.
* ``audit_tree_nodes``: hashes of the perfect subtrees of level >= 1 below the newest checkpoint,
  written together with each checkpoint; they make proofs O(log n).  Derived data: a verifier
  never trusts them, it recomputes.

One writer: :meth:`AuditStore.append` runs in the caller's transaction and holds, until that
transaction ends, an in-process lock and (PostgreSQL) a transaction-scoped advisory lock; on SQLite
the caller's ``BEGIN IMMEDIATE`` write lock serialises processes.  The head is read under those
locks, and the insert runs in a savepoint that is retried after re-reading the head should another
writer (one that ignores the locks) have taken the sequence number.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    and_,
    event,
    func,
    insert,
    or_,
    select,
    text,
    tuple_,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from gbcore.db import SQLITE_BEGIN_IMMEDIATE, Base, UtcDateTime, utcnow

from .canonical import canonical_json
from .merkle import CompactRange, consistency_ranges, inclusion_ranges, perfect_subtrees, range_hash

__all__ = [
    "ZERO_HASH",
    "AuditCheckpointRow",
    "AuditEntryRow",
    "AuditIntegrityError",
    "AuditStore",
    "AuditTreeNode",
    "StoredCheckpoint",
    "StoredEntry",
    "format_time",
]

ZERO_HASH = bytes(32)
#: PostgreSQL advisory lock keys ("gbaudit" and "gbckpt" in ASCII).
PG_APPEND_LOCK = 0x67626175646974
PG_CHECKPOINT_LOCK = 0x6762636B7074
_HOLD_KEY = "audit_log.hold"
_LISTENING_KEY = "audit_log.listening"
_PG_LOCKED_KEY = "audit_log.pg_locked"
_RETRIES = 3


class AuditEntryRow(Base):
    __tablename__ = "audit_entries"
    __table_args__ = (
        Index("ix_audit_entries_time", "time"),
        Index("ix_audit_entries_action", "action"),
        Index("ix_audit_entries_actor_id", "actor_id"),
        Index("ix_audit_entries_target_id", "target_id"),
    )

    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    )
    time: Mapped[datetime] = mapped_column(UtcDateTime(precision=3))
    action: Mapped[str] = mapped_column(String(64))
    actor_type: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[str | None] = mapped_column(String(64))
    actor_name: Mapped[str | None] = mapped_column(Text)
    target_type: Mapped[str] = mapped_column(String(32))
    target_id: Mapped[str | None] = mapped_column(String(128))
    client_ip: Mapped[str | None] = mapped_column(String(64))
    prev: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    leaf_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    entry: Mapped[bytes] = mapped_column(LargeBinary)


class AuditCheckpointRow(Base):
    __tablename__ = "audit_checkpoints"

    tree_size: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    )
    root_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    note: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(precision=3))


class AuditTreeNode(Base):
    __tablename__ = "audit_tree_nodes"

    level: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))


ENTRIES = AuditEntryRow.__table__
_COLUMNS = [
    "seq", "time", "action", "actor_type", "actor_id", "actor_name", "target_type", "target_id", "client_ip",
    "prev", "leaf_hash", "entry",
]
CHECKPOINTS = AuditCheckpointRow.__table__
NODES = AuditTreeNode.__table__


class AuditIntegrityError(RuntimeError):
    """The stored log does not match what was signed before: it was tampered with."""


def format_time(value: datetime) -> str:
    """RFC 3339 UTC with milliseconds and ``Z``, as in the entries."""
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class StoredEntry:
    seq: int
    leaf_hash: bytes
    data: bytes  # the RFC 8785 bytes, exactly as hashed

    def value(self) -> dict[str, Any]:
        return json.loads(self.data)


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    tree_size: int
    root_hash: bytes
    note: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class _Head:
    size: int
    leaf_hash: bytes
    time: datetime | None


def _leaf(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def _chain_marker(prev: bytes, seq: int) -> bytes:
    """Bytes that the canonical form of entry ``seq`` following a leaf hash ``prev`` contains (its
    members are sorted: ... "detail", "prev", "seq", "target", ...).  A cheap check for the
    checkpointer; verify.py parses every entry."""
    return b'"prev":"' + prev.hex().encode() + b'","seq":' + str(seq).encode() + b',"target":'


def _release_hold(session: Any, transaction: Any) -> None:
    """Session event: the transaction that appended has ended (committed, rolled back or closed)."""
    if transaction.parent is None:
        session.info.pop(_PG_LOCKED_KEY, None)
        store = session.info.pop(_HOLD_KEY, None)
        if store is not None:
            store._lock.release()


class AuditStore:
    """Database access of one audit log (see the module docstring)."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self.sessionmaker = sessionmaker
        self._lock = asyncio.Lock()
        self._checkpoint_lock = asyncio.Lock()

    # ----------------------------------------------------------------------------------- append
    async def _hold(self, session: AsyncSession) -> None:
        """Take the writer lock for the rest of ``session``'s current transaction."""
        if session.info.get(_HOLD_KEY) is self:
            return
        await self._lock.acquire()
        try:
            if not session.info.get(_LISTENING_KEY):
                event.listen(session.sync_session, "after_transaction_end", _release_hold)
                session.info[_LISTENING_KEY] = True
            session.info[_HOLD_KEY] = self
        except BaseException:
            self._lock.release()
            raise

    async def _write_connection(self, session: AsyncSession) -> AsyncConnection:
        if not session.in_transaction():
            conn = await session.connection(execution_options={SQLITE_BEGIN_IMMEDIATE: True})
        else:
            conn = await session.connection()
        if conn.dialect.name == "sqlite" and not conn.sync_connection.get_execution_options().get(SQLITE_BEGIN_IMMEDIATE):
            raise RuntimeError(
                "audit append on SQLite needs a transaction started with BEGIN IMMEDIATE "
                "(gbcore.db.SQLITE_BEGIN_IMMEDIATE, gbcore.db.begin_write)"
            )
        return conn

    @staticmethod
    async def _head(conn: AsyncConnection) -> _Head:
        row = (
            await conn.execute(
                select(ENTRIES.c.seq, ENTRIES.c.leaf_hash, ENTRIES.c.time).order_by(ENTRIES.c.seq.desc()).limit(1)
            )
        ).first()
        if row is None:
            return _Head(0, ZERO_HASH, None)
        return _Head(row.seq + 1, row.leaf_hash, row.time)

    async def append(
        self, session: AsyncSession, records: Sequence[dict[str, Any]], *, savepoint: bool = True
    ) -> list[StoredEntry]:
        """Append ``records`` (entry fields without ``seq``, ``time`` and ``prev``) in ``session``'s
        transaction.  The entries exist once the caller commits, and are gone if it rolls back.

        The INSERT runs in a savepoint, retried on a conflict; ``savepoint=False`` (a transaction
        of the log's own, which the caller retries as a whole) saves the two round trips."""
        if not records:
            return []
        # Lock order, everywhere: the database's write lock (SQLite: BEGIN IMMEDIATE, by the caller or
        # here), then the in-process lock, then (PostgreSQL) the advisory lock.
        conn = await self._write_connection(session)
        await self._hold(session)
        postgresql = conn.dialect.name == "postgresql"
        if postgresql and not session.info.get(_PG_LOCKED_KEY):
            await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_APPEND_LOCK})
            session.info[_PG_LOCKED_KEY] = True
        for attempt in range(_RETRIES):
            head = await self._head(conn)
            now = utcnow()
            now = now.replace(microsecond=now.microsecond - now.microsecond % 1000)  # as in the entry
            if head.time is not None and now < head.time:
                now = head.time  # times never go backwards along the log
            stamp = format_time(now)
            rows: list[tuple[Any, ...]] = []
            out: list[StoredEntry] = []
            prev = head.leaf_hash
            seq = head.size
            for record in records:
                data = canonical_json({**record, "seq": seq, "time": stamp, "prev": prev.hex()})
                leaf = _leaf(data)
                actor = record["actor"]
                target = record["target"]
                rows.append(
                    (seq, now, record["action"], actor["type"], actor.get("id"), actor.get("name"), target["type"],
                     target.get("id"), record.get("client_ip"), prev, leaf, data)
                )
                out.append(StoredEntry(seq, leaf, data))
                prev = leaf
                seq += 1
            try:
                if savepoint:
                    async with session.begin_nested():
                        await session.connection()  # emits the SAVEPOINT
                        await self._insert(conn, rows, postgresql)
                else:
                    await self._insert(conn, rows, postgresql)
            except IntegrityError:
                if not savepoint or attempt == _RETRIES - 1:
                    raise
                continue
            return out
        raise AssertionError("unreachable")

    @staticmethod
    async def _insert(conn: AsyncConnection, rows: list[tuple[Any, ...]], postgresql: bool) -> None:
        if not postgresql:
            await conn.execute(insert(ENTRIES), [dict(zip(_COLUMNS, row, strict=True)) for row in rows])
            return
        # PostgreSQL: COPY on the session's own connection, inside its transaction (several times
        # faster than an INSERT per row; the row triggers still run).
        raw = await conn.get_raw_connection()
        try:
            await raw.driver_connection.copy_records_to_table("audit_entries", records=rows, columns=_COLUMNS)
        except Exception as exc:
            if str(getattr(exc, "sqlstate", "")).startswith("23"):  # integrity constraint violation
                raise IntegrityError("COPY audit_entries", None, exc) from exc
            raise

    # ----------------------------------------------------------------------------------- reading
    async def size(self) -> int:
        async with self.sessionmaker() as session:
            last = await session.scalar(select(func.max(ENTRIES.c.seq)))
        return 0 if last is None else last + 1

    async def iter_entries(self, start: int, stop: int, *, chunk: int = 5000) -> AsyncIterator[StoredEntry]:
        """Entries with ``start <= seq < stop`` in seq order (rows as stored, gaps included)."""
        seq = start
        while seq < stop:
            async with self.sessionmaker() as session:
                rows = (
                    await session.execute(
                        select(ENTRIES.c.seq, ENTRIES.c.leaf_hash, ENTRIES.c.entry)
                        .where(ENTRIES.c.seq >= seq, ENTRIES.c.seq < stop)
                        .order_by(ENTRIES.c.seq)
                        .limit(chunk)
                    )
                ).all()
            if not rows:
                return
            for row in rows:
                yield StoredEntry(row.seq, row.leaf_hash, bytes(row.entry))
            seq = rows[-1].seq + 1

    async def get_entry(self, seq: int) -> StoredEntry | None:
        async with self.sessionmaker() as session:
            row = (
                await session.execute(
                    select(ENTRIES.c.seq, ENTRIES.c.leaf_hash, ENTRIES.c.entry).where(ENTRIES.c.seq == seq)
                )
            ).first()
        return None if row is None else StoredEntry(row.seq, row.leaf_hash, bytes(row.entry))

    async def query(
        self,
        *,
        actions: Sequence[str] = (),
        action_prefix: str | None = None,
        actor: str | None = None,
        target_type: str | None = None,
        target_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        offset: int = 0,
        limit: int = 50,
        newest_first: bool = True,
        where: Any = None,
    ) -> tuple[int, list[StoredEntry]]:
        """Entries matching every given filter, paged.  ``actor`` matches the actor's id or name;
        ``since`` is inclusive, ``until`` exclusive; ``where``: one more SQL condition on :data:`ENTRIES`
        (the caller's data scope)."""
        conds: list[Any] = [] if where is None else [where]
        if actions:
            conds.append(ENTRIES.c.action.in_(list(actions)))
        if action_prefix:
            escaped = action_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            conds.append(ENTRIES.c.action.like(escaped + "%", escape="\\"))
        if actor:
            conds.append(or_(ENTRIES.c.actor_id == actor, ENTRIES.c.actor_name == actor))
        if target_type:
            conds.append(ENTRIES.c.target_type == target_type)
        if target_id:
            conds.append(ENTRIES.c.target_id == target_id)
        if since is not None:
            conds.append(ENTRIES.c.time >= since)
        if until is not None:
            conds.append(ENTRIES.c.time < until)
        where = and_(*conds) if conds else None
        count = select(func.count()).select_from(ENTRIES)
        stmt = select(ENTRIES.c.seq, ENTRIES.c.leaf_hash, ENTRIES.c.entry)
        if where is not None:
            count = count.where(where)
            stmt = stmt.where(where)
        stmt = stmt.order_by(ENTRIES.c.seq.desc() if newest_first else ENTRIES.c.seq).offset(offset).limit(limit)
        async with self.sessionmaker() as session:
            total = await session.scalar(count) or 0
            rows = (await session.execute(stmt)).all()
        return total, [StoredEntry(r.seq, r.leaf_hash, bytes(r.entry)) for r in rows]

    # ----------------------------------------------------------------------------------- checkpoints
    async def latest_checkpoint(self) -> StoredCheckpoint | None:
        async with self.sessionmaker() as session:
            row = (
                await session.execute(select(CHECKPOINTS).order_by(CHECKPOINTS.c.tree_size.desc()).limit(1))
            ).first()
        return None if row is None else StoredCheckpoint(row.tree_size, row.root_hash, row.note, row.created_at)

    async def checkpoints(self, lo: int = 0, hi: int | None = None) -> list[StoredCheckpoint]:
        """Stored checkpoints with ``lo <= tree_size <= hi``, smallest first."""
        stmt = select(CHECKPOINTS).where(CHECKPOINTS.c.tree_size >= lo)
        if hi is not None:
            stmt = stmt.where(CHECKPOINTS.c.tree_size <= hi)
        async with self.sessionmaker() as session:
            rows = (await session.execute(stmt.order_by(CHECKPOINTS.c.tree_size))).all()
        return [StoredCheckpoint(r.tree_size, r.root_hash, r.note, r.created_at) for r in rows]

    async def sample_checkpoints(self, limit: int = 1000) -> list[StoredCheckpoint]:
        """At most about ``limit`` stored checkpoints, evenly spread over all of them, smallest
        first; the smallest and the newest are always included."""
        async with self.sessionmaker() as session:
            count = await session.scalar(select(func.count()).select_from(CHECKPOINTS)) or 0
            if count <= limit:
                return await self.checkpoints()
            step = -(-count // limit)
            numbered = select(
                CHECKPOINTS, func.row_number().over(order_by=CHECKPOINTS.c.tree_size).label("rn")
            ).subquery()
            rows = (
                await session.execute(
                    select(numbered.c.tree_size, numbered.c.root_hash, numbered.c.note, numbered.c.created_at)
                    .where(or_((numbered.c.rn - 1) % step == 0, numbered.c.rn == count))
                    .order_by(numbered.c.tree_size)
                )
            ).all()
        return [StoredCheckpoint(r.tree_size, r.root_hash, r.note, r.created_at) for r in rows]

    async def _built_size(self, conn: AsyncConnection) -> int:
        size = await conn.scalar(select(func.max(CHECKPOINTS.c.tree_size)))
        return size or 0

    async def _fetch_nodes(self, conn: AsyncConnection, nodes: Iterable[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        wanted = set(nodes)
        found: dict[tuple[int, int], bytes] = {}
        leaves = sorted(i for level, i in wanted if level == 0)
        inner = sorted((level, i) for level, i in wanted if level > 0)
        for start in range(0, len(leaves), 500):
            part = leaves[start : start + 500]
            rows = await conn.execute(select(ENTRIES.c.seq, ENTRIES.c.leaf_hash).where(ENTRIES.c.seq.in_(part)))
            found.update({(0, r.seq): bytes(r.leaf_hash) for r in rows})
        for start in range(0, len(inner), 300):
            part = inner[start : start + 300]
            rows = await conn.execute(
                select(NODES.c.level, NODES.c.idx, NODES.c.hash).where(tuple_(NODES.c.level, NODES.c.idx).in_(part))
            )
            found.update({(r.level, r.idx): bytes(r.hash) for r in rows})
        missing = wanted - found.keys()
        if missing:
            raise AuditIntegrityError(f"审计树节点缺失 / audit tree nodes missing: {sorted(missing)[:5]}")
        return found

    async def _hashes_of_ranges(
        self, conn: AsyncConnection, ranges: Sequence[tuple[int, int]]
    ) -> list[bytes]:
        needed = [node for lo, hi in ranges for node in perfect_subtrees(lo, hi)]
        found = await self._fetch_nodes(conn, needed)
        return [range_hash(lo, hi, lambda level, index: found[(level, index)]) for lo, hi in ranges]

    async def root_at(self, size: int, conn: AsyncConnection | None = None) -> bytes:
        """The root of the first ``size`` entries, from the node table (``size`` <= built size)."""
        if size == 0:
            return hashlib.sha256(b"").digest()
        if conn is None:
            async with self.sessionmaker() as session:
                return await self.root_at(size, await session.connection())
        return (await self._hashes_of_ranges(conn, [(0, size)]))[0]

    async def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        async with self.sessionmaker() as session:
            conn = await session.connection()
            await self._require_built(conn, size)
            return await self._hashes_of_ranges(conn, inclusion_ranges(index, size))

    async def consistency_proof(self, old: int, new: int) -> list[bytes]:
        async with self.sessionmaker() as session:
            conn = await session.connection()
            await self._require_built(conn, new)
            return await self._hashes_of_ranges(conn, consistency_ranges(old, new))

    async def compact_range(self, size: int) -> list[bytes]:
        """The hashes of the perfect subtrees covering [0, size), largest first."""
        if size == 0:
            return []
        async with self.sessionmaker() as session:
            conn = await session.connection()
            await self._require_built(conn, size)
            nodes = perfect_subtrees(0, size)
            found = await self._fetch_nodes(conn, nodes)
        return [found[n] for n in nodes]

    async def _require_built(self, conn: AsyncConnection, size: int) -> None:
        built = await self._built_size(conn)
        if size > built:
            raise ValueError(f"tree size {size} is beyond the newest checkpoint ({built})")

    async def build_checkpoint(
        self, sign: Any, *, size: int | None = None, chunk: int = 50_000
    ) -> StoredCheckpoint | None:
        """Sign and store a checkpoint for ``size`` entries (default: all), extending the node table.

        ``sign(size, root) -> note`` signs.  Returns None when the log is empty.  A backlog is worked
        off in steps of ``chunk`` entries, each step a checkpoint of its own, so that no write
        transaction runs long.  Entries are re-hashed from their stored bytes and the chain is
        checked; a mismatch raises :class:`AuditIntegrityError` and nothing is signed."""
        async with self._checkpoint_lock:
            while True:
                async with self.sessionmaker() as session:
                    conn = await session.connection()
                    built = await self._built_size(conn)
                    head = await self._head(conn)
                    frontier_nodes = perfect_subtrees(0, built) if built else []
                    frontier = await self._fetch_nodes(conn, frontier_nodes) if built else {}
                    prev = ZERO_HASH
                    if built:
                        prev = (await self._fetch_nodes(conn, [(0, built - 1)]))[(0, built - 1)]
                target = head.size if size is None else size
                if target > head.size:
                    raise ValueError(f"tree size {target} is beyond the log ({head.size} entries)")
                if target == 0:
                    return None
                if target <= built:
                    return await self._sign_old(sign, target)
                step_end = min(target, built + chunk)
                cr = CompactRange(built, [frontier[n] for n in frontier_nodes])
                new_nodes: list[tuple[int, int, bytes]] = []
                expected = built
                async for entry in self.iter_entries(built, step_end):
                    if entry.seq != expected:
                        raise AuditIntegrityError(f"审计条目 seq={expected} 缺失 / audit entry seq={expected} is missing")
                    leaf = _leaf(entry.data)
                    if leaf != entry.leaf_hash:
                        raise AuditIntegrityError(f"审计条目 seq={entry.seq} 与其叶哈希不符 / audit entry seq={entry.seq} does not match its leaf hash")
                    if _chain_marker(prev, entry.seq) not in entry.data:
                        raise AuditIntegrityError(f"审计条目 seq={entry.seq} 与前一条不衔接 / audit entry seq={entry.seq} does not chain to seq={entry.seq - 1}")
                    for level, index, h in cr.append(leaf):
                        new_nodes.append((level, index, h))
                    prev = leaf
                    expected += 1
                if expected != step_end:
                    raise AuditIntegrityError(f"审计条目 seq={expected} 缺失 / audit entry seq={expected} is missing")
                root = cr.root()
                note = sign(step_end, root)
                async with self.sessionmaker() as session:
                    conn = await session.connection(execution_options={SQLITE_BEGIN_IMMEDIATE: True})
                    if conn.dialect.name == "postgresql":
                        await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_CHECKPOINT_LOCK})
                    if await self._built_size(conn) != built:
                        await session.rollback()
                        continue  # another process built meanwhile: start over from its state
                    if conn.dialect.name == "postgresql" and new_nodes:
                        raw = await conn.get_raw_connection()
                        await raw.driver_connection.copy_records_to_table(
                            "audit_tree_nodes", records=new_nodes, columns=["level", "idx", "hash"]
                        )
                    for start in range(0, len(new_nodes) if conn.dialect.name != "postgresql" else 0, 5000):
                        part = new_nodes[start : start + 5000]
                        await conn.execute(insert(NODES), [{"level": lv, "idx": i, "hash": h} for lv, i, h in part])
                    now = utcnow()
                    await conn.execute(
                        insert(CHECKPOINTS),
                        {"tree_size": step_end, "root_hash": root, "note": note, "created_at": now},
                    )
                    await session.commit()
                if step_end == target:
                    return StoredCheckpoint(step_end, root, note, now)

    async def _sign_old(self, sign: Any, size: int) -> StoredCheckpoint:
        """A checkpoint for a size at or below the built size (e.g. an export that ends early)."""
        async with self.sessionmaker() as session:
            row = (await session.execute(select(CHECKPOINTS).where(CHECKPOINTS.c.tree_size == size))).first()
            if row is not None:
                return StoredCheckpoint(row.tree_size, row.root_hash, row.note, row.created_at)
            root = await self.root_at(size, await session.connection())
        note = sign(size, root)
        now = utcnow()
        async with self.sessionmaker() as session:
            conn = await session.connection(execution_options={SQLITE_BEGIN_IMMEDIATE: True})
            exists = await conn.scalar(select(CHECKPOINTS.c.tree_size).where(CHECKPOINTS.c.tree_size == size))
            if exists is None:
                await conn.execute(
                    insert(CHECKPOINTS), {"tree_size": size, "root_hash": root, "note": note, "created_at": now}
                )
            await session.commit()
        return StoredCheckpoint(size, root, note, now)


def restricted_role_sql(role: str) -> str:
    """SQL (PostgreSQL) that lets ``role`` only read and insert audit rows: run it as the owner
    when the platform connects as a role of its own."""
    if not role.replace("_", "").isalnum():
        raise ValueError("role must be a plain identifier")
    tables = "audit_entries, audit_checkpoints"
    return (
        f"REVOKE ALL ON {tables} FROM {role};\n"
        f"GRANT SELECT, INSERT ON {tables} TO {role};\n"
        f"GRANT SELECT, INSERT ON audit_tree_nodes TO {role};\n"
    )
