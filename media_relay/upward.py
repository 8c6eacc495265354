"""Media legs toward upper GB/T 28181 platforms (cascade): a channel's video sent up as RTP/PS.

``MediaService.open_upward`` composes a leg's source the way a viewer's is composed (the platform is the
viewer: the signed session tag always, the visible watermark when asked for) on a reader of the channel's
shared Stream, and hands it to an :class:`UpwardLeg`. The leg re-muxes every access unit to one PS pack
(:class:`media_relay.ps.PsMuxer`: system header and PSM with each keyframe), splits it into RTP packets
(:func:`media_relay.rtp.packetize_ps`: 90 kHz timestamps from the unit's PTS, the marker on the last packet
of a unit, our SSRC) and sends them over one of:

* UDP from a bound port of the media port pool (the port the SDP answer names);
* TCP active: we connect to the upper (retrying with back-off for a while: uppers often open their
  listener only after our 200), RFC 4571 framing;
* TCP passive: we listen on a pool port before answering and take the first connection from the upper's
  address (later ones, and any from elsewhere, are closed); nobody connecting in time ends the leg.

Nothing is sent before :meth:`UpwardLeg.start` (the ACK). A live leg begins at the next keyframe, never
with a backlog; a history leg (playback, download) from the first unit of its own Stream, which its reader
keeps until then. A slow TCP peer (or a full UDP socket buffer) drops units until the next keyframe instead of
growing memory (a history leg waits instead: its source is read no faster than the upper takes it). The leg ends by itself (``on_end(reason)``, once) when the upstream ends, the TCP peer
goes, the passive accept times out, the active connect gives up, or UDP sends keep failing (ICMP port
unreachable for ``udp_error_limit`` seconds).
"""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from gbcore.ids import ChannelRef
from gbcore.log import get_logger
from media_relay.nal import param_sets, split_annexb
from media_relay.outputs.flv import audio_codec_of, next_au
from media_relay.ps import PsError, PsMuxer
from media_relay.rtp import Rfc4571Framer, packetize_ps
from media_relay.types import AccessUnit

log = get_logger("gbops.media")

__all__ = ["UPWARD_TRANSPORTS", "UpwardLeg", "UpwardTarget", "check_target"]

UPWARD_TRANSPORTS = ("udp", "tcp")
_PARAM_NAMES = {"h264": ("sps", "pps"), "h265": ("vps", "sps", "pps")}
_AUDIO_CODECS = ("aac", "g711a", "g711u")
_FRAME_TICKS = 3600  # 90 kHz ticks of one picture at 25 fps: the timestamp step when a unit has none


@dataclass(frozen=True)
class UpwardTarget:
    ip: str  # where the upper receives
    port: int
    transport: str  # "udp" | "tcp"
    setup: str | None  # OUR role for TCP: "active" (we connect, retrying) | "passive" (we listen)
    ssrc: int
    payload_type: int = 96


def check_target(target: UpwardTarget) -> str | None:
    """Why ``target`` (from the upper's SDP) cannot be served, or None when it can."""
    if target.transport not in UPWARD_TRANSPORTS:
        return f"unknown transport {target.transport!r}"
    if target.transport == "tcp" and target.setup not in ("active", "passive"):
        return f"TCP needs setup active or passive, not {target.setup!r}"
    if not isinstance(target.ssrc, int) or not 0 <= target.ssrc <= 0xFFFFFFFF:
        return "SSRC out of range"
    if not isinstance(target.payload_type, int) or not 0 <= target.payload_type <= 127:
        return "payload type out of range"
    needs_address = not (target.transport == "tcp" and target.setup == "passive")
    if not isinstance(target.port, int) or not (1 if needs_address else 0) <= target.port <= 65535:
        return f"bad port {target.port!r}"
    try:
        address = ipaddress.ip_address(target.ip)
    except ValueError:
        return f"not an IP address: {target.ip!r}"
    if needs_address and (address.is_unspecified or address.is_multicast):
        return f"cannot send to {target.ip}"
    return None


