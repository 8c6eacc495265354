"""Tables of the cascade package (migration 0012): the upper platforms we register to and what each sees.

Rows name registry things by id only (organisation node ids, (device id, channel id) pairs): the registry
owns its tables, and a share naming a node or a channel that is gone simply resolves to less.  The SIP
password is stored sealed (:mod:`gbcore.secretbox`, AES-256-GCM), never as plain text.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Integer, LargeBinary, String, Text, UniqueConstraint, true
from sqlalchemy.orm import Mapped, mapped_column

from gbcore.db import Base, UtcDateTime, utcnow

__all__ = ["PlatformRow", "ShareChannelRow", "ShareNodeRow"]

ID_LENGTH = 32  # as device_registry.models


class PlatformRow(Base):
    """An upper platform: where to register, as whom, and how to serve it."""

    __tablename__ = "cascade_platforms"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128))
    server_id: Mapped[str] = mapped_column(String(ID_LENGTH), unique=True)
    server_domain: Mapped[str] = mapped_column(String(ID_LENGTH))
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer)
    transport: Mapped[str] = mapped_column(String(8))
    local_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    username: Mapped[str] = mapped_column(String(64))
    password_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    expires: Mapped[int] = mapped_column(Integer, default=3600)
    keepalive_s: Mapped[int] = mapped_column(Integer, default=60)
    charset: Mapped[str] = mapped_column(String(16), default="GB2312")
    gb_version: Mapped[str] = mapped_column(String(8), default="2016")
    ptz_level: Mapped[int] = mapped_column(Integer, default=5)
    watermark: Mapped[str] = mapped_column(String(16), default="tag")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)

    def __repr__(self) -> str:
        return f"PlatformRow({self.id}, {self.server_id!r}, enabled={self.enabled})"


class ShareNodeRow(Base):
    """An organisation node shared with a platform (its descendants are shared with it)."""

    __tablename__ = "cascade_share_nodes"

    platform_id: Mapped[int] = mapped_column(
        ForeignKey("cascade_platforms.id", ondelete="CASCADE"), primary_key=True
    )
    org_node_id: Mapped[int] = mapped_column(Integer, primary_key=True)


class ShareChannelRow(Base):
    """A channel shared with a platform by name, with the id and overrides the platform sees."""

    __tablename__ = "cascade_share_channels"
    __table_args__ = (UniqueConstraint("platform_id", "upward_id"),)

    platform_id: Mapped[int] = mapped_column(
        ForeignKey("cascade_platforms.id", ondelete="CASCADE"), primary_key=True
    )
    device_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    channel_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    upward_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    name: Mapped[str | None] = mapped_column(Text)
    civil_code: Mapped[str | None] = mapped_column(String(ID_LENGTH))
