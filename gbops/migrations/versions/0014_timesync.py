"""Time (issue 16): device clock samples.

One table of the ``timesync`` package (:mod:`timesync.models`): a row per DeviceStatus ``DeviceTime`` reading
and the skew estimated from it; trimmed by the time service.  No foreign key to the registry.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_TS = sa.DateTime(timezone=True)
BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "clock_samples",
        sa.Column("id", BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("device_id", sa.String(length=32), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("sent_at", UTC_TS, nullable=True),
        sa.Column("received_at", UTC_TS, nullable=False),
        sa.Column("device_time", UTC_TS, nullable=False),
        sa.Column("resolution_s", sa.Float(), nullable=False),
        sa.Column("low_s", sa.Float(), nullable=False),
        sa.Column("high_s", sa.Float(), nullable=False),
        sa.Column("skew_s", sa.Float(), nullable=False),
        sa.Column("uncertainty_s", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clock_samples")),
    )
    op.create_index("ix_clock_samples_device_id_received_at", "clock_samples", ["device_id", "received_at"])
    op.create_index("ix_clock_samples_received_at", "clock_samples", ["received_at"])


def downgrade() -> None:
    op.drop_index("ix_clock_samples_received_at", table_name="clock_samples")
    op.drop_index("ix_clock_samples_device_id_received_at", table_name="clock_samples")
    op.drop_table("clock_samples")
