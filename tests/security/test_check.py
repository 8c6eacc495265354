"""The security check's findings from facts (sans-IO): each one provoked, then cleared by the fix."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from security.advisories import AdvisoryError, parse_advisories, parse_version
from security.check import (
    CHECKS,
    SEVERITY_ORDER,
    USER_FIELDS,
    CheckFacts,
    DeviceFacts,
    SettingsFacts,
    UserFacts,
    run_check,
)
from security.weak_ha1 import Ha1Result

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
DEV = "34020000001320000001"

ADVISORIES = parse_advisories("""
[[advisory]]
id = "LOCAL-TEST-1"
vendor = "Acme"
model = "IPC-2*"
firmware_max = "5.4.0"
severity = "critical"
words_zh = "测试条目"
words_en = "test entry"
example = true
""")


def clean() -> CheckFacts:
    """Facts of a platform with nothing to report."""
    return CheckFacts(
        now=NOW,
        settings=SettingsFacts(sip_lockout_failures=5, sip_lockout_window=600, sip_lockout_duration=600,
                               sip_allow_unknown=False, audit_checkpoint_url_set=True, password_max_age_days=90,
                               account_unused_days=90),
        users=[UserFacts("zhang.san", "张三", created_at=NOW - timedelta(days=400), is_admin=True,
                         roles=("系统管理员",), password_weak=False, password_changed_at=NOW - timedelta(days=10),
                         last_login_at=NOW - timedelta(days=1), totp_enabled=True),
               UserFacts("li.si", "李四", created_at=NOW - timedelta(days=30), password_weak=False,
                         password_changed_at=NOW - timedelta(days=30), last_login_at=NOW - timedelta(hours=2),
                         totp_enabled=False)],
        devices=[DeviceFacts(DEV, "东门", "Acme", "IPC-2100", "V5.5.0 build 1",
                             Ha1Result(DEV, own_password=True))],
        advisories=ADVISORIES,
        tls={"https": True, "plain_reason": None, "error": None, "sip_tls": True,
             "not_after": (NOW + timedelta(days=365)).isoformat()},
        backup={"last_at": (NOW - timedelta(hours=10)).isoformat(), "last_file": "b.gbk", "count": 3,
                "scheduled": True},
        time={"synchronised": True, "offset_s": 0.01, "reference": "servers", "checked_at": NOW.isoformat(),
              "servers": [{"server": "ntp.example:123", "ok": True, "offset_s": 0.01}]},
    )


def codes(facts: CheckFacts) -> dict[str, Any]:
    return {f.code: f for f in run_check(facts).findings}


def test_clean_platform_has_no_finding() -> None:
    report = run_check(clean())
    assert report.findings == []
    assert report.counts == {"critical": 0, "warning": 0, "info": 0}
    assert report.checked == {"users": 2, "devices": 1, "advisories": 1}


def user(facts: CheckFacts, i: int = 0, **changes: Any) -> None:
    facts.users = list(facts.users)
    facts.users[i] = dataclasses.replace(facts.users[i], **changes)


def device(facts: CheckFacts, **changes: Any) -> None:
    facts.devices = [dataclasses.replace(facts.devices[0], **changes)]


def ha1(facts: CheckFacts, **changes: Any) -> None:
    device(facts, ha1=dataclasses.replace(facts.devices[0].ha1, **changes))


def settings(facts: CheckFacts, **changes: Any) -> None:
    facts.settings = dataclasses.replace(facts.settings, **changes)


Provoke = Callable[[CheckFacts], None]
CASES: list[tuple[str, str, Provoke, str]] = [
    ("user_weak_password", "critical", lambda f: user(f, 1, password_weak=True), "li.si"),
    ("user_password_unknown", "info", lambda f: user(f, 1, password_weak=None), "li.si"),
    ("account_never_used", "info", lambda f: user(f, 1, last_login_at=None), "li.si"),
    ("account_unused", "warning", lambda f: user(f, 1, last_login_at=NOW - timedelta(days=91)), "li.si"),
    ("password_old", "warning", lambda f: user(f, 1, password_changed_at=NOW - timedelta(days=91)), "li.si"),
    ("admin_no_second_factor", "warning", lambda f: user(f, 0, totp_enabled=False), "zhang.san"),
    ("default_account", "info", lambda f: user(f, 0, username="admin"), "admin"),
    ("device_weak_password", "critical", lambda f: ha1(f, weak="common"), DEV),
    ("device_shared_password", "warning", lambda f: ha1(f, shared_default=True), DEV),
    ("device_advisory", "critical", lambda f: device(f, firmware="V5.4.0 build 160530"), DEV),
    ("http_plain", "critical", lambda f: f.tls.update(https=False, plain_reason=None), "GBOPS_HTTP_HOST"),
    ("tls_problem", "critical", lambda f: f.tls.update(error="证书无效 / bad certificate"), "GBOPS_TLS_CERT_FILE"),
    ("sip_no_tls", "info", lambda f: f.tls.update(sip_tls=False), "GBOPS_SIP_TLS_PORT"),
    ("sip_no_lockout", "warning", lambda f: settings(f, sip_lockout_failures=11), "GBOPS_SIP_LOCKOUT_FAILURES"),
    ("sip_allow_unknown", "warning", lambda f: settings(f, sip_allow_unknown=True), "GBOPS_SIP_ALLOW_UNKNOWN"),
    ("audit_not_exported", "warning", lambda f: settings(f, audit_checkpoint_url_set=False),
     "GBOPS_AUDIT_CHECKPOINT_URL"),
    ("backup_missing", "critical", lambda f: setattr(f, "backup", {"last_at": None, "count": 0,
                                                                   "scheduled": False}), "backup"),
    ("backup_stale", "warning", lambda f: f.backup.update(last_at=(NOW - timedelta(days=2, hours=1)).isoformat()),
     "backup"),
    ("clock_unsynchronised", "critical", lambda f: f.time.update(synchronised=False, offset_s=None), "clock"),
    ("clock_local_reference", "info", lambda f: f.time.update(reference="local"), "GBOPS_NTP_SERVERS"),
    ("facts_unknown", "info", lambda f: setattr(f, "time", None), "time"),
]


def test_every_check_has_a_case() -> None:
    assert {c for c, *_ in CASES} == set(CHECKS)


@pytest.mark.parametrize("code,severity,provoke,subject", CASES, ids=[c[0] for c in CASES])
def test_finding_provoked_then_cleared(code: str, severity: str, provoke: Provoke, subject: str) -> None:
    facts = clean()
    provoke(facts)
    found = codes(facts)
    assert set(found) == {code}, found.keys()  # exactly that finding, nothing else
    finding = found[code]
    assert finding.severity == severity
    assert [s.id for s in finding.subjects] == [subject]
    assert " / " in finding.title and " / " in finding.fix and finding.fix_zh and finding.fix_en
    assert all(" / " in s.detail for s in finding.subjects if s.detail), finding.subjects
    # the fix applied: a clean platform again
    assert codes(clean()) == {}


def test_boundaries_are_the_policy() -> None:
    f = clean()
    user(f, 1, last_login_at=NOW - timedelta(days=89), password_changed_at=NOW - timedelta(days=89))
    f.backup["last_at"] = (NOW - timedelta(days=1, hours=23)).isoformat()
    assert codes(f) == {}
    settings(f, password_max_age_days=0)  # 0: passwords never expire
    user(f, 1, password_changed_at=NOW - timedelta(days=4000))
    assert codes(f) == {}
    settings(f, sip_lockout_failures=10)
    assert codes(f) == {}


def test_disabled_users_are_not_findings() -> None:
    f = clean()
    user(f, 1, disabled=True, password_weak=True, last_login_at=None)
    assert codes(f) == {}


def test_password_age_falls_back_to_creation() -> None:
    f = clean()
    user(f, 1, password_changed_at=None, created_at=NOW - timedelta(days=200))
    assert [s.id for s in codes(f)["password_old"].subjects] == ["li.si"]


def test_devices_without_own_password_use_the_shared_one_and_say_so() -> None:
    f = clean()
    ha1(f, own_password=False)
    finding = codes(f)["device_shared_password"]
    assert "GBOPS_SIP_PASSWORD" in finding.subjects[0].detail and finding.severity == "warning"
    ha1(f, own_password=False, realm_mismatch=True)
    assert "realm" in codes(f)["device_shared_password"].subjects[0].detail


@pytest.mark.parametrize("firmware,hit", [("V5.4.0 build 160530", True), ("5.3.9", True), ("v5.4", True),
                                          ("V5.4.0.1", False), ("V5.5.0", False), ("", False), (None, False)])
def test_advisory_firmware_at_or_below(firmware: str | None, hit: bool) -> None:
    f = clean()
    device(f, firmware=firmware)
    assert ("device_advisory" in codes(f)) is hit


def test_advisory_matching_and_words() -> None:
    f = clean()
    device(f, manufacturer="ACME", model="ipc-2200", firmware="5.0")  # vendor and model: case-insensitive
    finding = codes(f)["device_advisory"]
    assert finding.ref == "LOCAL-TEST-1" and "示例条目" in finding.title_zh and "example entry" in finding.title_en
    assert "测试条目" in finding.title and "升级" in finding.fix_zh
    device(f, model="NVR-2200")
    assert codes(f) == {}


def test_advisory_file_errors() -> None:
    with pytest.raises(AdvisoryError, match="TOML"):
        parse_advisories("[[advisory]\n")
    with pytest.raises(AdvisoryError, match="id"):
        parse_advisories("[[advisory]]\nvendor = 'x'\n")
    with pytest.raises(AdvisoryError, match="unknown keys"):
        parse_advisories("[[advisory]]\nid = 'a'\nvendor = 'x'\ncve = 'y'\n")
    with pytest.raises(AdvisoryError, match="advisory"):
        parse_advisories("advisory = 3\n")
    with pytest.raises(AdvisoryError, match="severity"):
        parse_advisories("[[advisory]]\nid = 'a'\nvendor = 'x'\nseverity = 'high'\n")
    assert parse_version("V5.4.0 build 160530") == (5, 4, 0) and parse_version("none") is None


def test_shipped_advisory_list_is_examples_only() -> None:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "gbops" / "data" / "device_advisories.toml").read_text("utf-8")
    entries = parse_advisories(text)
    assert entries and all(a.example and a.id.startswith("LOCAL-EXAMPLE-") for a in entries)
    assert "CVE-" not in "".join(a.id for a in entries)


def test_unknown_sources_are_findings_not_errors() -> None:
    f = clean()
    f.users = None
    f.devices = None
    f.tls = None
    f.backup = None
    f.time = None
    f.unknown["backup"] = "备份功能未接入 / not wired"
    found = codes(f)
    assert set(found) == {"facts_unknown"}
    ids = [s.id for s in found["facts_unknown"].subjects]
    assert ids == ["users", "devices", "tls", "backup", "time"]
    assert found["facts_unknown"].subjects[3].detail == "备份功能未接入 / not wired"


def test_missing_user_columns_are_named() -> None:
    f = clean()
    f.user_fields = USER_FIELDS - {"totp_enabled_at", "last_login_at"}
    user(f, 0, totp_enabled=None)
    user(f, 1, last_login_at=None)
    found = codes(f)
    assert set(found) == {"facts_unknown"}  # no admin/never-used finding guessed from a missing column
    assert [s.id for s in found["facts_unknown"].subjects] == ["users.last_login_at", "users.totp_enabled_at"]


def test_plain_http_severity_by_reason() -> None:
    f = clean()
    f.tls.update(https=False, plain_reason="loopback", plain_message="回环 / loopback")
    assert codes(f)["http_plain"].severity == "info"
    f.tls.update(plain_reason="reverse_proxy", plain_message="代理 / proxy")
    assert codes(f)["http_plain"].severity == "warning"  # GBOPS_TRUSTED_PROXIES not set
    settings(f, trusted_proxies_set=True)
    assert codes(f)["http_plain"].severity == "info"


def test_certificate_expiry() -> None:
    f = clean()
    f.tls["not_after"] = (NOW + timedelta(days=10)).isoformat()
    assert codes(f)["tls_problem"].severity == "warning"
    f.tls["not_after"] = (NOW - timedelta(days=1)).isoformat()
    assert codes(f)["tls_problem"].severity == "critical"


def test_sip_lockout_disabled_by_window_or_duration() -> None:
    f = clean()
    settings(f, sip_lockout_window=0, sip_lockout_duration=0)
    assert [s.id for s in codes(f)["sip_no_lockout"].subjects] == ["GBOPS_SIP_LOCKOUT_WINDOW",
                                                                   "GBOPS_SIP_LOCKOUT_DURATION"]


def test_report_order_counts_and_json() -> None:
    f = clean()
    for _code, _sev, provoke, _subj in CASES[:-2]:
        provoke(f)
    f.tls.update(plain_reason="reverse_proxy", plain_message="反向代理终结 TLS / a reverse proxy terminates TLS")
    report = run_check(f)
    severities = [x.severity for x in report.findings]
    assert severities == sorted(severities, key=SEVERITY_ORDER.index)
    assert sum(report.counts.values()) == len(report.findings)
    data = report.as_dict()
    json.dumps(data, ensure_ascii=False)
    assert data["generated_at"] == "2026-12-07T12:00:00Z"
    text = json.dumps(data, ensure_ascii=False)
    assert "ha1" not in text.lower()  # no digest, no password in a report
    for finding in report.findings:  # each detail is "中文 / English" with one separator
        for s in finding.subjects:
            assert s.detail.count(" / ") == 1, (finding.code, s.detail)


def test_settings_facts_from_settings(tmp_path: Any) -> None:
    from gbcore.settings import Settings

    s = Settings(data_dir=tmp_path, sip_password="Xk9#long-pass", sip_lockout_failures=20,
                 audit_checkpoint_url="https://witness.example/cp")
    facts = SettingsFacts.from_settings(s)
    assert facts.sip_lockout_failures == 20 and facts.audit_checkpoint_url_set and facts.sip_password_set
    assert "Xk9" not in repr(facts)


def test_clock_not_checked_yet_is_unknown_and_names_servers() -> None:
    f = clean()
    f.time["synchronised"] = None
    found = codes(f)
    assert set(found) == {"facts_unknown"} and "尚未" in found["facts_unknown"].subjects[0].detail
    f.time.update(synchronised=False, offset_s=0.8)
    subject = codes(f)["clock_unsynchronised"].subjects[0]
    assert subject.name == "ntp.example:123" and "+0.800" in subject.detail


def test_chinese_halves_split_cleanly() -> None:
    """Consoles show one half of "中文 / English": the Chinese words never contain the separator."""
    for code, (_sev, title_zh, _title_en, fix_zh, _fix_en) in CHECKS.items():
        assert " / " not in title_zh and " / " not in fix_zh, code


@hsettings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_advisory_parser_fails_only_with_its_own_error(text: str) -> None:
    """A hand-edited list that is wrong in any way is an AdvisoryError (an "unknown" finding), never a crash."""
    try:
        entries = parse_advisories(text)
    except AdvisoryError:
        return
    for a in entries:
        a.matches("x", "y", text)


@hsettings(max_examples=200, deadline=None)
@given(st.text(max_size=60), st.text(max_size=60))
def test_version_matching_never_raises(firmware: str, limit: str) -> None:
    text = f'[[advisory]]\nid = "A"\nvendor = "v"\nfirmware_max = "1.{len(limit)}"\n'
    (adv,) = parse_advisories(text)
    assert isinstance(adv.matches("V", "m", firmware), bool)
    version = parse_version(firmware)
    assert version is None or all(isinstance(p, int) for p in version)
