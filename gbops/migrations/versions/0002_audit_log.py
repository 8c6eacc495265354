"""Tamper-evident audit log: entries, signed checkpoints, Merkle tree nodes.

The database itself keeps the log append-only: UPDATE, DELETE (and TRUNCATE on PostgreSQL) are
refused by triggers, which on PostgreSQL are ENABLE ALWAYS so that ``session_replication_role =
replica`` does not switch them off.  An INSERT into ``audit_entries`` must continue the chain:
``seq`` is the head's + 1 (0 for the first) and ``prev`` the head's leaf hash (32 zero bytes for
the first); PostgreSQL also checks the leaf hash and the copied columns against the entry bytes.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_TS_MS = sa.DateTime(timezone=True).with_variant(
    postgresql.TIMESTAMP(timezone=True, precision=3), "postgresql"
)
BIGINT_KEY = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TABLES = ("audit_entries", "audit_checkpoints", "audit_tree_nodes")


def upgrade() -> None:
    op.create_table(
        "audit_entries",
        sa.Column("seq", BIGINT_KEY, autoincrement=False, nullable=False),
        sa.Column("time", UTC_TS_MS, nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("actor_type", sa.String(length=16), nullable=False),
        sa.Column("actor_id", sa.String(length=64), nullable=True),
        sa.Column("actor_name", sa.Text(), nullable=True),
        sa.Column("target_type", sa.String(length=32), nullable=False),
        sa.Column("target_id", sa.String(length=128), nullable=True),
        sa.Column("client_ip", sa.String(length=64), nullable=True),
        sa.Column("prev", sa.LargeBinary(length=32), nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("entry", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_entries")),
        sa.UniqueConstraint("prev", name=op.f("uq_audit_entries_prev")),
        sa.UniqueConstraint("leaf_hash", name=op.f("uq_audit_entries_leaf_hash")),
    )
    op.create_index("ix_audit_entries_time", "audit_entries", ["time"])
    op.create_index("ix_audit_entries_action", "audit_entries", ["action"])
    op.create_index("ix_audit_entries_actor_id", "audit_entries", ["actor_id"])
    op.create_index("ix_audit_entries_target_id", "audit_entries", ["target_id"])

    op.create_table(
        "audit_checkpoints",
        sa.Column("tree_size", BIGINT_KEY, autoincrement=False, nullable=False),
        sa.Column("root_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("created_at", UTC_TS_MS, nullable=False),
        sa.PrimaryKeyConstraint("tree_size", name=op.f("pk_audit_checkpoints")),
    )

    op.create_table(
        "audit_tree_nodes",
        sa.Column("level", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("idx", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("level", "idx", name=op.f("pk_audit_tree_nodes")),
    )

    dialect = op.get_context().dialect.name
    if dialect == "postgresql":
        _postgresql_triggers()
    elif dialect == "sqlite":
        _sqlite_triggers()


def _postgresql_triggers() -> None:
    op.execute(
        """
        CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION USING MESSAGE = TG_TABLE_NAME || ' is append-only', ERRCODE = 'insufficient_privilege';
        END $$
        """
    )
    op.execute(
        """
        CREATE FUNCTION audit_entries_guard() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            head_seq bigint;
            head_hash bytea;
            doc jsonb;
        BEGIN
            SELECT seq, leaf_hash INTO head_seq, head_hash FROM audit_entries ORDER BY seq DESC LIMIT 1;
            IF head_seq IS NULL THEN
                head_seq := -1;
                head_hash := decode(repeat('00', 32), 'hex');
            END IF;
            IF NEW.seq <> head_seq + 1 OR NEW.prev <> head_hash THEN
                RAISE EXCEPTION USING ERRCODE = 'unique_violation', MESSAGE =
                    'audit_entries: entry ' || NEW.seq || ' does not continue the chain (head ' || head_seq || ')';
            END IF;
            IF NEW.leaf_hash <> sha256('\\x00'::bytea || NEW.entry) THEN
                RAISE EXCEPTION USING ERRCODE = 'check_violation', MESSAGE =
                    'audit_entries: leaf_hash of entry ' || NEW.seq || ' is not SHA-256(0x00 || entry)';
            END IF;
            doc := convert_from(NEW.entry, 'UTF8')::jsonb;
            IF (doc ->> 'seq')::bigint IS DISTINCT FROM NEW.seq
               OR doc ->> 'prev' IS DISTINCT FROM encode(NEW.prev, 'hex')
               OR doc ->> 'action' IS DISTINCT FROM NEW.action THEN
                RAISE EXCEPTION USING ERRCODE = 'check_violation', MESSAGE =
                    'audit_entries: columns of entry ' || NEW.seq || ' do not match its bytes';
            END IF;
            RETURN NEW;
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER audit_entries_guard BEFORE INSERT ON audit_entries "
        "FOR EACH ROW EXECUTE FUNCTION audit_entries_guard()"
    )
    op.execute("ALTER TABLE audit_entries ENABLE ALWAYS TRIGGER audit_entries_guard")
    for table in TABLES:
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()"
        )
        op.execute(f"ALTER TABLE {table} ENABLE ALWAYS TRIGGER {table}_append_only")
        op.execute(f"ALTER TABLE {table} ENABLE ALWAYS TRIGGER {table}_no_truncate")


def _sqlite_triggers() -> None:
    op.execute(
        "CREATE TRIGGER audit_entries_guard BEFORE INSERT ON audit_entries "
        "WHEN NEW.seq IS NOT (SELECT coalesce(max(seq) + 1, 0) FROM audit_entries) "
        "OR NEW.prev IS NOT coalesce((SELECT leaf_hash FROM audit_entries ORDER BY seq DESC LIMIT 1), zeroblob(32)) "
        "BEGIN SELECT RAISE(ABORT, 'audit_entries: the entry does not continue the chain'); END"
    )
    for table in TABLES:
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
            )


def downgrade() -> None:
    for table in reversed(TABLES):
        op.drop_table(table)  # their triggers go with them
    if op.get_context().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS audit_entries_guard()")
        op.execute("DROP FUNCTION IF EXISTS audit_log_append_only()")
