"""The sans-IO PTZ arbiter: locks, priority, the move watchdog, restore and tour decisions."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device_control.arbiter import (
    Arbiter,
    CruiseStart,
    Restore,
    StopMove,
    TourEnd,
    TourResume,
    TourStep,
    TourYield,
)
from device_control.types import Operator, PtzLocked, TourPoint
from gbcore.ids import ChannelRef

CH = ChannelRef("34020000001320000001", "34020000001310000001")
CH2 = ChannelRef("34020000001320000001", "34020000001310000002")
LOW = Operator("u1", "lisi", 2, "李四")
LOW2 = Operator("u3", "wangwu", 2, "王五")
HIGH = Operator("u2", "zhangsan", 5, "张三")
TOP = Operator("u9", "admin", 9)


def arb(**kw) -> Arbiter:
    args = dict(lock_seconds=30, max_move=10, restore_below_level=0)
    args.update(kw)
    return Arbiter(**args)


def test_free_channel_is_granted_and_locked_for_lock_seconds() -> None:
    a = arb()
    assert a.state(CH, 0).holder is None
    g = a.request(CH, LOW, "left", 100.0)
    assert g.state.holder == LOW and g.state.seconds_left == 30 and g.took_over is None
    assert a.state(CH, 112.0).seconds_left == pytest.approx(18.0)
    assert a.state(CH2, 112.0).holder is None  # per channel


def test_higher_level_takes_over_at_once_and_lower_gets_holder_and_seconds_left() -> None:
    a = arb()
    a.request(CH, LOW, "left", 0.0)
    g = a.request(CH, HIGH, "right", 5.0)
    assert g.took_over == LOW and g.state.holder == HIGH
    with pytest.raises(PtzLocked) as exc:
        a.request(CH, LOW, "stop", 17.0)
    err = exc.value
    assert err.status == 423 and err.code == "ptz_locked"
    assert err.state.holder == HIGH and err.state.seconds_left == pytest.approx(18.0)
    assert "张三（级别 5）" in str(err) and "剩余 18 秒" in str(err)
    # the refusal changed nothing: the lock still ends 30 s after HIGH's command
    assert a.state(CH, 34.9).holder == HIGH
    assert a.state(CH, 35.0).holder is None
    # and then the low-level user gets control
    assert a.request(CH, LOW, "up", 35.0).state.holder == LOW


def test_equal_level_is_refused_but_the_holder_goes_on() -> None:
    a = arb()
    a.request(CH, LOW, "left", 0.0)
    with pytest.raises(PtzLocked):
        a.request(CH, LOW2, "left", 1.0)
    g = a.request(CH, LOW, "stop", 20.0)  # the holder's own command extends the lock
    assert g.state.seconds_left == 30
    assert a.state(CH, 49.0).holder == LOW


def test_watchdog_stops_a_move_without_stop_after_max_move() -> None:
    a = arb()
    a.request(CH, LOW, "zoom_in", 100.0)
    assert a.next_deadline() == 110.0
    assert a.poll(109.9) == []
    assert a.poll(110.0) == [StopMove(CH, LOW, 100.0)]
    assert a.poll(200.0) == []  # once
    # a stop cancels the watchdog; a later move re-arms it from that move
    a.request(CH, LOW, "left", 300.0)
    a.request(CH, LOW, "stop", 301.0)
    assert a.poll(400.0) == []
    a.request(CH, LOW, "left", 500.0)
    a.request(CH, LOW, "right", 508.0)
    assert a.poll(517.9) == []
    assert a.poll(518.0) == [StopMove(CH, LOW, 508.0)]


def test_watchdog_does_not_extend_the_lock() -> None:
    a = arb()
    a.request(CH, LOW, "left", 0.0)
    a.poll(10.0)
    assert a.state(CH, 29.0).holder == LOW
    assert a.state(CH, 30.0).holder is None


def test_restore_after_a_low_level_lock_and_not_after_a_high_level_one() -> None:
    a = arb(restore_below_level=5)
    a.request(CH, LOW, "left", 0.0)
    a.request(CH, LOW, "stop", 2.0)
    assert a.poll(31.9) == []
    assert a.poll(32.0) == [Restore(CH, LOW)]
    a.request(CH, HIGH, "left", 100.0)
    a.request(CH, HIGH, "stop", 101.0)
    assert a.poll(1000.0) == []
    # a takeover by a higher level: the low-level lock did not end, it passed; no restore after HIGH's
    a.request(CH, LOW, "left", 2000.0)
    a.request(CH, HIGH, "stop", 2001.0)
    assert a.poll(3000.0) == []


def test_restore_never_when_the_level_setting_is_zero() -> None:
    a = arb(restore_below_level=0)
    a.request(CH, Operator("x", "x", 1), "left", 0.0)
    assert a.poll(100.0) == [StopMove(CH, Operator("x", "x", 1), 0.0)]


def test_restore_ends_a_move_and_a_later_command_supersedes_a_due_restore() -> None:
    a = arb(lock_seconds=5, max_move=10, restore_below_level=5)
    a.request(CH, LOW, "left", 0.0)
    assert a.poll(100.0) == [Restore(CH, LOW)]  # the lock ended first (t=5): the home call ends the move
    a.request(CH, LOW, "left", 200.0)
    a.state(CH, 206.0)  # settled: a restore is due ...
    assert a.next_deadline() == float("-inf")
    a.request(CH, LOW2, "stop", 206.0)  # ... but a new operator's command supersedes it
    assert a.poll(206.0) == []


def test_platform_tour_steps_in_order_with_dwell_and_loops() -> None:
    a = arb()
    pts = (TourPoint(1, 3.0), TourPoint(2, 5.0), TourPoint(7, 2.0))
    g = a.start_tour(CH, 11, HIGH, pts, True, 0.0)
    assert g.actions == (TourStep(CH, 11, 0, 1, 3.0),)
    assert g.state.holder == HIGH and g.state.tour_id == 11
    assert a.next_deadline() == 3.0
    steps = a.poll(3.0) + a.poll(8.0) + a.poll(10.0) + a.poll(13.0)
    assert steps == [TourStep(CH, 11, 1, 2, 5.0), TourStep(CH, 11, 2, 7, 2.0), TourStep(CH, 11, 0, 1, 3.0),
                     TourStep(CH, 11, 1, 2, 5.0)]
    # late polls catch up at each step's own time
    assert [s.preset for s in a.poll(23.0)] == [7, 1, 2]


def test_tour_without_loop_ends() -> None:
    a = arb()
    a.start_tour(CH, 1, HIGH, (TourPoint(3, 2.0), TourPoint(4, 2.0)), False, 0.0)
    assert a.poll(2.0) == [TourStep(CH, 1, 1, 4, 2.0)]
    assert a.poll(4.0) == [TourEnd(CH, 1)]
    assert a.state(CH, 4.0).holder is None and a.tour_of(CH) is None


def test_tour_yields_to_level_at_least_the_owners_and_resumes_after_the_lock() -> None:
    a = arb(restore_below_level=9)
    pts = (TourPoint(1, 4.0), TourPoint(2, 4.0))
    a.start_tour(CH, 5, HIGH, pts, True, 0.0)
    with pytest.raises(PtzLocked) as exc:  # lower than the owner: refused, the tour holds
        a.request(CH, LOW, "left", 1.0)
    assert exc.value.state.holder == HIGH and exc.value.state.tour_id == 5
    a.poll(4.0)  # step to point 1 (preset 2)
    same = Operator("u7", "zhaoliu", 5)
    g = a.request(CH, same, "left", 5.0)
    assert g.actions == (TourYield(CH, 5, same),) and g.state.holder == same
    assert a.poll(20.0) == [StopMove(CH, same, 5.0)]  # no steps while paused, only the watchdog
    a.request(CH, same, "stop", 20.0)
    # the lock ends at 50: the tour resumes at the point it was at (no restore in its place)
    assert a.poll(50.0) == [TourResume(CH, 5), TourStep(CH, 5, 1, 2, 4.0)]
    assert a.poll(54.0) == [TourStep(CH, 5, 0, 1, 4.0)]
    assert a.state(CH, 55.0).holder == HIGH


def test_tour_start_and_stop_rules() -> None:
    a = arb()
    a.request(CH, HIGH, "left", 0.0)
    with pytest.raises(PtzLocked):
        a.start_tour(CH, 1, LOW, (TourPoint(1, 2.0),), True, 1.0)
    g = a.start_tour(CH, 1, TOP, (TourPoint(1, 2.0),), True, 1.0)
    assert g.took_over == HIGH and g.state.holder == TOP
    with pytest.raises(PtzLocked):
        a.stop_tour(CH, 1, HIGH, 2.0)
    assert a.stop_tour(CH, 2, TOP, 2.0) is False
    # replacing a tour ends the old one
    g = a.start_tour(CH, 2, TOP, (), True, 3.0)
    assert g.actions == (TourEnd(CH, 1, replaced=True), CruiseStart(CH, 2))
    assert a.stop_tour(CH, 2, TOP, 4.0) is True
    assert a.state(CH, 4.0).holder is None


def test_invalid_operator_level_is_refused() -> None:
    with pytest.raises(ValueError):
        arb().request(CH, Operator("x", "x", 0), "left", 0.0)


# ------------------------------------------------------------------------------------------ properties
ops = st.sampled_from([Operator(f"u{i}-{lvl}", f"user{i}", lvl) for i in range(3) for lvl in (1, 3, 3, 5, 9)])
steps = st.lists(st.tuples(ops, st.floats(min_value=0.0, max_value=40.0, allow_nan=False),
                           st.sampled_from(["left", "stop", "zoom_in", "preset_call", "preset_set"])),
                 min_size=1, max_size=30)


@settings(max_examples=300, deadline=None)
@given(steps)
def test_property_lock_rules_against_a_model(seq) -> None:
    lock_s = 30.0
    a = arb(lock_seconds=lock_s, restore_below_level=4)
    now = 0.0
    holder, last = None, None
    for op, dt, action in seq:
        now += dt
        if holder is not None and now >= last + lock_s:
            holder = None
        held = holder is not None and holder.id != op.id
        if held and op.level <= holder.level:
            before = a.state(CH, now)
            with pytest.raises(PtzLocked) as exc:
                a.request(CH, op, action, now)
            # a lower or equal level never takes a held lock, and learns who holds it for how long
            assert exc.value.state.holder == holder
            assert exc.value.state.seconds_left == pytest.approx(last + lock_s - now)
            assert a.state(CH, now) == before
        else:
            g = a.request(CH, op, action, now)
            # a higher level (or the holder, or anyone on a free channel) always gets it
            assert g.state.holder == op and g.took_over == (holder if held else None)
            holder, last = op, now
        a.poll(now)
    # a lock always ends exactly lock_seconds after the holder's last command
    end = last + lock_s
    assert a.state(CH, end - 1e-6).holder == holder
    assert a.state(CH, end).holder is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(min_value=0.0, max_value=20.0, allow_nan=False),
                          st.sampled_from(["left", "stop", "up_right", "preset_call"])), min_size=1, max_size=20))
def test_property_every_move_is_stopped_max_move_after_the_last_command(seq) -> None:
    a = arb(lock_seconds=1000, max_move=10)
    now, moving_since = 0.0, None
    stops = []
    for dt, action in seq:
        nxt = now + dt
        stops += [(x.started, t) for t in [nxt] for x in a.poll(nxt) if isinstance(x, StopMove)]
        if moving_since is not None and moving_since + 10 <= nxt:
            assert stops and stops[-1][0] == moving_since
            moving_since = None
        now = nxt
        a.request(CH, LOW, action, now)
        moving_since = None if action in ("stop", "preset_call") else now
    final = a.poll(now + 10)
    if moving_since is None:
        assert not [x for x in final if isinstance(x, StopMove)]
    else:
        assert [x for x in final if isinstance(x, StopMove)] == [StopMove(CH, LOW, moving_since)]
