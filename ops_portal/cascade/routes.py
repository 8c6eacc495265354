"""``/api/cascade``: upper platforms this platform registers with as a lower platform (issue 15).

* ``POST/GET /api/cascade/platforms``, ``GET/PATCH/DELETE .../{platform_id}``: the configuration (the password is
  write-only: no answer carries it, ``has_password`` says whether one is stored); an ``expires`` below 3600 s is
  accepted with a warning in ``warnings``;
* ``GET .../{platform_id}/status``: registration state, last keepalive, registered until, streams being sent;
* ``GET/PUT .../{platform_id}/share``: what the platform sees (organisation nodes with their descendants, single
  channels with optional upward id / name / civil code);
* ``GET .../{platform_id}/catalog``: the catalog the upper would receive now;
* ``GET .../{platform_id}/requests``: the platform's recent ``cascade.*`` entries of the audit log, newest first.

Every route needs ``cascade.manage``; all but the list also the full data scope (a platform's share, catalog, streams
and requests name channels across the whole platform, and what is shared leaves every scope): 403
``cascade_scope_forbidden`` otherwise.  The list shows no channel (a stream count, not the streams).  The work is done
by ``app.state.cascade`` (:class:`cascade.service.CascadeService`; without it the list is empty and the other routes
answer 503), which also writes the audit entries of configuration changes; its errors (``CascadeError``: ``code``,
``message``, ``status``, ``detail``) are answered with their status and message.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response

from gbcore.log import get_logger
from ops_portal.cascade.schemas import (
    CatalogPreviewOut,
    PlatformCreate,
    PlatformList,
    PlatformOut,
    PlatformPatch,
    PlatformStatusOut,
    RequestList,
    RequestOut,
    ShareChannelOut,
    ShareIn,
    ShareOut,
    catalog_entry_out,
    platform_out,
    status_out,
    time_out,
)
from ops_portal.deps import AccessDep, AuditDep, client_ip, require_permission
from ops_portal.models import User
from ops_portal.schemas import ApiError, error_responses

__all__ = ["router"]

log = get_logger("gbops.portal.cascade")

router = APIRouter(prefix="/api/cascade", tags=["cascade"], responses=error_responses(401, 403, 422, 503))

_manage = require_permission("cascade.manage")
CascadeManager = Annotated[User, Depends(_manage)]


async def _full_scope(user: CascadeManager, access: AccessDep) -> User:
    if not access.scope.all:
        raise ApiError(403, "cascade_scope_forbidden", "上级平台可见整个平台的资源，管理它需要全部数据范围 / upper platforms "
                       "see the whole platform: managing them needs the full data scope")
    return user


_full_scope.permission = "cascade.manage"  # type: ignore[attr-defined]
#: ``cascade.manage`` and the full data scope
CascadeAdmin = Annotated[User, Depends(_full_scope)]
PlatformId = Annotated[int, Path(ge=1, le=2**31 - 1, description="上级平台 id / upper platform id")]

#: audit entries read (newest first) while looking for one platform's requests
_SCAN_CHUNK = 500
_SCAN_MAX = 20_000


# ---------------------------------------------------------------------------------------------- helpers
def _service(request: Request) -> Any:
    service = getattr(request.app.state, "cascade", None)
    if service is None:
        raise ApiError(503, "cascade_unavailable", "级联服务未运行 / the cascade service is not running")
    return service


def _actor(request: Request, user: User) -> dict[str, Any]:
    return {"user_id": user.id, "username": user.username, "client_ip": client_ip(request)}


def _is_cascade_error(exc: Exception) -> bool:
    try:
        from cascade.service import CascadeError
    except ImportError:  # the service package is optional for the portal: recognise its errors by shape
        CascadeError = None  # noqa: N806
    if CascadeError is not None and isinstance(exc, CascadeError):
        return True
    return all(hasattr(exc, a) for a in ("code", "message", "status")) and isinstance(getattr(exc, "status", None), int)


def _clean(value: Any) -> Any:
    """``value`` without keys that could hold a secret (defence in depth: the service never puts one there)."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()
                if not (isinstance(k, str) and ("password" in k.lower() or "secret" in k.lower())
                        and not isinstance(v, bool))}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _api_error(exc: Exception) -> ApiError:
    status = int(exc.status)  # type: ignore[attr-defined]
    if not 400 <= status <= 599:
        status = 502
    code = str(exc.code)  # type: ignore[attr-defined]
    message = str(exc.message)  # type: ignore[attr-defined]
    detail = getattr(exc, "detail", None)
    extra = None
    if isinstance(detail, dict) and detail:
        extra = {"detail": _clean(detail)}
        if isinstance(detail.get("devices"), list):  # ambiguous channel: the devices reporting it
            extra["devices"] = [str(d) for d in detail["devices"]]
    return ApiError(status, code, message, extra=extra)


