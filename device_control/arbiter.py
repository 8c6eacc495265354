"""Who may move a channel's PTZ, and what the platform itself must do and when (sans-IO).

No clock, no tasks, no I/O: every call takes ``now`` (seconds on any monotonic clock) and the arbiter answers
with decisions; :class:`~device_control.service.ControlService` carries them out and sets its timers from
:meth:`Arbiter.next_deadline`.

Rules (issue 14):

* A channel's PTZ is held by whoever sent the last command, until ``lock_seconds`` after it.  The holder
  may go on; a strictly higher level takes the lock at once; the same or a lower level gets
  :class:`~device_control.types.PtzLocked` (holder, seconds left) and nothing may be sent.
* A move (any action but ``stop``) that no other command follows is stopped after ``max_move`` seconds
  (:class:`StopMove`): a lost browser must not leave a dome spinning.  A preset call ends the move too.
* When the lock of an operator whose level is below ``restore_below_level`` ends (0: never) the channel's
  home is to be called (:class:`Restore`) -- unless a paused tour resumes there instead.
* A platform tour holds its channel in its owner's name.  It yields (:class:`TourYield`) to a manual
  operator with a level >= the owner's, is refused to lower levels, and resumes (:class:`TourResume`, then
  a :class:`TourStep` re-calling the point it was at) when that operator's lock ends.  Steps follow each
  other after each point's dwell; a tour without ``loop`` ends (:class:`TourEnd`) after its last dwell.  A
  device tour (the dome's own cruise) has no steps: it starts with :class:`CruiseStart` and that is sent
  again when it resumes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from device_control.types import LockState, Operator, PtzLocked, TourPoint
from gbcore.ids import ChannelRef

__all__ = [
    "Action", "Arbiter", "CruiseStart", "Grant", "Restore", "StopMove", "TourEnd", "TourResume", "TourStep",
    "TourYield",
]


# ---------------------------------------------------------------------------------------- decisions
@dataclass(frozen=True, slots=True)
class StopMove:
    """The move watchdog: send ``stop`` (the move of ``holder`` ran ``max_move`` seconds without a stop)."""

    channel: ChannelRef
    holder: Operator | None
    started: float  # when the move command was sent


@dataclass(frozen=True, slots=True)
class Restore:
    """The lock of ``holder`` (below the restore level) ended: call the channel's home."""

    channel: ChannelRef
    holder: Operator


@dataclass(frozen=True, slots=True)
class TourStep:
    """A platform tour calls ``preset`` (point ``index``) and dwells there ``dwell_s`` seconds."""

    channel: ChannelRef
    tour_id: int
    index: int
    preset: int
    dwell_s: float


@dataclass(frozen=True, slots=True)
class CruiseStart:
    """A device tour (the dome's own cruise) is to be started (again)."""

    channel: ChannelRef
    tour_id: int


@dataclass(frozen=True, slots=True)
class TourYield:
    """A tour paused for a manual operator (``by``, level >= the owner's)."""

    channel: ChannelRef
    tour_id: int
    by: Operator


@dataclass(frozen=True, slots=True)
class TourResume:
    """The manual lock ended: the paused tour goes on (a step or a cruise start follows)."""

    channel: ChannelRef
    tour_id: int


@dataclass(frozen=True, slots=True)
class TourEnd:
    """A tour without ``loop`` finished its last dwell, or was replaced by another tour (``replaced``)."""

    channel: ChannelRef
    tour_id: int
    replaced: bool = False


Action = StopMove | Restore | TourStep | CruiseStart | TourYield | TourResume | TourEnd


@dataclass(frozen=True, slots=True)
class Grant:
    """A command may be sent: the lock it leaves, whom it took the lock from, and what must happen first
    (a tour yielding or ending)."""

    state: LockState
    took_over: Operator | None = None
    actions: tuple[Action, ...] = ()


# ---------------------------------------------------------------------------------------- state
@dataclass(slots=True)
class _Tour:
    tour_id: int
    owner: Operator
    points: tuple[TourPoint, ...]  # empty: a device tour
    loop: bool
    index: int = 0
    next_at: float | None = None  # the next step (platform tours, not paused)
    paused: bool = False


@dataclass(slots=True)
class _Channel:
    holder: Operator | None = None
    last: float = 0.0  # the holder's last command
    move_from: float | None = None  # a move command without a stop since
    move_holder: Operator | None = None
    tour: _Tour | None = None
    pending: list[Action] = field(default_factory=list)  # settled by a call, handed out by poll


def _validate_operator(op: Operator) -> None:
    if not isinstance(op.level, int) or isinstance(op.level, bool) or not 1 <= op.level <= 9:
        raise ValueError(f"PTZ level must be 1..9, got {op.level!r}")


