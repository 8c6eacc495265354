"""Availability arithmetic: presence transitions in, state intervals and figures out.

Pure functions (no database, no clock, no I/O), so that the rules auditors rely on are tested
directly.  Times are float seconds since the Unix epoch (UTC).

Rules (also in the README and the report footer):

* **The point is a channel** (camera point).  A channel is *online* when its device is online
  **and** the channel itself is online (catalog status); it is offline whenever its device is
  offline, whatever the channel's own state.  An outage of the device while a channel was already
  down is one continuous channel outage, not two.
* **State before the period** comes from each subject's last transition before the period start;
  a subject with no transition before is offline (a device is offline until it first registers,
  a channel is created offline and its first transition says when it came up).
* **Existence**: a channel counts only from ``exists_from`` (first seen) to ``exists_until``
  (removed from the catalog); the rest of the period is *absent*, in no total and no denominator.
* **Platform downtime**: time outside every platform run (``up`` intervals) is *unknown*: the
  platform was not watching, so it is neither online nor offline.  Unknown time is reported, and
  excluded from the availability denominator.
* **Clock changes**: transitions are applied in the order they were recorded (database id).  One
  whose time is earlier than the transition before it (the clock went backwards) is moved forward
  to that time (clamped), so that intervals never overlap or run backwards; times are also
  clamped into the period.
* **Outage**: a maximal run of offline time.  Unknown or absent time ends a run.  An outage that
  began before the period counts, clipped to the period.
* **Availability** of a channel = online / (online + offline) seconds (None when none is known).
  The scope's *time-weighted rate* = sum online / sum (online + offline) over its channels, which
  is the time average of the instantaneous rate; the *sampled rate* counts, at every sample
  instant ``start + k * step``, the channels online among those whose state is known, and divides
  the sums.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

__all__ = [
    "OFFLINE",
    "ONLINE",
    "UNKNOWN",
    "ChannelTimeline",
    "Transition",
    "Sampler",
    "channel_timeline",
    "full_timeline",
    "merge_intervals",
]

ONLINE = "online"
OFFLINE = "offline"
UNKNOWN = "unknown"


class Transition(NamedTuple):
    """One presence transition as recorded: ``device`` True for the device's own row.  (Any
    ``(at, online, device)`` tuple will do.)"""

    at: float
    online: bool
    device: bool


@dataclass(slots=True)
class ChannelTimeline:
    start: float
    end: float
    #: Sorted, non-overlapping (a, b, state) within [start, end); absent time is left out; adjacent
    #: segments have different states.
    segments: list[tuple[float, float, str]] = field(default_factory=list)
    online_s: float = 0.0
    offline_s: float = 0.0
    unknown_s: float = 0.0
    outages: int = 0
    longest_outage_s: float = 0.0
    #: Number of transitions whose time was clamped (clock went backwards or outside the period).
    clamped: int = 0

    @property
    def period_s(self) -> float:
        return self.end - self.start

    @property
    def absent_s(self) -> float:
        return self.period_s - self.online_s - self.offline_s - self.unknown_s

    @property
    def known_s(self) -> float:
        return self.online_s + self.offline_s

    @property
    def availability(self) -> float | None:
        known = self.known_s
        return self.online_s / known if known > 0 else None

    def outage_list(self) -> list[tuple[float, float]]:
        return [(a, b) for a, b, s in self.segments if s == OFFLINE]


def merge_intervals(intervals: Iterable[tuple[float, float]], start: float, end: float) -> list[tuple[float, float]]:
    """Clip to [start, end), sort, and merge overlapping or touching intervals."""
    out: list[list[float]] = []
    for a, b in sorted((max(a, start), min(b, end)) for a, b in intervals):
        if b <= a:
            continue
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def _intersect(xs: Sequence[tuple[float, float]], ys: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    out = []
    i = j = 0
    while i < len(xs) and j < len(ys):
        a = max(xs[i][0], ys[j][0])
        b = min(xs[i][1], ys[j][1])
        if a < b:
            out.append((a, b))
        if xs[i][1] < ys[j][1]:
            i += 1
        else:
            j += 1
    return out


def channel_timeline(
    start: float,
    end: float,
    transitions: Iterable[Transition],
    *,
    device_before: bool | None = None,
    channel_before: bool | None = None,
    exists_from: float | None = None,
    exists_until: float | None = None,
    up: Sequence[tuple[float, float]] | None = None,
) -> ChannelTimeline:
    """The states of one channel over [start, end).

    ``transitions``: the channel's and its device's transitions within the period, in the order
    they were recorded.  ``device_before`` / ``channel_before``: the last state before ``start``
    (None: no transition before, i.e. offline).  ``exists_from`` / ``exists_until``: when the
    channel existed (None: unbounded).  ``up``: the platform's up intervals (None: up throughout);
    they need not be clipped or merged.
    """
    if not (math.isfinite(start) and math.isfinite(end)) or end < start:
        raise ValueError("the period must be finite with end >= start")
    tl = ChannelTimeline(start, end)
    if end == start:
        return tl

    # 1. effective online/offline over [start, end) from the transitions (clamped, in order)
    dev = bool(device_before)
    ch = bool(channel_before)
    state = dev and ch
    base: list[tuple[float, float, bool]] = []
    cursor = start
    last = start
    for tr in transitions:
        t = tr[0]
        if t < last or t > end:
            tl.clamped += 1
            t = min(max(t, last), end)
        last = t
        if tr[2]:
            dev = tr[1]
        else:
            ch = tr[1]
        new = dev and ch
        if new != state:
            if t > cursor:
                base.append((cursor, t, state))
            cursor = t
            state = new
    if end > cursor:
        base.append((cursor, end, state))

    # 2. present (exists) and known (present and platform up)
    lo = start if exists_from is None else max(start, exists_from)
    hi = end if exists_until is None else min(end, exists_until)
    if lo == start and hi == end and up is None:  # the common case: all of it known (base alternates)
        tl.segments = [(a, b, ONLINE if st else OFFLINE) for a, b, st in base]
        _totals(tl)
        return tl
    present = [(lo, hi)] if hi > lo else []
    up_merged = [(start, end)] if up is None else merge_intervals(up, start, end)
    known = _intersect(present, up_merged)

    # 3. split: known parts take the base state, present-but-not-known parts are unknown
    pieces: list[tuple[float, float, str]] = []
    for a, b in present:
        # unknown = present minus known
        c = a
        for ka, kb in known:
            if kb <= a or ka >= b:
                continue
            if ka > c:
                pieces.append((c, ka, UNKNOWN))
            c = max(c, kb)
        if b > c:
            pieces.append((c, b, UNKNOWN))
    known_pieces = _intersect([(a, b) for a, b, _ in base], known)
    # assign states to known pieces (base is sorted; walk both)
    k = 0
    for a, b in known_pieces:
        while base[k][1] <= a:
            k += 1
        pieces.append((a, b, ONLINE if base[k][2] else OFFLINE))
    pieces.sort()

    # 4. merge equal neighbours, totals, outages
    segs: list[tuple[float, float, str]] = []
    for a, b, s in pieces:
        if segs and segs[-1][2] == s and segs[-1][1] == a:
            segs[-1] = (segs[-1][0], b, s)
        else:
            segs.append((a, b, s))
    tl.segments = segs
    _totals(tl)
    return tl


def full_timeline(
    start: float,
    end: float,
    transitions: Iterable[Transition],
    device_before: bool | None,
    channel_before: bool | None,
) -> tuple[ChannelTimeline, list[float], list[float]]:
    """:func:`channel_timeline` of a channel that existed and was watched throughout [start, end)
    (``start < end`` finite), in one pass: the same timeline, plus the starts and ends of its online
    segments (what :meth:`Sampler.add_full` takes).  The hot path of a report."""
    tl = ChannelTimeline(start, end)
    dev = bool(device_before)
    ch = bool(channel_before)
    state = dev and ch
    segs: list[tuple[float, float, str]] = []
    on_a: list[float] = []
    on_b: list[float] = []
    cursor = last = start
    clamped = 0
    online_s = offline_s = longest = 0.0
    outages = 0
    for t, on, is_dev in transitions:
        if t < last or t > end:
            clamped += 1
            t = min(max(t, last), end)
        last = t
        if is_dev:
            dev = on
        else:
            ch = on
        new = dev and ch
        if new != state:
            if t > cursor:
                d = t - cursor
                if state:
                    segs.append((cursor, t, ONLINE))
                    on_a.append(cursor)
                    on_b.append(t)
                    online_s += d
                else:
                    segs.append((cursor, t, OFFLINE))
                    offline_s += d
                    outages += 1
                    if d > longest:
                        longest = d
            cursor = t
            state = new
    # the loop's segment close once more, for the period's end (kept inline like the loop's: this is the hot path
    # of a 10,000-channel report, a call per change would cost more than the two copies)
    if end > cursor:
        d = end - cursor
        if state:
            segs.append((cursor, end, ONLINE))
            on_a.append(cursor)
            on_b.append(end)
            online_s += d
        else:
            segs.append((cursor, end, OFFLINE))
            offline_s += d
            outages += 1
            if d > longest:
                longest = d
    tl.segments = segs
    tl.online_s = online_s
    tl.offline_s = offline_s
    tl.outages = outages
    tl.longest_outage_s = longest
    tl.clamped = clamped
    return tl, on_a, on_b


def _totals(tl: ChannelTimeline) -> None:
    for a, b, s in tl.segments:
        d = b - a
        if s == ONLINE:
            tl.online_s += d
        elif s == OFFLINE:
            tl.offline_s += d
            tl.outages += 1
            if d > tl.longest_outage_s:
                tl.longest_outage_s = d
        else:
            tl.unknown_s += d


class Sampler:
    """Counts, at instants ``start + k * step`` (k = 0, 1, ... while < end), how many channels are
    online and how many have a known state.  Feed it timelines one at a time; it keeps only the
    segment boundaries (compact float arrays) and counts them all at once with numpy."""

    def __init__(self, start: float, end: float, step: float) -> None:
        if step <= 0:
            raise ValueError("step must be positive")
        self.start = start
        self.end = end
        self.step = step
        self.n = max(0, math.ceil((end - start) / step))
        self._on_a, self._on_b = array("d"), array("d")
        self._kn_a, self._kn_b = array("d"), array("d")

    def add(self, timeline: ChannelTimeline) -> None:
        segs = timeline.segments
        known = [(a, b) for a, b, s in segs if s != UNKNOWN]
        if len(known) != len(segs) or known:
            self._kn_a.extend([a for a, _ in known])
            self._kn_b.extend([b for _, b in known])
        self._on_a.extend([a for a, _, s in segs if s == ONLINE])
        self._on_b.extend([b for _, b, s in segs if s == ONLINE])

    def add_full(self, on_a: list[float], on_b: list[float]) -> None:
        """Add a channel known throughout [start, end) whose online segments are ``zip(on_a, on_b)``
        (as :func:`full_timeline` gives them): the same counts as :meth:`add` of its timeline (its
        contiguous known segments count as the one interval they tile)."""
        self._kn_a.append(self.start)
        self._kn_b.append(self.end)
        self._on_a.extend(on_a)
        self._on_b.extend(on_b)

    def with_step(self, step: float) -> Sampler:
        """The same channels sampled at another step (shares the collected boundaries)."""
        other = Sampler(self.start, self.end, step)
        other._on_a, other._on_b, other._kn_a, other._kn_b = self._on_a, self._on_b, self._kn_a, self._kn_b
        return other

    def _index(self, ts: array) -> np.ndarray:
        # first sample index k with start + k*step >= t
        k = np.ceil((np.frombuffer(ts, dtype=np.float64) - self.start) / self.step - 1e-9)
        return np.clip(k, 0, self.n).astype(np.int64)

    def _count(self, a: array, b: array) -> np.ndarray:
        diff = np.bincount(self._index(a), minlength=self.n + 1) - np.bincount(self._index(b), minlength=self.n + 1)
        return np.cumsum(diff)[: self.n]

    def counts(self) -> tuple[np.ndarray, np.ndarray]:
        """(online, known) per sample instant."""
        return self._count(self._on_a, self._on_b), self._count(self._kn_a, self._kn_b)

    def times(self) -> np.ndarray:
        return self.start + self.step * np.arange(self.n, dtype=np.float64)

    def rate(self) -> float | None:
        """Pooled sampled rate: online samples / known samples (None when nothing was known)."""
        online, known = self.counts()
        total = int(known.sum())
        return int(online.sum()) / total if total else None
