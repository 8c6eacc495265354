"""The store and the AuditLog service on SQLite and PostgreSQL: atomic appends in the caller's
transaction, one writer with contiguous seq, append-only enforced by the database, checkpoints,
proofs."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from sqlalchemy import text

from audit_log.log import Actor, AuditLog, Target, download_detail
from audit_log.merkle import verify_consistency, verify_inclusion
from audit_log.note import open_note, parse_checkpoint
from audit_log.store import AuditIntegrityError
from gbcore.db import begin_write

from .conftest import fill

ALICE = Actor("user", "1", "alice")


async def entries(audit: AuditLog) -> list[dict]:
    return [json.loads(e.data) async for e in audit.store.iter_entries(0, 10**9)]


def check_chain(rows: list[dict], raw: list[bytes]) -> None:
    import hashlib

    prev = "0" * 64
    for i, (row, data) in enumerate(zip(rows, raw, strict=True)):
        assert row["seq"] == i
        assert row["prev"] == prev
        prev = hashlib.sha256(b"\x00" + data).hexdigest()


async def test_entry_format(audit: AuditLog) -> None:
    async with audit.sessionmaker() as session:
        await begin_write(session)
        entry = await audit.append(
            session, actor=ALICE, action="auth.login", target=Target("user", "1"), client_ip="2001:db8::1",
            detail={"b": 2, "a": "设备"}, session_id="s-1",
        )
        await session.commit()
    assert entry.seq == 0
    value = json.loads(entry.data)
    assert list(value) == sorted(value)  # canonical: sorted members, no spaces
    assert set(value) == {"seq", "time", "actor", "action", "target", "client_ip", "detail", "prev"}
    assert value["prev"] == "0" * 64
    assert value["actor"] == {"type": "user", "id": "1", "name": "alice"}
    assert value["detail"] == {"a": "设备", "b": 2, "session_id": "s-1"}
    assert value["time"].endswith("Z") and len(value["time"]) == 24
    assert b" " not in entry.data.replace("设备".encode(), b"")
    assert "设备".encode() in entry.data  # UTF-8, not \\u escapes


async def test_append_joins_the_callers_transaction(audit: AuditLog) -> None:
    async with audit.sessionmaker() as session:
        await begin_write(session)
        await audit.append(session, actor=ALICE, action="auth.logout", target=Target("user", "1"))
        await session.rollback()
    assert await audit.store.size() == 0
    async with audit.sessionmaker() as session:  # the lock was released by the rollback
        await begin_write(session)
        e = await audit.append(session, actor=ALICE, action="auth.logout", target=Target("user", "1"))
        await session.commit()
    assert e.seq == 0 and await audit.store.size() == 1
    # closing a session without committing also releases the writer lock
    async with audit.sessionmaker() as session:
        await begin_write(session)
        await audit.append(session, actor=ALICE, action="auth.logout", target=Target("user", "1"))
    async with asyncio.timeout(5):
        await audit.record(actor=ALICE, action="auth.logout", target=Target("user", "1"))
    assert [e["seq"] for e in await entries(audit)] == [0, 1]


async def test_unknown_action_and_bad_detail_are_refused(audit: AuditLog) -> None:
    with pytest.raises(ValueError, match="unknown audit action"):
        await audit.record(actor=ALICE, action="auth.logn", target=Target("user"))
    with pytest.raises(ValueError, match="dotted"):
        await audit.record(actor=ALICE, action="Login", target=Target("user"))
    with pytest.raises(TypeError):
        await audit.record(actor=ALICE, action="auth.login", target=Target("user"), detail={"x": object()})
    with pytest.raises(ValueError):
        Actor("robot")
    assert await audit.store.size() == 0


async def test_sqlite_needs_begin_immediate(audit: AuditLog) -> None:
    async with audit.sessionmaker() as session:
        await session.execute(text("SELECT 1"))  # a deferred transaction that already read
        if session.bind.dialect.name == "sqlite":  # its snapshot may be stale by the time it writes
            with pytest.raises(RuntimeError, match="BEGIN IMMEDIATE"):
                await audit.append(session, actor=ALICE, action="auth.logout", target=Target("user", "1"))
        else:  # PostgreSQL: the advisory lock, then the head read by the next statement
            await audit.append(session, actor=ALICE, action="auth.logout", target=Target("user", "1"))
            await session.commit()
            assert await audit.store.size() == 1


async def test_concurrent_writers_keep_seq_contiguous(audit: AuditLog, db_engine) -> None:
    """Transactions of their own, batched records and a second AuditLog on the same database
    (another process, as far as locks go) all at once."""
    from gbcore.db import make_engine, make_sessionmaker

    other_engine = make_engine(str(db_engine.url.render_as_string(hide_password=False)))
    other = AuditLog(make_sessionmaker(other_engine), audit.signer)

    async def by_transaction(log: AuditLog, k: int) -> None:
        for i in range(15):
            async with log.sessionmaker() as session:
                await begin_write(session)
                await log.append(session, actor=ALICE, action="device.password_set",
                                 target=Target("device", f"t{k}-{i}"))
                await session.commit()

    async def by_record(k: int) -> None:
        await asyncio.gather(*(audit.record(actor=ALICE, action="device.catalog_sync",
                                            target=Target("device", f"r{k}-{i}")) for i in range(20)))

    try:
        await asyncio.gather(*(by_transaction(audit, k) for k in range(4)), *(by_transaction(other, k + 10)
                             for k in range(3)), *(by_record(k) for k in range(3)))
    finally:
        await other_engine.dispose()
    rows = await entries(audit)
    assert len(rows) == 7 * 15 + 3 * 20
    check_chain(rows, [e.data async for e in audit.store.iter_entries(0, 10**9)])
    times = [r["time"] for r in rows]
    assert times == sorted(times)


async def test_database_refuses_changes(audit: AuditLog) -> None:
    await fill(audit, 3)
    await audit.checkpoint()
    dialect = audit.store.sessionmaker.kw["bind"].dialect.name
    statements = [
        "UPDATE audit_entries SET action = 'auth.login' WHERE seq = 1",
        "DELETE FROM audit_entries WHERE seq = 2",
        "UPDATE audit_checkpoints SET note = 'x'",
        "DELETE FROM audit_checkpoints",
        "DELETE FROM audit_tree_nodes",
    ]
    if dialect == "postgresql":
        statements += ["TRUNCATE audit_entries", "TRUNCATE audit_checkpoints CASCADE"]
    for sql in statements:
        async with audit.sessionmaker() as session:
            with pytest.raises(Exception, match="append-only"):
                await session.execute(text(sql))
                await session.commit()
    if dialect == "postgresql":  # replica mode does not switch the triggers off
        async with audit.sessionmaker() as session:
            await session.execute(text("SET session_replication_role = replica"))
            with pytest.raises(Exception, match="append-only"):
                await session.execute(text("DELETE FROM audit_entries"))
    # an INSERT that does not continue the chain is refused too
    async with audit.sessionmaker() as session:
        with pytest.raises(Exception, match="chain"):
            await session.execute(text(
                "INSERT INTO audit_entries (seq, time, action, actor_type, target_type, prev, leaf_hash, entry) "
                "SELECT 7, time, action, actor_type, target_type, leaf_hash, prev, entry FROM audit_entries "
                "WHERE seq = 2"
            ))
            await session.commit()
    assert len(await entries(audit)) == 3


async def test_checkpoints_and_proofs(audit: AuditLog) -> None:
    assert await audit.checkpoint() is None  # empty log
    sizes = [1, 2, 3, 7, 8, 9, 16, 31]
    roots = {}
    for size in sizes:
        await fill(audit, size - await audit.store.size(), prefix=f"s{size}-")
        cp = await audit.checkpoint()
        assert cp is not None and cp.tree_size == size
        body = parse_checkpoint(open_note(cp.note, [audit.signer.verifier]))
        assert body.size == size and body.root == cp.root_hash and body.origin == audit.origin
        roots[size] = cp.root_hash
    leaves = [e.leaf_hash async for e in audit.store.iter_entries(0, 31)]
    for n in sizes:
        for m in range(n):
            verify_inclusion(m, n, leaves[m], await audit.inclusion_proof(m, n), roots[n])
        for m in sizes:
            if m <= n:
                verify_consistency(m, n, await audit.consistency_proof(m, n), roots[m], roots[n])
    # a checkpoint of an older size (what an export that ends early signs)
    old = await audit.checkpoint(size=5)
    assert old is not None and old.root_hash == await audit.root_at(5)
    # proofs for sizes past the newest checkpoint sign one first
    await fill(audit, 4, prefix="late-")
    proof = await audit.inclusion_proof(33, 35)
    entry = await audit.store.get_entry(33)
    verify_inclusion(33, 35, entry.leaf_hash, proof, await audit.root_at(35))


async def test_backlog_is_checkpointed_in_steps(audit: AuditLog) -> None:
    await fill(audit, 250)
    cp = await audit.store.build_checkpoint(audit._sign, chunk=64)
    assert cp is not None and cp.tree_size == 250
    assert [c.tree_size for c in await audit.store.checkpoints()] == [64, 128, 192, 250]
    leaves = [e.leaf_hash async for e in audit.store.iter_entries(0, 250)]
    from audit_log.merkle import root_from_leaf_hashes

    assert cp.root_hash == root_from_leaf_hashes(leaves)


async def test_background_checkpoints_and_pinned_file(audit: AuditLog, data_dir: Path) -> None:
    await audit.start()
    await fill(audit, 5)
    for _ in range(100):
        latest = await audit.latest_checkpoint()
        if latest is not None and latest.tree_size == 5:
            break
        await asyncio.sleep(0.02)
    assert latest is not None and latest.tree_size == 5
    pinned = (data_dir / "audit" / "checkpoint").read_text()
    await asyncio.sleep(0.2)
    assert (data_dir / "audit" / "checkpoint").read_text() == latest.note == pinned
    await fill(audit, 2, prefix="more")
    await audit.stop()  # signs a last checkpoint
    assert (await audit.latest_checkpoint()).tree_size == 7
    assert parse_checkpoint((data_dir / "audit" / "checkpoint").read_text().split("\n\n")[0] + "\n").size == 7


async def test_pinned_file_catches_a_rewritten_database(audit: AuditLog, data_dir: Path) -> None:
    await fill(audit, 4)
    await audit.checkpoint()
    # the file pins a tree the database does not have (e.g. restored from an older backup)
    other = audit.signer.sign(
        f"{audit.origin}\n9\n{__import__('base64').b64encode(bytes(32)).decode()}\n"
    )
    (data_dir / "audit" / "checkpoint").write_text(other)
    with pytest.raises(AuditIntegrityError, match="deleted"):
        await audit.checkpoint()
    root4 = (await audit.latest_checkpoint()).root_hash
    wrong = audit.signer.sign(f"{audit.origin}\n4\n{__import__('base64').b64encode(bytes(32)).decode()}\n")
    (data_dir / "audit" / "checkpoint").write_text(wrong)
    with pytest.raises(AuditIntegrityError, match="rewritten"):
        await audit.checkpoint()
    assert root4 != bytes(32)


async def test_download_history_query(audit: AuditLog) -> None:
    from datetime import UTC, datetime

    t0 = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
    t1 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
    await audit.record(actor=ALICE, action="download.request", target=Target("channel", "ch1"),
                       detail=download_detail(device_id="dev1", channel_id="ch1", start=t0, end=t1))
    await audit.record(actor=ALICE, action="download.complete", target=Target("channel", "ch1"),
                       detail=download_detail(device_id="dev1", channel_id="ch1", start=t0, end=t1,
                                              sha256="ab" * 32, size=1234))
    await audit.record(actor=ALICE, action="auth.login", target=Target("user", "1"))
    total, rows = await audit.store.query(action_prefix="download.")
    assert total == 2 and [json.loads(r.data)["action"] for r in rows] == ["download.complete", "download.request"]
    detail = json.loads(rows[0].data)["detail"]
    assert detail == {"device_id": "dev1", "channel_id": "ch1", "start": "2024-05-01T08:00:00.000Z",
                      "end": "2024-05-01T09:00:00.000Z", "sha256": "ab" * 32, "bytes": 1234}
    assert (await audit.store.query(action_prefix="download%"))[0] == 0  # LIKE wildcards are escaped
    assert (await audit.store.query(actor="alice", target_id="ch1"))[0] == 2


async def test_conflict_is_retried_after_reading_the_head_again(audit: AuditLog,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer that ignored the locks took the seq this append read as free: the database refuses
    the INSERT (unique seq / chain trigger), the savepoint is rolled back, the head read again."""
    await fill(audit, 3)
    real_head = audit.store._head
    calls = 0

    async def head_once_stale(conn):
        nonlocal calls
        calls += 1
        h = await real_head(conn)
        if calls == 1:
            return type(h)(h.size - 1, h.leaf_hash, h.time)  # as if entry 2 were not there yet
        return h

    monkeypatch.setattr(audit.store, "_head", head_once_stale)
    async with audit.sessionmaker() as session:
        await begin_write(session)
        entry = await audit.append(session, actor=ALICE, action="auth.logout", target=Target("user", "1"))
        await session.commit()
    assert calls == 2 and entry.seq == 3
    rows = await entries(audit)
    check_chain(rows, [e.data async for e in audit.store.iter_entries(0, 10**9)])


