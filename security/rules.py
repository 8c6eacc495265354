"""Alert rules over the security event stream (sans-IO: events and ``now`` in, alerts out).

A :class:`Rule` watches some event kinds, groups them by a key (the source address, the user or the device)
and fires when, within its sliding window of ``window_s`` seconds, a key has ``threshold`` events - or, for a
rule with ``distinct`` (scanning), ``threshold`` distinct values of one field (the device id, the path).

An alert is raised **once per rule window per key**: after it fires, the same rule and key raise nothing for
``window_s`` seconds; the events of that time are counted into the alert that is open
(:meth:`RuleEngine.take_updates`).  Once that time is over, the next event that meets the threshold again
raises a new alert.

:class:`RuleEngine` keeps only in-memory state, bounded per rule (``max_keys``), and never reads a clock:
``now`` (seconds, any epoch that only grows) comes with every call.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .events import EVENT_KINDS, SEVERITIES

__all__ = ["DEFAULT_RULES", "Alert", "Rule", "RuleEngine", "parse_threshold", "rules_from_settings"]

KEY_FIELDS = ("source_ip", "user", "device_id", "none")


@dataclass(frozen=True, slots=True)
class Rule:
    """One alert rule (see the module docstring).  ``key``: ``source_ip``, ``user``, ``device_id`` or ``none``
    (one key for everything); ``distinct``: the event field (``device_id``, ``user``, ``source_ip``) or detail
    field whose distinct values are counted instead of the events; ``autoblock``: an alert of this rule may
    block its source address (when the platform's autoblock is on and the key is an address)."""

    name: str
    zh: str
    en: str
    kinds: frozenset[str]
    key: str
    threshold: int
    window_s: float
    severity: str = "warning"
    autoblock: bool = False
    distinct: str | None = None

    def __post_init__(self) -> None:
        unknown = set(self.kinds) - set(EVENT_KINDS)
        if unknown:
            raise ValueError(f"rule {self.name}: unknown event kinds {sorted(unknown)}")
        if self.key not in KEY_FIELDS:
            raise ValueError(f"rule {self.name}: key must be one of {KEY_FIELDS}")
        if self.threshold < 1 or self.window_s <= 0:
            raise ValueError(f"rule {self.name}: threshold >= 1 and window_s > 0")
        if self.severity not in SEVERITIES:
            raise ValueError(f"rule {self.name}: severity must be one of {SEVERITIES}")

    def describe(self) -> tuple[str, str]:
        """What the rule means, in words (Chinese, English)."""
        minutes = self.window_s / 60
        span_zh = f"{minutes:g} 分钟" if self.window_s >= 60 else f"{self.window_s:g} 秒"
        span_en = f"{minutes:g} min" if self.window_s >= 60 else f"{self.window_s:g} s"
        return (f"{self.zh}：{span_zh}内达到 {self.threshold} 次", f"{self.en}: {self.threshold} within {span_en}")


@dataclass(slots=True)
class Alert:
    """An alert a rule raised for one key.  ``count``: events counted into it (those that met the threshold,
    then the later ones of its window); ``source_ip``: the address to block when the rule allows it."""

    rule: Rule
    key: str
    first_at: float
    last_at: float
    count: int
    values: int
    source_ip: str | None
    until: float
    sample: dict[str, Any] = field(default_factory=dict)
    ident: Any = None  # the monitor's stored id, once stored

    @property
    def severity(self) -> str:
        return self.rule.severity


def _field(event: Mapping[str, Any], name: str) -> Any:
    if name in ("source_ip", "user", "device_id", "kind"):
        return event.get(name)
    detail = event.get("detail") or {}
    return detail.get(name) if isinstance(detail, Mapping) else None


@dataclass(slots=True)
class _KeyState:
    times: deque[tuple[float, Any]] = field(default_factory=deque)
    alert: Alert | None = None


class RuleEngine:
    """Feeds events through every rule.  ``feed(event, now)`` returns the alerts it raised (new ones only);
    :meth:`take_updates` returns the open alerts that counted more events since the last call."""

    def __init__(self, rules: Iterable[Rule] = (), *, max_keys: int = 10_000, max_events_per_key: int = 10_000):
        self.rules = list(rules)
        names = [r.name for r in self.rules]
        if len(names) != len(set(names)):
            raise ValueError("rule names must be unique")
        self.max_keys = max_keys
        self.max_events_per_key = max_events_per_key
        self._state: dict[str, OrderedDict[str, _KeyState]] = {r.name: OrderedDict() for r in self.rules}
        self._by_kind: dict[str, list[Rule]] = {}
        for rule in self.rules:
            for kind in rule.kinds:
                self._by_kind.setdefault(kind, []).append(rule)
        self._updated: dict[int, Alert] = {}

    def rule(self, name: str) -> Rule | None:
        return next((r for r in self.rules if r.name == name), None)

    def feed(self, event: Mapping[str, Any], now: float) -> list[Alert]:
        """``event``: a mapping with ``kind`` and optionally ``source_ip``, ``user``, ``device_id``, ``detail``."""
        raised: list[Alert] = []
        for rule in self._by_kind.get(event.get("kind", ""), ()):
            alert = self._feed_rule(rule, event, now)
            if alert is not None:
                raised.append(alert)
        return raised

    def _feed_rule(self, rule: Rule, event: Mapping[str, Any], now: float) -> Alert | None:
        key = "*" if rule.key == "none" else _field(event, rule.key)
        if key is None or key == "":
            return None
        key = str(key)
        value: Any = None
        if rule.distinct is not None:
            value = _field(event, rule.distinct)
            if value is None or value == "":
                return None
            value = str(value)[:256]
        states = self._state[rule.name]
        state = states.get(key)
        if state is None:
            state = states[key] = _KeyState()
            if len(states) > self.max_keys:
                states.popitem(last=False)  # forget the least recently seen key
        else:
            states.move_to_end(key)
        times = state.times
        horizon = now - rule.window_s
        while times and times[0][0] <= horizon:
            times.popleft()
        times.append((now, value))
        if len(times) > self.max_events_per_key:
            times.popleft()
        alert = state.alert
        if alert is not None and now < alert.until:  # the window of the open alert: count into it
            alert.count += 1
            alert.last_at = now
            if rule.distinct is not None:
                alert.values = max(alert.values, len({v for _, v in times}))
            self._updated[id(alert)] = alert
            return None
        state.alert = None
        measure = len({v for _, v in times}) if rule.distinct is not None else len(times)
        if measure < rule.threshold:
            return None
        sample = {k: event.get(k) for k in ("kind", "source_ip", "user", "device_id") if event.get(k)}
        alert = Alert(rule=rule, key=key, first_at=times[0][0], last_at=now, count=len(times), values=measure,
                      source_ip=event.get("source_ip") if rule.key == "source_ip" else None,
                      until=now + rule.window_s, sample=sample)
        state.alert = alert
        return alert

    def take_updates(self) -> list[Alert]:
        """Open alerts that counted events since the last call (their ``count`` and ``last_at`` changed)."""
        out = list(self._updated.values())
        self._updated.clear()
        return out

    def expire(self, now: float) -> None:
        """Forget keys with no event in their rule's window and no open alert (bounded memory over time)."""
        for rule in self.rules:
            states = self._state[rule.name]
            for key in [k for k, s in states.items()
                        if (not s.times or s.times[-1][0] <= now - rule.window_s)
                        and (s.alert is None or s.alert.until <= now)]:
                del states[key]

    def keys(self, rule_name: str) -> int:
        return len(self._state.get(rule_name, ()))


def parse_threshold(text: str) -> tuple[int, float]:
    """``"10/300"`` -> (10, 300.0): a count and a window in seconds."""
    count, sep, seconds = text.strip().partition("/")
    if not sep:
        raise ValueError(f"threshold {text!r}: expected COUNT/SECONDS")
    n, window = int(count), float(seconds)
    if n < 1 or window <= 0:
        raise ValueError(f"threshold {text!r}: COUNT >= 1 and SECONDS > 0")
    return n, window


def _r(name: str, zh: str, en: str, kinds: Iterable[str], key: str, threshold: str, severity: str,
       autoblock: bool = False, distinct: str | None = None) -> Rule:
    n, window = parse_threshold(threshold)
    return Rule(name, zh, en, frozenset(kinds), key, n, window, severity, autoblock, distinct)


def _rules(t: Mapping[str, str]) -> list[Rule]:
    return [
        _r("login_bruteforce", "同一地址多次登录失败", "many failed logins from one address", ["login_failed"],
           "source_ip", t["login_failures"], "critical", autoblock=True),
        _r("login_locked", "账户被锁定", "account locked out", ["login_locked"], "user", "1/300", "critical"),
        _r("totp_guessing", "动态口令多次错误", "many wrong second-factor codes", ["totp_failed"], "user", "5/300",
           "critical"),
        _r("outside_validity", "账户有效期外访问", "access outside the account's validity window",
           ["outside_validity"], "user", "1/3600", "warning"),
        _r("access_probing", "同一用户多次越权访问", "many refused requests by one user", ["access_denied"], "user",
           t["denials"], "critical"),
        _r("token_forgery", "同一地址多次使用伪造令牌", "forged or unknown tokens from one address", ["token_forged"],
           "source_ip", t["forged_tokens"], "critical", autoblock=True),
        _r("token_replay", "反复使用已注销的令牌", "revoked tokens used again and again", ["token_revoked"],
           "source_ip", "5/300", "warning"),
        _r("admin_network", "管理操作来自未允许的网络", "management from a network not allowed", ["admin_network"],
           "source_ip", "1/300", "critical"),
        _r("route_scan", "同一地址扫描接口", "one address probing many paths", ["access_denied", "route_unknown"],
           "source_ip", t["route_scan"], "critical", autoblock=True, distinct="path"),
        _r("scan", "扫描行为", "scanning", ["scan"], "source_ip", "1/300", "critical", autoblock=True),
        _r("bulk_download", "同一用户大量下载", "many downloads by one user", ["download", "bulk_download"], "user",
           t["bulk_downloads"], "warning"),
        _r("off_hours", "非工作时间回放或下载", "playback or download outside working hours", ["off_hours_access"],
           "user", "1/3600", "warning"),
        _r("sip_bruteforce", "同一地址多次设备认证失败", "many failed device authentications from one address",
           ["sip_auth_failed"], "source_ip", t["sip_failures"], "critical", autoblock=True),
        _r("sip_locked", "设备认证锁定", "device id or address locked out", ["sip_locked"], "source_ip", "1/300",
           "critical"),
        _r("sip_id_scan", "同一地址尝试大量未登记设备编码", "one address trying many unknown device ids",
           ["sip_unknown_device"], "source_ip", t["sip_unknown_ids"], "critical", autoblock=True,
           distinct="device_id"),
        _r("sip_impersonation", "冒充设备的请求", "requests not from the device they claim to be",
           ["sip_address_mismatch"], "source_ip", "3/300", "critical"),
        _r("device_address_flapping", "设备地址频繁变化", "a device re-registering from new addresses again and again",
           ["device_new_address"], "device_id", "3/3600", "warning"),
        _r("clock_skew", "设备时钟偏差超限", "device clock beyond the limit", ["clock_skew"], "device_id", "1/3600",
           "warning"),
        _r("ntp_unsynced", "平台时钟未同步", "platform clock not synchronised", ["ntp_unsynced"], "none", "1/3600",
           "critical"),
    ]


_DEFAULT_THRESHOLDS = {"login_failures": "10/300", "sip_failures": "10/300", "sip_unknown_ids": "20/600",
                       "denials": "20/300", "forged_tokens": "5/300", "route_scan": "30/60",
                       "bulk_downloads": "20/3600"}

#: The rules with the default thresholds.
DEFAULT_RULES: tuple[Rule, ...] = tuple(_rules(_DEFAULT_THRESHOLDS))


def rules_from_settings(settings: Any) -> list[Rule]:
    """The rules with the thresholds of ``GBOPS_SECURITY_*`` (see gbcore.settings)."""
    t = {name: str(getattr(settings, f"security_{name}", default)) for name, default in _DEFAULT_THRESHOLDS.items()}
    return _rules(t)


def in_work_hours(spec: str, hour: int, minute: int) -> bool:
    """Whether ``hour:minute`` (Beijing time) is within ``spec`` (``"07:00-20:00"``; a span over midnight such
    as ``"20:00-06:00"`` works; empty: always)."""
    if not spec.strip():
        return True
    start, _, end = spec.strip().partition("-")
    h0, m0 = (int(x) for x in start.split(":"))
    h1, m1 = (int(x) for x in end.split(":"))
    t, a, b = hour * 60 + minute, h0 * 60 + m0, h1 * 60 + m1
    return a <= t < b if a <= b else (t >= a or t < b)
