"""The device-control domain's own types and the port it needs from signalling (:class:`DeviceCommands`).

``device_control`` knows no SIP: the assembly adapts the SIP service (and the PTZCmd codec of
``sip_server.gb.ptz``) to :class:`DeviceCommands`. A channel is a :class:`gbcore.ids.ChannelRef`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from gbcore.ids import ChannelRef

__all__ = [
    "ACTIONS", "DEVICE_COMMANDS", "PRESET_OPS", "TOUR_MODES", "CommandResult", "ControlError", "DeviceCommands",
    "Home", "LockState", "Operator", "Preset", "PtzLocked", "Tour", "TourPoint",
]

#: PTZ actions of ``POST .../ptz`` (the portal's words; the codec turns them into PTZCmd bits).
ACTIONS = ("up", "down", "left", "right", "up_left", "up_right", "down_left", "down_right", "zoom_in", "zoom_out",
           "focus_near", "focus_far", "iris_open", "iris_close", "stop")
#: ``POST /api/devices/{id}/control`` commands.
DEVICE_COMMANDS = ("teleboot", "record_start", "record_stop", "guard", "unguard", "alarm_reset", "iframe",
                   "home_position")
#: ``POST .../presets`` actions.
PRESET_OPS = ("set", "call", "delete")
#: How a tour runs: the platform calls the presets, or the dome runs its own cruise.
TOUR_MODES = ("platform", "device")


class ControlError(Exception):
    """A control request that cannot be carried out; ``code`` is stable, the message "中文 / English"."""

    def __init__(self, code: str, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


@dataclass(frozen=True, slots=True)
class Operator:
    """Who controls: a portal user (``kind`` "user"), an upper platform ("platform") or the platform itself
    ("system": tours, restore, the move watchdog). ``level`` is the PTZ level 1..9 (9 highest)."""

    id: str
    username: str
    level: int
    display_name: str | None = None
    kind: str = "user"


@dataclass(frozen=True, slots=True)
class LockState:
    """Who holds a channel's PTZ and for how long more (``holder`` None: free)."""

    channel: ChannelRef
    holder: Operator | None
    seconds_left: float
    tour_id: int | None = None  # a platform tour drives the channel (held in its owner's name)


class PtzLocked(ControlError):
    """The channel's PTZ is held by an operator of the same or a higher level."""

    def __init__(self, state: LockState) -> None:
        h = state.holder
        assert h is not None
        name = h.display_name or h.username
        super().__init__("ptz_locked",
                         f"云台被 {name}（级别 {h.level}）控制中，剩余 {state.seconds_left:.0f} 秒 / the PTZ is held by "
                         f"{h.username} (level {h.level}) for {state.seconds_left:.0f} s more", status=423)
        self.state = state


@dataclass(frozen=True, slots=True)
class Preset:
    number: int  # 1..255
    name: str | None = None


@dataclass(frozen=True, slots=True)
class TourPoint:
    preset: int  # 1..255
    dwell_s: float  # >= 2


@dataclass(frozen=True, slots=True)
class Tour:
    id: int
    channel: ChannelRef
    name: str
    points: tuple[TourPoint, ...]
    loop: bool = True
    mode: str = "platform"  # "platform": the platform calls presets; "device": the device's own cruise
    owner: str | None = None  # username of whoever created / started it
    owner_level: int = 1
    running: bool = False
    group: int | None = None  # the device cruise group (mode "device")


@dataclass(frozen=True, slots=True)
class Home:
    """Where a channel goes back to after a low-level operator's lock ends.

    ``mode`` "preset": the platform calls ``preset`` when the lock of an operator below
    ``GBOPS_PTZ_RESTORE_BELOW_LEVEL`` ends; "device": the dome's own HomePosition (``Enabled``,
    ``ResetTime`` = ``reset_time`` s, ``PresetIndex`` = ``preset`` or 0) set through DeviceControl, the dome
    returns by itself."""

    channel: ChannelRef
    preset: int | None = None
    enabled: bool = False
    mode: str = "preset"
    reset_time: int = 60
    updated_by: str | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class CommandResult:
    """A device's answer to a control command: ``result`` "OK" / "ERROR", or None when the standard defines
    no answer or none came in time (``answered`` False)."""

    result: str | None
    answered: bool
    detail: str = ""


@runtime_checkable
class DeviceCommands(Protocol):
    """What device control needs from signalling (implemented at assembly over the SIP service).

    Every method raises :class:`ControlError` (``device_offline`` 409, ``device_refused`` 502 with the SIP
    status in the message) when the device cannot be reached or refuses the MESSAGE."""

    async def ptz(self, channel: ChannelRef, action: str, speed: int) -> str:
        """Send the PTZCmd for ``action`` (one of :data:`ACTIONS`) at ``speed`` 1..255 (pan/tilt speed; zoom,
        focus and iris use ``speed // 16`` clamped to 1..15); returns the PTZCmd hex sent."""
        ...

    async def preset(self, channel: ChannelRef, op: str, number: int, name: str | None = None) -> str:
        """``op`` "set" | "call" | "delete" preset ``number`` (1..255); returns the PTZCmd hex sent."""
        ...

    async def presets(self, channel: ChannelRef) -> list[Preset]:
        """The device's presets (PresetQuery)."""
        ...

    async def cruise(self, channel: ChannelRef, op: str, group: int, points: tuple[TourPoint, ...] = ()) -> None:
        """The device's own cruise: ``op`` "define" (delete, add points, dwell) | "start" | "stop"."""
        ...

    async def device_control(self, device_id: str, command: str, params: dict | None = None, *,
                             target_id: str | None = None) -> CommandResult:
        """A DeviceControl command (one of :data:`DEVICE_COMMANDS`), waiting for the Result where the
        standard defines one."""
        ...
