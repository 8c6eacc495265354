"""Watermarked downloads: ``POST /api/channels/{id}/downloads`` captures a live clip (``{"seconds"}``) or
exports a recorded time range (``{"start", "end", "source"}``: the device's storage with ``s=Download`` or the
platform's segments) as an MP4 carrying the requester's visible watermark and signed session tag; the job's
progress (percent, a measured ETA and speed); the file.  The download centre: ``GET /api/downloads`` (yours, or
with ``all=true`` everyone's within your data scope for ``user.manage``; filters by user, channel and creation
time; paging) and ``GET /api/downloads.csv`` (the same history as a spreadsheet, Beijing time).

The work is done by :class:`watermark.downloads.DownloadManager` (``app.state.downloads``, started by
the platform; made on first use otherwise).  A job and its file are visible to the user who asked for
it, and to holders of ``user.manage``; to anyone else they do not exist (404).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, Field

from gbcore.log import get_logger
from ops_portal.deps import (
    DEVICE_PATH,
    AccessDep,
    RegistryDep,
    ScopedChannel,
    SipDep,
    client_ip,
    device_channel_path,
    device_online,
    require_permission,
)
from ops_portal.models import User
from ops_portal.schemas import ApiError, UtcTime, error_responses

log = get_logger("gbops.portal.downloads")

router = APIRouter(tags=["downloads"], responses=error_responses(401, 403, 422))

Downloader = Annotated[User, Depends(require_permission("download.create"))]
JobIdPath = Annotated[str, Path(min_length=1, max_length=32, description="下载任务编号 / download job id")]

MIN_SECONDS, MAX_SECONDS = 5, 600


class DownloadRequest(BaseModel):
    """Either ``seconds`` (a live clip from now on) or ``start`` + ``end`` (a recorded time range)."""

    seconds: int | None = Field(None, ge=MIN_SECONDS, le=MAX_SECONDS,
                                description="片段时长（秒），从现在起录制 / clip length in seconds, captured from now on")
    start: str | None = Field(None, max_length=40, description="录像时间段开始，ISO 8601，无时区时为北京时间 / start "
                              "of a recorded range: ISO 8601, Beijing time when without an offset")
    end: str | None = Field(None, max_length=40, description="录像时间段结束 / end of the recorded range")
    source: Literal["device", "platform"] | None = Field(None, description="recorded range: the device's own "
                                                         "storage (default) or the platform's recording")
    transport: Literal["udp", "tcp-passive", "tcp-active"] | None = Field(
        default=None, description="媒体传输方式 / media transport when the stream must be started "
        "(default: the platform's live transport)")
    purpose: str | None = Field(None, max_length=200, description="下载用途（如案件编号），记入下载历史和审计日志 / "
                                "what the copy is for (e.g. a case number), kept on the download history and the "
                                "audit log")


class DownloadJobOut(BaseModel):
    job_id: str
    state: Literal["queued", "capturing", "encoding", "done", "failed"] = Field(
        description="queued: waiting for a free export slot; capturing: recording the live stream; "
                    "encoding: drawing the watermark and encoding the MP4; done: the file is ready; "
                    "failed: see reason")
    reason: str | None = Field(None, description="why the job failed (中文 / English)")
    purpose: str | None = Field(None, description="what the requester said the copy is for")
    channel_id: str
    device_id: str
    user_id: int
    username: str
    seconds: int = Field(description="requested clip length (s)")
    start: str | None = Field(None, description="recorded range: its start (RFC 3339, Beijing time +08:00)")
    end: str | None = Field(None, description="recorded range: its end (RFC 3339, +08:00)")
    source: str | None = Field(None, description="recorded range: device | platform; null for a live clip")
    percent: float = Field(description="overall progress 0..100: capturing covers 0..80 (seconds captured / "
                                       "seconds requested, in real time), encoding 80..100 (frames encoded / "
                                       "frames captured); 100 only when done")
    seconds_captured: float = Field(description="media time captured so far (s), from the stream's timestamps")
    frames_captured: int | None = Field(None, description="video pictures captured so far (the clip's picture "
                                                          "count once capture ended)")
    frames_encoded: int | None = Field(None, description="pictures watermarked and encoded so far; equals "
                                                         "frames_captured when done")
    eta_s: float | None = Field(None, description="estimated seconds until done: remaining capture time plus "
                                                  "an assumed encoding time of 0.2 s per captured second while "
                                                  "capturing; remaining frames at the measured encoding rate "
                                                  "while encoding; null when queued or finished")
    eta_seconds: float | None = Field(None, description="estimated seconds left at the rate measured since the job "
                                      "began work (elapsed x (100 - percent) / percent); null while queued, "
                                      "before there is a measurable rate, and once finished: an estimate only")
    speed: float | None = Field(None, description="media seconds handled per wall-clock second in the current "
                                "step (about 1 while capturing a live clip); null when not measurable")
    display_name: str | None = Field(None, description="the requester's display name")
    channel_name: str | None = Field(None, description="the channel's name (null when the channel is gone)")
    created_at: UtcTime
    finished_at: UtcTime | None = None
    media_start: UtcTime | None = Field(None, description="wall clock of the clip's first picture (the time "
                                                          "drawn in the watermark follows the recording)")
    media_end: UtcTime | None = None
    duration_s: float | None = Field(None, description="media duration of the exported clip (s)")
    size: int | None = Field(None, description="file size (bytes)")
    sha256: str | None = Field(None, description="SHA-256 of the file (hex), as on the audit log's "
                                                 "download.complete entry")
    session_id: str = Field(description="session id in the file's signed SEI tag and on the audit log")
    watermark_id: str = Field(description="the short code drawn in the picture")
    file_url: str | None = Field(None, description="GET it for the MP4 while available")
    expires_at: UtcTime | None = Field(None, description="the file is deleted after this time")


class DownloadJobList(BaseModel):
    items: list[DownloadJobOut]
    total: int = Field(description="jobs matching the filters (visible to the caller), before paging")
    offset: int = 0
    limit: int = 100


def _manager(request: Request) -> Any:
    manager = getattr(request.app.state, "downloads", None)
    if manager is None:
        from watermark.config import WatermarkConfig
        from watermark.downloads import DownloadManager

        state = request.app.state
        manager = DownloadManager(WatermarkConfig.from_settings(state.settings), state.sessionmaker, audit=getattr(state, "audit", None),
                                  media=getattr(state, "media", None))
        state.downloads = manager
    return manager


def _out(manager: Any, row: Any, names: dict[str, Any] | None = None) -> DownloadJobOut:
    """The job as the API gives it; ``names`` (from :func:`_names`) adds the requester's display name and
    the channel's name."""
    prog = manager.progress.get(row.id)
    state = prog.state if prog is not None and row.state not in ("done", "failed") else row.state
    import time

    measured = speed = None
    if prog is not None and state not in ("done", "failed"):
        now = time.monotonic()
        percent = prog.percent(row.seconds)
        eta = prog.eta(row.seconds, now)
        if hasattr(prog, "measured_eta"):
            measured, speed = prog.measured_eta(row.seconds, now), prog.speed(row.seconds, now)
        seconds_captured = prog.seconds_captured
        frames_captured = prog.frames_captured
        frames_encoded = prog.frames_encoded if state == "encoding" else 0
    else:
        percent = 100.0 if state == "done" else 0.0
        eta = None
        seconds_captured = row.duration_s or 0.0
        frames_captured = row.frames
        frames_encoded = row.frames
    available = manager.file_path(row) is not None
    from ops_portal.timewindow import beijing

    return DownloadJobOut(
        job_id=row.id, state=state, reason=row.reason, purpose=getattr(row, "purpose", None),
        channel_id=row.channel_id, device_id=row.device_id,
        user_id=row.user_id, username=row.username, seconds=row.seconds, percent=percent,
        start=beijing(getattr(row, "window_start", None)), end=beijing(getattr(row, "window_end", None)),
        source=getattr(row, "source", None),
        seconds_captured=seconds_captured, frames_captured=frames_captured, frames_encoded=frames_encoded,
        eta_s=eta, eta_seconds=measured, speed=speed,
        display_name=(names or {}).get("users", {}).get(row.user_id),
        channel_name=(names or {}).get("channels", {}).get((row.device_id, row.channel_id)),
        created_at=row.created_at, finished_at=row.finished_at, media_start=row.media_start,
        media_end=row.media_end, duration_s=row.duration_s, size=row.size, sha256=row.sha256,
        session_id=row.session_id, watermark_id=row.watermark_id,
        file_url=f"/api/downloads/{row.id}/file" if available else None, expires_at=row.expires_at)


