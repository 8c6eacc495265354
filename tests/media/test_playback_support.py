"""Doubles for the history tests (no tests here): a device with recordings that answers history INVITEs
and sends real RTP/PS over UDP (pictures from a real PS vector, re-muxed with the recording's natural
timestamps, G.711 audio beside them) and honours MANSRTSP; a fake platform storage with the
``RecordingService`` reading API."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gbcore.ids import ChannelRef
from media_relay.ps import PsDemuxer, PsMuxer
from media_relay.recording.types import SegmentInfo, TimedUnit
from media_relay.rtp import packetize_ps
from media_relay.signalling import (
    MANSRTSP_TYPE,
    DeviceOffline,
    DeviceRefused,
    HistoryRequest,
    InviteAnswer,
    MediaFileEnded,
)
from media_relay.types import AccessUnit
from tests.media.fake_signalling import FakeSignalling

DEV = "34020000001320000001"
CHANNEL = ChannelRef(DEV, "34020000001310000001")
FPS = 25
TICK = 90_000 // FPS  # 3600
GOP = 50  # the vector's keyframe interval (frames)
T0 = datetime(2025, 1, 1, 0, 0, tzinfo=UTC)  # 08:00 Beijing time
PTS_BASE = 900_000


def vector_frames(shared_dir: Path) -> list[AccessUnit]:
    """250 H.264 pictures (5 GOPs of 50, 640x360) from a real PS capture."""
    d = PsDemuxer()
    data = (shared_dir / "vectors" / "ps" / "zlm_h264_aac.ps").read_bytes()
    video = [au for au in d.feed(data) + d.flush(eof=True) if au.kind == "video"]
    assert video[0].keyframe and video[GOP].keyframe
    return video[: 5 * GOP]


def content(frames: list[AccessUnit], k: int, *, base: int = PTS_BASE) -> AccessUnit:
    """Picture ``k`` of the recording (k frames after the window start), natural timestamps."""
    src = frames[k % len(frames)]
    pts = (base + k * TICK) % (1 << 33)
    return AccessUnit("video", "h264", src.data, pts, None, src.keyframe)


def audio(k: int, *, base: int = PTS_BASE) -> AccessUnit:
    return AccessUnit("audio", "g711a", b"\xd5" * 320, (base + k * TICK + 100) % (1 << 33))


# ------------------------------------------------------------------------------------- the device
@dataclass
class Call:
    call_id: str
    port: int
    ssrc: int
    history: HistoryRequest
    frame: int = 0  # next picture to send (from the window start)
    scale: float = 1.0
    paused: bool = False
    seek_to: float | None = None
    stopped: bool = False
    sent_frames: int = 0
    sent_bytes: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None


class HistoryDevice(FakeSignalling):
    """A signalling double whose one device has recordings: history INVITEs get an answer and RTP/PS over
    UDP, ``frame_interval`` seconds per picture at scale 1 (real time would be 0.04); MANSRTSP INFO
    bodies pause, resume, seek and change the speed; at the window end it says MediaStatus 121
    (``notify_end``). ``refuse``: answer history INVITEs with that SIP status."""

    def __init__(self, frames: list[AccessUnit], *, frame_interval: float = 0.005, notify_end: bool = True,
                 with_audio: bool = True, refuse: int | None = None, filesize: int | None = None) -> None:
        super().__init__({DEV})
        self.frames = frames
        self.frame_interval = frame_interval
        self.notify_end = notify_end
        self.with_audio = with_audio
        self.refuse = refuse
        self.filesize = filesize
        self.history_calls: dict[str, Call] = {}
        self.n = 0

    async def invite(self, channel: ChannelRef, *, media_ip: str, media_port: int, ssrc: str, transport: str,
                     history: HistoryRequest | None = None) -> InviteAnswer:
        channel = ChannelRef(*channel)
        self.invites.append((channel, {"media_ip": media_ip, "media_port": media_port, "ssrc": ssrc,
                                       "transport": transport, "history": history}))
        if channel.device_id not in self.online:
            raise DeviceOffline(channel.device_id)
        assert history is not None, "this double answers history INVITEs only"
        if self.refuse is not None:
            raise DeviceRefused(self.refuse, {488: "Not Acceptable Here", 486: "Busy Here"}.get(self.refuse, "No"))
        self.n += 1
        call = Call(f"hist-{self.n}@fake", media_port, int(ssrc), history)
        if history.speed:
            call.scale = float(history.speed)
        self.history_calls[call.call_id] = call
        self.calls[call.call_id] = channel
        call.task = asyncio.ensure_future(self._send(call))
        return InviteAnswer(call.call_id, ssrc, None, transport, filesize=self.filesize)

    def bye(self, call_id: str, reason: str) -> None:
        super().bye(call_id, reason)
        call = self.history_calls.get(call_id)
        if call is not None:
            call.stopped = True
            call.wake.set()

    def info(self, call_id: str, body: bytes, content_type: str = MANSRTSP_TYPE) -> bool:
        ok = super().info(call_id, body, content_type)
        call = self.history_calls.get(call_id)
        if not ok or call is None:
            return False
        text = body.decode()
        if text.startswith("PAUSE "):
            call.paused = True
        elif m := re.search(r"Range: npt=([0-9.]+)-", text):
            call.seek_to = float(m.group(1))
        elif "Range: npt=now-" in text:
            call.paused = False
        elif m := re.search(r"Scale: ([0-9.]+)", text):
            call.scale = float(m.group(1))
        call.wake.set()
        return True

    async def _send(self, call: Call) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                           remote_addr=("127.0.0.1", call.port))
        mux = PsMuxer("h264", "g711a" if self.with_audio else None)
        total = (call.history.end - call.history.start) * FPS
        seq = 1
        try:
            while not call.stopped and call.frame < total:
                if call.paused:
                    call.wake.clear()
                    await call.wake.wait()
                    continue
                if call.seek_to is not None:
                    call.frame = int(call.seek_to * FPS) // GOP * GOP  # from the keyframe before
                    call.seek_to = None
                k = call.frame
                pack = mux.mux(content(self.frames, k))
                if self.with_audio:
                    pack += mux.mux(audio(k))
                for p in packetize_ps(pack, ssrc=call.ssrc, sequence=seq, timestamp=k * TICK):
                    transport.sendto(p.to_bytes())
                    seq += 1
                call.sent_frames += 1
                call.sent_bytes += len(pack)
                call.frame += 1
                await asyncio.sleep(self.frame_interval / call.scale)
            if not call.stopped and self.notify_end:
                self.emit(MediaFileEnded(call.call_id, self.calls[call.call_id]))
        finally:
            transport.close()

    async def stop(self) -> None:
        tasks = [c.task for c in self.history_calls.values() if c.task is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# ------------------------------------------------------------------------------------- platform storage
class FakeRecordings:
    """``segments(ch, start, end)`` (async, like the service's) and the sync ``iter_units(ch, start, end)``
    over a continuous recording from ``begin`` of ``seconds``, 25 pictures a second."""

    def __init__(self, frames: list[AccessUnit], begin: datetime = T0, seconds: float = 60.0, *,
                 with_audio: bool = True) -> None:
        self.frames = frames
        self.begin = begin
        self.seconds = seconds
        self.with_audio = with_audio
        self.opened: list[tuple[ChannelRef, datetime, datetime]] = []
        self.closed_iterators = 0

    async def segments(self, channel: ChannelRef, start: datetime, end: datetime) -> list[SegmentInfo]:
        stop = self.begin + timedelta(seconds=self.seconds)
        if ChannelRef(*channel) != CHANNEL or end <= self.begin or start >= stop:
            return []
        return [SegmentInfo(1, CHANNEL, self.begin, stop, 1000, None, "h264")]

    def iter_units(self, channel: ChannelRef, start: datetime, end: datetime) -> Iterator[TimedUnit]:
        self.opened.append((ChannelRef(*channel), start, end))
        return self._units(start, end)

    def _units(self, start: datetime, end: datetime) -> Iterator[TimedUnit]:
        t0 = self.begin.timestamp()
        first = max(0, int((start.timestamp() - t0) * FPS)) // GOP * GOP  # the keyframe at or before
        last = min(int(self.seconds * FPS), int((end.timestamp() - t0) * FPS))
        try:
            for k in range(first, last):
                at = t0 + k / FPS
                yield TimedUnit(at, content(self.frames, k))
                if self.with_audio:
                    yield TimedUnit(at + 0.001, audio(k))
        finally:
            self.closed_iterators += 1


def window(start_s: float, end_s: float) -> tuple[datetime, datetime]:
    return T0 + timedelta(seconds=start_s), T0 + timedelta(seconds=end_s)


async def drain(source: Any, timeout: float = 20.0) -> list[AccessUnit]:
    """Every unit until EOF."""
    out: list[AccessUnit] = []

    async def run() -> None:
        while True:
            try:
                out.append(await source.get())
            except EOFError:
                return

    await asyncio.wait_for(run(), timeout)
    return out


def diffs(units: list[AccessUnit], kind: str = "video") -> list[int]:
    pts = [u.pts for u in units if u.kind == kind]
    return [(b - a) % (1 << 33) for a, b in zip(pts, pts[1:], strict=False)]


__all__ = ["CHANNEL", "DEV", "FPS", "GOP", "T0", "TICK", "FakeRecordings", "HistoryDevice", "audio", "content",
           "diffs", "drain", "vector_frames", "window"]
