"""A fake of the device-control service behind the PTZ routes (no tests here): the methods of
:class:`device_control.service.ControlService` that the routes call, with its signatures and return types
(``lock_state`` plain, the others coroutines), over a small lock of its own: the last operator holds a channel
for ``lock_seconds`` after their last command, a higher level takes it at once, the same or a lower level gets
:class:`device_control.types.PtzLocked` and nothing is "sent".  The clock is a plain attribute.  It records
who sent what (``sent``), which the real service's DeviceCommands port cannot see; the routes over the real
service are in test_ptz_service.py."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from device_control.types import (
    CommandResult,
    ControlError,
    Home,
    LockState,
    Operator,
    Preset,
    PtzLocked,
    Tour,
)
from gbcore.db import utcnow
from gbcore.ids import ChannelRef


@dataclass
class FakeControl:
    lock_seconds: float = 30.0
    now: float = 1000.0
    #: every command that reached the "device": (kind, channel or device, what, value, operator username)
    sent: list[tuple[Any, ...]] = field(default_factory=list)
    holders: dict[ChannelRef, tuple[Operator, float]] = field(default_factory=dict)
    device_presets: dict[ChannelRef, list[Preset]] = field(default_factory=dict)
    tours: dict[int, Tour] = field(default_factory=dict)
    homes: dict[ChannelRef, Home] = field(default_factory=dict)
    offline: set[str] = field(default_factory=set)
    results: dict[str, CommandResult] = field(default_factory=dict)
    _next_tour: int = 1

    # -- the lock
    def lock_state(self, channel: ChannelRef) -> LockState:
        held = self.holders.get(channel)
        if held is None or held[1] <= self.now:
            return LockState(channel, None, 0.0)
        return LockState(channel, held[0], held[1] - self.now)

    def _take(self, op: Operator, channel: ChannelRef) -> None:
        state = self.lock_state(channel)
        h = state.holder
        if h is not None and not (h.kind == op.kind and h.id == op.id) and op.level <= h.level:
            raise PtzLocked(state)
        if channel.device_id in self.offline:
            raise ControlError("device_offline", f"设备不在线 / the device is offline: {channel.device_id}", 409)
        self.holders[channel] = (op, self.now + self.lock_seconds)

    # -- PTZ and presets
    async def ptz(self, op: Operator, channel: ChannelRef, action: str, speed: int) -> LockState:
        self._take(op, channel)
        self.sent.append(("ptz", channel, action, speed, op.username))
        return self.lock_state(channel)

    async def preset(self, op: Operator, channel: ChannelRef, action: str, number: int,
                     name: str | None = None) -> LockState:
        self._take(op, channel)
        self.sent.append(("preset", channel, action, number, op.username))
        presets = [p for p in self.device_presets.get(channel, []) if p.number != number]
        if action == "set":
            presets.append(Preset(number, name))
        elif action == "call" and not any(p.number == number for p in self.device_presets.get(channel, [])):
            raise ControlError("preset_not_found", f"预置位不存在 / no such preset: {number}", 404)
        if action != "call":
            self.device_presets[channel] = sorted(presets, key=lambda p: p.number)
        return self.lock_state(channel)

    async def presets(self, channel: ChannelRef) -> list[Preset]:
        if channel.device_id in self.offline:
            raise ControlError("device_offline", f"设备不在线 / the device is offline: {channel.device_id}", 409)
        return sorted(self.device_presets.get(channel, []), key=lambda p: p.number)

    # -- tours
    async def create_tour(self, op: Operator, channel: ChannelRef, name: str, points: Iterable[Any],
                          loop: bool = True, mode: str = "platform") -> Tour:
        tour = Tour(self._next_tour, channel, name, tuple(points), loop, mode, op.username, op.level)
        self._next_tour += 1
        self.tours[tour.id] = tour
        return tour

    async def list_tours(self, channel: ChannelRef) -> list[Tour]:
        return [t for t in self.tours.values() if t.channel == channel]

    def _tour(self, channel: ChannelRef, tour_id: int) -> Tour:
        tour = self.tours.get(tour_id)
        if tour is None or tour.channel != channel:
            raise ControlError("tour_not_found", f"巡航不存在 / no such tour: {tour_id}", 404)
        return tour

    async def start_tour(self, op: Operator, channel: ChannelRef, tour_id: int) -> Tour:
        tour = self._tour(channel, tour_id)
        self._take(op, channel)
        self.tours[tour_id] = tour = replace(tour, running=True, owner=op.username, owner_level=op.level)
        self.sent.append(("tour", channel, "start", tour_id, op.username))
        return tour

    async def stop_tour(self, op: Operator, channel: ChannelRef, tour_id: int) -> Tour:
        tour = self._tour(channel, tour_id)
        self.tours[tour_id] = tour = replace(tour, running=False)
        self.sent.append(("tour", channel, "stop", tour_id, op.username))
        return tour

    async def delete_tour(self, op: Operator, channel: ChannelRef, tour_id: int) -> None:
        self._tour(channel, tour_id)
        del self.tours[tour_id]

    # -- home
    async def get_home(self, channel: ChannelRef) -> Home:
        return self.homes.get(channel, Home(channel))

    async def set_home(self, op: Operator, channel: ChannelRef, preset: int | None, enabled: bool, *,
                       mode: str | None = None, reset_time: int = 60) -> Home:
        mode = mode or ("preset" if preset is not None else "device")
        self.homes[channel] = Home(channel, preset, enabled, mode, reset_time, op.username, utcnow())
        return self.homes[channel]

    # -- device commands
    async def device_command(self, op: Operator, device_id: str, command: str,
                             params: Mapping[str, Any] | None = None) -> CommandResult:
        if device_id in self.offline:
            raise ControlError("device_offline", f"设备不在线 / the device is offline: {device_id}", 409)
        self.sent.append(("device", device_id, command, dict(params or {}), op.username))
        return self.results.get(command, CommandResult("OK", True))
