"""History video: what was recorded where, the platform's recording plan, playback and its control.

* ``GET .../records`` - the device's own files (a GB/T 28181 RecordInfo query) and the platform's segments
  of a time range (``playback.view``);
* ``GET/PUT .../recording`` - the platform's recording plan of the channel with its state and storage
  (``playback.view`` to read, ``record.manage`` to change);
* ``POST .../playback`` - a viewer session of a time range, like live (``playback.view``), its outputs the
  live ones (``/flv/{id}.flv``, ``/whep/{id}``, single-use URL tokens); ``playback.start`` / ``playback.stop``
  on the audit log;
* ``GET /api/sessions/{id}`` and ``POST /api/sessions/{id}/control`` - the session's state, pause / resume /
  seek / speed, for its owner only (others: 404, as if it did not exist; holders of ``user.manage`` too).

Every channel route exists as ``/api/devices/{device_id}/channels/{channel_id}/...`` and as the shorthand
``/api/channels/{channel_id}/...``, scope checked for that exact channel.  Times in: ISO 8601, Beijing time
when there is no offset.  Times out: RFC 3339 in Beijing time (``+08:00``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, Field

from gbcore.ids import ChannelRef
from gbcore.log import get_logger
from gbcore.timeutil import from_device_time
from ops_portal.deps import (
    DEVICE_PATH,
    AccessDep,
    AuditDep,
    ScopedChannel,
    SettingsDep,
    SipDep,
    client_ip,
    device_channel_path,
    device_online,
    require_permission,
)
from ops_portal.live import live_audit
from ops_portal.live.media_errors import media_error
from ops_portal.models import User
from ops_portal.schemas import ApiError, error_responses
from ops_portal.timewindow import beijing, parse_window

__all__ = ["router", "source_name"]

log = get_logger("gbops.portal.history")

router = APIRouter(tags=["history"], responses=error_responses(401, 403, 422))

PlaybackViewer = Annotated[User, Depends(require_permission("playback.view"))]
RecordManager = Annotated[User, Depends(require_permission("record.manage"))]
SessionIdPath = Annotated[str, Path(min_length=1, max_length=64, description="会话编号 / session id")]

#: The longest range one record query may cover (days): a month of a device's files.
RECORD_QUERY_MAX_DAYS = 31
SCALES = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)

def source_name(session: Any) -> str | None:
    """A playback session's source, ``device`` or ``platform`` (None for live)."""
    return getattr(session, "history_source", None)


def _media(request: Request) -> Any:
    media = getattr(request.app.state, "media", None)
    if media is None:
        raise ApiError(503, "media_unavailable", "媒体服务未运行 / the media service is not running")
    return media


def _recordings(request: Request) -> Any:
    service = getattr(request.app.state, "recordings", None)
    if service is None:
        raise ApiError(503, "recording_unavailable", "平台录像服务未运行 / platform recording is not running")
    return service


async def _require_online(sip: Any, device_id: str) -> None:
    if sip is None or not await device_online(sip, device_id):
        raise ApiError(409, "device_offline", f"设备不在线 / the device is offline: {device_id}")


# ---------------------------------------------------------------------------------------------- records
class RecordItemOut(BaseModel):
    start: str | None = Field(description="RFC 3339, Beijing time (+08:00); null when the device sent no "
                                          "readable time")
    end: str | None
    source: Literal["device", "platform"]
    type: str | None = Field(description="device: its Type (time, alarm, manual, ...); platform: time")
    size: int | None = Field(description="bytes (device: its FileSize when reported; platform: one stored copy)")
    file_path: str | None = None
    name: str | None = Field(None, description="the device's Name of the file")
    open: bool = Field(False, description="platform: the segment is still being written (end = now)")


class RecordSourceError(BaseModel):
    source: Literal["device", "platform"]
    error: str
    message: str


class RecordsOut(BaseModel):
    items: list[RecordItemOut] = Field(description="sorted by start; device files as the device reported them "
                                                   "(not merged)")
    complete: bool = Field(description="false when the device's answer timed out before SumNum items arrived "
                                        "(what arrived is listed) or a source could not be asked")
    sum_num: int = Field(description="device: its SumNum; platform: the number of segments; all: both added")
    start: str
    end: str
    errors: list[RecordSourceError] = Field(default_factory=list, description="source=all: a source that could "
                                            "not be asked (the device offline, platform recording not running)")


