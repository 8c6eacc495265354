"""Device management (issue 18): an operator adds, edits and deletes devices, and edits channels.

The functions take the caller's session and join its transaction (the caller starts it with
:func:`gbcore.db.begin_write` and commits it together with its audit entry).

* A device added by an operator is *pre-registered*: a row, offline, with the operator's name
  (``user_name``, copied to ``name``: a DeviceInfo answer does not overwrite it), its own SIP password as
  digest HA1 values, and the settings of :data:`DEVICE_SETTINGS`.
* A deleted device keeps its row (``deleted_at`` set): its presence history, audit entries and reports name
  it.  It is gone from lists, lookups and the SIP service's snapshot; its channels are removed, and when it
  was online its offline transition (reason ``deleted``) is written like any other.  Adding the same id
  again revives the row with fresh settings.
* A channel's operator values (``user_*``, copied to the plain columns) win over later catalogs.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, case, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from gbcore.db import utcnow

from ._base import CHANNELS, DEVICES, ORG_NODES, PRESENCE, chunks
from .scope import device_scope_clause

__all__ = [
    "DEVICE_SETTINGS",
    "DEVICE_TYPE_RANGES",
    "STREAM_FORMS",
    "DeviceState",
    "create_devices",
    "delete_device",
    "device_id_problem",
    "device_states",
    "export_devices",
    "org_node_ids",
    "update_channel",
    "update_device",
]

#: How a device wants main/sub stream asked for in the INVITE's SDP: ``a=streamnumber:N`` (GB/T 28181-2022),
#: the vendor forms ``a=stream:N`` and ``a=streamprofile:N``, or not at all.
STREAM_FORMS = ("streamnumber", "stream", "streamprofile", "none")

#: Type codes (digits 11-13 of a 20-digit id, GB/T 28181 Appendix D) a device may be added with:
#: 111-130 front-end main devices (DVR, video server, encoder, NVR ...), 131-199 front-end peripherals
#: (camera, IPC ...: a camera registering on its own), 200 a platform (a lower platform).
DEVICE_TYPE_RANGES = ((111, 199), (200, 200))

#: The settings of a device an operator gives (besides name and password).
DEVICE_SETTINGS = ("transport", "org_node_id", "stream_form", "expected_channels", "longitude", "latitude",
                   "address")

# What a device reports about itself: cleared when a deleted device is added again (it may be another one).
_REPORTED = ("name", "manufacturer", "model", "firmware", "device_type", "remote_addr", "contact", "user_agent",
             "charset", "registered_at", "register_expires_at", "last_seen", "offline_reason", "channel_count",
             "catalog_synced_at", "catalog_state")


def device_id_problem(device_id: str) -> str | None:
    """Why ``device_id`` cannot be added ("中文 / English"), or None."""
    if len(device_id) != 20 or not (device_id.isascii() and device_id.isdigit()):
        return "设备编码须为 20 位数字 / a device id is 20 digits"
    code = int(device_id[10:13])
    if not any(low <= code <= high for low, high in DEVICE_TYPE_RANGES):
        return (f"设备编码第 11-13 位类型码 {device_id[10:13]} 不是设备类型（应为 111-199 前端设备或 200 平台） / "
                f"type code {device_id[10:13]} (digits 11-13) is not a device type (111-199 front-end devices, "
                "200 platform)")
    return None


def _ha1(algorithm: str, username: str, realm: str, password: str) -> str:
    return hashlib.new(algorithm, f"{username}:{realm}:{password}".encode()).hexdigest()


def _password_values(device_id: str, realm: str, password: str | None) -> dict[str, Any]:
    if password is None:
        return {"password_ha1_md5": None, "password_ha1_sha256": None, "password_realm": None}
    return {"password_ha1_md5": _ha1("md5", device_id, realm, password),
            "password_ha1_sha256": _ha1("sha256", device_id, realm, password), "password_realm": realm}


def _check_location(values: Mapping[str, Any]) -> None:
    lon, lat = values.get("longitude"), values.get("latitude")
    if lon is not None and not (math.isfinite(lon) and -180.0 <= lon <= 180.0):
        raise ValueError(f"not a longitude: {lon!r}")
    if lat is not None and not (math.isfinite(lat) and -90.0 <= lat <= 90.0):
        raise ValueError(f"not a latitude: {lat!r}")


@dataclass(frozen=True, slots=True)
class DeviceState:
    """What a write needs to know of a device row."""

    device_id: str
    deleted: bool
    online: bool
    org_node_id: int | None


async def device_states(session: AsyncSession, device_ids: Iterable[str], *, lock: bool = False
                        ) -> dict[str, DeviceState]:
    """The rows of these devices (deleted ones included), by id; ``lock``: FOR UPDATE on PostgreSQL."""
    out: dict[str, DeviceState] = {}
    conn = await session.connection()
    for chunk in chunks(sorted(set(device_ids))):
        stmt = (select(DEVICES.c.device_id, DEVICES.c.deleted_at, DEVICES.c.online, DEVICES.c.org_node_id)
                .where(DEVICES.c.device_id.in_(chunk)).order_by(DEVICES.c.device_id))
        if lock and conn.dialect.name == "postgresql":
            stmt = stmt.with_for_update()
        for dev_id, deleted_at, online, node in (await conn.execute(stmt)).all():
            out[dev_id] = DeviceState(dev_id, deleted_at is not None, bool(online), node)
    return out


async def org_node_ids(session: AsyncSession, node_ids: Iterable[int]) -> set[int]:
    """Those of ``node_ids`` that exist."""
    ids = sorted(set(node_ids))
    if not ids:
        return set()
    return set((await session.scalars(select(ORG_NODES.c.id).where(ORG_NODES.c.id.in_(ids)))).all())


async def create_devices(session: AsyncSession, rows: Sequence[Mapping[str, Any]], realm: str) -> None:
    """Add devices (pre-registered: offline).  Each row has ``device_id``, ``name``, ``password`` (plain text,
    or None: the platform's default password) and any of :data:`DEVICE_SETTINGS`.  The ids must not be
    devices that exist; a deleted device of that id is revived with these settings (what it reported before
    is cleared, its channels lose their operator values and stay removed until its next catalog)."""
    if not rows:
        return
    now = utcnow()
    states = await device_states(session, [r["device_id"] for r in rows], lock=True)
    live = sorted(d for d, st in states.items() if not st.deleted)
    if live:
        raise ValueError(f"devices exist: {', '.join(live[:5])}")
    conn = await session.connection()
    new, revived = [], []
    for row in rows:
        _check_location(row)
        values = {name: row.get(name) for name in DEVICE_SETTINGS}
        values["transport"] = values["transport"] or "udp"
        values["stream_form"] = values["stream_form"] or "none"
        values.update(name=row["name"], user_name=row["name"], online=False, deleted_at=None, updated_at=now,
                      created_at=now, **_password_values(row["device_id"], realm, row.get("password")))
        if row["device_id"] in states:
            revived.append({**dict.fromkeys(_REPORTED), **values, "name": row["name"], "b_id": row["device_id"]})
        else:
            new.append({**values, "device_id": row["device_id"], "keepalive_interval": 60})
    if new:
        for chunk in chunks(new):
            await conn.execute(DEVICES.insert(), list(chunk))
    if revived:
        keys = [k for k in revived[0] if k != "b_id"]
        stmt = update(DEVICES).where(DEVICES.c.device_id == bindparam("b_id")).values(
            {k: bindparam(f"v_{k}") for k in keys})
        await conn.execute(stmt, [{"b_id": r["b_id"], **{f"v_{k}": r[k] for k in keys}} for r in revived])
        for chunk in chunks([r["b_id"] for r in revived]):
            await conn.execute(
                update(CHANNELS).where(CHANNELS.c.device_id.in_(chunk))
                .values(user_name=None, user_address=None, user_longitude=None, user_latitude=None,
                        user_org_node=False, updated_at=now))


async def update_device(session: AsyncSession, device_id: str, changes: Mapping[str, Any], realm: str) -> bool:
    """Apply an operator's ``changes`` (keys present are set; None clears) to a device that is not deleted:
    ``name`` (None: the device's own name comes back with its next DeviceInfo), ``password`` (plain text; None:
    the platform's default), any of :data:`DEVICE_SETTINGS`.  Returns False when there is no such device."""
    states = await device_states(session, [device_id], lock=True)
    if device_id not in states or states[device_id].deleted:
        return False
    _check_location(changes)
    values: dict[str, Any] = {name: changes[name] for name in DEVICE_SETTINGS if name in changes}
    if "transport" in values and values["transport"] is None:
        values["transport"] = "udp"
    if "stream_form" in values and values["stream_form"] is None:
        values["stream_form"] = "none"
    if "name" in changes:
        values["user_name"] = changes["name"]
        if changes["name"] is not None:
            values["name"] = changes["name"]
    if "password" in changes:
        values.update(_password_values(device_id, realm, changes["password"]))
    if values:
        values["updated_at"] = utcnow()
        conn = await session.connection()
        await conn.execute(update(DEVICES).where(DEVICES.c.device_id == device_id).values(values))
    return True


async def delete_device(session: AsyncSession, device_id: str, *, at: datetime | None = None) -> bool:
    """Delete a device (it need not be offline: the caller decides).  The row stays with ``deleted_at``
    (its presence history and audit entries keep naming it), its SIP password is cleared, its channels are
    removed; when it was online, its offline transition and its online channels' are recorded (reason
    ``deleted``).  Returns False when there is no such device (or it is deleted already)."""
    states = await device_states(session, [device_id], lock=True)
    state = states.get(device_id)
    if state is None or state.deleted:
        return False
    at = at or utcnow()
    conn = await session.connection()
    presence: list[dict[str, Any]] = []
    if state.online:
        presence.append({"subject": "device", "device_id": device_id, "channel_id": None, "online": False,
                         "at": at, "reason": "deleted", "detail": None})
        online_channels = (await conn.execute(
            select(CHANNELS.c.channel_id).where(CHANNELS.c.device_id == device_id, CHANNELS.c.online.is_(True))
            .order_by(CHANNELS.c.channel_id))).scalars().all()
        presence.extend({"subject": "channel", "device_id": device_id, "channel_id": ch, "online": False,
                         "at": at, "reason": "deleted", "detail": None} for ch in online_channels)
    values: dict[str, Any] = {"deleted_at": at, "online": False, "register_expires_at": None, "updated_at": at,
                              **_password_values(device_id, "", None)}
    if state.online:
        values["offline_reason"] = "deleted"
    await conn.execute(update(DEVICES).where(DEVICES.c.device_id == device_id).values(values))
    await conn.execute(update(CHANNELS).where(CHANNELS.c.device_id == device_id, CHANNELS.c.removed.is_(False))
                       .values(removed=True, removed_at=at, online=False, updated_at=at))
    await conn.execute(update(CHANNELS).where(CHANNELS.c.device_id == device_id, CHANNELS.c.online.is_(True))
                       .values(online=False, updated_at=at))
    if presence:
        await conn.execute(PRESENCE.insert(), presence)
    return True


#: Channel fields an operator sets, and the override column that keeps each from later catalogs.
_CHANNEL_EDITS = {"name": "user_name", "address": "user_address", "longitude": "user_longitude",
                  "latitude": "user_latitude"}


async def update_channel(session: AsyncSession, device_id: str, channel_id: str, changes: Mapping[str, Any]
                         ) -> bool:
    """Apply an operator's ``changes`` to a (not removed) channel: ``name``, ``address``, ``longitude``,
    ``latitude`` (a value is kept from later catalogs; None gives the field back to the catalog, which sets it
    with its next report) and ``org_node_id`` (a node is kept from later catalogs; None: the channel follows
    its device's node, and a catalog's ParentID may link it again).  Returns False when there is no such
    channel."""
    conn = await session.connection()
    where = (CHANNELS.c.device_id == device_id, CHANNELS.c.channel_id == channel_id, CHANNELS.c.removed.is_(False))
    if await conn.scalar(select(CHANNELS.c.id).where(*where)) is None:
        return False
    _check_location(changes)
    values: dict[str, Any] = {}
    for name, override in _CHANNEL_EDITS.items():
        if name in changes:
            values[override] = changes[name]
            if changes[name] is not None:
                values[name] = changes[name]
    if "org_node_id" in changes:
        values["org_node_id"] = changes["org_node_id"]
        values["user_org_node"] = changes["org_node_id"] is not None
    if values:
        values["updated_at"] = utcnow()
        await conn.execute(update(CHANNELS).where(*where).values(values))
    return True


async def export_devices(session: AsyncSession, scope: Any = None) -> list[dict[str, Any]]:
    """Every (not deleted) device in ``scope`` (None: all) by id, as a dict of its columns (no password) with
    ``org_node_name``, ``channels_total`` and ``channels_online``."""
    cols = [c for c in DEVICES.c if not c.name.startswith("password_")]
    stmt = (select(*cols, ORG_NODES.c.name.label("org_node_name"))
            .outerjoin(ORG_NODES, ORG_NODES.c.id == DEVICES.c.org_node_id)
            .where(DEVICES.c.deleted_at.is_(None)).order_by(DEVICES.c.device_id))
    if scope is not None and not scope.all:
        stmt = stmt.where(device_scope_clause(scope))
    rows = [dict(r) for r in (await session.execute(stmt)).mappings()]
    online_int = case((CHANNELS.c.online.is_(True), 1), else_=0)
    counts = {
        dev_id: (int(total), int(online))
        for dev_id, total, online in (await session.execute(
            select(CHANNELS.c.device_id, func.count(), func.coalesce(func.sum(online_int), 0))
            .where(CHANNELS.c.removed.is_(False)).group_by(CHANNELS.c.device_id))).all()
    }
    for row in rows:
        row["channels_total"], row["channels_online"] = counts.get(row["device_id"], (0, 0))
    return rows
