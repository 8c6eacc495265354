"""Cluster (issue 17): which node a platform run belongs to, so that several SIP nodes keep runs of their own.

An expand-only change (a nullable column): an older node keeps writing runs without a node, which the newer
code treats as before (closed by the next start).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("platform_runs") as batch:
        batch.add_column(sa.Column("node_id", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("platform_runs") as batch:
        batch.drop_column("node_id")
