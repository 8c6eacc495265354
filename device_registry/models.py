"""Tables of the device registry: devices, channels, organisation tree, presence history.

Schema changes need a migration in gbops/migrations/versions (a test checks that the
migrations and these models agree).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from gbcore.db import Base, UtcDateTime, utcnow

__all__ = ["Channel", "Device", "OrgNode", "PlatformRun", "PresenceEvent"]

# GB/T 28181 ids are 20 digits (18 in old deployments); leave room for odd vendors.
ID_LENGTH = 32


class OrgNode(Base):
    """A node of the organisation tree: business group (215), virtual organisation (216),
    administrative region (civil code, 2-8 digits) or a node created by an operator."""

    __tablename__ = "org_nodes"
    __table_args__ = (
        CheckConstraint("kind IN ('business_group', 'virtual_org', 'civil', 'manual')", name="kind"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    code: Mapped[str | None] = mapped_column(String(ID_LENGTH), unique=True)
    name: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(16))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("org_nodes.id", ondelete="SET NULL"), index=True)
    source_device_id: Mapped[str | None] = mapped_column(String(ID_LENGTH), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow, onupdate=utcnow)


class Device(Base):
    """A GB/T 28181 device (IPC, NVR, lower platform) known to the platform."""

    __tablename__ = "devices"
    __table_args__ = (CheckConstraint("transport IN ('udp', 'tcp')", name="transport"),)

    device_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    name: Mapped[str | None] = mapped_column(Text)
    manufacturer: Mapped[str | None] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(Text)
    firmware: Mapped[str | None] = mapped_column(Text)
    device_type: Mapped[str | None] = mapped_column(Text)
    transport: Mapped[str | None] = mapped_column(String(8))
    remote_addr: Mapped[str | None] = mapped_column(Text)
    contact: Mapped[str | None] = mapped_column(Text)
    user_agent: Mapped[str | None] = mapped_column(Text)
    charset: Mapped[str | None] = mapped_column(String(32))
    registered_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    register_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    keepalive_interval: Mapped[int] = mapped_column(Integer, default=60, server_default=text("60"))
    last_seen: Mapped[datetime | None] = mapped_column(UtcDateTime())
    online: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    offline_reason: Mapped[str | None] = mapped_column(String(32))
    channel_count: Mapped[int | None] = mapped_column(Integer)
    catalog_synced_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    catalog_state: Mapped[str | None] = mapped_column(Text)
    # Digest HA1 values H(username:realm:password) for this device's own SIP password.
    password_ha1_md5: Mapped[str | None] = mapped_column(String(32))
    password_ha1_sha256: Mapped[str | None] = mapped_column(String(64))
    password_realm: Mapped[str | None] = mapped_column(Text)
    org_node_id: Mapped[int | None] = mapped_column(
        ForeignKey("org_nodes.id", ondelete="SET NULL"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow, onupdate=utcnow)
    # Device management (issue 18, migration 0017).  A deleted device keeps its row (its presence history,
    # audit entries and reports name it): lists, lookups and the SIP snapshot leave it out.
    deleted_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # the operator's name (copied to ``name``): a DeviceInfo answer does not overwrite ``name`` while it is set
    user_name: Mapped[str | None] = mapped_column(Text)
    # how the device wants main/sub stream asked for: streamnumber | stream | streamprofile | none
    stream_form: Mapped[str] = mapped_column(String(16), default="none", server_default="none")
    expected_channels: Mapped[int | None] = mapped_column(Integer)
    longitude: Mapped[float | None] = mapped_column(Float)
    latitude: Mapped[float | None] = mapped_column(Float)
    address: Mapped[str | None] = mapped_column(Text)

    def __repr__(self) -> str:
        return f"Device({self.device_id!r}, online={self.online})"


class Channel(Base):
    """A channel (camera, alarm input, ...) of a device, as reported by its catalog.

    A channel id is unique only within its device."""

    __tablename__ = "channels"
    __table_args__ = (UniqueConstraint("device_id", "channel_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.device_id", ondelete="CASCADE"))
    channel_id: Mapped[str] = mapped_column(String(ID_LENGTH), index=True)
    name: Mapped[str | None] = mapped_column(Text)
    manufacturer: Mapped[str | None] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(Text)
    owner: Mapped[str | None] = mapped_column(Text)
    civil_code: Mapped[str | None] = mapped_column(Text)
    block: Mapped[str | None] = mapped_column(Text)
    address: Mapped[str | None] = mapped_column(Text)
    parental: Mapped[int | None] = mapped_column(Integer)
    parent_id: Mapped[str | None] = mapped_column(Text)
    business_group_id: Mapped[str | None] = mapped_column(Text)
    safety_way: Mapped[int | None] = mapped_column(Integer)
    register_way: Mapped[int | None] = mapped_column(Integer)
    secrecy: Mapped[int | None] = mapped_column(Integer)
    ip_address: Mapped[str | None] = mapped_column(Text)
    port: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str | None] = mapped_column(Text)
    ptz_type: Mapped[int | None] = mapped_column(Integer)
    longitude: Mapped[float | None] = mapped_column(Float)
    latitude: Mapped[float | None] = mapped_column(Float)
    online: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    removed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    removed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    first_seen: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow, onupdate=utcnow)
    org_node_id: Mapped[int | None] = mapped_column(
        ForeignKey("org_nodes.id", ondelete="SET NULL"), index=True
    )
    # An operator's values (issue 18, migration 0017), also copied to name / address / longitude / latitude /
    # org_node_id: a later catalog does not overwrite those while these are set.
    user_name: Mapped[str | None] = mapped_column(Text)
    user_address: Mapped[str | None] = mapped_column(Text)
    user_longitude: Mapped[float | None] = mapped_column(Float)
    user_latitude: Mapped[float | None] = mapped_column(Float)
    user_org_node: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    def __repr__(self) -> str:
        return f"Channel({self.device_id!r}, {self.channel_id!r}, online={self.online})"


class PresenceEvent(Base):
    """One online/offline transition of a device or channel.  Insert-only: this is the raw
    material of online-rate reports and SLA evidence, rows are never updated or deleted.

    No foreign key on purpose: the history outlives a deleted device."""

    __tablename__ = "presence_events"
    __table_args__ = (
        CheckConstraint("subject IN ('device', 'channel')", name="subject"),
        Index("ix_presence_events_device_id_at", "device_id", "at"),
        # Reports look up "the last transition of this channel (or device: channel_id NULL) before T"
        # (migration 0005) ...
        Index("ix_presence_events_device_id_channel_id_at", "device_id", "channel_id", "at"),
        # ... and read one period's rows of every device.
        Index("ix_presence_events_at", "at"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    subject: Mapped[str] = mapped_column(String(8))
    device_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    channel_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    online: Mapped[bool] = mapped_column(Boolean)
    at: Mapped[datetime] = mapped_column(UtcDateTime(precision=3))
    reason: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str | None] = mapped_column(Text)

    def __repr__(self) -> str:
        who = self.device_id if self.channel_id is None else f"{self.device_id}/{self.channel_id}"
        return f"PresenceEvent({who}, online={self.online}, {self.reason}, {self.at.isoformat()})"


class PlatformRun(Base):
    """One run of the platform process, so that reports can tell platform downtime from
    device downtime.  ``stopped_at`` is NULL while running or after a crash."""

    __tablename__ = "platform_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime())
    stopped_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    clean: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # the cluster node that ran (issue 17); NULL for the single process and runs written before 0016
    node_id: Mapped[str | None] = mapped_column(String(64))
