"""A simulated dome (sans-IO SimDevice) driven by a scripted platform: DeviceControl and PresetQuery."""

from __future__ import annotations

import secrets

import pytest

from gbsim.device import MediaEvent, SimDevice
from sip_server.gb import manscdp
from sip_server.gb import ptz as codec
from sip_server.sip import Headers, SipRequest
from tests.sim.fakes import REALM, SERVER_ID, StubPlatform
from tests.sim.test_sim_device import WALL, answer_messages, device, register, take


def control(device_id: str, target: str, *children: tuple[str, object], sn: int = 77) -> SipRequest:
    """A DeviceControl MESSAGE as a platform sends it."""
    h = Headers()
    h.add("Via", f"SIP/2.0/UDP 127.0.0.1:5060;rport;branch=z9hG4bK{secrets.token_hex(8)}")
    h.add("From", f"<sip:{SERVER_ID}@{REALM}>;tag={secrets.token_hex(4)}")
    h.add("To", f"<sip:{device_id}@{REALM}>")
    h.add("Call-ID", f"{secrets.token_hex(8)}@127.0.0.1")
    h.add("CSeq", "1 MESSAGE")
    h.add("Content-Type", "Application/MANSCDP+xml")
    body = manscdp.build_message("Control", "DeviceControl", sn, target, extra=list(children))
    return SipRequest("MESSAGE", f"sip:{device_id}@127.0.0.1:5071", h, body)


def dome(**kw) -> tuple[SimDevice, StubPlatform]:
    platform = StubPlatform()
    dev = device(**kw)
    register(dev, platform)
    take(dev)
    return dev, platform


def send(dev: SimDevice, req: SipRequest, now: float) -> None:
    resp = dev.on_request(req, now)
    assert resp is not None and resp.status == 200 and not resp.body  # 200 at once, no body


def test_ptzcmd_is_decoded_logged_and_moves_the_channel() -> None:
    dev, platform = dome(channels=4)
    ch = dev.channel_ids[1]
    start = dev.ptz_view(ch, 0.0).pan
    send(dev, control(dev.device_id, ch, ("PTZCmd", "A50F01094040003E"), ("Info", [("ControlPriority", 5)])), 1.0)
    assert take(dev) == []  # PTZCmd has no Response MESSAGE
    [entry] = dev.ptz_log(ch)
    assert entry.action == "up_right" and entry.command.pan_speed == 0x40 and entry.wall == WALL
    view = dev.ptz_view(ch, 2.0)
    assert view.moving and view.pan > start and view.tilt > 0
    assert dev.ptz_moved(ch) and not dev.ptz_moved(dev.channel_ids[0])
    send(dev, control(dev.device_id, ch, ("PTZCmd", codec.ptz_command("stop"))), 2.0)
    assert dev.ptz_view(ch, 9.0) == dev.ptz_view(ch, 2.0) and not dev.ptz_view(ch, 9.0).moving
    assert [e.action for e in dev.ptz_log(ch)] == ["up_right", "stop"]
    assert dev.ptz_log(dev.channel_ids[0]) == []
    assert dev.controls.stats.ptz_commands == 2


def test_malformed_ptzcmd_is_logged_and_ignored() -> None:
    dev, _ = dome(channels=2)
    ch = dev.channel_ids[0]
    send(dev, control(dev.device_id, ch, ("PTZCmd", "A50F0100000000B6")), 1.0)
    [entry] = dev.ptz_log(ch)
    assert entry.command is None and "checksum" in (entry.error or "")
    assert not dev.ptz_moved(ch) and dev.controls.stats.ptz_malformed == 1 and take(dev) == []


def test_ipc_device_id_means_its_channel() -> None:
    dev, _ = dome(channels=1)
    send(dev, control(dev.device_id, dev.device_id, ("PTZCmd", codec.ptz_command("zoom_in", 0xF0))), 1.0)
    assert [e.action for e in dev.ptz_log(dev.channel_ids[0])] == ["zoom_in"]
    assert dev.ptz_view(dev.channel_ids[0], 2.0).zoom > 1.0


