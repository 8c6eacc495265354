"""The ticket state machine and SLA clock: pure functions, time passed in (no I/O, no wall clock).

States::

    reported -> acknowledged -> repairing -> repaired -> confirmed
                     ^              ^            |
                     +-- reopened --+ <----------+  (reopen: the repair did not hold)

* The SLA clock starts at the report: ``deadline = reported_at + repair_limit_hours``; it never moves,
  not even when a ticket is reopened.
* **Repair time** = time of the (latest) repair feedback - time of the report.  Reopening clears the
  feedback; the next feedback gives the repair time.
* A ticket is **overdue** while it waits for repair (reported, acknowledged, repairing, reopened) past
  its deadline; a repaired ticket was repaired **within the limit** when its repair time <= the limit.
* ``recover`` is the system's own feedback for an automatic ticket: the device came back.

Every legal move is in :data:`TRANSITIONS`; anything else raises :class:`IllegalTransition`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

__all__ = [
    "ACTIONS",
    "OPEN_STATES",
    "STATES",
    "TRANSITIONS",
    "IllegalTransition",
    "TicketClock",
    "allowed_actions",
    "apply",
    "deadline_for",
    "is_overdue",
    "next_state",
    "repair_seconds",
    "time_left",
]

State = Literal["reported", "acknowledged", "repairing", "repaired", "confirmed", "reopened"]
Action = Literal["acknowledge", "start_repair", "feedback", "recover", "confirm", "reopen"]

STATES: tuple[str, ...] = ("reported", "acknowledged", "repairing", "repaired", "confirmed", "reopened")
ACTIONS: tuple[str, ...] = ("acknowledge", "start_repair", "feedback", "recover", "confirm", "reopen")
#: States in which a ticket still waits for repair (the SLA clock runs).
OPEN_STATES = frozenset({"reported", "acknowledged", "repairing", "reopened"})

#: (state, action) -> next state.  The whole state machine.
TRANSITIONS: dict[tuple[str, str], str] = {
    ("reported", "acknowledge"): "acknowledged",
    ("reopened", "acknowledge"): "acknowledged",
    ("acknowledged", "start_repair"): "repairing",
    ("reopened", "start_repair"): "repairing",
    ("acknowledged", "feedback"): "repaired",
    ("repairing", "feedback"): "repaired",
    ("repaired", "confirm"): "confirmed",
    ("repaired", "reopen"): "reopened",
    # automatic tickets: the device or channel came back, whatever the ticket's progress
    ("reported", "recover"): "repaired",
    ("acknowledged", "recover"): "repaired",
    ("repairing", "recover"): "repaired",
    ("reopened", "recover"): "repaired",
}

_STATE_ZH = {
    "reported": "已上报",
    "acknowledged": "已受理",
    "repairing": "维修中",
    "repaired": "已修复",
    "confirmed": "已确认",
    "reopened": "已重开",
}
_ACTION_ZH = {
    "acknowledge": "受理",
    "start_repair": "开始维修",
    "feedback": "修复反馈",
    "recover": "自动恢复",
    "confirm": "确认",
    "reopen": "重开",
}


class IllegalTransition(ValueError):
    """An action that the ticket's current state does not allow; the message is "中文 / English"."""

    def __init__(self, state: str, action: str) -> None:
        allowed = allowed_actions(state)
        allowed_en = ", ".join(allowed) or "none"
        allowed_zh = "、".join(_ACTION_ZH.get(a, a) for a in allowed) or "无"
        message = (
            f"工单当前状态为“{_STATE_ZH.get(state, state)}”，不能执行“{_ACTION_ZH.get(action, action)}”"
            f"（可执行：{allowed_zh}） / a ticket in state {state!r} cannot {action!r} (allowed: {allowed_en})"
        )
        super().__init__(message)
        self.state = state
        self.action = action
        self.allowed = allowed
        self.message = message


def allowed_actions(state: str) -> tuple[str, ...]:
    """The actions a ticket in ``state`` accepts, in :data:`ACTIONS` order."""
    return tuple(a for a in ACTIONS if (state, a) in TRANSITIONS)


def next_state(state: str, action: str) -> str:
    try:
        return TRANSITIONS[(state, action)]
    except KeyError:
        raise IllegalTransition(state, action) from None


def deadline_for(reported_at: datetime, repair_limit_hours: float) -> datetime:
    return reported_at + timedelta(hours=repair_limit_hours)


def repair_seconds(reported_at: datetime, feedback_at: datetime) -> float:
    """Repair time: the repair feedback's time minus the report's time, in seconds (never negative)."""
    return max(0.0, (feedback_at - reported_at).total_seconds())


@dataclass(frozen=True)
class TicketClock:
    """The state and timestamps of one ticket: what the state machine reads and writes."""

    state: str
    reported_at: datetime
    deadline: datetime
    acknowledged_at: datetime | None = None
    feedback_at: datetime | None = None
    feedback_note: str | None = None
    repair_seconds: float | None = None
    confirmed_at: datetime | None = None

    @classmethod
    def report(cls, reported_at: datetime, repair_limit_hours: float) -> TicketClock:
        """A new ticket: the SLA clock starts now."""
        if reported_at.tzinfo is None:
            raise ValueError("reported_at must be timezone-aware")
        return cls("reported", reported_at, deadline_for(reported_at, repair_limit_hours))

    @property
    def repair_limit_seconds(self) -> float:
        return (self.deadline - self.reported_at).total_seconds()

    @property
    def within_limit(self) -> bool | None:
        """Whether the repair came within the limit; None while no repair feedback was given."""
        if self.repair_seconds is None:
            return None
        return self.repair_seconds <= self.repair_limit_seconds


def apply(clock: TicketClock, action: str, now: datetime, note: str | None = None) -> TicketClock:
    """The ticket after ``action`` at ``now`` (raises :class:`IllegalTransition`).

    ``now`` for ``feedback``/``recover`` is the feedback time (for ``recover``: when the device came back).
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    state = next_state(clock.state, action)
    changes: dict[str, object] = {"state": state}
    if action == "acknowledge" and clock.acknowledged_at is None:
        changes["acknowledged_at"] = now
    elif action in ("feedback", "recover"):
        changes["feedback_at"] = now
        changes["feedback_note"] = note
        changes["repair_seconds"] = repair_seconds(clock.reported_at, now)
    elif action == "confirm":
        changes["confirmed_at"] = now
    elif action == "reopen":
        changes.update(feedback_at=None, feedback_note=None, repair_seconds=None)
    return dataclasses.replace(clock, **changes)  # type: ignore[arg-type]


def time_left(clock: TicketClock, now: datetime) -> float | None:
    """Seconds until the deadline (negative once past it) while the ticket waits for repair; else None."""
    if clock.state not in OPEN_STATES:
        return None
    return (clock.deadline - now).total_seconds()


def is_overdue(clock: TicketClock, now: datetime) -> bool:
    """Waiting for repair past the deadline, or repaired later than the limit."""
    if clock.state in OPEN_STATES:
        return now > clock.deadline
    return clock.within_limit is False
