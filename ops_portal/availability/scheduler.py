"""Report jobs: generate a report file (on demand, on the daily schedule, or from the CLI).

One job: a ``reports`` row (queued -> running -> done | failed) with its progress; the figures
(:func:`~ops_portal.availability.service.compute_period`); the audit checkpoint current at that
moment (a fresh one is signed when the platform's audit log is at hand); the file under
``<data_dir>/reports/``; its SHA-256; and a ``report.export`` entry in the audit log with the file's
SHA-256, the source digest and the checkpoint, so that an auditor can match the file, the log and a
re-computation.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from device_registry.presence import first_platform_start
from gbcore.db import utcnow
from gbcore.log import get_logger
from gbcore.periodic import PeriodicTask

from .models import REPORT_FORMATS, Report
from .reports import Attestation, render
from .service import PeriodResult, ScopeFilter, compute_period, period_bounds

__all__ = ["ReportJobs", "ReportRequest", "ReportScheduler", "reports_dir"]

log = get_logger("gbops.reports")

_render_lock = threading.Lock()  # matplotlib's pyplot state is process-wide


def reports_dir(settings: Any) -> Path:
    return Path(settings.data_dir) / "reports"


@dataclass(frozen=True)
class ReportRequest:
    kind: str
    start: datetime
    end: datetime
    label: str
    format: str
    flt: ScopeFilter
    trigger: str = "api"
    user: Any = None  # ops_portal.models.User or None (system)
    client_ip: str | None = None
    out: Path | None = None  # write here instead of <data_dir>/reports/ (the CLI)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class ReportJobs:
    """Runs report jobs in the background of the platform (or inline, for the CLI)."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], settings: Any, audit: Any = None) -> None:
        self.sessionmaker = sessionmaker
        self.settings = settings
        self.audit = audit
        self.progress: dict[str, float] = {}
        self._tasks: dict[str, asyncio.Task[Any]] = {}

    # ------------------------------------------------------------------ public
    async def submit(self, req: ReportRequest) -> Report:
        """Create the job row and start it; returns the queued row."""
        row = await self._create(req)
        task = asyncio.create_task(self._run_logged(row.id, req), name=f"report-{row.id}")
        self._tasks[row.id] = task
        task.add_done_callback(lambda _t, rid=row.id: self._tasks.pop(rid, None))
        return row

    async def run(self, req: ReportRequest) -> tuple[Report, PeriodResult]:
        """Create and run a job to the end (raises on failure, the row says failed)."""
        row = await self._create(req)
        return await self._run(row.id, req)

    async def wait(self, report_id: str) -> None:
        task = self._tasks.get(report_id)
        if task is not None:
            with contextlib.suppress(Exception):
                await task

    async def close(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        for task in list(self._tasks.values()):
            with contextlib.suppress(BaseException):
                await task

    def file_path(self, row: Report) -> Path | None:
        if not row.file_name:
            return None
        return reports_dir(self.settings) / row.file_name

    # ------------------------------------------------------------------ internals
    async def _create(self, req: ReportRequest) -> Report:
        if req.format not in REPORT_FORMATS:
            raise ValueError(f"unknown format {req.format!r}")
        row = Report(
            id=secrets.token_hex(8), kind=req.kind, label=req.label, period_start=req.start, period_end=req.end,
            timezone=self.settings.report_timezone, format=req.format, org_node_id=req.flt.org_node_id,
            contract_id=req.flt.contract_id, scope=json.dumps(req.flt.describe(), ensure_ascii=False),
            trigger=req.trigger, created_by=getattr(req.user, "id", None), state="queued", progress=0.0,
            created_at=utcnow(),
        )
        async with self.sessionmaker() as session:
            session.add(row)
            await session.commit()
        self.progress[row.id] = 0.0
        return row

    async def _update(self, report_id: str, **values: Any) -> None:
        from gbcore.db import begin_write

        async with self.sessionmaker() as session:
            # a write transaction from the start: on SQLite a read that turns into a write fails at once
            # ("database is locked") when another job or the registry writer committed in between
            await begin_write(session)
            row = await session.get(Report, report_id)
            if row is None:
                return
            for k, v in values.items():
                setattr(row, k, v)
            await session.commit()

    async def _run_logged(self, report_id: str, req: ReportRequest) -> None:
        try:
            await self._run(report_id, req)
        except asyncio.CancelledError:
            await self._update(report_id, state="failed", error="cancelled", finished_at=utcnow())
            raise
        except Exception:
            log.exception("report.failed", report_id=report_id)

    async def _checkpoint(self) -> tuple[str | None, int | None, str | None]:
        cp = None
        if self.audit is not None:
            try:
                cp = await self.audit.checkpoint()
            except Exception as exc:  # a tampered log: say so in the log, use the newest signed one
                log.error("report.checkpoint_failed", error=str(exc))
                cp = await self.audit.latest_checkpoint()
            origin = self.audit.origin
        else:
            from audit_log.store import AuditStore

            cp = await AuditStore(self.sessionmaker).latest_checkpoint()
            origin = self.settings.audit_log_origin
        if cp is None:
            return origin, None, None
        return origin, cp.tree_size, base64.b64encode(cp.root_hash).decode()

    async def _run(self, report_id: str, req: ReportRequest) -> tuple[Report, PeriodResult]:
        s = self.settings
        try:
            await self._update(report_id, state="running", progress=0.01)
            self.progress[report_id] = 0.01

            def on_progress(x: float) -> None:
                self.progress[report_id] = 0.01 + 0.8 * x

            res = await compute_period(
                self.sessionmaker, req.flt, req.start, req.end, kind=req.kind, label=req.label,
                timezone=s.report_timezone, worst=s.report_worst_channels, progress=on_progress,
            )
            origin, cp_size, cp_root = await self._checkpoint()
            att = Attestation(report_id=report_id, generated_at=utcnow(), source_sha256=res.source_sha256,
                              checkpoint_origin=origin, checkpoint_size=cp_size, checkpoint_root=cp_root)
            self.progress[report_id] = 0.85
            if req.out is not None:
                out_dir, name = req.out.parent.resolve(), req.out.name
            else:
                out_dir = reports_dir(s)
                safe_label = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in req.label)[:40]
                name = f"online-rate_{req.kind}_{safe_label}_{report_id}.{req.format}"
            out_dir.mkdir(parents=True, exist_ok=True)
            tmp = out_dir / f".{name}.tmp"

            def _render() -> None:
                with _render_lock:
                    render(res, att, req.format, tmp, worst=s.report_worst_channels)
                os.replace(tmp, out_dir / name)

            await asyncio.to_thread(_render)
            path = out_dir / name
            digest = await asyncio.to_thread(_sha256_file, path)
            size = path.stat().st_size
            self.progress[report_id] = 0.95
            seq = None
            if self.audit is not None:
                from audit_log.log import Actor, Target

                actor = Actor.user(req.user) if req.user is not None else Actor.system(f"gbops report {req.trigger}")
                entry = await self.audit.record(
                    actor=actor, action="report.export", target=Target("report", report_id),
                    client_ip=req.client_ip,
                    detail={"report": "online_rate", "kind": req.kind, "label": req.label, "start": req.start,
                            "end": req.end, "format": req.format, "file": name, "sha256": digest, "bytes": size,
                            "source_sha256": res.source_sha256, "checkpoint_size": cp_size,
                            "checkpoint_root": cp_root, "rate": res.rate, "threshold": res.threshold,
                            "breach": res.breach, "channels": len(res.channels), "scope": req.flt.describe()},
                )
                seq = entry.seq
            await self._update(
                report_id, state="done", progress=1.0, file_name=str(path) if req.out is not None else name, size=size, sha256=digest,
                source_sha256=res.source_sha256, checkpoint_size=cp_size,
                checkpoint_root=base64.b64decode(cp_root).hex() if cp_root else None, audit_seq=seq,
                summary=json.dumps(res.summary(), ensure_ascii=False), finished_at=utcnow(),
            )
            self.progress[report_id] = 1.0
            log.info("report.done", report_id=report_id, kind=req.kind, label=req.label, format=req.format,
                     sha256=digest, channels=len(res.channels))
            async with self.sessionmaker() as session:
                row = await session.get(Report, report_id)
            assert row is not None
            return row, res
        except BaseException as exc:
            self.progress.pop(report_id, None)
            with contextlib.suppress(Exception):
                await self._update(report_id, state="failed", error=f"{type(exc).__name__}: {exc}"[:500],
                                   finished_at=utcnow())
            raise