async def _names(request: Request, rows: list[Any]) -> dict[str, Any]:
    """Display names of the rows' requesters and names of their channels (device id, channel id)."""
    if not rows:
        return {}
    from sqlalchemy import select

    from device_registry.queries import channel_names

    user_ids = {r.user_id for r in rows}
    refs = {(r.device_id, r.channel_id) for r in rows}
    async with request.app.state.sessionmaker() as session:
        users = dict((await session.execute(select(User.id, User.display_name).where(User.id.in_(user_ids)))).all())
        found = await channel_names(session, refs)
    channels = {(ref.device_id, ref.channel_id): name for ref, name in found.items()}
    return {"users": users, "channels": channels}


async def _visible_job(request: Request, user: User, access: Any, job_id: str) -> tuple[Any, Any]:
    manager = _manager(request)
    row = await manager.get(job_id)
    if row is None or (row.user_id != user.id and not access.can("user.manage")):
        raise ApiError(404, "download_not_found", "下载任务不存在 / no such download job")
    return manager, row


@router.post(device_channel_path("/api/channels/{channel_id}/downloads"),
             operation_id="downloads_create_device_channel", status_code=202,
             summary="下载录像或直播片段（设备 + 通道，带水印）/ download a recorded range or a live clip of a device's "
             "channel, watermarked",
             response_model=DownloadJobOut, dependencies=[DEVICE_PATH], responses=error_responses(404, 409, 503))