def _device_items(query: Any) -> list[RecordItemOut]:
    out = []
    for item in getattr(query, "items", []) or []:
        start, end = item.start, item.end  # naive device (Beijing) time, or None
        out.append(RecordItemOut(start=beijing(from_device_time(start)) if start else None,
                                 end=beijing(from_device_time(end)) if end else None, source="device",
                                 type=item.type, size=item.file_size, file_path=item.file_path,
                                 name=getattr(item, "name", None)))
    return out


def _platform_items(segments: list[Any]) -> list[RecordItemOut]:
    return [RecordItemOut(start=beijing(s.start), end=beijing(s.end), source="platform", type="time",
                          size=s.bytes, file_path=s.path or None, open=bool(s.open)) for s in segments]


async def _device_records(request: Request, sip: Any, ref: ChannelRef, start: datetime, end: datetime,
                          record_type: str) -> Any:
    from sip_server.service import DeviceNotReachable, QueryError

    await _require_online(sip, ref.device_id)
    timeout = request.app.state.settings.record_query_timeout
    try:
        return await sip.record_info(ref.device_id, ref.channel_id, start, end, type=record_type, timeout=timeout)
    except DeviceNotReachable:
        raise ApiError(409, "device_offline", f"设备不在线 / the device is offline: {ref.device_id}") from None
    except QueryError as exc:
        log.warning("records.device_query_failed", channel=ref.key, error=str(exc))
        raise ApiError(502, "record_query_failed", f"设备拒绝录像查询 / the device refused the record query: "
                       f"{exc}") from None


@router.get(device_channel_path("/api/channels/{channel_id}/records"), operation_id="records_device_channel",
            summary="录像检索（设备 + 通道）/ recordings of a device's channel", response_model=RecordsOut,
            dependencies=[DEVICE_PATH], responses=error_responses(404, 409, 502, 503))
@router.get("/api/channels/{channel_id}/records", operation_id="records",
            summary="录像检索（通道编码唯一时）/ recordings of a channel (its id unique)", response_model=RecordsOut,
            responses=error_responses(404, 409, 502, 503))
async def list_records(
    user: PlaybackViewer,
    sip: SipDep,
    request: Request,
    ref: ScopedChannel,
    start: Annotated[str, Query(max_length=40, description="ISO 8601；无时区时为北京时间 / ISO 8601, Beijing "
                                "time when without an offset")],
    end: Annotated[str, Query(max_length=40, description="ISO 8601 (as start)")],
    source: Annotated[Literal["device", "platform", "all"], Query(description="device: the device's own "
                      "storage (RecordInfo); platform: the platform's recording; all: both")] = "all",
    record_type: Annotated[Literal["all", "time", "alarm", "manual"], Query(alias="type", description="device "
                           "record type")] = "all",
) -> RecordsOut:
    """What is recorded in `[start, end)`: the device's files (a RecordInfo query; a device answering in
    several messages is reassembled; a timeout keeps what arrived and says `complete: false`) and the
    platform's own segments (the open one with its current end). At most 31 days per query."""
    s, e = parse_window(start, end, max_hours=RECORD_QUERY_MAX_DAYS * 24, future_ok=True)
    items: list[RecordItemOut] = []
    errors: list[RecordSourceError] = []
    complete, sum_num = True, 0
    if source in ("device", "all"):
        try:
            query = await _device_records(request, sip, ref, s, e, record_type)
        except ApiError as exc:
            if source == "device":
                raise
            errors.append(RecordSourceError(source="device", error=exc.error, message=exc.message))
            complete = False
        else:
            items += _device_items(query)
            complete = complete and bool(getattr(query, "complete", True))
            sum_num += int(getattr(query, "sum_num", 0) or 0)
    if source in ("platform", "all"):
        try:
            segments = list(await _recordings(request).segments(ref, s, e))
        except ApiError as exc:
            if source == "platform":
                raise
            errors.append(RecordSourceError(source="platform", error=exc.error, message=exc.message))
            complete = False
        else:
            items += _platform_items(segments)
            sum_num += len(segments)
    items.sort(key=lambda i: (i.start is None, i.start or "", i.source))
    return RecordsOut(items=items, complete=complete, sum_num=sum_num, start=beijing(s) or "", end=beijing(e) or "",
                      errors=errors)


