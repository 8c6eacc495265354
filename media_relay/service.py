"""Viewer sessions on top of the StreamManager: what ``POST /api/channels/{id}/live`` hands out.

The public media calls: :meth:`MediaService.open_viewer` (a viewer session, its transform planned by the
injected :class:`media_relay.viewers.ViewerTransformFactory`), :meth:`MediaService.open_output` (the
composed source an HTTP-FLV or WHEP output reads), :meth:`MediaService.answer_whep`,
:meth:`MediaService.end_session`, and :meth:`MediaService.open_reader` for captures (downloads, the
quality sampler).

History video (see :mod:`media_relay.playback`): ``open_viewer(kind="playback", window=, source=)`` opens
a session on a history Stream of its own (the device's ``s=Playback`` or the platform's storage),
:meth:`MediaService.control` pauses / resumes / seeks / changes its speed, :meth:`MediaService.session_state`
says where it is, and :meth:`MediaService.open_history` gives downloads a source over a window.

A session holds a reader on the channel's Stream (so the upstream stays up) until an output (HTTP-FLV or
WHEP) attaches and consumes it, the session is deleted, or it expires unattached. The session id alone
grants nothing: the portal binds each output URL to the user who asked for the session (their bearer
token, or a short-lived single-use signed token in the URL, see ``ops_portal.live.output_tokens``).
"""

from __future__ import annotations

import asyncio
import inspect
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from gbcore.ids import ChannelRef
from gbcore.log import get_logger
from gbcore.periodic import PeriodicTask
from media_relay.playback import (
    SOURCES,
    HistoryReader,
    PlatformStream,
    PlaybackControl,
    Timeline,
    check_window,
)
from media_relay.ports import NoPortsLeft, PortPool, SsrcAllocator
from media_relay.signalling import HistoryRequest, Signalling
from media_relay.stream import TRANSPORTS, MediaError, Stream, StreamManager, StreamReader, live_key
from media_relay.types import VideoParams
from media_relay.upward import UpwardLeg, UpwardTarget, check_target
from media_relay.viewers import OUTPUTS, Viewer, ViewerPlan, ViewerTransformFactory, compose_source

if TYPE_CHECKING:
    from media_relay.outputs.flv import AccessUnitSource

log = get_logger("gbops.media")


@dataclass
class ViewerSession:
    session_id: str
    user_id: int
    username: str
    channel: ChannelRef  # the camera: (device id, channel id)
    reader: StreamReader
    client_ip: str | None
    created: float
    attach_deadline: float
    output: str | None = None  # "flv" | "whep" once attached
    closed: bool = False
    extra: dict = field(default_factory=dict)  # extra["watermark"]: the plan (as ``plan``)
    cleanup: list = field(default_factory=list)  # callables run once when the session closes (encoder slot)
    plan: ViewerPlan | None = None  # the viewer's transform, planned by the factory (None without one)
    source: AccessUnitSource | None = None  # what the attached output reads (open_output)
    kind: str = "live"  # "live" | "playback"
    window: tuple[datetime, datetime] | None = None  # playback: the requested window (aware, UTC)
    history_source: str | None = None  # playback: "device" | "platform" (``session_state()["source"]``)
    playback: PlaybackControl | None = None  # playback: pause / resume / seek / speed and the position
    stream: str = "main"  # live: the encoder stream watched, "main" | "sub"

    @property
    def channel_id(self) -> str:
        return self.channel.channel_id

    @property
    def device_id(self) -> str:
        return self.channel.device_id

    @property
    def codec(self) -> str | None:
        """The upstream's video codec (what the camera sends, before any transform)."""
        return self.reader.codec

    @property
    def params(self) -> VideoParams | None:
        """The upstream's parameter sets and picture size."""
        return self.reader.params


def new_session_id() -> str:
    """An unguessable viewer session id (named in the FLV/WHEP URLs; not a credential by itself)."""
    return secrets.token_urlsafe(24)


class WhepNegotiationFailed(Exception):
    """The WebRTC offer could not be answered (the session is closed); the message says why."""


