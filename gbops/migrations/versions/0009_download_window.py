"""Time-range downloads (issue 13): a download job may name a window of history and its source.

``download_jobs`` gains ``window_start`` / ``window_end`` (UTC; NULL for a live clip) and ``source``
(``device`` | ``platform``; NULL for a live clip).  Existing rows are live clips and stay as they are.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("download_jobs") as batch:
        batch.add_column(sa.Column("window_start", UTC_TS, nullable=True))
        batch.add_column(sa.Column("window_end", UTC_TS, nullable=True))
        batch.add_column(sa.Column("source", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("download_jobs") as batch:
        batch.drop_column("source")
        batch.drop_column("window_end")
        batch.drop_column("window_start")
