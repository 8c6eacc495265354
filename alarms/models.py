"""Tables of the alarms package: the alarms devices reported and the position tracks (migration 0011).

Both are written by :class:`alarms.service.AlarmService` only and trimmed by its retention sweep
(``GBOPS_ALARM_RETENTION_DAYS``).  No foreign key to the registry on purpose: the history outlives a deleted
device, as ``presence_events`` does.  ``channel_id`` is NULL when the device reported for itself (or named
something that is not one of its channels; the body's own DeviceID is kept in ``raw``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Float, Index, Integer, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column

from gbcore.db import Base, UtcDateTime, utcnow

__all__ = ["AlarmRow", "PositionRow"]

ID_LENGTH = 32  # as device_registry.models


class AlarmRow(Base):
    """One alarm a device reported (GB/T 28181 A.2.5.3), and its acknowledgement."""

    __tablename__ = "alarms"
    __table_args__ = (
        # search: one channel's (or device's) alarms in a window, newest first ...
        Index("ix_alarms_device_id_channel_id_time", "device_id", "channel_id", "time"),
        # ... and every alarm in a window (the console's list)
        Index("ix_alarms_time", "time"),
        # retention sweeps by arrival (a device clock set to 1970 must not make its alarms vanish at once)
        Index("ix_alarms_received_at", "received_at"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    device_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    channel_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    priority: Mapped[int | None] = mapped_column(Integer)  # 1 most urgent .. 4
    method: Mapped[int | None] = mapped_column(Integer)
    type: Mapped[int | None] = mapped_column(Integer)
    event_type: Mapped[int | None] = mapped_column(Integer)
    time: Mapped[datetime] = mapped_column(UtcDateTime(precision=3))  # the device's alarm time (UTC)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime(precision=3), default=utcnow)
    description: Mapped[str | None] = mapped_column(Text)
    longitude: Mapped[float | None] = mapped_column(Float)
    latitude: Mapped[float | None] = mapped_column(Float)
    acknowledged: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    acknowledged_by: Mapped[str | None] = mapped_column(String(64))
    acknowledged_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    ack_note: Mapped[str | None] = mapped_column(Text)
    raw: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    def __repr__(self) -> str:
        who = self.device_id if self.channel_id is None else f"{self.device_id}/{self.channel_id}"
        return f"AlarmRow({self.id}, {who}, priority={self.priority}, {self.time.isoformat()})"


class PositionRow(Base):
    """One position report (MobilePosition, GB/T 28181 A.2.5.6): the track of a moving device."""

    __tablename__ = "positions"
    __table_args__ = (
        Index("ix_positions_device_id_channel_id_time", "device_id", "channel_id", "time"),
        Index("ix_positions_time", "time"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    device_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    channel_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    time: Mapped[datetime] = mapped_column(UtcDateTime(precision=3))
    longitude: Mapped[float] = mapped_column(Float)
    latitude: Mapped[float] = mapped_column(Float)
    speed: Mapped[float | None] = mapped_column(Float)  # km/h
    direction: Mapped[float | None] = mapped_column(Float)  # degrees from north, clockwise
    altitude: Mapped[float | None] = mapped_column(Float)  # metres
