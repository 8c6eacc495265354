"""Media sessions with devices: INVITE / ACK / BYE / CANCEL / INFO as GB/T 28181 live view uses them (sans-IO).

The platform is the UAC: it offers where the media should go (``y=`` SSRC, our address and port, one of
three transports) and the device answers with where it sends from. The answer decides: the SSRC the device
answers with is the one media is matched by (some NVRs change it), a refusal or an unusable answer ends the
session with a reason a person can read, and a 2xx that arrives after we gave up is ACKed and BYEd.

History calls (``s=Playback`` / ``s=Download``) are the same dialog with a window (``t=<start> <end>``, Unix
seconds), the channel as ``u=<channel>:0`` and, for downloads, ``a=downloadspeed``; the device may answer a
download with ``a=filesize``. When it has sent the file to the end it says so inside the call with a
MESSAGE carrying ``Notify/MediaStatus`` (NotifyType 121): answered 200 and reported as
:class:`MediaStatusReceived`, so the media side drains what is queued and then ends the call (BYE).

What happens when is the dialog table of the SIP core (:data:`sip_server.sip.dialog.INVITE_UAC`); this module
routes the endpoint's events into it, carries out its actions (send, reply, report) and words the outcomes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sip_server.gb import events as ev
from sip_server.gb import manscdp
from sip_server.sip import Headers, SipRequest
from sip_server.sip.dialog import (
    CANCEL_PENDING,
    CANCELLING,
    CONFIRMED,
    MANSRTSP_TYPE,
    TERMINATED,
    Dialog,
    IllegalTransition,
)
from sip_server.sip.message import SipParseError, random_hex, via_value
from sip_server.sip.sdp import Sdp, SdpError, build_offer, parse_sdp
from sip_server.sip.transaction import response_input


@dataclass(frozen=True, slots=True)
class InviteAnswered:
    call_id: str
    device_id: str
    channel_id: str
    ssrc: str  # the SSRC to match media by: the device's y= when it gave one, else ours
    remote_media: tuple[str, int] | None  # where the device sends from / listens (tcp-active)
    transport: str
    sdp: Sdp
    filesize: int | None = None  # a=filesize of a download answer (bytes), when the device gave it
    # a history answer's t= against the offer: 0 the same window, +-N*3600 the same window shifted by whole
    # hours (NVRs that build t= from local time as if it were UTC: +28800), None not comparable / different
    window_shift_s: int | None = None


@dataclass(frozen=True, slots=True)
class InviteFailed:
    call_id: str
    device_id: str
    channel_id: str
    status: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class SessionEnded:
    call_id: str
    device_id: str
    channel_id: str
    by: str  # "device" | "platform"
    reason: str


@dataclass(frozen=True, slots=True)
class MediaStatusReceived:
    """The device's in-call ``Notify/MediaStatus`` (already answered 200): NotifyType ``121`` means the
    history file it sends has ended; the session stays up until someone BYEs it."""

    call_id: str
    device_id: str
    channel_id: str
    notify_type: str


#: s= of the three kinds of call (GB/T 28181 9.2, 9.8, 9.9)
SESSION_NAMES = ("Play", "Playback", "Download")
HISTORY_SESSIONS = ("Playback", "Download")


#: The largest whole-hour shift of an answer's ``t=`` window taken for a time-zone mistake (UTC-12..UTC+14).
MAX_WINDOW_SHIFT_HOURS = 14


def window_shift(offered: tuple[int, int] | None, answered: tuple[int, int] | None) -> int | None:
    """How an answer's ``t=`` window relates to the offered one: 0 when equal; the shift in seconds when it is
    the same window moved by a whole number of hours (at most :data:`MAX_WINDOW_SHIFT_HOURS`), as NVRs that
    write local (Beijing) time as if it were UTC answer (+28800 s); None otherwise (absent, ``0 0``, or some
    other window: a device may answer with the recording it actually has)."""
    if offered is None or answered is None or answered == (0, 0):
        return None
    shift = answered[0] - offered[0]
    if answered[1] - offered[1] != shift:
        return None
    if shift == 0:
        return 0
    if shift % 3600 == 0 and abs(shift) <= MAX_WINDOW_SHIFT_HOURS * 3600:
        return shift
    return None


def history_window(session_name: str, start: int | None, end: int | None, speed: int | None) -> tuple[str, int | None]:
    """Check a call's kind, window and speed; returns the ``t=`` value and the ``a=downloadspeed`` to send.

    Live (``Play``) takes neither a window nor a speed; ``Playback`` and ``Download`` need ``start < end``
    (Unix seconds); a speed is a download's only (None: the device's default, 1x)."""
    if session_name not in SESSION_NAMES:
        raise ValueError(f"会话类型无效 / unknown session name {session_name!r}: one of {', '.join(SESSION_NAMES)}")
    if session_name == "Play":
        if start is not None or end is not None or speed is not None:
            raise ValueError("实时点播不带时间窗口或倍速 / a live call takes no window or speed")
        return "0 0", None
    if not isinstance(start, int) or not isinstance(end, int) or isinstance(start, bool) or isinstance(end, bool):
        raise ValueError("回放/下载须给出开始和结束时间 / playback and download need start and end (Unix seconds)")
    if start < 0 or end <= start:
        raise ValueError("结束时间须晚于开始时间 / the end must be after the start")
    if speed is not None:
        if session_name != "Download":
            raise ValueError("只有下载可指定倍速 / only a download takes a speed")
        if not isinstance(speed, int) or isinstance(speed, bool) or not 1 <= speed <= 64:
            raise ValueError("下载倍速须为 1 到 64 的整数 / the download speed must be an integer from 1 to 64")
    return f"{start} {end}", speed


def _filesize(sdp: Sdp) -> int | None:
    """``a=filesize`` of an answer (session or video level), in bytes; None when absent or unreadable."""
    video = sdp.video
    for attrs in (video.attrs if video is not None else [], sdp.attrs):
        for name, value in attrs:
            if name.lower() == "filesize" and value:
                text = value.strip()
                if text.isascii() and text.isdigit() and len(text) <= 18:
                    return int(text)
    return None


@dataclass
class MediaSession:
    call_id: str
    device_id: str
    channel_id: str
    ssrc: str
    transport: str  # media transport: udp | tcp-passive | tcp-active
    route: Any
    invite_key: Any
    dialog: Dialog
    extra: dict = field(default_factory=dict)
    session_name: str = "Play"  # Play | Playback | Download

    @property
    def state(self) -> str:
        return self.dialog.state

    @property
    def invite(self) -> SipRequest:
        return self.dialog.invite

    @property
    def local_tag(self) -> str:
        return self.dialog.local_tag

    @property
    def remote_tag(self) -> str | None:
        return self.dialog.remote_tag

    @property
    def remote_target(self) -> str | None:
        return self.dialog.remote_target

    @property
    def cseq(self) -> int:
        return self.dialog.local_cseq

    @property
    def want_end(self) -> bool:
        """The platform gave up before the answer."""
        return self.dialog.state in (CANCEL_PENDING, CANCELLING)


# how the table's outcomes read in events (failed:<why> / ended:<why>); None: the caller's reason
_WHY: dict[str, str | None] = {
    "no_answer": "device did not answer the INVITE",
    "cancelled": "cancelled",
    "left_before_answer": "viewer left before the answer",
    "by_device": "device ended the session (BYE)",
    "hangup": None,
    "abort": None,
}
_IN_DIALOG = {"BYE": "bye_in", "INFO": "info_in", "ACK": "ack_in", "MESSAGE": None}


class InviteSessions:
    """Owned by :class:`sip_server.gb.server.GbServer`; uses its endpoint, routes and event queue."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.by_call: dict[str, MediaSession] = {}
        self.by_key: dict[Any, str] = {}

    # ------------------------------------------------------------------ platform side
    def invite(self, device_id: str, channel_id: str, *, media_ip: str, media_port: int, ssrc: str,
               transport: str, now: float, session_name: str = "Play", start: int | None = None,
               end: int | None = None, speed: int | None = None,
               stream: tuple[str, int] | None = None) -> str | None:
        """Send an INVITE for ``channel_id`` of ``device_id``; returns the Call-ID, or None if the device
        cannot be reached (offline / no route). ``stream``: (form, number) of the encoder stream asked for
        (``a=streamnumber:1``: the sub-stream; see :func:`sip_server.sip.sdp.gb_offer`).

        Live by default; ``session_name="Playback"`` or ``"Download"`` with ``start``/``end`` (Unix seconds)
        asks for the recording of that window (``u=<channel>:0``, ``t=<start> <end>``), ``speed`` a
        download's ``a=downloadspeed``. The SSRC is the caller's (history ones begin with ``1``).
        Raises ValueError for a window or speed that does not fit the kind of call."""
        time, speed = history_window(session_name, start, end, speed)
        uri = f"{channel_id}:0" if session_name in HISTORY_SESSIONS else None
        srv = self.server
        route = srv.routes.get(device_id)
        if route is None or not srv.presence.is_online(device_id):
            return None
        cfg = srv.config
        call_id = f"{random_hex(10)}@{cfg.domain}"
        tag = random_hex(5)
        host, port = route.addr
        body = build_offer(origin_id=cfg.sip_id, ip=media_ip, port=media_port, ssrc=ssrc, transport=transport,
                           session_name=session_name, time=time, uri=uri, speed=speed, stream=stream)
        h = Headers()
        h.add("Via", via_value(route.transport))
        h.add("From", f"<sip:{cfg.sip_id}@{cfg.domain}>;tag={tag}")
        h.add("To", f"<sip:{channel_id}@{cfg.domain}>")
        h.add("Call-ID", call_id)
        h.add("CSeq", "1 INVITE")
        h.add("Contact", srv.contact(route))
        h.add("Max-Forwards", "70")
        h.add("User-Agent", cfg.user_agent)
        # GB/T 28181: Subject = media sender id:its serial, media receiver id:its serial
        h.add("Subject", f"{channel_id}:{ssrc},{cfg.sip_id}:0")
        h.add("Content-Type", "APPLICATION/SDP")
        req = SipRequest("INVITE", f"sip:{channel_id}@{host}:{port}", h, body)
        key = srv.endpoint.send_request(req, route.addr, now, route.transport)
        # In-dialog requests go straight to the device's registered address, as they always have, so the
        # route set of a Record-Route (never seen from a device) is not echoed as Route headers.
        dialog = Dialog(req, route.transport, route_headers=False)
        self.by_call[call_id] = MediaSession(call_id, device_id, channel_id, ssrc, transport, route, key, dialog,
                                             session_name=session_name)
        if start is not None and end is not None:
            self.by_call[call_id].extra["window"] = (start, end)  # the answer's t= is compared with it
        self.by_key[key] = call_id
        return call_id

    def end(self, call_id: str, now: float, reason: str = "viewer left") -> None:
        """BYE an established session, CANCEL a pending one (or BYE its 2xx when it comes)."""
        s = self.by_call.get(call_id)
        if s is not None:
            self._step(s, "hangup", now, reason=reason)

    def info(self, call_id: str, body: bytes, now: float, content_type: str = MANSRTSP_TYPE) -> Any | None:
        """Send an INFO (MANSRTSP by default: playback PLAY / PAUSE / scale) inside an established session;
        returns the transaction key, None when there is no such confirmed session."""
        s = self.by_call.get(call_id)
        if s is None or not s.dialog.can("info"):
            return None
        s.dialog.fire("info")
        return self._send_request(s, s.dialog.info(body, content_type, extra=self._ua()), now)

    def ended_by_transport(self, call_id: str, now: float, reason: str) -> None:
        """The media side gave up (no media within the deadline, connection lost): BYE and report."""
        s = self.by_call.get(call_id)
        if s is None:
            return
        confirmed = s.state == CONFIRMED
        self._step(s, "abort", now, reason=reason)
        if not confirmed:
            s.extra["fail_reason"] = reason

    # ------------------------------------------------------------------ the dialog table's actions
    def _step(self, s: MediaSession, event: str, now: float, msg: Any = None, *, request_event: Any = None,
              status: int | None = None, reason: str = "") -> bool:
        """Fire ``event`` on the session's dialog and carry out the actions; False when the table refuses."""
        try:
            transition = s.dialog.fire(event, msg)
        except IllegalTransition:
            return False
        for op, arg in transition.actions:
            if op == "send":
                self._send(s, arg, now)
            elif op == "reply":
                self.server._reply(request_event, int(arg), now)
            elif op == "deliver":
                self._answered(s, msg, now)
            elif op == "failed":
                if arg == "refused":
                    text = f"device refused: {msg.status} {msg.reason}".strip()
                    status = msg.status
                else:
                    text = _WHY.get(arg) or reason
                self._report(s, InviteFailed(s.call_id, s.device_id, s.channel_id, status, text))
            elif op == "ended":
                by = "device" if arg == "by_device" else "platform"
                self._report(s, SessionEnded(s.call_id, s.device_id, s.channel_id, by, _WHY.get(arg) or reason))
        return True

    def _ua(self) -> list[tuple[str, str]]:
        return [("User-Agent", self.server.config.user_agent)]

    def _send(self, s: MediaSession, method: str, now: float) -> None:
        d = s.dialog
        if method == "ACK":
            req = d.ack()
        elif method == "CANCEL":
            req = d.cancel()
        elif method == "BYE":
            req = d.bye(extra=self._ua())
        else:  # "INFO" carries a body: sent by info()
            return
        self._send_request(s, req, now)

    def _send_request(self, s: MediaSession, req: SipRequest, now: float) -> Any:
        return self.server.endpoint.send_request(req, s.route.addr, now, s.route.transport)

    def _report(self, s: MediaSession, event: Any) -> None:
        """The session is over for the platform: forget it and say why."""
        self.by_call.pop(s.call_id, None)
        self.by_key.pop(s.invite_key, None)
        self.server._emit(event)

    def _answered(self, s: MediaSession, resp: Any, now: float) -> None:
        """Check the 2xx's SDP: report the session answered, or BYE it and report why it failed."""
        status = resp.status
        try:
            sdp = parse_sdp(resp.body)
        except SdpError as exc:
            self._step(s, "abort", now, status=status, reason=f"unusable answer SDP: {exc}")
            return
        video = sdp.video
        if video is None or video.port == 0:
            self._step(s, "abort", now, status=status, reason="device answered without video (port 0)")
            return
        ssrc = s.ssrc
        if sdp.ssrc:
            digits = sdp.ssrc.strip()
            if digits.isdigit():
                ssrc = digits.zfill(10)  # "630886" answered for "0000630886" by some firmwares
        s.ssrc = ssrc
        offered = s.extra.get("window")
        shift = window_shift(offered, sdp.time_range) if offered is not None else None
        # a history answer is accepted whatever its t= (the stream is what counts); a whole-hour shift or a
        # different window is said in the log by the adapter (window_shift_s)
        self.server._emit(InviteAnswered(s.call_id, s.device_id, s.channel_id, ssrc, sdp.media_address(),
                                         s.transport, sdp, _filesize(sdp), shift))

    # ------------------------------------------------------------------ endpoint events
    def on_response(self, event: Any, now: float) -> bool:
        """Handle a response to our INVITE; True when it was one."""
        call_id = self.by_key.get(event.key)
        if call_id is None:
            return False
        s = self.by_call.get(call_id)
        if s is not None:
            self._step(s, response_input(event.response.status), now, event.response)
        return True

    def on_timeout(self, event: Any, now: float) -> bool:
        call_id = self.by_key.get(event.key)
        if call_id is None:
            return False
        s = self.by_call.get(call_id)
        if s is not None:
            self._step(s, "timeout", now)
        return True

    def on_request(self, event: Any, now: float) -> bool:
        """BYE, INFO, MESSAGE (or a stray ACK) from the device inside one of our dialogs; True when handled.

        A MESSAGE is ours when its Call-ID is one of our calls, and also (answered 481) when it carries a
        MediaStatus for a call we do not have: no other part of the platform could use it."""
        req = event.request
        if req.method not in _IN_DIALOG:
            return False
        try:
            call_id = req.call_id
        except SipParseError:
            return False
        s = self.by_call.get(call_id)
        if s is None:
            if req.method == "MESSAGE":
                return self._stray_media_status(event, call_id, now)
            return False
        # In-dialog requests are believed only from the device's registered peer: a BYE from anywhere
        # else (a guessed or sniffed Call-ID) must not end a viewer's session.
        srv = self.server
        if srv.presence.is_online(s.device_id):
            peer_ok = srv.is_registered_peer(s.device_id, event.addr, event.transport)
        else:  # gone offline meanwhile: the peer the session was set up with
            r = s.route
            peer_ok = r.addr == event.addr and r.transport == event.transport.lower() and r.connected
        if not peer_ok:
            if req.method != "ACK":
                srv._refuse_claim(event, s.device_id, now, f"{req.method} in call {call_id}")
            return True
        if req.method == "MESSAGE":
            return self._in_call_message(s, event, now)
        if not self._step(s, _IN_DIALOG[req.method], now, req, request_event=event) and req.method != "ACK":
            srv._reply(event, 481, now)  # the dialog is ending: no such call any more
        return True

    def _in_call_message(self, s: MediaSession, event: Any, now: float) -> bool:
        """A MESSAGE inside the call, from the session's device: MediaStatus is answered and reported here,
        anything else goes the way of any MESSAGE (False)."""
        srv = self.server
        try:
            msg = manscdp.parse(event.request.body)
        except manscdp.ManscdpError:
            return False  # the MESSAGE handling answers 400 and says why
        if msg.cmd_type != "MediaStatus":
            return False
        try:
            status = manscdp.as_media_status(msg)
        except manscdp.ManscdpError as exc:
            srv.metrics.bad_messages += 1
            srv._reply(event, 400, now, reason="Bad MANSCDP body")
            srv._emit(ev.MessageRejected(s.device_id, event.addr, 400, f"bad MediaStatus in call {s.call_id}: {exc}"))
            return True
        if s.dialog.state == TERMINATED:
            srv._reply(event, 481, now)
            return True
        srv._reply(event, 200, now)
        if s.dialog.state == CONFIRMED:  # before the answer or after our BYE there is no stream to end
            srv._emit(MediaStatusReceived(s.call_id, s.device_id, s.channel_id, status.notify_type))
        return True

    def _stray_media_status(self, event: Any, call_id: str, now: float) -> bool:
        """A MESSAGE whose Call-ID is none of our calls: a MediaStatus is answered 481 (and said in the log),
        nothing is allocated; anything else is an ordinary MESSAGE (False)."""
        body = event.request.body
        if b"mediastatus" not in body[:4096].lower():
            return False
        try:
            msg = manscdp.parse(body)
        except manscdp.ManscdpError:
            return False
        if msg.cmd_type != "MediaStatus":
            return False
        srv = self.server
        srv._reply(event, 481, now)
        claimed = srv._from_user(event.request) or msg.device_id or None
        srv._emit(ev.MessageRejected(claimed, event.addr, 481,
                                     f"MediaStatus for an unknown call {call_id[:80]!r}"))
        return True


__all__ = ["InviteSessions", "InviteAnswered", "InviteFailed", "SessionEnded", "MediaSession", "MediaStatusReceived",
           "SESSION_NAMES", "HISTORY_SESSIONS", "history_window", "window_shift", "ev"]
