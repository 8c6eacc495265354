"""The registry's reads behind the console's dashboard (issue 18): aggregates for 10,000 channels in SQL.

The portal reads the registry through functions like these, never its models (import-linter keeps it so)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Select, case, func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from device_registry.models import Channel, Device, OrgNode, PresenceEvent
from device_registry.scope import channel_pairs_in_scope, channel_scope_clause, device_scope_clause

__all__ = ["channel_counts_by_org", "channels_in_scope", "online_of", "recent_offline_devices"]


def channels_in_scope(scope: Any) -> tuple[Select, Select]:
    """(the ``(device_id, channel_id)`` pairs of the scope's channels not removed, their device ids): selects to use
    in another table's ``IN`` (tickets of exactly a channel in scope, device tickets of a device with one)."""
    pairs = channel_pairs_in_scope(scope).where(Channel.removed.is_(False))
    return pairs, pairs.with_only_columns(Channel.device_id)


async def channel_counts_by_org(session: AsyncSession, scope: Any) -> tuple[list[tuple[int | None, int, int]],
                                                                               dict[int, tuple[int | None, str]]]:
    """Channels not removed, in ``scope``, as (org node (own, else its device's), total, online) groups; and every
    organisation node as id -> (parent id, name), to roll the groups up the tree."""
    node = func.coalesce(Channel.org_node_id, Device.org_node_id)
    stmt = (select(node, func.count(), func.coalesce(func.sum(case((Channel.online.is_(True), 1), else_=0)), 0))
            .select_from(Channel).join(Device, Device.device_id == Channel.device_id)
            .where(Channel.removed.is_(False)).group_by(node))
    if not scope.all:
        stmt = stmt.where(channel_scope_clause(scope))
    groups = [(None if n is None else int(n), int(t), int(o)) for n, t, o in (await session.execute(stmt)).all()]
    if not groups:
        return [], {}
    nodes = {int(i): (p, name) for i, p, name in await session.execute(select(OrgNode.id, OrgNode.parent_id,
                                                                              OrgNode.name))}
    return groups, nodes


async def recent_offline_devices(session: AsyncSession, scope: Any, since: datetime, limit: int
                                 ) -> tuple[int, list[tuple[str, str | None, datetime, str | None, int | None]]]:
    """Devices in ``scope`` (not deleted) offline now whose latest offline transition is at or after ``since``:
    (how many, the newest ``limit`` as (device id, name, offline at, reason, org node))."""
    p = PresenceEvent
    last = (select(p.device_id.label("device_id"), func.max(p.at).label("at"))
            .where(p.subject == "device", p.channel_id.is_(None), p.online.is_(False), p.at >= since)
            .group_by(p.device_id).subquery("last_offline"))
    conds: list[Any] = [Device.online.is_(False), Device.deleted_at.is_(None)]
    if not scope.all:
        conds.append(device_scope_clause(scope))
    base = select(Device.device_id, Device.name, last.c.at, Device.offline_reason, Device.org_node_id).join(
        last, last.c.device_id == Device.device_id).where(*conds)
    total = await session.scalar(select(func.count()).select_from(base.subquery()))
    rows = (await session.execute(base.order_by(last.c.at.desc(), Device.device_id).limit(limit))).all()
    return int(total or 0), [tuple(r) for r in rows]  # type: ignore[misc]


async def online_of(session: AsyncSession, channels: Iterable[tuple[str, str]]) -> dict[tuple[str, str], bool]:
    """Whether each channel ``(device_id, channel_id)`` is online now (channels not found left out)."""
    wanted = list(channels)
    if not wanted:
        return {}
    rows = await session.execute(select(Channel.device_id, Channel.channel_id, Channel.online).where(
        tuple_(Channel.device_id, Channel.channel_id).in_(wanted)))
    return {(d, c): bool(o) for d, c, o in rows.all()}
