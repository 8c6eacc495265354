"""A refused spoof reaches the audit log as ``security.sip_refused`` through the platform's wiring (the
SipService hook -> gbops.app.Platform -> AuditLog), rate-limited per source address (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio

from audit_log.actions import check_action
from audit_log.log import AuditLog
from audit_log.note import NoteSigner
from gbcore.db import make_sessionmaker
from gbcore.settings import Settings
from gbops.app import Platform
from tests.gb.test_identity_live import DEV, Peer, keepalive_body


async def test_refused_spoofs_are_audited_and_rate_limited(db_engine, tmp_path):
    assert check_action("security.sip_refused") == "security.sip_refused"
    audit = AuditLog(make_sessionmaker(db_engine), NoteSigner.generate("gbops.test/audit"), data_dir=tmp_path)
    entries = []
    record = audit.record

    async def keep(**kw):
        entry = await record(**kw)
        entries.append(entry.value())
        return entry

    audit.record = keep  # type: ignore[method-assign]
    platform = Platform(Settings(data_dir=tmp_path / "data"))
    platform.audit = audit
    from sip_server.gb.server import GbConfig
    from sip_server.service import SipService

    svc = SipService(GbConfig(default_password="Gate-7-camera#pw", catalog_subscribe_expires=0), host="127.0.0.1",
                     port=0, on_security_event=platform._record_sip_security, security_event_limit=3)
    await svc.start()
    dev = spoofer = None
    try:
        dev = await Peer().open(("127.0.0.1", svc.bound_port))
        assert (await dev.register()).status == 200
        spoofer = await Peer().open(("127.0.0.1", svc.bound_port))
        for _ in range(5):
            assert (await spoofer.message(keepalive_body())).status == 403
        await asyncio.gather(*platform._audit_tasks)
    finally:
        for p in (dev, spoofer):
            if p is not None:
                p.close()
        await svc.close()
        await audit.stop()
    assert len(entries) == 3  # at most 3 per address per window here (10 a minute by default)
    e = entries[0]
    assert e["action"] == "security.sip_refused"
    assert e["target"] == {"type": "device", "id": DEV}
    assert e["actor"]["type"] == "anonymous" and e["actor"]["name"] == f"127.0.0.1:{spoofer.local[1]}"
    assert e["client_ip"] == "127.0.0.1"
    assert e["detail"]["kind"] == "address_mismatch" and e["detail"]["method"] == "MESSAGE"
    assert "registered address" in e["detail"]["reason"]
    assert svc.metrics()["security_events_suppressed"] == 2