@router.post("/api/channels/{channel_id}/downloads", operation_id="downloads_create", status_code=202,
             summary="下载录像或直播片段（通道编码唯一时，带水印）/ download a recorded range or a live clip, watermarked "
             "(channel id unique)",
             response_model=DownloadJobOut, responses=error_responses(404, 409, 503))
async def create_download(user: Downloader, access: AccessDep, registry: RegistryDep, sip: SipDep,
                          request: Request, ref: ScopedChannel, body: DownloadRequest) -> DownloadJobOut:
    """Starts a job that records `seconds` of the channel's live video from now on - or, with `start` and
    `end` (ISO 8601, Beijing time without an offset), reads that recorded range from the device (`source`
    `device`, the default: `s=Download`, faster than real time) or from the platform's recording
    (`platform`) - then exports an MP4 with your visible watermark and a signed session tag in every
    keyframe. 422 `bad_window` / `window_too_long` (over `GBOPS_PLAYBACK_MAX_WINDOW_HOURS`). Poll
    `GET /api/downloads/{job_id}`; fetch `file_url` when `state` is `done`. The shorthand
    `/api/channels/{channel_id}/downloads` answers 409 `ambiguous_channel` when several of your devices
    report that channel id: use `/api/devices/{device_id}/channels/{channel_id}/downloads`."""
    import math

    from ops_portal.timewindow import parse_window

    purpose = " ".join((body.purpose or "").split())  # one line for the history
    if any(ord(ch) < 32 or 0x7F <= ord(ch) < 0xA0 for ch in body.purpose or "" if ch not in "\t\n\r"):
        raise ApiError(422, "bad_purpose", "用途含有控制字符 / the purpose contains control characters")
    history = body.start is not None or body.end is not None
    if history == (body.seconds is not None):
        raise ApiError(422, "bad_request", "请给出 seconds（直播片段）或 start 与 end（录像时间段）之一 / give either "
                       "seconds (a live clip) or start and end (a recorded range)")
    window = None
    source = None
    if history:
        window = parse_window(body.start, body.end, max_hours=request.app.state.settings.playback_max_window_hours)
        source = body.source or "device"
    elif body.source is not None:
        raise ApiError(422, "bad_request", "source 只用于录像时间段 / source applies to a recorded range only")
    if getattr(request.app.state, "media", None) is None:
        raise ApiError(503, "media_unavailable", "媒体服务未运行 / the media service is not running")
    channel_id = ref.channel_id
    if source == "platform":
        if getattr(request.app.state, "recordings", None) is None:
            raise ApiError(503, "recording_unavailable", "平台录像服务未运行 / platform recording is not running")
    elif sip is None or not await device_online(sip, ref.device_id):
        raise ApiError(409, "device_offline", f"设备不在线 / the device is offline: {ref.device_id}")
    from media_relay.stream import MediaError
    from watermark.downloads import AuditUnavailable

    manager = _manager(request)
    transport = body.transport or request.app.state.settings.live_transport
    extra: dict[str, Any] = {}
    seconds = body.seconds
    if window is not None:
        extra = {"window": window, "source": source}
        seconds = max(1, math.ceil((window[1] - window[0]).total_seconds()))
    if purpose:
        extra["purpose"] = purpose
    try:
        row = await manager.submit(user=user, channel_id=channel_id, device_id=ref.device_id,
                                   seconds=seconds, client_ip=client_ip(request), transport=transport,
                                   roles=tuple(getattr(access, "roles", ())), **extra)
    except MediaError as exc:
        from ops_portal.live.media_errors import media_error

        raise media_error(exc) from None
    except AuditUnavailable:
        log.exception("download.audit_failed", channel=ref.key, user=user.username)
        raise ApiError(503, "audit_unavailable", "审计日志不可用，无法下载 / the audit log is unavailable, "
                       "the download cannot start") from None
    return _out(manager, row)


