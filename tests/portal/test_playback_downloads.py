"""``POST .../downloads`` with a recorded range (``{"start", "end", "source"}``) next to the live-clip form,
and the download history (``GET /api/audit/downloads``) showing the requested window in Beijing time
(SQLite and PostgreSQL).  The download manager is a fake following docs/issue13-seams.md."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from .conftest import Portal, bearer
from .org_data import CA1, NVR, build_tree
from .test_playback_fakes import FakeMedia, FakeRecordings, fake_sip

__all__ = ["fake_sip"]


@dataclass
class Job:
    id: str
    channel_id: str
    device_id: str
    user_id: int
    username: str
    seconds: int
    window_start: datetime | None = None
    window_end: datetime | None = None
    source: str | None = None
    state: str = "queued"
    reason: str | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    finished_at: datetime | None = None
    media_start: datetime | None = None
    media_end: datetime | None = None
    duration_s: float | None = None
    size: int | None = None
    sha256: str | None = None
    frames: int | None = None
    session_id: str = "sess-dl"
    watermark_id: str = "WMDL"
    expires_at: datetime | None = None


class FakeDownloads:
    def __init__(self) -> None:
        self.submitted: list[dict[str, Any]] = []
        self.jobs: dict[str, Job] = {}
        self.progress: dict[str, Any] = {}

    async def submit(self, *, user: Any, channel_id: str, device_id: str, seconds: int, client_ip: str | None,
                     transport: str, roles: tuple[str, ...] | None = None,
                     window: tuple[datetime, datetime] | None = None, source: str | None = None) -> Job:
        self.submitted.append({"channel_id": channel_id, "device_id": device_id, "seconds": seconds,
                               "window": window, "source": source, "client_ip": client_ip})
        job = Job(f"job{len(self.jobs) + 1}", channel_id, device_id, user.id, user.username, seconds,
                  window[0] if window else None, window[1] if window else None, source)
        self.jobs[job.id] = job
        return job

    async def get(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id)

    async def list_jobs(self, user_id: int | None, limit: int) -> list[Job]:
        return [j for j in self.jobs.values() if user_id is None or j.user_id == user_id][:limit]

    def file_path(self, row: Job) -> None:
        return None


@pytest.fixture
async def dl(audited: Portal) -> dict[str, Any]:
    tree = await build_tree(audited.registry)
    audited.sip.online.add(NVR)
    audited.app.state.media = FakeMedia()
    audited.app.state.recordings = FakeRecordings()
    downloads = FakeDownloads()
    audited.app.state.downloads = downloads
    await audited.add_user("getter", permissions={"download.create", "audit.read"}, org_nodes=[tree.va])
    await audited.add_user("west", permissions={"download.create"}, org_nodes=[tree.vb])
    return {"downloads": downloads, "getter": bearer(await audited.login("getter")),
            "west": bearer(await audited.login("west"))}


async def test_recorded_range_and_live_clip(audited: Portal, dl: dict[str, Any]) -> None:
    fake: FakeDownloads = dl["downloads"]
    r = await audited.client.post(f"/api/devices/{NVR}/channels/{CA1}/downloads", headers=dl["getter"],
                                  json={"start": "2025-03-01T08:00:00", "end": "2025-03-01T08:10:00"})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["start"] == "2025-03-01T08:00:00+08:00" and job["end"] == "2025-03-01T08:10:00+08:00"
    assert job["source"] == "device" and job["seconds"] == 600
    sub = fake.submitted[-1]
    assert sub["window"] == (datetime(2025, 3, 1, 0, 0, tzinfo=UTC), datetime(2025, 3, 1, 0, 10, tzinfo=UTC))
    assert sub["source"] == "device" and sub["client_ip"] == "127.0.0.1"
    # the platform's recording needs no device online
    audited.sip.online.discard(NVR)
    r = await audited.client.post(f"/api/channels/{CA1}/downloads", headers=dl["getter"],
                                  json={"start": "2025-03-01T00:00:00Z", "end": "2025-03-01T00:00:30Z",
                                        "source": "platform"})
    assert r.status_code == 202 and r.json()["source"] == "platform" and fake.submitted[-1]["seconds"] == 30
    r = await audited.client.post(f"/api/channels/{CA1}/downloads", headers=dl["getter"],
                                  json={"start": "2025-03-01T08:00:00", "end": "2025-03-01T08:10:00"})
    assert r.status_code == 409 and r.json()["error"] == "device_offline"
    audited.sip.online.add(NVR)
    # the live-clip form stays
    r = await audited.client.post(f"/api/channels/{CA1}/downloads", headers=dl["getter"], json={"seconds": 10})
    assert r.status_code == 202 and r.json()["source"] is None and r.json()["start"] is None
    assert fake.submitted[-1]["window"] is None and fake.submitted[-1]["seconds"] == 10
    listed = (await audited.client.get("/api/downloads", headers=dl["getter"])).json()["items"]
    assert [j["source"] for j in listed] == ["device", "platform", None]


@pytest.mark.parametrize(("body", "code"), [
    ({}, "bad_request"),
    ({"seconds": 10, "start": "2025-03-01T08:00:00", "end": "2025-03-01T08:10:00"}, "bad_request"),
    ({"seconds": 10, "source": "platform"}, "bad_request"),
    ({"start": "2025-03-01T08:00:00"}, "bad_time"),
    ({"start": "2025-03-01T08:10:00", "end": "2025-03-01T08:00:00"}, "bad_window"),
    ({"start": "2025-03-01T00:00:00", "end": "2025-03-03T00:00:00"}, "window_too_long"),
])
async def test_bad_download_requests(audited: Portal, dl: dict[str, Any], body: dict[str, Any], code: str) -> None:
    r = await audited.client.post(f"/api/channels/{CA1}/downloads", headers=dl["getter"], json=body)
    assert r.status_code == 422 and r.json()["error"] == code, r.text
    assert not dl["downloads"].submitted


async def test_scope(audited: Portal, dl: dict[str, Any]) -> None:
    r = await audited.client.post(f"/api/channels/{CA1}/downloads", headers=dl["west"],
                                  json={"start": "2025-03-01T08:00:00", "end": "2025-03-01T08:10:00"})
    assert r.status_code == 403 and r.json()["error"] == "channel_forbidden"
    assert not dl["downloads"].submitted


async def test_download_history_shows_the_window(audited: Portal, dl: dict[str, Any]) -> None:
    from audit_log.log import Actor, Target, download_detail

    start = datetime(2025, 3, 1, 0, 0, tzinfo=UTC)
    end = start + timedelta(minutes=10)
    base = download_detail(device_id=NVR, channel_id=CA1, start=start, end=end, session_id="s1", watermark_id="WM1")
    actor = Actor("user", "1", "getter")
    target = Target("channel", f"{NVR}/{CA1}")
    # a recorded range named by its source (start/end are the window), one with an explicit window, a live clip
    await audited.audit.record(actor=actor, action="download.request", target=target,
                               detail={**base, "source": "device", "job_id": "j1"})
    await audited.audit.record(actor=actor, action="download.complete", target=target,
                               detail={**base, "source": "platform", "job_id": "j2", "sha256": "cd" * 32, "bytes": 9,
                                       "window": {"start": "2025-03-01T00:00:00Z", "end": "2025-03-01T00:10:00Z"}})
    await audited.audit.record(actor=actor, action="download.request", target=target, detail={**base, "job_id": "j3"})
    r = await audited.client.get("/api/audit/downloads", headers=dl["getter"])
    assert r.status_code == 200, r.text
    items = {i["action"] + ":" + (i["source"] or "live"): i for i in r.json()["items"]}
    first = items["download.request:device"]
    assert first["window_start"] == "2025-03-01T08:00:00+08:00" and first["window_end"] == "2025-03-01T08:10:00+08:00"
    done = items["download.complete:platform"]
    assert done["window_start"] == "2025-03-01T08:00:00+08:00" and done["sha256"] == "cd" * 32 and done["bytes"] == 9
    live = items["download.request:live"]
    assert live["window_start"] is None and live["start"] is not None
