"""Monthly online-rate report over a large presence history, on SQLite and PostgreSQL.

Generates N channels (one IPC each) with a year of transitions (``--per-month`` per channel per month,
alternating offline/online at random times), bulk-loaded (executemany on SQLite, COPY on PostgreSQL).
Then, for one month in the middle, times (median of ``--repeat`` runs):

* ``report``: :func:`ops_portal.availability.service.compute_period` (every channel's figures, the
  sampled rate, the chart series, the source digest) - what a monthly report costs before rendering;
* ``aggregate``: one SQL ``GROUP BY`` over the same month's rows (count of transitions per channel), the
  reference: the least any report must pay to read those rows;
* ``raw read``: the report's own read of the month's rows (:func:`device_registry.presence.stream_presence`,
  every row fetched, nothing computed): the ratio report / raw read is what the computation adds;

and the report's peak Python memory (tracemalloc, in a separate run since tracing slows it down) and the
process's peak RSS.  Goal (10,000 channels): report < 3 s on SQLite, < 2 s on PostgreSQL.

    .venv/bin/python bench/availability.py --channels 10000 --months 12 --per-month 20
    .venv/bin/python bench/availability.py --pg postgresql+asyncpg://postgres@127.0.0.1/bench
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sqlite3
import statistics
import sys
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import text  # noqa: E402

from device_registry.presence import stream_presence  # noqa: E402
from gbcore.db import make_engine, make_sessionmaker  # noqa: E402
from gbops.migrate import migrate  # noqa: E402
from ops_portal.availability.service import ScopeFilter, compute_period  # noqa: E402

YEAR_START = datetime(2026, 1, 1, tzinfo=UTC)


def generate(channels: int, months: int, per_month: int, seed: int = 7):
    """Yields (device_id, channel_id, online, at) per channel, in time order, plus the device rows."""
    rng = np.random.default_rng(seed)
    span = months * 30.4 * 86400
    n = months * per_month
    for i in range(channels):
        dev = f"3402000000132{i:07d}"
        ch = f"3402000000131{i:07d}"
        ts = np.sort(rng.uniform(60, span, n)).round(3)
        yield dev, ch, ts


def _fmt(dt: datetime) -> str:
    return dt.astimezone(UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


async def load(url: str, channels: int, months: int, per_month: int) -> int:
    engine = make_engine(url)
    await migrate(engine)
    await engine.dispose()
    t0 = YEAR_START
    rows = 0
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1]
        con = sqlite3.connect(path)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=OFF")
        cur = con.cursor()
        cur.execute("INSERT INTO platform_runs (started_at, stopped_at, clean) VALUES (?, NULL, 0)",
                    (_fmt(t0 - timedelta(days=1)),))
        devs, chans, evs = [], [], []
        for dev, ch, ts in generate(channels, months, per_month):
            devs.append((dev, 60, 1, _fmt(t0), _fmt(t0)))
            chans.append((dev, ch, 1, 0, _fmt(t0), _fmt(t0)))
            evs.append(("device", dev, None, 1, _fmt(t0), "registered"))
            evs.append(("channel", dev, ch, 1, _fmt(t0), "device_online"))
            online = True
            for t in ts.tolist():
                online = not online
                evs.append(("channel", dev, ch, int(online), _fmt(t0 + timedelta(seconds=t)), "catalog_status"))
            if len(evs) > 200_000:
                cur.executemany("INSERT INTO presence_events (subject, device_id, channel_id, online, at, reason) "
                                "VALUES (?, ?, ?, ?, ?, ?)", evs)
                rows += len(evs)
                evs = []
        cur.executemany("INSERT INTO presence_events (subject, device_id, channel_id, online, at, reason) "
                        "VALUES (?, ?, ?, ?, ?, ?)", evs)
        rows += len(evs)
        cur.executemany("INSERT INTO devices (device_id, keepalive_interval, online, created_at, updated_at) "
                        "VALUES (?, ?, ?, ?, ?)", devs)
        cur.executemany("INSERT INTO channels (device_id, channel_id, online, removed, first_seen, updated_at) "
                        "VALUES (?, ?, ?, ?, ?, ?)", chans)
        con.commit()
        con.execute("ANALYZE")
        con.close()
        return rows

    import asyncpg

    dsn = url.replace("postgresql+asyncpg", "postgresql")
    con = await asyncpg.connect(dsn)
    try:
        await con.execute("INSERT INTO platform_runs (started_at, stopped_at, clean) VALUES ($1, NULL, false)",
                          t0 - timedelta(days=1))
        devs, chans, evs = [], [], []
        for dev, ch, ts in generate(channels, months, per_month):
            devs.append((dev, 60, True, t0, t0))
            chans.append((dev, ch, True, False, t0, t0))
            evs.append(("device", dev, None, True, t0, "registered"))
            evs.append(("channel", dev, ch, True, t0, "device_online"))
            online = True
            for t in ts.tolist():
                online = not online
                evs.append(("channel", dev, ch, online, t0 + timedelta(seconds=t), "catalog_status"))
            if len(evs) > 200_000:
                await con.copy_records_to_table("presence_events", records=evs,
                                                columns=["subject", "device_id", "channel_id", "online", "at", "reason"])
                rows += len(evs)
                evs = []
        await con.copy_records_to_table("presence_events", records=evs,
                                        columns=["subject", "device_id", "channel_id", "online", "at", "reason"])
        rows += len(evs)
        await con.copy_records_to_table("devices", records=devs,
                                        columns=["device_id", "keepalive_interval", "online", "created_at",
                                                 "updated_at"])
        await con.copy_records_to_table("channels", records=chans,
                                        columns=["device_id", "channel_id", "online", "removed", "first_seen",
                                                 "updated_at"])
        await con.execute("ANALYZE")
    finally:
        await con.close()
    return rows


async def measure(url: str, month_index: int, repeat: int) -> dict[str, float]:
    engine = make_engine(url)
    sm = make_sessionmaker(engine)
    start = YEAR_START.replace(month=month_index)
    end = YEAR_START.replace(month=month_index + 1)
    now = datetime(2027, 1, 1, tzinfo=UTC)
    out: dict[str, float] = {}
    try:
        # warm the cache once
        res = await compute_period(sm, ScopeFilter(), start, end, kind="month", now=now)
        out["channels"] = len(res.channels)
        out["rows"] = res.source_rows
        out["rate"] = res.time_weighted_rate or 0.0
        rep, agg, raw = [], [], []
        for _ in range(repeat):
            t = time.perf_counter()
            async with sm() as session:
                result = await stream_presence(session, start, end)
                n_raw = 0
                async for part in result.partitions(20000):
                    n_raw += len(part)
            raw.append(time.perf_counter() - t)
            t = time.perf_counter()
            await compute_period(sm, ScopeFilter(), start, end, kind="month", now=now)
            rep.append(time.perf_counter() - t)
            t = time.perf_counter()
            async with sm() as session:
                q = text("SELECT device_id, channel_id, count(*), sum(CASE WHEN online THEN 1 ELSE 0 END) "
                         "FROM presence_events WHERE at >= :s AND at < :e GROUP BY device_id, channel_id")
                from sqlalchemy import bindparam

                from gbcore.db import UtcDateTime

                q = q.bindparams(bindparam("s", type_=UtcDateTime()), bindparam("e", type_=UtcDateTime()))
                n = len((await session.execute(q, {"s": start, "e": end})).all())
            agg.append(time.perf_counter() - t)
        out["report_s"] = statistics.median(rep)
        out["aggregate_s"] = statistics.median(agg)
        out["raw_s"] = statistics.median(raw)
        out["raw_rows"] = n_raw
        out["aggregate_groups"] = n
        tracemalloc.start()
        await compute_period(sm, ScopeFilter(), start, end, kind="month", now=now)
        out["peak_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    finally:
        await engine.dispose()
    return out


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--channels", type=int, default=10_000)
    ap.add_argument("--months", type=int, default=12)
    ap.add_argument("--per-month", type=int, default=20)
    ap.add_argument("--month", type=int, default=6, help="month of 2026 to report (1..11)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--pg", default="postgresql+asyncpg://postgres@127.0.0.1/test",
                    help="PostgreSQL URL to connect to; a scratch database gbops_bench_<pid> is created next to it "
                         "and dropped; '' to skip")
    args = ap.parse_args()
    targets = []
    with tempfile.TemporaryDirectory() as tmp:
        targets.append(("sqlite", f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"))
        if args.pg:
            targets.append(("postgresql", args.pg))
        for name, url in targets:
            if name == "postgresql":
                import asyncpg

                try:
                    admin = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
                except Exception as exc:
                    print(f"postgresql: skipped ({exc})")
                    continue
                db = f"gbops_bench_{os.getpid()}"
                await admin.execute(f'CREATE DATABASE "{db}"')
                url = url.rsplit("/", 1)[0] + "/" + db
            t = time.perf_counter()
            rows = await load(url, args.channels, args.months, args.per_month)
            load_s = time.perf_counter() - t
            m = await measure(url, args.month, args.repeat)
            print(f"{name}: {args.channels} channels, {rows:,} presence rows (loaded in {load_s:.1f} s); month "
                  f"2026-{args.month:02d}: {int(m['rows']):,} rows")
            goal = 3.0 if name == "sqlite" else 2.0
            print(f"  report (median of {args.repeat}): {m['report_s']:.2f} s   goal < {goal:.0f} s: "
                  f"{'ok' if m['report_s'] < goal else 'MISSED'}")
            print(f"  raw read of the month's rows ({int(m['raw_rows']):,}, the report's query): {m['raw_s']:.2f} s   "
                  f"ratio report / raw read {m['report_s'] / m['raw_s']:.1f}x   single SQL aggregate: "
                  f"{m['aggregate_s']:.2f} s   ratio report / aggregate {m['report_s'] / m['aggregate_s']:.1f}x")
            from results import record

            record("availability", f"month_10k_{name}_s" if args.channels == 10000 else f"month_{args.channels}_{name}_s",
                   m["report_s"], unit="s (monthly report, median)", reference=m["raw_s"],
                   note="reference: the bare read of the month's rows with the report's own query")
            print(f"  peak Python memory (tracemalloc) {m['peak_mib']:.1f} MiB; process max RSS so far "
                  f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB; "
                  f"time-weighted rate {m['rate'] * 100:.2f}%")
            if name == "postgresql":
                await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
                await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
