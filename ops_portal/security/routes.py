"""Security monitoring: events, alerts (acknowledge with a note), blocked addresses, the live feed (SSE).

Reading needs ``security.read``; acknowledging an alert and lifting a block ``security.manage`` (both on the
audit log: ``security.alert_ack``, ``security.unblock``).  The data comes from the platform's monitor
(``app.state.security``, a :class:`security.monitor.SecurityMonitor`); without one these routes answer 503.
Times in: ISO 8601, Beijing time when without an offset; out: RFC 3339 in Beijing time (``+08:00``).

The feed (``GET /api/security/stream``, ``text/event-stream``): ``alert`` events (a new alert, or one that was
acknowledged; ``data`` as in the alert list), ``event`` events (``data`` as in the event list), ``block`` and
``unblock`` events, a comment line every :data:`HEARTBEAT_S` seconds; the caller's token is checked again at
every heartbeat, and the feed ends when it is no longer valid or the client goes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import StreamingResponse

from gbcore.log import get_logger
from ops_portal.deps import AccessDep, client_ip, require_permission
from ops_portal.models import User
from ops_portal.schemas import ApiError, error_responses
from ops_portal.security.schemas import (
    AckIn,
    AlertList,
    AlertOut,
    BlockList,
    BlockOut,
    EventList,
    EventOut,
    KindOut,
    RuleOut,
    Vocabulary,
)
from ops_portal.timewindow import beijing, parse_time
from security.events import EVENT_KINDS, SEVERITIES, SEVERITY_WORDS

__all__ = ["HEARTBEAT_S", "router"]

log = get_logger("gbops.portal.security")

router = APIRouter(tags=["security"], responses=error_responses(401, 403, 422, 503))

SecurityReader = Annotated[User, Depends(require_permission("security.read"))]
SecurityManager = Annotated[User, Depends(require_permission("security.manage"))]
AlertIdPath = Annotated[int, Path(ge=1, le=2**63 - 1, description="告警编号 / alert id")]
TextQuery = Annotated[str | None, Query(min_length=1, max_length=64)]
TimeQuery = Annotated[str | None, Query(max_length=40, description="ISO 8601; no offset: Beijing time")]

#: Rules keyed by a device: their alerts name a device (hidden from callers without the full scope).
_DEVICE_RULES = frozenset({"device_address_flapping", "clock_skew"})

#: Seconds between two heartbeat comments of the live feed.
HEARTBEAT_S = 15.0
_STATE_ZH = {"open": "未处理", "acknowledged": "已确认"}


def _running(request: Request) -> Any | None:
    monitor = getattr(request.app.state, "security", None)
    return monitor if monitor is not None and hasattr(monitor, "events") else None


def _monitor(request: Request) -> Any:
    monitor = _running(request)
    if monitor is None:
        raise ApiError(503, "security_unavailable", "安全监控未运行 / the security monitor is not running")
    return monitor


def _restrict(item: dict[str, Any], full_scope: bool) -> dict[str, Any] | None:
    """What a caller without the full scope may see of an event or alert: nothing that names a device (None:
    nothing at all)."""
    if full_scope:
        return item
    if item.get("device_id") or item.get("rule") in _DEVICE_RULES:
        return None
    detail = {k: v for k, v in (item.get("detail") or {}).items() if k != "device_id"}
    return {**item, "detail": detail}


def _severity_zh(severity: str) -> str:
    return SEVERITY_WORDS.get(severity, (severity, severity))[0]


def event_out(item: dict[str, Any]) -> EventOut:
    return EventOut(**{**item, "time": beijing(item["time"]), "severity_zh": _severity_zh(item["severity"])})


def alert_out(item: dict[str, Any]) -> AlertOut:
    return AlertOut(**{**item, "first_at": beijing(item["first_at"]), "last_at": beijing(item["last_at"]),
                       "ack_at": beijing(item["ack_at"]), "blocked_until": beijing(item["blocked_until"]),
                       "severity_zh": _severity_zh(item["severity"]),
                       "state_zh": _STATE_ZH.get(item["state"], item["state"])})


def block_out(item: dict[str, Any]) -> BlockOut:
    return BlockOut(address=item["address"], until=beijing(item["until"]) or "", reason=item["reason"],
                    alert_id=item["alert_id"], created_at=beijing(item.get("created_at")))


def _window(since: str | None, until: str | None) -> tuple[Any, Any]:
    t0 = parse_time(since, "since") if since else None
    t1 = parse_time(until, "until") if until else None
    if t0 is not None and t1 is not None and t1 <= t0:
        raise ApiError(422, "bad_window", "结束时间必须晚于开始时间 / until must be after since")
    return t0, t1


def _check_choice(value: str | None, choices: Any, name: str) -> None:
    if value is not None and value not in choices:
        raise ApiError(422, f"bad_{name}", f"{name} 取值无效 / unknown {name}: {value[:64]}")


@router.get("/api/security/vocabulary", operation_id="security_vocabulary",
            summary="安全事件类型与告警规则 / event kinds and alert rules", response_model=Vocabulary)
async def vocabulary(user: SecurityReader, request: Request) -> Vocabulary:
    """Every event kind and rule with its words and thresholds (what the console's filters show)."""
    monitor = getattr(request.app.state, "security", None)
    rules = list(getattr(monitor, "rules", {}).values())
    return Vocabulary(
        kinds=[KindOut(kind=k, zh=zh, en=en, severity=sev) for k, (zh, en, sev) in EVENT_KINDS.items()],
        rules=[RuleOut(name=r.name, zh=r.zh, en=r.en, text_zh=r.describe()[0], text_en=r.describe()[1],
                       kinds=sorted(r.kinds), key=r.key, threshold=r.threshold, window_s=r.window_s,
                       severity=r.severity, autoblock=r.autoblock, distinct=r.distinct) for r in rules],
        severities={s: _severity_zh(s) for s in SEVERITIES}, autoblock=bool(getattr(monitor, "autoblock", False)))


@router.get("/api/security/events", operation_id="security_events", summary="安全事件 / security events",
            response_model=EventList)
async def list_events(
    user: SecurityReader,
    access: AccessDep,
    request: Request,
    kind: TextQuery = None,
    severity: TextQuery = None,
    since: TimeQuery = None,
    until: TimeQuery = None,
    source_ip: TextQuery = None,
    user_name: Annotated[str | None, Query(alias="user", min_length=1, max_length=64)] = None,
    device_id: TextQuery = None,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> EventList:
    """Newest first.  A caller without the full scope sees only the events that name no device."""
    _check_choice(kind, EVENT_KINDS, "kind")
    _check_choice(severity, SEVERITIES, "severity")
    t0, t1 = _window(since, until)
    monitor = _running(request)
    if monitor is None:
        return EventList(total=0, offset=offset, limit=limit, items=[])
    full = access.scope.all
    total, items = await monitor.events(kind=kind, severity=severity, since=t0, until=t1, source_ip=source_ip,
                                        user=user_name, device_id=device_id, offset=offset, limit=limit,
                                        without_devices=not full)
    shown = [x for x in (_restrict(i, full) for i in items) if x is not None]
    return EventList(total=total, offset=offset, limit=limit, items=[event_out(i) for i in shown])


@router.get("/api/security/alerts", operation_id="security_alerts", summary="安全告警 / security alerts",
            response_model=AlertList)
async def list_alerts(
    user: SecurityReader,
    access: AccessDep,
    request: Request,
    state: Annotated[str | None, Query(pattern="^(open|acknowledged)$")] = None,
    rule: TextQuery = None,
    severity: TextQuery = None,
    since: TimeQuery = None,
    until: TimeQuery = None,
    source_ip: TextQuery = None,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> AlertList:
    """Newest first; `state=open` for those not yet acknowledged.  A caller without the full scope does not see
    the alerts about one device (clock skew, address changes) nor the device ids in the others."""
    _check_choice(severity, SEVERITIES, "severity")
    t0, t1 = _window(since, until)
    monitor = _running(request)
    if monitor is None:
        return AlertList(total=0, offset=offset, limit=limit, items=[])
    full = access.scope.all
    total, items = await monitor.alerts(state=state, rule=rule, severity=severity, since=t0, until=t1,
                                        source_ip=source_ip, offset=offset, limit=limit, without_devices=not full)
    shown = [x for x in (_restrict(i, full) for i in items) if x is not None]
    return AlertList(total=total, offset=offset, limit=limit, items=[alert_out(i) for i in shown])


async def _audit(request: Request, user: User, action: str, target: tuple[str, str], detail: dict[str, Any]) -> None:
    audit = getattr(request.app.state, "audit", None)
    if audit is None:
        return
    from audit_log.log import Actor, Target

    try:
        await audit.record(actor=Actor.user(user), action=action, target=Target(*target),
                           client_ip=client_ip(request), detail=detail)
    except Exception:
        log.exception("security.audit_failed", action=action, user=user.username)


@router.post("/api/security/alerts/{alert_id}/ack", operation_id="security_alert_ack",
             summary="确认安全告警 / acknowledge a security alert", response_model=AlertOut,
             responses=error_responses(404, 409))
async def acknowledge(user: SecurityManager, request: Request, alert_id: AlertIdPath, body: AckIn) -> AlertOut:
    """Marks the alert handled with a note (required); on the audit log (`security.alert_ack`)."""
    monitor = _monitor(request)
    note = body.note.strip()
    if not note:
        raise ApiError(422, "note_required", "请填写处理说明 / a note is required")
    current = await monitor.get_alert(alert_id)
    if current is None:
        raise ApiError(404, "alert_not_found", f"告警不存在 / no such alert: {alert_id}")
    if current["state"] == "acknowledged":
        raise ApiError(409, "alert_acknowledged", "该告警已被确认 / the alert was already acknowledged")
    done = await monitor.acknowledge(alert_id, user.username, note)
    if done is None:
        raise ApiError(404, "alert_not_found", f"告警不存在 / no such alert: {alert_id}")
    await _audit(request, user, "security.alert_ack", ("security_alert", str(alert_id)),
                 {"alert_id": alert_id, "rule": done["rule"], "key": done["key"], "note": note})
    return alert_out(done)


@router.get("/api/security/blocks", operation_id="security_blocks", summary="已封禁地址 / blocked addresses",
            response_model=BlockList)
async def list_blocks(user: SecurityReader, request: Request) -> BlockList:
    """Addresses refused now (HTTP 403 `address_blocked`, SIP requests dropped), and until when."""
    monitor = _running(request)
    if monitor is None:
        return BlockList(items=[])
    return BlockList(items=[block_out(b) for b in await monitor.blocks()])


@router.delete("/api/security/blocks/{address}", operation_id="security_unblock",
               summary="解除地址封禁 / lift an address block", status_code=204,
               responses=error_responses(404))
async def unblock(user: SecurityManager, request: Request,
                  address: Annotated[str, Path(min_length=2, max_length=64, pattern=r"^[0-9A-Fa-f:.]+$")]) -> None:
    """Ends the block now; on the audit log (`security.unblock`, reason manual)."""
    monitor = _monitor(request)
    if not await monitor.unblock(address):
        raise ApiError(404, "block_not_found", f"该地址未被封禁 / the address is not blocked: {address}")
    await _audit(request, user, "security.unblock", ("address", address), {"address": address, "reason": "manual"})


# ---------------------------------------------------------------------------------------------- live feed
def _sse(kind: str, item: dict[str, Any]) -> bytes:
    if kind == "alert":
        data: dict[str, Any] = alert_out(item).model_dump()
    elif kind == "event":
        data = event_out(item).model_dump()
    else:
        data = {k: beijing(v) if k == "until" else v for k, v in item.items()}
    ident = f"id: {kind}-{data.get('id')}\n" if data.get("id") is not None else ""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)
    return f"{ident}event: {kind}\ndata: {text}\n\n".encode()


async def _feed(request: Request, monitor: Any, token: str, user: str, full: bool) -> AsyncIterator[bytes]:
    from ops_portal.control.alarm_routes import _token_valid

    sub = monitor.subscribe()
    log.info("security.feed_open", user=user)
    try:
        yield b"retry: 3000\n: connected\n\n"
        while True:
            try:
                item = await asyncio.wait_for(sub.get(), timeout=HEARTBEAT_S)
            except TimeoutError:
                if await request.is_disconnected() or not await _token_valid(request, token):
                    return
                yield b": heartbeat\n\n"
                continue
            if item is None:  # the monitor stopped
                return
            kind, data = item
            if kind in ("alert", "event"):
                data = _restrict(data, full)
                if data is None:
                    continue
            yield _sse(kind, data)
    finally:
        sub.close()
        log.info("security.feed_closed", user=user)


@router.get("/api/security/stream", operation_id="security_stream",
            summary="安全告警实时推送（SSE）/ live security alerts and events (SSE)", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "Server-Sent Events: `alert`, `event`, `block`, `unblock`, heartbeats"}})
async def security_stream(user: SecurityReader, access: AccessDep, request: Request) -> StreamingResponse:
    """`text/event-stream`: `alert` (new or acknowledged), `event`, `block`, `unblock`; a comment line every 15 s;
    ends when you disconnect or your token ends. Read it with the bearer token (`fetch` and a stream reader)."""
    monitor = _monitor(request)
    token = request.headers.get("authorization", "").partition(" ")[2].strip()
    return StreamingResponse(_feed(request, monitor, token, user.username, access.scope.all), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
