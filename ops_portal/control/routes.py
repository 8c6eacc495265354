"""Device control: PTZ with the per-channel lock, presets, preset tours, the home (restore) state, and the other
DeviceControl commands of a device (issue 14).

* ``POST .../ptz`` ``{"action", "speed"}`` -> 202 ``{"lock"}``; ``GET .../ptz`` the lock state;
* ``GET/POST .../presets``; ``GET/POST .../tours``, ``POST .../tours/{tour_id}/start|stop``,
  ``DELETE .../tours/{tour_id}``; ``GET/PUT .../ptz/home`` (``ptz.control``, the channel in scope);
* ``POST /api/devices/{device_id}/control`` ``{"command", ...}`` (``device.control``, the device in scope).

The caller acts with the PTZ level of their user record (:attr:`ops_portal.access.Access.ptz_level`).  A
channel held by an operator of the same or a higher level answers 423 ``ptz_locked`` with ``holder`` and
``seconds_left`` and nothing reaches the device.  Every command is on the audit log (``ptz.control``,
``ptz.preset``, ``ptz.tour``, ``device.control``), refusals too (``refused: true``).  The work is done by
``app.state.control`` (:class:`device_control.service.ControlService`); without it these routes answer 503.
Every channel route exists as ``/api/devices/{device_id}/channels/{channel_id}/...`` and as the shorthand
``/api/channels/{channel_id}/...``, scope checked for that exact channel.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from device_control.service import ControlService
from device_control.types import (
    ACTIONS,
    DEVICE_COMMANDS,
    ControlError,
    Home,
    LockState,
    Operator,
    PtzLocked,
    Tour,
    TourPoint,
)
from gbcore.ids import ChannelRef
from gbcore.log import get_logger
from ops_portal.access import Access, ensure_channel
from ops_portal.deps import (
    DEVICE_PATH,
    AccessDep,
    RegistryDep,
    ScopedChannel,
    ScopedDevice,
    client_ip,
    device_channel_path,
    require_permission,
)
from ops_portal.models import User
from ops_portal.schemas import ApiError, error_responses

__all__ = ["lock_body", "locked_error", "operator", "router"]

log = get_logger("gbops.portal.ptz")

router = APIRouter(tags=["device control"], responses=error_responses(401, 403, 422))

PtzUser = Annotated[User, Depends(require_permission("ptz.control"))]
DeviceController = Annotated[User, Depends(require_permission("device.control"))]
TourIdPath = Annotated[int, Path(ge=1, le=2**31 - 1, description="巡航编号 / tour id")]

T = TypeVar("T")

Action = Literal[ACTIONS]  # type: ignore[valid-type]
DeviceCommand = Literal[DEVICE_COMMANDS]  # type: ignore[valid-type]


# ---------------------------------------------------------------------------------------------- helpers
def _control(request: Request) -> ControlService:
    service: ControlService | None = getattr(request.app.state, "control", None)
    if service is None:
        raise ApiError(503, "control_unavailable", "设备控制服务未运行 / device control is not running")
    return service


def operator(user: User, access: Access) -> Operator:
    """The caller as a device-control operator, with the PTZ level of their user record."""
    return Operator(id=str(user.id), username=user.username, level=int(access.ptz_level),
                    display_name=user.display_name or None, kind="user")


def _seconds(value: float) -> int:
    return max(0, math.ceil(value - 1e-9))


def locked_error(state: LockState) -> ApiError:
    """423 ``ptz_locked``: ``{"error", "message", "holder": {"username", "display_name", "level"},
    "seconds_left"}``, the message Chinese first."""
    holder = state.holder
    seconds = _seconds(state.seconds_left)
    if holder is None:  # cannot happen for PtzLocked; answered as a plain conflict all the same
        return ApiError(423, "ptz_locked", "云台被占用 / the PTZ is held by another operator",
                        extra={"holder": None, "seconds_left": seconds})
    name = holder.display_name or holder.username
    return ApiError(
        423, "ptz_locked",
        f"云台被 {name}（级别 {holder.level}）控制中，剩余 {seconds} 秒 / the PTZ is held by {holder.username} "
        f"(level {holder.level}) for {seconds} s more",
        extra={"holder": {"username": holder.username, "display_name": holder.display_name, "level": holder.level},
               "seconds_left": seconds})


def _control_error(exc: ControlError) -> ApiError:
    status = exc.status if 400 <= int(exc.status) <= 599 else 502
    return ApiError(status, exc.code, str(exc))


async def _read(call: Awaitable[T]) -> T:
    """A read of the control service (not audited), its errors as the API's."""
    try:
        return await call
    except ControlError as exc:
        raise _control_error(exc) from None


