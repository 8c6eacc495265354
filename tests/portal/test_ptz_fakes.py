"""A fake of the device-control service behind the PTZ routes (no tests here).  It follows
docs/issue14-seams.md (``device_control.service.ControlService``: ``ptz``, ``lock_state``, ``preset``,
``presets``, tours, home, ``device_command``) with a small lock of its own: the last operator holds a channel
for ``lock_seconds`` after their last command, a higher level takes it at once, the same or a lower level gets
:class:`device_control.types.PtzLocked` and nothing is "sent".  The clock is a plain attribute."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from device_control.types import (
    CommandResult,
    ControlError,
    LockState,
    Operator,
    Preset,
    PtzLocked,
    Tour,
    TourPoint,
)
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
    homes: dict[ChannelRef, dict[str, Any]] = field(default_factory=dict)
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
                     name: str | None = None) -> None:
        self._take(op, channel)
        self.sent.append(("preset", channel, action, number, op.username))
        presets = [p for p in self.device_presets.get(channel, []) if p.number != number]
        if action == "set":
            presets.append(Preset(number, name))
        elif action == "call" and not any(p.number == number for p in self.device_presets.get(channel, [])):
            raise ControlError("preset_not_found", f"预置位不存在 / no such preset: {number}", 404)
        if action != "call":
            self.device_presets[channel] = sorted(presets, key=lambda p: p.number)

    async def presets(self, channel: ChannelRef) -> list[Preset]:
        if channel.device_id in self.offline:
            raise ControlError("device_offline", f"设备不在线 / the device is offline: {channel.device_id}", 409)
        return list(self.device_presets.get(channel, []))

    # -- tours
    async def create_tour(self, op: Operator, channel: ChannelRef, name: str, points: tuple[TourPoint, ...],
                          loop: bool, mode: str) -> Tour:
        tour = Tour(self._next_tour, channel, name, tuple(points), loop, mode, op.username, op.level)
        self._next_tour += 1
        self.tours[tour.id] = tour
        return tour

    def list_tours(self, channel: ChannelRef) -> list[Tour]:
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
    async def get_home(self, channel: ChannelRef) -> dict[str, Any]:
        return self.homes.get(channel, {"preset": None, "enabled": False})

    async def set_home(self, op: Operator, channel: ChannelRef, preset: int | None, enabled: bool) -> dict[str, Any]:
        self.homes[channel] = {"preset": preset, "enabled": enabled}
        return self.homes[channel]

    # -- device commands
    async def device_command(self, op: Operator, device_id: str, command: str,
                             params: dict[str, Any] | None) -> CommandResult:
        if device_id in self.offline:
            raise ControlError("device_offline", f"设备不在线 / the device is offline: {device_id}", 409)
        self.sent.append(("device", device_id, command, dict(params or {}), op.username))
        return self.results.get(command, CommandResult("OK", True))
