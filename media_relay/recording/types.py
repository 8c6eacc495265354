"""Types of platform recording shared by the recorder, playback, downloads and the portal.

Times are aware UTC ``datetime`` values (storage is UTC; the portal turns them into Beijing time at its
edge). A channel is a :class:`gbcore.ids.ChannelRef`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from gbcore.ids import ChannelRef
from media_relay.types import AccessUnit

__all__ = ["RecordPlan", "RecorderStatus", "ScheduleWindow", "SegmentInfo", "TimedUnit", "RecordingError"]

MODES = ("continuous", "schedule", "off")
STREAMS = ("main", "sub")


class RecordingError(Exception):
    """A recording request that cannot be served; ``code`` is stable, the message is "中文 / English"."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class ScheduleWindow:
    """Record on ``days`` (ISO weekdays 1 = Monday .. 7 = Sunday, Beijing time) from ``start`` to ``end``
    ("HH:MM", Beijing time; ``end`` "24:00" allowed; ``end`` <= ``start`` crosses midnight)."""

    days: tuple[int, ...]
    start: str
    end: str


@dataclass(frozen=True, slots=True)
class RecordPlan:
    channel: ChannelRef
    mode: str = "off"  # one of MODES
    schedule: tuple[ScheduleWindow, ...] = ()
    stream: str = "main"  # one of STREAMS
    updated_by: str | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class RecorderStatus:
    """What ``GET /api/channels/{c}/recording`` shows besides the plan."""

    channel: ChannelRef
    state: str  # "recording" | "waiting" (schedule closed, device offline, retrying) | "failed" | "off"
    reason: str | None  # "中文 / English" when waiting or failed
    bytes_stored: int
    seconds_stored: float
    oldest: datetime | None
    newest_end: datetime | None
    segments: int
    retention_days: int


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    """One recorded segment (the open one too: ``open`` True and ``end`` its current end)."""

    id: int
    channel: ChannelRef
    start: datetime  # content time of its first access unit
    end: datetime  # content time just after its last access unit
    bytes: int  # as stored (encrypted), one copy
    sha256: str | None  # of the bytes as stored; None while open
    codec: str | None
    open: bool = False
    has_audio: bool = False
    path: str = ""  # relative to each root
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TimedUnit:
    """An access unit read back from storage with its content time (Unix seconds, float)."""

    at: float
    au: AccessUnit
