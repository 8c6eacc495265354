"""The ticket state machine and SLA clock under a fake clock (no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ops_portal.tickets import flow
from ops_portal.tickets.flow import IllegalTransition, TicketClock, apply

T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)


def h(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def test_deadline_time_left_and_overdue_follow_the_clock() -> None:
    t = TicketClock.report(T0, 48)
    assert t.state == "reported" and t.deadline == h(48)
    assert flow.time_left(t, h(10)) == 38 * 3600
    assert not flow.is_overdue(t, h(48))  # due at the deadline itself, not yet late
    t = apply(t, "acknowledge", h(1))
    t = apply(t, "start_repair", h(2))
    assert t.acknowledged_at == h(1)
    assert flow.time_left(t, h(50)) == -2 * 3600
    assert flow.is_overdue(t, h(48) + timedelta(seconds=1))


def test_repair_time_is_feedback_minus_report() -> None:
    t = TicketClock.report(T0, 48)
    for action, at in (("acknowledge", h(3)), ("start_repair", h(5)), ("feedback", h(30))):
        t = apply(t, action, at, "replaced the power supply" if action == "feedback" else None)
    assert t.state == "repaired"
    assert t.feedback_at == h(30) and t.repair_seconds == 30 * 3600
    assert t.feedback_note == "replaced the power supply"
    assert t.within_limit is True
    assert flow.time_left(t, h(60)) is None and not flow.is_overdue(t, h(60))
    t = apply(t, "confirm", h(31))
    assert t.state == "confirmed" and t.confirmed_at == h(31)
    assert t.repair_seconds == 30 * 3600


def test_late_repair_counts_as_overdue() -> None:
    t = TicketClock.report(T0, 48)
    t = apply(apply(t, "acknowledge", h(1)), "feedback", h(49), "done")
    assert t.repair_seconds == 49 * 3600
    assert t.within_limit is False
    assert flow.is_overdue(t, h(100))


def test_reopen_keeps_the_deadline_and_the_next_feedback_gives_the_repair_time() -> None:
    t = TicketClock.report(T0, 24)
    t = apply(apply(apply(t, "acknowledge", h(1)), "start_repair", h(2)), "feedback", h(3), "rebooted")
    t = apply(t, "reopen", h(4), "still black")
    assert t.state == "reopened"
    assert t.feedback_at is None and t.repair_seconds is None and t.within_limit is None
    assert t.deadline == h(24)  # the clock still runs from the report
    assert flow.time_left(t, h(4)) == 20 * 3600
    t = apply(t, "start_repair", h(5))
    t = apply(t, "feedback", h(26), "replaced the camera")
    assert t.repair_seconds == 26 * 3600 and t.within_limit is False
    # reopened -> acknowledged is legal too
    t2 = apply(apply(apply(TicketClock.report(T0, 24), "acknowledge", h(1)), "feedback", h(2), "x"), "reopen", h(3))
    assert apply(t2, "acknowledge", h(4)).state == "acknowledged"
    assert apply(t2, "acknowledge", h(4)).acknowledged_at == h(1)  # first acknowledgement kept


@pytest.mark.parametrize(
    ("path", "action"),
    [
        ((), "feedback"),  # must be acknowledged first
        ((), "confirm"),
        ((), "reopen"),
        (("acknowledge",), "acknowledge"),
        (("acknowledge", "feedback"), "feedback"),
        (("acknowledge", "feedback", "confirm"), "reopen"),  # confirmed is final
        (("acknowledge", "feedback", "confirm"), "recover"),
        (("acknowledge", "start_repair"), "confirm"),
    ],
)
def test_illegal_transitions_are_refused_with_a_clear_message(path: tuple[str, ...], action: str) -> None:
    t = TicketClock.report(T0, 48)
    for i, step in enumerate(path):
        t = apply(t, step, h(i + 1), "n")
    with pytest.raises(IllegalTransition) as info:
        apply(t, action, h(10))
    err = info.value
    assert err.state == t.state and err.action == action
    assert " / " in err.message and f"state {t.state!r} cannot {action!r}" in err.message
    assert err.allowed == flow.allowed_actions(t.state)


def test_recover_closes_any_open_state_into_repaired() -> None:
    for state in sorted(flow.OPEN_STATES):
        t = TicketClock(state=state, reported_at=T0, deadline=h(48))
        r = apply(t, "recover", h(2), "back online")
        assert r.state == "repaired" and r.repair_seconds == 7200


def test_every_state_is_reachable_and_the_table_names_only_known_states() -> None:
    targets = {"reported"} | set(flow.TRANSITIONS.values())
    assert targets == set(flow.STATES)
    for (state, action), nxt in flow.TRANSITIONS.items():
        assert state in flow.STATES and action in flow.ACTIONS and nxt in flow.STATES


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError):
        TicketClock.report(datetime(2025, 1, 1), 48)
    with pytest.raises(ValueError):
        apply(TicketClock.report(T0, 48), "acknowledge", datetime(2025, 1, 1))
