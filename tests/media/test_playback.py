"""Playback in the media relay: the re-timing core, device playback over real RTP/PS (INVITE with the
history request and a history SSRC, re-timed pts at 2x/4x/0.5x, keyframes only at 4x, pause / resume /
seek as MANSRTSP, MediaStatus 121 drained then BYE), platform playback paced by the scale, bad input
that leaves nothing allocated."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from media_relay.playback import Timeline, check_scale, check_window, mansrtsp
from media_relay.service import MediaService
from media_relay.signalling import HistoryRequest
from media_relay.stream import MediaError
from media_relay.types import AccessUnit
from media_relay.viewers import Viewer
from tests.media.test_playback_support import (
    CHANNEL,
    GOP,
    T0,
    TICK,
    FakeRecordings,
    HistoryDevice,
    diffs,
    drain,
    vector_frames,
    window,
)

VIEWER = Viewer(user_id=7, username="alice", client_ip="192.0.2.7")


@pytest.fixture(scope="module")
def frames(shared_dir) -> list[AccessUnit]:
    return vector_frames(shared_dir)


_ports = iter(range(33000, 34000, 20))


def media_service(signalling: Any, **kw: Any) -> MediaService:
    low = next(_ports)
    return MediaService(signalling, rtp_ports=(low, low + 19), domain="3402000000", media_host="127.0.0.1",
                        media_ip="127.0.0.1", **kw)


def freed(media: MediaService) -> bool:
    return (media.manager.ports.in_use() == 0 and media.manager.ssrcs.in_use() == 0 and not media.manager.history
            and not media.platform_streams)


async def until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


# ------------------------------------------------------------------------------------- the core (sans-IO)
def _video(k: int, *, key: bool | None = None, base: int = 0) -> AccessUnit:
    return AccessUnit("video", "h264", b"x", (base + k * TICK) % (1 << 33), None, k % GOP == 0 if key is None else key)


def _window() -> tuple:
    return window(0, 600)


@pytest.mark.parametrize(("scale", "step"), [(1.0, 3600), (2.0, 1800), (0.5, 7200), (0.25, 14400)])
def test_retimed_pts_run_at_wall_speed(scale: float, step: int) -> None:
    tl = Timeline(_window(), scale=scale)
    out = [tl.feed(_video(k, base=123_456)) for k in range(GOP)]
    assert [b.pts - a.pts for a, b in zip(out, out[1:], strict=False)] == [step] * (GOP - 1)
    assert out[0].keyframe and out[0].data == b"x"


def test_fast_scales_pass_keyframes_only_and_no_audio() -> None:
    tl = Timeline(_window(), scale=4.0)
    units = []
    for k in range(4 * GOP):
        units += [_video(k), AccessUnit("audio", "g711a", b"a", k * TICK + 10)]
    out = [u for u in (tl.feed(u) for u in units) if u is not None]
    assert all(u.kind == "video" and u.keyframe for u in out) and len(out) == 4
    assert diffs(out) == [GOP * TICK // 4] * 3  # 2 s of content per 0.5 s of wall time
    tl8 = Timeline(_window(), scale=8.0)
    out8 = [u for u in (tl8.feed(_video(k)) for k in range(4 * GOP)) if u is not None]
    assert diffs(out8) == [GOP * TICK // 8] * 3


def test_speed_change_continues_without_a_jump_and_seek_rebases() -> None:
    tl = Timeline(_window())
    out = [tl.feed(_video(k)) for k in range(10)]
    tl.set_scale(2.0)
    out += [tl.feed(_video(k)) for k in range(10, 20)]
    assert diffs(out) == [3600] * 9 + [1800] * 10
    assert tl.position == pytest.approx(19 / 25)
    tl.seek(300.0)  # the device jumps: its first keyframe after the seek re-bases everything
    assert tl.feed(_video(7501, key=False, base=5_000_000)) is None  # not a keyframe: dropped
    after = [tl.feed(_video(k, base=5_000_000, key=k == 7500)) for k in range(7500, 7505)]
    assert after[0].pts == out[-1].pts + 3600 and diffs(after) == [1800] * 4
    assert tl.position == pytest.approx(300 + 4 / 25)


def test_pts_wrap_is_followed() -> None:
    tl = Timeline(_window(), scale=2.0)
    base = (1 << 33) - 5 * TICK
    out = [tl.feed(_video(k, base=base)) for k in range(12)]
    assert diffs(out) == [1800] * 11
    assert tl.position == pytest.approx(11 / 25)


def test_natural_timestamps_for_downloads() -> None:
    tl = Timeline(_window(), retime=False)
    units = [_video(k, base=77) for k in range(5)]
    assert [tl.feed(u) for u in units] == units


@given(st.lists(st.tuples(st.integers(0, (1 << 33) - 1), st.booleans(), st.sampled_from(["video", "audio"])),
                max_size=60),
       st.sampled_from([0.25, 0.5, 1.0, 2.0, 4.0, 8.0]))
def test_hostile_timestamps_never_go_backwards(units: list, scale: float) -> None:
    tl = Timeline(_window(), scale=scale)
    last = None
    for pts, key, kind in units:
        out = tl.feed(AccessUnit(kind, "h264", b"", pts, None, key))
        if out is not None and out.kind == "video":
            assert 0 <= out.pts < (1 << 33)
            if last is not None:
                assert (out.pts - last) % (1 << 33) < (1 << 32)  # forward, modulo the wrap
            last = out.pts
        assert 0.0 <= tl.position <= 600.0


def test_mansrtsp_bodies() -> None:
    assert mansrtsp("pause", 1) == b"PAUSE RTSP/1.0\r\nCSeq: 1\r\nPauseTime: now\r\n\r\n"
    assert mansrtsp("resume", 2) == b"PLAY RTSP/1.0\r\nCSeq: 2\r\nRange: npt=now-\r\n\r\n"
    assert mansrtsp("seek", 3, position=30) == b"PLAY RTSP/1.0\r\nCSeq: 3\r\nRange: npt=30-\r\n\r\n"
    assert mansrtsp("seek", 4, position=12.5) == b"PLAY RTSP/1.0\r\nCSeq: 4\r\nRange: npt=12.5-\r\n\r\n"
    assert mansrtsp("speed", 5, scale=2.0) == b"PLAY RTSP/1.0\r\nCSeq: 5\r\nScale: 2.0\r\n\r\n"
    assert mansrtsp("speed", 6, scale=0.25) == b"PLAY RTSP/1.0\r\nCSeq: 6\r\nScale: 0.25\r\n\r\n"


def test_validation_codes() -> None:
    start, end = window(0, 60)
    for bad, code in [((end, start), "bad_window"), ((start, start), "bad_window"),
                      ((start.replace(tzinfo=None), end.replace(tzinfo=None)), "bad_window"),
                      ("yesterday", "bad_window"), (window(0, 25 * 3600), "window_too_long")]:
        with pytest.raises(MediaError) as caught:
            check_window(bad, 24)
        assert caught.value.code == code and " / " in str(caught.value)
    assert check_window(window(0, 24 * 3600), 24) == window(0, 24 * 3600)
    for bad in (3, 0, -1, "fast", None, float("nan")):
        with pytest.raises(MediaError) as caught:
            check_scale(bad)
        assert caught.value.code == "bad_scale"
    assert check_scale("0.25") == 0.25


# ------------------------------------------------------------------------------------- device playback
async def test_device_playback_invites_history_with_a_history_ssrc(frames) -> None:
    device = HistoryDevice(frames, frame_interval=0.01)
    media = media_service(device)
    try:
        session = await asyncio.wait_for(
            media.open_viewer(CHANNEL, VIEWER, kind="playback", window=window(0, 4), source="device"), 10)
        [(channel, offer)] = device.invites
        assert channel == CHANNEL
        assert offer["history"] == HistoryRequest("playback", int(T0.timestamp()), int(T0.timestamp()) + 4, None)
        assert offer["ssrc"].startswith("1") and len(offer["ssrc"]) == 10
        assert offer["media_port"] == session.reader.stream.port and (CHANNEL, "main") not in media.manager.streams
        assert session.kind == "playback" and session.history_source == "device" and session.window == window(0, 4)
        state = media.session_state(session.session_id)
        assert state["kind"] == "playback" and state["source"] == "device" and state["state"] == "waiting"
        assert media.open_output(session.session_id, "flv") is session  # composed unchanged: the reader
        first = await asyncio.wait_for(session.source.get(), 5)
        assert first.keyframe and session.source.codec == "h264"
    finally:
        await media.close()
        await device.stop()
    assert freed(media) and device.byes


@pytest.mark.parametrize("scale", [2.0, 4.0, 0.5])
async def test_device_speed_is_sent_and_retimes_the_output(frames, scale: float) -> None:
    device = HistoryDevice(frames, frame_interval=0.004, notify_end=True)
    media = media_service(device)
    try:
        session = await asyncio.wait_for(
            media.open_viewer(CHANNEL, VIEWER, kind="playback", window=window(0, 12), source="device"), 10)
        state = await media.control(session.session_id, "speed", scale=scale)
        assert state["scale"] == scale and not state["paused"]
        call_id = session.reader.stream.call_id
        assert device.infos[-1] == (call_id, f"PLAY RTSP/1.0\r\nCSeq: 1\r\nScale: {scale:.1f}\r\n\r\n".encode(),
                                    "Application/MANSRTSP")
        units = await drain(session.reader)
    finally:
        await media.close()
        await device.stop()
    video = [u for u in units if u.kind == "video"]
    steps = diffs(units)
    if scale >= 4:
        changed = next(i for i, u in enumerate(units) if u.kind == "video" and not u.keyframe) if any(
            not u.keyframe for u in video) else 0
        tail = units[changed:]
        last_delta = next(i for i in range(len(tail)) if all(u.keyframe and u.kind == "video" for u in tail[i:]))
        fast = tail[last_delta:]
        assert len(fast) >= 3 and all(u.kind == "video" and u.keyframe for u in fast)
        assert set(diffs(fast)[1:]) == {round(GOP * TICK / scale)}  # keyframes 2 s of content apart
    else:
        target = round(TICK / scale)
        i = steps.index(target)  # 1x (3600) for what arrived before the change, then the new step
        assert set(steps[i:]) == {target} and len(steps) - i > 100
        assert all(s == 3600 for s in steps[:i])
        audio = [u for u in units if u.kind == "audio"]
        assert audio  # audio stays below 4x


async def test_pause_keeps_the_session_resume_and_seek(frames) -> None:
    device = HistoryDevice(frames, frame_interval=0.02)
    media = media_service(device, attach_timeout=0.0)
    try:
        session = await asyncio.wait_for(
            media.open_viewer(CHANNEL, VIEWER, kind="playback", window=window(0, 60), source="device"), 10)
        sid = session.session_id
        call_id = session.reader.stream.call_id
        await until(lambda: media.session_state(sid)["position"] > 0.2)
        state = await media.control(sid, "pause")
        assert state["paused"] and state["state"] == "paused"
        assert device.infos[-1][1] == b"PAUSE RTSP/1.0\r\nCSeq: 1\r\nPauseTime: now\r\n\r\n"
        await asyncio.sleep(0.3)
        held = media.session_state(sid)["position"]
        await asyncio.sleep(0.4)
        await media._sweep()  # past its attach deadline, but paused: kept
        assert sid in media.sessions and not session.reader.closed
        assert media.session_state(sid)["position"] == held  # nothing advances while paused
        state = await media.control(sid, "resume")
        assert not state["paused"]
        assert device.infos[-1][1] == b"PLAY RTSP/1.0\r\nCSeq: 2\r\nRange: npt=now-\r\n\r\n"
        await until(lambda: media.session_state(sid)["position"] > held + 0.1)
        state = await media.control(sid, "seek", position=30)
        assert state["position"] == 30
        assert device.infos[-1] == (call_id, b"PLAY RTSP/1.0\r\nCSeq: 3\r\nRange: npt=30-\r\n\r\n",
                                    "Application/MANSRTSP")
        await until(lambda: media.session_state(sid)["position"] > 30.1)
        assert media.session_state(sid)["position"] < 33
        for action, kw, code in [("seek", {"position": 61}, "bad_position"), ("seek", {"position": -1}, "bad_position"),
                                 ("seek", {}, "bad_position"), ("speed", {"scale": 3}, "bad_scale"),
                                 ("rewind", {}, "bad_action")]:
            with pytest.raises(MediaError) as caught:
                await media.control(sid, action, **kw)
            assert caught.value.code == code
        with pytest.raises(MediaError) as caught:
            await media.control("nope", "pause")
        assert caught.value.code == "no_session"
        await media._sweep()  # playing and past the deadline without an output: now it goes
        assert sid not in media.sessions
    finally:
        await media.close()
        await device.stop()
    assert freed(media) and (call_id, "viewer session closed") in device.byes


async def test_media_status_121_drains_then_byes(frames) -> None:
    device = HistoryDevice(frames, frame_interval=0.002)
    media = media_service(device)
    try:
        session = await asyncio.wait_for(
            media.open_viewer(CHANNEL, VIEWER, kind="playback", window=window(0, 4), source="device"), 10)
        call_id = session.reader.stream.call_id
        units = await drain(session.reader)
        assert device.byes == [(call_id, "end of file (MediaStatus 121)")]
        video = [u for u in units if u.kind == "video"]
        call = device.history_calls[call_id]
        assert call.sent_frames == 100 and len(video) == 100  # every picture, the last ones drained
        assert diffs(units) == [3600] * 99
        assert media.session_state(session.session_id)["state"] == "ended"
        await media._sweep()
        assert session.session_id not in media.sessions and freed(media)
    finally:
        await media.close()
        await device.stop()


@pytest.mark.parametrize("how", ["bye", "offline"])
async def test_device_bye_or_offline_ends_playback(frames, how: str) -> None:
    device = HistoryDevice(frames, frame_interval=0.02)
    media = media_service(device)
    try:
        session = await asyncio.wait_for(
            media.open_viewer(CHANNEL, VIEWER, kind="playback", window=window(0, 60), source="device"), 10)
        call_id = session.reader.stream.call_id
        if how == "bye":
            device.device_hung_up(call_id)
        else:
            device.device_went_offline(CHANNEL.device_id)
        await drain(session.reader, 5)
        assert media.manager.ports.in_use() == 0 and media.manager.ssrcs.in_use() == 0
        if how == "bye":
            assert device.byes == []  # the device ended it: no BYE back
        with pytest.raises(MediaError) as caught:
            await media.control(session.session_id, "pause")
        assert caught.value.code == "control_refused"
    finally:
        await media.close()
        await device.stop()
    assert freed(media)


# ------------------------------------------------------------------------------------- bad input
@dataclass
class Plan:
    on: bool = False
    code: str | None = "C0DE"
    released: int = 0

    def release(self) -> None:
        self.released += 1


class Factory:
    def __init__(self) -> None:
        self.plans: list[tuple[str, Any, Plan]] = []

    def plan(self, viewer: Viewer, channel: Any, session_id: str, *, kind: str = "live", window: Any = None) -> Plan:
        plan = Plan()
        self.plans.append((kind, window, plan))
        return plan

    def draw(self, reader: Any, plan: Any, output: str) -> None:
        return None

    def tag(self, source: Any, plan: Any) -> Any:
        return source


@pytest.mark.parametrize("status", [488, 486])
async def test_a_device_refusing_leaves_nothing_allocated(frames, status: int) -> None:
    device = HistoryDevice(frames, refuse=status)
    factory = Factory()
    media = media_service(device, transforms=factory)
    try:
        with pytest.raises(MediaError) as caught:
            await media.open_viewer(CHANNEL, VIEWER, kind="playback", window=window(0, 60), source="device")
        assert caught.value.code == "device_refused" and caught.value.status == status
        assert freed(media) and not media.sessions and device.invites
        [(kind, planned_window, plan)] = factory.plans
        assert kind == "playback" and planned_window == window(0, 60) and plan.released == 1
    finally:
        await media.close()


async def test_bad_windows_and_sources_allocate_nothing(frames) -> None:
    device = HistoryDevice(frames)
    factory = Factory()
    media = media_service(device, transforms=factory, max_window_hours=2)
    try:
        for kw, code in [({"window": window(60, 0)}, "bad_window"), ({"window": None}, "bad_window"),
                         ({"window": window(0, 3 * 3600)}, "window_too_long"),
                         ({"window": window(0, 60), "source": "cloud"}, "bad_source"),
                         ({"window": window(0, 60), "source": "platform"}, "no_recordings"),
                         ({"window": window(0, 60), "transport": "sctp"}, "bad_transport")]:
            with pytest.raises(MediaError) as caught:
                await media.open_viewer(CHANNEL, VIEWER, kind="playback", **kw)
            assert caught.value.code == code, kw
        with pytest.raises(MediaError) as caught:
            await media.open_history(CHANNEL, window(0, 60), "device", speed=0)
        assert caught.value.code == "bad_speed"
        device.online.clear()
        with pytest.raises(MediaError) as caught:
            await media.open_viewer(CHANNEL, VIEWER, kind="playback", window=window(0, 60))
        assert caught.value.code == "device_offline"
        assert not device.invites and freed(media) and not media.sessions
        assert all(plan.released == 1 for _, _, plan in factory.plans)
    finally:
        await media.close()


async def test_live_sessions_cannot_be_controlled(frames) -> None:
    from media_relay.service import ViewerSession

    media = media_service(HistoryDevice(frames))
    try:
        fake = ViewerSession("live-1", 1, "bob", CHANNEL, None, None, 0.0, 1e12)  # type: ignore[arg-type]
        media.sessions["live-1"] = fake
        with pytest.raises(MediaError) as caught:
            await media.control("live-1", "pause")
        assert caught.value.code == "not_playback"
        del media.sessions["live-1"]
    finally:
        await media.close()


# ------------------------------------------------------------------------------------- platform playback
async def test_platform_playback_is_paced_by_the_scale_and_ends(frames) -> None:
    recordings = FakeRecordings(frames)
    factory = Factory()
    media = media_service(HistoryDevice(frames), recordings=recordings, transforms=factory)
    try:
        t0 = time.monotonic()
        session = await asyncio.wait_for(
            media.open_viewer(CHANNEL, VIEWER, kind="playback", window=window(10, 13), source="platform"), 10)
        assert factory.plans[0][0] == "playback"
        units = await drain(session.reader)
        took = time.monotonic() - t0
        assert 2.5 < took < 4.5  # 3 s of content at 1x
        video = [u for u in units if u.kind == "video"]
        assert len(video) == 75 and video[0].keyframe and diffs(units) == [3600] * 74
        assert [u for u in units if u.kind == "audio"]
        assert recordings.opened == [(CHANNEL, *window(10, 13))]
        assert media.session_state(session.session_id)["state"] == "ended"
        assert media.session_state(session.session_id)["position"] == pytest.approx(3 - 1 / 25, abs=0.01)

        session = await asyncio.wait_for(
            media.open_viewer(CHANNEL, VIEWER, kind="playback", window=window(10, 18), source="platform"), 10)
        t0 = time.monotonic()
        await media.control(session.session_id, "speed", scale=4)
        units = await drain(session.reader)
        took = time.monotonic() - t0
        assert 0.9 < took < 2.2  # 8 s of content at 4x: 2 s
        fast = units[1:]
        assert fast and all(u.kind == "video" and u.keyframe for u in fast)
        assert set(diffs(fast)) == {GOP * TICK // 4}
    finally:
        await media.close()
    assert freed(media) and recordings.closed_iterators == 2


async def test_platform_pause_seek_and_flv_output(frames) -> None:
    from media_relay.outputs.flv import TAG_VIDEO, flv_stream, iter_tags

    recordings = FakeRecordings(frames)
    media = media_service(HistoryDevice(frames), recordings=recordings, attach_timeout=0.0)
    try:
        session = await asyncio.wait_for(
            media.open_viewer(CHANNEL, VIEWER, kind="playback", window=window(0, 40), source="platform"), 10)
        sid = session.session_id
        await media.control(sid, "pause")
        await asyncio.sleep(0.3)
        held = media.session_state(sid)["position"]
        await asyncio.sleep(0.3)
        await media._sweep()
        assert sid in media.sessions and media.session_state(sid)["position"] == held
        await media.control(sid, "seek", position=36)
        await media.control(sid, "resume")
        await media.control(sid, "speed", scale=2)
        assert media.open_output(sid, "flv") is session
        t0 = time.monotonic()
        body = b""
        async for chunk in flv_stream(session.source):
            body += chunk
        took = time.monotonic() - t0
        assert 1.2 < took < 3.2  # 4 s of content from 36 s at 2x
        assert recordings.opened[-1] == (CHANNEL, *window(36, 40))
        video = [t for t in iter_tags(body) if t.type == TAG_VIDEO and t.body[1] == 1]
        stamps = [t.timestamp for t in video]
        assert 95 <= len(video) <= 101
        # the FLV clock runs at wall speed: 4 s of content in ~2 s of timestamps (20 ms a picture)
        assert stamps[-1] - stamps[0] == pytest.approx(20 * (len(video) - 1), abs=2)
        assert media.session_state(sid)["position"] == pytest.approx(40 - 1 / 25, abs=0.05)
    finally:
        await media.close()
    assert freed(media)


async def test_platform_window_without_recording(frames) -> None:
    recordings = FakeRecordings(frames, seconds=60)
    media = media_service(HistoryDevice(frames), recordings=recordings)
    try:
        with pytest.raises(MediaError) as caught:
            await media.open_viewer(CHANNEL, VIEWER, kind="playback", window=window(120, 180), source="platform")
        assert caught.value.code == "no_recording"
        assert freed(media) and not media.sessions
    finally:
        await media.close()
