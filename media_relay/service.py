"""Viewer sessions on top of the StreamManager: what ``POST /api/channels/{id}/live`` hands out.

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
from typing import Any

from gbops.ids import ChannelRef
from gbops.log import get_logger
from media_relay.ports import PortPool, SsrcAllocator
from media_relay.stream import StreamManager, StreamReader

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
    extra: dict = field(default_factory=dict)  # extra["watermark"]: watermark.pipeline.WatermarkPlan
    cleanup: list = field(default_factory=list)  # callables run once when the session closes (encoder slot)

    @property
    def channel_id(self) -> str:
        return self.channel.channel_id

    @property
    def device_id(self) -> str:
        return self.channel.device_id


def new_session_id() -> str:
    """An unguessable viewer session id (named in the FLV/WHEP URLs; not a credential by itself)."""
    return secrets.token_urlsafe(24)


class MediaService:
    def __init__(self, sip: Any, *, rtp_ports: tuple[int, int], domain: str, media_host: str = "0.0.0.0",
                 media_ip: str | None = None, idle_timeout: float = 15.0, media_timeout: float = 5.0,
                 attach_timeout: float = 60.0, watermark: Any = None) -> None:
        self.manager = StreamManager(sip, ports=PortPool(*rtp_ports, host=media_host), ssrcs=SsrcAllocator(domain),
                                     media_host=media_host, media_ip=media_ip, idle_timeout=idle_timeout,
                                     media_timeout=media_timeout)
        self.attach_timeout = attach_timeout
        self.sessions: dict[str, ViewerSession] = {}
        self._sweeper: asyncio.Task | None = None
        self.whep: Any = None  # media_relay.outputs.whep.WhepRegistry, created lazily
        self.on_session_closed: Any = None  # callback(session, reason): the audit log's live.stop
        self.watermark: Any = watermark  # watermark.pipeline.WatermarkHub: per-viewer overlay and session tag

    async def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep())

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
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
        while True:
            await asyncio.sleep(1.0)
            now = time.time()
            for s in list(self.sessions.values()):
                if s.output is None and now > s.attach_deadline:
                    self.close_session(s.session_id, "no player attached in time")
                elif s.output is None and s.reader.closed:
                    # attached outputs end themselves when their source ends (a watermarked output reads
                    # a shared decoder, not the session's reader, which it closes)
                    self.close_session(s.session_id, "stream ended")


__all__ = ["MediaService", "ViewerSession", "new_session_id"]
