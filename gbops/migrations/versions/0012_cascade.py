"""Cascade upward (issue 15): the upper platforms this platform registers to, and what each one sees.

The tables belong to the ``cascade`` package (:mod:`cascade.models`).  Shares name organisation nodes and
channels by id only (no foreign key into the registry's tables); deleting a platform deletes its share.
The SIP password is stored sealed (AES-256-GCM, ``<data_dir>/keys/cascade.key``), never as plain text.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-14
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "cascade_platforms",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("server_id", sa.String(length=32), nullable=False),
        sa.Column("server_domain", sa.String(length=32), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("transport", sa.String(length=8), nullable=False),
        sa.Column("local_id", sa.String(length=32), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("password_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("expires", sa.Integer(), nullable=False),
        sa.Column("keepalive_s", sa.Integer(), nullable=False),
        sa.Column("charset", sa.String(length=16), nullable=False),
        sa.Column("gb_version", sa.String(length=8), nullable=False),
        sa.Column("ptz_level", sa.Integer(), nullable=False),
        sa.Column("watermark", sa.String(length=16), nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("created_at", UTC_TS, nullable=False),
        sa.Column("updated_at", UTC_TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cascade_platforms")),
        sa.UniqueConstraint("server_id", name=op.f("uq_cascade_platforms_server_id")),
    )
    op.create_table(
        "cascade_share_nodes",
        sa.Column("platform_id", sa.Integer(), nullable=False),
        sa.Column("org_node_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["platform_id"], ["cascade_platforms.id"],
            name=op.f("fk_cascade_share_nodes_platform_id_cascade_platforms"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("platform_id", "org_node_id", name=op.f("pk_cascade_share_nodes")),
    )
    op.create_table(
        "cascade_share_channels",
        sa.Column("platform_id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.String(length=32), nullable=False),
        sa.Column("channel_id", sa.String(length=32), nullable=False),
        sa.Column("upward_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("civil_code", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(
            ["platform_id"], ["cascade_platforms.id"],
            name=op.f("fk_cascade_share_channels_platform_id_cascade_platforms"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("platform_id", "device_id", "channel_id", name=op.f("pk_cascade_share_channels")),
        sa.UniqueConstraint("platform_id", "upward_id", name=op.f("uq_cascade_share_channels_platform_id_upward_id")),
    )


def downgrade() -> None:
    op.drop_table("cascade_share_channels")
    op.drop_table("cascade_share_nodes")
    op.drop_table("cascade_platforms")
