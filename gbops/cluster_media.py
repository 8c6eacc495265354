"""Live view across nodes (issue 17): signalling on the SIP node, streams on media nodes, the portal between.

Three kinds of node take part, each through the cluster's command bus (:mod:`cluster.bus`):

* the **SIP node** (:func:`serve_signalling`) answers ``sip.device``, ``sip.invite``, ``sip.bye`` and
  ``sip.info`` with :class:`gbops.media_signalling.SipSignalling` (the single process's adapter, wrapped, not
  repeated) and publishes the call and presence events on the topic :data:`SIP_EVENTS`; it also records,
  under ``device:<id>``, that the device's registration lives on this node (its NAT pinhole knows only this
  node's address, so every INVITE for it must leave from here);
* a **media node** runs an ordinary :class:`media_relay.service.MediaService` whose signalling is a
  :class:`RemoteSignalling` (the media relay's port implemented over the bus) and answers ``media.*``
  commands (:func:`serve_media`): it opens viewers for the portal, holds the channel's stream ownership
  lease ``stream:<device_id>/<channel_id>`` while it has the upstream (so two media nodes never INVITE one
  channel), mints the output URL's single-use token, and serves FLV/WHEP itself
  (:mod:`ops_portal.live.output_app`) on its own ``GBOPS_PUBLIC_URL``;
* the **portal node** uses a :class:`ClusterMedia` as its ``media``: the subset of ``MediaService`` the
  portal routes call, placing a new stream on the channel's owner if it has one, else on the least-loaded
  live media node (:func:`rank_media_nodes`), and forwarding over the bus.

A media node that stops (SIGTERM, ``gbops node drain``) first drains (:meth:`MediaNode.drain`): each channel's
lease goes to another media node (``Leases.transfer``), which adopts the viewer sessions under the same ids
(``media.adopt``: its own upstream first, make before break); the portals hear ``moved`` on
:data:`MEDIA_SESSIONS` and the players switch to the new output URLs (``ClusterMedia.moved_urls``).

Typed failures cross the bus as :class:`cluster.bus.RemoteError` codes (:data:`SIGNALLING_CODES`, the
media relay's :class:`media_relay.stream.MediaError` codes as ``media.<code>``, the watermark's capacity) and
are raised again as the same typed exceptions on the caller's side, so the routes and the stream manager see
what they see in the single process. Everything arriving over the bus is validated before use.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cluster.bus import BusError, CommandBus, NodeUnavailable, RemoteError
from gbcore.ids import ChannelRef
from gbcore.log import get_logger
from gbcore.periodic import PeriodicTask
from media_relay.signalling import (
    MANSRTSP_TYPE,
    DeviceOffline,
    DeviceRefused,
    DeviceWentOffline,
    HistoryRequest,
    InviteAnswer,
    MediaFileEnded,
    SessionEnded,
    SignallingError,
    SignallingEvent,
    SignallingTimeout,
    StreamNotOffered,
)
from media_relay.stream import STREAMS, LiveKey, MediaError
from media_relay.viewers import Viewer

log = get_logger("gbops.cluster_media")

__all__ = [
    "MEDIA_SESSIONS",
    "SIGNALLING_CODES",
    "SIP_EVENTS",
    "ClusterMedia",
    "DeviceHomes",
    "Home",
    "LocalDeviceHomes",
    "MediaNode",
    "RedisDeviceHomes",
    "RemoteSession",
    "RemoteSignalling",
    "SignallingNode",
    "device_homes",
    "from_remote_media",
    "from_remote_signalling",
    "rank_media_nodes",
    "serve_media",
    "serve_signalling",
    "stream_lease",
    "to_remote_media",
    "to_remote_signalling",
]

#: The SIP node's call and presence events (pub/sub topic): every media node listens.
SIP_EVENTS = "sip.events"
#: A media node's viewer sessions ending or attaching (pub/sub topic): the portals listen.
MEDIA_SESSIONS = "media.sessions"

_ID = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")  # device, channel, node, session and call ids over the bus
_BASE_URL = re.compile(r"^https?://[^\s\"'<>\\]{1,300}$")  # a node's public URL, prefix of the output URLs
_MAX_TEXT = 2000


def stream_lease(channel: ChannelRef, stream: str = "main") -> str:
    """The stream ownership lease of ``channel``'s ``stream``: held by the media node that has that upstream
    (a channel's main stream and its sub-stream are upstreams of their own, possibly on different nodes)."""
    base = f"stream:{channel.device_id}/{channel.channel_id}"
    return base if stream == "main" else f"{base}#{stream}"


def _stream_of(payload: dict) -> str:
    stream = payload.get("stream", "main")
    if stream not in STREAMS:
        raise RemoteError("bad_request", "码流无效 / invalid stream: main or sub")
    return stream


def _key_text(key: LiveKey) -> str:
    ref, stream = key
    return ref.key if stream == "main" else f"{ref.key}#{stream}"


# ============================================================================ validation
def _id(payload: dict, key: str) -> str:
    value = payload.get(key)
    if not isinstance(value, str) or not _ID.match(value):
        raise RemoteError("bad_request", f"字段 {key} 无效 / invalid {key}")
    return value


def _text(payload: dict, key: str, default: str | None = None, *, limit: int = _MAX_TEXT) -> str | None:
    value = payload.get(key, default)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise RemoteError("bad_request", f"字段 {key} 无效 / invalid {key}")
    return value


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTENT_TYPE = re.compile(r"^[A-Za-z0-9!#$&^_.+\-]{1,64}/[A-Za-z0-9!#$&^_.+\-]{1,64}$")


def _line(payload: dict, key: str, default: str = "", *, limit: int = 200) -> str:
    """A one-line text (a reason): control characters removed, so nothing can reach a SIP header as a line."""
    return _CONTROL.sub(" ", _text(payload, key, default, limit=limit) or "")


def _ip(payload: dict, key: str) -> str:
    import ipaddress

    value = _text(payload, key, limit=64) or ""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise RemoteError("bad_request", f"字段 {key} 不是 IP 地址 / {key} is not an IP address") from None


def _int(payload: dict, key: str, *, lo: int, hi: int, optional: bool = False) -> int | None:
    value = payload.get(key)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise RemoteError("bad_request", f"字段 {key} 无效 / invalid {key}")
    return value


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _addr(value: Any) -> tuple[str, int] | None:
    if (isinstance(value, list | tuple) and len(value) == 2 and isinstance(value[0], str) and len(value[0]) <= 255
            and isinstance(value[1], int) and not isinstance(value[1], bool) and 0 <= value[1] <= 65535):
        return (value[0], value[1])
    return None


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if isinstance(value, datetime) else None


def _when(value: Any) -> datetime | None:
    if not isinstance(value, str) or len(value) > 40:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


# ============================================================================ typed errors
# RemoteError carries a code and a message for people; the few facts a typed error needs besides (the SIP
# status of a refusal, the encoder limit, the lease holder) ride after the message as one JSON line.
def _remote(code: str, message: str, **extra: Any) -> RemoteError:
    if extra:
        message = f"{message}\n{json.dumps(extra, separators=(',', ':'))}"
    return RemoteError(code, message)


def _unpack(exc: BusError) -> tuple[str, str, dict]:
    code = str(getattr(exc, "code", "") or "")
    message = str(getattr(exc, "message", None) or exc)
    text, sep, tail = message.rpartition("\n")
    if sep and tail.startswith("{"):
        try:
            extra = json.loads(tail)
        except ValueError:
            extra = None
        if isinstance(extra, dict):
            return code, text, extra
    return code, message, {}


#: Signalling failures as RemoteError codes (the SIP node) and back (the media node).
SIGNALLING_CODES = {"device_offline": DeviceOffline, "device_refused": DeviceRefused,
                    "signalling_timeout": SignallingTimeout, "no_sub_stream": StreamNotOffered}


def to_remote_signalling(exc: SignallingError, device_id: str) -> RemoteError:
    """A typed signalling failure as the RemoteError the SIP node answers."""
    if isinstance(exc, DeviceOffline):
        return _remote("device_offline", str(exc) or device_id, device_id=exc.device_id)
    if isinstance(exc, SignallingTimeout):
        return _remote("signalling_timeout", str(exc))
    if isinstance(exc, DeviceRefused):
        return _remote("device_refused", exc.reason, status=exc.status)
    if isinstance(exc, StreamNotOffered):
        return _remote("no_sub_stream", str(exc), device_id=exc.device_id)
    return _remote("signalling_failed", str(exc))


def from_remote_signalling(exc: BusError, device_id: str) -> SignallingError:
    """What the media relay expects from its port, for a RemoteError (or any bus failure) of a SIP call.
    A node that is gone or does not answer is a timeout: a refusal without a status, as the device's
    silence would be."""
    code, message, extra = _unpack(exc)
    if not isinstance(exc, RemoteError):
        return SignallingTimeout(f"信令节点无应答 / the signalling node did not answer: {message}")
    if code == "device_offline":
        return DeviceOffline(device_id, message)
    if code == "signalling_timeout":
        return SignallingTimeout(message)
    if code == "device_refused":
        status = extra.get("status")
        return DeviceRefused(status if isinstance(status, int) and 100 <= status <= 699 else None, message)
    if code == "no_sub_stream":
        return StreamNotOffered(device_id, message)
    return SignallingError(message)


def to_remote_media(exc: Exception) -> RemoteError | None:
    """A media node's typed failure as a RemoteError (None: not a typed one, the bus reports it as it is)."""
    from media_relay.service import WhepNegotiationFailed
    from media_relay.viewers import TransformCapacityExceeded, TransformUnavailable

    if isinstance(exc, RemoteError):
        return exc
    if isinstance(exc, MediaError):
        return _remote(f"media.{exc.code}", str(exc), status=exc.status)
    if isinstance(exc, TransformCapacityExceeded):
        return _remote("watermark_capacity", str(exc), limit=exc.limit)
    if isinstance(exc, TransformUnavailable):
        return _remote("watermark_unavailable", str(exc))
    if isinstance(exc, WhepNegotiationFailed):
        return _remote("whep_failed", str(exc))
    if isinstance(exc, ValueError):
        return _remote("bad_request", str(exc))
    return None


def from_remote_media(exc: BusError) -> Exception:
    """The exception the portal routes expect for a media node's RemoteError (or a bus failure)."""
    from media_relay.service import WhepNegotiationFailed
    from media_relay.viewers import TransformCapacityExceeded, TransformUnavailable

    code, message, extra = _unpack(exc)
    if not isinstance(exc, RemoteError):
        return MediaError("media_node_unavailable", f"媒体节点无应答 / the media node did not answer: {message}")
    if code.startswith("media.") and len(code) > 6:
        status = extra.get("status")
        return MediaError(code[6:], message, status if isinstance(status, int) and 100 <= status <= 699 else None)
    if code == "watermark_capacity":
        limit = extra.get("limit")
        return TransformCapacityExceeded(limit if isinstance(limit, int) else 0, message)
    if code == "watermark_unavailable":
        return TransformUnavailable(message)
    if code == "whep_failed":
        return WhepNegotiationFailed(message)
    return MediaError("media_node_failed", f"媒体节点出错 / the media node failed: {message}")


# ============================================================================ device homes
@dataclass(frozen=True, slots=True)
class Home:
    """Where a device's registration lives: the SIP node, and that node's SIP address (``host:port``), which
    outlives the node's id: a SIP node restarted on the same address recognises its devices by it."""

    node_id: str
    address: str | None = None

    def encode(self) -> str:
        return f"{self.node_id}|{self.address}" if self.address else self.node_id

    @staticmethod
    def decode(raw: Any) -> Home | None:
        if raw is None:
            return None
        try:
            value = raw.decode("ascii") if isinstance(raw, bytes) else str(raw)
        except UnicodeDecodeError:
            return None
        node, _, address = value.partition("|")
        if not _ID.match(node) or (address and not _HOME_ADDRESS.match(address)):
            return None
        return Home(node, address or None)


_HOME_ADDRESS = re.compile(r"^[A-Za-z0-9_.:\[\]\-]{1,100}$")


class DeviceHomes:
    """Which SIP node holds a device's registration (``device:<id>`` -> :class:`Home`)."""

    async def set(self, device_id: str, node_id: str, address: str | None = None) -> None:
        raise NotImplementedError

    async def get(self, device_id: str) -> str | None:
        """The home node's id."""
        home = (await self.get_many([device_id])).get(device_id)
        return home.node_id if home is not None else None

    async def get_many(self, device_ids: list[str]) -> dict[str, Home]:
        raise NotImplementedError

    async def claim(self, device_id: str, expected: Home | None, home: Home) -> bool:
        """Set ``home`` only if the record is still ``expected`` (None: absent); True when set."""
        raise NotImplementedError


class LocalDeviceHomes(DeviceHomes):
    """In memory (tests, the single process)."""

    def __init__(self) -> None:
        self.homes: dict[str, Home] = {}

    async def set(self, device_id: str, node_id: str, address: str | None = None) -> None:
        self.homes[device_id] = Home(node_id, address)

    async def get_many(self, device_ids: list[str]) -> dict[str, Home]:
        return {d: self.homes[d] for d in device_ids if d in self.homes}

    async def claim(self, device_id: str, expected: Home | None, home: Home) -> bool:
        if self.homes.get(device_id) != expected:
            return False
        self.homes[device_id] = home
        return True


# KEYS[1] the home, ARGV[1] the expected value ('' for absent), ARGV[2] the new value, ARGV[3] ttl in ms
_CLAIM = """
local cur = redis.call('GET', KEYS[1])
if (cur or '') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""


class RedisDeviceHomes(DeviceHomes):
    """In Redis under ``<prefix>device:<id>``; kept ``ttl`` seconds after the last write (a device that keeps
    alive is written again, see :func:`serve_signalling`), so a device that went away leaves nothing."""

    def __init__(self, redis: Any, keys: Any, *, ttl: float = 86400.0, batch: int = 1000) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl = ttl
        self.batch = batch
        self._claim = redis.register_script(_CLAIM)

    async def set(self, device_id: str, node_id: str, address: str | None = None) -> None:
        await self.redis.set(self.keys("device", device_id), Home(node_id, address).encode().encode(),
                             px=int(self.ttl * 1000))

    async def get_many(self, device_ids: list[str]) -> dict[str, Home]:
        out: dict[str, Home] = {}
        for i in range(0, len(device_ids), self.batch):
            part = device_ids[i:i + self.batch]
            for device_id, raw in zip(part, await self.redis.mget([self.keys("device", d) for d in part]),
                                      strict=True):
                if (home := Home.decode(raw)) is not None:
                    out[device_id] = home
        return out

    async def claim(self, device_id: str, expected: Home | None, home: Home) -> bool:
        done = await self._claim(keys=[self.keys("device", device_id)],
                                 args=[expected.encode() if expected else "", home.encode(), int(self.ttl * 1000)])
        return bool(done)


def device_homes(cluster: Any) -> DeviceHomes:
    """Redis homes when the cluster (:class:`cluster.runtime.Cluster`) has Redis, else in memory."""
    if getattr(cluster, "redis", None) is None or getattr(cluster, "keys", None) is None:
        return LocalDeviceHomes()
    return RedisDeviceHomes(cluster.redis, cluster.keys)


# ============================================================================ the SIP node
class SignallingNode:
    """What :func:`serve_signalling` started: the event forwarding, the homes it writes, and the calls it placed
    for each media node (ended, BYE, when that node leaves the directory: a killed media node leaves no call
    running on the device)."""

    def __init__(self, signalling: Any = None, directory: Any = None, *, sweep: float = 2.0) -> None:
        self.signalling = signalling
        self.directory = directory
        self.tasks: set[asyncio.Task] = set()
        self.homes_written: dict[str, float] = {}
        self.calls: dict[str, str] = {}  # call id -> the media node that asked for it
        self._sweeper = (PeriodicTask("sip-orphan-calls", self.sweep, interval=sweep, logger=log,
                                      failure_event="cluster_media.sweep_failed") if directory is not None else None)

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def start(self) -> None:
        if self._sweeper is not None:
            self._sweeper.start()

    async def sweep(self) -> None:
        """BYE the calls placed for media nodes that are no longer in the directory."""
        if not self.calls or self.directory is None:
            return
        live = {n.node_id for n in await self.directory.nodes()}
        for call_id, node_id in list(self.calls.items()):
            if node_id not in live:
                self.calls.pop(call_id, None)
                log.warning("cluster_media.orphan_call_ended", call_id=call_id[:16], node=node_id)
                self.signalling.bye(call_id, "media node lost")

    async def close(self) -> None:
        if self._sweeper is not None:
            await self._sweeper.stop()
        if self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)


def serve_signalling(bus: CommandBus, sip_service: Any, *, homes: DeviceHomes | None = None,
                     home_refresh: float = 600.0, directory: Any = None, sweep: float = 2.0,
                     address: str | None = None, stream_form: Any = None) -> SignallingNode:
    """Register the SIP node's ``sip.*`` handlers on ``bus`` over ``sip_service`` (a
    :class:`sip_server.service.SipService`) and publish its media events on :data:`SIP_EVENTS`. With
    ``homes``: a device registering (or keeping alive, at most every ``home_refresh`` s) here is recorded as
    this node's (with ``address``, this node's SIP address). With ``directory``: every ``sweep`` s, the calls of
    media nodes gone from it are ended. ``stream_form``: the devices' stream identification forms (a media
    node's sub-stream INVITE is asked in the device's form here, see :class:`gbops.media_signalling.SipSignalling`)."""
    from gbops.media_signalling import SipSignalling
    from sip_server.gb import events as sip_events

    signalling = SipSignalling(sip_service, stream_form=stream_form)
    node = SignallingNode(signalling, directory, sweep=sweep)

    async def device(payload: dict) -> dict:
        device_id = _id(payload, "device_id")
        addr = signalling.route_address(device_id)
        return {"device_id": device_id, "online": signalling.is_online(device_id),
                "route_address": list(addr) if addr is not None else None}

    async def invite(payload: dict) -> dict:
        device_id, channel_id = _id(payload, "device_id"), _id(payload, "channel_id")
        media_ip = _ip(payload, "media_ip")  # goes into the SDP offer
        media_port = _int(payload, "media_port", lo=1, hi=65535)
        ssrc = _text(payload, "ssrc", limit=10)
        transport = _text(payload, "transport", limit=16)
        if not ssrc or not ssrc.isdigit() or transport not in ("udp", "tcp-passive", "tcp-active"):
            raise RemoteError("bad_request", "INVITE 参数无效 / invalid INVITE parameters")
        history = None
        if payload.get("history") is not None:
            h = payload["history"]
            if not isinstance(h, dict) or h.get("kind") not in ("playback", "download"):
                raise RemoteError("bad_request", "历史请求无效 / invalid history request")
            history = HistoryRequest(h["kind"], _int(h, "start", lo=0, hi=2**40), _int(h, "end", lo=0, hi=2**40),
                                     _int(h, "speed", lo=1, hi=64, optional=True))
        stream = payload.get("stream", "main")
        if stream not in STREAMS or (history is not None and stream != "main"):
            raise RemoteError("bad_request", "码流无效 / invalid stream")
        requester = payload.get("node_id")
        requester = requester if isinstance(requester, str) and _ID.match(requester) else None
        try:
            answer = await signalling.invite(ChannelRef(device_id, channel_id), media_ip=media_ip,
                                             media_port=media_port, ssrc=ssrc, transport=transport, history=history,
                                             stream=stream)
        except SignallingError as exc:
            raise to_remote_signalling(exc, device_id) from None
        if requester is not None:
            node.calls[answer.call_id] = requester
        return {"call_id": answer.call_id, "ssrc": answer.ssrc, "transport": answer.transport,
                "remote_media": list(answer.remote_media) if answer.remote_media else None,
                "filesize": answer.filesize}

    async def bye(payload: dict) -> dict:
        call_id = _line(payload, "call_id")
        node.calls.pop(call_id, None)
        signalling.bye(call_id, _line(payload, "reason"))
        return {}

    async def info(payload: dict) -> dict:
        body = _text(payload, "body", limit=4000) or ""  # MANSRTSP: several lines, sent as the body
        content_type = _text(payload, "content_type", MANSRTSP_TYPE, limit=130) or MANSRTSP_TYPE
        if not _CONTENT_TYPE.match(content_type):
            raise RemoteError("bad_request", "内容类型无效 / invalid content type")
        return {"sent": signalling.info(_line(payload, "call_id"), body.encode(), content_type)}

    bus.register("sip.device", device)
    bus.register("sip.invite", invite)
    bus.register("sip.bye", bye)
    bus.register("sip.info", info)

    def forward(event: SignallingEvent) -> None:
        if isinstance(event, SessionEnded):
            node.calls.pop(event.call_id, None)
            payload = {"type": "session_ended", "call_id": event.call_id, "device_id": event.channel.device_id,
                       "channel_id": event.channel.channel_id, "by": event.by, "reason": event.reason}
        elif isinstance(event, MediaFileEnded):
            payload = {"type": "media_file_ended", "call_id": event.call_id, "device_id": event.channel.device_id,
                       "channel_id": event.channel.channel_id, "notify_type": event.notify_type}
        elif isinstance(event, DeviceWentOffline):
            payload = {"type": "device_offline", "device_id": event.device_id, "reason": event.reason}
        else:
            return
        node.spawn(_publish(bus, SIP_EVENTS, payload))

    signalling.subscribe(forward)

    if homes is not None:
        def record_home(event: object) -> None:
            if isinstance(event, sip_events.DeviceOnline):
                due = True
            elif isinstance(event, sip_events.DeviceKeepalive):
                due = time.monotonic() - node.homes_written.get(event.device_id, -math.inf) >= home_refresh
            else:
                return
            if due:
                node.homes_written[event.device_id] = time.monotonic()
                node.spawn(_write_home(homes, event.device_id, bus.node_id, address))

        sip_service.add_listener(record_home)
    node.start()
    return node


async def _publish(bus: CommandBus, topic: str, payload: dict) -> None:
    try:
        await bus.publish(topic, payload)
    except Exception:
        log.exception("cluster_media.publish_failed", topic=topic)


async def _write_home(homes: DeviceHomes, device_id: str, node_id: str, address: str | None = None) -> None:
    try:
        await homes.set(device_id, node_id, address)
    except Exception:
        log.exception("cluster_media.home_failed", device_id=device_id)


# ============================================================================ the media node's signalling
@dataclass
class _DeviceState:
    online: bool
    route: tuple[str, int] | None
    sip_node: str
    at: float


class RemoteSignalling:
    """The media relay's :class:`media_relay.signalling.Signalling` on a media node, over the bus.

    ``invite`` asks the SIP node holding the device's registration (``homes``, else the only live node with
    the ``sip`` role). The port's synchronous questions (``is_online``, ``route_address``) answer from a cache
    that :meth:`refresh` fills (the media node's ``media.open_viewer`` handler refreshes before it opens, see
    :func:`serve_media`) and the SIP node's events keep current; ``bye`` and ``info`` are sent without waiting
    (the call's SIP node is remembered from its INVITE)."""

    def __init__(self, bus: CommandBus, directory: Any, homes: DeviceHomes | None = None, *,
                 timeout: float = 10.0, invite_timeout: float = 20.0) -> None:
        self.bus = bus
        self.directory = directory
        self.homes = homes
        self.timeout = timeout
        self.invite_timeout = invite_timeout
        self.devices: dict[str, _DeviceState] = {}
        self.calls: dict[str, str] = {}  # call id -> the SIP node that placed it
        self._listeners: list[Callable[[SignallingEvent], None]] = []
        self._tasks: set[asyncio.Task] = set()
        bus.subscribe(SIP_EVENTS, self._on_event)

    # ------------------------------------------------------------------ which SIP node
    async def sip_node(self, device_id: str) -> str:
        """The node holding ``device_id``'s registration: its recorded home when that node is live, else the
        only live ``sip`` node. Raises :class:`DeviceOffline` when there is none."""
        nodes = [n for n in await self.directory.nodes() if "sip" in n.roles]
        live = {n.node_id for n in nodes}
        home = await self.homes.get(device_id) if self.homes is not None else None
        if home is not None and home in live:
            return home
        if len(nodes) == 1:
            return nodes[0].node_id
        if not nodes:
            raise DeviceOffline(device_id, f"没有在线的信令节点 / no live SIP node: {device_id}")
        raise DeviceOffline(device_id, f"设备未在任何信令节点注册 / the device is not registered on any SIP node: "
                            f"{device_id}")

    async def prepare(self, device_id: str) -> None:
        """The relay's optional hook before a Stream starts (:mod:`media_relay.signalling`): :meth:`refresh`."""
        await self.refresh(device_id)

    async def refresh(self, device_id: str) -> bool:
        """Ask the device's SIP node whether it is online and where it registered from (the cache behind
        :meth:`is_online` and :meth:`route_address`); returns whether it is online."""
        try:
            node = await self.sip_node(device_id)
            reply = await self.bus.call(node, "sip.device", {"device_id": device_id}, timeout=self.timeout)
        except (DeviceOffline, BusError) as exc:
            log.info("cluster_media.device_unknown", device_id=device_id, reason=str(exc))
            self.devices.pop(device_id, None)
            return False
        online = reply.get("online") is True
        self.devices[device_id] = _DeviceState(online, _addr(reply.get("route_address")), node, time.monotonic())
        return online

    # ------------------------------------------------------------------ the port
    def is_online(self, device_id: str) -> bool:
        state = self.devices.get(device_id)
        return state is not None and state.online

    def route_address(self, device_id: str) -> tuple[str, int] | None:
        state = self.devices.get(device_id)
        return state.route if state is not None else None

    async def invite(self, channel: ChannelRef, *, media_ip: str, media_port: int, ssrc: str,
                     transport: str, history: HistoryRequest | None = None, stream: str = "main") -> InviteAnswer:
        device_id, channel_id = channel
        state = self.devices.get(device_id)
        node = state.sip_node if state is not None else await self.sip_node(device_id)
        payload: dict[str, Any] = {"device_id": device_id, "channel_id": channel_id, "media_ip": media_ip,
                                   "media_port": media_port, "ssrc": ssrc, "transport": transport,
                                   "node_id": self.bus.node_id}  # the SIP node ends the call if this node dies
        if history is not None:
            payload["history"] = {"kind": history.kind, "start": history.start, "end": history.end,
                                  "speed": history.speed}
        if stream != "main":
            payload["stream"] = stream  # the SIP node asks the device in the device's own form
        try:
            reply = await self.bus.call(node, "sip.invite", payload, timeout=self.invite_timeout)
        except BusError as exc:
            raise from_remote_signalling(exc, device_id) from None
        call_id = reply.get("call_id")
        answered_ssrc = reply.get("ssrc")
        answered_transport = reply.get("transport")
        if (not isinstance(call_id, str) or not 0 < len(call_id) <= 200 or not isinstance(answered_ssrc, str)
                or not answered_ssrc.isdigit() or len(answered_ssrc) > 10
                or answered_transport not in ("udp", "tcp-passive", "tcp-active")):
            raise DeviceRefused(None, "信令节点的应答无效 / invalid answer from the SIP node")
        filesize = reply.get("filesize")
        self.calls[call_id] = node
        return InviteAnswer(call_id=call_id, ssrc=answered_ssrc, remote_media=_addr(reply.get("remote_media")),
                            transport=answered_transport,
                            filesize=filesize if isinstance(filesize, int) and filesize >= 0 else None)

    def bye(self, call_id: str, reason: str) -> None:
        node = self.calls.pop(call_id, None)
        if node is not None:
            self._spawn(self._send(node, "sip.bye", {"call_id": call_id, "reason": reason[:200]}))

    def info(self, call_id: str, body: bytes, content_type: str = MANSRTSP_TYPE) -> bool:
        node = self.calls.get(call_id)
        if node is None:
            return False
        self._spawn(self._send(node, "sip.info", {"call_id": call_id, "content_type": content_type,
                                                  "body": body.decode("utf-8", "replace")}))
        return True

    def subscribe(self, listener: Callable[[SignallingEvent], None]) -> None:
        self._listeners.append(listener)

    async def close(self) -> None:
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # ------------------------------------------------------------------ internals
    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, node: str, method: str, payload: dict) -> None:
        try:
            await self.bus.call(node, method, payload, timeout=self.timeout)
        except BusError as exc:
            log.warning("cluster_media.signalling_send_failed", method=method, node=node, error=str(exc))

    def _on_event(self, payload: dict) -> None:
        event = self._event(payload)
        if event is None:
            log.warning("cluster_media.bad_sip_event")
            return
        if isinstance(event, DeviceWentOffline):
            state = self.devices.get(event.device_id)
            if state is not None:
                state.online = False
        elif isinstance(event, SessionEnded):
            self.calls.pop(event.call_id, None)
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("cluster_media.listener_failed")

    @staticmethod
    def _event(payload: Any) -> SignallingEvent | None:
        if not isinstance(payload, dict):
            return None
        kind = payload.get("type")
        try:
            if kind == "device_offline":
                return DeviceWentOffline(_id(payload, "device_id"), _text(payload, "reason", "", limit=200) or "")
            channel = ChannelRef(_id(payload, "device_id"), _id(payload, "channel_id"))
            call_id = _text(payload, "call_id", limit=200)
            if not call_id:
                return None
            if kind == "session_ended":
                by = payload.get("by")
                return SessionEnded(call_id, channel, by if by in ("device", "platform") else "platform",
                                    _text(payload, "reason", "", limit=200) or "")
            if kind == "media_file_ended":
                return MediaFileEnded(call_id, channel, _text(payload, "notify_type", "121", limit=8) or "121")
        except RemoteError:
            return None
        return None


