"""asyncio adapter for the device simulator: sockets, one timer, progress lines, signals.

All behaviour is in :mod:`gbsim.device` (sans-IO).  Here:

* UDP: one socket per ``devices_per_socket`` devices (the platform routes by device id, the source
  ports still differ between groups).  TCP: one connection per device, as real devices do; connections
  are opened a few at a time and re-opened after a back-off when they close.
* One ``loop.call_at`` handle for the whole fleet (its heap holds every device's and endpoint's timer),
  so 2,000 devices cost no task and no timer handle each.
* Media: an INVITE makes the fleet ask for a media socket (``prepare``); a
  :class:`~gbsim.media.CallMedia` binds it and the device answers 200 OK with its port; the ACK
  starts RTP/PS from the process-wide shared encoder, BYE (or the simulator stopping) ends it.  A history
  call (``s=Playback`` / ``s=Download``) gets an encoder of its own (:class:`~gbsim.playback.HistoryEncoder`)
  that MANSRTSP ``control`` events steer; at the end of its window the device sends MediaStatus 121 and
  hangs up itself when no BYE comes within ``history_bye_timeout``.
* Domes (issue 14): a live call of a channel that was moved (PTZCmd, preset call, PTZPreciseCtrl) streams
  from that channel's own :class:`~gbsim.ptzpicture.PtzEncoder` (its view of the panorama, the preset
  number, a readable PTZ code); a call already streaming switches over at the move (``ptz`` media event).
  Untouched channels keep the shared encoder.  :meth:`Simulator.raise_alarm` sends an alarm now;
  ``alarm_every`` / ``position_every`` make every device send alarms / positions on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import resource
import signal
import socket
import ssl
import sys
import time
from collections.abc import Callable
from typing import Any

from gbcore.log import get_logger
from gbsim.device import Call, Fleet, MediaEvent, SimConfig, SimDevice
from gbsim.ptz import PtzLogEntry, PtzView

log = get_logger("gbops.sim")

_SOCKET_BUFFER = 4 << 20
_CONNECT_CONCURRENCY = 64
_TICK = 0.005  # timer granularity (s): one loop callback serves every timer due within a tick


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, sim: Simulator, index: int) -> None:
        self.sim = sim
        self.index = index

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        self.sim._on_data(self.index, data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like: the transactions time out on their own.
        pass


class _TcpProtocol(asyncio.Protocol):
    def __init__(self, sim: Simulator, index: int) -> None:
        self.sim = sim
        self.index = index
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] = sim.cfg.server
        self.lost = False  # connection_lost came (possibly before _connect resumed after create_connection)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not an asyncio.Transport
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = (peer[0], peer[1])

    def data_received(self, data: bytes) -> None:
        if not self.sim._on_data(self.index, data, self.peer) and self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.sim._on_tcp_lost(self.index, self)


class Simulator:
    """Many simulated GB/T 28181 devices in one process.

    ``await start()`` binds/connects and starts registering; ``await stop(unregister=True)`` unregisters
    (``REGISTER Expires: 0``) and closes; ``stop(unregister=False)`` just goes silent, so the platform has
    to notice by missed keepalives.  Counters: :attr:`registered`, :attr:`online`, :attr:`failed`,
    :attr:`queries_answered`; :meth:`stats` has more.
    """

    def __init__(self, cfg: SimConfig, *, wall: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.fleet = Fleet(cfg, wall=wall)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._udp: dict[int, asyncio.DatagramTransport] = {}
        self._tcp: dict[int, _TcpProtocol] = {}
        self._connecting: set[asyncio.Task] = set()
        self._reconnects: dict[int, asyncio.TimerHandle] = {}
        self._connect_sem: asyncio.Semaphore | None = None
        self._tls: ssl.SSLContext | None = None  # client context of transport "tls"
        self._changed: asyncio.Event | None = None
        self._started = False
        self._stopping = False
        self._closed = False
        self._media: dict[tuple[str, str], Any] = {}  # (device id, Call-ID) -> media.CallMedia
        self._encoder: Any = None  # media.ClockEncoder, on the first INVITE
        self._history: dict[tuple[str, str], Any] = {}  # (device id, Call-ID) -> playback.HistoryEncoder
        self._bye_timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._ptz_encoders: dict[tuple[str, str], Any] = {}  # (device id, channel id) -> ptzpicture.PtzEncoder
        self._in_process = False
        self._again = False

    # ------------------------------------------------------------------ counters
    @property
    def devices(self) -> list[SimDevice]:
        return self.fleet.devices

    @property
    def device_ids(self) -> list[str]:
        return [d.device_id for d in self.fleet.devices]

    @property
    def registered(self) -> int:
        return self.fleet.registered

    @property
    def online(self) -> int:
        return self.fleet.online

    @property
    def failed(self) -> int:
        return self.fleet.failed

    @property
    def queries_answered(self) -> int:
        return self.fleet.queries_answered

    @property
    def calls(self) -> int:
        """INVITE dialogs not ended."""
        return self.fleet.calls

    @property
    def streaming(self) -> int:
        """Calls confirmed by ACK (their RTP flows once the media connection is up)."""
        return self.fleet.streaming

    @property
    def encoder(self) -> Any:
        """The shared :class:`~gbsim.media.ClockEncoder` (None before the first INVITE)."""
        return self._encoder

    def media_for(self, device_id: str, call_id: str) -> Any:
        """The :class:`~gbsim.media.CallMedia` of a call, or None."""
        return self._media.get((device_id, call_id))

    def history_for(self, device_id: str, call_id: str) -> Any:
        """The :class:`~gbsim.playback.HistoryEncoder` of a history call, or None."""
        return self._history.get((device_id, call_id))

    def stats(self) -> dict[str, int]:
        return self.fleet.stats()

    # ------------------------------------------------------------------ domes and alarms (issue 14)
    def _device(self, device_id: str) -> SimDevice:
        device = self.fleet.by_id.get(device_id)
        if device is None:
            raise KeyError(f"no simulated device {device_id!r}")
        return device

    def _now(self) -> float:
        return self._loop.time() if self._loop is not None else time.monotonic()

    def ptz_log(self, device_id: str, channel_id: str) -> list[PtzLogEntry]:
        """The PTZ commands a channel received, decoded, each with its wall time (oldest first)."""
        return self._device(device_id).ptz_log(channel_id)

    def ptz_view(self, device_id: str, channel_id: str) -> PtzView:
        """Where a channel's dome looks now (pan, tilt, zoom, last called preset, moving)."""
        return self._device(device_id).ptz_view(channel_id, self._now())

    def ptz_encoder(self, device_id: str, channel_id: str) -> Any:
        """The :class:`~gbsim.ptzpicture.PtzEncoder` of a moved channel that streamed, or None."""
        return self._ptz_encoders.get((device_id, channel_id))

    def raise_alarm(self, device_id: str, channel_id: str | None = None, priority: int = 1, method: int = 2,
                    alarm_type: int | None = None, description: str | None = "模拟报警 / simulated alarm", *,
                    event_type: int | None = None) -> bool:
        """Send an alarm (Notify/Alarm MESSAGE, and NOTIFY to alarm subscribers) from *channel_id* (None:
        the device itself) of *device_id* now.  False when the device is not registered or a latched device
        alarm (method 2, see ``SimConfig.alarm_latch``) held it back."""
        sent = self.fleet.raise_alarm(device_id, channel_id, self._now(), priority=priority, method=method,
                                      alarm_type=alarm_type, description=description, event_type=event_type)
        self._process()
        return sent

    def progress_line(self) -> str:
        line = (f"sim: {self.registered}/{self.cfg.devices} registered, {self.online} online, "
                f"{self.failed} failed, {self.queries_answered} queries answered")
        if self._media:
            line += f", {len(self._media)} streams"
        stats = self.fleet.stats()
        if stats.get("ptz_commands"):
            line += f", {stats['ptz_commands']} PTZ commands"
        if stats.get("alarms_sent"):
            line += f", {stats['alarms_sent']} alarms"
        return line

    @property
    def local_addresses(self) -> list[tuple[str, int]]:
        return [link.local_addr for link in self.fleet.links if link.up and link.local_addr is not None]

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if self._started:
            raise RuntimeError("simulator already started")
        self._started = True
        loop = self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        now = loop.time()
        if self.cfg.transport == "udp":
            try:
                for link in self.fleet.links:
                    transport, _ = await loop.create_datagram_endpoint(
                        lambda index=link.index: _UdpProtocol(self, index),
                        local_addr=(self.cfg.local_host, 0),
                    )
                    sock = transport.get_extra_info("socket")
                    if sock is not None:
                        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                            with contextlib.suppress(OSError):
                                sock.setsockopt(socket.SOL_SOCKET, opt, _SOCKET_BUFFER)
                    self._udp[link.index] = transport  # type: ignore[assignment]
            except OSError:
                await self._close_sockets()
                raise
            now = loop.time()
            for index, transport in self._udp.items():
                host, port = transport.get_extra_info("sockname")[:2]
                self.fleet.link_up(index, (host, port), now, self.cfg.spread)
        else:
            self._connect_sem = asyncio.Semaphore(_CONNECT_CONCURRENCY)
            spread = self.cfg.spread
            for link in self.fleet.links:
                delay = self.fleet.rng.uniform(0.0, spread) if spread > 0 else 0.0
                self._schedule_connect(link.index, delay)
        self._process()

    async def stop(self, unregister: bool = True, grace: float | None = None) -> None:
        """Stop every device.  With *unregister*, the ``Expires: 0`` REGISTERs are spread over
        ``cfg.stop_spread`` seconds and waited for (at most that plus *grace*, default 10 s).  Without,
        the devices simply fall silent."""
        if not self._started or self._closed:
            return
        assert self._loop is not None and self._changed is not None
        self._stopping = True
        for handle in self._reconnects.values():
            handle.cancel()
        self._reconnects.clear()
        for task in list(self._connecting):
            task.cancel()
        if self._connecting:
            await asyncio.gather(*self._connecting, return_exceptions=True)
        spread = self.cfg.stop_spread
        self.fleet.stop(self._loop.time(), unregister, spread)
        self._process()
        if unregister:
            deadline = self._loop.time() + spread + (10.0 if grace is None else grace)
            while not self.fleet.all_stopped:
                left = deadline - self._loop.time()
                if left <= 0:
                    log.warning("sim.unregister_timeout",
                                pending=sum(1 for d in self.fleet.devices if not d.done))
                    break
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), min(left, 0.5))
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self._close_sockets()

    async def _close_sockets(self) -> None:
        for media in list(self._media.values()):
            media.close()
        self._media.clear()
        for enc in self._history.values():
            enc.stop_now()
        self._history.clear()
        for handle in self._bye_timers.values():
            handle.cancel()
        self._bye_timers.clear()
        for transport in self._udp.values():
            transport.close()
        for proto in self._tcp.values():
            if proto.transport is not None:
                proto.transport.close()
        self._udp.clear()
        self._tcp.clear()
        await asyncio.sleep(0)

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop(unregister=True)

    async def wait_until(self, predicate: Callable[[Simulator], bool], limit: float) -> bool:
        """Wait until *predicate(self)* holds (checked after every input), at most *limit* seconds;
        False when it did not."""
        assert self._loop is not None and self._changed is not None
        deadline = self._loop.time() + limit
        while not predicate(self):
            left = deadline - self._loop.time()
            if left <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 0.5))
        return True

    # ------------------------------------------------------------------ TCP connections
    def _schedule_connect(self, index: int, delay: float) -> None:
        assert self._loop is not None
        if self._stopping:
            return
        if delay <= 0:
            self._start_connect(index)
        else:
            self._reconnects[index] = self._loop.call_later(delay, self._start_connect, index)

    def _start_connect(self, index: int) -> None:
        self._reconnects.pop(index, None)
        if self._stopping:
            return
        task = asyncio.get_running_loop().create_task(self._connect(index))
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

    async def _connect(self, index: int) -> None:
        assert self._loop is not None and self._connect_sem is not None
        host, port = self.cfg.server
        tls: dict[str, Any] = {}
        if self.cfg.transport == "tls":
            tls = {"ssl": self._tls_context(), "server_hostname": host}
        async with self._connect_sem:
            if self._stopping:
                return
            try:
                transport, proto = await asyncio.wait_for(
                    self._loop.create_connection(lambda: _TcpProtocol(self, index), host, port,
                                                 local_addr=(self.cfg.local_host, 0), **tls),
                    timeout=10.0,
                )
            except (OSError, TimeoutError) as exc:  # ssl.SSLError (a refused certificate) included
                self.fleet.link_failed(index, f"connect {host}:{port}: {exc or type(exc).__name__}")
                self._schedule_connect(index, self.fleet.link_backoff(index))
                return
        if self._stopping:
            transport.close()
            return
        if proto.lost:
            # The platform closed it at once (a connection cap, say) before this task resumed: the link never
            # came up, and registering on it would wait out Timer F on a dead socket, again and again.
            self.fleet.link_failed(index, f"connection to {host}:{port} closed by the peer at once")
            self._schedule_connect(index, self.fleet.link_backoff(index))
            return
        with contextlib.suppress(OSError):
            transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._tcp[index] = proto
        local = transport.get_extra_info("sockname")
        self.fleet.link_up(index, (local[0], local[1]), self._loop.time())
        self._process()

    def _tls_context(self) -> ssl.SSLContext:
        """Client TLS for ``transport="tls"``: the platform's certificate is verified against
        ``cfg.tls_ca_file`` (or the system store), host name included, unless ``cfg.tls_verify`` is False."""
        if self._tls is None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            if self.cfg.tls_verify:
                if self.cfg.tls_ca_file:
                    ctx.load_verify_locations(cafile=self.cfg.tls_ca_file)
                else:
                    ctx.load_default_certs()
            else:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            self._tls = ctx
        return self._tls

    def _on_tcp_lost(self, index: int, proto: _TcpProtocol) -> None:
        if self._tcp.get(index) is not proto:
            return
        del self._tcp[index]
        if self._closed or self._loop is None:
            return
        self.fleet.link_down(index, self._loop.time())
        self._process()
        if not self._stopping:
            self._schedule_connect(index, self.fleet.link_backoff(index))

    # ------------------------------------------------------------------ plumbing
    def _on_data(self, index: int, data: bytes, addr: tuple[str, int]) -> bool:
        if self._closed or self._loop is None:
            return True
        try:
            ok = self.fleet.receive(index, data, addr, self._loop.time())
        except Exception:
            log.exception("sim.input_failed", link=index, peer=f"{addr[0]}:{addr[1]}")
            ok = True
        self._process()
        return ok

    def _on_timer(self) -> None:
        due = self._timer_at
        self._timer = None
        self._timer_at = None
        if self._closed or self._loop is None:
            return
        # The loop may call back a hair early: the tick it was armed for counts as reached.
        now = self._loop.time()
        try:
            self.fleet.handle_timer(now if due is None else max(now, due))
        except Exception:  # a bug in one device must not stop the other 1,999
            log.exception("sim.timer_failed")
        self._process()

    def _process(self) -> None:
        if self._in_process:  # called back from a media event handler: the running pass goes round again
            self._again = True
            return
        self._in_process = True
        try:
            for _ in range(100):
                self._again = False
                for event in self.fleet.take_media_events():
                    self._media_event(event)
                for index, data, addr in self.fleet.outgoing():
                    if self.cfg.transport == "udp":
                        transport = self._udp.get(index)
                        if transport is not None:
                            transport.sendto(data, addr)
                    else:
                        proto = self._tcp.get(index)
                        if (proto is not None and proto.transport is not None
                                and not proto.transport.is_closing()):
                            proto.transport.write(data)
                if not self._again and not self.fleet.media_events:
                    break
        finally:
            self._in_process = False
        self._arm()
        if self._changed is not None:
            self._changed.set()

    # ------------------------------------------------------------------ media
    def _shared_encoder(self, device_id: str | None = None, sub: bool = False) -> Any:
        """The encoder a call streams from: one per process, or with ``label_pictures`` one per device
        (its id drawn in the picture); ``sub``: the sub-stream's (``sub_size``, a quarter of the bit rate)."""
        from gbsim import media

        if sub:
            width, height = self.cfg.sub_video_size
            return media.shared_encoder(self.cfg.codec, width, height, self.cfg.fps, self.cfg.bitrate // 4,
                                        label=device_id if self.cfg.label_pictures else None)
        width, height = self.cfg.video_size
        if self.cfg.label_pictures and device_id is not None:
            return media.shared_encoder(self.cfg.codec, width, height, self.cfg.fps, self.cfg.bitrate,
                                        label=device_id)
        if self._encoder is None:
            self._encoder = media.shared_encoder(self.cfg.codec, width, height, self.cfg.fps, self.cfg.bitrate)
        return self._encoder

    def _media_event(self, event: MediaEvent) -> None:
        assert self._loop is not None
        call = event.call
        key = (call.device_id, call.call_id)
        if event.kind == "prepare":
            if self._closed or self._stopping:
                self.fleet.media_failed(call, "simulator stopping", self._loop.time())
                return
            try:
                from gbsim import media

                if call.history is not None:
                    encoder = self._history_encoder(call)
                elif self.fleet.by_id[call.device_id].ptz_moved(call.channel_id):
                    encoder = self._ptz_encoder(call)
                else:
                    encoder = self._shared_encoder(call.device_id, sub=call.stream_number > 0)
                cm = media.CallMedia(
                    encoder, mode=call.mode, remote=call.remote_media,
                    ssrc=call.ssrc_int,
                    local_host=self.cfg.local_host, payload_type=call.payload,
                    on_end=lambda reason, call=call: self._media_ended(call, reason),
                )
                port = cm.bind()
            except (ImportError, OSError, ValueError) as exc:
                self._history.pop(key, None)
                self.fleet.media_failed(call, f"no media socket: {exc}", self._loop.time())
                return
            self._media[key] = cm
            self.fleet.media_ready(call, (self.cfg.local_host, port), self._loop.time())
        elif event.kind == "start":
            cm = self._media.get(key)
            if cm is not None:
                cm.start()
        elif event.kind == "ptz":
            cm = self._media.get(key)
            if cm is not None and call.history is None:
                try:
                    cm.stream.switch(self._ptz_encoder(call), self._loop)
                except (ImportError, ValueError) as exc:
                    log.warning("sim.ptz_picture_failed", device_id=call.device_id, channel_id=call.channel_id,
                                error=str(exc))
        elif event.kind == "iframe":
            cm = self._media.get(key)
            if cm is not None:
                cm.stream.encoder.request_idr()
        elif event.kind == "control":
            enc = self._history.get(key)
            if enc is not None and event.control is not None:
                if event.control.action == "teardown":
                    enc.stop_now()
                else:
                    enc.control(event.control)
        elif event.kind == "stop":
            cm = self._media.pop(key, None)
            if cm is not None:
                cm.close()
            enc = self._history.pop(key, None)
            if enc is not None:
                enc.stop_now()
            timer = self._bye_timers.pop(key, None)
            if timer is not None:
                timer.cancel()

    def _ptz_encoder(self, call: Call) -> Any:
        """The moved channel's own encoder (made on first use, kept for later calls)."""
        key = (call.device_id, call.channel_id)
        enc = self._ptz_encoders.get(key)
        if enc is None:
            from gbsim import ptzpicture

            width, height = self.cfg.video_size
            state = self.fleet.by_id[call.device_id].controls.state(call.channel_id)
            loop = self._loop
            enc = self._ptz_encoders[key] = ptzpicture.PtzEncoder(
                state, self.cfg.codec, width, height, self.cfg.fps, self.cfg.bitrate,
                mono=loop.time if loop is not None else time.monotonic,
                label=call.device_id if self.cfg.label_pictures else None, channel_id=call.channel_id)
        return enc

    def _history_encoder(self, call: Call) -> Any:
        """A history call's own encoder (each call shows its own timeline)."""
        from gbsim import playback

        device = self.fleet.by_id[call.device_id]
        width, height = self.cfg.video_size
        assert call.history is not None
        enc = playback.HistoryEncoder(
            device.record_store(call.channel_id), call.history, self.cfg.codec, width, height, self.cfg.fps,
            self.cfg.bitrate, max_fps=self.cfg.history_max_fps, wall=self.fleet.wall,
            on_finished=lambda call=call: self._history_finished(call),
            label=call.device_id if self.cfg.label_pictures else None,
        )
        self._history[(call.device_id, call.call_id)] = enc
        return enc

    def _history_finished(self, call: Call) -> None:
        """The window was streamed: MediaStatus 121, then wait for the platform's BYE (hang up ourselves
        after ``history_bye_timeout``)."""
        if self._closed or self._loop is None:
            return
        key = (call.device_id, call.call_id)
        if self.fleet.media_finished(call, self._loop.time()):
            self._bye_timers[key] = self._loop.call_later(
                self.cfg.history_bye_timeout, self._history_no_bye, call)
        self._process()

    def _history_no_bye(self, call: Call) -> None:
        self._bye_timers.pop((call.device_id, call.call_id), None)
        if self._closed or self._loop is None:
            return
        self.fleet.media_failed(call, "no BYE after MediaStatus 121", self._loop.time())
        self._process()

    def _media_ended(self, call: Call, reason: str) -> None:
        """The media of a call ended by itself (TCP refused/closed, no connection): the device hangs up."""
        if self._closed or self._loop is None:
            return
        self._media.pop((call.device_id, call.call_id), None)
        self.fleet.media_failed(call, reason, self._loop.time())
        self._process()

    def _arm(self) -> None:
        if self._loop is None or self._closed:
            return
        when = self.fleet.get_timer()
        if when is None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = self._timer_at = None
            return
        # Round up to a tick: everything due within one tick is handled by one callback.
        when = math.ceil(when / _TICK) * _TICK
        if self._timer is not None:
            if self._timer_at == when:
                return
            self._timer.cancel()
        self._timer_at = when
        self._timer = self._loop.call_at(when, self._on_timer)


