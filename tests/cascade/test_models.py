"""Migration 0012 and cascade.models agree (both back ends), and it goes down and up again."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

import cascade.models  # noqa: F401 - the tables on Base.metadata
from gbcore.db import Base
from gbops.migrate import alembic_config, load_models, migrate

TABLES = {"cascade_platforms", "cascade_share_nodes", "cascade_share_channels"}


def _ours(diff) -> bool:
    text = repr(diff)
    return any(t in text for t in TABLES)


async def test_models_match_migration(db_engine) -> None:
    load_models()

    def diff(sync_conn):
        ctx = MigrationContext.configure(sync_conn, opts={"compare_type": True, "compare_server_default": True})
        return [d for d in compare_metadata(ctx, Base.metadata) if _ours(d)]

    async with db_engine.connect() as conn:
        assert await conn.run_sync(diff) == []


async def test_downgrade_and_up(db_engine) -> None:
    def down(sync_conn):
        cfg = alembic_config()
        cfg.attributes["connection"] = sync_conn
        command.downgrade(cfg, "0011")

    async with db_engine.begin() as conn:
        await conn.run_sync(down)
    async with db_engine.connect() as conn:
        assert TABLES.isdisjoint(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    await migrate(db_engine)
    async with db_engine.connect() as conn:
        assert TABLES <= set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