# ============================================================================ the media node
class MediaNode:
    """What :func:`serve_media` started on a media node: the ``media.*`` handlers and the renewal of its
    stream ownership leases (renewed while the upstream exists, released once it is gone)."""

    def __init__(self, bus: CommandBus, media: Any, leases: Any, signalling: RemoteSignalling | None, *,
                 public_url: str | None, max_streams: int, lease_ttl: float) -> None:
        self.bus = bus
        self.media = media
        self.leases = leases
        self.signalling = signalling
        self.public_url = public_url.rstrip("/") if public_url else None
        self.max_streams = max_streams
        self.lease_ttl = lease_ttl
        self.held: set[LiveKey] = set()  # (channel, stream) whose ownership lease this node renews
        self.viewers: dict[str, Viewer] = {}  # session id -> the viewer in full (a drain hands it over)
        self.moved: dict[str, str] = {}  # session id -> the node it moved to (its end here is not its end)
        self.adopt_timeout = 40.0  # media.adopt: an INVITE's worth and the first keyframe
        self.draining = False  # no new upstream here (a drain: its streams move to other nodes)
        self.directory: Any = None  # the node directory (a drain picks the nodes to move to)
        # callback(session, to_node): the assembly's live.move recorder (the audit log)
        self.on_session_moved: Any = None
        self._switched = asyncio.Event()  # set when the last moved session has left this node
        self._tasks: set[asyncio.Task] = set()
        self._renewal = PeriodicTask("stream-leases", self.renew, interval=max(0.5, lease_ttl / 3), logger=log,
                                     failure_event="cluster_media.renew_failed")

    # ------------------------------------------------------------------ leases
    def _has_upstream(self, key: LiveKey) -> bool:
        manager = self.media.manager
        stream = manager.streams.get(key)
        return (stream is not None and not stream.closed) or key in manager._starting

    def streams_in_use(self) -> int:
        """Upstreams this node has or is starting (what ``media_max_streams`` caps)."""
        manager = self.media.manager
        live = {key for key, s in manager.streams.items() if not s.closed}
        return len(live | set(manager._starting))

    async def renew(self) -> None:
        """Renew the leases of the upstreams this node still has; release the others."""
        for key in list(self.held):
            name = stream_lease(*key)
            if self._has_upstream(key):
                if not await self.leases.renew(name, self.lease_ttl):
                    log.error("cluster_media.lease_lost", channel=_key_text(key))  # another node took it: ours ends
                    self.held.discard(key)
                    stream = self.media.manager.streams.get(key)
                    if stream is not None:
                        self.media.manager._teardown(stream, "stream ownership lost")
            else:
                self.held.discard(key)
                await self.leases.release(name)

    async def _own(self, key: LiveKey) -> None:
        """Take (or keep) the ownership lease of the channel's stream, or say who holds it (``stream_owned``)."""
        name = stream_lease(*key)
        if await self.leases.acquire(name, self.lease_ttl):
            self.held.add(key)
            return
        holder = await self.leases.holder(name)
        raise _remote("stream_owned", f"该通道的流由节点 {holder} 承载 / node {holder} has this channel's stream",
                      holder=holder)

    async def _release_if_unused(self, key: LiveKey) -> None:
        if key in self.held and not self._has_upstream(key):
            self.held.discard(key)
            await self.leases.release(stream_lease(*key))

    # ------------------------------------------------------------------ handlers
    async def open_viewer(self, payload: dict) -> dict:
        from ops_portal.live import output_tokens

        ref = ChannelRef(_id(payload, "device_id"), _id(payload, "channel_id"))
        kind = payload.get("kind", "live")
        if kind not in ("live", "playback"):
            raise RemoteError("bad_request", "会话类型无效 / invalid session kind")
        transport = _text(payload, "transport", "udp", limit=16) or "udp"
        v = payload.get("viewer")
        if not isinstance(v, dict):
            raise RemoteError("bad_request", "缺少观看者 / missing viewer")
        viewer = _viewer(v)
        window = None
        if kind == "playback":
            raw = payload.get("window")
            if not isinstance(raw, list) or len(raw) != 2:
                raise RemoteError("bad_request", "时间段无效 / invalid window")
            window = (_when(raw[0]), _when(raw[1]))
            if window[0] is None or window[1] is None:
                raise RemoteError("bad_request", "时间段无效 / invalid window")
        source = _text(payload, "source", "device", limit=16) or "device"
        stream = _stream_of(payload) if kind == "live" else "main"
        key = (ref, stream)
        if self.draining and not (kind == "live" and self._has_upstream(key) and key in self.held):
            # a viewer may still join a stream that has not moved yet (it moves with it); nothing new starts
            raise _remote("node_draining", f"媒体节点 {self.bus.node_id} 正在排空 / media node {self.bus.node_id} "
                          "is draining")
        if kind == "live":
            if (self.max_streams and not self._has_upstream(key)
                    and self.streams_in_use() >= self.max_streams):
                raise _remote("node_full", f"本媒体节点已满（{self.max_streams} 路）/ this media node is full "
                              f"({self.max_streams} streams)", limit=self.max_streams)
            await self._own(key)
        try:
            # (a new upstream asks the SIP node about the device first: RemoteSignalling.prepare)
            extra = {"stream": stream} if stream != "main" else {}
            session = await self.media.open_viewer(ref, viewer, kind=kind, transport=transport, window=window,
                                                   source=source, **extra)
        except Exception as exc:
            remote = to_remote_media(exc)
            if remote is None:
                raise
            raise remote from None
        finally:
            if kind == "live":
                await self._release_if_unused(key)
        if not session.closed:
            self.viewers[session.session_id] = viewer
        # the output URL's single-use token: minted here, where the output is served and checked
        token = output_tokens.issue(session.session_id, viewer.user_id,
                                    expires=min(session.attach_deadline, time.time() + output_tokens.TOKEN_TTL))
        params = session.params
        plan = session.plan
        return {"session_id": session.session_id, "node_id": self.bus.node_id, "http_url": self.public_url,
                "url_token": token, "created": session.created, "attach_deadline": session.attach_deadline,
                "codec": session.codec, "width": params.width if params else None,
                "height": params.height if params else None,
                "plan": None if plan is None else {"on": bool(plan.on), "code": plan.code},
                "kind": session.kind, "history_source": session.history_source,
                "state": _state_json(self.media.session_state(session.session_id))}

    async def open_reader(self, channel: ChannelRef, transport: str = "udp", stream: str = "main") -> Any:
        """A bare reader for this node's own captures (the platform recorder): under the ownership lease of the
        channel's ``stream`` like a viewer, so that a channel another media node relays is recorded there, not
        INVITEd twice (the recorder of the node that does not own it waits and retries). Raises MediaError
        (``stream_owned`` among others)."""
        ref = ChannelRef(*channel)
        key = (ref, stream)
        try:
            await self._own(key)
        except RemoteError as exc:
            refused = MediaError("stream_owned", _unpack(exc)[1])
            # the holder renews every ttl/3; once it is gone its lease is free within a ttl: the recorder tries
            # again by then instead of after its backoff (up to a minute), so a failover pauses recording briefly
            refused.retry_after = self.lease_ttl / 2  # type: ignore[attr-defined]
            raise refused from None
        try:
            return await self.media.open_reader(ref, transport, stream)
        finally:
            await self._release_if_unused(key)

    def _session(self, payload: dict) -> str:
        return _text(payload, "session_id", limit=64) or ""

    async def close_session(self, payload: dict) -> dict:
        return {"closed": self.media.close_session(self._session(payload),
                                                   _text(payload, "reason", "closed", limit=200) or "closed")}

    async def end_session(self, payload: dict) -> dict:
        ended = await self.media.end_session(self._session(payload),
                                             _text(payload, "reason", "closed", limit=200) or "closed",
                                             whep_only=payload.get("whep_only") is True)
        return {"ended": ended}

    async def session_state(self, payload: dict) -> dict:
        return {"state": _state_json(self.media.session_state(self._session(payload)))}

    async def control(self, payload: dict) -> dict:
        action = _text(payload, "action", limit=16) or ""
        try:
            state = await self.media.control(self._session(payload), action,
                                             position=_number(payload.get("position")),
                                             scale=_number(payload.get("scale")))
        except Exception as exc:
            remote = to_remote_media(exc)
            if remote is None:
                raise
            raise remote from None
        return {"state": _state_json(state)}

    async def describe(self, payload: dict) -> dict:
        """This node's upstreams and viewer sessions (a portal, restarted or another one, learns of the
        sessions it did not open: DELETE and revocation reach them)."""
        items = []
        for item in self.media.describe_streams():
            item = dict(item)
            item["node_id"] = self.bus.node_id
            items.append(item)
        sessions = []
        for s in list(self.media.sessions.values()):
            if not s.closed:
                item = _session_json(s)
                if s.session_id in self.moved:
                    item["moved_to"] = self.moved[s.session_id]  # still playing here until its player switches
                sessions.append(item)
        return {"items": items, "sessions": sessions, "node_id": self.bus.node_id, "draining": self.draining}

    # ------------------------------------------------------------------ session events to the portals
    def session_closed(self, session: Any, reason: str) -> None:
        self.viewers.pop(session.session_id, None)
        if self.moved.pop(session.session_id, None) is not None:
            if not self.moved:
                self._switched.set()
            return  # its player switched to the node it moved to: the session lives on there
        self._spawn(_publish(self.bus, MEDIA_SESSIONS, {"type": "closed", "session_id": session.session_id,
                                                        "node_id": self.bus.node_id, "reason": reason[:200]}))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def output_token(self, payload: dict) -> dict:
        """``media.token``: a new single-use output token of a session here (a portal that missed the ``moved``
        event of a session this node adopted learns its output URL this way)."""
        from ops_portal.live import output_tokens

        session = self.media.sessions.get(_id(payload, "session_id"))
        if session is None or session.closed or getattr(session, "output", None) is not None:
            raise RemoteError("no_session", "会话不存在或已有播放器 / no such session, or its player attached")
        token = output_tokens.issue(session.session_id, session.user_id, expires=min(
            session.attach_deadline, time.time() + output_tokens.TOKEN_TTL))
        return {"node_id": self.bus.node_id, "http_url": self.public_url, "url_token": token}

    # ------------------------------------------------------------------ drain (issue 17: rolling restart)
    async def adopt(self, payload: dict) -> dict:
        """``media.adopt`` (from a draining media node, which handed this node the channel's lease first): open
        the channel's upstream here (a second INVITE while the draining node's call still runs: make before
        break) and the given viewer sessions under the same ids and viewers (same watermark tag, same audit
        session), and answer their output tokens. On failure the lease goes back to the draining node, which
        tries another node."""
        from ops_portal.live import output_tokens

        ref = ChannelRef(_id(payload, "device_id"), _id(payload, "channel_id"))
        stream = _stream_of(payload)
        key = (ref, stream)
        source = _id(payload, "from_node")
        transport = _text(payload, "transport", "udp", limit=16) or "udp"
        items = payload.get("sessions")
        if not isinstance(items, list) or not 0 < len(items) <= 1000:
            raise RemoteError("bad_request", "会话列表无效 / invalid sessions")
        wanted = []
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("viewer"), dict):
                raise RemoteError("bad_request", "会话无效 / invalid session")
            wanted.append((_id(item, "session_id"), _viewer(item["viewer"]), _number(item.get("created"))))
        if self.draining:
            raise _remote("node_draining", f"媒体节点 {self.bus.node_id} 正在排空 / media node {self.bus.node_id} "
                          "is draining")
        name = stream_lease(*key)
        holder = await self.leases.holder(name)
        if holder != self.bus.node_id:
            raise _remote("stream_owned", f"该通道的流由节点 {holder} 承载 / node {holder} has this channel's "
                          "stream", holder=holder)
        self.held.add(key)
        opened: list[Any] = []
        answers = []
        try:
            for session_id, viewer, created in wanted:
                session = await self.media.open_viewer(ref, viewer, kind="live", transport=transport,
                                                       session_id=session_id,
                                                       **({"stream": stream} if stream != "main" else {}))
                opened.append(session)
                if created is not None and created <= time.time():
                    session.created = created  # the viewing's duration counts from its start
                self.viewers[session_id] = viewer
                token = output_tokens.issue(session_id, viewer.user_id, expires=min(
                    session.attach_deadline, time.time() + output_tokens.TOKEN_TTL))
                answers.append({"session_id": session_id, "url_token": token})
        except Exception as exc:
            for session in opened:
                self.moved[session.session_id] = source  # not a viewing that ended: it stays on the source
                self.media.close_session(session.session_id, "move failed")
            if not self._has_upstream(key):
                self.held.discard(key)
                await self.leases.transfer(name, source, self.lease_ttl)  # back: it tries another node
            log.warning("cluster_media.adopt_failed", channel=_key_text(key), source=source, error=str(exc))
            remote = to_remote_media(exc)
            if remote is None:
                raise
            raise remote from None
        log.info("cluster_media.adopted", channel=_key_text(key), source=source, sessions=len(answers))
        return {"node_id": self.bus.node_id, "http_url": self.public_url, "sessions": answers}

    async def drain(self, *, timeout: float = 60.0, switch_wait: float | None = None) -> dict[str, Any]:
        """Move every live viewer session of this node to other media nodes, make before break, then wait for
        their players to switch. Per channel: hand its lease to the least-loaded other media node (not
        draining), which opens the upstream and the sessions (``media.adopt``); then tell the portals
        (``moved`` on :data:`MEDIA_SESSIONS`: the new node and output token; the console's player starts the
        new URL while the old one still plays and swaps on its first frame). This node's outputs keep
        playing until each player has switched (its output closes here) or ``timeout`` runs out; the old
        upstream ends with its last reader (the lease, now the other node's, is left alone). Returns
        ``{"moved": sessions moved, "failed": channels that could not move, "left": sessions still open here
        at the end, closed then}``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self.draining = True
        moved = 0
        refused: dict[LiveKey, set[str]] = {}  # per channel stream, the nodes that could not take it (this round)
        while loop.time() < deadline:
            pending = self._pending_channels()
            if not pending:
                break
            for ref in pending:
                if loop.time() >= deadline:
                    break
                ok, count = await self._move_channel(ref, refused.setdefault(ref, set()))
                moved += count if ok else 0
            if self._pending_channels():
                await asyncio.sleep(0.5)  # a node refused (full, its INVITE failed): ask again, maybe another
        failed = len(self._pending_channels())  # channels that could not move: their viewers' sessions end
        wait_until = deadline if switch_wait is None else min(deadline, loop.time() + switch_wait)
        if self.moved:  # each player closes its old output here once the new one has a frame
            self._switched.clear()
            try:
                await asyncio.wait_for(self._switched.wait(), max(0.0, wait_until - loop.time()))
            except TimeoutError:
                log.warning("cluster_media.players_not_switched", sessions=len(self.moved))
        left = 0
        for sid in list(self.media.sessions):
            left += 1
            self.media.close_session(sid, "media node drained")
        log.info("cluster_media.drained", moved=moved, failed=failed, left=left)
        return {"moved": moved, "failed": failed, "left": left}

    def _pending_channels(self) -> list[LiveKey]:
        """The (channel, stream) upstreams with live viewer sessions here that have not moved yet."""
        out: list[LiveKey] = []
        for s in list(self.media.sessions.values()):
            key = (ChannelRef(*s.channel), getattr(s, "stream", "main"))
            if (not s.closed and getattr(s, "kind", "live") == "live" and s.session_id not in self.moved
                    and s.session_id in self.viewers and key not in out):
                out.append(key)
        return out

    async def _move_channel(self, key: LiveKey, refused: set[str]) -> tuple[bool, int]:
        """Move the sessions of ``key`` (a channel's stream) not moved yet; (True, sessions moved) or (False, 0)."""
        ref, stream = key
        sessions = [s for s in list(self.media.sessions.values())
                    if ChannelRef(*s.channel) == ref and getattr(s, "stream", "main") == stream and not s.closed
                    and getattr(s, "kind", "live") == "live" and s.session_id not in self.moved
                    and s.session_id in self.viewers]
        if not sessions:
            return True, 0
        name = stream_lease(*key)
        target = await self.leases.holder(name)
        if target == self.bus.node_id or target is None:
            nodes = await self.directory.nodes() if self.directory is not None else []
            ranked = rank_media_nodes(nodes, max_streams=self.max_streams, exclude={self.bus.node_id, *refused})
            if not ranked:
                log.warning("cluster_media.drain_no_target", channel=ref.key)
                refused.clear()  # next round, those that refused are asked again
                return False, 0
            target = ranked[0].node_id
            if not await self.leases.transfer(name, target, self.lease_ttl):
                if not await self.leases.acquire(name, self.lease_ttl) or not await self.leases.transfer(
                        name, target, self.lease_ttl):
                    log.warning("cluster_media.drain_lease_lost", channel=ref.key)
                    return False, 0
        self.held.discard(key)  # the target's now: neither renewed nor released here
        payload = {"device_id": ref.device_id, "channel_id": ref.channel_id, "from_node": self.bus.node_id,
                   "stream": stream,
                   "transport": _stream_transport(sessions[0]),
                   "sessions": [{"session_id": s.session_id, "created": s.created,
                                 "viewer": _viewer_json(self.viewers[s.session_id])} for s in sessions]}
        try:
            reply = await self.bus.call(target, "media.adopt", payload, timeout=self.adopt_timeout)
        except BusError as exc:
            log.warning("cluster_media.move_failed", channel=ref.key, target=target, error=str(exc))
            refused.add(target)
            if await self.leases.holder(name) == self.bus.node_id and self._has_upstream(key):
                self.held.add(key)  # given back: renewed here again until another node takes it
            return False, 0
        http_url = reply.get("http_url") if isinstance(reply.get("http_url"), str) else None
        answers = {a.get("session_id"): a for a in reply.get("sessions") or [] if isinstance(a, dict)}
        count = 0
        for s in sessions:
            answer = answers.get(s.session_id)
            token = answer.get("url_token") if answer else None
            if not isinstance(token, str):
                continue
            await _publish(self.bus, MEDIA_SESSIONS, {
                "type": "moved", "session_id": s.session_id, "node_id": self.bus.node_id, "to": target,
                "http_url": http_url, "url_token": token})
            self.moved[s.session_id] = target
            count += 1
            if self.on_session_moved is not None:
                try:
                    self.on_session_moved(s, target, self.bus.node_id)
                except Exception:
                    log.exception("cluster_media.move_record_failed", session=s.session_id[:8])
        log.info("cluster_media.moved", channel=ref.key, target=target, sessions=count)
        return True, count

    def start(self) -> None:
        self._renewal.start()

    async def stop(self) -> None:
        """Stop renewing and release every lease this node holds (its streams end with it)."""
        await self._renewal.stop()
        for key in list(self.held):
            self.held.discard(key)
            try:
                await self.leases.release(stream_lease(*key))
            except Exception:
                log.exception("cluster_media.release_failed", channel=_key_text(key))
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


def _session_json(session: Any) -> dict:
    plan = getattr(session, "plan", None)
    params = getattr(session, "params", None)
    window = getattr(session, "window", None)
    return {"session_id": session.session_id, "user_id": session.user_id, "username": session.username,
            "device_id": session.channel.device_id, "channel_id": session.channel.channel_id,
            "client_ip": session.client_ip, "created": session.created, "attach_deadline": session.attach_deadline,
            "codec": getattr(session, "codec", None), "width": getattr(params, "width", None),
            "height": getattr(params, "height", None),
            "plan": None if plan is None else {"on": bool(plan.on), "code": plan.code},
            "kind": getattr(session, "kind", "live"), "history_source": getattr(session, "history_source", None),
            "window": [_iso(window[0]), _iso(window[1])] if window else None, "output": session.output,
            "stream": getattr(session, "stream", "main")}


def _state_json(state: dict | None) -> dict | None:
    if state is None:
        return None
    out = dict(state)
    window = out.get("window")
    if window:
        out["window"] = [_iso(window[0]), _iso(window[1])]
    return out


def _viewer(v: dict) -> Viewer:
    """A viewer as it crossed the bus (``media.open_viewer``, ``media.adopt``), validated."""
    roles = v.get("roles") or []
    if not isinstance(roles, list) or len(roles) > 64 or not all(isinstance(r, str) and len(r) <= 100
                                                                  for r in roles):
        raise RemoteError("bad_request", "角色无效 / invalid roles")
    return Viewer(user_id=_int(v, "user_id", lo=0, hi=2**62), username=_text(v, "username", limit=200) or "",
                  display_name=_text(v, "display_name", limit=200), phone=_text(v, "phone", limit=64),
                  client_ip=_text(v, "client_ip", limit=64), roles=tuple(roles))


def _stream_transport(session: Any) -> str:
    """The transport of the upstream a session reads (the adopting node INVITEs the same way)."""
    transport = getattr(getattr(getattr(session, "reader", None), "stream", None), "transport", None)
    return transport if transport in ("udp", "tcp-passive", "tcp-active") else "udp"


def _viewer_json(viewer: Viewer) -> dict:
    return {"user_id": viewer.user_id, "username": viewer.username, "display_name": viewer.display_name,
            "phone": viewer.phone, "client_ip": viewer.client_ip, "roles": list(viewer.roles)}


def serve_media(bus: CommandBus, media_service: Any, leases: Any, *, signalling: RemoteSignalling | None = None,
                public_url: str | None = None, max_streams: int = 0, lease_ttl: float = 10.0) -> MediaNode:
    """Register a media node's ``media.*`` handlers on ``bus`` over ``media_service`` (a
    :class:`media_relay.service.MediaService`) and start renewing its stream ownership leases. Its sessions
    ending are published on :data:`MEDIA_SESSIONS` (chained after the service's own ``on_session_closed``,
    which must be set before this call). ``public_url``: where browsers reach this node's FLV/WHEP."""
    node = MediaNode(bus, media_service, leases, signalling, public_url=public_url, max_streams=max_streams,
                     lease_ttl=lease_ttl)
    bus.register("media.open_viewer", node.open_viewer)
    bus.register("media.close", node.close_session)
    bus.register("media.end", node.end_session)
    bus.register("media.state", node.session_state)
    bus.register("media.control", node.control)
    bus.register("media.streams", node.describe)
    bus.register("media.adopt", node.adopt)
    bus.register("media.token", node.output_token)
    previous = media_service.on_session_closed

    def on_closed(session: Any, reason: str) -> None:
        if previous is not None and session.session_id not in node.moved:
            previous(session, reason)  # (a moved session's live.stop is the new node's, when it really ends)
        node.session_closed(session, reason)

    media_service.on_session_closed = on_closed
    node.start()
    return node


# ============================================================================ the portal node
def rank_media_nodes(nodes: list[Any], *, max_streams: int = 0, exclude: set[str] | frozenset[str] = frozenset()
                     ) -> list[Any]:
    """The live media nodes that may take a new stream, least loaded first: role ``media``, not draining,
    under ``max_streams`` (0: no cap); ordered by streams, then watermark encoders, then CPU, then node id
    (so that two portals ranking the same directory agree)."""
    eligible = [n for n in nodes if "media" in n.roles and not n.draining and n.node_id not in exclude
                and (not max_streams or n.load.streams < max_streams)]
    return sorted(eligible, key=lambda n: (n.load.streams, n.load.encoders, round(n.load.cpu, 2), n.node_id))


@dataclass
class _Plan:
    on: bool
    code: str | None

    def release(self) -> None:  # the encoder slot lives on the media node
        return None


@dataclass
class _Params:
    width: int | None
    height: int | None


@dataclass
class RemoteSession:
    """The portal's view of a viewer session on a media node (the fields the routes and the audit read)."""

    session_id: str
    node_id: str
    user_id: int
    username: str
    channel: ChannelRef
    client_ip: str | None
    created: float
    attach_deadline: float
    codec: str | None
    params: _Params | None
    plan: _Plan | None
    output_base: str | None  # the media node's public URL: the output URLs are absolute
    url_token: str | None  # the single-use output token the media node minted
    kind: str = "live"
    window: tuple[datetime, datetime] | None = None
    history_source: str | None = None
    output: str | None = None
    closed: bool = False
    state: dict | None = None
    stream: str = "main"  # live: "main" | "sub"
    extra: dict = field(default_factory=dict)
    moved: dict | None = None  # a drain moved it: {"node_id", "from", "at"} (the output URLs: moved_urls)
    opened_at: float = field(default_factory=time.monotonic)  # when this portal learned of it

    @property
    def device_id(self) -> str:
        return self.channel.device_id

    @property
    def channel_id(self) -> str:
        return self.channel.channel_id


class ClusterMedia:
    """The portal node's media: the part of :class:`media_relay.service.MediaService` the portal routes use,
    with each session on a media node of the cluster (see the module docstring)."""

    def __init__(self, bus: CommandBus, directory: Any, leases: Any, *, max_streams: int = 0,
                 timeout: float = 10.0, open_timeout: float = 30.0, refresh: float = 2.0,
                 lease_wait: float = 12.0, stale_after: float = 6.0) -> None:
        self.bus = bus
        self.lease_wait = lease_wait  # how long a new stream waits for a vanished owner's lease to run out
        # a media node whose heartbeat is older than this is taken for dead (killed): no new stream goes there
        # and no request waits for its answer (its entry stays in the directory until its ttl)
        self.stale_after = stale_after
        self.directory = directory
        self.leases = leases
        self.max_streams = max_streams
        self.timeout = timeout
        self.open_timeout = open_timeout
        self.sessions: dict[str, RemoteSession] = {}
        self.streams: list[dict[str, Any]] = []  # every media node's upstreams, refreshed every ``refresh`` s
        self._origins: list[str] = []  # the media nodes' public origins, refreshed with the streams
        # live.stop is recorded by the media node; this callback (the assembly's live.stop recorder) runs only
        # for the sessions of a media node that vanished from the directory (it could not record them)
        self.on_session_closed: Any = None
        self.recordings: Any = None
        self._tasks: set[asyncio.Task] = set()
        self._healing: set[str] = set()  # sessions whose missed move is being asked for
        self._refresh = PeriodicTask("cluster-streams", self.refresh_streams, interval=refresh, logger=log,
                                     failure_event="cluster_media.streams_failed")
        bus.subscribe(MEDIA_SESSIONS, self._on_session_event)

    async def start(self) -> None:
        self._refresh.start()

    async def close(self) -> None:
        await self._refresh.stop()
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # ------------------------------------------------------------------ placement
    async def place(self, channel: ChannelRef, *, exclude: set[str] | frozenset[str] = frozenset(),
                    stream: str = "main") -> list[str]:
        """The media nodes to try for a new live session of ``channel``'s ``stream``, in order: the holder of its
        ownership lease (its upstream is there), else the least-loaded live media nodes."""
        nodes = self._fresh(await self.directory.nodes())
        live = {n.node_id for n in nodes if "media" in n.roles}
        holder = await self.leases.holder(stream_lease(channel, stream))
        if holder is not None and holder in live and holder not in exclude:
            return [holder]
        return [n.node_id for n in rank_media_nodes(nodes, max_streams=self.max_streams, exclude=exclude)]

    def _fresh(self, nodes: list[Any]) -> list[Any]:
        now = datetime.now(UTC)
        return [n for n in nodes if (now - n.last_seen).total_seconds() <= self.stale_after]

    async def _alive(self, node_id: str) -> bool:
        info = await self.directory.get(node_id)
        return info is not None and "media" in info.roles and bool(self._fresh([info]))

    async def open_viewer(self, channel: ChannelRef, viewer: Any, *, kind: str = "live", transport: str = "udp",
                          window: tuple[datetime, datetime] | None = None, source: str = "device",
                          stream: str = "main") -> RemoteSession:
        """A viewer session of ``viewer`` on ``channel`` (its ``stream``, live) on the media node of that
        upstream (see :meth:`place`). Raises what :meth:`media_relay.service.MediaService.open_viewer` raises;
        ``no_media_node`` when no media node can take it."""
        channel = ChannelRef(*channel)
        if stream not in STREAMS:
            raise MediaError("bad_stream", f"码流无效 / unknown stream {stream!r}: main or sub")
        payload = {"device_id": channel.device_id, "channel_id": channel.channel_id, "kind": kind, "stream": stream,
                   "transport": transport, "source": source,
                   "window": [_iso(window[0]), _iso(window[1])] if window is not None else None,
                   "viewer": {"user_id": viewer.user_id, "username": viewer.username,
                              "display_name": viewer.display_name, "phone": viewer.phone,
                              "client_ip": viewer.client_ip, "roles": list(viewer.roles)}}
        tried: set[str] = set()
        waited = False
        candidates = await self.place(channel, stream=stream)
        while candidates:
            node_id = candidates.pop(0)
            if node_id in tried:
                continue
            tried.add(node_id)
            try:
                reply = await self._call_watching(node_id, "media.open_viewer", payload, self.open_timeout)
            except RemoteError as exc:
                code, _, extra = _unpack(exc)
                holder = extra.get("holder")
                if code == "stream_owned" and isinstance(holder, str) and holder not in tried:
                    if await self._alive(holder):
                        candidates.insert(0, holder)  # another node took the channel meanwhile: join it there
                        continue
                    tried.add(holder)  # a dead owner (killed): do not wait for its answer, wait for its lease
                if code == "stream_owned" and isinstance(holder, str) and not waited:
                    # the owner was tried and did not answer (killed): its lease runs out within its ttl,
                    # then the channel may start elsewhere
                    waited = True
                    await self._await_release(channel, holder, stream)
                    tried = {holder}
                    candidates = await self.place(channel, exclude=tried, stream=stream)
                    continue
                if code in ("node_full", "node_draining"):
                    if not candidates:
                        candidates = await self.place(channel, exclude=tried, stream=stream)
                    continue
                raise from_remote_media(exc) from None
            except BusError as exc:
                log.warning("cluster_media.node_failed", node=node_id, error=str(exc))
                if kind != "live" or not candidates:
                    candidates = await self.place(channel, exclude=tried, stream=stream)
                continue
            session = self._session(reply, node_id, channel, viewer, kind, window)
            session.stream = stream
            self.sessions[session.session_id] = session
            log.info("cluster_media.session_opened", session=session.session_id[:8], node=node_id,
                     channel=channel.key)
            return session
        raise MediaError("no_media_node", "没有可承载新流的媒体节点 / no media node can take a new stream")

    async def _call_watching(self, node_id: str, method: str, payload: dict, timeout: float) -> dict:
        """``bus.call`` that gives up as soon as the node's heartbeat stops (a killed node would otherwise hold
        the request for the whole timeout, an INVITE's worth): raises NodeUnavailable then."""
        task = asyncio.ensure_future(self.bus.call(node_id, method, payload, timeout=timeout))
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=1.0)
                if done:
                    return task.result()
                if not await self._alive(node_id):
                    raise NodeUnavailable(message=f"节点已无心跳 / node {node_id} stopped its heartbeat")
        finally:
            if not task.done():
                task.cancel()

    async def _await_release(self, channel: ChannelRef, holder: str, stream: str = "main") -> None:
        """Wait (at most ``lease_wait`` s) until ``holder`` no longer holds the lease of the channel's stream."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.lease_wait
        while loop.time() < give_up:  # polling Redis: a lease running out announces nothing
            if await self.leases.holder(stream_lease(channel, stream)) != holder:
                return
            await asyncio.sleep(0.25)

    def _session(self, reply: dict, node_id: str, channel: ChannelRef, viewer: Any, kind: str,
                 window: tuple[datetime, datetime] | None) -> RemoteSession:
        session_id = reply.get("session_id")
        if not isinstance(session_id, str) or not _ID.match(session_id):
            raise MediaError("media_node_failed", "媒体节点的应答无效 / invalid answer from the media node")
        http_url = reply.get("http_url") if isinstance(reply.get("http_url"), str) else None
        token = reply.get("url_token")
        plan = reply.get("plan")
        width, height = reply.get("width"), reply.get("height")
        codec = reply.get("codec")
        return RemoteSession(
            session_id=session_id, node_id=node_id, user_id=viewer.user_id, username=viewer.username,
            channel=channel, client_ip=viewer.client_ip, created=_number(reply.get("created")) or time.time(),
            attach_deadline=_number(reply.get("attach_deadline")) or time.time() + 60,
            codec=codec if isinstance(codec, str) and len(codec) <= 16 else None,
            params=_Params(width if isinstance(width, int) else None, height if isinstance(height, int) else None),
            plan=(_Plan(bool(plan.get("on")), plan.get("code") if isinstance(plan.get("code"), str) else None)
                  if isinstance(plan, dict) else None),
            output_base=http_url.rstrip("/") if http_url and _BASE_URL.match(http_url) else None,
            url_token=token if isinstance(token, str) and len(token) <= 80 else None,
            kind=kind, window=window,
            history_source=reply.get("history_source") if reply.get("history_source") in ("device", "platform")
            else None,
            state=reply.get("state") if isinstance(reply.get("state"), dict) else None)

    def _listed(self, item: Any, node_id: str, base: str | None) -> RemoteSession | None:
        """A session a media node listed (``media.streams``), validated; None when malformed."""
        if not isinstance(item, dict):
            return None
        try:
            channel = ChannelRef(_id(item, "device_id"), _id(item, "channel_id"))
            user_id = _int(item, "user_id", lo=0, hi=2**62)
            viewer = Viewer(user_id=int(user_id or 0), username=_text(item, "username", limit=200) or "",
                            client_ip=_text(item, "client_ip", limit=64))
        except RemoteError:
            return None
        kind = item.get("kind") if item.get("kind") in ("live", "playback") else "live"
        raw = item.get("window")
        window = (_when(raw[0]), _when(raw[1])) if isinstance(raw, list) and len(raw) == 2 else None
        if window is not None and (window[0] is None or window[1] is None):
            window = None
        try:
            session = self._session({**item, "http_url": base, "url_token": None, "state": None}, node_id, channel,
                                    viewer, kind, window)
        except MediaError:
            return None
        session.output = item.get("output") if item.get("output") in ("flv", "whep") else None
        session.stream = item.get("stream") if item.get("stream") in STREAMS else "main"
        return session

    def _merge_sessions(self, node_id: str, base: str | None, listed: Any, asked_at: float) -> None:
        """Sessions of ``node_id`` this portal did not know are added; those the node no longer has (and that
        existed before the question) are dropped: a missed ``media.sessions`` event heals here."""
        if not isinstance(listed, list):
            return
        seen: set[str] = set()
        for item in listed:
            session = self._listed(item, node_id, base)
            if session is None:
                continue
            seen.add(session.session_id)
            if isinstance(item, dict) and item.get("moved_to") is not None:
                # moved: its player is switching to the node it moved to; a portal that missed the ``moved``
                # event (restarted, pub/sub lost it) asks that node for the session's output URL now
                known = self.sessions.get(session.session_id)
                target = item.get("moved_to")
                if (known is not None and known.node_id == node_id and isinstance(target, str)
                        and _ID.match(target) and session.session_id not in self._healing):
                    self._healing.add(session.session_id)
                    self._spawn(self._heal_move(session.session_id, node_id, target))
                continue
            known = self.sessions.get(session.session_id)
            if known is None:
                self.sessions[session.session_id] = session
            elif known.node_id == node_id:
                known.output = session.output
        for session in [s for s in self.sessions.values() if s.node_id == node_id and s.session_id not in seen]:
            if session.opened_at < asked_at:
                self.sessions.pop(session.session_id, None)
                session.closed = True

    # ------------------------------------------------------------------ sessions
    def close_session(self, session_id: str, reason: str = "closed") -> bool:
        session = self.sessions.pop(session_id, None)
        if session is None:
            return False
        session.closed = True
        self._spawn(self._call_quietly(session.node_id, "media.close", {"session_id": session_id,
                                                                        "reason": reason}))
        return True

    async def end_session(self, session_id: str, reason: str, *, whep_only: bool = False) -> bool:
        session = self.sessions.get(session_id)
        if session is None:
            return False
        try:
            reply = await self.bus.call(session.node_id, "media.end", {"session_id": session_id, "reason": reason,
                                                                       "whep_only": whep_only},
                                        timeout=self.timeout)
        except BusError as exc:
            log.warning("cluster_media.end_failed", session=session_id[:8], error=str(exc))
            reply = {"ended": not whep_only}
        ended = reply.get("ended") is True
        if ended or not whep_only:
            self.sessions.pop(session_id, None)
            session.closed = True
        return ended

    def session_state(self, session_id: str) -> dict | None:
        """The session's state as last heard (opening, :meth:`control`, :meth:`refresh_states`)."""
        session = self.sessions.get(session_id)
        if session is None or session.closed:
            return None
        state = _state_from_json(session.state) if session.kind == "playback" else None
        if state is None:  # live (its state follows the output), or a playback session learned from a listing
            state = {"kind": session.kind, "state": "playing" if session.output else "waiting", "position": None,
                     "scale": 1.0, "paused": False, "window": session.window,
                     "source": session.history_source or "device"}
        return state

    async def refresh_state(self, session_id: str) -> dict | None:
        """Ask the session's media node for its state now."""
        session = self.sessions.get(session_id)
        if session is None:
            return None
        try:
            reply = await self.bus.call(session.node_id, "media.state", {"session_id": session_id},
                                        timeout=self.timeout)
        except BusError:
            return self.session_state(session_id)
        state = reply.get("state")
        if not isinstance(state, dict):
            self.sessions.pop(session_id, None)
            return None
        session.state = state
        return _state_from_json(state)

    async def control(self, session_id: str, action: str, *, position: float | None = None,
                      scale: float | None = None) -> dict[str, Any]:
        session = self.sessions.get(session_id)
        if session is None:
            raise MediaError("no_session", "会话不存在或已结束 / no such session")
        try:
            reply = await self.bus.call(session.node_id, "media.control",
                                        {"session_id": session_id, "action": action, "position": position,
                                         "scale": scale}, timeout=self.timeout)
        except BusError as exc:
            raise from_remote_media(exc) from None
        state = reply.get("state")
        session.state = state if isinstance(state, dict) else None
        return _state_from_json(session.state) or {}

    def describe_streams(self) -> list[dict[str, Any]]:
        """Every media node's upstreams (each item names its ``node_id``), as last refreshed."""
        return [dict(item) for item in self.streams]

    def origins(self) -> list[str]:
        """The media nodes' origins (``scheme://host:port``) the console's player fetches outputs from (its
        Content-Security-Policy), as last refreshed."""
        return list(self._origins)

    async def refresh_streams(self) -> None:
        """Every media node's upstreams (``media.streams``) and the media nodes' origins."""
        items: list[dict[str, Any]] = []
        origins: set[str] = set()
        for node in await self.directory.nodes():
            if "media" not in node.roles:
                continue
            origin = _origin(node.http_url)
            if origin is not None:
                origins.add(origin)
            asked_at = time.monotonic()
            try:
                reply = await self.bus.call(node.node_id, "media.streams", {}, timeout=self.timeout)
            except BusError:
                continue
            self._merge_sessions(node.node_id, node.http_url, reply.get("sessions"), asked_at)
            for item in reply.get("items") or []:
                if isinstance(item, dict) and isinstance(item.get("device_id"), str):
                    item["node_id"] = node.node_id
                    items.append(item)
        self.streams = items
        self._origins = sorted(origins)
        live = {n.node_id for n in await self.directory.nodes() if "media" in n.roles}
        for session in [s for s in self.sessions.values() if s.node_id not in live]:
            self._lost(session, "media node lost")

    def _lost(self, session: RemoteSession, reason: str) -> None:
        if self.sessions.pop(session.session_id, None) is None:
            return
        session.closed = True
        log.warning("cluster_media.session_lost", session=session.session_id[:8], node=session.node_id)
        if self.on_session_closed is not None:
            try:
                self.on_session_closed(session, reason)
            except Exception:
                log.exception("cluster_media.session_closed_failed", session=session.session_id[:8])

    async def open_reader(self, channel: ChannelRef, transport: str = "udp", stream: str = "main") -> Any:
        """Captures (downloads, the quality sampler) run on a node with the media role."""
        raise MediaError("media_remote", "本节点没有媒体角色，无法读取视频 / this node has no media role to read video")

    # ------------------------------------------------------------------ internals
    def _on_session_event(self, payload: dict) -> None:
        if isinstance(payload, dict) and payload.get("type") == "moved":
            self._on_moved(payload)
            return
        if not isinstance(payload, dict) or payload.get("type") != "closed":
            return
        session_id = payload.get("session_id")
        if isinstance(session_id, str):
            session = self.sessions.get(session_id)
            if session is not None and session.node_id == payload.get("node_id"):
                self.sessions.pop(session_id, None)
                session.closed = True

    def _on_moved(self, payload: dict) -> None:
        """A draining media node moved a session (``media.adopt`` answered): it now lives on ``to``, whose
        output URLs (and single-use token) :meth:`moved_urls` gives the session's player, which switches."""
        try:
            session_id, source, target = _id(payload, "session_id"), _id(payload, "node_id"), _id(payload, "to")
        except RemoteError:
            log.warning("cluster_media.bad_moved_event")
            return
        session = self.sessions.get(session_id)
        http_url, token = payload.get("http_url"), payload.get("url_token")
        if (session is None or session.node_id != source or not isinstance(http_url, str)
                or not _BASE_URL.match(http_url) or not isinstance(token, str) or not 0 < len(token) <= 80):
            return
        session.node_id = target
        session.output_base = http_url.rstrip("/")
        session.url_token = token
        session.output = None
        session.moved = {"node_id": target, "from": source, "at": time.time()}
        log.info("cluster_media.session_moved", session=session_id[:8], source=source, target=target)

    async def _heal_move(self, session_id: str, source: str, target: str) -> None:
        try:
            reply = await self.bus.call(target, "media.token", {"session_id": session_id}, timeout=self.timeout)
            self._on_moved({"type": "moved", "session_id": session_id, "node_id": source, "to": target,
                            "http_url": reply.get("http_url"), "url_token": reply.get("url_token")})
        except BusError as exc:
            log.warning("cluster_media.heal_move_failed", session=session_id[:8], target=target, error=str(exc))
        finally:
            self._healing.discard(session_id)

    def moved_urls(self, session_id: str) -> dict[str, Any] | None:
        """``{"node_id", "flv_url", "whep_url"}`` of a session that moved to another media node (None when it
        did not): the player opens one of them while the old output still plays, then drops the old one."""
        session = self.sessions.get(session_id)
        if session is None or session.moved is None or not session.url_token or not session.output_base:
            return None
        base, token = session.output_base, session.url_token
        return {"node_id": session.node_id, "flv_url": f"{base}/flv/{session_id}.flv?t={token}",
                "whep_url": f"{base}/whep/{session_id}?t={token}"}

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _call_quietly(self, node_id: str, method: str, payload: dict) -> None:
        try:
            await self.bus.call(node_id, method, payload, timeout=self.timeout)
        except BusError as exc:
            log.warning("cluster_media.call_failed", method=method, node=node_id, error=str(exc))


_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.\-]{1,253}(:[0-9]{1,5})?$|^https?://\[[0-9A-Fa-f:.]{2,45}\](:[0-9]{1,5})?$")


def _origin(url: Any) -> str | None:
    """``scheme://host[:port]`` of a node's advertised URL, or None when it is not a plain HTTP(S) URL (it
    arrives over Redis and ends up in a Content-Security-Policy header: nothing else may pass)."""
    if not isinstance(url, str) or len(url) > 300:
        return None
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    origin = f"{parts.scheme}://{parts.netloc}"
    return origin if _ORIGIN.match(origin) and "@" not in parts.netloc else None


def _state_from_json(state: dict | None) -> dict | None:
    if state is None:
        return None
    out = dict(state)
    window = out.get("window")
    if isinstance(window, list) and len(window) == 2:
        out["window"] = (_when(window[0]), _when(window[1]))
    return out
