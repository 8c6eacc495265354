"""Tables of platform recording: the plan of each channel and the segments stored (migration 0008).

Rows of ``record_segments`` are removed by retention; the audit log (``record.segment`` with the SHA-256
of the bytes as stored, ``record.delete``) is the evidence, not this table.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, Float, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from gbcore.db import Base, UtcDateTime, utcnow

__all__ = ["RecordPlanRow", "RecordSegmentRow", "SEGMENT_STATES"]

#: open (being written) -> done; ``partial``: the platform stopped while it was open (kept, readable up
#: to its last complete chunk)
SEGMENT_STATES = ("open", "done", "partial")


class RecordPlanRow(Base):
    __tablename__ = "record_plans"

    device_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    channel_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    mode: Mapped[str] = mapped_column(String(16))
    schedule: Mapped[str] = mapped_column(Text, default="[]")  # JSON [{"days": [1..7], "from", "to"}]
    stream: Mapped[str] = mapped_column(String(8), default="main")
    updated_by: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


class RecordSegmentRow(Base):
    __tablename__ = "record_segments"
    __table_args__ = (
        Index("ix_record_segments_device_id_channel_id_start", "device_id", "channel_id", "start"),
        Index("ix_record_segments_end", "end"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(32))
    channel_id: Mapped[str] = mapped_column(String(32))
    start: Mapped[datetime] = mapped_column(UtcDateTime())
    end: Mapped[datetime] = mapped_column(UtcDateTime())
    duration_s: Mapped[float] = mapped_column(Float, default=0.0)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)  # as stored, one copy
    sha256: Mapped[str | None] = mapped_column(String(64))  # of the bytes as stored; None while open
    codec: Mapped[str | None] = mapped_column(String(8))
    audio_codec: Mapped[str | None] = mapped_column(String(8))
    cipher: Mapped[str] = mapped_column(String(16))  # none | aes-256-gcm | sm4-gcm
    path: Mapped[str] = mapped_column(String(255))  # relative to each root
    state: Mapped[str] = mapped_column(String(8), index=True)
    frames: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    verified_at: Mapped[datetime | None] = mapped_column(UtcDateTime())  # last full check of every copy
    missing: Mapped[bool] = mapped_column(Boolean, default=False)  # some root has no good copy (and none to repair from)