class MediaService:
    def __init__(self, signalling: Signalling, *, rtp_ports: tuple[int, int], domain: str,
                 media_host: str = "0.0.0.0", media_ip: str | None = None, idle_timeout: float = 15.0,
                 media_timeout: float = 5.0, attach_timeout: float = 60.0,
                 transforms: ViewerTransformFactory | None = None, recordings: Any = None,
                 max_window_hours: float = 24.0, pause_limit: float = 3600.0, history_idle: float = 1.0,
                 keyframe_timeout: float = 10.0) -> None:
        self.manager = StreamManager(signalling, ports=PortPool(*rtp_ports, host=media_host), ssrcs=SsrcAllocator(domain),
                                     media_host=media_host, media_ip=media_ip, idle_timeout=idle_timeout,
                                     media_timeout=media_timeout, keyframe_timeout=keyframe_timeout,
                                     history_idle=history_idle)
        self.attach_timeout = attach_timeout
        # platform storage (media_relay.recording.RecordingService at assembly): ``segments(ch, start, end)``
        # (sync or async) and the sync ``iter_units(ch, start, end)``; None: platform sources answer an error
        self.recordings = recordings
        self.max_window_hours = max_window_hours  # settings.playback_max_window_hours
        self.pause_limit = pause_limit  # a paused session is kept this long (0: for ever), output open
        self.history_idle = history_idle
        self.platform_streams: set[PlatformStream] = set()
        self.sessions: dict[str, ViewerSession] = {}
        # unattached sessions past their deadline, and sessions whose stream ended, every second
        self._sweeper = PeriodicTask("media-session-sweeper", self._sweep, interval=1.0, logger=log,
                                     failure_event="live.sweep_failed")
        self.whep: Any = None  # media_relay.outputs.whep.WhepRegistry, created lazily
        self.on_session_closed: Any = None  # callback(session, reason): the audit log's live.stop
        self.transforms = transforms  # per-viewer transform (watermark.pipeline.WatermarkHub at assembly)
        self.upward: dict[str, UpwardLeg] = {}  # media legs toward upper platforms (cascade), by leg id
        self.upward_connect_timeout = 10.0  # TCP active: keep retrying the upper's port this long
        self.upward_accept_timeout = 10.0  # TCP passive: the upper must connect within this

    async def start(self) -> None:
        self._sweeper.start()

    async def close(self) -> None:
        await self._sweeper.stop()
        for leg in list(self.upward.values()):
            await leg.close("platform stopping")
        for s in list(self.sessions.values()):
            self.close_session(s.session_id, "platform stopping")
        if self.whep is not None:
            await self.whep.close_all()
        for stream in list(self.platform_streams):
            stream.close("platform stopping")
        self.manager.close_all()

    async def open_session(self, *, user_id: int, username: str, channel: ChannelRef,
                           transport: str, client_ip: str | None, session_id: str | None = None,
                           cleanup: list | None = None, stream: str = "main") -> ViewerSession:
        """A viewer session on ``channel`` (that device's channel) and its ``stream`` ("main" | "sub").
        ``session_id``: chosen by the caller (default: a new random one); ``cleanup``: callables run when the
        session closes, also when opening it fails."""
        channel = ChannelRef(*channel)
        try:
            reader = await self.manager.open_reader(channel, transport, stream)
        except BaseException:
            for callback in cleanup or ():
                callback()
            raise
        now = time.time()
        session = ViewerSession(session_id or new_session_id(), user_id, username, channel,
                                reader, client_ip, now, now + self.attach_timeout, cleanup=list(cleanup or ()),
                                stream=stream)
        self.sessions[session.session_id] = session
        log.info("live.session_opened", session=session.session_id[:8], channel=channel.key, user=username,
                 transport=transport, stream=stream)
        return session

    async def open_reader(self, channel: ChannelRef, transport: str = "udp", stream: str = "main") -> StreamReader:
        """A bare reader on ``channel``'s Stream of ``stream``, for captures (downloads, the quality sampler, the
        recorder): the caller closes it. Raises :class:`media_relay.stream.MediaError`."""
        return await self.manager.open_reader(ChannelRef(*channel), transport, stream)

    def describe_streams(self) -> list[dict[str, Any]]:
        """One item per upstream Stream (``GET /api/streams``)."""
        return self.manager.describe()

    async def open_viewer(self, channel: ChannelRef, viewer: Viewer, *, kind: str = "live",
                          transport: str = "udp", window: tuple[datetime, datetime] | None = None,
                          source: str = "device", session_id: str | None = None,
                          stream: str = "main") -> ViewerSession:
        """A viewer session of ``viewer`` on ``channel``, its transform planned (and its encoder reserved)
        by the injected factory before the Stream is opened; :meth:`open_output` composes what an output
        reads. ``kind="playback"``: the ``window`` (aware datetimes) of history from ``source`` ("device":
        its own ``s=Playback`` call; "platform": the platform's recording), on a history Stream of its own
        whose timestamps run at wall speed whatever the scale (see :mod:`media_relay.playback`).
        ``session_id`` (live): the id of a session another media node hands over (issue 17, a drain): the
        viewer keeps its session id, so its watermark tag and its audit entries stay the same; it must not
        be in use here. ``stream`` (live): the channel's main stream or its sub-stream ("sub": an upstream of its
        own, and a cheaper watermark encoder). Raises :class:`media_relay.viewers.TransformCapacityExceeded`,
        :class:`media_relay.viewers.TransformUnavailable` or :class:`media_relay.stream.MediaError`."""
        if kind == "playback":
            return await self._open_playback(ChannelRef(*channel), viewer, window, source, transport)
        if kind != "live":
            raise ValueError(f"unsupported viewer kind {kind!r}")
        channel = ChannelRef(*channel)
        if session_id is not None and session_id in self.sessions:
            raise MediaError("session_exists", "会话编号已在使用 / the session id is in use")
        session_id = session_id or new_session_id()
        live_key(channel, stream)  # an unknown stream is refused before an encoder is reserved
        plan = self._plan(viewer, channel, session_id, "live", None, stream=stream)
        session = await self.open_session(user_id=viewer.user_id, username=viewer.username, channel=channel,
                                          transport=transport, client_ip=viewer.client_ip,
                                          session_id=session_id,
                                          cleanup=[plan.release] if plan is not None else [], stream=stream)
        if plan is not None:
            session.plan = plan
            session.extra["watermark"] = plan
        return session

    def _plan(self, viewer: Viewer, channel: ChannelRef, session_id: str, kind: str,
              window: tuple[datetime, datetime] | None, *, stream: str = "main") -> ViewerPlan | None:
        if self.transforms is None:
            return None
        if kind == "live":
            if stream != "main" and _takes_keywords(self.transforms.plan, "stream"):
                return self.transforms.plan(viewer, channel, session_id, stream=stream)  # a cheaper encoder
            return self.transforms.plan(viewer, channel, session_id)
        if _takes_keywords(self.transforms.plan, "kind", "window"):
            return self.transforms.plan(viewer, channel, session_id, kind=kind, window=window)
        log.warning("media.transform_without_kind", kind=kind)  # an older factory: tag without the kind
        return self.transforms.plan(viewer, channel, session_id)

    # ------------------------------------------------------------------ history
    def _check_history(self, window: Any, source: str, transport: str) -> tuple[datetime, datetime]:
        window = check_window(window, self.max_window_hours)
        if source not in SOURCES:
            raise MediaError("bad_source", "来源无效（device 或 platform） / the source must be device or platform")
        if transport not in TRANSPORTS:
            raise MediaError("bad_transport", f"传输方式无效 / unknown transport {transport!r}")
        if source == "platform" and self.recordings is None:
            raise MediaError("no_recordings", "平台录像不可用 / platform recording is not available")
        return window

    async def _open_history_stream(self, channel: ChannelRef, window: tuple[datetime, datetime], source: str, *,
                                   kind: str, transport: str, speed: int | None = None,
                                   maxsize: int = 300, retime: bool | None = None,
                                   ) -> tuple[Stream, Timeline, StreamReader]:
        """A started history Stream, its Timeline and a first reader; the caller ends the Stream
        (:meth:`_end_history`), also when this raises nothing is left allocated. ``retime``: wall-speed
        timestamps (default: for playback)."""
        timeline = Timeline(window, retime=kind == "playback" if retime is None else retime)
        if source == "device":
            request = HistoryRequest(kind, int(window[0].timestamp()), math.ceil(window[1].timestamp()),
                                     speed if kind == "download" else None)
            stream = await self.manager.open_history(channel, request, transport=transport, timeline=timeline)
            return stream, timeline, stream.add_reader(maxsize)
        segments = self.recordings.segments(channel, window[0], window[1])
        if inspect.isawaitable(segments):
            segments = await segments
        if not segments:
            raise MediaError("no_recording", "该时间段没有平台录像 / no platform recording in this window")
        stream = PlatformStream(channel, self.recordings, window, timeline, paced=kind == "playback")
        self.platform_streams.add(stream)
        reader = stream.add_reader(maxsize)  # before the first unit: downloads lose nothing
        stream.on_idle = self._platform_idle
        stream.on_end = self.platform_streams.discard
        stream.start()
        try:
            await asyncio.wait_for(asyncio.shield(stream.first_keyframe), self.manager.keyframe_timeout)
        except BaseException as exc:
            ended = stream.closed
            self._end_history(stream, "start failed")
            if isinstance(exc, asyncio.CancelledError):
                raise
            if ended or isinstance(exc, MediaError):
                raise MediaError("no_recording", "该时间段没有可播放的平台录像 / no playable platform recording "
                                 "in this window") from None
            raise MediaError("no_keyframe", "平台录像中没有可解码的关键帧 / no decodable keyframe in the "
                             "platform recording") from None
        return stream, timeline, reader

    def _platform_idle(self, stream: Stream) -> None:
        def expired() -> None:
            if not stream.readers:
                self._end_history(stream, "no reader left")

        asyncio.get_running_loop().call_later(self.history_idle, expired)

    def _end_history(self, stream: Stream, reason: str) -> None:
        if isinstance(stream, PlatformStream):
            self.platform_streams.discard(stream)
            stream.close(reason)
        else:
            self.manager.end_history(stream, reason)

    async def _open_playback(self, channel: ChannelRef, viewer: Viewer, window: Any, source: str,
                             transport: str) -> ViewerSession:
        window = self._check_history(window, source, transport)
        session_id = new_session_id()
        plan = self._plan(viewer, channel, session_id, "playback", window)
        try:
            stream, timeline, reader = await self._open_history_stream(channel, window, source, kind="playback",
                                                                       transport=transport)
        except BaseException:
            if plan is not None:
                plan.release()
            raise
        now = time.time()
        cleanup = [plan.release] if plan is not None else []
        cleanup.append(lambda: self._end_history(stream, "viewer session closed"))
        session = ViewerSession(session_id, viewer.user_id, viewer.username, channel, reader, viewer.client_ip, now,
                                now + self.attach_timeout, cleanup=cleanup, plan=plan, kind="playback",
                                window=window, history_source=source)
        session.playback = PlaybackControl(stream, timeline, source, signalling=self.manager.signalling,
                                           call_id=lambda: stream.call_id)
        if plan is not None:
            session.extra["watermark"] = plan
        self.sessions[session_id] = session
        log.info("playback.session_opened", session=session_id[:8], channel=channel.key, user=viewer.username,
                 source=source, start=window[0].isoformat(), end=window[1].isoformat())
        return session

    async def control(self, session_id: str, action: str, *, position: float | None = None,
                      scale: float | None = None) -> dict[str, Any]:
        """Pause / resume / seek (``position``: seconds from the window start) / speed (``scale``: 0.25,
        0.5, 1, 2, 4, 8) a playback session; returns :meth:`session_state`. Raises :class:`MediaError`
        (``no_session``, ``not_playback``, ``bad_action``, ``bad_position``, ``bad_scale``,
        ``control_refused``)."""
        session = self.sessions.get(session_id)
        if session is None or session.closed:
            raise MediaError("no_session", "会话不存在或已结束 / no such session")
        if session.playback is None:
            raise MediaError("not_playback", "直播会话不能控制 / only a playback session can be controlled")
        session.playback.apply(action, position=position, scale=scale)
        log.info("playback.control", session=session_id[:8], action=action, position=position, scale=scale)
        state = self.session_state(session_id)
        assert state is not None
        return state

    def session_state(self, session_id: str) -> dict[str, Any] | None:
        """``{"kind", "state", "position", "scale", "paused", "window", "source"}`` of a session (None when
        unknown). ``state``: "waiting" (no output yet), "playing", "paused" or "ended"; ``position``:
        seconds from the window start (None for live); ``window``: (start, end) aware datetimes or None."""
        s = self.sessions.get(session_id)
        if s is None:
            return None
        control = s.playback
        if control is None:
            ended = s.closed or s.reader.stream.closed
            state = "ended" if ended else ("waiting" if s.output is None else "playing")
            return {"kind": s.kind, "state": state, "position": None, "scale": 1.0, "paused": False,
                    "window": None, "source": "device"}
        state = control.state()
        if state == "playing" and s.output is None:
            state = "waiting"
        return {"kind": s.kind, "state": state, "position": round(control.position, 3), "scale": control.scale,
                "paused": control.paused, "window": s.window, "source": s.history_source}

    async def open_history(self, channel: ChannelRef, window: tuple[datetime, datetime], source: str, *,
                           speed: int = 4, transport: str = "udp") -> HistoryReader:
        """A download's source over ``window`` of history (device: ``s=Download`` at ``speed``; platform:
        the stored segments as fast as it is read): natural timestamps, ``get()`` raising ``EOFError`` at
        the end. The caller closes it. Raises :class:`MediaError`."""
        channel = ChannelRef(*channel)
        window = self._check_history(window, source, transport)
        if source == "device" and (not isinstance(speed, int) or not 1 <= speed <= 64):
            raise MediaError("bad_speed", "下载倍速无效 / the download speed must be 1 to 64")
        stream, timeline, reader = await self._open_history_stream(channel, window, source, kind="download",
                                                                   transport=transport, speed=speed, maxsize=20000)
        return HistoryReader(reader, timeline, filesize=stream.filesize,
                             on_close=lambda: self._end_history(stream, "download closed"))

    # ------------------------------------------------------------------ upward (cascade)
    async def open_upward(self, channel: ChannelRef, viewer: Viewer, target: UpwardTarget, *, kind: str = "live",
                          window: tuple[datetime, datetime] | None = None, source: str = "device",
                          visible_watermark: bool = False, on_end: Callable[[str], None] | None = None,
                          speed: int = 4, stream: str = "main") -> UpwardLeg:
        """A media leg sending ``channel`` to an upper platform at ``target`` as RTP/PS (see
        :mod:`media_relay.upward`); :meth:`UpwardLeg.start` on the ACK begins sending. Live: a reader of the
        channel's shared Stream (one upstream for local viewers, the recorder and uppers; its idle delay
        runs once the last of them has gone). ``kind="playback"`` / ``"download"``: the ``window`` of
        history from ``source`` on a history Stream of its own, natural timestamps (the upper paces and
        scales itself; ``speed``: the device's download speed). The picture is tagged for ``viewer`` (the
        platform) and also redrawn when ``visible_watermark``. ``on_end(reason)``: once, when the leg ends
        by itself. Raises :class:`MediaError` (``bad_target``, ``no_ports``, the Stream's errors) and the
        transform's errors like :meth:`open_viewer`. ``stream`` (live): the channel's main stream or its
        sub-stream (an upper's ``a=streamnumber:1``)."""
        channel = ChannelRef(*channel)
        live_key(channel, stream)
        problem = check_target(target)
        if problem is not None:
            raise MediaError("bad_target", f"上级平台的媒体地址无效 / unusable media target: {problem}")
        if kind not in ("live", "playback", "download"):
            raise ValueError(f"unsupported upward kind {kind!r}")
        leg_id = new_session_id()
        cleanup: list[Callable[[], None]] = []
        reader: StreamReader | None = None
        try:
            if kind == "live":
                plan = self._plan(viewer, channel, leg_id, "live", None, stream=stream)
                if plan is not None:
                    cleanup.append(plan.release)
                reader = await self.manager.open_reader(channel, "udp", stream)
            else:
                window = self._check_history(window, source, "udp")
                if source == "device" and kind == "download" and (not isinstance(speed, int)
                                                                   or not 1 <= speed <= 64):
                    raise MediaError("bad_speed", "下载倍速无效 / the download speed must be 1 to 64")
                plan = self._plan(viewer, channel, leg_id, kind, window)
                if plan is not None:
                    cleanup.append(plan.release)
                stream, _, reader = await self._open_history_stream(
                    channel, window, source, kind=kind, transport="udp", speed=speed, retime=False, maxsize=3000)
                cleanup.append(lambda: self._end_history(stream, "upward leg closed"))
            try:
                port = self.manager.ports.allocate()
            except NoPortsLeft as exc:
                raise MediaError("no_ports", str(exc)) from None
            cleanup.append(lambda: self.manager.ports.release(port))
        except BaseException:
            if reader is not None:
                reader.close()
            for callback in reversed(cleanup):
                callback()
            raise
        if plan is not None and plan.on and not visible_watermark:
            plan.release()  # the tag only: the encoder slot the plan reserved is not needed
        if plan is not None and not visible_watermark:
            composed = self.transforms.tag(reader, plan)  # type: ignore[union-attr]
        else:
            composed = compose_source(reader, plan, self.transforms, "flv")
        cleanup.append(lambda: self.upward.pop(leg_id, None))

        def ended(reason: str) -> None:
            log.info("cascade.upward_ended", leg=leg_id[:8], channel=channel.key, reason=reason)
            if on_end is not None:
                on_end(reason)

        leg = UpwardLeg(leg_id, channel, target, composed, reader=reader, kind=kind,
                        local_ip=self.manager._media_ip_for((target.ip, target.port or 9)),
                        local_port=port, host=self.manager.media_host, on_end=ended, cleanup=cleanup,
                        connect_timeout=self.upward_connect_timeout, accept_timeout=self.upward_accept_timeout)
        self.upward[leg_id] = leg
        try:
            await leg.open()
        except BaseException as exc:
            await leg.close("open failed")
            if isinstance(exc, OSError):
                raise MediaError("no_ports", f"媒体端口不可用 / cannot use media port {port}: {exc}") from None
            raise
        return leg

    def upward_legs(self) -> list[dict[str, Any]]:
        """One item per media leg toward an upper platform (the cascade status page)."""
        out = []
        for leg in self.upward.values():
            st = leg.stats()
            out.append({"id": leg.id, "channel": leg.channel.key, "kind": leg.kind,
                        "target": f"{leg.target.ip}:{leg.target.port}", "transport": leg.transport,
                        "setup": leg.setup, "ssrc": leg.ssrc, "local_port": leg.local_port,
                        "packets": st["packets"], "bytes": st["bytes"], "dropped": st["dropped"],
                        "send_errors": st["send_errors"], "codec": st["codec"], "started_at": st["started_at"],
                        "state": st["state"]})
        return out

    def upward_info(self, leg_id: str, body: bytes, content_type: str | None = None) -> bool:
        """Forward the upper's MANSRTSP (an INFO on its playback call) to the device call under the leg;
        False when there is none (a live leg, a platform source, an unknown leg)."""
        leg = self.upward.get(leg_id)
        stream = getattr(leg.reader, "stream", None) if leg is not None else None
        call_id = getattr(stream, "call_id", None)
        if leg is None or leg.kind == "live" or call_id is None:
            return False
        if content_type is None:
            return self.manager.signalling.info(call_id, body)
        return self.manager.signalling.info(call_id, body, content_type)

    def open_output(self, session_id: str, output: str) -> ViewerSession | None:
        """An output ("flv" or "whep") takes the session (once) and gets ``session.source``: the viewer's
        composed source (see :mod:`media_relay.viewers`). Closing the session ends that source too.
        None when the session is unknown or taken."""
        if output not in OUTPUTS:
            raise ValueError(f"unknown output {output!r}")
        session = self.attach(session_id, output)
        if session is None:
            return None
        source = session.source = compose_source(session.reader, session.plan, self.transforms, output)

        def end_output() -> None:  # revocation, DELETE, platform stop: the output finishes, not plays on
            result = source.close() if hasattr(source, "close") else None
            if hasattr(result, "__await__"):
                asyncio.ensure_future(result)

        session.cleanup.append(end_output)
        return session

    async def answer_whep(self, session: ViewerSession, offer: str) -> str:
        """Answer a WHEP offer for a session taken by :meth:`open_output` (``"whep"``); the WebRTC peer
        closing ends the session. Raises :class:`WhepNegotiationFailed` (the session is closed)."""
        from media_relay.outputs.whep import WhepRegistry, WhepSession

        if self.whep is None:
            self.whep = WhepRegistry()
        session_id = session.session_id
        whep = WhepSession(session.source)
        try:
            answer = await whep.answer(offer)
        except Exception as exc:
            await whep.close()
            self.close_session(session_id, "WHEP negotiation failed")
            raise WhepNegotiationFailed(str(exc)) from None
        self.whep.add(session_id, whep)
        whep.on_closed = lambda: self.close_session(session_id, "WebRTC peer closed")
        return answer

    async def end_session(self, session_id: str, reason: str, *, whep_only: bool = False) -> bool:
        """End a viewer session and its WebRTC peer, if any. ``whep_only``: only a session with a WebRTC
        peer (WHEP DELETE); returns False when there was none to end."""
        session = self.sessions.get(session_id)
        closed_whep = False
        if self.whep is not None and (whep_only or (session is not None and session.output == "whep")):
            closed_whep = await self.whep.close(session_id)
        if whep_only and not closed_whep:
            return False
        return self.close_session(session_id, reason) or closed_whep

    def attach(self, session_id: str, output: str) -> ViewerSession | None:
        """An output takes the session's reader (once); returns None when the session is unknown or taken."""
        s = self.sessions.get(session_id)
        if s is None or s.closed or s.output is not None:
            return None
        s.output = output
        s.reader.resync()
        return s

    def close_session(self, session_id: str, reason: str = "closed") -> bool:
        s = self.sessions.pop(session_id, None)
        if s is None:
            return False
        s.closed = True
        s.reader.close()
        for callback in s.cleanup:
            try:
                callback()
            except Exception:
                log.exception("live.session_cleanup_failed", session=session_id[:8])
        s.cleanup = []
        if self.on_session_closed is not None:
            self.on_session_closed(s, reason)
        log.info("live.session_closed", session=session_id[:8], channel=s.channel.key, reason=reason)
        return True

    async def _sweep(self) -> None:
        now = time.time()
        for s in list(self.sessions.values()):
            control = s.playback
            if control is not None and control.paused and not control.stream.closed:
                # paused: no media, nothing times out (the output stays open), up to the pause limit
                since = control.paused_since
                if self.pause_limit and since is not None and time.monotonic() - since > self.pause_limit:
                    self.close_session(s.session_id, "paused too long")
                continue
            if s.output is None and now > s.attach_deadline:
                self.close_session(s.session_id, "no player attached in time")
            elif s.output is None and s.reader.closed:
                # attached outputs end themselves when their source ends (a watermarked output reads
                # a shared decoder, not the session's reader, which it closes)
                self.close_session(s.session_id, "stream ended")


def _takes_keywords(func: Any, *names: str) -> bool:
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return True
    return all(n in params for n in names)


__all__ = ["MediaService", "ViewerSession", "WhepNegotiationFailed", "new_session_id"]
