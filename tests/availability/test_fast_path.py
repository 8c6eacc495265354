"""The report's fast path gives exactly the figures of the straightforward computation.

* :func:`compute.full_timeline` (one pass, for a channel present and watched throughout) against
  :func:`compute.channel_timeline`, and :meth:`Sampler.add_full` against :meth:`Sampler.add`, on
  hypothesis-generated transitions (clock going backwards and times past the end included);
* :func:`service.compute_period` on seeded random histories (NVRs with several channels, device and
  channel transitions, clamped times, channels added and removed within the period, platform downtime,
  ties of time before the period) against a reference kept here: a plain read of every row, each
  channel's transitions picked one by one, :func:`compute.channel_timeline`, the sampled rate counted
  instant by instant, the worst channels by sorting.  Every field of every :class:`ChannelFigures`,
  the totals, rates, chart series, worst list and source digest must be equal (floats exactly).
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import insert, text

from device_registry.models import Channel, Device, PlatformRun, PresenceEvent
from ops_portal.availability.compute import (
    OFFLINE,
    ONLINE,
    Sampler,
    channel_timeline,
    full_timeline,
    merge_intervals,
)
from ops_portal.availability.service import ScopeFilter, _chart_step, compute_period

S0, E0 = 1_000_000.0, 1_086_400.0

transitions = st.lists(
    st.tuples(
        st.one_of(st.floats(S0 - 100, E0 + 100), st.integers(int(S0), int(E0)).map(float)),
        st.booleans(),
        st.booleans(),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(trs=transitions, dev=st.sampled_from([None, False, True]), ch=st.sampled_from([None, False, True]),
       step=st.sampled_from([60.0, 300.0, 7777.0]))
def test_full_timeline_is_channel_timeline(trs, dev, ch, step) -> None:
    trs = sorted(trs, key=lambda x: x[0]) if len(trs) % 2 else trs  # in order, or with clock jumps
    ref = channel_timeline(S0, E0, trs, device_before=dev, channel_before=ch)
    tl, on_a, on_b = full_timeline(S0, E0, trs, dev, ch)
    assert tl == ref
    assert (on_a, on_b) == ([a for a, _, s in ref.segments if s == ONLINE], [b for _, b, s in ref.segments if s == ONLINE])
    s1, s2 = Sampler(S0, E0, step), Sampler(S0, E0, step)
    s1.add(ref)
    s2.add_full(on_a, on_b)
    assert [c.tolist() for c in s1.counts()] == [c.tolist() for c in s2.counts()]


# ------------------------------------------------------------------------------------------ database
T0 = datetime(2026, 3, 1, tzinfo=UTC)
START = datetime(2026, 3, 10, tzinfo=UTC)
END = datetime(2026, 3, 17, tzinfo=UTC)


def _ms(rng: random.Random, lo: float, hi: float) -> datetime:
    """A time on a whole millisecond between lo and hi seconds after T0."""
    return T0 + timedelta(milliseconds=rng.randrange(int(lo * 1000), int(hi * 1000)))


async def _seed(sessionmaker, seed: int, downtime: bool) -> None:
    rng = random.Random(seed)
    day = 86400.0
    devices = [f"3402000000132{seed:02d}{i:05d}" for i in range(12)]
    async with sessionmaker() as s:
        runs = [{"started_at": T0, "stopped_at": None, "clean": False}]
        if downtime:
            runs = [{"started_at": T0, "stopped_at": _ms(rng, 10 * day, 12 * day), "clean": False},
                    {"started_at": _ms(rng, 12 * day, 13 * day), "stopped_at": None, "clean": False}]
        await s.execute(insert(PlatformRun), runs)
        events = []
        for d in devices:
            await s.execute(insert(Device).values(device_id=d, online=True, keepalive_interval=60, created_at=T0,
                                                  updated_at=T0))
            nch = rng.choice([1, 1, 2, 4])
            for k in range(nch):
                c = f"{d[:10]}131{k:07d}"
                first = T0 if rng.random() < 0.7 else _ms(rng, 5 * day, 14 * day)  # some appear within the period
                removed = rng.random() < 0.2
                removed_at = _ms(rng, 9 * day, 20 * day) if removed else None
                await s.execute(insert(Channel).values(device_id=d, channel_id=c, name=f"点 {k}", online=True,
                                                       status="ON", first_seen=first, updated_at=first,
                                                       removed=removed, removed_at=removed_at))
                if rng.random() < 0.8:
                    tie = _ms(rng, 0, 9 * day)  # two rows at the same time before the period: the later id wins
                    events += [("channel", d, c, rng.random() < 0.5, tie), ("channel", d, c, rng.random() < 0.5, tie)]
                when = 0.0
                for _ in range(rng.randrange(0, 30)):
                    when += rng.expovariate(1 / (day / 2))
                    at = T0 + timedelta(milliseconds=int(when * 1000))
                    if rng.random() < 0.1:  # the clock went back
                        at -= timedelta(seconds=rng.randrange(1, 3600))
                    events.append(("channel", d, c, rng.random() < 0.6, at))
            if rng.random() < 0.8:
                events.append(("device", d, None, True, _ms(rng, 0, 8 * day)))
            for _ in range(rng.randrange(0, 4)):
                events.append(("device", d, None, rng.random() < 0.5, _ms(rng, 0, 20 * day)))
            events.append(("device", d, None, True, _ms(rng, 9 * day, 16 * day)))
        rng.shuffle(events)  # recorded (id) order is not time order
        await s.execute(insert(PresenceEvent), [
            {"subject": subj, "device_id": d, "channel_id": c, "online": o, "at": at, "reason": "test"}
            for subj, d, c, o, at in events])
        await s.commit()


async def _reference(sessionmaker, start: datetime, end: datetime, now: datetime) -> dict:
    """The report's figures, computed the plain way."""
    covered_end = min(end, max(now, start))
    s, e = start.timestamp(), covered_end.timestamp()
    async with sessionmaker() as session:
        rows = (await session.execute(text(
            "SELECT id, subject, device_id, channel_id, online, at FROM presence_events ORDER BY id"))).all()
        chans = (await session.execute(text(
            "SELECT device_id, channel_id, first_seen, removed, removed_at FROM channels "
            "ORDER BY device_id, channel_id"))).all()
        runs = (await session.execute(text("SELECT started_at, stopped_at FROM platform_runs ORDER BY id"))).all()

    def ts(v) -> float:
        if isinstance(v, str):
            v = datetime.fromisoformat(v)
        return (v if v.tzinfo else v.replace(tzinfo=UTC)).timestamp()

    events = [(rid, subj, d, c, bool(o), round(ts(at) * 1000)) for rid, subj, d, c, o, at in rows]
    up = merge_intervals(((ts(a), ts(b) if b is not None else now.timestamp()) for a, b in runs), s, e)
    always_up = up == [(s, e)]
    chan_list = []
    for d, c, first, removed, removed_at in chans:
        gone = (ts(removed_at) if removed_at is not None else 0.0) if removed else None
        if ts(first) < e and (gone is None or gone > s):
            chan_list.append((d, c, ts(first), gone))

    def last_before(pred) -> bool | None:
        best = None
        for ev in events:
            if pred(ev) and ev[5] < s * 1000 and (best is None or (ev[5], ev[0]) > (best[5], best[0])):
                best = ev
        return None if best is None else best[4]

    in_period = [ev for ev in events if s * 1000 <= ev[5] < e * 1000]
    with_rows = sorted({ev[2] for ev in in_period})
    order = [ch for d in with_rows for ch in chan_list if ch[0] == d]
    order += [ch for ch in chan_list if ch[0] not in set(with_rows)]
    figs = []
    for d, c, first, gone in order:
        trs = [(ev[5] / 1000.0, ev[4], ev[1] == "device") for ev in in_period
               if ev[2] == d and (ev[1] == "device" or ev[3] is None or ev[3] == c)]
        tl = channel_timeline(
            s, e, trs,
            device_before=last_before(lambda ev, d=d: ev[2] == d and ev[3] is None and ev[1] == "device"),
            channel_before=last_before(lambda ev, d=d, c=c: ev[2] == d and ev[3] == c and ev[1] == "channel"),
            exists_from=first, exists_until=gone, up=None if always_up else up)
        figs.append((d, c, tl))

    def state_at(tl, t):
        for a, b, st_ in tl.segments:
            if a <= t < b:
                return st_
        return None

    def sampled(step):
        n = max(0, math.ceil((e - s) / step))
        on, kn = [0] * n, [0] * n
        for k in range(n):
            t = s + k * step
            for _, _, tl in figs:
                st_ = state_at(tl, t)
                if st_ in (ONLINE, OFFLINE):
                    kn[k] += 1
                    on[k] += st_ == ONLINE
        return on, kn

    on, kn = sampled(300.0)
    con, ckn = sampled(_chart_step(e - s))
    tot_on = tot_off = tot_unk = avail = 0.0
    n_avail = 0
    for _, _, tl in figs:
        tot_on += tl.online_s
        tot_off += tl.offline_s
        tot_unk += tl.unknown_s
        if tl.availability is not None:
            avail += tl.availability
            n_avail += 1
    ranked = sorted(((tl.offline_s, tl.outages, -(i + 1), (d, c)) for i, (d, c, tl) in enumerate(figs)
                     if tl.offline_s > 0), reverse=True)[:10]
    return {
        "channels": sorted(
            (d, c, tl.online_s, tl.offline_s, tl.unknown_s, tl.absent_s, tl.outages, tl.longest_outage_s,
             tl.availability, tl.outage_list()) for d, c, tl in figs),
        "totals": (tot_on, tot_off, tot_unk),
        "time_weighted_rate": tot_on / (tot_on + tot_off) if tot_on + tot_off > 0 else None,
        "mean_availability": avail / n_avail if n_avail else None,
        "sampled_rate": sum(on) / sum(kn) if sum(kn) else None,
        "series_rates": [o / k if k else None for o, k in zip(con, ckn, strict=True)],
        "worst": [(key, [seg for seg in dict(((d, c), tl) for d, c, tl in figs)[key].segments])
                  for *_, key in ranked],
        "clamped": sum(tl.clamped for _, _, tl in figs),
        "rows": len(in_period),
    }