def with_parameter_sets(au: AccessUnit, params: Any) -> bytes:
    """A keyframe's bytes with the parameter sets it lacks in front (from ``params``), so the upper can
    decode from this pack on."""
    names = _PARAM_NAMES.get(au.codec)
    if names is None or params is None or getattr(params, "codec", None) != au.codec:
        return au.data
    found = param_sets(au.codec, split_annexb(au.data))
    missing = [getattr(params, n) for n in names if n not in found]
    if not missing or any(m is None for m in missing):
        return au.data
    return b"".join(b"\x00\x00\x00\x01" + nal for nal in missing) + au.data


class _UdpSender(asyncio.DatagramProtocol):
    def __init__(self, leg: UpwardLeg) -> None:
        self.leg = leg

    def datagram_received(self, data: bytes, addr: Any) -> None:
        pass  # RTCP or anything else from the upper: not used

    def error_received(self, exc: Exception) -> None:
        self.leg._udp_error(exc)

    def pause_writing(self) -> None:
        self.leg._writable.clear()

    def resume_writing(self) -> None:
        self.leg._writable.set()


class _TcpSender(asyncio.Protocol):
    def __init__(self, leg: UpwardLeg) -> None:
        self.leg = leg
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.leg._tcp_made(self)

    def data_received(self, data: bytes) -> None:
        pass  # RTCP from the upper: read and dropped, never buffered

    def connection_lost(self, exc: Exception | None) -> None:
        self.leg._tcp_lost(self, exc)

    def pause_writing(self) -> None:
        if self.leg._tcp is self:
            self.leg._writable.clear()

    def resume_writing(self) -> None:
        if self.leg._tcp is self:
            self.leg._writable.set()