class HolderOut(BaseModel):
    username: str
    display_name: str | None
    level: int
    kind: str = Field(description="user | platform (an upper platform) | system (a platform tour)")


class LockOut(BaseModel):
    device_id: str
    channel_id: str
    holder: HolderOut | None = Field(description="who holds the channel's PTZ; null: free")
    seconds_left: int = Field(description="seconds until the lock ends (0: free)")
    tour_id: int | None = Field(None, description="a platform tour drives the channel")
    mine: bool = Field(description="the caller holds the lock")


def lock_body(state: LockState, user: User | None = None) -> LockOut:
    h = state.holder
    held = h is not None and state.seconds_left > 0
    return LockOut(
        device_id=state.channel.device_id, channel_id=state.channel.channel_id,
        holder=HolderOut(username=h.username, display_name=h.display_name, level=h.level, kind=h.kind)
        if held and h is not None else None,
        seconds_left=_seconds(state.seconds_left) if held else 0, tour_id=state.tour_id,
        mine=bool(held and h is not None and user is not None and h.kind == "user" and h.id == str(user.id)))


async def _audit(request: Request, user: User, action: str, ref: ChannelRef | None, detail: dict[str, Any],
                 *, device_id: str | None = None) -> None:
    """One entry on the audit log; a failure to record is logged (the command has happened already)."""
    audit = getattr(request.app.state, "audit", None)
    if audit is None:
        return
    from audit_log.log import Actor, Target

    target = Target("channel", ref.key) if ref is not None else Target("device", device_id)
    try:
        await audit.record(actor=Actor.user(user), action=action, target=target, client_ip=client_ip(request),
                           detail=detail)
    except Exception:
        log.exception("ptz.audit_failed", action=action, target=target.id, user=user.username)


def _channel_detail(ref: ChannelRef, access: Access, **more: Any) -> dict[str, Any]:
    return {"device_id": ref.device_id, "channel_id": ref.channel_id, **more, "level": access.ptz_level}


async def _run(request: Request, user: User, action: str, ref: ChannelRef, detail: dict[str, Any],
               call: Callable[[], Awaitable[T]]) -> T:
    """Run a command of the control service: audited (``refused`` and the holder on a 423, ``error`` on a
    failure), the service's errors as the API's."""
    try:
        result = await call()
    except PtzLocked as exc:
        h = exc.state.holder
        await _audit(request, user, action, ref, {**detail, "refused": True, "error": "ptz_locked",
                                                  "holder": h.username if h else None,
                                                  "holder_level": h.level if h else None,
                                                  "seconds_left": _seconds(exc.state.seconds_left)})
        log.info("ptz.locked", channel=ref.key, user=user.username, holder=h.username if h else None)
        raise locked_error(exc.state) from None
    except ControlError as exc:
        await _audit(request, user, action, ref, {**detail, "refused": False, "error": exc.code})
        log.info("ptz.failed", channel=ref.key, user=user.username, action=action, code=exc.code)
        raise _control_error(exc) from None
    await _audit(request, user, action, ref, {**detail, "refused": False})
    return result


def _channel_route(method: str, path: str, operation_id: str, summary: str, **kw: Any) -> Callable[[Any], Any]:
    """Both path forms of a channel route: ``/api/devices/{device_id}/channels/{channel_id}/...`` and the
    shorthand ``/api/channels/{channel_id}/...``."""

    def deco(fn: Any) -> Any:
        add = getattr(router, method)
        add(device_channel_path(path), operation_id=f"{operation_id}_device_channel",
            summary=f"{summary}（设备 + 通道）/ (device + channel)", dependencies=[DEVICE_PATH], **kw)(fn)
        add(path, operation_id=operation_id, summary=summary, **kw)(fn)
        return fn

    return deco


# ---------------------------------------------------------------------------------------------- PTZ
class PtzIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Action = Field(description="up | down | left | right | up_left | up_right | down_left | down_right | "
                                       "zoom_in | zoom_out | focus_near | focus_far | iris_open | iris_close | stop")
    speed: int = Field(128, ge=1, le=255, description="pan/tilt speed 1..255; zoom, focus and iris use speed // 16")


class PtzOut(BaseModel):
    lock: LockOut


@_channel_route("post", "/api/channels/{channel_id}/ptz", "ptz_command", "云台控制 / PTZ command",
                status_code=202, response_model=PtzOut, responses=error_responses(404, 409, 423, 502, 503, 504))
