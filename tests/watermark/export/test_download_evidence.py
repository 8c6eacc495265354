"""Download evidence (issue 11), on SQLite and PostgreSQL:

* a download file fetched by anyone but its requester is on the audit log (``download.fetch``), before the
  file is sent; the requester's own fetches are not (their ``download.complete`` is the evidence);
* ``download.complete`` is written in the transaction that marks the job done: a crash injected between
  "file written" and "job done" (the commit fails, the audit append fails, the process dies mid-transaction)
  leaves, after a restart, a job that is failed (file removed) or done with its evidence, never done
  without it.
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from tests.portal.conftest import bearer
from watermark.config import WatermarkConfig
from watermark.downloads import RESTARTED, DownloadManager
from watermark.export import ExportResult
from watermark.models import DownloadJob

from .test_downloads_api import CH, DEV, _job


async def _entries(portal: Any, action: str) -> list[dict[str, Any]]:
    _, entries = await portal.audit.store.query(actions=[action], limit=500)
    return [json.loads(e.data) for e in entries]


async def test_fetch_by_someone_else_is_audited(audited: Any) -> None:
    alice = await audited.add_user("alice", permissions={"download.create"})
    await audited.add_user("boss", permissions={"download.create", "user.manage", "audit.read"})
    content = b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 4
    digest = hashlib.sha256(content).hexdigest()
    row = await _job(audited, alice.id, "done", frames=5, duration_s=0.2, sha256=digest, size=len(content),
                     file_name="feedf00dfeedf00d.mp4", id="feedf00dfeedf00d",
                     expires_at=datetime.now(UTC) + timedelta(hours=1))
    (audited.settings.data_dir / "downloads").mkdir(parents=True, exist_ok=True)
    (audited.settings.data_dir / "downloads" / row.file_name).write_bytes(content)
    url = f"/api/downloads/{row.id}/file"

    r = await audited.client.get(url, headers=bearer(await audited.login("alice")))
    assert r.status_code == 200 and r.content == content
    assert await _entries(audited, "download.fetch") == []  # the requester's own file

    r = await audited.client.get(url, headers=bearer(await audited.login("boss")))
    assert r.status_code == 200 and r.content == content
    (entry,) = await _entries(audited, "download.fetch")
    assert entry["actor"]["name"] == "boss" and entry["target"] == {"type": "channel", "id": f"{DEV}/{CH}"}
    d = entry["detail"]
    assert d["job_id"] == row.id and d["requester_id"] == alice.id and d["requester"] == f"u{alice.id}"
    assert d["sha256"] == digest and d["session_id"] == row.session_id and d["watermark_id"] == row.watermark_id
    # the download history shows it too
    history = (await audited.client.get("/api/audit/downloads", headers=bearer(await audited.login("boss")))).json()
    assert [i["action"] for i in history["items"]] == ["download.fetch"]


async def test_fetch_without_a_working_audit_log_hands_out_nothing(audited: Any, monkeypatch: Any) -> None:
    alice = await audited.add_user("alice", permissions={"download.create"})
    await audited.add_user("boss", permissions={"download.create", "user.manage"})
    row = await _job(audited, alice.id, "done", frames=5, duration_s=0.2, sha256="00" * 32, size=4,
                     file_name="0123456789abcdef.mp4", id="0123456789abcdef",
                     expires_at=datetime.now(UTC) + timedelta(hours=1))
    (audited.settings.data_dir / "downloads").mkdir(parents=True, exist_ok=True)
    (audited.settings.data_dir / "downloads" / row.file_name).write_bytes(b"abcd")

    async def broken(**_kw: Any) -> None:
        raise ConnectionError("audit database gone")

    monkeypatch.setattr(audited.audit, "record", broken)
    r = await audited.client.get(f"/api/downloads/{row.id}/file", headers=bearer(await audited.login("boss")))
    assert r.status_code == 503 and r.json()["error"] == "audit_unavailable"
    assert b"abcd" not in r.content


class CrashingSessions:
    """A sessionmaker whose sessions fail at commit while ``armed`` (a power cut at the commit)."""

    def __init__(self, maker: Any) -> None:
        self.maker = maker
        self.armed = False

    def __call__(self) -> Any:
        session = self.maker()
        if self.armed:
            async def commit() -> None:
                raise ConnectionError("power cut during COMMIT")

            session.commit = commit
        return session


class ProcessDied(BaseException):
    """Stands in for the process being killed: nothing after it runs, no ``except Exception`` catches it."""


@pytest.mark.parametrize("crash", ["none", "commit", "audit_append", "killed_after_append"])
async def test_a_crash_between_file_and_done_never_leaves_done_without_evidence(audited: Any, monkeypatch: Any,
                                                                                crash: str) -> None:
    alice = await audited.add_user("alice", permissions={"download.create"})
    row = await _job(audited, alice.id, "encoding", id="c0ffee00c0ffee00")
    folder = audited.settings.data_dir / "downloads"
    folder.mkdir(parents=True, exist_ok=True)
    content = b"\x00\x00\x00\x18ftypisom" + b"x" * 1000
    out = folder / f"{row.id}.mp4"
    out.write_bytes(content)  # "file written"
    result = ExportResult(path=out, sha256=hashlib.sha256(content).hexdigest(), bytes=len(content), frames=25,
                          duration_s=1.0, wall_s=0.5, width=640, height=360, start_time=time.time() - 2)

    sessions = CrashingSessions(audited.sessionmaker)
    manager = DownloadManager(WatermarkConfig.from_settings(audited.settings), sessions, audit=audited.audit)
    if crash == "commit":
        sessions.armed = True
    elif crash in ("audit_append", "killed_after_append"):
        original = audited.audit.append

        async def append(session: Any, **kw: Any) -> Any:
            if kw.get("action") != "download.complete":
                return await original(session, **kw)
            if crash == "audit_append":
                raise ConnectionError("audit log unavailable")
            await original(session, **kw)
            raise ProcessDied()

        monkeypatch.setattr(audited.audit, "append", append)
    try:
        await manager._complete(row, result)
    except (ConnectionError, ProcessDied):
        pass  # the crash; what is on the database is what a restart finds
    monkeypatch.undo()
    sessions.armed = False

    # restart: the next platform start fails whatever was left running, and removes its files
    restarted = DownloadManager(WatermarkConfig.from_settings(audited.settings), audited.sessionmaker, audit=audited.audit)
    await restarted.start()
    try:
        async with audited.sessionmaker() as s:
            job = (await s.execute(select(DownloadJob).where(DownloadJob.id == row.id))).scalar_one()
        completes = [e for e in await _entries(audited, "download.complete") if e["detail"]["job_id"] == row.id]
        if crash == "none":
            assert job.state == "done" and job.sha256 == result.sha256 and out.exists()
            assert len(completes) == 1 and completes[0]["detail"]["sha256"] == result.sha256
        else:
            assert job.state == "failed", (crash, job.state)
            assert completes == [], crash  # no evidence of a file that is not handed out
            assert not out.exists(), crash
            expected = RESTARTED if crash in ("commit", "killed_after_append") else "审计日志不可用 / the audit log is unavailable"
            assert job.reason == expected, (crash, job.reason)
        # the invariant, over every job: done only with its evidence
        async with audited.sessionmaker() as s:
            done = (await s.scalars(select(DownloadJob).where(DownloadJob.state == "done"))).all()
        evidenced = {e["detail"]["job_id"] for e in await _entries(audited, "download.complete")}
        assert {j.id for j in done} <= evidenced
    finally:
        await restarted.stop()
