"""A ControlService on a fake clock over a fake DeviceCommands that records what was sent."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from device_control.service import ControlService
from device_control.types import CommandResult, ControlError, Preset, TourPoint
from gbcore.db import make_sessionmaker
from gbcore.ids import ChannelRef

CH = ChannelRef("34020000001320000001", "34020000001310000001")


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@dataclass
class FakeCommands:
    """Records every command as a tuple (with the clock's time in ``timed``); ``offline`` makes it refuse."""

    clock: FakeClock | None = None
    sent: list = field(default_factory=list)
    timed: list = field(default_factory=list)
    device_presets: list = field(default_factory=list)
    result: CommandResult = field(default_factory=lambda: CommandResult("OK", True))
    offline: bool = False

    def _record(self, item: tuple) -> None:
        if self.offline:
            raise ControlError("device_offline", "设备不在线 / the device is offline", 409)
        self.sent.append(item)
        self.timed.append((self.clock() if self.clock else None, item))

    async def ptz(self, channel: ChannelRef, action: str, speed: int) -> str:
        self._record(("ptz", channel, action, speed))
        return "A50F0100000000B5" if action == "stop" else "A50F01"

    async def preset(self, channel: ChannelRef, op: str, number: int, name: str | None = None) -> str:
        self._record(("preset", channel, op, number, name))
        return "A50F01"

    async def presets(self, channel: ChannelRef) -> list[Preset]:
        if self.offline:
            raise ControlError("device_offline", "设备不在线 / the device is offline", 409)
        return list(self.device_presets)

    async def cruise(self, channel: ChannelRef, op: str, group: int, points: tuple[TourPoint, ...] = ()) -> None:
        self._record(("cruise", channel, op, group, tuple(points)))

    async def device_control(self, device_id: str, command: str, params: dict | None = None, *,
                             target_id: str | None = None) -> CommandResult:
        self._record(("device_control", device_id, command, params, target_id))
        return self.result

    def of(self, kind: str) -> list[tuple]:
        return [s for s in self.sent if s[0] == kind]


@dataclass
class Recorded:
    audit: list = field(default_factory=list)

    async def on_audit(self, action, target, detail) -> None:
        self.audit.append((action, target, detail))

    def actions(self, action: str) -> list[dict]:
        return [d for a, _t, d in self.audit if a == action]


@pytest.fixture
async def make_service(db_engine):
    made = []

    async def make(*, clock=None, commands=None, start=True, **kw):
        clock = clock or FakeClock()
        commands = commands or FakeCommands(clock if isinstance(clock, FakeClock) else None)
        rec = Recorded()
        args = dict(lock_seconds=30, max_move=10, restore_below_level=0, audit=rec.on_audit, clock=clock)
        args.update(kw)
        svc = ControlService(commands, make_sessionmaker(db_engine), **args)
        made.append(svc)
        if start:
            await svc.start()
        return svc, commands, rec, clock

    yield make
    for svc in made:
        await svc.stop()
