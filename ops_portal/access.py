"""What a user may do and see: permissions (union over roles) and data scope.

A user's :class:`Access` is resolved once per request (:data:`ops_portal.deps.AccessDep`):

* ``permissions``: the union of the permissions of the user's roles.  The built-in system
  administrator role (``roles.builtin``) holds every permission of the catalogue, always.
* ``scope``: the union of the roles' scopes.  A role with ``full_scope`` (the built-in role always)
  grants every channel; otherwise its organisation nodes, *with their descendants*, and its
  explicit channels, each named by (device id, channel id) (:class:`gbcore.ids.ChannelRef`): a channel id
  alone is unique only within its device.  Outside the user's validity window the scope is empty (and the token is
  refused anyway, see :func:`ops_portal.auth.resolve_token`).

A channel belongs to exactly one organisation node: its own ``org_node_id`` when set, otherwise its
device's.  It is in scope when that node is granted or that very channel (device and id) is granted
explicitly.  A device is
visible when its own node is granted or at least one of its channels is in scope.

Routes that name a channel, device or node check it with :func:`ensure_channel`,
:func:`ensure_device`, :func:`ensure_node` (or the dependencies :data:`ScopedChannel`,
:data:`ScopedDevice`, which run before the request body is validated).  A user with a limited scope
gets 403 for an unknown object too, so that ids do not reveal what exists; only full-scope users
see 404.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from device_registry.org import org_descendants
from gbcore.db import utcnow
from gbcore.ids import ChannelRef
from ops_portal.models import (
    PTZ_LEVEL_DEFAULT,
    Role,
    RoleChannel,
    RoleOrgNode,
    RolePermission,
    User,
    UserRole,
)
from ops_portal.schemas import ApiError

if TYPE_CHECKING:
    from device_registry.service import Registry

__all__ = [
    "Access",
    "Scope",
    "ambiguous_channel",
    "ensure_channel",
    "ensure_device",
    "ensure_node",
    "expand_org_nodes",
    "in_validity_window",
    "load_access",
    "resolve_channel",
    "resolve_channel_input",
]


@dataclass(frozen=True)
class Scope:
    """The data a user may reach.  ``org_node_ids`` already include every descendant."""

    all: bool
    org_node_ids: frozenset[int] = field(default_factory=frozenset)
    channel_refs: frozenset[ChannelRef] = field(default_factory=frozenset)

    @classmethod
    def everything(cls) -> Scope:
        return cls(True)

    @classmethod
    def nothing(cls) -> Scope:
        return cls(False)

    @property
    def empty(self) -> bool:
        return not self.all and not self.org_node_ids and not self.channel_refs

    def allows(self, ref: ChannelRef, channel_org_node_id: int | None, device_org_node_id: int | None) -> bool:
        """Whether the channel ``ref`` (device id, channel id) is in scope, given its own node and its
        device's node."""
        if self.all or ref in self.channel_refs:
            return True
        node = channel_org_node_id if channel_org_node_id is not None else device_org_node_id
        return node is not None and node in self.org_node_ids

    def allows_node(self, node_id: int) -> bool:
        return self.all or node_id in self.org_node_ids

    def union(self, other: Scope) -> Scope:
        if self.all or other.all:
            return Scope.everything()
        return Scope(False, self.org_node_ids | other.org_node_ids, self.channel_refs | other.channel_refs)


@dataclass(frozen=True)
class Access:
    """The caller: user, permissions, roles, data scope, PTZ level."""

    user: User
    permissions: frozenset[str]
    roles: tuple[str, ...]
    scope: Scope
    ptz_level: int = PTZ_LEVEL_DEFAULT
    role_ids: tuple[int, ...] = ()

    def can(self, permission: str) -> bool:
        return permission in self.permissions


def in_validity_window(user: User, now: datetime | None = None) -> bool:
    now = now or utcnow()
    if user.valid_from is not None and now < user.valid_from:
        return False
    return not (user.valid_until is not None and now >= user.valid_until)


async def expand_org_nodes(session: AsyncSession, roots: Iterable[int]) -> frozenset[int]:
    """``roots`` and every node below them (nodes that do not exist are dropped): the registry's
    :func:`device_registry.org.org_descendants`."""
    return await org_descendants(session, roots)


