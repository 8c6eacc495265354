"""Simulated alarms, alarm/position subscriptions and mobile positions (sans-IO SimDevice, and one real
Simulator against a minimal platform)."""

from __future__ import annotations

import secrets

import pytest

from gbsim import SimConfig, Simulator
from gbsim.device import SimDevice
from sip_server.gb import manscdp
from sip_server.sip import Headers, SipRequest, make_response
from tests.sim.fakes import PASSWORD, REALM, SERVER_ID, StubPlatform
from tests.sim.media_fakes import GbPlatform, until
from tests.sim.test_ptz_device import control, dome, send
from tests.sim.test_sim_device import answer_messages, device, register, take


def subscribe(dev: SimDevice, body: bytes, *, expires: int = 600, call_id: str | None = None,
              to_tag: str | None = None, cseq: int = 1, event: str = "presence") -> SipRequest:
    h = Headers()
    h.add("Via", f"SIP/2.0/UDP 127.0.0.1:5060;rport;branch=z9hG4bK{secrets.token_hex(8)}")
    h.add("From", f"<sip:{SERVER_ID}@{REALM}>;tag=plat1")
    h.add("To", f"<sip:{dev.device_id}@{REALM}>" + (f";tag={to_tag}" if to_tag else ""))
    h.add("Call-ID", call_id or f"{secrets.token_hex(8)}@127.0.0.1")
    h.add("CSeq", f"{cseq} SUBSCRIBE")
    h.add("Contact", f"<sip:{SERVER_ID}@127.0.0.1:5060>")
    h.add("Event", event)
    h.add("Expires", str(expires))
    h.add("Content-Type", "Application/MANSCDP+xml")
    return SipRequest("SUBSCRIBE", f"sip:{dev.device_id}@127.0.0.1:5071", h, body)


def drive(dev: SimDevice, until_t: float, step: float = 0.25) -> dict[str, list[SipRequest]]:
    """Run the device's timers to *until_t*, answering everything 200; its requests by purpose."""
    now, sent = 0.0, {}
    while now < until_t:
        now += step
        dev.handle_timer(now)
        for purpose, req in take(dev):
            sent.setdefault(purpose, []).append(req)
            dev.on_response(purpose, make_response(req, 200), now)
    return sent


def alarm_query(dev: SimDevice, **extra) -> bytes:
    fields = {"StartAlarmPriority": 0, "EndAlarmPriority": 0, "AlarmMethod": 0, **extra}
    return manscdp.build_query("Alarm", 31, dev.device_id, extra=fields)


def test_raise_alarm_sends_its_fields() -> None:
    dev, platform = dome(channels=4)
    ch = dev.channel_ids[2]
    assert dev.raise_alarm(ch, 1.0, priority=3, method=5, alarm_type=2, description="移动侦测 / motion")
    [msg] = answer_messages(dev, platform, 1.0)
    alarm = manscdp.as_alarm(msg)
    item = next(i for i in dev.catalog_items if i.device_id == ch)
    assert msg.root == "Notify" and alarm.device_id == ch
    assert (alarm.alarm_priority, alarm.alarm_method, alarm.alarm_type) == (3, 5, 2)
    assert alarm.alarm_description == "移动侦测 / motion"
    assert (alarm.longitude, alarm.latitude) == (item.longitude, item.latitude)
    # AlarmTime is the device's clock (set from the platform's Date: 2026-11-21T13:50:00.123, Beijing time)
    assert alarm.alarm_time == "2026-11-21T13:50:00" == dev.device_time().strftime("%Y-%m-%dT%H:%M:%S")
    with pytest.raises(ValueError):
        dev.raise_alarm("34020000001310099999", 1.0)
    with pytest.raises(ValueError):
        dev.raise_alarm(ch, 1.0, priority=5)


def test_device_alarm_latches_until_reset() -> None:
    dev, platform = dome(channels=2)
    ch = dev.channel_ids[0]
    assert dev.raise_alarm(ch, 1.0, method=2, alarm_type=1)
    assert not dev.raise_alarm(ch, 2.0, method=2, alarm_type=1)  # waits for ResetAlarm (A.2.5.3 note)
    assert dev.raise_alarm(ch, 2.0, method=5, alarm_type=2)  # video alarms do not latch
    assert dev.raise_alarm(dev.channel_ids[1], 2.0, method=2)  # another source
    assert len(answer_messages(dev, platform, 2.0)) == 3
    send(dev, control(dev.device_id, ch, ("AlarmCmd", "ResetAlarm"), ("Info", [("AlarmMethod", 2)])), 3.0)
    [result] = answer_messages(dev, platform, 3.0)
    assert manscdp.as_control_result(result).result == "OK"
    assert dev.raise_alarm(ch, 4.0, method=2, alarm_type=1)
    assert dev.controls.stats.alarms_latched == 1


def test_alarm_every_cycles_over_channels_and_types() -> None:
    platform = StubPlatform()
    dev = device(channels=2, alarm_every=2.0, keepalive=1000.0)
    register(dev, platform)
    take(dev)
    bodies = [manscdp.parse(r.body) for r in drive(dev, 20.0).get("message", [])]
    alarms = [manscdp.as_alarm(b) for b in bodies if b.cmd_type == "Alarm"]
    assert 8 <= len(alarms) <= 10
    assert {a.device_id for a in alarms} == set(dev.channel_ids)
    assert {a.alarm_priority for a in alarms} == {1, 2, 3, 4}
    assert all(a.alarm_method in (2, 5) and a.alarm_type for a in alarms)


