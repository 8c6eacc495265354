"""Migration 0007 (issue 11, channel identity): grants on a bare channel id become (device, channel) grants.
Every row is kept: a unique id gets its device, an ambiguous id is split per device, an unknown id stays
unresolved (device ''); each split is recorded and audited once at the next start."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from sqlalchemy import text

from gbcore.db import make_engine, make_sessionmaker
from gbops.migrate import alembic_config, migrate

NVR_A, NVR_B, IPC = "34020000001180000001", "34020000001180000002", "34020000001320000003"
SHARED = "34020000001310000001"  # both NVRs ship it
UNIQUE = "34020000001310000077"  # only NVR_A has it
GONE = "34020000001310000099"  # no device has it (any more)
T = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)


def _upgrade(sync_conn, revision: str) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = sync_conn
    command.upgrade(cfg, revision)


def _downgrade(sync_conn, revision: str) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = sync_conn
    command.downgrade(cfg, revision)


async def _seed_0006(conn) -> None:
    ts = T.replace(tzinfo=None) if conn.dialect.name == "sqlite" else T
    for dev in (NVR_A, NVR_B, IPC):
        await conn.execute(text("INSERT INTO devices (device_id, keepalive_interval, online, created_at, updated_at) "
                                "VALUES (:d, 60, false, :t, :t)"), {"d": dev, "t": ts})
    for dev, ch in ((NVR_A, SHARED), (NVR_B, SHARED), (NVR_A, UNIQUE), (IPC, "34020000001310000003")):
        await conn.execute(text("INSERT INTO channels (device_id, channel_id, online, removed, first_seen, updated_at) "
                                "VALUES (:d, :c, false, false, :t, :t)"), {"d": dev, "c": ch, "t": ts})
    await conn.execute(text("INSERT INTO roles (id, name, description, builtin, full_scope, created_at, updated_at) "
                            "VALUES (41, '甲方', '', false, false, :t, :t), (42, '乙方', '', false, false, :t, :t)"),
                       {"t": ts})
    await conn.execute(text("INSERT INTO role_channels (role_id, channel_id) VALUES "
                            "(41, :shared), (41, :unique), (42, :shared), (42, :gone)"),
                       {"shared": SHARED, "unique": UNIQUE, "gone": GONE})
    await conn.execute(text("INSERT INTO quality_baselines (channel_id, sharpness, samples, updated_at) "
                            "VALUES (:shared, 120.5, 7, :t)"), {"shared": SHARED, "t": ts})


async def test_grants_are_kept_split_and_audited(db_url: str, tmp_path: Path) -> None:
    engine = make_engine(db_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_upgrade, "0006")
            await _seed_0006(conn)
        await migrate(engine)  # -> head

        async with engine.connect() as conn:
            grants = sorted(tuple(r) for r in await conn.execute(
                text("SELECT role_id, device_id, channel_id FROM role_channels")))
            assert grants == sorted([
                (41, NVR_A, SHARED), (41, NVR_B, SHARED),  # ambiguous: split per device
                (41, NVR_A, UNIQUE),  # unique: its device
                (42, NVR_A, SHARED), (42, NVR_B, SHARED),
                (42, "", GONE),  # no device has it: kept, unresolved (matches nothing)
            ])
            splits = sorted((r[0], r[1], json.loads(r[2]), r[3]) for r in await conn.execute(
                text("SELECT role_id, channel_id, device_ids, audited_at FROM role_channel_splits")))
            assert splits == [(41, SHARED, [NVR_A, NVR_B], None), (42, SHARED, [NVR_A, NVR_B], None),
                              (42, GONE, [], None)]
            baselines = sorted(tuple(r) for r in await conn.execute(
                text("SELECT device_id, channel_id, samples FROM quality_baselines")))
            assert baselines == [(NVR_A, SHARED, 7), (NVR_B, SHARED, 7)]

        # the platform's start: one role.grant_split entry per recorded split, once
        from audit_log.log import AuditLog
        from gbcore.settings import Settings
        from ops_portal.access import load_access, record_grant_splits
        from ops_portal.models import User, UserRole

        sessionmaker = make_sessionmaker(engine)
        audit = AuditLog.from_settings(Settings(data_dir=tmp_path / "data"), sessionmaker)
        await audit.start()
        try:
            assert await record_grant_splits(audit, sessionmaker) == 3
            assert await record_grant_splits(audit, sessionmaker) == 0
            total, entries = await audit.store.query(actions=["role.grant_split"], newest_first=False)
            assert total == 3
            details = [json.loads(e.data)["detail"] for e in entries]
            assert {(d["role"], d["channel_id"], tuple(d["device_ids"]), d["unresolved"]) for d in details} == {
                ("甲方", SHARED, (NVR_A, NVR_B), False), ("乙方", SHARED, (NVR_A, NVR_B), False),
                ("乙方", GONE, (), True)}
            assert [json.loads(e.data)["target"] for e in entries][0]["type"] == "role"
        finally:
            await audit.stop()
        async with engine.connect() as conn:
            assert await conn.scalar(text("SELECT count(*) FROM role_channel_splits WHERE audited_at IS NULL")) == 0

        # the resolved scope: exact cameras; the unresolved grant grants nothing
        async with sessionmaker() as session:
            user = User(username="b", password_hash="x")
            session.add(user)
            await session.flush()
            session.add(UserRole(user_id=user.id, role_id=42))
            await session.flush()
            access = await load_access(session, user)
            assert {tuple(r) for r in access.scope.channel_refs} == {(NVR_A, SHARED), (NVR_B, SHARED)}
            await session.rollback()

        # and back: one row per (role, channel id) again
        async with engine.begin() as conn:
            await conn.run_sync(_downgrade, "0006")
        async with engine.connect() as conn:
            rows = sorted(tuple(r) for r in await conn.execute(text("SELECT role_id, channel_id FROM role_channels")))
            assert rows == sorted([(41, SHARED), (41, UNIQUE), (42, SHARED), (42, GONE)])
    finally:
        await engine.dispose()