class Arbiter:
    """Per-channel PTZ locks, the move watchdog, restore and tour decisions.  Not thread-safe; call it from
    one event loop (every call is synchronous, so a check and its grant cannot interleave)."""

    def __init__(self, *, lock_seconds: float, max_move: float, restore_below_level: int = 0) -> None:
        if lock_seconds <= 0 or max_move <= 0:
            raise ValueError("lock_seconds and max_move must be positive")
        self.lock_seconds = float(lock_seconds)
        self.max_move = float(max_move)
        self.restore_below_level = int(restore_below_level)
        self._channels: dict[ChannelRef, _Channel] = {}

    # ------------------------------------------------------------------------------------ queries
    def state(self, channel: ChannelRef, now: float) -> LockState:
        ch = ChannelRef(*channel)
        c = self._channels.get(ch)
        if c is None:
            return LockState(ch, None, 0.0)
        self._settle(ch, c, now)
        return self._state(ch, c, now)

    def _state(self, ch: ChannelRef, c: _Channel, now: float) -> LockState:
        tour_id = c.tour.tour_id if c.tour is not None else None
        if c.holder is not None:
            return LockState(ch, c.holder, max(0.0, c.last + self.lock_seconds - now), tour_id)
        if c.tour is not None and not c.tour.paused:
            left = max(0.0, c.tour.next_at - now) if c.tour.next_at is not None else self.lock_seconds
            return LockState(ch, c.tour.owner, left, tour_id)
        return LockState(ch, None, 0.0, tour_id)

    def channels(self) -> list[ChannelRef]:
        return list(self._channels)

    def tour_of(self, channel: ChannelRef) -> tuple[int, Operator, bool] | None:
        """The channel's tour: (id, owner, paused), or None."""
        c = self._channels.get(ChannelRef(*channel))
        if c is None or c.tour is None:
            return None
        return c.tour.tour_id, c.tour.owner, c.tour.paused

    def next_deadline(self) -> float | None:
        """The earliest time at which :meth:`poll` has something to do (None: nothing planned).  A channel
        with decisions already settled (by a refused request) is due at once: ``-inf``."""
        best: float | None = None
        for c in self._channels.values():
            for t in self._deadlines(c):
                if best is None or t < best:
                    best = t
        return best

    def _deadlines(self, c: _Channel) -> list[float]:
        out = []
        if c.pending:
            out.append(-math.inf)
        if c.holder is not None:
            out.append(c.last + self.lock_seconds)
        if c.move_from is not None:
            out.append(c.move_from + self.max_move)
        if c.tour is not None and not c.tour.paused and c.tour.next_at is not None:
            out.append(c.tour.next_at)
        return out

    # ------------------------------------------------------------------------------------ time passes
    def poll(self, now: float) -> list[Action]:
        """Everything due by ``now``, in time order per channel.  Forgets idle channels."""
        out: list[Action] = []
        for ch in list(self._channels):
            c = self._channels[ch]
            self._settle(ch, c, now)
            out.extend(c.pending)
            c.pending.clear()
            if c.holder is None and c.move_from is None and c.tour is None:
                del self._channels[ch]
        return out

    def _settle(self, ch: ChannelRef, c: _Channel, now: float) -> None:
        """Play the channel's deadlines up to ``now``, each at its own time; decisions go to ``pending``."""
        while True:
            due = [t for t in self._deadlines(c) if t != -math.inf and t <= now]
            if not due:
                return
            t = min(due)
            if c.holder is not None and c.last + self.lock_seconds == t:
                holder, c.holder = c.holder, None
                if c.tour is not None and c.tour.paused:
                    c.tour.paused = False
                    c.pending.append(TourResume(ch, c.tour.tour_id))
                    c.pending.append(self._tour_go(ch, c, t))
                elif 0 < holder.level < self.restore_below_level and holder.kind != "system":
                    c.pending.append(Restore(ch, holder))
                    c.move_from = c.move_holder = None  # the home call ends any move
            elif c.move_from is not None and c.move_from + self.max_move == t:
                c.pending.append(StopMove(ch, c.move_holder, c.move_from))
                c.move_from = c.move_holder = None
            elif c.tour is not None and c.tour.next_at == t:
                tour = c.tour
                nxt = tour.index + 1
                if nxt >= len(tour.points):
                    if not tour.loop:
                        c.tour = None
                        c.pending.append(TourEnd(ch, tour.tour_id))
                        continue
                    nxt = 0
                tour.index = nxt
                c.pending.append(self._tour_go(ch, c, t))
            else:  # pragma: no cover - every deadline above is handled
                raise AssertionError("unhandled deadline")

    def _tour_go(self, ch: ChannelRef, c: _Channel, t: float) -> Action:
        """The tour's current point (or the device cruise) is to be called at ``t``."""
        tour = c.tour
        assert tour is not None
        if not tour.points:
            tour.next_at = None
            return CruiseStart(ch, tour.tour_id)
        p = tour.points[tour.index]
        c.move_from = c.move_holder = None  # a preset call ends any move
        tour.next_at = t + p.dwell_s
        return TourStep(ch, tour.tour_id, tour.index, p.preset, p.dwell_s)

    # ------------------------------------------------------------------------------------ operators
    def _check(self, ch: ChannelRef, c: _Channel, op: Operator, now: float) -> LockState:
        """The lock as it stands; raises PtzLocked when ``op`` may not take it."""
        state = self._state(ch, c, now)
        h = state.holder
        if h is None or h.id == op.id or op.level > h.level:
            return state
        if c.holder is None and c.tour is not None and op.level >= h.level:
            return state  # a running tour yields to the owner's level and above
        raise PtzLocked(state)

    def request(self, channel: ChannelRef, op: Operator, action: str, now: float) -> Grant:
        """``op`` wants to send ``action`` (a PTZ action word, or ``preset_call`` / ``preset_set`` /
        ``preset_delete``).  Raises :class:`PtzLocked` (and nothing changes) when the lock is another's of the
        same or a higher level; otherwise ``op`` holds the lock from ``now``."""
        _validate_operator(op)
        ch = ChannelRef(*channel)
        c = self._channels.setdefault(ch, _Channel())
        self._settle(ch, c, now)
        state = self._check(ch, c, op, now)
        actions: list[Action] = []
        took = state.holder if state.holder is not None and state.holder.id != op.id else None
        # the command supersedes a due watchdog stop and a due restore of this channel
        c.pending = [a for a in c.pending if not isinstance(a, StopMove | Restore)]
        if c.tour is not None and not c.tour.paused:
            c.tour.paused = True
            c.tour.next_at = None
            actions.append(TourYield(ch, c.tour.tour_id, op))
        c.holder, c.last = op, now
        if action == "stop" or action.startswith("preset_call"):
            c.move_from = c.move_holder = None
        elif not action.startswith("preset_"):
            c.move_from, c.move_holder = now, op
        return Grant(self._state(ch, c, now), took, tuple(actions))

    def release(self, channel: ChannelRef, op: Operator, now: float) -> list[Action]:
        """``op`` lets go of the lock at once (no-op when another holds it); decisions as when it ends."""
        ch = ChannelRef(*channel)
        c = self._channels.get(ch)
        if c is None or c.holder is None or c.holder.id != op.id:
            return []
        c.last = now - self.lock_seconds
        return self.poll(now)

    # ------------------------------------------------------------------------------------ tours
    def start_tour(self, channel: ChannelRef, tour_id: int, owner: Operator, points: tuple[TourPoint, ...],
                   loop: bool, now: float) -> Grant:
        """Start a tour owned by ``owner`` (device tour: no points).  Needs the lock as a command would (the
        same operator, or a higher level than the holder or the running tour's owner); the manual lock, if
        any, ends here (without a restore) and a running tour is replaced (:class:`TourEnd` ``replaced``).
        The first decision (a step or a cruise start) is in the grant's actions."""
        ch = ChannelRef(*channel)
        state = self.check_tour_start(ch, owner, now)
        c = self._channels.setdefault(ch, _Channel())
        c.pending = [a for a in c.pending if not isinstance(a, StopMove | Restore)]
        actions: list[Action] = []
        if c.tour is not None and c.tour.tour_id != tour_id:  # the same tour again: it restarts
            actions.append(TourEnd(ch, c.tour.tour_id, replaced=True))
        took = state.holder if state.holder is not None and state.holder.id != owner.id else None
        c.holder = None
        c.tour = _Tour(tour_id, owner, tuple(points), bool(loop))
        actions.append(self._tour_go(ch, c, now))
        return Grant(self._state(ch, c, now), took, tuple(actions))

    def check_tour_start(self, channel: ChannelRef, owner: Operator, now: float) -> LockState:
        """Whether ``owner`` may start a tour here now (raises :class:`PtzLocked`); changes nothing."""
        _validate_operator(owner)
        ch = ChannelRef(*channel)
        c = self._channels.get(ch)
        if c is None:
            return LockState(ch, None, 0.0)
        self._settle(ch, c, now)
        state = self._check(ch, c, owner, now)
        if c.tour is not None and c.tour.owner.id != owner.id and owner.level < c.tour.owner.level:
            raise PtzLocked(LockState(ch, c.tour.owner, state.seconds_left, c.tour.tour_id))
        return state

    def stop_tour(self, channel: ChannelRef, tour_id: int, op: Operator, now: float) -> bool:
        """Stop the channel's tour ``tour_id``: its owner, or a level >= the owner's.  False when that tour
        is not running here; PtzLocked when ``op`` may not."""
        ch = ChannelRef(*channel)
        c = self._channels.get(ch)
        if c is None:
            return False
        self._settle(ch, c, now)
        if c.tour is None or c.tour.tour_id != tour_id:
            return False
        if op.id != c.tour.owner.id and op.level < c.tour.owner.level:
            raise PtzLocked(LockState(ch, c.tour.owner, self._state(ch, c, now).seconds_left, tour_id))
        c.tour = None
        return True

    def drop_tour(self, tour_id: int) -> ChannelRef | None:
        """Forget tour ``tour_id`` wherever it runs (it was deleted); its channel, or None."""
        for ch, c in self._channels.items():
            if c.tour is not None and c.tour.tour_id == tour_id:
                c.tour = None
                return ch
        return None