def _raise_fd_limit(wanted: int) -> None:
    """TCP needs one descriptor per device: raise the soft limit towards the hard one."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < wanted:
            new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    except (ValueError, OSError):
        pass


async def run_simulator(cfg: SimConfig, duration: float | None = None, *,
                        out: Callable[[str], None] | None = None) -> dict[str, int]:
    """Run the simulator until SIGINT/SIGTERM or *duration* seconds, printing a progress line every
    ``cfg.progress_interval`` seconds; then unregister every device and return the final stats."""
    write = out or (lambda line: print(line, flush=True))
    if cfg.transport != "udp":
        _raise_fd_limit(cfg.devices + 256)
    loop = asyncio.get_running_loop()
    stop_event = asyncio.Event()
    installed: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop_event.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):
            pass
    sim = Simulator(cfg)
    cpu0, t0 = time.process_time(), loop.time()
    try:
        await sim.start()
        transport = cfg.transport.upper()
        write(f"sim: {cfg.devices} devices ({cfg.channels} channels each) over {transport} -> "
              f"{cfg.server[0]}:{cfg.server[1]}, keepalive {cfg.keepalive:g}s, expires {cfg.expires}s"
              + (f", video {cfg.codec} {cfg.size}@{cfg.fps}" if cfg.media else ", no media"))
        if cfg.transport == "tls" and not cfg.tls_verify:
            write("sim: TLS certificate NOT verified (--tls-insecure): for a test platform's self-signed "
                  "certificate only")
        deadline = None if duration is None else t0 + duration
        last_cpu, last_t = time.process_time(), loop.time()
        while not stop_event.is_set():
            wait = cfg.progress_interval
            if deadline is not None:
                wait = min(wait, deadline - loop.time())
                if wait <= 0:
                    break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop_event.wait(), wait)
            cpu_now, t_now = time.process_time(), loop.time()
            share = 100 * (cpu_now - last_cpu) / max(t_now - last_t, 1e-9)
            last_cpu, last_t = cpu_now, t_now
            write(f"{sim.progress_line()} (cpu {share:.1f}%)")
        write("sim: stopping, unregistering devices ...")
        await sim.stop(unregister=True)
    finally:
        if not sim._closed:
            await sim.stop(unregister=False)
        for sig in installed:
            loop.remove_signal_handler(sig)
    elapsed = max(loop.time() - t0, 1e-9)
    cpu = time.process_time() - cpu0
    stats = sim.stats()
    write(f"{sim.progress_line()}; {stats['keepalives_sent']} keepalives sent; "
          f"cpu {cpu:.1f}s over {elapsed:.0f}s ({100 * cpu / elapsed:.1f}%)")
    sys.stdout.flush()
    return stats
