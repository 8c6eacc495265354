"""Tables of fault tickets (issue 7): tickets, their transitions, notifications, quality baselines."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from gbcore.db import Base, UtcDateTime, utcnow
from ops_portal import contracts as _contracts  # noqa: F401  (the contracts table, referenced below)
from ops_portal import models as _portal_models  # noqa: F401  (the users table)

__all__ = ["Notification", "QualityBaseline", "Ticket", "TicketEvent"]


class Ticket(Base):
    """A fault report (point fault or video-quality anomaly) and its repair.

    The SLA clock starts at ``reported_at``; ``deadline`` = ``reported_at`` + ``repair_limit_hours``
    (fixed at the report, from the contract covering the channel or the default setting).
    ``repair_seconds`` = ``feedback_at`` - ``reported_at`` (the latest repair feedback).
    """

    __tablename__ = "tickets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))  # fault | quality
    source: Mapped[str] = mapped_column(String(16))  # user | auto_offline | auto_quality | auto_alarm | auto_clock
    state: Mapped[str] = mapped_column(String(16), index=True)
    device_id: Mapped[str | None] = mapped_column(String(20), index=True)
    channel_id: Mapped[str | None] = mapped_column(String(20), index=True)
    anomaly: Mapped[str | None] = mapped_column(String(32))
    note: Mapped[str] = mapped_column(Text, default="")
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    snapshot: Mapped[str | None] = mapped_column(Text)  # file name under <data_dir>/tickets/
    reported_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    reporter_name: Mapped[str | None] = mapped_column(Text)
    reported_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    contract_id: Mapped[int | None] = mapped_column(ForeignKey("contracts.id", ondelete="SET NULL"), index=True)
    repair_limit_hours: Mapped[float] = mapped_column(Float)
    deadline: Mapped[datetime] = mapped_column(UtcDateTime())
    acknowledged_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    feedback_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    feedback_note: Mapped[str | None] = mapped_column(Text)
    repair_seconds: Mapped[float | None] = mapped_column(Float)
    confirmed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    overdue_notified_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # "offline:channel:<id>" / "offline:device:<id>" / "quality:<channel>:<anomaly>" while an automatic
    # ticket waits for repair; cleared at feedback.  Unique: one open automatic ticket per subject.
    open_key: Mapped[str | None] = mapped_column(String(80), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow, onupdate=utcnow)


class TicketEvent(Base):
    """One transition of a ticket (also written to the audit log)."""

    __tablename__ = "ticket_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime())
    action: Mapped[str] = mapped_column(String(16))
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    actor_type: Mapped[str] = mapped_column(String(8))  # user | system
    actor_id: Mapped[str | None] = mapped_column(String(64))
    actor_name: Mapped[str | None] = mapped_column(Text)
    note: Mapped[str | None] = mapped_column(Text)


class Notification(Base):
    """A console notification (ticket opened automatically, overdue, ...), also posted to the webhook."""

    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), index=True)
    channel_id: Mapped[str | None] = mapped_column(String(20))
    message: Mapped[str] = mapped_column(Text)


class QualityBaseline(Base):
    """A channel's own sharpness baseline (running mean of the Laplacian variance of healthy frames)."""

    __tablename__ = "quality_baselines"

    # the camera: a channel id is unique only within its device (migration 0007 added device_id)
    device_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    channel_id: Mapped[str] = mapped_column(String(20), primary_key=True)
    sharpness: Mapped[float] = mapped_column(Float)
    samples: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow, onupdate=utcnow)
