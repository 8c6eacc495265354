"""The organisation tree: descendants and the cycle check (each written once, here), the tree as a user
sees it, and its changes (create, rename/move, delete, assign devices and channels)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, case, delete, func, select, text, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from gbcore.db import utcnow
from gbcore.ids import ChannelRef

from ._base import CHANNELS, DEVICES, ORG_NODES, RegistryBase, chunks
from .models import Channel, Device, OrgNode
from .scope import channel_scope_clause, device_scope_clause

__all__ = ["OrgError", "OrgTree", "RegistryOrg", "link_visible_tree", "org_descendants", "would_cycle"]

class OrgError(Exception):
    """A refused change of the organisation tree; ``code`` says which (not_found, cycle, not_empty)."""

    def __init__(self, code: str, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.code = code
        self.detail = detail


@dataclass(frozen=True, slots=True)
class OrgTree:
    """The organisation tree as a user sees it (see :meth:`Registry.org_tree`)."""

    nodes: list[dict[str, Any]]
    unassigned: dict[str, int]
    devices: list[dict[str, Any]] | None
    channels: list[dict[str, Any]] | None


# Descendants of a set of nodes, cycles included safely (UNION, not UNION ALL).
_DESCENDANTS = text(
    "WITH RECURSIVE sub(id) AS ("
    " SELECT id FROM org_nodes WHERE id IN :roots"
    " UNION SELECT n.id FROM org_nodes n JOIN sub ON n.parent_id = sub.id"
    ") SELECT id FROM sub"
).bindparams(bindparam("roots", expanding=True))


async def org_descendants(session: AsyncSession, roots: Iterable[int]) -> frozenset[int]:
    """``roots`` and every node below them (nodes that do not exist are dropped)."""
    roots = sorted(set(roots))
    if not roots:
        return frozenset()
    out: set[int] = set()
    for start in range(0, len(roots), 500):
        rows = await session.execute(_DESCENDANTS, {"roots": roots[start : start + 500]})
        out.update(int(r[0]) for r in rows)
    return frozenset(out)


async def would_cycle(node_id: int, parent_id: int, parent_of: Callable[[int], Awaitable[int | None]]) -> bool:
    """Whether making ``parent_id`` the parent of ``node_id`` would make a cycle: ``node_id`` is ``parent_id``
    or one of its ancestors.  ``parent_of(n)`` gives a node's parent (None: a root or no such node).  An
    existing loop above ``parent_id`` also counts (refuse to join it)."""
    seen: set[int] = set()
    current: int | None = parent_id
    while current is not None and current not in seen:
        if current == node_id:
            return True
        seen.add(current)
        current = await parent_of(current)
    return current is not None


def link_visible_tree(
    nodes: dict[int, dict[str, Any]], visible: set[int], holding: Iterable[int]
) -> dict[int | None, list[int]]:
    """Add to ``visible`` every ancestor of the ``holding`` nodes (the path down to what a user may see),
    set each visible node's ``children`` and return the visible children by parent id (``None``: the roots,
    and nodes whose parent is not visible).  ``nodes`` maps id -> node dict with ``parent_id`` and
    ``children``; a cycle in stored data cannot loop."""
    for n in holding:
        seen: set[int] = set()
        cur: int | None = n
        while cur is not None and cur in nodes and cur not in seen:
            seen.add(cur)
            visible.add(cur)
            cur = nodes[cur]["parent_id"]
    children: dict[int | None, list[int]] = {}
    for n in sorted(visible):
        parent = nodes[n]["parent_id"]
        children.setdefault(parent if parent in visible else None, []).append(n)
    for parent, kids in children.items():
        if parent is not None:
            nodes[parent]["children"] = kids
    return children


async def get_org_node(session: AsyncSession, node_id: int) -> OrgNode | None:
    """The organisation node ``node_id`` (in the caller's session), or None."""
    return await session.get(OrgNode, node_id)


async def org_node_names(session: AsyncSession) -> dict[int, str]:
    """Every organisation node's name, by id."""
    return dict((await session.execute(select(OrgNode.id, OrgNode.name))).all())


class RegistryOrg(RegistryBase):
    """The organisation tree part of :class:`device_registry.service.Registry`."""

    async def get_org_node(self, node_id: int) -> OrgNode | None:
        async with self._sessionmaker() as session:
            return await session.get(OrgNode, node_id)

    async def org_tree(self, scope: Any = None, *, members: bool = False, node_id: int | None = None) -> OrgTree:
        """The organisation tree as ``scope`` sees it, in a fixed number of queries.

        Nodes are visible when granted (with their descendants), or when they (or a node below them)
        hold a channel in scope: ancestors of such nodes appear with ``in_scope`` false, so that the
        path can be shown.  Counts only count what is in scope: ``devices`` / ``channels`` /
        ``channels_online`` directly on the node, ``total_*`` for its whole subtree.  With
        ``members``, the devices and channels themselves (of the subtree of ``node_id`` when given).
        """
        limited = scope is not None and not scope.all
        ch_node = func.coalesce(Channel.org_node_id, Device.org_node_id)
        ch_conds: list[Any] = [Channel.removed.is_(False)]
        dev_conds: list[Any] = [Device.deleted_at.is_(None)]  # a deleted device (issue 18) is nowhere
        if limited:
            ch_conds.append(channel_scope_clause(scope))
            dev_conds.append(device_scope_clause(scope))
        online_int = case((Channel.online.is_(True), 1), else_=0)
        async with self._sessionmaker() as session:
            node_rows = (
                await session.execute(
                    select(OrgNode.id, OrgNode.parent_id, OrgNode.name, OrgNode.kind, OrgNode.code).order_by(OrgNode.id)
                )
            ).all()
            ch_counts = (
                await session.execute(
                    select(ch_node, func.count(), func.coalesce(func.sum(online_int), 0))
                    .select_from(Channel)
                    .join(Device, Device.device_id == Channel.device_id)
                    .where(*ch_conds)
                    .group_by(ch_node)
                )
            ).all()
            dev_counts = (
                await session.execute(
                    select(Device.org_node_id, func.count()).where(*dev_conds).group_by(Device.org_node_id)
                )
            ).all()
            dev_rows: list[Any] = []
            ch_rows: list[Any] = []
            if members:
                dev_rows = list(
                    (
                        await session.execute(
                            select(Device.device_id, Device.name, Device.online, Device.org_node_id,
                                   Device.channel_count)
                            .where(*dev_conds).order_by(Device.device_id)
                        )
                    ).all()
                )
                ch_rows = list(
                    (
                        await session.execute(
                            select(Channel.channel_id, Channel.device_id, Channel.name, Channel.online,
                                   ch_node.label("node"), Channel.longitude, Channel.latitude)
                            .select_from(Channel)
                            .join(Device, Device.device_id == Channel.device_id)
                            .where(*ch_conds)
                            .order_by(Channel.device_id, Channel.channel_id)
                        )
                    ).all()
                )

        nodes = {
            nid: {"id": nid, "parent_id": parent, "name": name, "kind": kind, "code": code, "children": [],
                  "in_scope": (not limited) or nid in scope.org_node_ids, "devices": 0, "channels": 0,
                  "channels_online": 0, "total_devices": 0, "total_channels": 0, "total_channels_online": 0}
            for nid, parent, name, kind, code in node_rows
        }
        unassigned = {"devices": 0, "channels": 0, "channels_online": 0}
        for nid, count, online in ch_counts:
            target = nodes.get(nid) if nid is not None else None
            if target is None:
                unassigned["channels"] += int(count)
                unassigned["channels_online"] += int(online)
            else:
                target["channels"] += int(count)
                target["channels_online"] += int(online)
        for nid, count in dev_counts:
            target = nodes.get(nid) if nid is not None else None
            if target is None:
                unassigned["devices"] += int(count)
            else:
                target["devices"] += int(count)

        visible = set(nodes) if not limited else {n for n in nodes if nodes[n]["in_scope"]}
        holding = [n for n in nodes if nodes[n]["channels"] or nodes[n]["devices"]] if limited else []
        children = link_visible_tree(nodes, visible, holding)
        # Subtree totals (iterative post-order; a cycle in stored data cannot loop).
        order: list[int] = []
        stack = list(children.get(None, []))
        done: set[int] = set()
        while stack:
            n = stack.pop()
            if n in done:
                continue
            done.add(n)
            order.append(n)
            stack.extend(children.get(n, []))
        for n in reversed(order):
            node = nodes[n]
            node["total_devices"] += node["devices"]
            node["total_channels"] += node["channels"]
            node["total_channels_online"] += node["channels_online"]
            parent = node["parent_id"]
            if parent in visible and parent in done:
                nodes[parent]["total_devices"] += node["total_devices"]
                nodes[parent]["total_channels"] += node["total_channels"]
                nodes[parent]["total_channels_online"] += node["total_channels_online"]

        shown = order
        if node_id is not None:
            sub: list[int] = []
            stack = [node_id] if node_id in done else []
            while stack:
                n = stack.pop()
                sub.append(n)
                stack.extend(children.get(n, []))
            shown = sub
        shown_set = set(shown)
        out_nodes = [nodes[n] for n in sorted(shown_set)]
        devices = channels = None
        if members:
            def wanted(nid: int | None) -> bool:
                return nid in shown_set if node_id is not None else (nid in visible or nid is None or nid not in nodes)

            devices = [
                {"device_id": d, "name": name, "online": bool(on), "org_node_id": nid, "channel_count": cc}
                for d, name, on, nid, cc in dev_rows if wanted(nid)
            ]
            channels = [
                {"channel_id": c, "device_id": d, "name": name, "online": bool(on), "org_node_id": nid,
                 "longitude": lon, "latitude": lat}
                for c, d, name, on, nid, lon, lat in ch_rows if wanted(nid)
            ]
        return OrgTree(nodes=out_nodes, unassigned=unassigned, devices=devices, channels=channels)

    async def _org_node_locked(self, session: AsyncSession, node_id: int) -> OrgNode:
        node = await session.get(OrgNode, node_id)
        if node is None:
            raise OrgError("not_found", f"organisation node {node_id} not found", node_id=node_id)
        return node

    async def create_org_node(self, session: AsyncSession, name: str, parent_id: int | None) -> OrgNode:
        """A ``manual`` node (in ``session``'s write transaction, which the caller commits)."""
        if parent_id is not None:
            await self._org_node_locked(session, parent_id)
        node = OrgNode(name=name, kind="manual", parent_id=parent_id)
        session.add(node)
        await session.flush()
        return node

    async def update_org_node(
        self, session: AsyncSession, node_id: int, *, name: str | None = None, parent_id: int | None = None,
        move: bool = False,
    ) -> tuple[OrgNode, dict[str, Any]]:
        """Rename and/or move (``move``: set the parent to ``parent_id``, None = a root).  A move under the
        node itself or one of its descendants raises :class:`OrgError` ``cycle``.  Returns the node and
        the changes as ``{field: [before, after]}``."""
        node = await self._org_node_locked(session, node_id)
        changes: dict[str, Any] = {}
        if name is not None and name != node.name:
            changes["name"] = [node.name, name]
            node.name = name
        if move and parent_id != node.parent_id:
            if parent_id is not None:
                await self._org_node_locked(session, parent_id)
                if await would_cycle(node_id, parent_id, lambda n: session.scalar(
                        select(OrgNode.parent_id).where(OrgNode.id == n))):
                    raise OrgError("cycle", f"moving node {node_id} under {parent_id} would make a cycle",
                                   node_id=node_id, parent_id=parent_id)
            changes["parent_id"] = [node.parent_id, parent_id]
            node.parent_id = parent_id
        if changes:
            node.updated_at = utcnow()
            await session.flush()
        return node, changes

    async def org_node_contents(self, session: AsyncSession, node_id: int) -> dict[str, int]:
        children = await session.scalar(select(func.count()).where(OrgNode.parent_id == node_id))
        devices = await session.scalar(select(func.count()).where(Device.org_node_id == node_id,
                                                               Device.deleted_at.is_(None)))
        channels = await session.scalar(select(func.count()).where(Channel.org_node_id == node_id))
        return {"children": int(children or 0), "devices": int(devices or 0), "channels": int(channels or 0)}

    async def delete_org_node(self, session: AsyncSession, node_id: int, *, force: bool = False) -> dict[str, Any]:
        """Delete a node.  A node with children, devices or channels raises :class:`OrgError`
        ``not_empty`` unless ``force``: then its children, devices and channels move to its parent
        (they become roots / unassigned when the node was a root).  Returns what moved where."""
        node = await self._org_node_locked(session, node_id)
        contents = await self.org_node_contents(session, node_id)
        if any(contents.values()) and not force:
            raise OrgError("not_empty", f"organisation node {node_id} is not empty", **contents)
        parent = node.parent_id
        await session.execute(update(ORG_NODES).where(ORG_NODES.c.parent_id == node_id).values(parent_id=parent))
        await session.execute(
            update(DEVICES).where(DEVICES.c.org_node_id == node_id).values(org_node_id=parent)
        )
        await session.execute(
            update(CHANNELS).where(CHANNELS.c.org_node_id == node_id).values(org_node_id=parent)
        )
        await session.execute(delete(ORG_NODES).where(ORG_NODES.c.id == node_id))
        return {**contents, "moved_to": parent, "name": node.name}

    async def assign_to_org_node(
        self, session: AsyncSession, node_id: int | None, *, device_ids: Sequence[str] = (),
        channel_refs: Sequence[ChannelRef] = (),
    ) -> dict[str, int]:
        """Assign devices and channels (each exactly that device's channel) to a node (None: unassign).
        Returns how many rows changed.  A later catalog whose ParentID / BusinessGroupID resolves to
        a node overrides a channel's assignment."""
        if node_id is not None:
            await self._org_node_locked(session, node_id)
        devices = channels = 0
        for chunk in chunks(sorted(set(device_ids))):
            devices += (
                await session.execute(
                    update(DEVICES).where(DEVICES.c.device_id.in_(chunk)).values(org_node_id=node_id)
                )
            ).rowcount or 0
        for chunk in chunks(sorted({ChannelRef(*r) for r in channel_refs})):
            channels += (
                await session.execute(
                    update(CHANNELS)
                    .where(tuple_(CHANNELS.c.device_id, CHANNELS.c.channel_id).in_([tuple(r) for r in chunk]))
                    .values(org_node_id=node_id)
                )
            ).rowcount or 0
        return {"devices": devices, "channels": channels}