# ---------------------------------------------------------------------------------------------- recording
HHMM = r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$"


class ScheduleWindowIn(BaseModel):
    days: list[Annotated[int, Field(ge=1, le=7)]] = Field(min_length=1, max_length=7,
                                                          description="ISO weekdays 1 = 周一 Monday .. 7 = 周日 Sunday")
    from_: str = Field(alias="from", pattern=HHMM, description="HH:MM, Beijing time")
    to: str = Field(pattern=HHMM, description="HH:MM, Beijing time (24:00 allowed; to <= from crosses midnight)")

    model_config = {"populate_by_name": True}


class RecordingPlanIn(BaseModel):
    mode: Literal["continuous", "schedule", "off"]
    schedule: list[ScheduleWindowIn] = Field(default_factory=list, max_length=50)
    stream: Literal["main", "sub"] = "main"


class ScheduleWindowOut(BaseModel):
    days: list[int]
    from_: str = Field(serialization_alias="from")
    to: str


class RecordingOut(BaseModel):
    device_id: str
    channel_id: str
    mode: str = Field(description="continuous | schedule | off")
    schedule: list[ScheduleWindowOut]
    stream: str
    updated_by: str | None = None
    updated_at: str | None = None
    state: str = Field(description="recording | waiting | failed | off")
    reason: str | None = Field(None, description="why waiting or failed (中文 / English)")
    bytes_stored: int
    seconds_stored: float
    segments: int
    oldest: str | None = Field(None, description="start of the oldest stored segment (RFC 3339, +08:00)")
    newest_end: str | None = None
    retention_days: int


async def _recording_out(service: Any, ref: ChannelRef, plan: Any | None = None) -> RecordingOut:
    from media_relay.recording.types import RecordingError

    try:
        plan = plan or await service.get_plan(ref)
        status = await service.status(ref)
    except RecordingError as exc:
        raise ApiError(422, exc.code, str(exc)) from None
    return RecordingOut(
        device_id=ref.device_id, channel_id=ref.channel_id, mode=plan.mode,
        schedule=[ScheduleWindowOut(days=list(w.days), from_=w.start, to=w.end) for w in plan.schedule],
        stream=plan.stream, updated_by=plan.updated_by, updated_at=beijing(plan.updated_at),
        state=status.state, reason=status.reason, bytes_stored=status.bytes_stored,
        seconds_stored=status.seconds_stored, segments=status.segments, oldest=beijing(status.oldest),
        newest_end=beijing(status.newest_end), retention_days=status.retention_days)


@router.get(device_channel_path("/api/channels/{channel_id}/recording"), operation_id="recording_get_device_channel",
            summary="平台录像计划与状态（设备 + 通道）/ a device's channel: recording plan and state",
            response_model=RecordingOut, response_model_by_alias=True, dependencies=[DEVICE_PATH],
            responses=error_responses(404, 409, 503))
@router.get("/api/channels/{channel_id}/recording", operation_id="recording_get",
            summary="平台录像计划与状态（通道编码唯一时）/ recording plan and state (channel id unique)",
            response_model=RecordingOut, response_model_by_alias=True, responses=error_responses(404, 409, 503))
async def get_recording(user: PlaybackViewer, request: Request, ref: ScopedChannel) -> RecordingOut:
    """The platform's recording plan of the channel, the recorder's state (recording / waiting / failed with
    the reason), bytes and seconds stored, the oldest segment and the retention in days."""
    return await _recording_out(_recordings(request), ref)


@router.put(device_channel_path("/api/channels/{channel_id}/recording"), operation_id="recording_put_device_channel",
            summary="设置平台录像计划（设备 + 通道）/ set a device's channel's recording plan",
            response_model=RecordingOut, response_model_by_alias=True, dependencies=[DEVICE_PATH],
            responses=error_responses(404, 409, 503))
@router.put("/api/channels/{channel_id}/recording", operation_id="recording_put",
            summary="设置平台录像计划（通道编码唯一时）/ set the recording plan (channel id unique)",
            response_model=RecordingOut, response_model_by_alias=True, responses=error_responses(404, 409, 503))
