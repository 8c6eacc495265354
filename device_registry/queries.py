"""Registry reads: devices, channels, presence, scope checks, search, counts.

:class:`RegistryQueries` holds the reads of :class:`device_registry.service.Registry`.  The module-level
functions take the caller's session (so they join its transaction): what other packages need from the
registry's tables, so that none of them reads those tables itself.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import and_, case, false, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from gbcore.ids import ChannelRef

from ._base import DEVICES, RegistryBase
from .models import Channel, Device, PresenceEvent
from .scope import channel_scope_clause, device_scope_clause, in_list

__all__ = [
    "DEVICE_SORTS",
    "ChannelRow",
    "DevicePasswordFacts",
    "DeviceSnapshot",
    "RegistryQueries",
    "channel_ids_of_device",
    "channel_is_online",
    "channel_placement",
    "channel_refs_with_ids",
    "channel_rows",
    "device_is_online",
    "device_password_facts",
    "device_online_flags",
    "offline_channels_of_online_devices",
    "offline_devices",
    "online_channel_pairs",
]


#: ``list_devices(sort=...)``: the orders a device list offers (ties broken by device id).
DEVICE_SORTS = ("device_id", "name", "online", "last_seen", "registered_at", "manufacturer", "remote_addr")


@dataclass(frozen=True, slots=True)
class DeviceSnapshot:
    """What the SIP layer caches in memory about a device at start."""

    device_id: str
    online: bool
    register_expires_at: datetime | None
    keepalive_interval: int
    last_seen: datetime | None
    remote_addr: str | None
    transport: str | None
    password_ha1_md5: str | None
    password_ha1_sha256: str | None
    password_realm: str | None


class RegistryQueries(RegistryBase):
    """The reads of :class:`device_registry.service.Registry`."""

    # -- read ------------------------------------------------------------------------------

    async def snapshot(self, device_ids: Collection[str] | None = None) -> list[DeviceSnapshot]:
        """What the SIP service restores at start: every device, or those of ``device_ids``.  Deleted devices
        are left out: to the SIP service they are unknown."""
        cols = [DEVICES.c[f.name] for f in fields(DeviceSnapshot)]
        query = select(*cols).where(DEVICES.c.deleted_at.is_(None)).order_by(DEVICES.c.device_id)
        if device_ids is not None:
            query = query.where(DEVICES.c.device_id.in_(list(device_ids)))
        async with self._sessionmaker() as session:
            result = await session.execute(query)
            return [DeviceSnapshot(**row) for row in result.mappings()]

    async def list_devices(
        self,
        *,
        online: bool | None = None,
        q: str | None = None,
        offset: int = 0,
        limit: int = 50,
        scope: Any = None,
        org_node_id: int | None = None,
        sort: str = "device_id",
        order: str = "asc",
    ) -> tuple[int, list[Device]]:
        """Devices ordered by ``sort`` (one of :data:`DEVICE_SORTS`; ties by id, empty values last) in ``order``
        (``asc`` / ``desc``), filtered by online state and by a search text (matched in id, name, manufacturer,
        model, address), by ``scope`` (None: everything) and by the org node they are assigned to.  Deleted
        devices are left out.  Each device of the page carries ``channels_total`` and ``channels_online`` (its
        channels that are not removed).  Returns (total matching, page)."""
        if sort not in DEVICE_SORTS:
            raise ValueError(f"unknown sort {sort!r}")
        column = getattr(Device, sort)
        key = column.desc() if order == "desc" else column.asc()
        order_by = [key.nulls_last()] if sort != "device_id" else []
        order_by.append(Device.device_id.desc() if order == "desc" and sort == "device_id" else Device.device_id)
        conditions: list[Any] = [Device.deleted_at.is_(None)]
        if scope is not None and not scope.all:
            conditions.append(device_scope_clause(scope))
        if org_node_id is not None:
            conditions.append(Device.org_node_id == org_node_id)
        if online is not None:
            conditions.append(Device.online.is_(online))
        if q is not None and q.strip():
            needle = q.strip()
            conditions.append(
                or_(
                    *(
                        column.icontains(needle, autoescape=True)
                        for column in (
                            Device.device_id,
                            Device.name,
                            Device.manufacturer,
                            Device.model,
                            Device.remote_addr,
                        )
                    )
                )
            )
        async with self._sessionmaker() as session:
            total = await session.scalar(select(func.count()).select_from(Device).where(*conditions))
            page = list(
                await session.scalars(
                    select(Device)
                    .where(*conditions)
                    .order_by(*order_by)
                    .offset(max(offset, 0))
                    .limit(max(limit, 0))
                )
            )
            await _attach_channel_counts(session, page)
            return int(total or 0), page

    async def get_device(self, device_id: str) -> Device | None:
        """The device (None: unknown or deleted), with ``channels_total`` / ``channels_online``."""
        async with self._sessionmaker() as session:
            device = await session.get(Device, device_id)
            if device is None or device.deleted_at is not None:
                return None
            await _attach_channel_counts(session, [device])
            return device

    async def list_channels(
        self, device_id: str, *, include_removed: bool = False, scope: Any = None
    ) -> list[Channel]:
        stmt = select(Channel).where(Channel.device_id == device_id)
        if not include_removed:
            stmt = stmt.where(Channel.removed.is_(False))
        if scope is not None and not scope.all:
            stmt = stmt.join(Device, Device.device_id == Channel.device_id).where(channel_scope_clause(scope))
        async with self._sessionmaker() as session:
            return list(await session.scalars(stmt.order_by(Channel.channel_id)))

    async def find_channel(self, channel_id: str) -> list[Channel]:
        """The (not removed) channels with this id, online ones first. A channel id is unique only within
        its device, so more than one may come back (NVRs of two vendors or tenants shipping the same default
        ids): never take the first one as *the* channel, name it by :class:`ChannelRef` (:meth:`get_channel`)."""
        stmt = (
            select(Channel)
            .where(Channel.channel_id == channel_id, Channel.removed.is_(False))
            .order_by(Channel.online.desc(), Channel.device_id)
        )
        async with self._sessionmaker() as session:
            return list(await session.scalars(stmt))

    async def get_channel(self, ref: ChannelRef, *, include_removed: bool = False) -> Channel | None:
        """The channel ``ref`` (that device's channel with that id), not removed unless ``include_removed``."""
        stmt = select(Channel).where(Channel.device_id == ref.device_id, Channel.channel_id == ref.channel_id)
        if not include_removed:
            stmt = stmt.where(Channel.removed.is_(False))
        async with self._sessionmaker() as session:
            return (await session.scalars(stmt)).first()

    async def channel_devices(self, channel_id: str, scope: Any = None) -> list[str]:
        """The devices having a (not removed) channel ``channel_id`` in ``scope`` (None: any), by device id:
        what a bare channel id may mean to a user (more than one: it is ambiguous for them)."""
        stmt = (
            select(Channel.device_id)
            .join(Device, Device.device_id == Channel.device_id)
            .where(Channel.channel_id == channel_id, Channel.removed.is_(False))
        )
        if scope is not None and not scope.all:
            stmt = stmt.where(channel_scope_clause(scope))
        async with self._sessionmaker() as session:
            return sorted(await session.scalars(stmt))

    async def list_presence(
        self, device_id: str, *, limit: int = 200, before: datetime | None = None, scope: Any = None
    ) -> list[PresenceEvent]:
        """Presence rows of the device and of its channels (those in ``scope`` only), newest first."""
        stmt = select(PresenceEvent).where(PresenceEvent.device_id == device_id)
        if scope is not None and not scope.all:
            allowed = [c.channel_id for c in await self.list_channels(device_id, include_removed=True, scope=scope)]
            stmt = stmt.where(or_(PresenceEvent.channel_id.is_(None), PresenceEvent.channel_id.in_(allowed)))
        if before is not None:
            stmt = stmt.where(PresenceEvent.at < before)
        stmt = stmt.order_by(PresenceEvent.at.desc(), PresenceEvent.id.desc()).limit(max(limit, 0))
        async with self._sessionmaker() as session:
            return list(await session.scalars(stmt))

    # -- scope -----------------------------------------------------------------------------

    async def scoped_channels(self, scope: Any) -> list[Channel] | None:
        """The (not removed) channels in ``scope``, ordered by device and id; None when ``scope.all``."""
        if scope.all:
            return None
        stmt = (
            select(Channel)
            .join(Device, Device.device_id == Channel.device_id)
            .where(Channel.removed.is_(False), channel_scope_clause(scope))
            .order_by(Channel.device_id, Channel.channel_id)
        )
        async with self._sessionmaker() as session:
            return list(await session.scalars(stmt))

    async def channel_access(self, ref: ChannelRef, scope: Any) -> Literal["ok", "missing", "denied"]:
        """Whether ``ref`` names a (not removed) channel, and whether exactly that channel is in ``scope``."""
        stmt = (
            select(Channel.org_node_id, Device.org_node_id)
            .join(Device, Device.device_id == Channel.device_id)
            .where(Channel.device_id == ref.device_id, Channel.channel_id == ref.channel_id,
                   Channel.removed.is_(False))
        )
        async with self._sessionmaker() as session:
            row = (await session.execute(stmt)).first()
        if row is None:
            return "missing"
        return "ok" if scope.allows(ChannelRef(*ref), row[0], row[1]) else "denied"

    async def device_access(self, device_id: str, scope: Any) -> Literal["ok", "missing", "denied"]:
        """Whether a device exists, and whether it is visible in ``scope``."""
        async with self._sessionmaker() as session:
            dev_node = (
                await session.execute(
                    select(Device.org_node_id).where(Device.device_id == device_id, Device.deleted_at.is_(None))
                )
            ).one_or_none()
            if dev_node is None:
                return "missing"
            if scope.all or (dev_node[0] is not None and dev_node[0] in scope.org_node_ids):
                return "ok"
            rows = (
                await session.execute(
                    select(Channel.channel_id, Channel.org_node_id).where(
                        Channel.device_id == device_id, Channel.removed.is_(False)
                    )
                )
            ).all()
        if any(scope.allows(ChannelRef(device_id, ch_id), ch_node, dev_node[0]) for ch_id, ch_node in rows):
            return "ok"
        return "denied"

    async def search_channels(
        self,
        *,
        scope: Any = None,
        org_node_ids: Iterable[int] | None = None,
        online: bool | None = None,
        q: str | None = None,
        has_location: bool | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> tuple[int, list[tuple[Channel, int | None]]]:
        """(Not removed) channels across devices: in ``scope``, whose node (own, or device's) is one of
        ``org_node_ids``, by online state, search text (id, name, address), with or without a location.
        Returns (total matching, page of (channel, effective node id)) ordered by device and channel id."""
        node = func.coalesce(Channel.org_node_id, Device.org_node_id)
        conds: list[Any] = [Channel.removed.is_(False)]
        if scope is not None and not scope.all:
            conds.append(channel_scope_clause(scope))
        if org_node_ids is not None:
            ids = set(org_node_ids)
            conds.append(or_(in_list(Channel.org_node_id, ids),
                             and_(Channel.org_node_id.is_(None), in_list(Device.org_node_id, ids))) if ids else false())
        if online is not None:
            conds.append(Channel.online.is_(online))
        if has_location is not None:
            located = and_(Channel.longitude.is_not(None), Channel.latitude.is_not(None))
            conds.append(located if has_location else ~located)
        if q is not None and q.strip():
            needle = q.strip()
            conds.append(or_(*(c.icontains(needle, autoescape=True)
                               for c in (Channel.channel_id, Channel.name, Channel.address))))
        base = select(Channel, node.label("node")).join(Device, Device.device_id == Channel.device_id).where(*conds)
        async with self._sessionmaker() as session:
            total = await session.scalar(
                select(func.count()).select_from(Channel).join(Device, Device.device_id == Channel.device_id)
                .where(*conds)
            )
            rows = (
                await session.execute(
                    base.order_by(Channel.device_id, Channel.channel_id).offset(max(offset, 0)).limit(max(limit, 0))
                )
            ).all()
        return int(total or 0), [(ch, n) for ch, n in rows]

    async def counts(self, scope: Any = None) -> dict[str, int]:
        """Devices and channels, total and online, within ``scope``."""
        dev_conds: list[Any] = [Device.deleted_at.is_(None)]
        if scope is not None and not scope.all:
            dev_conds.append(device_scope_clause(scope))
        ch_conds: list[Any] = [Channel.removed.is_(False)]
        if scope is not None and not scope.all:
            ch_conds.append(channel_scope_clause(scope))
        online_int = case((Device.online.is_(True), 1), else_=0)
        ch_online_int = case((Channel.online.is_(True), 1), else_=0)
        async with self._sessionmaker() as session:
            d_total, d_online = (
                await session.execute(select(func.count(), func.coalesce(func.sum(online_int), 0)).where(*dev_conds))
            ).one()
            c_total, c_online = (
                await session.execute(
                    select(func.count(), func.coalesce(func.sum(ch_online_int), 0))
                    .select_from(Channel)
                    .join(Device, Device.device_id == Channel.device_id)
                    .where(*ch_conds)
                )
            ).one()
        return {"devices_total": int(d_total), "devices_online": int(d_online),
                "channels_total": int(c_total), "channels_online": int(c_online)}


async def _attach_channel_counts(session: AsyncSession, devices: list[Device]) -> None:
    """Set ``channels_total`` and ``channels_online`` (not removed channels) on each device (plain attributes)."""
    if not devices:
        return
    online_int = case((Channel.online.is_(True), 1), else_=0)
    rows = await session.execute(
        select(Channel.device_id, func.count(), func.coalesce(func.sum(online_int), 0))
        .where(Channel.device_id.in_([d.device_id for d in devices]), Channel.removed.is_(False))
        .group_by(Channel.device_id)
    )
    counts = {dev_id: (int(total), int(online)) for dev_id, total, online in rows.all()}
    for device in devices:
        device.channels_total, device.channels_online = counts.get(device.device_id, (0, 0))  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------ reads for other packages
@dataclass(frozen=True, slots=True)
class ChannelRow:
    """A channel (removed ones included) with what its device says about it (see :func:`channel_rows`)."""

    device_id: str
    channel_id: str
    name: str | None
    channel_org: int | None
    device_org: int | None
    first_seen: datetime
    removed: bool
    removed_at: datetime | None
    online: bool
    device_online: bool


async def channel_rows(session: AsyncSession) -> list[ChannelRow]:
    """Every channel (removed ones included) with its node, its device's node and online flags, ordered by
    device and channel id."""
    stmt = (
        select(Channel.device_id, Channel.channel_id, Channel.name, Channel.org_node_id, Device.org_node_id,
               Channel.first_seen, Channel.removed, Channel.removed_at, Channel.online, Device.online)
        .join(Device, Device.device_id == Channel.device_id)
        .order_by(Channel.device_id, Channel.channel_id)
    )
    return [ChannelRow(*row) for row in (await session.execute(stmt)).all()]


@dataclass(frozen=True, slots=True)
class DevicePasswordFacts:
    """What the security check needs of a device: identity, firmware and its stored HA1 (never a password)."""

    device_id: str
    name: str | None
    manufacturer: str | None
    model: str | None
    firmware: str | None
    password_ha1_md5: str | None
    password_ha1_sha256: str | None
    password_realm: str | None


async def device_password_facts(session: AsyncSession) -> list[DevicePasswordFacts]:
    """Every (not deleted) device's :class:`DevicePasswordFacts`, by device id (the security check)."""
    cols = [DEVICES.c[f.name] for f in fields(DevicePasswordFacts)]
    result = await session.execute(select(*cols).where(DEVICES.c.deleted_at.is_(None)).order_by(DEVICES.c.device_id))
    return [DevicePasswordFacts(**row) for row in result.mappings()]


async def device_online_flags(session: AsyncSession) -> dict[str, bool]:
    """Every device's online flag, by device id."""
    return {dev_id: bool(online) for dev_id, online in (await session.execute(select(Device.device_id, Device.online)))}


async def channel_refs_with_ids(session: AsyncSession, channel_ids: Iterable[str]) -> frozenset[ChannelRef]:
    """Every channel (any device, removed ones included) having one of these channel ids."""
    ids = sorted(set(channel_ids))
    if not ids:
        return frozenset()
    rows = await session.execute(select(Channel.device_id, Channel.channel_id).where(Channel.channel_id.in_(ids)))
    return frozenset(ChannelRef(d, c) for d, c in rows)


async def channel_names(session: AsyncSession, refs: Iterable[tuple[str, str]]) -> dict[ChannelRef, str | None]:
    """The names of these channels (device id, channel id), removed ones included; unknown ones are left out."""
    wanted = {ChannelRef(*r) for r in refs}
    if not wanted:
        return {}
    rows = await session.execute(select(Channel.device_id, Channel.channel_id, Channel.name)
                                 .where(Channel.channel_id.in_(sorted({r.channel_id for r in wanted}))))
    return {ChannelRef(d, c): n for d, c, n in rows if ChannelRef(d, c) in wanted}


def channels_named_like(pattern: str, *, escape: str = "\\") -> Any:
    """A subquery of the (device id, channel id) of channels whose name (or the name an operator gave it),
    lower-cased, is LIKE ``pattern`` (the
    caller lower-cases and escapes it): for a row-value ``IN`` of another package's query, so that the match runs
    in the database without that package reading this one's tables."""
    return select(Channel.device_id, Channel.channel_id).where(or_(
        func.lower(func.coalesce(Channel.name, "")).like(pattern, escape=escape),
        func.lower(func.coalesce(Channel.user_name, "")).like(pattern, escape=escape)))


def devices_named_like(pattern: str, *, escape: str = "\\") -> Any:
    """A subquery of the ids of devices whose name (or the name an operator gave it), lower-cased, is LIKE
    ``pattern`` (see :func:`channels_named_like`)."""
    return select(Device.device_id).where(or_(
        func.lower(func.coalesce(Device.name, "")).like(pattern, escape=escape),
        func.lower(func.coalesce(Device.user_name, "")).like(pattern, escape=escape)))


async def channel_placement(session: AsyncSession, ref: ChannelRef) -> tuple[int | None, int | None]:
    """(the channel's own node, its device's node) for ``ref`` (removed channels included).  When the
    channel is gone, its device's node still says where it was: (None, device node)."""
    ref = ChannelRef(*ref)
    row = (
        await session.execute(
            select(Channel.org_node_id, Device.org_node_id)
            .join(Device, Device.device_id == Channel.device_id)
            .where(Channel.device_id == ref.device_id, Channel.channel_id == ref.channel_id)
            .limit(1)
        )
    ).first()
    if row is not None:
        return row[0], row[1]
    return None, await session.scalar(select(Device.org_node_id).where(Device.device_id == ref.device_id))


async def channel_ids_of_device(session: AsyncSession, device_id: str) -> list[str]:
    """The channel ids of a device (removed channels included)."""
    return list((await session.scalars(select(Channel.channel_id).where(Channel.device_id == device_id))).all())


async def offline_devices(session: AsyncSession) -> list[str]:
    """Ids of the (not deleted) devices that are offline."""
    return [d for (d,) in (await session.execute(
        select(Device.device_id).where(Device.online.is_(False), Device.deleted_at.is_(None))))]


async def offline_channels_of_online_devices(session: AsyncSession) -> list[tuple[str, str]]:
    """(device id, channel id) of the (not removed) channels that are offline while their device is online."""
    rows = await session.execute(
        select(Channel.device_id, Channel.channel_id)
        .join(Device, Device.device_id == Channel.device_id)
        .where(Device.online.is_(True), Channel.online.is_(False), Channel.removed.is_(False))
    )
    return [(d, c) for d, c in rows.all()]


async def online_channel_pairs(session: AsyncSession) -> list[tuple[str, str]]:
    """(channel id, device id) of every online, not removed channel of an online device, by device and id."""
    return [(c, d) for c, d in (await session.execute(
        select(Channel.channel_id, Channel.device_id).join(Device, Device.device_id == Channel.device_id)
        .where(Channel.online.is_(True), Channel.removed.is_(False), Device.online.is_(True))
        .order_by(Channel.device_id, Channel.channel_id))).all()]


async def device_is_online(session: AsyncSession, device_id: str) -> bool | None:
    """The device's online flag (None: no such device)."""
    return await session.scalar(select(Device.online).where(Device.device_id == device_id))


async def channel_is_online(session: AsyncSession, ref: ChannelRef) -> bool | None:
    """The channel's online flag while its device is online (None: no such channel, or the device is offline)."""
    return await session.scalar(
        select(Channel.online).join(Device, Device.device_id == Channel.device_id).where(
            Channel.device_id == ref.device_id, Channel.channel_id == ref.channel_id, Device.online.is_(True)))
