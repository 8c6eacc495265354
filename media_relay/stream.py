"""One upstream Stream per channel, fanned out to many readers; the manager that starts and ends them.

Data path (all on the event loop, no copies beyond the demuxer's): RTP datagrams or RFC 4571 frames ->
:class:`media_relay.rtp.RtpPacket` -> reorder window -> :class:`media_relay.ps.PsDemuxer` -> access units
-> every reader's queue. The Stream keeps the access units since the latest keyframe, so a new reader
starts with a picture at once instead of waiting for the next GOP. A reader that falls behind (queue full)
skips to the next keyframe instead of growing memory or slowing the others.

Streams are keyed by :class:`gbcore.ids.ChannelRef` (device id, channel id): NVRs of two tenants routinely
report the same channel id, and each is its own camera with its own Stream.

The manager owns the lifecycle (MediaMTX-style on-demand source): the first viewer INVITEs the device,
the last one leaving starts an idle timer, and when it runs out the Stream sends BYE and frees its port
and SSRC. Media that never comes (5 s) and devices that refuse become errors the viewer can read.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from gbcore.ids import ChannelRef
from gbcore.log import get_logger
from media_relay.ports import NoPortsLeft, PortPool, SsrcAllocator
from media_relay.signalling import (
    STREAMS,
    DeviceOffline,
    DeviceRefused,
    DeviceWentOffline,
    HistoryRequest,
    MediaFileEnded,
    SessionEnded,
    Signalling,
    SignallingEvent,
    StreamNotOffered,
)
from media_relay.types import AccessUnit, AccessUnitIterator, VideoParams

log = get_logger("gbops.media")

TRANSPORTS = ("udp", "tcp-passive", "tcp-active")

#: a live upstream: one per (channel, encoder stream); the sub-stream of a channel is an upstream of its own
LiveKey = tuple[ChannelRef, str]


def live_key(channel: ChannelRef, stream: str = "main") -> LiveKey:
    """The key of ``channel``'s live upstream of ``stream`` ("main" | "sub"); ValueError for another stream."""
    if stream not in STREAMS:
        raise MediaError("bad_stream", f"码流无效 / unknown stream {stream!r}: main or sub")
    return (ChannelRef(*channel), stream)


class MediaError(Exception):
    """A live request that cannot be served; ``code`` is stable, the message is for people."""

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class StreamReader(AccessUnitIterator):
    """What an output (FLV, WHEP, a transcoder) reads: ``await get()`` access units, starting at a keyframe."""

    def __init__(self, stream: Stream, maxsize: int = 300) -> None:
        self.stream = stream
        self.maxsize = maxsize
        self._queue: deque[AccessUnit | None] = deque()
        self._waiter: asyncio.Future | None = None
        self.need_keyframe = True
        self.dropped = 0
        self.delivered = 0
        self.closed = False

    @property
    def codec(self) -> str | None:
        return self.stream.codec

    @property
    def params(self) -> VideoParams | None:
        return self.stream.params

    def _push(self, au: AccessUnit | None) -> None:
        if self.closed:
            return
        if au is not None:
            if self.need_keyframe and not au.keyframe:
                self.dropped += 1
                return
            if len(self._queue) >= self.maxsize:
                # too slow: drop what is queued and resume at the next keyframe
                self.dropped += len(self._queue)
                self._queue.clear()
                self.need_keyframe = True
                if not au.keyframe:
                    return
            self.need_keyframe = False
        self._queue.append(au)
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def get(self) -> AccessUnit:
        while not self._queue:
            if self.closed:
                raise EOFError("stream closed")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        au = self.get_nowait()
        assert au is not None  # the queue was not empty
        return au

    def get_nowait(self) -> AccessUnit | None:
        """The next queued access unit without waiting, None when none is queued (EOFError at the end): an
        output that woke up for one unit takes the others that came with it in the same write."""
        if not self._queue:
            if self.closed:
                raise EOFError("stream closed")
            return None
        au = self._queue.popleft()
        if au is None:
            self.closed = True
            raise EOFError("stream ended")
        self.delivered += 1
        return au

    def resync(self) -> None:
        """Drop what is queued and start again at the Stream's latest keyframe (an output attaching late
        must not begin with seconds of backlog: that would be latency forever)."""
        self._queue.clear()
        self.need_keyframe = True
        for au in self.stream.gop:
            self._push(au)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.stream.remove_reader(self)
            w = self._waiter
            if w is not None and not w.done():
                w.set_result(None)


