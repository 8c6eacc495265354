"""Database migrations of the platform (Alembic, configured programmatically; there is no alembic.ini).

The assembly owns them because they need every package's models: :func:`load_models` is the one list of
the modules that define tables.  To create a new revision during development::

    from alembic import command
    from gbops.migrate import alembic_config
    command.revision(alembic_config("sqlite+aiosqlite:///dev.db"), "message", autogenerate=True)

Every node runs :func:`migrate` at start; on PostgreSQL the first one to take the advisory lock does the
work and the others find the schema at head.  A node refuses a database whose revision it does not know
(:class:`SchemaTooNew`): a newer node migrated it, and code that does not know a column must not write rows.

Rolling upgrades: expand, then contract.  During a rolling upgrade old and new nodes run against one
database at the same time, so a revision must keep the schema usable by the previous release:

* Expand (release N): only add.  New tables; new columns nullable or with a server default; new indexes
  (PostgreSQL: ``CREATE INDEX CONCURRENTLY`` where a table is large); new constraints ``NOT VALID`` first.
  Never rename, drop, narrow a type or add a ``NOT NULL`` without a default in the same release that
  starts using the new shape.  Release N writes both the old and the new shape where both are read
  (backfill in code or in the revision, in batches).
* Contract (release N+1 or later, once no node of release N-1 runs): drop what only the old release read,
  tighten constraints (``VALIDATE CONSTRAINT``, ``SET NOT NULL``), remove the double writes.
* A rename is an expand (add the new, write both, backfill) followed by a contract (drop the old).

Order of a rolling upgrade: start one node of the new release (it migrates, under the lock); nodes of the
old release keep running against the expanded schema; restart the others onto the new release.  An old
node that restarts after the migration refuses to start (:class:`SchemaTooNew`) rather than run on a
schema it does not know: restart it on the new release.  Downgrading the code below the database's
revision therefore needs ``alembic downgrade`` first, on purpose.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from gbcore.db import SQLITE_BEGIN_IMMEDIATE, make_engine

__all__ = ["MIGRATIONS_DIR", "SchemaTooNew", "alembic_config", "known_revisions", "load_models", "migrate"]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# Advisory lock key that serialises concurrent migrations on PostgreSQL ("gbops" in ASCII).
_PG_MIGRATION_LOCK = 0x67626F7073


class SchemaTooNew(RuntimeError):
    """The database is at a revision this code does not know: a newer node migrated it.

    ``revision`` is what the database holds, ``head`` the newest revision this node knows.  The message is
    meant for the operator as is (Chinese / English)."""

    def __init__(self, revision: str, head: str | None) -> None:
        self.revision = revision
        self.head = head
        super().__init__(
            f"数据库结构版本 {revision} 比本节点新（本节点最高版本 {head}）：请升级本节点的 gbops 后再启动 / the database "
            f"schema {revision} is newer than this node understands (head {head}): upgrade this node")


def load_models() -> None:
    """Import every module that defines tables, so that ``Base.metadata`` is complete."""
    importlib.import_module("device_registry.models")
    importlib.import_module("ops_portal.models")
    importlib.import_module("audit_log.store")
    importlib.import_module("watermark.models")
    importlib.import_module("ops_portal.tickets.models")  # also imports ops_portal.contracts
    importlib.import_module("ops_portal.availability.models")
    importlib.import_module("media_relay.recording.models")
    importlib.import_module("device_control.models")
    importlib.import_module("alarms.models")
    importlib.import_module("cascade.models")
    importlib.import_module("timesync.models")  # issue 16: device clock samples
    importlib.import_module("security.models")


def alembic_config(url: str | None = None) -> Config:
    """A programmatic Alembic configuration (no alembic.ini) for the gbops migrations."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("version_path_separator", "os")
    if url is not None:
        # ConfigParser interpolation: a literal % must be doubled.
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def known_revisions() -> tuple[set[str], str | None]:
    """Every revision id of this code's migrations, and its head."""
    script = ScriptDirectory.from_config(alembic_config())
    return {r.revision for r in script.walk_revisions()}, script.get_current_head()


def _check_known(connection: Connection) -> None:
    """Raise :class:`SchemaTooNew` when the database holds a revision this code does not know."""
    current = MigrationContext.configure(connection).get_current_heads()  # () on an empty database
    known, head = known_revisions()
    for revision in current:
        if revision not in known:
            raise SchemaTooNew(revision, head)


def _upgrade_sync(connection: Connection, revision: str) -> None:
    if connection.dialect.name == "postgresql":
        # Two processes starting at once must not both run the migrations.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
    _check_known(connection)  # read under the lock: a newer node cannot migrate between check and upgrade
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, revision)


async def migrate(engine_or_url: AsyncEngine | str, revision: str = "head") -> None:
    """Bring the database schema up to ``revision`` (default: head).  Idempotent.

    Runs in one transaction (on SQLite with the write lock held from the start).  Raises
    :class:`SchemaTooNew`, having changed nothing, when the database is at a revision this code does not know.
    """
    if isinstance(engine_or_url, str):
        engine = make_engine(engine_or_url)
        owned = True
    else:
        engine = engine_or_url
        owned = False
    try:
        async with engine.connect() as conn:
            conn = await conn.execution_options(**{SQLITE_BEGIN_IMMEDIATE: True})
            async with conn.begin():
                await conn.run_sync(_upgrade_sync, revision)
    finally:
        if owned:
            await engine.dispose()
