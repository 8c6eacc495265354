"""Table of watermarked download jobs (``POST /api/channels/{id}/downloads``).

One row per job, written when it is asked for and again when it ends; progress while it runs is kept
in memory by :class:`watermark.downloads.DownloadManager`.  A job that was running when the platform
stopped is marked failed at the next start.  A live clip has ``seconds`` and no window; a history
download (issue 13) has ``window_start``/``window_end`` (UTC) and ``source`` (device or platform), its
``seconds`` the window's length.  The audit log, not this table, is the evidence: rows
may be removed by retention, audit entries never are.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from gbcore.db import Base, UtcDateTime, utcnow

__all__ = ["DOWNLOAD_STATES", "DownloadJob"]

#: queued (waiting for a free export slot) -> capturing -> encoding -> done | failed
DOWNLOAD_STATES = ("queued", "capturing", "encoding", "done", "failed")


class DownloadJob(Base):
    __tablename__ = "download_jobs"
    __table_args__ = (Index("ix_download_jobs_user_id_created_at", "user_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    username: Mapped[str] = mapped_column(String(64))
    channel_id: Mapped[str] = mapped_column(String(32), index=True)
    device_id: Mapped[str] = mapped_column(String(32))
    seconds: Mapped[int] = mapped_column(Integer)  # requested clip length
    state: Mapped[str] = mapped_column(String(16), index=True)
    reason: Mapped[str | None] = mapped_column(Text)  # why it failed ("中文 / English")
    session_id: Mapped[str] = mapped_column(String(64), unique=True)  # in the SEI tag and the audit log
    watermark_id: Mapped[str] = mapped_column(String(16))  # the code drawn in the picture
    client_ip: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    media_start: Mapped[datetime | None] = mapped_column(UtcDateTime())  # wall clock of the first frame
    media_end: Mapped[datetime | None] = mapped_column(UtcDateTime())
    frames: Mapped[int | None] = mapped_column(Integer)
    duration_s: Mapped[float | None] = mapped_column(Float)
    file_name: Mapped[str | None] = mapped_column(String(128))  # under <data_dir>/downloads/
    size: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime())  # file removed after this
    file_removed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # issue 13: a time-range download of history (None for a live clip); source "device" | "platform"
    window_start: Mapped[datetime | None] = mapped_column(UtcDateTime())
    window_end: Mapped[datetime | None] = mapped_column(UtcDateTime())
    source: Mapped[str | None] = mapped_column(String(16))
    # issue 18: what the requester says the copy is for (a case number, ...), on the download history
    purpose: Mapped[str | None] = mapped_column(Text)
