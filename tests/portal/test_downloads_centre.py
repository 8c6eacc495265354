"""The download centre's API (issue 18): a running job's measured ETA and speed, the requester's and the
channel's names, everyone's jobs for a user manager only within their data scope, filters by user /
channel / creation time with paging, and the history as CSV in Beijing time (SQLite and PostgreSQL)."""

from __future__ import annotations

import csv
import io
import time
from datetime import UTC, datetime, timedelta

import pytest

from gbcore.ids import ChannelRef
from watermark.downloads import JobProgress
from watermark.models import DownloadJob

from .conftest import Portal, bearer

DEV = "34020000001320000001"
CH1 = "34020000001310000001"
CH2 = "34020000001310000002"
T0 = datetime(2025, 3, 1, 2, 0, tzinfo=UTC)  # 10:00 Beijing


async def _channels(portal: Portal) -> None:
    from sqlalchemy import insert

    from device_registry.models import Channel, Device

    now = datetime.now(UTC)
    async with portal.sessionmaker() as s:
        await s.execute(insert(Device).values(device_id=DEV, online=True, keepalive_interval=60, created_at=now,
                                              updated_at=now))
        for ch, name in ((CH1, "大门 Gate"), (CH2, "仓库 Store")):
            await s.execute(insert(Channel).values(device_id=DEV, channel_id=ch, name=name, online=True,
                                                   status="ON", first_seen=now, updated_at=now))
        await s.commit()


async def _job(portal: Portal, user, job_id: str, channel_id: str, state: str, created: datetime,
               **kw) -> DownloadJob:
    row = DownloadJob(id=job_id, user_id=user.id, username=user.username, channel_id=channel_id, device_id=DEV,
                      seconds=10, state=state, session_id=f"dl-{job_id}", watermark_id=f"W{job_id[:7]}",
                      created_at=created, **kw)
    async with portal.sessionmaker() as session:
        session.add(row)
        await session.commit()
    return row


@pytest.fixture
async def people(audited: Portal) -> dict:
    await _channels(audited)
    alice = await audited.add_user("alice", permissions={"download.create"}, display_name="张三")
    bob = await audited.add_user("bob", permissions={"download.create"})
    boss = await audited.add_user("boss", permissions={"download.create", "user.manage"},
                                  channels=[ChannelRef(DEV, CH1)], display_name="李经理")
    root = await audited.add_user("root", permissions={"download.create", "user.manage"})
    return {"alice": alice, "bob": bob, "boss": boss, "root": root,
            "h": {n: bearer(await audited.login(n)) for n in ("alice", "bob", "boss", "root")}}


async def test_eta_is_null_before_progress_and_measured_while_running(audited: Portal, people) -> None:
    h = people["h"]["alice"]
    assert (await audited.client.get("/api/downloads", headers=h)).json() == {"items": [], "total": 0,
                                                                               "offset": 0, "limit": 100}
    manager = audited.app.state.downloads
    row = await _job(audited, people["alice"], "run0000000000001", CH1, "capturing", datetime.now(UTC))
    prog = JobProgress(state="capturing", capture_started=time.monotonic())
    manager.progress[row.id] = prog
    try:
        job = (await audited.client.get(f"/api/downloads/{row.id}", headers=h)).json()
        assert job["state"] == "capturing" and job["percent"] == 0
        assert job["eta_seconds"] is None and job["speed"] is None
        assert job["username"] == "alice" and job["display_name"] == "张三" and job["channel_name"] == "大门 Gate"

        # 4 s in, 2 of 10 s captured: 16 % done -> about 4 x 84 / 16 = 21 s left, at half real time
        # (the bounds follow the time the request itself took)
        prog.capture_started = began = time.monotonic() - 4.0
        prog.seconds_captured = 2.0
        items = (await audited.client.get("/api/downloads", headers=h)).json()["items"]
        spent = time.monotonic() - began
        job = items[0]
        assert job["job_id"] == row.id and job["percent"] == 16.0
        assert 4.0 * 84 / 16 - 0.1 <= job["eta_seconds"] <= spent * 84 / 16 + 0.1, (job, spent)
        assert 2.0 / spent - 0.01 <= job["speed"] <= 0.5 + 0.01, (job, spent)

        # finished: no estimate, the finishing time is given
        del manager.progress[row.id]
        async with audited.sessionmaker() as s:
            stored = await s.get(DownloadJob, row.id)
            stored.state, stored.finished_at = "done", datetime.now(UTC)
            await s.commit()
        job = (await audited.client.get(f"/api/downloads/{row.id}", headers=h)).json()
        assert job["state"] == "done" and job["eta_seconds"] is None and job["finished_at"]
    finally:
        manager.progress.pop(row.id, None)