async def ptz_command(user: PtzUser, access: AccessDep, request: Request, ref: ScopedChannel, body: PtzIn) -> PtzOut:
    """Moves the dome (`stop` stops pan, tilt, zoom, focus and iris). A move without a following `stop` is
    stopped by the platform after `GBOPS_PTZ_MAX_MOVE` seconds. The caller then holds the channel's PTZ for
    `GBOPS_PTZ_LOCK_SECONDS` after their last command; someone with a higher PTZ level takes it at once, the
    same or a lower level gets 423 `ptz_locked` with `holder` and `seconds_left` (nothing is sent)."""
    control = _control(request)
    detail = _channel_detail(ref, access, action=body.action, speed=body.speed)
    state = await _run(request, user, "ptz.control", ref, detail,
                       lambda: control.ptz(operator(user, access), ref, body.action, body.speed))
    return PtzOut(lock=lock_body(state, user))


@_channel_route("get", "/api/channels/{channel_id}/ptz", "ptz_lock_state", "云台占用状态 / who holds the PTZ",
                response_model=PtzOut, responses=error_responses(404, 409, 503))
async def ptz_lock_state(user: PtzUser, request: Request, ref: ScopedChannel) -> PtzOut:
    control = _control(request)
    return PtzOut(lock=lock_body(control.lock_state(ref), user))


# ---------------------------------------------------------------------------------------------- presets
class PresetOut(BaseModel):
    preset: int
    name: str | None


class PresetList(BaseModel):
    items: list[PresetOut]


class PresetIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["set", "call", "delete"]
    preset: int = Field(ge=1, le=255)
    name: str | None = Field(None, min_length=1, max_length=32, description="set: the preset's name")


class PresetActionOut(BaseModel):
    action: str
    preset: int
    lock: LockOut


@_channel_route("get", "/api/channels/{channel_id}/presets", "ptz_presets", "预置位列表 / presets",
                response_model=PresetList, responses=error_responses(404, 409, 502, 503, 504))
async def list_presets(user: PtzUser, request: Request, ref: ScopedChannel) -> PresetList:
    """The device's presets (PresetQuery) with the names set on the platform."""
    presets = await _read(_control(request).presets(ref))
    return PresetList(items=[PresetOut(preset=p.number, name=p.name) for p in presets])


@_channel_route("post", "/api/channels/{channel_id}/presets", "ptz_preset", "预置位：设置、调用、删除 / set, call or "
                "delete a preset", response_model=PresetActionOut,
                responses=error_responses(404, 409, 423, 502, 503, 504))
async def preset_action(user: PtzUser, access: AccessDep, request: Request, ref: ScopedChannel,
                        body: PresetIn) -> PresetActionOut:
    """Takes the channel's PTZ lock like a move (423 `ptz_locked` when held by the same or a higher level)."""
    control = _control(request)
    name = body.name.strip() if body.name else None
    if body.name is not None and not name:
        raise ApiError(422, "bad_name", "预置位名称不能为空白 / the preset name must not be blank")
    detail = _channel_detail(ref, access, action=body.action, preset=body.preset, name=name)
    await _run(request, user, "ptz.preset", ref, detail,
               lambda: control.preset(operator(user, access), ref, body.action, body.preset, name))
    return PresetActionOut(action=body.action, preset=body.preset, lock=lock_body(control.lock_state(ref), user))


# ---------------------------------------------------------------------------------------------- tours
class TourPointIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    preset: int = Field(ge=1, le=255)
    dwell_s: float = Field(ge=2, le=3600, description="seconds at the preset (>= 2)")


class TourIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    points: list[TourPointIn] = Field(min_length=1, max_length=64)
    loop: bool = True
    mode: Literal["platform", "device"] = Field("platform", description="platform: the platform calls the presets "
                                                "(any dome); device: the device's own cruise")


class TourPointOut(BaseModel):
    preset: int
    dwell_s: float


class TourOut(BaseModel):
    id: int
    device_id: str
    channel_id: str
    name: str
    points: list[TourPointOut]
    loop: bool
    mode: str
    owner: str | None
    owner_level: int
    running: bool


class TourList(BaseModel):
    items: list[TourOut]


def _tour_out(tour: Tour) -> TourOut:
    return TourOut(id=tour.id, device_id=tour.channel.device_id, channel_id=tour.channel.channel_id, name=tour.name,
                   points=[TourPointOut(preset=p.preset, dwell_s=p.dwell_s) for p in tour.points], loop=tour.loop,
                   mode=tour.mode, owner=tour.owner, owner_level=tour.owner_level, running=tour.running)


