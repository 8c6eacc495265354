"""Alarms: the list (``alarm.read``), acknowledging one with a note (``alarm.ack``, audited), and the live feed as
Server-Sent Events (``alarm.read``).

Only the alarms of the caller's scope: an alarm of a channel is in scope when that device's channel is; an
alarm of a device itself (no channel) when the device is visible.  Times in: ISO 8601, Beijing time without
an offset; out: RFC 3339 in Beijing time (``+08:00``).  The alarms are kept by ``app.state.alarms``
(:class:`alarms.service.AlarmService`); without it the list is empty and the feed and acknowledging answer 503.

The feed (``GET /api/alarms/stream``, ``text/event-stream``): an ``alarm`` event per in-scope alarm as it is
recorded (``id`` the alarm's id, ``data`` the alarm as in the list), a comment line every
:data:`HEARTBEAT_S` seconds (proxies keep the connection, the client sees it alive), the caller's token checked
again at every heartbeat (a revoked or expired token ends the feed); it ends when the client goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from alarms.service import AlarmService
from alarms.types import AlarmRecord
from gbcore.ids import ChannelRef
from gbcore.log import get_logger
from ops_portal.access import Access, Scope
from ops_portal.deps import AccessDep, Auth, RegistryDep, client_ip, idle_limit, require_permission
from ops_portal.models import User
from ops_portal.schemas import ApiError, error_responses
from ops_portal.timewindow import beijing, parse_time

__all__ = ["HEARTBEAT_S", "AlarmOut", "alarm_out", "router"]

log = get_logger("gbops.portal.alarms")

router = APIRouter(tags=["alarms"], responses=error_responses(401, 403, 422))

AlarmReader = Annotated[User, Depends(require_permission("alarm.read"))]
AlarmHandler = Annotated[User, Depends(require_permission("alarm.ack"))]
AlarmIdPath = Annotated[int, Path(ge=1, le=2**63 - 1, description="报警编号 / alarm id")]
IdQuery = Annotated[str | None, Query(min_length=1, max_length=32, pattern=r"^[0-9A-Za-z]+$")]

#: Seconds between two heartbeat comments of the live feed.
HEARTBEAT_S = 15.0
#: How long the feed trusts one scope answer for a channel or device (seconds).
_SCOPE_TTL = 60.0


def _alarms(request: Request) -> AlarmService | None:
    return getattr(request.app.state, "alarms", None)


def _service(request: Request) -> AlarmService:
    service = _alarms(request)
    if service is None:
        raise ApiError(503, "alarms_unavailable", "报警服务未运行 / the alarm service is not running")
    return service


class AlarmOut(BaseModel):
    id: int
    device_id: str
    channel_id: str | None = Field(description="the device's channel that raised it; null: the device itself")
    priority: int | None = Field(description="1..4: level-1 (most urgent) to level-4 incident")
    method: int | str | None = Field(description="AlarmMethod: 1 phone, 2 device, 3 SMS, 4 GPS, 5 video, "
                                                 "6 device fault, 7 other")
    type: int | str | None = Field(description="AlarmType within the method (e.g. video 2 = motion)")
    time: str | None = Field(description="the alarm's time, RFC 3339 in Beijing time")
    description: str | None
    longitude: float | None
    latitude: float | None
    acknowledged: bool
    acknowledged_by: str | None = None
    acknowledged_at: str | None = None
    note: str | None = Field(None, description="the acknowledging note")
    received_at: str | None = None


class AlarmList(BaseModel):
    total: int
    offset: int
    limit: int
    items: list[AlarmOut]


def alarm_out(record: AlarmRecord) -> AlarmOut:
    """An :class:`alarms.types.AlarmRecord` as the API's item."""
    return AlarmOut(
        id=record.id, device_id=record.device_id, channel_id=record.channel_id, priority=record.priority,
        method=record.method, type=record.type, time=beijing(record.time), description=record.description,
        longitude=record.longitude, latitude=record.latitude, acknowledged=record.acknowledged,
        acknowledged_by=record.acknowledged_by, acknowledged_at=beijing(record.acknowledged_at), note=record.ack_note,
        received_at=beijing(record.received_at))


