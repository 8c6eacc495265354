"""Viewer sessions on top of the StreamManager: what ``POST /api/channels/{id}/live`` hands out.

The public media calls: :meth:`MediaService.open_viewer` (a viewer session, its transform planned by the
injected :class:`media_relay.viewers.ViewerTransformFactory`), :meth:`MediaService.open_output` (the
composed source an HTTP-FLV or WHEP output reads), :meth:`MediaService.answer_whep`,
:meth:`MediaService.end_session`, and :meth:`MediaService.open_reader` for captures (downloads, the
quality sampler).

A session holds a reader on the channel's Stream (so the upstream stays up) until an output (HTTP-FLV or
WHEP) attaches and consumes it, the session is deleted, or it expires unattached. The session id alone
grants nothing: the portal binds each output URL to the user who asked for the session (their bearer
token, or a short-lived single-use signed token in the URL, see ``ops_portal.output_tokens``).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gbcore.ids import ChannelRef
from gbcore.log import get_logger
from gbcore.periodic import PeriodicTask
from media_relay.ports import PortPool, SsrcAllocator
from media_relay.signalling import Signalling
from media_relay.stream import StreamManager, StreamReader
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

    @property
    def channel_id(self) -> str:
        return self.channel.channel_id

    @property
    def device_id(self) -> str:
        return self.channel.device_id


def new_session_id() -> str:
    """An unguessable viewer session id (named in the FLV/WHEP URLs; not a credential by itself)."""
    return secrets.token_urlsafe(24)


class WhepNegotiationFailed(Exception):
    """The WebRTC offer could not be answered (the session is closed); the message says why."""


class MediaService:
    def __init__(self, signalling: Signalling, *, rtp_ports: tuple[int, int], domain: str,
                 media_host: str = "0.0.0.0", media_ip: str | None = None, idle_timeout: float = 15.0,
                 media_timeout: float = 5.0, attach_timeout: float = 60.0,
                 transforms: ViewerTransformFactory | None = None) -> None:
        self.manager = StreamManager(signalling, ports=PortPool(*rtp_ports, host=media_host), ssrcs=SsrcAllocator(domain),
                                     media_host=media_host, media_ip=media_ip, idle_timeout=idle_timeout,
                                     media_timeout=media_timeout)
        self.attach_timeout = attach_timeout
        self.sessions: dict[str, ViewerSession] = {}
        # unattached sessions past their deadline, and sessions whose stream ended, every second
        self._sweeper = PeriodicTask("media-session-sweeper", self._sweep, interval=1.0, logger=log,
                                     failure_event="live.sweep_failed")
        self.whep: Any = None  # media_relay.outputs.whep.WhepRegistry, created lazily
        self.on_session_closed: Any = None  # callback(session, reason): the audit log's live.stop
        self.transforms = transforms  # per-viewer transform (watermark.pipeline.WatermarkHub at assembly)

    async def start(self) -> None:
        self._sweeper.start()

    async def close(self) -> None:
        await self._sweeper.stop()
        for s in list(self.sessions.values()):
            self.close_session(s.session_id, "platform stopping")
        if self.whep is not None:
            await self.whep.close_all()
        self.manager.close_all()

    async def open_session(self, *, user_id: int, username: str, channel: ChannelRef,
                           transport: str, client_ip: str | None, session_id: str | None = None,
                           cleanup: list | None = None) -> ViewerSession:
        """A viewer session on ``channel`` (that device's channel).  ``session_id``: chosen by the caller
        (default: a new random one); ``cleanup``: callables run when the session closes, also when opening
        it fails."""
        channel = ChannelRef(*channel)
        try:
            reader = await self.manager.open_reader(channel, transport)
        except BaseException:
            for callback in cleanup or ():
                callback()
            raise
        now = time.time()
        session = ViewerSession(session_id or new_session_id(), user_id, username, channel,
                                reader, client_ip, now, now + self.attach_timeout, cleanup=list(cleanup or ()))
        self.sessions[session.session_id] = session
        log.info("live.session_opened", session=session.session_id[:8], channel=channel.key, user=username,
                 transport=transport)
        return session

    async def open_reader(self, channel: ChannelRef, transport: str = "udp") -> StreamReader:
        """A bare reader on ``channel``'s Stream, for captures (downloads, the quality sampler): the caller
        closes it. Raises :class:`media_relay.stream.MediaError`."""
        return await self.manager.open_reader(ChannelRef(*channel), transport)

    def describe_streams(self) -> list[dict[str, Any]]:
        """One item per upstream Stream (``GET /api/streams``)."""
        return self.manager.describe()

    async def open_viewer(self, channel: ChannelRef, viewer: Viewer, *, kind: str = "live",
                          transport: str = "udp") -> ViewerSession:
        """A viewer session of ``viewer`` on ``channel``, its transform planned (and its encoder reserved)
        by the injected factory before the Stream is opened; :meth:`open_output` composes what an output
        reads. Raises :class:`media_relay.viewers.TransformCapacityExceeded`,
        :class:`media_relay.viewers.TransformUnavailable` or :class:`media_relay.stream.MediaError`."""
        if kind != "live":
            raise ValueError(f"unsupported viewer kind {kind!r}")
        channel = ChannelRef(*channel)
        session_id = new_session_id()
        plan = self.transforms.plan(viewer, channel, session_id) if self.transforms is not None else None
        session = await self.open_session(user_id=viewer.user_id, username=viewer.username, channel=channel,
                                          transport=transport, client_ip=viewer.client_ip,
                                          session_id=session_id if plan is not None else None,
                                          cleanup=[plan.release] if plan is not None else [])
        if plan is not None:
            session.plan = plan
            session.extra["watermark"] = plan
        return session

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
            if s.output is None and now > s.attach_deadline:
                self.close_session(s.session_id, "no player attached in time")
            elif s.output is None and s.reader.closed:
                # attached outputs end themselves when their source ends (a watermarked output reads
                # a shared decoder, not the session's reader, which it closes)
                self.close_session(s.session_id, "stream ended")


__all__ = ["MediaService", "ViewerSession", "WhepNegotiationFailed", "new_session_id"]