class Stream:
    """The upstream of one channel: receives RTP, demuxes PS, fans access units out."""

    def __init__(self, channel: ChannelRef, transport: str, *, port: int, ssrc: str, gop_limit: int = 600,
                 stream: str = "main") -> None:
        from media_relay.ps import PsDemuxer
        from media_relay.rtp import ReorderBuffer, RtpStats

        self.channel = ChannelRef(*channel)
        self.stream = stream  # "main" | "sub": the encoder stream the device was asked for
        self.channel_id = self.channel.channel_id
        self.device_id = self.channel.device_id
        self.transport = transport
        self.port = port
        self.ssrc = ssrc
        self.call_id: str | None = None
        self.since = time.time()
        self.readers: set[StreamReader] = set()
        self.demuxer = PsDemuxer()
        self.reorder = ReorderBuffer()
        self.stats = RtpStats()
        self.gop: list[AccessUnit] = []
        self.gop_limit = gop_limit
        self.first_packet = asyncio.get_running_loop().create_future()
        self.first_keyframe = asyncio.get_running_loop().create_future()
        self.closed = False
        self.close_reason: str | None = None
        self.foreign_ssrc_packets = 0
        self._ssrc_int = int(ssrc) if ssrc.isdigit() else None
        self._pts_seen: deque[int] = deque(maxlen=50)
        self.video_frames = 0
        self.audio_frames = 0
        self.ingest: Any = None  # the socket adapter, closed with the stream
        self.on_idle: Any = None  # callback(stream) when its last reader leaves (the manager's idle timer)
        # history (s=Playback / s=Download): what was asked, the filter every unit goes through before the
        # fan-out (media_relay.playback.Timeline: re-timing, fast-playback keyframes), the answer's filesize
        self.history: HistoryRequest | None = None
        self.timeline: Any = None
        self.filesize: int | None = None
        self.last_packet: float | None = None  # monotonic time of the last RTP packet
        self.ending = False  # the device said the file ended: draining before BYE

    # ------------------------------------------------------------------ properties shown in /api/streams
    @property
    def codec(self) -> str | None:
        return self.demuxer.video_codec

    @property
    def params(self) -> VideoParams | None:
        return self.demuxer.video_params

    def fps(self) -> float | None:
        p = self._pts_seen
        if len(p) < 5:
            return None
        span = (p[-1] - p[0]) & ((1 << 33) - 1)
        return round((len(p) - 1) * 90000 / span, 2) if span else None

    def describe(self, now: float) -> dict[str, Any]:
        params = self.params
        st = self.stats.snapshot(now)
        return {
            "channel_id": self.channel_id,
            "device_id": self.device_id,
            "stream": self.stream,
            "transport": self.transport,
            "ssrc": self.ssrc,
            "port": self.port,
            "codec": self.codec,
            "width": params.width if params else None,
            "height": params.height if params else None,
            "fps": self.fps(),
            "bitrate": st.get("bitrate"),
            "packets": st.get("packets"),
            "lost": st.get("lost"),
            "loss_fraction": st.get("loss_fraction"),
            "jitter_ms": round(st["jitter"] * 1000, 2) if st.get("jitter") is not None else None,
            "viewers": len(self.readers),
            "video_frames": self.video_frames,
            "since": self.since,
        }

    # ------------------------------------------------------------------ input (from the ingest adapters)
    def on_rtp(self, data: bytes, now: float) -> None:
        from media_relay.rtp import RtpError, RtpPacket

        if self.closed:
            return
        try:
            pkt = RtpPacket.parse(data)
        except RtpError:
            return
        if self._ssrc_int is not None and pkt.ssrc != self._ssrc_int:
            self.foreign_ssrc_packets += 1
            if self.foreign_ssrc_packets == 50 and self.stats.snapshot(now).get("packets", 0) == 0:
                # the port is ours alone: a device that sends another SSRC than it answered is adopted,
                # with a warning (seen with some NVR firmwares)
                log.warning("media.ssrc_adopted", channel=self.channel.key, answered=self.ssrc,
                            received=pkt.ssrc)
                self._ssrc_int = pkt.ssrc
            else:
                return
        self.stats.update(pkt, now)
        self.last_packet = now
        if not self.first_packet.done():
            self.first_packet.set_result(now)
        lost_before = self.reorder.lost
        released = self.reorder.push(pkt, now)
        if self.reorder.lost != lost_before:
            self.demuxer.discontinuity()  # a frame with a hole would decode as garbage: drop it
        for p in released:
            self._on_packet(p)

    def _on_packet(self, pkt: Any) -> None:
        aus = self.demuxer.feed(pkt.payload)
        if pkt.marker:
            aus.extend(self.demuxer.flush())
        self._deliver(aus)

    def _deliver(self, aus: list[AccessUnit]) -> None:
        timeline = self.timeline
        for au in aus:
            if timeline is not None:
                au = timeline.feed(au)
                if au is None:
                    continue
            self._on_au(au)

    def finish(self) -> None:
        """Hand out what is still buffered (reorder window, the demuxer's last unit): the end of a file."""
        if self.closed:
            return
        for pkt in self.reorder.flush():
            self._on_packet(pkt)
        self._deliver(self.demuxer.flush(eof=True))

    def _on_au(self, au: AccessUnit) -> None:
        if au.kind != "video":
            self.audio_frames += 1
            for r in tuple(self.readers):  # audio to every reader too (not kept in the GOP)
                r._push(au)
            return
        self.video_frames += 1
        if au.pts is not None:
            self._pts_seen.append(au.pts)
        if au.keyframe:
            self.gop = [au]
            if not self.first_keyframe.done():
                self.first_keyframe.set_result(time.monotonic())
        elif self.gop:
            if len(self.gop) < self.gop_limit:
                self.gop.append(au)
            else:
                self.gop = []  # a GOP this long is broken; wait for the next keyframe
        for r in tuple(self.readers):
            r._push(au)

    # ------------------------------------------------------------------ readers
    def add_reader(self, maxsize: int = 300) -> StreamReader:
        r = StreamReader(self, maxsize)
        for au in self.gop:
            r._push(au)
        self.readers.add(r)
        return r

    def remove_reader(self, reader: StreamReader) -> None:
        self.readers.discard(reader)
        if self.on_idle is not None and not self.readers:
            self.on_idle(self)

    def close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        for r in tuple(self.readers):
            r._push(None)
        self.readers.clear()
        if self.ingest is not None:
            self.ingest.close()
        for fut in (self.first_packet, self.first_keyframe):
            if not fut.done():
                fut.set_exception(MediaError("stream_closed", reason))
                fut.exception()  # retrieved: no "never retrieved" warning


