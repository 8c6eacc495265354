"""Online rate from the database (SQLite and PostgreSQL): the hand-made day of conftest.seed_day."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

from gbcore.ids import ChannelRef
from ops_portal.availability.service import (
    ScopeFilter,
    _OrgScope,
    compute_period,
    online_rate_now,
    period_bounds,
    resolve_scope,
)

from .conftest import C1, C2A, C2B, C3, D1, D3, EXPECTED, EXPECTED_RATE, H, seed_day, z

TZ = ZoneInfo("Asia/Shanghai")


async def day_result(registry, flt=None, **kw):
    start, end, label = period_bounds("day", TZ, on=date(2026, 10, 21))
    return await compute_period(registry.sessionmaker, flt or ScopeFilter(), start, end, kind="day", label=label,
                                now=z(25, 0), **kw)


async def test_day_figures_match_the_hand_computed_ones(registry) -> None:
    await seed_day(registry.sessionmaker)
    res = await day_result(registry)
    got = {f.channel_id: f for f in res.channels}
    assert set(got) == set(EXPECTED)
    for chan, exp in EXPECTED.items():
        for key, value in exp.items():
            assert getattr(got[chan], key) == pytest.approx(value, abs=1e-3), (chan, key)
    assert res.time_weighted_rate == pytest.approx(EXPECTED_RATE)
    assert res.unknown_s == pytest.approx(3 * H)
    assert res.platform_down == [(z(21, 2).timestamp(), z(21, 3).timestamp())]
    assert res.clamped >= 1
    assert got[C2A].outage_list == [(z(21, 0).timestamp(), z(21, 2).timestamp()),
                                    (z(21, 3).timestamp(), z(21, 4).timestamp())]
    assert not res.breach and res.threshold == 0.85
    # worst channel first in the PDF timeline
    assert [f.channel_id for f, _ in res.worst][:1] == [C2A]
    # the sampled rate, every 5 min: 288 instants of which 12 unknown for the 3 first channels
    assert res.sampled_rate is not None and res.sampled_rate == pytest.approx(EXPECTED_RATE, abs=0.01)
    # the same data gives the same digest; a new row in the period changes it
    again = await day_result(registry)
    assert again.source_sha256 == res.source_sha256 and again.time_weighted_rate == res.time_weighted_rate


async def test_period_ending_in_the_future_is_cut_at_now(registry) -> None:
    await seed_day(registry.sessionmaker)
    start, end, label = period_bounds("day", TZ, on=date(2026, 10, 21))
    res = await compute_period(registry.sessionmaker, ScopeFilter(), start, end, now=z(21, 4))
    assert res.covered_end == z(21, 4)
    c3 = next(f for f in res.channels if f.channel_id == C3) if any(f.channel_id == C3 for f in res.channels) else None
    assert c3 is None  # first seen after "now"
    c1 = next(f for f in res.channels if f.channel_id == C1)
    assert c1.online_s + c1.offline_s + c1.unknown_s + c1.absent_s == pytest.approx(12 * H)


async def test_scope_org_node_and_contract(registry) -> None:
    orgs = await seed_day(registry.sessionmaker)
    async with registry.sessionmaker() as session:
        flt = await resolve_scope(session, org_node_id=orgs["a"])
    res = await day_result(registry, flt)
    assert {f.channel_id for f in res.channels} == {C2A, C2B}
    assert res.time_weighted_rate == pytest.approx(42.5 / 46)
    # a user limited to one channel
    res = await day_result(registry, ScopeFilter(parts=(_OrgScope(frozenset(), frozenset({ChannelRef(D1, C1)})),)))
    assert [f.channel_id for f in res.channels] == [C1]
    # issue 11: the same channel id on another device is another camera, out of that scope
    res = await day_result(registry, ScopeFilter(parts=(_OrgScope(frozenset(), frozenset({ChannelRef(D3, C1)})),)))
    assert res.channels == []

    from ops_portal.contracts import Contract

    async with registry.sessionmaker() as session:
        session.add(Contract(name="东区合同", org_node_ids=[orgs["a"]], channel_ids=[C3], quality_terms={},
                             online_rate_threshold=0.95, rate_rule="sampled", sample_minutes=15,
                             valid_from=z(1, 0)))
        await session.commit()
        contract_id = 1
        flt = await resolve_scope(session, contract_id=contract_id)
    assert flt.threshold == 0.95 and flt.rule == "sampled" and flt.sample_minutes == 15
    res = await day_result(registry, flt)
    assert {f.channel_id for f in res.channels} == {C2A, C2B, C3}
    assert res.rate == res.sampled_rate and res.breach  # 52.5 / 56 < 95 %


async def test_online_rate_now(registry) -> None:
    orgs = await seed_day(registry.sessionmaker)
    async with registry.sessionmaker() as session:
        from sqlalchemy import update

        from device_registry.models import Channel

        # state now: C2A offline (registry-maintained flags, written by the writer in real life)
        await session.execute(update(Channel).where(Channel.channel_id == C2A).values(online=False))
        await session.commit()
        now = await online_rate_now(session, ScopeFilter())
        assert (now.channels_online, now.channels_total, now.devices_total) == (3, 4, 3)
        assert now.rate == 0.75 and now.breach
        by = {g["org_node_id"]: g for g in now.by_org}
        assert by[orgs["a"]]["rate"] == 0.5 and by[orgs["b"]]["rate"] == 1.0
        flt = await resolve_scope(session, org_node_id=orgs["b"])
        now = await online_rate_now(session, flt)
        assert (now.channels_online, now.channels_total, now.devices_total) == (2, 2, 2) and not now.breach


def test_period_bounds_custom_naive_is_local() -> None:
    s, e, _ = period_bounds("custom", TZ, start=datetime(2026, 10, 21, 8), end=datetime(2026, 10, 21, 9))
    assert s == z(21, 0) and e == z(21, 1)
    with pytest.raises(ValueError):
        period_bounds("custom", TZ, start=datetime(2026, 10, 21, 9), end=datetime(2026, 10, 21, 8))
    s, e, label = period_bounds("year", TZ, year=2026)
    assert label == "2026" and s.astimezone(TZ).month == 1 and (e - s).days == 365
