"""Nodes starting against one database: the schema guard (a database migrated by a newer node is refused,
untouched) and the initial admin created exactly once when several nodes start together."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from gbcore.db import make_engine, make_sessionmaker
from gbcore.settings import Settings
from gbops.migrate import SchemaTooNew, known_revisions, migrate

FUTURE = "9999_from_a_newer_node"


async def _tables(engine) -> set[str]:
    from sqlalchemy import inspect

    async with engine.connect() as conn:
        return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))


async def _revision(engine) -> list[str]:
    async with engine.connect() as conn:
        return list((await conn.execute(text("SELECT version_num FROM alembic_version"))).scalars())


# ------------------------------------------------------------------------------------------ schema guard
async def test_a_database_migrated_by_a_newer_node_is_refused_untouched(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        await migrate(engine)
        async with engine.begin() as conn:  # a newer node ran its migrations
            await conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": FUTURE})
            await conn.execute(text("CREATE TABLE from_the_future (id INTEGER PRIMARY KEY)"))
        tables = await _tables(engine)

        with pytest.raises(SchemaTooNew) as err:
            await migrate(engine)
        _, head = known_revisions()
        assert err.value.revision == FUTURE and err.value.head == head
        message = str(err.value)
        assert message.startswith(f"数据库结构版本 {FUTURE} 比本节点新")
        assert f"the database schema {FUTURE} is newer than this node understands (head {head}): upgrade this node" \
            in message
        assert await _revision(engine) == [FUTURE]
        assert await _tables(engine) == tables
        with pytest.raises(SchemaTooNew):  # also when asked for an explicit revision (a restore)
            await migrate(engine, head)
    finally:
        await engine.dispose()


async def test_an_unknown_revision_on_an_otherwise_empty_database_creates_nothing(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)"))
            await conn.execute(text("INSERT INTO alembic_version VALUES (:v)"), {"v": FUTURE})
        with pytest.raises(SchemaTooNew):
            await migrate(engine)
        assert await _tables(engine) == {"alembic_version"}
    finally:
        await engine.dispose()


async def test_known_revisions_pass(db_url: str) -> None:
    known, head = known_revisions()
    assert head in known and len(known) >= 15
    engine = make_engine(db_url)
    try:
        await migrate(engine, "0010")  # an older database: the newer node brings it up
        await migrate(engine)
        assert await _revision(engine) == [head]
        await migrate(engine)  # at head: nothing to do
    finally:
        await engine.dispose()


# ------------------------------------------------------------------------------------------ initial admin
async def _admin_rows(engine) -> tuple[int, int, int]:
    from ops_portal.models import Role, User, UserRole

    async with make_sessionmaker(engine)() as session:
        users = await session.scalar(select(func.count()).select_from(User).where(User.username == "admin"))
        roles = await session.scalar(select(func.count()).select_from(Role).where(Role.builtin.is_(True)))
        grants = await session.scalar(select(func.count()).select_from(UserRole))
    return users or 0, roles or 0, grants or 0


@pytest.mark.parametrize("shared_data_dir", [False, True], ids=["own-data-dirs", "one-data-dir"])
async def test_nodes_starting_together_create_one_admin(db_url: str, tmp_path: Path, shared_data_dir: bool) -> None:
    from ops_portal.auth import verify_password
    from ops_portal.models import User
    from ops_portal.users import INITIAL_PASSWORD_FILE, ensure_admin

    # three nodes, each with its own connection pool; on SQLite a busy timeout that a loaded CI machine cannot
    # outlast while three migrations and three argon2 hashes queue for the one write lock
    engines = [make_engine(db_url, busy_timeout_ms=120_000) for _ in range(3)]
    try:
        await asyncio.gather(*(migrate(e) for e in engines))  # they migrate together too
        dirs = [tmp_path / ("data" if shared_data_dir else f"node-{i}") for i in range(3)]
        settings = [Settings(data_dir=d, database_url=db_url) for d in dirs]
        results = await asyncio.gather(*(ensure_admin(make_sessionmaker(e), s) for e, s in zip(engines, settings, strict=True)))

        passwords = [r for r in results if r is not None]
        assert len(passwords) == 1, results
        assert await _admin_rows(engines[0]) == (1, 1, 1)
        files = [d / INITIAL_PASSWORD_FILE for d in set(dirs) if (d / INITIAL_PASSWORD_FILE).exists()]
        assert len(files) == 1
        assert files[0].read_text().strip() == passwords[0]
        async with make_sessionmaker(engines[0])() as session:
            admin = (await session.scalars(select(User).where(User.username == "admin"))).one()
        assert await verify_password(admin.password_hash, passwords[0])
        assert not [p for d in set(dirs) if d.exists() for p in d.iterdir() if p.name.endswith(".tmp")]

        # the next start of every node leaves it alone
        again = await asyncio.gather(*(ensure_admin(make_sessionmaker(e), s) for e, s in zip(engines, settings, strict=True)))
        assert again == [None, None, None]
        assert await _admin_rows(engines[0]) == (1, 1, 1)
    finally:
        for e in engines:
            await e.dispose()


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_ensure_admin_waits_for_the_postgresql_lock(db_url: str, tmp_path: Path) -> None:
    """On PostgreSQL the check-and-create runs under the advisory lock: while another session holds it,
    ensure_admin waits, and creates nothing until it is released."""
    from ops_portal.users import _PG_ADMIN_LOCK, ensure_admin

    engine = make_engine(db_url)
    try:
        await migrate(engine)
        async with engine.connect() as holder:
            await holder.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_ADMIN_LOCK})
            task = asyncio.create_task(
                ensure_admin(make_sessionmaker(engine), Settings(data_dir=tmp_path, database_url=db_url)))
            waiting = text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                           "AND classid = :hi AND objid = :lo")
            params = {"hi": _PG_ADMIN_LOCK >> 32, "lo": _PG_ADMIN_LOCK & 0xFFFFFFFF}
            async with engine.connect() as probe:
                async with asyncio.timeout(30):
                    while not (await probe.execute(waiting, params)).scalar():
                        await probe.commit()
                        await asyncio.sleep(0.02)
            assert not task.done()
            assert await _admin_rows(engine) == (0, 1, 0)  # the built-in role is seeded by a migration
            await holder.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_ADMIN_LOCK})
            await holder.commit()
        assert isinstance(await asyncio.wait_for(task, 30), str)
        assert await _admin_rows(engine) == (1, 1, 1)
    finally:
        await engine.dispose()


# ------------------------------------------------------------------------------------------ through `gbops run`
def test_gbops_run_refuses_a_newer_schema_and_says_so(db_url: str, tmp_path: Path) -> None:
    """A real node process: exits 2 with the message, no traceback, the database untouched."""
    import os
    import subprocess
    import sys

    async def stamp() -> None:
        engine = make_engine(db_url)
        try:
            await migrate(engine)
            async with engine.begin() as conn:
                await conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": FUTURE})
        finally:
            await engine.dispose()

    asyncio.run(stamp())
    env = {k: v for k, v in os.environ.items() if not k.startswith("GBOPS_")}
    env.update(GBOPS_DATA_DIR=str(tmp_path / "data"), GBOPS_DATABASE_URL=db_url, GBOPS_SIP_PASSWORD="Xk9#long-pass",
               GBOPS_CONFIG=str(tmp_path / "none.toml"), GBOPS_SIP_PORT="0", GBOPS_HTTP_PORT="0")
    r = subprocess.run([sys.executable, "-m", "gbops.cli", "run"], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"数据库结构版本 {FUTURE} 比本节点新" in r.stderr and "upgrade this node" in r.stderr
    assert "Traceback" not in r.stderr

    async def revision() -> list[str]:
        engine = make_engine(db_url)
        try:
            return await _revision(engine)
        finally:
            await engine.dispose()

    assert asyncio.run(revision()) == [FUTURE]
