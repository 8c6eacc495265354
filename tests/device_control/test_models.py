"""The device-control tables as migration 0010 makes them match the models (the parity check of
tests/registry/test_db.py, for this package's tables alone), and the migration goes down and up again."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, inspect

from device_control.models import PtzHomeRow, PtzPresetNameRow, PtzTourRow
from gbops.migrate import alembic_config, migrate

MINE = {"ptz_tours", "ptz_homes", "ptz_preset_names"}


async def test_models_match_migration_0010(db_engine) -> None:
    md = MetaData(naming_convention=PtzTourRow.metadata.naming_convention)
    for model in (PtzTourRow, PtzHomeRow, PtzPresetNameRow):
        model.__table__.to_metadata(md)

    def diff(sync_conn):
        ctx = MigrationContext.configure(sync_conn, opts={
            "compare_type": True, "compare_server_default": True,
            "include_name": lambda name, type_, _parent: type_ != "table" or name in MINE})
        return compare_metadata(ctx, md)

    async with db_engine.connect() as conn:
        assert await conn.run_sync(diff) == []


async def test_downgrade_0010_and_up_again(db_engine) -> None:
    def downgrade(sync_conn):
        cfg = alembic_config()
        cfg.attributes["connection"] = sync_conn
        command.downgrade(cfg, "0009")

    async with db_engine.begin() as conn:
        await conn.run_sync(downgrade)
    async with db_engine.connect() as conn:
        tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    assert not tables & MINE and "download_jobs" in tables
    await migrate(db_engine)
    async with db_engine.connect() as conn:
        tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    assert MINE <= tables
