"""Issue 13: a download of a time range (``DownloadManager.submit(window=..., source=...)``), on SQLite and
PostgreSQL, from a history reader with the ``media.open_history`` API (a fake here, yielding real H.264 and
audio units, the way a device's ``s=Download`` or the platform's segments do: from the keyframe before the
window to past its end, at several times real speed).

Checked: the reader is asked for the window, the source and the download speed; ffprobe's duration is the
window's (+- 1 s), with a video and an audio stream; every picture decodes and the picture's first time is
the window's start; the tag names the requester, ``download`` and the window (and ``gbops watermark
inspect`` shows them in Beijing time); the job row and the audit entries carry the window; progress comes
from the reader; bad windows are refused; a reader that ends with nothing fails the job with a reason.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import av
import pytest

from gbcore.ids import ChannelRef
from media_relay.types import AccessUnit
from watermark.config import WatermarkConfig
from watermark.downloads import DownloadManager
from watermark.inspect import inspect_file, run_inspect
from watermark.models import DownloadJob
from watermark.tag import load_or_create_key

from .test_audio_export import aac_units, decode_all, ffprobe, g711_units, h264_units, interleave

CH = "34020000001310000001"
DEV = "34020000001320000001"
W_START = datetime(2026, 3, 1, 1, 0, 0, tzinfo=UTC)  # 09:00 Beijing time
WINDOW = 6
LEAD = 1.6  # the reader starts at the keyframe this long before the window
TAIL = 1.5  # and runs this long past its end


class FakeHistoryReader:
    """``media.open_history``'s reader: ``get()`` (``EOFError`` at the end), ``start_time``, ``progress()``,
    ``codec``, ``params``, ``close()``."""

    def __init__(self, units: list[AccessUnit], start_time: float, *, delay: float = 0.0) -> None:
        self.units = units
        self.start_time: float | None = None
        self._start = start_time
        self.codec = "h264"
        self.params = None
        self.delay = delay
        self.given = 0
        self.closed = False
        self.progress_calls = 0

    async def get(self) -> AccessUnit:
        if self.closed:
            raise EOFError
        await asyncio.sleep(self.delay)
        if self.given >= len(self.units):
            raise EOFError
        self.start_time = self._start  # known once the first unit is there
        au = self.units[self.given]
        self.given += 1
        return au

    def progress(self) -> float:
        self.progress_calls += 1
        return self.given / len(self.units) if self.units else 0.0

    def close(self) -> None:
        self.closed = True


class FakeMedia:
    def __init__(self, units: list[AccessUnit], start_time: float, **kw: Any) -> None:
        self.calls: list[tuple] = []
        self.readers: list[FakeHistoryReader] = []
        self._units, self._start, self._kw = units, start_time, kw

    async def open_history(self, channel: ChannelRef, window: tuple[datetime, datetime], source: str, *,
                           speed: int = 4, transport: str = "udp") -> FakeHistoryReader:
        self.calls.append((channel, window, source, speed, transport))
        reader = FakeHistoryReader(self._units, self._start, **self._kw)
        self.readers.append(reader)
        return reader

    async def open_reader(self, *_a: Any, **_kw: Any) -> Any:
        raise AssertionError("a window download must not read the live stream")


def _history(audio: str | None) -> list[AccessUnit]:
    """The reader's units: H.264 (keyframe each second) + audio from W_START - LEAD to W_END + TAIL."""
    seconds = LEAD + WINDOW + TAIL
    video = h264_units(seconds, base=8_589_000_000)  # near the 33-bit wrap: the clock must follow it
    if audio is None:
        return video
    sound = aac_units(seconds, base=8_589_000_000) if audio == "aac" else g711_units(seconds, audio,
                                                                                     base=8_589_000_000)
    return interleave(video, [au for au in sound if au.pts is not None])


def _wrap(units: list[AccessUnit]) -> list[AccessUnit]:
    wrap = 1 << 33
    return [AccessUnit(au.kind, au.codec, au.data, None if au.pts is None else au.pts % wrap,
                       None if au.dts is None else au.dts % wrap, au.keyframe) for au in units]


async def _entries(portal: Any, action: str) -> list[dict[str, Any]]:
    _, entries = await portal.audit.store.query(actions=[action], limit=500)
    return [json.loads(e.data) for e in entries]


async def _manager(portal: Any, media: Any) -> DownloadManager:
    portal.settings.download_speed = 4
    manager = DownloadManager(WatermarkConfig.from_settings(portal.settings), portal.sessionmaker, audit=portal.audit, media=media)
    await manager.start()
    return manager


