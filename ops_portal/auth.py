"""Portal authentication: argon2 password hashes, bearer tokens, login lockout.

* Passwords are hashed with argon2id (argon2-cffi defaults).  Hashing and verifying cost tens of
  milliseconds of CPU and 64 MiB of memory, so they always run in a worker thread
  (:func:`asyncio.to_thread`), never on the event loop.
* A bearer token is 32 random bytes, URL-safe base64.  Only its SHA-256 hex digest is stored
  (``auth_tokens.token_hash``); the token itself is shown once, in the login answer.
* :data:`MAX_FAILED_LOGINS` wrong passwords in a row lock the account for :data:`LOCKOUT`.
  While locked, the password is not even checked.  Unknown user names and wrong passwords get the
  same answer, take the same time (a dummy hash is verified) and are locked out the same way
  (an in-memory counter for names that do not exist), so the login route does not tell
  whether an account exists.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import string
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from gbops.db import SQLITE_BEGIN_IMMEDIATE, utcnow
from gbops.log import get_logger
from gbops.passwords import weak_password_reason
from ops_portal.models import AuthToken, User
from ops_portal.schemas import ApiError

if TYPE_CHECKING:
    from audit_log.log import AuditLog

__all__ = [
    "LOCKOUT",
    "MAX_FAILED_LOGINS",
    "AuthContext",
    "LoginResult",
    "UnknownUserThrottle",
    "begin_write",
    "change_password",
    "generate_password",
    "hash_password",
    "hash_token",
    "login",
    "new_token",
    "resolve_token",
    "revoke_token",
    "verify_password",
]

log = get_logger("gbops.portal.auth")

MAX_FAILED_LOGINS = 5
LOCKOUT = timedelta(minutes=15)
#: Expired or revoked tokens are deleted this long after they stopped working.
TOKEN_RETENTION = timedelta(days=7)

_hasher = PasswordHasher()
_dummy_hash: str | None = None


# ------------------------------------------------------------------------------------------ passwords
def _hash_sync(password: str) -> str:
    return _hasher.hash(password)


def _verify_sync(encoded: str, password: str) -> tuple[bool, bool]:
    """(matches, needs_rehash)."""
    try:
        _hasher.verify(encoded, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False, False
    return True, _hasher.check_needs_rehash(encoded)


async def hash_password(password: str) -> str:
    """argon2id hash of ``password`` (computed in a worker thread)."""
    return await asyncio.to_thread(_hash_sync, password)


async def verify_password(encoded: str, password: str) -> bool:
    """Whether ``password`` matches the argon2 hash ``encoded`` (checked in a worker thread)."""
    ok, _ = await asyncio.to_thread(_verify_sync, encoded, password)
    return ok


async def _burn_verify(password: str) -> None:
    """Spend the time of a real verification, for a user name that does not exist."""
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = await hash_password(secrets.token_hex(16))
    await asyncio.to_thread(_verify_sync, _dummy_hash, password)


_PASSWORD_ALPHABET = "".join(
    c for c in string.ascii_letters + string.digits if c not in "0O1lI"
)


def generate_password(groups: int = 4, group_len: int = 5) -> str:
    """A random password such as ``k7Rwe-Hq3zT-...`` (about 115 bits with the defaults).

    Ambiguous characters (0/O, 1/l/I) are left out so it can be read off a screen; it always has
    lower-case, upper-case and digits, and is never weak by :func:`weak_password_reason`.
    """
    while True:
        pw = "-".join(
            "".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(group_len)) for _ in range(groups)
        )
        if (
            any(c.islower() for c in pw)
            and any(c.isupper() for c in pw)
            and any(c.isdigit() for c in pw)
            and weak_password_reason(pw, "admin") is None
        ):
            return pw


# ------------------------------------------------------------------------------------------ tokens
def new_token() -> str:
    """A fresh bearer token: 32 random bytes, URL-safe base64 without padding."""
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """What is stored for ``token``: its SHA-256 digest in lower-case hex."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class UnknownUserThrottle:
    """Failed-login counters for user names that do not exist, kept in memory (bounded).

    Without it, an account would reveal that it exists by getting locked after
    :data:`MAX_FAILED_LOGINS` attempts while a non-existent name never would.
    """

    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[int, datetime | None]] = OrderedDict()

    def locked_until(self, username: str, now: datetime) -> datetime | None:
        entry = self._entries.get(username.lower())
        if entry is None or entry[1] is None:
            return None
        if entry[1] <= now:
            del self._entries[username.lower()]
            return None
        return entry[1]

    def failed(self, username: str, now: datetime) -> datetime | None:
        key = username.lower()
        count, _ = self._entries.pop(key, (0, None))
        count += 1
        until = now + LOCKOUT if count >= MAX_FAILED_LOGINS else None
        self._entries[key] = (count, until)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return until