async def load_access(session: AsyncSession, user: User, *, now: datetime | None = None) -> Access:
    """Resolve ``user``'s roles, permissions and scope (a few small queries; leaves no transaction open
    only if the caller commits)."""
    from ops_portal.deps import PERMISSIONS

    roles = list(
        await session.scalars(
            select(Role).join(UserRole, UserRole.role_id == Role.id).where(UserRole.user_id == user.id).order_by(Role.id)
        )
    )
    role_ids = [r.id for r in roles]
    permissions: set[str] = set()
    scope = Scope.nothing()
    if role_ids:
        if any(r.builtin for r in roles):
            permissions.update(PERMISSIONS)
        perms = await session.scalars(select(RolePermission.permission).where(RolePermission.role_id.in_(role_ids)))
        permissions.update(p for p in perms if p in PERMISSIONS)
        if any(r.builtin or r.full_scope for r in roles):
            scope = Scope.everything()
        else:
            nodes = list(await session.scalars(select(RoleOrgNode.org_node_id).where(RoleOrgNode.role_id.in_(role_ids))))
            rows = await session.execute(
                select(RoleChannel.device_id, RoleChannel.channel_id).where(RoleChannel.role_id.in_(role_ids))
            )
            # device_id '' marks a grant the migration could not resolve to a device: it matches nothing
            channels = frozenset(ChannelRef(d, c) for d, c in rows if d)
            scope = Scope(False, await expand_org_nodes(session, nodes), channels)
    if not in_validity_window(user, now):
        scope = Scope.nothing()
    return Access(
        user=user,
        permissions=frozenset(permissions),
        roles=tuple(r.name for r in roles),
        scope=scope,
        ptz_level=user.ptz_level or PTZ_LEVEL_DEFAULT,
        role_ids=tuple(role_ids),
    )


# ------------------------------------------------------------------------------------------ checks
def channel_forbidden(channel: ChannelRef | str) -> ApiError:
    return ApiError(403, "channel_forbidden", f"无权访问此通道 / no access to this channel: {channel}")


def device_forbidden(device_id: str) -> ApiError:
    return ApiError(403, "device_forbidden", f"无权访问此设备 / no access to this device: {device_id}")


def node_forbidden(node_id: int) -> ApiError:
    return ApiError(
        403, "org_node_forbidden", f"无权访问此组织节点 / no access to this organisation node: {node_id}"
    )


def ambiguous_channel(channel_id: str, devices: Iterable[str]) -> ApiError:
    """409 ``ambiguous_channel``: several (visible) devices report this channel id; ``devices`` lists them."""
    return ApiError(
        409,
        "ambiguous_channel",
        f"通道编码不唯一，请指明设备（/api/devices/{{device_id}}/channels/{channel_id}）/ the channel id is not "
        f"unique: name the device (/api/devices/{{device_id}}/channels/{channel_id})",
        extra={"devices": sorted(devices)},
    )


async def ensure_channel(access: Access, registry: Registry | Any, ref: ChannelRef) -> None:
    """403 ``channel_forbidden`` unless the channel ``ref`` (that device's channel, exactly) is in
    ``access``'s scope.  An unknown channel is 404 ``channel_not_found`` for a full-scope user, 403 for
    anyone else (existence does not leak)."""
    result = await registry.channel_access(ref, access.scope)
    if result == "ok":
        return
    if result == "missing" and access.scope.all:
        raise ApiError(404, "channel_not_found", f"通道不存在 / channel not found: {ref.key}")
    raise channel_forbidden(ref.key)


async def resolve_channel(access: Access, registry: Registry | Any, channel_id: str) -> ChannelRef:
    """The one channel a bare ``channel_id`` names for this caller: the only visible (in scope, not removed)
    channel with that id.  409 ``ambiguous_channel`` (listing the visible devices only) when several
    devices have it; otherwise as :func:`ensure_channel` (404 full scope / 403 limited when none)."""
    devices = await registry.channel_devices(channel_id, access.scope)
    if len(devices) == 1:
        return ChannelRef(devices[0], channel_id)
    if len(devices) > 1:
        raise ambiguous_channel(channel_id, devices)
    if access.scope.all:
        raise ApiError(404, "channel_not_found", f"通道不存在 / channel not found: {channel_id}")
    raise channel_forbidden(channel_id)


async def resolve_channel_input(
    access: Access, registry: Registry | Any, item: Any, *, check_scope: bool = True
) -> ChannelRef:
    """A channel named in a request body: ``{"device_id", "channel_id"}`` (a mapping, an object with those
    attributes, or a :class:`ChannelRef`) or a bare channel id (accepted when it names one visible channel,
    409 ``ambiguous_channel`` otherwise).  With ``check_scope`` the channel must be in the caller's scope."""
    if isinstance(item, str):
        return await resolve_channel(access, registry, item)
    if isinstance(item, dict):
        ref = ChannelRef(str(item["device_id"]), str(item["channel_id"]))
    else:
        ref = ChannelRef(str(item.device_id), str(item.channel_id))
    if check_scope:
        await ensure_channel(access, registry, ref)
    return ref


async def ensure_device(access: Access, registry: Registry | Any, device_id: str) -> None:
    """Like :func:`ensure_channel` for a device (visible through its own node or any channel in scope)."""
    result = await registry.device_access(device_id, access.scope)
    if result == "ok":
        return
    if result == "missing" and access.scope.all:
        raise ApiError(404, "device_not_found", f"设备不存在 / device not found: {device_id}")
    raise device_forbidden(device_id)


async def ensure_node(access: Access, registry: Registry | Any, node_id: int) -> Any:
    """The organisation node, if in scope; 403 otherwise (404 for an unknown node, full scope only)."""
    node = await registry.get_org_node(node_id)
    if node is not None and access.scope.allows_node(node_id):
        return node
    if node is None and access.scope.all:
        raise ApiError(404, "org_node_not_found", f"组织节点不存在 / organisation node not found: {node_id}")
    raise node_forbidden(node_id)


