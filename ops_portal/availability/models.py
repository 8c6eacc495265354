"""Tables of the availability reports: one row per generated (or generating) report file.

The indexes of ``presence_events`` that the reports need are declared with that table
(the registry's models): the registry owns its tables.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, Float, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from gbcore.db import Base, UtcDateTime, utcnow

__all__ = ["REPORT_FORMATS", "REPORT_STATES", "Report"]

REPORT_FORMATS = ("pdf", "xlsx", "csv")
REPORT_STATES = ("queued", "running", "done", "failed")


class Report(Base):
    """A report job and, once done, its file under ``<data_dir>/reports/``."""

    __tablename__ = "reports"
    __table_args__ = (
        CheckConstraint("state IN ('queued', 'running', 'done', 'failed')", name="state"),
        CheckConstraint("format IN ('pdf', 'xlsx', 'csv')", name="format"),
        CheckConstraint("kind IN ('day', 'week', 'month', 'year', 'custom')", name="kind"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))
    label: Mapped[str] = mapped_column(Text)
    period_start: Mapped[datetime] = mapped_column(UtcDateTime())
    period_end: Mapped[datetime] = mapped_column(UtcDateTime())
    timezone: Mapped[str] = mapped_column(String(64))
    format: Mapped[str] = mapped_column(String(8))
    org_node_id: Mapped[int | None] = mapped_column(Integer)
    contract_id: Mapped[int | None] = mapped_column(Integer)
    #: JSON of the scope description (label, user scope limited or not, threshold, rule)
    scope: Mapped[str] = mapped_column(Text)
    #: "schedule", "api" or "cli"
    trigger: Mapped[str] = mapped_column(String(16))
    created_by: Mapped[int | None] = mapped_column(Integer, index=True)
    state: Mapped[str] = mapped_column(String(8), default="queued")
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    file_name: Mapped[str | None] = mapped_column(Text)
    size: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    source_sha256: Mapped[str | None] = mapped_column(String(64))
    checkpoint_size: Mapped[int | None] = mapped_column(BigInteger)
    checkpoint_root: Mapped[str | None] = mapped_column(String(64))
    audit_seq: Mapped[int | None] = mapped_column(BigInteger)
    #: JSON of PeriodResult.summary()
    summary: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow, index=True)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