def test_alarm_subscription_gets_notifies_refresh_and_ends() -> None:
    dev, platform = dome(channels=2)
    ch = dev.channel_ids[0]
    req = subscribe(dev, alarm_query(dev, EndAlarmPriority=2), expires=600)
    resp = dev.on_request(req, 1.0)
    assert resp.status == 200 and resp.headers.get("Expires") == "600" and resp.to_tag
    assert manscdp.parse(resp.body).get("Result") == "OK"
    assert dev.raise_alarm(ch, 2.0, priority=1, method=5, alarm_type=6, description="区域入侵")
    out = take(dev)
    assert [p for p, _ in out] == ["message", "notify"]
    message, notify = out[0][1], out[1][1]
    assert notify.method == "NOTIFY" and notify.body == message.body  # the same body, the same SN
    assert notify.call_id == req.call_id and notify.from_tag == resp.to_tag and notify.to_tag == "plat1"
    assert notify.headers.get("Event") == "presence" and notify.uri == f"sip:{SERVER_ID}@127.0.0.1:5060"
    assert notify.headers.get("Subscription-State").startswith("active;expires=")
    assert manscdp.as_alarm(manscdp.parse(notify.body)).alarm_type == 6
    dev.on_response("message", make_response(message, 200), 2.0)
    dev.on_response("notify", make_response(notify, 200), 2.0)
    # priority 3 is outside the subscription's filter (1..2): the MESSAGE only
    dev.raise_alarm(ch, 3.0, priority=3, method=5, alarm_type=2)
    assert [p for p, _ in take(dev)] == ["message"]
    dev.on_response("message", make_response(message, 200), 3.0)
    # refresh within the dialog, then unsubscribe
    refresh = subscribe(dev, b"", call_id=req.call_id, to_tag=resp.to_tag, cseq=2, expires=1200)
    assert dev.on_request(refresh, 4.0).headers.get("Expires") == "1200"
    gone = subscribe(dev, b"", call_id=req.call_id, to_tag=resp.to_tag, cseq=3, expires=0)
    assert dev.on_request(gone, 5.0).status == 200 and dev.controls.subs == {}
    assert dev.on_request(subscribe(dev, b"", call_id=req.call_id, to_tag="x", cseq=4), 5.0).status == 481


def test_subscription_ends_on_481_expiry_and_other_events_are_refused() -> None:
    dev, _ = dome(channels=1)
    resp = dev.on_request(subscribe(dev, alarm_query(dev), expires=40), 1.0)
    assert resp.status == 200
    dev.raise_alarm(None, 2.0, method=5, alarm_type=2)
    notify = next(r for p, r in take(dev) if p == "notify")
    dev.on_response("notify", make_response(notify, 481), 2.0)
    assert dev.controls.subs == {}
    dev.on_request(subscribe(dev, alarm_query(dev), expires=40), 3.0)
    assert len(dev.controls.subs) == 1 and dev.wakeup is not None and dev.wakeup <= 43.0
    dev.handle_timer(43.5)
    assert dev.controls.subs == {}
    catalog = subscribe(dev, manscdp.build_query("Catalog", 5, dev.device_id), event="Catalog")
    assert dev.on_request(catalog, 50.0).status == 489
    bad = subscribe(dev, b"<Query>")
    assert dev.on_request(bad, 50.0).status == 400


def test_mobile_positions_on_a_timer_and_by_subscription() -> None:
    platform = StubPlatform()
    dev = device(channels=1, position_every=5.0, keepalive=1000.0)
    register(dev, platform)
    take(dev)
    resp = dev.on_request(subscribe(dev, manscdp.build_query("MobilePosition", 9, dev.device_id,
                                                             extra={"Interval": 2})), 0.0)
    assert resp.status == 200
    sent = drive(dev, 10.0)
    messages, notifies = sent["message"], sent["notify"]
    assert 2 <= len(messages) <= 3 and 4 <= len(notifies) <= 5
    positions = [manscdp.as_mobile_position(manscdp.parse(r.body)) for r in messages + notifies]
    assert all(p.device_id == dev.device_id and p.longitude and p.latitude and p.time for p in positions)
    assert len({(p.longitude, p.latitude) for p in positions}) > 1  # it moves


async def test_raise_alarm_reaches_the_platform() -> None:
    platform = GbPlatform()
    await platform.start()
    sim = Simulator(SimConfig(server=("127.0.0.1", platform.port), devices=2, channels=2, password=PASSWORD,
                              keepalive=5.0, start_spread=0.1, media=False))
    await sim.start()
    try:
        assert await sim.wait_until(lambda s: s.registered == 2, 10)
        dev = sim.devices[1]
        assert sim.raise_alarm(dev.device_id, dev.channel_ids[1], priority=2, method=5, alarm_type=5,
                               description="绊线入侵 / tripwire")

        def alarms() -> list[manscdp.Alarm]:
            return [manscdp.as_alarm(m) for _u, m in platform.stub.responses if m.cmd_type == "Alarm"]

        assert await until(lambda: len(alarms()) == 1, 2)
        [alarm] = alarms()
        assert alarm.device_id == dev.channel_ids[1] and alarm.alarm_priority == 2 and alarm.alarm_method == 5
        assert alarm.alarm_type == 5 and alarm.alarm_description == "绊线入侵 / tripwire"
        assert alarm.longitude is not None and alarm.latitude is not None
        assert sim.stats()["alarms_sent"] == 1 and "1 alarms" in sim.progress_line()
        with pytest.raises(KeyError):
            sim.raise_alarm("34020000001180009999")
    finally:
        await sim.stop(unregister=True)
        await platform.close()