#: the most jobs one list or export reads (newest first) before filtering to the caller's scope and paging
MAX_HISTORY = 5000

AllUsers = Annotated[bool, Query(alias="all", description="所有用户的任务（需要用户管理权限，仅限其数据范围内的通道）/ "
                                 "every user's jobs (needs user.manage; others' jobs of channels in your scope)")]
#: no control characters in a filter (PostgreSQL refuses NUL in text)
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
UserFilter = Annotated[str | None, Query(alias="user", max_length=64, pattern=PRINTABLE, description="只看此用户名的任务 / only "
                                         "this username's jobs")]
DeviceFilter = Annotated[str | None, Query(max_length=32, pattern=PRINTABLE, description="设备编号 / device id")]
ChannelFilter = Annotated[str | None, Query(max_length=32, pattern=PRINTABLE, description="通道编号（与 device_id 一起指定一个通道）/ "
                                            "channel id (with device_id: one channel)")]
SinceFilter = Annotated[str | None, Query(max_length=40, description="创建时间不早于，ISO 8601，无时区时为北京时间 / "
                                          "created at or after (ISO 8601, Beijing time without an offset)")]
UntilFilter = Annotated[str | None, Query(max_length=40, description="创建时间早于 / created before")]


@dataclass(frozen=True, slots=True)
class HistoryFilters:
    """The download history's filters, the same for the list and its CSV."""

    all_users: bool
    username: str | None
    device_id: str | None
    channel_id: str | None
    since: str | None
    until: str | None


def _history_filters(all_users: AllUsers = False, username: UserFilter = None, device_id: DeviceFilter = None,
                     channel_id: ChannelFilter = None, since: SinceFilter = None,
                     until: UntilFilter = None) -> HistoryFilters:
    return HistoryFilters(all_users, username, device_id, channel_id, since, until)


HistoryQuery = Annotated[HistoryFilters, Depends(_history_filters)]


