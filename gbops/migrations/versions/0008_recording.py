"""Platform recording (issue 13): the recording plan of each channel and the segments stored.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "record_plans",
        sa.Column("device_id", sa.String(length=32), nullable=False),
        sa.Column("channel_id", sa.String(length=32), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("schedule", sa.Text(), nullable=False),
        sa.Column("stream", sa.String(length=8), nullable=False),
        sa.Column("updated_by", sa.String(length=64), nullable=True),
        sa.Column("updated_at", UTC_TS, nullable=False),
        sa.PrimaryKeyConstraint("device_id", "channel_id", name=op.f("pk_record_plans")),
    )
    op.create_table(
        "record_segments",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("device_id", sa.String(length=32), nullable=False),
        sa.Column("channel_id", sa.String(length=32), nullable=False),
        sa.Column("start", UTC_TS, nullable=False),
        sa.Column("end", UTC_TS, nullable=False),
        sa.Column("duration_s", sa.Float(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("codec", sa.String(length=8), nullable=True),
        sa.Column("audio_codec", sa.String(length=8), nullable=True),
        sa.Column("cipher", sa.String(length=16), nullable=False),
        sa.Column("path", sa.String(length=255), nullable=False),
        sa.Column("state", sa.String(length=8), nullable=False),
        sa.Column("frames", sa.Integer(), nullable=False),
        sa.Column("created_at", UTC_TS, nullable=False),
        sa.Column("closed_at", UTC_TS, nullable=True),
        sa.Column("verified_at", UTC_TS, nullable=True),
        sa.Column("missing", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_record_segments")),
    )
    op.create_index("ix_record_segments_device_id_channel_id_start", "record_segments",
                    ["device_id", "channel_id", "start"])
    op.create_index("ix_record_segments_end", "record_segments", ["end"])
    op.create_index("ix_record_segments_state", "record_segments", ["state"])


def downgrade() -> None:
    op.drop_table("record_segments")
    op.drop_table("record_plans")