async def _wait(manager: DownloadManager, job_id: str, timeout: float = 120) -> DownloadJob:
    task = manager._tasks.get(job_id)
    if task is not None:
        await asyncio.wait_for(asyncio.shield(task), timeout)
    row = await manager.get(job_id)
    assert row is not None
    return row


@pytest.mark.parametrize("audio", ["aac", "g711a"])
async def test_window_download_from_a_history_reader(audited: Any, audio: str, tmp_path: Path) -> None:
    user = await audited.add_user("zhangsan", permissions={"download.create"}, display_name="张三",
                                  phone="13812345678")
    w_end = W_START + timedelta(seconds=WINDOW)
    media = FakeMedia(_wrap(_history(audio)), W_START.timestamp() - LEAD)
    manager = await _manager(audited, media)
    try:
        row = await manager.submit(user=user, channel_id=CH, device_id=DEV, client_ip="10.1.2.3", transport="tcp",
                                   window=(W_START, w_end), source="platform")
        assert (row.window_start, row.window_end, row.source, row.seconds) == (W_START, w_end, "platform", WINDOW)
        done = await _wait(manager, row.id)
    finally:
        await manager.stop()
    assert done.state == "done", done.reason
    # the reader was asked for exactly this window, from the platform, at the download speed
    assert media.calls == [(ChannelRef(DEV, CH), (W_START, w_end), "platform", 4, "tcp")]
    assert media.readers[0].closed and media.readers[0].progress_calls > 0
    # the job row keeps the window (read back from the database)
    assert (done.window_start, done.window_end, done.source) == (W_START, w_end, "platform")
    assert abs((done.media_start - W_START).total_seconds()) <= 0.1
    assert abs((done.media_end - w_end).total_seconds()) <= 1.0

    path = manager.dir / done.file_name
    info = ffprobe(path)
    assert sorted(s["codec_type"] for s in info["streams"]) == ["audio", "video"]
    assert all(s["codec_name"] in ("h264", "aac") for s in info["streams"])
    assert float(info["format"]["duration"]) == pytest.approx(WINDOW, abs=1.0)
    pictures, samples, _rate = decode_all(path)
    assert pictures == done.frames and abs(pictures - WINDOW * 25) <= 2 and len(samples) > 0

    # the tag: the requester, "download", the window, a valid signature
    key = load_or_create_key(audited.settings.data_dir)
    (found,) = inspect_file(path, key.public_key()).tags
    tag = found.tag
    assert found.valid is True and found.keyframes >= WINDOW // 2  # a keyframe every 2 s
    assert (tag.user_id, tag.session_id, tag.device_id, tag.channel_id) == (user.id, done.session_id, DEV, CH)
    assert (tag.kind, tag.window, tag.version) == ("download", (int(W_START.timestamp()), int(w_end.timestamp())), 3)
    lines: list[str] = []
    assert run_inspect(path, data_dir=audited.settings.data_dir, echo=lines.append) == 0
    text = "\n".join(lines)
    assert "下载 / download" in text
    assert "2026-03-01T09:00:00+08:00 ~ 2026-03-01T09:00:06+08:00 (6 s)" in text  # Beijing time, host in UTC

    # the audit log: request and complete both name the window and the source
    (request,) = await _entries(audited, "download.request")
    (complete,) = await _entries(audited, "download.complete")
    for entry in (request, complete):
        d = entry["detail"]
        assert datetime.fromisoformat(d["window_start"]) == W_START
        assert datetime.fromisoformat(d["window_end"]) == w_end
        assert d["source"] == "platform" and d["job_id"] == done.id and d["session_id"] == done.session_id
    assert datetime.fromisoformat(request["detail"]["start"]) == W_START
    assert complete["detail"]["sha256"] == done.sha256 and complete["detail"]["audio"] is True


async def test_progress_is_the_readers(audited: Any) -> None:
    user = await audited.add_user("lisi", permissions={"download.create"})
    media = FakeMedia(_wrap(_history(None)), W_START.timestamp() - LEAD, delay=0.01)
    manager = await _manager(audited, media)
    seen: list[float] = []
    try:
        row = await manager.submit(user=user, channel_id=CH, device_id=DEV, client_ip=None, transport="udp",
                                   window=(W_START, W_START + timedelta(seconds=WINDOW)))
        assert row.source == "device"  # the default source
        while row.id in manager._tasks:
            prog = manager.progress.get(row.id)
            if prog is not None and prog.state == "capturing" and prog.capture_fraction:
                seen.append(prog.percent(row.seconds))
                reader = media.readers[0]
                assert prog.percent(row.seconds) == pytest.approx(80 * reader.given / len(reader.units), abs=3)
                assert prog.eta(row.seconds, __import__("time").monotonic()) is not None
            await asyncio.sleep(0.05)
        done = await _wait(manager, row.id)
    finally:
        await manager.stop()
    assert done.state == "done", done.reason
    assert len(seen) >= 3 and seen == sorted(seen) and 0 < seen[0] < seen[-1] <= 80