class ReportScheduler:
    """Every day at ``settings.report_schedule`` (display time zone) the report of the day before, in
    each of ``settings.report_formats``.  Missed runs (platform down at that time) are made up at start:
    a day whose scheduled report is missing is generated once."""

    def __init__(self, jobs: ReportJobs, settings: Any) -> None:
        self.jobs = jobs
        self.settings = settings
        # the first run at start (making up a missed day), then at the next scheduled time (at least 1 s
        # later); a failed run is logged and the next one waits for the next scheduled time (no back-off)
        self.periodic = PeriodicTask("report-scheduler", self._round, interval=self._until_next_run,
                                     first_delay=0.0, logger=log, failure_event="report.schedule_failed")

    @property
    def formats(self) -> list[str]:
        return [f.strip() for f in self.settings.report_formats.split(",") if f.strip() in REPORT_FORMATS]

    def next_run(self, now: datetime) -> datetime:
        tz = ZoneInfo(self.settings.report_timezone)
        hh, mm = (int(x) for x in self.settings.report_schedule.split(":"))
        local = now.astimezone(tz)
        at = datetime(local.year, local.month, local.day, hh, mm, tzinfo=tz)
        if at <= local:
            at = datetime.combine(local.date() + timedelta(days=1), at.timetz())
        return at.astimezone(UTC)

    async def run_due(self, now: datetime) -> list[str]:
        """Generate yesterday's scheduled reports that do not exist yet (when their time has come)."""
        tz = ZoneInfo(self.settings.report_timezone)
        hh, mm = (int(x) for x in self.settings.report_schedule.split(":"))
        local = now.astimezone(tz)
        due_today = datetime(local.year, local.month, local.day, hh, mm, tzinfo=tz)
        day = local.date() - timedelta(days=1 if local >= due_today else 2)
        start, end, label = period_bounds("day", tz, on=day)
        made: list[str] = []
        async with self.jobs.sessionmaker() as session:
            first_run = await first_platform_start(session)
            if first_run is None or first_run >= end:
                return made  # the platform did not exist that day: nothing to report
            existing = set(
                (await session.scalars(
                    select(Report.format).where(Report.trigger == "schedule", Report.kind == "day",
                                                Report.period_start == start, Report.state == "done")
                )).all()
            )
        flt = ScopeFilter(threshold=self.settings.online_rate_threshold,
                          sample_minutes=self.settings.online_rate_sample_minutes)
        for fmt in self.formats:
            if fmt in existing:
                continue
            row, _ = await self.jobs.run(ReportRequest("day", start, end, label, fmt, flt, trigger="schedule"))
            made.append(row.id)
        return made

    async def _round(self) -> None:
        await self.run_due(utcnow())

    def _until_next_run(self) -> float:
        return max(1.0, (self.next_run(utcnow()) - utcnow()).total_seconds())

    def start(self) -> None:
        if self.settings.report_schedule:
            self.periodic.start()

    async def stop(self) -> None:
        await self.periodic.stop()
