"""The time API (issue 16): device clock skew, the 1 s compliance measure, the platform's clock and NTP server.

``device.read`` and the caller's scope, like the device routes: a device outside it is 403
``device_forbidden`` (an unknown one too, unless the caller has the full scope: then 404).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from gbcore.log import get_logger
from ops_portal.deps import AccessDep, RegistryDep, ScopedDevice, require_permission
from ops_portal.models import User
from ops_portal.schemas import ApiError, error_responses
from ops_portal.timesync.schemas import (
    ClockCheckOut,
    ClockOut,
    ComplianceOut,
    DeviceClockList,
    DeviceClockOut,
    TimeStatusOut,
)

log = get_logger("gbops.portal.time")

router = APIRouter(tags=["time"], responses=error_responses(401, 403, 422))

DeviceReader = Annotated[User, Depends(require_permission("device.read"))]
_PAGE = 1000


def _service(request: Request) -> Any:
    """The platform's time service; without one (a portal on its own) a reader of the stored clock history."""
    service = getattr(request.app.state, "timesync", None)
    if service is None:
        from timesync.service import TimeConfig, TimeService

        state = request.app.state
        return TimeService.reader(state.sessionmaker, TimeConfig.from_settings(state.settings))
    return service


async def _visible_device_ids(registry: Any, scope: Any) -> list[str]:
    ids: list[str] = []
    offset = 0
    while True:
        total, page = await registry.list_devices(offset=offset, limit=_PAGE, scope=scope)
        ids.extend(d.device_id for d in page)
        offset += len(page)
        if not page or offset >= total:
            return ids


@router.get("/api/devices/{device_id}/clock", operation_id="device_clock", response_model=ClockOut,
            summary="设备时钟偏差 / a device's clock skew", responses=error_responses(404))
async def device_clock(request: Request, user: DeviceReader, device_id: ScopedDevice) -> ClockOut:
    return ClockOut(**await _service(request).device_clock(device_id))


@router.post("/api/devices/{device_id}/clock/check", operation_id="device_clock_check",
             response_model=ClockCheckOut, summary="立即检测设备时钟 / sample a device's clock now",
             responses=error_responses(404, 409, 502, 503, 504))
async def check_device_clock(request: Request, user: DeviceReader, device_id: ScopedDevice) -> ClockCheckOut:
    from timesync.service import DeviceOffline, NoDeviceTime

    service = getattr(request.app.state, "timesync", None)
    if service is None:
        raise ApiError(503, "time_unavailable", "时间服务未运行 / the time service is not running")
    try:
        await service.check_device(device_id)
    except DeviceOffline:
        raise ApiError(409, "device_offline", f"设备不在线 / the device is offline: {device_id}") from None
    except NoDeviceTime:
        raise ApiError(502, "no_device_time", "设备的 DeviceStatus 应答没有可用的 DeviceTime / the device's "
                       "DeviceStatus answer carries no usable DeviceTime") from None
    except TimeoutError:
        raise ApiError(504, "device_timeout", "设备未应答 DeviceStatus / the device did not answer DeviceStatus") \
            from None
    return ClockCheckOut(**await service.device_clock(device_id))


@router.get("/api/time/devices", operation_id="time_devices", response_model=DeviceClockList,
            summary="设备时钟列表 / the clocks of the visible devices")
async def device_clocks(
    request: Request, user: DeviceReader, access: AccessDep, registry: RegistryDep,
    q: Annotated[str | None, Query(max_length=100, description="按编码或名称搜索 / search id or name")] = None,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> DeviceClockList:
    service = _service(request)
    total, devices = await registry.list_devices(q=q or None, offset=offset, limit=limit, scope=access.scope)
    clocks = await service.device_clocks([d.device_id for d in devices])
    items = [DeviceClockOut(device_id=d.device_id, name=d.name, online=bool(d.online), **clocks[d.device_id])
             for d in devices]
    return DeviceClockList(total=total, offset=offset, limit=limit, items=items)


@router.get("/api/time/compliance", operation_id="time_compliance", response_model=ComplianceOut,
            summary="时钟达标率：24 小时内误差不超过 1 秒的设备占比 / share of devices within 1 s over 24 h")
async def compliance(request: Request, user: DeviceReader, access: AccessDep, registry: RegistryDep) -> ComplianceOut:
    service = _service(request)
    ids = await _visible_device_ids(registry, access.scope)
    return ComplianceOut(**await service.compliance(ids))


@router.get("/api/time/status", operation_id="time_status", response_model=TimeStatusOut,
            summary="平台时钟与 NTP 服务 / the platform's clock and NTP server")
async def time_status(request: Request, user: DeviceReader) -> TimeStatusOut:
    return TimeStatusOut(**_service(request).status())