@_channel_route("get", "/api/channels/{channel_id}/tours", "ptz_tours", "巡航列表 / preset tours",
                response_model=TourList, responses=error_responses(404, 409, 503))
async def list_tours(user: PtzUser, request: Request, ref: ScopedChannel) -> TourList:
    control = _control(request)
    return TourList(items=[_tour_out(t) for t in await control.list_tours(ref)])


@_channel_route("post", "/api/channels/{channel_id}/tours", "ptz_tour_create", "新建巡航 / create a preset tour",
                status_code=201, response_model=TourOut, responses=error_responses(404, 409, 502, 503))
async def create_tour(user: PtzUser, access: AccessDep, request: Request, ref: ScopedChannel, body: TourIn) -> TourOut:
    """Presets called in order with their dwell times (`loop`: again from the first). A running tour yields to
    a manual operator whose level is at least the tour owner's and resumes when their lock ends."""
    control = _control(request)
    name = body.name.strip()
    if not name:
        raise ApiError(422, "bad_name", "巡航名称不能为空白 / the tour name must not be blank")
    points = tuple(TourPoint(p.preset, p.dwell_s) for p in body.points)
    detail = _channel_detail(ref, access, action="create", name=name, mode=body.mode, loop=body.loop,
                             points=[{"preset": p.preset, "dwell_s": p.dwell_s} for p in points])
    tour = await _run(request, user, "ptz.tour", ref, detail,
                      lambda: control.create_tour(operator(user, access), ref, name, points, body.loop, body.mode))
    return _tour_out(tour)


async def _tour_command(request: Request, user: User, access: Access, ref: ChannelRef, tour_id: int,
                        command: str) -> TourOut:
    control = _control(request)
    op = operator(user, access)
    call = control.start_tour if command == "start" else control.stop_tour
    detail = _channel_detail(ref, access, action=command, tour_id=tour_id)
    return _tour_out(await _run(request, user, "ptz.tour", ref, detail, lambda: call(op, ref, tour_id)))


@_channel_route("post", "/api/channels/{channel_id}/tours/{tour_id}/start", "ptz_tour_start",
                "开始巡航 / start a tour", response_model=TourOut, responses=error_responses(404, 409, 423, 502, 503))
async def start_tour(user: PtzUser, access: AccessDep, request: Request, ref: ScopedChannel,
                     tour_id: TourIdPath) -> TourOut:
    return await _tour_command(request, user, access, ref, tour_id, "start")


@_channel_route("post", "/api/channels/{channel_id}/tours/{tour_id}/stop", "ptz_tour_stop",
                "停止巡航 / stop a tour", response_model=TourOut, responses=error_responses(404, 409, 423, 502, 503))
async def stop_tour(user: PtzUser, access: AccessDep, request: Request, ref: ScopedChannel,
                    tour_id: TourIdPath) -> TourOut:
    return await _tour_command(request, user, access, ref, tour_id, "stop")


@_channel_route("delete", "/api/channels/{channel_id}/tours/{tour_id}", "ptz_tour_delete", "删除巡航 / delete a tour",
                status_code=204, response_class=Response, responses=error_responses(404, 409, 423, 503))
async def delete_tour(user: PtzUser, access: AccessDep, request: Request, ref: ScopedChannel,
                      tour_id: TourIdPath) -> Response:
    control = _control(request)
    detail = _channel_detail(ref, access, action="delete", tour_id=tour_id)
    await _run(request, user, "ptz.tour", ref, detail,
               lambda: control.delete_tour(operator(user, access), ref, tour_id))
    return Response(status_code=204)


# ---------------------------------------------------------------------------------------------- home
class HomeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    preset: int | None = Field(None, ge=1, le=255, description="the home preset; null: the device's HomePosition")
    enabled: bool = True


class HomeOut(BaseModel):
    device_id: str
    channel_id: str
    preset: int | None
    enabled: bool
    restore_below_level: int = Field(description="GBOPS_PTZ_RESTORE_BELOW_LEVEL: the home is called when the lock "
                                                 "of an operator below this level ends (0: never)")


def _home_out(request: Request, ref: ChannelRef, home: Home) -> HomeOut:
    return HomeOut(device_id=ref.device_id, channel_id=ref.channel_id, preset=home.preset, enabled=home.enabled,
                   restore_below_level=request.app.state.settings.ptz_restore_below_level)


