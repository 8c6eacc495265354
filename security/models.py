"""Tables of the security monitor (migration 0013): the events, the alerts the rules raised, and the
addresses blocked.  Written by :class:`security.monitor.SecurityMonitor` only; the retention sweep
(``GBOPS_SECURITY_RETENTION_DAYS``) trims events and closed alerts.  Times are UTC.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from gbcore.db import Base, UtcDateTime, utcnow

__all__ = ["SecurityAlertRow", "SecurityBlockRow", "SecurityEventRow"]

_BIGINT_PK = BigInteger().with_variant(Integer, "sqlite")


class SecurityEventRow(Base):
    """One security event (see security.events.EVENT_KINDS)."""

    __tablename__ = "security_events"
    __table_args__ = (
        Index("ix_security_events_time", "time"),
        Index("ix_security_events_kind_time", "kind", "time"),
        Index("ix_security_events_source_ip_time", "source_ip", "time"),
    )

    id: Mapped[int] = mapped_column(_BIGINT_PK, primary_key=True, autoincrement=True)
    time: Mapped[datetime] = mapped_column(UtcDateTime(precision=3))
    kind: Mapped[str] = mapped_column(String(32))
    severity: Mapped[str] = mapped_column(String(16))
    source_ip: Mapped[str | None] = mapped_column(String(64))
    user: Mapped[str | None] = mapped_column(String(64))
    device_id: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class SecurityAlertRow(Base):
    """An alert a rule raised for one key (an address, a user, a device), and its acknowledgement."""

    __tablename__ = "security_alerts"
    __table_args__ = (
        Index("ix_security_alerts_state_first_at", "state", "first_at"),
        Index("ix_security_alerts_first_at", "first_at"),
    )

    id: Mapped[int] = mapped_column(_BIGINT_PK, primary_key=True, autoincrement=True)
    rule: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(256))
    severity: Mapped[str] = mapped_column(String(16))
    first_at: Mapped[datetime] = mapped_column(UtcDateTime(precision=3))
    last_at: Mapped[datetime] = mapped_column(UtcDateTime(precision=3))
    count: Mapped[int] = mapped_column(Integer, default=1)
    source_ip: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default="open")  # open | acknowledged
    ack_user: Mapped[str | None] = mapped_column(String(64))
    ack_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    ack_note: Mapped[str | None] = mapped_column(Text)
    blocked_until: Mapped[datetime | None] = mapped_column(UtcDateTime())
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


class SecurityBlockRow(Base):
    """An address refused (HTTP 403 ``address_blocked``, SIP requests dropped) until ``until``."""

    __tablename__ = "security_blocks"

    address: Mapped[str] = mapped_column(String(64), primary_key=True)
    until: Mapped[datetime] = mapped_column(UtcDateTime())
    reason: Mapped[str] = mapped_column(Text)
    alert_id: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
