"""The device registry: applies registry events to the database, and reads it back.

Write path: the SIP layer submits :mod:`device_registry.events` to a :class:`RegistryWriter`,
which batches them into :meth:`Registry.apply` calls (one transaction per batch).  Presence
history (``presence_events``) is written only on real online/offline transitions, so applying
the same events twice records nothing new.

Rules in short:

* Only ``DeviceRegistered`` creates a device row (``set_device_password`` also does); the other
  events about an unknown device are ignored (logged at debug level).
* ``DeviceSeen`` only moves ``last_seen`` forward (and ``remote_addr``); it never brings a
  device online - a device that went offline must register again.
* A channel is online when its device is online, it is not removed and its status is
  ON/OK (see :func:`device_registry.events.is_online_status`).
* Catalog items whose 20-digit id has type code 215/216 are business groups / virtual
  organisations, items with a 2-8 digit id are administrative regions: they become
  ``org_nodes``, not channels.  A channel is linked to the org node named by its ParentID
  (last resolvable segment of a ``a/b/c`` path) or else its BusinessGroupID; when neither
  resolves, an existing link is kept (it may have been set by an operator).
* Catalog fields that are None in an item leave the stored value unchanged.
* ``updated_at`` marks changes to a row other than volatile transport state (``last_seen``,
  ``remote_addr``, ``register_expires_at``): a keepalive or a registration refresh leaves it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Text, and_, bindparam, case, delete, false, func, insert, or_, select, tuple_, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from gbops.db import SQLITE_BEGIN_IMMEDIATE, UtcDateTime, utcnow
from gbops.ids import ChannelRef

from .events import (
    CatalogReported,
    ChannelInfo,
    ChannelStatusChanged,
    DeviceInfoReported,
    DeviceRegistered,
    DeviceSeen,
    DeviceUnregistered,
    DeviceWentOffline,
    KeepaliveIntervalSet,
    RegistryEvent,
    is_online_status,
)
from .models import Channel, Device, OrgNode, PlatformRun, PresenceEvent

__all__ = [
    "DeviceSnapshot",
    "OrgError",
    "OrgTree",
    "Registry",
    "RegistryWriter",
    "channel_scope_clause",
    "pairs_in",
    "device_scope_clause",
    "org_kind_of",
]

log = logging.getLogger(__name__)

DEVICES = Device.__table__
CHANNELS = Channel.__table__
ORG_NODES = OrgNode.__table__
PRESENCE = PresenceEvent.__table__
RUNS = PlatformRun.__table__

# Columns compared with their loaded values and written back when changed.
_DEVICE_MUTABLE = [c.name for c in DEVICES.columns if c.name not in ("device_id", "created_at")]
_CHANNEL_MUTABLE = [
    c.name for c in CHANNELS.columns if c.name not in ("id", "device_id", "channel_id", "first_seen")
]
_CHANNEL_INFO_FIELDS = [
    "name", "manufacturer", "model", "owner", "civil_code", "block", "address", "parental", "parent_id",
    "business_group_id", "safety_way", "register_way", "secrecy", "ip_address", "port", "status",
    "ptz_type", "longitude", "latitude",
]  # fmt: skip

# Changes that alone do not count as an update of a row (updated_at stays).
_VOLATILE = frozenset({"last_seen", "remote_addr", "register_expires_at"})

# Chunk size for IN (...) lists.
_IN_CHUNK = 500


def org_kind_of(code: str) -> str | None:
    """The org node kind of a catalog item id, or None when the item is a channel."""
    if not (code.isascii() and code.isdigit()):
        return None
    if len(code) == 20:
        return {"215": "business_group", "216": "virtual_org"}.get(code[10:13])
    if 2 <= len(code) <= 8:
        return "civil"
    return None


def _ha1(algorithm: str, username: str, realm: str, password: str) -> str:
    return hashlib.new(algorithm, f"{username}:{realm}:{password}".encode()).hexdigest()


def _chunks(items: Sequence[Any], size: int = _IN_CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


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


class _Batch:
    """Applies one batch of events inside one transaction.

    Rows of the devices concerned are loaded (and locked on PostgreSQL), the events are
    applied in memory in order, and the changes are written back with a few executemany
    statements at the end.
    """

    def __init__(self, conn: AsyncConnection, events: Sequence[RegistryEvent]) -> None:
        self.conn = conn
        self.events = events
        self.dialect = conn.dialect.name
        self.now = utcnow()
        # Rows as loaded (to find what changed) and as being modified.
        self.devices: dict[str, dict[str, Any]] = {}
        self.devices_loaded: dict[str, dict[str, Any]] = {}
        # device_id -> channel_id -> row
        self.channels: dict[str, dict[str, dict[str, Any]]] = {}
        self.channels_loaded: dict[int, dict[str, Any]] = {}
        self.new_channels: list[dict[str, Any]] = []
        self.presence: list[dict[str, Any]] = []
        self.org_by_code: dict[str, dict[str, Any]] = {}
        self.org_by_id: dict[int, dict[str, Any]] = {}
        self.ignored = 0
        self.not_yet_registered: set[str] = set()

    # -- helpers ---------------------------------------------------------------------------

    def _insert(self, table: Any) -> Any:
        if self.dialect == "postgresql":
            return postgresql.insert(table)
        if self.dialect == "sqlite":
            return sqlite.insert(table)
        raise NotImplementedError(f"unsupported database {self.dialect}")

    async def _select_in(
        self, table: Any, column: Any, keys: Sequence[Any], *, lock: bool = False
    ) -> list[Any]:
        rows: list[Any] = []
        for chunk in _chunks(sorted(keys)):
            stmt = select(table).where(column.in_(chunk))
            if lock:
                # A stable order avoids deadlocks between concurrent writers (PostgreSQL).
                stmt = stmt.order_by(column).with_for_update()
            rows.extend((await self.conn.execute(stmt)).mappings())
        return rows

    def _record(
        self, subject: str, device_id: str, channel_id: str | None, online: bool, at: datetime, reason: str
    ) -> None:
        self.presence.append(
            {
                "subject": subject,
                "device_id": device_id,
                "channel_id": channel_id,
                "online": online,
                "at": at,
                "reason": reason,
                "detail": None,
            }
        )

    def _refresh_channel(self, dev: dict[str, Any], ch: dict[str, Any], at: datetime, reason: str) -> None:
        """Recompute a channel's online flag; record a presence row if it flipped."""
        online = bool(dev["online"]) and not ch["removed"] and is_online_status(ch["status"])
        if online != ch["online"]:
            ch["online"] = online
            self._record("channel", dev["device_id"], ch["channel_id"], online, at, reason)

    def _channels_follow(self, dev: dict[str, Any], at: datetime) -> None:
        reason = "device_online" if dev["online"] else "device_offline"
        chans = self.channels.get(dev["device_id"], {})
        for channel_id in sorted(chans):
            self._refresh_channel(dev, chans[channel_id], at, reason)

    def _new_channel(self, device_id: str, channel_id: str, at: datetime) -> dict[str, Any]:
        ch: dict[str, Any] = dict.fromkeys(_CHANNEL_INFO_FIELDS)
        ch.update(
            id=None,
            device_id=device_id,
            channel_id=channel_id,
            online=False,
            removed=False,
            removed_at=None,
            first_seen=at,
            updated_at=self.now,
            org_node_id=None,
        )
        self.channels.setdefault(device_id, {})[channel_id] = ch
        self.new_channels.append(ch)
        return ch

    # -- loading ---------------------------------------------------------------------------

    def _keep_device(self, row: Any) -> None:
        self.devices[row["device_id"]] = dict(row)
        self.devices_loaded[row["device_id"]] = dict(row)

    async def _load(self) -> dict[str, DeviceSeen]:
        """Load/lock what the batch needs.  Returns the coalesced keepalives of devices that
        have nothing else in this batch (they are written with one light UPDATE)."""
        heavy: set[str] = set()
        registered: set[str] = set()
        seen: dict[str, DeviceSeen] = {}
        for ev in self.events:
            if isinstance(ev, DeviceSeen):
                prev = seen.get(ev.device_id)
                if prev is None or ev.at >= prev.at:
                    seen[ev.device_id] = ev
            else:
                heavy.add(ev.device_id)
                if isinstance(ev, DeviceRegistered):
                    registered.add(ev.device_id)
        light = {dev_id: ev for dev_id, ev in seen.items() if dev_id not in heavy}
        if not heavy:
            return light

        for row in await self._select_in(DEVICES, DEVICES.c.device_id, list(heavy), lock=True):
            self._keep_device(row)
        missing = sorted(registered - self.devices.keys())
        if missing:
            stmt = self._insert(DEVICES).on_conflict_do_nothing(index_elements=["device_id"])
            await self.conn.execute(
                stmt,
                [
                    {
                        "device_id": dev_id,
                        "keepalive_interval": 60,
                        "online": False,
                        "created_at": self.now,
                        "updated_at": self.now,
                    }
                    for dev_id in missing
                ],
            )
            for row in await self._select_in(DEVICES, DEVICES.c.device_id, missing, lock=True):
                self._keep_device(row)
            # Until its DeviceRegistered is reached, a device created for this batch is still
            # unknown: earlier events about it are ignored, as they would be one at a time.
            self.not_yet_registered = set(missing)

        # Which devices need their channels: those with catalog events, and those whose
        # online flag flips somewhere in the batch.
        need_channels: set[str] = set()
        online_now = {dev_id: bool(dev["online"]) for dev_id, dev in self.devices.items()}
        for ev in self.events:
            dev_id = ev.device_id
            if dev_id not in self.devices:
                continue
            if isinstance(ev, CatalogReported | ChannelStatusChanged):
                need_channels.add(dev_id)
            elif isinstance(ev, DeviceRegistered | DeviceUnregistered | DeviceWentOffline):
                online = isinstance(ev, DeviceRegistered)
                if online != online_now[dev_id]:
                    need_channels.add(dev_id)
                    online_now[dev_id] = online
        for dev_id in need_channels:
            self.channels[dev_id] = {}
        # (Devices created just now are included: another writer may have won the race.)
        if need_channels:
            for row in await self._select_in(CHANNELS, CHANNELS.c.device_id, list(need_channels)):
                self.channels[row["device_id"]][row["channel_id"]] = dict(row)
                self.channels_loaded[row["id"]] = dict(row)
        return light

    # -- event handlers --------------------------------------------------------------------

    def _on_registered(self, dev: dict[str, Any], ev: DeviceRegistered) -> None:
        dev["transport"] = ev.transport
        dev["remote_addr"] = ev.remote_addr
        dev["contact"] = ev.contact
        if ev.user_agent is not None:
            dev["user_agent"] = ev.user_agent
        dev["register_expires_at"] = ev.at + timedelta(seconds=ev.expires)
        if dev["last_seen"] is None or ev.at > dev["last_seen"]:
            dev["last_seen"] = ev.at
        if not dev["online"]:
            dev["online"] = True
            dev["registered_at"] = ev.at
            dev["offline_reason"] = None
            self._record("device", dev["device_id"], None, True, ev.at, "registered")
            self._channels_follow(dev, ev.at)

    def _go_offline(self, dev: dict[str, Any], at: datetime, reason: str) -> None:
        if dev["online"]:
            dev["online"] = False
            dev["offline_reason"] = reason
            self._record("device", dev["device_id"], None, False, at, reason)
            self._channels_follow(dev, at)

    def _on_unregistered(self, dev: dict[str, Any], ev: DeviceUnregistered) -> None:
        self._go_offline(dev, ev.at, "unregistered")
        dev["register_expires_at"] = None

    def _on_seen(self, dev: dict[str, Any], ev: DeviceSeen) -> None:
        if dev["last_seen"] is None or ev.at > dev["last_seen"]:
            dev["last_seen"] = ev.at
            if ev.remote_addr is not None:
                dev["remote_addr"] = ev.remote_addr

    def _on_info(self, dev: dict[str, Any], ev: DeviceInfoReported) -> None:
        for name in ("name", "manufacturer", "model", "firmware", "device_type", "channel_count", "charset"):
            value = getattr(ev, name)
            if value is not None:
                dev[name] = value

    def _on_keepalive_interval(self, dev: dict[str, Any], ev: KeepaliveIntervalSet) -> None:
        dev["keepalive_interval"] = ev.interval

    def _remove_channel(self, dev: dict[str, Any], ch: dict[str, Any], at: datetime) -> None:
        if ch["removed"]:
            return
        ch["removed"] = True
        ch["removed_at"] = at
        self._refresh_channel(dev, ch, at, "catalog_removed")

    def _on_channel_status(self, dev: dict[str, Any], ev: ChannelStatusChanged) -> None:
        chans = self.channels[dev["device_id"]]
        ch = chans.get(ev.channel_id)
        if ev.status == "DEL":
            if ch is not None:
                self._remove_channel(dev, ch, ev.at)
            return
        if ch is None:
            ch = self._new_channel(dev["device_id"], ev.channel_id, ev.at)
        ch["removed"] = False
        ch["removed_at"] = None
        if ev.status not in ("ADD", "UPDATE"):
            ch["status"] = ev.status
        self._refresh_channel(dev, ch, ev.at, "catalog_status")

    async def _on_catalog(self, dev: dict[str, Any], ev: CatalogReported) -> None:
        device_id = dev["device_id"]
        org_items: list[tuple[ChannelInfo, str]] = []
        channel_items: dict[str, ChannelInfo] = {}
        for item in ev.channels:
            kind = org_kind_of(item.channel_id)
            if kind is None:
                channel_items[item.channel_id] = item  # a repeated id: the last one wins
            else:
                org_items.append((item, kind))

        await self._load_org_nodes(ev.channels)
        if org_items:
            await self._upsert_org_nodes(device_id, org_items)

        chans = self.channels[device_id]
        for channel_id, item in channel_items.items():
            ch = chans.get(channel_id)
            if ch is None:
                ch = self._new_channel(device_id, channel_id, ev.at)
            for name in _CHANNEL_INFO_FIELDS:
                value = getattr(item, name)
                if value is not None:
                    ch[name] = value
            node = self._resolve_org(self._refs_of(item))
            if node is not None:
                ch["org_node_id"] = node["id"]
            ch["removed"] = False
            ch["removed_at"] = None
            self._refresh_channel(dev, ch, ev.at, "catalog_status")

        if ev.complete:
            for channel_id in sorted(chans.keys() - channel_items.keys()):
                self._remove_channel(dev, chans[channel_id], ev.at)

        dev["catalog_synced_at"] = ev.at
        dev["catalog_state"] = ev.state

    # -- org nodes -------------------------------------------------------------------------

    @staticmethod
    def _refs_of(item: ChannelInfo) -> list[str]:
        """Codes an item points to as its parent, most specific first."""
        refs: list[str] = []
        if item.parent_id:
            refs.extend(seg.strip() for seg in reversed(item.parent_id.split("/")) if seg.strip())
        if item.business_group_id and item.business_group_id.strip():
            refs.append(item.business_group_id.strip())
        return refs

    def _resolve_org(self, refs: Iterable[str], *, exclude: str | None = None) -> dict[str, Any] | None:
        for code in refs:
            if code != exclude and code in self.org_by_code:
                return self.org_by_code[code]
        return None

    def _remember_org(self, row: dict[str, Any]) -> None:
        self.org_by_id[row["id"]] = row
        if row["code"] is not None:
            self.org_by_code[row["code"]] = row

    async def _load_org_nodes(self, items: Sequence[ChannelInfo]) -> None:
        codes: set[str] = set()
        for item in items:
            codes.add(item.channel_id)
            codes.update(self._refs_of(item))
            if org_kind_of(item.channel_id) == "civil":
                code = item.channel_id
                codes.update(code[:n] for n in range(2, len(code), 2))
        wanted = sorted(code for code in codes if code not in self.org_by_code and len(code) <= 32)
        if wanted:
            for row in await self._select_in(ORG_NODES, ORG_NODES.c.code, wanted):
                self._remember_org(dict(row))

    async def _org_by_id(self, node_id: int) -> dict[str, Any] | None:
        node = self.org_by_id.get(node_id)
        if node is None:
            row = (
                (await self.conn.execute(select(ORG_NODES).where(ORG_NODES.c.id == node_id)))
                .mappings()
                .first()
            )
            if row is not None:
                node = dict(row)
                self._remember_org(node)
        return node

    async def _would_cycle(self, node_id: int, parent_id: int) -> bool:
        seen: set[int] = set()
        current: int | None = parent_id
        while current is not None and current not in seen:
            if current == node_id:
                return True
            seen.add(current)
            node = await self._org_by_id(current)
            current = None if node is None else node["parent_id"]
        return current is not None  # an existing loop above: refuse to join it

    async def _upsert_org_nodes(self, device_id: str, org_items: list[tuple[ChannelInfo, str]]) -> None:
        new_rows = []
        for item, kind in org_items:
            code = item.channel_id
            name = item.name or code
            node = self.org_by_code.get(code)
            if node is None:
                new_rows.append(
                    {
                        "code": code,
                        "name": name,
                        "kind": kind,
                        "parent_id": None,
                        "source_device_id": device_id,
                        "created_at": self.now,
                        "updated_at": self.now,
                    }
                )
            elif node["kind"] != "manual" and (
                node["name"] != name or node["kind"] != kind or node["source_device_id"] != device_id
            ):
                node.update(name=name, kind=kind, source_device_id=device_id, updated_at=self.now)
                node["_dirty"] = True
        if new_rows:
            unique = list({row["code"]: row for row in new_rows}.values())
            stmt = self._insert(ORG_NODES).on_conflict_do_nothing(index_elements=["code"])
            await self.conn.execute(stmt, unique)
            for row in await self._select_in(ORG_NODES, ORG_NODES.c.code, [r["code"] for r in unique]):
                self._remember_org(dict(row))

        # Parents, now that every node of this catalog has an id.
        for item, kind in org_items:
            node = self.org_by_code.get(item.channel_id)
            if node is None or node["kind"] == "manual":
                continue
            refs = self._refs_of(item)
            if kind == "civil":
                code = item.channel_id
                refs.extend(code[:n] for n in range(len(code) - 2, 1, -2))
            parent = self._resolve_org(refs, exclude=node["code"])
            if parent is None or parent["id"] == node["parent_id"]:
                continue
            if await self._would_cycle(node["id"], parent["id"]):
                log.warning(
                    "org node %s: parent %s would make a cycle; ignored", node["code"], parent["code"]
                )
                continue
            node.update(parent_id=parent["id"], updated_at=self.now)
            node["_dirty"] = True

        dirty = [node for node in self.org_by_id.values() if node.pop("_dirty", False)]
        if dirty:
            stmt = update(ORG_NODES).where(ORG_NODES.c.id == bindparam("b_id"))
            await self.conn.execute(
                stmt,
                [
                    {
                        "b_id": node["id"],
                        "name": node["name"],
                        "kind": node["kind"],
                        "parent_id": node["parent_id"],
                        "source_device_id": node["source_device_id"],
                        "updated_at": node["updated_at"],
                    }
                    for node in dirty
                ],
            )

    # -- run -------------------------------------------------------------------------------

    async def run(self) -> None:
        light = await self._load()
        for ev in self.events:
            if isinstance(ev, DeviceSeen) and ev.device_id in light:
                continue
            dev = self.devices.get(ev.device_id)
            if dev is None or (
                ev.device_id in self.not_yet_registered and not isinstance(ev, DeviceRegistered)
            ):
                self.ignored += 1
                continue
            if isinstance(ev, DeviceRegistered):
                self.not_yet_registered.discard(ev.device_id)
                self._on_registered(dev, ev)
            elif isinstance(ev, DeviceSeen):
                self._on_seen(dev, ev)
            elif isinstance(ev, DeviceWentOffline):
                self._go_offline(dev, ev.at, ev.reason)
            elif isinstance(ev, DeviceUnregistered):
                self._on_unregistered(dev, ev)
            elif isinstance(ev, DeviceInfoReported):
                self._on_info(dev, ev)
            elif isinstance(ev, KeepaliveIntervalSet):
                self._on_keepalive_interval(dev, ev)
            elif isinstance(ev, CatalogReported):
                await self._on_catalog(dev, ev)
            elif isinstance(ev, ChannelStatusChanged):
                self._on_channel_status(dev, ev)
            else:
                raise TypeError(f"not a registry event: {ev!r}")
        if self.ignored:
            log.debug("registry batch: %d event(s) about unknown devices ignored", self.ignored)
        await self._write(light)

    async def _update_changed(
        self, table: Any, key: str, rows: list[tuple[Any, dict[str, Any], dict[str, Any]]], columns: list[str]
    ) -> None:
        """UPDATE the columns that changed.

        Rows getting identical new values (typically the channels of a device that goes
        offline) share one ``UPDATE ... WHERE key IN (...)``; the others are written with one
        executemany per set of changed columns.  ``updated_at`` moves when something other
        than volatile transport state changed."""
        same_values: dict[tuple[tuple[str, Any], ...], list[Any]] = {}
        for key_value, row, loaded in rows:
            changed = [name for name in columns if row[name] != loaded[name]]
            if not changed:
                continue
            if not _VOLATILE.issuperset(changed):
                row["updated_at"] = self.now
                if "updated_at" not in changed:
                    changed.append("updated_at")
            same_values.setdefault(tuple((name, row[name]) for name in changed), []).append(key_value)

        per_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for values, keys in same_values.items():
            if len(keys) == 1:
                params = dict(values)
                params["b_key"] = keys[0]
                per_columns.setdefault(tuple(name for name, _ in values), []).append(params)
                continue
            assignments = dict(values)
            assignments.setdefault("updated_at", table.c.updated_at)  # keep the onupdate default away
            for chunk in _chunks(sorted(keys)):
                await self.conn.execute(update(table).where(table.c[key].in_(chunk)).values(assignments))
        for names, params_list in per_columns.items():
            stmt = update(table).where(table.c[key] == bindparam("b_key"))
            if "updated_at" not in names:
                stmt = stmt.values(updated_at=table.c.updated_at)
            await self.conn.execute(stmt, params_list)

    async def _write(self, light: dict[str, DeviceSeen]) -> None:
        conn = self.conn
        await self._update_changed(
            DEVICES,
            "device_id",
            [
                (dev_id, self.devices[dev_id], loaded)
                for dev_id, loaded in sorted(self.devices_loaded.items())
            ],
            _DEVICE_MUTABLE,
        )
        if light:
            seen_at = bindparam("b_seen", type_=UtcDateTime())
            stmt = (
                update(DEVICES)
                .where(
                    DEVICES.c.device_id == bindparam("b_device_id"),
                    or_(DEVICES.c.last_seen.is_(None), DEVICES.c.last_seen < seen_at),
                )
                .values(
                    last_seen=seen_at,
                    remote_addr=func.coalesce(bindparam("b_addr", type_=Text()), DEVICES.c.remote_addr),
                    # a keepalive is not an update of the row: keep the onupdate default away
                    updated_at=DEVICES.c.updated_at,
                )
            )
            await conn.execute(
                stmt,
                [
                    {"b_device_id": dev_id, "b_seen": ev.at, "b_addr": ev.remote_addr}
                    for dev_id, ev in sorted(light.items())
                ],
            )
        if self.new_channels:
            await conn.execute(
                insert(CHANNELS), [{k: v for k, v in ch.items() if k != "id"} for ch in self.new_channels]
            )
        chans_by_id = {ch["id"]: ch for by_id in self.channels.values() for ch in by_id.values() if ch["id"]}
        await self._update_changed(
            CHANNELS,
            "id",
            [(ch_id, chans_by_id[ch_id], loaded) for ch_id, loaded in sorted(self.channels_loaded.items())],
            _CHANNEL_MUTABLE,
        )
        if self.presence:
            await conn.execute(insert(PRESENCE), self.presence)


