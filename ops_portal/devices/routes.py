"""``/api/devices``: the device registry, read-only, and on-demand catalog sync.

Every route is limited to the caller's data scope (:mod:`ops_portal.access`): the list shows only the
devices the caller may see, and a route that names a device answers 403 ``device_forbidden`` for a
device outside it (also for an unknown one, unless the caller has the full scope: then 404)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request

from gbcore.db import begin_write
from gbcore.log import get_logger
from ops_portal.access import ensure_device
from ops_portal.deps import (
    AccessDep,
    AuditDep,
    RegistryDep,
    ScopedDevice,
    SessionDep,
    SettingsDep,
    SipDep,
    client_ip,
    device_online,
    require_permission,
    settle,
)
from ops_portal.devices.schemas import (
    CatalogProgressOut,
    ChannelList,
    ChannelOut,
    DeviceList,
    DeviceOut,
    DevicePasswordRequest,
    PresenceList,
    PresenceOut,
)
from ops_portal.models import User
from ops_portal.schemas import ApiError, error_responses

log = get_logger("gbops.portal.devices")

router = APIRouter(
    prefix="/api/devices",
    tags=["devices"],
    responses=error_responses(401, 403, 422),
)

DeviceReader = Annotated[User, Depends(require_permission("device.read"))]
CatalogSyncer = Annotated[User, Depends(require_permission("device.catalog_sync"))]
DeviceIdPath = Annotated[str, Path(min_length=1, max_length=32, description="GB/T 28181 设备编码 / device id")]

_NOT_FOUND = error_responses(404)


def _device_not_found(device_id: str) -> ApiError:
    return ApiError(404, "device_not_found", f"设备不存在 / device not found: {device_id}")


def _sip_unavailable() -> ApiError:
    return ApiError(
        503,
        "sip_unavailable",
        "SIP 服务未运行，无法与设备通信 / the SIP service is not running: devices cannot be reached",
    )


async def _require_device(registry: Any, device_id: str) -> Any:
    device = await registry.get_device(device_id)
    if device is None:
        raise _device_not_found(device_id)
    return device


async def _writable_device(access: AccessDep, registry: RegistryDep, device_id: DeviceIdPath) -> str:
    """A device the caller may configure: in scope, or (full scope only) not known yet."""
    if not access.scope.all:
        await ensure_device(access, registry, device_id)
    return device_id


@router.get("", operation_id="devices_list", summary="设备列表 / list devices", response_model=DeviceList)
async def list_devices(
    user: DeviceReader,
    access: AccessDep,
    registry: RegistryDep,
    online: Annotated[bool | None, Query(description="只看在线 (true) 或离线 (false) / filter by presence")] = None,
    q: Annotated[
        str | None, Query(max_length=100, description="按编码或名称搜索 / search device id or name")
    ] = None,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    org_node_id: Annotated[
        int | None, Query(ge=1, le=2**31 - 1, description="只看分配到此组织节点的设备 / devices assigned to this node")
    ] = None,
    sort: Annotated[Literal["device_id", "name", "online", "last_seen", "registered_at", "manufacturer",
                            "remote_addr"], Query(description="排序列 / sort by")] = "device_id",
    order: Annotated[Literal["asc", "desc"], Query(description="升序或降序 / ascending or descending")] = "asc",
) -> DeviceList:
    total, devices = await registry.list_devices(
        online=online, q=q or None, offset=offset, limit=limit, scope=access.scope, org_node_id=org_node_id,
        sort=sort, order=order,
    )
    return DeviceList(
        total=total,
        offset=offset,
        limit=limit,
        items=[DeviceOut.model_validate(d) for d in devices],
    )


@router.get(
    "/{device_id}",
    operation_id="devices_get",
    summary="设备详情 / one device",
    response_model=DeviceOut,
    responses=_NOT_FOUND,
)
async def get_device(user: DeviceReader, registry: RegistryDep, device_id: ScopedDevice) -> DeviceOut:
    return DeviceOut.model_validate(await _require_device(registry, device_id))


@router.get(
    "/{device_id}/channels",
    operation_id="devices_channels",
    summary="设备通道 / channels of a device",
    response_model=ChannelList,
    responses=_NOT_FOUND,
)
async def list_channels(
    user: DeviceReader,
    access: AccessDep,
    registry: RegistryDep,
    device_id: ScopedDevice,
    include_removed: Annotated[bool, Query(description="包括已删除的通道 / include removed channels")] = False,
) -> ChannelList:
    """The device's channels that are in the caller's scope."""
    await _require_device(registry, device_id)
    channels = await registry.list_channels(device_id, include_removed=include_removed, scope=access.scope)
    return ChannelList(items=[ChannelOut.model_validate(c) for c in channels])


@router.get(
    "/{device_id}/presence",
    operation_id="devices_presence",
    summary="上下线记录 / online-offline history",
    response_model=PresenceList,
    responses=_NOT_FOUND,
)
async def list_presence(
    user: DeviceReader,
    access: AccessDep,
    registry: RegistryDep,
    device_id: ScopedDevice,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    before: Annotated[
        datetime | None,
        Query(description="只返回此时刻之前的记录 (RFC 3339) / only events before this time"),
    ] = None,
) -> PresenceList:
    await _require_device(registry, device_id)
    if before is not None and (before.tzinfo is None or before.utcoffset() is None):
        before = before.replace(tzinfo=UTC)
    events = await registry.list_presence(device_id, limit=limit, before=before, scope=access.scope)
    return PresenceList(items=[PresenceOut.model_validate(e) for e in events])


def _is_not_reachable(exc: BaseException) -> bool:
    # sip_server.service.DeviceNotReachable, matched by name so that the portal does not import
    # the SIP stack (and a test double can raise its own class of that name).
    return any(cls.__name__ == "DeviceNotReachable" for cls in type(exc).__mro__)


def _device_offline(device_id: str) -> ApiError:
    return ApiError(
        409,
        "device_offline",
        f"设备不在线，无法同步目录 / the device is offline, its catalog cannot be synced: {device_id}",
    )


@router.post(
    "/{device_id}/catalog-sync",
    operation_id="devices_catalog_sync_start",
    summary="立即同步设备目录 / sync the device catalog now",
    status_code=202,
    response_model=CatalogProgressOut,
    responses=error_responses(404, 409, 503),
)
async def start_catalog_sync(
    user: CatalogSyncer,
    registry: RegistryDep,
    sip: SipDep,
    device_id: ScopedDevice,
    audit: AuditDep,
    request: Request,
) -> CatalogProgressOut:
    """Ask the device for its catalog; answers at once (202) with the progress of the sync.
    Poll ``GET`` on the same path for the outcome.  The request is on the audit log
    (``device.catalog_sync``) before the answer."""
    await _require_device(registry, device_id)
    if sip is None:
        raise _sip_unavailable()
    if not await device_online(sip, device_id):
        raise _device_offline(device_id)
    try:
        progress = await settle(sip.start_catalog_sync(device_id))
    except Exception as exc:
        if _is_not_reachable(exc):
            raise _device_offline(device_id) from None
        raise
    log.info("catalog_sync.requested", device_id=device_id, username=user.username)
    out = CatalogProgressOut.model_validate(progress)
    if audit is not None:
        from audit_log.log import Actor, Target

        await audit.record(actor=Actor.user(user), action="device.catalog_sync", target=Target("device", device_id),
                           client_ip=client_ip(request), detail={"sn": out.sn})
    return out


@router.get(
    "/{device_id}/catalog-sync",
    operation_id="devices_catalog_sync_status",
    summary="目录同步进度 / progress of the last catalog sync",
    response_model=CatalogProgressOut,
    responses=error_responses(404, 503),
)
async def catalog_sync_status(
    user: DeviceReader, registry: RegistryDep, sip: SipDep, device_id: ScopedDevice
) -> CatalogProgressOut:
    await _require_device(registry, device_id)
    if sip is None:
        raise _sip_unavailable()
    progress = await settle(sip.catalog_progress(device_id))
    if progress is None:
        raise ApiError(
            404,
            "catalog_sync_not_found",
            "此设备自平台启动以来没有目录同步记录 / no catalog sync of this device since the platform started",
        )
    return CatalogProgressOut.model_validate(progress)


@router.get(
    "/{device_id}/status",
    operation_id="devices_status_query",
    summary="实时查询设备状态 / ask the device for its status now (DeviceStatus)",
    responses=error_responses(404, 409, 503, 504),
)
async def query_device_status(
    user: DeviceReader, registry: RegistryDep, sip: SipDep, device_id: ScopedDevice
) -> dict[str, Any]:
    """Sends a MANSCDP DeviceStatus query and waits for the device's answer (up to the query timeout).
    `online`/`status` are what the device says about itself; `record` its recording state; `alarms` its
    alarm inputs as `[device_id, duty_status]`."""
    await _require_device(registry, device_id)
    if sip is None:
        raise _sip_unavailable()
    if not await device_online(sip, device_id):
        raise ApiError(409, "device_offline", f"设备不在线 / the device is offline: {device_id}")
    try:
        st = await sip.device_status(device_id)
    except Exception as exc:
        if _is_not_reachable(exc):
            raise ApiError(409, "device_offline", f"设备不在线 / the device is offline: {device_id}") from None
        log.warning("device_status.failed", device_id=device_id, error=str(exc))
        raise ApiError(504, "device_no_answer",
                       f"设备未应答状态查询 / the device did not answer the status query: {exc}") from None
    return {
        "device_id": device_id,
        "result": st.result,
        "online": st.online,
        "status": st.status,
        "encode": st.encode,
        "record": st.record,
        "device_time": st.device_time,
        "alarms": [list(a) for a in st.alarms],
    }


@router.put(
    "/{device_id}/password",
    operation_id="devices_password_set",
    summary="设置设备 SIP 密码 / set the device's own SIP password",
    status_code=204,
    responses=error_responses(422),
)
async def set_device_password(
    user: Annotated[User, Depends(require_permission("device.write"))],
    registry: RegistryDep,
    sip: SipDep,
    settings: SettingsDep,
    device_id: Annotated[str, Depends(_writable_device)],
    body: DevicePasswordRequest,
    session: SessionDep,
    audit: AuditDep,
    request: Request,
) -> None:
    """Stores the password only as digest HA1 values (MD5 and SHA-256) for the platform's realm, with the
    device id as digest user name; the device must use it from its next registration. A weak password
    is refused (422) with the reason. `null` clears it: the device falls back to GBOPS_SIP_PASSWORD.
    The device need not exist yet (it may be added before it first registers). The change and its audit
    entry (``device.password_set``) commit together."""
    from gbcore.passwords import weak_password_reason
    from sip_server.sip import compute_ha1

    if body.password is not None:
        reason = weak_password_reason(body.password, device_id)
        if reason:
            raise ApiError(422, "weak_password", f"设备密码太弱 / the device password is weak: {reason}")
    await begin_write(session)
    await registry.set_device_password(device_id, settings.realm, body.password, session=session)
    if audit is not None:
        from audit_log.log import Actor, Target

        await audit.append(session, actor=Actor.user(user), action="device.password_set",
                           target=Target("device", device_id), client_ip=client_ip(request),
                           detail={"cleared": body.password is None})
    await session.commit()
    if sip is not None:
        ha1 = None
        if body.password is not None:
            ha1 = {alg: compute_ha1(device_id, settings.realm, body.password, alg) for alg in ("MD5", "SHA-256")}
        sip.set_device_password_ha1(device_id, ha1)
    log.info("device.password_set", device_id=device_id, username=user.username, cleared=body.password is None)