async def test_everyone_only_for_managers_and_only_within_scope(audited: Portal, people) -> None:
    await _job(audited, people["alice"], "a1ch1000000000000", CH1, "done", T0)
    await _job(audited, people["alice"], "a2ch2000000000000", CH2, "failed", T0 + timedelta(minutes=1),
               reason="x / x")
    await _job(audited, people["bob"], "b1ch1000000000000", CH1, "done", T0 + timedelta(minutes=2))
    await _job(audited, people["boss"], "m1ch2000000000000", CH2, "done", T0 + timedelta(minutes=3))
    h = people["h"]

    for plain in ("alice", "bob"):
        r = await audited.client.get("/api/downloads", params={"all": "true"}, headers=h[plain])
        assert r.status_code == 403 and r.json()["error"] == "forbidden"
        r = await audited.client.get("/api/downloads.csv", params={"all": "true"}, headers=h[plain])
        assert r.status_code == 403
    mine = (await audited.client.get("/api/downloads", headers=h["alice"])).json()
    assert [i["job_id"] for i in mine["items"]] == ["a2ch2000000000000", "a1ch1000000000000"]

    # boss's scope is CH1: others' jobs of CH1, and boss's own
    seen = (await audited.client.get("/api/downloads", params={"all": "true"}, headers=h["boss"])).json()
    assert [i["job_id"] for i in seen["items"]] == ["m1ch2000000000000", "b1ch1000000000000", "a1ch1000000000000"]
    assert seen["total"] == 3
    by_id = {i["job_id"]: i for i in seen["items"]}
    assert by_id["a1ch1000000000000"]["display_name"] == "张三"
    assert by_id["b1ch1000000000000"]["username"] == "bob"
    # without all=true: boss's own only
    own = (await audited.client.get("/api/downloads", headers=h["boss"])).json()
    assert [i["job_id"] for i in own["items"]] == ["m1ch2000000000000"]

    everyone = (await audited.client.get("/api/downloads", params={"all": "true"}, headers=h["root"])).json()
    assert everyone["total"] == 4

    # filters: user, channel (device + channel), creation time; paging with total
    q = {"all": "true", "user": "alice"}
    r = (await audited.client.get("/api/downloads", params=q, headers=h["root"])).json()
    assert [i["job_id"] for i in r["items"]] == ["a2ch2000000000000", "a1ch1000000000000"]
    q = {"all": "true", "device_id": DEV, "channel_id": CH2}
    r = (await audited.client.get("/api/downloads", params=q, headers=h["root"])).json()
    assert {i["job_id"] for i in r["items"]} == {"a2ch2000000000000", "m1ch2000000000000"}
    q = {"all": "true", "since": "2025-03-01T10:01:00", "until": "2025-03-01T10:03:00"}  # Beijing time
    r = (await audited.client.get("/api/downloads", params=q, headers=h["root"])).json()
    assert [i["job_id"] for i in r["items"]] == ["b1ch1000000000000", "a2ch2000000000000"]
    r = (await audited.client.get("/api/downloads", params={"all": "true", "offset": 1, "limit": 2},
                                  headers=h["root"])).json()
    assert r["total"] == 4 and r["offset"] == 1 and r["limit"] == 2
    assert [i["job_id"] for i in r["items"]] == ["b1ch1000000000000", "a2ch2000000000000"]
    r = await audited.client.get("/api/downloads", params={"since": "yesterday"}, headers=h["root"])
    assert r.status_code == 422 and r.json()["error"] == "bad_time"


async def test_history_csv(audited: Portal, people) -> None:
    digest = "ab" * 32
    await _job(audited, people["alice"], "a1ch1000000000000", CH1, "done", T0, finished_at=T0 + timedelta(seconds=30),
               window_start=T0 - timedelta(hours=1), window_end=T0 - timedelta(minutes=50), source="device",
               size=4_200_000, sha256=digest, duration_s=600.0, client_ip="10.0.0.5", purpose="案件 2025-031")
    # a purpose a spreadsheet would run as a formula (CSV injection) is written as text
    await _job(audited, people["bob"], "b1ch2000000000000", CH2, "failed", T0 + timedelta(minutes=2),
               reason="设备离线 / device offline", purpose='=HYPERLINK("http://x")')
    h = people["h"]
    r = await audited.client.get("/api/downloads.csv", params={"all": "true"}, headers=h["root"])
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    text = r.content.decode("utf-8")
    assert text.startswith("\ufeff")
    rows = list(csv.DictReader(io.StringIO(text[1:])))
    assert [row["任务编号 / job id"] for row in rows] == ["b1ch2000000000000", "a1ch1000000000000"]
    a = rows[1]
    assert a["用户名 / username"] == "alice" and a["姓名 / display name"] == "张三"
    assert a["创建时间 / created"] == "2025-03-01 10:00:00"  # Beijing
    assert a["完成时间 / finished"] == "2025-03-01 10:00:30"
    assert (a["设备编号 / device id"], a["通道编号 / channel id"], a["通道名称 / channel name"]) == (DEV, CH1,
                                                                                                "大门 Gate")
    assert a["录像开始 / video start"] == "2025-03-01 09:00:00" and a["录像结束 / video end"] == "2025-03-01 09:10:00"
    assert a["类型 / kind"] == "设备录像 / device recording"
    assert a["文件大小（字节）/ size (bytes)"] == "4200000" and a["SHA-256"] == digest
    assert a["水印编号 / watermark id"] == "Wa1ch100" and a["结果 / result"] == "成功 / done"
    assert a["客户端 IP / client IP"] == "10.0.0.5"
    assert a["用途 / purpose"] == "案件 2025-031" and rows[0]["用途 / purpose"] == "'=HYPERLINK(\"http://x\")"
    b = rows[0]
    assert b["结果 / result"] == "失败 / failed" and b["原因 / reason"] == "设备离线 / device offline"
    assert b["通道名称 / channel name"] == "仓库 Store" and b["文件大小（字节）/ size (bytes)"] == ""

    # the same filters as the list; a plain user's export is their own history
    r = await audited.client.get("/api/downloads.csv", params={"all": "true", "user": "bob"}, headers=h["root"])
    assert [row["用户名 / username"] for row in csv.DictReader(io.StringIO(r.content.decode()[1:]))] == ["bob"]
    r = await audited.client.get("/api/downloads.csv", headers=h["alice"])
    assert [row["任务编号 / job id"] for row in csv.DictReader(io.StringIO(r.content.decode()[1:]))] == \
        ["a1ch1000000000000"]
