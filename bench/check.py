"""Issue 19's goals against the latest figures in ``bench/results.json`` (written by ``make bench``).

    python bench/check.py          # one line per goal: the figure, the goal, holds / misses / not measured

Exit status 0 whatever the figures (it reports; the benchmarks are not tests); 2 when there is no results file.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from results import PATH, load  # noqa: E402


@dataclass(frozen=True)
class Goal:
    number: int
    text: str
    bench: str
    name: str
    op: str  # ">=" | "<="
    target: float
    unit: str
    field: str = "value"  # or "ratio"


GOALS = (
    Goal(1, "new-device registrations per CPU-second", "sip_register", "register_per_cpu_s", ">=", 4000, "/CPU-s"),
    Goal(1, "refresh registrations per CPU-second", "sip_register", "refresh_per_cpu_s", ">=", 8000, "/CPU-s"),
    Goal(1, "keepalives per CPU-second", "sip_register", "keepalive_per_cpu_s", ">=", 15000, "/CPU-s"),
    Goal(3, "relay CPU vs a bare forwarder (5 FLV viewers)", "relay", "ms_cpu_per_stream_second", "<=", 2.0, "x",
         "ratio"),
    Goal(4, "glass-to-glass with the watermark at 720p", "latency", "watermark_on_ms_720p", "<=", 150, "ms"),
    Goal(5, "audit verification, one core", "audit", "verify_entries_per_s", ">=", 200_000, "entries/s"),
    Goal(5, "PostgreSQL batched audit appends", "audit", "pg_appends_per_s", ">=", 20_000, "appends/s"),
    Goal(6, "portal p50 at 100 clients vs in-memory", "portal", "p50_ratio_100", "<=", 2.0, "x", "ratio"),
    Goal(7, "monthly report, 10,000 channels, SQLite", "availability", "month_10k_sqlite_s", "<=", 3.0, "s"),
    Goal(7, "monthly report, 10,000 channels, PostgreSQL", "availability", "month_10k_postgresql_s", "<=", 2.0, "s"),
)


def main() -> int:
    data = load()
    if not data:
        print(f"no figures yet: run `make bench` (writes {PATH})")
        return 2
    width = max(len(g.text) for g in GOALS)
    for g in GOALS:
        entry = data.get(g.bench, {}).get(g.name)
        if entry is None or entry.get(g.field) is None:
            print(f"goal {g.number}  {g.text:<{width}}  not measured (bench/{g.bench}.py)")
            continue
        value = float(entry[g.field])
        holds = value >= g.target if g.op == ">=" else value <= g.target
        print(f"goal {g.number}  {g.text:<{width}}  {value:,.2f} {g.unit}  goal {g.op} {g.target:,g} {g.unit}  "
              f"{'holds' if holds else 'MISSES'}  ({entry.get('at', '?')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
