"""The registry reads the cascade needs, over the registry's own functions and (read-only) models.

Nothing here writes.  A share is handed to the registry as a scope (shared nodes with their descendants,
explicit channel pairs), so the registry's own scope SQL decides which channels it covers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from device_registry.models import Channel, Device, OrgNode
from device_registry.org import org_descendants
from device_registry.scope import channel_scope_clause, pairs_in
from gbcore.ids import ChannelRef

__all__ = [
    "ChannelFacts", "OrgInfo", "ShareScope", "channel_facts", "channel_refs_by_id", "existing_org_nodes",
    "existing_refs", "org_descendants", "all_org_nodes",
]


@dataclass(frozen=True, slots=True)
class OrgInfo:
    id: int
    parent_id: int | None
    name: str
    kind: str  # business_group | virtual_org | civil | manual
    code: str | None


@dataclass(frozen=True, slots=True)
class ChannelFacts:
    """What the catalog tells an upper about one channel (before the share's overrides)."""

    ref: ChannelRef
    name: str | None
    manufacturer: str | None
    model: str | None
    civil_code: str | None
    address: str | None
    longitude: float | None
    latitude: float | None
    online: bool
    device_online: bool
    node_id: int | None  # the channel's own node, or its device's
    removed: bool = False


@dataclass(frozen=True, slots=True)
class ShareScope:
    """A share as the registry's scope functions read a scope."""

    org_node_ids: frozenset[int]
    channel_refs: frozenset[ChannelRef]
    all: bool = False


async def all_org_nodes(session: AsyncSession) -> dict[int, OrgInfo]:
    rows = await session.execute(select(OrgNode.id, OrgNode.parent_id, OrgNode.name, OrgNode.kind, OrgNode.code))
    return {nid: OrgInfo(nid, parent, name, kind, code) for nid, parent, name, kind, code in rows.all()}


async def existing_org_nodes(session: AsyncSession, ids: Iterable[int]) -> set[int]:
    ids = sorted(set(ids))
    if not ids:
        return set()
    return set((await session.scalars(select(OrgNode.id).where(OrgNode.id.in_(ids)))).all())


async def channel_facts(session: AsyncSession, scope: ShareScope, *, include_removed: bool = False) -> list[ChannelFacts]:
    """The channels of the share, ordered by device and channel id (removed ones only when asked)."""
    if not scope.org_node_ids and not scope.channel_refs:
        return []
    conds = [channel_scope_clause(scope)]
    if not include_removed:
        conds.append(Channel.removed.is_(False))
    stmt = (
        select(Channel.device_id, Channel.channel_id, Channel.name, Channel.manufacturer, Channel.model,
               Channel.civil_code, Channel.address, Channel.longitude, Channel.latitude, Channel.online,
               Device.online, func.coalesce(Channel.org_node_id, Device.org_node_id), Channel.removed)
        .join(Device, Device.device_id == Channel.device_id)
        .where(*conds)
        .order_by(Channel.device_id, Channel.channel_id)
    )
    return [
        ChannelFacts(ChannelRef(d, c), name, man, model, civil, addr, lon, lat, bool(on), bool(dev_on), node,
                     bool(removed))
        for d, c, name, man, model, civil, addr, lon, lat, on, dev_on, node, removed in (await session.execute(stmt))
    ]


async def channel_refs_by_id(session: AsyncSession, channel_ids: Iterable[str]) -> dict[str, list[ChannelRef]]:
    """The (not removed) channels having each of these channel ids, by id."""
    ids = sorted(set(channel_ids))
    out: dict[str, list[ChannelRef]] = {c: [] for c in ids}
    for start in range(0, len(ids), 500):
        rows = await session.execute(
            select(Channel.device_id, Channel.channel_id)
            .where(Channel.channel_id.in_(ids[start : start + 500]), Channel.removed.is_(False))
            .order_by(Channel.device_id)
        )
        for d, c in rows:
            out[c].append(ChannelRef(d, c))
    return out


async def existing_refs(session: AsyncSession, refs: Iterable[ChannelRef]) -> set[ChannelRef]:
    """Which of these channels exist (not removed)."""
    refs = sorted({ChannelRef(*r) for r in refs})
    if not refs:
        return set()
    rows = await session.execute(
        select(Channel.device_id, Channel.channel_id)
        .where(pairs_in(Channel.device_id, Channel.channel_id, refs), Channel.removed.is_(False))
    )
    return {ChannelRef(d, c) for d, c in rows}
