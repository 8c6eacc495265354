"""The facts of the security check (:mod:`security.check`), gathered from their owners.

* users: the portal's own tables (accounts columns ``password_weak``, ``password_changed_at``,
  ``last_login_at``, ``totp_enabled_at``; tokens' ``last_used_at`` / ``created_at`` as signs of use);
  administrators are users holding any administration-level permission (:data:`PERMISSION_CATALOGUE`).
  A user whose ``password_weak`` is not known yet has its argon2 hash tried against
  :data:`USER_PROBE_PASSWORDS` only, within :data:`USER_PROBE_BUDGET_S` seconds in all (argon2 is slow on
  purpose: about 0.1 s per try with the production parameters on a small host).
* devices: :func:`device_registry.queries.device_password_facts` (the registry's function; the portal never
  reads its tables), their stored HA1 judged by :mod:`security.weak_ha1` in a worker thread.
* the advisory list: ``<data_dir>/device_advisories.toml`` when it exists, else the one shipped in
  ``gbops/data`` (read as a file: the portal does not import the assembly).
* TLS: :func:`gbcore.tls.tls_status`.  Backup and clock: callables the assembly puts on ``app.state``
  (``backup_status`` -> :func:`gbops.backup.backup_status`; ``timesync``, the time service, whose
  ``status()`` is read), because they live above the portal.  A source that is missing or fails becomes an
  "unknown" finding, never an error.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from device_registry.queries import device_password_facts
from gbcore.db import utcnow
from gbcore.log import get_logger
from gbcore.settings import Settings
from ops_portal.models import AuthToken, Role, RolePermission, User, UserRole
from security.advisories import AdvisoryError, parse_advisories
from security.check import (
    USER_FIELDS,
    CheckFacts,
    CheckReport,
    DeviceFacts,
    SettingsFacts,
    UserFacts,
    run_check,
)
from security.weak_ha1 import DeviceHa1, scan_devices

__all__ = [
    "USER_PROBE_BUDGET_S",
    "USER_PROBE_PASSWORDS",
    "CheckSources",
    "advisories_path",
    "collect_facts",
    "run_security_check",
]

log = get_logger("gbops.portal.security_check")

#: The few passwords a stored argon2 hash is tried against when the account's strength is not known yet.
USER_PROBE_PASSWORDS: tuple[str, ...] = ("admin123", "Admin@123", "12345678")
#: Longest time spent on those argon2 tries in one check, all users together (s).
USER_PROBE_BUDGET_S = 3.0

BUNDLED_ADVISORIES = Path(__file__).resolve().parents[2] / "gbops" / "data" / "device_advisories.toml"


@dataclass
class CheckSources:
    """Facts that live above the portal, as callables (sync or async) returning a dict; None: not wired."""

    backup_status: Callable[[], Any] | None = None
    time_status: Callable[[], Any] | None = None
    advisories_file: Path | None = None
    probe_budget_s: float = USER_PROBE_BUDGET_S
    stats: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_app_state(cls, state: Any) -> CheckSources:
        timesync = getattr(state, "timesync", None)  # timesync.service.TimeService
        time_status = getattr(state, "time_status", None) or (timesync.status if timesync is not None else None)
        return cls(backup_status=getattr(state, "backup_status", None), time_status=time_status,
                   advisories_file=getattr(state, "device_advisories_file", None))


def advisories_path(settings: Settings, override: Path | None = None) -> Path:
    if override is not None:
        return override
    local = settings.data_dir / "device_advisories.toml"
    return local if local.exists() else BUNDLED_ADVISORIES


async def _call(fn: Callable[[], Any]) -> Any:
    value = fn()
    if inspect.isawaitable(value):
        value = await value
    return value


# ------------------------------------------------------------------------------------------ users
def _admin_permissions() -> frozenset[str]:
    from ops_portal.deps import PERMISSION_CATALOGUE

    return frozenset(p for p, (level, _, _) in PERMISSION_CATALOGUE.items() if level == "admin")


def _probe_sync(encoded: str, deadline: float) -> bool | None:
    """True: ``encoded`` is the hash of a probe password; None: not one of them, or out of time."""
    from argon2 import PasswordHasher
    from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

    hasher = PasswordHasher()
    for pw in USER_PROBE_PASSWORDS:
        if time.monotonic() > deadline:
            return None
        try:
            hasher.verify(encoded, pw)
            return True
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            continue
    return None


async def _read_users(session: AsyncSession) -> tuple[list[dict[str, Any]], frozenset[str]]:
    """Every user as plain values (the session can close before the slow argon2 probes)."""
    known = frozenset(f for f in USER_FIELDS if hasattr(User, f))
    users = list(await session.scalars(select(User).order_by(User.id)))
    rows = await session.execute(
        select(UserRole.user_id, Role.name, Role.builtin).join(Role, Role.id == UserRole.role_id).order_by(Role.name))
    roles: dict[int, list[str]] = {}
    builtin: set[int] = set()
    for uid, name, is_builtin in rows:
        roles.setdefault(uid, []).append(name)
        if is_builtin:
            builtin.add(uid)
    admin_holders = set(await session.scalars(
        select(UserRole.user_id).join(RolePermission, RolePermission.role_id == UserRole.role_id)
        .where(RolePermission.permission.in_(_admin_permissions())))) | builtin
    used_cols = [func.max(AuthToken.created_at)]
    if hasattr(AuthToken, "last_used_at"):
        used_cols.append(func.max(AuthToken.last_used_at))
    used: dict[int, Any] = {}
    for uid, *stamps in await session.execute(select(AuthToken.user_id, *used_cols).group_by(AuthToken.user_id)):
        seen = [s for s in stamps if s is not None]
        used[uid] = max(seen) if seen else None
    out = []
    for u in users:
        stamps = [s for s in (getattr(u, "last_login_at", None), used.get(u.id)) if s is not None]
        out.append({
            "username": u.username, "display_name": u.display_name or "", "disabled": u.disabled,
            "created_at": u.created_at, "is_admin": u.id in admin_holders, "roles": tuple(roles.get(u.id, ())),
            "password_weak": getattr(u, "password_weak", None),
            "password_changed_at": getattr(u, "password_changed_at", None),
            "last_login_at": max(stamps) if stamps else None,
            "totp_enabled": (u.totp_enabled_at is not None) if "totp_enabled_at" in known else None,
            "password_hash": u.password_hash,
        })
    return out, known


async def _judge_users(raw: list[dict[str, Any]], sources: CheckSources) -> list[UserFacts]:
    """:class:`UserFacts` of every user; the hashes of enabled users whose strength is not known yet are tried
    against :data:`USER_PROBE_PASSWORDS`, administrators first, within the budget."""
    deadline = time.monotonic() + sources.probe_budget_s
    probed = found = 0
    for r in sorted(raw, key=lambda r: not r["is_admin"]):
        if r["password_weak"] is None and not r["disabled"] and time.monotonic() < deadline:
            probed += 1
            if await asyncio.to_thread(_probe_sync, r["password_hash"], deadline):
                r["password_weak"], found = True, found + 1
    sources.stats.update(users_probed=probed, users_probe_found=found)
    return sorted((UserFacts(**{k: v for k, v in r.items() if k != "password_hash"}) for r in raw),
                  key=lambda f: f.username)


# ------------------------------------------------------------------------------------------ all facts
async def collect_facts(sessionmaker: async_sessionmaker[AsyncSession], settings: Settings,
                        sources: CheckSources | None = None) -> CheckFacts:
    sources = sources or CheckSources()
    facts = CheckFacts(now=utcnow(), settings=SettingsFacts.from_settings(settings))
    raw_users = rows = None
    async with sessionmaker() as session:
        try:
            raw_users, facts.user_fields = await _read_users(session)
        except Exception as exc:  # a database not migrated to the accounts columns, ...
            log.warning("security_check.users_unreadable", error=type(exc).__name__)
            await session.rollback()
            facts.unknown["users"] = f"无法读取用户 / the users could not be read: {type(exc).__name__}"
        try:
            rows = await device_password_facts(session)
        except Exception as exc:
            log.warning("security_check.devices_unreadable", error=type(exc).__name__)
            facts.unknown["devices"] = f"无法读取设备 / the devices could not be read: {type(exc).__name__}"
        await session.commit()
    scan = None
    if rows is not None:  # the HA1 scan (one core) runs while the argon2 probes of the users run
        default = settings.sip_password.get_secret_value() if settings.sip_password is not None else None

        def timed_scan() -> tuple[Any, float]:
            t0 = time.perf_counter()
            out = scan_devices([DeviceHa1(r.device_id, r.password_ha1_md5, r.password_ha1_sha256, r.password_realm)
                                for r in rows], settings.realm, default)
            return out, time.perf_counter() - t0

        scan = asyncio.ensure_future(asyncio.to_thread(timed_scan))
    try:
        if raw_users is not None:
            facts.users = await _judge_users(raw_users, sources)
    finally:
        if scan is not None:
            results, took = await scan
            sources.stats["ha1_scan_s"] = round(took, 3)
            facts.devices = [DeviceFacts(r.device_id, r.name or "", r.manufacturer, r.model, r.firmware, res)
                             for r, res in zip(rows, results, strict=True)]

    path = advisories_path(settings, sources.advisories_file)
    try:
        facts.advisories = parse_advisories(await asyncio.to_thread(path.read_text, "utf-8"))
    except (OSError, UnicodeDecodeError, AdvisoryError) as exc:
        facts.unknown["device_advisories"] = f"漏洞列表 {path.name} 无法使用 / the advisory list cannot be used: {exc}"

    try:
        from gbcore.tls import tls_status
    except ImportError:
        facts.unknown["tls"] = "本版本无 TLS 状态 / this version has no TLS status"
    else:
        try:
            facts.tls = await asyncio.to_thread(tls_status, settings)
        except Exception as exc:
            facts.unknown["tls"] = f"TLS 状态读取失败 / the TLS status failed: {exc}"

    for name, fn, missing in (
        ("backup", sources.backup_status, "备份功能未接入（仅由运行中的平台提供） / backups are not wired in"),
        ("time", sources.time_status, "时钟状态未接入（由运行中的平台的时间服务提供） / the clock status is not "
                                      "wired in (the running platform's time service provides it)"),
    ):
        if fn is None:
            facts.unknown[name] = missing
            continue
        try:
            value = await _call(fn)
        except Exception as exc:
            log.warning("security_check.source_failed", source=name, error=type(exc).__name__)
            facts.unknown[name] = f"读取失败 / reading it failed: {type(exc).__name__}: {exc}"
            continue
        setattr(facts, name, value)
    return facts


async def run_security_check(sessionmaker: async_sessionmaker[AsyncSession], settings: Settings,
                             sources: CheckSources | None = None) -> CheckReport:
    """Collect the facts and judge them; the report's ``checked`` carries what was measured."""
    sources = sources or CheckSources()
    t0 = time.perf_counter()
    facts = await collect_facts(sessionmaker, settings, sources)
    report = run_check(facts)
    report.checked.update(sources.stats, duration_s=round(time.perf_counter() - t0, 3))
    return report
