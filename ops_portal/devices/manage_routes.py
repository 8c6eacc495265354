"""``/api/devices``: device management (issue 18): add (pre-register), edit and delete devices, edit channels,
batch actions, export and import as CSV / XLSX.

Writes need ``device.write``.  A scoped user writes only the devices assigned to a node of their scope (a
device seen only through a granted channel is read-only to them), places devices and channels only in nodes
of their scope, and must place a device they add in one.  Every write and its audit entry (``device.create``,
``device.update``, ``device.delete``, ``channel.update``, ``device.import``, ``device.batch``) commit together;
the SIP service learns a device's password (or that it is gone) after the commit.

A deleted device keeps its row (``deleted_at``): its presence history, audit entries and reports stay; it is
404 afterwards, and adding the same id again revives it with fresh settings.  The SIP service forgets it:
its credentials are cleared (and, where the service can, its registration dropped and its id made unknown,
so that it is refused unless ``GBOPS_SIP_ALLOW_UNKNOWN``).

This router is included before :mod:`ops_portal.devices.routes` (its ``/export`` and ``/import/template``
would otherwise be taken for a device id).
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response

from device_registry.manage import (
    DeviceState,
    create_devices,
    delete_device,
    device_id_problem,
    device_states,
    export_devices,
    org_node_ids,
    update_channel,
    update_device,
)
from gbcore.db import begin_write
from gbcore.ids import ChannelRef
from gbcore.log import get_logger
from gbcore.passwords import weak_password_reason
from gbcore.timeutil import device_now
from ops_portal.access import audit_change, device_forbidden, ensure_channel, node_forbidden
from ops_portal.deps import (
    AccessDep,
    AuditDep,
    RegistryDep,
    SessionDep,
    SettingsDep,
    SipDep,
    client_ip,
    device_online,
    require_permission,
    settle,
)
from ops_portal.devices.import_export import (
    SheetError,
    parse_multipart_file,
    read_sheet,
    row_problem,
    template_rows,
    write_csv,
    write_xlsx,
)
from ops_portal.devices.schemas import (
    ChannelOut,
    ChannelUpdate,
    DeviceBatchOut,
    DeviceBatchRequest,
    DeviceBatchResult,
    DeviceCreate,
    DeviceImportError,
    DeviceImportOut,
    DeviceOut,
    DeviceUpdate,
)
from ops_portal.models import User
from ops_portal.schemas import ApiError, error_responses

log = get_logger("gbops.portal.devices")

router = APIRouter(prefix="/api/devices", tags=["devices"], responses=error_responses(401, 403, 422))

DeviceReader = Annotated[User, Depends(require_permission("device.read"))]
DeviceWriter = Annotated[User, Depends(require_permission("device.write"))]
DeviceIdPath = Annotated[str, Path(min_length=1, max_length=32, description="GB/T 28181 设备编码 / device id")]
ChannelIdPath = Annotated[str, Path(min_length=1, max_length=32, description="通道编码 / channel id")]
SheetFormat = Annotated[Literal["csv", "xlsx"], Query(description="csv（UTF-8 BOM）或 xlsx / file format")]

#: Largest import file (bytes).
IMPORT_MAX_BYTES = 5 * 1024 * 1024

_MEDIA = {"csv": "text/csv; charset=utf-8",
          "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}
_FILE = {200: {"content": {m.split(";")[0]: {} for m in _MEDIA.values()}}}


# ------------------------------------------------------------------------------------------ helpers
def _not_found(device_id: str) -> ApiError:
    return ApiError(404, "device_not_found", f"设备不存在 / device not found: {device_id}")


def _bad_id(device_id: str, problem: str) -> ApiError:
    return ApiError(422, "bad_device_id", f"{problem}: {device_id}")


def _weak(reason: str) -> ApiError:
    return ApiError(422, "weak_password", f"设备密码太弱 / the device password is weak: {reason}")


def _exists(device_id: str) -> ApiError:
    return ApiError(409, "device_exists", f"设备已存在 / the device exists already: {device_id}")


def _online(device_id: str) -> ApiError:
    return ApiError(409, "device_online", f"设备在线，确认删除请加 force=true（将断开其注册） / the device is online: "
                                          f"use force=true to delete it (its registration is dropped): {device_id}")


def _sip_unavailable() -> ApiError:
    return ApiError(503, "sip_unavailable",
                    "SIP 服务未运行，无法与设备通信 / the SIP service is not running: devices cannot be reached")


def _node_problem(access: Any, node_id: int | None, existing: set[int]) -> ApiError | None:
    """Why a device or channel cannot be placed in ``node_id`` (None: unassigned) by this user."""
    if node_id is None:
        if access.scope.all:
            return None
        return ApiError(422, "bad_org_node", "请选择您范围内的组织节点 / choose an organisation node in your scope")
    if node_id not in existing:
        if not access.scope.all:
            return node_forbidden(node_id)  # existence does not leak
        return ApiError(422, "bad_org_node", f"组织节点不存在 / no such organisation node: {node_id}")
    if not access.scope.allows_node(node_id):
        return node_forbidden(node_id)
    return None


async def _check_node(access: Any, session: Any, node_id: int | None) -> None:
    problem = _node_problem(access, node_id, await org_node_ids(session, [] if node_id is None else [node_id]))
    if problem is not None:
        raise problem


def _write_problem(access: Any, device_id: str, state: DeviceState | None) -> ApiError | None:
    """Why this user may not write this device: unknown or deleted (404 with the full scope, 403 otherwise:
    existence does not leak), or not assigned to a node of their scope."""
    if access.scope.all:
        return _not_found(device_id) if state is None or state.deleted else None
    if state is None or state.deleted or state.org_node_id is None or state.org_node_id not in access.scope.org_node_ids:
        return device_forbidden(device_id)
    return None


async def _device_for_write(access: Any, session: Any, device_id: str) -> DeviceState:
    state = (await device_states(session, [device_id], lock=True)).get(device_id)
    problem = _write_problem(access, device_id, state)
    if problem is not None:
        raise problem
    assert state is not None
    return state


def _sip_ha1(device_id: str, realm: str, password: str | None) -> dict[str, str] | None:
    from sip_server.sip import compute_ha1

    if password is None:
        return None
    return {alg: compute_ha1(device_id, realm, password, alg) for alg in ("MD5", "SHA-256")}


async def _sip_forget(sip: Any, device_id: str) -> None:
    """Clear a deleted device's credentials on every SIP node; where the service can, drop its registration and
    make its id unknown (``forget_device``)."""
    if sip is None:
        return
    await settle(sip.set_device_password_ha1(device_id, None))
    forget = getattr(sip, "forget_device", None)
    if forget is not None:
        await settle(forget(device_id))


async def _device_out(registry: Any, device_id: str) -> DeviceOut:
    device = await registry.get_device(device_id)
    if device is None:  # pragma: no cover - deleted between the commit and this read
        raise _not_found(device_id)
    return DeviceOut.model_validate(device)


# ------------------------------------------------------------------------------------------ one device
@router.post("", operation_id="devices_create", summary="添加（预注册）设备 / add (pre-register) a device",
             status_code=201, response_model=DeviceOut, responses=error_responses(409))
async def create_device(
    user: DeviceWriter, access: AccessDep, registry: RegistryDep, sip: SipDep, settings: SettingsDep,
    session: SessionDep, audit: AuditDep, request: Request, body: DeviceCreate,
) -> DeviceOut:
    """The device appears offline until it registers; its own password (weak ones refused) works at once on
    every SIP node (null: the platform's GBOPS_SIP_PASSWORD).  A deleted device of the same id is revived with
    these settings."""
    device_id = body.device_id
    problem = device_id_problem(device_id)
    if problem:
        raise _bad_id(device_id, problem)
    if body.password is not None and (reason := weak_password_reason(body.password, device_id)):
        raise _weak(reason)
    await begin_write(session)
    await _check_node(access, session, body.org_node_id)
    state = (await device_states(session, [device_id], lock=True)).get(device_id)
    if state is not None and not state.deleted:
        raise _exists(device_id)
    await create_devices(session, [body.model_dump()], settings.realm)
    detail = body.model_dump(exclude={"password", "device_id"}, exclude_none=True)
    detail.update(password_set=body.password is not None, revived=state is not None)
    await audit_change(audit, session, user, "device.create", ("device", device_id), client_ip(request), detail)
    await session.commit()
    if sip is not None:
        await settle(sip.set_device_password_ha1(device_id, _sip_ha1(device_id, settings.realm, body.password)))
    log.info("device.created", device_id=device_id, username=user.username)
    return await _device_out(registry, device_id)


@router.patch("/{device_id}", operation_id="devices_update", summary="修改设备 / edit a device",
              response_model=DeviceOut, responses=error_responses(404))
async def patch_device(
    user: DeviceWriter, access: AccessDep, registry: RegistryDep, sip: SipDep, settings: SettingsDep,
    session: SessionDep, audit: AuditDep, request: Request, device_id: DeviceIdPath, body: DeviceUpdate,
) -> DeviceOut:
    """Only the fields sent change (null clears: name -> the device's own name from its next DeviceInfo,
    password -> GBOPS_SIP_PASSWORD, transport -> udp, stream_form -> none)."""
    changes = body.model_dump(include=body.model_fields_set)
    password = changes.get("password")
    if password is not None and (reason := weak_password_reason(password, device_id)):
        raise _weak(reason)
    await begin_write(session)
    await _device_for_write(access, session, device_id)
    if "org_node_id" in changes:
        await _check_node(access, session, changes["org_node_id"])
    await update_device(session, device_id, changes, settings.realm)
    detail: dict[str, Any] = {k: v for k, v in changes.items() if k != "password"}
    if "password" in changes:
        detail["password_set" if password is not None else "password_cleared"] = True
    await audit_change(audit, session, user, "device.update", ("device", device_id), client_ip(request), detail)
    await session.commit()
    if sip is not None and "password" in changes:
        await settle(sip.set_device_password_ha1(device_id, _sip_ha1(device_id, settings.realm, password)))
    return await _device_out(registry, device_id)


@router.delete("/{device_id}", operation_id="devices_delete", summary="删除设备 / delete a device",
               status_code=204, response_class=Response, responses=error_responses(404, 409))
async def remove_device(
    user: DeviceWriter, access: AccessDep, sip: SipDep, session: SessionDep, audit: AuditDep, request: Request,
    device_id: DeviceIdPath,
    force: Annotated[bool, Query(description="在线也删除（断开其注册） / delete even while online")] = False,
) -> Response:
    """Refused while the device is online (409 ``device_online``) unless ``force``.  Its presence history,
    audit entries and reports stay."""
    state = (await device_states(session, [device_id])).get(device_id)
    if (problem := _write_problem(access, device_id, state)) is not None:
        raise problem
    await session.commit()  # end the read transaction before asking the SIP service
    online = bool(state and state.online) or (sip is not None and await device_online(sip, device_id))
    if online and not force:
        raise _online(device_id)
    await begin_write(session)
    await _device_for_write(access, session, device_id)
    await delete_device(session, device_id)
    await audit_change(audit, session, user, "device.delete", ("device", device_id), client_ip(request),
                       {"force": force, "was_online": online})
    await session.commit()
    await _sip_forget(sip, device_id)
    log.info("device.deleted", device_id=device_id, username=user.username, force=force, was_online=online)
    return Response(status_code=204)


@router.patch("/{device_id}/channels/{channel_id}", operation_id="devices_channel_update",
              summary="修改通道 / edit a channel", response_model=ChannelOut, responses=error_responses(404))
async def patch_channel(
    user: DeviceWriter, access: AccessDep, registry: RegistryDep, session: SessionDep, audit: AuditDep,
    request: Request, device_id: DeviceIdPath, channel_id: ChannelIdPath, body: ChannelUpdate,
) -> Any:
    """Only the fields sent change.  The operator's values win over later catalogs; null gives a field back to
    the catalog (org_node_id null: the channel follows its device's node)."""
    ref = ChannelRef(device_id, channel_id)
    await ensure_channel(access, registry, ref)
    changes = body.model_dump(include=body.model_fields_set)
    await begin_write(session)
    if "org_node_id" in changes:
        await _check_node(access, session, changes["org_node_id"])
    if not await update_channel(session, device_id, channel_id, changes):
        raise ApiError(404, "channel_not_found", f"通道不存在 / channel not found: {ref.key}")
    await audit_change(audit, session, user, "channel.update", ("channel", ref.key), client_ip(request), changes)
    await session.commit()
    return ChannelOut.model_validate(await registry.get_channel(ref))


# ------------------------------------------------------------------------------------------ batch
@router.post("/batch", operation_id="devices_batch", summary="批量操作设备 / act on several devices",
             response_model=DeviceBatchOut, responses=error_responses(503))
async def batch(
    user: DeviceWriter, access: AccessDep, sip: SipDep, session: SessionDep, audit: AuditDep, request: Request,
    body: DeviceBatchRequest,
) -> DeviceBatchOut:
    """``move`` (to ``org_node_id``; null: unassigned), ``catalog_sync`` (needs ``device.catalog_sync`` too;
    online devices only) or ``delete`` (online devices only with ``force``).  Each device is answered on its
    own; one ``device.batch`` audit entry names those done."""
    ids = list(dict.fromkeys(body.device_ids))
    results: dict[str, DeviceBatchResult] = {}

    def fail(device_id: str, error: ApiError) -> None:
        results[device_id] = DeviceBatchResult(device_id=device_id, ok=False, code=error.error, message=error.message)

    if body.action == "catalog_sync" and not access.can("device.catalog_sync"):
        raise ApiError(403, "forbidden", "无权执行此操作（需要“目录同步”权限） / permission denied (needs "
                                         "device.catalog_sync)")
    if body.action == "catalog_sync" and sip is None:
        raise _sip_unavailable()
    if body.action == "move":
        await begin_write(session)
        await _check_node(access, session, body.org_node_id)
    states = await device_states(session, ids, lock=body.action == "move")
    todo = []
    for device_id in ids:
        problem = _write_problem(access, device_id, states.get(device_id))
        if problem is not None:
            fail(device_id, problem)
        else:
            todo.append(device_id)
    done: list[str] = []
    if body.action == "move":
        for device_id in todo:
            await update_device(session, device_id, {"org_node_id": body.org_node_id}, "")
            done.append(device_id)
    else:
        await session.commit()  # end the read transaction before asking the SIP service
        online = {d: states[d].online or (sip is not None and await device_online(sip, d)) for d in todo}
        if body.action == "catalog_sync":
            for device_id in todo:
                if not online[device_id]:
                    fail(device_id, ApiError(409, "device_offline", f"设备不在线 / the device is offline: {device_id}"))
                    continue
                try:
                    await settle(sip.start_catalog_sync(device_id))
                    done.append(device_id)
                except Exception as exc:
                    fail(device_id, ApiError(409, "device_offline", f"设备不在线 / the device is offline: "
                                                                    f"{device_id} ({type(exc).__name__})"))
            await begin_write(session)
        else:
            await begin_write(session)
            for device_id in todo:
                if online[device_id] and not body.force:
                    fail(device_id, _online(device_id))
                elif await delete_device(session, device_id):
                    done.append(device_id)
                else:
                    fail(device_id, _not_found(device_id))
    for device_id in done:
        results[device_id] = DeviceBatchResult(device_id=device_id, ok=True)
    detail: dict[str, Any] = {"action": body.action, "device_ids": done, "failed": len(ids) - len(done)}
    if body.action == "move":
        detail["org_node_id"] = body.org_node_id
    if body.action == "delete":
        detail["force"] = body.force
    await audit_change(audit, session, user, "device.batch", ("device", None), client_ip(request), detail)
    await session.commit()
    if body.action == "delete":
        for device_id in done:
            await _sip_forget(sip, device_id)
    log.info("device.batch", action=body.action, done=len(done), failed=len(ids) - len(done), username=user.username)
    return DeviceBatchOut(results=[results[d] for d in ids])


# ------------------------------------------------------------------------------------------ export / import
def _sheet(fmt: str, rows: list[dict[str, Any]], stem: str) -> Response:
    data = write_xlsx(rows) if fmt == "xlsx" else write_csv(rows)
    name = f"{stem}-{device_now():%Y%m%d-%H%M%S}.{fmt}"
    return Response(content=data, media_type=_MEDIA[fmt],
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


@router.get("/export", operation_id="devices_export", summary="导出设备 / export the devices",
            response_class=Response, responses=_FILE)
async def export(user: DeviceReader, access: AccessDep, session: SessionDep, format: SheetFormat = "csv"
                 ) -> Response:
    """Every device the caller may see, with Chinese column headers and Beijing times (never a password)."""
    rows = await export_devices(session, access.scope)
    return _sheet(format, rows, "devices")


@router.get("/import/template", operation_id="devices_import_template",
            summary="设备导入模板 / the device import template", response_class=Response, responses=_FILE)
async def import_template(user: DeviceReader, format: SheetFormat = "xlsx") -> Response:
    return _sheet(format, template_rows(), "devices-template")


@router.post("/import", operation_id="devices_import", summary="导入设备 / import devices from CSV or XLSX",
             response_model=DeviceImportOut, responses=error_responses(413),
             openapi_extra={"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                 "type": "object", "required": ["file"],
                 "properties": {"file": {"type": "string", "format": "binary"}}}}}}})
