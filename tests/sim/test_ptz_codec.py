"""The simulated dome's own PTZCmd decoder and its PTZ state (gbsim/ptz.py), under a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device_control.types import ACTIONS
from gbsim.ptz import PAN_DEG_PER_S, ZOOM_MAX, PtzDecodeError, PtzState, decode_ptzcmd
from sip_server.gb import ptz as codec

# The worked strings of the fact sheet (docs gb28181.md section 2.2), decoded.
VECTORS = [
    ("A50F0100000000B5", "ptz", "stop", {}),
    ("A50F01080080003D", "ptz", "up", {"tilt": 1, "tilt_speed": 0x80, "pan_speed": 0}),
    ("A50F01094040003E", "ptz", "up_right", {"pan": 1, "tilt": 1, "pan_speed": 0x40, "tilt_speed": 0x40}),
    ("A50F0110000030F5", "ptz", "zoom_in", {"zoom": 1, "zoom_speed": 3}),
    ("A50F014400400039", "fi", "iris_open", {"iris": 1}),
    ("A50F014240000037", "fi", "focus_near", {"focus": -1}),
    ("A50F01810005003B", "preset", "preset_set", {"preset": 5}),
    ("A50F01820005003C", "preset", "preset_call", {"preset": 5}),
    ("A50F01830005003D", "preset", "preset_delete", {"preset": 5}),
    ("A50F01840105003F", "cruise", "cruise_add", {"group": 1, "preset": 5}),
    ("A50F0187012C1079", "cruise", "cruise_dwell", {"group": 1, "value": 300}),
    ("A50F01880100003E", "cruise", "cruise_start", {"group": 1}),
    ("A50F01890100003F", "scan", "scan_start", {"group": 1}),
    ("A50F018C01000042", "aux", "aux_on", {"group": 1}),
    ("A50F4D1000001021", "ptz", "zoom_in", {"address": 0x4D, "zoom_speed": 1}),  # the standard's own sample
]


@pytest.mark.parametrize(("text", "kind", "action", "fields"), VECTORS)
def test_worked_strings_decode(text: str, kind: str, action: str, fields: dict) -> None:
    cmd = decode_ptzcmd(text.lower())
    assert cmd.hex == text and cmd.kind == kind and cmd.action == action
    for name, value in fields.items():
        assert getattr(cmd, name) == value, name


@pytest.mark.parametrize("bad", [
    "", "A50F01000000B5", "A50F0100000000B5FF", "G50F0100000000B5", "A50F0100000000B6",  # length, hex, checksum
    "A50E0100000000B4", "B50F0100000000C5", "A5 0F01000000B5", "A50F01030000...",
    "A50F01030000B8" + "00", "A50F010C0000000C"[:14] + "C0",  # right+left / up+down both set
    "A50F01810000003A",  # preset 0
    "A50F01FF000000B4",  # unknown instruction
])
def test_garbage_is_refused(bad: str) -> None:
    with pytest.raises(PtzDecodeError):
        decode_ptzcmd(bad)


def _checksummed(body: bytes) -> str:
    return (body + bytes([sum(body) % 256])).hex().upper()


def test_conflicting_bits_are_refused() -> None:
    for code in (0x03, 0x0C, 0x30, 0x43, 0x4C):
        with pytest.raises(PtzDecodeError, match="both"):
            decode_ptzcmd(_checksummed(bytes([0xA5, 0x0F, 0x01, code, 0x10, 0x10, 0x00])))


@given(st.binary(min_size=0, max_size=12).map(lambda b: b.hex()) | st.text(max_size=20))
def test_decoder_never_raises_anything_else(text: str) -> None:
    try:
        decode_ptzcmd(text)
    except PtzDecodeError:
        pass


@given(st.integers(0, 0x3F), st.integers(0, 255), st.integers(0, 255), st.integers(0, 15), st.integers(0, 4095))
def test_every_valid_ptz_instruction_decodes(code: int, d1: int, d2: int, d3: int, address: int) -> None:
    text = _checksummed(bytes([0xA5, 0x0F, address & 0xFF, code, d1, d2, d3 << 4 | address >> 8]))
    if code & 0x03 == 0x03 or code & 0x0C == 0x0C or code & 0x30 == 0x30:
        with pytest.raises(PtzDecodeError):
            decode_ptzcmd(text)
        return
    cmd = decode_ptzcmd(text)
    assert cmd.address == address and cmd.pan_speed == d1 and cmd.tilt_speed == d2 and cmd.zoom_speed == d3
    assert cmd.pan == (1 if code & 1 else -1 if code & 2 else 0)
    assert cmd.tilt == (1 if code & 8 else -1 if code & 4 else 0)
    assert cmd.zoom == (1 if code & 16 else -1 if code & 32 else 0)


@pytest.mark.parametrize("action", ACTIONS)
def test_the_platform_codec_and_the_dome_agree(action: str) -> None:
    """What the platform's encoder (sip_server.gb.ptz) sends for each portal action, the dome reads as it."""
    cmd = decode_ptzcmd(codec.ptz_command(action, 0x60))
    assert cmd.action == action
    for n in (1, 5, 255):
        for op in ("set", "call", "delete"):
            got = decode_ptzcmd(codec.preset_command(op, n))
            assert got.action == f"preset_{op}" and got.preset == n


