"""Shared test fixtures.

Tests that need an outside tool or service call :func:`need`: on a laptop without it they skip,
under ``CI=true`` they fail instead, because CI installs and starts everything the suite needs.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need(condition: bool, why: str) -> None:
    """Skip (laptop) or fail (CI) when a prerequisite is missing."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"prerequisite missing under CI: {why}")
    pytest.skip(why)


def need_tool(name: str) -> str:
    path = shutil.which(name)
    need(path is not None, f"{name} is not installed")
    assert path is not None
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    need(SHARED.is_dir(), f"shared/ not found at {SHARED}")
    return SHARED


@pytest.fixture(scope="session")
def sip_vectors(shared_dir: Path) -> Path:
    return shared_dir / "vectors" / "sip"


# --- database fixtures (device registry) ------------------------------------------------------
#
# ``db_url`` runs a test once on SQLite (a file in tmp_path) and once on PostgreSQL.  For
# PostgreSQL, GBOPS_TEST_DATABASE_URL (default below) names a throw-away database.  So that two
# test runs at once (two developers, two terminals) do not wipe each other's tables, each pytest
# process creates a private database next to it (``<name>_<pid>_<random>``, dropped at the end
# of the session) when it may; otherwise it uses the named database itself.  Either way the
# ``public`` schema is dropped and re-created before each test.  ``db_engine`` is migrated to head.

PG_TEST_URL_DEFAULT = "postgresql+asyncpg://postgres@127.0.0.1/test"

# Redis (issue 17, cluster mode): GBOPS_TEST_REDIS_URL (default below).  Each test gets its own key prefix
# (``gbops-test:<pid>:<random>:``), deleted after it, so tests and test runs share one Redis safely.
REDIS_TEST_URL_DEFAULT = "redis://127.0.0.1:6379/0"


def redis_test_url() -> str:
    return os.environ.get("GBOPS_TEST_REDIS_URL", REDIS_TEST_URL_DEFAULT)


@pytest.fixture
async def redis_url() -> str:
    """A Redis that answers (skip on a laptop without one, fail under CI)."""
    import redis.asyncio as aioredis

    url = redis_test_url()
    client = aioredis.from_url(url)
    try:
        await client.ping()
    except Exception as exc:
        need(False, f"Redis not usable at {url}: {type(exc).__name__}: {exc}")
    finally:
        await client.aclose()
    return url


@pytest.fixture
async def redis_prefix(redis_url: str):
    """A key prefix of this test's own; its keys are deleted afterwards."""
    import secrets

    import redis.asyncio as aioredis

    prefix = f"gbops-test:{os.getpid()}:{secrets.token_hex(4)}:"
    yield prefix
    client = aioredis.from_url(redis_url)
    try:
        keys = [k async for k in client.scan_iter(match=prefix + "*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()



def pg_test_url() -> str:
    return os.environ.get("GBOPS_TEST_DATABASE_URL", PG_TEST_URL_DEFAULT)


class _PgTestDatabase:
    """The PostgreSQL database of this pytest process (created on first use)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.url: str | None = None
        self.private_name: str | None = None

    async def ensure(self) -> str:
        if self.url is not None:
            return self.url
        import secrets

        from sqlalchemy import make_url, text
        from sqlalchemy.ext.asyncio import create_async_engine
        from sqlalchemy.pool import NullPool

        base = make_url(self.base_url)
        name = f"{base.database or 'test'}_{os.getpid()}_{secrets.token_hex(3)}"
        engine = create_async_engine(
            base, poolclass=NullPool, isolation_level="AUTOCOMMIT", connect_args={"timeout": 5}
        )
        try:
            async with engine.connect() as conn:  # raises when PostgreSQL is not reachable
                try:
                    await conn.execute(text(f'CREATE DATABASE "{name}"'))
                except Exception:  # no CREATEDB right: share the named database
                    self.url = self.base_url
                else:
                    self.private_name = name
                    self.url = base.set(database=name).render_as_string(hide_password=False)
        finally:
            await engine.dispose()
        return self.url

    async def drop(self) -> None:
        if self.private_name is None:
            return
        from sqlalchemy import text
        from sqlalchemy.ext.asyncio import create_async_engine
        from sqlalchemy.pool import NullPool

        engine = create_async_engine(self.base_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                await conn.execute(text(f'DROP DATABASE IF EXISTS "{self.private_name}" WITH (FORCE)'))
        finally:
            await engine.dispose()


@pytest.fixture(scope="session")
def _pg_test_database():
    import asyncio

    holder = _PgTestDatabase(pg_test_url())
    yield holder
    if holder.private_name is not None:
        asyncio.run(holder.drop())


async def _reset_pg_schema(url: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    engine = create_async_engine(url, poolclass=NullPool, connect_args={"timeout": 5})
    try:
        async with engine.begin() as conn:
            await conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            await conn.execute(text("CREATE SCHEMA public"))
    finally:
        await engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'gbops-test.db'}"
    holder: _PgTestDatabase = request.getfixturevalue("_pg_test_database")
    try:
        url = await holder.ensure()
        await _reset_pg_schema(url)
    except Exception as exc:  # unreachable, refused, no such database, ...
        need(False, f"PostgreSQL not usable at {holder.base_url}: {type(exc).__name__}: {exc}")
    return url


@pytest.fixture
async def pg_url(request: pytest.FixtureRequest) -> str:
    """This pytest process's PostgreSQL database, its schema emptied (cluster tests: every node shares it)."""
    holder: _PgTestDatabase = request.getfixturevalue("_pg_test_database")
    try:
        url = await holder.ensure()
        await _reset_pg_schema(url)
    except Exception as exc:
        need(False, f"PostgreSQL not usable at {holder.base_url}: {type(exc).__name__}: {exc}")
    return url


@pytest.fixture
async def db_engine(db_url: str):
    from gbcore.db import make_engine
    from gbops.migrate import migrate

    engine = make_engine(db_url)
    try:
        await migrate(engine)
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def registry(db_engine):
    from device_registry.service import Registry
    from gbcore.db import make_sessionmaker

    return Registry(make_sessionmaker(db_engine))


@pytest.fixture
def utc_host():
    """The host's zone is UTC (a container, a cloud VM) for the duration of the test: Beijing time at the
    edges must not come from the host's zone."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = old
        time.tzset()


@pytest.fixture(autouse=True)
def _root_logging_restored():
    """CLI tests run ``gbops ...`` in-process, and its ``setup_logging`` points the root logger at the test's
    captured stderr; once pytest closes that stream, every later log line printed "--- Logging error ---".
    Each test leaves the root logger as it found it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)

