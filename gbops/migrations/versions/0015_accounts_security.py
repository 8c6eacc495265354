"""Accounts (issue 16): password age, last login, idle sessions, TOTP second factor.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("password_changed_at", UTC_TS, nullable=True))
        batch.add_column(sa.Column("last_login_at", UTC_TS, nullable=True))
        batch.add_column(sa.Column("password_weak", sa.Boolean(), nullable=True))
        batch.add_column(sa.Column("totp_secret", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("totp_enabled_at", UTC_TS, nullable=True))
        batch.add_column(sa.Column("totp_last_step", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("auth_tokens") as batch:
        batch.add_column(sa.Column("last_used_at", UTC_TS, nullable=True))
    # Existing passwords: the last change of the account is the best known date of the password (the age
    # policy then starts from there, rather than forcing every user to change at once or never).
    op.execute("UPDATE users SET password_changed_at = COALESCE(updated_at, created_at)")
    op.execute("UPDATE auth_tokens SET last_used_at = created_at")


def downgrade() -> None:
    with op.batch_alter_table("auth_tokens") as batch:
        batch.drop_column("last_used_at")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("totp_last_step")
        batch.drop_column("totp_enabled_at")
        batch.drop_column("totp_secret")
        batch.drop_column("password_weak")
        batch.drop_column("last_login_at")
        batch.drop_column("password_changed_at")
