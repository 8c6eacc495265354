"""Table of the time package: device clock samples (migration 0014).

One row per DeviceStatus answer carrying a ``DeviceTime`` (whoever asked for it).  Written and trimmed by
:class:`timesync.service.TimeService` only (kept ``HISTORY_DAYS`` days, at least the 24 h the compliance
measure reads).  No foreign key to the registry: the history outlives a deleted device.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Float, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from gbcore.db import Base, UtcDateTime

__all__ = ["ClockSampleRow"]


class ClockSampleRow(Base):
    """One reading of a device's clock and the skew estimated from it (and the readings just before it)."""

    __tablename__ = "clock_samples"
    __table_args__ = (
        Index("ix_clock_samples_device_id_received_at", "device_id", "received_at"),
        Index("ix_clock_samples_received_at", "received_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(16))  # device_status
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime())  # None: not our query
    received_at: Mapped[datetime] = mapped_column(UtcDateTime())
    device_time: Mapped[datetime] = mapped_column(UtcDateTime())  # what the device said (UTC)
    resolution_s: Mapped[float] = mapped_column(Float)
    low_s: Mapped[float] = mapped_column(Float)  # this reading's own interval
    high_s: Mapped[float] = mapped_column(Float)
    skew_s: Mapped[float] = mapped_column(Float)  # the estimate at this time (recent readings combined)
    uncertainty_s: Mapped[float] = mapped_column(Float)

    def __repr__(self) -> str:
        return f"ClockSampleRow({self.device_id}, {self.received_at.isoformat()}, skew={self.skew_s:+.3f})"