def test_presets_set_call_delete_and_preset_query() -> None:
    dev, platform = dome(channels=2)
    ch = dev.channel_ids[0]
    home = dev.ptz_view(ch, 0.0)
    body = manscdp.build_device_control(5, ch, "PTZCmd", codec.preset_command("set", 3), preset_name="东门 <全景>")
    req = control(dev.device_id, ch)
    req.body = body
    send(dev, req, 1.0)
    send(dev, control(dev.device_id, ch, ("PTZCmd", codec.ptz_command("left", 0xFF))), 1.0)
    send(dev, control(dev.device_id, ch, ("PTZCmd", codec.ptz_command("stop"))), 1.5)
    send(dev, control(dev.device_id, ch, ("PTZCmd", codec.preset_command("set", 7))), 2.0)
    moved = dev.ptz_view(ch, 2.0)
    assert moved.pan != pytest.approx(home.pan)
    send(dev, control(dev.device_id, ch, ("PTZCmd", codec.preset_command("call", 3))), 3.0)
    back = dev.ptz_view(ch, 3.0)
    assert back.pan == pytest.approx(home.pan) and back.preset == 3
    send(dev, control(dev.device_id, ch, ("PTZCmd", codec.preset_command("call", 7))), 4.0)
    assert dev.ptz_view(ch, 4.0).pan == pytest.approx(moved.pan) and dev.ptz_view(ch, 4.0).preset == 7
    assert dev.ptz_log(ch)[0].name == "东门 <全景>"

    query = platform.query(dev.device_id, "PresetQuery", target=ch)
    dev.on_request(query, 5.0)
    [answer] = answer_messages(dev, platform, 5.0)
    presets = manscdp.as_preset_list(answer)
    assert presets.device_id == ch and presets.sn == manscdp.parse(query.body).sn and presets.sum_num == 2
    assert [(p.preset_id, p.name) for p in presets.items] == [(3, "东门 <全景>"), (7, "预置点7")]

    send(dev, control(dev.device_id, ch, ("PTZCmd", codec.preset_command("delete", 3))), 6.0)
    dev.on_request(platform.query(dev.device_id, "PresetQuery", target=ch), 6.0)
    [answer] = answer_messages(dev, platform, 6.0)
    assert [p.preset_id for p in manscdp.as_preset_list(answer).items] == [7]
    # another channel has none
    dev.on_request(platform.query(dev.device_id, "PresetQuery", target=dev.channel_ids[1]), 6.0)
    [answer] = answer_messages(dev, platform, 6.0)
    empty = manscdp.as_preset_list(answer)
    assert empty.sum_num == 0 and empty.items == []


@pytest.mark.parametrize(("element", "value", "result"), [
    ("RecordCmd", "Record", "OK"), ("RecordCmd", "StopRecord", "OK"), ("RecordCmd", "Recording", "ERROR"),
    ("GuardCmd", "SetGuard", "OK"), ("GuardCmd", "ResetGuard", "OK"), ("GuardCmd", "", "ERROR"),
    ("AlarmCmd", "ResetAlarm", "OK"), ("AlarmCmd", "Reset", "ERROR"),
])
def test_commands_with_a_result(element: str, value: str, result: str) -> None:
    dev, platform = dome(channels=2)
    ch = dev.channel_ids[1]
    send(dev, control(dev.device_id, ch, (element, value), sn=4242), 1.0)
    [answer] = answer_messages(dev, platform, 1.0)
    got = manscdp.as_control_result(answer)
    assert got.sn == 4242 and got.device_id == ch and got.result == result
    assert dev.controls.control_log[-1].element == element and dev.controls.control_log[-1].result == result


