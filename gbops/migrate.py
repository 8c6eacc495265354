"""Database migrations of the platform (Alembic, configured programmatically; there is no alembic.ini).

The assembly owns them because they need every package's models: :func:`load_models` is the one list of
the modules that define tables.  To create a new revision during development::

    from alembic import command
    from gbops.migrate import alembic_config
    command.revision(alembic_config("sqlite+aiosqlite:///dev.db"), "message", autogenerate=True)
"""

from __future__ import annotations

import importlib
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from gbcore.db import SQLITE_BEGIN_IMMEDIATE, make_engine

__all__ = ["MIGRATIONS_DIR", "alembic_config", "load_models", "migrate"]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# Advisory lock key that serialises concurrent migrations on PostgreSQL ("gbops" in ASCII).
_PG_MIGRATION_LOCK = 0x67626F7073


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


def _upgrade_sync(connection: Connection, revision: str) -> None:
    if connection.dialect.name == "postgresql":
        # Two processes starting at once must not both run the migrations.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, revision)


async def migrate(engine_or_url: AsyncEngine | str, revision: str = "head") -> None:
    """Bring the database schema up to ``revision`` (default: head).  Idempotent.

    Runs in one transaction (on SQLite with the write lock held from the start).
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