async def put_recording(user: RecordManager, audit: AuditDep, request: Request, ref: ScopedChannel,
                        body: RecordingPlanIn) -> RecordingOut:
    """`continuous`, `schedule` (windows of ISO weekdays and `HH:MM`–`HH:MM`, Beijing time) or `off` (closes
    the open segment at once); `stream` main or sub. Recorded as `record.plan` on the audit log."""
    from media_relay.recording.types import RecordingError, RecordPlan, ScheduleWindow

    service = _recordings(request)
    if body.mode == "schedule" and not body.schedule:
        raise ApiError(422, "bad_schedule", "按计划录像需要至少一个时间段 / a schedule needs at least one window")
    plan = RecordPlan(channel=ref, mode=body.mode, stream=body.stream,
                      schedule=tuple(ScheduleWindow(tuple(sorted(set(w.days))), w.from_, w.to) for w in body.schedule)
                      if body.mode == "schedule" else ())
    try:
        saved = await service.set_plan(plan, user.username)
    except RecordingError as exc:
        raise ApiError(422, exc.code, str(exc)) from None
    if audit is not None:
        from audit_log.log import Actor, Target

        try:
            await audit.record(actor=Actor.user(user), action="record.plan", target=Target("channel", ref.key),
                               client_ip=client_ip(request),
                               detail={"device_id": ref.device_id, "channel_id": ref.channel_id, "mode": plan.mode,
                                       "stream": plan.stream,
                                       "schedule": [{"days": list(w.days), "from": w.start, "to": w.end}
                                                    for w in plan.schedule]})
        except Exception:
            log.exception("record.plan_audit_failed", channel=ref.key, user=user.username)
    return await _recording_out(service, ref, saved if saved is not None else plan)


# ---------------------------------------------------------------------------------------------- playback
class PlaybackRequest(BaseModel):
    start: str = Field(max_length=40, description="ISO 8601；无时区时为北京时间 / ISO 8601, Beijing time when "
                       "without an offset")
    end: str = Field(max_length=40)
    source: Literal["device", "platform"] = Field("device", description="device: the device's own storage "
                                                  "(s=Playback); platform: the platform's recording")
    transport: Literal["udp", "tcp-passive", "tcp-active"] | None = Field(
        default=None, description="媒体传输方式 / media transport (device source; default the live transport)")


class PlaybackOut(BaseModel):
    session_id: str
    kind: Literal["playback"] = "playback"
    whep_url: str
    flv_url: str
    expires_at: str = Field(description="a player must attach before this time (RFC 3339)")
    channel_id: str
    device_id: str
    start: str = Field(description="the window's start (RFC 3339, +08:00)")
    end: str
    source: str
    codec: str | None = None
    width: int | None = None
    height: int | None = None
    watermark: bool | None = None
    watermark_id: str | None = None


@router.post(device_channel_path("/api/channels/{channel_id}/playback"), operation_id="playback_start_device_channel",
             status_code=201, summary="录像回放（设备 + 通道）/ play back a device's channel", response_model=PlaybackOut,
             dependencies=[DEVICE_PATH], responses=error_responses(404, 409, 502, 503, 504))
@router.post("/api/channels/{channel_id}/playback", operation_id="playback_start", status_code=201,
             summary="录像回放（通道编码唯一时）/ play back a channel (its id unique)", response_model=PlaybackOut,
             responses=error_responses(404, 409, 502, 503, 504))