async def _history(request: Request, user: User, access: Any, flt: HistoryFilters) -> tuple[Any, list[Any]]:
    """The jobs the caller may see that match the filters, newest first (at most :data:`MAX_HISTORY`)."""
    all_users, username, device_id, channel_id = flt.all_users, flt.username, flt.device_id, flt.channel_id
    since, until = flt.since, flt.until
    if all_users and not access.can("user.manage"):
        raise ApiError(403, "forbidden", "无权查看他人的下载任务（需要“用户管理”权限）/ permission denied (needs "
                       "manage users: user.manage)")
    from ops_portal.timewindow import parse_time

    filters: dict[str, Any] = {}
    if username:
        filters["username"] = username
    if device_id:
        filters["device_id"] = device_id
    if channel_id:
        filters["channel_id"] = channel_id
    if since:
        filters["since"] = parse_time(since, "since")
    if until:
        filters["until"] = parse_time(until, "until")
    if "since" in filters and "until" in filters and filters["until"] <= filters["since"]:
        raise ApiError(422, "bad_window", "结束时间须晚于开始时间 / until must be after since")
    manager = _manager(request)
    rows = await manager.list_jobs(None if all_users else user.id, MAX_HISTORY, **filters)
    if all_users and not access.scope.all:  # others' jobs: only of channels in the caller's scope
        from gbcore.ids import ChannelRef
        from ops_portal.scope_lists import channels_in_scope

        allowed = await channels_in_scope(request.app.state.registry, access.scope,
                                          {ChannelRef(r.device_id, r.channel_id) for r in rows})
        rows = [r for r in rows if r.user_id == user.id or ChannelRef(r.device_id, r.channel_id) in allowed]
    return manager, rows


@router.get("/api/downloads", operation_id="downloads_list", summary="下载中心：我的（或所有用户的）下载任务 / "
            "download centre: my (or every user's) download jobs", response_model=DownloadJobList)