async def _call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call the service; its errors become the API's."""
    try:
        result = fn(*args, **kwargs)
        return await result if inspect.isawaitable(result) else result
    except ApiError:
        raise
    except Exception as exc:
        if not _is_cascade_error(exc):
            raise
        log.info("cascade.refused", code=getattr(exc, "code", None), status=getattr(exc, "status", None))
        raise _api_error(exc) from None


async def _status(service: Any, platform_id: int) -> PlatformStatusOut:
    return status_out(platform_id, await _call(service.status, platform_id))


# ---------------------------------------------------------------------------------------------- platforms
@router.post("/platforms", operation_id="cascade_platform_create", summary="添加上级平台 / add an upper platform",
             status_code=201, response_model=PlatformOut, responses=error_responses(409))
async def create_platform(user: CascadeAdmin, request: Request, body: PlatformCreate) -> PlatformOut:
    """The platform starts registering at once when `enabled`. An `expires` below 3600 s (the standard's floor) is
    accepted with a warning in `warnings`."""
    service = _service(request)
    created = await _call(service.create_platform, body.service_data(), actor=_actor(request, user))
    return platform_out(created)


@router.get("/platforms", operation_id="cascade_platforms_list", summary="上级平台列表（含实时状态）/ upper "
            "platforms with their live status", response_model=PlatformList)
async def list_platforms(user: CascadeManager, request: Request) -> PlatformList:
    """Each with its live status (`status.streams` a count; the streams themselves: `GET .../status`)."""
    service = getattr(request.app.state, "cascade", None)
    if service is None:
        return PlatformList(items=[])
    items = []
    for raw in await _call(service.list_platforms):
        out = platform_out(raw)
        try:
            status = await _status(service, out.id)
            out.status = status.model_copy(update={"stream_list": []})
        except Exception:  # deleted in between, or no state yet: the list still answers
            log.exception("cascade.status_failed", platform_id=out.id)
            out.status = None
        items.append(out)
    return PlatformList(items=items)


@router.get("/platforms/{platform_id}", operation_id="cascade_platform_get", summary="上级平台 / an upper platform",
            response_model=PlatformOut, responses=error_responses(404))
async def get_platform(user: CascadeAdmin, request: Request, platform_id: PlatformId) -> PlatformOut:
    return platform_out(await _call(_service(request).get_platform, platform_id))


@router.patch("/platforms/{platform_id}", operation_id="cascade_platform_update",
              summary="修改上级平台（含启用、停用）/ change an upper platform (enable, disable)",
              response_model=PlatformOut, responses=error_responses(404, 409))
async def update_platform(user: CascadeAdmin, request: Request, platform_id: PlatformId,
                          body: PlatformPatch) -> PlatformOut:
    """Only the fields given change; `password` absent keeps the stored one. A changed platform re-registers;
    disabling it unregisters and ends its streams."""
    service = _service(request)
    changes = body.changes()
    if not changes:
        raise ApiError(422, "nothing_to_change", "没有要修改的字段 / no field to change")
    return platform_out(await _call(service.update_platform, platform_id, changes, actor=_actor(request, user)))


@router.delete("/platforms/{platform_id}", operation_id="cascade_platform_delete",
               summary="删除上级平台 / delete an upper platform", status_code=204, response_class=Response,
               responses=error_responses(404))
async def delete_platform(user: CascadeAdmin, request: Request, platform_id: PlatformId) -> Response:
    """Unregisters from the upper (best effort) and ends the streams sent to it."""
    await _call(_service(request).delete_platform, platform_id, actor=_actor(request, user))
    return Response(status_code=204)


@router.get("/platforms/{platform_id}/status", operation_id="cascade_platform_status",
            summary="上级平台实时状态 / an upper platform's live status", response_model=PlatformStatusOut,
            responses=error_responses(404))
async def platform_status(user: CascadeAdmin, request: Request, platform_id: PlatformId) -> PlatformStatusOut:
    return await _status(_service(request), platform_id)


# ---------------------------------------------------------------------------------------------- share
def _share_out(raw: Any) -> ShareOut:
    data = raw if isinstance(raw, dict) else dict(vars(raw))
    channels = [ShareChannelOut(**c) if isinstance(c, dict) else ShareChannelOut(**vars(c))
                for c in data.get("channels") or []]
    conflicts = [_clean(c) for c in data.get("conflicts") or [] if isinstance(c, dict)]
    return ShareOut(org_nodes=[int(n) for n in data.get("org_nodes") or []], channels=channels,
                    resolved=int(data.get("resolved") or 0), conflicts=conflicts)


