"""``/api/availability`` (online rate now and over a period) and ``/api/reports`` (report jobs and files).

Every route needs ``report.read``.  Figures cover only the channels in the caller's data scope; an
organisation node or a contract narrows them further (a contract also sets the threshold and the rule).
A user sees the reports they asked for; a user with full data scope also sees everyone's and the
scheduled ones.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select

from ops_portal.deps import AccessDep, SessionDep, SettingsDep, client_ip, require_permission
from ops_portal.models import User
from ops_portal.schemas import ApiError, UtcTime, error_responses

from .models import REPORT_FORMATS, Report
from .scheduler import ReportJobs, ReportRequest
from .service import ScopeFilter, ScopeNotFound, compute_period, online_rate_now, period_bounds, resolve_scope

__all__ = ["router"]

router = APIRouter(tags=["availability"], responses=error_responses(401, 403, 422))

ReportReader = Annotated[User, Depends(require_permission("report.read"))]
MAX_CUSTOM_DAYS = 400


# ---------------------------------------------------------------------------------------------- schemas
class OrgRateOut(BaseModel):
    org_node_id: int | None
    name: str | None
    channels_total: int
    channels_online: int
    rate: float | None
    breach: bool


class OnlineRateOut(BaseModel):
    at: UtcTime
    scope: dict[str, Any] = Field(description="范围说明 / what was counted (label, org node, contract, rule)")
    channels_total: int
    channels_online: int
    rate: float | None = Field(description="在线点位 / 点位总数 (0..1) / online channels / channels")
    devices_total: int
    devices_online: int
    device_rate: float | None
    threshold: float = Field(description="考核值 (0..1) / threshold")
    breach: bool = Field(description="低于考核值 / below the threshold")
    by_org: list[OrgRateOut]


class ChannelFiguresOut(BaseModel):
    device_id: str
    channel_id: str
    name: str | None
    org_node_id: int | None
    online_s: float
    offline_s: float
    unknown_s: float
    absent_s: float
    outages: int
    longest_outage_s: float
    availability: float | None
    below_threshold: bool


class PeriodOut(BaseModel):
    summary: dict[str, Any] = Field(description="范围的在线率与时长 / the scope's rates and totals")
    total: int
    offset: int
    limit: int
    items: list[ChannelFiguresOut]


class ReportCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    kind: Literal["day", "week", "month", "year", "custom"]
    format: Literal["pdf", "xlsx", "csv"] = "pdf"
    on: date | None = Field(None, alias="date", description="day/week: a day in it (default today)")
    month: str | None = Field(None, pattern=r"^\d{4}-(0[1-9]|1[0-2])$", description="month: YYYY-MM")
    year: int | None = Field(None, ge=2000, le=2100)
    start: datetime | None = Field(None, alias="from", description="custom: start (no zone: display zone)")
    end: datetime | None = Field(None, alias="to", description="custom: end")
    org_node_id: int | None = Field(None, ge=1, le=2**31 - 1)  # int32 ids (PostgreSQL refuses larger values)
    contract_id: int | None = Field(None, ge=1, le=2**31 - 1)


class ReportOut(BaseModel):
    id: str
    kind: str
    label: str
    period_start: UtcTime
    period_end: UtcTime
    timezone: str
    format: str
    org_node_id: int | None
    contract_id: int | None
    scope: dict[str, Any]
    trigger: str
    created_by: int | None
    state: str = Field(description="queued | running | done | failed")
    progress: float = Field(description="0..1")
    size: int | None
    sha256: str | None = Field(description="文件 SHA-256 / of the file (also in the audit log)")
    source_sha256: str | None
    checkpoint_size: int | None
    checkpoint_root: str | None = Field(description="审计检查点根哈希 (hex) / audit checkpoint root")
    audit_seq: int | None
    summary: dict[str, Any] | None
    error: str | None
    created_at: UtcTime
    finished_at: UtcTime | None
    file_url: str | None


class ReportList(BaseModel):
    total: int
    offset: int
    limit: int
    items: list[ReportOut]


# ---------------------------------------------------------------------------------------------- helpers
def _jobs(request: Request) -> ReportJobs:
    jobs = getattr(request.app.state, "report_jobs", None)
    if jobs is None:
        jobs = ReportJobs(request.app.state.sessionmaker, request.app.state.settings,
                          getattr(request.app.state, "audit", None))
        request.app.state.report_jobs = jobs
    return jobs


JobsDep = Annotated[ReportJobs, Depends(_jobs)]


async def _check_visible(session: Any, access: Any, registry: Any, org_node_id: int | None,
                         contract_id: int | None) -> None:
    """A scoped caller may name only a contract it can list (its service scope inside the caller's) and an
    organisation node of its scope or above its own channels (what its tree shows); any other answers exactly as
    one that does not exist (404), so that a curious tenant cannot tell other tenants' ids from unknown ones."""
    if access.scope.all or registry is None:
        return
    if contract_id is not None:
        from ops_portal.contracts import get_contract
        from ops_portal.scope_lists import grants_within_scope

        contract = await get_contract(session, contract_id)
        if contract is None or not await grants_within_scope(
                registry, access.scope, org_node_ids=contract.org_node_ids or (), channels=contract.channel_ids or ()):
            raise ApiError(404, "contract_not_found", f"合同不存在 / contract not found: {contract_id}")
    if org_node_id is not None and not access.scope.allows_node(org_node_id):
        from ops_portal.access import Scope
        from ops_portal.contracts import org_descendants

        under = await registry.scoped_channels(Scope(False, await org_descendants(session, [org_node_id])))
        own = await registry.scoped_channels(access.scope)  # two queries, whatever the number of channels
        if not ({(c.device_id, c.channel_id) for c in under or ()} & {(c.device_id, c.channel_id) for c in own or ()}):
            raise ApiError(404, "org_node_not_found", f"组织节点不存在 / organisation node not found: {org_node_id}")


async def _filter(session: Any, access: Any, settings: Any, org_node_id: int | None,
                  contract_id: int | None, registry: Any = None) -> ScopeFilter:
    await _check_visible(session, access, registry, org_node_id, contract_id)
    try:
        return await resolve_scope(
            session, scope=access.scope, org_node_id=org_node_id, contract_id=contract_id,
            threshold=settings.online_rate_threshold, sample_minutes=settings.online_rate_sample_minutes,
        )
    except ScopeNotFound as exc:
        if exc.what == "contract":
            raise ApiError(404, "contract_not_found", f"合同不存在 / contract not found: {exc.ident}") from None
        raise ApiError(404, "org_node_not_found", f"组织节点不存在 / organisation node not found: {exc.ident}") from None


def _aware(value: datetime, tz: ZoneInfo) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=tz)


