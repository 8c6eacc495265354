"""Tables of the operations portal: users, their bearer tokens, roles and what roles grant.

A role grants permissions (names from :data:`ops_portal.deps.PERMISSION_CATALOGUE`: system
administration and system functions) and a data scope (organisation nodes, their descendants
included, and/or explicit channels, each named by device id and channel id; or everything with
``full_scope``).  A user holds any number
of roles; what the user may do is the union over them (see :mod:`ops_portal.access`).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, Integer, LargeBinary, String, Text, false, text
from sqlalchemy.orm import Mapped, mapped_column

from gbcore.db import Base, UtcDateTime, utcnow

__all__ = [
    "AuthToken", "GrantSplit", "Role", "RoleChannel", "RoleOrgNode", "RolePermission", "User", "UserRole",
]

#: PTZ control levels: 1 (lowest priority) .. 9 (highest).
PTZ_LEVEL_MIN, PTZ_LEVEL_MAX, PTZ_LEVEL_DEFAULT = 1, 9, 5


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(Text, default="", server_default=text("''"))
    # argon2 encoded hash ($argon2id$v=19$...), never the password itself.
    password_hash: Mapped[str] = mapped_column(Text)
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    disabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    phone: Mapped[str | None] = mapped_column(String(32))
    failed_logins: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    locked_until: Mapped[datetime | None] = mapped_column(UtcDateTime())
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow, onupdate=utcnow)
    # PTZ control level 1..9: a higher level takes the PTZ over from a lower one.
    ptz_level: Mapped[int] = mapped_column(Integer, default=PTZ_LEVEL_DEFAULT, server_default=text("5"))
    # Validity window: outside [valid_from, valid_until) the user cannot log in and tokens stop working.
    valid_from: Mapped[datetime | None] = mapped_column(UtcDateTime())
    valid_until: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # Accounts (issue 16).  When the password was last set (by its user, an administrator or at creation):
    # past GBOPS_PASSWORD_MAX_AGE_DAYS the next login must change it.
    password_changed_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # Whether the password in use is weak (gbcore.passwords), judged from the plain password at every
    # successful login and every change or reset; None: not known yet.  The plain password is never kept.
    password_weak: Mapped[bool | None] = mapped_column(Boolean)
    # TOTP second factor (RFC 6238): the base32 secret sealed with <data_dir>/keys/totp.key (AAD: the user
    # id); totp_enabled_at set once a code confirmed it (None: off, or set up but not confirmed yet);
    # totp_last_step the time step of the last code accepted (a code is accepted once).
    totp_secret: Mapped[bytes | None] = mapped_column(LargeBinary)
    totp_enabled_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)

    @property
    def totp_enabled(self) -> bool:
        return self.totp_enabled_at is not None

    def __repr__(self) -> str:
        return f"User({self.username!r})"


class AuthToken(Base):
    """A bearer token of a user.  Only the SHA-256 hex digest of the token is stored."""

    __tablename__ = "auth_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    client_ip: Mapped[str | None] = mapped_column(String(64))
    # Last request made with the token (updated at most once a minute): idle sessions end after
    # GBOPS_SESSION_IDLE_MINUTES.
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class Role(Base):
    """A named set of permissions and a data scope.  ``builtin`` marks the system administrator role:
    it always holds every permission and the full scope, and cannot be deleted or changed."""

    __tablename__ = "roles"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(Text, default="", server_default=text("''"))
    builtin: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    full_scope: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow, onupdate=utcnow)

    def __repr__(self) -> str:
        return f"Role({self.name!r})"


class RolePermission(Base):
    __tablename__ = "role_permissions"

    role_id: Mapped[int] = mapped_column(ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True)
    permission: Mapped[str] = mapped_column(String(64), primary_key=True)


class RoleOrgNode(Base):
    """An organisation node in a role's scope (its descendants are included when resolved)."""

    __tablename__ = "role_org_nodes"

    role_id: Mapped[int] = mapped_column(ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True)
    org_node_id: Mapped[int] = mapped_column(
        ForeignKey("org_nodes.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class RoleChannel(Base):
    """A channel granted explicitly by a role: that device's channel (a channel id is unique only within
    its device).  ``device_id`` '' marks a grant that migration 0007 could not resolve (no device had the
    id then): kept so that nothing is lost, it matches no channel."""

    __tablename__ = "role_channels"

    role_id: Mapped[int] = mapped_column(ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    channel_id: Mapped[str] = mapped_column(String(32), primary_key=True)


class GrantSplit(Base):
    """A grant on a bare channel id that migration 0007 split into one grant per device having that id
    (or kept unresolved).  The platform writes one ``role.grant_split`` audit entry per row at its next
    start (the audit log does not exist while migrations run) and sets ``audited_at``."""

    __tablename__ = "role_channel_splits"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    role_id: Mapped[int] = mapped_column(Integer)
    role_name: Mapped[str] = mapped_column(String(64))
    channel_id: Mapped[str] = mapped_column(String(32))
    device_ids: Mapped[str] = mapped_column(Text)  # JSON list; [] when no device had the id (kept as '')
    split_at: Mapped[datetime] = mapped_column(UtcDateTime())
    audited_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class UserRole(Base):
    __tablename__ = "user_roles"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    role_id: Mapped[int] = mapped_column(ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True, index=True)
