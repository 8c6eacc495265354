"""Tables of device control (migration 0010): preset tours, each channel's home, preset names set on the
platform.  Rows name the channel by (device id, channel id); nothing here is evidence (the audit log is)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from gbcore.db import Base, UtcDateTime, utcnow

__all__ = ["PtzHomeRow", "PtzPresetNameRow", "PtzTourRow"]


class PtzTourRow(Base):
    __tablename__ = "ptz_tours"
    __table_args__ = (Index("ix_ptz_tours_device_id_channel_id", "device_id", "channel_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(32))
    channel_id: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(64))
    points: Mapped[str] = mapped_column(Text, default="[]")  # JSON [{"preset": 1..255, "dwell_s": >= 2}]
    loop: Mapped[bool] = mapped_column(Boolean, default=True)
    mode: Mapped[str] = mapped_column(String(16), default="platform")  # platform | device
    cruise_group: Mapped[int | None] = mapped_column(Integer)  # mode device: the dome's cruise group 1..255
    running: Mapped[bool] = mapped_column(Boolean, default=False)
    # whoever created or last started it: the tour holds the channel in their name and level
    owner_id: Mapped[str | None] = mapped_column(String(64))
    owner: Mapped[str | None] = mapped_column(String(64))
    owner_display: Mapped[str | None] = mapped_column(String(128))
    owner_kind: Mapped[str] = mapped_column(String(16), default="user")
    owner_level: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


class PtzHomeRow(Base):
    __tablename__ = "ptz_homes"

    device_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    channel_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    mode: Mapped[str] = mapped_column(String(16), default="preset")  # preset | device
    preset: Mapped[int | None] = mapped_column(Integer)
    enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    reset_time: Mapped[int] = mapped_column(Integer, default=60)
    updated_by: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


class PtzPresetNameRow(Base):
    __tablename__ = "ptz_preset_names"

    device_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    channel_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    updated_by: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
