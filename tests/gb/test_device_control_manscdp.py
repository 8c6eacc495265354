"""MANSCDP bodies of device control: DeviceControl built and read back (every sub-command of the seam), its
Result, PresetQuery, the alarm subscription and acknowledgement; hostile values refused with ManscdpError."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sip_server.gb import manscdp as m
from sip_server.gb import ptz
from sip_server.gb.manscdp import ManscdpError

CH = "34020000001310000001"


def roundtrip(body: bytes) -> m.DeviceControl:
    msg = m.parse(body)
    assert (msg.root, msg.cmd_type, msg.device_id) == ("Control", "DeviceControl", CH)
    return m.as_device_control(msg)


def test_ptzcmd_body_as_the_standard_shows_it():
    body = m.build_device_control(11, CH, "PTZCmd", "a50f4d1000001021")
    assert body.decode("gb18030") == (
        '<?xml version="1.0" encoding="GB2312"?>\n<Control>\n<CmdType>DeviceControl</CmdType>\n<SN>11</SN>\n'
        f"<DeviceID>{CH}</DeviceID>\n<PTZCmd>A50F4D1000001021</PTZCmd>\n</Control>\n")
    c = roundtrip(body)
    assert (c.sn, c.element, c.value, c.preset_name, c.wants_result) == (11, "PTZCmd", "A50F4D1000001021", None, False)


def test_ptzcmd_params_info_and_extra_info():
    body = m.build_device_control(12, CH, "PTZCmd", ptz.preset_command("set", 3), preset_name="东门 入口",
                                  info={"ControlPriority": 5}, extra_info=["a", "b&c"], charset="UTF-8")
    c = roundtrip(body)
    assert (c.value, c.preset_name, c.info, c.extra_info) == ("A50F01810003" + "0039", "东门 入口",
                                                               {"ControlPriority": "5"}, ("a", "b&c"))
    c = roundtrip(m.build_device_control(13, CH, "PTZCmd", ptz.cruise_command("add", 1, 5), cruise_track_name="夜巡"))
    assert c.cruise_track_name == "夜巡"


@pytest.mark.parametrize(("element", "value", "result"), [
    ("TeleBoot", "Boot", False), ("RecordCmd", "Record", True), ("RecordCmd", "StopRecord", True),
    ("GuardCmd", "SetGuard", True), ("GuardCmd", "ResetGuard", True), ("AlarmCmd", "ResetAlarm", True),
    ("IFameCmd", "Send", False), ("IFrameCmd", "Send", False),
])
def test_one_word_commands(element, value, result):
    c = roundtrip(m.build_device_control(20, CH, element, value))
    assert (c.element, c.value, c.children, c.wants_result) == (element, value, {}, result)


def test_alarm_reset_with_info_and_record_stream_number():
    c = roundtrip(m.build_device_control(21, CH, "AlarmCmd", "ResetAlarm", info={"AlarmMethod": 2, "AlarmType": 1}))
    assert c.info == {"AlarmMethod": "2", "AlarmType": "1"}
    body = m.build_device_control(22, CH, "RecordCmd", "Record", siblings={"StreamNumber": 0})
    assert m.parse(body).get("StreamNumber") == "0"


def test_home_position():
    c = roundtrip(m.build_device_control(23, CH, "HomePosition", {"Enabled": True, "ResetTime": 30, "PresetIndex": 3}))
    assert (c.element, c.value, c.children) == ("HomePosition", None,
                                                {"Enabled": "1", "ResetTime": "30", "PresetIndex": "3"})
    c = roundtrip(m.build_device_control(24, CH, "HomePosition", {"Enabled": 0, "ResetTime": 30}))
    assert c.children == {"Enabled": "0"}  # only the switch when disabled, as common platforms send


def test_other_structured_commands_pass_through():
    c = roundtrip(m.build_device_control(25, CH, "PTZPreciseCtrl", {"Pan": "120.00", "Tilt": "10.50", "Zoom": "4.00"}))
    assert c.children == {"Pan": "120.00", "Tilt": "10.50", "Zoom": "4.00"}


@pytest.mark.parametrize(("element", "value", "kw"), [
    ("PTZCmd", "A50F0100000000B6", {}),
    ("PTZCmd", "<x/>", {}),
    ("PTZCmd", None, {}),
    ("PTZCmd", ptz.STOP, {"preset_name": "x" * 33}),
    ("PTZCmd", ptz.STOP, {"preset_name": "东门东门东门东门东门东门东门东门东门"}),  # 18 characters, 36 bytes
    ("PTZCmd", ptz.STOP, {"preset_name": ""}),
    ("PTZCmd", ptz.STOP, {"preset_name": "a\x00b"}),
    ("TeleBoot", "Boot", {"preset_name": "x"}),
    ("TeleBoot", "reboot", {}),
    ("RecordCmd", "record", {}),
    ("GuardCmd", None, {}),
    ("AlarmCmd", "ResetAlarm", {"extra_info": ["x" * 1025]}),
    ("HomePosition", "1", {}),
    ("HomePosition", {"Enabled": 2}, {}),
    ("HomePosition", {"Enabled": 1, "ResetTime": -1, "PresetIndex": 1}, {}),
    ("HomePosition", {"Enabled": 1, "ResetTime": 30}, {}),
    ("Reboot", "Boot", {}),
    ("PTZPreciseCtrl", None, {}),
    ("TeleBoot", "Boot", {"info": {"bad name": 1}}),
    ("TeleBoot", "Boot", {"charset": "latin-1"}),
])
def test_bad_commands_refused(element, value, kw):
    with pytest.raises(ManscdpError):
        m.build_device_control(30, CH, element, value, **kw)


def test_control_result():
    r = m.as_control_result(m.parse(m.build_control_response(40, CH, "OK")))
    assert (r.sn, r.device_id, r.result, r.ok) == (40, CH, "OK", True)
    r = m.as_control_result(m.parse(m.build_control_response(41, CH, "ERROR")))
    assert (r.result, r.ok) == ("ERROR", False)
    r = m.as_control_result(m.parse(m.build_message("Response", "DeviceControl", 42, CH, extra={"Result": "ok"})))
    assert r.result == "OK"
    r = m.as_control_result(m.parse(m.build_message("Response", "DeviceControl", 43, CH, extra={"Result": "maybe"})))
    assert r.result is None and r.raw["Result"] == "maybe"
    r = m.as_control_result(m.parse(m.build_control_response(44, CH, cmd_type="DeviceConfig")))
    assert r.cmd_type == "DeviceConfig"
    with pytest.raises(ManscdpError):
        m.as_control_result(m.parse(m.build_message("Response", "Catalog", 1, CH)))
    with pytest.raises(ManscdpError):
        m.build_control_response(1, CH, "FINE")


def test_preset_list():
    body = m.build_preset_response(50, CH, [(2, "大厅"), (1, "东门"), (9, None)])
    p = m.as_preset_list(m.parse(body))
    assert (p.sn, p.sum_num, p.pairs()) == (50, 3, [(1, "东门"), (2, "大厅"), (9, None)])
    empty = m.as_preset_list(m.parse(m.build_preset_response(51, CH, [])))
    assert (empty.sum_num, empty.items) == (0, [])
    # a device's answer without SumNum, with junk items and a repeated number
    raw = (b"<?xml version=\"1.0\"?><Response><CmdType>PresetQuery</CmdType><SN>52</SN><DeviceID>1</DeviceID>"
           b"<PresetList Num=\"5\"><Item><PresetID>3</PresetID><PresetName>A</PresetName></Item>"
           b"<Item><PresetID>0</PresetID></Item><Item><PresetID>256</PresetID></Item><Item><PresetID>x</PresetID>"
           b"</Item><Item><PresetID>3</PresetID><PresetName>B</PresetName></Item></PresetList></Response>")
    p = m.as_preset_list(m.parse(raw))
    assert (p.sum_num, p.pairs()) == (5, [(3, "A")])


def test_alarm_subscribe_and_acknowledgement_bodies():
    q = m.parse(m.build_alarm_subscribe(60, CH))
    assert (q.root, q.cmd_type, q.get("StartAlarmPriority"), q.get("EndAlarmPriority"), q.get("AlarmMethod")) == (
        "Query", "Alarm", "0", "0", "0")
    q = m.parse(m.build_alarm_subscribe(61, CH, start_priority=1, end_priority=2, method="1/2", alarm_type="2"))
    assert (q.get("StartAlarmPriority"), q.get("AlarmMethod"), q.get("AlarmType")) == ("1", "1/2", "2")
    r = m.parse(m.build_alarm_response(62, CH))
    assert (r.root, r.cmd_type, r.sn, r.get("Result")) == ("Response", "Alarm", 62, "OK")


def test_check_alarm():
    ok = m.as_alarm(m.parse(m.build_alarm_notify(1, CH, alarm_priority=4, alarm_method=7,
                                                  alarm_time="2025-03-01 14:05:09")))
    assert m.check_alarm(ok) is ok
    for kw in ({"alarm_priority": 5}, {"alarm_method": 0}, {"alarm_time": "2025-13-01T00:00:00"}):
        args = {"alarm_priority": 1, "alarm_method": 1, "alarm_time": "2025-03-01T14:05:09", **kw}
        with pytest.raises(ManscdpError, match=" / "):
            m.check_alarm(m.as_alarm(m.parse(m.build_alarm_notify(1, CH, **args))))


# ------------------------------------------------------------------ hypothesis
_names = st.text(alphabet=st.characters(codec="gb18030", exclude_categories=("Cs", "Cc", "Zl", "Zp")),
                 min_size=1, max_size=8).filter(lambda t: t.strip() == t and t)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(ptz.ACTIONS), st.integers(1, 255), st.one_of(st.none(), _names), st.integers(0, 2**31),
       st.sampled_from(["GB2312", "UTF-8", "GBK"]))
def test_ptz_control_round_trip(action, speed, name, sn, charset):
    hexcmd = ptz.ptz_command(action, speed)
    c = roundtrip(m.build_device_control(sn, CH, "PTZCmd", hexcmd, preset_name=name, charset=charset))
    assert (c.sn, c.value, c.preset_name) == (sn, hexcmd, name)
    assert ptz.parse_ptzcmd(c.value).action == action


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 255), st.one_of(st.none(), _names)), max_size=20,
                unique_by=lambda t: t[0]))
def test_preset_list_round_trip(presets):
    p = m.as_preset_list(m.parse(m.build_preset_response(1, CH, presets)))
    assert p.pairs() == sorted(presets) and p.sum_num == len(presets)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_views_raise_only_manscdp_error(data):
    prefix = b"<?xml version='1.0'?><Control><CmdType>DeviceControl</CmdType><SN>1</SN><DeviceID>1</DeviceID>"
    for body in (data, prefix + data, prefix + data + b"</Control>"):
        try:
            msg = m.parse(body)
        except ManscdpError:
            continue
        for view in (m.as_device_control, m.as_control_result, m.as_preset_list, m.as_home_position,
                     m.as_cruise_tracks, m.as_cruise_track):
            try:
                view(msg)
            except ManscdpError:
                pass


def test_home_position_and_cruise_track_answers():
    home = m.as_home_position(m.parse(m.build_message("Response", "HomePositionQuery", 70, CH, extra={
        "HomePosition": {"Enabled": 1, "ResetTime": 30, "PresetIndex": 3}})))
    assert (home.enabled, home.reset_time, home.preset_index) == (True, 30, 3)
    off = m.as_home_position(m.parse(m.build_message("Response", "HomePositionQuery", 71, CH, extra={
        "HomePosition": {"Enabled": 0}})))
    assert (off.enabled, off.reset_time) == (False, None)
    tracks = m.as_cruise_tracks(m.parse(m.build_message("Response", "CruiseTrackListQuery", 72, CH, extra=[
        ("SumNum", 2), ("CruiseTrackList", [("CruiseTrack", {"Number": 2, "Name": "夜巡"}),
                                            ("CruiseTrack", {"Number": 1, "Name": "日巡"}),
                                            ("CruiseTrack", {"Number": "x"})])])))
    assert [(t.number, t.name) for t in tracks] == [(1, "日巡"), (2, "夜巡")]
    track = m.as_cruise_track(m.parse(m.build_message("Response", "CruiseTrackQuery", 73, CH, extra=[
        ("Number", 1), ("Name", "日巡"), ("SumNum", 2), ("CruisePointList", [
            ("CruisePoint", {"PresetIndex": 1, "StayTime": 10, "Speed": 5}),
            ("CruisePoint", {"PresetIndex": 4, "StayTime": 20}), ("CruisePoint", {"StayTime": 1})])])))
    assert track == m.CruiseTrack(1, "日巡", (m.CruisePoint(1, 10, 5), m.CruisePoint(4, 20, None)))
    with pytest.raises(ManscdpError):
        m.as_cruise_track(m.parse(m.build_message("Response", "CruiseTrackQuery", 74, CH)))
