"""The assembly's cascade adapters: PTZ from an upper platform at its level, and audit entries naming it."""

from __future__ import annotations

from cascade.ports import PlatformOperator
from gbcore.ids import ChannelRef
from gbops.cascade_wiring import CascadeControl, cascade_audit
from sip_server.gb import manscdp
from sip_server.gb.ptz import preset_command, ptz_command

CH = ChannelRef("34020000001320000001", "34020000001310000001")
UPPER = PlatformOperator(platform_id=3, server_id="34010000002000000001", name="市局平台", ptz_level=4)


class FakeControl:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    async def ptz(self, op, channel, action, speed):
        self.calls.append(("ptz", op, channel, action, speed))

    async def preset(self, op, channel, action, number, name=None):
        self.calls.append(("preset", op, channel, action, number))


def control_message(element: str, value: str):
    return manscdp.parse(manscdp.build_device_control(5, CH.channel_id, element, value))


async def test_ptz_from_an_upper_is_an_operator_of_kind_platform_at_its_level():
    fake = FakeControl()
    port = CascadeControl(fake)
    assert await port.upper_control(UPPER, CH, control_message("PTZCmd", ptz_command("up_left", 0x60)))
    [(kind, op, channel, action, speed)] = fake.calls
    assert (kind, channel, action, speed) == ("ptz", CH, "up_left", 0x60)
    assert (op.kind, op.level, op.username, op.display_name) == ("platform", 4, "platform:34010000002000000001",
                                                                 "市局平台")
    assert await port.upper_control(UPPER, CH, control_message("PTZCmd", ptz_command("stop")))
    assert fake.calls[-1][3] == "stop"


async def test_preset_call_from_an_upper():
    fake = FakeControl()
    assert await CascadeControl(fake).upper_control(UPPER, CH, control_message("PTZCmd", preset_command("call", 7)))
    assert fake.calls == [("preset", fake.calls[0][1], CH, "call", 7)]


async def test_anything_else_is_not_carried_out():
    fake = FakeControl()
    port = CascadeControl(fake)
    assert not await port.upper_control(UPPER, CH, control_message("TeleBoot", "Boot"))
    assert not await port.upper_control(UPPER, CH, control_message("RecordCmd", "Record"))
    assert fake.calls == []


async def test_audit_names_the_upper_platform_or_the_user():
    entries = []

    class Log:
        async def record(self, **kw):
            entries.append(kw)

    audit = cascade_audit(Log())
    await audit("cascade.invite", CH.key, {"platform_id": 3, "server_id": UPPER.server_id, "name": "市局平台"}, None)
    await audit("cascade.platform_edit", "cascade:3", {"platform_id": 3}, {"user_id": 9, "username": "ops",
                                                                          "client_ip": "10.0.0.8"})
    first, second = entries
    assert (first["actor"].type, first["actor"].id, first["target"].type, first["target"].id) == (
        "platform", UPPER.server_id, "channel", CH.key)
    assert (second["actor"].type, second["actor"].id, second["client_ip"]) == ("user", "9", "10.0.0.8")
    assert (second["target"].type, second["target"].id) == ("cascade_platform", "3")
