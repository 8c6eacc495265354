"""``/api/org``: the organisation tree (read: ``device.read``, scoped; change: ``org.manage``).

Nodes come from catalogs (business groups, virtual organisations, administrative regions) or are created
here (kind ``manual``).  Devices and channels are assigned to nodes by hand (``members``).  A change of
a node needs the node in the caller's scope; creating a root, or moving a node to the root, needs the
full scope.  Moves that would make a cycle are refused (409 ``org_cycle``).

Deleting a node that has children, devices or channels is refused (409 ``org_node_not_empty``) unless
``force=true``: then its children, devices and channels **move to its parent** (a deleted root's children
become roots, its devices and channels become unassigned), and the roles that granted the node lose it.
A catalog sync may later re-create a catalog node, or re-link a channel whose ParentID names a node.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from sqlalchemy import delete

from gbcore.db import begin_write
from gbcore.log import get_logger
from ops_portal.access import audit_change, ensure_device, ensure_node, node_forbidden, resolve_channel_input
from ops_portal.deps import AccessDep, AuditDep, RegistryDep, SessionDep, client_ip, require_permission
from ops_portal.devices.schemas import (
    OrgChannelOut,
    OrgDeviceOut,
    OrgMembersOut,
    OrgMembersRequest,
    OrgNodeCreateRequest,
    OrgNodeDeleteOut,
    OrgNodeDetailOut,
    OrgNodeOut,
    OrgNodeUpdateRequest,
    OrgTreeOut,
    OrgUnassignedOut,
)
from ops_portal.models import RoleOrgNode, User
from ops_portal.schemas import ApiError, error_responses

log = get_logger("gbops.portal.org")

router = APIRouter(prefix="/api/org", tags=["org"], responses=error_responses(401, 403, 422))

OrgReader = Annotated[User, Depends(require_permission("device.read"))]
OrgManager = Annotated[User, Depends(require_permission("org.manage"))]
NodeIdPath = Annotated[int, Path(ge=1, le=2**31 - 1, description="组织节点 id / organisation node id")]


def _org_error(exc: Exception) -> ApiError:
    code = getattr(exc, "code", "")
    if code == "cycle":
        return ApiError(409, "org_cycle", "不能把节点移到它自己或它的下级之下 / a node cannot move under itself "
                        "or one of its descendants")
    if code == "not_empty":
        d = getattr(exc, "detail", {})
        return ApiError(409, "org_node_not_empty",
                        f"节点非空（下级 {d.get('children', 0)}，设备 {d.get('devices', 0)}，通道 {d.get('channels', 0)}），"
                        f"如需删除请加 force=true / the node is not empty (children {d.get('children', 0)}, devices "
                        f"{d.get('devices', 0)}, channels {d.get('channels', 0)}): use force=true")
    return ApiError(404, "org_node_not_found", "组织节点不存在 / organisation node not found")


async def _scoped_node(access: AccessDep, registry: RegistryDep, node_id: NodeIdPath) -> int:
    await ensure_node(access, registry, node_id)
    return node_id


ScopedNode = Annotated[int, Depends(_scoped_node)]


@router.get("/tree", operation_id="org_tree", summary="组织树 / the organisation tree", response_model=OrgTreeOut)
async def org_tree(
    user: OrgReader,
    access: AccessDep,
    registry: RegistryDep,
    members: Annotated[bool, Query(description="同时返回设备与通道 / include the devices and channels")] = False,
    node_id: Annotated[
        int | None, Query(ge=1, le=2**31 - 1, description="只返回此节点的子树 / only this node's subtree")
    ] = None,
) -> OrgTreeOut:
    """Nodes in the caller's scope with counts of what is in scope (``total_*`` include the subtree);
    ``unassigned`` counts devices and channels on no node.  ``members=true`` adds the devices and channels."""
    if node_id is not None:
        await ensure_node(access, registry, node_id)
    tree = await registry.org_tree(access.scope, members=members, node_id=node_id)
    return OrgTreeOut(
        nodes=[OrgNodeOut(**n) for n in tree.nodes],
        unassigned=OrgUnassignedOut(**tree.unassigned),
        devices=None if tree.devices is None else [OrgDeviceOut(**d) for d in tree.devices],
        channels=None if tree.channels is None else [OrgChannelOut(**c) for c in tree.channels],
    )


@router.post("/nodes", operation_id="org_node_create", summary="创建组织节点 / create an organisation node",
             status_code=201, response_model=OrgNodeDetailOut, responses=error_responses(404))
async def create_node(body: OrgNodeCreateRequest, user: OrgManager, access: AccessDep, registry: RegistryDep,
                      session: SessionDep, audit: AuditDep, request: Request) -> OrgNodeDetailOut:
    """A ``manual`` node under ``parent_id`` (in scope), or a root (full scope only)."""
    if body.parent_id is None:
        if not access.scope.all:
            raise ApiError(403, "org_root_forbidden", "只有全部数据权限的用户可以创建根节点 / only users with the "
                           "full data scope can create root nodes")
    else:
        await ensure_node(access, registry, body.parent_id)
    await begin_write(session)
    try:
        node = await registry.create_org_node(session, body.name, body.parent_id)
    except Exception as exc:
        if getattr(exc, "code", None):
            raise _org_error(exc) from None
        raise
    await audit_change(audit, session, user, "org.create", ("org_node", str(node.id)), client_ip(request),
                       {"name": node.name, "parent_id": node.parent_id})
    await session.refresh(node)
    out = OrgNodeDetailOut.model_validate(node)
    await session.commit()
    return out


@router.patch("/nodes/{node_id}", operation_id="org_node_update",
              summary="重命名或移动组织节点 / rename or move an organisation node", response_model=OrgNodeDetailOut,
              responses=error_responses(404, 409))
async def update_node(body: OrgNodeUpdateRequest, user: OrgManager, access: AccessDep, registry: RegistryDep,
                      session: SessionDep, audit: AuditDep, request: Request, node_id: ScopedNode) -> OrgNodeDetailOut:
    move = "parent_id" in body.model_fields_set
    if move:
        if body.parent_id is None:
            if not access.scope.all:
                raise node_forbidden(node_id)
        else:
            await ensure_node(access, registry, body.parent_id)
    await begin_write(session)
    try:
        node, changes = await registry.update_org_node(session, node_id, name=body.name, parent_id=body.parent_id,
                                                       move=move)
    except Exception as exc:
        if getattr(exc, "code", None):
            raise _org_error(exc) from None
        raise
    if changes:
        await audit_change(audit, session, user, "org.update", ("org_node", str(node_id)), client_ip(request),
                           {"fields": sorted(changes), "changes": changes})
    await session.refresh(node)
    out = OrgNodeDetailOut.model_validate(node)
    await session.commit()
    return out


@router.delete("/nodes/{node_id}", operation_id="org_node_delete", summary="删除组织节点 / delete an organisation node",
               response_model=OrgNodeDeleteOut, responses=error_responses(404, 409))
async def delete_node(user: OrgManager, access: AccessDep, registry: RegistryDep, session: SessionDep,
                      audit: AuditDep, request: Request, node_id: ScopedNode,
                      force: Annotated[bool, Query(description="非空也删除（子节点和成员移到上级）/ delete even if "
                                                   "not empty (children and members move to the parent)")] = False,
                      ) -> OrgNodeDeleteOut:
    await begin_write(session)
    try:
        result = await registry.delete_org_node(session, node_id, force=force)
    except Exception as exc:
        if getattr(exc, "code", None):
            raise _org_error(exc) from None
        raise
    await session.execute(delete(RoleOrgNode).where(RoleOrgNode.org_node_id == node_id))
    await audit_change(audit, session, user, "org.delete", ("org_node", str(node_id)), client_ip(request),
                       {**result, "force": force})
    await session.commit()
    log.info("org.deleted", node_id=node_id, by=user.username, force=force)
    return OrgNodeDeleteOut(deleted=node_id, moved_to=result["moved_to"], children=result["children"],
                            devices=result["devices"], channels=result["channels"])


@router.post("/nodes/{node_id}/members", operation_id="org_node_assign",
             summary="把设备和通道分配到组织节点 / assign devices and channels to a node",
             response_model=OrgMembersOut, responses=error_responses(404))
async def assign_members(body: OrgMembersRequest, user: OrgManager, access: AccessDep, registry: RegistryDep,
                         session: SessionDep, audit: AuditDep, request: Request, node_id: ScopedNode) -> OrgMembersOut:
    """Every device and channel named must be in the caller's scope (403 otherwise, 404 for an unknown one
    with the full scope)."""
    for device_id in sorted(set(body.device_ids)):
        await ensure_device(access, registry, device_id)
    # each channel exactly: {device_id, channel_id}, or a bare id naming one visible channel (409 otherwise)
    refs = sorted({await resolve_channel_input(access, registry, item)
                   for item in [*body.channels, *body.channel_ids]})
    await begin_write(session)
    counts = await registry.assign_to_org_node(session, node_id, device_ids=body.device_ids, channel_refs=refs)
    await audit_change(audit, session, user, "org.assign", ("org_node", str(node_id)), client_ip(request),
                       {"device_ids": sorted(set(body.device_ids)), "channels": [r.key for r in refs]})
    await session.commit()
    return OrgMembersOut(node_id=node_id, **counts)