async def test_postgresql_role_that_can_only_read_and_append(pg_url: str, signer) -> None:
    """``gbops audit grants ROLE``: with the triggers gone, the role still cannot change history."""
    import secrets

    from sqlalchemy import make_url

    from audit_log.store import restricted_role_sql
    from gbcore.db import make_engine, make_sessionmaker
    from gbops.migrate import migrate

    role = f"gbops_app_{secrets.token_hex(3)}"
    owner = make_engine(pg_url)
    await migrate(owner)
    async with owner.begin() as conn:
        await conn.execute(text(f"CREATE ROLE {role} LOGIN"))
        await conn.execute(text(f"GRANT USAGE ON SCHEMA public TO {role}"))
        for statement in restricted_role_sql(role).strip().split("\n"):
            await conn.execute(text(statement))
        await conn.execute(text("DROP TRIGGER audit_entries_append_only ON audit_entries"))
    app = make_engine(make_url(pg_url).set(username=role).render_as_string(hide_password=False))
    try:
        log = AuditLog(make_sessionmaker(app), signer)
        await log.record(actor=ALICE, action="auth.login", target=Target("user", "1"))
        assert (await log.checkpoint()).tree_size == 1
        for sql in ("UPDATE audit_entries SET action = 'x'", "DELETE FROM audit_entries", "TRUNCATE audit_entries"):
            async with log.sessionmaker() as session:
                with pytest.raises(Exception, match="permission denied"):
                    await session.execute(text(sql))
    finally:
        await app.dispose()
        async with owner.begin() as conn:
            await conn.execute(text(f"DROP OWNED BY {role}"))
            await conn.execute(text(f"DROP ROLE {role}"))
        await owner.dispose()