async def list_downloads(
    user: Downloader,
    access: AccessDep,
    request: Request,
    flt: HistoryQuery,
    offset: Annotated[int, Query(ge=0, le=MAX_HISTORY)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> DownloadJobList:
    """Your download jobs, newest first (with `all=true`, everyone's of the channels in your data scope,
    for holders of `user.manage`), filtered by `user` (username), `device_id` + `channel_id`, and the
    creation time `since` / `until`; `total` counts the matches before `offset` / `limit`."""
    manager, rows = await _history(request, user, access, flt)
    page = rows[offset:offset + limit]
    names = await _names(request, page)
    return DownloadJobList(items=[_out(manager, r, names) for r in page], total=len(rows), offset=offset,
                           limit=limit)


_CSV_STATE = {"queued": "排队中 / queued", "capturing": "读取中 / capturing", "encoding": "加水印编码 / encoding",
              "done": "成功 / done", "failed": "失败 / failed"}
_CSV_SOURCE = {None: "实时片段 / live clip", "device": "设备录像 / device recording",
               "platform": "平台录像 / platform recording"}
CSV_HEADERS = ["任务编号 / job id", "用户名 / username", "姓名 / display name", "创建时间 / created",
               "完成时间 / finished", "设备编号 / device id", "通道编号 / channel id", "通道名称 / channel name",
               "类型 / kind", "录像开始 / video start", "录像结束 / video end", "时长（秒）/ duration (s)",
               "文件大小（字节）/ size (bytes)", "SHA-256", "水印编号 / watermark id", "会话编号 / session id",
               "客户端 IP / client IP", "结果 / result", "原因 / reason", "用途 / purpose"]


def _bj(value: datetime | None) -> str:
    """Beijing wall time ``YYYY-MM-DD HH:MM:SS`` for a spreadsheet ('' for None)."""
    if value is None:
        return ""
    from datetime import UTC, timedelta, timezone

    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(timezone(timedelta(hours=8))).strftime("%Y-%m-%d %H:%M:%S")


@router.get("/api/downloads.csv", operation_id="downloads_csv", summary="下载历史导出 CSV（北京时间）/ download "
            "history as CSV (Beijing time)", response_class=Response,
            responses={200: {"content": {"text/csv": {}}, "description": "UTF-8 with BOM"}})
async def downloads_csv(
    user: Downloader,
    access: AccessDep,
    request: Request,
    flt: HistoryQuery,
) -> Response:
    """The download history the list shows (same filters, no paging): who, when, which channel (id and
    name), the video period, size, SHA-256 and watermark id of the copy, and the result.  Times are Beijing
    time; UTF-8 with BOM for spreadsheet programs."""
    import csv
    import io

    from gbcore.sheets import csv_text

    manager, rows = await _history(request, user, access, flt)
    names = await _names(request, rows)
    users, channels = names.get("users", {}), names.get("channels", {})
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(CSV_HEADERS)
    for r in rows:
        prog = manager.progress.get(r.id)
        state = prog.state if prog is not None and r.state not in ("done", "failed") else r.state
        win_start = getattr(r, "window_start", None) or r.media_start
        win_end = getattr(r, "window_end", None) or r.media_end
        w.writerow([csv_text(v) for v in [
                    r.id, r.username, users.get(r.user_id) or "", _bj(r.created_at), _bj(r.finished_at),
                    r.device_id, r.channel_id, channels.get((r.device_id, r.channel_id)) or "",
                    _CSV_SOURCE.get(getattr(r, "source", None), getattr(r, "source", "")), _bj(win_start),
                    _bj(win_end), "" if r.duration_s is None else round(r.duration_s, 1),
                    "" if r.size is None else r.size, r.sha256 or "", r.watermark_id, r.session_id,
                    getattr(r, "client_ip", None) or "", _CSV_STATE.get(state, state), r.reason or "",
                    getattr(r, "purpose", None) or ""]])
    from datetime import UTC

    name = f"downloads-{_stamp(datetime.now(UTC))}.csv"
    return Response("\ufeff" + buf.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"})


@router.get("/api/downloads/{job_id}", operation_id="downloads_get", summary="下载任务进度 / download job progress",
            response_model=DownloadJobOut, responses=error_responses(404))
async def get_download(user: Downloader, access: AccessDep, request: Request, job_id: JobIdPath) -> DownloadJobOut:
    manager, row = await _visible_job(request, user, access, job_id)
    return _out(manager, row, await _names(request, [row]))


@router.get("/api/downloads/{job_id}/file", operation_id="downloads_file",
            summary="下载文件（MP4）/ the downloaded file (MP4)", response_class=FileResponse,
            responses={200: {"content": {"video/mp4": {}}, "description": "the watermarked MP4"},
                       **error_responses(404, 409, 410)})
async def download_file(user: Downloader, access: AccessDep, request: Request, job_id: JobIdPath) -> FileResponse:
    """The MP4, only to the user who asked for it (or a holder of `user.manage`). `Repr-Digest`
    carries its SHA-256 (RFC 9530), the same value as on the audit log."""
    manager, row = await _visible_job(request, user, access, job_id)
    if row.state != "done":
        raise ApiError(409, "download_not_ready", f"文件尚未生成 / the file is not ready (state {row.state})")
    path = manager.file_path(row)
    if path is None:
        raise ApiError(410, "download_expired", "文件已过保留期被删除 / the file was deleted after its retention "
                       "period")
    if row.user_id != user.id:
        await _audit_fetch(request, user, row)
    import base64

    start = row.media_start or row.created_at
    name = f"{row.device_id}_{row.channel_id}_{_stamp(start)}_{row.watermark_id}.mp4"
    digest = base64.b64encode(bytes.fromhex(row.sha256)).decode() if row.sha256 else None
    headers = {"Cache-Control": "no-store"}
    if digest:
        headers["Repr-Digest"] = f"sha-256=:{digest}:"
    return FileResponse(path, media_type="video/mp4", filename=name, headers=headers)


async def _audit_fetch(request: Request, user: User, row: Any) -> None:
    """``download.fetch``: someone other than the requester takes the file (an administrator holding
    ``user.manage``).  No evidence, no file: 503 when the entry cannot be written."""
    audit = getattr(request.app.state, "audit", None)
    if audit is None:
        return
    from audit_log.log import Actor, Target
    from gbcore.ids import ChannelRef

    try:
        await audit.record(actor=Actor.user(user), action="download.fetch",
                           target=Target("channel", ChannelRef(row.device_id, row.channel_id).key),
                           client_ip=client_ip(request), session_id=row.session_id, watermark_id=row.watermark_id,
                           detail={"job_id": row.id, "requester_id": row.user_id, "requester": row.username,
                                   "device_id": row.device_id, "channel_id": row.channel_id, "sha256": row.sha256,
                                   "bytes": row.size})
    except Exception:
        log.exception("download.fetch_audit_failed", job=row.id, user=user.username)
        raise ApiError(503, "audit_unavailable", "审计日志不可用，无法取走他人的下载文件 / the audit log is "
                       "unavailable: the file cannot be handed to anyone but its requester") from None


def _stamp(t: datetime) -> str:
    return t.strftime("%Y%m%dT%H%M%SZ")
