"""The purpose of a download (issue 18, the downloads centre's history): ``download_jobs.purpose``.

What the requester says the copy is for (e.g. a case number), recorded with the job and on the audit log's
``download.request`` entry; NULL for jobs made before and for requests that name none.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("download_jobs") as batch:
        batch.add_column(sa.Column("purpose", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("download_jobs") as batch:
        batch.drop_column("purpose")
