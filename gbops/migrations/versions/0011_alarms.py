"""Alarms (issue 14): the alarms devices reported, their acknowledgement, and position tracks.

Both tables belong to the ``alarms`` package (:mod:`alarms.models`); retention trims them
(``GBOPS_ALARM_RETENTION_DAYS``).  No foreign key to the registry: the history outlives a deleted device.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_TS = sa.DateTime(timezone=True)
UTC_TS_MS = sa.DateTime(timezone=True).with_variant(postgresql.TIMESTAMP(timezone=True, precision=3), "postgresql")
BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "alarms",
        sa.Column("id", BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("device_id", sa.String(length=32), nullable=False),
        sa.Column("channel_id", sa.String(length=32), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=True),
        sa.Column("method", sa.Integer(), nullable=True),
        sa.Column("type", sa.Integer(), nullable=True),
        sa.Column("event_type", sa.Integer(), nullable=True),
        sa.Column("time", UTC_TS_MS, nullable=False),
        sa.Column("received_at", UTC_TS_MS, nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("longitude", sa.Float(), nullable=True),
        sa.Column("latitude", sa.Float(), nullable=True),
        sa.Column("acknowledged", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("acknowledged_by", sa.String(length=64), nullable=True),
        sa.Column("acknowledged_at", UTC_TS, nullable=True),
        sa.Column("ack_note", sa.Text(), nullable=True),
        sa.Column("raw", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alarms")),
    )
    op.create_index("ix_alarms_device_id_channel_id_time", "alarms", ["device_id", "channel_id", "time"])
    op.create_index("ix_alarms_time", "alarms", ["time"])
    op.create_index("ix_alarms_received_at", "alarms", ["received_at"])
    op.create_table(
        "positions",
        sa.Column("id", BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("device_id", sa.String(length=32), nullable=False),
        sa.Column("channel_id", sa.String(length=32), nullable=True),
        sa.Column("time", UTC_TS_MS, nullable=False),
        sa.Column("longitude", sa.Float(), nullable=False),
        sa.Column("latitude", sa.Float(), nullable=False),
        sa.Column("speed", sa.Float(), nullable=True),
        sa.Column("direction", sa.Float(), nullable=True),
        sa.Column("altitude", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_positions")),
    )
    op.create_index("ix_positions_device_id_channel_id_time", "positions", ["device_id", "channel_id", "time"])
    op.create_index("ix_positions_time", "positions", ["time"])


def downgrade() -> None:
    op.drop_table("positions")
    op.drop_table("alarms")
