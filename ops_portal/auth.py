"""Portal authentication: argon2 password hashes, bearer tokens, login lockout.

* Passwords are hashed with argon2id (argon2-cffi defaults).  Hashing and verifying cost tens of
  milliseconds of CPU and 64 MiB of memory, so they always run in a worker thread
  (:func:`asyncio.to_thread`), never on the event loop.
* A bearer token is 32 random bytes, URL-safe base64.  Only its SHA-256 hex digest is stored
  (``auth_tokens.token_hash``); the token itself is shown once, in the login answer.
* Wrong passwords are throttled per (account, source address) first (:class:`LoginThrottle`, in
  memory): after ``GBOPS_LOGIN_DELAY_FAILURES`` failures from one address each further attempt from it
  waits a growing delay (429 with ``Retry-After``), after ``GBOPS_LOGIN_LOCK_FAILURES`` that address is
  locked out of that account for ``GBOPS_LOGIN_LOCK_MINUTES`` (423).  Other addresses are not affected:
  five wrong passwords no longer lock an account for everybody.  Only ``GBOPS_LOGIN_ACCOUNT_LOCK_FAILURES``
  failures from all addresses within the lock window lock the account itself (``users.locked_until``),
  and an enabled administrator (a holder of the built-in role) still logs in from
  ``GBOPS_ADMIN_NETWORKS`` (default: loopback) while so locked.  While locked, the password is not even
  checked.  Every lock is on the audit log (``auth.lockout``, detail ``scope`` = address | account).
  Unknown user names and wrong passwords get the same answer, take the same time (a dummy hash is
  verified) and are throttled and locked the same way, so the login route does not tell whether an
  account exists.
* Issue 16.  A user with the TOTP second factor on (:mod:`ops_portal.totp`) sends its code as ``otp``: a
  missing one answers 401 ``totp_required`` (the password was right; the console then asks for the code),
  a wrong or replayed one 401 ``totp_invalid``, counted by the throttle like a wrong password.  A password
  older than ``GBOPS_PASSWORD_MAX_AGE_DAYS`` must be changed (``must_change_password`` is set at login).
  A holder of an administration permission logs in only from ``GBOPS_ADMIN_ALLOW_CIDRS`` (when set).  A
  token unused for ``GBOPS_SESSION_IDLE_MINUTES`` is refused (401 ``session_idle``); its ``last_used_at`` is
  written at most once a minute.  Every refusal is also a security event (``security.events``) sent to the
  sink the caller passes.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
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
from sqlalchemy.orm.attributes import set_committed_value

from gbcore.db import begin_write, utcnow
from gbcore.log import get_logger
from gbcore.passwords import weak_password_reason
from ops_portal.accounts import second_factor
from ops_portal.http_limits import LOOPBACK, address_key, in_networks, parse_networks
from ops_portal.models import AuthToken, Role, User, UserRole
from ops_portal.schemas import ApiError

if TYPE_CHECKING:
    from audit_log.log import AuditLog
    from gbcore.settings import Settings

__all__ = [
    "LOGIN_DELAY_BASE",
    "LOGIN_DELAY_MAX",
    "AuthContext",
    "LoginAttempt",
    "LoginFailure",
    "LoginRefusal",
    "LoginResult",
    "LoginThrottle",
    "UnknownUserThrottle",
    "change_password",
    "generate_password",
    "hash_password",
    "hash_token",
    "login",
    "emit",
    "new_token",
    "password_age_reason",
    "resolve_token",
    "revoke_token",
    "verify_password",
]

log = get_logger("gbops.portal.auth")

#: The first delay once an address reached ``login_delay_failures`` failures for an account (seconds);
#: it doubles with each further failure, up to :data:`LOGIN_DELAY_MAX`.
LOGIN_DELAY_BASE = 1.0
LOGIN_DELAY_MAX = 300.0
#: Expired or revoked tokens are deleted this long after they stopped working.
TOKEN_RETENTION = timedelta(days=7)
#: ``auth_tokens.last_used_at`` is written at most this often per token.
TOKEN_TOUCH_INTERVAL = timedelta(minutes=1)

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


@dataclass(slots=True)
class _AddressEntry:
    """Failures of one source address against one account name."""

    failures: int = 0
    inflight: int = 0
    last_failure: datetime | None = None
    locked_until: datetime | None = None


@dataclass(slots=True)
class _AccountEntry:
    """Failures against one account name from every address, in a fixed window."""

    window_start: datetime
    failures: int = 0
    #: only for names that do not exist (a real account's lock is ``users.locked_until``)
    locked_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class LoginRefusal:
    """An attempt refused before the password is looked at: ``locked`` (423, until ``until``) or
    ``throttled`` (429, try again in ``retry_after`` seconds)."""

    kind: str
    until: datetime
    retry_after: int


@dataclass(frozen=True, slots=True)
class LoginFailure:
    """What one wrong password did."""

    #: failures of this address against this account in the current series
    address_failures: int
    #: set when this failure locked the address out of the account
    address_locked_until: datetime | None
    #: failures against the account from every address in the current window
    account_failures: int
    #: this failure reached ``login_account_lock_failures``: the caller locks the account
    account_threshold: bool


class LoginAttempt:
    """One attempt admitted by :meth:`LoginThrottle.begin`: report :meth:`failed` or :meth:`succeeded`;
    :meth:`release` (idempotent) ends an attempt whose password did not count either way."""

    __slots__ = ("_done", "_entry", "_key", "_throttle")

    def __init__(self, throttle: LoginThrottle, key: tuple[str, str], entry: _AddressEntry) -> None:
        self._throttle = throttle
        self._key = key
        self._entry = entry
        self._done = False

    def _finish(self) -> bool:
        if self._done:
            return False
        self._done = True
        self._entry.inflight = max(0, self._entry.inflight - 1)
        return True

    def failed(self, now: datetime) -> LoginFailure:
        self._finish()
        return self._throttle._failed(self._key, self._entry, now)

    def succeeded(self) -> None:
        if self._finish():
            self._throttle._succeeded(self._key, self._entry)

    def release(self) -> None:
        self._finish()


class LoginThrottle:
    """Wrong-password accounting, in memory and bounded (least recently used entries go first).

    Per (account name, source address) - an IPv6 address counts as its /64 - after
    ``settings.login_delay_failures`` failures each further attempt waits ``LOGIN_DELAY_BASE * 2**k``
    seconds after the last failure, and ``settings.login_lock_failures`` failures lock that address out
    of that account for ``settings.login_lock_minutes``; a series older than that window is forgotten.
    Attempts in flight count against the budget, so concurrent guesses cannot overrun it.  Per account
    name, failures from every address in a window of ``login_lock_minutes`` are counted against
    ``settings.login_account_lock_failures`` (the lock of a real account is stored by the caller in
    ``users.locked_until``; names that do not exist are locked here, so that they look the same).
    Settings are read at each call."""

    def __init__(self, settings: Settings, max_entries: int = 10_000) -> None:
        self.settings = settings
        self.max_entries = max_entries
        self._addresses: OrderedDict[tuple[str, str], _AddressEntry] = OrderedDict()
        self._accounts: OrderedDict[str, _AccountEntry] = OrderedDict()

    # ---------------------------------------------------------------------------------- settings
    @property
    def lock_duration(self) -> timedelta:
        return timedelta(minutes=self.settings.login_lock_minutes)

    def delay(self, failures: int) -> float:
        """Seconds an address must wait after its ``failures``-th failure (0 below the threshold)."""
        over = failures - self.settings.login_delay_failures
        if over < 0:
            return 0.0
        return min(LOGIN_DELAY_MAX, LOGIN_DELAY_BASE * 2 ** min(over, 32))

    # ---------------------------------------------------------------------------------- entries
    def _bound(self, entries: OrderedDict[Any, Any]) -> None:
        while len(entries) > self.max_entries:
            entries.popitem(last=False)

    def _address_entry(self, key: tuple[str, str]) -> _AddressEntry:
        entry = self._addresses.get(key)
        if entry is None:
            entry = self._addresses[key] = _AddressEntry()
            self._bound(self._addresses)
        else:
            self._addresses.move_to_end(key)
        return entry

    def _account_entry(self, name: str, now: datetime) -> _AccountEntry:
        entry = self._accounts.get(name)
        if entry is None or (now - entry.window_start >= self.lock_duration
                             and (entry.locked_until is None or entry.locked_until <= now)):
            entry = self._accounts[name] = _AccountEntry(window_start=now)
            self._bound(self._accounts)
        self._accounts.move_to_end(name)
        return entry

    @staticmethod
    def _key(username: str, client_ip: str | None) -> tuple[str, str]:
        return username.lower(), address_key(client_ip)

    # ---------------------------------------------------------------------------------- API
    def begin(self, username: str, client_ip: str | None, now: datetime) -> LoginAttempt | LoginRefusal:
        """Admit an attempt at ``username`` from ``client_ip``, or say why not.  Synchronous, so that
        concurrent attempts are counted before any of them is checked."""
        key = self._key(username, client_ip)
        entry = self._address_entry(key)
        if entry.locked_until is not None:
            if entry.locked_until > now:
                return LoginRefusal("locked", entry.locked_until, _seconds(entry.locked_until - now))
            entry.failures, entry.locked_until, entry.last_failure = 0, None, None  # a new series
        elif (entry.last_failure is not None and entry.inflight == 0
              and now - entry.last_failure >= self.lock_duration):
            entry.failures, entry.last_failure = 0, None
        settings = self.settings
        if entry.failures + entry.inflight >= settings.login_lock_failures:
            # the attempts in flight decide whether this address gets locked
            return LoginRefusal("throttled", now + timedelta(seconds=1), 1)
        if entry.failures >= settings.login_delay_failures:
            assert entry.last_failure is not None
            ready = entry.last_failure + timedelta(seconds=self.delay(entry.failures))
            if entry.inflight:  # past the threshold, one attempt at a time
                ready = max(ready, now + timedelta(seconds=1))
            if ready > now:
                return LoginRefusal("throttled", ready, _seconds(ready - now))
        entry.inflight += 1
        return LoginAttempt(self, key, entry)

    def _failed(self, key: tuple[str, str], entry: _AddressEntry, now: datetime) -> LoginFailure:
        entry.failures += 1
        entry.last_failure = now
        address_until = None
        if entry.locked_until is None and entry.failures >= self.settings.login_lock_failures:
            entry.locked_until = address_until = now + self.lock_duration
        account = self._account_entry(key[0], now)
        account.failures += 1
        reached = account.failures >= self.settings.login_account_lock_failures
        count = account.failures
        if reached:  # the caller locks the account; the next window starts now
            account.window_start, account.failures = now, 0
        return LoginFailure(entry.failures, address_until, count, reached)

    def _succeeded(self, key: tuple[str, str], entry: _AddressEntry) -> None:
        entry.failures, entry.last_failure, entry.locked_until = 0, None, None
        if entry.inflight == 0 and self._addresses.get(key) is entry:
            del self._addresses[key]

    def address_locked_until(self, username: str, client_ip: str | None, now: datetime) -> datetime | None:
        """Until when ``client_ip`` is locked out of ``username`` (None: it is not)."""
        entry = self._addresses.get(self._key(username, client_ip))
        if entry is None or entry.locked_until is None or entry.locked_until <= now:
            return None
        return entry.locked_until

    def unknown_locked_until(self, username: str, now: datetime) -> datetime | None:
        """The account-wide lock of a name that does not exist."""
        entry = self._accounts.get(username.lower())
        if entry is None or entry.locked_until is None or entry.locked_until <= now:
            return None
        return entry.locked_until

    def lock_unknown(self, username: str, until: datetime) -> None:
        entry = self._account_entry(username.lower(), until - self.lock_duration)
        entry.locked_until = until

    def forget(self, username: str) -> None:
        """Drop every per-address series of ``username`` (its password was reset by an administrator)."""
        name = username.lower()
        for key in [k for k in self._addresses if k[0] == name]:
            del self._addresses[key]
        self._accounts.pop(name, None)


#: The former name of :class:`LoginThrottle` (it only counted names that do not exist).
UnknownUserThrottle = LoginThrottle


def _seconds(delta: timedelta) -> int:
    return max(1, math.ceil(delta.total_seconds()))


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


def _locked(until: datetime, *, address: bool = False) -> ApiError:
    minutes = max(1, int((until - utcnow()).total_seconds() + 59) // 60)
    if address:
        return ApiError(
            423,
            "account_locked",
            f"此地址登录失败次数过多，该账户已对此地址锁定，请 {minutes} 分钟后再试 / too many failed logins "
            f"from this address: the account is locked for it, try again in {minutes} minute(s)",
        )
    return ApiError(
        423,
        "account_locked",
        f"登录失败次数过多，账户已锁定，请 {minutes} 分钟后再试 / "
        f"too many failed logins: the account is locked, try again in {minutes} minute(s)",
    )


def _throttled(retry_after: int) -> ApiError:
    return ApiError(
        429,
        "login_throttled",
        f"登录失败次数过多，请 {retry_after} 秒后再试 / too many failed logins: try again in {retry_after} s",
        headers={"Retry-After": str(retry_after)},
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


def session_idle() -> ApiError:
    return ApiError(
        401,
        "session_idle",
        "会话空闲超时，请重新登录 / session idle timeout, log in again",
        headers=_BEARER_INVALID,
    )


def _totp_required() -> ApiError:
    return ApiError(
        401,
        "totp_required",
        "此账户已启用两步验证，请输入验证器应用中的 6 位动态验证码 / this account uses two-step verification: "
        "enter the 6-digit code from your authenticator app",
        headers=_BEARER,
    )


def _totp_invalid() -> ApiError:
    return ApiError(
        401,
        "totp_invalid",
        "动态验证码错误或已使用过，请输入验证器应用中当前显示的验证码 / the verification code is wrong or was "
        "already used: enter the code your authenticator app shows now",
        headers=_BEARER,
    )


def admin_network_refused() -> ApiError:
    return ApiError(
        403,
        "admin_network_refused",
        "管理操作只允许从指定的管理网络进行，当前地址不在允许范围内 / management is only allowed from the "
        "administration networks (GBOPS_ADMIN_ALLOW_CIDRS): this address is not one of them",
    )


def password_age_reason(user: User, settings: Settings, now: datetime) -> str | None:
    """Why ``user`` must change the password because of its age (None: not too old, or no policy)."""
    days = settings.password_max_age_days
    changed = user.password_changed_at
    if days <= 0 or changed is None or now - changed < timedelta(days=days):
        return None
    return f"密码已超过 {days} 天未修改，请设置新密码 / the password is older than {days} days: choose a new one"


# ------------------------------------------------------------------------------------------ security events
def emit(sink: Any, kind: str, *, client_ip: str | None, user: str | None, **detail: Any) -> None:
    """Send one security event to ``sink`` (None: nowhere); never raises into the request."""
    if sink is None:
        return
    try:
        sink.emit(kind, source_ip=client_ip, user=user, detail=detail)
    except Exception:  # a monitor fault must not fail a login
        log.exception("security.emit_failed", kind=kind)


def _admin_network_allowed(client_ip: str | None, settings: Settings) -> bool:
    networks = parse_networks(settings.admin_allow_cidrs)
    return not networks or in_networks(client_ip, networks)


# ------------------------------------------------------------------------------------------ login
@dataclass(frozen=True, slots=True)
class LoginResult:
    token: str
    expires_at: datetime
    user: User
    #: set when the password must be changed because of its age (the words to show)
    password_change_reason: str | None = None
    #: the user's role requires the second factor and it is not set up: the token may only enrol
    totp_setup_required: bool = False


@dataclass(frozen=True, slots=True)
class AuthContext:
    """Who is calling: the user and the row of the token they presented."""

    user: User
    token: AuthToken


async def _record_failure(
    session: AsyncSession,
    user: User,
    failure: LoginFailure,
    now: datetime,
    lock_duration: timedelta,
    on_recorded: Callable[[datetime | None], Awaitable[None]] | None = None,
) -> datetime | None:
    """Count a wrong password on the account (atomically: ``failed_logins`` since the last success,
    from every address) and lock the account when ``failure`` reached the account-wide threshold.
    Commits.  ``on_recorded(account_locked_until)`` runs in the same transaction, before the commit
    (the audit entries of the failure).  Returns the account lock set now, or None."""
    await begin_write(session)
    await session.execute(update(User).where(User.id == user.id).values(failed_logins=User.failed_logins + 1))
    until: datetime | None = None
    if failure.account_threshold:
        until = now + lock_duration
        await session.execute(update(User).where(User.id == user.id).values(locked_until=until))
    if on_recorded is not None:
        await on_recorded(until)
    await session.commit()
    return until


async def _admin_may_bypass(session: AsyncSession, user: User, client_ip: str | None, settings: Settings) -> bool:
    """Whether ``user`` logs in despite an account-wide lock: an enabled administrator (a holder of the
    built-in role, inside its validity window) from ``settings.admin_networks`` (empty: loopback)."""
    networks = parse_networks(settings.admin_networks) or LOOPBACK
    if not in_networks(client_ip, networks):
        return False
    if user.disabled or _validity_error(user, utcnow(), 403) is not None:
        return False
    held = (
        await session.execute(
            select(UserRole.user_id)
            .join(Role, Role.id == UserRole.role_id)
            .where(UserRole.user_id == user.id, Role.builtin.is_(True))
            .limit(1)
        )
    ).first()
    if session.in_transaction():
        await session.commit()
    return held is not None


async def _account_lock(
    session: AsyncSession, user: User, client_ip: str | None, settings: Settings, now: datetime
) -> datetime | None:
    """The account-wide lock that applies to this attempt (None: none, or an administrator at home)."""
    if user.locked_until is None or user.locked_until <= now:
        return None
    if await _admin_may_bypass(session, user, client_ip, settings):
        log.info("login.admin_lock_bypass", username=user.username, client_ip=client_ip)
        return None
    return user.locked_until


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


async def _refused(
    refusal: LoginRefusal,
    *,
    session: AsyncSession,
    audit: AuditLog | None,
    actor: Any,
    target_user: User | None,
    client_ip: str | None,
    username: str,
    audited: bool,
) -> ApiError:
    """The answer to an attempt refused before its password was checked.  With ``audited``, an address
    lock is on the audit log (``auth.login_failed``, reason ``locked``); throttling is only logged."""
    if refusal.kind == "locked":
        log.info("login.refused", username=username if target_user else None, client_ip=client_ip,
                 reason="address_locked")
        if audited:
            await _audit_alone(audit, session, "auth.login_failed", actor=actor, target_user=target_user,
                               client_ip=client_ip,
                               detail={"reason": "locked", "scope": "address", "locked_until": refusal.until})
        return _locked(refusal.until, address=True)
    log.info("login.throttled", username=username if target_user else None, client_ip=client_ip,
             retry_after=refusal.retry_after)
    return _throttled(refusal.retry_after)


def _failure_audits(
    failure: LoginFailure,
    account_until: datetime | None,
    *,
    reason: str,
    failed_action: str,
    window_minutes: float,
) -> list[tuple[str, dict[str, Any]]]:
    """(action, detail) of the audit entries of one wrong password."""
    out: list[tuple[str, dict[str, Any]]] = []
    if failure.address_locked_until is not None:
        out.append(("auth.lockout", {"reason": reason, "scope": "address", "failed_logins": failure.address_failures,
                                     "locked_until": failure.address_locked_until}))
    else:
        out.append((failed_action, {"reason": reason, "failed_logins": failure.address_failures}))
    if account_until is not None:
        out.append(("auth.lockout", {"reason": reason, "scope": "account", "failures": failure.account_failures,
                                     "window_minutes": window_minutes, "locked_until": account_until}))
    return out


async def login(
    session: AsyncSession,
    username: str,
    password: str,
    *,
    ttl: timedelta,
    client_ip: str | None,
    throttle: LoginThrottle,
    audit: AuditLog | None = None,
    otp: str | None = None,
    sink: Any = None,
) -> LoginResult:
    """Check the credentials and issue a token, or raise :class:`ApiError` (401/403/423/429).

    With ``audit``, every outcome but throttling is on the audit log, in the same transaction as its
    effect: ``auth.login``, ``auth.login_failed`` (reason ``unknown_user``, ``bad_credentials``,
    ``locked``, ``disabled``, ``account_expired``, ``account_not_yet_valid``, ``totp_failed``,
    ``admin_network``) or ``auth.lockout`` (a failure that locks the address out of the account, detail
    ``scope: address``, or the account itself, ``scope: account``).  A user name that does not exist is not
    recorded (it may be a password typed into the wrong field).  With ``sink`` (a
    :class:`security.events.SecuritySink`), refusals are security events too: ``login_failed``,
    ``login_locked``, ``totp_failed``, ``outside_validity``, ``admin_network``."""
    settings = throttle.settings
    now = utcnow()
    admitted = throttle.begin(username, client_ip, now)  # before any await: concurrent attempts count
    try:
        if isinstance(admitted, LoginRefusal) and admitted.kind == "throttled":  # cheap: no database
            raise await _refused(admitted, session=session, audit=audit, actor=None, target_user=None,
                                 client_ip=client_ip, username=username, audited=False)
        user = (await session.execute(select(User).where(User.username == username))).scalar_one_or_none()
        await session.commit()  # no snapshot held while argon2 runs
        actor = _anonymous()
        name = user.username if user is not None else None  # an unknown name may be a mistyped password

        if isinstance(admitted, LoginRefusal):
            emit(sink, "login_locked", client_ip=client_ip, user=name, scope="address",
                 locked_until=admitted.until.isoformat())
            raise await _refused(admitted, session=session, audit=audit, actor=actor, target_user=user,
                                 client_ip=client_ip, username=username, audited=True)
        attempt = admitted

        if user is None:
            until = throttle.unknown_locked_until(username, now)
            if until is not None:
                await _audit_alone(audit, session, "auth.login_failed", actor=actor, target_user=None,
                                   client_ip=client_ip,
                                   detail={"reason": "locked", "scope": "account", "locked_until": until})
                emit(sink, "login_locked", client_ip=client_ip, user=None, scope="account",
                     locked_until=until.isoformat())
                raise _locked(until)
            await _burn_verify(password)
            failed_at = utcnow()
            failure = attempt.failed(failed_at)
            account_until = None
            if failure.account_threshold:
                account_until = failed_at + throttle.lock_duration
                throttle.lock_unknown(username, account_until)
            # The name is not logged: a user who typed their password into the name field.
            log.info("login.failed", client_ip=client_ip, reason="unknown_user")
            if audit is not None:
                await begin_write(session)
                for action, detail in _failure_audits(failure, account_until, reason="unknown_user",
                                                      failed_action="auth.login_failed",
                                                      window_minutes=settings.login_lock_minutes):
                    await _audit(audit, session, action, actor=actor, target_user=None, client_ip=client_ip,
                                 detail=detail)
                await session.commit()
            _emit_failure(sink, failure, account_until, client_ip=client_ip, user=None, kind="login_failed",
                          reason="unknown_user")
            if failure.address_locked_until is not None:
                raise _locked(failure.address_locked_until, address=True)
            if account_until is not None:
                raise _locked(account_until)
            raise _bad_credentials()

        account_until = await _account_lock(session, user, client_ip, settings, now)
        if account_until is not None:
            log.info("login.refused", username=username, client_ip=client_ip, reason="locked")
            await _audit_alone(audit, session, "auth.login_failed", actor=actor, target_user=user,
                               client_ip=client_ip,
                               detail={"reason": "locked", "scope": "account", "locked_until": account_until})
            emit(sink, "login_locked", client_ip=client_ip, user=name, scope="account",
                 locked_until=account_until.isoformat())
            raise _locked(account_until)

        async def count_failure(reason: str, kind: str, error: ApiError) -> ApiError:
            """A wrong password or second-factor code: counted, audited, an event; the error to raise."""
            failed_at = utcnow()
            failure = attempt.failed(failed_at)

            async def audit_failure(account_until: datetime | None) -> None:
                for action, detail in _failure_audits(failure, account_until, reason=reason,
                                                      failed_action="auth.login_failed",
                                                      window_minutes=settings.login_lock_minutes):
                    await _audit(audit, session, action, actor=actor, target_user=user, client_ip=client_ip,
                                 detail=detail)

            assert user is not None
            account_until = await _record_failure(session, user, failure, failed_at, throttle.lock_duration,
                                                  on_recorded=audit_failure)
            log.info("login.failed", username=username, client_ip=client_ip, reason=reason,
                     address_failures=failure.address_failures, account_failures=failure.account_failures,
                     address_locked=failure.address_locked_until is not None, account_locked=account_until is not None)
            _emit_failure(sink, failure, account_until, client_ip=client_ip, user=name, kind=kind, reason=reason)
            if failure.address_locked_until is not None:
                return _locked(failure.address_locked_until, address=True)
            if account_until is not None and await _account_lock(session, user, client_ip, settings, failed_at):
                return _locked(account_until)
            return error

        ok, needs_rehash = await asyncio.to_thread(_verify_sync, user.password_hash, password)
        if not ok:
            raise await count_failure("bad_credentials", "login_failed", _bad_credentials())

        if user.disabled:
            log.info("login.refused", username=username, client_ip=client_ip, reason="disabled")
            await _audit_alone(audit, session, "auth.login_failed", actor=actor, target_user=user,
                               client_ip=client_ip, detail={"reason": "disabled"})
            emit(sink, "login_failed", client_ip=client_ip, user=name, reason="disabled")
            raise ApiError(403, "account_disabled", "账户已停用，请联系管理员 / the account is disabled")

        outside = _validity_error(user, now, 403)
        if outside is not None:
            log.info("login.refused", username=username, client_ip=client_ip, reason=outside.error)
            await _audit_alone(audit, session, "auth.login_failed", actor=actor, target_user=user,
                               client_ip=client_ip, detail={"reason": outside.error})
            emit(sink, "outside_validity", client_ip=client_ip, user=name, reason=outside.error, at="login")
            raise outside

        totp_step: int | None = None
        if user.totp_enabled_at is not None:
            if not (otp or "").strip():
                # The password was right; the client did not know a code is needed (not a failure).
                log.info("login.totp_required", username=username, client_ip=client_ip)
                raise _totp_required()
            totp_step = second_factor.code_step(second_factor.totp_box(settings), user, otp, utcnow())
            if totp_step is None:
                raise await count_failure("totp_failed", "totp_failed", _totp_invalid())

        if not _admin_network_allowed(client_ip, settings) and await _holds_admin_permission(session, user):
            log.info("login.refused", username=username, client_ip=client_ip, reason="admin_network")
            await _audit_alone(audit, session, "auth.login_failed", actor=actor, target_user=user,
                               client_ip=client_ip, detail={"reason": "admin_network"})
            emit(sink, "admin_network", client_ip=client_ip, user=name, at="login")
            raise admin_network_refused()

        totp_setup = user.totp_enabled_at is None and await second_factor.requires_totp(session, user, settings)
        if session.in_transaction():
            await session.commit()
        new_hash = await hash_password(password) if needs_rehash else None
        await begin_write(session)
        now = utcnow()
        if totp_step is not None and not await second_factor.claim_step(session, user, totp_step):
            await session.commit()  # nothing written: the same code used by a request that got there first
            raise await count_failure("totp_failed", "totp_failed", _totp_invalid())
        attempt.succeeded()
        if new_hash is not None:
            user.password_hash = new_hash
        user.failed_logins = 0
        if user.locked_until is not None and user.locked_until <= now:
            # An administrator let in despite an account-wide lock leaves it in place for the others.
            user.locked_until = None
        user.last_login_at = now
        user.password_weak = weak_password_reason(password, user.username) is not None
        age_reason = password_age_reason(user, settings, now)
        if age_reason is not None:
            user.must_change_password = True
        token = new_token()
        expires_at = now + ttl
        token_row = AuthToken(
            token_hash=hash_token(token),
            user_id=user.id,
            created_at=now,
            expires_at=expires_at,
            client_ip=client_ip,
            last_used_at=now,
        )
        session.add(token_row)
        if audit is not None:
            await session.flush()  # the token row's id, for the audit entry
            detail: dict[str, Any] = {"token_id": token_row.id, "expires_at": expires_at}
            if totp_step is not None:
                detail["second_factor"] = "totp"
            if age_reason is not None:
                detail["password_expired"] = True
            if totp_setup:
                detail["totp_setup_required"] = True
            await _audit(audit, session, "auth.login", actor=_as_actor(user), target_user=user,
                         client_ip=client_ip, detail=detail)
        # Housekeeping: this user's tokens that stopped working a while ago.
        await session.execute(
            delete(AuthToken).where(
                AuthToken.user_id == user.id,
                AuthToken.expires_at < now - TOKEN_RETENTION,
            )
        )
        await session.commit()
        log.info("login.ok", username=username, user_id=user.id, client_ip=client_ip,
                 second_factor=totp_step is not None)
        return LoginResult(token=token, expires_at=expires_at, user=user, password_change_reason=age_reason,
                           totp_setup_required=totp_setup)
    finally:
        if isinstance(admitted, LoginAttempt):
            admitted.release()


def _emit_failure(sink: Any, failure: LoginFailure, account_until: datetime | None, *, client_ip: str | None,
                  user: str | None, kind: str, reason: str) -> None:
    emit(sink, kind, client_ip=client_ip, user=user, reason=reason, failed_logins=failure.address_failures)
    if failure.address_locked_until is not None:
        emit(sink, "login_locked", client_ip=client_ip, user=user, scope="address", reason=reason,
             locked_until=failure.address_locked_until.isoformat())
    if account_until is not None:
        emit(sink, "login_locked", client_ip=client_ip, user=user, scope="account", reason=reason,
             failures=failure.account_failures, locked_until=account_until.isoformat())


async def _holds_admin_permission(session: AsyncSession, user: User) -> bool:
    """Whether ``user`` holds any administration-level permission (the built-in role holds them all)."""
    from ops_portal.deps import PERMISSION_CATALOGUE
    from ops_portal.models import RolePermission

    admin = sorted(name for name, (level, *_rest) in PERMISSION_CATALOGUE.items() if level == "admin")
    hit = (
        await session.execute(
            select(Role.id)
            .join(UserRole, UserRole.role_id == Role.id)
            .outerjoin(RolePermission, RolePermission.role_id == Role.id)
            .where(UserRole.user_id == user.id,
                   (Role.builtin.is_(True)) | (RolePermission.permission.in_(admin)))
            .limit(1)
        )
    ).first()
    return hit is not None


async def resolve_token(
    session: AsyncSession,
    token: str,
    *,
    idle: timedelta | None = None,
    sink: Any = None,
    client_ip: str | None = None,
    touch: bool = True,
) -> AuthContext:
    """The user and token row behind a bearer token, or :class:`ApiError` 401.

    With ``idle`` (``GBOPS_SESSION_IDLE_MINUTES``), a token whose last use is older is refused (401
    ``session_idle``), and, with ``touch``, its ``last_used_at`` is moved to now when it is more than a minute
    old.  With ``sink``, refusals are security events: ``token_forged`` (no such token), ``token_revoked``,
    ``token_expired`` (lifetime or idle), ``outside_validity``."""
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
        emit(sink, "token_forged", client_ip=client_ip, user=None)
        raise invalid_token()
    tok, user = row
    if tok.revoked_at is not None:
        emit(sink, "token_revoked", client_ip=client_ip, user=user.username, token_id=tok.id)
        raise invalid_token()
    if tok.expires_at <= now:
        emit(sink, "token_expired", client_ip=client_ip, user=user.username, token_id=tok.id, reason="lifetime")
        raise invalid_token()
    if user.disabled:
        raise invalid_token()
    outside = _validity_error(user, now, 401)
    if outside is not None:
        emit(sink, "outside_validity", client_ip=client_ip, user=user.username, reason=outside.error, at="request")
        raise outside
    last = tok.last_used_at or tok.created_at
    if idle is not None and idle > timedelta(0) and last is not None and now - last >= idle:
        emit(sink, "token_expired", client_ip=client_ip, user=user.username, token_id=tok.id, reason="idle",
             idle_minutes=round(idle.total_seconds() / 60, 1))
        raise session_idle()
    if touch and (tok.last_used_at is None or now - tok.last_used_at >= TOKEN_TOUCH_INTERVAL):
        await _touch(session, tok, now)
    return AuthContext(user=user, token=tok)


async def _touch(session: AsyncSession, tok: AuthToken, now: datetime) -> None:
    """``last_used_at`` = now: one small write a minute per token, on a connection of its own (a failure
    there must not expire the request session's rows); a busy database only delays the next one."""
    stmt = (
        update(AuthToken)
        .where(AuthToken.id == tok.id,
               (AuthToken.last_used_at.is_(None)) | (AuthToken.last_used_at < now - TOKEN_TOUCH_INTERVAL))
        .values(last_used_at=now)
    )
    engine = session.bind
    try:
        if engine is None:  # pragma: no cover - every portal session is bound to the engine
            await begin_write(session)
            await session.execute(stmt.execution_options(synchronize_session=False))
            await session.commit()
        else:
            async with engine.begin() as conn:
                await conn.execute(stmt)
    except Exception:
        log.warning("token.touch_failed", token_id=tok.id, exc_info=True)
        return
    set_committed_value(tok, "last_used_at", now)  # written already: nothing for the session to flush


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
    throttle: LoginThrottle | None = None,
) -> User:
    """Change the caller's password; revokes every other token of the user.

    A wrong old password counts as a failed login from ``client_ip`` (so a stolen token cannot be used
    to guess the password: the same ``throttle`` delays and locks apply, 429/423) and answers 403; a weak
    or unchanged new password answers 422.  With ``audit``: ``user.password_change``, or
    ``user.password_change_failed`` / ``auth.lockout`` for a wrong old password, in the same transaction.
    """
    now = utcnow()
    user = ctx.user
    admitted = throttle.begin(user.username, client_ip, now) if throttle is not None else None
    try:
        if isinstance(admitted, LoginRefusal):
            raise await _refused(admitted, session=session, audit=audit, actor=_as_actor(user), target_user=user,
                                 client_ip=client_ip, username=user.username, audited=False)
        if throttle is not None:
            account_until = await _account_lock(session, user, client_ip, throttle.settings, now)
        else:
            account_until = user.locked_until if user.locked_until is not None and user.locked_until > now else None
        if account_until is not None:
            raise _locked(account_until)

        if session.in_transaction():
            await session.commit()  # no snapshot held while argon2 runs
        ok, _ = await asyncio.to_thread(_verify_sync, user.password_hash, old_password)
        if not ok:
            if admitted is None:  # no throttle (a caller outside the portal): count on the account only
                failure = LoginFailure(user.failed_logins + 1, None, user.failed_logins + 1, False)
                lock_duration = timedelta(0)
                window = 0.0
            else:
                failure = admitted.failed(utcnow())
                lock_duration = throttle.lock_duration  # type: ignore[union-attr]
                window = throttle.settings.login_lock_minutes  # type: ignore[union-attr]

            async def audit_failure(account_until: datetime | None) -> None:
                for action, detail in _failure_audits(failure, account_until, reason="wrong_old_password",
                                                      failed_action="user.password_change_failed",
                                                      window_minutes=window):
                    await _audit(audit, session, action, actor=_as_actor(user), target_user=user,
                                 client_ip=client_ip, detail=detail)

            account_until = await _record_failure(session, user, failure, now, lock_duration,
                                                  on_recorded=audit_failure)
            log.info("password.change_failed", username=user.username, reason="wrong_old_password",
                     address_failures=failure.address_failures)
            if failure.address_locked_until is not None:
                raise _locked(failure.address_locked_until, address=True)
            if account_until is not None and throttle is not None and await _account_lock(
                session, user, client_ip, throttle.settings, now
            ):
                raise _locked(account_until)
            raise ApiError(403, "wrong_password", "原密码错误 / the old password is wrong")
        if isinstance(admitted, LoginAttempt):
            admitted.succeeded()
    finally:
        if isinstance(admitted, LoginAttempt):
            admitted.release()

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
    user.password_changed_at = now
    user.password_weak = False  # weak passwords were refused above
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
