"""Channel identity (issue 11): a granted channel is (device id, channel id), not a bare channel id.

``role_channels`` gains ``device_id`` (primary key role_id, device_id, channel_id).  Every existing row is
kept:

* a grant on a channel id that one device has gets that device;
* a grant on an id that several devices have (NVRs shipping the same default ids) is **split** into one
  row per device having it: what the old check allowed (any channel with the id), now spelt out, so that
  an operator can remove the grants that were never meant;
* a grant on an id that no device has is kept with ``device_id`` '' ("unresolved"): it matches no channel
  (a later device reporting the id does not inherit it), but it stays visible in the role so that nothing
  is lost silently.

Removed channels count too (the grant survives the channel's return).  Each split (and each unresolved
grant) is recorded in ``role_channel_splits``; migrations run before the audit log exists, so the platform
writes one ``role.grant_split`` audit entry per row at its next start and marks it ``audited_at``.

``quality_baselines`` (the sampler's per-camera sharpness baseline) gains ``device_id`` too (primary key
device_id, channel_id); a baseline is copied to every device having its channel id (device '' when none).
Open automatic quality tickets get the new de-duplication key ``quality:<device>/<channel>:<anomaly>``.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_TS = sa.DateTime(timezone=True)


def _role_channels_table(with_device: bool) -> sa.Table:
    cols = [sa.Column("role_id", sa.Integer(), nullable=False)]
    if with_device:
        cols.append(sa.Column("device_id", sa.String(length=32), nullable=False))
    cols.append(sa.Column("channel_id", sa.String(length=32), nullable=False))
    pk = ("role_id", "device_id", "channel_id") if with_device else ("role_id", "channel_id")
    return op.create_table(
        "role_channels",
        *cols,
        sa.ForeignKeyConstraint(
            ["role_id"], ["roles.id"], name=op.f("fk_role_channels_role_id_roles"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint(*pk, name=op.f("pk_role_channels")),
    )


def _baselines_table(with_device: bool) -> sa.Table:
    cols = [sa.Column("device_id", sa.String(length=32), nullable=False)] if with_device else []
    pk = ("device_id", "channel_id") if with_device else ("channel_id",)
    return op.create_table(
        "quality_baselines",
        *cols,
        sa.Column("channel_id", sa.String(length=20), nullable=False),
        sa.Column("sharpness", sa.Float(), nullable=False),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.Column("updated_at", UTC_TS, nullable=False),
        sa.PrimaryKeyConstraint(*pk, name=op.f("pk_quality_baselines")),
    )


def _aware(value: object) -> object:
    """A timestamp read back through plain SQL (SQLite: text or naive UTC) as an aware UTC datetime."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


def upgrade() -> None:
    bind = op.get_bind()
    grants = bind.execute(sa.text("SELECT role_id, channel_id FROM role_channels ORDER BY role_id, channel_id")).all()
    role_names = dict(bind.execute(sa.text("SELECT id, name FROM roles")).all())
    devices_of: dict[str, list[str]] = {}
    for channel_id in sorted({c for _, c in grants}):
        devices_of[channel_id] = sorted(
            r[0] for r in bind.execute(
                sa.text("SELECT DISTINCT device_id FROM channels WHERE channel_id = :c"), {"c": channel_id}
            )
        )

    op.drop_table("role_channels")
    table = _role_channels_table(with_device=True)
    splits = op.create_table(
        "role_channel_splits",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("role_id", sa.Integer(), nullable=False),
        sa.Column("role_name", sa.String(length=64), nullable=False),
        sa.Column("channel_id", sa.String(length=32), nullable=False),
        sa.Column("device_ids", sa.Text(), nullable=False),
        sa.Column("split_at", UTC_TS, nullable=False),
        sa.Column("audited_at", UTC_TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_role_channel_splits")),
    )

    rows, recorded = [], []
    now = datetime.now(UTC)
    for role_id, channel_id in grants:
        devices = devices_of.get(channel_id, [])
        for device_id in devices or [""]:
            rows.append({"role_id": role_id, "device_id": device_id, "channel_id": channel_id})
        if len(devices) != 1:
            recorded.append({"role_id": role_id, "role_name": role_names.get(role_id, ""), "channel_id": channel_id,
                             "device_ids": json.dumps(devices), "split_at": now, "audited_at": None})
    if rows:
        op.bulk_insert(table, rows)
    if recorded:
        op.bulk_insert(splits, recorded)

    baselines = bind.execute(sa.text("SELECT channel_id, sharpness, samples, updated_at FROM quality_baselines")).all()
    op.drop_table("quality_baselines")
    qtable = _baselines_table(with_device=True)
    copies = []
    for channel_id, sharpness, samples, updated_at in baselines:
        devices = sorted(r[0] for r in bind.execute(
            sa.text("SELECT DISTINCT device_id FROM channels WHERE channel_id = :c"), {"c": channel_id}))
        for device_id in devices or [""]:
            copies.append({"device_id": device_id, "channel_id": channel_id, "sharpness": sharpness,
                           "samples": samples, "updated_at": _aware(updated_at)})
    if copies:
        op.bulk_insert(qtable, copies)
    bind.execute(sa.text(
        "UPDATE tickets SET open_key = 'quality:' || device_id || '/' || channel_id || ':' || anomaly "
        "WHERE open_key LIKE 'quality:%' AND device_id IS NOT NULL AND channel_id IS NOT NULL "
        "AND anomaly IS NOT NULL"))


def downgrade() -> None:
    bind = op.get_bind()
    baselines = bind.execute(sa.text(
        "SELECT channel_id, sharpness, samples, updated_at FROM quality_baselines ORDER BY channel_id, device_id"
    )).all()
    op.drop_table("quality_baselines")
    qtable = _baselines_table(with_device=False)
    first = {}
    for channel_id, sharpness, samples, updated_at in baselines:
        first.setdefault(channel_id, {"channel_id": channel_id, "sharpness": sharpness, "samples": samples,
                                      "updated_at": _aware(updated_at)})
    if first:
        op.bulk_insert(qtable, list(first.values()))
    grants = bind.execute(sa.text("SELECT DISTINCT role_id, channel_id FROM role_channels")).all()
    op.drop_table("role_channel_splits")
    op.drop_table("role_channels")
    table = _role_channels_table(with_device=False)
    if grants:
        op.bulk_insert(table, [{"role_id": r, "channel_id": c} for r, c in sorted(grants)])
