"""ControlService over a fake DeviceCommands, on SQLite and PostgreSQL: priority, 423, lock expiry, the move
watchdog, restore, tours (order, dwell, yield, resume, persistence), homes, presets, device commands."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import inspect

from device_control.types import CommandResult, ControlError, Operator, Preset, PtzLocked, TourPoint
from gbcore.ids import ChannelRef
from tests.device_control.conftest import CH, FakeClock

LOW = Operator("1", "lisi", 2, "李四")
HIGH = Operator("2", "zhangsan", 5, "张三")
OTHER = ChannelRef("34020000001320000001", "34020000001310000002")


async def advance(svc, clock: FakeClock, to: float) -> None:
    clock.t = to
    await svc.run_due()


async def test_tables_exist(db_engine) -> None:
    async with db_engine.connect() as conn:
        tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    assert {"ptz_tours", "ptz_homes", "ptz_preset_names"} <= tables


async def test_priority_takeover_423_and_lock_expiry(make_service) -> None:
    svc, cmds, _rec, clock = await make_service()
    state = await svc.ptz(LOW, CH, "left", 80)
    assert state.holder == LOW and state.seconds_left == 30
    clock.t += 4
    state = await svc.ptz(HIGH, CH, "up", 120)  # a higher level takes it at once
    assert state.holder == HIGH
    clock.t += 12
    with pytest.raises(PtzLocked) as exc:
        await svc.ptz(LOW, CH, "stop", 80)
    assert exc.value.status == 423 and exc.value.code == "ptz_locked"
    assert exc.value.state.holder == HIGH and exc.value.state.seconds_left == pytest.approx(18)
    assert str(exc.value).startswith("云台被 张三（级别 5）控制中，剩余 18 秒 / ")
    assert cmds.of("ptz") == [("ptz", CH, "left", 80), ("ptz", CH, "up", 120)]  # nothing sent for the refusal
    assert svc.lock_state(CH).holder == HIGH
    assert svc.lock_state(OTHER).holder is None
    # the lock ends 30 s after HIGH's last command; then LOW gets control
    await advance(svc, clock, 1000 + 4 + 30 - 0.01)
    assert svc.lock_state(CH).holder == HIGH
    await advance(svc, clock, 1000 + 4 + 30)
    assert svc.lock_state(CH).holder is None
    assert (await svc.ptz(LOW, CH, "down", 10)).holder == LOW


async def test_watchdog_stops_after_max_move_and_is_audited(make_service) -> None:
    svc, cmds, rec, clock = await make_service(max_move=10)
    await svc.ptz(LOW, CH, "zoom_in", 200)
    await advance(svc, clock, 1009.9)
    assert cmds.of("ptz") == [("ptz", CH, "zoom_in", 200)]
    await advance(svc, clock, 1010.0)
    assert cmds.timed[-1] == (1010.0, ("ptz", CH, "stop", 1))
    [entry] = rec.actions("ptz.control")
    assert entry["reason"] == "max_move" and entry["action"] == "stop" and entry["system"] is True
    assert entry["holder"] == "lisi" and entry["channel_id"] == CH.channel_id
    # a stop in time means no watchdog stop
    await svc.ptz(LOW, CH, "left", 50)
    clock.t += 3
    await svc.ptz(LOW, CH, "stop", 50)
    await advance(svc, clock, clock.t + 60)
    assert len(cmds.of("ptz")) == 4 and len(rec.actions("ptz.control")) == 1


async def test_watchdog_on_the_real_clock_without_help(make_service) -> None:
    svc, cmds, _rec, _clock = await make_service(clock=time.monotonic, lock_seconds=0.5, max_move=0.2)
    await svc.ptz(LOW, CH, "right", 30)
    for _ in range(100):
        if len(cmds.sent) == 2:
            break
        await asyncio.sleep(0.02)
    assert cmds.sent == [("ptz", CH, "right", 30), ("ptz", CH, "stop", 1)]
    for _ in range(100):
        if svc.lock_state(CH).holder is None:
            break
        await asyncio.sleep(0.02)
    assert svc.lock_state(CH).holder is None


async def test_restore_after_a_low_level_lock_and_not_after_a_high_level_one(make_service) -> None:
    svc, cmds, rec, clock = await make_service(restore_below_level=4)
    home = await svc.set_home(HIGH, CH, 9, True)
    assert (home.preset, home.enabled, home.mode) == (9, True, "preset")
    assert (await svc.get_home(CH)).preset == 9
    await svc.ptz(LOW, CH, "left", 50)
    await svc.ptz(LOW, CH, "stop", 50)
    await advance(svc, clock, 1029.9)
    assert cmds.of("preset") == []
    await advance(svc, clock, 1030.0)
    assert cmds.of("preset") == [("preset", CH, "call", 9, None)]
    [entry] = rec.actions("ptz.preset")
    assert entry["reason"] == "restore" and entry["preset"] == 9 and entry["holder"] == "lisi"
    # a high-level user's lock ends without a restore
    await svc.ptz(HIGH, CH, "left", 50)
    await svc.ptz(HIGH, CH, "stop", 50)
    await advance(svc, clock, clock.t + 100)
    assert len(cmds.of("preset")) == 1
    # a disabled home: nothing is called
    await svc.set_home(HIGH, CH, 9, False)
    await svc.ptz(LOW, CH, "stop", 50)
    await advance(svc, clock, clock.t + 100)
    assert len(cmds.of("preset")) == 1


async def test_home_on_the_device(make_service) -> None:
    svc, cmds, _rec, _clock = await make_service()
    home = await svc.set_home(HIGH, CH, None, True, reset_time=120)
    assert home.mode == "device"
    assert cmds.of("device_control") == [("device_control", CH.device_id, "home_position",
                                          {"enabled": True, "reset_time": 120, "preset": 0}, CH.channel_id)]
    cmds.result = CommandResult("ERROR", True)
    with pytest.raises(ControlError) as exc:
        await svc.set_home(HIGH, CH, 3, True, mode="device")
    assert exc.value.status == 502
    assert (await svc.get_home(CH)).preset is None  # nothing stored
    with pytest.raises(ControlError) as exc:
        await svc.set_home(HIGH, CH, None, True, mode="preset")
    assert exc.value.status == 422


async def test_tour_calls_presets_in_order_with_dwell_yields_and_resumes(make_service) -> None:
    svc, cmds, rec, clock = await make_service(restore_below_level=9)
    tour = await svc.create_tour(HIGH, CH, " 门口巡航 ", [{"preset": 1, "dwell_s": 3}, {"preset": 4, "dwell_s": 5},
                                                      TourPoint(2, 2.5)], True, "platform")
    assert tour.name == "门口巡航" and tour.points[2] == TourPoint(2, 2.5) and not tour.running
    started = await svc.start_tour(HIGH, CH, tour.id)
    assert started.running and started.owner == "zhangsan" and started.owner_level == 5
    for t in (1003.0, 1008.0, 1010.5, 1013.5):
        await advance(svc, clock, t)
    calls = [(t, item[3]) for t, item in cmds.timed if item[0] == "preset"]
    assert calls == [(1000.0, 1), (1003.0, 4), (1008.0, 2), (1010.5, 1), (1013.5, 4)]
    assert svc.lock_state(CH).tour_id == tour.id and svc.lock_state(CH).holder == HIGH
    # a lower level is refused while the tour runs, and nothing is sent
    clock.t = 1014.0
    with pytest.raises(PtzLocked):
        await svc.ptz(LOW, CH, "left", 10)
    # the same level takes it: the tour yields
    peer = Operator("3", "wangwu", 5)
    await svc.ptz(peer, CH, "left", 10)
    await svc.ptz(peer, CH, "stop", 10)
    await advance(svc, clock, 1040.0)
    assert [c[3] for c in cmds.of("preset")] == [1, 4, 2, 1, 4]  # paused: no steps
    # the lock ends at 1044: the tour resumes at its point (preset 4), then goes on; no restore instead
    await advance(svc, clock, 1044.0)
    await advance(svc, clock, 1049.0)
    calls = [(t, item[3]) for t, item in cmds.timed if item[0] == "preset"]
    assert calls[-2:] == [(1044.0, 4), (1049.0, 2)]
    events = [d["event"] for d in rec.actions("ptz.tour")]
    assert events == ["step"] * 5 + ["yield", "resume", "step", "step"]
    assert rec.actions("ptz.tour")[5]["by"] == "wangwu" and rec.actions("ptz.tour")[0]["preset"] == 1
    assert rec.actions("ptz.preset") == []
    stopped = await svc.stop_tour(HIGH, CH, tour.id)
    assert not stopped.running
    await advance(svc, clock, 1100.0)
    assert len(cmds.of("preset")) == 7
    assert svc.lock_state(CH).holder is None
    # started twice: it restarts from its first point and stays running (no "end" for itself)
    await svc.start_tour(HIGH, CH, tour.id)
    assert (await svc.start_tour(HIGH, CH, tour.id)).running
    assert [c[3] for c in cmds.of("preset")][-2:] == [1, 1]
    assert "end" not in [d["event"] for d in rec.actions("ptz.tour")]


async def test_tour_without_loop_ends_and_is_marked_stopped(make_service) -> None:
    svc, cmds, rec, clock = await make_service()
    tour = await svc.create_tour(LOW, CH, "once", [{"preset": 5, "dwell_s": 2}, {"preset": 6, "dwell_s": 2}],
                                 False)
    await svc.start_tour(LOW, CH, tour.id)
    await advance(svc, clock, 1002.0)
    await advance(svc, clock, 1004.0)
    assert [c[3] for c in cmds.of("preset")] == [5, 6]
    [t] = await svc.list_tours(CH)
    assert not t.running and rec.actions("ptz.tour")[-1]["event"] == "end"


async def test_tours_are_persisted_and_resume_after_a_restart(make_service) -> None:
    svc, cmds, _rec, clock = await make_service()
    a = await svc.create_tour(HIGH, CH, "A", [{"preset": 1, "dwell_s": 2}], True)
    b = await svc.create_tour(HIGH, CH, "B", [{"preset": 7, "dwell_s": 4}, {"preset": 8, "dwell_s": 4}], True)
    await svc.create_tour(HIGH, OTHER, "C", [{"preset": 2, "dwell_s": 2}], True)
    await svc.start_tour(HIGH, CH, b.id)
    await svc.stop()
    # a new service (a platform restart) lists them and resumes the running one
    svc2, cmds2, _rec2, clock2 = await make_service()
    tours = await svc2.list_tours(CH)
    assert [(t.id, t.name, t.running) for t in tours] == [(a.id, "A", False), (b.id, "B", True)]
    assert tours[1].points == (TourPoint(7, 4.0), TourPoint(8, 4.0)) and tours[1].owner_level == 5
    assert cmds2.of("preset") == [("preset", CH, "call", 7, None)]
    await advance(svc2, clock2, clock2.t + 4)
    assert [c[3] for c in cmds2.of("preset")] == [7, 8]
    # delete: stopped first; another channel's tour id is not found here
    await svc2.delete_tour(HIGH, CH, b.id)
    assert [t.id for t in await svc2.list_tours(CH)] == [a.id]
    with pytest.raises(ControlError) as exc:
        await svc2.start_tour(HIGH, OTHER, a.id)
    assert exc.value.status == 404
    assert svc2.lock_state(CH).tour_id is None


async def test_stop_tour_needs_the_owners_level(make_service) -> None:
    svc, _cmds, _rec, _clock = await make_service()
    tour = await svc.create_tour(HIGH, CH, "A", [{"preset": 1, "dwell_s": 2}], True)
    await svc.start_tour(HIGH, CH, tour.id)
    with pytest.raises(PtzLocked):
        await svc.stop_tour(LOW, CH, tour.id)
    with pytest.raises(PtzLocked):
        await svc.start_tour(LOW, CH, tour.id)
    assert (await svc.list_tours(CH))[0].running


async def test_device_tour_uses_the_domes_cruise(make_service) -> None:
    svc, cmds, _rec, _clock = await make_service()
    t1 = await svc.create_tour(HIGH, CH, "dev1", [{"preset": 1, "dwell_s": 10}], True, "device")
    t2 = await svc.create_tour(HIGH, CH, "dev2", [{"preset": 2, "dwell_s": 10}], True, "device")
    assert (t1.group, t2.group) == (1, 2)
    await svc.start_tour(HIGH, CH, t2.id)
    assert cmds.of("cruise") == [("cruise", CH, "define", 2, (TourPoint(2, 10.0),)), ("cruise", CH, "start", 2, ())]
    await svc.stop_tour(HIGH, CH, t2.id)
    assert cmds.of("cruise")[-1] == ("cruise", CH, "stop", 2, ())


@pytest.mark.parametrize("points", [
    [], [{"preset": 1, "dwell_s": 1.9}], [{"preset": 0, "dwell_s": 3}], [{"preset": 256, "dwell_s": 3}],
    [{"preset": 1}], [{"preset": 1, "dwell_s": float("nan")}], [{"preset": True, "dwell_s": 3}],
    [{"preset": 1, "dwell_s": 3, "x": 1}], "1,2", [[1, 3]],
])
async def test_bad_tours_are_refused_and_nothing_stored(make_service, points) -> None:
    svc, _cmds, _rec, _clock = await make_service()
    with pytest.raises(ControlError) as exc:
        await svc.create_tour(HIGH, CH, "x", points, True)
    assert exc.value.status == 422 and " / " in str(exc.value)
    assert await svc.list_tours(CH) == []


async def test_bad_input_is_refused_before_anything_is_sent(make_service) -> None:
    svc, cmds, _rec, _clock = await make_service()
    for action, speed in (("spin", 10), ("left", 0), ("left", 256), ("left", True), ("left", 1.5)):
        with pytest.raises(ControlError) as exc:
            await svc.ptz(LOW, CH, action, speed)
        assert exc.value.status == 422
    with pytest.raises(ControlError):
        await svc.ptz(LOW, ChannelRef("a/b", "c"), "left", 10)
    with pytest.raises(ControlError) as exc:
        await svc.ptz(Operator("9", "x", 10), CH, "left", 10)
    assert exc.value.status == 403
    with pytest.raises(ControlError):
        await svc.preset(LOW, CH, "call", 0)
    with pytest.raises(ControlError):
        await svc.preset(LOW, CH, "set", 1, "a\x00b")
    with pytest.raises(ControlError):
        await svc.create_tour(HIGH, CH, "x", [{"preset": 1, "dwell_s": 3}], True, "cloud")
    assert cmds.sent == [] and svc.lock_state(CH).holder is None


async def test_presets_set_call_delete_and_names_merged(make_service) -> None:
    svc, cmds, _rec, _clock = await make_service()
    cmds.device_presets = [Preset(1, "Preset1"), Preset(2, None), Preset(3, "dev")]
    await svc.preset(LOW, CH, "set", 2, " 大门 ")
    await svc.preset(LOW, CH, "set", 40, "停车场")
    await svc.preset(LOW, CH, "call", 1)
    assert cmds.of("preset") == [("preset", CH, "set", 2, "大门"), ("preset", CH, "set", 40, "停车场"),
                                 ("preset", CH, "call", 1, None)]
    assert await svc.presets(CH) == [Preset(1, "Preset1"), Preset(2, "大门"), Preset(3, "dev"), Preset(40, "停车场")]
    await svc.preset(LOW, CH, "delete", 40)
    assert Preset(40, "停车场") not in await svc.presets(CH)
    assert svc.lock_state(CH).holder == LOW  # preset commands take the lock too
    with pytest.raises(PtzLocked):
        await svc.preset(Operator("5", "x", 1), CH, "call", 1)
    cmds.offline = True
    with pytest.raises(ControlError) as exc:
        await svc.presets(CH)
    assert exc.value.code == "device_offline"


async def test_device_commands_are_validated_and_passed_on(make_service) -> None:
    svc, cmds, _rec, _clock = await make_service()
    with pytest.raises(ControlError) as exc:
        await svc.device_command(HIGH, CH.device_id, "self_destruct", {})
    assert exc.value.status == 422 and exc.value.code == "unknown_command"
    for params in ({"x": 1}, {"stream_number": "1"}, {"channel_id": "../x"}, [1]):
        with pytest.raises(ControlError) as exc:
            await svc.device_command(HIGH, CH.device_id, "record_start", params)
        assert exc.value.status == 422
    with pytest.raises(ControlError):
        await svc.device_command(HIGH, CH.device_id, "home_position", {"preset": 3})
    with pytest.raises(ControlError):
        await svc.device_command(HIGH, "bad id", "teleboot", None)
    assert cmds.sent == []
    cmds.result = CommandResult(None, False, "no Result")
    res = await svc.device_command(HIGH, CH.device_id, "record_start", {"channel_id": CH.channel_id})
    assert res == CommandResult(None, False, "no Result")
    await svc.device_command(HIGH, CH.device_id, "alarm_reset", {"method": 2, "type": 1})
    await svc.device_command(HIGH, CH.device_id, "teleboot")
    assert cmds.of("device_control") == [
        ("device_control", CH.device_id, "record_start", None, CH.channel_id),
        ("device_control", CH.device_id, "alarm_reset", {"method": 2, "type": 1}, None),
        ("device_control", CH.device_id, "teleboot", None, None),
    ]


async def test_a_failing_device_does_not_stop_the_timer(make_service) -> None:
    svc, cmds, rec, clock = await make_service(max_move=5)
    await svc.ptz(LOW, CH, "left", 10)
    cmds.offline = True
    await advance(svc, clock, 1005.0)
    [entry] = rec.actions("ptz.control")
    assert "error" in entry
    cmds.offline = False
    await svc.ptz(LOW, CH, "right", 10)
    await advance(svc, clock, clock.t + 5)
    assert cmds.sent[-1] == ("ptz", CH, "stop", 1)
