"""A recording service on a fake clock, fed from a real PS vector through fake Stream readers."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gbcore.db import make_sessionmaker
from gbcore.ids import ChannelRef
from gbcore.periodic import Backoff
from media_relay.ps import PsDemuxer
from media_relay.recording.service import RecordingService
from media_relay.types import AccessUnit

CH = ChannelRef("34020000001320000001", "34020000001310000001")
T0 = 1_736_121_600.0  # 2025-01-06 08:00 Beijing (Monday), 00:00 UTC
WRAP = 1 << 33


class FakeClock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def vector_units(ps_dir: Path, name: str = "zlm_h264_aac.ps") -> list[AccessUnit]:
    demux = PsDemuxer()
    data = (ps_dir / name).read_bytes()
    return demux.feed(data) + demux.flush(eof=True)


def timeline(units: list[AccessUnit], loops: int, *, pts_base: int | None = None) -> list[AccessUnit]:
    """``units`` played ``loops`` times back to back, timestamps continuing (33-bit, wrapping)."""
    first = units[0].pts
    video = [u.pts for u in units if u.kind == "video"]
    span = max(video) - first + (video[1] - video[0])
    base = first if pts_base is None else pts_base
    out = []
    for k in range(loops):
        offset = base + k * span - first
        for u in units:
            pts = None if u.pts is None else (u.pts + offset) % WRAP
            dts = None if u.dts is None else (u.dts + offset) % WRAP
            out.append(AccessUnit(u.kind, u.codec, u.data, pts, dts, u.keyframe))
    return out


class FakeReader:
    """A StreamReader-like source: each ``get`` sets the clock to the unit's live time and returns it;
    ``EOFError`` after the last one (or waits, ``hold``, until ``close``)."""

    def __init__(self, units: list[AccessUnit], clock: FakeClock, start: float, *, hold: bool = False) -> None:
        self.units = list(units)
        self.clock = clock
        self.hold = hold
        self.closed = False
        self.drained = asyncio.Event()
        self._closed = asyncio.Event()
        self.i = 0
        p0 = units[0].pts
        self.times = [start + ((u.pts - p0) % WRAP) / 90000 if u.pts is not None else None for u in units]
        self.delivered = 0

    async def get(self) -> AccessUnit:
        if self.i >= len(self.units):
            self.drained.set()
            if self.hold and not self.closed:
                await self._closed.wait()
            raise EOFError("stream ended")
        if self.closed:
            raise EOFError("closed")
        au, at = self.units[self.i], self.times[self.i]
        self.i += 1
        if at is not None:
            self.clock.t = max(self.clock.t, at)
        self.delivered += 1
        if self.i % 16 == 0:
            await asyncio.sleep(0)
        return au

    def close(self) -> None:
        self.closed = True
        self._closed.set()


@dataclass
class Opener:
    """open_reader: hands out the queued readers (or raises the queued exceptions), then refuses."""

    queue: list = field(default_factory=list)
    calls: list = field(default_factory=list)
    refused: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, channel: ChannelRef, stream: str):
        self.calls.append((channel, stream))
        if not self.queue:
            self.refused.set()
            raise RuntimeError("设备不在线 / the device is offline")
        item = self.queue.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item


@dataclass
class Recorded:
    audit: list = field(default_factory=list)
    alerts: list = field(default_factory=list)

    async def on_audit(self, action, target, detail) -> None:
        self.audit.append((action, target, detail))

    async def on_alert(self, code, message, channel) -> None:
        self.alerts.append((code, message, channel))

    def actions(self, action: str) -> list[dict]:
        return [d for a, _t, d in self.audit if a == action]


@pytest.fixture
async def make_service(db_engine, tmp_path):
    made = []

    def make(opener, clock, **kw) -> tuple[RecordingService, Recorded]:
        rec = Recorded()
        args = dict(roots=[tmp_path / "r1", tmp_path / "r2"], segment_seconds=3.0, retention_days_default=7,
                    encrypt=True, cipher="aes-256-gcm", key_file=tmp_path / "keys" / "record.key", min_free_mb=0,
                    check_interval=3600, audit=rec.on_audit, alert=rec.on_alert, clock=clock,
                    backoff=Backoff(base=0.01, cap=0.01, jitter=0), schedule_poll=0.02, chunk_size=8192)
        args.update(kw)
        svc = RecordingService(make_sessionmaker(db_engine), opener, **args)
        made.append(svc)
        return svc, rec

    yield make
    for svc in made:
        await svc.stop()