async def test_sampled_checkpoints(audit: AuditLog) -> None:
    for _ in range(25):
        await fill(audit, 1, prefix=f"x{await audit.store.size()}-")
        await audit.checkpoint()
    sample = [c.tree_size for c in await audit.store.sample_checkpoints(limit=6)]
    assert sample[0] == 1 and sample[-1] == 25 and len(sample) <= 8 and sample == sorted(sample)
    assert [c.tree_size for c in await audit.store.sample_checkpoints(limit=100)] == list(range(1, 26))


async def test_checkpoints_are_pushed_to_the_configured_url(db_engine, signer, data_dir: Path) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from gbcore.db import make_sessionmaker

    received: list[tuple[str, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.headers["Content-Type"], body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        log = AuditLog(make_sessionmaker(db_engine), signer, data_dir=data_dir,
                       push_url=f"http://127.0.0.1:{server.server_port}/witness")
        await log.record(actor=ALICE, action="auth.login", target=Target("user", "1"))
        cp = await log.checkpoint()
        assert received == [("text/plain; charset=utf-8", cp.note.encode())]
        log.push_url = "http://127.0.0.1:9/unreachable"  # a failed push is logged, not fatal
        await log.record(actor=ALICE, action="auth.logout", target=Target("user", "1"))
        assert (await log.checkpoint()).tree_size == 2
    finally:
        server.shutdown()