async def test_bad_windows_are_refused(audited: Any) -> None:
    user = await audited.add_user("wangwu", permissions={"download.create"})
    manager = await _manager(audited, FakeMedia([], 0))
    try:
        w_end = W_START + timedelta(seconds=10)
        for kw in ({"window": (w_end, W_START)}, {"window": (W_START, W_START)},
                   {"window": (W_START.replace(tzinfo=None), w_end)},
                   {"window": (W_START, w_end), "source": "cloud"},
                   {"seconds": 10, "source": "device"}, {}):
            with pytest.raises(ValueError, match=" / "):
                await manager.submit(user=user, channel_id=CH, device_id=DEV, client_ip=None, transport="udp", **kw)
        assert await manager.list_jobs(None) == []
        assert await _entries(audited, "download.request") == []
    finally:
        await manager.stop()


async def test_a_window_without_recording_fails_with_a_reason(audited: Any) -> None:
    user = await audited.add_user("zhaoliu", permissions={"download.create"})
    media = FakeMedia([], W_START.timestamp())
    manager = await _manager(audited, media)
    try:
        row = await manager.submit(user=user, channel_id=CH, device_id=DEV, client_ip=None, transport="udp",
                                   window=(W_START, W_START + timedelta(seconds=30)), source="device")
        done = await _wait(manager, row.id)
    finally:
        await manager.stop()
    assert done.state == "failed" and "no recording in this window" in done.reason
    assert media.readers[0].closed
    (failed,) = await _entries(audited, "download.failed")
    assert datetime.fromisoformat(failed["detail"]["window_start"]) == W_START
    assert not list(DownloadManager(WatermarkConfig.from_settings(audited.settings), audited.sessionmaker).dir.glob(f"{row.id}*"))


def test_mp4_pictures_show_the_window(tmp_path: Path) -> None:
    """The fake's content really starts before the window: the export cuts it (a sanity check of the
    fixture, so that the duration test above means something)."""
    units = _history(None)
    first, last = units[0].pts, max(au.pts for au in units)
    assert (last - first) / 90_000 == pytest.approx(LEAD + WINDOW + TAIL, abs=0.1)
    assert av is not None


async def test_the_purpose_goes_with_the_job_and_onto_the_audit_log(audited: Any) -> None:
    user = await audited.add_user("wangwu", permissions={"download.create"})
    media = FakeMedia(_wrap(_history(None)), W_START.timestamp() - LEAD)
    manager = await _manager(audited, media)
    try:
        row = await manager.submit(user=user, channel_id=CH, device_id=DEV, client_ip="10.1.2.3", transport="udp",
                                   window=(W_START, W_START + timedelta(seconds=WINDOW)), source="platform",
                                   purpose="案件 2026-118 调取")
        done = await _wait(manager, row.id)
    finally:
        await manager.stop()
    assert done.purpose == "案件 2026-118 调取"
    request, = [e for e in await _entries(audited, "download.request") if e["detail"]["job_id"] == row.id]
    assert request["detail"]["purpose"] == "案件 2026-118 调取"


async def test_a_purpose_with_control_characters_is_refused_before_anything_starts(audited: Any) -> None:
    from tests.portal.conftest import bearer
    from tests.watermark.export.test_downloads_api import _channel

    await _channel(audited)
    await audited.add_user("zhaoliu", permissions={"download.create"})
    h = bearer(await audited.login("zhaoliu"))

    async def post(purpose: str) -> Any:
        return await audited.client.post(f"/api/devices/{DEV}/channels/{CH}/downloads",
                                         json={"seconds": 10, "purpose": purpose}, headers=h)

    for bad in ("case\x07", "a\x1bb", "\x85x"):
        r = await post(bad)
        assert r.status_code == 422 and r.json()["error"] == "bad_purpose", r.text
    r = await post("x" * 201)
    assert r.status_code == 422, r.text
    r = await post("案件\t2026-118")  # a tab is white space, not refused (no media here: 503 after the checks)
    assert r.status_code == 503 and r.json()["error"] == "media_unavailable", r.text
