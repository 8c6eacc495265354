"""Each upper platform of the cascade registered to by one SIP node at a time (issue 17).

In a cluster every SIP node runs a :class:`cascade.service.CascadeService` that hands the whole set of enabled
upper platforms to signalling.  :class:`LeasedUpperLinks` stands between the two: per platform it runs a
:class:`cluster.leader.LeasedRole` on the lease ``cascade:<platform_id>`` and passes on to the real links
(``sip_server.service.SipService``) only the platforms whose lease this node holds.  A node that dies stops
renewing; once its leases expire another node takes each platform over and registers to it.  A node that stops
cleanly (:meth:`LeasedUpperLinks.stop`) un-registers first and then releases its leases, so the next node takes
over at once.

For a platform held by another node :meth:`LeasedUpperLinks.upper_status` answers the state ``other_node`` with
that node's id (looked up on each attempt to take the lease).  The catalog changes, alarms and positions of the
devices registered at this node (only this node hears them) for a platform held by another node are forwarded
to the holder over the bus (:meth:`LeasedUpperLinks.serve`, ``cascade.forward``).  The answers to an upper's
requests go to the real links unchanged: the upper sends its requests to the node registered to it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from cascade.ports import UpperLinks
from cluster.keys import check_part
from cluster.leader import LeasedRole
from cluster.lease import Leases
from gbcore.log import get_logger

if TYPE_CHECKING:
    from sip_server.gb.upper import CatalogEntry, UpperAnswer, UpperConfig

__all__ = ["FORWARD", "LEASE_PREFIX", "LeasedUpperLinks", "lease_name"]

#: The bus method a node answers for events of other nodes' devices for the uppers it holds.
FORWARD = "cascade.forward"

log = get_logger("gbops.cascade_links")

LEASE_PREFIX = "cascade:"


def lease_name(platform_id: int) -> str:
    """The lease of upper platform ``platform_id``: ``cascade:<platform_id>``."""
    return check_part(f"{LEASE_PREFIX}{int(platform_id)}")


class _WatchedLeases:
    """The node's leases as one role sees them: every attempt to take the lease also notes who holds it
    (``on_holder(node_id or None)``), so that a synchronous status can name the other node."""

    def __init__(self, leases: Leases, on_holder: Callable[[str | None], None], *, compete: bool = True) -> None:
        self.leases = leases
        self.owner = leases.owner
        self._on_holder = on_holder
        self._compete = compete

    async def acquire(self, name: str, ttl: float) -> bool:
        ok = await self.leases.acquire(name, ttl) if self._compete else False
        if ok:
            self._on_holder(self.owner)
            return True
        try:
            holder = await self.leases.holder(name)
        except asyncio.CancelledError:
            raise
        except Exception:  # the attempt itself answered; who holds it is only for the status
            holder = None
        self._on_holder(holder)
        return False

    async def renew(self, name: str, ttl: float) -> bool:
        return await self.leases.renew(name, ttl)

    async def release(self, name: str) -> bool:
        return await self.leases.release(name)

    async def holder(self, name: str) -> str | None:
        return await self.leases.holder(name)

    async def transfer(self, name: str, new_owner: str, ttl: float) -> bool:
        return await self.leases.transfer(name, new_owner, ttl)


class LeasedUpperLinks:
    """:class:`cascade.ports.UpperLinks` over ``links``, each upper platform only while this node holds its
    lease ``cascade:<platform_id>`` in ``leases`` (``leases.owner`` is this node's id).

    :meth:`set_upper_platforms` records the wanted set: a new platform gets a :class:`LeasedRole` (started at
    once inside a running event loop, else by :meth:`start`), a removed one is un-configured and its lease
    released, a changed one that this node holds is configured again.  The real links always get the
    configs of the held platforms, sorted by id.  :meth:`stop` stops every role: the held platforms are
    un-configured, then their leases released.
    """

    def __init__(self, links: UpperLinks, leases: Leases, *, ttl: float,
                 clock: Callable[[], float] = time.monotonic, compete: bool = True) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be > 0")
        self.links = links
        self.leases = leases
        self.ttl = ttl
        self.clock = clock
        # False: this node never registers upward (a SIP node without the media role cannot send the uppers'
        # streams); it only watches who holds each platform, for the status
        self.compete = compete
        self.bus: Any = None  # set by serve(): events of this node's devices for uppers held elsewhere
        self.forward_timeout = 5.0
        self._wanted: dict[int, UpperConfig] = {}
        self._roles: dict[int, LeasedRole] = {}
        self._held: set[int] = set()
        self._holders: dict[int, str | None] = {}  # platform id -> the lease's holder at the last attempt
        self._releasing: dict[int, asyncio.Task[None]] = {}  # platform id -> its removed role stopping
        self._pushed: list[UpperConfig] = []  # what the real links were last given
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    # ------------------------------------------------------------------ life
    @property
    def held(self) -> set[int]:
        """The platforms this node holds (and the real links register to)."""
        return set(self._held)

    async def start(self) -> None:
        """Start the roles of the platforms configured so far (those set before an event loop ran, or
        after :meth:`stop`)."""
        self._closed = False
        for pid, role in list(self._roles.items()):
            self._launch(pid, role)

    async def stop(self) -> None:
        """Stop every role: each held platform is un-configured (``on_lost``) and then its lease released,
        so another node takes it over at once; the real links are left with no uppers.  The wanted set is
        kept (:meth:`start` takes the roles up again)."""
        self._closed = True
        roles = list(self._roles.values())
        if roles:
            await asyncio.gather(*(role.stop() for role in roles), return_exceptions=True)
        pending = [t for t in self._tasks if not t.done()]
        if pending:  # removed roles still releasing; chained starts find the links closed
            await asyncio.wait(pending)
        self._held.clear()
        try:
            self._push(force=True)
        except Exception:
            log.exception("cascade.links_clear_failed")

    def status(self) -> dict[str, Any]:
        """Diagnostics: this node, the held platforms, and per wanted platform its holder and role."""
        return {
            "node_id": self.leases.owner, "ttl": self.ttl, "held": sorted(self._held),
            "platforms": {pid: {"lease": lease_name(pid), "holder": self._holders.get(pid),
                                "role": self._roles[pid].status() if pid in self._roles else None}
                          for pid in sorted(self._wanted)},
        }

    # ------------------------------------------------------------------ the wanted set
    def set_upper_platforms(self, configs: list[UpperConfig]) -> None:
        """The whole set of enabled upper platforms; only those whose lease this node holds reach the real
        links (see the class docstring)."""
        wanted = {c.platform_id: c for c in configs}
        for pid in [p for p in self._roles if p not in wanted]:
            role = self._roles.pop(pid)
            self._held.discard(pid)
            self._holders.pop(pid, None)
            if role.running or role.held or pid in self._releasing:
                self._retire(pid, role)
        self._wanted = wanted
        for pid in sorted(wanted):
            if pid not in self._roles:
                role = self._new_role(pid)
                self._roles[pid] = role
                self._launch(pid, role)
        self._push()

    def _new_role(self, pid: int) -> LeasedRole:
        role: LeasedRole

        def note_holder(holder: str | None) -> None:
            if self._roles.get(pid) is role:
                self._holders[pid] = holder

        async def on_acquire() -> None:
            if self._roles.get(pid) is not role:
                return  # removed meanwhile: the role is being stopped and releases the lease
            self._held.add(pid)
            self._push()

        async def on_lost() -> None:
            if self._roles.get(pid) is not role:
                return  # removed: already un-configured
            self._held.discard(pid)
            self._holders[pid] = None
            self._push()

        role = LeasedRole(_WatchedLeases(self.leases, note_holder, compete=self.compete), lease_name(pid), ttl=self.ttl,
                          on_acquire=on_acquire, on_lost=on_lost, clock=self.clock)
        return role

    def _launch(self, pid: int, role: LeasedRole) -> None:
        """Start ``role`` now, or once the previous role of the same platform has released the lease (the
        lease is this node's either way: the old release must not take it from the new role)."""
        if self._closed or role.running:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # start() starts it
        pending = self._releasing.get(pid)
        if pending is None or pending.done():
            role.start()
        else:
            self._spawn(self._start_after(pending, pid, role), f"cascade-lease-start:{pid}")

    async def _start_after(self, pending: asyncio.Task[None], pid: int, role: LeasedRole) -> None:
        await asyncio.wait({pending})
        if self._roles.get(pid) is role and not self._closed:
            self._launch(pid, role)

    def _retire(self, pid: int, role: LeasedRole) -> None:
        previous = self._releasing.get(pid)
        task = self._spawn(self._release(pid, role, previous), f"cascade-lease-release:{pid}")
        self._releasing[pid] = task

    async def _release(self, pid: int, role: LeasedRole, previous: asyncio.Task[None] | None) -> None:
        try:
            if previous is not None:
                await asyncio.wait({previous})
            await role.stop()
        finally:
            if self._releasing.get(pid) is asyncio.current_task():
                del self._releasing[pid]

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _push(self, *, force: bool = False) -> None:
        configs = [self._wanted[pid] for pid in sorted(self._held) if pid in self._wanted]
        if configs == self._pushed and not force:
            return
        self.links.set_upper_platforms(configs)
        self._pushed = configs

    # ------------------------------------------------------------------ UpperLinks
    def upper_status(self, platform_id: int) -> dict[str, Any] | None:
        """The real links' status of a held platform; ``other_node`` (``node_id``: the holder at the last
        attempt, None when unknown) for a wanted platform held elsewhere; None for one not wanted."""
        if platform_id not in self._wanted:
            return None
        if platform_id in self._held:
            return self.links.upper_status(platform_id)
        role = self._roles.get(platform_id)
        return {"state": "other_node", "node_id": self._holders.get(platform_id),
                "last_error": role.last_error if role is not None else None,
                "last_keepalive": None, "registered_until": None, "calls": 0}

    def answer_catalog(self, platform_id: int, sn: int, entries: Sequence[CatalogEntry]) -> None:
        self.links.answer_catalog(platform_id, sn, entries)

    def notify_catalog(self, platform_id: int, entries: Sequence[CatalogEntry], *, immediate: bool = False) -> None:
        if (holder := self._elsewhere(platform_id)) is not None:
            self._forward(holder, platform_id, {"op": "notify_catalog", "entries": [asdict(e) for e in entries],
                                                "immediate": bool(immediate)})
            return
        if immediate:
            self.links.notify_catalog(platform_id, entries, immediate=True)  # type: ignore[call-arg]
        else:
            self.links.notify_catalog(platform_id, entries)

    def answer_device_info(self, platform_id: int, sn: int, device_id: str, fields: dict[str, str]) -> None:
        self.links.answer_device_info(platform_id, sn, device_id, fields)

    def answer_device_status(self, platform_id: int, sn: int, device_id: str, fields: dict[str, str]) -> None:
        self.links.answer_device_status(platform_id, sn, device_id, fields)

    def answer_record_info(self, platform_id: int, sn: int, device_id: str, name: str,
                           items: list[dict[str, str]]) -> None:
        self.links.answer_record_info(platform_id, sn, device_id, name, items)

    def answer_control(self, platform_id: int, sn: int, device_id: str, ok: bool) -> None:
        self.links.answer_control(platform_id, sn, device_id, ok)

    def answer_upper_invite(self, call_id: str, status: int, answer: UpperAnswer | None = None,
                            reason: str | None = None) -> None:
        self.links.answer_upper_invite(call_id, status, answer, reason)

    def bye_upper(self, call_id: str, reason: str) -> None:
        self.links.bye_upper(call_id, reason)

    def upper_media_status(self, call_id: str, notify_type: str = "121") -> bool:
        return self.links.upper_media_status(call_id, notify_type)

    def upper_alarm(self, platform_id: int, device_id: str, alarm: Any) -> bool:
        if (holder := self._elsewhere(platform_id)) is not None:
            self._forward(holder, platform_id, {"op": "alarm", "device_id": device_id, "alarm": asdict(alarm)})
            return True
        return self.links.upper_alarm(platform_id, device_id, alarm)

    def upper_position(self, platform_id: int, device_id: str, position: Any) -> bool:
        if (holder := self._elsewhere(platform_id)) is not None:
            self._forward(holder, platform_id, {"op": "position", "device_id": device_id,
                                                "position": asdict(position)})
            return True
        return self.links.upper_position(platform_id, device_id, position)

    # ------------------------------------------------------------------ events of other nodes' devices
    def serve(self, bus: Any) -> None:
        """Forward, over ``bus``, the catalog changes, alarms and positions of this node's devices for an upper
        held by another node (the devices registered here are heard only here), and send those the other
        nodes forward for the uppers held here (:data:`FORWARD`)."""
        self.bus = bus
        bus.register(FORWARD, self._forwarded)

    def _elsewhere(self, platform_id: int) -> str | None:
        """The other node holding ``platform_id`` when its events go there (None: handle them here)."""
        holder = self._holders.get(platform_id)
        if self.bus is None or platform_id in self._held or holder is None or holder == self.leases.owner:
            return None
        return holder

    def _forward(self, holder: str, platform_id: int, payload: dict[str, Any]) -> None:
        self._spawn(self._send(holder, {**payload, "platform_id": int(platform_id)}), f"cascade-forward:{platform_id}")

    async def _send(self, holder: str, payload: dict[str, Any]) -> None:
        try:
            await self.bus.call(holder, FORWARD, payload, timeout=self.forward_timeout)
        except Exception as exc:  # the holder went away: its successor hears the next event
            log.warning("cascade.forward_failed", platform_id=payload.get("platform_id"), node=holder,
                        op=payload.get("op"), error=str(exc)[:200])

    async def _forwarded(self, payload: dict) -> dict:
        from cluster.bus import RemoteError
        from sip_server.gb.manscdp import Alarm, MobilePosition
        from sip_server.gb.upper import CatalogEntry

        pid, op = payload.get("platform_id"), payload.get("op")
        if isinstance(pid, bool) or not isinstance(pid, int) or op not in ("notify_catalog", "alarm", "position"):
            raise RemoteError("bad_request", "转发内容无效 / invalid forwarded event")
        if pid not in self._held:
            return {"sent": False}  # no longer held here: the next holder hears the next event
        device_id = payload.get("device_id")
        try:
            if op == "notify_catalog":
                entries = [CatalogEntry(**e) for e in payload.get("entries") or []]
                if payload.get("immediate") is True:
                    self.links.notify_catalog(pid, entries, immediate=True)  # type: ignore[call-arg]
                else:
                    self.links.notify_catalog(pid, entries)
                return {"sent": True}
            if not isinstance(device_id, str) or not 1 <= len(device_id) <= 64:
                raise RemoteError("bad_request", "设备编码无效 / invalid device id")
            if op == "alarm":
                return {"sent": self.links.upper_alarm(pid, device_id, Alarm(**payload["alarm"]))}
            return {"sent": self.links.upper_position(pid, device_id, MobilePosition(**payload["position"]))}
        except (TypeError, KeyError, ValueError) as exc:
            raise RemoteError("bad_request", f"转发内容无效 / invalid forwarded event: {exc}"[:300]) from None
