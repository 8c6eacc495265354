"""Device management (issue 18): pre-registered devices, soft delete, operator overrides of catalog values.

An expand-only change (nullable or defaulted columns): an older node ignores them.

* ``devices.deleted_at``: a deleted device keeps its row (presence history, audit entries and reports name it);
  lists, lookups and the SIP service's snapshot leave it out.  Adding the same id again revives the row.
* ``devices.user_name``: the name an operator gave the device (also copied to ``name``); a DeviceInfo answer
  does not overwrite ``name`` while it is set.
* ``devices.stream_form`` (``streamnumber`` | ``stream`` | ``streamprofile`` | ``none``: how the device wants the
  main/sub stream asked for in the INVITE's SDP), ``expected_channels``, ``longitude``, ``latitude``, ``address``.
* ``channels.user_name`` / ``user_address`` / ``user_longitude`` / ``user_latitude`` / ``user_org_node``: an
  operator's values (copied to the plain columns); a later catalog does not overwrite them.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Migrations do not import application code: gbcore.db.UtcDateTime is a TypeDecorator over this.
UTC_TS = sa.DateTime(timezone=True)

_DEVICE_COLUMNS = ("deleted_at", "user_name", "stream_form", "expected_channels", "longitude", "latitude", "address")
_CHANNEL_COLUMNS = ("user_name", "user_address", "user_longitude", "user_latitude", "user_org_node")


def upgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("deleted_at", UTC_TS, nullable=True))
        batch.add_column(sa.Column("user_name", sa.Text(), nullable=True))
        batch.add_column(sa.Column("stream_form", sa.String(16), nullable=False, server_default="none"))
        batch.add_column(sa.Column("expected_channels", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("longitude", sa.Float(), nullable=True))
        batch.add_column(sa.Column("latitude", sa.Float(), nullable=True))
        batch.add_column(sa.Column("address", sa.Text(), nullable=True))
    with op.batch_alter_table("channels") as batch:
        batch.add_column(sa.Column("user_name", sa.Text(), nullable=True))
        batch.add_column(sa.Column("user_address", sa.Text(), nullable=True))
        batch.add_column(sa.Column("user_longitude", sa.Float(), nullable=True))
        batch.add_column(sa.Column("user_latitude", sa.Float(), nullable=True))
        batch.add_column(sa.Column("user_org_node", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("channels") as batch:
        for name in reversed(_CHANNEL_COLUMNS):
            batch.drop_column(name)
    with op.batch_alter_table("devices") as batch:
        for name in reversed(_DEVICE_COLUMNS):
            batch.drop_column(name)