@pytest.mark.parametrize("seed,downtime", [(1, False), (2, True), (3, False), (4, True)])
async def test_compute_period_equals_reference(registry, seed, downtime) -> None:
    await _seed(registry.sessionmaker, seed, downtime)
    for end, now in ((END, datetime(2027, 1, 1, tzinfo=UTC)), (END, START + timedelta(days=3, seconds=0.5))):
        ref = await _reference(registry.sessionmaker, START, end, now)
        res = await compute_period(registry.sessionmaker, ScopeFilter(), START, end, kind="week", now=now)
        got = sorted((f.device_id, f.channel_id, f.online_s, f.offline_s, f.unknown_s, f.absent_s, f.outages,
                      f.longest_outage_s, f.availability, f.outage_list) for f in res.channels)
        assert got == ref["channels"]
        assert len(got) > 12 and all(any(f[i] > 0 for f in got) for i in (2, 3, 5))  # online, offline, absent
        assert (res.online_s, res.offline_s, res.unknown_s) == ref["totals"]
        assert res.time_weighted_rate == ref["time_weighted_rate"]
        assert res.mean_availability == ref["mean_availability"]
        assert res.sampled_rate == ref["sampled_rate"]
        assert res.series_rates == ref["series_rates"]
        assert [((f.device_id, f.channel_id), segs) for f, segs in res.worst] == ref["worst"]
        assert res.clamped == ref["clamped"]
        assert res.source_rows == ref["rows"]
        # the digest is a pure function of the data: computed twice, the same
        again = await compute_period(registry.sessionmaker, ScopeFilter(), START, end, kind="week", now=now)
        assert again.source_sha256 == res.source_sha256
