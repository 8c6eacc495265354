"""SLA report arithmetic (pure): share repaired within the limit, mean and 95th-percentile repair time.

Definitions (also in the API schema):

* repair time = repair feedback time - report time;
* a ticket is *within the limit* when repaired with repair time <= its limit; it *missed* the limit when
  repaired later, or when it still waits for repair past its deadline; it is *pending* while it still
  waits and its deadline has not come.  Share within the limit = within / (within + missed); pending
  tickets are counted but not judged yet;
* p95 = nearest-rank 95th percentile of the repair times (the ceil(0.95 n)-th smallest).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from ops_portal.tickets import flow

__all__ = ["SlaItem", "SlaSummary", "percentile_nearest_rank", "summarise"]


@dataclass(frozen=True)
class SlaItem:
    ticket_id: int
    clock: flow.TicketClock
    channel_id: str | None = None
    device_id: str | None = None


@dataclass
class SlaSummary:
    tickets: int = 0
    repaired: int = 0
    within_limit: int = 0
    missed: int = 0
    pending: int = 0
    share_within_limit: float | None = None
    mean_repair_seconds: float | None = None
    p95_repair_seconds: float | None = None
    overdue: list[SlaItem] = field(default_factory=list)


def percentile_nearest_rank(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def summarise(items: Iterable[SlaItem], now: datetime) -> SlaSummary:
    out = SlaSummary()
    repair_times: list[float] = []
    for item in items:
        out.tickets += 1
        clock = item.clock
        if clock.repair_seconds is not None:
            out.repaired += 1
            repair_times.append(clock.repair_seconds)
            if clock.within_limit:
                out.within_limit += 1
            else:
                out.missed += 1
                out.overdue.append(item)
        elif clock.state in flow.OPEN_STATES and now > clock.deadline:
            out.missed += 1
            out.overdue.append(item)
        else:
            out.pending += 1
    judged = out.within_limit + out.missed
    out.share_within_limit = out.within_limit / judged if judged else None
    out.mean_repair_seconds = sum(repair_times) / len(repair_times) if repair_times else None
    out.p95_repair_seconds = percentile_nearest_rank(repair_times, 0.95)
    return out
