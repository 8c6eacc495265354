"""``MediaService.open_history``: the source of a time-range download, from the device (``s=Download`` at
a speed, over real RTP/PS) and from platform storage: natural timestamps, EOF at the end, ``start_time``,
``progress()``, and everything freed on every path."""

from __future__ import annotations

import asyncio
import time

import pytest

from media_relay.service import MediaService
from media_relay.signalling import HistoryRequest
from media_relay.stream import MediaError
from tests.media.test_playback_support import (
    CHANNEL,
    T0,
    FakeRecordings,
    HistoryDevice,
    diffs,
    drain,
    vector_frames,
    window,
)

_ports = iter(range(34000, 35000, 20))


@pytest.fixture(scope="module")
def frames(shared_dir):
    return vector_frames(shared_dir)


def media_service(signalling, **kw) -> MediaService:
    low = next(_ports)
    return MediaService(signalling, rtp_ports=(low, low + 19), domain="3402000000", media_host="127.0.0.1",
                        media_ip="127.0.0.1", **kw)


def freed(media: MediaService) -> bool:
    return (media.manager.ports.in_use() == 0 and media.manager.ssrcs.in_use() == 0 and not media.manager.history
            and not media.platform_streams)


async def test_device_download_natural_timestamps_progress_and_end(frames) -> None:
    device = HistoryDevice(frames, frame_interval=0.008, filesize=None)
    media = media_service(device)
    try:
        reader = await asyncio.wait_for(media.open_history(CHANNEL, window(0, 6), "device", speed=4), 10)
        [(_, offer)] = device.invites
        assert offer["history"] == HistoryRequest("download", int(T0.timestamp()), int(T0.timestamp()) + 6, 4)
        assert offer["ssrc"].startswith("1")
        assert reader.codec == "h264" and reader.params is not None and reader.params.width == 640
        assert reader.start_time == T0.timestamp() and reader.audio_codec == "g711a"
        seen = []
        units = []
        while True:
            try:
                units.append(await asyncio.wait_for(reader.get(), 5))
            except EOFError:
                break
            seen.append(reader.progress())
        assert seen == sorted(seen) and seen[0] < 0.05 and seen[-2] > 0.9
        assert reader.progress() == 1.0
        video = [u for u in units if u.kind == "video"]
        assert len(video) == 150 and diffs(units) == [3600] * 149  # natural: the device's own clock
        assert [u for u in units if u.kind == "audio"]  # audio kept for the MP4
        call_id = next(iter(device.history_calls))
        assert device.byes == [(call_id, "end of file (MediaStatus 121)")]
        reader.close()
        assert freed(media)
    finally:
        await media.close()
        await device.stop()


async def test_device_download_progress_from_filesize(frames) -> None:
    device = HistoryDevice(frames, frame_interval=0.004, notify_end=False, filesize=10_000_000)
    media = media_service(device)
    try:
        reader = await asyncio.wait_for(media.open_history(CHANNEL, window(0, 60), "device"), 10)
        await asyncio.sleep(0.3)
        call = next(iter(device.history_calls.values()))
        got = reader.progress()
        assert 0 < got < 1 and abs(got - call.sent_bytes / 10_000_000) < 0.05
        reader.close()  # closing early: BYE, all freed
        await asyncio.sleep(0)
        assert device.byes == [(call.call_id, "download closed")] and freed(media)
    finally:
        await media.close()
        await device.stop()


async def test_platform_download_is_fast_natural_and_ends(frames) -> None:
    recordings = FakeRecordings(frames, seconds=120)
    media = media_service(HistoryDevice(frames), recordings=recordings)
    try:
        t0 = time.monotonic()
        reader = await asyncio.wait_for(media.open_history(CHANNEL, window(20.5, 80), "platform"), 10)
        units = await drain(reader)
        assert time.monotonic() - t0 < 10  # faster than real time: 59.5 s of content
        assert reader.start_time == pytest.approx(T0.timestamp() + 20)  # the keyframe at or before the start
        video = [u for u in units if u.kind == "video"]
        assert len(video) == 60 * 25 and video[0].keyframe
        assert diffs(units) == [3600] * (len(video) - 1)  # nothing dropped, content clock
        assert reader.progress() == 1.0 and reader.codec == "h264" and reader.audio_codec == "g711a"
        reader.close()
        assert freed(media) and recordings.closed_iterators == 1
    finally:
        await media.close()


async def test_platform_download_progress_and_early_close(frames) -> None:
    recordings = FakeRecordings(frames, seconds=600)
    media = media_service(HistoryDevice(frames), recordings=recordings)
    try:
        reader = await asyncio.wait_for(media.open_history(CHANNEL, window(0, 600), "platform"), 10)
        pictures = 0
        while pictures < 25 * 30:  # 30 s of content read
            pictures += (await reader.get()).kind == "video"
        assert 0.04 < reader.progress() < 0.06
        reader.close()
        await asyncio.sleep(0.2)
        assert freed(media) and recordings.closed_iterators == 1  # the storage iterator is closed too
    finally:
        await media.close()


async def test_bad_history_requests(frames) -> None:
    device = HistoryDevice(frames, refuse=488)
    media = media_service(device, recordings=FakeRecordings(frames, seconds=60))
    try:
        for args, code in [((window(10, 5), "device"), "bad_window"),
                           ((window(0, 25 * 3600), "device"), "window_too_long"),
                           ((window(0, 60), "nas"), "bad_source"),
                           ((window(100, 200), "platform"), "no_recording"),
                           ((window(0, 60), "device"), "device_refused")]:
            with pytest.raises(MediaError) as caught:
                await media.open_history(CHANNEL, *args)
            assert caught.value.code == code
            assert " / " in str(caught.value)
        assert freed(media)
    finally:
        await media.close()
