"""The PTZCmd codec (GB/T 28181 A.3): the 8-byte front-end command carried as 16 hex characters (sans-IO).

Layout (fact sheet section 2.2)::

    byte 1  A5
    byte 2  version (high nibble, 0 = v1.0) | (0xA + 0x5 + version) % 16 (low nibble)
    byte 3  address, low 8 bits
    byte 4  instruction
    byte 5  data 1
    byte 6  data 2
    byte 7  data 3 (high nibble) | address, high 4 bits (low nibble)
    byte 8  (byte 1 + ... + byte 7) % 256

Instructions: ``00xxxxxx`` PTZ (bit 5 zoom out, 4 zoom in, 3 up, 2 down, 1 left, 0 right; data 1 pan speed,
data 2 tilt speed, data 3 zoom speed; ``00`` stops everything), ``0100xxxx`` focus/iris (bit 3 iris close,
2 iris open, 1 focus near, 0 focus far; data 1 focus speed, data 2 iris speed), ``81``-``83`` preset set /
call / delete (data 2 the preset), ``84``-``88`` cruise (data 1 the group; ``86`` speed and ``87`` dwell carry a
12-bit value: low 8 bits in data 2, high 4 in data 3), ``89``/``8A`` scan, ``8C``/``8D`` auxiliary switch.

GB device control does not use the address (the MANSCDP ``DeviceID`` selects the target); it is 1 by
default, as common platforms send. :func:`parse_ptzcmd` decodes any well-formed string (a vendor's own
instruction comes back as kind ``unknown``) and refuses garbage with :class:`PtzCmdError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "ACTIONS",
    "CRUISE_OPS",
    "PRESET_OPS",
    "SCAN_OPS",
    "STOP",
    "PtzCmd",
    "PtzCmdError",
    "aux_command",
    "cruise_command",
    "encode",
    "fi_command",
    "move_command",
    "parse_ptzcmd",
    "preset_command",
    "ptz_command",
    "scan_command",
    "zoom_nibble",
]


class PtzCmdError(ValueError):
    """A PTZCmd that cannot be built or decoded; the message is "中文 / English"."""


#: The portal's PTZ actions (``device_control.types.ACTIONS``, repeated here: signalling imports no domain).
ACTIONS = ("up", "down", "left", "right", "up_left", "up_right", "down_left", "down_right", "zoom_in", "zoom_out",
           "focus_near", "focus_far", "iris_open", "iris_close", "stop")

#: The all-zero PTZ command at address 1: stops pan, tilt, zoom, focus, iris, cruise and scan.
STOP = "A50F0100000000B5"

PRESET_OPS = {"set": 0x81, "call": 0x82, "delete": 0x83}
CRUISE_OPS = {"add": 0x84, "delete": 0x85, "speed": 0x86, "dwell": 0x87, "start": 0x88}
SCAN_OPS = {"start": 0x89, "left": 0x89, "right": 0x89, "speed": 0x8A}
_SCAN_DATA2 = {"start": 0x00, "left": 0x01, "right": 0x02}
AUX_OPS = {"on": 0x8C, "off": 0x8D}

# PTZ instruction bits
_RIGHT, _LEFT, _DOWN, _UP, _ZOOM_IN, _ZOOM_OUT = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
_PAN_TILT = {"up": _UP, "down": _DOWN, "left": _LEFT, "right": _RIGHT, "up_left": _UP | _LEFT,
             "up_right": _UP | _RIGHT, "down_left": _DOWN | _LEFT, "down_right": _DOWN | _RIGHT}
# focus / iris instruction bits (0100 b3 b2 b1 b0)
_FOCUS_FAR, _FOCUS_NEAR, _IRIS_OPEN, _IRIS_CLOSE = 0x01, 0x02, 0x04, 0x08

_HEX_RE = re.compile(r"[0-9A-Fa-f]{16}", re.ASCII)
_INSTRUCTION_NAMES = {0x81: "preset_set", 0x82: "preset_call", 0x83: "preset_delete", 0x84: "cruise_add",
                      0x85: "cruise_delete", 0x86: "cruise_speed", 0x87: "cruise_dwell", 0x88: "cruise_start",
                      0x8A: "scan_speed", 0x8C: "aux_on", 0x8D: "aux_off"}


def _int(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise PtzCmdError(f"{name} 须为 {low}..{high} 的整数 / {name} must be an integer {low}..{high}, "
                          f"got {value!r:.40}")
    return value


def encode(instruction: int, data1: int = 0, data2: int = 0, data3: int = 0, *, address: int = 1,
           version: int = 0) -> str:
    """The 16 upper-case hex characters of one PTZCmd (both checksums computed)."""
    instruction = _int("instruction", instruction, 0, 0xFF)
    data1 = _int("data1", data1, 0, 0xFF)
    data2 = _int("data2", data2, 0, 0xFF)
    data3 = _int("data3", data3, 0, 0x0F)
    address = _int("address", address, 0, 0xFFF)
    version = _int("version", version, 0, 0x0F)
    b = [0xA5, (version << 4) | ((0xA + 0x5 + version) % 16), address & 0xFF, instruction, data1, data2,
         (data3 << 4) | (address >> 8)]
    b.append(sum(b) % 256)
    return bytes(b).hex().upper()


def zoom_nibble(speed: int) -> int:
    """A portal speed 1..255 as a 4-bit zoom/focus/iris speed: ``speed // 16`` clamped to 1..15."""
    return min(15, max(1, speed // 16))


def ptz_command(action: str, speed: int = 0x80, *, address: int = 1) -> str:
    """The PTZCmd for one of the portal's :data:`ACTIONS` at ``speed`` 1..255.

    Pan and tilt carry ``speed`` on the moving axes and 0 on the others; zoom, focus and iris carry
    ``speed // 16`` clamped to 1..15 (:func:`zoom_nibble`) in the zoom nibble, the focus byte or the iris
    byte. ``stop`` is the all-zero command (``speed`` ignored)."""
    if action == "stop":
        return encode(0, address=address)
    if action not in ACTIONS:
        raise PtzCmdError(f"未知云台动作 / unknown PTZ action {action!r:.40}: one of {', '.join(ACTIONS)}")
    speed = _int("speed", speed, 1, 255)
    if action in _PAN_TILT:
        bits = _PAN_TILT[action]
        pan = speed if bits & (_LEFT | _RIGHT) else 0
        tilt = speed if bits & (_UP | _DOWN) else 0
        return encode(bits, pan, tilt, 0, address=address)
    small = zoom_nibble(speed)
    if action in ("zoom_in", "zoom_out"):
        return encode(_ZOOM_IN if action == "zoom_in" else _ZOOM_OUT, 0, 0, small, address=address)
    if action in ("focus_near", "focus_far"):
        return fi_command(focus=action[6:], focus_speed=small, address=address)
    return fi_command(iris=action[5:], iris_speed=small, address=address)


def move_command(*, pan: str | None = None, tilt: str | None = None, zoom: str | None = None, pan_speed: int = 0,
                 tilt_speed: int = 0, zoom_speed: int = 0, address: int = 1) -> str:
    """A combined PTZ move: ``pan`` "left"/"right", ``tilt`` "up"/"down", ``zoom`` "in"/"out" (None: that
    axis stays), speeds as carried (pan/tilt 0..255, zoom 0..15)."""
    bits = 0
    for value, choices in ((pan, {"left": _LEFT, "right": _RIGHT}), (tilt, {"up": _UP, "down": _DOWN}),
                           (zoom, {"in": _ZOOM_IN, "out": _ZOOM_OUT})):
        if value is None:
            continue
        if value not in choices:
            raise PtzCmdError(f"方向无效 / bad direction {value!r:.20}: one of {', '.join(choices)}")
        bits |= choices[value]
    return encode(bits, pan_speed, tilt_speed, zoom_speed, address=address)


def fi_command(*, focus: str | None = None, iris: str | None = None, focus_speed: int = 0, iris_speed: int = 0,
               address: int = 1) -> str:
    """Focus/iris: ``focus`` "near"/"far", ``iris`` "open"/"close" (both None: stop focus and iris), speeds
    0..255 in data 1 (focus) and data 2 (iris)."""
    bits = 0x40
    if focus is not None:
        if focus not in ("near", "far"):
            raise PtzCmdError(f"聚焦方向无效 / bad focus {focus!r:.20}: near or far")
        bits |= _FOCUS_NEAR if focus == "near" else _FOCUS_FAR
    if iris is not None:
        if iris not in ("open", "close"):
            raise PtzCmdError(f"光圈方向无效 / bad iris {iris!r:.20}: open or close")
        bits |= _IRIS_OPEN if iris == "open" else _IRIS_CLOSE
    return encode(bits, focus_speed, iris_speed, 0, address=address)


def preset_command(op: str, n: int, *, address: int = 1) -> str:
    """``op`` "set" | "call" | "delete" preset ``n`` (1..255)."""
    if op not in PRESET_OPS:
        raise PtzCmdError(f"预置位操作无效 / bad preset op {op!r:.20}: one of {', '.join(PRESET_OPS)}")
    n = _int("preset", n, 1, 255)
    return encode(PRESET_OPS[op], 0, n, 0, address=address)


def _split12(value: int) -> tuple[int, int]:
    value = _int("value", value, 0, 0xFFF)
    return value & 0xFF, value >> 8


def cruise_command(op: str, group: int, value: int = 0, *, address: int = 1) -> str:
    """The device's own cruise (0x84-0x88) of ``group`` (0..255): "add" preset ``value`` (1..255), "delete"
    preset ``value`` (0: the whole cruise), "speed" / "dwell" (seconds) ``value`` (12 bits), "start"."""
    if op not in CRUISE_OPS:
        raise PtzCmdError(f"巡航操作无效 / bad cruise op {op!r:.20}: one of {', '.join(CRUISE_OPS)}")
    group = _int("group", group, 0, 255)
    if op == "add":
        return encode(0x84, group, _int("preset", value, 1, 255), 0, address=address)
    if op == "delete":
        return encode(0x85, group, _int("preset", value, 0, 255), 0, address=address)
    if op == "start":
        return encode(0x88, group, 0, 0, address=address)
    low, high = _split12(value)
    return encode(CRUISE_OPS[op], group, low, high, address=address)


def scan_command(op: str, group: int, value: int = 0, *, address: int = 1) -> str:
    """Automatic scan of ``group`` (0..255): "start", "left" / "right" (set the edge), "speed" ``value``
    (12 bits). A scan stops with the PTZ stop."""
    if op not in SCAN_OPS:
        raise PtzCmdError(f"扫描操作无效 / bad scan op {op!r:.20}: one of {', '.join(SCAN_OPS)}")
    group = _int("group", group, 0, 255)
    if op == "speed":
        low, high = _split12(value)
        return encode(0x8A, group, low, high, address=address)
    return encode(0x89, group, _SCAN_DATA2[op], 0, address=address)


def aux_command(op: str, switch: int = 1, *, address: int = 1) -> str:
    """Auxiliary switch ``switch`` (0..255; 1 is the wiper) "on" | "off"."""
    if op not in AUX_OPS:
        raise PtzCmdError(f"辅助开关操作无效 / bad auxiliary op {op!r:.20}: on or off")
    return encode(AUX_OPS[op], _int("switch", switch, 0, 255), 0, 0, address=address)


@dataclass(frozen=True, slots=True)
class PtzCmd:
    """A decoded PTZCmd: the raw fields, and what they mean.

    ``kind``: "ptz", "fi" (focus/iris), "preset", "cruise", "scan", "aux" or "unknown" (an instruction the
    standard does not define, e.g. a vendor's). ``action``: "stop" (PTZ all zero), a portal word
    (:data:`ACTIONS`: "up_right", "zoom_in", "iris_open"...) joined with "+" when axes are combined
    ("up_right+zoom_out", "iris_close+focus_far"), "fi_stop", "preset_set" / "preset_call" /
    "preset_delete", "cruise_add" / "cruise_delete" / "cruise_speed" / "cruise_dwell" / "cruise_start",
    "scan_start" / "scan_left" / "scan_right" / "scan_speed", "aux_on" / "aux_off", "unknown"."""

    address: int
    instruction: int
    data1: int
    data2: int
    data3: int
    version: int = 0

    # ----------------------------------------------------------------- meaning
    @property
    def hex(self) -> str:
        return encode(self.instruction, self.data1, self.data2, self.data3, address=self.address,
                      version=self.version)

    @property
    def kind(self) -> str:
        i = self.instruction
        if i >> 6 == 0:
            return "ptz"
        if i >> 4 == 0x4:
            return "fi"
        if 0x81 <= i <= 0x83:
            return "preset"
        if 0x84 <= i <= 0x88:
            return "cruise"
        if i in (0x89, 0x8A):
            return "scan"
        if i in (0x8C, 0x8D):
            return "aux"
        return "unknown"

    @property
    def action(self) -> str:
        kind, i = self.kind, self.instruction
        if kind == "ptz":
            if i == 0:
                return "stop"
            vertical = "up" if i & _UP else "down" if i & _DOWN else ""
            horizontal = "left" if i & _LEFT else "right" if i & _RIGHT else ""
            words = ["_".join(w for w in (vertical, horizontal) if w)]
            words.append("zoom_in" if i & _ZOOM_IN else "zoom_out" if i & _ZOOM_OUT else "")
            return "+".join(w for w in words if w)
        if kind == "fi":
            if i == 0x40:
                return "fi_stop"
            words = ["iris_close" if i & _IRIS_CLOSE else "iris_open" if i & _IRIS_OPEN else "",
                     "focus_near" if i & _FOCUS_NEAR else "focus_far" if i & _FOCUS_FAR else ""]
            return "+".join(w for w in words if w)
        if kind == "scan" and i == 0x89:
            return {0: "scan_start", 1: "scan_left", 2: "scan_right"}.get(self.data2, "unknown")
        return _INSTRUCTION_NAMES.get(i, "unknown")

    # pan / tilt / zoom (PTZ), focus / iris (FI)
    @property
    def pan_speed(self) -> int | None:
        return self.data1 if self.kind == "ptz" else None

    @property
    def tilt_speed(self) -> int | None:
        return self.data2 if self.kind == "ptz" else None

    @property
    def zoom_speed(self) -> int | None:
        return self.data3 if self.kind == "ptz" else None

    @property
    def focus_speed(self) -> int | None:
        return self.data1 if self.kind == "fi" else None

    @property
    def iris_speed(self) -> int | None:
        return self.data2 if self.kind == "fi" else None

    # preset / cruise / scan / aux
    @property
    def preset(self) -> int | None:
        """The preset of a preset command, or the cruise point of "cruise_add" / "cruise_delete"."""
        if self.kind == "preset" or self.instruction in (0x84, 0x85):
            return self.data2
        return None

    @property
    def group(self) -> int | None:
        return self.data1 if self.kind in ("cruise", "scan") else None

    @property
    def value(self) -> int | None:
        """The 12-bit value of "cruise_speed", "cruise_dwell" and "scan_speed"."""
        if self.instruction in (0x86, 0x87, 0x8A):
            return (self.data3 << 8) | self.data2
        return None

    @property
    def switch(self) -> int | None:
        return self.data1 if self.kind == "aux" else None


def parse_ptzcmd(text: str) -> PtzCmd:
    """16 hex characters (either case, surrounding blanks ignored) -> :class:`PtzCmd`.

    Raises :class:`PtzCmdError` for anything else: not a string, wrong length, not hex, a first byte other
    than A5, a wrong combination-code checksum or sum, both bits of an exclusive pair set (left and right,
    up and down, zoom in and out, iris open and close, focus near and far)."""
    if not isinstance(text, str):
        raise PtzCmdError(f"PTZCmd 须为字符串 / PTZCmd must be a string, got {type(text).__name__}")
    value = text.strip()
    if len(value) != 16:
        raise PtzCmdError(f"PTZCmd 须为 16 个十六进制字符 / PTZCmd must be 16 hex characters, got {len(value)}")
    if not _HEX_RE.fullmatch(value):
        raise PtzCmdError(f"PTZCmd 含非十六进制字符 / PTZCmd is not hex: {value!r}")
    b = bytes.fromhex(value)
    if b[0] != 0xA5:
        raise PtzCmdError(f"PTZCmd 首字节须为 A5 / PTZCmd must start with A5, got {b[0]:02X}")
    version = b[1] >> 4
    if b[1] & 0x0F != (0xA + 0x5 + version) % 16:
        raise PtzCmdError(f"PTZCmd 组合码 1 校验错误 / bad combination-code checksum in byte 2: {b[1]:02X}")
    if sum(b[:7]) % 256 != b[7]:
        raise PtzCmdError(f"PTZCmd 校验和错误 / bad checksum: {b[7]:02X}, expected {sum(b[:7]) % 256:02X}")
    cmd = PtzCmd(address=((b[6] & 0x0F) << 8) | b[2], instruction=b[3], data1=b[4], data2=b[5], data3=b[6] >> 4,
                 version=version)
    i = cmd.instruction
    if cmd.kind == "ptz" and (i & 0x03 == 0x03 or i & 0x0C == 0x0C or i & 0x30 == 0x30):
        raise PtzCmdError(f"PTZCmd 方向位冲突 / contradictory PTZ bits in instruction {i:02X}")
    if cmd.kind == "fi" and (i & 0x03 == 0x03 or i & 0x0C == 0x0C):
        raise PtzCmdError(f"PTZCmd 聚焦/光圈位冲突 / contradictory focus/iris bits in instruction {i:02X}")
    return cmd