# ------------------------------------------------------------------------------------------ state
def test_moves_at_the_commanded_speed_until_stopped() -> None:
    s = PtzState(pan=10.0)
    assert s.apply(decode_ptzcmd("A50F0101FF0000B5"), 0.0)  # right, pan speed 0xFF
    assert s.view(1.0).pan == pytest.approx(10.0 + PAN_DEG_PER_S) and s.view(1.0).moving
    s.apply(decode_ptzcmd("A50F0100000000B5"), 2.0)  # stop
    pan = s.view(2.0).pan
    assert pan == pytest.approx((10.0 + 2 * PAN_DEG_PER_S) % 360)
    assert s.view(50.0).pan == pytest.approx(pan) and not s.view(50.0).moving
    # left at half speed wraps below zero
    s = PtzState(pan=5.0)
    s.apply(decode_ptzcmd(_checksummed(bytes([0xA5, 0x0F, 0x01, 0x02, 0x80, 0x00, 0x00]))), 0.0)
    assert s.view(1.0).pan == pytest.approx((5.0 - 0x80 / 255 * PAN_DEG_PER_S) % 360)
    # tilt clamps, zoom clamps
    s = PtzState()
    s.apply(decode_ptzcmd("A50F01080080003D"), 0.0)
    assert s.view(100.0).tilt == 90.0
    s.apply(decode_ptzcmd(_checksummed(bytes([0xA5, 0x0F, 0x01, 0x10, 0, 0, 0xF0]))), 100.0)
    assert s.view(200.0).zoom == ZOOM_MAX and s.view(200.0).tilt == 90.0


def test_presets_store_and_recall_and_cruise_visits_them() -> None:
    s = PtzState(pan=0.0)
    assert not s.touched
    s.apply(decode_ptzcmd("A50F01810005003B"), 0.0, name="大门")  # set 5 here (pan 0)
    assert not s.touched
    s.apply(decode_ptzcmd("A50F0101FF0000B5"), 0.0)
    s.apply(decode_ptzcmd("A50F0100000000B5"), 1.0)  # pan 90
    s.apply(decode_ptzcmd(codec.preset_command("set", 6)), 1.0)
    assert s.preset_list() == [(5, "大门"), (6, "预置点6")]
    s.apply(decode_ptzcmd("A50F01820005003C"), 2.0)
    v = s.view(2.0)
    assert v.pan == pytest.approx(0.0) and v.preset == 5 and not v.moving and s.touched
    s.apply(decode_ptzcmd(codec.preset_command("call", 6)), 3.0)
    assert s.view(3.0).pan == pytest.approx(90.0) and s.view(3.0).preset == 6
    # the device's cruise: points 5, 6, dwell 2 s
    for text in (codec.cruise_command("add", 1, 5), codec.cruise_command("add", 1, 6),
                 codec.cruise_command("dwell", 1, 2), codec.cruise_command("start", 1)):
        s.apply(decode_ptzcmd(text), 10.0)
    assert s.cruising == 1
    assert [s.view(t).preset for t in (10.0, 11.9, 12.1, 14.1)] == [5, 5, 6, 5]
    s.apply(decode_ptzcmd("A50F0100000000B5"), 14.5)  # a stop ends the cruise where it is
    assert s.cruising is None and s.view(30.0).preset == 5 and s.view(30.0).pan == pytest.approx(0.0)
    s.apply(decode_ptzcmd("A50F01830005003D"), 31.0)
    assert s.preset_list() == [(6, "预置点6")] and s.view(31.0).preset is None
