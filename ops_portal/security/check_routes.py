"""The security self-check: ``GET /api/security/check`` (the findings as JSON) and
``GET /api/security/check/report?format=pdf|xlsx`` (the same as a file, recorded on the audit log as
``security.check`` with the file's SHA-256).  Permission ``security.read``.

The facts come from :mod:`ops_portal.security.check_facts`; the findings from :mod:`security.check`.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from gbcore.log import get_logger
from gbcore.timeutil import to_device_time
from ops_portal.deps import AuditDep, SettingsDep, client_ip, require_permission
from ops_portal.models import User
from ops_portal.schemas import UtcTime, error_responses
from security.check import CheckReport

from .check_facts import CheckSources, run_security_check
from .check_report import MEDIA_TYPES, check_report_file

__all__ = ["router"]

log = get_logger("gbops.portal.security_check")

router = APIRouter(tags=["security"])
CheckReader = Annotated[User, Depends(require_permission("security.read"))]


class SubjectOut(BaseModel):
    kind: str = Field(description="user | device | setting | platform | source")
    id: str
    name: str = ""
    detail: str = Field("", description="中文 / English")


class FindingOut(BaseModel):
    code: str = Field(examples=["device_weak_password"])
    severity: Literal["critical", "warning", "info"]
    title: str = Field(description="中文 / English")
    title_zh: str
    title_en: str
    fix: str = Field(description="中文 / English")
    fix_zh: str
    fix_en: str
    ref: str | None = Field(None, description="device_advisory only: the advisory id")
    count: int
    subjects: list[SubjectOut]


class CheckOut(BaseModel):
    generated_at: UtcTime
    generated_at_local: str = Field(description="北京时间 / Beijing time, YYYY-MM-DD HH:MM:SS")
    counts: dict[str, int] = Field(description="findings by severity: critical, warning, info")
    total: int
    checked: dict[str, Any] = Field(description="users, devices, advisories counted; duration_s, users_probed, "
                                    "ha1_scan_s measured")
    findings: list[FindingOut]


def _sources(request: Request) -> CheckSources:
    return CheckSources.from_app_state(request.app.state)


def check_out(report: CheckReport) -> dict[str, Any]:
    out = report.as_dict()
    out["generated_at"] = report.generated_at
    out["generated_at_local"] = f"{to_device_time(report.generated_at):%Y-%m-%d %H:%M:%S}"
    return out


@router.get("/api/security/check", operation_id="security_check", response_model=CheckOut,
            summary="安全检查 / security self-check", responses=error_responses(403))
async def security_check(user: CheckReader, request: Request, settings: SettingsDep) -> dict[str, Any]:
    """Weak passwords (users; devices from their stored HA1), unused accounts, old passwords, administrators
    without a second factor, devices on the shared default password or on the advisory list, plain HTTP, SIP
    without lockout, audit checkpoints kept on the host only, missing or stale backups, an unsynchronised
    clock. Each finding has a fix; a fact that could not be read is a ``facts_unknown`` finding. Takes a
    few seconds (argon2 tries on accounts whose strength is not known yet are capped)."""
    report = await run_security_check(request.app.state.sessionmaker, settings, _sources(request))
    log.info("security_check.run", username=user.username, **report.counts)
    return check_out(report)


@router.get("/api/security/check/report", operation_id="security_check_report",
            summary="下载安全检查报告 / download the security check report",
            response_class=Response, responses={**error_responses(403, 422),
                                                200: {"content": {v: {} for v in MEDIA_TYPES.values()}}})
async def security_check_report(
    user: CheckReader, request: Request, settings: SettingsDep, audit: AuditDep,
    fmt: Annotated[Literal["pdf", "xlsx"], Query(alias="format", description="pdf | xlsx")] = "pdf",
) -> Response:
    """Runs the check and answers the report as a PDF (Chinese, Beijing time) or an XLSX (every subject).
    The export is recorded on the audit log (``security.check``: format, counts, file SHA-256)."""
    sessionmaker = request.app.state.sessionmaker
    report = await run_security_check(sessionmaker, settings, _sources(request))
    data, name, att = await check_report_file(report, fmt, audit=audit, settings=settings, sessionmaker=sessionmaker)
    digest = hashlib.sha256(data).hexdigest()
    if audit is not None:
        from audit_log.log import Actor, Target

        await audit.record(actor=Actor.user(user), action="security.check", target=Target("report", att.report_id),
                           client_ip=client_ip(request),
                           detail={"format": fmt, "file": name, "sha256": digest, "bytes": len(data),
                                   "source_sha256": att.source_sha256, "counts": report.counts,
                                   "codes": sorted({f.code for f in report.findings})})
    log.info("security_check.export", username=user.username, format=fmt, sha256=digest)
    return Response(data, media_type=MEDIA_TYPES[fmt],
                    headers={"Content-Disposition": f'attachment; filename="{name}"', "X-Content-SHA256": digest})
