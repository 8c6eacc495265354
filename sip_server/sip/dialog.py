"""RFC 3261 INVITE dialogs (sections 12, 13, 15) as data: the UAC session as a transition table.

One table ``(state, input) -> Transition(next_state, actions)``, written like the transaction tables in
:mod:`sip_server.sip.transaction`, drives an INVITE session from the caller's side (live view, playback,
download, cascade). Unlike the transaction tables, a pair without a row is *refused*:
:meth:`Dialog.fire` raises :class:`IllegalTransition` and changes nothing; inputs that are legal but
need no work (a retransmitted 2xx, a stray ACK) have explicit rows without actions.

States (the session; the RFC 3261 dialog state is :attr:`Dialog.dialog_state`)
    ``calling``         INVITE sent, nothing heard                      (no dialog yet)
    ``proceeding``      a provisional came                              (early dialog if it had a To tag)
    ``cancel_pending``  the TU gave up before any provisional: CANCEL must wait for one (RFC 3261 9.1)
    ``cancelling``      CANCEL sent, waiting for the INVITE's final response
    ``confirmed``       2xx received and ACKed                          (confirmed dialog)
    ``terminating``     BYE sent, waiting for its response              (still confirmed)
    ``terminated``      over                                            (terminated)

Inputs
    responses to the INVITE: ``1xx``, ``2xx``, ``3xx`` (any final 300-699), ``timeout`` (the INVITE
    transaction gave up); from the TU: ``hangup`` (end normally), ``abort`` (end because the session failed:
    unusable answer, media lost), ``info`` (send an INFO, e.g. MANSRTSP); requests from the peer inside the
    dialog: ``bye_in``, ``info_in``, ``ack_in``; ``bye_done`` (our BYE got its final response or timed out).

Actions (``(op, arg)``, in order)
    ``early``              record the remote tag / target / route set of a provisional (done by :meth:`fire`)
    ``establish``          the same from the 2xx, confirming the dialog (done by :meth:`fire`)
    ``send``               the TU sends the request built by :meth:`Dialog.ack` / ``cancel`` / ``bye`` / ``info``
    ``reply``              the TU answers the peer's request with this status
    ``deliver``            the TU looks at the 2xx answer (and may ``abort``)
    ``failed`` / ``ended`` the TU reports the outcome; the argument says why (see :data:`OUTCOMES`)

Nothing here does I/O or reads a clock; the TU sends what the dialog builds.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .message import (
    Headers,
    SipParseError,
    SipRequest,
    SipResponse,
    make_cancel,
    parse_name_addr,
    via_value,
)
from .transaction import Transition

__all__ = [
    "CALLING",
    "PROCEEDING",
    "CANCEL_PENDING",
    "CANCELLING",
    "CONFIRMED",
    "TERMINATING",
    "TERMINATED",
    "STATES",
    "INPUTS",
    "INVITE_UAC",
    "OUTCOMES",
    "Dialog",
    "DialogError",
    "IllegalTransition",
    "MANSRTSP_TYPE",
]

MANSRTSP_TYPE = "Application/MANSRTSP"

CALLING = "calling"
PROCEEDING = "proceeding"
CANCEL_PENDING = "cancel_pending"
CANCELLING = "cancelling"
CONFIRMED = "confirmed"
TERMINATING = "terminating"
TERMINATED = "terminated"

STATES = (CALLING, PROCEEDING, CANCEL_PENDING, CANCELLING, CONFIRMED, TERMINATING, TERMINATED)
INPUTS = ("1xx", "2xx", "3xx", "timeout", "hangup", "abort", "info", "bye_in", "info_in", "ack_in", "bye_done")

# why a session failed / ended, as the table names it (the TU turns these into words)
OUTCOMES = {
    "refused": "the device answered the INVITE with a final non-2xx response",
    "no_answer": "the INVITE transaction timed out",
    "abort": "the TU ended a confirmed session because it failed",
    "cancelled": "the TU gave up before the answer and the INVITE ended without a 2xx",
    "left_before_answer": "the TU gave up before the answer and a 2xx came anyway (ACKed, then BYEd)",
    "hangup": "the TU ended the session",
    "by_device": "the peer sent BYE",
}


def _t(next_state: str, *actions: str) -> Transition:
    """``_t("confirmed", "send:ACK")`` -> Transition with (op, arg) pairs."""
    return Transition(next_state, tuple((a.partition(":")[0], a.partition(":")[2]) for a in actions))


_LATE_2XX = ("establish", "send:ACK", "send:BYE", "ended:left_before_answer")  # RFC 3261 15: ACK, then BYE
_PEER_BYE = ("reply:200", "ended:by_device")

INVITE_UAC: dict[tuple[str, str], Transition] = {
    # --- INVITE sent, nothing heard
    (CALLING, "1xx"): _t(PROCEEDING, "early"),
    (CALLING, "2xx"): _t(CONFIRMED, "establish", "send:ACK", "deliver"),
    (CALLING, "3xx"): _t(TERMINATED, "failed:refused"),
    (CALLING, "timeout"): _t(TERMINATED, "failed:no_answer"),
    (CALLING, "hangup"): _t(CANCEL_PENDING),  # no CANCEL before a provisional (RFC 3261 9.1)
    (CALLING, "abort"): _t(CANCEL_PENDING),
    (CALLING, "bye_in"): _t(TERMINATED, *_PEER_BYE),
    (CALLING, "info_in"): _t(CALLING, "reply:200"),
    (CALLING, "ack_in"): _t(CALLING),
    # --- provisional received
    (PROCEEDING, "1xx"): _t(PROCEEDING, "early"),
    (PROCEEDING, "2xx"): _t(CONFIRMED, "establish", "send:ACK", "deliver"),
    (PROCEEDING, "3xx"): _t(TERMINATED, "failed:refused"),
    (PROCEEDING, "timeout"): _t(TERMINATED, "failed:no_answer"),
    (PROCEEDING, "hangup"): _t(CANCELLING, "send:CANCEL"),
    (PROCEEDING, "abort"): _t(CANCELLING, "send:CANCEL"),
    (PROCEEDING, "bye_in"): _t(TERMINATED, *_PEER_BYE),
    (PROCEEDING, "info_in"): _t(PROCEEDING, "reply:200"),
    (PROCEEDING, "ack_in"): _t(PROCEEDING),
    # --- the TU gave up before any provisional
    (CANCEL_PENDING, "1xx"): _t(CANCELLING, "early", "send:CANCEL"),
    (CANCEL_PENDING, "2xx"): _t(TERMINATING, *_LATE_2XX),
    (CANCEL_PENDING, "3xx"): _t(TERMINATED, "ended:cancelled"),
    (CANCEL_PENDING, "timeout"): _t(TERMINATED, "ended:cancelled"),
    (CANCEL_PENDING, "hangup"): _t(CANCEL_PENDING),
    (CANCEL_PENDING, "abort"): _t(CANCEL_PENDING),
    (CANCEL_PENDING, "bye_in"): _t(TERMINATED, *_PEER_BYE),
    (CANCEL_PENDING, "info_in"): _t(CANCEL_PENDING, "reply:200"),
    (CANCEL_PENDING, "ack_in"): _t(CANCEL_PENDING),
    # --- CANCEL sent
    (CANCELLING, "1xx"): _t(CANCELLING, "early"),
    (CANCELLING, "2xx"): _t(TERMINATING, *_LATE_2XX),  # the 2xx crossed our CANCEL
    (CANCELLING, "3xx"): _t(TERMINATED, "ended:cancelled"),  # 487 Request Terminated
    (CANCELLING, "timeout"): _t(TERMINATED, "ended:cancelled"),
    (CANCELLING, "hangup"): _t(CANCELLING),
    (CANCELLING, "abort"): _t(CANCELLING),
    (CANCELLING, "bye_in"): _t(TERMINATED, *_PEER_BYE),
    (CANCELLING, "info_in"): _t(CANCELLING, "reply:200"),
    (CANCELLING, "ack_in"): _t(CANCELLING),
    # --- 2xx received and ACKed
    (CONFIRMED, "2xx"): _t(CONFIRMED),  # a retransmission: the INVITE transaction ("accepted") re-ACKs it
    (CONFIRMED, "hangup"): _t(TERMINATING, "send:BYE", "ended:hangup"),
    (CONFIRMED, "abort"): _t(TERMINATING, "send:BYE", "failed:abort"),
    (CONFIRMED, "info"): _t(CONFIRMED, "send:INFO"),
    (CONFIRMED, "bye_in"): _t(TERMINATED, *_PEER_BYE),
    (CONFIRMED, "info_in"): _t(CONFIRMED, "reply:200"),
    (CONFIRMED, "ack_in"): _t(CONFIRMED),
    # --- BYE sent
    (TERMINATING, "2xx"): _t(TERMINATING),
    (TERMINATING, "hangup"): _t(TERMINATING),
    (TERMINATING, "abort"): _t(TERMINATING),
    (TERMINATING, "bye_in"): _t(TERMINATED, "reply:200"),  # both sides hung up at once
    (TERMINATING, "ack_in"): _t(TERMINATING),
    (TERMINATING, "bye_done"): _t(TERMINATED),
    # --- terminated: every input is refused
}

# the RFC 3261 dialog state in each session state (None: no dialog; "early" only when a provisional had a tag)
_DIALOG_STATE = {
    CALLING: None,
    PROCEEDING: "early",
    CANCEL_PENDING: None,
    CANCELLING: "early",
    CONFIRMED: "confirmed",
    TERMINATING: "confirmed",
    TERMINATED: "terminated",
}


class DialogError(ValueError):
    """A dialog cannot do what was asked."""


class IllegalTransition(DialogError):
    """``(state, input)`` has no row in the table; the dialog is unchanged."""

    def __init__(self, state: str, event: str) -> None:
        super().__init__(f"{event!r} is not allowed in dialog state {state!r}")
        self.state = state
        self.event = event


def _record_route(msg: SipResponse) -> list[str]:
    """The route set a UAC takes from a response: its Record-Route entries, reversed (RFC 3261 12.1.2)."""
    return list(reversed(msg.headers.get_all("record-route")))


def _contact_uri(msg: SipResponse) -> str | None:
    contact = msg.headers.get("contact")
    if not contact:
        return None
    try:
        return str(parse_name_addr(contact).uri)
    except SipParseError:
        return None


class Dialog:
    """An INVITE session and its dialog, seen from the UAC: identifiers, CSeq numbering, route set, remote
    target, the state driven by :data:`INVITE_UAC`, and the requests sent inside it.

    Built from the INVITE as sent (:meth:`for_invite`). In-dialog requests carry the INVITE's From (our URI
    and tag), its To URI with the remote tag, the Call-ID, the next local CSeq, the route set as Route
    headers and the remote target (the 2xx's Contact; the INVITE's Request-URI when it had none) as
    Request-URI; their Via is the placeholder the endpoint completes (:func:`via_value`). The TU sends them
    to the peer's address itself: with ``route_headers=False`` the route set is kept but not written as
    Route headers (what GB/T 28181 live view has always done, talking straight to the registered device).
    """

    __slots__ = (
        "invite",
        "transport",
        "call_id",
        "local_from",
        "local_tag",
        "remote_to",
        "remote_tag",
        "remote_target",
        "route_set",
        "ack_to",
        "invite_cseq",
        "local_cseq",
        "remote_cseq",
        "state",
        "route_headers",
    )

    def __init__(self, invite: SipRequest, transport: str = "udp", *, route_headers: bool = True) -> None:
        h = invite.headers
        try:
            self.call_id: str = invite.call_id
            self.invite_cseq: int = invite.cseq[0]
        except SipParseError as exc:
            raise DialogError(f"not a usable INVITE: {exc}") from exc
        local_from = h.get("from")
        remote_to = h.get("to")
        if not local_from or not remote_to or not invite.from_tag:
            raise DialogError("the INVITE needs a From with a tag and a To")
        self.invite = invite
        self.transport = transport
        self.local_from: str = local_from  # our URI with our tag, exactly as the INVITE had it
        self.local_tag: str = invite.from_tag
        self.remote_to: str = remote_to  # the peer's URI (no tag), exactly as the INVITE had it
        self.remote_tag: str | None = None
        self.remote_target: str | None = None  # from the Contact of the 1xx/2xx
        self.route_set: list[str] = []
        self.ack_to: str | None = None  # the 2xx's To, echoed in the ACK
        self.local_cseq: int = self.invite_cseq
        self.remote_cseq: int | None = None
        self.state: str = CALLING
        self.route_headers = route_headers  # False: the route set is recorded but not sent as Route headers

    @classmethod
    def for_invite(cls, invite: SipRequest, transport: str = "udp", *, route_headers: bool = True) -> Dialog:
        return cls(invite, transport, route_headers=route_headers)

    # ------------------------------------------------------------------ the table
    def can(self, event: str) -> bool:
        return (self.state, event) in INVITE_UAC

    def fire(self, event: str, msg: Any = None) -> Transition:
        """Apply ``event`` (with the response or request that caused it, if any) and return the transition,
        whose remaining actions the TU carries out. Raises :class:`IllegalTransition` for a pair without a
        row, leaving the dialog as it was."""
        transition = INVITE_UAC.get((self.state, event))
        if transition is None:
            raise IllegalTransition(self.state, event)
        for op, _ in transition.actions:
            if op == "early" and msg is not None:
                self._early(msg)
            elif op == "establish" and msg is not None:
                self._establish(msg)
        if event in ("bye_in", "info_in") and msg is not None:
            try:
                self.remote_cseq = msg.cseq[0]
            except SipParseError:
                pass
        self.state = transition.next_state
        return transition

    def _early(self, response: SipResponse) -> None:
        tag = response.to_tag
        if not tag:
            return  # a provisional without a To tag creates no dialog (RFC 3261 12.1)
        self.remote_tag = tag
        self.remote_target = _contact_uri(response) or self.remote_target
        self.route_set = _record_route(response)

    def _establish(self, response: SipResponse) -> None:
        # RFC 3261 12.1.2 / 13.2.2.4: the 2xx defines the dialog, whatever a provisional said
        self.remote_tag = response.to_tag
        self.remote_target = _contact_uri(response)
        self.route_set = _record_route(response)
        self.ack_to = response.headers.get("to")

    # ------------------------------------------------------------------ views
    @property
    def dialog_state(self) -> str | None:
        """The RFC 3261 dialog state: None (no dialog), ``early``, ``confirmed`` or ``terminated``."""
        state = _DIALOG_STATE[self.state]
        if state == "early" and not self.remote_tag:
            return None
        return state

    @property
    def target(self) -> str:
        """The Request-URI of in-dialog requests: the remote target, else the INVITE's Request-URI."""
        return self.remote_target or self.invite.uri

    @property
    def id(self) -> tuple[str, str, str | None]:
        """(Call-ID, local tag, remote tag)."""
        return self.call_id, self.local_tag, self.remote_tag

    # ------------------------------------------------------------------ requests
    def _headers(self, method: str, cseq: int, to: str) -> Headers:
        h = Headers()
        h.add("Via", via_value(self.transport))
        if self.route_headers:
            for route in self.route_set:
                h.add("Route", route)
        h.add("From", self.local_from)
        h.add("To", to)
        h.add("Call-ID", self.call_id)
        h.add("CSeq", f"{cseq} {method}")
        h.add("Max-Forwards", "70")
        return h

    def _to(self) -> str:
        return f"{self.remote_to};tag={self.remote_tag}" if self.remote_tag else self.remote_to

    def ack(self) -> SipRequest:
        """The ACK for the 2xx (RFC 3261 13.2.2.4): the INVITE's CSeq number, To as the 2xx had it."""
        return SipRequest("ACK", self.target, self._headers("ACK", self.invite_cseq, self.ack_to or self._to()))

    def cancel(self) -> SipRequest:
        """The CANCEL of the pending INVITE (RFC 3261 9.1; outside the dialog, same branch)."""
        return make_cancel(self.invite)

    def request(self, method: str, body: bytes = b"", content_type: str | None = None,
                extra: Iterable[tuple[str, str]] = ()) -> SipRequest:
        """A new request inside the dialog with the next local CSeq (RFC 3261 12.2.1.1)."""
        if self.remote_tag is None and self.state != CONFIRMED and self.state != TERMINATING:
            raise DialogError(f"no dialog to send {method} in (state {self.state!r})")
        self.local_cseq += 1
        h = self._headers(method, self.local_cseq, self._to())
        for name, value in extra:
            h.add(name, value)
        if content_type is not None:
            h.add("Content-Type", content_type)
        return SipRequest(method, self.target, h, body)

    def bye(self, extra: Iterable[tuple[str, str]] = ()) -> SipRequest:
        return self.request("BYE", extra=extra)

    def info(self, body: bytes, content_type: str = MANSRTSP_TYPE, extra: Iterable[tuple[str, str]] = ()) -> SipRequest:
        """An INFO, by default carrying MANSRTSP (GB/T 28181 playback control: PLAY, PAUSE, scale)."""
        return self.request("INFO", body, content_type, extra)

    def __repr__(self) -> str:
        return f"<Dialog {self.state} {self.call_id!r} {self.local_tag!r}/{self.remote_tag!r}>"
