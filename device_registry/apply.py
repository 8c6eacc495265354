"""Event application: registry events (one batch per transaction) and the other writes of the registry.

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
* An operator's values win (issue 18): a device's ``user_name`` keeps ``name`` from DeviceInfo, a channel's
  ``user_name`` / ``user_address`` / ``user_longitude`` / ``user_latitude`` / ``user_org_node`` keep those
  values from a catalog.
* A deleted device (``deleted_at`` set) is unknown: events about it are ignored.  Only a registration the
  SIP service let through (it forgets a deleted device, so that happens with ``GBOPS_SIP_ALLOW_UNKNOWN``)
  brings it back: ``deleted_at`` is cleared and the device is online again.
* ``updated_at`` marks changes to a row other than volatile transport state (``last_seen``,
  ``remote_addr``, ``register_expires_at``): a keepalive or a registration refresh leaves it.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Collection, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Text, bindparam, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from gbcore.db import UtcDateTime, utcnow

from ._base import CHANNELS, DEVICES, ORG_NODES, PRESENCE, RUNS, RegistryBase, chunks
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
from .org import would_cycle

__all__ = ["BatchApplier", "RegistryWrites", "is_system_item", "org_kind_of", "set_channel_location"]

log = logging.getLogger("device_registry.service")

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

# Catalog fields an operator may set on a channel (issue 18): the catalog leaves them while the override is set.
_CHANNEL_OVERRIDES = {"name": "user_name", "address": "user_address", "longitude": "user_longitude",
                      "latitude": "user_latitude"}


def is_system_item(code: str) -> bool:
    """A catalog item that stands for a platform (GB/T 28181 type code 200): lower platforms list themselves
    first in their catalog. (A camera that lists its own id is a channel: it is played by that id.)"""
    return len(code) == 20 and code.isascii() and code.isdigit() and code[10:13] == "200"


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


class BatchApplier:
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
        for chunk in chunks(sorted(keys)):
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
        if dev.get("deleted_at") is not None:
            dev["deleted_at"] = None  # the SIP service let a deleted device in (GBOPS_SIP_ALLOW_UNKNOWN)
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
            if name == "name" and dev.get("user_name") is not None:
                continue  # the operator named it
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
            if is_system_item(item.channel_id):
                continue  # a platform's entry (type 200, a lower platform's own first item): not a channel
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
                if value is not None and ch.get(_CHANNEL_OVERRIDES.get(name, "")) is None:
                    ch[name] = value
            node = None if ch.get("user_org_node") else self._resolve_org(self._refs_of(item))
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

    async def _parent_of(self, node_id: int) -> int | None:
        node = await self._org_by_id(node_id)
        return None if node is None else node["parent_id"]

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
            if await would_cycle(node["id"], parent["id"], self._parent_of):
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
                (ev.device_id in self.not_yet_registered or dev.get("deleted_at") is not None)
                and not isinstance(ev, DeviceRegistered)
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
            for chunk in chunks(sorted(keys)):
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
                    DEVICES.c.deleted_at.is_(None),
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



class RegistryWrites(RegistryBase):
    """The writes of :class:`device_registry.service.Registry`: event batches, device passwords, platform runs."""

    # -- write -----------------------------------------------------------------------------

    async def apply(self, events: Sequence[RegistryEvent]) -> None:
        """Apply ``events`` in order, in one transaction."""
        if not events:
            return
        async with self._sessionmaker() as session:
            conn = await self._write_connection(session)
            await BatchApplier(conn, events).run()
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

    async def start_platform_run(self, at: datetime, *, node_id: str | None = None,
                                 live_nodes: Collection[str] | None = None) -> int:
        """Record that the platform started at ``at``; returns the run id.

        Runs left open by a crash are closed (``clean`` false) with ``stopped_at`` estimated
        as the newest activity recorded after they started (last keepalive or presence row).

        In a cluster (issue 17) each SIP node keeps a run of its own (``node_id``): the platform is up while any
        run is, and a run left open by a node in ``live_nodes`` (still running) is not closed by another node's
        start.  Without ``live_nodes`` (the single process) every open run is one this process left."""
        alive = set(live_nodes or ()) - ({node_id} if node_id else set())
        async with self._sessionmaker() as session:
            conn = await self._write_connection(session)
            open_runs = [
                row
                for row in (
                    await conn.execute(
                        select(RUNS.c.id, RUNS.c.started_at, RUNS.c.node_id)
                        .where(RUNS.c.stopped_at.is_(None))
                        .order_by(RUNS.c.started_at)
                    )
                ).all()
                if row.node_id is None or row.node_id not in alive
            ]
            for index, (run_id, started_at, _node) in enumerate(open_runs):
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
                await conn.execute(
                    insert(RUNS).values(started_at=at, clean=False, node_id=node_id).returning(RUNS.c.id)
                )
            ).scalar_one()
            await session.commit()
            return int(run_id)

    async def end_platform_run(self, run_id: int, at: datetime, clean: bool) -> None:
        async with self._sessionmaker() as session:
            conn = await self._write_connection(session)
            await conn.execute(update(RUNS).where(RUNS.c.id == run_id).values(stopped_at=at, clean=clean))
            await session.commit()


# ------------------------------------------------------------------------------ writes for other packages
async def set_channel_location(
    session: AsyncSession, device_id: str, channel_id: str | None, longitude: float, latitude: float
) -> list[str]:
    """Move a channel to where a position report (MobilePosition) says it is, in the caller's transaction
    (the caller commits; on SQLite it starts it with BEGIN IMMEDIATE, :func:`gbcore.db.begin_write`).

    ``channel_id`` None: the device reported its own position, and every (not removed) channel of it moves
    with it.  Removed channels stay where they were.  A location is volatile state, like ``last_seen``:
    ``updated_at`` stays.  Coordinates must be finite, longitude in -180..180 and latitude in -90..90
    (``ValueError`` otherwise).  Returns the ids of the channels moved (unchanged ones excluded)."""
    lon, lat = float(longitude), float(latitude)
    if not (math.isfinite(lon) and math.isfinite(lat) and -180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0):
        raise ValueError(f"not a position: longitude {longitude!r}, latitude {latitude!r}")
    conds = [CHANNELS.c.device_id == device_id, CHANNELS.c.removed.is_(False)]
    if channel_id is not None:
        conds.append(CHANNELS.c.channel_id == channel_id)
    # compare first: a parked vehicle reporting every few seconds must not rewrite its rows
    moved = or_(CHANNELS.c.longitude.is_(None), CHANNELS.c.latitude.is_(None),
                CHANNELS.c.longitude != lon, CHANNELS.c.latitude != lat)
    conn = await session.connection()
    ids = list((await conn.execute(select(CHANNELS.c.channel_id).where(*conds, moved)
                                   .order_by(CHANNELS.c.channel_id))).scalars())
    if ids:
        await conn.execute(
            update(CHANNELS).where(*conds, CHANNELS.c.channel_id.in_(ids))
            .values(longitude=lon, latitude=lat, updated_at=CHANNELS.c.updated_at)
        )
    return ids
