"""The PTZCmd codec: every worked string of the fact sheet (../shared/docs/gb28181.md 2.2) both ways, the
portal's actions, hypothesis round trips, and garbage refused with the codec's error."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device_control.types import ACTIONS as PORTAL_ACTIONS
from sip_server.gb import ptz
from sip_server.gb.ptz import PtzCmdError, parse_ptzcmd

# (built by, fact-sheet string, decoded action, decoded fields)
WORKED = [
    (lambda: ptz.STOP, "A50F0100000000B5", "stop", {}),
    (lambda: ptz.ptz_command("stop", 200), "A50F0100000000B5", "stop", {}),
    (lambda: ptz.ptz_command("up", 0x80), "A50F01080080003D", "up", {"pan_speed": 0, "tilt_speed": 0x80}),
    (lambda: ptz.ptz_command("up_right", 0x40), "A50F01094040003E", "up_right",
     {"pan_speed": 0x40, "tilt_speed": 0x40, "zoom_speed": 0}),
    (lambda: ptz.ptz_command("zoom_in", 48), "A50F0110000030F5", "zoom_in", {"zoom_speed": 3, "pan_speed": 0}),
    (lambda: ptz.move_command(zoom="in", zoom_speed=3), "A50F0110000030F5", "zoom_in", {"zoom_speed": 3}),
    (lambda: ptz.fi_command(iris="open", iris_speed=0x40), "A50F014400400039", "iris_open", {"iris_speed": 0x40}),
    (lambda: ptz.fi_command(focus="near", focus_speed=0x40), "A50F014240000037", "focus_near",
     {"focus_speed": 0x40}),
    (lambda: ptz.preset_command("set", 5), "A50F01810005003B", "preset_set", {"preset": 5}),
    (lambda: ptz.preset_command("call", 5), "A50F01820005003C", "preset_call", {"preset": 5}),
    (lambda: ptz.preset_command("delete", 5), "A50F01830005003D", "preset_delete", {"preset": 5}),
    (lambda: ptz.cruise_command("add", 1, 5), "A50F01840105003F", "cruise_add", {"group": 1, "preset": 5}),
    (lambda: ptz.cruise_command("dwell", 1, 300), "A50F0187012C1079", "cruise_dwell", {"group": 1, "value": 300}),
    (lambda: ptz.cruise_command("start", 1), "A50F01880100003E", "cruise_start", {"group": 1}),
    (lambda: ptz.scan_command("start", 1), "A50F01890100003F", "scan_start", {"group": 1}),
    (lambda: ptz.aux_command("on", 1), "A50F018C01000042", "aux_on", {"switch": 1}),
]


@pytest.mark.parametrize(("build", "expected", "action", "fields"), WORKED, ids=[w[1] + w[2] for w in WORKED])
def test_worked_strings_both_ways(build, expected, action, fields):
    assert build() == expected
    cmd = parse_ptzcmd(expected)
    assert cmd.action == action and cmd.address == 1 and cmd.version == 0
    for name, value in fields.items():
        assert getattr(cmd, name) == value, name
    assert cmd.hex == expected
    assert parse_ptzcmd(expected.lower()) == cmd and parse_ptzcmd(f"  {expected}\n") == cmd


def test_standard_sample_checksum():
    # the standard's own sample: A5 0F 4D 10 00 00 10 sums to 0x121
    cmd = parse_ptzcmd("A50F4D1000001021")
    assert (cmd.address, cmd.action, cmd.zoom_speed) == (0x4D, "zoom_in", 1)
    assert ptz.encode(0x10, 0, 0, 1, address=0x4D) == "A50F4D1000001021"


def test_combined_bits_decode():
    assert parse_ptzcmd(ptz.encode(0x29, 0x20, 0x30, 2)).action == "up_right+zoom_out"  # the standard's 0x29
    assert parse_ptzcmd(ptz.encode(0x49)).action == "iris_close+focus_far"
    assert parse_ptzcmd(ptz.encode(0x48)).action == "iris_close"
    assert parse_ptzcmd(ptz.encode(0x41)).action == "focus_far"
    assert parse_ptzcmd(ptz.encode(0x40)).action == "fi_stop"
    assert parse_ptzcmd(ptz.encode(0x89, 1, 1)).action == "scan_left"
    assert parse_ptzcmd(ptz.encode(0x89, 1, 2)).action == "scan_right"
    assert parse_ptzcmd(ptz.encode(0x8D, 1)).action == "aux_off"
    vendor = parse_ptzcmd(ptz.encode(0xC7, 1, 2, 3))
    assert (vendor.kind, vendor.action, vendor.preset, vendor.pan_speed) == ("unknown", "unknown", None, None)


def test_every_portal_action():
    assert ptz.ACTIONS == PORTAL_ACTIONS
    expected = {
        "up": (0x08, 0, 200, 0), "down": (0x04, 0, 200, 0), "left": (0x02, 200, 0, 0), "right": (0x01, 200, 0, 0),
        "up_left": (0x0A, 200, 200, 0), "up_right": (0x09, 200, 200, 0), "down_left": (0x06, 200, 200, 0),
        "down_right": (0x05, 200, 200, 0), "zoom_in": (0x10, 0, 0, 12), "zoom_out": (0x20, 0, 0, 12),
        "focus_near": (0x42, 12, 0, 0), "focus_far": (0x41, 12, 0, 0), "iris_open": (0x44, 0, 12, 0),
        "iris_close": (0x48, 0, 12, 0), "stop": (0, 0, 0, 0),
    }
    for action in PORTAL_ACTIONS:
        cmd = parse_ptzcmd(ptz.ptz_command(action, 200))
        assert (cmd.instruction, cmd.data1, cmd.data2, cmd.data3) == expected[action], action
        assert cmd.action == action


@pytest.mark.parametrize(("speed", "nibble"), [(1, 1), (15, 1), (16, 1), (47, 2), (48, 3), (255, 15), (240, 15)])
def test_small_speeds_clamped(speed, nibble):
    assert parse_ptzcmd(ptz.ptz_command("zoom_out", speed)).zoom_speed == nibble
    assert parse_ptzcmd(ptz.ptz_command("focus_far", speed)).focus_speed == nibble
    assert parse_ptzcmd(ptz.ptz_command("iris_close", speed)).iris_speed == nibble


@pytest.mark.parametrize("call", [
    lambda: ptz.ptz_command("spin", 10),
    lambda: ptz.ptz_command("up", 0),
    lambda: ptz.ptz_command("up", 256),
    lambda: ptz.ptz_command("up", True),
    lambda: ptz.ptz_command("up", "10"),
    lambda: ptz.preset_command("call", 0),
    lambda: ptz.preset_command("call", 256),
    lambda: ptz.preset_command("goto", 3),
    lambda: ptz.cruise_command("dwell", 1, 4096),
    lambda: ptz.cruise_command("add", 1, 0),
    lambda: ptz.cruise_command("loop", 1),
    lambda: ptz.cruise_command("start", 256),
    lambda: ptz.scan_command("sideways", 1),
    lambda: ptz.aux_command("toggle", 1),
    lambda: ptz.move_command(pan="up"),
    lambda: ptz.fi_command(focus="open"),
    lambda: ptz.encode(0x100),
    lambda: ptz.encode(0, address=4096),
    lambda: ptz.encode(0, data3=16),
])
def test_builders_refuse_bad_arguments(call):
    with pytest.raises(PtzCmdError) as exc:
        call()
    assert " / " in str(exc.value)  # "中文 / English"


@pytest.mark.parametrize("garbage", [
    "", "A50F01", "A50F0100000000B5FF", "A50F0100000000B", "A50F01000000 0B5", "G50F0100000000B5",
    "A50F0100000000B6",  # wrong sum
    "A50E0100000000B4",  # byte 2 low nibble is not (A + 5 + 0) % 16
    "A51F0100000000C5",  # version 1 with the checksum of version 0
    "B50F0100000000C5",  # not A5
    "０A50F0100000000B5"[:16], "A50F0100000000Ｂ5",
])
def test_garbage_refused(garbage):
    with pytest.raises(PtzCmdError):
        parse_ptzcmd(garbage)


@pytest.mark.parametrize("bits", [0x03, 0x0C, 0x30, 0x3F, 0x43, 0x4C])
def test_contradictory_bits_refused(bits):
    with pytest.raises(PtzCmdError, match="冲突"):
        parse_ptzcmd(ptz.encode(bits, 1, 1))


@pytest.mark.parametrize("value", [None, 5, b"A50F0100000000B5", ["A50F0100000000B5"]])
def test_non_strings_refused(value):
    with pytest.raises(PtzCmdError):
        parse_ptzcmd(value)


# ------------------------------------------------------------------ hypothesis
@given(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255), st.integers(0, 15), st.integers(0, 4095),
       st.integers(0, 15))
def test_fields_round_trip(instruction, d1, d2, d3, address, version):
    text = ptz.encode(instruction, d1, d2, d3, address=address, version=version)
    assert len(text) == 16 and text == text.upper()
    try:
        cmd = parse_ptzcmd(text)
    except PtzCmdError as exc:
        assert "冲突" in str(exc)  # only contradictory bit pairs are refused
        return
    assert (cmd.instruction, cmd.data1, cmd.data2, cmd.data3, cmd.address, cmd.version) == (
        instruction, d1, d2, d3, address, version)
    assert cmd.hex == text and isinstance(cmd.action, str) and cmd.action


@given(st.sampled_from(PORTAL_ACTIONS), st.integers(1, 255))
def test_actions_round_trip(action, speed):
    cmd = parse_ptzcmd(ptz.ptz_command(action, speed))
    assert cmd.action == action
    if action in ("up", "down", "left", "right") or "_" in action and action.split("_")[0] in ("up", "down"):
        moving = {cmd.pan_speed, cmd.tilt_speed} - {0}
        assert moving == {speed}


@given(st.sampled_from(["set", "call", "delete"]), st.integers(1, 255))
def test_presets_round_trip(op, n):
    cmd = parse_ptzcmd(ptz.preset_command(op, n))
    assert (cmd.action, cmd.preset) == (f"preset_{op}", n)


@given(st.sampled_from(["speed", "dwell"]), st.integers(0, 255), st.integers(0, 4095))
def test_twelve_bit_values_round_trip(op, group, value):
    cmd = parse_ptzcmd(ptz.cruise_command(op, group, value))
    assert (cmd.action, cmd.group, cmd.value) == (f"cruise_{op}", group, value)
    scan = parse_ptzcmd(ptz.scan_command("speed", group, value))
    assert (scan.action, scan.group, scan.value) == ("scan_speed", group, value)


@given(st.text(max_size=40))
def test_any_text_decodes_or_is_refused(text):
    try:
        cmd = parse_ptzcmd(text)
    except PtzCmdError:
        return
    assert cmd.hex == text.strip().upper()


@given(st.binary(min_size=8, max_size=8))
def test_any_eight_bytes_decode_or_are_refused(data):
    try:
        cmd = parse_ptzcmd(data.hex())
    except PtzCmdError:
        return
    assert data[0] == 0xA5 and sum(data[:7]) % 256 == data[7] and cmd.hex == data.hex().upper()
