"""Media sessions with devices: INVITE / ACK / BYE / CANCEL / INFO as GB/T 28181 live view uses them (sans-IO).

The platform is the UAC: it offers where the media should go (``y=`` SSRC, our address and port, one of
three transports) and the device answers with where it sends from. The answer decides: the SSRC the device
answers with is the one media is matched by (some NVRs change it), a refusal or an unusable answer ends the
session with a reason a person can read, and a 2xx that arrives after we gave up is ACKed and BYEd.

What happens when is the dialog table of the SIP core (:data:`sip_server.sip.dialog.INVITE_UAC`); this module
routes the endpoint's events into it, carries out its actions (send, reply, report) and words the outcomes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sip_server.gb import events as ev
from sip_server.sip import Headers, SipRequest
from sip_server.sip.dialog import (
    CANCEL_PENDING,
    CANCELLING,
    CONFIRMED,
    MANSRTSP_TYPE,
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
_IN_DIALOG = {"BYE": "bye_in", "INFO": "info_in", "ACK": "ack_in"}


class InviteSessions:
    """Owned by :class:`sip_server.gb.server.GbServer`; uses its endpoint, routes and event queue."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.by_call: dict[str, MediaSession] = {}
        self.by_key: dict[Any, str] = {}

    # ------------------------------------------------------------------ platform side
    def invite(self, device_id: str, channel_id: str, *, media_ip: str, media_port: int, ssrc: str,
               transport: str, now: float, session_name: str = "Play", time: str = "0 0",
               uri: str | None = None) -> str | None:
        """Send an INVITE for ``channel_id`` of ``device_id``; returns the Call-ID, or None if the device
        cannot be reached (offline / no route)."""
        srv = self.server
        route = srv.routes.get(device_id)
        if route is None or not srv.presence.is_online(device_id):
            return None
        cfg = srv.config
        call_id = f"{random_hex(10)}@{cfg.domain}"
        tag = random_hex(5)
        host, port = route.addr
        body = build_offer(origin_id=cfg.sip_id, ip=media_ip, port=media_port, ssrc=ssrc, transport=transport,
                           session_name=session_name, time=time, uri=uri)
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
        self.by_call[call_id] = MediaSession(call_id, device_id, channel_id, ssrc, transport, route, key, dialog)
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
        self.server._emit(InviteAnswered(s.call_id, s.device_id, s.channel_id, ssrc, sdp.media_address(),
                                         s.transport, sdp))

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
        """BYE, INFO (or a stray ACK) from the device inside one of our dialogs; True when handled."""
        req = event.request
        if req.method not in _IN_DIALOG:
            return False
        try:
            call_id = req.call_id
        except SipParseError:
            return False
        s = self.by_call.get(call_id)
        if s is None:
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
        if not self._step(s, _IN_DIALOG[req.method], now, req, request_event=event) and req.method != "ACK":
            srv._reply(event, 481, now)  # the dialog is ending: no such call any more
        return True


__all__ = ["InviteSessions", "InviteAnswered", "InviteFailed", "SessionEnded", "MediaSession", "ev"]
