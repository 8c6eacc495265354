"""The rule engine (sans-IO): thresholds, windows, distinct counting, one alert per rule window per key, and a
reference model checked with hypothesis."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gbcore.settings import Settings
from security.rules import (
    DEFAULT_RULES,
    Rule,
    RuleEngine,
    in_work_hours,
    parse_threshold,
    rules_from_settings,
)


def ev(kind: str, **kw):
    return {"kind": kind, **kw}


def test_failed_logins_from_one_address_alert_once_per_window() -> None:
    engine = RuleEngine(DEFAULT_RULES)
    raised = []
    for i in range(10):  # ten failures in 20 s from one address
        raised += engine.feed(ev("login_failed", source_ip="10.0.0.9", user=f"u{i % 3}"), 1000.0 + 2 * i)
    assert [a.rule.name for a in raised] == ["login_bruteforce"]
    alert = raised[0]
    assert alert.key == "10.0.0.9" and alert.source_ip == "10.0.0.9" and alert.count == 10
    assert alert.first_at == 1000.0 and alert.last_at == 1018.0 and alert.rule.autoblock
    assert engine.take_updates() == []
    for i in range(10, 25):  # fifteen more within its window: counted into it, no new alert
        assert engine.feed(ev("login_failed", source_ip="10.0.0.9"), 1000.0 + 2 * i) == []
    updates = engine.take_updates()
    assert updates == [alert] and alert.count == 25 and alert.last_at == 1048.0
    assert engine.take_updates() == []
    # another address is its own key
    other = [a for i in range(10) for a in engine.feed(ev("login_failed", source_ip="10.0.0.10"), 1100.0 + i)]
    assert [a.key for a in other] == ["10.0.0.10"]
    # once the window of the first alert is over, ten new failures raise a new alert
    later = [a for i in range(10) for a in engine.feed(ev("login_failed", source_ip="10.0.0.9"), 1400.0 + i)]
    assert [a.rule.name for a in later] == ["login_bruteforce"]


def test_below_threshold_or_spread_out_raises_nothing() -> None:
    engine = RuleEngine(DEFAULT_RULES)
    for i in range(30):  # one failure every 40 s: never 10 within 300 s
        assert engine.feed(ev("login_failed", source_ip="10.0.0.1"), 40.0 * i) == []


def test_unknown_device_ids_count_distinct_ids() -> None:
    engine = RuleEngine(DEFAULT_RULES)
    out = [a for _ in range(50) for a in engine.feed(ev("sip_unknown_device", source_ip="1.2.3.4",
                                                        device_id="34020000001320000099"), 10.0)]
    assert out == []  # the same id fifty times is not a scan
    out = [(a.rule.name, a.values, i) for i in range(50) for a in engine.feed(
        ev("sip_unknown_device", source_ip="1.2.3.4", device_id=f"340200000013200{i:05d}"), 20.0 + i)]
    assert out == [("sip_id_scan", 20, 18)]  # the repeated id and 19 new ones


def test_route_scan_counts_distinct_paths_of_refusals_and_unknown_routes() -> None:
    engine = RuleEngine(DEFAULT_RULES)
    out = []
    for i in range(40):
        kind = "route_unknown" if i % 2 else "access_denied"
        for _ in range(2):  # the same path twice counts once
            out += [(a.rule.name, a.values, i) for a in engine.feed(
                ev(kind, source_ip="5.6.7.8", user=None, detail={"path": f"/api/x/{i}"}), 100.0 + i)]
    assert out == [("route_scan", 30, 29)]


def test_access_denied_per_user_and_events_without_key_are_ignored() -> None:
    engine = RuleEngine(DEFAULT_RULES)
    out = [a for i in range(20) for a in engine.feed(ev("access_denied", user="tenant", source_ip="1.1.1.1",
                                                        detail={"path": "/api/a"}), float(i))]
    assert [a.rule.name for a in out] == ["access_probing"]
    assert [a for i in range(50) for a in engine.feed(ev("access_denied", detail={}), float(i))] == []


def test_immediate_rules_alert_at_the_first_event() -> None:
    engine = RuleEngine(DEFAULT_RULES)
    assert [a.rule.name for a in engine.feed(ev("login_locked", user="bob"), 1.0)] == ["login_locked"]
    assert engine.feed(ev("login_locked", user="bob"), 2.0) == []
    assert [a.rule.name for a in engine.feed(ev("clock_skew", device_id="d1"), 1.0)] == ["clock_skew"]
    assert [a.rule.name for a in engine.feed(ev("ntp_unsynced"), 1.0)] == ["ntp_unsynced"]
    assert engine.feed(ev("ntp_unsynced"), 100.0) == []
    assert [a.rule.name for a in engine.feed(ev("ntp_unsynced"), 3601.0)] == ["ntp_unsynced"]


def test_thresholds_come_from_settings() -> None:
    s = Settings(security_login_failures="3/60", security_sip_unknown_ids="5/30", _env_file=None)
    rules = {r.name: r for r in rules_from_settings(s)}
    assert (rules["login_bruteforce"].threshold, rules["login_bruteforce"].window_s) == (3, 60.0)
    assert (rules["sip_id_scan"].threshold, rules["sip_id_scan"].window_s) == (5, 30.0)
    assert parse_threshold("10/300") == (10, 300.0)
    for bad in ("10", "0/5", "5/0", "x/1"):
        with pytest.raises(ValueError):
            parse_threshold(bad)
    with pytest.raises(ValueError):
        Rule("r", "r", "r", frozenset({"no_such_kind"}), "source_ip", 1, 1.0)


def test_work_hours() -> None:
    assert in_work_hours("07:00-20:00", 7, 0) and in_work_hours("07:00-20:00", 19, 59)
    assert not in_work_hours("07:00-20:00", 20, 0) and not in_work_hours("07:00-20:00", 3, 0)
    assert in_work_hours("20:00-06:00", 23, 0) and in_work_hours("20:00-06:00", 5, 0)
    assert not in_work_hours("20:00-06:00", 12, 0)
    assert in_work_hours("", 3, 0)


def test_memory_is_bounded() -> None:
    engine = RuleEngine(DEFAULT_RULES, max_keys=100)
    for i in range(1000):
        engine.feed(ev("login_failed", source_ip=f"10.0.{i // 256}.{i % 256}"), float(i))
    assert engine.keys("login_bruteforce") == 100
    engine.expire(10_000.0)
    assert engine.keys("login_bruteforce") == 0


# ------------------------------------------------------------------------------------------ reference model
def reference(rule: Rule, events: list[tuple[float, str, str]]) -> list[tuple[str, float]]:
    """Brute force: for each event, the events of its key within the window; an alert when the measure meets
    the threshold and no alert of that key is younger than the window."""
    seen: dict[str, list[tuple[float, str]]] = {}
    open_until: dict[str, float] = {}
    out = []
    for now, key, value in events:
        seen.setdefault(key, []).append((now, value))
        if now < open_until.get(key, float("-inf")):
            continue
        inside = [(t, v) for t, v in seen[key] if t > now - rule.window_s]
        measure = len({v for _, v in inside}) if rule.distinct else len(inside)
        if measure >= rule.threshold:
            out.append((key, now))
            open_until[key] = now + rule.window_s
    return out


@settings(max_examples=300, deadline=None)
@given(
    threshold=st.integers(1, 6),
    window=st.sampled_from([1.0, 5.0, 30.0]),
    distinct=st.booleans(),
    steps=st.lists(st.tuples(st.floats(0, 3, allow_nan=False), st.sampled_from("abc"), st.sampled_from("xyzw")),
                   max_size=120),
)
def test_engine_matches_the_reference_model(threshold: int, window: float, distinct: bool,
                                            steps: list[tuple[float, str, str]]) -> None:
    rule = Rule("r", "规则", "rule", frozenset({"scan"}), "source_ip", threshold, window, "warning",
                distinct="device_id" if distinct else None)
    engine = RuleEngine([rule])
    now = 0.0
    events = []
    got = []
    for gap, key, value in steps:
        now += gap
        events.append((now, key, value))
        for alert in engine.feed(ev("scan", source_ip=key, device_id=value), now):
            got.append((alert.key, now))
    assert got == reference(rule, events)
    # never two alerts of one key within a window
    last: dict[str, float] = {}
    for key, t in got:
        assert key not in last or t - last[key] >= window
        last[key] = t
