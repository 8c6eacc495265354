"""The security self-check: findings, each with a fix, from facts gathered elsewhere (sans-IO).

The caller (the portal's :mod:`ops_portal.security.check_facts`, the ``gbops security check`` command)
collects :class:`CheckFacts` -- users, devices (with the verdict of :mod:`security.weak_ha1` on their
stored HA1), the relevant settings, the TLS, backup and clock status, the advisory list -- and
:func:`run_check` turns them into :class:`Finding` s.  A fact source that could not be read is ``None``
(or a missing user column is absent from :attr:`CheckFacts.user_fields`): the check then reports an
"unknown" finding for it instead of failing or staying silent.

Every finding has a code, a severity (``critical`` > ``warning`` > ``info``), a title and a fix in
Chinese and English, and the subjects it is about (users, devices, settings, the platform).  No password,
plain or hashed, ever enters a finding.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from gbcore.timeutil import to_device_time
from security.advisories import Advisory, match_advisories
from security.weak_ha1 import REASONS, Ha1Result

__all__ = [
    "BACKUP_STALE_DAYS",
    "CHECKS",
    "SEVERITY_ORDER",
    "SIP_LOCKOUT_MAX_FAILURES",
    "USER_FIELDS",
    "CheckFacts",
    "CheckReport",
    "DeviceFacts",
    "Finding",
    "SettingsFacts",
    "Subject",
    "UserFacts",
    "run_check",
]

SEVERITY_ORDER = ("critical", "warning", "info")
#: A backup older than this is stale.
BACKUP_STALE_DAYS = 2
#: More SIP digest failures than this before a lockout is no lockout worth the name.
SIP_LOCKOUT_MAX_FAILURES = 10
#: The user columns the check reads (helper C's accounts columns); a missing one gives an "unknown" finding.
USER_FIELDS = frozenset({"password_weak", "password_changed_at", "last_login_at", "totp_enabled_at"})

#: code -> (severity, 中文标题, English title, 中文修复, English fix).  The severity is the default; a few
#: findings choose theirs from the facts (advisories carry their own).
CHECKS: dict[str, tuple[str, str, str, str, str]] = {
    "user_weak_password": (
        "critical", "用户使用弱口令", "users with weak passwords",
        "让这些用户立即修改密码（账户管理中重置密码并要求首次登录修改）；新密码至少 8 位、两类以上字符、不在常见弱口令表中",
        "have these users change their password now (reset it under user management, forcing a change at next "
        "login); 8+ characters, 2+ character classes, not a common password"),
    "user_password_unknown": (
        "info", "用户口令强度未知", "users whose password strength is not known yet",
        "口令强度在用户下次登录或修改密码时判定；长期未登录的账户请停用或重置密码",
        "the strength is judged at the user's next login or password change; disable or reset accounts "
        "that are not used"),
    "account_never_used": (
        "info", "从未登录的账户", "accounts never logged in",
        "确认账户仍然需要；不需要的账户请停用或删除",
        "confirm the account is still needed; disable or delete the ones that are not"),
    "account_unused": (
        "warning", "长期未使用的账户", "accounts unused for a long time",
        "停用或删除长期不用的账户（GBOPS_ACCOUNT_UNUSED_DAYS 天）",
        "disable or delete accounts unused for GBOPS_ACCOUNT_UNUSED_DAYS days"),
    "password_old": (
        "warning", "密码超过有效期未修改", "passwords older than the policy",
        "这些用户下次登录时须修改密码；也可由管理员重置（GBOPS_PASSWORD_MAX_AGE_DAYS）",
        "these users must change their password at their next login; an administrator may also reset it "
        "(GBOPS_PASSWORD_MAX_AGE_DAYS)"),
    "admin_no_second_factor": (
        "warning", "管理员未启用双因素认证", "administrators without a second factor",
        "管理员在“我的账户”中启用动态口令（TOTP）；可用 GBOPS_TOTP_REQUIRED_ROLES 对角色强制要求",
        "administrators enable a TOTP second factor under My account; GBOPS_TOTP_REQUIRED_ROLES makes it "
        "mandatory for roles"),
    "default_account": (
        "info", "默认管理员账户 admin 仍在使用", "the default administrator account 'admin' is active",
        "为每位管理员建立实名账户并授予管理角色，然后停用 admin 账户",
        "create a named account for each administrator, grant it the administrator role, then disable "
        "'admin'"),
    "device_weak_password": (
        "critical", "设备使用弱口令", "devices with weak SIP passwords",
        "在设备管理中为这些设备设置强密码（至少 8 位、两类以上字符），并在设备上同步修改",
        "set a strong SIP password for these devices under device management (8+ characters, 2+ classes) "
        "and configure the same on each device"),
    "device_shared_password": (
        "warning", "设备使用平台共享默认密码", "devices on the shared default password",
        "为每台设备设置各自的 SIP 密码（设备管理 → 设备密码）；共享密码泄露会波及全部设备",
        "give each device its own SIP password (device management -> device password); a leaked shared "
        "password exposes every device"),
    "device_advisory": (
        "critical", "设备固件在漏洞列表中", "device firmware on the advisory list",
        "按公告升级固件；暂时无法升级的设备限制其网络访问",
        "upgrade the firmware as the advisory says; restrict the network access of devices that cannot be "
        "upgraded yet"),
    "http_plain": (
        "critical", "门户未使用 HTTPS", "the portal serves HTTP without TLS",
        "配置 GBOPS_TLS_CERT_FILE 与 GBOPS_TLS_KEY_FILE（或使用首次启动生成的自签名证书），不要在公网地址上设置 "
        "GBOPS_HTTP_PLAIN",
        "configure GBOPS_TLS_CERT_FILE / GBOPS_TLS_KEY_FILE (or use the self-signed certificate generated at "
        "first start); do not set GBOPS_HTTP_PLAIN on a public address"),
    "tls_problem": (
        "critical", "TLS 证书不可用或即将过期", "the TLS certificate is unusable or about to expire",
        "更换证书（GBOPS_TLS_CERT_FILE 与 GBOPS_TLS_KEY_FILE）并重启平台",
        "replace the certificate (GBOPS_TLS_CERT_FILE / GBOPS_TLS_KEY_FILE) and restart the platform"),
    "sip_no_tls": (
        "info", "未启用 SIP over TLS", "SIP over TLS is off",
        "设置 GBOPS_SIP_TLS_PORT（默认 5061），支持的设备与上级平台改用 TLS",
        "set GBOPS_SIP_TLS_PORT (default 5061) and move devices and upper platforms that support it to TLS"),
    "sip_no_lockout": (
        "warning", "SIP 认证失败锁定未生效或过松", "SIP authentication lockout is off or too lax",
        f"GBOPS_SIP_LOCKOUT_FAILURES 设为 {SIP_LOCKOUT_MAX_FAILURES} 以内（默认 5），"
        "GBOPS_SIP_LOCKOUT_WINDOW 与 GBOPS_SIP_LOCKOUT_DURATION 大于 0（默认 600 秒）",
        f"set GBOPS_SIP_LOCKOUT_FAILURES to {SIP_LOCKOUT_MAX_FAILURES} or fewer (default 5) and "
        "GBOPS_SIP_LOCKOUT_WINDOW / GBOPS_SIP_LOCKOUT_DURATION above 0 (default 600 s)"),
    "sip_allow_unknown": (
        "warning", "允许未登记的设备注册", "unknown device ids may register",
        "预先登记设备后设置 GBOPS_SIP_ALLOW_UNKNOWN=false",
        "register the devices beforehand, then set GBOPS_SIP_ALLOW_UNKNOWN=false"),
    "audit_not_exported": (
        "warning", "审计检查点未导出到本机以外", "audit checkpoints are not exported off the host",
        "设置 GBOPS_AUDIT_CHECKPOINT_URL，把每个签名检查点发送到另一台主机（见证服务）",
        "set GBOPS_AUDIT_CHECKPOINT_URL so that every signed checkpoint goes to another host (a witness)"),
    "backup_missing": (
        "critical", "没有备份", "no backup",
        "设置 GBOPS_BACKUP_PASSPHRASE_FILE 启用每日备份，或执行 gbops backup",
        "set GBOPS_BACKUP_PASSPHRASE_FILE for daily backups, or run gbops backup"),
    "backup_stale": (
        "warning", f"最近备份超过 {BACKUP_STALE_DAYS} 天", f"the last backup is older than {BACKUP_STALE_DAYS} days",
        "检查每日备份（GBOPS_BACKUP_SCHEDULE、备份目录空间）或立即执行 gbops backup",
        "check the daily backup (GBOPS_BACKUP_SCHEDULE, space in the backup folder) or run gbops backup now"),
    "clock_unsynchronised": (
        "critical", "平台时钟未同步", "the platform clock is not synchronised",
        "检查 GBOPS_NTP_SERVERS 是否可达，或为主机配置时间同步（chrony 或 systemd-timesyncd）",
        "check that GBOPS_NTP_SERVERS answer, or synchronise the host clock (chrony / systemd-timesyncd)"),
    "clock_local_reference": (
        "info", "平台未与外部时间源比对", "the platform clock is not compared with any time source",
        "设置 GBOPS_NTP_SERVERS（如本地授时服务器），或确认主机已由 chrony 或 systemd-timesyncd 同步",
        "set GBOPS_NTP_SERVERS (e.g. the site's time servers), or make sure the host is synchronised by chrony / "
        "systemd-timesyncd"),
    "facts_unknown": (
        "info", "部分检查无法进行", "some checks could not be made",
        "按各项说明补齐（升级数据库、启用相应功能）后重新检查",
        "make the facts available as each item says (migrate the database, enable the feature), then check "
        "again"),
}


@dataclass(frozen=True, slots=True)
class Subject:
    """What a finding is about: ``kind`` user | device | setting | platform | source."""

    kind: str
    id: str
    name: str = ""
    detail: str = ""  # "中文 / English"

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "id": self.id, "name": self.name, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class Finding:
    code: str
    severity: str
    title_zh: str
    title_en: str
    fix_zh: str
    fix_en: str
    subjects: tuple[Subject, ...] = ()
    ref: str | None = None  # an advisory id

    @property
    def title(self) -> str:
        return f"{self.title_zh} / {self.title_en}"

    @property
    def fix(self) -> str:
        return f"{self.fix_zh} / {self.fix_en}"

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "severity": self.severity, "title": self.title, "title_zh": self.title_zh,
                "title_en": self.title_en, "fix": self.fix, "fix_zh": self.fix_zh, "fix_en": self.fix_en,
                "ref": self.ref, "count": len(self.subjects), "subjects": [s.as_dict() for s in self.subjects]}


@dataclass(frozen=True, slots=True)
class UserFacts:
    """One user.  ``last_login_at`` is the latest sign of use (login, token use); ``password_weak`` None:
    not known; ``totp_enabled`` None: not known."""

    username: str
    display_name: str = ""
    disabled: bool = False
    created_at: datetime | None = None
    is_admin: bool = False
    roles: tuple[str, ...] = ()
    password_weak: bool | None = None
    password_changed_at: datetime | None = None
    last_login_at: datetime | None = None
    totp_enabled: bool | None = None


@dataclass(frozen=True, slots=True)
class DeviceFacts:
    device_id: str
    name: str = ""
    manufacturer: str | None = None
    model: str | None = None
    firmware: str | None = None
    ha1: Ha1Result | None = None  # None: the HA1 scan was not made


@dataclass(frozen=True, slots=True)
class SettingsFacts:
    """The settings the check judges (never a secret)."""

    sip_lockout_failures: int = 5
    sip_lockout_window: float = 600.0
    sip_lockout_duration: float = 600.0
    sip_allow_unknown: bool = True
    audit_checkpoint_url_set: bool = False
    password_max_age_days: int = 90
    account_unused_days: int = 90
    http_plain: bool = False
    trusted_proxies_set: bool = False
    sip_password_set: bool = True

    @classmethod
    def from_settings(cls, s: Any) -> SettingsFacts:
        return cls(
            sip_lockout_failures=s.sip_lockout_failures, sip_lockout_window=s.sip_lockout_window,
            sip_lockout_duration=s.sip_lockout_duration, sip_allow_unknown=s.sip_allow_unknown,
            audit_checkpoint_url_set=bool(s.audit_checkpoint_url),
            password_max_age_days=getattr(s, "password_max_age_days", 90),
            account_unused_days=getattr(s, "account_unused_days", 90),
            http_plain=getattr(s, "http_plain", False), trusted_proxies_set=bool(s.trusted_proxies.strip()),
            sip_password_set=s.sip_password is not None)


@dataclass
class CheckFacts:
    """Everything the check judges.  ``None`` for a source means it could not be read; ``unknown`` says why
    (source name -> "中文 / English")."""

    now: datetime
    settings: SettingsFacts
    users: Sequence[UserFacts] | None = None
    user_fields: frozenset[str] = USER_FIELDS
    devices: Sequence[DeviceFacts] | None = None
    advisories: Sequence[Advisory] | None = None
    tls: Mapping[str, Any] | None = None
    backup: Mapping[str, Any] | None = None
    time: Mapping[str, Any] | None = None
    unknown: dict[str, str] = field(default_factory=dict)


@dataclass
class CheckReport:
    generated_at: datetime
    findings: list[Finding]
    checked: dict[str, Any] = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(SEVERITY_ORDER, 0)
        for f in self.findings:
            out[f.severity] += 1
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"generated_at": self.generated_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
                "counts": self.counts, "total": len(self.findings), "checked": self.checked,
                "findings": [f.as_dict() for f in self.findings]}


# ------------------------------------------------------------------------------------------ helpers
def _finding(code: str, subjects: Iterable[Subject], *, severity: str | None = None) -> Finding | None:
    subs = tuple(subjects)
    if not subs:
        return None
    sev, tz, te, fz, fe = CHECKS[code]
    return Finding(code, severity or sev, tz, te, fz, fe, subs)


def _day(value: datetime) -> str:
    """The date as people read it (Beijing time)."""
    return f"{to_device_time(value):%Y-%m-%d}"


def _days(delta: timedelta) -> int:
    return int(delta.total_seconds() // 86400)


def _user(u: UserFacts, detail: str = "") -> Subject:
    return Subject("user", u.username, u.display_name, detail)


def _device(d: DeviceFacts, detail: str = "") -> Subject:
    return Subject("device", d.device_id, d.name, detail)


def _setting(name: str, detail: str) -> Subject:
    return Subject("setting", name, "", detail)


def _iso_utc(text: Any) -> datetime | None:
    if text is None:
        return None
    if isinstance(text, datetime):
        return text if text.tzinfo else text.replace(tzinfo=UTC)
    try:
        value = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# ------------------------------------------------------------------------------------------ checks
def _users(facts: CheckFacts, out: list[Finding | None], unknown: list[Subject]) -> None:
    if facts.users is None:
        unknown.append(Subject("source", "users", "", facts.unknown.get(
            "users", "无法读取用户 / the users could not be read")))
        return
    fields = facts.user_fields
    for name in sorted(USER_FIELDS - fields):
        unknown.append(Subject("source", f"users.{name}", "", "数据库缺少此列（未升级？）：相关检查未做 / the "
                               "database lacks this column (not migrated?): the checks using it were skipped"))
    users = [u for u in facts.users if not u.disabled]
    now, s = facts.now, facts.settings
    weak, unsure = [], []
    for u in users:
        if u.password_weak:
            weak.append(_user(u, "口令属于弱口令 / the password is weak"))
        elif u.password_weak is None:
            unsure.append(_user(u, "尚未在登录时判定 / not judged at a login yet"))
    out.append(_finding("user_weak_password", weak))
    out.append(_finding("user_password_unknown", unsure))

    if "last_login_at" in fields:
        never, unused = [], []
        limit = timedelta(days=s.account_unused_days)
        for u in users:
            if u.last_login_at is None:
                day = _day(u.created_at) if u.created_at else None
                never.append(_user(u, f"从未登录，创建于 {day} / never logged in, created {day}" if day
                                   else "从未登录 / never logged in"))
            elif now - u.last_login_at > limit:
                n = _days(now - u.last_login_at)
                unused.append(_user(u, f"{n} 天未使用 / unused for {n} days"))
        out.append(_finding("account_never_used", never))
        out.append(_finding("account_unused", unused))

    if "password_changed_at" in fields and s.password_max_age_days > 0:
        old = []
        for u in users:
            since = u.password_changed_at or u.created_at
            if since is not None and now - since > timedelta(days=s.password_max_age_days):
                n = _days(now - since)
                old.append(_user(u, f"密码已 {n} 天未修改（上限 {s.password_max_age_days} 天） / password {n} days "
                                    f"old (limit {s.password_max_age_days})"))
        out.append(_finding("password_old", old))

    if "totp_enabled_at" in fields:
        out.append(_finding("admin_no_second_factor", [
            _user(u, f"角色：{', '.join(u.roles) or '—'} / roles: {', '.join(u.roles) or '—'}") for u in users
            if u.is_admin and u.totp_enabled is False]))

    out.append(_finding("default_account", [
        _user(u, "内置默认账户名 / built-in default account name") for u in users if u.username == "admin"]))


def _devices(facts: CheckFacts, out: list[Finding | None], unknown: list[Subject]) -> None:
    if facts.devices is None:
        unknown.append(Subject("source", "devices", "", facts.unknown.get(
            "devices", "无法读取设备 / the devices could not be read")))
        return
    weak, shared = [], []
    for d in facts.devices:
        r = d.ha1
        if r is None:
            continue
        if r.weak:
            zh, en = REASONS[r.weak]
            weak.append(_device(d, f"{zh} / {en}"))
        if r.shared_default:
            shared.append(_device(d, "设备自有密码与共享默认密码相同 / its own password is the shared default"))
        elif r.realm_mismatch:
            shared.append(_device(d, "自有密码属于另一个域（realm），实际使用共享默认密码 / its own password is for "
                                     "another realm: it uses the shared default"))
        elif not r.own_password:
            shared.append(_device(d, "未设置自有密码，使用共享默认密码 GBOPS_SIP_PASSWORD / no password of its own: "
                                     "it uses the shared default GBOPS_SIP_PASSWORD"))
    out.append(_finding("device_weak_password", weak))
    out.append(_finding("device_shared_password", shared))

    if facts.advisories is None:
        unknown.append(Subject("source", "device_advisories", "", facts.unknown.get(
            "device_advisories", "漏洞列表无法读取 / the advisory list could not be read")))
        return
    by_adv: dict[str, tuple[Advisory, list[Subject]]] = {}
    for d in facts.devices:
        for adv in match_advisories(facts.advisories, d.manufacturer, d.model, d.firmware):
            by_adv.setdefault(adv.id, (adv, []))[1].append(
                _device(d, f"{d.manufacturer or ''} {d.model or ''}，固件 {d.firmware or '—'} / "
                           f"{d.manufacturer or ''} {d.model or ''}, firmware {d.firmware or '—'}"))
    for adv_id, (adv, subjects) in sorted(by_adv.items()):
        _, tz, te, fz, fe = CHECKS["device_advisory"]
        words_zh = adv.words_zh or tz
        words_en = adv.words_en or te
        tag = "（示例条目）" if adv.example else ""
        out.append(Finding("device_advisory", adv.severity, f"{tz}：{adv_id}{tag} {words_zh}".strip(),
                           f"{te}: {adv_id}{' (example entry)' if adv.example else ''} {words_en}".strip(),
                           adv.fix_zh or fz, adv.fix_en or fe, tuple(subjects), ref=adv_id))


def _transport(facts: CheckFacts, out: list[Finding | None], unknown: list[Subject]) -> None:
    s, tls = facts.settings, facts.tls
    if tls is None:
        if s.http_plain:
            out.append(_finding("http_plain", [_setting("GBOPS_HTTP_PLAIN", "true：门户为明文 HTTP / the portal is plain HTTP")], severity="warning"))
        unknown.append(Subject("source", "tls", "", facts.unknown.get(
            "tls", "TLS 状态不可用 / the TLS status is not available")))
        return
    if not tls.get("https"):
        reason = tls.get("plain_reason")
        message = tls.get("plain_message") or "明文 HTTP / plain HTTP"
        if reason == "loopback":
            sev = "info"
        elif reason == "reverse_proxy":
            sev = "info" if s.trusted_proxies_set else "warning"
            if not s.trusted_proxies_set:
                zh, _, en = message.partition(" / ")
                message = f"{zh}；GBOPS_TRUSTED_PROXIES 未设置 / {en or zh}; GBOPS_TRUSTED_PROXIES is not set"
        else:
            sev = "critical"
        out.append(_finding("http_plain", [_setting("GBOPS_HTTP_PLAIN" if reason == "reverse_proxy"
                                                    else "GBOPS_HTTP_HOST", message)], severity=sev))
    problems, broken = [], bool(tls.get("error"))
    if broken:
        problems.append(_setting("GBOPS_TLS_CERT_FILE", str(tls["error"])))
    not_after = _iso_utc(tls.get("not_after"))
    if not_after is not None and not_after - facts.now < timedelta(days=30):
        day = _day(not_after)
        if not_after <= facts.now:
            broken = True
            problems.append(_setting("GBOPS_TLS_CERT_FILE", f"证书已过期（{day}） / the certificate expired ({day})"))
        else:
            n = _days(not_after - facts.now)
            problems.append(_setting("GBOPS_TLS_CERT_FILE", f"证书 {n} 天后过期（{day}） / the certificate expires "
                                     f"in {n} days ({day})"))
    out.append(_finding("tls_problem", problems, severity="critical" if broken else "warning"))
    if "sip_tls" in tls and not tls["sip_tls"]:
        out.append(_finding("sip_no_tls", [_setting("GBOPS_SIP_TLS_PORT", "0：未监听 sips / no sips listener")]))


def _sip(facts: CheckFacts, out: list[Finding | None]) -> None:
    s = facts.settings
    subjects = []
    if s.sip_lockout_window <= 0:
        subjects.append(_setting("GBOPS_SIP_LOCKOUT_WINDOW", f"{s.sip_lockout_window:g}：锁定不会发生 / no lockout "
                                 "ever happens"))
    if s.sip_lockout_duration <= 0:
        subjects.append(_setting("GBOPS_SIP_LOCKOUT_DURATION", f"{s.sip_lockout_duration:g}：锁定立即解除 / a "
                                 "lockout ends at once"))
    if s.sip_lockout_failures > SIP_LOCKOUT_MAX_FAILURES:
        subjects.append(_setting("GBOPS_SIP_LOCKOUT_FAILURES", f"{s.sip_lockout_failures}：超过 "
                                 f"{SIP_LOCKOUT_MAX_FAILURES} 次才锁定 / more than {SIP_LOCKOUT_MAX_FAILURES} "
                                 "failures before a lockout"))
    out.append(_finding("sip_no_lockout", subjects))
    if s.sip_allow_unknown:
        out.append(_finding("sip_allow_unknown", [_setting("GBOPS_SIP_ALLOW_UNKNOWN", "true：任何设备编号都可注册 / any device id "
                                                                  "may register")]))
    if not s.audit_checkpoint_url_set:
        out.append(_finding("audit_not_exported", [_setting("GBOPS_AUDIT_CHECKPOINT_URL", "未设置 / not set")]))


def _backup(facts: CheckFacts, out: list[Finding | None], unknown: list[Subject]) -> None:
    b = facts.backup
    if b is None:
        unknown.append(Subject("source", "backup", "", facts.unknown.get(
            "backup", "备份状态不可用 / the backup status is not available")))
        return
    last = _iso_utc(b.get("last_at"))
    sched = "已启用每日备份 / daily backups on" if b.get("scheduled") else "未启用每日备份 / no daily backups"
    if last is None or not b.get("count"):
        out.append(_finding("backup_missing", [Subject("platform", "backup", "", sched)]))
    elif facts.now - last > timedelta(days=BACKUP_STALE_DAYS):
        n = _days(facts.now - last)
        out.append(_finding("backup_stale", [Subject("platform", "backup", str(b.get("last_file") or ""),
                                                     f"最近备份在 {n} 天前；{sched.split(' / ')[0]} / last backup "
                                                     f"{n} days ago; {sched.split(' / ')[1]}")]))


def _clock(facts: CheckFacts, out: list[Finding | None], unknown: list[Subject]) -> None:
    t = facts.time
    if t is None:
        unknown.append(Subject("source", "time", "", facts.unknown.get(
            "time", "时钟状态不可用 / the clock status is not available")))
        return
    state = t.get("synchronised")
    if state is None:
        unknown.append(Subject("source", "time", "", "平台时钟尚未与 NTP 服务器比对 / the platform clock has not been "
                                                    "compared with the NTP servers yet"))
    elif not state:
        offset = t.get("offset_s")
        servers = t.get("servers") or []
        names = ", ".join(str(x.get("server") or x.get("host") or "") if isinstance(x, Mapping) else str(x)
                          for x in servers) or "—"
        detail = (f"偏差 {offset:+.3f} 秒 / offset {offset:+.3f} s" if isinstance(offset, int | float)
                  else "无服务器应答 / no server answered")
        out.append(_finding("clock_unsynchronised", [Subject("platform", "clock", names, detail)]))
    elif t.get("reference") == "local":
        out.append(_finding("clock_local_reference", [_setting("GBOPS_NTP_SERVERS", "未设置：主机时钟即基准 / not "
                                                                                    "set: the host clock is the reference")]))


def run_check(facts: CheckFacts) -> CheckReport:
    """Every finding the facts show, most severe first (then by code)."""
    out: list[Finding | None] = []
    unknown: list[Subject] = []
    _users(facts, out, unknown)
    _devices(facts, out, unknown)
    _transport(facts, out, unknown)
    _sip(facts, out)
    _backup(facts, out, unknown)
    _clock(facts, out, unknown)
    out.append(_finding("facts_unknown", unknown))
    findings = sorted((f for f in out if f is not None),
                      key=lambda f: (SEVERITY_ORDER.index(f.severity), f.code, f.ref or ""))
    checked = {
        "users": None if facts.users is None else len(facts.users),
        "devices": None if facts.devices is None else len(facts.devices),
        "advisories": None if facts.advisories is None else len(facts.advisories),
    }
    return CheckReport(facts.now, findings, checked)