def _report_out(row: Report, jobs: ReportJobs) -> ReportOut:
    progress = jobs.progress.get(row.id, row.progress) if row.state in ("queued", "running") else row.progress
    return ReportOut(
        id=row.id, kind=row.kind, label=row.label, period_start=row.period_start, period_end=row.period_end,
        timezone=row.timezone, format=row.format, org_node_id=row.org_node_id, contract_id=row.contract_id,
        scope=json.loads(row.scope), trigger=row.trigger, created_by=row.created_by, state=row.state,
        progress=progress, size=row.size, sha256=row.sha256, source_sha256=row.source_sha256,
        checkpoint_size=row.checkpoint_size, checkpoint_root=row.checkpoint_root, audit_seq=row.audit_seq,
        summary=json.loads(row.summary) if row.summary else None, error=row.error, created_at=row.created_at,
        finished_at=row.finished_at, file_url=f"/api/reports/{row.id}/file" if row.state == "done" else None,
    )


def _visible(access: Any, user: User) -> Any:
    """The reports the caller may see (a where clause), or None for all."""
    if access.scope.all:
        return None
    return Report.created_by == user.id


async def _get_visible(session: Any, access: Any, user: User, report_id: str) -> Report:
    row = await session.get(Report, report_id)
    if row is None or (not access.scope.all and row.created_by != user.id):
        raise ApiError(404, "report_not_found", f"报表不存在 / report not found: {report_id}")
    return row


# ---------------------------------------------------------------------------------------------- routes
@router.get("/api/availability/online-rate", operation_id="availability_online_rate",
            summary="当前在线率 / online rate now", response_model=OnlineRateOut, responses=error_responses(404))
async def get_online_rate(
    request: Request,
    user: ReportReader,
    access: AccessDep,
    session: SessionDep,
    settings: SettingsDep,
    scope: Annotated[Literal["user", "platform"], Query(
        description="user: 本人授权范围 / the caller's scope; platform: 全平台（需全部数据权限）/ whole platform "
                    "(needs full data scope)")] = "user",
    org_node_id: Annotated[int | None, Query(ge=1, le=2**31 - 1, description="组织节点（含下级）/ organisation node")] = None,
    contract_id: Annotated[int | None, Query(ge=1, le=2**31 - 1, description="合同服务范围 / a contract's service scope")] = None,
) -> OnlineRateOut:
    if scope == "platform" and not access.scope.all:
        raise ApiError(403, "scope_forbidden", "全平台统计需要全部数据权限 / whole-platform figures need full data scope")
    flt = await _filter(session, access, settings, org_node_id, contract_id, request.app.state.registry)
    now = await online_rate_now(session, flt)
    return OnlineRateOut(
        at=now.at, scope=now.scope, channels_total=now.channels_total, channels_online=now.channels_online,
        rate=now.rate, devices_total=now.devices_total, devices_online=now.devices_online,
        device_rate=now.device_rate, threshold=now.threshold, breach=now.breach,
        by_org=[OrgRateOut(**g) for g in now.by_org],
    )


@router.get("/api/availability/channels", operation_id="availability_channels",
            summary="点位在线情况（时段）/ channel availability over a period", response_model=PeriodOut,
            responses=error_responses(404))
