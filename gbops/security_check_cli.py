"""``gbops security check``: the security self-check of an installation, from its database and settings.

The same facts and findings as ``GET /api/security/check`` (:mod:`ops_portal.security.check_facts`), with the
facts that live in the assembly read here directly: the backups (:func:`gbops.backup.backup_status`) and
the clock (one measurement against ``GBOPS_NTP_SERVERS`` by the time service's own check).  Prints the
findings as text or JSON, or writes the PDF / XLSX report (recorded on the audit log as ``security.check``
when the audit signing key is there).  Exit status: 0 no critical finding, 1 critical findings, 2 the check
could not run.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gbcore.log import get_logger

log = get_logger("gbops.security_check")

SEVERITY_LABELS = {"critical": "严重 / CRITICAL", "warning": "警告 / WARNING", "info": "提示 / INFO"}


async def _time_status(settings: Any, sessionmaker: Any) -> dict[str, Any]:
    from timesync.service import TimeConfig, TimeService

    service = TimeService(sessionmaker, TimeConfig.from_settings(settings))
    if settings.ntp_servers.strip():
        return await service.check_ntp()  # measures once; nothing is started
    return service.status()


def format_text(report: Any) -> str:
    from gbcore.timeutil import to_device_time

    counts = report.counts
    lines = [f"平台安全检查 / security check  {to_device_time(report.generated_at):%Y-%m-%d %H:%M:%S} 北京时间 / "
             f"Beijing time",
             "  " + "  ".join(f"{SEVERITY_LABELS[k]}: {v}" for k, v in counts.items()), ""]
    if not report.findings:
        lines.append("未发现问题 / no finding")
    for f in report.findings:
        lines.append(f"[{SEVERITY_LABELS[f.severity]}] {f.title} ({len(f.subjects)})  <{f.code}>")
        lines.append(f"    修复 / fix: {f.fix}")
        for s in f.subjects:
            name = f" {s.name}" if s.name else ""
            lines.append(f"    - {s.kind} {s.id}{name}: {s.detail}")
        lines.append("")
    return "\n".join(lines)


async def run_check_command(settings: Any, *, fmt: str, out: Path | None, echo: Callable[[str], None],
                            echo_err: Callable[[str], None], operator: str) -> int:
    from sqlalchemy.exc import DBAPIError

    from audit_log.log import Actor, AuditLog, Target
    from gbcore.db import make_engine, make_sessionmaker
    from gbops.backup import backup_status
    from gbops.migrate import migrate
    from ops_portal.security.check_facts import CheckSources, run_security_check
    from ops_portal.security.check_report import check_report_file

    if out is not None and out.suffix.lower() not in (".pdf", ".xlsx"):
        echo_err("--out 须为 .pdf 或 .xlsx 文件 / --out must be a .pdf or .xlsx file")
        return 2
    if settings.database_url is None and not (settings.data_dir / "gbops.db").exists():
        echo_err(f"数据库不存在 / no database at {settings.data_dir / 'gbops.db'} (GBOPS_DATA_DIR?)")
        return 2
    try:
        engine = make_engine(settings.db_url)
    except Exception as exc:
        echo_err(f"无法打开数据库 / cannot open the database: {exc}")
        return 2
    try:
        try:
            await migrate(engine)
        except (DBAPIError, OSError) as exc:
            echo_err(f"无法打开数据库 / cannot open the database: {exc}")
            return 2
        sessionmaker = make_sessionmaker(engine)

        async def time_status() -> dict[str, Any]:
            return await _time_status(settings, sessionmaker)

        sources = CheckSources(backup_status=lambda: backup_status(settings), time_status=time_status)
        report = await run_security_check(sessionmaker, settings, sources)
        if out is None:
            echo(json.dumps(report.as_dict(), ensure_ascii=False, indent=2) if fmt == "json" else format_text(report))
        else:
            audit = None
            if settings.audit_signing_key_path.exists():
                audit = AuditLog.from_settings(settings, sessionmaker, create_key=False)
            try:
                kind = out.suffix.lower().lstrip(".")
                data, _name, att = await check_report_file(report, kind, audit=audit, settings=settings,
                                                           sessionmaker=sessionmaker)
                await asyncio.to_thread(out.write_bytes, data)
                digest = hashlib.sha256(data).hexdigest()
                if audit is not None:
                    await audit.record(actor=Actor.system(f"gbops security check ({operator})"),
                                       action="security.check", target=Target("report", att.report_id),
                                       detail={"format": kind, "file": out.name, "sha256": digest,
                                               "bytes": len(data), "source_sha256": att.source_sha256,
                                               "counts": report.counts,
                                               "codes": sorted({f.code for f in report.findings})})
                else:
                    echo_err("未找到审计签名密钥：未写入审计日志 / no audit signing key: the export was not recorded "
                             "in the audit log")
            finally:
                if audit is not None:
                    await audit.stop()
            counts = "  ".join(f"{SEVERITY_LABELS[k]}: {v}" for k, v in report.counts.items())
            echo(f"安全检查报告 / security check report: {out}\n  sha256: {digest}\n  {counts}")
        return 1 if report.counts["critical"] else 0
    finally:
        await engine.dispose()
