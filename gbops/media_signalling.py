"""The SIP service as the media relay's :class:`media_relay.signalling.Signalling` (assembly).

The adapter lives with the assembly, not in ``sip_server``: the media relay declares the port, the SIP
service offers its own API, and only the assembly knows both, so neither domain imports the other
(``sip_server`` imports nothing from ``media_relay``; ``media_relay`` nothing from ``sip_server``). It
translates the SIP service's exceptions and events into the media relay's types, by class.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from gbcore.ids import ChannelRef
from media_relay.signalling import (
    MANSRTSP_TYPE,
    DeviceOffline,
    DeviceRefused,
    DeviceWentOffline,
    HistoryRequest,
    InviteAnswer,
    MediaFileEnded,
    SessionEnded,
    SignallingEvent,
    SignallingTimeout,
    StreamNotOffered,
)
from sip_server.gb import events as sip_events
from sip_server.gb.invite import MediaStatusReceived
from sip_server.gb.invite import SessionEnded as SipSessionEnded
from sip_server.service import DeviceNotReachable, InviteRefused, InviteTimeout, SipService

__all__ = ["SipSignalling", "history_keywords"]

# HistoryRequest.kind -> the INVITE's s= line
_SESSION_NAMES = {"playback": "Playback", "download": "Download"}


def history_keywords(history: HistoryRequest | None) -> dict:
    """The SIP service's keywords for a live call (None) or a history one: ``session_name``, ``start``,
    ``end`` and, for downloads only, ``speed``. Raises ValueError for an unknown kind."""
    if history is None:
        return {}
    name = _SESSION_NAMES.get(history.kind)
    if name is None:
        raise ValueError(f"历史请求类型无效 / unknown history kind {history.kind!r}: playback or download")
    return {"session_name": name, "start": int(history.start), "end": int(history.end),
            "speed": history.speed if name == "Download" else None}


#: a device's stream identification form (``streamnumber`` | ``stream`` | ``streamprofile`` | ``none``)
StreamForm = Callable[[str], Awaitable[str | None]]


class SipSignalling:
    """Implements :class:`media_relay.signalling.Signalling` on a :class:`sip_server.service.SipService`.

    ``stream_form(device_id)`` gives the device's stream identification form (device management's
    ``stream_form``): a live call names the stream in that form (``a=streamnumber:0`` main, ``:1`` sub, and the
    vendor forms ``a=stream:N`` / ``a=streamprofile:N``); a device with none set is asked for its main stream
    with no attribute (what every device understands) and cannot be asked for a sub-stream."""

    def __init__(self, sip: SipService, *, stream_form: StreamForm | None = None) -> None:
        self._sip = sip
        self._stream_form = stream_form

    async def _stream_keywords(self, device_id: str, stream: str) -> dict:
        form: str | None = None
        if self._stream_form is not None:
            try:
                form = await self._stream_form(device_id)
            except Exception:  # the store unreachable: the main stream is still served, a sub-stream is not
                if stream == "sub":
                    raise
                form = None
        if form in (None, "", "none"):
            if stream == "sub":
                raise StreamNotOffered(device_id)
            return {}
        return {"stream": (form, 1 if stream == "sub" else 0)}

    def is_online(self, device_id: str) -> bool:
        return self._sip.is_online(device_id)

    def route_address(self, device_id: str) -> tuple[str, int] | None:
        return self._sip.route_address(device_id)

    async def invite(self, channel: ChannelRef, *, media_ip: str, media_port: int, ssrc: str,
                     transport: str, history: HistoryRequest | None = None, stream: str = "main") -> InviteAnswer:
        device_id, channel_id = channel
        kw = history_keywords(history)
        if history is None:
            kw.update(await self._stream_keywords(device_id, stream))
        try:
            answered = await self._sip.invite(device_id, channel_id, media_ip=media_ip, media_port=media_port,
                                              ssrc=ssrc, transport=transport, **kw)
        except DeviceNotReachable:
            raise DeviceOffline(device_id) from None
        except InviteTimeout as exc:
            raise SignallingTimeout(str(exc)) from None
        except InviteRefused as exc:
            raise DeviceRefused(exc.status, str(exc)) from None
        return InviteAnswer(call_id=answered.call_id, ssrc=answered.ssrc, remote_media=answered.remote_media,
                            transport=answered.transport, filesize=answered.filesize)

    def bye(self, call_id: str, reason: str) -> None:
        self._sip.end_session(call_id, reason)

    def info(self, call_id: str, body: bytes, content_type: str = MANSRTSP_TYPE) -> bool:
        return self._sip.session_info(call_id, body, content_type)

    def subscribe(self, listener: Callable[[SignallingEvent], None]) -> None:
        def translate(event: object) -> None:
            if isinstance(event, SipSessionEnded):
                listener(SessionEnded(event.call_id, ChannelRef(event.device_id, event.channel_id), event.by,
                                      event.reason))
            elif isinstance(event, MediaStatusReceived):
                listener(MediaFileEnded(event.call_id, ChannelRef(event.device_id, event.channel_id),
                                        event.notify_type))
            elif isinstance(event, sip_events.DeviceOffline):
                listener(DeviceWentOffline(event.device_id, event.reason))

        self._sip.add_listener(translate)
