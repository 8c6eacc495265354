"""A test double of the media relay's :class:`media_relay.signalling.Signalling` (no SIP at all)."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from typing import Any

from gbcore.ids import ChannelRef
from media_relay.signalling import (
    MANSRTSP_TYPE,
    DeviceOffline,
    DeviceWentOffline,
    InviteAnswer,
    SessionEnded,
    SignallingEvent,
    StreamNotOffered,
)

InviteHandler = Callable[..., Awaitable[InviteAnswer]]


class FakeSignalling:
    """Devices in ``online`` are online, registered from ``routes[device_id]`` (default 127.0.0.1:5060).
    ``on_invite(channel, media_ip=, media_port=, ssrc=, transport=)`` answers INVITEs (default: a 200
    with our SSRC); ``byes`` and ``infos`` record what the media relay sent; :meth:`device_hung_up`
    and :meth:`device_went_offline` emit the events."""

    def __init__(self, online: set[str] | None = None, *, on_invite: InviteHandler | None = None) -> None:
        self.online: set[str] = set(online or ())
        self.routes: dict[str, tuple[str, int]] = {}
        self.on_invite = on_invite
        self.invites: list[tuple[ChannelRef, dict]] = []
        self.byes: list[tuple[str, str]] = []
        self.infos: list[tuple[str, bytes, str]] = []
        self._listeners: list[Callable[[SignallingEvent], None]] = []
        self._calls = itertools.count(1)
        self.calls: dict[str, ChannelRef] = {}
        self.no_sub: set[str] = set()  # devices with no sub-stream identification set (StreamNotOffered)

    # ------------------------------------------------------------------ the Protocol
    def is_online(self, device_id: str) -> bool:
        return device_id in self.online

    def route_address(self, device_id: str) -> tuple[str, int] | None:
        if device_id not in self.online:
            return None
        return self.routes.get(device_id, ("127.0.0.1", 5060))

    async def invite(self, channel: ChannelRef, *, media_ip: str, media_port: int, ssrc: str,
                     transport: str, history: Any = None, stream: str = "main") -> InviteAnswer:
        channel = ChannelRef(*channel)
        offer = {"media_ip": media_ip, "media_port": media_port, "ssrc": ssrc, "transport": transport}
        if stream != "main":
            offer["stream"] = stream
        self.invites.append((channel, offer))
        if channel.device_id not in self.online:
            raise DeviceOffline(channel.device_id)
        if stream == "sub" and channel.device_id in self.no_sub:
            raise StreamNotOffered(channel.device_id)
        if self.on_invite is not None:
            answer = await self.on_invite(channel, media_ip=media_ip, media_port=media_port, ssrc=ssrc,
                                          transport=transport)
        else:
            answer = InviteAnswer(f"call-{next(self._calls)}@fake", ssrc, None, transport)
        self.calls[answer.call_id] = channel
        return answer

    def bye(self, call_id: str, reason: str) -> None:
        self.byes.append((call_id, reason))

    def info(self, call_id: str, body: bytes, content_type: str = MANSRTSP_TYPE) -> bool:
        self.infos.append((call_id, body, content_type))
        return call_id in self.calls

    def subscribe(self, listener: Callable[[SignallingEvent], None]) -> None:
        self._listeners.append(listener)

    # ------------------------------------------------------------------ driving the relay
    def emit(self, event: SignallingEvent) -> None:
        for listener in tuple(self._listeners):
            listener(event)

    def device_hung_up(self, call_id: str, reason: str = "BYE from the device") -> None:
        self.emit(SessionEnded(call_id, self.calls[call_id], "device", reason))

    def device_went_offline(self, device_id: str, reason: str = "keepalive_timeout") -> None:
        self.online.discard(device_id)
        self.emit(DeviceWentOffline(device_id, reason))