class Registry:
    """Database access for the device registry (see the module docstring for the rules)."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker

    @property
    def sessionmaker(self) -> async_sessionmaker[AsyncSession]:
        return self._sessionmaker

    async def _write_connection(self, session: AsyncSession) -> AsyncConnection:
        return await session.connection(execution_options={SQLITE_BEGIN_IMMEDIATE: True})

    # -- write -----------------------------------------------------------------------------

    async def apply(self, events: Sequence[RegistryEvent]) -> None:
        """Apply ``events`` in order, in one transaction."""
        if not events:
            return
        async with self._sessionmaker() as session:
            conn = await self._write_connection(session)
            await _Batch(conn, events).run()
            await session.commit()

    async def set_device_password(
        self, device_id: str, realm: str, password: str | None, *, session: AsyncSession | None = None
    ) -> None:
        """Store the device's SIP digest password as HA1 values for ``realm`` (None clears it).

        The username of a GB/T 28181 device is its device id.  The device row is created if
        it does not exist yet.  With ``session`` the write joins that session's transaction (which
        the caller commits, e.g. together with its audit entry; on SQLite the caller starts it with
        BEGIN IMMEDIATE); otherwise it commits on its own."""
        if password is None:
            values: dict[str, Any] = {
                "password_ha1_md5": None,
                "password_ha1_sha256": None,
                "password_realm": None,
            }
        else:
            values = {
                "password_ha1_md5": _ha1("md5", device_id, realm, password),
                "password_ha1_sha256": _ha1("sha256", device_id, realm, password),
                "password_realm": realm,
            }
        now = utcnow()

        async def upsert(conn: AsyncConnection) -> None:
            dialect = conn.dialect.name
            ins = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(DEVICES)
            stmt = ins.values(device_id=device_id, created_at=now, updated_at=now, **values)
            stmt = stmt.on_conflict_do_update(
                index_elements=["device_id"], set_={**values, "updated_at": now}
            )
            await conn.execute(stmt)

        if session is not None:
            await upsert(await session.connection())
            return
        async with self._sessionmaker() as own:
            await upsert(await self._write_connection(own))
            await own.commit()

    async def start_platform_run(self, at: datetime) -> int:
        """Record that the platform started at ``at``; returns the run id.

        Runs left open by a crash are closed (``clean`` false) with ``stopped_at`` estimated
        as the newest activity recorded after they started (last keepalive or presence row)."""
        async with self._sessionmaker() as session:
            conn = await self._write_connection(session)
            open_runs = (
                await conn.execute(
                    select(RUNS.c.id, RUNS.c.started_at)
                    .where(RUNS.c.stopped_at.is_(None))
                    .order_by(RUNS.c.started_at)
                )
            ).all()
            for index, (run_id, started_at) in enumerate(open_runs):
                upper = open_runs[index + 1].started_at if index + 1 < len(open_runs) else at
                last_seen = await conn.scalar(
                    select(func.max(DEVICES.c.last_seen)).where(
                        DEVICES.c.last_seen >= started_at, DEVICES.c.last_seen <= upper
                    )
                )
                last_presence = await conn.scalar(
                    select(func.max(PRESENCE.c.at)).where(PRESENCE.c.at >= started_at, PRESENCE.c.at <= upper)
                )
                stopped = max([t for t in (last_seen, last_presence) if t is not None], default=started_at)
                await conn.execute(
                    update(RUNS).where(RUNS.c.id == run_id).values(stopped_at=stopped, clean=False)
                )
            run_id = (
                await conn.execute(insert(RUNS).values(started_at=at, clean=False).returning(RUNS.c.id))
            ).scalar_one()
            await session.commit()
            return int(run_id)

    async def end_platform_run(self, run_id: int, at: datetime, clean: bool) -> None:
        async with self._sessionmaker() as session:
            conn = await self._write_connection(session)
            await conn.execute(update(RUNS).where(RUNS.c.id == run_id).values(stopped_at=at, clean=clean))
            await session.commit()

    # -- read ------------------------------------------------------------------------------

    async def snapshot(self) -> list[DeviceSnapshot]:
        cols = [DEVICES.c[f.name] for f in fields(DeviceSnapshot)]
        async with self._sessionmaker() as session:
            result = await session.execute(select(*cols).order_by(DEVICES.c.device_id))
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
    ) -> tuple[int, list[Device]]:
        """Devices ordered by id, filtered by online state and by a search text (matched in
        id, name, manufacturer, model, address), by ``scope`` (None: everything) and by the org node
        they are assigned to.  Returns (total matching, page)."""
        conditions = []
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
            page = await session.scalars(
                select(Device)
                .where(*conditions)
                .order_by(Device.device_id)
                .offset(max(offset, 0))
                .limit(max(limit, 0))
            )
            return int(total or 0), list(page)

    async def get_device(self, device_id: str) -> Device | None:
        async with self._sessionmaker() as session:
            return await session.get(Device, device_id)

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
                await session.execute(select(Device.org_node_id).where(Device.device_id == device_id))
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
            conds.append(or_(_in(Channel.org_node_id, ids),
                             and_(Channel.org_node_id.is_(None), _in(Device.org_node_id, ids))) if ids else false())
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
        dev_conds = [] if scope is None or scope.all else [device_scope_clause(scope)]
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

    # -- organisation tree -----------------------------------------------------------------

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
        dev_conds: list[Any] = []
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
        if limited:
            holding = [n for n in nodes if nodes[n]["channels"] or nodes[n]["devices"]]
            for n in holding:
                seen: set[int] = set()
                cur: int | None = n
                while cur is not None and cur in nodes and cur not in seen:
                    seen.add(cur)
                    visible.add(cur)
                    cur = nodes[cur]["parent_id"]
        # Subtree totals (iterative post-order; a cycle in stored data cannot loop).
        children: dict[int | None, list[int]] = {}
        for n in sorted(visible):
            parent = nodes[n]["parent_id"]
            children.setdefault(parent if parent in visible else None, []).append(n)
        for parent, kids in children.items():
            if parent is not None:
                nodes[parent]["children"] = kids
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

    async def _would_cycle(self, session: AsyncSession, node_id: int, parent_id: int) -> bool:
        seen: set[int] = set()
        current: int | None = parent_id
        while current is not None and current not in seen:
            if current == node_id:
                return True
            seen.add(current)
            current = await session.scalar(select(OrgNode.parent_id).where(OrgNode.id == current))
        return current is not None

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
                if await self._would_cycle(session, node_id, parent_id):
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
        devices = await session.scalar(select(func.count()).where(Device.org_node_id == node_id))
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
        for chunk in _chunks(sorted(set(device_ids))):
            devices += (
                await session.execute(
                    update(DEVICES).where(DEVICES.c.device_id.in_(chunk)).values(org_node_id=node_id)
                )
            ).rowcount or 0
        for chunk in _chunks(sorted({ChannelRef(*r) for r in channel_refs})):
            channels += (
                await session.execute(
                    update(CHANNELS)
                    .where(tuple_(CHANNELS.c.device_id, CHANNELS.c.channel_id).in_([tuple(r) for r in chunk]))
                    .values(org_node_id=node_id)
                )
            ).rowcount or 0
        return {"devices": devices, "channels": channels}


# ------------------------------------------------------------------------------------------ scope
# A scope is any object with ``all: bool``, ``org_node_ids`` (descendants included) and ``channel_refs``
# (:class:`gbops.ids.ChannelRef` pairs, see ops_portal.access.Scope); the registry only turns it into SQL.
# A channel's node is its own ``org_node_id``, or its device's when it has none.  Explicit channels are
# matched as (device_id, channel_id) pairs: a row-value IN over the unique (device_id, channel_id) index.

_LITERAL_IN_ABOVE = 2000  # larger IN lists are rendered inline (ints / digit ids): no bind-parameter limit


def _in(column: Any, values: Iterable[Any]) -> Any:
    items = sorted(values)
    if len(items) > _LITERAL_IN_ABOVE:
        return column.in_(bindparam(f"in_{column.key}", items, expanding=True, literal_execute=True, unique=True))
    return column.in_(items)


def pairs_in(device_col: Any, channel_col: Any, refs: Iterable[ChannelRef]) -> Any:
    """``(device_col, channel_col) IN (...)`` for these refs (refs with an empty device id never match)."""
    items = sorted(tuple(r) for r in refs if r[0])
    if not items:
        return false()
    pair = tuple_(device_col, channel_col)
    if len(items) > _LITERAL_IN_ABOVE // 2:
        exact = pair.in_(bindparam("in_channel_refs", items, expanding=True, literal_execute=True, unique=True))
    else:
        exact = pair.in_(items)
    # The channel ids first: SQLite does not search an index for a row-value IN list (it scans), but does
    # for ``channel_id IN (...)``; the pair test then keeps exactly the granted devices' channels.
    return and_(_in(channel_col, {c for _, c in items}), exact)


def channel_scope_clause(scope: Any) -> Any:
    """SQL condition: the channel (joined with its device) is in ``scope`` (not for ``scope.all``)."""
    conds = []
    if scope.channel_refs:
        conds.append(pairs_in(Channel.device_id, Channel.channel_id, scope.channel_refs))
    if scope.org_node_ids:
        conds.append(_in(Channel.org_node_id, scope.org_node_ids))
        conds.append(and_(Channel.org_node_id.is_(None), _in(Device.org_node_id, scope.org_node_ids)))
    return or_(*conds) if conds else false()


def device_scope_clause(scope: Any) -> Any:
    """SQL condition: the device is visible in ``scope`` (own node granted, or a channel in scope).

    The channels are found by a UNION of one indexed lookup per kind of grant (channel pairs, nodes): a
    single ``OR`` over both makes SQLite and PostgreSQL scan every channel (bench/portal.py)."""
    conds = []
    if scope.org_node_ids:
        conds.append(_in(Device.org_node_id, scope.org_node_ids))
    ch = CHANNELS.alias("scope_channels")
    chan = []
    if scope.channel_refs:
        chan.append(select(ch.c.device_id).where(ch.c.removed.is_(False),
                                                 pairs_in(ch.c.device_id, ch.c.channel_id, scope.channel_refs)))
    if scope.org_node_ids:
        chan.append(select(ch.c.device_id).where(ch.c.removed.is_(False), _in(ch.c.org_node_id, scope.org_node_ids)))
    if chan:
        conds.append(Device.device_id.in_(chan[0].union(*chan[1:]) if len(chan) > 1 else chan[0]))
    return or_(*conds) if conds else false()


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


def _is_transient(exc: BaseException) -> bool:
    """Errors worth retrying as they are: database unreachable, locked, busy, deadlock."""
    if isinstance(exc, OSError | TimeoutError | sa_exc.TimeoutError | sa_exc.DisconnectionError):
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated or isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
            return True
        sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        # 08 connection, 40 rollback (serialization, deadlock), 53 resources, 57 operator
        if isinstance(sqlstate, str) and sqlstate[:2] in ("08", "40", "53", "57"):
            return True
    return False


class RegistryWriter:
    """Batches registry events from the event loop into :meth:`Registry.apply` calls.

    ``submit`` never blocks.  A background task (``start``) writes a batch when ``max_batch``
    events are waiting, ``max_delay`` seconds after the first waiting event, or on ``flush``.

    Failures: a transient error (database down, locked, deadlock) retries the same batch
    with exponential backoff, for ever.  Any other error is assumed to come from the data:
    the batch size is halved on each failure to isolate the culprit, and a single event that
    still fails after ``max_attempts`` tries is logged at ERROR level with its content and
    kept in :attr:`rejected` (so that nothing is dropped silently and one bad event cannot
    stall the platform).  The queue is not capped: past ``max_queue`` waiting events it
    says so in the log (throttled) and keeps accepting.
    """

    def __init__(
        self,
        registry: Registry,
        *,
        max_batch: int = 1000,
        max_delay: float = 0.2,
        max_queue: int = 100_000,
        max_attempts: int = 3,
        max_backoff: float = 10.0,
        logger: logging.Logger | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self._registry = registry
        self._max_batch = max_batch
        self._max_delay = max_delay
        self._max_queue = max_queue
        self._max_attempts = max_attempts
        self._max_backoff = max_backoff
        self._log = logger or log
        self._queue: deque[RegistryEvent] = deque()
        self._submitted = 0
        self._written = 0
        self._limit = max_batch
        self._wakeup = asyncio.Event()
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._stopped = False
        self._last_queue_warning = 0.0
        #: Events given up on after repeated non-transient failures (see the class docstring).
        self.rejected: list[RegistryEvent] = []
        #: Number of failed batch attempts so far.
        self.failures = 0

    @property
    def pending(self) -> int:
        """Events submitted but not written yet."""
        return len(self._queue)

    @property
    def written(self) -> int:
        """Events handled so far (written, or rejected)."""
        return self._written

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Start the background task (returns at once; idempotent)."""
        if self._stopped or self._stopping:
            raise RuntimeError("RegistryWriter was stopped")
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="registry-writer")

    def submit(self, event: RegistryEvent) -> None:
        """Queue ``event`` for writing.  Never blocks; raises once the writer is stopped."""
        if not isinstance(event, RegistryEvent):
            raise TypeError(f"not a registry event: {event!r}")
        if self._stopped or self._stopping:
            raise RuntimeError("RegistryWriter is stopped; event not accepted")
        self._queue.append(event)
        self._submitted += 1
        size = len(self._queue)
        if size == 1 or size >= self._limit:
            self._wakeup.set()
        if size > self._max_queue:
            now = time.monotonic()
            if now - self._last_queue_warning >= 10.0:
                self._last_queue_warning = now
                self._log.warning(
                    "registry writer is behind: %d events waiting (more than %d); keeping them all",
                    size,
                    self._max_queue,
                )

    async def flush(self) -> None:
        """Wait until every event submitted so far has been handled."""
        target = self._submitted
        if self._written >= target:
            return
        if not self.running:
            raise RuntimeError(
                f"RegistryWriter is not running; {target - self._written} event(s) not written"
            )
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((target, future))
        self._wakeup.set()
        await future

    async def stop(self, grace: float | None = None) -> None:
        """Write everything submitted, then end the background task.

        With ``grace`` (seconds) it gives up waiting (for example while the database is
        down), logs how many events were not written, and cancels the task."""
        if self._stopped:
            return
        self._stopping = True
        self._wakeup.set()
        task = self._task
        try:
            if task is not None:
                try:
                    await asyncio.wait_for(asyncio.shield(task), grace)
                except TimeoutError:
                    self._log.error("registry writer stopped with %d event(s) not written", len(self._queue))
                    task.cancel()
                    try:
                        await task
                    except asyncio.CancelledError:
                        pass
            elif self._queue:
                self._log.error(
                    "registry writer was never started; %d event(s) not written", len(self._queue)
                )
        finally:
            self._stopped = True
            self._fail_waiters()

    def _fail_waiters(self) -> None:
        for _target, future in self._waiters:
            if not future.done():
                future.set_exception(RuntimeError("RegistryWriter stopped before the events were written"))
        self._waiters.clear()

    def _urgent(self) -> bool:
        return self._stopping or bool(self._waiters) or len(self._queue) >= self._limit

    def _advance(self, count: int) -> None:
        for _ in range(count):
            self._queue.popleft()
        self._written += count
        if self._waiters:
            still = []
            for target, future in self._waiters:
                if self._written >= target:
                    if not future.done():
                        future.set_result(None)
                else:
                    still.append((target, future))
            self._waiters = still

    async def _run(self) -> None:
        backoff = 0.0
        head_failures = 0
        while True:
            if not self._queue:
                if self._stopping:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if not self._urgent():
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), self._max_delay)
                except TimeoutError:
                    pass
            size = min(self._limit, len(self._queue))
            batch = [self._queue[i] for i in range(size)]
            try:
                await self._registry.apply(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failures += 1
                if _is_transient(exc):
                    backoff = min(self._max_backoff, max(0.05, backoff * 2))
                    self._log.warning(
                        "registry batch of %d event(s) failed (%s: %s); retrying in %.2fs",
                        size, type(exc).__name__, exc, backoff,
                    )  # fmt: skip
                    await asyncio.sleep(backoff)
                    continue
                if size > 1:
                    self._limit = max(1, size // 2)
                    self._log.exception(
                        "registry batch of %d event(s) failed; retrying in batches of %d", size, self._limit
                    )
                    await asyncio.sleep(0.01)
                    continue
                head_failures += 1
                if head_failures < self._max_attempts:
                    self._log.exception("registry event failed (attempt %d): %r", head_failures, batch[0])
                    await asyncio.sleep(min(self._max_backoff, 0.05 * 2**head_failures))
                    continue
                self._log.error(
                    "registry event rejected after %d attempts, kept in RegistryWriter.rejected: %r",
                    head_failures, batch[0],
                )  # fmt: skip
                self.rejected.append(batch[0])
                head_failures = 0
                self._advance(1)
                continue
            backoff = 0.0
            head_failures = 0
            self._limit = min(self._max_batch, self._limit * 2)
            self._advance(size)