# ------------------------------------------------------------------------------------------ granting
async def role_scope(
    session: AsyncSession, role: Role
) -> tuple[frozenset[str], frozenset[int], frozenset[ChannelRef]]:
    """(permissions, org node ids as stored, channels as stored) of a role; the builtin role: every
    permission.  A channel with device id '' is a grant the migration could not resolve (it matches
    nothing)."""
    from ops_portal.deps import PERMISSIONS

    perms = frozenset(
        await session.scalars(select(RolePermission.permission).where(RolePermission.role_id == role.id))
    )
    if role.builtin:
        perms = PERMISSIONS
    nodes = frozenset(await session.scalars(select(RoleOrgNode.org_node_id).where(RoleOrgNode.role_id == role.id)))
    rows = await session.execute(
        select(RoleChannel.device_id, RoleChannel.channel_id).where(RoleChannel.role_id == role.id)
    )
    return perms, nodes, frozenset(ChannelRef(d, c) for d, c in rows)


async def ensure_grantable(
    access: Access,
    registry: Registry | Any,
    *,
    permissions: Iterable[str],
    full_scope: bool,
    org_node_ids: Iterable[int],
    channel_refs: Iterable[ChannelRef],
) -> None:
    """403 ``grant_exceeds_own`` unless the caller holds everything it would hand out: no one grants a
    permission or data they do not have themselves (a limited manager cannot make an administrator).
    A channel is checked as exactly that device's channel."""
    missing_perms = sorted(set(permissions) - access.permissions)
    scope = access.scope
    beyond: list[str] = []
    if full_scope and not scope.all:
        beyond.append("full_scope")
    if not scope.all:
        beyond.extend(f"org_node:{n}" for n in sorted(set(org_node_ids) - scope.org_node_ids))
        for ref in sorted(set(channel_refs) - scope.channel_refs):
            if not ref.device_id or await registry.channel_access(ref, scope) != "ok":
                beyond.append(f"channel:{ref.key}")
    if missing_perms or beyond:
        what = ", ".join(missing_perms + beyond[:20])
        raise ApiError(
            403,
            "grant_exceeds_own",
            f"不能授予自己没有的权限或数据范围：{what} / cannot grant what you do not hold yourself: {what}",
        )


async def ensure_roles_grantable(access: Access, registry: Registry | Any, session: AsyncSession,
                                 roles: Iterable[Role]) -> None:
    """:func:`ensure_grantable` for whole roles (granting, revoking, or managing a user who holds them)."""
    for role in roles:
        perms, nodes, channels = await role_scope(session, role)
        await ensure_grantable(access, registry, permissions=perms, full_scope=role.full_scope or role.builtin,
                               org_node_ids=nodes, channel_refs=channels)


async def audit_change(
    audit: Any, session: AsyncSession, actor: User, action: str, target: tuple[str, str | None],
    client_ip: str | None, detail: dict[str, Any] | None = None,
) -> None:
    """An audit entry in ``session``'s write transaction (committed with the change), when there is a log."""
    if audit is None:
        return
    from audit_log.log import Actor, Target

    await audit.append(session, actor=Actor.user(actor), action=action, target=Target(*target),
                       client_ip=client_ip, detail=detail)


GRANT_SPLIT_ACTION = "role.grant_split"


async def record_grant_splits(audit: Any, sessionmaker: Any) -> int:
    """One ``role.grant_split`` audit entry per grant that migration 0007 split (or left unresolved), each
    in the transaction that marks it audited (so a crash neither loses nor repeats one).  Returns how many
    were recorded.  Called at platform start, once the audit log runs."""
    from audit_log.log import Actor, Target
    from ops_portal.models import GrantSplit

    if audit is None:
        return 0
    import json

    from gbcore.db import SQLITE_BEGIN_IMMEDIATE

    done = 0
    async with sessionmaker() as session:
        ids = list(await session.scalars(select(GrantSplit.id).where(GrantSplit.audited_at.is_(None))
                                         .order_by(GrantSplit.id)))
        await session.commit()
    for split_id in ids:
        async with sessionmaker() as session:
            await session.connection(execution_options={SQLITE_BEGIN_IMMEDIATE: True})
            row = await session.get(GrantSplit, split_id)
            if row is None or row.audited_at is not None:
                continue
            devices = json.loads(row.device_ids)
            await audit.append(
                session, actor=Actor.system(), action=GRANT_SPLIT_ACTION, target=Target("role", str(row.role_id)),
                detail={"role": row.role_name, "channel_id": row.channel_id, "device_ids": devices,
                        "channels": [ChannelRef(d, row.channel_id).key for d in devices],
                        "unresolved": not devices, "migrated_at": row.split_at.isoformat(), "migration": "0007"})
            row.audited_at = utcnow()
            await session.commit()
            done += 1
    return done
