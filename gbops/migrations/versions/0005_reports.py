"""Generated reports (issue 7); indexes on presence_events for period reads.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "reports",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("period_start", UTC_TS, nullable=False),
        sa.Column("period_end", UTC_TS, nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("format", sa.String(length=8), nullable=False),
        sa.Column("org_node_id", sa.Integer(), nullable=True),
        sa.Column("contract_id", sa.Integer(), nullable=True),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(length=8), nullable=False),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("file_name", sa.Text(), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("source_sha256", sa.String(length=64), nullable=True),
        sa.Column("checkpoint_size", sa.BigInteger(), nullable=True),
        sa.Column("checkpoint_root", sa.String(length=64), nullable=True),
        sa.Column("audit_seq", sa.BigInteger(), nullable=True),
        sa.Column("summary", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", UTC_TS, nullable=False),
        sa.Column("finished_at", UTC_TS, nullable=True),
        sa.CheckConstraint("state IN ('queued', 'running', 'done', 'failed')", name=op.f("ck_reports_state")),
        sa.CheckConstraint("format IN ('pdf', 'xlsx', 'csv')", name=op.f("ck_reports_format")),
        sa.CheckConstraint(
            "kind IN ('day', 'week', 'month', 'year', 'custom')", name=op.f("ck_reports_kind")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reports")),
    )
    op.create_index(op.f("ix_reports_created_by"), "reports", ["created_by"])
    op.create_index(op.f("ix_reports_created_at"), "reports", ["created_at"])
    op.create_index(
        "ix_presence_events_device_id_channel_id_at", "presence_events", ["device_id", "channel_id", "at"]
    )
    op.create_index("ix_presence_events_at", "presence_events", ["at"])


def downgrade() -> None:
    op.drop_index("ix_presence_events_at", table_name="presence_events")
    op.drop_index("ix_presence_events_device_id_channel_id_at", table_name="presence_events")
    op.drop_table("reports")