@router.get("/platforms/{platform_id}/share", operation_id="cascade_share_get",
            summary="上级平台的共享范围 / what an upper platform sees", response_model=ShareOut,
            responses=error_responses(404))
async def get_share(user: CascadeAdmin, request: Request, platform_id: PlatformId) -> ShareOut:
    return _share_out(await _call(_service(request).get_share, platform_id))


@router.put("/platforms/{platform_id}/share", operation_id="cascade_share_put",
            summary="设置上级平台的共享范围 / set what an upper platform sees", response_model=ShareOut,
            responses=error_responses(404, 409))
async def put_share(user: CascadeAdmin, request: Request, platform_id: PlatformId, body: ShareIn) -> ShareOut:
    """`org_nodes` include their descendants. In `channels` only `channel_id` is required when it is unique (a
    plain id string is accepted then); `upward_id`, `name` and `civil_code` override what the upper sees. A changed
    share is pushed to an upper that subscribed to the catalog."""
    service = _service(request)
    result = await _call(service.put_share, platform_id, list(body.org_nodes), body.service_channels(),
                         actor=_actor(request, user))
    return _share_out(result)


@router.get("/platforms/{platform_id}/catalog", operation_id="cascade_catalog_preview",
            summary="目录预览：上级将收到的条目 / catalog preview: the items the upper would receive",
            response_model=CatalogPreviewOut, responses=error_responses(404))
async def catalog_preview(user: CascadeAdmin, request: Request, platform_id: PlatformId) -> CatalogPreviewOut:
    """In the order they are sent: our system first, then the organisation structure, then the channels."""
    entries = [catalog_entry_out(e) for e in await _call(_service(request).catalog_preview, platform_id)]
    return CatalogPreviewOut(total=len(entries), channels=sum(e.kind == "channel" for e in entries), items=entries)


# ---------------------------------------------------------------------------------------------- requests
def _same_platform(detail: dict[str, Any], platform_id: int) -> bool:
    value = detail.get("platform_id")
    return value is not None and not isinstance(value, bool) and str(value) == str(platform_id)


@router.get("/platforms/{platform_id}/requests", operation_id="cascade_requests",
            summary="上级平台最近的请求（审计日志）/ an upper platform's recent requests (audit log)",
            response_model=RequestList, responses=error_responses(404))
async def platform_requests(
    user: CascadeAdmin,
    request: Request,
    audit: AuditDep,
    platform_id: PlatformId,
    limit: Annotated[int, Query(ge=1, le=200, description="最多条数 / at most this many")] = 50,
    before: Annotated[int | None, Query(ge=1, le=2**62, description="只看序号小于此值的 / entries with a smaller "
                                        "seq (the next page)")] = None,
) -> RequestList:
    """The `cascade.*` entries naming this platform (`detail.platform_id`): its registrations, catalog queries,
    INVITEs, BYEs, controls and refusals, and the configuration changes; newest first."""
    from audit_log.actions import action_label
    from audit_log.store import ENTRIES

    await _call(_service(request).get_platform, platform_id)  # 404 for an unknown platform
    if audit is None:
        raise ApiError(503, "audit_unavailable", "审计日志未启用 / the audit log is not available")
    items: list[RequestOut] = []
    cursor = before
    scanned = 0
    while len(items) < limit and scanned < _SCAN_MAX:
        where = ENTRIES.c.seq < cursor if cursor is not None else None
        _, entries = await audit.store.query(action_prefix="cascade.", limit=_SCAN_CHUNK, newest_first=True,
                                             where=where)
        if not entries:
            break
        scanned += len(entries)
        for entry in entries:
            cursor = entry.seq
            value = json.loads(entry.data)
            detail = value.get("detail") or {}
            if not isinstance(detail, dict) or not _same_platform(detail, platform_id):
                continue
            zh, en = action_label(value["action"])
            items.append(RequestOut(seq=value["seq"], time=time_out(value["time"]) or value["time"],
                                    action=value["action"], label_zh=zh, label_en=en,
                                    actor=_clean(value.get("actor") or {}), target=_clean(value.get("target") or {}),
                                    detail=_clean(detail)))
            if len(items) >= limit:
                break
        if len(entries) < _SCAN_CHUNK:
            break
    return RequestList(platform_id=platform_id, items=items)
