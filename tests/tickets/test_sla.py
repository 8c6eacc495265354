"""SLA report arithmetic: share within the limit, mean and p95 repair time, overdue list."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ops_portal.tickets.flow import TicketClock, apply
from ops_portal.tickets.sla import SlaItem, percentile_nearest_rank, summarise

T0 = datetime(2025, 3, 1, tzinfo=UTC)


def repaired(i: int, hours: float, limit: float = 48) -> SlaItem:
    t = apply(TicketClock.report(T0, limit), "acknowledge", T0)
    return SlaItem(i, apply(t, "feedback", T0 + timedelta(hours=hours), "fixed"))


def test_percentile_nearest_rank() -> None:
    assert percentile_nearest_rank([], 0.95) is None
    assert percentile_nearest_rank([7.0], 0.95) == 7.0
    values = [float(v) for v in range(1, 21)]  # 1..20: ceil(0.95*20) = 19th
    assert percentile_nearest_rank(values, 0.95) == 19.0
    assert percentile_nearest_rank(list(reversed(values)), 0.95) == 19.0
    assert percentile_nearest_rank([float(v) for v in range(1, 101)], 0.95) == 95.0
    assert percentile_nearest_rank([1.0, 2.0, 3.0], 0.95) == 3.0


def test_summary_arithmetic() -> None:
    now = T0 + timedelta(hours=100)
    items = [repaired(i, h) for i, h in enumerate([1, 2, 3, 10, 20, 47, 48, 50, 60, 2], start=1)]
    # open past the deadline: missed; open, not yet due: pending
    items.append(SlaItem(11, TicketClock.report(T0, 48)))
    items.append(SlaItem(12, TicketClock.report(T0 + timedelta(hours=90), 48)))
    s = summarise(items, now)
    assert s.tickets == 12 and s.repaired == 10
    assert s.within_limit == 8  # 48 h exactly is within the limit
    assert s.missed == 3 and s.pending == 1
    assert s.share_within_limit == pytest.approx(8 / 11)
    hours = [1, 2, 3, 10, 20, 47, 48, 50, 60, 2]
    assert s.mean_repair_seconds == pytest.approx(sum(hours) / 10 * 3600)
    assert s.p95_repair_seconds == 60 * 3600  # ceil(9.5) = 10th of 10
    assert sorted(i.ticket_id for i in s.overdue) == [8, 9, 11]


def test_empty_period() -> None:
    s = summarise([], T0)
    assert (s.tickets, s.share_within_limit, s.mean_repair_seconds, s.p95_repair_seconds) == (0, None, None, None)