async def _allowed(registry: Any, scope: Scope, device_id: str, channel_id: str | None) -> bool:
    """Whether an alarm of ``device_id`` / ``channel_id`` is in ``scope``."""
    if scope.all:
        return True
    if channel_id and channel_id != device_id:
        return await registry.channel_access(ChannelRef(device_id, channel_id), scope) == "ok"
    return await registry.device_access(device_id, scope) == "ok"


async def _refs_filter(registry: Any, access: Access) -> frozenset[ChannelRef] | None:
    """The caller's channels (None: every channel)."""
    if access.scope.all:
        return None
    rows = await registry.scoped_channels(access.scope) or []
    return frozenset(ChannelRef(c.device_id, c.channel_id) for c in rows)


@router.get("/api/alarms", operation_id="alarms_list", summary="报警列表 / alarms", response_model=AlarmList)
async def list_alarms(
    user: AlarmReader,
    access: AccessDep,
    registry: RegistryDep,
    request: Request,
    device_id: IdQuery = None,
    channel_id: IdQuery = None,
    start: Annotated[str | None, Query(max_length=40, description="ISO 8601; no offset: Beijing time")] = None,
    end: Annotated[str | None, Query(max_length=40, description="ISO 8601; no offset: Beijing time")] = None,
    priority: Annotated[int | None, Query(ge=1, le=4, description="1..4 (1 most urgent)")] = None,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> AlarmList:
    """Newest first; only the alarms of channels (and devices) in your scope."""
    t0 = parse_time(start, "start") if start else None
    t1 = parse_time(end, "end") if end else None
    if t0 is not None and t1 is not None and t1 <= t0:
        raise ApiError(422, "bad_window", "结束时间必须晚于开始时间 / the end must be after the start")
    service = _alarms(request)
    if service is None:
        return AlarmList(total=0, offset=offset, limit=limit, items=[])
    refs = await _refs_filter(registry, access)
    if refs is not None and not refs:
        return AlarmList(total=0, offset=offset, limit=limit, items=[])
    total, items = await service.search(refs_filter=refs, device_id=device_id, channel_id=channel_id, start=t0,
                                        end=t1, priority=priority, limit=limit, offset=offset)
    # never trust one layer
    visible = [r for r in items if await _allowed(registry, access.scope, r.device_id, r.channel_id)]
    return AlarmList(total=total - (len(items) - len(visible)), offset=offset, limit=limit,
                     items=[alarm_out(r) for r in visible])


class AckIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str = Field("", max_length=500, description="处理说明 / what was done")


def _not_found(alarm_id: int) -> ApiError:
    return ApiError(404, "alarm_not_found", f"报警不存在 / no such alarm: {alarm_id}")


@router.post("/api/alarms/{alarm_id}/ack", operation_id="alarm_ack", summary="确认报警 / acknowledge an alarm",
             response_model=AlarmOut, responses=error_responses(404, 409, 503))
async def acknowledge(user: AlarmHandler, access: AccessDep, registry: RegistryDep, request: Request,
                      alarm_id: AlarmIdPath, body: AckIn) -> AlarmOut:
    """Marks the alarm handled, with a note; on the audit log (`alarm.ack`). An alarm outside your scope is
    answered as if it did not exist (404)."""
    service = _service(request)
    record = await service.get(alarm_id)
    if record is None or not await _allowed(registry, access.scope, record.device_id, record.channel_id):
        raise _not_found(alarm_id)
    note = body.note.strip()
    done = await service.acknowledge(alarm_id, user.username, note)
    if done is None:
        raise _not_found(alarm_id)
    out = alarm_out(done)
    audit = getattr(request.app.state, "audit", None)
    if audit is not None:
        from audit_log.log import Actor, Target

        target = Target("channel", ChannelRef(out.device_id, out.channel_id).key) if out.channel_id \
            else Target("device", out.device_id)
        try:
            await audit.record(actor=Actor.user(user), action="alarm.ack", target=target, client_ip=client_ip(request),
                               detail={"alarm_id": out.id, "device_id": out.device_id, "channel_id": out.channel_id,
                                       "priority": out.priority, "method": out.method, "type": out.type, "note": note})
        except Exception:
            log.exception("alarm.ack_audit_failed", alarm=alarm_id, user=user.username)
    return out


# ---------------------------------------------------------------------------------------------- live feed
class _ScopeCache:
    """Scope answers of one feed, per (device, channel), for :data:`_SCOPE_TTL` seconds."""

    def __init__(self, registry: Any, scope: Scope) -> None:
        self.registry = registry
        self.scope = scope
        self.known: dict[tuple[str, str | None], tuple[bool, float]] = {}

    async def allows(self, device_id: str, channel_id: str | None) -> bool:
        if self.scope.all:
            return True
        key = (device_id, channel_id)
        now = time.monotonic()
        hit = self.known.get(key)
        if hit is not None and now - hit[1] < _SCOPE_TTL:
            return hit[0]
        ok = await _allowed(self.registry, self.scope, device_id, channel_id)
        if len(self.known) > 4096:
            self.known.clear()
        self.known[key] = (ok, now)
        return ok


def _event(record: AlarmRecord) -> bytes:
    out = alarm_out(record)
    data = json.dumps(out.model_dump(), ensure_ascii=False, separators=(",", ":"))
    return f"id: {out.id}\nevent: alarm\ndata: {data}\n\n".encode()


async def _token_valid(request: Request, token: str) -> bool:
    from ops_portal.auth import resolve_token

    try:  # the idle limit applies; the stream itself is not a use (touch=False)
        async with request.app.state.sessionmaker() as db:
            ctx = await resolve_token(db, token, idle=idle_limit(request), touch=False)
    except ApiError:
        return False
    return not ctx.user.must_change_password


async def _feed(request: Request, service: AlarmService, cache: _ScopeCache, token: str,
                user: str) -> AsyncIterator[bytes]:
    queue: asyncio.Queue[AlarmRecord | None] = asyncio.Queue(maxsize=256)
    subscription = service.subscribe()

    async def pump() -> None:
        try:
            async for record in subscription:
                with contextlib.suppress(asyncio.QueueFull):  # a stuck client loses alarms, not memory
                    queue.put_nowait(record)
        finally:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)

    task = asyncio.create_task(pump())
    log.info("alarms.feed_open", user=user)
    try:
        yield b"retry: 3000\n: connected\n\n"
        while True:
            try:
                record = await asyncio.wait_for(queue.get(), timeout=HEARTBEAT_S)
            except TimeoutError:
                if await request.is_disconnected() or not await _token_valid(request, token):
                    return
                yield b": heartbeat\n\n"
                continue
            if record is None:  # the service ended the subscription (shutdown)
                return
            if await cache.allows(record.device_id, record.channel_id):
                yield _event(record)
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        await subscription.aclose()
        log.info("alarms.feed_closed", user=user)


@router.get("/api/alarms/stream", operation_id="alarms_stream", summary="报警实时推送（SSE）/ live alarms (SSE)",
            response_class=StreamingResponse, responses={200: {"content": {"text/event-stream": {}}, "description":
                                                               "Server-Sent Events: `alarm` events, heartbeats"},
                                                         **error_responses(503)})
async def alarm_stream(user: AlarmReader, ctx: Auth, access: AccessDep, registry: RegistryDep,
                       request: Request) -> StreamingResponse:
    """`text/event-stream`: an `alarm` event (`data`: the alarm as in `GET /api/alarms`) for each new alarm in
    your scope, a comment line every 15 s; ends when you disconnect or your token ends. Read it with the
    bearer token (e.g. `fetch` and a stream reader)."""
    service = _service(request)
    token = request.headers.get("authorization", "").partition(" ")[2].strip()
    cache = _ScopeCache(registry, access.scope)
    return StreamingResponse(_feed(request, service, cache, token, user.username), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