# ====================================================================== ingest adapters (asyncio)
class _UdpIngest(asyncio.DatagramProtocol):
    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        self.stream.on_rtp(data, time.monotonic())

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class _TcpIngest(asyncio.Protocol):
    """RFC 4571 framed RTP over one TCP connection (either direction)."""

    def __init__(self, stream: Stream, on_lost=None) -> None:
        from media_relay.rtp import Rfc4571Framer

        self.stream = stream
        self.framer = Rfc4571Framer()
        self.transport: asyncio.Transport | None = None
        self.on_lost = on_lost

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        try:
            frames = self.framer.feed(data)
        except ValueError:
            self.transport.close()
            return
        for frame in frames:
            self.stream.on_rtp(frame, now)

    def connection_lost(self, exc) -> None:
        if self.on_lost is not None:
            self.on_lost(self)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class _TcpServerIngest:
    """tcp-passive: we listen on the port we offered; the device connects (one connection is used)."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.server: asyncio.AbstractServer | None = None
        self.conns: list[_TcpIngest] = []

    async def start(self, host: str, port: int) -> None:
        def factory():
            proto = _TcpIngest(self.stream, on_lost=self._lost)
            self.conns.append(proto)
            return proto

        self.server = await asyncio.get_running_loop().create_server(factory, host, port, reuse_address=True)

    def _lost(self, proto: _TcpIngest) -> None:
        if proto in self.conns:
            self.conns.remove(proto)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for c in list(self.conns):
            c.close()


# ====================================================================== manager
@dataclass
class _Pending:
    stream: Stream
    ready: asyncio.Future


class StreamManager:
    """Finds or starts the channel's Stream; INVITE on the first viewer, BYE after the idle delay."""

    def __init__(self, signalling: Signalling, *, ports: PortPool, ssrcs: SsrcAllocator, media_host: str = "0.0.0.0",
                 media_ip: str | None = None, idle_timeout: float = 15.0, media_timeout: float = 5.0,
                 keyframe_timeout: float = 10.0, history_idle: float = 1.0, drain_quiet: float = 0.3,
                 drain_max: float = 3.0) -> None:
        self.signalling = signalling
        self.ports = ports
        self.ssrcs = ssrcs
        self.media_host = media_host
        self.media_ip = media_ip
        self.idle_timeout = idle_timeout
        self.media_timeout = media_timeout
        self.keyframe_timeout = keyframe_timeout
        self.streams: dict[LiveKey, Stream] = {}  # (channel, "main" | "sub") -> its live upstream
        self._starting: dict[LiveKey, asyncio.Task] = {}
        self._idle: dict[LiveKey, asyncio.TimerHandle] = {}
        self.invites_sent = 0
        # history Streams (playback, download): one per session, not shared, not in ``streams``
        self.history: set[Stream] = set()
        self.history_idle = history_idle  # the last reader left: BYE after this (a composition re-opening)
        self.drain_quiet = drain_quiet  # MediaStatus 121: BYE once no packet came for this long ...
        self.drain_max = drain_max  # ... or after this at most
        self._history_idle: dict[Stream, asyncio.TimerHandle] = {}
        self._drains: set[asyncio.Task] = set()
        signalling.subscribe(self._on_signalling_event)

    # ------------------------------------------------------------------ public
    def live(self, channel: ChannelRef, stream: str = "main") -> Stream | None:
        """The open live upstream of ``channel``'s ``stream``, None when there is none."""
        found = self.streams.get((ChannelRef(*channel), stream))
        return found if found is not None and not found.closed else None

    async def open_reader(self, channel: ChannelRef, transport: str = "udp", stream: str = "main") -> StreamReader:
        """A reader on the live Stream of ``channel`` (that device's channel) and ``stream`` (its main stream,
        or its sub-stream: an upstream of its own), starting the Stream when it is the first viewer.

        Raises :class:`MediaError` (device offline, refused, no media, no ports left, no sub-stream)."""
        if not isinstance(channel, tuple) or len(channel) != 2:
            raise TypeError(f"open_reader needs a ChannelRef (device id, channel id), not {channel!r}")
        key = live_key(channel, stream)
        if transport not in TRANSPORTS:
            raise MediaError("bad_transport", f"传输方式无效 / unknown transport {transport!r}")
        found = self.streams.get(key)
        if found is None or found.closed:
            task = self._starting.get(key)
            if task is None:
                task = asyncio.ensure_future(self._start(key[0], transport, stream_kind=stream))
                self._starting[key] = task
                task.add_done_callback(lambda _t, c=key: self._starting.pop(c, None))
            found = await asyncio.shield(task)
        idle = self._idle.pop(key, None)
        if idle is not None:
            idle.cancel()
        return found.add_reader()

    async def open_history(self, channel: ChannelRef, history: HistoryRequest, *, transport: str = "udp",
                           timeline: Any = None) -> Stream:
        """A history Stream of its own for ``channel`` (``s=Playback`` / ``s=Download``, an SSRC beginning
        with ``1``), started (media and a keyframe arrived); ``timeline`` filters its units. The caller adds
        readers and ends it with :meth:`end_history` (also when the last reader leaves, after
        ``history_idle``). Raises :class:`MediaError`."""
        if not isinstance(channel, tuple) or len(channel) != 2:
            raise TypeError(f"open_history needs a ChannelRef (device id, channel id), not {channel!r}")
        if transport not in TRANSPORTS:
            raise MediaError("bad_transport", f"传输方式无效 / unknown transport {transport!r}")
        return await self._start(ChannelRef(*channel), transport, history=history, timeline=timeline)

    def end_history(self, stream: Stream, reason: str) -> None:
        """End a history Stream now: readers get EOF after what they have queued, BYE, port and SSRC free."""
        self._teardown(stream, reason)

    def close_all(self, reason: str = "platform stopping") -> None:
        for stream in list(self.streams.values()) + list(self.history):
            self._teardown(stream, reason)
        for task in list(self._drains):
            task.cancel()

    def describe(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [s.describe(now) for s in self.streams.values() if not s.closed]

    # ------------------------------------------------------------------ lifecycle
    def _media_ip_for(self, device_addr: tuple[str, int]) -> str:
        if self.media_ip:
            return self.media_ip
        if self.media_host not in ("0.0.0.0", "::", ""):
            return self.media_host
        import socket

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # no packet is sent
            try:
                s.connect(device_addr)
                return s.getsockname()[0]
            except OSError:
                return "127.0.0.1"

    async def _start(self, ref: ChannelRef, transport: str, *, history: HistoryRequest | None = None,
                     timeline: Any = None, stream_kind: str = "main") -> Stream:
        device_id, channel_id = ref
        what = "直播 / the live stream" if history is None else "回放 / the history stream"
        prepare = getattr(self.signalling, "prepare", None)  # optional (see media_relay.signalling)
        if prepare is not None:
            await prepare(device_id)
        device_addr = self.signalling.route_address(device_id)
        if device_addr is None or not self.signalling.is_online(device_id):
            raise MediaError("device_offline", f"设备不在线 / the device is offline: {device_id}")
        try:
            port = self.ports.allocate()
        except NoPortsLeft as exc:
            raise MediaError("no_ports", str(exc)) from None
        try:
            ssrc = self.ssrcs.allocate(history=history is not None)
        except NoPortsLeft as exc:
            self.ports.release(port)
            raise MediaError("no_ports", str(exc)) from None
        loop = asyncio.get_running_loop()
        stream = Stream(ref, transport, port=port, ssrc=ssrc, stream=stream_kind)
        if history is None:
            stream.on_idle = self._on_idle
        else:
            stream.history = history
            stream.timeline = timeline
            stream.on_idle = self._on_history_idle
            self.history.add(stream)
        try:
            if transport == "udp":
                _, proto = await loop.create_datagram_endpoint(lambda: _UdpIngest(stream),
                                                              local_addr=(self.media_host, port))
                stream.ingest = proto
            elif transport == "tcp-passive":
                ingest = _TcpServerIngest(stream)
                await ingest.start(self.media_host, port)
                stream.ingest = ingest
            media_ip = self._media_ip_for(device_addr)
            if history is None:
                # the main stream names no stream: a signalling that knows no sub-streams serves it unchanged
                extra = {"stream": stream_kind} if stream_kind != "main" else {}
                answered = await self.signalling.invite(ref, media_ip=media_ip, media_port=port, ssrc=ssrc,
                                                        transport=transport, **extra)
            else:
                answered = await self.signalling.invite(ref, media_ip=media_ip, media_port=port, ssrc=ssrc,
                                                        transport=transport, history=history)
                stream.filesize = answered.filesize
            self.invites_sent += 1
            stream.call_id = answered.call_id
            if answered.ssrc != ssrc:
                log.info("media.ssrc_changed", channel_id=channel_id, offered=ssrc, answered=answered.ssrc)
                self.ssrcs.adopt(answered.ssrc)
                self.ssrcs.release(ssrc)
                stream.ssrc = answered.ssrc
                stream._ssrc_int = int(answered.ssrc)
            if transport == "tcp-active":
                if answered.remote_media is None:
                    raise MediaError("bad_answer", "设备应答中没有媒体地址 / the answer has no media address")
                # Some NVRs open their listener just after answering: retry, 1 s apart, at least 3
                # attempts and on for the media timeout (GB/T 28181 suggests retrying the connection).
                give_up = loop.time() + max(self.media_timeout, 2.0)
                attempt = 0
                while True:
                    attempt += 1
                    try:
                        _, proto = await asyncio.wait_for(
                            loop.create_connection(lambda: _TcpIngest(stream), *answered.remote_media),
                            max(1.0, min(5.0, give_up - loop.time())))
                        break
                    except (OSError, TimeoutError) as exc:
                        if attempt >= 3 and loop.time() + 1.0 > give_up:
                            raise MediaError("start_failed", f"无法连接设备的媒体端口（{attempt} 次）/ cannot connect "
                                             f"to the device's media port after {attempt} attempts: {exc}") from None
                        log.info("media.tcp_active_retry", channel_id=channel_id, attempt=attempt, error=str(exc))
                        await asyncio.sleep(1.0)
                stream.ingest = proto
            if history is None:
                self.streams[(ref, stream_kind)] = stream
            try:
                await asyncio.wait_for(asyncio.shield(stream.first_packet), self.media_timeout)
            except TimeoutError:
                raise MediaError("no_media", f"{self.media_timeout:.0f} 秒内未收到设备的媒体流 / no media from "
                                 f"the device within {self.media_timeout:.0f} s") from None
            try:
                await asyncio.wait_for(asyncio.shield(stream.first_keyframe), self.keyframe_timeout)
            except TimeoutError:
                raise MediaError("no_keyframe", "收到媒体但无法解析出关键帧 / media arrives but no decodable "
                                 f"keyframe within {self.keyframe_timeout:.0f} s") from None
            log.info("stream.started", channel_id=channel_id, device_id=device_id, transport=transport,
                     ssrc=stream.ssrc, port=port, codec=stream.codec,
                     history=history.kind if history is not None else None)
            return stream
        except BaseException as exc:
            reason = str(exc) if isinstance(exc, MediaError) else f"start failed: {exc!r}"
            self._teardown(stream, reason)
            if isinstance(exc, MediaError | asyncio.CancelledError):
                raise
            if isinstance(exc, DeviceRefused):  # SignallingTimeout too: a refusal without a status
                if history is None:
                    raise MediaError("device_refused", str(exc), exc.status) from None
                said = f"{exc.status} {exc}" if exc.status is not None else str(exc)
                raise MediaError("device_refused", f"设备拒绝了录像请求 / the device refused the history request: "
                                 f"{said}", exc.status) from None
            if isinstance(exc, DeviceOffline):
                raise MediaError("device_offline", f"设备不在线 / the device is offline: {device_id}") from None
            if isinstance(exc, StreamNotOffered):
                raise MediaError("no_sub_stream", str(exc)) from None
            cn, en = what.split(" / ")
            raise MediaError("start_failed", f"无法开始{cn} / cannot start {en}: {exc}") from None

    def _on_idle(self, stream: Stream) -> None:
        if stream.closed or stream.readers:
            return
        key = (stream.channel, stream.stream)
        old = self._idle.pop(key, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        self._idle[key] = loop.call_later(self.idle_timeout, self._idle_expired, stream)

    def _idle_expired(self, stream: Stream) -> None:
        self._idle.pop((stream.channel, stream.stream), None)
        if not stream.readers:
            self._teardown(stream, "idle: no viewer left")

    def _on_history_idle(self, stream: Stream) -> None:
        if stream.closed or stream.readers:
            return
        old = self._history_idle.pop(stream, None)
        if old is not None:
            old.cancel()
        self._history_idle[stream] = asyncio.get_running_loop().call_later(
            self.history_idle, self._history_idle_expired, stream)

    def _history_idle_expired(self, stream: Stream) -> None:
        self._history_idle.pop(stream, None)
        if not stream.readers:
            self._teardown(stream, "no reader left")

    def _drain_then_end(self, stream: Stream) -> None:
        """The device's file ended: take what still arrives (until the port is quiet), hand out what is
        buffered, then end (readers get EOF after their queue) and BYE."""
        if stream.ending or stream.closed:
            return
        stream.ending = True

        async def drain() -> None:
            loop = asyncio.get_running_loop()
            give_up = loop.time() + self.drain_max
            while not stream.closed:
                last = stream.last_packet
                quiet = time.monotonic() - last if last is not None else self.drain_quiet
                left = give_up - loop.time()
                if quiet >= self.drain_quiet or left <= 0:
                    break
                await asyncio.sleep(min(self.drain_quiet - quiet, left))
            if not stream.closed:
                stream.finish()
                self._teardown(stream, "end of file (MediaStatus 121)")

        task = asyncio.ensure_future(drain())
        self._drains.add(task)
        task.add_done_callback(self._drains.discard)

    def _teardown(self, stream: Stream, reason: str) -> None:
        key = (stream.channel, stream.stream)
        if self.streams.get(key) is stream:
            del self.streams[key]
        self.history.discard(stream)
        idle = self._history_idle.pop(stream, None)
        if idle is not None:
            idle.cancel()
        was_open = not stream.closed
        stream.close(reason)
        if stream.call_id is not None:
            self.signalling.bye(stream.call_id, reason)
            stream.call_id = None
        if was_open:
            self.ports.release(stream.port)
            self.ssrcs.release(stream.ssrc)
            log.info("stream.closed", channel=stream.channel.key, reason=reason)

    def _on_signalling_event(self, event: SignallingEvent) -> None:
        if isinstance(event, SessionEnded):
            if event.by != "device":
                return
            ref = ChannelRef(*event.channel)
            stream = next((s for s in (self.streams.get((ref, k)) for k in STREAMS)
                           if s is not None and s.call_id == event.call_id), None)
            if stream is None:
                stream = self._history_call(event.call_id)
            if stream is not None:
                stream.call_id = None
                if stream.history is not None:
                    stream.finish()  # a device ending a history call: what arrived is still played
                self._teardown(stream, event.reason)
        elif isinstance(event, MediaFileEnded):
            stream = self._history_call(event.call_id)
            if stream is None:
                log.info("media.file_end_unknown_call", call_id=event.call_id)
                return
            self._drain_then_end(stream)
        elif isinstance(event, DeviceWentOffline):
            streams = [s for s in list(self.streams.values()) + list(self.history) if s.device_id == event.device_id]
            for stream in streams:
                self._teardown(stream, f"device offline: {event.reason}")

    def _history_call(self, call_id: str) -> Stream | None:
        for stream in self.history:
            if stream.call_id is not None and stream.call_id == call_id:
                return stream
        return None
