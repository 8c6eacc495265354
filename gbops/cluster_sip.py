"""Several SIP nodes in one cluster (issue 17): each device's registration lives on one of them.

A device registers at whichever SIP node its packets reach (a UDP load balancer, DNS, or the address it was
given) and from then on only that node hears it: its NAT pinhole knows that node's address, its keepalives go
there, and every request to it must leave from there.  This module keeps the SIP nodes of one cluster from
stepping on each other, and lets a portal on any of them reach any device:

* **Homes.** The node a device registered at is its *home*, ``device:<id>`` in Redis (:class:`Home`: the
  node's id and its SIP address; written by :func:`gbops.cluster_media.serve_signalling`).
* **Start.** A SIP node restores the presence of the devices that are its own: no home recorded (claimed
  with a compare-and-set, so two nodes starting together do not both take a device), home on this node's
  SIP address (this node before a restart: a restart keeps its devices, with no offline transition), or home on
  a node that is no longer alive.  Every device's credentials are loaded everywhere (it may register at any node).
* **Moves.** When a device registers at another node, that node publishes it on :data:`SIP_HOMES`; the node
  that held it forgets it without an offline transition (:meth:`sip_server.service.SipService.release`).
  Every ``reconcile`` seconds each node also compares what it holds with the homes and forgets the devices
  whose home is another live node (a missed message costs at most one reconcile period, far less than a
  keepalive window).
* **Orphans.** Every ``adopt_every`` reconcile rounds a node takes over, by compare-and-set, the devices that
  are online in the store but whose home node has been gone for ``adopt_grace`` seconds (a node restarting on
  its address is back well within it and keeps its devices); their keepalive window starts again at the
  takeover, so a device that keeps alive at the adopting node (a load balancer that moved its flow) stays
  online, and one that nobody hears goes offline once, judged by one node.
* **Commands.** :class:`ClusterSip` is what a portal, device control and the cascade use as "the SIP service"
  on a clustered SIP node: a device held here is asked here; another device's request goes, as ``sip.call``,
  to its home node, and typed failures come back as the same exceptions (:class:`DeviceNotReachable`,
  :class:`QueryError`, ``ValueError``).  A device password set on one node is reloaded by every node
  (:data:`SIP_CREDENTIALS`: only the device id crosses Redis; the digest comes from the database).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from cluster.bus import BusError, CommandBus, RemoteError
from gbcore.log import get_logger
from gbcore.periodic import PeriodicTask
from gbops.cluster_media import DeviceHomes, Home, _id, _text
from media_relay.signalling import MANSRTSP_TYPE, DeviceWentOffline, SessionEnded
from sip_server.gb import events as sip_events
from sip_server.gb.manscdp import DeviceStatus, RecordItem
from sip_server.gb.records import RecordQuery
from sip_server.service import DeviceNotReachable, QueryError

__all__ = ["SIP_CALL", "SIP_CREDENTIALS", "SIP_HOMES", "ClusterSip", "RoutedSignalling", "SipCluster"]

log = get_logger("gbops.cluster_sip")

#: A device registered at a SIP node (pub/sub topic): the node that held it before forgets it.
SIP_HOMES = "sip.homes"
#: A device's password changed (pub/sub topic): every SIP node reloads its digest from the database.
SIP_CREDENTIALS = "sip.credentials"
#: The request/reply method a SIP node answers for the devices it holds.
SIP_CALL = "sip.call"

_OPS = ("catalog_sync", "catalog_progress", "device_status", "record_info", "device_control", "preset_query")


class SipCluster:
    """This SIP node among the cluster's SIP nodes: restore, moves, orphans and ``sip.call`` (module docstring).

    ``sip`` is this node's :class:`sip_server.service.SipService`, ``registry`` the device registry (its
    ``snapshot``), ``directory`` the cluster's node directory, ``homes`` the device homes, ``address`` this
    node's SIP address as devices know it (``host:port``)."""

    def __init__(self, bus: CommandBus, directory: Any, homes: DeviceHomes, sip: Any, registry: Any, *,
                 address: str, reconcile: float = 15.0, adopt_every: int = 4, adopt_grace: float = 0.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.bus = bus
        self.directory = directory
        self.homes = homes
        self.sip = sip
        self.registry = registry
        self.node_id: str = bus.node_id
        self.address = address
        self.adopt_every = max(1, adopt_every)
        # an orphan is taken only once its home has been gone this long: a node restarting on its address
        # (out of the directory between its stop and its next heartbeat) keeps its devices
        self.adopt_grace = adopt_grace
        self.clock = clock
        self._orphaned: dict[str, float] = {}  # device id -> when its home was first seen gone
        self.released = 0  # devices forgotten because they registered elsewhere
        self.adopted = 0  # devices taken over from a node that is gone
        self._rounds = 0
        self._tasks: set[asyncio.Task] = set()
        self._task = PeriodicTask("sip-homes", self.reconcile, interval=reconcile, logger=log,
                                  failure_event="cluster_sip.reconcile_failed")
        bus.register(SIP_CALL, self._serve)
        bus.subscribe(SIP_HOMES, self._on_home)
        bus.subscribe(SIP_CREDENTIALS, self._on_credentials)
        sip.add_listener(self._on_sip_event)

    @property
    def home(self) -> Home:
        return Home(self.node_id, self.address)

    # ------------------------------------------------------------------ start
    async def restore(self) -> set[str]:
        """Load every device's credentials and restore the presence of this node's own (module docstring);
        call before the SIP service starts.  Returns the devices restored here."""
        snapshots = await self.registry.snapshot()
        online = [s.device_id for s in snapshots if s.online]
        mine = await self._claim(online)
        self.sip.restore(snapshots, presence_of=mine)
        log.info("cluster_sip.restored", devices=len(snapshots), online=len(online), held=len(mine),
                 address=self.address)
        return mine

    async def _alive(self) -> set[str]:
        return {n.node_id for n in await self.directory.nodes() if "sip" in n.roles}

    async def _claim(self, device_ids: list[str]) -> set[str]:
        """The devices of ``device_ids`` this node takes: no home, a home on this address or this node, or a
        home whose node is gone; each taken with a compare-and-set of its home."""
        if not device_ids:
            return set()
        homes = await self.homes.get_many(device_ids)
        alive = await self._alive()
        mine: set[str] = set()
        for device_id in device_ids:
            home = homes.get(device_id)
            if home is not None and home.node_id == self.node_id:
                mine.add(device_id)
                continue
            if home is not None and home.address != self.address and home.node_id in alive:
                continue  # another live node's
            if await self.homes.claim(device_id, home, self.home):
                mine.add(device_id)
        return mine

    def start(self) -> None:
        self._task.start()

    async def close(self) -> None:
        await self._task.stop()
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # ------------------------------------------------------------------ moves and orphans
    async def reconcile(self) -> None:
        """Forget the devices whose home is another live node; every ``adopt_every`` rounds, adopt orphans."""
        self._rounds += 1
        held = self.sip.held_devices()
        if held:
            homes = await self.homes.get_many(held)
            alive = await self._alive()
            for device_id in held:
                home = homes.get(device_id)
                if (home is not None and home.node_id != self.node_id and home.node_id in alive
                        and home.address != self.address):
                    self._release(device_id, home.node_id)
        if self._rounds % self.adopt_every == 0:
            await self.adopt_orphans()

    async def adopt_orphans(self) -> list[str]:
        """Take over the devices online in the store that no live SIP node holds (their node is gone)."""
        held = set(self.sip.held_devices())
        snapshots = [s for s in await self.registry.snapshot() if s.online and s.device_id not in held]
        if not snapshots:
            return []
        homes = await self.homes.get_many([s.device_id for s in snapshots])
        alive = await self._alive()
        now, seen, orphaned = self.clock(), self._orphaned, {}
        taken: set[str] = set()
        for snap in snapshots:
            home = homes.get(snap.device_id)
            if home is not None and home.node_id in alive:
                continue
            since = orphaned[snap.device_id] = seen.get(snap.device_id, now)
            if now - since < self.adopt_grace:
                continue  # its node may be restarting
            if await self.homes.claim(snap.device_id, home, self.home):
                taken.add(snap.device_id)
                del orphaned[snap.device_id]
        self._orphaned = orphaned
        if taken:
            self.sip.restore([s for s in snapshots if s.device_id in taken], presence_of=taken)
            self.adopted += len(taken)
            log.warning("cluster_sip.adopted", devices=len(taken))
        return sorted(taken)

    def _release(self, device_id: str, node_id: str) -> None:
        if self.sip.release(device_id):
            self.released += 1
            log.info("cluster_sip.device_moved", device_id=device_id, to=node_id)

    def _on_sip_event(self, event: object) -> None:
        if isinstance(event, sip_events.DeviceOnline):  # a registration here: the node that held it forgets it
            self._spawn(self._publish(SIP_HOMES, {"device_id": event.device_id, "node_id": self.node_id}))

    def _on_home(self, payload: dict) -> None:
        try:
            device_id, node_id = _id(payload, "device_id"), _id(payload, "node_id")
        except RemoteError:
            return
        if node_id != self.node_id:
            self._release(device_id, node_id)

    # ------------------------------------------------------------------ credentials
    def _on_credentials(self, payload: dict) -> None:
        try:
            device_id = _id(payload, "device_id")
        except RemoteError:
            return
        self._spawn(self._reload_credentials(device_id))

    async def _reload_credentials(self, device_id: str) -> None:
        snapshots = await self.registry.snapshot([device_id])
        if snapshots:
            self.sip.restore(snapshots, presence_of=())  # the digest only
        else:  # deleted (issue 18): unknown here too
            self.sip.forget_device(device_id)

    # ------------------------------------------------------------------ sip.call
    async def _serve(self, payload: dict) -> dict:
        op = _text(payload, "op", limit=32)
        if op not in _OPS:
            raise RemoteError("bad_request", "未知的信令操作 / unknown signalling operation")
        device_id = _id(payload, "device_id")
        try:
            return await _answer(self.sip, op, device_id, payload)
        except DeviceNotReachable:
            raise RemoteError("device_not_reachable", f"设备不在本节点在线 / the device is not online here: "
                              f"{device_id}") from None
        except QueryError as exc:
            raise RemoteError("query_error", str(exc)[:500]) from None
        except (ValueError, TypeError) as exc:
            raise RemoteError("bad_value", str(exc)[:500]) from None

    # ------------------------------------------------------------------ plumbing
    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _publish(self, topic: str, payload: dict) -> None:
        try:
            await self.bus.publish(topic, payload)
        except Exception:
            log.exception("cluster_sip.publish_failed", topic=topic)


def _opt_id(payload: dict, key: str) -> str | None:
    return _id(payload, key) if payload.get(key) is not None else None


def _opt_number(payload: dict, key: str) -> float | None:
    value = payload.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 600:
        raise RemoteError("bad_request", f"字段 {key} 无效 / invalid {key}")
    return float(value)


async def _answer(sip: Any, op: str, device_id: str, payload: dict) -> dict:
    """One ``sip.call`` answered by this node's SIP service (the device must be held here)."""
    if not sip.is_online(device_id):
        raise DeviceNotReachable(device_id)
    if op == "catalog_sync":
        return {"progress": sip.start_catalog_sync(device_id)}
    if op == "catalog_progress":
        return {"progress": sip.catalog_progress(device_id)}
    if op == "device_status":
        st = await sip.device_status(device_id, _opt_id(payload, "channel_id"))
        return {"status": dataclasses.asdict(st)}
    if op == "record_info":
        start, end = _when(payload, "start"), _when(payload, "end")
        found = await sip.record_info(device_id, _id(payload, "channel_id"), start, end,
                                      type=_text(payload, "type", "all", limit=16) or "all",
                                      timeout=_opt_number(payload, "timeout"))
        records = {f.name: getattr(found, f.name) for f in dataclasses.fields(found) if not f.name.startswith("_")}
        records["items"] = [dataclasses.asdict(item) for item in found.items]
        return {"records": records}
    if op == "device_control":
        build = payload.get("build") or {}
        if not isinstance(build, dict) or not all(isinstance(k, str) for k in build):
            raise RemoteError("bad_request", "字段 build 无效 / invalid build")
        value = payload.get("value")
        if value is not None and not isinstance(value, (str, int, float, bool, list, dict)):
            raise RemoteError("bad_request", "字段 value 无效 / invalid value")
        sn, ok = await sip.device_control(device_id, _opt_id(payload, "target_id"),
                                          _text(payload, "element", limit=64) or "", value,
                                          wait=payload.get("wait") is True, timeout=_opt_number(payload, "timeout"),
                                          **build)
        return {"result": [sn, ok]}
    presets = await sip.preset_query(device_id, _opt_id(payload, "channel_id"), timeout=_opt_number(payload, "timeout"))
    return {"presets": [list(p) for p in presets]}


def _when(payload: dict, key: str) -> datetime:
    text = _text(payload, key, limit=40)
    try:
        value = datetime.fromisoformat(text or "")
    except ValueError:
        raise RemoteError("bad_request", f"字段 {key} 无效 / invalid {key}") from None
    if value.tzinfo is None:
        raise RemoteError("bad_request", f"字段 {key} 须带时区 / {key} needs a time zone")
    return value


class ClusterSip:
    """"The SIP service" for a portal, device control and the cascade on a clustered SIP node: the device's
    home node answers (module docstring).  Everything not routed here is this node's own service's."""

    def __init__(self, sip: Any, bus: CommandBus, directory: Any, homes: DeviceHomes, *,
                 timeout: float = 10.0) -> None:
        self.local = sip
        self.bus = bus
        self.directory = directory
        self.homes = homes
        self.timeout = timeout
        self._remote_online: dict[str, bool] = {}
        self._tasks: set[asyncio.Task] = set()

    def __getattr__(self, name: str) -> Any:  # gb, add_listener, metrics, config...: this node's
        return getattr(self.local, name)

    # ------------------------------------------------------------------ where a device lives
    async def _home(self, device_id: str) -> str | None:
        """The live SIP node holding ``device_id`` when it is not this one (None: here, or nowhere)."""
        if self.local.is_online(device_id):
            return None
        node = await self.homes.get(device_id)
        if node is None or node == self.bus.node_id:
            return None
        live = {n.node_id for n in await self.directory.nodes() if "sip" in n.roles}
        return node if node in live else None

    def is_online(self, device_id: str) -> bool:
        """Held here, or online at its home when last asked (:meth:`online` asks)."""
        return self.local.is_online(device_id) or self._remote_online.get(device_id, False)

    async def online(self, device_id: str) -> bool:
        """Whether the device is online at its home node, asked now."""
        node = await self._home(device_id)
        if node is None:
            return self.local.is_online(device_id)
        try:
            reply = await self.bus.call(node, "sip.device", {"device_id": device_id}, timeout=self.timeout)
        except BusError as exc:
            log.info("cluster_sip.device_unknown", device_id=device_id, node=node, reason=str(exc))
            self._remote_online.pop(device_id, None)
            return False
        online = reply.get("online") is True
        self._remote_online[device_id] = online
        return online

    async def _call(self, device_id: str, op: str, answer_within: float, **args: Any) -> dict | None:
        """Ask the home node; None when the device is held here (the caller asks the local service)."""
        node = await self._home(device_id)
        if node is None:
            return None
        try:
            return await self.bus.call(node, SIP_CALL, {"op": op, "device_id": device_id, **args},
                                       timeout=answer_within + 5.0)
        except RemoteError as exc:
            code = exc.code or ""
            if code == "device_not_reachable":
                raise DeviceNotReachable(device_id) from None
            if code == "bad_value":
                raise ValueError(str(exc)) from None
            raise QueryError(str(exc)) from None
        except BusError as exc:  # the home node went away or did not answer in time
            if exc.code == "node_unavailable":
                raise DeviceNotReachable(device_id) from None
            raise QueryError(f"信令节点 {node} 未应答 / SIP node {node} did not answer: {exc}") from None

    # ------------------------------------------------------------------ what the portal and control call
    async def start_catalog_sync(self, device_id: str) -> dict:
        reply = await self._call(device_id, "catalog_sync", self.timeout)
        return self.local.start_catalog_sync(device_id) if reply is None else reply["progress"]

    async def catalog_progress(self, device_id: str) -> dict | None:
        reply = await self._call(device_id, "catalog_progress", self.timeout)
        return self.local.catalog_progress(device_id) if reply is None else reply.get("progress")

    async def device_status(self, device_id: str, channel_id: str | None = None) -> Any:
        reply = await self._call(device_id, "device_status", self.local.config.query_timeout, channel_id=channel_id)
        if reply is None:
            return await self.local.device_status(device_id, channel_id)
        fields = dict(reply["status"])
        fields["alarms"] = [tuple(a) for a in fields.get("alarms") or []]
        return DeviceStatus(**fields)

    async def record_info(self, device_id: str, channel_id: str, start: datetime, end: datetime, *,
                          type: str = "all", timeout: float | None = None) -> RecordQuery:
        reply = await self._call(device_id, "record_info", timeout or self.local.config.record_query_timeout,
                                 channel_id=channel_id, start=start.isoformat(),
                                 end=end.isoformat(), type=type, timeout=timeout)
        if reply is None:
            return await self.local.record_info(device_id, channel_id, start, end, type=type, timeout=timeout)
        fields = dict(reply["records"])
        fields["items"] = [RecordItem(**item) for item in fields.get("items") or []]
        return RecordQuery(**fields)

    async def device_control(self, device_id: str, target_id: str | None, element: str, value: Any, *,
                             wait: bool, timeout: float | None = None, **build: Any) -> tuple[str | None, bool]:
        reply = await self._call(device_id, "device_control", timeout or self.local.config.device_control_timeout,
                                 target_id=target_id, element=element, value=value, wait=wait, timeout=timeout,
                                 build=build)
        if reply is None:
            return await self.local.device_control(device_id, target_id, element, value, wait=wait, timeout=timeout,
                                                   **build)
        sn, ok = reply["result"]
        return sn, bool(ok)

    async def preset_query(self, device_id: str, channel_id: str | None = None,
                           timeout: float | None = None) -> list[tuple[int, str | None]]:
        reply = await self._call(device_id, "preset_query", timeout or self.local.config.preset_query_timeout,
                                 channel_id=channel_id, timeout=timeout)
        if reply is None:
            return await self.local.preset_query(device_id, channel_id, timeout=timeout)
        return [(int(n), name) for n, name in reply["presets"]]

    def set_device_password_ha1(self, device_id: str, ha1: dict[str, str] | None) -> None:
        """Here at once; every other SIP node reloads the digest from the database (:data:`SIP_CREDENTIALS`)."""
        self.local.set_device_password_ha1(device_id, ha1)
        self._announce(device_id)

    def forget_device(self, device_id: str) -> bool:
        """A deleted device: here at once; every other SIP node finds it gone from the database and forgets it."""
        was = self.local.forget_device(device_id)
        self._announce(device_id)
        return was

    def _announce(self, device_id: str) -> None:
        task = asyncio.ensure_future(self.bus.publish(SIP_CREDENTIALS, {"device_id": device_id}))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_log_failure)


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("cluster_sip.publish_failed", error=str(task.exception()))


