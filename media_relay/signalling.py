"""What the media relay needs from signalling, declared here and implemented elsewhere.

The relay does not know SIP: it asks a :class:`Signalling` to INVITE a device's channel to send to a port,
to end that call (BYE), to send an in-call INFO (MANSRTSP for playback control), whether a device is online
and where it registered from (to pick the local address the device can reach). It listens to the two
events that end its Streams: the device hung up, the device went offline.

The platform's SIP service is adapted to this Protocol at assembly (``gbops.media_signalling``); tests pass
their own doubles. Failures are the typed exceptions below, never the implementation's own classes.

An implementation may also offer ``async def prepare(device_id) -> None``: the relay awaits it before it asks
``is_online`` / ``route_address`` to start a Stream, so that a signalling on another node (a media node of a
cluster, ``gbops.cluster_media.RemoteSignalling``) can fetch those answers first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from gbcore.ids import ChannelRef

MANSRTSP_TYPE = "Application/MANSRTSP"

__all__ = [
    "MANSRTSP_TYPE",
    "DeviceOffline",
    "DeviceRefused",
    "DeviceWentOffline",
    "HistoryRequest",
    "InviteAnswer",
    "MediaFileEnded",
    "SessionEnded",
    "Signalling",
    "SignallingError",
    "SignallingEvent",
    "SignallingTimeout",
    "STREAMS",
    "StreamNotOffered",
]

#: the encoder streams a live call may ask for: the main stream, or the sub-stream (lower resolution and bit
#: rate; how a device is asked for it is its own setting, known to the signalling)
STREAMS = ("main", "sub")


# ------------------------------------------------------------------------------------- answers
@dataclass(frozen=True, slots=True)
class InviteAnswer:
    """The device's answer to an INVITE."""

    call_id: str  # names the call for bye() / info() and in SessionEnded
    ssrc: str  # the SSRC to match media by: the device's y= when it gave one, else ours
    remote_media: tuple[str, int] | None  # where the device sends from / listens (tcp-active)
    transport: str  # udp | tcp-passive | tcp-active
    filesize: int | None = None  # a=filesize of a download answer (bytes), when the device gave it


@dataclass(frozen=True, slots=True)
class HistoryRequest:
    """What makes an INVITE a history one (GB/T 28181 s=Playback / s=Download).

    ``start``/``end`` are Unix seconds (the SDP ``t=`` line, GB/T 28181-2022 Annex G); ``speed`` is the
    ``a=downloadspeed`` of a download (None: not sent)."""

    kind: str  # "playback" | "download"
    start: int
    end: int
    speed: int | None = None


# ------------------------------------------------------------------------------------- failures
class SignallingError(Exception):
    """An INVITE that did not give a call; the message is for people."""


class DeviceOffline(SignallingError):
    """The device is not online (not registered here, or gone), so it cannot be invited."""

    def __init__(self, device_id: str, message: str | None = None) -> None:
        super().__init__(message or device_id)
        self.device_id = device_id


class DeviceRefused(SignallingError):
    """The device refused or failed the INVITE; ``status`` is its SIP status when it gave one."""

    def __init__(self, status: int | None, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class StreamNotOffered(SignallingError):
    """The sub-stream was asked of a device that has no way set to ask it for one (its stream identification
    form is not set): nothing was sent to the device."""

    def __init__(self, device_id: str, message: str | None = None) -> None:
        super().__init__(message or f"该设备未设置子码流标识方式 / the device {device_id} has no sub-stream "
                         "identification set")
        self.device_id = device_id


class SignallingTimeout(DeviceRefused):
    """The device did not answer the INVITE in time (a refusal without a status)."""

    def __init__(self, reason: str) -> None:
        super().__init__(None, reason)


# ------------------------------------------------------------------------------------- events
@dataclass(frozen=True, slots=True)
class SessionEnded:
    """A call ended; ``by`` is "device" (its BYE, or a failure on its side) or "platform"."""

    call_id: str
    channel: ChannelRef
    by: str
    reason: str


@dataclass(frozen=True, slots=True)
class DeviceWentOffline:
    """The device is no longer online (unregistered, keepalives missed, registration expired)."""

    device_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class MediaFileEnded:
    """The device said the history file it sends has ended (in-call MESSAGE, MediaStatus NotifyType 121);
    the signalling already answered 200 OK, the media side drains and then ends the call (BYE)."""

    call_id: str
    channel: ChannelRef
    notify_type: str = "121"


SignallingEvent = SessionEnded | DeviceWentOffline | MediaFileEnded


# ------------------------------------------------------------------------------------- the port
@runtime_checkable
class Signalling(Protocol):
    """The signalling the media relay uses (see the module docstring)."""

    def is_online(self, device_id: str) -> bool:
        """Whether the device is online now."""
        ...

    def route_address(self, device_id: str) -> tuple[str, int] | None:
        """The address the device registered from (None: not registered here)."""
        ...

    async def invite(self, channel: ChannelRef, *, media_ip: str, media_port: int, ssrc: str,
                     transport: str, history: HistoryRequest | None = None) -> InviteAnswer:
        """INVITE ``channel`` to send to ``media_ip:media_port`` over ``transport`` with ``ssrc``; live
        (``s=Play``, ``t=0 0``) unless ``history`` makes it a playback or download.

        A live call for the sub-stream passes ``stream="sub"`` as a further keyword (one of :data:`STREAMS`;
        the main stream passes none, so an implementation without sub-streams still serves every main call);
        the implementation asks the device in the device's own form (``a=streamnumber:1`` and the vendor
        forms) or raises :class:`StreamNotOffered`.

        Raises :class:`DeviceOffline`, :class:`DeviceRefused`, :class:`SignallingTimeout` or
        :class:`StreamNotOffered`."""
        ...

    def bye(self, call_id: str, reason: str) -> None:
        """End the call (BYE an established one, CANCEL a pending one)."""
        ...

    def info(self, call_id: str, body: bytes, content_type: str = MANSRTSP_TYPE) -> bool:
        """Send an INFO inside the call (MANSRTSP: PLAY, PAUSE, scale); False when there is no such
        established call."""
        ...

    def subscribe(self, listener: Callable[[SignallingEvent], None]) -> None:
        """Call ``listener`` with every :data:`SignallingEvent` from now on."""
        ...
