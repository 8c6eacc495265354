"""Device control, presets and alarms against the real SipService over real UDP on 127.0.0.1, with a
scripted dome.

The dome registers (digest, ``X-GB-ver`` as told), answers every DeviceControl 200 and, for the commands the
standard answers (RecordCmd, GuardCmd, AlarmCmd, HomePosition), a Response/DeviceControl Result MESSAGE;
answers PresetQuery with its presets and an alarm SUBSCRIBE with 200. It sends alarms and positions; the
platform answers 200 (400 for a malformed alarm) and reports them.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from sip_server.gb import events as ev
from sip_server.gb import manscdp
from sip_server.gb.ptz import parse_ptzcmd, preset_command, ptz_command
from sip_server.service import DeviceNotReachable, QueryError
from sip_server.sip import build_authorization, make_response
from tests.gb import test_identity_live as live
from tests.gb.test_identity_live import CHANNEL, DEV, DOMAIN, PASSWORD, SERVER_ID, Peer, request_bytes, until

service = live.service  # the SipService fixture (real sockets on 127.0.0.1)

ACTIONS = ("up", "down", "left", "right", "up_left", "up_right", "down_left", "down_right", "zoom_in", "zoom_out",
           "focus_near", "focus_far", "iris_open", "iris_close", "stop")


class Dome(Peer):
    """A PTZ dome: logs each DeviceControl it receives (decoded), answers Results, presets, SUBSCRIBE."""

    def __init__(self, version: str | None = "3.0") -> None:
        super().__init__("udp")
        self.version = version
        self.controls: list[manscdp.DeviceControl] = []
        self.result: str | None = "OK"  # None: never sends the Result
        self.presets: list | None = [(1, "东门"), (2, "大厅"), (5, None)]  # None: 200 but no answer
        self.control_status = 200
        self.subscribes: list = []
        self.acks: list[manscdp.ManscdpMessage] = []  # Response/Alarm from the platform

    def _on_message(self, msg) -> None:
        if msg.is_request and msg.method == "SUBSCRIBE":
            self.subscribes.append(msg)
            resp = make_response(msg, 200, to_tag="dev")
            resp.headers.add("Expires", msg.headers.get("Expires"))
            self.send(resp.to_bytes())
            return
        if msg.is_request and msg.method == "MESSAGE":
            body = manscdp.parse(msg.body)
            if body.root == "Control":
                control = manscdp.as_device_control(body)
                self.controls.append(control)
                self.send(make_response(msg, self.control_status, to_tag="dev").to_bytes())
                if self.control_status == 200 and control.wants_result and self.result is not None:
                    reply = manscdp.build_control_response(control.sn, control.device_id, self.result)
                    asyncio.get_running_loop().call_later(0.05, self.send, self._message_bytes(reply))
                return
            if body.cmd_type == "PresetQuery" and self.presets is not None:
                self.send(make_response(msg, 200, to_tag="dev").to_bytes())
                reply = manscdp.build_preset_response(body.sn, body.device_id, self.presets)
                asyncio.get_running_loop().call_later(0.05, self.send, self._message_bytes(reply))
                return
            if body.root == "Response" and body.cmd_type == "Alarm":
                self.acks.append(body)
        super()._on_message(msg)

    def _message_bytes(self, body: bytes) -> bytes:
        return request_bytes("MESSAGE", self.local, "udp", body=body)

    async def register(self, password: str = PASSWORD, dev: str = DEV, expires: int = 3600):
        call_id = f"reg-dome-{id(self)}@test"
        headers = (f"Contact: <sip:{dev}@{self.local[0]}:{self.local[1]}>", f"Expires: {expires}",
                   *((f"X-GB-ver: {self.version}",) if self.version else ()))
        first = await self.request(request_bytes("REGISTER", self.local, "udp", from_user=dev, extra=headers,
                                                 call_id=call_id, cseq=1))
        authz = build_authorization(first.headers.get("WWW-Authenticate"), method="REGISTER",
                                    uri=f"sip:{SERVER_ID}@{DOMAIN}", username=dev, password=password,
                                    cnonce="0a4f113b")
        return await self.request(request_bytes("REGISTER", self.local, "udp", from_user=dev,
                                                extra=(*headers, f"Authorization: {authz}"), call_id=call_id,
                                                cseq=2))


async def dome(s, version: str | None = "3.0") -> Dome:
    d = Dome(version)
    await d.open(("127.0.0.1", s.svc.bound_port))
    s.peers.append(d)
    assert (await d.register()).status == 200
    return d


async def test_each_action_reaches_the_dome_as_the_exact_ptzcmd(service):
    s = await service()
    d = await dome(s)
    for action in ACTIONS:
        sent = ptz_command(action, 0x60)
        assert await asyncio.wait_for(s.svc.device_control(DEV, CHANNEL, "PTZCmd", sent, wait=False), 3) == (
            None, True)
    assert [c.device_id for c in d.controls] == [CHANNEL] * len(ACTIONS)
    assert [c.value for c in d.controls] == [ptz_command(a, 0x60) for a in ACTIONS]
    assert [parse_ptzcmd(c.value).action for c in d.controls] == list(ACTIONS)


async def test_preset_set_with_a_name_call_and_delete(service):
    s = await service()
    d = await dome(s)
    await s.svc.device_control(DEV, CHANNEL, "PTZCmd", preset_command("set", 7), wait=False, preset_name="停车场")
    await s.svc.device_control(DEV, CHANNEL, "PTZCmd", preset_command("call", 7), wait=False)
    await s.svc.device_control(DEV, CHANNEL, "PTZCmd", preset_command("delete", 7), wait=False)
    assert [(c.value, c.preset_name) for c in d.controls] == [
        ("A50F0181000700" + "3D", "停车场"), ("A50F0182000700" + "3E", None), ("A50F0183000700" + "3F", None)]


async def test_commands_with_a_result_wait_for_it(service):
    s = await service()
    d = await dome(s)
    assert await s.svc.device_control(DEV, CHANNEL, "RecordCmd", "Record", wait=True) == ("OK", True)
    d.result = "ERROR"
    assert await s.svc.device_control(DEV, None, "GuardCmd", "SetGuard", wait=True) == ("ERROR", True)
    d.result = "OK"
    assert await s.svc.device_control(DEV, None, "AlarmCmd", "ResetAlarm", wait=True,
                                      info={"AlarmMethod": 2, "AlarmType": 1}) == ("OK", True)
    assert await s.svc.device_control(DEV, CHANNEL, "HomePosition",
                                      {"Enabled": 1, "ResetTime": 30, "PresetIndex": 3}, wait=True) == ("OK", True)
    assert [(c.element, c.value, c.device_id) for c in d.controls] == [
        ("RecordCmd", "Record", CHANNEL), ("GuardCmd", "SetGuard", DEV), ("AlarmCmd", "ResetAlarm", DEV),
        ("HomePosition", None, CHANNEL)]
    assert d.controls[2].info == {"AlarmMethod": "2", "AlarmType": "1"}
    assert d.controls[3].children == {"Enabled": "1", "ResetTime": "30", "PresetIndex": "3"}


async def test_a_dome_that_sends_no_result_is_said_plainly(service):
    s = await service()
    d = await dome(s)
    d.result = None
    started = time.monotonic()
    assert await s.svc.device_control(DEV, CHANNEL, "RecordCmd", "StopRecord", wait=True, timeout=0.5) == (
        None, False)
    assert 0.4 < time.monotonic() - started < 2
    assert not s.svc._control_waiters and ("DeviceControl", d.controls[0].sn) not in s.svc.gb._pending


async def test_refusal_and_offline(service):
    s = await service()
    d = await dome(s)
    d.control_status = 403
    with pytest.raises(QueryError, match="403"):
        await s.svc.device_control(DEV, CHANNEL, "PTZCmd", ptz_command("up", 10), wait=False)
    with pytest.raises(QueryError, match="403"):
        await s.svc.device_control(DEV, CHANNEL, "RecordCmd", "Record", wait=True)
    with pytest.raises(DeviceNotReachable):
        await s.svc.device_control("34020000001320000099", None, "TeleBoot", "Boot", wait=False)
    with pytest.raises(ValueError):
        await s.svc.device_control(DEV, CHANNEL, "PTZCmd", "A50F0100000000B6", wait=False)
    assert len(d.controls) == 2


@pytest.mark.parametrize(("version", "spelling"), [("3.0", "IFrameCmd"), ("2.0", "IFameCmd"), (None, "IFameCmd")])
async def test_key_frame_spelling_by_version(service, version, spelling):
    s = await service()
    d = await dome(s, version)
    assert s.svc.gb_version(DEV) == version
    assert await s.svc.device_control(DEV, CHANNEL, "IFameCmd", "Send", wait=False) == (None, True)
    assert [(c.element, c.value) for c in d.controls] == [(spelling, "Send")]


async def test_preset_query(service):
    s = await service()
    d = await dome(s)
    assert await s.svc.preset_query(DEV, CHANNEL) == [(1, "东门"), (2, "大厅"), (5, None)]
    d.presets = []
    assert await s.svc.preset_query(DEV, CHANNEL) == []


async def test_preset_query_without_answer_or_refused_fails(service):
    s = await service()
    d = await dome(s)
    d.presets = None
    started = time.monotonic()
    with pytest.raises(QueryError, match="timeout"):
        await s.svc.preset_query(DEV, CHANNEL, timeout=0.5)
    assert time.monotonic() - started < 2
    d.answer = lambda req: 488
    with pytest.raises(QueryError, match="488"):
        await s.svc.preset_query(DEV, CHANNEL)
    with pytest.raises(DeviceNotReachable):
        await s.svc.preset_query("34020000001320000099", CHANNEL)


async def test_alarm_subscription_and_alarms(service):
    s = await service()
    d = await dome(s)
    sub = await s.svc.subscribe_alarms(DEV, 600)
    assert sub.state == "active" and sub.kind == "Alarm"
    [req] = d.subscribes
    assert req.headers.get("Event").startswith("presence") and manscdp.parse(req.body).cmd_type == "Alarm"

    body = manscdp.build_alarm_notify(31, CHANNEL, alarm_priority=2, alarm_method=5, alarm_time="2025-03-01T14:05:09",
                                      alarm_description="越界", longitude=116.4, latitude=39.9, alarm_type=5)
    resp = await d.message(body)
    assert resp.status == 200
    assert await until(lambda: any(isinstance(e, ev.AlarmReceived) for e in s.events))
    [alarm] = [e for e in s.events if isinstance(e, ev.AlarmReceived)]
    assert (alarm.device_id, alarm.alarm.device_id, alarm.alarm.alarm_priority, alarm.alarm.alarm_type) == (
        DEV, CHANNEL, 2, 5)
    assert await until(lambda: d.acks)  # the Response/Alarm acknowledgement MESSAGE
    assert (d.acks[0].sn, d.acks[0].get("Result")) == (31, "OK")

    bad = manscdp.build_alarm_notify(32, CHANNEL, alarm_priority=7, alarm_method=5, alarm_time="2025-03-01T14:05:09")
    assert (await d.message(bad)).status == 400
    assert (await d.message(b"<Notify><CmdType>Alarm</CmdType>")).status == 400
    await asyncio.sleep(0.1)
    assert len([e for e in s.events if isinstance(e, ev.AlarmReceived)]) == 1 and len(d.acks) == 1

    pos = manscdp.build_mobile_position_notify(33, CHANNEL, time="2025-03-01T14:05:09", longitude=116.5,
                                               latitude=39.8)
    assert (await d.message(pos)).status == 200
    assert await until(lambda: any(isinstance(e, ev.PositionReceived) for e in s.events))


async def test_refused_alarm_subscription(service):
    s = await service()
    d = await dome(s)

    def refuse(msg):
        if msg.is_request and msg.method == "SUBSCRIBE":
            Peer._on_message(d, msg)
            return
        Dome._on_message(d, msg)

    d.answer = lambda req: 489
    d._on_message = refuse
    with pytest.raises(QueryError, match="489"):
        await s.svc.subscribe_alarms(DEV, 600)
    with pytest.raises(DeviceNotReachable):
        await s.svc.subscribe_alarms("34020000001320000099")