async def get_channels(
    request: Request,
    user: ReportReader,
    access: AccessDep,
    session: SessionDep,
    settings: SettingsDep,
    start: Annotated[datetime, Query(alias="from", description="开始 (RFC 3339；无时区按显示时区) / start")],
    end: Annotated[datetime, Query(alias="to", description="结束 / end (exclusive)")],
    org_node_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    contract_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> PeriodOut:
    tz = ZoneInfo(settings.report_timezone)
    start, end = _aware(start, tz), _aware(end, tz)
    if end <= start or (end - start).days > MAX_CUSTOM_DAYS:
        raise ApiError(422, "bad_period", f"时段无效（须 from < to，且不超过 {MAX_CUSTOM_DAYS} 天）/ invalid period "
                                          f"(from < to, at most {MAX_CUSTOM_DAYS} days)")
    flt = await _filter(session, access, settings, org_node_id, contract_id, request.app.state.registry)
    s, e, label = period_bounds("custom", tz, start=start, end=end)
    res = await compute_period(request.app.state.sessionmaker, flt, s, e, kind="custom", label=label,
                               timezone=settings.report_timezone, worst=0, keep_outages=False)
    page = res.channels[offset:offset + limit]
    return PeriodOut(
        summary=res.summary(), total=len(res.channels), offset=offset, limit=limit,
        items=[ChannelFiguresOut(
            device_id=f.device_id, channel_id=f.channel_id, name=f.name, org_node_id=f.org_node_id,
            online_s=round(f.online_s, 3), offline_s=round(f.offline_s, 3), unknown_s=round(f.unknown_s, 3),
            absent_s=round(f.absent_s, 3), outages=f.outages, longest_outage_s=round(f.longest_outage_s, 3),
            availability=f.availability,
            below_threshold=f.availability is not None and f.availability < res.threshold,
        ) for f in page],
    )


@router.post("/api/reports", operation_id="reports_create", summary="生成报表 / generate a report",
             status_code=202, response_model=ReportOut, responses=error_responses(404))
async def create_report(
    request: Request,
    body: ReportCreate,
    user: ReportReader,
    access: AccessDep,
    session: SessionDep,
    settings: SettingsDep,
    jobs: JobsDep,
) -> ReportOut:
    tz = ZoneInfo(settings.report_timezone)
    try:
        start, end, label = period_bounds(
            body.kind, tz, on=body.on, month=body.month, year=body.year,
            start=body.start, end=body.end,
        )
    except ValueError as exc:
        raise ApiError(422, "bad_period", f"统计周期无效 / invalid period: {exc}") from None
    if (end - start).days > MAX_CUSTOM_DAYS:
        raise ApiError(422, "bad_period", f"统计周期不得超过 {MAX_CUSTOM_DAYS} 天 / at most {MAX_CUSTOM_DAYS} days")
    flt = await _filter(session, access, settings, body.org_node_id, body.contract_id, request.app.state.registry)
    row = await jobs.submit(ReportRequest(body.kind, start, end, label, body.format, flt, trigger="api", user=user,
                                          client_ip=client_ip(request)))
    return _report_out(row, jobs)


@router.get("/api/reports", operation_id="reports_list", summary="报表列表 / list reports", response_model=ReportList)
async def list_reports(
    user: ReportReader,
    access: AccessDep,
    session: SessionDep,
    jobs: JobsDep,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> ReportList:
    where = _visible(access, user)
    conds = [] if where is None else [where]
    total = await session.scalar(select(func.count()).select_from(Report).where(*conds))
    rows = await session.scalars(
        select(Report).where(*conds).order_by(Report.created_at.desc(), Report.id).offset(offset).limit(limit)
    )
    return ReportList(total=int(total or 0), offset=offset, limit=limit, items=[_report_out(r, jobs) for r in rows])


ReportId = Annotated[str, Path(min_length=1, max_length=32, pattern=r"^[0-9a-f]+$", description="报表编号 / report id")]


@router.get("/api/reports/{report_id}", operation_id="reports_get", summary="报表状态与进度 / report state and progress",
            response_model=ReportOut, responses=error_responses(404))
async def get_report(report_id: ReportId, user: ReportReader, access: AccessDep, session: SessionDep,
                     jobs: JobsDep) -> ReportOut:
    return _report_out(await _get_visible(session, access, user, report_id), jobs)


_MEDIA = {"pdf": "application/pdf", "csv": "text/csv; charset=utf-8",
          "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}
assert set(_MEDIA) == set(REPORT_FORMATS)


@router.get("/api/reports/{report_id}/file", operation_id="reports_file", summary="下载报表文件 / download the report file",
            response_class=FileResponse, responses={**error_responses(404, 409),
                                                    200: {"content": {v: {} for v in _MEDIA.values()}}})
async def get_report_file(report_id: ReportId, user: ReportReader, access: AccessDep, session: SessionDep,
                          jobs: JobsDep) -> FileResponse:
    row = await _get_visible(session, access, user, report_id)
    if row.state != "done":
        raise ApiError(409, "report_not_ready", f"报表尚未生成（{row.state}）/ the report is not ready ({row.state})")
    path = jobs.file_path(row)
    if path is None or not path.is_file():
        raise ApiError(404, "report_file_missing", "报表文件已不存在 / the report file no longer exists")
    return FileResponse(path, media_type=_MEDIA[row.format], filename=row.file_name,
                        headers={"X-Content-SHA256": row.sha256 or ""})