@_channel_route("get", "/api/channels/{channel_id}/ptz/home", "ptz_home", "归位设置 / the channel's home (restore)",
                response_model=HomeOut, responses=error_responses(404, 409, 503))
async def get_home(user: PtzUser, request: Request, ref: ScopedChannel) -> HomeOut:
    return _home_out(request, ref, await _read(_control(request).get_home(ref)))


@_channel_route("put", "/api/channels/{channel_id}/ptz/home", "ptz_home_set", "修改归位设置 / set the channel's home",
                response_model=HomeOut, responses=error_responses(404, 409, 502, 503))
async def set_home(user: PtzUser, access: AccessDep, request: Request, ref: ScopedChannel, body: HomeIn) -> HomeOut:
    """When the PTZ lock of an operator below `GBOPS_PTZ_RESTORE_BELOW_LEVEL` ends, the platform calls this
    preset (or the device's HomePosition when `preset` is null)."""
    control = _control(request)
    detail = _channel_detail(ref, access, action="home", preset=body.preset, enabled=body.enabled)
    home = await _run(request, user, "ptz.tour", ref, detail,
                      lambda: control.set_home(operator(user, access), ref, body.preset, body.enabled))
    return _home_out(request, ref, home)


# ---------------------------------------------------------------------------------------------- device commands
ParamValue = str | int | float | bool | None


class DeviceControlIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    command: DeviceCommand = Field(description="teleboot | record_start | record_stop | guard | unguard | "
                                               "alarm_reset | iframe | home_position")
    channel_id: str | None = Field(None, min_length=1, max_length=32, pattern=r"^[0-9A-Za-z]+$",
                                   description="the device's channel the command is for (record, iframe, "
                                               "home_position; default: the device)")
    params: dict[str, ParamValue] | None = Field(
        None, max_length=16, description="command parameters, e.g. home_position: enabled, preset, reset_time; "
                                         "alarm_reset: alarm_method, alarm_type")


class DeviceControlOut(BaseModel):
    device_id: str
    channel_id: str | None
    command: str
    result: str | None = Field(description="the device's Result (OK | ERROR); null when it sent none")
    answered: bool = Field(description="the device answered (false: no Result in time, or the standard defines none)")
    message: str
    detail: str = ""


_PARAM_KEY_MAX = 32
_PARAM_TEXT_MAX = 128


@router.post("/api/devices/{device_id}/control", operation_id="device_control",
             summary="设备控制命令 / device control command", response_model=DeviceControlOut,
             responses=error_responses(404, 409, 502, 503, 504))
async def device_control(user: DeviceController, access: AccessDep, registry: RegistryDep, request: Request,
                         device_id: ScopedDevice, body: DeviceControlIn) -> DeviceControlOut:
    """Sends a DeviceControl command and waits (1-2 s) for the device's Result where the standard defines one;
    `answered: false` says plainly that none came. `iframe` uses `IFameCmd` or `IFrameCmd` by the device's
    GB/T 28181 version."""
    control = _control(request)
    params = dict(body.params or {})
    for key, value in params.items():
        if len(key) > _PARAM_KEY_MAX or not key.replace("_", "").isalnum() or (
                isinstance(value, str) and len(value) > _PARAM_TEXT_MAX):
            raise ApiError(422, "bad_params", "命令参数无效 / invalid command parameters")
    if body.channel_id is not None and body.channel_id != device_id:
        await ensure_channel(access, registry, ChannelRef(device_id, body.channel_id))
        params["channel_id"] = body.channel_id
    detail = {"device_id": device_id, "channel_id": body.channel_id, "command": body.command, "params": params,
              "level": access.ptz_level}
    try:
        result = await control.device_command(operator(user, access), device_id, body.command, params)
    except ControlError as exc:
        await _audit(request, user, "device.control", None, {**detail, "error": exc.code}, device_id=device_id)
        raise _control_error(exc) from None
    await _audit(request, user, "device.control", None,
                 {**detail, "result": result.result, "answered": result.answered}, device_id=device_id)
    if result.answered and result.result == "OK":
        message = "设备已执行 / the device carried it out"
    elif result.answered:
        message = f"设备返回失败（{result.result}）/ the device answered {result.result}"
    else:
        message = "设备没有返回结果（命令已送达）/ the device sent no result (the command was delivered)"
    return DeviceControlOut(device_id=device_id, channel_id=body.channel_id, command=body.command,
                            result=result.result, answered=result.answered, message=message, detail=result.detail)
