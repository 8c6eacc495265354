"""Download job API on SQLite and PostgreSQL: validation, permissions, who sees which job and file,
restart recovery, retention, progress figures.  (The live capture itself: tests/e2e via test_e2e_download.)"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta

import pytest

from tests.portal.conftest import bearer
from watermark.config import WatermarkConfig
from watermark.downloads import RESTARTED, DownloadManager, JobProgress
from watermark.models import DownloadJob

CH = "34020000001310000001"
DEV = "34020000001320000001"


async def _token(portal, name: str, **kw) -> dict[str, str]:
    await portal.add_user(name, **kw)
    return bearer(await portal.login(name))


async def _job(portal, user_id: int, state: str, **kw) -> DownloadJob:
    job_id = kw.pop("id", f"{state}{user_id:04d}".ljust(16, "0"))
    row = DownloadJob(id=job_id, user_id=user_id, username=f"u{user_id}", channel_id=CH,
                      device_id="34020000001320000001", seconds=10, state=state, session_id=f"dl-{job_id}",
                      watermark_id="ABCD1234", created_at=datetime.now(UTC), **kw)
    async with portal.sessionmaker() as session:
        session.add(row)
        await session.commit()
    return row


async def _channel(portal) -> None:
    from sqlalchemy import insert

    from device_registry.models import Channel, Device

    now = datetime.now(UTC)
    async with portal.sessionmaker() as s:
        await s.execute(insert(Device).values(device_id=DEV, online=True, keepalive_interval=60, created_at=now,
                                              updated_at=now))
        await s.execute(insert(Channel).values(device_id=DEV, channel_id=CH, name="大门 Gate", online=True,
                                               status="ON", first_seen=now, updated_at=now))
        await s.commit()


async def test_request_validation_and_no_media(audited) -> None:
    await _channel(audited)
    h = await _token(audited, "alice")
    for seconds in (4, 601, "x"):
        r = await audited.client.post(f"/api/channels/{CH}/downloads", json={"seconds": seconds}, headers=h)
        assert r.status_code == 422, r.text
    r = await audited.client.post(f"/api/channels/{CH}/downloads", json={"seconds": 5}, headers=h)
    assert r.status_code == 503 and r.json()["error"] == "media_unavailable"


async def test_needs_download_permission(audited) -> None:
    h = await _token(audited, "viewer", permissions={"live.view"})
    r = await audited.client.post(f"/api/channels/{CH}/downloads", json={"seconds": 5}, headers=h)
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    assert (await audited.client.get("/api/downloads", headers=h)).status_code == 403


async def test_out_of_scope_channel_is_refused(audited) -> None:
    h = await _token(audited, "scoped", permissions={"download.create"}, channels=["34020000001310000099"])
    r = await audited.client.post(f"/api/channels/{CH}/downloads", json={"seconds": 5}, headers=h)
    assert r.status_code == 403 and r.json()["error"] == "channel_forbidden"


async def test_restart_fails_interrupted_jobs_and_keeps_finished_ones(audited) -> None:
    alice = await audited.add_user("alice", permissions={"download.create"})
    done = await _job(audited, alice.id, "done", frames=250, duration_s=10.0, sha256="00" * 32, size=1)
    for state in ("queued", "capturing", "encoding"):
        await _job(audited, alice.id, state)
    manager = DownloadManager(WatermarkConfig.from_settings(audited.settings), audited.sessionmaker, audit=audited.audit)
    await manager.start()
    try:
        h = bearer(await audited.login("alice"))
        r = await audited.client.get("/api/downloads", headers=h)
        assert r.status_code == 200
        items = {i["job_id"]: i for i in r.json()["items"]}
        assert len(items) == 4
        assert items[done.id]["state"] == "done" and items[done.id]["percent"] == 100
        failed = [i for i in items.values() if i["job_id"] != done.id]
        assert all(i["state"] == "failed" and i["reason"] == RESTARTED and i["percent"] == 0 for i in failed)
        total, entries = await audited.audit.store.query(action_prefix="download.")
        details = [json.loads(e.data) for e in entries]
        assert total == 3 and {d["action"] for d in details} == {"download.failed"}
        assert {d["detail"]["reason"] for d in details} == {RESTARTED}
        assert {d["detail"]["session_id"] for d in details} == {i["session_id"] for i in failed}
    finally:
        await manager.stop()


async def test_only_the_requester_or_a_user_manager_gets_the_file(audited) -> None:
    alice = await audited.add_user("alice", permissions={"download.create"})
    await audited.add_user("bob", permissions={"download.create"})
    await audited.add_user("boss", permissions={"download.create", "user.manage"})
    content = b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 8
    digest = hashlib.sha256(content).hexdigest()
    row = await _job(audited, alice.id, "done", frames=5, duration_s=0.2, sha256=digest, size=len(content),
                     file_name="f00dfeedf00dfeed.mp4", id="f00dfeedf00dfeed",
                     expires_at=datetime.now(UTC) + timedelta(hours=1))
    (audited.settings.data_dir / "downloads").mkdir(parents=True, exist_ok=True)
    (audited.settings.data_dir / "downloads" / row.file_name).write_bytes(content)
    url = f"/api/downloads/{row.id}"

    h_alice = bearer(await audited.login("alice"))
    r = await audited.client.get(url, headers=h_alice)
    assert r.status_code == 200 and r.json()["file_url"] == url + "/file" and r.json()["sha256"] == digest
    r = await audited.client.get(url + "/file", headers=h_alice)
    assert r.status_code == 200 and r.content == content and r.headers["content-type"] == "video/mp4"
    assert r.headers["repr-digest"] == f"sha-256=:{base64.b64encode(bytes.fromhex(digest)).decode()}:"
    assert "attachment" in r.headers["content-disposition"]

    h_bob = bearer(await audited.login("bob"))
    for path in (url, url + "/file"):
        r = await audited.client.get(path, headers=h_bob)
        assert r.status_code == 404 and r.json()["error"] == "download_not_found"
    assert (await audited.client.get("/api/downloads", headers=h_bob)).json()["items"] == []
    assert (await audited.client.get("/api/downloads?all=true", headers=h_bob)).status_code == 403

    h_boss = bearer(await audited.login("boss"))
    assert (await audited.client.get(url + "/file", headers=h_boss)).content == content
    everyone = (await audited.client.get("/api/downloads?all=true", headers=h_boss)).json()["items"]
    assert [i["job_id"] for i in everyone] == [row.id]

    # retention: the file goes, the job stays and says so
    manager = audited.app.state.downloads
    assert await manager.sweep_once(datetime.now(UTC)) == 0
    assert await manager.sweep_once(datetime.now(UTC) + timedelta(hours=2)) == 1
    assert not (audited.settings.data_dir / "downloads" / row.file_name).exists()
    r = await audited.client.get(url + "/file", headers=h_alice)
    assert r.status_code == 410 and r.json()["error"] == "download_expired"
    assert (await audited.client.get(url, headers=h_alice)).json()["file_url"] is None


async def test_file_of_an_unfinished_job_is_not_ready(audited) -> None:
    alice = await audited.add_user("alice", permissions={"download.create"})
    row = await _job(audited, alice.id, "failed", reason="x")
    h = bearer(await audited.login("alice"))
    r = await audited.client.get(f"/api/downloads/{row.id}/file", headers=h)
    assert r.status_code == 409 and r.json()["error"] == "download_not_ready"


@pytest.mark.parametrize(("state", "captured", "encoded", "percent"), [
    ("queued", 0, 0, 0.0), ("capturing", 5.0, 0, 40.0), ("capturing", 10.0, 0, 80.0),
    ("encoding", 10.0, 125, 90.0), ("encoding", 10.0, 250, 100.0), ("done", 10.0, 250, 100.0)])
def test_progress_percent(state, captured, encoded, percent) -> None:
    p = JobProgress(state=state, seconds_captured=captured, frames_encoded=encoded, frames_total=250)
    assert p.percent(10) == percent


def test_progress_eta() -> None:
    p = JobProgress(state="capturing", seconds_captured=4.0)
    assert p.eta(10, 0.0) == pytest.approx(6.0 + 10 * 0.2)
    p = JobProgress(state="encoding", seconds_captured=10.0, frames_encoded=100, frames_total=250,
                    encode_started=0.0)
    assert p.eta(10, 2.0) == pytest.approx(3.0)  # 50 frames/s, 150 left
    assert JobProgress(state="queued").eta(10, 0.0) is None