async def import_devices(
    user: DeviceWriter, access: AccessDep, sip: SipDep, settings: SettingsDep, session: SessionDep,
    audit: AuditDep, request: Request,
) -> DeviceImportOut:
    """Multipart field ``file``: a .csv or .xlsx (at most 5 MB, 10,000 rows) with the template's headers.  Each
    row is checked like ``POST /api/devices``; a bad row is reported (sheet row number, code, reason) and
    skipped, the good ones are added in one transaction (an existing id: ``device_exists`` for that row)."""
    started = time.monotonic()
    too_big = ApiError(413, "import_too_large", f"文件过大（上限 {IMPORT_MAX_BYTES} 字节） / the file is too large "
                                                f"(at most {IMPORT_MAX_BYTES} bytes)")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > IMPORT_MAX_BYTES + 64 * 1024:
        raise too_big
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > IMPORT_MAX_BYTES + 64 * 1024:
            raise too_big
    try:
        filename, data = parse_multipart_file(request.headers.get("content-type", ""), bytes(body))
        if len(data) > IMPORT_MAX_BYTES:
            raise too_big
        rows = read_sheet(filename, data)
    except SheetError as exc:
        raise ApiError(422, exc.code, exc.message) from None

    errors: list[DeviceImportError] = []
    candidates: list[tuple[int, dict[str, Any]]] = []
    seen: set[str] = set()
    for number, row in rows:
        fields, problem = row_problem(row)
        device_id = fields["device_id"] or None
        if problem is None and (id_problem := device_id_problem(fields["device_id"])):
            problem_code, message = "bad_device_id", f"{id_problem}: {device_id}"
        elif problem is None and fields["password"] is not None and (
                reason := weak_password_reason(fields["password"], fields["device_id"])):
            problem_code, message = "weak_password", f"设备密码太弱 / the device password is weak: {reason}"
        elif problem is None and fields["device_id"] in seen:
            problem_code, message = "device_exists", f"文件中重复的设备编码 / the id is repeated in the file: {device_id}"
        elif problem is not None:
            problem_code, message = problem.code, problem.message
        else:
            seen.add(fields["device_id"])
            candidates.append((number, fields))
            continue
        errors.append(DeviceImportError(row=number, device_id=device_id, code=problem_code, message=message))

    await begin_write(session)
    nodes = await org_node_ids(session, {f["org_node_id"] for _, f in candidates if f["org_node_id"] is not None})
    states = await device_states(session, [f["device_id"] for _, f in candidates], lock=True)
    good: list[dict[str, Any]] = []
    for number, fields in candidates:
        device_id = fields["device_id"]
        error = _node_problem(access, fields["org_node_id"], nodes)
        state = states.get(device_id)
        if error is None and state is not None and not state.deleted:
            error = _exists(device_id)
        if error is not None:
            errors.append(DeviceImportError(row=number, device_id=device_id, code=error.error, message=error.message))
        else:
            good.append(fields)
    await create_devices(session, good, settings.realm)
    errors.sort(key=lambda e: e.row)
    out = DeviceImportOut(total=len(rows), created=len(good), updated=0, failed=len(errors), errors=errors)
    await audit_change(audit, session, user, "device.import", ("device", None), client_ip(request), {
        "file": filename[:200], "total": out.total, "created": out.created, "failed": out.failed,
        "errors": [{"row": e.row, "device_id": e.device_id, "code": e.code} for e in errors[:100]],
    })
    await session.commit()
    if sip is not None:
        for fields in good:
            ha1 = _sip_ha1(fields["device_id"], settings.realm, fields["password"])
            await settle(sip.set_device_password_ha1(fields["device_id"], ha1))
    log.info("device.import", total=out.total, created=out.created, failed=out.failed, username=user.username,
             seconds=round(time.monotonic() - started, 3))
    return out
