"""Initial schema: device registry and portal users.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Migrations do not import application code: gbcore.db.UtcDateTime is a TypeDecorator over these.
UTC_TS = sa.DateTime(timezone=True)
UTC_TS_MS = sa.DateTime(timezone=True).with_variant(
    postgresql.TIMESTAMP(timezone=True, precision=3), "postgresql"
)
BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "org_nodes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("code", sa.String(length=32), nullable=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("source_device_id", sa.String(length=32), nullable=True),
        sa.Column("created_at", UTC_TS, nullable=False),
        sa.Column("updated_at", UTC_TS, nullable=False),
        sa.CheckConstraint(
            "kind IN ('business_group', 'virtual_org', 'civil', 'manual')", name=op.f("ck_org_nodes_kind")
        ),
        sa.ForeignKeyConstraint(
            ["parent_id"],
            ["org_nodes.id"],
            name=op.f("fk_org_nodes_parent_id_org_nodes"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_org_nodes")),
        sa.UniqueConstraint("code", name=op.f("uq_org_nodes_code")),
    )
    op.create_index(op.f("ix_org_nodes_parent_id"), "org_nodes", ["parent_id"])
    op.create_index(op.f("ix_org_nodes_source_device_id"), "org_nodes", ["source_device_id"])

    op.create_table(
        "platform_runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("started_at", UTC_TS, nullable=False),
        sa.Column("stopped_at", UTC_TS, nullable=True),
        sa.Column("clean", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_platform_runs")),
    )

    op.create_table(
        "presence_events",
        sa.Column("id", BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("subject", sa.String(length=8), nullable=False),
        sa.Column("device_id", sa.String(length=32), nullable=False),
        sa.Column("channel_id", sa.String(length=32), nullable=True),
        sa.Column("online", sa.Boolean(), nullable=False),
        sa.Column("at", UTC_TS_MS, nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.CheckConstraint("subject IN ('device', 'channel')", name=op.f("ck_presence_events_subject")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_presence_events")),
    )
    op.create_index("ix_presence_events_device_id_at", "presence_events", ["device_id", "at"])
    _make_presence_append_only()

    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("display_name", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("must_change_password", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("disabled", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("phone", sa.String(length=32), nullable=True),
        sa.Column("failed_logins", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("locked_until", UTC_TS, nullable=True),
        sa.Column("created_at", UTC_TS, nullable=False),
        sa.Column("updated_at", UTC_TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("username", name=op.f("uq_users_username")),
    )

    op.create_table(
        "auth_tokens",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("created_at", UTC_TS, nullable=False),
        sa.Column("expires_at", UTC_TS, nullable=False),
        sa.Column("revoked_at", UTC_TS, nullable=True),
        sa.Column("client_ip", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_auth_tokens_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_auth_tokens_token_hash")),
    )
    op.create_index(op.f("ix_auth_tokens_user_id"), "auth_tokens", ["user_id"])

    op.create_table(
        "devices",
        sa.Column("device_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("manufacturer", sa.Text(), nullable=True),
        sa.Column("model", sa.Text(), nullable=True),
        sa.Column("firmware", sa.Text(), nullable=True),
        sa.Column("device_type", sa.Text(), nullable=True),
        sa.Column("transport", sa.String(length=8), nullable=True),
        sa.Column("remote_addr", sa.Text(), nullable=True),
        sa.Column("contact", sa.Text(), nullable=True),
        sa.Column("user_agent", sa.Text(), nullable=True),
        sa.Column("charset", sa.String(length=32), nullable=True),
        sa.Column("registered_at", UTC_TS, nullable=True),
        sa.Column("register_expires_at", UTC_TS, nullable=True),
        sa.Column("keepalive_interval", sa.Integer(), server_default=sa.text("60"), nullable=False),
        sa.Column("last_seen", UTC_TS, nullable=True),
        sa.Column("online", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("offline_reason", sa.String(length=32), nullable=True),
        sa.Column("channel_count", sa.Integer(), nullable=True),
        sa.Column("catalog_synced_at", UTC_TS, nullable=True),
        sa.Column("catalog_state", sa.Text(), nullable=True),
        sa.Column("password_ha1_md5", sa.String(length=32), nullable=True),
        sa.Column("password_ha1_sha256", sa.String(length=64), nullable=True),
        sa.Column("password_realm", sa.Text(), nullable=True),
        sa.Column("org_node_id", sa.Integer(), nullable=True),
        sa.Column("created_at", UTC_TS, nullable=False),
        sa.Column("updated_at", UTC_TS, nullable=False),
        sa.CheckConstraint("transport IN ('udp', 'tcp')", name=op.f("ck_devices_transport")),
        sa.ForeignKeyConstraint(
            ["org_node_id"],
            ["org_nodes.id"],
            name=op.f("fk_devices_org_node_id_org_nodes"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_devices")),
    )
    op.create_index(op.f("ix_devices_org_node_id"), "devices", ["org_node_id"])

    op.create_table(
        "channels",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("device_id", sa.String(length=32), nullable=False),
        sa.Column("channel_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("manufacturer", sa.Text(), nullable=True),
        sa.Column("model", sa.Text(), nullable=True),
        sa.Column("owner", sa.Text(), nullable=True),
        sa.Column("civil_code", sa.Text(), nullable=True),
        sa.Column("block", sa.Text(), nullable=True),
        sa.Column("address", sa.Text(), nullable=True),
        sa.Column("parental", sa.Integer(), nullable=True),
        sa.Column("parent_id", sa.Text(), nullable=True),
        sa.Column("business_group_id", sa.Text(), nullable=True),
        sa.Column("safety_way", sa.Integer(), nullable=True),
        sa.Column("register_way", sa.Integer(), nullable=True),
        sa.Column("secrecy", sa.Integer(), nullable=True),
        sa.Column("ip_address", sa.Text(), nullable=True),
        sa.Column("port", sa.Integer(), nullable=True),
        sa.Column("status", sa.Text(), nullable=True),
        sa.Column("ptz_type", sa.Integer(), nullable=True),
        sa.Column("longitude", sa.Float(), nullable=True),
        sa.Column("latitude", sa.Float(), nullable=True),
        sa.Column("online", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("removed", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("removed_at", UTC_TS, nullable=True),
        sa.Column("first_seen", UTC_TS, nullable=False),
        sa.Column("updated_at", UTC_TS, nullable=False),
        sa.Column("org_node_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.device_id"],
            name=op.f("fk_channels_device_id_devices"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["org_node_id"],
            ["org_nodes.id"],
            name=op.f("fk_channels_org_node_id_org_nodes"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_channels")),
        sa.UniqueConstraint("device_id", "channel_id", name=op.f("uq_channels_device_id_channel_id")),
    )
    op.create_index(op.f("ix_channels_channel_id"), "channels", ["channel_id"])
    op.create_index(op.f("ix_channels_org_node_id"), "channels", ["org_node_id"])


def _make_presence_append_only() -> None:
    """presence_events is SLA evidence: refuse UPDATE and DELETE in the database itself."""
    if op.get_context().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION presence_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN RAISE EXCEPTION 'presence_events is append-only'; END $$"
        )
        op.execute(
            "CREATE TRIGGER presence_events_append_only BEFORE UPDATE OR DELETE ON presence_events "
            "FOR EACH ROW EXECUTE FUNCTION presence_events_append_only()"
        )
    elif op.get_context().dialect.name == "sqlite":
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER presence_events_no_{action.lower()} BEFORE {action} ON presence_events "
                "BEGIN SELECT RAISE(ABORT, 'presence_events is append-only'); END"
            )


def downgrade() -> None:
    op.drop_table("channels")
    op.drop_table("devices")
    op.drop_table("auth_tokens")
    op.drop_table("users")
    op.drop_table("presence_events")  # its triggers go with it
    if op.get_context().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS presence_events_append_only()")
    op.drop_table("platform_runs")
    op.drop_table("org_nodes")