def test_record_cmd_shows_in_device_status_and_unknown_target_is_error() -> None:
    dev, platform = dome(channels=2)
    ch = dev.channel_ids[0]
    send(dev, control(dev.device_id, ch, ("RecordCmd", "Record")), 1.0)
    answer_messages(dev, platform, 1.0)
    dev.on_request(platform.query(dev.device_id, "DeviceStatus", target=ch), 1.0)
    [status] = answer_messages(dev, platform, 1.0)
    assert status.get("Record") == "ON"
    send(dev, control(dev.device_id, "34020000001310099999", ("GuardCmd", "SetGuard")), 1.0)
    [answer] = answer_messages(dev, platform, 1.0)
    assert manscdp.as_control_result(answer).result == "ERROR"


@pytest.mark.parametrize(("children", "result"), [
    ({"Enabled": 1, "ResetTime": 30, "PresetIndex": 3}, "OK"),
    ({"Enabled": 0}, "OK"),
    ({"Enabled": "yes"}, "ERROR"),
    ({"Enabled": 1, "ResetTime": 30, "PresetIndex": 300}, "ERROR"),
])
def test_home_position(children: dict, result: str) -> None:
    dev, platform = dome(channels=2)
    ch = dev.channel_ids[0]
    send(dev, control(dev.device_id, ch, ("HomePosition", children)), 1.0)
    [answer] = answer_messages(dev, platform, 1.0)
    assert manscdp.as_control_result(answer).result == result
    if result == "OK":
        enabled = bool(children["Enabled"])
        assert dev.controls.state(ch).home == (enabled, children.get("ResetTime", 0), children.get("PresetIndex", 0))


def test_fire_and_forget_commands_and_precise_control() -> None:
    dev, _ = dome(channels=2)
    ch = dev.channel_ids[0]
    for element, value in (("TeleBoot", "Boot"), ("IFameCmd", "Send"), ("IFrameCmd", "Send")):
        send(dev, control(dev.device_id, ch if element != "TeleBoot" else dev.device_id, (element, value)), 1.0)
    assert take(dev) == []
    assert [e.element for e in dev.controls.control_log] == ["TeleBoot", "IFameCmd", "IFrameCmd"]
    send(dev, control(dev.device_id, ch, ("PTZPreciseCtrl", {"Pan": "120.00", "Tilt": "-10.50", "Zoom": "4.00"})),
         2.0)
    view = dev.ptz_view(ch, 3.0)
    assert (view.pan, view.tilt, view.zoom) == (pytest.approx(120.0), pytest.approx(10.5), pytest.approx(4.0))
    assert dev.ptz_log(ch)[-1].element == "PTZPreciseCtrl"


def test_a_move_during_a_live_call_asks_for_the_dome_picture() -> None:
    from tests.sim.media_fakes import make_invite

    dev, _ = dome(channels=2)
    ch = dev.channel_ids[1]
    invite = make_invite(ch, ("127.0.0.1", 5071), ("127.0.0.1", 5060), media_port=40000)
    assert dev.on_request(invite, 1.0, key="k") is None
    dev.media_ready(invite.call_id, ("127.0.0.1", 41000), 1.0)
    dev.media_out.clear()
    send(dev, control(dev.device_id, dev.channel_ids[0], ("PTZCmd", codec.ptz_command("left", 9))), 2.0)
    assert dev.media_out == []  # another channel
    send(dev, control(dev.device_id, ch, ("IFrameCmd", "Send")), 2.0)
    send(dev, control(dev.device_id, ch, ("PTZCmd", codec.ptz_command("left", 9))), 2.0)
    send(dev, control(dev.device_id, ch, ("PTZCmd", codec.ptz_command("right", 9))), 2.0)
    kinds = [(e.kind, e.call.channel_id) for e in dev.media_out]
    assert kinds == [("iframe", ch), ("ptz", ch)]  # once: the call switches encoder the first time only
    assert all(isinstance(e, MediaEvent) for e in dev.media_out)
