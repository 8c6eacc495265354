"""Media sessions with devices: INVITE / ACK / BYE / CANCEL as GB/T 28181 live view uses them (sans-IO).

The platform is the UAC: it offers where the media should go (``y=`` SSRC, our address and port, one of
three transports) and the device answers with where it sends from. The answer decides: the SSRC the device
answers with is the one media is matched by (some NVRs change it), a refusal or an unusable answer ends the
session with a reason a person can read, and a 2xx that arrives after we gave up is ACKed and BYEd.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sip_server.gb import events as ev
from sip_server.sip import Headers, SipRequest, make_cancel, parse_name_addr
from sip_server.sip.message import SipParseError, random_hex
from sip_server.sip.sdp import Sdp, SdpError, build_offer, parse_sdp


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
    transport: str
    route: Any
    invite: SipRequest
    invite_key: Any
    local_tag: str
    state: str = "calling"  # calling | proceeding | confirmed | cancelling | ended
    remote_tag: str | None = None
    remote_target: str | None = None
    cseq: int = 1
    want_end: bool = False  # the platform gave up before the answer
    extra: dict = field(default_factory=dict)


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
        h.add("Via", f"SIP/2.0/{route.transport.upper()} 0.0.0.0:0;rport")
        h.add("From", f"<sip:{cfg.sip_id}@{cfg.domain}>;tag={tag}")
        h.add("To", f"<sip:{channel_id}@{cfg.domain}>")
        h.add("Call-ID", call_id)
        h.add("CSeq", "1 INVITE")
        h.add("Contact", f"<sip:{cfg.sip_id}@{cfg.contact_host or cfg.domain}>")
        h.add("Max-Forwards", "70")
        h.add("User-Agent", cfg.user_agent)
        # GB/T 28181: Subject = media sender id:its serial, media receiver id:its serial
        h.add("Subject", f"{channel_id}:{ssrc},{cfg.sip_id}:0")
        h.add("Content-Type", "APPLICATION/SDP")
        req = SipRequest("INVITE", f"sip:{channel_id}@{host}:{port}", h, body)
        key = srv.endpoint.send_request(req, route.addr, now, route.transport)
        self.by_call[call_id] = MediaSession(call_id, device_id, channel_id, ssrc, transport, route, req, key, tag)
        self.by_key[key] = call_id
        return call_id

    def end(self, call_id: str, now: float, reason: str = "viewer left") -> None:
        """BYE an established session, CANCEL a pending one (or BYE its 2xx when it comes)."""
        s = self.by_call.get(call_id)
        if s is None:
            return
        if s.state == "confirmed":
            self._bye(s, now)
            self._finish(s, "platform", reason)
        elif s.state in ("calling", "proceeding"):
            s.want_end = True
            if s.state == "proceeding":  # CANCEL only after a provisional response (RFC 3261 9.1)
                cancel = make_cancel(s.invite)
                self.server.endpoint.send_request(cancel, s.route.addr, now, s.route.transport)
                s.state = "cancelling"

    def _bye(self, s: MediaSession, now: float) -> None:
        cfg = self.server.config
        s.cseq += 1
        h = Headers()
        h.add("Via", f"SIP/2.0/{s.route.transport.upper()} 0.0.0.0:0;rport")
        h.add("From", f"<sip:{cfg.sip_id}@{cfg.domain}>;tag={s.local_tag}")
        to = f"<sip:{s.channel_id}@{cfg.domain}>"
        h.add("To", f"{to};tag={s.remote_tag}" if s.remote_tag else to)
        h.add("Call-ID", s.call_id)
        h.add("CSeq", f"{s.cseq} BYE")
        h.add("Max-Forwards", "70")
        h.add("User-Agent", cfg.user_agent)
        uri = s.remote_target or s.invite.uri
        self.server.endpoint.send_request(SipRequest("BYE", uri, h), s.route.addr, now, s.route.transport)

    def _ack(self, s: MediaSession, response: Any, now: float) -> None:
        h = Headers()
        h.add("Via", f"SIP/2.0/{s.route.transport.upper()} 0.0.0.0:0;rport")
        h.add("From", s.invite.headers.get("From"))
        h.add("To", response.headers.get("To"))
        h.add("Call-ID", s.call_id)
        h.add("CSeq", "1 ACK")
        h.add("Max-Forwards", "70")
        uri = s.remote_target or s.invite.uri
        self.server.endpoint.send_request(SipRequest("ACK", uri, h), s.route.addr, now, s.route.transport)

    def _finish(self, s: MediaSession, by: str, reason: str) -> None:
        if s.state == "ended":
            return
        s.state = "ended"
        self.by_call.pop(s.call_id, None)
        self.by_key.pop(s.invite_key, None)
        self.server._emit(SessionEnded(s.call_id, s.device_id, s.channel_id, by, reason))

    def _fail(self, s: MediaSession, status: int | None, reason: str) -> None:
        s.state = "ended"
        self.by_call.pop(s.call_id, None)
        self.by_key.pop(s.invite_key, None)
        self.server._emit(InviteFailed(s.call_id, s.device_id, s.channel_id, status, reason))

    # ------------------------------------------------------------------ endpoint events
    def on_response(self, event: Any, now: float) -> bool:
        """Handle a response to our INVITE; True when it was one."""
        call_id = self.by_key.get(event.key)
        if call_id is None:
            return False
        s = self.by_call.get(call_id)
        if s is None:
            return True
        resp = event.response
        status = resp.status
        if status < 200:
            if s.state == "calling":
                s.state = "proceeding"
                if s.want_end:  # the viewer left while we waited: now we may CANCEL
                    self.end(call_id, now)
            return True
        if status >= 300:
            if s.want_end:
                self._finish(s, "platform", "cancelled")
            else:
                self._fail(s, status, f"device refused: {status} {resp.reason}".strip())
            return True
        # 2xx: establish the dialog, ACK it, then check the answer
        s.remote_tag = resp.to_tag
        contact = resp.headers.get("Contact")
        if contact:
            try:
                s.remote_target = str(parse_name_addr(contact).uri)
            except SipParseError:
                s.remote_target = None
        self._ack(s, resp, now)
        s.state = "confirmed"
        if s.want_end:
            self._bye(s, now)
            self._finish(s, "platform", "viewer left before the answer")
            return True
        try:
            sdp = parse_sdp(resp.body)
        except SdpError as exc:
            self._bye(s, now)
            self._fail(s, status, f"unusable answer SDP: {exc}")
            return True
        video = sdp.video
        if video is None or video.port == 0:
            self._bye(s, now)
            self._fail(s, status, "device answered without video (port 0)")
            return True
        ssrc = s.ssrc
        if sdp.ssrc:
            digits = sdp.ssrc.strip()
            if digits.isdigit():
                ssrc = digits.zfill(10)  # "630886" answered for "0000630886" by some firmwares
        s.ssrc = ssrc
        self.server._emit(InviteAnswered(s.call_id, s.device_id, s.channel_id, ssrc, sdp.media_address(),
                                         s.transport, sdp))
        return True

    def on_timeout(self, event: Any, now: float) -> bool:
        call_id = self.by_key.get(event.key)
        if call_id is None:
            return False
        s = self.by_call.get(call_id)
        if s is not None:
            if s.want_end:
                self._finish(s, "platform", "cancelled")
            else:
                self._fail(s, None, "device did not answer the INVITE")
        return True

    def on_request(self, event: Any, now: float) -> bool:
        """BYE (or a stray ACK) from the device inside one of our dialogs; True when handled."""
        req = event.request
        if req.method not in ("BYE", "ACK", "INFO"):
            return False
        try:
            call_id = req.call_id
        except SipParseError:
            return False
        s = self.by_call.get(call_id)
        if req.method == "ACK":
            return s is not None
        if s is None:
            return False
        self.server._reply(event, 200, now)
        if req.method == "BYE":
            self._finish(s, "device", "device ended the session (BYE)")
        return True

    def ended_by_transport(self, call_id: str, now: float, reason: str) -> None:
        """The media side gave up (no media within the deadline, connection lost): BYE and report."""
        s = self.by_call.get(call_id)
        if s is None:
            return
        if s.state == "confirmed":
            self._bye(s, now)
            self._fail(s, None, reason)
        else:
            self.end(call_id, now, reason)
            s.extra["fail_reason"] = reason


__all__ = ["InviteSessions", "InviteAnswered", "InviteFailed", "SessionEnded", "MediaSession", "ev"]
