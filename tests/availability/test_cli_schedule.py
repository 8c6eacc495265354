"""``gbops report online-rate`` for auditors, and the daily schedule."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gbcore.db import make_engine, make_sessionmaker
from gbcore.settings import Settings
from gbops.cli import app
from gbops.migrate import migrate
from ops_portal.availability.reports import read_csv_channels
from ops_portal.availability.scheduler import ReportJobs, ReportScheduler

from .conftest import C2A, C2B, EXPECTED, seed_day, z


async def _seeded(url: str) -> dict[str, int]:
    engine = make_engine(url)
    try:
        await migrate(engine)
        return await seed_day(make_sessionmaker(engine))
    finally:
        await engine.dispose()


def test_cli_month_and_day_reports(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    orgs = asyncio.run(_seeded(f"sqlite+aiosqlite:///{data / 'gbops.db'}"))
    runner = CliRunner()
    out = tmp_path / "day.csv"
    r = runner.invoke(app, ["report", "online-rate", "--period", "day", "--date", "2026-10-21", "--format", "csv",
                            "--out", str(out), "--data-dir", str(data)], env={"GBOPS_CONFIG": str(tmp_path / "x.toml")})
    assert r.exit_code == 0, r.output
    assert "94.94%" in r.output and "sha256" in r.output
    rows = {row["channel_id"]: row for row in read_csv_channels(out.read_text("utf-8-sig"))}
    assert {k: float(rows[k]["offline_s"]) for k in rows} == {k: v["offline_s"] for k, v in EXPECTED.items()}
    # no signing key in this data dir: said so (nothing recorded)
    assert "not recorded" in r.output

    out = tmp_path / "month.xlsx"
    r = runner.invoke(app, ["report", "online-rate", "--period", "month", "--month", "2026-10", "--scope",
                            str(orgs["a"]), "--format", "xlsx", "--out", str(out), "--data-dir", str(data)],
                      env={"GBOPS_CONFIG": str(tmp_path / "x.toml")})
    assert r.exit_code == 0, r.output
    from openpyxl import load_workbook

    chans = list(load_workbook(out, read_only=True)["点位 Channels"].iter_rows(values_only=True))[1:]
    assert sorted(c[1] for c in chans) == [C2A, C2B]

    r = runner.invoke(app, ["report", "online-rate", "--period", "month", "--out", str(out), "--data-dir", str(data)],
                      env={"GBOPS_CONFIG": str(tmp_path / "x.toml")})
    assert r.exit_code == 2 and "--month" in r.output
    r = runner.invoke(app, ["report", "online-rate", "--period", "day", "--date", "2026-10-21", "--scope", "999",
                            "--out", str(out), "--data-dir", str(data)], env={"GBOPS_CONFIG": str(tmp_path / "x.toml")})
    assert r.exit_code == 2 and "org_node 999" in r.output


async def test_schedule_makes_yesterdays_report_once(registry, tmp_path: Path) -> None:
    await seed_day(registry.sessionmaker)
    settings = Settings(data_dir=tmp_path / "d", report_formats="csv,xlsx")
    jobs = ReportJobs(registry.sessionmaker, settings)
    sched = ReportScheduler(jobs, settings)
    # 2026-10-22 00:04 local: not yet time for the 21st -> the 20th is due (a partial day: platform started 10-18)
    assert sched.next_run(z(21, 16, 4)) == z(21, 16, 5)
    made = await sched.run_due(z(21, 16, 6))  # 00:06 local on the 22nd: the 21st
    assert len(made) == 2
    assert await sched.run_due(z(21, 16, 30)) == []  # not twice
    files = sorted(p.name for p in (tmp_path / "d" / "reports").iterdir())
    assert len(files) == 2 and all("2026-10-21" in f for f in files)
    from sqlalchemy import select

    from ops_portal.availability.models import Report

    async with registry.sessionmaker() as session:
        rows = list(await session.scalars(select(Report)))
    assert {r.trigger for r in rows} == {"schedule"} and {r.state for r in rows} == {"done"}
    assert json.loads(rows[0].summary)["time_weighted_rate"] == pytest.approx(75 / 79)
    # a day before the platform existed is not reported
    assert await sched.run_due(z(10, 0)) == []
