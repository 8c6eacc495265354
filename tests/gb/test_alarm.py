"""Alarms, positions and device control in the sans-IO core: alarm notifications answered 200 with an
AlarmReceived event (and the Response/Alarm acknowledgement), malformed alarms 400 and no event, MobilePosition
events, the alarm subscription (made, refreshed, renewed on registering, refused), DeviceControl's SIP answer,
Result and deadline, and the key-frame spelling by X-GB-ver."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sip_server.gb import events as ev
from sip_server.gb import manscdp
from sip_server.gb.ptz import ptz_command
from sip_server.sip import build_authorization, parse_message
from tests.gb.test_server import DEV, PASSWORD, answer, feed, make_server, message_bytes, register

CHANNEL = "34020000001310000001"


def alarm_body(sn: int = 7, **kw) -> bytes:
    args = dict(alarm_priority=1, alarm_method=5, alarm_time="2025-03-01T14:05:09", alarm_description="移动侦测",
                longitude=116.397, latitude=39.908, alarm_type=2)
    args.update(kw)
    return manscdp.build_alarm_notify(sn, CHANNEL, **args)


def as_notify(data: bytes, cseq: int) -> bytes:
    return data.replace(b"MESSAGE sip:", b"NOTIFY sip:", 1).replace(f"CSeq: {cseq} MESSAGE".encode(),
                                                                   f"CSeq: {cseq} NOTIFY".encode())


def online(**cfg):
    server = make_server(catalog_subscribe_expires=0, **cfg)
    register(server)
    server.endpoint.messages_to_send()
    list(iter(server.next_event, None))
    return server


def sent(server) -> list:
    return [parse_message(m.data) for m in server.endpoint.messages_to_send()]


# ------------------------------------------------------------------------------------------ alarms
def test_alarm_message_answered_200_event_and_acknowledged():
    server = online()
    out, events = feed(server, message_bytes(DEV, alarm_body(sn=4711), cseq=30), now=1.0)
    assert out[0].status == 200
    [alarm] = [e for e in events if isinstance(e, ev.AlarmReceived)]
    a = alarm.alarm
    assert alarm.device_id == DEV and a.device_id == CHANNEL
    assert (a.alarm_priority, a.alarm_method, a.alarm_type, a.alarm_description) == (1, 5, 2, "移动侦测")
    assert (a.longitude, a.latitude, a.alarm_time) == (116.397, 39.908, "2025-03-01T14:05:09")
    assert not [e for e in events if isinstance(e, ev.NotifyReceived)]
    # then the platform's Response/Alarm MESSAGE to the device, same SN (A.2.6.3)
    [ack] = [m for m in out[1:] if getattr(m, "method", None) == "MESSAGE"]
    body = manscdp.parse(ack.body)
    assert (body.root, body.cmd_type, body.sn, body.device_id, body.get("Result")) == (
        "Response", "Alarm", 4711, CHANNEL, "OK")
    assert ack.uri.startswith(f"sip:{DEV}@")


def test_alarm_notify_of_a_subscription_gets_200_and_no_extra_message():
    server = online()
    out, events = feed(server, as_notify(message_bytes(DEV, alarm_body(), cseq=31), 31), now=1.0)
    assert [m.status for m in out] == [200]
    assert len([e for e in events if isinstance(e, ev.AlarmReceived)]) == 1


def test_alarm_acknowledgement_can_be_switched_off():
    server = online(alarm_response=False)
    out, events = feed(server, message_bytes(DEV, alarm_body(), cseq=32), now=1.0)
    assert [m.status for m in out] == [200] and any(isinstance(e, ev.AlarmReceived) for e in events)


@pytest.mark.parametrize(("body", "why"), [
    (alarm_body(alarm_priority=0), "AlarmPriority"),
    (alarm_body(alarm_priority=9), "AlarmPriority"),
    (alarm_body(alarm_method=8), "AlarmMethod"),
    (alarm_body(alarm_time="yesterday"), "AlarmTime"),
    (manscdp.build_message("Notify", "Alarm", 5, CHANNEL, extra={"AlarmMethod": 2, "AlarmTime": "2025-03-01T14:05:09"}),
     "AlarmPriority"),
    (manscdp.build_message("Notify", "Alarm", 5, CHANNEL, extra={"AlarmPriority": "x", "AlarmMethod": 2}),
     "AlarmPriority"),
    (manscdp.build_message("Notify", "Alarm", 5, CHANNEL, extra={"AlarmPriority": 1, "AlarmMethod": 2}), "AlarmTime"),
    (b"<?xml version='1.0'?><Notify><CmdType>Alarm</CmdType><SN>1</SN><DeviceID>1</Notify>", "MANSCDP"),
    (b"<!DOCTYPE x [<!ENTITY a 'b'>]><Notify><CmdType>Alarm</CmdType></Notify>", "MANSCDP"),
])
def test_malformed_alarms_get_400_and_no_event(body, why):
    server = online()
    out, events = feed(server, message_bytes(DEV, body, cseq=33), now=1.0)
    assert [m.status for m in out] == [400]  # and no acknowledgement MESSAGE
    assert not [e for e in events if isinstance(e, ev.AlarmReceived | ev.NotifyReceived)]
    [rejected] = [e for e in events if isinstance(e, ev.MessageRejected)]
    assert rejected.status == 400 and why in rejected.reason


def test_alarm_from_an_unregistered_device_is_refused():
    server = make_server(catalog_subscribe_expires=0)
    out, events = feed(server, message_bytes(DEV, alarm_body(), cseq=34), now=1.0)
    assert [m.status for m in out] == [403] and not [e for e in events if isinstance(e, ev.AlarmReceived)]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(["AlarmPriority", "AlarmMethod", "AlarmTime", "Longitude", "AlarmDescription"]),
                       st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=30)))
def test_any_alarm_fields_get_200_with_an_event_or_400_without(fields):
    server = online()
    body = manscdp.build_message("Notify", "Alarm", 9, CHANNEL, extra=fields)
    out, events = feed(server, message_bytes(DEV, body, cseq=35), now=1.0)
    alarms = [e for e in events if isinstance(e, ev.AlarmReceived)]
    if out[0].status == 200:
        [alarm] = alarms
        assert 1 <= alarm.alarm.alarm_priority <= 4 and 1 <= alarm.alarm.alarm_method <= 7
        assert alarm.alarm.alarm_datetime is not None
    else:
        assert out[0].status == 400 and not alarms


# ------------------------------------------------------------------------------------------ positions
def test_mobile_position_event():
    server = online()
    body = manscdp.build_mobile_position_notify(3, CHANNEL, time="2025-03-01T14:05:09", longitude=116.4,
                                                latitude=39.9, speed=12.5, direction=90)
    out, events = feed(server, message_bytes(DEV, body, cseq=40), now=1.0)
    assert out[0].status == 200
    [pos] = [e for e in events if isinstance(e, ev.PositionReceived)]
    assert pos.device_id == DEV and pos.position.device_id == CHANNEL
    assert (pos.position.longitude, pos.position.latitude, pos.position.speed) == (116.4, 39.9, 12.5)


def test_mobile_position_without_a_fix_is_answered_but_no_event():
    server = online()
    body = manscdp.build_mobile_position_notify(3, CHANNEL, time="2025-03-01T14:05:09", longitude=0, latitude=0)
    out, events = feed(server, message_bytes(DEV, body, cseq=41), now=1.0)
    assert out[0].status == 200 and not [e for e in events if isinstance(e, ev.PositionReceived)]


# ------------------------------------------------------------------------------------------ subscription
def test_alarm_subscription_made_refreshed_and_renewed_on_registering():
    server = online(keepalive_interval=10000)
    assert server.subscribe_alarms(DEV, 1.0, 600) is not None
    [sub] = [m for m in sent(server) if m.method == "SUBSCRIBE"]
    assert sub.headers.get("Event").startswith("presence;id=") and sub.headers.get("Expires") == "600"
    query = manscdp.parse(sub.body)
    assert (query.root, query.cmd_type, query.device_id) == ("Query", "Alarm", DEV)
    assert (query.get("StartAlarmPriority"), query.get("EndAlarmPriority"), query.get("AlarmMethod")) == ("0", "0", "0")
    answer(server, sub, 200, 2.0, Expires="600")
    [answered] = [e for e in iter(server.next_event, None) if isinstance(e, ev.SubscriptionAnswered)]
    assert (answered.kind, answered.state) == ("Alarm", "active")
    assert server.alarm_subscription(DEV).state == "active"
    server.handle_timer(2.0 + 539)
    assert not [m for m in sent(server) if getattr(m, "method", None) == "SUBSCRIBE"]
    server.handle_timer(2.0 + 541)  # 60 s before it lapses
    [refresh] = [m for m in sent(server) if getattr(m, "method", None) == "SUBSCRIBE"]
    assert refresh.headers.get("Expires") == "600" and manscdp.parse(refresh.body).cmd_type == "Alarm"

    # gone and back: subscribed again when it registers
    server.handle_timer(20000.0)
    assert server.alarm_subscription(DEV) is None and not server.presence.is_online(DEV)
    out, _ = register(server, now=20001.0, call_id="c2@dev")
    assert [m for m in out if getattr(m, "method", None) == "SUBSCRIBE"
            and manscdp.parse(m.body).cmd_type == "Alarm"]


def test_refused_alarm_subscription_is_not_refreshed():
    server = online()
    server.subscribe_alarms(DEV, 1.0, 600)
    [sub] = [m for m in sent(server) if m.method == "SUBSCRIBE"]
    answer(server, sub, 489, 2.0)
    [answered] = [e for e in iter(server.next_event, None) if isinstance(e, ev.SubscriptionAnswered)]
    assert answered.state == "refused" and "489" in answered.reason
    server.handle_timer(5000.0)
    assert not [m for m in sent(server) if getattr(m, "method", None) == "SUBSCRIBE"]


def test_alarm_subscription_of_an_offline_device_waits_for_it():
    server = make_server(catalog_subscribe_expires=0)
    assert server.subscribe_alarms(DEV, 0.0) is None
    out, _ = register(server, now=1.0)
    assert [m for m in out if getattr(m, "method", None) == "SUBSCRIBE"]
    with pytest.raises(ValueError):
        server.subscribe_alarms(DEV, 1.0, 5)


# ------------------------------------------------------------------------------------------ device control
def test_device_control_sip_answer_and_result():
    server = online()
    sn = server.device_control(DEV, CHANNEL, "PTZCmd", ptz_command("left", 0x40), 1.0, wait=False)
    [msg] = sent(server)
    control = manscdp.as_device_control(manscdp.parse(msg.body))
    assert (control.sn, control.device_id, control.element, control.value) == (sn, CHANNEL, "PTZCmd",
                                                                                "A50F0102400000F7")
    answer(server, msg, 200, 1.1)
    assert ev.ControlDelivered(DEV, sn, 200) in list(iter(server.next_event, None))

    sn = server.device_control(DEV, CHANNEL, "GuardCmd", "SetGuard", 2.0, wait=True)
    [msg] = sent(server)
    answer(server, msg, 200, 2.1)
    result = manscdp.build_control_response(sn, CHANNEL, "ERROR")
    out, events = feed(server, message_bytes(DEV, result, cseq=50), now=2.2)
    [answered] = [e for e in events if isinstance(e, ev.QueryAnswered)]
    assert (answered.cmd_type, answered.sn, answered.result.result) == ("DeviceControl", sn, "ERROR")


def test_device_control_result_from_another_device_is_not_taken():
    server = online()
    sn = server.device_control(DEV, CHANNEL, "RecordCmd", "Record", 1.0, wait=True)
    sent(server)
    other = "34020000001320000002"
    register(server, dev=other, now=1.1, call_id="c3@dev")  # same address in this harness: its own id
    list(iter(server.next_event, None))
    server.endpoint.messages_to_send()
    out, events = feed(server, message_bytes(other, manscdp.build_control_response(sn, other), cseq=51), now=1.2)
    assert not [e for e in events if isinstance(e, ev.QueryAnswered)]
    server.handle_timer(1.0 + 2.0)  # the default device_control_timeout
    assert ev.QueryFailed(DEV, "DeviceControl", sn, "timeout") in list(iter(server.next_event, None))


def test_device_control_refused_by_the_device():
    server = online()
    sn = server.device_control(DEV, None, "TeleBoot", "Boot", 1.0, wait=False)
    [msg] = sent(server)
    assert manscdp.parse(msg.body).device_id == DEV  # no target: the device itself
    answer(server, msg, 403, 1.1)
    [failed] = [e for e in iter(server.next_event, None) if isinstance(e, ev.QueryFailed)]
    assert (failed.cmd_type, failed.sn) == ("DeviceControl", sn) and "403" in failed.reason


def test_device_control_to_an_offline_device_sends_nothing():
    server = make_server()
    assert server.device_control(DEV, CHANNEL, "PTZCmd", ptz_command("stop"), 0.0, wait=False) is None
    assert not server.endpoint.messages_to_send()


def test_bad_commands_are_not_sent():
    server = online()
    for element, value in [("PTZCmd", "A50F0100000000B6"), ("TeleBoot", "Now"), ("Reboot", "Boot"),
                           ("HomePosition", {"Enabled": 1, "ResetTime": 30, "PresetIndex": 300})]:
        with pytest.raises(manscdp.ManscdpError):
            server.device_control(DEV, CHANNEL, element, value, 1.0, wait=True)
    assert not server.endpoint.messages_to_send()


def register_with_version(server, version: str | None, now: float = 0.0) -> None:
    extra = f"X-GB-ver: {version}\r\n".encode() if version else b""

    def with_ver(data: bytes) -> bytes:
        return data.replace(b"Content-Length: 0", extra + b"Content-Length: 0")

    from tests.gb.test_server import register_bytes

    [challenge], _ = feed(server, with_ver(register_bytes(DEV, 1, call_id="v@dev")), now=now)
    authz = build_authorization(challenge.headers.get("WWW-Authenticate"), method="REGISTER",
                                uri="sip:34020000002000000001@3402000000", username=DEV, password=PASSWORD,
                                cnonce="0a4f113b")
    out, _ = feed(server, with_ver(register_bytes(DEV, 2, authz, call_id="v@dev")), now=now)
    assert out[0].status == 200


@pytest.mark.parametrize(("version", "spelling"), [("3.0", "IFrameCmd"), ("2.0", "IFameCmd"), (None, "IFameCmd"),
                                                   ("garbage", "IFameCmd")])
@pytest.mark.parametrize("asked", ["IFameCmd", "IFrameCmd"])
def test_key_frame_spelling_follows_the_registered_version(version, spelling, asked):
    server = make_server(catalog_subscribe_expires=0)
    register_with_version(server, version)
    server.endpoint.messages_to_send()
    server.device_control(DEV, CHANNEL, asked, "Send", 1.0, wait=False)
    [msg] = sent(server)
    control = manscdp.as_device_control(manscdp.parse(msg.body))
    assert (control.element, control.value) == (spelling, "Send")
    assert server.gb_version(DEV) == (version if version != "garbage" else None)


def test_result_without_pending_is_ignored():
    server = online()
    out, events = feed(server, message_bytes(DEV, manscdp.build_control_response(123, DEV), cseq=52), now=1.0)
    assert out[0].status == 200 and not [e for e in events if isinstance(e, ev.QueryAnswered)]

