"""Contracts, fault tickets and their transitions, quality findings (issue 7).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "contracts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("customer", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("org_node_ids", sa.JSON(), nullable=False),
        sa.Column("channel_ids", sa.JSON(), nullable=False),
        sa.Column("storage_days", sa.Integer(), server_default=sa.text("30"), nullable=False),
        sa.Column("repair_limit_hours", sa.Float(), server_default=sa.text("48"), nullable=False),
        sa.Column("quality_terms", sa.JSON(), nullable=False),
        sa.Column("online_rate_threshold", sa.Float(), server_default=sa.text("0.85"), nullable=False),
        sa.Column("rate_rule", sa.String(length=16), server_default="time_weighted", nullable=False),
        sa.Column("sample_minutes", sa.Integer(), nullable=True),
        sa.Column("valid_from", UTC_TS, nullable=False),
        sa.Column("valid_until", UTC_TS, nullable=True),
        sa.Column("created_at", UTC_TS, nullable=False),
        sa.Column("updated_at", UTC_TS, nullable=False),
        sa.CheckConstraint("storage_days >= 7", name=op.f("ck_contracts_storage_days_min")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contracts")),
        sa.UniqueConstraint("name", name=op.f("uq_contracts_name")),
    )

    op.create_table(
        "tickets",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("device_id", sa.String(length=20), nullable=True),
        sa.Column("channel_id", sa.String(length=20), nullable=True),
        sa.Column("anomaly", sa.String(length=32), nullable=True),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("snapshot", sa.Text(), nullable=True),
        sa.Column("reported_by", sa.Integer(), nullable=True),
        sa.Column("reporter_name", sa.Text(), nullable=True),
        sa.Column("reported_at", UTC_TS, nullable=False),
        sa.Column("contract_id", sa.Integer(), nullable=True),
        sa.Column("repair_limit_hours", sa.Float(), nullable=False),
        sa.Column("deadline", UTC_TS, nullable=False),
        sa.Column("acknowledged_at", UTC_TS, nullable=True),
        sa.Column("feedback_at", UTC_TS, nullable=True),
        sa.Column("feedback_note", sa.Text(), nullable=True),
        sa.Column("repair_seconds", sa.Float(), nullable=True),
        sa.Column("confirmed_at", UTC_TS, nullable=True),
        sa.Column("overdue_notified_at", UTC_TS, nullable=True),
        sa.Column("open_key", sa.String(length=80), nullable=True),
        sa.Column("created_at", UTC_TS, nullable=False),
        sa.Column("updated_at", UTC_TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["reported_by"], ["users.id"], name=op.f("fk_tickets_reported_by_users"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["contract_id"], ["contracts.id"], name=op.f("fk_tickets_contract_id_contracts"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tickets")),
        sa.UniqueConstraint("open_key", name=op.f("uq_tickets_open_key")),
    )
    op.create_index("ix_tickets_state", "tickets", ["state"])
    op.create_index("ix_tickets_device_id", "tickets", ["device_id"])
    op.create_index("ix_tickets_channel_id", "tickets", ["channel_id"])
    op.create_index("ix_tickets_reported_at", "tickets", ["reported_at"])
    op.create_index("ix_tickets_contract_id", "tickets", ["contract_id"])

    op.create_table(
        "ticket_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("at", UTC_TS, nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("from_state", sa.String(length=16), nullable=True),
        sa.Column("to_state", sa.String(length=16), nullable=False),
        sa.Column("actor_type", sa.String(length=8), nullable=False),
        sa.Column("actor_id", sa.String(length=64), nullable=True),
        sa.Column("actor_name", sa.Text(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["ticket_id"], ["tickets.id"], name=op.f("fk_ticket_events_ticket_id_tickets"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ticket_events")),
    )
    op.create_index("ix_ticket_events_ticket_id", "ticket_events", ["ticket_id"])

    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", UTC_TS, nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=True),
        sa.Column("channel_id", sa.String(length=20), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["ticket_id"], ["tickets.id"], name=op.f("fk_notifications_ticket_id_tickets"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
    )
    op.create_index("ix_notifications_at", "notifications", ["at"])
    op.create_index("ix_notifications_ticket_id", "notifications", ["ticket_id"])

    op.create_table(
        "quality_baselines",
        sa.Column("channel_id", sa.String(length=20), nullable=False),
        sa.Column("sharpness", sa.Float(), nullable=False),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.Column("updated_at", UTC_TS, nullable=False),
        sa.PrimaryKeyConstraint("channel_id", name=op.f("pk_quality_baselines")),
    )


def downgrade() -> None:
    op.drop_table("quality_baselines")
    op.drop_index("ix_notifications_ticket_id", table_name="notifications")
    op.drop_index("ix_notifications_at", table_name="notifications")
    op.drop_table("notifications")
    op.drop_index("ix_ticket_events_ticket_id", table_name="ticket_events")
    op.drop_table("ticket_events")
    for column in ("contract_id", "reported_at", "channel_id", "device_id", "state"):
        op.drop_index(f"ix_tickets_{column}", table_name="tickets")
    op.drop_table("tickets")
    op.drop_table("contracts")
