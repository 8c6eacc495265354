"""Device clock skew from DeviceStatus ``DeviceTime`` answers, sans-IO.

A device answers with its wall time, usually to the whole second (GB/T 28181 A.2.6.6 ``dateTime``).  What we
know from one answer to a query we sent at ``sent`` and whose answer arrived at ``received`` (both the
platform's clock, POSIX seconds):

* the device read its clock at some platform time ``t`` in ``[sent, received]``;
* the clock then showed a time in ``[T, T + resolution)`` where ``T`` is the reported time (a clock shows the
  second that has begun: 12:00:05 from 12:00:05.000 to 12:00:05.999).

So the skew (device clock minus platform clock) lies in ``[T - received, T + resolution - sent]``: the
estimate is the middle of that interval, ``T + resolution/2 - midpoint(sent, received)``, and its
uncertainty is half its width, ``resolution/2 + rtt/2`` (0.5 s + rtt/2 for whole seconds).

One answer cannot tell a 0.2 s error from a 0.6 s one; several answers taken at different moments of the
device's second can: while the skew is steady, it lies in every sample's interval, so the intersection of
the recent intervals narrows towards the round-trip time.  :func:`combine` does that over the samples of the
last ``window`` seconds (and falls back to the newest sample alone when they disagree: the clock was set or
drifted).  The decision is then honest about what is known: a device whose estimate is over the limit is
over it (a 3 s error always is: its interval never reaches 1 s), a device whose estimate is within is
within (a 0.2 s error always is: its estimate is at most 0.7 s + rtt/2 even from a single answer).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from gbcore.timeutil import from_device_time

__all__ = [
    "UNSOLICITED_WINDOW",
    "ClockSample",
    "Estimate",
    "combine",
    "estimate",
    "parse_device_time",
    "worst",
]

#: An answer to no query of ours: we only know it arrived at ``received``; the device is taken to have read its
#: clock at most this many seconds before (a DeviceStatus answer is built and sent as the clock is read; the
#: wider this is, the more such an answer's estimate leans towards "ahead").
UNSOLICITED_WINDOW = 0.2

_TIME = re.compile(
    r"^\s*(\d{4})-(\d{1,2})-(\d{1,2})[T ](\d{1,2}):(\d{2}):(\d{2})(?:[.,](\d{1,6}))?\s*(Z|[+-]\d{2}:?\d{2})?\s*$"
)


def parse_device_time(text: str | None) -> tuple[float, float] | None:
    """A device's ``DeviceTime`` as (POSIX seconds, resolution in seconds), or None when absent or unreadable.

    ``2026-12-07T20:38:39`` is device-zone wall time (Beijing unless configured), resolution 1 s;
    ``...39.123`` resolution 1 ms; a ``Z`` or ``+08:00`` suffix is honoured."""
    if not text:
        return None
    m = _TIME.match(text)
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    frac, zone = m.group(7), m.group(8)
    try:
        wall = datetime(year, month, day, hour, minute, second)
    except ValueError:
        return None
    if zone is not None:
        if zone == "Z":
            wall = wall.replace(tzinfo=UTC)
        else:
            sign = 1 if zone[0] == "+" else -1
            digits = zone[1:].replace(":", "")
            from datetime import timedelta, timezone

            offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
            if offset > timedelta(hours=14):
                return None
            wall = wall.replace(tzinfo=timezone(sign * offset))
    try:
        posix = from_device_time(wall).timestamp()
    except (OverflowError, OSError, ValueError):  # year 1 in Beijing is before year 1 in UTC
        return None
    if frac:
        posix += int(frac) / 10 ** len(frac)
        return posix, 10.0 ** -len(frac)
    return posix, 1.0


@dataclass(frozen=True, slots=True)
class ClockSample:
    """One device time reading.  ``sent`` None: an answer to nobody's query here (see UNSOLICITED_WINDOW)."""

    received: float
    device_time: float
    resolution: float = 1.0
    sent: float | None = None

    @property
    def bounds(self) -> tuple[float, float]:
        """The interval the skew (device minus platform, seconds) lies in."""
        sent = self.received - UNSOLICITED_WINDOW if self.sent is None else min(self.sent, self.received)
        return self.device_time - self.received, self.device_time + self.resolution - sent

    @property
    def rtt(self) -> float | None:
        return None if self.sent is None else max(0.0, self.received - self.sent)


@dataclass(frozen=True, slots=True)
class Estimate:
    """Skew (device clock minus platform clock) in seconds, +- ``uncertainty``; ``samples`` how many readings
    it rests on."""

    skew: float
    uncertainty: float
    samples: int = 1

    @property
    def low(self) -> float:
        return self.skew - self.uncertainty

    @property
    def high(self) -> float:
        return self.skew + self.uncertainty

    def within(self, limit: float) -> bool:
        """The estimate's magnitude is at most ``limit``."""
        return abs(self.skew) <= limit

    def certain(self, limit: float) -> bool:
        """The whole interval is on one side of the limit (the decision holds whatever the true skew in it)."""
        if self.within(limit):
            return -limit <= self.low and self.high <= limit
        return self.low > limit or self.high < -limit


def estimate(sample: ClockSample) -> Estimate:
    low, high = sample.bounds
    return Estimate((low + high) / 2, (high - low) / 2, 1)


def combine(samples: Sequence[ClockSample], *, window: float = 900.0) -> Estimate | None:
    """The estimate from the newest sample and the others received within ``window`` seconds before it whose
    intervals all overlap (their intersection); None without samples."""
    if not samples:
        return None
    ordered = sorted(samples, key=lambda s: s.received)
    newest = ordered[-1]
    low, high = newest.bounds
    used = 1
    for s in reversed(ordered[:-1]):
        if newest.received - s.received > window:
            break
        lo, hi = s.bounds
        if lo > high or hi < low:  # disagrees with what is newer: the clock moved; stop here
            break
        low, high = max(low, lo), min(high, hi)
        used += 1
    return Estimate((low + high) / 2, (high - low) / 2, used)


def worst(skews: Iterable[float | None]) -> float | None:
    """The skew of largest magnitude (sign kept), or None."""
    best: float | None = None
    for value in skews:
        if value is not None and (best is None or abs(value) > abs(best)):
            best = value
    return best
