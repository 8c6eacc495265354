"""What a simulated dome does with PTZ commands, sans-IO: the PTZCmd it receives, its position, its presets.

:func:`decode_ptzcmd`
    The device's own reading of the 8-byte ``PTZCmd`` hex string (GB/T 28181 A.3): both checksums checked,
    the instruction decoded into a :class:`PtzCommand` (PTZ bits and speeds, focus/iris, preset, cruise,
    scan, auxiliary switch).  Anything else is a :class:`PtzDecodeError` (a real dome ignores such a
    command; the simulator logs it).

:class:`PtzState`
    One channel's pan (0..360 degrees, wrapping), tilt (-30..90) and zoom (1..30x), moving at the commanded
    speeds until a stop; presets that store and recall the position (with their names), the device's own
    cruise (preset tours, 0x84-0x88: points, dwell time, start; a stop ends it), the last called preset,
    the HomePosition setting.  Every call takes ``now`` (monotonic seconds); :meth:`PtzState.view` is safe to
    call from the encoder thread (it reads one immutable snapshot).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["PtzCommand", "PtzDecodeError", "PtzLogEntry", "PtzState", "PtzView", "decode_ptzcmd"]

PAN_DEG_PER_S = 90.0  # pan speed 0xFF
TILT_DEG_PER_S = 60.0  # tilt speed 0xFF
ZOOM_PER_S = 4.0  # zoom factor per second at zoom speed 0xF
TILT_MIN, TILT_MAX = -30.0, 90.0
ZOOM_MIN, ZOOM_MAX = 1.0, 30.0
MAX_PRESETS = 255
PRESET_NAME_MAX = 64  # characters kept of a preset name


class PtzDecodeError(ValueError):
    """A PTZCmd string a device cannot use: wrong length, not hex, bad checksums, unknown instruction."""


@dataclass(frozen=True, slots=True)
class PtzCommand:
    """One decoded PTZCmd.  ``kind``: ``ptz``, ``fi``, ``preset``, ``cruise``, ``scan``, ``aux``; ``action``
    in the portal's words where there is one (``up_left``, ``zoom_in``, ``stop``, ``focus_near``, ...) and
    ``preset_set`` / ``preset_call`` / ``preset_delete``, ``cruise_add`` / ``cruise_delete`` /
    ``cruise_speed`` / ``cruise_dwell`` / ``cruise_start``, ``scan_start`` / ``scan_left`` / ``scan_right`` /
    ``scan_speed``, ``aux_on`` / ``aux_off`` otherwise.  ``pan``: +1 right, -1 left; ``tilt``: +1 up, -1
    down; ``zoom``: +1 in (tele), -1 out (wide); ``focus``: +1 far, -1 near; ``iris``: +1 open, -1 close."""

    hex: str
    address: int
    code: int
    data1: int
    data2: int
    data3: int
    kind: str
    action: str
    pan: int = 0
    tilt: int = 0
    zoom: int = 0
    pan_speed: int = 0
    tilt_speed: int = 0
    zoom_speed: int = 0
    focus: int = 0
    iris: int = 0
    preset: int | None = None  # preset commands, cruise add/delete point
    group: int | None = None  # cruise / scan group, auxiliary switch number
    value: int | None = None  # cruise speed / dwell, scan speed (12 bits)


def _pair(code: int, plus_bit: int, minus_bit: int, what: str) -> int:
    plus, minus = bool(code & plus_bit), bool(code & minus_bit)
    if plus and minus:
        raise PtzDecodeError(f"PTZCmd sets both {what} bits (instruction {code:02X})")
    return 1 if plus else -1 if minus else 0


def _direction_word(pan: int, tilt: int) -> str:
    vertical = {1: "up", -1: "down"}.get(tilt, "")
    horizontal = {1: "right", -1: "left"}.get(pan, "")
    return "_".join(w for w in (vertical, horizontal) if w)


def decode_ptzcmd(text: str) -> PtzCommand:
    """Decode a PTZCmd (16 hex digits, either case, surrounding blanks ignored); see the module docstring."""
    if not isinstance(text, str):
        raise PtzDecodeError("PTZCmd must be text")
    s = text.strip()
    if len(s) != 16:
        raise PtzDecodeError(f"PTZCmd must be 16 hex digits, got {len(s)} characters")
    try:
        b = bytes.fromhex(s)
    except ValueError:
        raise PtzDecodeError("PTZCmd is not hexadecimal") from None
    if len(b) != 8 or not all(c in "0123456789abcdefABCDEF" for c in s):
        raise PtzDecodeError("PTZCmd is not hexadecimal")
    if b[0] != 0xA5:
        raise PtzDecodeError(f"PTZCmd must start with A5, got {b[0]:02X}")
    if (b[1] & 0x0F) != (0xA + 0x5 + (b[1] >> 4)) % 16:
        raise PtzDecodeError(f"PTZCmd byte 2 checksum is wrong ({b[1]:02X})")
    if b[7] != sum(b[:7]) % 256:
        raise PtzDecodeError(f"PTZCmd checksum is wrong: {b[7]:02X}, expected {sum(b[:7]) % 256:02X}")
    code, d1, d2, d3 = b[3], b[4], b[5], b[6] >> 4
    common = dict(hex=s.upper(), address=b[2] | (b[6] & 0x0F) << 8, code=code, data1=d1, data2=d2, data3=d3)
    if code & 0xC0 == 0:
        pan = _pair(code, 0x01, 0x02, "right/left")
        tilt = _pair(code, 0x08, 0x04, "up/down")
        zoom = _pair(code, 0x10, 0x20, "zoom in/out")
        words = [w for w in (_direction_word(pan, tilt), {1: "zoom_in", -1: "zoom_out"}.get(zoom, "")) if w]
        return PtzCommand(**common, kind="ptz", action="+".join(words) or "stop", pan=pan, tilt=tilt, zoom=zoom,
                          pan_speed=d1, tilt_speed=d2, zoom_speed=d3)
    if code & 0xF0 == 0x40:
        iris = _pair(code, 0x04, 0x08, "iris open/close")
        focus = _pair(code, 0x01, 0x02, "focus far/near")
        words = [w for w in ({1: "focus_far", -1: "focus_near"}.get(focus, ""),
                             {1: "iris_open", -1: "iris_close"}.get(iris, "")) if w]
        return PtzCommand(**common, kind="fi", action="+".join(words) or "fi_stop", focus=focus, iris=iris)
    if code in (0x81, 0x82, 0x83):
        if d2 == 0:
            raise PtzDecodeError("preset number 0 is reserved (1..255)")
        action = {0x81: "preset_set", 0x82: "preset_call", 0x83: "preset_delete"}[code]
        return PtzCommand(**common, kind="preset", action=action, preset=d2)
    if 0x84 <= code <= 0x88:
        if code == 0x84 and d2 == 0:
            raise PtzDecodeError("cruise point preset 0 is reserved (1..255)")
        action = {0x84: "cruise_add", 0x85: "cruise_delete", 0x86: "cruise_speed", 0x87: "cruise_dwell",
                  0x88: "cruise_start"}[code]
        value = d2 | d3 << 8 if code in (0x86, 0x87) else None
        preset = d2 if code in (0x84, 0x85) else None
        return PtzCommand(**common, kind="cruise", action=action, group=d1, preset=preset, value=value)
    if code == 0x89:
        if d2 > 2:
            raise PtzDecodeError(f"scan operation {d2} is unknown (0 start, 1 left edge, 2 right edge)")
        action = ("scan_start", "scan_left", "scan_right")[d2]
        return PtzCommand(**common, kind="scan", action=action, group=d1)
    if code == 0x8A:
        return PtzCommand(**common, kind="scan", action="scan_speed", group=d1, value=d2 | d3 << 8)
    if code in (0x8C, 0x8D):
        return PtzCommand(**common, kind="aux", action="aux_on" if code == 0x8C else "aux_off", group=d1)
    raise PtzDecodeError(f"unknown PTZCmd instruction {code:02X}")


@dataclass(frozen=True, slots=True)
class PtzView:
    """Where a dome looks at one moment: what its picture shows."""

    pan: float
    tilt: float
    zoom: float
    preset: int | None  # the last called preset (None: none, or deleted since)
    moving: bool


@dataclass(frozen=True, slots=True)
class PtzLogEntry:
    """One control a channel received: ``element`` is ``PTZCmd`` (``command`` decoded, ``error`` when it
    could not be) or ``PTZPreciseCtrl`` (``params``); ``wall`` is the epoch second it arrived."""

    wall: float
    channel_id: str
    element: str
    text: str
    command: PtzCommand | None = None
    error: str | None = None
    name: str | None = None  # PTZCmdParams/PresetName or CruiseTrackName
    params: dict[str, float] | None = None

    @property
    def action(self) -> str | None:
        return self.command.action if self.command is not None else None


@dataclass(frozen=True, slots=True)
class _Motion:
    """Position at ``t0`` and the velocities from then on (degrees/s, zoom factor/s)."""

    t0: float
    pan: float
    tilt: float
    zoom: float
    vpan: float = 0.0
    vtilt: float = 0.0
    vzoom: float = 0.0

    def at(self, now: float) -> tuple[float, float, float]:
        dt = max(0.0, now - self.t0)
        return ((self.pan + self.vpan * dt) % 360.0,
                min(TILT_MAX, max(TILT_MIN, self.tilt + self.vtilt * dt)),
                min(ZOOM_MAX, max(ZOOM_MIN, self.zoom + self.vzoom * dt)))

    @property
    def moving(self) -> bool:
        return bool(self.vpan or self.vtilt or self.vzoom)


@dataclass(frozen=True, slots=True)
class _Cruise:
    group: int
    t0: float
    points: tuple[int, ...]
    dwell: float


@dataclass
class CruiseGroup:
    points: list[int] = field(default_factory=list)
    speed: int | None = None
    dwell: int | None = None


@dataclass(frozen=True, slots=True)
class PresetPoint:
    number: int
    name: str
    pan: float
    tilt: float
    zoom: float


def _speed(value: int) -> int:
    return max(1, value)  # a set direction bit with speed 0 moves at the slowest speed


class PtzState:
    """One dome channel's PTZ; see the module docstring."""

    def __init__(self, pan: float = 0.0, tilt: float = 0.0, zoom: float = 1.0) -> None:
        self._motion = _Motion(0.0, pan % 360.0, tilt, zoom)
        self._cruise: _Cruise | None = None
        self._last_preset: int | None = None
        self.presets: dict[int, PresetPoint] = {}
        self.cruises: dict[int, CruiseGroup] = {}
        self.scanning: int | None = None  # scan group started (logged; the picture does not scan)
        self.aux: dict[int, bool] = {}
        self.home: tuple[bool, int, int] | None = None  # (enabled, reset time s, preset index)
        self.touched = False  # the picture has moved away from the untouched default at least once

    # ------------------------------------------------------------------ reading (any thread)
    def view(self, now: float) -> PtzView:
        cruise, motion = self._cruise, self._motion
        if cruise is not None and cruise.points:
            k = int(max(0.0, now - cruise.t0) // cruise.dwell) % len(cruise.points)
            number = cruise.points[k]
            point = self.presets.get(number)
            if point is not None:
                return PtzView(point.pan, point.tilt, point.zoom, number, True)
        pan, tilt, zoom = motion.at(now)
        return PtzView(pan, tilt, zoom, self._last_preset, motion.moving)

    def position(self, now: float) -> tuple[float, float, float]:
        v = self.view(now)
        return v.pan, v.tilt, v.zoom

    @property
    def cruising(self) -> int | None:
        return self._cruise.group if self._cruise is not None else None

    # ------------------------------------------------------------------ commands
    def _freeze(self, now: float) -> None:
        """Stop everything where the picture is now (a running cruise stops at its current point)."""
        v = self.view(now)
        self._cruise = None
        self._last_preset = v.preset
        self._motion = _Motion(now, v.pan, v.tilt, v.zoom)

    def apply(self, cmd: PtzCommand, now: float, name: str | None = None) -> bool:
        """Carry out *cmd*; True when the picture changes (moves, zooms, shows another preset)."""
        if cmd.kind == "ptz":
            self._freeze(now)
            self.scanning = None
            m = self._motion
            if cmd.code == 0:
                return False
            self._motion = _Motion(
                now, m.pan, m.tilt, m.zoom,
                vpan=cmd.pan * _speed(cmd.pan_speed) / 255 * PAN_DEG_PER_S,
                vtilt=cmd.tilt * _speed(cmd.tilt_speed) / 255 * TILT_DEG_PER_S,
                vzoom=cmd.zoom * _speed(cmd.zoom_speed) / 15 * ZOOM_PER_S)
            self.touched = True
            return True
        if cmd.kind == "preset":
            assert cmd.preset is not None
            n = cmd.preset
            if cmd.action == "preset_set":
                pan, tilt, zoom = self.position(now)
                old = self.presets.get(n)
                label = (name or "").strip()[:PRESET_NAME_MAX] or (old.name if old else f"预置点{n}")
                self.presets[n] = PresetPoint(n, label, pan, tilt, zoom)
                return False
            if cmd.action == "preset_delete":
                self.presets.pop(n, None)
                for group in self.cruises.values():
                    group.points = [p for p in group.points if p != n]
                if self.view(now).preset == n:
                    self._freeze(now)
                    self._last_preset = None
                    return True
                return False
            # call: go there (a real dome swings over in a moment; the simulator is there at once)
            self._cruise = None
            point = self.presets.get(n)
            m = self._motion
            pan, tilt, zoom = (point.pan, point.tilt, point.zoom) if point is not None else m.at(now)
            self._motion = _Motion(now, pan, tilt, zoom)
            self._last_preset = n
            self.touched = True
            return True
        if cmd.kind == "cruise":
            assert cmd.group is not None
            group = self.cruises.setdefault(cmd.group, CruiseGroup())
            if cmd.action == "cruise_add":
                assert cmd.preset is not None
                if len(group.points) < 255:
                    group.points.append(cmd.preset)
            elif cmd.action == "cruise_delete":
                if cmd.preset:
                    group.points = [p for p in group.points if p != cmd.preset]
                else:
                    del self.cruises[cmd.group]
                    if self.cruising == cmd.group:
                        self._freeze(now)
            elif cmd.action == "cruise_speed":
                group.speed = cmd.value
            elif cmd.action == "cruise_dwell":
                group.dwell = cmd.value
            elif cmd.action == "cruise_start":
                points = tuple(p for p in group.points if p in self.presets)
                if not points:
                    return False
                self._freeze(now)
                self._cruise = _Cruise(cmd.group, now, points, float(max(1, group.dwell or 5)))
                self.touched = True
                return True
            return False
        if cmd.kind == "scan":
            if cmd.action == "scan_start":
                self.scanning = cmd.group
            return False
        if cmd.kind == "aux":
            assert cmd.group is not None
            self.aux[cmd.group] = cmd.action == "aux_on"
        return False  # focus / iris: nothing the test picture shows

    def precise(self, now: float, pan: float | None, tilt: float | None, zoom: float | None) -> bool:
        """PTZPreciseCtrl (2022): go to an absolute position (missing values stay)."""
        self._freeze(now)
        m = self._motion
        new = _Motion(now, m.pan if pan is None else pan % 360.0,
                      m.tilt if tilt is None else min(TILT_MAX, max(TILT_MIN, tilt)),
                      m.zoom if zoom is None else min(ZOOM_MAX, max(ZOOM_MIN, zoom)))
        self._motion = new
        self.touched = True
        return True

    def preset_list(self) -> list[tuple[int, str]]:
        return [(n, self.presets[n].name) for n in sorted(self.presets)]


def finite(value: str | None) -> float | None:
    """A float from MANSCDP text, None when missing or not a finite number."""
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None
