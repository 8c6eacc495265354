"""The security event stream's vocabulary and the port its producers call.

Producers (the portal's login and access checks, the SIP service through the assembly, the clock checks)
hold a :class:`SecuritySink` and call :meth:`SecuritySink.emit`; it never blocks and never raises.  The
monitor (:mod:`security.monitor`) stores every event, applies the rules and raises alerts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

__all__ = ["EVENT_KINDS", "SEVERITIES", "ListSink", "NullSink", "SecurityEvent", "SecuritySink", "kind_words",
           "severity_rank"]

#: Severity of an event or alert, lowest first.
SEVERITIES = ("info", "warning", "critical")

#: Every event kind, with its Chinese and English words and its default severity.
EVENT_KINDS: dict[str, tuple[str, str, str]] = {
    # people
    "login_failed": ("登录失败", "failed login", "warning"),
    "login_locked": ("登录锁定", "login locked out", "critical"),
    "totp_failed": ("动态口令错误", "wrong second-factor code", "warning"),
    "outside_validity": ("账户有效期外访问", "access outside the account's validity window", "warning"),
    "access_denied": ("越权访问被拒绝", "request refused for permission or scope", "warning"),
    "token_revoked": ("使用已注销的令牌", "revoked token used", "warning"),
    "token_expired": ("使用已过期的令牌", "expired token used", "info"),
    "token_forged": ("伪造或无效的令牌", "forged or unknown token", "warning"),
    "admin_network": ("管理操作来自未允许的网络", "management from a network not allowed", "critical"),
    "scan": ("扫描行为", "scanning (many ids or routes from one address)", "critical"),
    "bulk_download": ("批量下载", "many downloads by one user", "warning"),
    "off_hours_access": ("非工作时间回放或下载", "playback or download outside working hours", "info"),
    "config_change": ("配置变更", "configuration changed", "info"),
    "blocked_request": ("被封禁地址的请求", "request from a blocked address", "info"),
    "route_unknown": ("访问不存在的接口", "request for a route that does not exist", "info"),
    "download": ("视频下载请求", "video download requested", "info"),
    # devices
    "sip_auth_failed": ("设备认证失败", "device digest authentication failed", "warning"),
    "sip_locked": ("设备认证锁定", "device id or address locked out", "critical"),
    "sip_unknown_device": ("未登记的设备注册", "unknown device id registering", "warning"),
    "sip_address_mismatch": ("冒充设备的请求", "request not from the device it claims to be", "critical"),
    "device_new_address": ("设备从新地址注册", "device re-registered from a new address", "info"),
    # time
    "clock_skew": ("设备时钟偏差超限", "device clock beyond the limit", "warning"),
    "ntp_unsynced": ("平台时钟未同步", "platform clock not synchronised", "critical"),
}


SEVERITY_WORDS: dict[str, tuple[str, str]] = {"info": ("提示", "info"), "warning": ("警告", "warning"),
                                              "critical": ("严重", "critical")}


def kind_words(kind: str) -> tuple[str, str]:
    """(Chinese, English) words of an event kind (the kind itself when unknown)."""
    words = EVENT_KINDS.get(kind)
    return (words[0], words[1]) if words else (kind, kind)


def severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else 0


@dataclass(frozen=True, slots=True)
class SecurityEvent:
    """One security-relevant fact.  ``at`` is UTC; ``user`` a user name, ``device_id`` a device's GB id."""

    kind: str
    at: datetime
    severity: str = "warning"
    source_ip: str | None = None
    user: str | None = None
    device_id: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


class SecuritySink(Protocol):
    """Where producers send security events.  ``emit`` returns at once (the sink queues); unknown kinds are a
    programming error (``ValueError``).  ``severity`` defaults to the kind's."""

    def emit(self, kind: str, *, source_ip: str | None = None, user: str | None = None,
             device_id: str | None = None, severity: str | None = None,
             detail: dict[str, Any] | None = None) -> None: ...

    def is_blocked(self, address: str) -> bool: ...


class NullSink:
    """No monitor: events are dropped, nothing is blocked."""

    def emit(self, kind: str, **kw: Any) -> None:
        if kind not in EVENT_KINDS:
            raise ValueError(f"unknown security event kind {kind!r}")

    def is_blocked(self, address: str) -> bool:
        return False


class ListSink:
    """A sink that keeps what it was sent (tests; the same signature as the monitor's)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.blocked: set[str] = set()

    def emit(self, kind: str, **kw: Any) -> None:
        if kind not in EVENT_KINDS:
            raise ValueError(f"unknown security event kind {kind!r}")
        self.events.append({"kind": kind, **kw})

    def kinds(self) -> list[str]:
        return [e["kind"] for e in self.events]

    def is_blocked(self, address: str) -> bool:
        return address in self.blocked
