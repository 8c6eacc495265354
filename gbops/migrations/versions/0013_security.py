"""Security monitoring (issue 16): events, alerts, address blocks.

The tables belong to the ``security`` package (:mod:`security.models`); the retention sweep trims events and
acknowledged alerts (``GBOPS_SECURITY_RETENTION_DAYS``).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_TS = sa.DateTime(timezone=True)
UTC_TS_MS = sa.DateTime(timezone=True).with_variant(postgresql.TIMESTAMP(timezone=True, precision=3), "postgresql")
BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "security_events",
        sa.Column("id", BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("time", UTC_TS_MS, nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("source_ip", sa.String(length=64), nullable=True),
        sa.Column("user", sa.String(length=64), nullable=True),
        sa.Column("device_id", sa.String(length=64), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_security_events")),
    )
    op.create_index("ix_security_events_time", "security_events", ["time"])
    op.create_index("ix_security_events_kind_time", "security_events", ["kind", "time"])
    op.create_index("ix_security_events_source_ip_time", "security_events", ["source_ip", "time"])
    op.create_table(
        "security_alerts",
        sa.Column("id", BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("rule", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=256), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("first_at", UTC_TS_MS, nullable=False),
        sa.Column("last_at", UTC_TS_MS, nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("source_ip", sa.String(length=64), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("ack_user", sa.String(length=64), nullable=True),
        sa.Column("ack_at", UTC_TS, nullable=True),
        sa.Column("ack_note", sa.Text(), nullable=True),
        sa.Column("blocked_until", UTC_TS, nullable=True),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.Column("created_at", UTC_TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_security_alerts")),
    )
    op.create_index("ix_security_alerts_state_first_at", "security_alerts", ["state", "first_at"])
    op.create_index("ix_security_alerts_first_at", "security_alerts", ["first_at"])
    op.create_table(
        "security_blocks",
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("until", UTC_TS, nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("alert_id", sa.BigInteger(), nullable=True),
        sa.Column("created_at", UTC_TS, nullable=False),
        sa.PrimaryKeyConstraint("address", name=op.f("pk_security_blocks")),
    )


def downgrade() -> None:
    op.drop_table("security_blocks")
    op.drop_table("security_alerts")
    op.drop_table("security_events")
