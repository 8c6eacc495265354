"""A sans-IO SIP endpoint: the transaction layer of RFC 3261 section 17 plus message routing.

Bytes and time go in (``receive_datagram``, ``receive_message``, ``handle_timer``), events and bytes come
out (``next_event``, ``messages_to_send``), and ``get_timer`` says when to call ``handle_timer`` next.
The endpoint never reads a clock: every call that may start or fire timers takes ``now`` (seconds,
any monotonic clock, the same one throughout).

Matching (RFC 3261 section 17.2.3 / 17.1.3):
  * server: top Via branch + sent-by + method (ACK matches INVITE) when the branch carries the magic
    cookie ``z9hG4bK``; otherwise (RFC 2543 peers, a missing branch, a malformed cookie) Call-ID + CSeq
    number + From tag + Request-URI + top Via + method;
  * client: top Via branch + CSeq method, falling back on Call-ID + From tag + CSeq for peers that
    mangle the branch.

Responses from server transactions go back to the request's source address (symmetric response
routing, which devices behind NAT need), and the top Via gets ``received``/``rport`` (RFC 3581).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .message import (
    Headers,
    SipParseError,
    SipRequest,
    SipResponse,
    _split_list,
    header_param,
    make_response,
    parse_message,
    parse_via,
    via_value,
)
from .transaction import (
    INITIAL,
    INVITE_CLIENT,
    INVITE_SERVER,
    MAGIC_COOKIE,
    NON_INVITE_CLIENT,
    NON_INVITE_SERVER,
    TABLES,
    TERMINATED,
    TIMERS,
    TimerQueue,
    TimerValues,
    Transaction,
    Transition,
    new_branch,
    response_input,
)

__all__ = [
    "SipEndpoint",
    "RequestReceived",
    "ResponseReceived",
    "TransactionTimeout",
    "AckTimeout",
    "MessageDropped",
    "Outgoing",
    "TransactionKey",
]

TransactionKey = tuple  # opaque and hashable; compare keys for equality only


# --------------------------------------------------------------------------- events
@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A new request for the TU (retransmissions are absorbed). Also every ACK for a 2xx."""

    request: SipRequest
    addr: tuple[str, int]
    transport: str
    key: Any


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """A response to one of our requests: provisional ones, and each final response once."""

    response: SipResponse
    request: SipRequest
    key: Any
    addr: tuple[str, int]


@dataclass(frozen=True, slots=True)
class TransactionTimeout:
    """A client transaction got no final response (Timer B, F, or the proceeding guard C)."""

    request: SipRequest
    key: Any


@dataclass(frozen=True, slots=True)
class AckTimeout:
    """We sent a 2xx to an INVITE and no ACK came within 64*T1 (RFC 3261 13.3.1.4: end the dialog)."""

    request: SipRequest
    response: SipResponse | None
    key: Any


@dataclass(frozen=True, slots=True)
class MessageDropped:
    """Input that could not be used: unparseable bytes, a request or response missing vital headers,
    or a response that matches no transaction. ``message`` is set when the bytes did parse; for a
    request the caller may answer it statelessly (400) with :meth:`SipEndpoint.send_stateless`."""

    addr: tuple[str, int]
    transport: str
    error: str
    data: bytes
    message: SipRequest | SipResponse | None = None


@dataclass(frozen=True, slots=True)
class Outgoing:
    """Bytes for the transport adapter to send."""

    data: bytes
    addr: tuple[str, int]
    transport: str


Event = RequestReceived | ResponseReceived | TransactionTimeout | AckTimeout | MessageDropped


def _fix_top_via(line: str, addr: tuple[str, int]) -> str:
    """Add ``received`` and fill ``rport`` (RFC 3261 18.2.1, RFC 3581) on the first via-parm of a line.

    Returns ``line`` itself when nothing changes.
    """
    if "," in line or '"' in line:
        return _fix_top_via_slow(line, addr)
    segments = line.split(";")
    rport_at = -1
    rport_value = ""
    has_received = False
    for i in range(1, len(segments)):
        name, eq, value = segments[i].partition("=")
        name = name.strip(" \t").lower()
        if name == "rport":
            rport_at = i
            rport_value = value.strip(" \t")
        elif name == "received":
            has_received = True
    ip, port = addr[0], addr[1]
    if rport_at >= 0:
        if rport_value and has_received:
            return line
        if not rport_value:
            segments[rport_at] = f"rport={port}"
        if not has_received:
            segments.insert(rport_at, f"received={ip}")
        return ";".join(segments)
    if has_received:
        return line
    try:
        via = parse_via(segments[0])
    except SipParseError:
        return line
    if via.host == ip:
        return line
    segments.append(f"received={ip}")
    return ";".join(segments)


