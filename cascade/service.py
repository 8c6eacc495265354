"""The cascade domain: upper platforms (configuration, share, status) and serving what they ask.

Configuration lives in the cascade tables; the enabled platforms, with their passwords opened in memory
only, are handed to signalling as one set (``UpperLinks.set_upper_platforms``) at start and after every
change.  Requests of the uppers arrive as SIP events (:meth:`CascadeService.on_event`); each is mapped
through that platform's share (an unknown or unshared id is refused and audited), answered through
``UpperLinks``, and audited with the platform's id and server id (never its password).  Video goes up
through ``UpwardMedia.open_upward`` with the platform as the viewer (the session tag names it; the visible
watermark too when the platform's ``watermark`` is ``visible``).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gbcore.db import begin_write, utcnow
from gbcore.ids import ChannelRef
from gbcore.log import get_logger
from gbcore.secretbox import SecretBox, SecretBoxError
from gbcore.timeutil import gb_time, to_device_time
from media_relay.stream import MediaError
from media_relay.upward import UpwardTarget
from media_relay.viewers import Viewer
from sip_server.gb import events as sev
from sip_server.gb.upper import CatalogEntry, UpperAnswer, UpperConfig

from .catalog import SYSTEM_MANUFACTURER, SYSTEM_MODEL, build_entries, channel_entry, with_event
from .errors import CascadeError
from .models import PlatformRow, ShareChannelRow, ShareNodeRow
from .ports import ControlPort, PlatformOperator, RecordsPort, UpperLinks, UpwardLegLike, UpwardMedia
from .registry_reads import (
    OrgInfo,
    ShareScope,
    all_org_nodes,
    channel_facts,
    channel_refs_by_id,
    existing_org_nodes,
    existing_refs,
    org_descendants,
)
from .share import SharedChannel, ShareMap, parse_channel_specs, resolve_share, upward_conflicts
from .validation import FIELDS, check_platform

__all__ = ["CascadeError", "CascadeService"]

log = get_logger("gbops.cascade")

Audit = Callable[[str, str, dict[str, Any], dict[str, Any] | None], Awaitable[Any]]

_KINDS = {"Play": "live", "Playback": "playback", "Download": "download"}
_CONTROL_COMMANDS = ("TeleBoot", "PTZCmd", "RecordCmd", "GuardCmd", "AlarmCmd", "IFameCmd", "IFrameCmd",
                     "DragZoomIn", "DragZoomOut", "HomePosition", "DeviceUpgrade", "FormatSDCard", "TargetTrack")
_MEDIA_488 = {"bad_transport", "bad_window", "window_too_long", "bad_source", "bad_answer", "bad_speed",
              "bad_scale"}


@dataclass(frozen=True, slots=True)
class _Platform:
    """What the service keeps in memory of a stored platform (no password)."""

    id: int
    name: str
    server_id: str
    local_id: str
    transport: str
    ptz_level: int
    watermark: str
    enabled: bool

    def detail(self) -> dict[str, Any]:
        return {"platform_id": self.id, "server_id": self.server_id}


@dataclass
class _Call:
    """A stream to an upper: its SIP call and our leg."""

    call_id: str
    platform_id: int
    upward_id: str
    ref: ChannelRef
    kind: str
    leg: UpwardLegLike
    transport: str
    window: tuple[datetime, datetime] | None = None
    opened_at: float = field(default_factory=time.monotonic)
    opened_wall: datetime = field(default_factory=utcnow)


def _iso(value: datetime | float | None) -> str | None:
    if value is None:
        return None
    return to_device_time(value).isoformat()


def _public(row: PlatformRow) -> dict[str, Any]:
    out = {k: getattr(row, k) for k in FIELDS if k != "password"}
    out.update(id=row.id, has_password=bool(row.password_sealed), created_at=_iso(row.created_at),
               updated_at=_iso(row.updated_at))
    return out


def _info(row: PlatformRow) -> _Platform:
    return _Platform(row.id, row.name, row.server_id, row.local_id, row.transport, row.ptz_level, row.watermark,
                     row.enabled)


def _not_found(platform_id: int) -> CascadeError:
    return CascadeError("not_found", f"上级平台 {platform_id} 不存在 / upper platform {platform_id} not found", 404,
                        platform_id=platform_id)


def _control_command(message: Any) -> str:
    get = getattr(message, "get", None)
    find = getattr(message, "find", None)
    for name in _CONTROL_COMMANDS:
        if (get is not None and get(name) is not None) or (find is not None and find(name) is not None):
            return name
    fields = getattr(message, "fields", {}) or {}
    others = [k for k in fields if k.lower() not in ("cmdtype", "sn", "deviceid")]
    return others[0][:32] if others else "unknown"


class CascadeService:
    """Upper platforms: CRUD, share, status, catalog, and the requests they send."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], sip: UpperLinks, media: UpwardMedia, *,
                 audit: Audit, settings: Any, system_id: str, system_name: str, key_path: str | Path,
                 control: ControlPort | None = None, records: RecordsPort | None = None) -> None:
        self._sessions = sessions
        self._sip = sip
        self._media = media
        self._audit_fn = audit
        self._settings = settings
        self._system_id = system_id
        self._system_name = system_name
        self._key_path = Path(key_path)
        self._box: SecretBox | None = None
        self.control = control  # set by the assembly when device control is wired
        self.records = records
        self._platforms: dict[int, _Platform] = {}
        self._configs: dict[int, UpperConfig] = {}
        self._broken: dict[int, str] = {}  # platform id -> why it cannot be pushed (its password does not open)
        self._states: dict[int, str] = {}
        self._subscribed: set[int] = set()
        self._calls: dict[str, _Call] = {}
        self._pending: dict[str, tuple[int, str]] = {}  # INVITEs being set up: call id -> (platform, upward id)
        self._cancelled: set[str] = set()
        self._ssrc_seq = itertools.count(1)
        self._invite_locks: dict[tuple[int, str], list[Any]] = {}  # (platform, upward id) -> [lock, users]
        self._tasks: set[asyncio.Task[Any]] = set()
        self._maps: dict[int, tuple[float, ShareMap]] = {}  # platform -> (when, share) for alarms and positions
        # called after a platform or its share changed here (issue 17: the other SIP nodes reload, see start)
        self.on_change: Callable[[], None] | None = None

    # ------------------------------------------------------------------ life
    @property
    def box(self) -> SecretBox:
        if self._box is None:
            self._box = SecretBox.from_file(self._key_path)
        return self._box

    async def start(self) -> None:
        """Load the platforms and hand the enabled ones to signalling."""
        async with self._sessions() as session:
            rows = (await session.scalars(select(PlatformRow).order_by(PlatformRow.id))).all()
        self._platforms = {row.id: _info(row) for row in rows}
        self._configs.clear()
        for row in rows:
            self._remember_config(row)
        self._push()

    async def close(self) -> None:
        for call_id in list(self._calls):
            await self._end_call(call_id, "shutting down", by="platform")
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _remember_config(self, row: PlatformRow) -> None:
        self._configs.pop(row.id, None)
        self._broken.pop(row.id, None)
        if not row.enabled:
            return
        try:
            password = self.box.open_text(row.password_sealed, self._aad(row.id))
        except SecretBoxError as exc:
            self._broken[row.id] = exc.code
            log.error("cascade.password_unreadable", platform_id=row.id, server_id=row.server_id, error=exc.code)
            return
        self._configs[row.id] = UpperConfig(
            platform_id=row.id, server_id=row.server_id, server_domain=row.server_domain, host=row.host,
            port=row.port, transport=row.transport, local_id=row.local_id, username=row.username,
            password=password, expires=row.expires, keepalive_s=row.keepalive_s, charset=row.charset,
            gb_version=row.gb_version, name=row.name)

    def _changed(self) -> None:
        if self.on_change is not None:
            try:
                self.on_change()
            except Exception:
                log.exception("cascade.change_notice_failed")

    def _push(self) -> None:
        self._maps.clear()
        self._sip.set_upper_platforms([self._configs[pid] for pid in sorted(self._configs)])

    @staticmethod
    def _aad(platform_id: int) -> bytes:
        return f"gbops.cascade.password:{platform_id}".encode()

    def _seal(self, password: str, platform_id: int) -> bytes:
        try:
            return self.box.seal(password, self._aad(platform_id))
        except SecretBoxError as exc:
            raise CascadeError("key_file", f"无法加密密码 / cannot seal the password: {exc}", 500) from None

    async def _audit(self, action: str, target: str, detail: dict[str, Any], actor: dict[str, Any] | None) -> None:
        try:
            await self._audit_fn(action, target, detail, actor)
        except Exception:  # noqa: BLE001 - evidence failing must not take the request down with it
            log.exception("cascade.audit_failed", action=action, target=target)

    def _spawn(self, coro: Awaitable[Any], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ platforms
    async def _row(self, session: AsyncSession, platform_id: int) -> PlatformRow:
        row = await session.get(PlatformRow, platform_id) if isinstance(platform_id, int) else None
        if row is None:
            raise _not_found(platform_id)
        return row

    async def list_platforms(self) -> list[dict[str, Any]]:
        async with self._sessions() as session:
            rows = (await session.scalars(select(PlatformRow).order_by(PlatformRow.id))).all()
        return [_public(row) for row in rows]

    async def get_platform(self, platform_id: int) -> dict[str, Any]:
        async with self._sessions() as session:
            return _public(await self._row(session, platform_id))

    async def create_platform(self, data: dict[str, Any], *, actor: dict[str, Any]) -> dict[str, Any]:
        clean, password, warnings = check_platform(data, default_local_id=self._system_id)
        assert password is not None
        now = utcnow()
        async with self._sessions() as session:
            await begin_write(session)
            if await session.scalar(select(PlatformRow.id).where(PlatformRow.server_id == clean["server_id"])):
                raise self._duplicate(clean["server_id"])
            row = PlatformRow(**clean, password_sealed=b"", created_at=now, updated_at=now)
            session.add(row)
            try:
                await session.flush()
                row.password_sealed = self._seal(password, row.id)
                await session.commit()
            except IntegrityError:
                raise self._duplicate(clean["server_id"]) from None
        self._platforms[row.id] = _info(row)
        self._remember_config(row)
        self._push()
        self._changed()
        await self._audit("cascade.platform_add", f"cascade:{row.id}",
                          {"platform_id": row.id, "name": row.name, "server_id": row.server_id, "host": row.host,
                           "port": row.port, "transport": row.transport, "enabled": row.enabled}, actor)
        return {**_public(row), "warnings": warnings}

    @staticmethod
    def _duplicate(server_id: str) -> CascadeError:
        return CascadeError("duplicate_server_id", f"已有上级平台使用编码 {server_id} / an upper platform with id "
                            f"{server_id} already exists", 409, server_id=server_id)

    async def update_platform(self, platform_id: int, changes: dict[str, Any], *,
                              actor: dict[str, Any]) -> dict[str, Any]:
        async with self._sessions() as session:
            await begin_write(session)
            row = await self._row(session, platform_id)
            current = _public(row)
            clean, password, warnings = check_platform(changes, current=current)
            changed = {k: [current[k], v] for k, v in clean.items() if current.get(k) != v}
            if "server_id" in changed and await session.scalar(
                    select(PlatformRow.id).where(PlatformRow.server_id == clean["server_id"],
                                                 PlatformRow.id != platform_id)):
                raise self._duplicate(clean["server_id"])
            for k, (_old, new) in changed.items():
                setattr(row, k, new)
            if password is not None:
                row.password_sealed = self._seal(password, row.id)
            if changed or password is not None:
                row.updated_at = utcnow()
            try:
                await session.commit()
            except IntegrityError:
                raise self._duplicate(clean["server_id"]) from None
        self._platforms[row.id] = _info(row)
        if not row.enabled:
            await self._end_platform_calls(row.id, "platform disabled")
            self._subscribed.discard(row.id)
        self._remember_config(row)
        self._push()
        self._changed()
        if changed or password is not None:
            await self._audit("cascade.platform_edit", f"cascade:{row.id}",
                              {"platform_id": row.id, "server_id": row.server_id, "fields": changed,
                               "password_changed": password is not None}, actor)
        return {**_public(row), "warnings": warnings}

    async def delete_platform(self, platform_id: int, *, actor: dict[str, Any]) -> None:
        async with self._sessions() as session:
            await begin_write(session)
            row = await self._row(session, platform_id)
            name, server_id = row.name, row.server_id
            await session.execute(delete(ShareChannelRow).where(ShareChannelRow.platform_id == platform_id))
            await session.execute(delete(ShareNodeRow).where(ShareNodeRow.platform_id == platform_id))
            await session.delete(row)
            await session.commit()
        await self._end_platform_calls(platform_id, "platform deleted")
        self._platforms.pop(platform_id, None)
        self._configs.pop(platform_id, None)
        self._broken.pop(platform_id, None)
        self._states.pop(platform_id, None)
        self._subscribed.discard(platform_id)
        self._push()
        self._changed()
        await self._audit("cascade.platform_delete", f"cascade:{platform_id}",
                          {"platform_id": platform_id, "name": name, "server_id": server_id}, actor)

    async def status(self, platform_id: int) -> dict[str, Any]:
        async with self._sessions() as session:
            row = await self._row(session, platform_id)
        st: dict[str, Any] = {}
        if not row.enabled:
            state = "disabled"
        elif row.id in self._broken:
            state = "offline"
            st["last_error"] = "密码无法解密（密钥文件不符）/ the stored password cannot be opened (wrong key file)"
        else:
            st = dict(self._sip.upper_status(row.id) or {})
            state = st.get("state") or "registering"
        return {
            "state": state,
            "node_id": st.get("node_id"),  # other_node: the cluster node registered to this upper
            "last_error": st.get("last_error"),
            "last_keepalive": _iso(st.get("last_keepalive")),
            "registered_until": _iso(st.get("registered_until")),
            "streams": [self._call_info(c) for c in self._calls.values() if c.platform_id == platform_id],
        }

    @staticmethod
    def _call_info(call: _Call) -> dict[str, Any]:
        stats = call.leg.stats()
        return {
            "call_id": call.call_id, "upward_id": call.upward_id, "device_id": call.ref.device_id,
            "channel_id": call.ref.channel_id, "kind": call.kind, "transport": call.transport,
            "start": _iso(call.window[0]) if call.window else None, "end": _iso(call.window[1]) if call.window else None,
            "opened_at": _iso(call.opened_wall), "started_at": _iso(stats.get("started_at")),
            "state": stats.get("state"), "packets": stats.get("packets", 0), "bytes": stats.get("bytes", 0),
        }

    # ------------------------------------------------------------------ share
    async def _share(self, session: AsyncSession, platform_id: int, local_id: str, *,
                     include_removed: bool = False) -> ShareMap:
        roots = (await session.scalars(select(ShareNodeRow.org_node_id)
                                       .where(ShareNodeRow.platform_id == platform_id))).all()
        rows = (await session.scalars(select(ShareChannelRow).where(ShareChannelRow.platform_id == platform_id))).all()
        explicit = {ChannelRef(r.device_id, r.channel_id): SharedChannel(ChannelRef(r.device_id, r.channel_id),
                                                                         r.upward_id, r.name, r.civil_code, True)
                    for r in rows}
        nodes = await org_descendants(session, roots)
        facts = await channel_facts(session, ShareScope(nodes, frozenset(explicit)), include_removed=include_removed)
        return resolve_share(platform_id, nodes, explicit, facts, reserved={local_id})

    async def share_map(self, platform_id: int) -> tuple[ShareMap, dict[int, OrgInfo]]:
        """The platform's share resolved now, and the organisation tree (for the catalog)."""
        platform = self._platforms.get(platform_id)
        if platform is None:
            raise _not_found(platform_id)
        async with self._sessions() as session:
            share = await self._share(session, platform_id, platform.local_id)
            nodes = await all_org_nodes(session)
        return share, nodes

    async def get_share(self, platform_id: int) -> dict[str, Any]:
        async with self._sessions() as session:
            row = await self._row(session, platform_id)
            roots = sorted((await session.scalars(select(ShareNodeRow.org_node_id)
                                                  .where(ShareNodeRow.platform_id == platform_id))).all())
            rows = (await session.scalars(select(ShareChannelRow).where(ShareChannelRow.platform_id == platform_id)
                                          .order_by(ShareChannelRow.device_id, ShareChannelRow.channel_id))).all()
            share = await self._share(session, platform_id, row.local_id)
        return {
            "org_nodes": roots,
            "channels": [{"device_id": r.device_id, "channel_id": r.channel_id, "upward_id": r.upward_id,
                          "name": r.name, "civil_code": r.civil_code} for r in rows],
            "resolved": len(share.by_ref),
            "conflicts": [{"device_id": ref.device_id, "channel_id": ref.channel_id, "upward_id": uid}
                          for ref, uid in share.conflicts],
        }

    async def put_share(self, platform_id: int, org_nodes: list[int], channels: list[Any], *,
                        actor: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(org_nodes, list) or any(isinstance(n, bool) or not isinstance(n, int) for n in org_nodes):
            raise CascadeError("invalid_share", "org_nodes 应为节点编号列表 / org_nodes must be a list of node ids", 422)
        roots = sorted(set(org_nodes))
        specs = parse_channel_specs(channels)
        async with self._sessions() as session:
            row = await self._row(session, platform_id)
            local_id = row.local_id
            missing = sorted(set(roots) - await existing_org_nodes(session, roots))
            if missing:
                raise CascadeError("org_node_not_found", f"组织节点不存在：{missing} / organisation nodes not found: "
                                   f"{missing}", 404, org_nodes=missing)
            by_id = await channel_refs_by_id(session, [s.channel_id for s in specs if s.device_id is None])
            named = {ChannelRef(s.device_id, s.channel_id) for s in specs if s.device_id is not None}
            present = await existing_refs(session, named)
            explicit: dict[ChannelRef, SharedChannel] = {}
            for spec in specs:
                if spec.device_id is None:
                    refs = by_id.get(spec.channel_id, [])
                    if len(refs) > 1:
                        devices = [r.device_id for r in refs]
                        raise CascadeError("channel_ambiguous", f"通道编号不唯一，请指定设备：{spec.channel_id} 属于 "
                                           f"{', '.join(devices)} / channel id is not unique: give device_id "
                                           f"({spec.channel_id} is on {', '.join(devices)})", 409,
                                           channel_id=spec.channel_id, devices=devices)
                    ref = refs[0] if refs else None
                else:
                    ref = ChannelRef(spec.device_id, spec.channel_id)
                    ref = ref if ref in present else None
                if ref is None:
                    who = spec.channel_id if spec.device_id is None else f"{spec.device_id}/{spec.channel_id}"
                    raise CascadeError("channel_not_found", f"通道不存在：{who} / channel not found: {who}", 404,
                                       device_id=spec.device_id, channel_id=spec.channel_id)
                if ref in explicit:
                    raise CascadeError("duplicate_channel", f"通道重复：{ref.key} / channel listed twice: {ref.key}",
                                       422, device_id=ref.device_id, channel_id=ref.channel_id)
                explicit[ref] = SharedChannel(ref, spec.upward_id or ref.channel_id, spec.name, spec.civil_code, True)
            nodes = await org_descendants(session, roots)
            facts = await channel_facts(session, ShareScope(nodes, frozenset(explicit)))
            conflicts = upward_conflicts(explicit.values(), [f.ref for f in facts], reserved={local_id})
            if conflicts:
                listed = [{"upward_id": uid, "channels": [r.as_dict() for r in refs]}
                          for uid, refs in sorted(conflicts.items())]
                names = "; ".join(f"{c['upward_id']}: " + ", ".join(f"{r['device_id']}/{r['channel_id']}"
                                                                    for r in c["channels"]) for c in listed)
                raise CascadeError("upward_id_conflict", f"上级编码冲突，请为这些通道指定 upward_id：{names} / upward ids "
                                   f"collide, give these channels an upward_id: {names}", 409, conflicts=listed)
            before = await self._share(session, platform_id, local_id)
            await begin_write(session)
            await session.execute(delete(ShareChannelRow).where(ShareChannelRow.platform_id == platform_id))
            await session.execute(delete(ShareNodeRow).where(ShareNodeRow.platform_id == platform_id))
            session.add_all([ShareNodeRow(platform_id=platform_id, org_node_id=n) for n in roots])
            session.add_all([ShareChannelRow(platform_id=platform_id, device_id=s.ref.device_id,
                                             channel_id=s.ref.channel_id, upward_id=s.upward_id, name=s.name,
                                             civil_code=s.civil_code) for s in explicit.values()])
            await session.commit()
            self._maps.pop(platform_id, None)
            self._changed()
            after = await self._share(session, platform_id, local_id)
            tree = await all_org_nodes(session)
        await self._audit("cascade.share", f"cascade:{platform_id}",
                          {"platform_id": platform_id, "server_id": row.server_id, "org_nodes": roots,
                           "channels": [{**s.ref.as_dict(), "upward_id": s.upward_id} for s in explicit.values()],
                           "before_count": len(before.by_ref), "after_count": len(after.by_ref)}, actor)
        await self._share_changed(platform_id, before, after, tree)
        return await self.get_share(platform_id)

    async def _share_changed(self, platform_id: int, before: ShareMap, after: ShareMap,
                             tree: dict[int, OrgInfo]) -> None:
        """End the streams the platform may no longer have; tell it what came and went."""
        for call in [c for c in self._calls.values() if c.platform_id == platform_id]:
            if after.upward_id(call.ref) != call.upward_id:
                await self._end_call(call.call_id, "channel no longer shared", by="platform")
        platform = self._platforms.get(platform_id)
        if platform is None or not platform.enabled:
            return
        changes = [CatalogEntry(device_id=s.upward_id, name=s.name or s.ref.channel_id, kind="channel", event="DEL")
                   for ref, s in sorted(before.by_ref.items()) if after.by_ref.get(ref) != s]
        changes += [with_event(channel_entry(after.facts[ref], after, tree, platform.local_id), "ADD")
                    for ref, s in sorted(after.by_ref.items()) if before.by_ref.get(ref) != s]
        if changes:
            self._sip.notify_catalog(platform_id, changes)

    async def catalog_preview(self, platform_id: int) -> list[dict[str, Any]]:
        async with self._sessions() as session:
            await self._row(session, platform_id)
        return [_entry_dict(e) for e in await self._entries(platform_id)]

    async def _entries(self, platform_id: int) -> list[CatalogEntry]:
        platform = self._platforms[platform_id]
        share, tree = await self.share_map(platform_id)
        return build_entries(share, tree, local_id=platform.local_id, system_name=self._system_name)

    # ------------------------------------------------------------------ events from signalling
    def on_event(self, event: Any) -> None:
        """Take a SIP event (on the loop); the work runs as a task so signalling never waits on it."""
        if isinstance(event, _EVENTS):
            self._spawn(self.handle_event(event), f"cascade-{type(event).__name__}")

    async def handle_event(self, event: Any) -> None:
        handler = _HANDLERS.get(type(event))
        if handler is None:
            return
        try:
            await handler(self, event)
        except Exception:  # noqa: BLE001 - one bad request must not stop the others
            log.exception("cascade.event_failed", event=type(event).__name__,
                          platform_id=getattr(event, "platform_id", None))

    def _platform_of(self, platform_id: int) -> _Platform | None:
        platform = self._platforms.get(platform_id)
        return platform if platform is not None and platform.enabled else None

    async def _refused(self, platform: _Platform, method: str, target: str, status: int, reason: str) -> None:
        log.info("cascade.refused", platform_id=platform.id, server_id=platform.server_id, method=method,
                 target=target, status=status, reason=reason)
        await self._audit("cascade.refused", f"cascade:{platform.id}",
                          {**platform.detail(), "method": method, "target": target, "status": status,
                           "reason": reason}, None)

    async def _on_state(self, ev: sev.UpperStateChanged) -> None:
        platform = self._platforms.get(ev.platform_id)
        if platform is None or self._states.get(ev.platform_id) == ev.state:
            return
        self._states[ev.platform_id] = ev.state
        if ev.state != "registered":
            self._subscribed.discard(ev.platform_id)
        state, reason = ev.state, ev.reason
        if state == "disabled" and ev.platform_id in self._configs:
            # still enabled: in a cluster its registration moved to another SIP node (gbops.cascade_links)
            state, reason = "other_node", reason or "由集群中另一节点注册 / registered to by another node of the cluster"
        await self._audit("cascade.register", f"cascade:{platform.id}",
                          {**platform.detail(), "state": state, "reason": reason}, None)

    async def _on_catalog_query(self, ev: sev.UpperCatalogQuery) -> None:
        platform = self._platform_of(ev.platform_id)
        if platform is None:
            return
        if ev.device_id != platform.local_id:
            await self._refused(platform, "Catalog", ev.device_id, 404, "not our system id")
            return
        entries = await self._entries(platform.id)
        self._sip.answer_catalog(platform.id, ev.sn, entries)
        await self._audit("cascade.catalog", f"cascade:{platform.id}",
                          {**platform.detail(), "sn": ev.sn, "items": len(entries), "result": "answering"}, None)

    async def _on_catalog_sent(self, ev: sev.UpperCatalogSent) -> None:
        if ev.error is not None:
            log.warning("cascade.catalog_incomplete", platform_id=ev.platform_id, sn=ev.sn, sent=ev.sent,
                        total=ev.total, error=ev.error)

    async def _on_subscribed(self, ev: sev.UpperCatalogSubscribed) -> None:
        platform = self._platform_of(ev.platform_id)
        if platform is None:
            return
        if ev.expires <= 0:
            self._subscribed.discard(platform.id)
            return
        if platform.id in self._subscribed:
            return  # a refresh
        self._subscribed.add(platform.id)
        # The subscriber assumes everything is online: tell it what is not (GB/T 28181-2022 N.1).
        offline = [with_event(e, "OFF") for e in await self._entries(platform.id)
                   if e.kind == "channel" and e.status == "OFF"]
        if offline:
            self._sip.notify_catalog(platform.id, offline)

    async def _on_device_query(self, ev: sev.UpperDeviceQuery) -> None:
        platform = self._platform_of(ev.platform_id)
        if platform is None:
            return
        share, _tree = await self.share_map(platform.id)
        shared = share.by_upward.get(ev.device_id)
        ours = ev.device_id == platform.local_id
        if ev.cmd_type not in ("DeviceInfo", "DeviceStatus", "RecordInfo") or (not ours and shared is None) or (
                ours and ev.cmd_type == "RecordInfo"):
            await self._refused(platform, ev.cmd_type, ev.device_id, 404, "not shared")
            return
        result = "ok"
        facts = share.facts.get(shared.ref) if shared is not None else None
        name = self._system_name if ours else (shared.name or (facts.name if facts else None) or ev.device_id)
        if ev.cmd_type == "DeviceInfo":
            fields = {"DeviceName": name, "Result": "OK"}
            if ours:
                fields.update(Manufacturer=SYSTEM_MANUFACTURER, Model=SYSTEM_MODEL, Channel=str(len(share.by_ref)))
            else:
                fields.update(Manufacturer=(facts.manufacturer if facts else None) or "",
                              Model=(facts.model if facts else None) or "")
            self._sip.answer_device_info(platform.id, ev.sn, ev.device_id, fields)
        elif ev.cmd_type == "DeviceStatus":
            online = ours or bool(facts and facts.online and facts.device_online)
            self._sip.answer_device_status(platform.id, ev.sn, ev.device_id, {
                "Result": "OK", "Online": "ONLINE" if online else "OFFLINE", "Status": "OK",
                "DeviceTime": gb_time(time.time(), millis=False)})
        else:
            assert shared is not None
            items: list[dict[str, str]] = []
            if self.records is None:
                result = "no records source"
            else:
                try:
                    items = [{**item, "DeviceID": shared.upward_id, "Name": name}
                             for item in await self.records.record_items(shared.ref, ev.message)]
                except Exception as exc:  # noqa: BLE001 - the device's trouble: answer what we have
                    result = f"error: {type(exc).__name__}"
                    log.warning("cascade.record_info_failed", platform_id=platform.id, channel=shared.ref.key,
                                error=str(exc)[:200])
            self._sip.answer_record_info(platform.id, ev.sn, ev.device_id, name, items)
        target = shared.ref.key if shared is not None else f"cascade:{platform.id}"
        await self._audit("cascade.query", target, {**platform.detail(), "cmd_type": ev.cmd_type,
                                                    "device_id": ev.device_id, "result": result}, None)

    async def _on_control(self, ev: sev.UpperControl) -> None:
        platform = self._platform_of(ev.platform_id)
        if platform is None:
            return
        command = _control_command(ev.message)
        if command == "TeleBoot":
            self._sip.answer_control(platform.id, ev.sn, ev.target_id, False)
            await self._refused(platform, "DeviceControl/TeleBoot", ev.target_id, 403, "teleboot not allowed")
            return
        share, _tree = await self.share_map(platform.id)
        shared = share.by_upward.get(ev.target_id)
        if shared is None:
            self._sip.answer_control(platform.id, ev.sn, ev.target_id, False)
            await self._refused(platform, f"DeviceControl/{command}", ev.target_id, 404, "not shared")
            return
        ok = False
        result = "refused"
        if self.control is None:
            result = "control not available"
        else:
            operator = PlatformOperator(platform.id, platform.server_id, platform.name, platform.ptz_level)
            try:
                ok = bool(await self.control.upper_control(operator, shared.ref, ev.message))
                result = "ok" if ok else "refused"
            except Exception as exc:  # noqa: BLE001 - a lock held by an operator, an offline device, ...
                result = getattr(exc, "code", None) or type(exc).__name__
        self._sip.answer_control(platform.id, ev.sn, ev.target_id, ok)
        await self._audit("cascade.control", shared.ref.key,
                          {**platform.detail(), "upward_id": shared.upward_id, **shared.ref.as_dict(),
                           "command": command, "level": platform.ptz_level, "result": result}, None)

    # ------------------------------------------------------------------ calls
    def _new_ssrc(self, kind: str, local_id: str) -> str:
        """Our SSRC toward an upper (GB/T 28181 Annex G): 0 live / 1 history, digits 4-8 of our id, then a
        4-digit stream number not in use."""
        prefix = ("0" if kind == "live" else "1") + local_id[3:8]
        used = {c.leg.ssrc for c in self._calls.values()}
        for _ in range(10_000):
            ssrc = f"{prefix}{next(self._ssrc_seq) % 10_000:04d}"
            if int(ssrc) not in used:
                return ssrc
        raise CascadeError("no_ssrc", "没有可用的 SSRC / no SSRC left", 503)

    async def _on_invite(self, ev: sev.UpperInvite) -> None:
        platform = self._platform_of(ev.platform_id)
        if platform is None:
            self._sip.answer_upper_invite(ev.call_id, 403, reason="platform disabled")
            return
        # Taken before the first await, so INVITEs for one source are set up in the order they arrived (the
        # later one wins) and a CANCEL / BYE is remembered from the start.
        key = (platform.id, ev.target_id)
        held = self._invite_locks.setdefault(key, [asyncio.Lock(), 0])
        held[1] += 1
        self._pending[ev.call_id] = key
        try:
            async with held[0]:  # one INVITE per source and platform at a time
                await self._invite_locked(ev, platform)
        finally:
            self._pending.pop(ev.call_id, None)
            self._cancelled.discard(ev.call_id)
            held[1] -= 1
            if held[1] == 0:
                self._invite_locks.pop(key, None)

    async def _invite_locked(self, ev: sev.UpperInvite, platform: _Platform) -> None:
        offer = ev.offer
        share, _tree = await self.share_map(platform.id)
        shared = share.by_upward.get(ev.target_id)
        if shared is None:
            self._sip.answer_upper_invite(ev.call_id, 404, reason="not shared")
            await self._refused(platform, "INVITE", ev.target_id, 404, "not shared")
            return
        kind = _KINDS.get(offer.session)
        window: tuple[datetime, datetime] | None = None
        detail = {**platform.detail(), "upward_id": shared.upward_id, **shared.ref.as_dict(), "kind": kind,
                  "transport": offer.transport, "call_id": ev.call_id}
        problem = None
        if kind is None:
            problem = f"unknown session {offer.session!r}"
        elif offer.transport not in ("udp", "tcp"):
            problem = f"unknown transport {offer.transport!r}"
        elif kind != "live":
            if not offer.start or not offer.end or offer.end <= offer.start:
                problem = "no time window"
            else:
                window = (datetime.fromtimestamp(offer.start, UTC), datetime.fromtimestamp(offer.end, UTC))
                detail.update(start=_iso(window[0]), end=_iso(window[1]))
        if problem is not None:
            self._sip.answer_upper_invite(ev.call_id, 488, reason=problem)
            await self._audit("cascade.invite", shared.ref.key, {**detail, "result": problem, "status": 488}, None)
            return
        assert kind is not None
        await self._set_up_call(ev, platform, shared, kind, window, detail)

    async def _set_up_call(self, ev: sev.UpperInvite, platform: _Platform, shared: SharedChannel, kind: str,
                           window: tuple[datetime, datetime] | None, detail: dict[str, Any]) -> None:
        offer = ev.offer
        call_id = ev.call_id
        if call_id in self._cancelled:  # cancelled while an earlier INVITE for the source was being set up
            await self._audit("cascade.invite", shared.ref.key, {**detail, "result": "cancelled", "status": 487},
                              None)
            return
        # A second INVITE from the same upper for the same source releases the old leg (Annex K).
        for old in [c for c in self._calls.values() if c.platform_id == platform.id and c.upward_id == shared.upward_id]:
            await self._end_call(old.call_id, "replaced by a new request", by="replaced")
        setup = None if offer.transport == "udp" else ("passive" if offer.setup == "active" else "active")
        viewer = Viewer(user_id=0, username=f"platform:{platform.server_id}", display_name=platform.name)
        try:
            ssrc = offer.ssrc if (getattr(self._settings, "cascade_echo_ssrc", False) and offer.ssrc
                                  and offer.ssrc.isdigit() and int(offer.ssrc) <= 0xFFFFFFFF) else None
            ssrc = (ssrc or self._new_ssrc(kind, platform.local_id)).zfill(10)
            target = UpwardTarget(ip=offer.ip, port=offer.port, transport=offer.transport, setup=setup,
                                  ssrc=int(ssrc))
            open_leg = functools.partial(
                self._media.open_upward, shared.ref, viewer, target, kind=kind, window=window,
                visible_watermark=platform.watermark == "visible",
                on_end=lambda reason: self._leg_ended(call_id, reason))
            # the upper named its sub-stream (a=streamnumber:1 or a vendor form): a device with none set sends
            # its main stream instead (the upper gets video, the audit entry says which stream)
            if kind == "live" and offer.stream_number:
                try:
                    leg = await open_leg(stream="sub")
                    detail["stream"] = "sub"
                except MediaError as exc:
                    if exc.code != "no_sub_stream":
                        raise
                    leg = await open_leg()
                    detail["stream"] = "main"
            else:
                leg = await open_leg()
        except Exception as exc:  # noqa: BLE001 - every failure gets an answer and an audit entry
            if isinstance(exc, MediaError):
                code, status = exc.code, 488 if exc.code in _MEDIA_488 else 480
            elif isinstance(exc, CascadeError):
                code, status = exc.code, 503
            elif isinstance(exc, ValueError):  # the target the upper offered cannot be served
                code, status = "bad_target", 488
            else:
                log.exception("cascade.open_upward_failed", platform_id=platform.id, channel=shared.ref.key)
                code, status = "internal_error", 500
            if call_id not in self._cancelled:
                self._sip.answer_upper_invite(call_id, status, reason=str(exc)[:120])
            await self._audit("cascade.invite", shared.ref.key, {**detail, "result": code, "status": status}, None)
            return
        if call_id in self._cancelled or self._platform_of(platform.id) is None:
            await leg.close("cancelled")
            await self._audit("cascade.invite", shared.ref.key, {**detail, "result": "cancelled", "status": 487},
                              None)
            return
        self._calls[call_id] = _Call(call_id, platform.id, shared.upward_id, shared.ref, kind, leg, offer.transport,
                                     window)
        self._sip.answer_upper_invite(call_id, 200, UpperAnswer(ip=leg.local_ip, port=leg.local_port, ssrc=ssrc,
                                                                transport=offer.transport, setup=setup))
        await self._audit("cascade.invite", shared.ref.key,
                          {**detail, "ssrc": ssrc, "setup": setup, "result": "ok", "status": 200}, None)

    async def _on_ack(self, ev: sev.UpperAck) -> None:
        call = self._calls.get(ev.call_id)
        if call is not None and call.platform_id == ev.platform_id:
            call.leg.start()

    async def _on_bye(self, ev: sev.UpperBye) -> None:
        if ev.call_id in self._pending:
            self._cancelled.add(ev.call_id)
            return
        call = self._calls.get(ev.call_id)
        if call is not None and call.platform_id == ev.platform_id:
            await self._end_call(ev.call_id, ev.reason, by="upper", send_bye=False)

    async def _on_info(self, ev: sev.UpperInfo) -> None:
        """MANSRTSP (pause, resume, speed, seek) on an upper's playback call goes to the device call under
        its leg; a live call or a platform-storage source has none (logged)."""
        call = self._calls.get(ev.call_id)
        forwarded = (call is not None and call.platform_id == ev.platform_id
                     and self._media.upward_info(call.leg.id, ev.body))
        if not forwarded:
            log.info("cascade.info_not_forwarded", platform_id=ev.platform_id, call_id=ev.call_id[:16],
                     size=len(ev.body))

    def _leg_ended(self, call_id: str, reason: str) -> None:
        """The leg ended by itself (upstream gone, TCP peer gone): BYE up and record it. At the end of a
        history file the upper gets MediaStatus 121 first and hangs up itself (BYE from us after a grace)."""
        call = self._calls.get(call_id)
        if call is None:
            return
        if getattr(call.leg, "file_ended", False) and self._sip.upper_media_status(call_id, "121"):
            self._spawn(self._bye_after_file_end(call_id, reason), "cascade-file-end")
            return
        self._calls.pop(call_id, None)
        self._sip.bye_upper(call_id, reason)
        self._spawn(self._audit_bye(call, reason, "media"), "cascade-bye-audit")

    async def _bye_after_file_end(self, call_id: str, reason: str, grace: float = 5.0) -> None:
        await asyncio.sleep(grace)
        call = self._calls.pop(call_id, None)
        if call is not None:  # the upper did not hang up after MediaStatus 121
            self._sip.bye_upper(call_id, reason)
            await self._audit_bye(call, reason, "file_end")

    async def _end_call(self, call_id: str, reason: str, *, by: str, send_bye: bool = True) -> None:
        call = self._calls.pop(call_id, None)
        if call is None:
            return
        try:
            await call.leg.close(reason)
        finally:
            if send_bye:
                self._sip.bye_upper(call_id, reason)
            await self._audit_bye(call, reason, by)

    async def _end_platform_calls(self, platform_id: int, reason: str) -> None:
        for call_id, (pid, _uid) in list(self._pending.items()):
            if pid == platform_id:
                self._cancelled.add(call_id)
        for call in [c for c in self._calls.values() if c.platform_id == platform_id]:
            await self._end_call(call.call_id, reason, by="platform")

    async def _audit_bye(self, call: _Call, reason: str, by: str) -> None:
        platform = self._platforms.get(call.platform_id)
        stats = call.leg.stats()
        detail = {"platform_id": call.platform_id, "server_id": platform.server_id if platform else None,
                  "call_id": call.call_id, "upward_id": call.upward_id, **call.ref.as_dict(), "kind": call.kind,
                  "by": by, "reason": reason, "duration_s": round(time.monotonic() - call.opened_at, 3),
                  "bytes": int(stats.get("bytes") or 0), "packets": int(stats.get("packets") or 0)}
        await self._audit("cascade.bye", call.ref.key, detail, None)

    def streams(self) -> list[dict[str, Any]]:
        """Every stream being sent up (for the console and tests)."""
        return [{"platform_id": c.platform_id, **self._call_info(c)} for c in self._calls.values()]

    # ------------------------------------------------------------------ alarms
    _MAP_TTL = 10.0  # s: alarms and positions map ids from a share at most this old (a share change clears it)

    async def _mapping(self, platform_id: int) -> ShareMap:
        """The platform's share for mapping ids of frequent events (positions every few seconds from many
        devices must not resolve the whole share each time)."""
        now = time.monotonic()
        cached = self._maps.get(platform_id)
        if cached is not None and now - cached[0] < self._MAP_TTL:
            return cached[1]
        share, _tree = await self.share_map(platform_id)
        self._maps[platform_id] = (now, share)
        return share

    async def forward_alarm(self, channel: ChannelRef, alarm: Any) -> list[int]:
        """A device's alarm on ``channel`` goes to every registered upper sharing that channel, named by the
        id that upper knows (GB/T 28181 9.4: alarms reach the upper without a subscription too); the
        platforms it went to."""
        sent: list[int] = []
        for platform in [p for p in self._platforms.values() if p.enabled]:
            share = await self._mapping(platform.id)
            shared = share.by_ref.get(ChannelRef(*channel))
            if shared is not None and self._sip.upper_alarm(platform.id, shared.upward_id, alarm):
                sent.append(platform.id)
        if sent:
            log.info("cascade.alarm_forwarded", channel=ChannelRef(*channel).key, platforms=sent,
                     priority=getattr(alarm, "alarm_priority", None))
        return sent

    async def forward_position(self, channel: ChannelRef, position: Any) -> list[int]:
        """A device's MobilePosition on ``channel`` to every upper sharing it that subscribed to positions."""
        sent: list[int] = []
        for platform in [p for p in self._platforms.values() if p.enabled]:
            share = await self._mapping(platform.id)
            shared = share.by_ref.get(ChannelRef(*channel))
            if shared is not None and self._sip.upper_position(platform.id, shared.upward_id, position):
                sent.append(platform.id)
        return sent

    # ------------------------------------------------------------------ registry changes
    @property
    def active(self) -> bool:
        """Whether any upper platform is enabled (else device events need no cascade work at all)."""
        return any(p.enabled for p in self._platforms.values())

    async def on_device_presence(self, device_id: str, online: bool) -> None:
        """A device went offline (its shared channels OFF) or came back (ON) for every platform sharing them.
        Call it once the registry has applied the change."""
        event = "ON" if online else "OFF"
        refs: set[ChannelRef] = set()
        for platform in [p for p in self._platforms.values() if p.enabled]:
            share = await self._mapping(platform.id)
            refs.update(r for r in share.by_ref if r.device_id == device_id)
        await self.on_registry_change([(r, event) for r in sorted(refs)])

    async def on_registry_change(self, changes: list[tuple[ChannelRef, str]]) -> None:
        """Catalog changes in our registry (``ON`` / ``OFF`` / ``ADD`` / ``DEL`` / ``UPDATE``), told to every
        platform the channel is shared with (signalling batches them, and drops them for a platform that has
        no subscription unless the setting pushes them anyway)."""
        changes = [(ChannelRef(*ref), str(event).upper()) for ref, event in changes]
        if not changes:
            return
        platforms = [p for p in self._platforms.values() if p.enabled]
        if not platforms:
            return
        async with self._sessions() as session:
            tree = await all_org_nodes(session)
            for platform in platforms:
                share = await self._share(session, platform.id, platform.local_id)
                gone: ShareMap | None = None
                out: list[CatalogEntry] = []
                for ref, event in changes:
                    shared = share.by_ref.get(ref)
                    if shared is None and event == "DEL":
                        if gone is None:
                            gone = await self._share(session, platform.id, platform.local_id, include_removed=True)
                        shared = gone.by_ref.get(ref)
                        if shared is not None:
                            out.append(CatalogEntry(device_id=shared.upward_id, name=shared.name or ref.channel_id,
                                                    kind="channel", status="OFF", event="DEL"))
                        continue
                    if shared is None:
                        taken = next((uid for r, uid in share.conflicts if r == ref), None)
                        if taken is not None:
                            log.warning("cascade.upward_id_taken", platform_id=platform.id, channel=ref.key,
                                        upward_id=taken)
                        continue
                    entry = channel_entry(share.facts[ref], share, tree, platform.local_id)
                    if event in ("ON", "OFF"):
                        entry = replace(entry, status=event)
                    out.append(with_event(entry, event))
                if out:
                    self._sip.notify_catalog(platform.id, out)


def _entry_dict(entry: CatalogEntry) -> dict[str, Any]:
    return {k: v for k, v in asdict(entry).items() if k != "event"}


_HANDLERS: dict[type, Callable[[CascadeService, Any], Awaitable[None]]] = {
    sev.UpperStateChanged: CascadeService._on_state,
    sev.UpperCatalogQuery: CascadeService._on_catalog_query,
    sev.UpperCatalogSubscribed: CascadeService._on_subscribed,
    sev.UpperCatalogSent: CascadeService._on_catalog_sent,
    sev.UpperDeviceQuery: CascadeService._on_device_query,
    sev.UpperInvite: CascadeService._on_invite,
    sev.UpperAck: CascadeService._on_ack,
    sev.UpperBye: CascadeService._on_bye,
    sev.UpperInfo: CascadeService._on_info,
    sev.UpperControl: CascadeService._on_control,
}
_EVENTS = tuple(_HANDLERS)

