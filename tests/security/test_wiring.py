"""The monitor's surroundings (gbops.security_wiring): SIP core events and audit records become the right
security events."""

from __future__ import annotations

from datetime import datetime
from types import SimpleNamespace

from gbops.security_wiring import AuditSecurityFeed, SipSecurityFeed, is_config_action
from security.events import ListSink
from sip_server.gb import events as ev

ADDR = ("192.0.2.10", 5060)
KNOWN = "34020000001320000001"


def feed(snapshots=()) -> tuple[ListSink, SipSecurityFeed]:
    sink = ListSink()
    sip = SimpleNamespace(gb=SimpleNamespace(known={KNOWN}))
    return sink, SipSecurityFeed(sink, sip, snapshots)


def test_register_rejections() -> None:
    sink, f = feed()
    f(ev.RegisterRejected(KNOWN, ADDR, 403, "bad response"))
    f(ev.RegisterRejected("34020000001320000999", ADDR, 403, "unknown device"))
    f(ev.RegisterRejected("34020000001320000998", ADDR, 403, "bad response"))  # unknown id, trying passwords
    f(ev.RegisterRejected(KNOWN, ADDR, 403, "locked out", locked_out=True))
    assert sink.kinds() == ["sip_auth_failed", "sip_unknown_device", "sip_unknown_device", "sip_auth_failed",
                            "sip_locked"]
    first = sink.events[0]
    assert first["source_ip"] == "192.0.2.10" and first["device_id"] == KNOWN
    assert first["detail"]["reason"] == "bad response"


def test_security_events_and_new_addresses() -> None:
    snap = SimpleNamespace(device_id=KNOWN, remote_addr="10.0.0.5:5060")
    sink, f = feed([snap])
    f(ev.SecurityEvent("address_mismatch", KNOWN, ADDR, "UDP", "MESSAGE", "not the registered address"))
    f(ev.SecurityEvent("lockout", KNOWN, ADDR, "UDP", "REGISTER", "locked"))
    f(ev.DeviceOnline(KNOWN, ("10.0.0.5", 5999), "UDP", None, 3600, None, False))  # same IP, new port: fine
    f(ev.DeviceOnline(KNOWN, ("10.0.0.6", 5060), "UDP", None, 3600, None, True))
    f(ev.DeviceOnline(KNOWN, ("10.0.0.6", 5060), "UDP", None, 3600, None, False))
    f(ev.DeviceOnline("34020000001320000002", ("10.0.0.7", 5060), "UDP", None, 3600, None, True))  # first seen
    assert sink.kinds() == ["sip_address_mismatch", "sip_locked", "device_new_address"]
    assert sink.events[2]["detail"]["before"] == "10.0.0.5" and sink.events[2]["detail"]["after"] == "10.0.0.6"


def record(action: str, **detail) -> dict:
    return {"action": action, "actor": {"type": "user", "id": "1", "name": "alice"},
            "target": {"type": "user", "id": "7"}, "client_ip": "10.1.1.1", "detail": detail}


def test_audit_records_become_config_changes_downloads_and_off_hours(monkeypatch) -> None:
    sink = ListSink()
    f = AuditSecurityFeed(sink, work_hours="")  # always working hours
    f(record("user.create", username="bob"))
    f(record("cascade.platform_edit"))
    f(record("user.password_change_failed"))
    f(record("live.start"))
    f(record("download.request", device_id="d", channel_id="c", job_id="j"))
    assert sink.kinds() == ["config_change", "config_change", "download"]
    assert sink.events[0]["detail"]["action_zh"] == "创建用户" and sink.events[0]["user"] == "alice"
    import gbcore.timeutil
    from gbcore.timeutil import device_timezone

    monkeypatch.setattr(gbcore.timeutil, "device_now", lambda: datetime(2026, 12, 7, 3, 5, tzinfo=device_timezone()))
    night = ListSink()
    g = AuditSecurityFeed(night, work_hours="07:00-20:00")
    g(record("playback.start", device_id="d", channel_id="c"))
    g(record("download.request", device_id="d", channel_id="c"))
    assert night.kinds() == ["off_hours_access", "download", "off_hours_access"]
    assert night.events[0]["detail"]["local_time"] == "03:05"
    monkeypatch.setattr(gbcore.timeutil, "device_now", lambda: datetime(2026, 12, 7, 9, 0, tzinfo=device_timezone()))
    day = ListSink()
    AuditSecurityFeed(day, work_hours="07:00-20:00")(record("playback.start", device_id="d", channel_id="c"))
    assert day.kinds() == []
    assert is_config_action("grant.add") and is_config_action("setting.change") and not is_config_action("auth.login")


async def test_audit_log_listeners_see_every_appended_record(db_engine, tmp_path) -> None:
    from audit_log.log import Actor, AuditLog, Target
    from audit_log.note import load_or_create_signer
    from gbcore.db import begin_write, make_sessionmaker

    sm = make_sessionmaker(db_engine)
    log = AuditLog(sm, load_or_create_signer(tmp_path / "audit.key", "test"), data_dir=tmp_path)
    sink = ListSink()
    log.listeners.append(AuditSecurityFeed(sink))
    log.listeners.append(lambda record: 1 / 0)  # a failing listener changes nothing for the others
    admin = Actor("user", "1", "admin")
    await log.record(actor=admin, action="role.create", target=Target("role", "3"), client_ip="10.0.0.1",
                     detail={"name": "ops"})
    async with sm() as session:
        await begin_write(session)
        await log.append(session, actor=admin, action="grant.add", target=Target("user", "4"), detail={"role_id": 3})
        await session.commit()
    await log.record(actor=admin, action="auth.logout", target=Target("user", "1"))
    await log.stop()
    assert sink.kinds() == ["config_change", "config_change"]
    assert [e["detail"]["action"] for e in sink.events] == ["role.create", "grant.add"]
    assert sink.events[0]["source_ip"] == "10.0.0.1" and sink.events[0]["user"] == "admin"
