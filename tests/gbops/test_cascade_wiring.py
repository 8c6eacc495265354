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


async def test_record_info_merges_the_devices_answer_and_the_platforms_segments():
    from datetime import UTC, datetime

    from gbops.cascade_wiring import CascadeRecords
    from media_relay.recording.types import SegmentInfo
    from sip_server.gb.records import RecordQuery

    asked = []

    class Sip:
        async def record_info(self, device_id, channel_id, start, end, *, type="all"):
            asked.append((device_id, channel_id, start, end, type))
            q = RecordQuery(device_id, channel_id, 1, 0.0)
            q.items = [manscdp.RecordItem(CH.channel_id, name="设备录像", start_time="2026-03-01T08:10:00",
                                          end_time="2026-03-01T08:20:00", type="time", file_size=1234)]
            return q

    class Recordings:
        async def segments(self, channel, start, end):
            return [SegmentInfo(7, channel, datetime(2026, 3, 1, 0, 0, tzinfo=UTC),
                                datetime(2026, 3, 1, 0, 5, tzinfo=UTC), 4096, None, "h264")]

    query = manscdp.parse(manscdp.build_query("RecordInfo", 9, CH.channel_id, extra={
        "StartTime": "2026-03-01T08:00:00", "EndTime": "2026-03-01T09:00:00", "Type": "all"}))
    items = await CascadeRecords(Sip(), Recordings(), "34020000002000000001").record_items(CH, query)
    # Beijing time on the wire, UTC to the device query
    assert asked == [(CH.device_id, CH.channel_id, datetime(2026, 3, 1, 0, 0, tzinfo=UTC),
                      datetime(2026, 3, 1, 1, 0, tzinfo=UTC), "all")]
    assert [(i["StartTime"], i["EndTime"], i.get("RecorderID")) for i in items] == [
        ("2026-03-01T08:00:00", "2026-03-01T08:05:00", "34020000002000000001"),
        ("2026-03-01T08:10:00", "2026-03-01T08:20:00", None)]
    assert items[0]["FileSize"] == "4096" and items[1]["Name"] == "设备录像"

    class Offline:
        async def record_info(self, *a, **kw):
            raise RuntimeError("device offline")

    items = await CascadeRecords(Offline(), Recordings(), "34020000002000000001").record_items(CH, query)
    assert len(items) == 1  # the platform's copy still answers
    bad = manscdp.parse(manscdp.build_query("RecordInfo", 9, CH.channel_id, extra={
        "StartTime": "2026-03-01T09:00:00", "EndTime": "2026-03-01T08:00:00"}))
    assert await CascadeRecords(Sip(), Recordings(), "x").record_items(CH, bad) == []


async def test_registry_feed_forwards_alarms_and_presence_after_the_registry_has_them():
    import asyncio

    from gbops.cascade_wiring import RegistryFeed
    from sip_server.gb import events as ev

    order = []

    class Writer:
        async def flush(self):
            order.append("flush")

    class Cascade:
        active = True

        async def forward_alarm(self, channel, alarm):
            order.append(("alarm", channel))

        async def forward_position(self, channel, position):
            order.append(("position", channel))

        async def on_device_presence(self, device_id, online):
            order.append(("presence", device_id, online))

        async def on_registry_change(self, changes):
            order.append(("change", changes))

    feed = RegistryFeed(Cascade(), Writer())
    alarm = manscdp.Alarm(CH.channel_id, 5, 1, 5, "2026-03-01T08:00:00", None, None, None, None)
    feed(ev.AlarmReceived(CH.device_id, alarm))
    feed(ev.DeviceOffline(CH.device_id, "keepalive_timeout"))
    feed(ev.PositionReceived(CH.device_id, manscdp.MobilePosition(CH.channel_id, 6, None, 118.1, 24.5, None, None,
                                                                  None)))
    feed(object())  # anything else: ignored
    await feed.close()
    await asyncio.sleep(0)
    assert ("alarm", CH) in order and ("position", CH) in order
    assert order.index("flush") < order.index(("presence", CH.device_id, False))
    # no enabled upper: nothing is scheduled, not even the registry flush
    order.clear()
    feed.cascade.active = False
    feed(ev.DeviceOffline(CH.device_id, "keepalive_timeout"))
    feed(ev.AlarmReceived(CH.device_id, alarm))
    await feed.close()
    assert order == []