# ------------------------------------------------------------------------------------------ errors
_BEARER = {"WWW-Authenticate": "Bearer"}
_BEARER_INVALID = {"WWW-Authenticate": 'Bearer error="invalid_token"'}


def _bad_credentials() -> ApiError:
    return ApiError(
        401,
        "invalid_credentials",
        "用户名或密码错误 / invalid user name or password",
        headers=_BEARER,
    )


def _locked(until: datetime) -> ApiError:
    minutes = max(1, int((until - utcnow()).total_seconds() + 59) // 60)
    return ApiError(
        423,
        "account_locked",
        f"登录失败次数过多，账户已锁定，请 {minutes} 分钟后再试 / "
        f"too many failed logins: the account is locked, try again in {minutes} minute(s)",
    )


def _validity_error(user: User, now: datetime, status: int) -> ApiError | None:
    """The error for a user outside its validity window, or None inside it."""
    if user.valid_from is not None and now < user.valid_from:
        when = user.valid_from.strftime("%Y-%m-%d %H:%M UTC")
        return ApiError(
            status,
            "account_not_yet_valid",
            f"账户尚未生效（生效时间 {when}），请联系管理员 / the account is not valid before {when}",
            headers=_BEARER_INVALID if status == 401 else None,
        )
    if user.valid_until is not None and now >= user.valid_until:
        when = user.valid_until.strftime("%Y-%m-%d %H:%M UTC")
        return ApiError(
            status,
            "account_expired",
            f"账户已过有效期（截止 {when}），请联系管理员 / the account expired at {when}",
            headers=_BEARER_INVALID if status == 401 else None,
        )
    return None


def not_authenticated() -> ApiError:
    return ApiError(
        401,
        "not_authenticated",
        "需要登录：请在 Authorization 头中提供 Bearer 令牌 / "
        "authentication required: send an Authorization: Bearer token",
        headers=_BEARER,
    )


def invalid_token() -> ApiError:
    return ApiError(
        401,
        "invalid_token",
        "令牌无效、已过期或已注销，请重新登录 / the token is invalid, expired or revoked: log in again",
        headers=_BEARER_INVALID,
    )


# ------------------------------------------------------------------------------------------ login
@dataclass(frozen=True, slots=True)
class LoginResult:
    token: str
    expires_at: datetime
    user: User


@dataclass(frozen=True, slots=True)
class AuthContext:
    """Who is calling: the user and the row of the token they presented."""

    user: User
    token: AuthToken


async def begin_write(session: AsyncSession) -> None:
    """End the session's read transaction, if any, and start a write transaction.

    On SQLite the write transaction starts with ``BEGIN IMMEDIATE``: a deferred transaction that
    reads and then writes fails at once ("database is locked") when another writer (the registry
    writer, busy with keepalives) committed in between.  Password checks happen outside any
    transaction, so the write lock is never held while argon2 runs.
    """
    if session.in_transaction():
        await session.commit()
    await session.connection(execution_options={SQLITE_BEGIN_IMMEDIATE: True})


async def _record_failure(
    session: AsyncSession,
    user: User,
    now: datetime,
    *,
    restart: bool = False,
    on_recorded: Callable[[int, datetime | None], Awaitable[None]] | None = None,
) -> datetime | None:
    """Count a wrong password (atomically); lock the account at the limit.  Commits.

    ``restart``: the previous lock ran out, so this failure is the first of a new series.
    ``on_recorded(count, locked_until)`` runs in the same transaction, before the commit (the audit
    entry of the failure).
    """
    values: dict[str, Any] = {"failed_logins": User.failed_logins + 1, "updated_at": now}
    if restart:
        values.update(failed_logins=1, locked_until=None)
    await begin_write(session)
    result = await session.execute(
        update(User).where(User.id == user.id).values(**values).returning(User.failed_logins)
    )
    count = result.scalar_one()
    until: datetime | None = None
    if count >= MAX_FAILED_LOGINS:
        until = now + LOCKOUT
        await session.execute(update(User).where(User.id == user.id).values(locked_until=until))
    if on_recorded is not None:
        await on_recorded(count, until)
    await session.commit()
    return until


# ------------------------------------------------------------------------------------------ audit
async def _audit(
    audit: AuditLog | None,
    session: AsyncSession,
    action: str,
    *,
    actor: Any,
    target_user: User | None,
    client_ip: str | None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Append an audit entry in ``session``'s (write) transaction, when the portal has a log."""
    if audit is None:
        return
    from audit_log.log import Target

    target = Target("user", str(target_user.id) if target_user is not None else None)
    await audit.append(session, actor=actor, action=action, target=target, client_ip=client_ip, detail=detail)


async def _audit_alone(audit: AuditLog | None, session: AsyncSession, action: str, **kw: Any) -> None:
    """An audit entry for an outcome that writes nothing else (a refused login): its own transaction."""
    if audit is None:
        return
    await begin_write(session)
    await _audit(audit, session, action, **kw)
    await session.commit()


def _anonymous() -> Any:
    from audit_log.log import Actor

    return Actor.anonymous()


def _as_actor(user: User) -> Any:
    from audit_log.log import Actor

    return Actor.user(user)


async def login(
    session: AsyncSession,
    username: str,
    password: str,
    *,
    ttl: timedelta,
    client_ip: str | None,
    throttle: UnknownUserThrottle,
    audit: AuditLog | None = None,
) -> LoginResult:
    """Check the credentials and issue a token, or raise :class:`ApiError` (401/403/423).

    With ``audit``, every outcome is on the audit log, in the same transaction as its effect:
    ``auth.login``, ``auth.login_failed`` (reason ``unknown_user``, ``bad_credentials``, ``locked``,
    ``disabled``, ``account_expired``, ``account_not_yet_valid``) or ``auth.lockout`` (the failure that locks the account).  A user name that does not
    exist is not recorded (it may be a password typed into the wrong field)."""
    now = utcnow()
    user = (await session.execute(select(User).where(User.username == username))).scalar_one_or_none()
    await session.commit()  # no snapshot held while argon2 runs

    if user is None:
        until = throttle.locked_until(username, now)
        if until is not None:
            await _audit_alone(audit, session, "auth.login_failed", actor=_anonymous(), target_user=None,
                               client_ip=client_ip, detail={"reason": "locked", "locked_until": until})
            raise _locked(until)
        await _burn_verify(password)
        until = throttle.failed(username, now)
        # The name is not logged: a user who typed their password into the name field.
        log.info("login.failed", client_ip=client_ip, reason="unknown_user")
        if until is not None:
            await _audit_alone(audit, session, "auth.lockout", actor=_anonymous(), target_user=None,
                               client_ip=client_ip, detail={"reason": "unknown_user", "locked_until": until})
            raise _locked(until)
        await _audit_alone(audit, session, "auth.login_failed", actor=_anonymous(), target_user=None,
                           client_ip=client_ip, detail={"reason": "unknown_user"})
        raise _bad_credentials()

    if user.locked_until is not None and user.locked_until > now:
        log.info("login.refused", username=username, client_ip=client_ip, reason="locked")
        await _audit_alone(audit, session, "auth.login_failed", actor=_anonymous(), target_user=user,
                           client_ip=client_ip, detail={"reason": "locked", "locked_until": user.locked_until})
        raise _locked(user.locked_until)
    lock_ran_out = user.locked_until is not None

    ok, needs_rehash = await asyncio.to_thread(_verify_sync, user.password_hash, password)
    if not ok:

        async def audit_failure(count: int, until: datetime | None) -> None:
            if until is not None:
                await _audit(audit, session, "auth.lockout", actor=_anonymous(), target_user=user,
                             client_ip=client_ip,
                             detail={"reason": "bad_credentials", "failed_logins": count, "locked_until": until})
            else:
                await _audit(audit, session, "auth.login_failed", actor=_anonymous(), target_user=user,
                             client_ip=client_ip, detail={"reason": "bad_credentials", "failed_logins": count})

        until = await _record_failure(session, user, utcnow(), restart=lock_ran_out, on_recorded=audit_failure)
        log.info("login.failed", username=username, client_ip=client_ip, reason="bad_credentials",
                 locked=until is not None)
        if until is not None:
            raise _locked(until)
        raise _bad_credentials()

    if user.disabled:
        log.info("login.refused", username=username, client_ip=client_ip, reason="disabled")
        await _audit_alone(audit, session, "auth.login_failed", actor=_anonymous(), target_user=user,
                           client_ip=client_ip, detail={"reason": "disabled"})
        raise ApiError(403, "account_disabled", "账户已停用，请联系管理员 / the account is disabled")

    outside = _validity_error(user, now, 403)
    if outside is not None:
        log.info("login.refused", username=username, client_ip=client_ip, reason=outside.error)
        await _audit_alone(audit, session, "auth.login_failed", actor=_anonymous(), target_user=user,
                           client_ip=client_ip, detail={"reason": outside.error})
        raise outside

    new_hash = await hash_password(password) if needs_rehash else None
    await begin_write(session)
    now = utcnow()
    if new_hash is not None:
        user.password_hash = new_hash
    user.failed_logins = 0
    user.locked_until = None
    token = new_token()
    expires_at = now + ttl
    token_row = AuthToken(
        token_hash=hash_token(token),
        user_id=user.id,
        created_at=now,
        expires_at=expires_at,
        client_ip=client_ip,
    )
    session.add(token_row)
    if audit is not None:
        await session.flush()  # the token row's id, for the audit entry
        await _audit(audit, session, "auth.login", actor=_as_actor(user), target_user=user, client_ip=client_ip,
                     detail={"token_id": token_row.id, "expires_at": expires_at})
    # Housekeeping: this user's tokens that stopped working a while ago.
    await session.execute(
        delete(AuthToken).where(
            AuthToken.user_id == user.id,
            AuthToken.expires_at < now - TOKEN_RETENTION,
        )
    )
    await session.commit()
    log.info("login.ok", username=username, user_id=user.id, client_ip=client_ip)
    return LoginResult(token=token, expires_at=expires_at, user=user)


async def resolve_token(session: AsyncSession, token: str) -> AuthContext:
    """The user and token row behind a bearer token, or :class:`ApiError` 401."""
    now = utcnow()
    row = (
        await session.execute(
            select(AuthToken, User)
            .join(User, User.id == AuthToken.user_id)
            .where(AuthToken.token_hash == hash_token(token))
        )
    ).one_or_none()
    await session.commit()  # end the read transaction; the rows stay usable
    if row is None:
        raise invalid_token()
    tok, user = row
    if tok.revoked_at is not None or tok.expires_at <= now or user.disabled:
        raise invalid_token()
    outside = _validity_error(user, now, 401)
    if outside is not None:
        raise outside
    return AuthContext(user=user, token=tok)


async def revoke_token(
    session: AsyncSession,
    token: AuthToken,
    *,
    audit: AuditLog | None = None,
    user: User | None = None,
    client_ip: str | None = None,
) -> None:
    """Revoke ``token`` (log out); with ``audit``, ``auth.logout`` of ``user`` is recorded with it."""
    await begin_write(session)
    await session.execute(
        update(AuthToken)
        .where(AuthToken.id == token.id, AuthToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    if audit is not None and user is not None:
        await _audit(audit, session, "auth.logout", actor=_as_actor(user), target_user=user, client_ip=client_ip,
                     detail={"token_id": token.id})
    await session.commit()


async def change_password(
    session: AsyncSession,
    ctx: AuthContext,
    old_password: str,
    new_password: str,
    *,
    audit: AuditLog | None = None,
    client_ip: str | None = None,
) -> User:
    """Change the caller's password; revokes every other token of the user.

    A wrong old password counts as a failed login (so a stolen token cannot be used to guess the
    password) and answers 403; a weak or unchanged new password answers 422.  With ``audit``:
    ``user.password_change``, or ``user.password_change_failed`` / ``auth.lockout`` for a wrong old
    password, in the same transaction.
    """
    now = utcnow()
    user = ctx.user
    if user.locked_until is not None and user.locked_until > now:
        raise _locked(user.locked_until)

    if session.in_transaction():
        await session.commit()  # no snapshot held while argon2 runs
    ok, _ = await asyncio.to_thread(_verify_sync, user.password_hash, old_password)
    if not ok:

        async def audit_failure(count: int, until: datetime | None) -> None:
            action = "auth.lockout" if until is not None else "user.password_change_failed"
            detail: dict[str, Any] = {"reason": "wrong_old_password", "failed_logins": count}
            if until is not None:
                detail["locked_until"] = until
            await _audit(audit, session, action, actor=_as_actor(user), target_user=user, client_ip=client_ip,
                         detail=detail)

        until = await _record_failure(
            session, user, now, restart=user.locked_until is not None, on_recorded=audit_failure
        )
        log.info("password.change_failed", username=user.username, reason="wrong_old_password")
        if until is not None:
            raise _locked(until)
        raise ApiError(403, "wrong_password", "原密码错误 / the old password is wrong")

    if new_password == old_password:
        raise ApiError(
            422, "password_unchanged", "新密码不能与原密码相同 / the new password must differ from the old one"
        )
    reason = weak_password_reason(new_password, user.username)
    if reason:
        raise ApiError(422, "weak_password", reason)

    new_hash = await hash_password(new_password)
    await begin_write(session)
    now = utcnow()
    user.password_hash = new_hash
    user.must_change_password = False
    user.failed_logins = 0
    user.locked_until = None
    user.updated_at = now
    revoked = await session.execute(
        update(AuthToken)
        .where(
            AuthToken.user_id == user.id,
            AuthToken.id != ctx.token.id,
            AuthToken.revoked_at.is_(None),
        )
        .values(revoked_at=now)
    )
    await _audit(audit, session, "user.password_change", actor=_as_actor(user), target_user=user,
                 client_ip=client_ip, detail={"revoked_tokens": revoked.rowcount})
    await session.commit()
    log.info("password.changed", username=user.username, user_id=user.id)
    return user
