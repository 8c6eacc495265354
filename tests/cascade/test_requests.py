"""What the uppers ask, with fake signalling and media: INVITE, ACK, BYE, queries, control, NOTIFY."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from device_registry.events import ChannelStatusChanged
from gbcore.ids import ChannelRef
from media_relay.stream import MediaError
from sip_server.gb import events as sev
from sip_server.gb.manscdp import parse

from .conftest import (
    ACTOR,
    CAM1,
    CAM2,
    CAM3,
    CAM4,
    CAM5,
    GROUP,
    LOCAL_ID,
    NVR_A,
    NVR_B,
    PASSWORD,
    SERVER_ID,
    T0,
    offer,
    platform_data,
)

UP_B1 = "11000000001310000091"


@pytest.fixture
async def pid(env, tree) -> int:
    pid = (await env.service.create_platform(platform_data(watermark="visible", ptz_level=7), actor=ACTOR))["id"]
    await env.service.put_share(pid, [tree.ids[GROUP]], [{"device_id": NVR_B, "channel_id": CAM1,
                                                           "upward_id": UP_B1}], actor=ACTOR)
    env.sip.sent.clear()
    env.audit.entries.clear()
    return pid


async def invite(env, pid, call_id, target, o=None) -> tuple:
    await env.service.handle_event(sev.UpperInvite(pid, call_id, target, o or offer()))
    return env.sip.of("invite")[-1]


async def test_unshared_or_unknown_target_is_404(env, pid) -> None:
    for target in (CAM4, CAM5, "34020000001310000099", LOCAL_ID):
        _, call_id, status, answer, _ = await invite(env, pid, f"c-{target}", target)
        assert (status, answer) == (404, None)
    assert env.media.legs == []
    refused = env.audit.of("cascade.refused")
    assert len(refused) == 4 and all(d["platform_id"] == pid and d["server_id"] == SERVER_ID
                                     and d["status"] == 404 for _, _, d, _ in refused)
    assert all(actor is None for *_, actor in refused)


async def test_live_invite_ack_bye(env, pid) -> None:
    _, call_id, status, answer, _ = await invite(env, pid, "call-1", UP_B1)
    assert status == 200
    leg, = env.media.legs
    assert leg.channel == ChannelRef(NVR_B, CAM1) and leg.kind == "live" and leg.window is None
    assert leg.visible is True and leg.target.ip == "203.0.113.5" and leg.target.port == 40000
    assert leg.target.transport == "udp" and leg.target.setup is None
    viewer, = env.media.viewers
    assert (viewer.user_id, viewer.username, viewer.display_name) == (0, f"platform:{SERVER_ID}", "省厅平台")
    # our own SSRC: 0 (live) + digits 4-8 of our id + a stream number
    assert answer.ssrc.isdigit() and len(answer.ssrc) == 10 and answer.ssrc.startswith("0" + LOCAL_ID[3:8])
    assert answer.ssrc != "0100000001" and int(answer.ssrc) == leg.target.ssrc
    assert (answer.ip, answer.port, answer.transport) == (leg.local_ip, leg.local_port, "udp")
    (_, target, detail, actor), = env.audit.of("cascade.invite")
    assert target == f"{NVR_B}/{CAM1}" and actor is None
    assert detail["upward_id"] == UP_B1 and detail["status"] == 200 and detail["kind"] == "live"
    assert detail["platform_id"] == pid and detail["server_id"] == SERVER_ID
    assert not leg.started
    await env.service.handle_event(sev.UpperAck(pid, "call-1"))
    assert leg.started
    streams = (await env.service.status(pid))["streams"]
    assert [(s["call_id"], s["upward_id"], s["device_id"], s["channel_id"]) for s in streams] == [
        ("call-1", UP_B1, NVR_B, CAM1)]
    await env.service.handle_event(sev.UpperBye(pid, "call-1", "bye"))
    assert leg.closed == "bye" and env.sip.of("bye") == []  # the upper hung up: no BYE back
    (_, _, detail, _), = env.audit.of("cascade.bye")
    assert detail["by"] == "upper" and detail["bytes"] == 12_000 and detail["duration_s"] >= 0
    assert (await env.service.status(pid))["streams"] == []


async def test_tcp_roles_and_echoed_ssrc(env, pid) -> None:
    _, _, status, answer, _ = await invite(env, pid, "t1", CAM1, offer(transport="tcp", setup="active"))
    assert status == 200 and (answer.transport, answer.setup) == ("tcp", "passive")
    _, _, status, answer, _ = await invite(env, pid, "t2", CAM2, offer(transport="tcp", setup="passive"))
    assert status == 200 and answer.setup == "active" and env.media.legs[-1].target.setup == "active"
    env.settings.cascade_echo_ssrc = True
    _, _, status, answer, _ = await invite(env, pid, "t3", CAM3, offer(ssrc="0100000001"))
    assert answer.ssrc == "0100000001" and env.media.legs[-1].target.ssrc == 100000001


async def test_playback_window_and_bad_offers(env, pid) -> None:
    start = int(datetime(2026, 3, 1, 0, 0, tzinfo=UTC).timestamp())
    _, _, status, answer, _ = await invite(env, pid, "p1", CAM1, offer("Playback", start=start, end=start + 600))
    assert status == 200 and answer.ssrc.startswith("1")
    leg = env.media.legs[-1]
    assert leg.kind == "playback" and leg.window == (datetime(2026, 3, 1, 0, 0, tzinfo=UTC),
                                                     datetime(2026, 3, 1, 0, 10, tzinfo=UTC))
    detail = env.audit.of("cascade.invite")[-1][2]
    assert detail["start"] == "2026-03-01T08:00:00+08:00" and detail["end"] == "2026-03-01T08:10:00+08:00"
    _, _, status, _, _ = await invite(env, pid, "d1", CAM2, offer("Download", start=start, end=start + 60))
    assert status == 200 and env.media.legs[-1].kind == "download"
    _, _, status, _, _ = await invite(env, pid, "p2", CAM3, offer("Playback", start=start, end=start))
    assert status == 488


async def test_media_errors_answer_480_or_488(env, pid) -> None:
    env.media.fail = MediaError("device_offline", "设备不在线 / device offline")
    _, _, status, _, _ = await invite(env, pid, "m1", CAM1)
    assert status == 480
    env.media.fail = MediaError("bad_transport", "bad")
    _, _, status, _, _ = await invite(env, pid, "m2", CAM1)
    assert status == 488
    assert [d["status"] for _, _, d, _ in env.audit.of("cascade.invite")] == [480, 488]


async def test_second_invite_for_the_same_source_releases_the_old_leg(env, pid) -> None:
    await invite(env, pid, "first", CAM1)
    await invite(env, pid, "second", CAM1)
    old, new = env.media.legs
    assert old.closed and not new.closed
    assert env.sip.of("bye") == [("bye", "first", "replaced by a new request")]
    assert [s["call_id"] for s in (await env.service.status(pid))["streams"]] == ["second"]


async def test_media_end_sends_bye_up(env, pid) -> None:
    await invite(env, pid, "c1", CAM1)
    leg, = env.media.legs
    leg.on_end("upstream gone")
    assert env.sip.of("bye") == [("bye", "c1", "upstream gone")]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert env.audit.of("cascade.bye")[-1][2]["by"] == "media"
    leg.on_end("again")  # once only
    assert len(env.sip.of("bye")) == 1


async def test_mansrtsp_goes_to_the_playback_call_and_file_end_is_mediastatus_121(env, pid) -> None:
    start = int(datetime(2026, 3, 1, 0, 0, tzinfo=UTC).timestamp())
    await invite(env, pid, "p1", CAM1, offer("Playback", start=start, end=start + 600))
    await invite(env, pid, "l1", CAM2)
    playback, live = env.media.legs
    body = b"PAUSE RTSP/1.0\r\nCSeq: 2\r\nPauseTime: now\r\n\r\n"
    await env.service._on_info(sev.UpperInfo(pid, "p1", body))
    await env.service._on_info(sev.UpperInfo(pid, "l1", body))  # live: nothing to forward to
    await env.service._on_info(sev.UpperInfo(pid + 1, "p1", body))  # another platform's claim: ignored
    assert env.media.infos == [(playback.id, body), (live.id, body)]
    playback.file_ended = True
    playback.on_end("end of file")
    assert env.sip.of("media_status") == [("media_status", "p1", "121")]
    assert env.sip.of("bye") == []  # the upper hangs up after MediaStatus 121
    await env.service._on_bye(sev.UpperBye(pid, "p1", "bye from the upper"))
    assert env.audit.of("cascade.bye")[-1][2]["by"] == "upper"


async def test_disable_and_unshare_end_streams(env, tree, pid) -> None:
    await invite(env, pid, "c1", CAM1)
    await invite(env, pid, "c2", CAM2)
    # only VO2 (and below) shared now: CAM1's stream ends, CAM2's goes on
    await env.service.put_share(pid, [tree.ids["34020000002160000002"]], [], actor=ACTOR)
    leg1, leg2 = env.media.legs
    assert leg1.closed == "channel no longer shared" and not leg2.closed
    await env.service.update_platform(pid, {"enabled": False}, actor=ACTOR)
    assert leg2.closed == "platform disabled"
    assert {b[1] for b in env.sip.of("bye")} == {"c1", "c2"}
    _, _, status, _, _ = await invite(env, pid, "c3", CAM1)
    assert status == 403


def hold_open_upward(env) -> asyncio.Event:
    """Media opens legs only once the returned event is set; ``gate.entered`` is set when a leg is being opened
    (a test waits for it instead of guessing how long the database lookups before it take)."""
    gate = asyncio.Event()
    gate.entered = asyncio.Event()  # type: ignore[attr-defined]
    real = env.media.open_upward

    async def slow(*args, **kw):
        gate.entered.set()  # type: ignore[attr-defined]
        await gate.wait()
        return await real(*args, **kw)

    env.media.open_upward = slow
    return gate


async def test_cancel_while_opening(env, pid) -> None:
    gate = hold_open_upward(env)
    task = asyncio.ensure_future(env.service.handle_event(sev.UpperInvite(pid, "c1", CAM1, offer())))
    await asyncio.wait_for(gate.entered.wait(), 10)  # the leg is being opened: the CANCEL comes meanwhile
    await env.service.handle_event(sev.UpperBye(pid, "c1", "cancel"))
    gate.set()
    await task
    assert env.media.legs[0].closed == "cancelled" and env.sip.of("invite") == []


async def test_teleboot_refused_and_ptz_forwarded(env, pid) -> None:
    body = (f"<?xml version=\"1.0\"?><Control><CmdType>DeviceControl</CmdType><SN>7</SN><DeviceID>{LOCAL_ID}"
            "</DeviceID><TeleBoot>Boot</TeleBoot></Control>").encode()
    await env.service.handle_event(sev.UpperControl(pid, 7, LOCAL_ID, parse(body)))
    assert env.sip.of("control") == [("control", pid, 7, LOCAL_ID, False)]
    (_, _, detail, _), = env.audit.of("cascade.refused")
    assert detail["status"] == 403 and "TeleBoot" in detail["method"]
    assert env.control.calls == []

    ptz = (f"<?xml version=\"1.0\"?><Control><CmdType>DeviceControl</CmdType><SN>8</SN><DeviceID>{UP_B1}"
           "</DeviceID><PTZCmd>A50F010800FA00B7</PTZCmd></Control>").encode()
    await env.service.handle_event(sev.UpperControl(pid, 8, UP_B1, parse(ptz)))
    (operator, channel, _msg), = env.control.calls
    assert channel == ChannelRef(NVR_B, CAM1) and operator.ptz_level == 7 and operator.server_id == SERVER_ID
    assert env.sip.of("control")[-1] == ("control", pid, 8, UP_B1, True)
    (_, target, detail, _), = env.audit.of("cascade.control")
    assert target == f"{NVR_B}/{CAM1}" and detail["command"] == "PTZCmd" and detail["level"] == 7

    await env.service.handle_event(sev.UpperControl(pid, 9, CAM5, parse(ptz.replace(UP_B1.encode(), CAM5.encode()))))
    assert env.sip.of("control")[-1] == ("control", pid, 9, CAM5, False) and len(env.control.calls) == 1


async def test_queries(env, pid) -> None:
    await env.service.handle_event(sev.UpperCatalogQuery(pid, 3, LOCAL_ID))
    (_, p, sn, entries), = env.sip.of("catalog")
    assert (p, sn) == (pid, 3) and entries[0].kind == "system" and len(entries) == 9
    assert env.audit.of("cascade.catalog")[0][2]["items"] == 9
    q = (f"<Query><CmdType>DeviceInfo</CmdType><SN>4</SN><DeviceID>{UP_B1}</DeviceID></Query>").encode()
    await env.service.handle_event(sev.UpperDeviceQuery(pid, 4, "DeviceInfo", UP_B1, parse(q)))
    (_, _, _, device_id, fields), = env.sip.of("device_info")
    assert device_id == UP_B1 and fields["Result"] == "OK" and fields["DeviceName"] == "B 大门"
    await env.service.handle_event(sev.UpperDeviceQuery(pid, 5, "DeviceStatus", CAM2, None))
    assert env.sip.of("device_status")[-1][4]["Online"] == "OFFLINE"
    await env.service.handle_event(sev.UpperDeviceQuery(pid, 6, "DeviceStatus", LOCAL_ID, None))
    assert env.sip.of("device_status")[-1][4]["Online"] == "ONLINE"
    await env.service.handle_event(sev.UpperDeviceQuery(pid, 7, "DeviceInfo", CAM5, None))
    assert len(env.sip.of("device_info")) == 1  # unshared: no answer
    assert env.audit.of("cascade.refused")[-1][2]["target"] == CAM5
    assert [d["cmd_type"] for _, _, d, _ in env.audit.of("cascade.query")] == ["DeviceInfo", "DeviceStatus",
                                                                               "DeviceStatus"]
    await env.service.handle_event(sev.UpperDeviceQuery(pid, 8, "RecordInfo", CAM1, None))
    assert env.sip.of("record_info")[-1][3:] == (CAM1, "大门 堃", [])


async def test_subscription_and_registry_changes_notify(env, pid, registry) -> None:
    await env.service.handle_event(sev.UpperCatalogSubscribed(pid, 1, 3600))
    (_, p, entries), = env.sip.of("notify")
    assert [(e.device_id, e.event) for e in entries] == [(CAM2, "OFF")]  # the initial NOTIFY: offline items
    await env.service.handle_event(sev.UpperCatalogSubscribed(pid, 1, 3600))  # a refresh: nothing again
    assert len(env.sip.of("notify")) == 1
    await registry.apply([ChannelStatusChanged(NVR_A, CAM2, T0 + timedelta(seconds=5), "ON")])
    await env.service.on_registry_change([(ChannelRef(NVR_A, CAM2), "ON"), (ChannelRef(NVR_B, CAM5), "OFF"),
                                          (ChannelRef(NVR_B, CAM1), "UPDATE")])
    (_, p, entries) = env.sip.of("notify")[-1]
    assert [(e.device_id, e.event, e.status) for e in entries] == [(CAM2, "ON", "ON"), (UP_B1, "UPDATE", "ON")]
    await registry.apply([ChannelStatusChanged(NVR_B, CAM3, T0 + timedelta(seconds=6), "DEL")])
    await env.service.on_registry_change([(ChannelRef(NVR_B, CAM3), "DEL")])
    assert [(e.device_id, e.event) for e in env.sip.of("notify")[-1][2]] == [(CAM3, "DEL")]


async def test_no_password_anywhere_in_evidence(env, pid, caplog) -> None:
    caplog.set_level("DEBUG")
    await invite(env, pid, "c1", CAM1)
    await env.service.handle_event(sev.UpperStateChanged(pid, "registered", None))
    await env.service.update_platform(pid, {"password": "Fresh#Secret99", "enabled": False}, actor=ACTOR)
    text = repr(env.audit.entries) + caplog.text + repr(await env.service.get_platform(pid))
    assert PASSWORD not in text and "Fresh#Secret99" not in text
    assert env.audit.of("cascade.register")[0][2] == {"platform_id": pid, "server_id": SERVER_ID,
                                                      "state": "registered", "reason": None}


async def test_on_event_schedules_and_two_invites_at_once_keep_one_leg(env, pid) -> None:
    gate = hold_open_upward(env)
    env.service.on_event(sev.UpperInvite(pid, "a", CAM1, offer()))
    env.service.on_event(sev.UpperInvite(pid, "b", CAM1, offer()))
    env.service.on_event(object())  # not ours: ignored
    await asyncio.sleep(0.01)
    gate.set()
    for _ in range(50):
        await asyncio.sleep(0.01)
        if len(env.sip.of("invite")) == 2:
            break
    assert [(i[1], i[2]) for i in env.sip.of("invite")] == [("a", 200), ("b", 200)]
    first, second = env.media.legs
    assert first.closed and not second.closed
    assert [s["call_id"] for s in (await env.service.status(pid))["streams"]] == ["b"]


async def test_device_presence_notifies_its_shared_channels(env, pid) -> None:
    await env.service.on_device_presence(NVR_B, False)
    (_, p, entries) = env.sip.of("notify")[-1]
    assert p == pid and [(e.device_id, e.event) for e in entries] == [(UP_B1, "OFF"), (CAM3, "OFF")]


async def test_alarms_on_shared_channels_reach_the_upper_by_its_ids(env, pid) -> None:
    alarm = object()
    assert await env.service.forward_alarm(ChannelRef(NVR_B, CAM1), alarm) == [pid]
    assert env.sip.of("alarm") == [("alarm", pid, UP_B1, alarm)]  # the upward id, not the device's
    assert await env.service.forward_alarm(ChannelRef(NVR_A, CAM5), alarm) == []  # never shared
    assert len(env.sip.of("alarm")) == 1
    position = object()
    assert await env.service.forward_position(ChannelRef(NVR_B, CAM1), position) == [pid]
    assert env.sip.of("position") == [("position", pid, UP_B1, position)]
    assert await env.service.forward_position(ChannelRef(NVR_A, CAM5), position) == []
    # the mapping is cached for frequent events, and a share change clears it at once
    await env.service.put_share(pid, [], [], actor=ACTOR)
    assert await env.service.forward_alarm(ChannelRef(NVR_B, CAM1), alarm) == []



async def test_an_upper_asking_for_the_sub_stream_gets_it_or_the_main_stream(env, pid) -> None:
    """An upper's live INVITE naming stream 1 (a=streamnumber:1, parsed into UpperOffer.stream_number) gets the
    channel's sub-stream; a device with no sub-stream set sends its main stream instead, and the audit entry says
    which stream went up."""
    from dataclasses import replace

    sub = replace(offer(), stream_number=1)
    _, _, status, _, _ = await invite(env, pid, "call-s1", UP_B1, sub)
    assert status == 200 and env.media.legs[-1].stream == "sub"
    assert env.audit.of("cascade.invite")[-1][2]["stream"] == "sub"
    env.media.no_sub.add(NVR_B)
    _, _, status, _, _ = await invite(env, pid, "call-s2", UP_B1, sub)
    assert status == 200 and env.media.legs[-1].stream == "main"
    assert env.audit.of("cascade.invite")[-1][2]["stream"] == "main"
    _, _, status, _, _ = await invite(env, pid, "call-s3", UP_B1)  # no stream named: main, no "stream" recorded
    assert status == 200 and env.media.legs[-1].stream == "main"
    assert "stream" not in env.audit.of("cascade.invite")[-1][2]


def test_the_upper_offer_reads_the_stream_number() -> None:
    from sip_server.gb.upper import parse_offer
    from sip_server.sip.sdp import build_offer

    for form in ("streamnumber", "stream", "streamprofile"):
        body = build_offer(origin_id="11000000002000000001", ip="203.0.113.5", port=40000, ssrc="0100000001",
                           stream=(form, 1))
        assert parse_offer(body).stream_number == 1
    assert parse_offer(build_offer(origin_id="11000000002000000001", ip="203.0.113.5", port=40000,
                                   ssrc="0100000001")).stream_number is None
