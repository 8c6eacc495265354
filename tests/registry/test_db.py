"""gbcore.db: migrations, model/migration parity, UTC timestamps, engine settings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select, text

from device_registry.models import PresenceEvent
from gbcore.db import Base, default_sqlite_url, make_engine, make_sessionmaker
from gbops.migrate import alembic_config, load_models, migrate

EXPECTED_TABLES = {
    # issue 15: cascade upward
    "cascade_platforms", "cascade_share_nodes", "cascade_share_channels",
    "clock_samples",  # issue 16: device clock samples
    "alembic_version",
    "audit_checkpoints",
    "audit_entries",
    "audit_tree_nodes",
    "auth_tokens",
    "channels",
    "devices",
    "org_nodes",
    "alarms",
    "positions",
    "ptz_homes",
    "ptz_preset_names",
    "ptz_tours",
    "record_plans",
    "record_segments",
    "platform_runs",
    "presence_events",
    "users",
    # issue 6: roles and what they grant
    "roles", "role_permissions", "role_org_nodes", "role_channels", "user_roles",
    # issue 7: contracts, tickets, notifications, quality baselines
    "contracts", "tickets", "ticket_events", "notifications", "quality_baselines",
    # issue 4: watermarked download jobs
    "download_jobs",
    # issue 7: generated availability reports
    "reports",
    # issue 11: grants split per device by migration 0007, audited at the next start
    "role_channel_splits",
    # issue 16: security monitoring
    "security_events", "security_alerts", "security_blocks",
}


def _head() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


async def test_migrate_from_empty_and_twice(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        await migrate(engine)
        await migrate(engine)  # idempotent
        async with engine.connect() as conn:
            tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
            assert tables == EXPECTED_TABLES
            assert await conn.scalar(text("SELECT version_num FROM alembic_version")) == _head()
    finally:
        await engine.dispose()


async def test_migrate_accepts_url(db_url: str) -> None:
    await migrate(db_url)
    await migrate(db_url)
    engine = make_engine(db_url)
    try:
        async with engine.connect() as conn:
            assert await conn.scalar(text("SELECT version_num FROM alembic_version")) == _head()
    finally:
        await engine.dispose()


async def test_models_match_migrations(db_engine) -> None:
    load_models()

    def diff(sync_conn):
        ctx = MigrationContext.configure(
            sync_conn, opts={"compare_type": True, "compare_server_default": True}
        )
        return compare_metadata(ctx, Base.metadata)

    async with db_engine.connect() as conn:
        assert await conn.run_sync(diff) == []
        if conn.dialect.name == "postgresql":
            # compare_type does not look at timestamp precision: check it here.
            precision = await conn.scalar(
                text(
                    "SELECT datetime_precision FROM information_schema.columns "
                    "WHERE table_name = 'presence_events' AND column_name = 'at'"
                )
            )
            assert precision == 3


async def test_downgrade_to_base_and_up_again(db_engine) -> None:
    def downgrade(sync_conn):
        cfg = alembic_config()
        cfg.attributes["connection"] = sync_conn
        command.downgrade(cfg, "base")

    async with db_engine.begin() as conn:
        await conn.run_sync(downgrade)
    async with db_engine.connect() as conn:
        tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
        assert tables <= {"alembic_version"}
    await migrate(db_engine)
    async with db_engine.connect() as conn:
        tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
        assert tables == EXPECTED_TABLES


async def test_timestamps_are_aware_utc(db_engine) -> None:
    sessionmaker = make_sessionmaker(db_engine)
    china = timezone(timedelta(hours=8))
    local = datetime(2024, 5, 1, 16, 30, 15, 123456, tzinfo=china)
    async with sessionmaker() as session:
        session.add(
            PresenceEvent(
                subject="device", device_id="x", channel_id=None, online=True, at=local, reason="registered"
            )
        )
        await session.commit()
    async with sessionmaker() as session:
        row = (await session.scalars(select(PresenceEvent))).one()
        assert row.at.tzinfo is not None and row.at.utcoffset() == timedelta(0)
        # stored in UTC, truncated to milliseconds
        assert row.at == datetime(2024, 5, 1, 8, 30, 15, 123000, tzinfo=UTC)
        # comparisons with aware values work in SQL on both back ends
        found = await session.scalar(
            select(PresenceEvent.id).where(PresenceEvent.at > datetime(2024, 5, 1, 16, 30, tzinfo=china))
        )
        assert found == row.id


async def test_naive_datetime_refused(db_engine) -> None:
    sessionmaker = make_sessionmaker(db_engine)
    async with sessionmaker() as session:
        session.add(
            PresenceEvent(
                subject="device",
                device_id="x",
                online=True,
                at=datetime(2024, 5, 1, 8, 0),
                reason="registered",
            )
        )
        with pytest.raises(Exception, match="naive"):
            await session.commit()


def test_default_sqlite_url(tmp_path: Path) -> None:
    assert default_sqlite_url(tmp_path) == f"sqlite+aiosqlite:///{tmp_path.resolve() / 'gbops.db'}"


async def test_sqlite_pragmas(tmp_path: Path) -> None:
    engine = make_engine(default_sqlite_url(tmp_path))
    try:
        async with engine.connect() as conn:
            assert (await conn.scalar(text("PRAGMA journal_mode"))).lower() == "wal"
            assert await conn.scalar(text("PRAGMA foreign_keys")) == 1
            assert await conn.scalar(text("PRAGMA synchronous")) == 1  # NORMAL
            assert await conn.scalar(text("PRAGMA busy_timeout")) > 0
    finally:
        await engine.dispose()


async def test_presence_events_are_append_only(registry) -> None:
    from sqlalchemy import delete, update

    from ._support import reg

    await registry.apply([reg()])
    for stmt in (update(PresenceEvent).values(reason="x"), delete(PresenceEvent)):
        async with registry.sessionmaker() as session:
            with pytest.raises(Exception, match="append-only"):
                await session.execute(stmt)
                await session.commit()
    assert len(await registry.list_presence(reg().device_id)) == 1
