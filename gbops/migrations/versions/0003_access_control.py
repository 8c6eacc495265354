"""Roles, role scopes, user roles and user attributes (issue 6).

Adds to ``users``: ``ptz_level`` (1..9), ``valid_from`` / ``valid_until`` (validity window).
New tables: ``roles`` (``builtin`` marks the system administrator role, ``full_scope`` grants every
channel), ``role_permissions``, ``role_org_nodes`` (descendants included at resolution),
``role_channels`` (explicit channel ids) and ``user_roles``.

Data: creates the built-in role "系统管理员" (system administrator) and gives it to an existing
``admin`` user, so that an upgraded platform keeps its administrator.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_TS = sa.DateTime(timezone=True)
ADMIN_ROLE_NAME = "系统管理员"


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("ptz_level", sa.Integer(), server_default=sa.text("5"), nullable=False))
        batch.add_column(sa.Column("valid_from", UTC_TS, nullable=True))
        batch.add_column(sa.Column("valid_until", UTC_TS, nullable=True))

    roles = op.create_table(
        "roles",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("description", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("builtin", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("full_scope", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("created_at", UTC_TS, nullable=False),
        sa.Column("updated_at", UTC_TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_roles")),
        sa.UniqueConstraint("name", name=op.f("uq_roles_name")),
    )
    op.create_table(
        "role_permissions",
        sa.Column("role_id", sa.Integer(), nullable=False),
        sa.Column("permission", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["role_id"], ["roles.id"], name=op.f("fk_role_permissions_role_id_roles"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("role_id", "permission", name=op.f("pk_role_permissions")),
    )
    op.create_table(
        "role_org_nodes",
        sa.Column("role_id", sa.Integer(), nullable=False),
        sa.Column("org_node_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["role_id"], ["roles.id"], name=op.f("fk_role_org_nodes_role_id_roles"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["org_node_id"],
            ["org_nodes.id"],
            name=op.f("fk_role_org_nodes_org_node_id_org_nodes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("role_id", "org_node_id", name=op.f("pk_role_org_nodes")),
    )
    op.create_index(op.f("ix_role_org_nodes_org_node_id"), "role_org_nodes", ["org_node_id"])
    op.create_table(
        "role_channels",
        sa.Column("role_id", sa.Integer(), nullable=False),
        sa.Column("channel_id", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["role_id"], ["roles.id"], name=op.f("fk_role_channels_role_id_roles"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("role_id", "channel_id", name=op.f("pk_role_channels")),
    )
    op.create_table(
        "user_roles",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("role_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_user_roles_user_id_users"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["role_id"], ["roles.id"], name=op.f("fk_user_roles_role_id_roles"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("user_id", "role_id", name=op.f("pk_user_roles")),
    )
    op.create_index(op.f("ix_user_roles_role_id"), "user_roles", ["role_id"])

    # The built-in system administrator role, given to an existing admin.
    now = datetime.now(UTC)
    op.bulk_insert(
        roles,
        [
            {
                "name": ADMIN_ROLE_NAME,
                "description": "内置：全部权限、全部数据 / built-in: every permission, all data",
                "builtin": True,
                "full_scope": True,
                "created_at": now,
                "updated_at": now,
            }
        ],
    )
    op.execute(
        sa.text(
            "INSERT INTO user_roles (user_id, role_id) "
            "SELECT u.id, r.id FROM users u, roles r WHERE u.username = 'admin' AND r.builtin"
        )
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_user_roles_role_id"), table_name="user_roles")
    op.drop_table("user_roles")
    op.drop_table("role_channels")
    op.drop_index(op.f("ix_role_org_nodes_org_node_id"), table_name="role_org_nodes")
    op.drop_table("role_org_nodes")
    op.drop_table("role_permissions")
    op.drop_table("roles")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("valid_until")
        batch.drop_column("valid_from")
        batch.drop_column("ptz_level")
