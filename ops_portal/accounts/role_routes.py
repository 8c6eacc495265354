"""``/api/roles`` and ``/api/permissions``: roles with permissions at three levels (``role.manage``).

* system administration and system functions: permission names of
  :data:`ops_portal.deps.PERMISSION_CATALOGUE`;
* data access: ``full_scope``, or organisation nodes (their descendants included) and/or channels.

The built-in role "系统管理员" cannot be deleted or changed (409 ``builtin_role``).  Nobody hands out
what they do not hold (403 ``grant_exceeds_own``), and no change may leave the platform without an
active holder of ``user.manage`` and ``role.manage`` (409 ``last_manager``).  Every change is on the
audit log (``role.create``, ``role.update``, ``role.delete``) with the change.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from gbcore.db import begin_write, utcnow
from gbcore.ids import ChannelRef
from gbcore.log import get_logger
from ops_portal.access import audit_change, ensure_grantable, resolve_channel_input, role_scope
from ops_portal.accounts.schemas import (
    ChannelRefOut,
    PermissionList,
    PermissionOut,
    RoleCreateRequest,
    RoleList,
    RoleOut,
    RoleUpdateRequest,
)
from ops_portal.deps import (
    PERMISSION_CATALOGUE,
    PERMISSIONS,
    AccessDep,
    AuditDep,
    RegistryDep,
    SessionDep,
    client_ip,
    require_permission,
)
from ops_portal.models import Role, RoleChannel, RoleOrgNode, RolePermission, User, UserRole
from ops_portal.schemas import ApiError, error_responses
from ops_portal.users import check_managers_remain

log = get_logger("gbops.portal.roles")

router = APIRouter(tags=["roles"], responses=error_responses(401, 403, 422))

RoleManager = Annotated[User, Depends(require_permission("role.manage"))]
RoleIdPath = Annotated[int, Path(ge=1, le=2**31 - 1, description="角色 id / role id")]


def _not_found(role_id: int) -> ApiError:
    return ApiError(404, "role_not_found", f"角色不存在 / role not found: {role_id}")


def _check_permissions(names: list[str]) -> None:
    unknown = sorted(set(names) - PERMISSIONS)
    if unknown:
        raise ApiError(422, "unknown_permission", f"未知权限 / unknown permission(s): {unknown}")


async def _check_nodes(registry: Any, node_ids: list[int]) -> None:
    missing = [n for n in sorted(set(node_ids)) if await registry.get_org_node(n) is None]
    if missing:
        raise ApiError(422, "org_node_not_found", f"组织节点不存在 / unknown organisation node(s): {missing[:20]}")


async def _out(session: AsyncSession, role: Role) -> RoleOut:
    perms, nodes, channels = await role_scope(session, role)
    users = await session.scalar(select(func.count()).select_from(UserRole).where(UserRole.role_id == role.id))
    return RoleOut(id=role.id, name=role.name, description=role.description, builtin=role.builtin,
                   full_scope=role.full_scope or role.builtin, permissions=sorted(perms), org_node_ids=sorted(nodes),
                   channels=[ChannelRefOut(device_id=r.device_id, channel_id=r.channel_id) for r in sorted(channels)],
                   user_count=int(users or 0), created_at=role.created_at,
                   updated_at=role.updated_at)


async def _set_grants(session: AsyncSession, role_id: int, *, permissions: list[str] | None,
                      org_node_ids: list[int] | None, channel_refs: list[ChannelRef] | None) -> None:
    if permissions is not None:
        await session.execute(delete(RolePermission).where(RolePermission.role_id == role_id))
        session.add_all(RolePermission(role_id=role_id, permission=p) for p in sorted(set(permissions)))
    if org_node_ids is not None:
        await session.execute(delete(RoleOrgNode).where(RoleOrgNode.role_id == role_id))
        session.add_all(RoleOrgNode(role_id=role_id, org_node_id=n) for n in sorted(set(org_node_ids)))
    if channel_refs is not None:
        await session.execute(delete(RoleChannel).where(RoleChannel.role_id == role_id))
        session.add_all(RoleChannel(role_id=role_id, device_id=r.device_id, channel_id=r.channel_id)
                        for r in sorted(set(channel_refs)))
    await session.flush()


async def _channel_refs(access: Any, registry: Any, *lists: list[Any] | None) -> list[ChannelRef] | None:
    """The channels of a request (``channels`` and its former name ``channel_ids``): objects as given, bare
    ids resolved among the caller's visible channels (409 ``ambiguous_channel`` when several devices have
    it); None when neither list was sent."""
    if all(items is None for items in lists):
        return None
    refs: list[ChannelRef] = []
    for items in lists:
        for item in items or ():
            refs.append(await resolve_channel_input(access, registry, item, check_scope=False))
    return sorted(set(refs))


def _keys(refs: Any) -> list[str]:
    return sorted(ChannelRef(*r).key for r in refs)


def _name_taken(name: str) -> ApiError:
    return ApiError(409, "role_name_taken", f"角色名已存在 / the role name is taken: {name}")


def _builtin() -> ApiError:
    return ApiError(409, "builtin_role", "内置角色不能删除或修改 / the built-in role cannot be deleted or changed")


@router.get("/api/permissions", operation_id="permissions_list", summary="权限目录 / the permission catalogue",
            response_model=PermissionList)
async def list_permissions(user: RoleManager) -> PermissionList:
    return PermissionList(
        items=[PermissionOut(name=name, level=level, label_zh=zh, label_en=en)
               for name, (level, zh, en) in PERMISSION_CATALOGUE.items()],
        levels={"admin": "系统管理 / system administration", "function": "系统功能 / system functions",
                "data": "数据访问（角色的组织节点与通道）/ data access (the role's nodes and channels)"},
    )


@router.get("/api/roles", operation_id="roles_list", summary="角色列表 / list roles", response_model=RoleList)
async def list_roles(user: RoleManager, access: AccessDep, registry: RegistryDep, session: SessionDep) -> RoleList:
    """Every role for a full-scope caller; a scoped caller sees the roles whose grants lie inside its own
    scope (a role reaching beyond it names other tenants' channels)."""
    from ops_portal.scope_lists import grants_within_scope

    roles = list(await session.scalars(select(Role).order_by(Role.id)))
    items = [await _out(session, r) for r in roles]
    await session.commit()
    if not access.scope.all:
        items = [i for i in items if await grants_within_scope(registry, access.scope, full_scope=i.full_scope,
                                                                org_node_ids=i.org_node_ids, channels=i.channels)]
    return RoleList(items=items)


@router.post("/api/roles", operation_id="roles_create", summary="创建角色 / create a role", status_code=201,
             response_model=RoleOut, responses=error_responses(409))
async def create_role(body: RoleCreateRequest, user: RoleManager, access: AccessDep, registry: RegistryDep,
                      session: SessionDep, audit: AuditDep, request: Request) -> RoleOut:
    _check_permissions(body.permissions)
    await _check_nodes(registry, body.org_node_ids)
    refs = await _channel_refs(access, registry, body.channels, body.channel_ids) or []
    await ensure_grantable(access, registry, permissions=body.permissions, full_scope=body.full_scope,
                           org_node_ids=body.org_node_ids, channel_refs=refs)
    await begin_write(session)
    role = Role(name=body.name, description=body.description, full_scope=body.full_scope)
    session.add(role)
    try:
        await session.flush()
    except IntegrityError:
        await session.rollback()
        raise _name_taken(body.name) from None
    await _set_grants(session, role.id, permissions=body.permissions, org_node_ids=body.org_node_ids,
                      channel_refs=refs)
    await audit_change(audit, session, user, "role.create", ("role", str(role.id)), client_ip(request),
                       {"name": role.name, "permissions": sorted(set(body.permissions)), "full_scope": body.full_scope,
                        "org_node_ids": sorted(set(body.org_node_ids)), "channels": _keys(refs)})
    await session.refresh(role)
    out = await _out(session, role)
    await session.commit()
    log.info("role.created", role=role.name, by=user.username)
    return out


@router.get("/api/roles/{role_id}", operation_id="roles_get", summary="角色详情 / one role", response_model=RoleOut,
            responses=error_responses(404))
async def get_role(user: RoleManager, session: SessionDep, role_id: RoleIdPath) -> RoleOut:
    role = await session.get(Role, role_id)
    if role is None:
        raise _not_found(role_id)
    out = await _out(session, role)
    await session.commit()
    return out


@router.patch("/api/roles/{role_id}", operation_id="roles_update", summary="修改角色 / change a role",
              response_model=RoleOut, responses=error_responses(404, 409))
async def update_role(body: RoleUpdateRequest, user: RoleManager, access: AccessDep, registry: RegistryDep,
                      session: SessionDep, audit: AuditDep, request: Request, role_id: RoleIdPath) -> RoleOut:
    """Changes only the fields sent; lists replace the role's lists.  The caller must hold both what the
    role grants now and what it will grant."""
    if body.permissions is not None:
        _check_permissions(body.permissions)
    if body.org_node_ids is not None:
        await _check_nodes(registry, body.org_node_ids)
    body_refs = await _channel_refs(access, registry, body.channels, body.channel_ids)
    await begin_write(session)
    role = await session.get(Role, role_id)
    if role is None:
        raise _not_found(role_id)
    if role.builtin:
        raise _builtin()
    perms, nodes, channels = await role_scope(session, role)
    await ensure_grantable(access, registry, permissions=perms, full_scope=role.full_scope, org_node_ids=nodes,
                           channel_refs=channels)
    after_perms = body.permissions if body.permissions is not None else list(perms)
    after_full = body.full_scope if body.full_scope is not None else role.full_scope
    after_nodes = body.org_node_ids if body.org_node_ids is not None else list(nodes)
    after_channels = body_refs if body_refs is not None else sorted(channels)
    await ensure_grantable(access, registry, permissions=after_perms, full_scope=after_full,
                           org_node_ids=after_nodes, channel_refs=after_channels)
    changes: dict[str, Any] = {}
    if body.name is not None and body.name != role.name:
        changes["name"] = [role.name, body.name]
        role.name = body.name
    if body.description is not None and body.description != role.description:
        changes["description"] = [role.description, body.description]
        role.description = body.description
    if after_full != role.full_scope:
        changes["full_scope"] = [role.full_scope, after_full]
        role.full_scope = after_full
    for key, before, after in (("permissions", perms, after_perms), ("org_node_ids", nodes, after_nodes),
                               ("channels", _keys(channels), _keys(after_channels))):
        if set(before) != set(after):
            changes[key] = {"added": sorted(set(after) - set(before)), "removed": sorted(set(before) - set(after))}
    if changes:
        role.updated_at = utcnow()
        try:
            await session.flush()
        except IntegrityError:
            await session.rollback()
            raise _name_taken(body.name or "") from None
        await _set_grants(session, role.id, permissions=body.permissions, org_node_ids=body.org_node_ids,
                          channel_refs=body_refs)
        await audit_change(audit, session, user, "role.update", ("role", str(role.id)), client_ip(request),
                           {"fields": sorted(changes), "changes": changes})
        await check_managers_remain(session)
    await session.refresh(role)
    out = await _out(session, role)
    await session.commit()
    if changes:
        from ops_portal.revocation import trigger

        trigger(request.app.state)  # holders' running sessions outside the new grants end now
    return out


@router.delete("/api/roles/{role_id}", operation_id="roles_delete", summary="删除角色 / delete a role",
               status_code=204, responses=error_responses(404, 409))
async def delete_role(user: RoleManager, access: AccessDep, registry: RegistryDep, session: SessionDep,
                      audit: AuditDep, request: Request, role_id: RoleIdPath) -> Response:
    """Deletes the role; its users lose what it granted."""
    await begin_write(session)
    role = await session.get(Role, role_id)
    if role is None:
        raise _not_found(role_id)
    if role.builtin:
        raise _builtin()
    perms, nodes, channels = await role_scope(session, role)
    await ensure_grantable(access, registry, permissions=perms, full_scope=role.full_scope, org_node_ids=nodes,
                           channel_refs=channels)
    users = await session.scalar(select(func.count()).select_from(UserRole).where(UserRole.role_id == role_id))
    await audit_change(audit, session, user, "role.delete", ("role", str(role_id)), client_ip(request),
                       {"name": role.name, "users": int(users or 0)})
    await session.execute(delete(Role).where(Role.id == role_id))
    await check_managers_remain(session)
    await session.commit()
    log.info("role.deleted", role=role.name, by=user.username)
    from ops_portal.revocation import trigger

    trigger(request.app.state)  # its users' running sessions it alone allowed end now
    return Response(status_code=204)
