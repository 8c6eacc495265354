"""Fakes of the services behind the history routes (no tests here): a SIP service answering RecordInfo, a
recording service, a media service opening playback sessions.  They follow docs/issue13-seams.md
exactly, so that the portal is built against the seams, not against one implementation."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gbcore.ids import ChannelRef
from media_relay.recording.types import RecorderStatus, RecordingError, RecordPlan, SegmentInfo
from media_relay.stream import MediaError
from sip_server.gb.manscdp import RecordItem

from .conftest import FakeSip

# The simulated day: 2025-03-01 Beijing time (= 2025-02-28T16:00Z .. 2025-03-01T16:00Z).
DAY_START = datetime(2025, 2, 28, 16, 0, tzinfo=UTC)


def gb(t: datetime) -> str:
    """Beijing wall time without an offset, as devices write it."""
    return (t + timedelta(hours=8)).replace(tzinfo=None).strftime("%Y-%m-%dT%H:%M:%S")


@dataclass
class RecordQuery:
    items: list[RecordItem]
    sum_num: int
    complete: bool
    messages: int = 1


@dataclass
class HistorySip(FakeSip):
    """FakeSip answering ``record_info`` from ``records[(device, channel)]`` (a list of RecordItem)."""

    records: dict[tuple[str, str], list[RecordItem]] = field(default_factory=dict)
    queries: list[tuple[Any, ...]] = field(default_factory=list)
    incomplete: bool = False
    fail_with: Exception | None = None

    async def record_info(self, device_id: str, channel_id: str, start: datetime, end: datetime, *,
                          type: str = "all", timeout: float | None = None) -> RecordQuery:
        self.queries.append((device_id, channel_id, start, end, type, timeout))
        if self.fail_with is not None:
            raise self.fail_with
        items = [i for i in self.records.get((device_id, channel_id), [])
                 if i.start is not None and i.start < _naive_bj(end) and i.end > _naive_bj(start)]
        items.sort(key=lambda i: i.start)
        if self.incomplete:
            return RecordQuery(items[: len(items) // 2], len(items), False, 2)
        return RecordQuery(items, len(items), True, 3)


def _naive_bj(t: datetime) -> datetime:
    return (t.astimezone(UTC) + timedelta(hours=8)).replace(tzinfo=None)


def device_files(device_id: str, start: datetime, count: int, minutes: int = 10, *,
                 skip: range = range(0)) -> list[RecordItem]:
    """``count`` files of ``minutes`` from ``start`` (UTC), those in ``skip`` missing (a gap)."""
    out = []
    for k in range(count):
        if k in skip:
            continue
        a = start + timedelta(minutes=minutes * k)
        out.append(RecordItem(device_id=device_id, name=f"file{k}", file_path=f"/rec/{k}.ps", start_time=gb(a),
                              end_time=gb(a + timedelta(minutes=minutes)), type="alarm" if k % 5 == 4 else "time",
                              file_size=1_000_000 + k))
    return out


class FakeRecordings:
    """RecordingService as the seams name it (async reads and writes)."""

    def __init__(self) -> None:
        self.plans: dict[ChannelRef, RecordPlan] = {}
        self.segs: dict[ChannelRef, list[SegmentInfo]] = {}
        self.set_calls: list[tuple[RecordPlan, str]] = []

    async def get_plan(self, ch: ChannelRef) -> RecordPlan:
        return self.plans.get(ch, RecordPlan(channel=ch))

    async def set_plan(self, plan: RecordPlan, actor: str) -> RecordPlan:
        for w in plan.schedule:
            if w.start == w.end:
                raise RecordingError("bad_schedule", "时间段为空 / an empty window")
        saved = replace(plan, updated_by=actor, updated_at=datetime(2025, 3, 1, 1, 2, 3, tzinfo=UTC))
        self.plans[plan.channel] = saved
        self.set_calls.append((plan, actor))
        return saved

    async def status(self, ch: ChannelRef) -> RecorderStatus:
        segs = self.segs.get(ch, [])
        mode = self.plans.get(ch, RecordPlan(channel=ch)).mode
        return RecorderStatus(channel=ch, state="recording" if mode != "off" else "off", reason=None,
                              bytes_stored=sum(s.bytes for s in segs),
                              seconds_stored=sum((s.end - s.start).total_seconds() for s in segs),
                              oldest=segs[0].start if segs else None, newest_end=segs[-1].end if segs else None,
                              segments=len(segs), retention_days=7)

    async def segments(self, ch: ChannelRef, start: datetime, end: datetime) -> list[SegmentInfo]:
        return [s for s in self.segs.get(ch, []) if s.start < end and s.end > start]


def platform_segments(ch: ChannelRef, start: datetime, count: int, seconds: int = 60) -> list[SegmentInfo]:
    return [SegmentInfo(id=k + 1, channel=ch, start=start + timedelta(seconds=seconds * k),
                        end=start + timedelta(seconds=seconds * (k + 1)), bytes=500_000, sha256="ab" * 32,
                        codec="h264", open=k == count - 1, path=f"{ch.device_id}/{ch.channel_id}/{k}.seg")
            for k in range(count)]


@dataclass
class FakePlan:
    on: bool = True
    code: str = "WM7Q"


class EofReader:
    """A reader that ends at once (the recording's end)."""

    codec = "h264"
    params = None

    def __init__(self) -> None:
        self.stream = self
        self.closed = False

    def resync(self) -> None:
        pass

    async def get(self) -> Any:
        raise EOFError("end of the recording")

    def close(self) -> None:
        self.closed = True


@dataclass
class FakePlayback:
    source: str
    position: float = 0.0
    scale: float = 1.0
    paused: bool = False


@dataclass
class FakeSession:
    session_id: str
    user_id: int
    username: str
    channel: ChannelRef
    reader: Any
    client_ip: str | None
    created: float
    attach_deadline: float
    kind: str = "live"
    window: tuple[datetime, datetime] | None = None
    playback: FakePlayback | None = None
    output: str | None = None
    plan: FakePlan | None = field(default_factory=FakePlan)
    source: Any = None  # what the attached output reads (as in media_relay.service.ViewerSession)
    history_source: str | None = None  # playback: device | platform
    codec: str | None = None  # the upstream's video codec and parameters (none: nothing decoded yet)
    params: Any = None
    closed: bool = False

    @property
    def channel_id(self) -> str:
        return self.channel.channel_id

    @property
    def device_id(self) -> str:
        return self.channel.device_id


class FakeMedia:
    """MediaService's playback surface: open_viewer, control, session_state, the outputs' hooks."""

    def __init__(self) -> None:
        self.sessions: dict[str, FakeSession] = {}
        self.opened: list[dict[str, Any]] = []
        self.controls: list[tuple[str, str, Any, Any]] = []
        self.fail: MediaError | None = None
        self.on_session_closed: Any = None
        self._n = 0

    async def open_viewer(self, channel: ChannelRef, viewer: Any, *, kind: str = "live", transport: str = "udp",
                          window: tuple[datetime, datetime] | None = None, source: str = "device") -> FakeSession:
        self.opened.append({"channel": channel, "viewer": viewer, "kind": kind, "transport": transport,
                            "window": window, "source": source})
        if self.fail is not None:
            raise self.fail
        self._n += 1
        sid = f"sess{self._n:04d}xxxxxxxxxxxxxxxxxxxx"
        s = FakeSession(sid, viewer.user_id, viewer.username, channel, EofReader(), viewer.client_ip, time.time(),
                        time.time() + 60, kind=kind, window=window,
                        playback=FakePlayback(source) if kind == "playback" else None,
                        history_source=source if kind == "playback" else None)
        self.sessions[sid] = s
        return s

    def describe_streams(self) -> list[dict[str, Any]]:
        return []

    def open_output(self, session_id: str, output: str) -> FakeSession | None:
        s = self.sessions.get(session_id)
        if s is None or s.output is not None:
            return None
        s.output = output
        s.source = s.reader
        return s

    def close_session(self, session_id: str, reason: str = "closed") -> bool:
        s = self.sessions.pop(session_id, None)
        if s is None:
            return False
        s.closed = True
        if self.on_session_closed is not None:
            self.on_session_closed(s, reason)
        return True

    async def answer_whep(self, session: FakeSession, offer: str) -> str:
        from media_relay.service import WhepNegotiationFailed

        self.close_session(session.session_id, "WebRTC negotiation failed")
        raise WhepNegotiationFailed("no WebRTC in the fake media service")

    async def end_session(self, session_id: str, reason: str, *, whep_only: bool = False) -> bool:
        return self.close_session(session_id, reason)

    async def control(self, session_id: str, action: str, *, position: float | None = None,
                      scale: float | None = None) -> dict[str, Any]:
        s = self.sessions.get(session_id)
        if s is None:
            raise MediaError("no_session", "no such session")
        if s.playback is None:
            raise MediaError("not_playback", "not a playback session")
        self.controls.append((session_id, action, position, scale))
        pb = s.playback
        if action == "pause":
            pb.paused = True
        elif action == "resume":
            pb.paused = False
        elif action == "seek":
            pb.position = float(position or 0)
        elif action == "speed":
            if scale == 8 and s.channel.channel_id.endswith("3"):
                raise MediaError("control_refused", "the device refused Scale 8")
            pb.scale = float(scale or 1)
        return self.session_state(session_id)

    def session_state(self, session_id: str) -> dict[str, Any]:
        s = self.sessions[session_id]
        pb = s.playback
        if pb is None:
            return {"kind": "live", "state": "playing", "position": None, "scale": 1.0, "paused": False,
                    "window": None, "source": None}
        return {"kind": "playback", "state": "paused" if pb.paused else "playing", "position": pb.position,
                "scale": pb.scale, "paused": pb.paused, "window": s.window, "source": pb.source}


@pytest.fixture
def fake_sip() -> HistorySip:
    return HistorySip()


async def settle(audit: Any) -> None:
    """Let the session-close callbacks' audit tasks run."""
    for _ in range(20):
        await asyncio.sleep(0.01)