class UpwardLeg:
    """RTP/PS toward one upper, RFC 4571 framing over TCP. Made by ``MediaService.open_upward``."""

    def __init__(self, leg_id: str, channel: ChannelRef, target: UpwardTarget, source: Any, *,
                 local_ip: str, local_port: int, host: str = "0.0.0.0", reader: Any = None, kind: str = "live",
                 on_end: Callable[[str], None] | None = None, cleanup: Iterable[Callable[[], None]] = (),
                 connect_timeout: float = 10.0, accept_timeout: float = 10.0, max_buffer: int = 2 << 20,
                 udp_error_limit: float = 20.0, mtu_payload: int = 1400) -> None:
        problem = check_target(target)
        if problem is not None:
            raise ValueError(problem)
        self.id = leg_id
        self.channel = ChannelRef(*channel)
        self.target = target
        self.source = source
        self.reader = reader  # the Stream reader under ``source`` (closed with the leg)
        self.kind = kind
        self.local_ip = local_ip
        self.local_port = local_port
        self.host = host
        self.ssrc = target.ssrc
        self.on_end = on_end
        self.connect_timeout = connect_timeout
        self.accept_timeout = accept_timeout
        self.max_buffer = max_buffer
        self.udp_error_limit = udp_error_limit
        self.mtu_payload = mtu_payload
        self._cleanup = list(cleanup)
        # counters (stats)
        self.packets = 0
        self.bytes = 0
        self.units = 0
        self.dropped = 0  # units dropped for backpressure
        self.send_errors = 0
        self.connect_attempts = 0
        self.refused_peers = 0  # TCP passive: connections from other addresses than the upper's, closed
        self.started_at: float | None = None
        self.opened_at = time.time()
        self.end_reason: str | None = None
        self.file_ended = False  # a history leg ended at the end of its file (not an error)
        # sending state
        self._started = False
        self._closed = False
        self._need_keyframe = True
        self._muxer: PsMuxer | None = None
        self._audio_seen: str | None = None
        self._psm_version = 0
        self._seq = secrets.randbelow(1 << 16)
        self._last_ts: int | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: _TcpSender | None = None
        self._server: asyncio.AbstractServer | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task] = set()
        self._error_since: float | None = None
        self._last_error = 0.0
        self._pending_close: Any = None
        self._go = asyncio.Event()  # started and the transport is up (history legs read from then on)
        self._writable = asyncio.Event()  # the transport's buffer is below its high-water mark
        self._writable.set()

    # ------------------------------------------------------------------ public
    @property
    def transport(self) -> str:
        return self.target.transport

    @property
    def setup(self) -> str | None:
        return self.target.setup if self.target.transport == "tcp" else None

    @property
    def codec(self) -> str | None:
        return getattr(self.source, "codec", None)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def state(self) -> str:
        """"waiting" (no ACK yet), "connecting" (TCP not up yet), "sending" or "ended"."""
        if self._closed:
            return "ended"
        if self.target.transport == "tcp" and self._tcp is None:
            return "connecting"
        return "sending" if self._started else "waiting"

    async def open(self) -> None:
        """Bind (UDP), listen (TCP passive) or begin connecting (TCP active), and start reading the
        source; nothing is sent before :meth:`start`. Raises ``OSError`` when the port cannot be bound."""
        loop = asyncio.get_running_loop()
        if self.target.transport == "udp":
            family = socket.AF_INET6 if ipaddress.ip_address(self.target.ip).version == 6 else socket.AF_INET
            self._udp, _ = await loop.create_datagram_endpoint(
                lambda: _UdpSender(self), local_addr=(_bind_host(self.host, family), self.local_port),
                remote_addr=(self.target.ip, self.target.port))
            self._udp.set_write_buffer_limits(high=self.max_buffer // 2)
        elif self.target.setup == "passive":
            self._server = await loop.create_server(lambda: _TcpSender(self), self.host, self.local_port,
                                                    reuse_address=True)
            self._timer = loop.call_later(self.accept_timeout, self._accept_expired)
        else:
            self._spawn(self._connect(), "upward-connect")
        self._spawn(self._pump(), "upward-pump")
        log.info("cascade.leg_opened", leg=self.id[:8], channel=self.channel.key, transport=self.transport,
                 setup=self.setup, target=f"{self.target.ip}:{self.target.port}", local_port=self.local_port,
                 ssrc=self.ssrc)

    def start(self) -> None:
        """Begin sending (the upper's ACK), from the next keyframe; idempotent."""
        if self._started or self._closed:
            return
        self._started = True
        self.started_at = time.time()
        self._need_keyframe = True
        self._request_keyframe()
        if self._ready():
            self._go.set()
        log.info("cascade.leg_started", leg=self.id[:8], channel=self.channel.key, state=self.state)

    async def close(self, reason: str = "closed") -> None:
        """End the leg: stop sending, release the reader, the plan, the socket and the port; idempotent.
        ``on_end`` is not called (the caller knows)."""
        self._teardown(reason)
        pending, self._pending_close = self._pending_close, None
        if pending is not None:
            try:
                await pending
            except Exception:  # noqa: BLE001 - tear-down must not fail the caller
                log.exception("cascade.leg_source_close_failed", leg=self.id[:8])

    def stats(self) -> dict[str, Any]:
        return {"packets": self.packets, "bytes": self.bytes, "started_at": self.started_at, "codec": self.codec,
                "state": self.state, "units": self.units, "dropped": self.dropped, "send_errors": self.send_errors,
                "local_port": self.local_port, "connect_attempts": self.connect_attempts,
                "end_reason": self.end_reason, "file_ended": self.file_ended}

    # ------------------------------------------------------------------ the end
    def _finish(self, reason: str) -> None:
        """The leg ends by itself: tear down, then ``on_end(reason)`` once (on the next loop turn)."""
        if self._closed:
            return
        self._teardown(reason)
        log.info("cascade.leg_ended", leg=self.id[:8], channel=self.channel.key, reason=reason)
        if self.on_end is not None:
            asyncio.get_running_loop().call_soon(self._call_on_end, reason)

    def _call_on_end(self, reason: str) -> None:
        try:
            self.on_end(reason)  # type: ignore[misc]
        except Exception:
            log.exception("cascade.leg_on_end_failed", leg=self.id[:8])

    def _teardown(self, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        self._writable.set()
        self._go.set()
        self.end_reason = reason
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        if self._timer is not None:
            self._timer.cancel()
        if self._server is not None:
            self._server.close()
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None and self._tcp.transport is not None:
            self._tcp.transport.close()
        try:
            close = getattr(self.source, "aclose", None) or getattr(self.source, "close", None)
            result = close() if close is not None else None
            if hasattr(result, "__await__"):
                self._pending_close = asyncio.ensure_future(result)
        except Exception:
            log.exception("cascade.leg_source_close_failed", leg=self.id[:8])
        if self.reader is not None:
            self.reader.close()  # idempotent; a wrapper may not have closed it
        for callback in self._cleanup:
            try:
                callback()
            except Exception:
                log.exception("cascade.leg_cleanup_failed", leg=self.id[:8])
        self._cleanup = []

    # ------------------------------------------------------------------ tasks
    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(f"{name}-{self.id[:8]}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pump(self) -> None:
        try:
            if self.kind != "live":
                await self._go.wait()  # history from its first unit: the reader queues it until then
            while not self._closed:
                if self.kind != "live":
                    await self._writable.wait()  # history: the upper's pace, nothing dropped
                au = await next_au(self.source)
                if au is None:
                    stream = getattr(self.reader, "stream", None)
                    why = getattr(stream, "close_reason", None) or getattr(self.source, "error", None)
                    # the end of a history file (the device's MediaStatus 121, the platform's last unit):
                    # the upper is told with a MediaStatus 121 of its own
                    self.file_ended = self.kind != "live" and (getattr(stream, "ending", False) is True
                                                               or why == "end of recording")
                    self._finish(f"upstream ended: {why}" if why else "upstream ended")
                    return
                self._on_unit(au)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("cascade.leg_failed", leg=self.id[:8])
            self._finish(f"upward leg failed: {exc}")

    async def _connect(self) -> None:
        """TCP active: connect from our bound port, retrying with back-off until ``connect_timeout``."""
        loop = asyncio.get_running_loop()
        ip = self.target.ip
        family = socket.AF_INET6 if ipaddress.ip_address(ip).version == 6 else socket.AF_INET
        give_up = loop.time() + self.connect_timeout
        delay = 0.1
        while not self._closed:
            self.connect_attempts += 1
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((_bind_host(self.host, family), self.local_port))
                sock.setblocking(False)
                await asyncio.wait_for(loop.sock_connect(sock, (ip, self.target.port)),
                                       max(0.5, give_up - loop.time()))
            except (OSError, TimeoutError) as exc:
                sock.close()
                if loop.time() + delay >= give_up:
                    self._finish(f"cannot connect to the upper's media port {ip}:{self.target.port} after "
                                 f"{self.connect_attempts} attempts: {exc}")
                    return
                log.info("cascade.leg_connect_retry", leg=self.id[:8], attempt=self.connect_attempts,
                         error=str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            except BaseException:
                sock.close()
                raise
            await loop.create_connection(lambda: _TcpSender(self), sock=sock)
            return

    # ------------------------------------------------------------------ transport events
    def _tcp_made(self, proto: _TcpSender) -> None:
        if self._closed or self._tcp is not None or not self._peer_allowed(proto):
            if proto.transport is not None:
                proto.transport.close()  # a second connection, or a stranger's (passive): not served
            return
        self._tcp = proto
        proto.transport.set_write_buffer_limits(high=self.max_buffer // 2)  # type: ignore[union-attr]
        if self._server is not None:
            self._server.close()  # one connection per leg: stop listening
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._need_keyframe = True
        self._request_keyframe()
        if self._ready():
            self._go.set()
        log.info("cascade.leg_connected", leg=self.id[:8], peer=str(proto.transport.get_extra_info("peername")))

    def _peer_allowed(self, proto: _TcpSender) -> bool:
        """TCP passive: only the upper's address (its SDP ``c=``) gets the video; any address when the
        target names none (0.0.0.0)."""
        if self._server is None:
            return True
        wanted = ipaddress.ip_address(self.target.ip)
        if wanted.is_unspecified:
            return True
        peer = proto.transport.get_extra_info("peername") if proto.transport is not None else None
        try:
            host = ipaddress.ip_address(peer[0])
        except (TypeError, ValueError, IndexError):
            host = None
        if isinstance(host, ipaddress.IPv6Address) and host.ipv4_mapped is not None:
            host = host.ipv4_mapped
        if host == wanted:
            return True
        self.refused_peers += 1
        log.warning("cascade.leg_stranger_refused", leg=self.id[:8], peer=str(peer), expected=self.target.ip)
        return False

    def _tcp_lost(self, proto: _TcpSender, exc: Exception | None) -> None:
        if proto is self._tcp:
            self._finish(f"the upper closed the TCP connection{f': {exc}' if exc else ''}")

    def _accept_expired(self) -> None:
        self._timer = None
        if self._tcp is None:
            self._finish(f"no TCP connection from the upper within {self.accept_timeout:g} s")

    def _udp_error(self, exc: Exception) -> None:
        self.send_errors += 1
        now = time.monotonic()
        if self._error_since is None or now - self._last_error > 2.0:
            self._error_since = now  # a new run of errors
        self._last_error = now
        if now - self._error_since >= self.udp_error_limit:
            self._finish(f"the upper's media port keeps refusing: {exc}")

    # ------------------------------------------------------------------ sending
    def _request_keyframe(self) -> None:
        request = getattr(self.source, "request_keyframe", None)
        if request is not None:
            try:
                request()
            except Exception:
                log.exception("cascade.leg_keyframe_request_failed", leg=self.id[:8])

    def _buffered(self) -> int:
        if self._udp is not None:
            return self._udp.get_write_buffer_size()
        if self._tcp is not None and self._tcp.transport is not None:
            return self._tcp.transport.get_write_buffer_size()
        return 0

    def _ready(self) -> bool:
        if not self._started or self._closed:
            return False
        if self.target.transport == "udp":
            return self._udp is not None
        return self._tcp is not None and self._tcp.transport is not None and not self._tcp.transport.is_closing()

    def _muxer_for(self, video_codec: str) -> PsMuxer | None:
        audio = audio_codec_of(self.source) or self._audio_seen
        if audio not in _AUDIO_CODECS:
            audio = None
        m = self._muxer
        if m is not None and m.video_codec == video_codec and m.audio_codec == audio:
            return m
        try:
            m = PsMuxer(video_codec, audio)
        except PsError:
            return None
        if self._muxer is not None:
            self._psm_version = (self._psm_version + 1) & 0x1F
            m.psm_version = self._psm_version
            m._headers = m.system_header() + m.psm()
        self._muxer = m
        return m

    def _on_unit(self, au: AccessUnit) -> None:
        if au.kind == "audio":
            if au.codec != self._audio_seen and au.codec in _AUDIO_CODECS:
                self._audio_seen = au.codec
        if not self._ready():
            return  # before the ACK (or the TCP connection): read and dropped, never queued
        if au.kind == "video":
            if self._need_keyframe:
                if not au.keyframe:
                    return
                if self._buffered() > self.max_buffer // 2:
                    self.dropped += 1
                    return
                muxer = self._muxer_for(au.codec)
                if muxer is None:
                    return
                self._need_keyframe = False
            elif self._buffered() > self.max_buffer:
                self.dropped += 1  # the upper does not keep up: resume at the next keyframe
                self._need_keyframe = True
                self._request_keyframe()
                return
            muxer = self._muxer
            if muxer is None or muxer.video_codec != au.codec:
                self._need_keyframe = True
                return
            data = with_parameter_sets(au, getattr(self.source, "params", None)) if au.keyframe else au.data
            if data is not au.data:
                au = AccessUnit(au.kind, au.codec, data, au.pts, au.dts, au.keyframe)
        elif au.kind == "audio":
            muxer = self._muxer
            if self._need_keyframe or muxer is None or muxer.audio_codec != au.codec:
                return  # an audio codec the PSM does not name yet: from the next keyframe on
            if self._buffered() > self.max_buffer:
                self.dropped += 1
                return
        else:
            return
        ts = au.pts if au.pts is not None else au.dts
        if ts is None:
            ts = (self._last_ts or 0) + (_FRAME_TICKS if au.kind == "video" else 0)
        self._last_ts = ts
        pack = muxer.mux(au)
        packets = packetize_ps(pack, ssrc=self.ssrc, sequence=self._seq, timestamp=ts,
                               payload_type=self.target.payload_type, mtu_payload=self.mtu_payload)
        self._seq = (self._seq + len(packets)) & 0xFFFF
        self.units += 1
        if self._udp is not None:
            for p in packets:
                data = p.to_bytes()
                self._udp.sendto(data)
                self.packets += 1
                self.bytes += len(data)
        else:
            frames = [Rfc4571Framer.frame(p.to_bytes()) for p in packets]
            self._tcp.transport.write(b"".join(frames))  # type: ignore[union-attr]
            self.packets += len(frames)
            self.bytes += sum(len(f) - 2 for f in frames)


def _bind_host(host: str, family: int) -> str:
    """``host`` when it is of ``family``, else that family's wildcard."""
    try:
        version = ipaddress.ip_address(host).version
    except ValueError:
        return host
    if (version == 6) == (family == socket.AF_INET6):
        return host
    return "::" if family == socket.AF_INET6 else "0.0.0.0"
