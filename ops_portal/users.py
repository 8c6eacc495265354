"""Portal user accounts: creating users and the first administrator.

There is no default password anywhere.  At the first start :func:`ensure_admin` creates the
``admin`` account with either the operator's ``GBOPS_ADMIN_PASSWORD`` (refused when weak) or a
random password that is written, readable by the owner only, to
``<data_dir>/initial-admin-password.txt`` and returned so that the caller can print it once.
Either way the admin must change the password at the first login; the file is deleted then.

The ``admin`` account holds the built-in role :data:`ADMIN_ROLE_NAME` ("系统管理员": every permission,
full data scope; it cannot be deleted or changed).  Migration 0003 gives it to an existing admin;
:func:`ensure_admin` creates the role when missing and gives it to an admin that holds no role.
:func:`check_managers_remain` refuses any change that would leave nobody able to manage users or roles.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from sqlalchemy import and_, func, or_, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gbcore.db import begin_write, utcnow
from gbcore.log import get_logger
from gbcore.passwords import weak_password_reason
from gbcore.settings import Settings, SettingsError
from ops_portal.auth import generate_password, hash_password
from ops_portal.models import Role, RolePermission, User, UserRole
from ops_portal.schemas import ApiError
from watermark.viewer import ViewerIdentity

__all__ = [
    "viewer_identity",
    "ADMIN_ROLE_NAME",
    "ADMIN_USERNAME",
    "MANAGER_PERMISSIONS",
    "check_managers_remain",
    "ensure_builtin_role",
    "INITIAL_PASSWORD_FILE",
    "WeakPasswordError",
    "create_user",
    "ensure_admin",
    "forget_initial_admin_password",
    "initial_password_path",
]

log = get_logger("gbops.portal.users")

ADMIN_USERNAME = "admin"
ADMIN_ROLE_NAME = "系统管理员"
#: Somebody active must always hold each of these, or nobody could repair the accounts.
MANAGER_PERMISSIONS = ("user.manage", "role.manage")
INITIAL_PASSWORD_FILE = "initial-admin-password.txt"
# PostgreSQL advisory lock key serialising ensure_admin across nodes ("gbadm" in ASCII; the migrations use "gbops")
_PG_ADMIN_LOCK = 0x676261646D


class WeakPasswordError(SettingsError):
    """A password given in the configuration is weak; the message says why (Chinese / English)."""


def initial_password_path(settings: Settings) -> Path:
    return Path(settings.data_dir) / INITIAL_PASSWORD_FILE


async def create_user(
    session: AsyncSession,
    username: str,
    password: str,
    *,
    display_name: str = "",
    must_change_password: bool = False,
    check_strength: bool = True,
) -> User:
    """Add a user (not committed).  Weak passwords raise :class:`WeakPasswordError`."""
    reason = weak_password_reason(password, username)
    if check_strength and reason:
        raise WeakPasswordError(reason)
    user = User(
        username=username,
        display_name=display_name,
        password_hash=await hash_password(password),
        must_change_password=must_change_password,
        password_changed_at=utcnow(),
        password_weak=reason is not None,
    )
    session.add(user)
    return user


def _write_secret_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600, never following a symlink planted there."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)  # the file may have existed with wider permissions
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


async def ensure_builtin_role(session: AsyncSession) -> Role:
    """The built-in system administrator role, created when missing (not committed)."""
    role = (await session.execute(select(Role).where(Role.builtin.is_(True)).order_by(Role.id))).scalars().first()
    if role is None:
        role = Role(
            name=ADMIN_ROLE_NAME,
            description="内置：全部权限、全部数据 / built-in: every permission, all data",
            builtin=True,
            full_scope=True,
        )
        session.add(role)
        await session.flush()
    return role


async def _grant_builtin_to_admin(session: AsyncSession, *, only_if_roleless: bool) -> None:
    admin_id = (await session.execute(select(User.id).where(User.username == ADMIN_USERNAME))).scalar_one_or_none()
    if admin_id is None:
        return
    role = await ensure_builtin_role(session)
    held = set((await session.execute(select(UserRole.role_id).where(UserRole.user_id == admin_id))).scalars())
    if role.id in held or (only_if_roleless and held):
        return
    session.add(UserRole(user_id=admin_id, role_id=role.id))
    log.info("admin.role_granted", username=ADMIN_USERNAME, role=role.name)


async def check_managers_remain(session: AsyncSession) -> None:
    """409 ``last_manager`` when no enabled user inside its validity window holds ``user.manage`` and
    ``role.manage`` any more (run inside the write transaction, after the change, before the commit)."""
    now = utcnow()
    active = and_(
        User.disabled.is_(False),
        or_(User.valid_from.is_(None), User.valid_from <= now),
        or_(User.valid_until.is_(None), User.valid_until > now),
    )
    await session.flush()
    for permission in MANAGER_PERMISSIONS:
        holders = await session.scalar(
            select(func.count(func.distinct(User.id)))
            .select_from(User)
            .join(UserRole, UserRole.user_id == User.id)
            .join(Role, Role.id == UserRole.role_id)
            .outerjoin(
                RolePermission, and_(RolePermission.role_id == Role.id, RolePermission.permission == permission)
            )
            .where(active, or_(Role.builtin.is_(True), RolePermission.permission.is_not(None)))
        )
        if not holders:
            raise ApiError(
                409,
                "last_manager",
                f"此操作会使平台没有可用的“{permission}”权限持有者，已拒绝 / refused: nobody active would "
                f"hold {permission} any more (one cannot lock everybody out)",
            )


async def _lock_accounts(session: AsyncSession) -> None:
    """Start the session's write transaction holding the lock that serialises :func:`ensure_admin` across
    processes: ``BEGIN IMMEDIATE`` on SQLite, a transaction-level advisory lock on PostgreSQL (released at
    commit or rollback, so a node that dies mid-way frees it)."""
    await begin_write(session)
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_ADMIN_LOCK})


async def ensure_admin(sessionmaker: async_sessionmaker[AsyncSession], settings: Settings) -> str | None:
    """Create the ``admin`` user when it does not exist yet.

    Returns the generated password (for the caller to print once) when one was generated; ``None``
    when the admin already existed or was created with ``settings.admin_password``.
    Raises :class:`WeakPasswordError` (a :class:`~gbcore.settings.SettingsError`) when the configured
    admin password is weak.  The password is never logged.

    Nodes of a cluster starting together all call this: the check and the creation run under one lock
    (:func:`_lock_accounts`), so exactly one of them creates the admin (and writes the password file into
    its own data directory); the others find it there and return ``None``.
    """
    async with sessionmaker() as session:
        exists = (
            await session.execute(select(User.id).where(User.username == ADMIN_USERNAME))
        ).scalar_one_or_none()
    if exists is not None:
        async with sessionmaker() as session:
            await _lock_accounts(session)
            await _grant_builtin_to_admin(session, only_if_roleless=True)
            await session.commit()
        return None

    configured = settings.admin_password.get_secret_value() if settings.admin_password else None
    if configured is not None:
        reason = weak_password_reason(configured, ADMIN_USERNAME)
        if reason:
            raise WeakPasswordError(f"GBOPS_ADMIN_PASSWORD 太弱 / is weak: {reason}")
        password = configured
    else:
        password = generate_password()
    password_hash = await hash_password(password)  # argon2 before the lock: it is never held while hashing

    final = initial_password_path(settings)
    tmp = final.with_name(f"{final.name}.{os.getpid()}.tmp")  # processes sharing a data dir: one file each
    try:
        async with sessionmaker() as session:
            await _lock_accounts(session)
            created_meanwhile = (
                await session.execute(select(User.id).where(User.username == ADMIN_USERNAME))
            ).scalar_one_or_none()
            if created_meanwhile is not None:  # another node won the lock first: theirs stands
                await _grant_builtin_to_admin(session, only_if_roleless=True)
                await session.commit()
                log.info("admin.exists", username=ADMIN_USERNAME)
                return None
            if configured is None:
                # Written before the account is committed, so that a crash cannot leave an admin whose
                # password nobody knows; it becomes the real file only once the account is committed.
                _write_secret_file(tmp, password + "\n")
            admin = User(
                username=ADMIN_USERNAME,
                display_name="管理员",
                password_hash=password_hash,
                must_change_password=True,
                password_changed_at=utcnow(),
                password_weak=weak_password_reason(password, ADMIN_USERNAME) is not None,
            )
            session.add(admin)
            role = await ensure_builtin_role(session)
            await session.flush()
            session.add(UserRole(user_id=admin.id, role_id=role.id))
            await session.commit()
    except IntegrityError:
        # Created by a process that does not take the lock (an older release): theirs wins.
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        log.info("admin.exists", username=ADMIN_USERNAME)
        return None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise

    if configured is not None:
        log.info("admin.created", username=ADMIN_USERNAME, source="configured")
        return None
    os.replace(tmp, final)
    log.info("admin.created", username=ADMIN_USERNAME, source="generated", file=str(final))
    return password


def forget_initial_admin_password(settings: Settings) -> bool:
    """Delete the initial-password file (once the admin has chosen a password).  True if deleted."""
    try:
        initial_password_path(settings).unlink()
    except FileNotFoundError:
        return False
    log.info("admin.initial_password_file_deleted", file=str(initial_password_path(settings)))
    return True


async def viewer_identity(sessionmaker: async_sessionmaker[AsyncSession], username: str) -> ViewerIdentity | None:
    """The user ``username`` as a watermark names them (None: no such user); a
    :class:`watermark.viewer.FindViewer`, injected into ``watermark`` by the assembly."""
    async with sessionmaker() as session:
        user = (await session.scalars(select(User).where(User.username == username))).first()
    if user is None:
        return None
    return ViewerIdentity(user_id=user.id, username=user.username, display_name=user.display_name, phone=user.phone)
