"""A ticket snapshot is video evidence (issue 11), on SQLite and PostgreSQL: served only to users with the
ticket's channel in scope, with the viewer's own visible watermark drawn over it, and every fetch on the
audit log (``ticket.snapshot_fetch``).  Quality-sampler frames are stored as ticket snapshots
(ops_portal/quality/sampler.py) and served by the same route only."""

from __future__ import annotations

import hashlib
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from PIL import Image

from ops_portal.tickets.models import Ticket
from ops_portal.tickets.snapshots import save_snapshot
from tests.portal.conftest import Portal, bearer
from tests.portal.org_data import CA1, NVR, build_tree

GREY = 96


def _jpeg(w: int = 640, h: int = 360) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (GREY, GREY, GREY)).save(buf, "JPEG", quality=95)
    return buf.getvalue()


async def _ticket(portal: Portal, data: bytes) -> int:
    now = datetime.now(UTC)
    name = save_snapshot(portal.settings.data_dir, data, "image/jpeg")
    async with portal.sessionmaker() as s:
        ticket = Ticket(kind="quality", source="auto_quality", state="reported", device_id=NVR, channel_id=CA1,
                        anomaly="black", note="", detail={}, snapshot=name, reported_at=now,
                        repair_limit_hours=48.0, deadline=now + timedelta(hours=48))
        s.add(ticket)
        await s.commit()
        return ticket.id


async def _fetch_entries(portal: Portal) -> list[dict[str, Any]]:
    _, entries = await portal.audit.store.query(actions=["ticket.snapshot_fetch"], limit=100, newest_first=False)
    return [json.loads(e.data) for e in entries]


async def test_snapshot_is_scoped_watermarked_per_viewer_and_audited(audited: Portal) -> None:
    tree = await build_tree(audited.registry)
    original = _jpeg()
    tid = await _ticket(audited, original)
    await audited.add_user("east", permissions={"ticket.read"}, org_nodes=[tree.va], display_name="张三",
                           phone="13812345678")
    await audited.add_user("west", permissions={"ticket.read"}, org_nodes=[tree.vb])
    await audited.add_user("chief", permissions={"ticket.read"})
    url = f"/api/tickets/{tid}/snapshot"

    # out of scope: nothing, and no fetch recorded
    r = await audited.client.get(url, headers=bearer(await audited.login("west")))
    assert r.status_code == 403 and r.json()["error"] == "ticket_forbidden"
    assert await _fetch_entries(audited) == []

    images = {}
    for name in ("east", "chief"):
        r = await audited.client.get(url, headers=bearer(await audited.login(name)))
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg", r.text[:200]
        assert r.headers["cache-control"] == "no-store"
        picture = np.asarray(Image.open(io.BytesIO(r.content)).convert("L"), dtype=np.int16)
        assert picture.shape == (360, 640)
        # the watermark is drawn: white glyphs and dark outlines over the flat grey picture, across it
        changed = np.abs(picture - GREY) > 40
        assert changed.mean() > 0.01, changed.mean()
        assert changed[:180].any() and changed[180:].any() and changed[:, :320].any() and changed[:, 320:].any()
        images[name] = (r.content, r.headers["x-watermark-id"])
    assert images["east"][0] != images["chief"][0]  # each viewer gets their own watermark

    entries = await _fetch_entries(audited)
    assert [e["actor"]["name"] for e in entries] == ["east", "chief"]
    for entry, name in zip(entries, ("east", "chief"), strict=True):
        content, code = images[name]
        assert entry["target"] == {"type": "ticket", "id": str(tid)}
        assert entry["detail"]["watermark_id"] == code and len(code) == 8
        assert entry["detail"]["sha256"] == hashlib.sha256(content).hexdigest()
        assert entry["detail"]["device_id"] == NVR and entry["detail"]["channel_id"] == CA1


async def test_snapshot_without_a_working_audit_log_is_not_shown(audited: Portal, monkeypatch: Any) -> None:
    await build_tree(audited.registry)
    tid = await _ticket(audited, _jpeg(64, 48))
    await audited.add_user("chief", permissions={"ticket.read"})

    async def broken(**_kw: Any) -> None:
        raise ConnectionError("audit database gone")

    monkeypatch.setattr(audited.audit, "record", broken)
    r = await audited.client.get(f"/api/tickets/{tid}/snapshot", headers=bearer(await audited.login("chief")))
    assert r.status_code == 503 and r.json()["error"] == "audit_unavailable"