async def start_playback(user: PlaybackViewer, access: AccessDep, sip: SipDep, settings: SettingsDep,
                         request: Request, ref: ScopedChannel, body: PlaybackRequest) -> PlaybackOut:
    """A viewer session of `[start, end)` from the device's storage or the platform's, watermarked like live.
    Open `whep_url` or `flv_url` within `expires_at`; control it with `POST /api/sessions/{id}/control`.
    The end of the recording ends the output. 422 `bad_window` (end before start, start in the future),
    422 `window_too_long` (over `GBOPS_PLAYBACK_MAX_WINDOW_HOURS`), 409 `device_offline`, 502
    `device_refused` (with the device's `sip_status`)."""
    start, end = parse_window(body.start, body.end, max_hours=settings.playback_max_window_hours)
    media = _media(request)
    if body.source == "device":
        await _require_online(sip, ref.device_id)
    elif getattr(request.app.state, "recordings", None) is None:
        raise ApiError(503, "recording_unavailable", "平台录像服务未运行 / platform recording is not running")
    transport = body.transport or settings.live_transport
    from media_relay.stream import MediaError
    from media_relay.viewers import TransformCapacityExceeded, TransformUnavailable, Viewer

    viewer = Viewer(user_id=user.id, username=user.username, display_name=user.display_name, phone=user.phone,
                    client_ip=client_ip(request), roles=tuple(getattr(access, "roles", ())))
    try:
        session = await media.open_viewer(ref, viewer, kind="playback", transport=transport, window=(start, end),
                                          source=body.source)
    except TransformUnavailable as exc:
        raise ApiError(503, "watermark_font_missing", str(exc)) from None
    except TransformCapacityExceeded as exc:
        retry = str(settings.watermark_retry_after)
        raise ApiError(503, "watermark_capacity", f"本节点的水印编码器已全部占用（{exc.limit} 路），请 {retry} 秒后"
                       f"重试 / all {exc.limit} watermark encoders of this node are busy: retry in {retry} s",
                       headers={"Retry-After": retry}) from None
    except MediaError as exc:
        log.warning("playback.failed", channel=ref.key, user=user.username, code=exc.code, reason=str(exc))
        raise media_error(exc) from None
    codec, params = session.codec, session.params
    audit = getattr(request.app.state, "audit", None)
    if audit is not None:
        try:
            await live_audit.record_playback_start(audit, user=user, session=session, transport=transport,
                                                   client_ip=client_ip(request), codec=codec)
        except Exception:
            media.close_session(session.session_id, "audit log unavailable")
            log.exception("playback.audit_failed", channel=ref.key, user=user.username)
            raise ApiError(503, "audit_unavailable", "审计日志不可用，无法回放 / the audit log is unavailable, "
                           "the playback cannot start") from None
    from ops_portal.live.routes import output_url_parts

    url_token, base = output_url_parts(session, user.id)  # a session on another media node: its URL (issue 17)
    plan = session.plan
    return PlaybackOut(session_id=session.session_id, whep_url=f"{base}/whep/{session.session_id}?t={url_token}",
                       flv_url=f"{base}/flv/{session.session_id}.flv?t={url_token}",
                       expires_at=beijing(datetime.fromtimestamp(session.attach_deadline, UTC)) or "",
                       channel_id=ref.channel_id, device_id=ref.device_id, start=beijing(start) or "",
                       end=beijing(end) or "", source=body.source, codec=codec,
                       width=getattr(params, "width", None), height=getattr(params, "height", None),
                       watermark=plan.on if plan is not None else None,
                       watermark_id=plan.code if plan is not None else None)


# ---------------------------------------------------------------------------------------------- sessions
class ControlRequest(BaseModel):
    action: Literal["pause", "resume", "seek", "speed"]
    position: float | None = Field(None, ge=0, le=31 * 24 * 3600, description="seek: seconds from the window's "
                                   "start")
    scale: float | None = Field(None, description="speed: 0.25, 0.5, 1, 2, 4 or 8")


class MovedOut(BaseModel):
    node_id: str = Field(description="the media node the session now lives on")
    flv_url: str = Field(description="HTTP-FLV of the session on that node (single-use token)")
    whep_url: str = Field(description="WHEP of the session on that node (single-use token)")


class SessionOut(BaseModel):
    session_id: str
    kind: str = Field(description="live | playback")
    state: str | None = None
    position: float | None = Field(None, description="playback: seconds from the window's start")
    scale: float | None = None
    paused: bool | None = None
    start: str | None = Field(None, description="playback: the window's start (RFC 3339, +08:00)")
    end: str | None = None
    source: str | None = None
    device_id: str
    channel_id: str
    output: str | None = Field(None, description="flv | whep once a player attached")
    moved: MovedOut | None = Field(None, description="the session moved to another media node (a drain, a rolling "
                                   "restart): open its `flv_url` / `whep_url` while the old output still plays, "
                                   "switch on the first frame, then close the old one")


def _owned_session(media: Any, session_id: str, user: User, access: Any) -> Any:
    s = media.sessions.get(session_id)
    if s is None or (s.user_id != user.id and not access.can("user.manage")):
        raise ApiError(404, "session_not_found", "会话不存在 / no such session")
    return s