class RoutedSignalling:
    """The media relay's signalling port on a node with both the ``sip`` and the ``media`` role among several SIP
    nodes: a device held here goes through this node's SIP service (``local``, a
    :class:`gbops.media_signalling.SipSignalling`), any other through its home node (``remote``, a
    :class:`gbops.cluster_media.RemoteSignalling`), so the node's live views, recordings and cascade legs reach
    every device of the cluster.

    The remote side hears the cluster's ``sip.events`` topic, which carries this node's own events too (its
    ``serve_signalling`` publishes them); only the events of calls placed through the remote side, and the
    offline of devices it was asked about, are passed on from there, so nothing arrives twice."""

    def __init__(self, local: Any, remote: Any) -> None:
        self.local = local
        self.remote = remote
        self._listeners: list[Callable[[Any], None]] = []
        self._remote_calls: set[str] = set()
        self._remote_devices: set[str] = set()
        local.subscribe(self._emit)
        remote.subscribe(self._from_remote)

    async def prepare(self, device_id: str) -> None:
        if not self.local.is_online(device_id):
            self._remote_devices.add(device_id)
            await self.remote.refresh(device_id)

    def is_online(self, device_id: str) -> bool:
        return self.local.is_online(device_id) or self.remote.is_online(device_id)

    def route_address(self, device_id: str) -> tuple[str, int] | None:
        if self.local.is_online(device_id):
            return self.local.route_address(device_id)
        return self.remote.route_address(device_id)

    async def invite(self, channel: Any, **kw: Any) -> Any:
        if self.local.is_online(channel.device_id):
            return await self.local.invite(channel, **kw)
        self._remote_devices.add(channel.device_id)
        answer = await self.remote.invite(channel, **kw)
        self._remote_calls.add(answer.call_id)
        return answer

    def bye(self, call_id: str, reason: str) -> None:
        if call_id in self._remote_calls:
            self._remote_calls.discard(call_id)
            self.remote.bye(call_id, reason)
        else:
            self.local.bye(call_id, reason)

    def info(self, call_id: str, body: bytes, content_type: str = MANSRTSP_TYPE) -> bool:
        side = self.remote if call_id in self._remote_calls else self.local
        return side.info(call_id, body, content_type)

    def subscribe(self, listener: Callable[[Any], None]) -> None:
        self._listeners.append(listener)

    def _from_remote(self, event: Any) -> None:
        if isinstance(event, DeviceWentOffline):
            if event.device_id in self._remote_devices and not self.local.is_online(event.device_id):
                self._emit(event)
            return
        call_id = getattr(event, "call_id", None)
        if call_id in self._remote_calls:
            if isinstance(event, SessionEnded):
                self._remote_calls.discard(call_id)
            self._emit(event)

    def _emit(self, event: Any) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("cluster_sip.listener_failed")
