"""SIPp playing a GB/T 28181 PTZ dome against the real SipService (in process, UDP on 127.0.0.1).

tests/sipp/gb_dome_uac.xml registers with digest saying ``X-GB-ver: 3.0``, sends an alarm (answered 200) and
a malformed one (answered 400), keeps alive, un-registers; tests/sipp/gb_dome_ooc.xml answers every
DeviceControl 200 at once (a Result MESSAGE for RecordCmd / GuardCmd / AlarmCmd / HomePosition), PresetQuery,
and the alarm SUBSCRIBE, and logs each control it received. SIPp's exit status says whether every step it
expected happened; its log says which PTZCmd reached it.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from sip_server.gb import events as ev
from sip_server.gb.ptz import parse_ptzcmd, preset_command, ptz_command
from sip_server.gb.server import GbConfig
from sip_server.service import SipService
from tests.conftest import need_tool
from tests.gb.sipp_device import spawn_sipp_device
from tests.gb.test_identity_live import until

PASSWORD = "Gate-7-camera#pw"
DEV = "34020000001320000081"
CHANNEL = "34020000001310000081"
HERE = Path(__file__).resolve().parent.parent / "sipp"
ACTIONS = ("up", "down", "left", "right", "up_left", "up_right", "down_left", "down_right", "zoom_in", "zoom_out",
           "focus_near", "focus_far", "iris_open", "iris_close", "stop")
_CONTROL_RE = re.compile(r"CONTROL sn=(\d+) target=(\d*) ptz=([0-9A-Fa-f]*) name=(\S*) cmd=(\w*) iframe=(\w*)")


async def test_sipp_dome_receives_the_exact_ptzcmds(shared_dir, tmp_path):
    sipp = need_tool("sipp")
    svc = SipService(GbConfig(default_password=PASSWORD, catalog_subscribe_expires=0), host="127.0.0.1", port=0)
    events: list = []
    svc.add_listener(events.append)
    await svc.start()
    seconds = 8
    proc = await spawn_sipp_device(sipp, svc.bound_port, uac=HERE / "gb_dome_uac.xml", ooc=HERE / "gb_dome_ooc.xml",
                                   device_id=DEV, channel_id=CHANNEL, password=PASSWORD, cwd=tmp_path,
                                   seconds=seconds, extra=("-set", "ver", "3.0", "-trace_logs"))
    try:
        assert await until(lambda: svc.is_online(DEV), 5), "the SIPp dome did not register"
        assert svc.gb_version(DEV) == "3.0"
        # its alarm came in and was reported (the malformed one was not)
        assert await until(lambda: any(isinstance(e, ev.AlarmReceived) for e in events), 5)
        [alarm] = [e.alarm for e in events if isinstance(e, ev.AlarmReceived)]
        assert (alarm.device_id, alarm.alarm_priority, alarm.alarm_method, alarm.alarm_type) == (CHANNEL, 2, 5, 2)
        assert (alarm.longitude, alarm.latitude, alarm.alarm_description) == (116.397, 39.908, "SIPp motion")

        sent = []
        for action in ACTIONS:
            sent.append(ptz_command(action, 0x50))
            assert await svc.device_control(DEV, CHANNEL, "PTZCmd", sent[-1], wait=False) == (None, True)
        sent.append(preset_command("set", 3))
        assert await svc.device_control(DEV, CHANNEL, "PTZCmd", sent[-1], wait=False, preset_name="Gate2") == (
            None, True)
        sent.append(preset_command("call", 3))
        await svc.device_control(DEV, CHANNEL, "PTZCmd", sent[-1], wait=False)
        assert await svc.device_control(DEV, CHANNEL, "RecordCmd", "Record", wait=True) == ("OK", True)
        assert await svc.device_control(DEV, None, "AlarmCmd", "ResetAlarm", wait=True,
                                        info={"AlarmMethod": 5, "AlarmType": 2}) == ("OK", True)
        assert await svc.device_control(DEV, CHANNEL, "IFameCmd", "Send", wait=False) == (None, True)
        assert await svc.preset_query(DEV, CHANNEL) == [(1, "Gate"), (2, "Hall")]
        sub = await svc.subscribe_alarms(DEV, 600)
        assert sub.state == "active"

        out = (await asyncio.wait_for(proc.communicate(), seconds + 15))[0].decode("utf-8", "replace")
        logs = "".join(p.read_text("utf-8", "replace") for p in tmp_path.glob("*_logs.log"))
        messages = "".join(p.read_text("utf-8", "replace") for p in tmp_path.glob("*_messages.log"))
        assert proc.returncode == 0, out + logs[-3000:] + messages[-3000:]
        assert "ALARM answered 200" in logs and "BAD ALARM answered 400" in logs
        controls = _CONTROL_RE.findall(logs)
        # what the dome logged: the exact PTZCmd strings, in order, for the channel
        assert [c[2] for c in controls if c[2]] == sent
        assert [parse_ptzcmd(c[2]).action for c in controls if c[2]][:len(ACTIONS)] == list(ACTIONS)
        assert {c[1] for c in controls if c[2]} == {CHANNEL}
        assert [c[3] for c in controls if c[2]][-2:] == ["Gate2", ""]
        assert [(c[1], c[4]) for c in controls if c[4]] == [(CHANNEL, "RecordCmd"), (DEV, "AlarmCmd")]
        assert [c[5] for c in controls if c[5]] == ["IFrameCmd"]  # X-GB-ver 3.0: the 2022 spelling
        assert "SUBSCRIBE Alarm expires=600" in logs
        assert "MESSAGE Response Alarm SN=9001" in logs  # the platform acknowledged the alarm (A.2.6.3)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await svc.close()