def _when(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value
    try:
        return datetime.fromtimestamp(float(value), UTC)
    except (TypeError, ValueError, OverflowError):
        return None


def _session_out(media: Any, s: Any) -> SessionOut:
    state = media.session_state(s.session_id)
    if state is None:  # ended meanwhile
        raise ApiError(404, "session_not_found", "会话不存在 / no such session")
    window = state.get("window") or (None, None)
    kind = state.get("kind") or getattr(s, "kind", "live")
    return SessionOut(session_id=s.session_id, kind=kind, state=state.get("state"), position=state.get("position"),
                      scale=state.get("scale"), paused=state.get("paused"), start=beijing(_when(window[0])),
                      end=beijing(_when(window[1])), source=state.get("source") or source_name(s),
                      device_id=s.channel.device_id, channel_id=s.channel.channel_id, output=s.output,
                      moved=_moved(media, s))


def _moved(media: Any, s: Any) -> MovedOut | None:
    """Where a session moved to (a portal placing sessions on media nodes: ``ClusterMedia.moved_urls``)."""
    moved_urls = getattr(media, "moved_urls", None)
    urls = moved_urls(s.session_id) if moved_urls is not None else None
    return MovedOut(**urls) if urls else None


@router.get("/api/sessions/{session_id}", operation_id="session_get", summary="观看会话状态 / a viewer session's state",
            response_model=SessionOut, responses=error_responses(404, 503))
async def get_session(user: PlaybackViewer, access: AccessDep, request: Request,
                      session_id: SessionIdPath) -> SessionOut:
    """`kind` (live / playback), `state`, `position` (seconds from the window's start), `scale`, `paused`.
    Only your own sessions (others answer 404)."""
    media = _media(request)
    return _session_out(media, _owned_session(media, session_id, user, access))


@router.post("/api/sessions/{session_id}/control", operation_id="session_control",
             summary="回放控制：暂停、继续、跳转、倍速 / playback control: pause, resume, seek, speed",
             response_model=SessionOut, responses=error_responses(404, 409, 502, 503))
async def control_session(user: PlaybackViewer, access: AccessDep, request: Request, session_id: SessionIdPath,
                          body: ControlRequest) -> SessionOut:
    """`pause`, `resume`, `seek` (`position`: seconds from the window's start), `speed` (`scale`: 0.25, 0.5,
    1, 2, 4, 8; 4 and above show keyframes only, without sound). Only your own playback sessions; a live
    session answers 409 `not_playback`."""
    media = _media(request)
    s = _owned_session(media, session_id, user, access)
    if getattr(s, "kind", "live") != "playback":
        raise ApiError(409, "not_playback", "只有回放会话可以控制 / only a playback session can be controlled")
    if body.action == "seek":
        if body.position is None:
            raise ApiError(422, "bad_position", "跳转需要 position（距开始的秒数）/ seek needs position (seconds "
                           "from the window's start)")
        window = getattr(s, "window", None)
        if window and window[0] is not None and window[1] is not None:
            length = (_when(window[1]) - _when(window[0])).total_seconds()  # type: ignore[operator]
            if body.position >= length:
                raise ApiError(422, "bad_position", f"跳转位置超出时间段（{length:g} 秒）/ the position is past the "
                               f"window's end ({length:g} s)")
    if body.action == "speed" and body.scale not in SCALES:
        raise ApiError(422, "bad_scale", "倍速只能是 0.25、0.5、1、2、4、8 / the speed must be one of 0.25, 0.5, 1, "
                       "2, 4, 8")
    from media_relay.stream import MediaError

    try:
        await media.control(session_id, body.action, position=body.position, scale=body.scale)
    except MediaError as exc:
        log.warning("playback.control_failed", session=session_id, action=body.action, code=exc.code)
        raise media_error(exc) from None
    audit = getattr(request.app.state, "audit", None)
    if audit is not None:
        from audit_log.log import Actor, Target

        value = body.position if body.action == "seek" else body.scale if body.action == "speed" else None
        try:
            await audit.record(actor=Actor.user(user), action="playback.control",
                               target=Target("channel", s.channel.key), client_ip=client_ip(request),
                               session_id=session_id,
                               detail={"device_id": s.channel.device_id, "channel_id": s.channel.channel_id,
                                       "command": body.action, "value": value})
        except Exception:
            log.exception("playback.control_audit_failed", session=session_id)
    return _session_out(media, s)

