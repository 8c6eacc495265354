"""Ticket, notification, contract and SLA routes (SQLite and PostgreSQL)."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

from PIL import Image
from sqlalchemy import text

from device_registry.events import CatalogReported, ChannelStatusChanged
from ops_portal.tickets.scanner import scan
from tests.portal.conftest import Portal, bearer
from tests.registry._support import DEV, cam, item, reg, t

NOW = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
CONTRACT = {"name": "市局合同", "customer": "市公安局", "channel_ids": [], "storage_days": 30,
            "repair_limit_hours": 24, "quality_terms": {"min_width": 1280, "max_freeze_seconds": 10},
            "valid_from": "2025-01-01T00:00:00Z"}


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def _setup(portal: Portal) -> tuple[Clock, dict[str, str]]:
    await portal.registry.apply([reg(at=0), CatalogReported(DEV, t(1), (item(cam(1)), item(cam(2))), True, "2/2")])
    clock = Clock(NOW)
    portal.app.state.ticket_clock = clock
    await portal.add_user("admin1")
    return clock, bearer(await portal.login("admin1"))


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buf, "PNG")
    return buf.getvalue()


async def test_ticket_lifecycle_over_the_api(audited: Portal) -> None:
    portal = audited
    clock, admin = await _setup(portal)
    c = portal.client
    r = await c.post("/api/contracts", json={**CONTRACT, "channel_ids": [cam(1)]}, headers=admin)
    assert r.status_code == 201, r.text
    contract_id = r.json()["id"]

    r = await c.post("/api/tickets", json={"channel_id": cam(1), "note": "画面全黑"}, headers=admin)
    assert r.status_code == 201, r.text
    tk = r.json()
    assert tk["state"] == "reported" and tk["device_id"] == DEV and tk["contract_id"] == contract_id
    assert tk["repair_limit_hours"] == 24 and tk["time_left_seconds"] == 24 * 3600
    assert tk["deadline"] == "2025-03-02T08:00:00.000Z"
    assert tk["allowed_actions"] == ["acknowledge"]
    tid = tk["id"]

    async def move(action: str, note: str | None = None, status: int = 200) -> dict:
        r = await c.post(f"/api/tickets/{tid}/transitions", json={"action": action, "note": note}, headers=admin)
        assert r.status_code == status, r.text
        return r.json()

    err = await move("confirm", status=409)
    assert err["error"] == "illegal_transition" and "cannot 'confirm'" in err["message"]
    clock.now = NOW + timedelta(hours=1)
    await move("acknowledge")
    await move("start_repair")
    assert (await move("feedback", status=422))["error"] == "feedback_note_required"
    clock.now = NOW + timedelta(hours=30)
    r = await c.get("/api/tickets", params={"overdue": "true"}, headers=admin)
    assert [x["id"] for x in r.json()["items"]] == [tid]
    assert r.json()["items"][0]["time_left_seconds"] == -6 * 3600
    tk = await move("feedback", "更换电源")
    assert tk["state"] == "repaired" and tk["repair_seconds"] == 30 * 3600 and tk["within_limit"] is False
    assert tk["feedback_note"] == "更换电源"
    tk = await move("reopen", "仍然黑屏")
    assert tk["state"] == "reopened" and tk["repair_seconds"] is None
    await move("start_repair")
    clock.now = NOW + timedelta(hours=31)
    await move("feedback", "更换摄像机")
    tk = await move("confirm")
    assert tk["state"] == "confirmed" and tk["repair_seconds"] == 31 * 3600
    assert [e["action"] for e in tk["events"]] == [
        "report", "acknowledge", "start_repair", "feedback", "reopen", "start_repair", "feedback", "confirm"]
    assert tk["events"][3]["actor_name"] == "admin1"

    # SLA report of the contract, JSON and CSV
    r = await c.get(f"/api/contracts/{contract_id}/sla",
                    params={"start": "2025-03-01T00:00:00Z", "end": "2025-04-01T00:00:00Z"}, headers=admin)
    assert r.status_code == 200, r.text
    sla = r.json()
    assert (sla["tickets"], sla["repaired"], sla["within_limit"], sla["missed"]) == (1, 1, 0, 1)
    assert sla["share_within_limit"] == 0 and sla["mean_repair_seconds"] == 31 * 3600
    assert sla["p95_repair_seconds"] == 31 * 3600
    assert [o["ticket_id"] for o in sla["overdue"]] == [tid] and sla["overdue"][0]["overdue_seconds"] == 7 * 3600
    r = await c.get(f"/api/contracts/{contract_id}/sla.csv",
                    params={"start": "2025-03-01T00:00:00Z", "end": "2025-04-01T00:00:00Z"}, headers=admin)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    lines = r.text.lstrip("\ufeff").splitlines()
    assert "share_within_limit(%),0" in lines and lines[-1].startswith(f"{tid},{cam(1)},{DEV},confirmed,")

    # every transition is on the audit log
    async with portal.sessionmaker() as session:
        actions = [a for (a,) in (await session.execute(text(
            "SELECT action FROM audit_entries WHERE target_type = 'ticket' ORDER BY seq"))).all()]
    assert actions == ["ticket.create"] + ["ticket.transition"] * 7


async def test_snapshot_upload_limits(portal: Portal) -> None:
    _, admin = await _setup(portal)
    portal.settings.ticket_snapshot_max_bytes = 4096
    c = portal.client
    tid = (await c.post("/api/tickets", json={"channel_id": cam(2), "kind": "quality", "anomaly": "color_cast",
                                               "note": "偏红"}, headers=admin)).json()["id"]
    png = _png()
    r = await c.put(f"/api/tickets/{tid}/snapshot", content=png, headers={**admin, "content-type": "image/png"})
    assert r.status_code == 200, r.text
    assert r.json()["snapshot_url"] == f"/api/tickets/{tid}/snapshot"
    r = await c.get(f"/api/tickets/{tid}/snapshot", headers=admin)
    # served watermarked for the viewer (tests/tickets/test_snapshot_evidence.py), still a PNG
    assert r.status_code == 200 and r.headers["content-type"] == "image/png" and r.content.startswith(png[:8])
    r = await c.put(f"/api/tickets/{tid}/snapshot", content=b"\xff\xd8\xff" + b"0" * 5000,
                    headers={**admin, "content-type": "image/jpeg"})
    assert r.status_code == 413 and r.json()["error"] == "snapshot_too_large"
    r = await c.put(f"/api/tickets/{tid}/snapshot", content=b"GIF89a....", headers=admin)
    assert r.status_code == 415 and r.json()["error"] == "snapshot_not_image"
    r = await c.post("/api/tickets", json={"channel_id": cam(2), "kind": "quality"}, headers=admin)
    assert r.status_code == 422 and r.json()["error"] == "anomaly_required"
    files = list((portal.settings.data_dir / "tickets").iterdir())
    assert len(files) == 1  # refused uploads leave nothing behind


async def test_control_characters_in_ids_are_refused_not_a_server_error(portal: Portal) -> None:
    """A NUL byte in a ticket filter or subject used to reach PostgreSQL (which refuses it in text: 500)."""
    _clock, admin = await _setup(portal)
    c = portal.client
    for params in ({"device_id": "3402\x00"}, {"channel_id": "\x00"}):
        r = await c.get("/api/tickets", params=params, headers=admin)
        assert r.status_code == 422, r.text
    r = await c.post("/api/tickets", json={"channel_id": "34020000001310000001\x00"}, headers=admin)
    assert r.status_code == 422, r.text
    r = await c.get("/api/tickets", params={"device_id": cam(1)}, headers=admin)
    assert r.status_code == 200


async def test_scope_and_permissions(portal: Portal) -> None:
    _, admin = await _setup(portal)
    c = portal.client
    t1 = (await c.post("/api/tickets", json={"channel_id": cam(1)}, headers=admin)).json()["id"]
    t2 = (await c.post("/api/tickets", json={"channel_id": cam(2)}, headers=admin)).json()["id"]
    await portal.add_user("op", permissions={"ticket.read", "ticket.write"}, channels=[cam(1)])
    op = bearer(await portal.login("op"))
    r = await c.get("/api/tickets", headers=op)
    assert [x["id"] for x in r.json()["items"]] == [t1]
    assert (await c.get(f"/api/tickets/{t2}", headers=op)).status_code == 403
    assert (await c.get("/api/tickets/9999", headers=op)).status_code == 403  # existence does not leak
    assert (await c.get("/api/tickets/9999", headers=admin)).status_code == 404
    r = await c.post("/api/tickets", json={"channel_id": cam(2)}, headers=op)
    assert r.status_code == 403 and r.json()["error"] == "channel_forbidden"
    assert (await c.post(f"/api/tickets/{t1}/transitions", json={"action": "acknowledge"}, headers=op)).status_code == 200
    assert (await c.get("/api/contracts", headers=op)).status_code == 403  # needs report.read

    await portal.add_user("viewer", permissions={"report.read"})
    viewer = bearer(await portal.login("viewer"))
    assert (await c.get("/api/contracts", headers=viewer)).status_code == 200
    r = await c.post("/api/contracts", json=CONTRACT, headers=viewer)
    assert r.status_code == 403 and r.json()["error"] == "forbidden"


async def test_contract_crud_and_validation(portal: Portal) -> None:
    _, admin = await _setup(portal)
    c = portal.client
    r = await c.post("/api/contracts", json={**CONTRACT, "storage_days": 6}, headers=admin)
    assert r.status_code == 422 and r.json()["error"] == "storage_days_too_short"
    assert "7" in r.json()["message"]
    r = await c.post("/api/contracts", json={**CONTRACT, "rate_rule": "sampled"}, headers=admin)
    assert r.status_code == 422 and r.json()["error"] == "sample_minutes_required"
    r = await c.post("/api/contracts", json=CONTRACT, headers=admin)
    assert r.status_code == 201
    cid = r.json()["id"]
    assert r.json()["online_rate_threshold"] == 0.85 and r.json()["quality_terms"]["min_width"] == 1280
    assert (await c.post("/api/contracts", json=CONTRACT, headers=admin)).status_code == 409
    r = await c.patch(f"/api/contracts/{cid}", json={"storage_days": 3}, headers=admin)
    assert r.status_code == 422 and r.json()["error"] == "storage_days_too_short"
    r = await c.patch(f"/api/contracts/{cid}", json={"repair_limit_hours": 12, "channel_ids": [cam(2)]}, headers=admin)
    assert r.status_code == 200 and r.json()["repair_limit_hours"] == 12
    r = await c.post("/api/tickets", json={"channel_id": cam(2)}, headers=admin)
    assert r.json()["contract_id"] == cid and r.json()["repair_limit_hours"] == 12
    r = await c.post("/api/tickets", json={"channel_id": cam(1)}, headers=admin)
    assert r.json()["contract_id"] is None and r.json()["repair_limit_hours"] == 48  # the default setting
    assert (await c.get(f"/api/contracts/{cid}", headers=admin)).json()["name"] == CONTRACT["name"]
    assert (await c.delete(f"/api/contracts/{cid}", headers=admin)).status_code == 204
    assert (await c.get(f"/api/contracts/{cid}", headers=admin)).status_code == 404
    assert [x["contract_id"] for x in (await c.get("/api/tickets", headers=admin)).json()["items"]] == [None, None]


async def test_notifications_of_automatic_tickets(portal: Portal) -> None:
    _, admin = await _setup(portal)
    await portal.registry.apply([ChannelStatusChanged(DEV, cam(2), t(100), "OFF")])
    result = await scan(portal.sessionmaker, now=t(1000), offline_after=600, default_limit_hours=48)
    assert len(result.opened) == 1
    r = await portal.client.get("/api/notifications", headers=admin)
    assert r.status_code == 200
    [note] = r.json()["items"]
    assert note["kind"] == "ticket.opened" and note["channel_id"] == cam(2) and note["ticket_id"] == result.opened[0]
    assert (await portal.client.get("/api/notifications", params={"after_id": note["id"]},
                                    headers=admin)).json()["items"] == []
    await portal.add_user("other", permissions={"ticket.read"}, channels=[cam(1)])
    other = bearer(await portal.login("other"))
    assert (await portal.client.get("/api/notifications", headers=other)).json()["items"] == []
