"""``/api/tickets``, ``/api/notifications``, ``/api/contracts`` (and their SLA report).

Tickets are limited to the caller's data scope: a ticket is visible when its channel (or, for a device
ticket, its device) is.  Contracts are read with ``report.read`` and changed with ``contract.manage``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import FileResponse, Response
from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError

from gbcore.db import begin_write, utcnow
from gbcore.ids import ChannelRef
from gbcore.log import get_logger
from ops_portal.access import ensure_channel, ensure_device, resolve_channel
from ops_portal.contracts import Contract, ContractError, validate_contract
from ops_portal.deps import (
    AccessDep,
    AuditDep,
    RegistryDep,
    SessionDep,
    SettingsDep,
    client_ip,
    require_permission,
)
from ops_portal.models import User
from ops_portal.schemas import ApiError, error_responses
from ops_portal.tickets import flow
from ops_portal.tickets.models import Notification, Ticket, TicketEvent
from ops_portal.tickets.schemas import (
    ID_PATTERN,
    ContractIn,
    ContractList,
    ContractOut,
    ContractPatch,
    NotificationList,
    NotificationOut,
    SlaReportOut,
    SlaTicketOut,
    TicketCreate,
    TicketEventOut,
    TicketList,
    TicketOut,
    TicketTransition,
)
from ops_portal.tickets.service import ActorRef, AuditBatch, clock_of, create_ticket, transition_ticket
from ops_portal.tickets.sla import SlaItem, summarise
from ops_portal.tickets.snapshots import IMAGE_TYPES, image_type, save_snapshot, snapshot_path

log = get_logger("gbops.portal.tickets")

router = APIRouter(tags=["tickets"], responses=error_responses(401, 403, 422))

TicketReader = Annotated[User, Depends(require_permission("ticket.read"))]
TicketWriter = Annotated[User, Depends(require_permission("ticket.write"))]
ReportReader = Annotated[User, Depends(require_permission("report.read"))]
ContractManager = Annotated[User, Depends(require_permission("contract.manage"))]
TicketIdPath = Annotated[int, Path(ge=1, le=2**31 - 1, description="工单编号 / ticket id")]
ContractIdPath = Annotated[int, Path(ge=1, le=2**31 - 1, description="合同编号 / contract id")]


def _clock(request: Request) -> Callable[[], datetime]:
    """The time source (tests put a fake clock on ``app.state.ticket_clock``)."""
    return getattr(request.app.state, "ticket_clock", None) or utcnow


def _ticket_not_found(ticket_id: int) -> ApiError:
    return ApiError(404, "ticket_not_found", f"工单不存在 / ticket not found: {ticket_id}")


def _contract_not_found(contract_id: int) -> ApiError:
    return ApiError(404, "contract_not_found", f"合同不存在 / contract not found: {contract_id}")


def ticket_out(ticket: Ticket, now: datetime, events: list[TicketEvent] | None = None) -> TicketOut:
    clock = clock_of(ticket)
    return TicketOut(
        id=ticket.id, kind=ticket.kind, source=ticket.source, state=ticket.state, channel_id=ticket.channel_id,
        device_id=ticket.device_id, anomaly=ticket.anomaly, note=ticket.note, detail=ticket.detail or {},
        snapshot_url=f"/api/tickets/{ticket.id}/snapshot" if ticket.snapshot else None,
        reporter_name=ticket.reporter_name, reported_at=ticket.reported_at, contract_id=ticket.contract_id,
        repair_limit_hours=ticket.repair_limit_hours, deadline=ticket.deadline,
        time_left_seconds=flow.time_left(clock, now), overdue=flow.is_overdue(clock, now),
        acknowledged_at=ticket.acknowledged_at, feedback_at=ticket.feedback_at, feedback_note=ticket.feedback_note,
        repair_seconds=ticket.repair_seconds, within_limit=clock.within_limit, confirmed_at=ticket.confirmed_at,
        allowed_actions=[a for a in flow.allowed_actions(ticket.state) if a != "recover"],
        events=[TicketEventOut.model_validate(e) for e in events] if events is not None else None,
    )


async def _scope_refs(registry: Any, scope: Any) -> frozenset[ChannelRef] | None:
    """The (not removed) channels of a scope (the caller's, an organisation node's, a contract's); None: all."""
    channels = await registry.scoped_channels(scope)
    if channels is None:
        return None
    return frozenset(ChannelRef(c.device_id, c.channel_id) for c in channels)


def _tickets_of(refs: frozenset[ChannelRef]) -> Any:
    """SQL condition: the ticket is about one of these channels, or (a device ticket) about one of their devices."""
    from device_registry.scope import pairs_in

    device_ids = sorted({r.device_id for r in refs})
    # a channel ticket is visible for exactly that device's channel (channel ids repeat across devices)
    return or_(pairs_in(Ticket.device_id, Ticket.channel_id, refs),
               Ticket.channel_id.is_(None) & Ticket.device_id.in_(device_ids))


async def _visibility(access: Any, registry: Any) -> Any:
    """None (everything) or an SQL condition limiting tickets to the caller's scope."""
    refs = await _scope_refs(registry, access.scope)
    return None if refs is None else _tickets_of(refs)


#: the longest ``q`` of the ticket list (a search word, not a query language)
SEARCH_MAX = 64


def _like_pattern(text: str) -> str:
    """``%text%`` for a case-insensitive LIKE, with LIKE's own characters escaped (``\\`` is the escape)."""
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _search(q: str) -> Any:
    """SQL condition: ``q`` (case-insensitive) is in the ticket's description, feedback, anomaly, reporter, device
    id or channel id, or in the name of its channel (that device's channel) or of its device."""
    from sqlalchemy import tuple_

    from device_registry.queries import channels_named_like, devices_named_like

    pattern = _like_pattern(q)

    def has(col: Any) -> Any:
        return func.lower(func.coalesce(col, "")).like(pattern, escape="\\")

    # the names are the registry's: matched in the database through its subqueries, never its tables here
    return or_(has(Ticket.note), has(Ticket.feedback_note), has(Ticket.anomaly), has(Ticket.reporter_name),
               has(Ticket.device_id), has(Ticket.channel_id),
               tuple_(Ticket.device_id, Ticket.channel_id).in_(channels_named_like(pattern)),
               Ticket.device_id.in_(devices_named_like(pattern)))


async def _org_node_filter(session: Any, access: Any, registry: Any, org_node_id: int,
                           visible: frozenset[ChannelRef] | None) -> Any:
    """SQL condition: tickets of the channels under the organisation node (descendants included), within the
    caller's scope.  A scoped caller may name a node of its scope, or one above its channels (the tree shows
    it); any other node answers exactly as a node that does not exist (404): nothing to probe."""
    from ops_portal.access import Scope
    from ops_portal.contracts import org_descendants

    not_found = ApiError(404, "org_node_not_found", f"组织节点不存在 / organisation node not found: {org_node_id}")
    if await registry.get_org_node(org_node_id) is None:
        raise not_found
    refs = await _scope_refs(registry, Scope(False, await org_descendants(session, [org_node_id])))
    assert refs is not None
    if visible is not None:
        refs = refs & visible
        if not refs and not access.scope.allows_node(org_node_id):
            raise not_found
    return _tickets_of(refs)


async def _visible_contract(session: Any, access: Any, registry: Any, contract_id: int) -> Contract:
    """The contract, if the caller may see it: a scoped caller only one whose service scope lies inside its own
    (the contracts it can list); any other answers as one that does not exist (404): nothing to probe."""
    from ops_portal.scope_lists import grants_within_scope

    contract = await session.get(Contract, contract_id)
    if contract is None or not await grants_within_scope(
            registry, access.scope, org_node_ids=contract.org_node_ids or (), channels=contract.channel_ids or ()):
        raise _contract_not_found(contract_id)
    return contract


async def _contract_filter(session: Any, access: Any, registry: Any, contract_id: int,
                           visible: frozenset[ChannelRef] | None) -> Any:
    """SQL condition: tickets of the channels the contract's service scope covers now (the scope the online-rate
    reports use, :func:`ops_portal.contracts.contract_scope`), and the tickets reported under the contract (its
    SLA report's), within the caller's scope.  A scoped caller may name only a contract it can list (its
    scope inside the caller's); any other answers as a contract that does not exist (404)."""
    from ops_portal.contracts import contract_scope

    await _visible_contract(session, access, registry, contract_id)
    scope = await contract_scope(session, contract_id)
    refs = await _scope_refs(registry, scope)
    assert refs is not None
    if visible is not None:
        refs = refs & visible
    return or_(_tickets_of(refs), Ticket.contract_id == contract_id)


async def _check_ticket_scope(access: Any, registry: Any, ticket: Ticket) -> None:
    if access.scope.all:
        return
    if ticket.channel_id is not None:
        await ensure_channel(access, registry, ChannelRef(ticket.device_id or "", ticket.channel_id))
    elif ticket.device_id is not None:
        await ensure_device(access, registry, ticket.device_id)


async def _load_ticket(session: Any, access: Any, registry: Any, ticket_id: int) -> Ticket:
    ticket = await session.get(Ticket, ticket_id)
    if ticket is None:
        if not access.scope.all:  # existence does not leak to limited scopes
            raise ApiError(403, "ticket_forbidden", f"无权访问此工单 / no access to this ticket: {ticket_id}")
        raise _ticket_not_found(ticket_id)
    try:
        await _check_ticket_scope(access, registry, ticket)
    except ApiError:
        raise ApiError(403, "ticket_forbidden", f"无权访问此工单 / no access to this ticket: {ticket_id}") from None
    return ticket


# ---------------------------------------------------------------------------------------------- tickets
@router.get("/api/tickets", operation_id="tickets_list", summary="工单列表 / list tickets", response_model=TicketList,
            responses=error_responses(404))
async def list_tickets(
    request: Request,
    user: TicketReader,
    access: AccessDep,
    registry: RegistryDep,
    session: SessionDep,
    state: Annotated[str | None, Query(pattern="^(reported|acknowledged|repairing|repaired|confirmed|reopened)$",
                                       description="按状态 / by state")] = None,
    open: Annotated[bool | None, Query(description="只看待修复 (true) / 已修复 (false) / waiting for repair")] = None,
    overdue: Annotated[bool | None, Query(description="只看超期 / only overdue (or not)")] = None,
    kind: Annotated[str | None, Query(pattern="^(fault|quality)$")] = None,
    channel_id: Annotated[str | None, Query(max_length=32, pattern=ID_PATTERN)] = None,
    device_id: Annotated[str | None, Query(max_length=32, pattern=ID_PATTERN, description="按设备 / by device")] = None,
    contract_id: Annotated[int | None, Query(ge=1, le=2**31 - 1, description="合同服务范围内的工单 / tickets of a "
                                             "contract's service scope")] = None,
    org_node_id: Annotated[int | None, Query(ge=1, le=2**31 - 1, description="组织节点（含下级）下的工单 / tickets "
                                             "under an organisation node (descendants included)")] = None,
    q: Annotated[str | None, Query(max_length=SEARCH_MAX, description="搜索：故障描述、通道名称、设备或通道编码（不区分"
                                   "大小写） / search the description, channel name, device or channel id")] = None,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> TicketList:
    """Newest first.  ``overdue=true``: waiting for repair past the deadline, or repaired late.
    ``contract_id``: tickets of the channels the contract covers (and those reported under it);
    ``org_node_id``: of the channels under the node.  For a scoped caller a contract or node it cannot see
    answers 404 as an unknown one."""
    now = _clock(request)()
    stmt = select(Ticket)
    visible_refs = await _scope_refs(registry, access.scope)
    if visible_refs is not None:
        stmt = stmt.where(_tickets_of(visible_refs))
    if contract_id is not None:
        stmt = stmt.where(await _contract_filter(session, access, registry, contract_id, visible_refs))
    if org_node_id is not None:
        stmt = stmt.where(await _org_node_filter(session, access, registry, org_node_id, visible_refs))
    words = "".join(ch for ch in q or "" if ch >= " ").strip()  # control characters (NUL: PostgreSQL refuses) out
    if words:
        stmt = stmt.where(_search(words))
    if state is not None:
        stmt = stmt.where(Ticket.state == state)
    if open is not None:
        opened = Ticket.state.in_(sorted(flow.OPEN_STATES))
        stmt = stmt.where(opened if open else ~opened)
    if overdue is not None:
        late = or_(Ticket.state.in_(sorted(flow.OPEN_STATES)) & (Ticket.deadline < now),
                   Ticket.repair_seconds > Ticket.repair_limit_hours * 3600)
        stmt = stmt.where(late if overdue else ~late)
    if kind is not None:
        stmt = stmt.where(Ticket.kind == kind)
    if channel_id is not None:
        stmt = stmt.where(Ticket.channel_id == channel_id)
    if device_id is not None:
        stmt = stmt.where(Ticket.device_id == device_id)
    total = await session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = (await session.scalars(stmt.order_by(Ticket.id.desc()).offset(offset).limit(limit))).all()
    return TicketList(total=total, offset=offset, limit=limit, items=[ticket_out(t, now) for t in rows])


@router.post("/api/tickets", operation_id="tickets_create", summary="报修 / report a fault", status_code=201,
             response_model=TicketOut, responses=error_responses(404))
async def create(
    request: Request,
    body: TicketCreate,
    user: TicketWriter,
    access: AccessDep,
    registry: RegistryDep,
    session: SessionDep,
    settings: SettingsDep,
    audit: AuditDep,
) -> TicketOut:
    """Report a point fault or a video-quality anomaly of a channel (or a device).  The SLA clock starts
    now: deadline = now + the repair limit of the contract covering the channel (else the default).
    Attach a picture afterwards with ``PUT /api/tickets/{ticket_id}/snapshot``."""
    if body.channel_id is None and body.device_id is None:
        raise ApiError(422, "subject_required", "请指定故障通道或设备 / name the faulty channel or device")
    if body.kind == "quality" and body.anomaly is None:
        raise ApiError(422, "anomaly_required", "视频质量异常须指明类型 / a quality report needs an anomaly type")
    device_id = body.device_id
    if body.channel_id is not None:
        # the camera: {device_id, channel_id}; a channel id alone only when it names one visible channel
        if device_id is not None:
            ref = ChannelRef(device_id, body.channel_id)
            if not access.scope.all or await registry.get_channel(ref) is not None:
                await ensure_channel(access, registry, ref)
            elif await registry.find_channel(body.channel_id):
                raise ApiError(422, "channel_device_mismatch", "通道不属于该设备 / the channel is not on that device")
            else:
                raise ApiError(404, "channel_not_found", f"通道不存在 / channel not found: {ref.key}")
        else:
            ref = await resolve_channel(access, registry, body.channel_id)
        device_id = ref.device_id
    else:
        assert device_id is not None
        await ensure_device(access, registry, device_id)
        if await registry.get_device(device_id) is None:
            raise ApiError(404, "device_not_found", f"设备不存在 / device not found: {device_id}")
    now = _clock(request)()
    batch = AuditBatch(audit)
    await begin_write(session)
    ticket = await create_ticket(
        session, kind=body.kind, source="user", now=now, default_limit_hours=settings.ticket_repair_limit_hours,
        actor=ActorRef.user(user), channel_id=body.channel_id, device_id=device_id, note=body.note,
        anomaly=body.anomaly, audit=batch, client_ip=client_ip(request))
    await batch.write(session)
    await session.commit()
    return ticket_out(ticket, now)


@router.get("/api/tickets/{ticket_id}", operation_id="tickets_get", summary="工单详情 / one ticket",
            response_model=TicketOut, responses=error_responses(404))
async def get_ticket(
    request: Request, ticket_id: TicketIdPath, user: TicketReader, access: AccessDep, registry: RegistryDep,
    session: SessionDep,
) -> TicketOut:
    """With its full history (``events``)."""
    ticket = await _load_ticket(session, access, registry, ticket_id)
    events = (await session.scalars(
        select(TicketEvent).where(TicketEvent.ticket_id == ticket_id).order_by(TicketEvent.id))).all()
    return ticket_out(ticket, _clock(request)(), list(events))


@router.post("/api/tickets/{ticket_id}/transitions", operation_id="tickets_transition",
             summary="工单处理（受理、维修、反馈、确认、重开） / move a ticket on", response_model=TicketOut,
             responses=error_responses(404, 409))
async def transition(
    request: Request, ticket_id: TicketIdPath, body: TicketTransition, user: TicketWriter, access: AccessDep,
    registry: RegistryDep, session: SessionDep, audit: AuditDep,
) -> TicketOut:
    """reported → acknowledged → repairing → repaired (feedback, with a note) → confirmed, or reopened
    (→ acknowledged / repairing ...).  Anything else answers 409 ``illegal_transition``."""
    if body.action == "feedback" and not (body.note or "").strip():
        raise ApiError(422, "feedback_note_required", "修复反馈须填写说明 / repair feedback needs a note")
    await begin_write(session)
    ticket = await _load_ticket(session, access, registry, ticket_id)
    now = _clock(request)()
    batch = AuditBatch(audit)
    try:
        await transition_ticket(session, ticket, body.action, now=now, actor=ActorRef.user(user), note=body.note,
                                audit=batch, client_ip=client_ip(request))
    except flow.IllegalTransition as exc:
        raise ApiError(409, "illegal_transition", exc.message) from None
    await batch.write(session)
    await session.commit()
    events = (await session.scalars(
        select(TicketEvent).where(TicketEvent.ticket_id == ticket_id).order_by(TicketEvent.id))).all()
    return ticket_out(ticket, now, list(events))


@router.put("/api/tickets/{ticket_id}/snapshot", operation_id="tickets_snapshot_upload",
            summary="上传现场图片 / attach a snapshot image", response_model=TicketOut,
            responses=error_responses(404, 413, 415),
            openapi_extra={"requestBody": {"required": True, "content": {
                t: {"schema": {"type": "string", "format": "binary"}} for t in IMAGE_TYPES}}})
async def upload_snapshot(
    request: Request, ticket_id: TicketIdPath, user: TicketWriter, access: AccessDep, registry: RegistryDep,
    session: SessionDep, settings: SettingsDep, audit: AuditDep,
) -> TicketOut:
    """The request body is the image itself (JPEG or PNG, at most ``GBOPS_TICKET_SNAPSHOT_MAX_BYTES``)."""
    limit = settings.ticket_snapshot_max_bytes
    too_big = ApiError(413, "snapshot_too_large",
                       f"图片过大（上限 {limit} 字节） / the image is too large (at most {limit} bytes)")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_big
    await _load_ticket(session, access, registry, ticket_id)
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise too_big
    media_type = image_type(bytes(data))
    if media_type is None:
        raise ApiError(415, "snapshot_not_image", "只接受 JPEG 或 PNG 图片 / only JPEG or PNG images are accepted")
    name = save_snapshot(settings.data_dir, bytes(data), media_type)
    await begin_write(session)
    ticket = await _load_ticket(session, access, registry, ticket_id)
    ticket.snapshot = name
    batch = AuditBatch(audit)
    batch.add(actor=ActorRef.user(user), action="ticket.snapshot", target=("ticket", str(ticket_id)),
              client_ip=client_ip(request), detail={"bytes": len(data), "type": media_type})
    await session.flush()
    await batch.write(session)
    await session.commit()
    return ticket_out(ticket, _clock(request)())


@router.get("/api/tickets/{ticket_id}/snapshot", operation_id="tickets_snapshot_get",
            summary="现场图片 / the ticket's snapshot image", response_class=FileResponse,
            responses={**error_responses(404), 200: {"content": {t: {} for t in IMAGE_TYPES}}})
async def get_snapshot(
    ticket_id: TicketIdPath, user: TicketReader, access: AccessDep, registry: RegistryDep, session: SessionDep,
    settings: SettingsDep, request: Request, audit: AuditDep,
) -> Response:
    """The picture is video evidence (issue 11): only for users with the ticket's channel in scope, with
    the viewer's own visible watermark drawn over it, and each fetch on the audit log
    (``ticket.snapshot_fetch``, with the watermark code and the SHA-256 of the image served)."""
    ticket = await _load_ticket(session, access, registry, ticket_id)
    await session.commit()
    path = snapshot_path(settings.data_dir, ticket.snapshot) if ticket.snapshot else None
    if path is None or not path.is_file():
        raise ApiError(404, "snapshot_not_found", "该工单没有现场图片 / this ticket has no snapshot")
    return await _watermarked_snapshot(request, settings, audit, user, ticket, path)


async def _watermarked_snapshot(request: Request, settings: Any, audit: Any, user: User, ticket: Ticket,
                                path: Any) -> Response:
    import asyncio
    import hashlib
    import secrets

    from watermark.font import FontMissing, find_cjk_font
    from watermark.pipeline import session_code
    from watermark.render import WatermarkText
    from watermark.still import watermark_still

    try:
        font = find_cjk_font(settings.watermark_font_path)
    except FontMissing as exc:
        raise ApiError(503, "watermark_font_missing", str(exc)) from None
    fetch_id = f"snap-{secrets.token_urlsafe(12)}"
    code = session_code(fetch_id)
    text = WatermarkText(display_name=user.display_name or user.username, account=user.username, phone=user.phone,
                         client_ip=client_ip(request) or "-", session_code=code)
    data = await asyncio.to_thread(path.read_bytes)
    image, media_type = await asyncio.to_thread(watermark_still, data, text, font_path=font,
                                                scale=settings.watermark_font_scale)
    if audit is not None:
        from audit_log.log import Actor, Target

        try:
            await audit.record(actor=Actor.user(user), action="ticket.snapshot_fetch",
                               target=Target("ticket", str(ticket.id)), client_ip=client_ip(request),
                               session_id=fetch_id, watermark_id=code,
                               detail={"device_id": ticket.device_id, "channel_id": ticket.channel_id,
                                       "sha256": hashlib.sha256(image).hexdigest(), "bytes": len(image)})
        except Exception:
            log.exception("ticket.snapshot_audit_failed", ticket=ticket.id, user=user.username)
            raise ApiError(503, "audit_unavailable", "审计日志不可用，无法查看现场图片 / the audit log is unavailable: "
                           "the snapshot cannot be shown") from None
    return Response(image, media_type=media_type, headers={"Cache-Control": "no-store", "X-Watermark-Id": code})


# ---------------------------------------------------------------------------------------------- notifications
@router.get("/api/notifications", operation_id="notifications_list", summary="工单通知 / ticket notifications",
            response_model=NotificationList)
async def list_notifications(
    user: TicketReader, access: AccessDep, registry: RegistryDep, session: SessionDep,
    after_id: Annotated[int, Query(ge=0, le=2**31 - 1, description="只返回编号更大的通知（轮询） / only newer ones (polling)")] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> NotificationList:
    """Tickets opened automatically and tickets past their deadline, newest first."""
    stmt = select(Notification).join(Ticket, Ticket.id == Notification.ticket_id).where(Notification.id > after_id)
    visible = await _visibility(access, registry)
    if visible is not None:
        stmt = stmt.where(visible)
    rows = (await session.scalars(stmt.order_by(Notification.id.desc()).limit(limit))).all()
    return NotificationList(items=[NotificationOut.model_validate(n) for n in rows])


# ---------------------------------------------------------------------------------------------- contracts
def _aware(value: datetime | None) -> datetime | None:
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        return value.replace(tzinfo=UTC)
    return value


def _validate(fields: dict[str, Any]) -> None:
    try:
        validate_contract(
            storage_days=fields["storage_days"], repair_limit_hours=fields["repair_limit_hours"],
            online_rate_threshold=fields["online_rate_threshold"], rate_rule=fields["rate_rule"],
            sample_minutes=fields["sample_minutes"], valid_from=fields["valid_from"],
            valid_until=fields["valid_until"], quality_terms=fields["quality_terms"])
    except ContractError as exc:
        raise ApiError(422, exc.code, exc.message) from None


def _name_taken(name: str) -> ApiError:
    return ApiError(409, "contract_name_taken", f"合同名称已存在 / a contract with this name exists: {name}")


_CONTRACT_FIELDS = ("name", "customer", "org_node_ids", "channel_ids", "storage_days", "repair_limit_hours",
                    "quality_terms", "online_rate_threshold", "rate_rule", "sample_minutes", "valid_from",
                    "valid_until")


def _contract_snapshot(contract: Contract) -> dict[str, Any]:
    return {f: getattr(contract, f) for f in _CONTRACT_FIELDS}


@router.get("/api/contracts", operation_id="contracts_list", summary="合同列表 / list contracts",
            response_model=ContractList)
async def list_contracts_route(user: ReportReader, access: AccessDep, registry: RegistryDep,
                               session: SessionDep) -> ContractList:
    """Every contract for a full-scope caller; a scoped caller sees the contracts whose scope lies inside its
    own (issue 11: a list names no out-of-scope channel)."""
    from ops_portal.scope_lists import grants_within_scope

    rows = (await session.scalars(select(Contract).order_by(Contract.id))).all()
    items = [ContractOut.model_validate(c) for c in rows]
    if not access.scope.all:
        items = [c for c in items if await grants_within_scope(
            registry, access.scope, org_node_ids=getattr(c, "org_node_ids", None) or (),
            channels=[*(getattr(c, "channels", None) or ()), *(getattr(c, "channel_ids", None) or ())])]
    return ContractList(items=items)


@router.post("/api/contracts", operation_id="contracts_create", summary="新建合同 / create a contract",
             status_code=201, response_model=ContractOut, responses=error_responses(409))
async def create_contract(
    request: Request, body: ContractIn, user: ContractManager, session: SessionDep, audit: AuditDep,
) -> ContractOut:
    """Storage days must be at least 7 (422 ``storage_days_too_short``)."""
    fields = body.model_dump()
    fields["valid_from"] = _aware(body.valid_from)
    fields["valid_until"] = _aware(body.valid_until)
    fields["quality_terms"] = body.quality_terms.model_dump(exclude_none=True)
    _validate(fields)
    await begin_write(session)
    contract = Contract(**fields)
    session.add(contract)
    try:
        await session.flush()
    except IntegrityError:
        raise _name_taken(body.name) from None
    batch = AuditBatch(audit)
    batch.add(actor=ActorRef.user(user), action="contract.create", target=("contract", str(contract.id)),
              client_ip=client_ip(request), detail=_contract_snapshot(contract))
    await batch.write(session)
    await session.commit()
    return ContractOut.model_validate(contract)


@router.get("/api/contracts/{contract_id}", operation_id="contracts_get", summary="合同详情 / one contract",
            response_model=ContractOut, responses=error_responses(404))
async def get_contract_route(contract_id: ContractIdPath, user: ReportReader, access: AccessDep, registry: RegistryDep,
                             session: SessionDep) -> ContractOut:
    """A scoped caller reads only the contracts it can list (another answers 404, as an unknown one)."""
    return ContractOut.model_validate(await _visible_contract(session, access, registry, contract_id))


@router.patch("/api/contracts/{contract_id}", operation_id="contracts_update", summary="修改合同 / change a contract",
              response_model=ContractOut, responses=error_responses(404, 409))
async def update_contract(
    request: Request, contract_id: ContractIdPath, body: ContractPatch, user: ContractManager, session: SessionDep,
    audit: AuditDep,
) -> ContractOut:
    """Tickets keep the repair limit they were reported with; a new limit applies to new tickets."""
    await begin_write(session)
    contract = await session.get(Contract, contract_id)
    if contract is None:
        raise _contract_not_found(contract_id)
    changes = body.model_dump(exclude_unset=True)
    if "quality_terms" in changes:
        changes["quality_terms"] = (body.quality_terms.model_dump(exclude_none=True)
                                    if body.quality_terms is not None else {})
    for key in ("valid_from", "valid_until"):
        if key in changes:
            changes[key] = _aware(changes[key])
    if changes.get("valid_from", 1) is None or any(
            changes.get(k, 1) is None for k in ("name", "customer", "org_node_ids", "channel_ids", "storage_days",
                                               "repair_limit_hours", "online_rate_threshold", "rate_rule")):
        raise ApiError(422, "field_required", "该字段不能置空 / this field cannot be cleared")
    merged = {**_contract_snapshot(contract), **changes}
    _validate(merged)
    before = {k: _contract_snapshot(contract)[k] for k in changes}
    for key, value in changes.items():
        setattr(contract, key, value)
    try:
        await session.flush()
    except IntegrityError:
        raise _name_taken(str(changes.get("name"))) from None
    batch = AuditBatch(audit)
    batch.add(actor=ActorRef.user(user), action="contract.update", target=("contract", str(contract_id)),
              client_ip=client_ip(request), detail={"before": before, "after": changes})
    await batch.write(session)
    await session.commit()
    return ContractOut.model_validate(contract)


@router.delete("/api/contracts/{contract_id}", operation_id="contracts_delete", summary="删除合同 / delete a contract",
               status_code=204, responses=error_responses(404))
async def delete_contract(
    request: Request, contract_id: ContractIdPath, user: ContractManager, session: SessionDep, audit: AuditDep,
) -> Response:
    """Its tickets stay (without a contract); their deadlines do not change."""
    await begin_write(session)
    contract = await session.get(Contract, contract_id)
    if contract is None:
        raise _contract_not_found(contract_id)
    detail = _contract_snapshot(contract)
    await session.delete(contract)
    await session.flush()
    batch = AuditBatch(audit)
    batch.add(actor=ActorRef.user(user), action="contract.delete", target=("contract", str(contract_id)),
              client_ip=client_ip(request), detail=detail)
    await batch.write(session)
    await session.commit()
    return Response(status_code=204)


# ---------------------------------------------------------------------------------------------- SLA
async def _sla(request: Request, session: Any, access: Any, registry: Any, contract_id: int, start: datetime | None,
               end: datetime | None) -> SlaReportOut:
    contract = await _visible_contract(session, access, registry, contract_id)
    now = _clock(request)()
    end = _aware(end) or now
    start = _aware(start) or end - timedelta(days=30)
    if start >= end:
        raise ApiError(422, "bad_period", "开始时间须早于结束时间 / start must be before end")
    rows = (await session.scalars(
        select(Ticket).where(Ticket.contract_id == contract_id, Ticket.reported_at >= start,
                             Ticket.reported_at < end).order_by(Ticket.id))).all()
    items = [SlaItem(t.id, clock_of(t), t.channel_id, t.device_id) for t in rows]
    summary = summarise(items, now)
    overdue = []
    for item in summary.overdue:
        c = item.clock
        late_at = c.feedback_at if c.feedback_at is not None else now
        overdue.append(SlaTicketOut(
            ticket_id=item.ticket_id, channel_id=item.channel_id, device_id=item.device_id, state=c.state,
            reported_at=c.reported_at, deadline=c.deadline, feedback_at=c.feedback_at,
            repair_seconds=c.repair_seconds, overdue_seconds=max(0.0, (late_at - c.deadline).total_seconds())))
    return SlaReportOut(
        contract_id=contract_id, start=start, end=end, generated_at=now,
        repair_limit_hours=contract.repair_limit_hours, tickets=summary.tickets, repaired=summary.repaired,
        within_limit=summary.within_limit, missed=summary.missed, pending=summary.pending,
        share_within_limit=summary.share_within_limit, mean_repair_seconds=summary.mean_repair_seconds,
        p95_repair_seconds=summary.p95_repair_seconds, overdue=overdue)


PeriodStart = Annotated[datetime | None, Query(description="期间开始（含） / period start, inclusive (default: end − 30 d)")]
PeriodEnd = Annotated[datetime | None, Query(description="期间结束（不含） / period end, exclusive (default: now)")]


@router.get("/api/contracts/{contract_id}/sla", operation_id="contracts_sla",
            summary="合同 SLA 报表 / SLA report of a contract", response_model=SlaReportOut,
            responses=error_responses(404))
async def sla_report(
    request: Request, contract_id: ContractIdPath, user: ReportReader, access: AccessDep, registry: RegistryDep,
    session: SessionDep, start: PeriodStart = None, end: PeriodEnd = None,
) -> SlaReportOut:
    """Tickets of the contract reported in [start, end): share repaired within the limit, mean and
    95th-percentile repair time, overdue list.  A scoped caller: only a contract it can list (else 404)."""
    return await _sla(request, session, access, registry, contract_id, start, end)


@router.get("/api/contracts/{contract_id}/sla.csv", operation_id="contracts_sla_csv",
            summary="合同 SLA 报表导出 CSV / SLA report as CSV", response_class=Response,
            responses={**error_responses(404), 200: {"content": {"text/csv": {}}}})
async def sla_report_csv(
    request: Request, contract_id: ContractIdPath, user: ReportReader, access: AccessDep, registry: RegistryDep,
    session: SessionDep, start: PeriodStart = None, end: PeriodEnd = None,
) -> Response:
    """A summary block, then one line per overdue ticket (UTF-8 with BOM, for spreadsheet programs); the share
    within the limit is a percentage (``share_within_limit(%)``, e.g. ``100``)."""
    from ops_portal.availability.reports import percent_text

    report = await _sla(request, session, access, registry, contract_id, start, end)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["指标 / metric", "值 / value"])
    for key in ("contract_id", "start", "end", "repair_limit_hours", "tickets", "repaired", "within_limit",
                "missed", "pending", "share_within_limit", "mean_repair_seconds", "p95_repair_seconds"):
        value = getattr(report, key)
        if key == "share_within_limit":  # a rate: a plain number of percent (100, not 1.0), as every report file
            w.writerow([f"{key}(%)", percent_text(value)])
            continue
        w.writerow([key, value.isoformat() if isinstance(value, datetime) else ("" if value is None else value)])
    w.writerow([])
    w.writerow(["ticket_id", "channel_id", "device_id", "state", "reported_at", "deadline", "feedback_at",
                "repair_seconds", "overdue_seconds"])
    for t in report.overdue:
        w.writerow([t.ticket_id, t.channel_id or "", t.device_id or "", t.state, t.reported_at.isoformat(),
                    t.deadline.isoformat(), t.feedback_at.isoformat() if t.feedback_at else "",
                    "" if t.repair_seconds is None else round(t.repair_seconds, 3), round(t.overdue_seconds, 3)])
    name = f"sla-contract-{contract_id}.csv"
    return Response("\ufeff" + buf.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})