def _fix_top_via_slow(line: str, addr: tuple[str, int]) -> str:
    vals = _split_list(line)
    if not vals:
        return line
    fixed = _fix_top_via(vals[0], addr) if "," not in vals[0] and '"' not in vals[0] else vals[0]
    if fixed is vals[0]:
        return line
    vals[0] = fixed
    return ", ".join(vals)


class SipEndpoint:
    """Transaction layer and message router; see the module docstring.

    ``local_addresses`` maps a transport name (``"udp"``, ``"tcp"``) to the (host, port) to advertise in
    Via; the transport adapter fills it. When a request handed to :meth:`send_request` has no Via, or
    its top Via's sent-by is the placeholder ``0.0.0.0``/port 0, that address is used.
    ``local_address_for(addr, transport)``, when the adapter sets it, may give a better one per destination
    (the local interface facing that peer when listening on a wildcard address); it returns None to fall
    back on ``local_addresses``. See :meth:`local_address`.
    """

    def __init__(
        self,
        *,
        t1: float = 0.5,
        t2: float = 4.0,
        t4: float = 5.0,
        timer_c: float = 180.0,
        tu_timeout: float = 180.0,
    ) -> None:
        self.timers = TimerValues(t1=t1, t2=t2, t4=t4, timer_c=timer_c, tu_timeout=tu_timeout)
        self.local_addresses: dict[str, tuple[str, int]] = {}
        self.local_address_for: Callable[[tuple[str, int], str], tuple[str, int] | None] | None = None
        self._client: dict[Any, Transaction] = {}
        self._server: dict[Any, Transaction] = {}
        self._client_by_cseq: dict[tuple, Any] = {}  # (Call-ID, From tag, CSeq no, method) -> key
        self._server_by_cseq: dict[tuple, Any] = {}  # INVITE: (Call-ID, From tag, CSeq no) -> key
        self._events: deque[Any] = deque()
        self._out: list[Outgoing] = []
        self._timerq = TimerQueue([name for name, spec in TIMERS.items() if not spec.retransmit])

    def local_address(self, addr: tuple[str, int], transport: str = "udp") -> tuple[str, int] | None:
        """The (host, port) we are reachable at for a peer at ``addr`` (Via sent-by, Contact)."""
        tl = transport.lower()
        hook = self.local_address_for
        if hook is not None:
            found = hook(addr, tl)
            if found is not None:
                return found
        return self.local_addresses.get(tl)

    # ------------------------------------------------------------------ outputs
    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def messages_to_send(self) -> list[Outgoing]:
        out = self._out
        if out:
            self._out = []
        return out

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` should next be called (same clock as ``now``), or None."""
        return self._timerq.next_deadline()

    def handle_timer(self, now: float) -> None:
        """Fire every timer due at ``now``, earliest first."""
        pop_due = self._timerq.pop_due
        while (item := pop_due(now)) is not None:
            txn, token = item
            self._fire(txn, token[3], token, now)

    @property
    def transaction_count(self) -> int:
        return len(self._client) + len(self._server)

    def get_transaction(self, key: Any) -> Transaction | None:
        return self._server.get(key) or self._client.get(key)

    def invite_key_for_cancel(self, cancel_key: Any) -> Any | None:
        """The key of the INVITE server transaction a received CANCEL refers to, if it still exists."""
        if not isinstance(cancel_key, tuple) or not cancel_key or cancel_key[-1] != "CANCEL":
            return None
        key = cancel_key[:-1] + ("INVITE",)
        return key if key in self._server else None

    # ------------------------------------------------------------------ inputs
    def receive_datagram(self, data: bytes, addr: tuple[str, int], now: float, transport: str = "udp") -> None:
        """One datagram from ``addr``. Empty datagrams and CRLF keepalive pings are ignored."""
        if not data or (data[:1] in (b"\r", b"\n") and not data.strip(b"\r\n")):
            return
        try:
            msg = parse_message(data)
        except SipParseError as exc:
            self._events.append(MessageDropped(addr, transport, str(exc), bytes(data)))
            return
        self._receive(msg, addr, now, transport, data)

    def receive_message(self, msg: SipRequest | SipResponse, addr: tuple[str, int], now: float,
                        transport: str = "tcp") -> None:
        """One parsed message (from a :class:`StreamFramer` on a stream transport)."""
        self._receive(msg, addr, now, transport, None)

    def _receive(self, msg: SipRequest | SipResponse, addr: tuple[str, int], now: float, transport: str,
                 data: bytes | None) -> None:
        if msg.is_request:
            self._on_request(msg, addr, now, transport, data)  # type: ignore[arg-type]
        else:
            self._on_response(msg, addr, now, transport, data)  # type: ignore[arg-type]

    def _drop(self, addr: tuple[str, int], transport: str, error: str, data: bytes | None,
              msg: SipRequest | SipResponse | None) -> None:
        if data is None and msg is not None:
            try:
                data = msg.to_bytes()
            except (ValueError, UnicodeError):
                data = b""
        self._events.append(MessageDropped(addr, transport, error, bytes(data or b""), msg))

    def _on_request(self, msg: SipRequest, addr: tuple[str, int], now: float, transport: str,
                    data: bytes | None) -> None:
        hmap = msg.headers._map
        try:
            via = msg.top_via
            cseq_num, cseq_method = msg.cseq
            call_id = msg.call_id
            if not hmap.get("from") or not hmap.get("to"):
                raise SipParseError("missing From or To")
            if cseq_method != msg.method and cseq_method.upper() != msg.method.upper():
                raise SipParseError("CSeq method does not match the request method")
        except SipParseError as exc:
            self._drop(addr, transport, f"bad request: {exc}", data, msg)
            return
        method = msg.method
        match_method = "INVITE" if method == "ACK" else method
        from_tag = header_param(hmap["from"][0], "tag") or ""
        branch = via.params.get("branch") or ""
        host, port = via.sent_by
        if len(branch) > 7 and branch.startswith(MAGIC_COOKIE):
            key: tuple = ("s", branch, host, port, match_method)
        else:
            key = ("s2543", call_id, cseq_num, from_tag, msg.uri, host, port, branch, match_method)
        server = self._server
        if method == "ACK":
            txn = server.get(key)
            if txn is None:
                alt = self._server_by_cseq.get((call_id, from_tag, cseq_num))
                txn = server.get(alt) if alt is not None else None
            if txn is not None:
                self._apply(txn, "ack", now, msg=msg, addr=addr, transport=transport, key=key)
            else:
                self._events.append(RequestReceived(msg, addr, transport, key))
            return
        txn = server.get(key)
        if txn is not None:
            self._apply(txn, "request", now)
            return
        kind = INVITE_SERVER if method == "INVITE" else NON_INVITE_SERVER
        txn = Transaction(kind, key, msg, addr, transport)
        server[key] = txn
        if kind == INVITE_SERVER:
            alt_key = (call_id, from_tag, cseq_num)
            self._server_by_cseq[alt_key] = key
            txn.alt_key = (self._server_by_cseq, alt_key)
        self._execute(txn, INITIAL[kind], now)

    def _on_response(self, msg: SipResponse, addr: tuple[str, int], now: float, transport: str,
                     data: bytes | None) -> None:
        try:
            via = msg.top_via
            cseq_num, cseq_method = msg.cseq
        except SipParseError as exc:
            self._drop(addr, transport, f"bad response: {exc}", data, msg)
            return
        branch = via.params.get("branch")
        txn = self._client.get(("c", branch, cseq_method)) if branch else None
        if txn is None:
            hmap = msg.headers._map
            call_ids = hmap.get("call-id")
            froms = hmap.get("from")
            if call_ids and froms:
                alt = self._client_by_cseq.get(
                    (call_ids[0], header_param(froms[0], "tag") or "", cseq_num, cseq_method)
                )
                txn = self._client.get(alt) if alt is not None else None
        if txn is None:
            self._drop(addr, transport, "stray response (no matching client transaction)", data, msg)
            return
        self._apply(txn, response_input(msg.status), now, msg=msg, addr=addr)

    # ------------------------------------------------------------------ TU requests
    def send_request(self, request: SipRequest, addr: tuple[str, int], now: float, transport: str = "udp") -> Any:
        """Start a client transaction (or, for ACK, just send it) and return its key.

        A top Via without ``branch`` gets ``z9hG4bK`` + random; a request without Via gets one built from
        :attr:`local_addresses`; ``Max-Forwards: 70`` is added when missing. The request object is
        updated in place.
        """
        h = request.headers
        tl = transport.lower()
        vias = h._map.get("via")
        if not vias:
            local = self.local_address(addr, tl)
            if local is None:
                raise ValueError("request has no Via and the endpoint knows no local address")
            lh, lp = local
            h.prepend("Via", via_value(transport, lh, lp, branch=new_branch()))
            vias = h._map["via"]
        line = vias[0]
        vals = _split_list(line) if "," in line else [line]
        try:
            via = parse_via(vals[0])
            cseq_num, _ = request.cseq
        except SipParseError as exc:
            raise ValueError(f"cannot send request: {exc}") from exc
        changed = False
        if not via.params.get("branch"):
            via.params["branch"] = new_branch()
            changed = True
        if via.host in ("0.0.0.0", "::") or via.port == 0:
            local = self.local_address(addr, tl)
            if local is not None:
                via.host, via.port = local
                changed = True
        if changed:
            vals[0] = str(via)
            h.replace_first("Via", ", ".join(vals))
        if "max-forwards" not in h._map:
            h.add("Max-Forwards", "70")
        branch = via.params["branch"]
        method = request.method
        froms = h._map.get("from")
        from_tag = header_param(froms[0], "tag") or "" if froms else ""
        call_ids = h._map.get("call-id")
        call_id = call_ids[0] if call_ids else ""
        if method == "ACK":
            out = Outgoing(request.to_bytes(), addr, transport)
            self._out.append(out)
            alt = self._client_by_cseq.get((call_id, from_tag, cseq_num, "INVITE"))
            txn = self._client.get(alt) if alt is not None else None
            if txn is not None and txn.state == "accepted":
                txn.ack_out = out  # resent on each retransmitted 2xx
            return ("c", branch, "ACK")
        key = ("c", branch, method)
        if key in self._client:
            raise ValueError(f"a client transaction {key!r} already exists")
        kind = INVITE_CLIENT if method == "INVITE" else NON_INVITE_CLIENT
        txn = Transaction(kind, key, request, addr, transport)
        txn.data = request.to_bytes()
        self._client[key] = txn
        alt_key = (call_id, from_tag, cseq_num, method)
        if alt_key not in self._client_by_cseq:
            self._client_by_cseq[alt_key] = key
            txn.alt_key = (self._client_by_cseq, alt_key)
        self._execute(txn, INITIAL[kind], now)
        return key

    def send_response(self, key: Any, response: SipResponse, now: float) -> bool:
        """Answer the server transaction ``key``. Returns False (and sends nothing) when the transaction
        is gone or cannot take this response (e.g. a second final response).

        The response's top Via is completed in place with ``received``/``rport``.
        """
        txn = self._server.get(key)
        if txn is None:
            return False
        status = response.status
        inp = "send_1xx" if status < 200 else ("send_2xx" if status < 300 else "send_3xx")
        return self._apply(txn, inp, now, msg=response)

    def send_stateless(self, msg: SipRequest | SipResponse, addr: tuple[str, int], transport: str = "udp") -> None:
        """Send without a transaction (e.g. a 400 to a request that got a MessageDropped)."""
        if not msg.is_request:
            vias = msg.headers._map.get("via")
            if vias:
                fixed = _fix_top_via(vias[0], addr)
                if fixed is not vias[0]:
                    msg.headers.replace_first("Via", fixed)
        self._out.append(Outgoing(msg.to_bytes(), addr, transport))

    # ------------------------------------------------------------------ state machine driver
    def _apply(self, txn: Transaction, inp: str, now: float, **ctx: Any) -> bool:
        tr = TABLES[txn.kind].get((txn.state, inp))
        if tr is None:
            return False  # absorbed
        self._execute(txn, tr, now, **ctx)
        return True

    def _fire(self, txn: Transaction, name: str, token: list, now: float) -> None:
        tr = TABLES[txn.kind].get((txn.state, "timer_" + name))
        if tr is not None:
            self._execute(txn, tr, now, fired=token)
        if txn.timers.get(name) is token:
            del txn.timers[name]

    def _execute(self, txn: Transaction, tr: Transition, now: float, *, msg: Any = None,
                 addr: tuple[str, int] | None = None, transport: str | None = None, key: Any = None,
                 fired: list | None = None) -> None:
        txn.state = tr.next_state
        immediate: list[tuple[str, list]] | None = None
        timers = self.timers
        timerq = self._timerq
        for op, arg in tr.actions:
            if op == "arm":
                interval = timers.initial(TIMERS[arg], txn.reliable)
                if interval is None:
                    continue
                entry = timerq.arm(txn, arg, now + interval, interval)
                if interval <= 0:
                    if immediate is None:
                        immediate = []
                    immediate.append((arg, entry))
            elif op == "rearm" or op == "rearm_t2":
                if fired is None:
                    continue
                spec = TIMERS[arg]
                interval = timers.value("T2") if op == "rearm_t2" else timers.doubled(spec, fired[1])
                timerq.arm(txn, arg, now + interval, interval)
            elif op == "cancel":
                timerq.cancel(txn, arg)
            elif op == "release":
                # completed: only the bytes to resend are needed from here on
                txn.request = None
                txn.last_response = None
                txn.data = b""
                txn.via_fix = None
            elif op == "send" or op == "retransmit":
                self._out.append(Outgoing(txn.data, txn.addr, txn.transport))
            elif op == "deliver":
                if txn.kind == INVITE_CLIENT or txn.kind == NON_INVITE_CLIENT:
                    self._events.append(ResponseReceived(msg, txn.request, txn.key, addr or txn.addr))
                elif msg is None:
                    self._events.append(RequestReceived(txn.request, txn.addr, txn.transport, txn.key))
                else:  # an ACK for our 2xx
                    self._events.append(RequestReceived(msg, addr or txn.addr, transport or txn.transport,
                                                        key if key is not None else txn.key))
            elif op == "send_response":
                self._send_response_bytes(txn, msg)
            elif op == "resend_response":
                if txn.last_response_data is not None:
                    self._out.append(Outgoing(txn.last_response_data, txn.addr, txn.transport))
            elif op == "resend_provisional":
                if txn.last_response_data is not None:
                    self._out.append(Outgoing(txn.last_response_data, txn.addr, txn.transport))
                else:
                    self._send_response_bytes(txn, make_response(txn.request, 100))
            elif op == "send_ack":
                txn.ack_out = Outgoing(self._ack_for(txn.request, msg).to_bytes(), txn.addr, txn.transport)
                self._out.append(txn.ack_out)
            elif op == "resend_ack":
                if txn.ack_out is not None:
                    self._out.append(txn.ack_out)
            elif op == "timeout":
                self._events.append(TransactionTimeout(txn.request, txn.key))
            elif op == "ack_timeout":
                self._events.append(AckTimeout(txn.request, txn.last_response, txn.key))
            else:  # pragma: no cover - tables and driver are written together
                raise AssertionError(f"unknown action {op!r}")
        if immediate:
            for name, entry in immediate:
                if txn.timers.get(name) is entry and txn.state != TERMINATED:
                    self._fire(txn, name, entry, now)
        if txn.state == TERMINATED:
            self._remove(txn)

    def _send_response_bytes(self, txn: Transaction, response: SipResponse) -> None:
        vias = response.headers._map.get("via")
        if vias:
            line = vias[0]
            fix = txn.via_fix
            if fix is None or fix[0] != line:
                fix = (line, _fix_top_via(line, txn.addr))
                txn.via_fix = fix
            if fix[1] != line:
                response.headers.replace_first("Via", fix[1])
        data = response.to_bytes()
        txn.last_response = response
        txn.last_response_data = data
        self._out.append(Outgoing(data, txn.addr, txn.transport))

    @staticmethod
    def _ack_for(request: SipRequest, response: SipResponse) -> SipRequest:
        """The ACK a client INVITE transaction sends for a non-2xx final response (RFC 3261 17.1.1.3)."""
        src = request.headers
        h = Headers()
        vias = src.get_all("via")
        if vias:
            h.add("Via", vias[0])
        for v in src._map.get("route", ()):
            h.add("Route", v)
        for name, key, hdrs in (("From", "from", src), ("To", "to", response.headers), ("Call-ID", "call-id", src)):
            lst = hdrs._map.get(key)
            if lst:
                h.add(name, lst[0])
        num, _ = request.cseq
        h.add("CSeq", f"{num} ACK")
        h.add("Max-Forwards", "70")
        return SipRequest("ACK", request.uri, h)

    def _remove(self, txn: Transaction) -> None:
        table = self._client if txn.kind in (INVITE_CLIENT, NON_INVITE_CLIENT) else self._server
        if table.get(txn.key) is txn:
            del table[txn.key]
        if txn.alt_key is not None:
            index, alt = txn.alt_key
            if index.get(alt) == txn.key:
                del index[alt]
            txn.alt_key = None
        self._timerq.cancel_all(txn)
