"""RFC 3261 section 17 transactions as data: timer specifications and transition tables.

Four state machines (INVITE client, non-INVITE client, INVITE server, non-INVITE server), each written
as one dict ``(state, input) -> Transition(next_state, actions)``. An input without a row is absorbed
(ignored), which is how retransmissions and late messages are swallowed. The INVITE machines follow
RFC 6026 for 2xx: an "accepted" state (Timers L and M) replaces the immediate termination of RFC 3261.

Inputs
    client: ``1xx``, ``2xx``, ``3xx`` (any final 300-699), ``timer_X``
    server: ``request`` (a retransmission), ``ack``, ``send_1xx``, ``send_2xx``, ``send_3xx``, ``timer_X``

Actions (``(op, arg)``; executed in order by :class:`sip_server.sip.endpoint.SipEndpoint`)
    ``send``          pass the request to the transport (first time)
    ``retransmit``    pass the request again
    ``deliver``       hand the message to the TU (RequestReceived / ResponseReceived)
    ``send_response`` send the TU's response and remember it
    ``resend_response`` send the remembered response again
    ``resend_provisional`` resend the last provisional, or answer 100 Trying when none was sent
    ``send_ack``      build and send the ACK for a non-2xx final (client INVITE)
    ``resend_ack``    send that ACK (or the TU's ACK for a 2xx) again
    ``timeout``       report TransactionTimeout to the TU
    ``ack_timeout``   report AckTimeout (a 2xx never acknowledged)
    ``release``       drop the message objects a finished transaction no longer needs (memory)
    ``arm`` / ``rearm`` / ``rearm_t2`` / ``cancel``  timer handling (``rearm`` doubles the interval)

Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from .message import random_hex

__all__ = [
    "TimerSpec",
    "TIMERS",
    "Transition",
    "TABLES",
    "INITIAL",
    "INVITE_CLIENT",
    "NON_INVITE_CLIENT",
    "INVITE_SERVER",
    "NON_INVITE_SERVER",
    "TimerValues",
    "TimerQueue",
    "Transaction",
    "new_branch",
    "MAGIC_COOKIE",
    "RELIABLE_TRANSPORTS",
]

MAGIC_COOKIE = "z9hG4bK"
RELIABLE_TRANSPORTS = frozenset({"tcp", "tls", "sctp", "ws", "wss"})

INVITE_CLIENT = "invite_client"
NON_INVITE_CLIENT = "non_invite_client"
INVITE_SERVER = "invite_server"
NON_INVITE_SERVER = "non_invite_server"


def new_branch() -> str:
    """A fresh RFC 3261 branch: the magic cookie plus 64 random bits."""
    return MAGIC_COOKIE + random_hex(8)


# --------------------------------------------------------------------------- timers
@dataclass(frozen=True, slots=True)
class TimerSpec:
    """How long a timer runs.

    ``base``: a name resolved by :class:`TimerValues` (``T1``, ``T4``, ``64*T1``, ``D``, ``C``, ``TU``).
    ``cap``: for retransmission timers, the interval doubles on every ``rearm`` up to this value
    (``"T2"``) or without limit (``None``).
    ``on_reliable``: ``"keep"`` (same value), ``"zero"`` (fires at once) or ``"skip"`` (not armed).
    """

    name: str
    base: str
    retransmit: bool = False
    cap: str | None = None
    on_reliable: str = "keep"
    rfc: str = ""


TIMERS: dict[str, TimerSpec] = {
    t.name: t
    for t in (
        TimerSpec("A", "T1", True, None, "skip", "INVITE request retransmit interval (17.1.1.2)"),
        TimerSpec("B", "64*T1", rfc="INVITE transaction timeout (17.1.1.2)"),
        TimerSpec("C", "C", rfc="proceeding guard: give up when only provisionals come (cf. 16.6)"),
        TimerSpec("D", "D", on_reliable="zero", rfc="wait for response retransmits, >= 32 s (17.1.1.2)"),
        TimerSpec("E", "T1", True, "T2", "skip", "non-INVITE request retransmit interval (17.1.2.2)"),
        TimerSpec("F", "64*T1", rfc="non-INVITE transaction timeout (17.1.2.2)"),
        TimerSpec("G", "T1", True, "T2", "skip", "INVITE response retransmit interval (17.2.1)"),
        TimerSpec("H", "64*T1", rfc="wait time for ACK receipt (17.2.1)"),
        TimerSpec("I", "T4", on_reliable="zero", rfc="wait time for ACK retransmits (17.2.1)"),
        TimerSpec("J", "64*T1", on_reliable="zero", rfc="wait time for request retransmits (17.2.2)"),
        TimerSpec("K", "T4", on_reliable="zero", rfc="wait time for response retransmits (17.1.2.2)"),
        TimerSpec("L", "64*T1", rfc="wait time for accepted INVITE request retransmits (RFC 6026)"),
        TimerSpec("M", "64*T1", rfc="wait time for retransmission of 2xx to INVITE (RFC 6026)"),
        TimerSpec("TU", "TU", rfc="server guard: the TU never answered; forget the transaction"),
    )
}


@dataclass(frozen=True, slots=True)
class TimerValues:
    """Resolves :attr:`TimerSpec.base` names to seconds."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    timer_c: float = 180.0
    tu_timeout: float = 180.0
    _table: dict[str, float] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._table.update(
            {
                "T1": self.t1,
                "T2": self.t2,
                "T4": self.t4,
                "64*T1": 64 * self.t1,
                "D": max(32.0, 64 * self.t1),
                "C": self.timer_c,
                "TU": self.tu_timeout,
            }
        )

    def initial(self, spec: TimerSpec, reliable: bool) -> float | None:
        """The first interval of a timer, None when it is not armed at all."""
        if reliable:
            if spec.on_reliable == "skip":
                return None
            if spec.on_reliable == "zero":
                return 0.0
        return self._table[spec.base]

    def doubled(self, spec: TimerSpec, interval: float) -> float:
        nxt = interval * 2
        if spec.cap is not None:
            nxt = min(nxt, self._table[spec.cap])
        return nxt

    def value(self, name: str) -> float:
        return self._table[name]


# --------------------------------------------------------------------------- transition tables
Action = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Transition:
    next_state: str
    actions: tuple[Action, ...] = ()


def _t(next_state: str, *actions: str) -> Transition:
    """``_t("completed", "deliver", "arm:K")`` -> Transition with (op, arg) pairs."""
    return Transition(next_state, tuple((a.partition(":")[0], a.partition(":")[2]) for a in actions))


TERMINATED = "terminated"

# RFC 3261 figure 5 + RFC 6026 figure 3
_INVITE_CLIENT: dict[tuple[str, str], Transition] = {
    ("calling", "timer_A"): _t("calling", "retransmit", "rearm:A"),
    ("calling", "timer_B"): _t(TERMINATED, "timeout"),
    ("calling", "1xx"): _t("proceeding", "cancel:A", "cancel:B", "arm:C", "deliver"),
    ("calling", "2xx"): _t("accepted", "cancel:A", "cancel:B", "arm:M", "deliver", "release"),
    ("calling", "3xx"): _t("completed", "cancel:A", "cancel:B", "send_ack", "arm:D", "deliver", "release"),
    ("proceeding", "1xx"): _t("proceeding", "arm:C", "deliver"),
    ("proceeding", "2xx"): _t("accepted", "cancel:C", "arm:M", "deliver", "release"),
    ("proceeding", "3xx"): _t("completed", "cancel:C", "send_ack", "arm:D", "deliver", "release"),
    ("proceeding", "timer_C"): _t(TERMINATED, "timeout"),
    ("accepted", "2xx"): _t("accepted", "resend_ack"),
    ("accepted", "timer_M"): _t(TERMINATED),
    ("completed", "3xx"): _t("completed", "resend_ack"),
    ("completed", "timer_D"): _t(TERMINATED),
}

# RFC 3261 figure 6
_NON_INVITE_CLIENT: dict[tuple[str, str], Transition] = {
    ("trying", "timer_E"): _t("trying", "retransmit", "rearm:E"),
    ("trying", "timer_F"): _t(TERMINATED, "timeout"),
    ("trying", "1xx"): _t("proceeding", "deliver"),
    ("trying", "2xx"): _t("completed", "cancel:E", "cancel:F", "arm:K", "deliver", "release"),
    ("trying", "3xx"): _t("completed", "cancel:E", "cancel:F", "arm:K", "deliver", "release"),
    ("proceeding", "timer_E"): _t("proceeding", "retransmit", "rearm_t2:E"),
    ("proceeding", "timer_F"): _t(TERMINATED, "timeout"),
    ("proceeding", "1xx"): _t("proceeding", "deliver"),
    ("proceeding", "2xx"): _t("completed", "cancel:E", "cancel:F", "arm:K", "deliver", "release"),
    ("proceeding", "3xx"): _t("completed", "cancel:E", "cancel:F", "arm:K", "deliver", "release"),
    ("completed", "timer_K"): _t(TERMINATED),
}

# RFC 3261 figure 7 + RFC 6026 figure 5 ("accepted"; "acked" is accepted after the first ACK, so a
# retransmitted ACK for the 2xx is not delivered twice). Timer G in "accepted" retransmits the 2xx
# (RFC 3261 section 13.3.1.4, done here on the TU's behalf).
_INVITE_SERVER: dict[tuple[str, str], Transition] = {
    ("proceeding", "request"): _t("proceeding", "resend_provisional"),
    ("proceeding", "send_1xx"): _t("proceeding", "send_response"),
    ("proceeding", "send_2xx"): _t("accepted", "cancel:TU", "send_response", "arm:G", "arm:L"),
    ("proceeding", "send_3xx"): _t("completed", "cancel:TU", "send_response", "arm:G", "arm:H", "release"),
    ("proceeding", "timer_TU"): _t(TERMINATED),
    ("completed", "request"): _t("completed", "resend_response"),
    ("completed", "timer_G"): _t("completed", "resend_response", "rearm:G"),
    ("completed", "timer_H"): _t(TERMINATED),
    ("completed", "ack"): _t("confirmed", "cancel:G", "cancel:H", "arm:I"),
    ("confirmed", "timer_I"): _t(TERMINATED),
    ("accepted", "send_2xx"): _t("accepted", "send_response"),
    ("accepted", "timer_G"): _t("accepted", "resend_response", "rearm:G"),
    ("accepted", "ack"): _t("acked", "cancel:G", "deliver", "release"),
    ("accepted", "timer_L"): _t(TERMINATED, "ack_timeout"),
    ("acked", "timer_L"): _t(TERMINATED),
}

# RFC 3261 figure 8
_NON_INVITE_SERVER: dict[tuple[str, str], Transition] = {
    ("trying", "send_1xx"): _t("proceeding", "send_response"),
    ("trying", "send_2xx"): _t("completed", "cancel:TU", "send_response", "arm:J", "release"),
    ("trying", "send_3xx"): _t("completed", "cancel:TU", "send_response", "arm:J", "release"),
    ("trying", "timer_TU"): _t(TERMINATED),
    ("proceeding", "request"): _t("proceeding", "resend_response"),
    ("proceeding", "send_1xx"): _t("proceeding", "send_response"),
    ("proceeding", "send_2xx"): _t("completed", "cancel:TU", "send_response", "arm:J", "release"),
    ("proceeding", "send_3xx"): _t("completed", "cancel:TU", "send_response", "arm:J", "release"),
    ("proceeding", "timer_TU"): _t(TERMINATED),
    ("completed", "request"): _t("completed", "resend_response"),
    ("completed", "timer_J"): _t(TERMINATED),
}

TABLES: dict[str, dict[tuple[str, str], Transition]] = {
    INVITE_CLIENT: _INVITE_CLIENT,
    NON_INVITE_CLIENT: _NON_INVITE_CLIENT,
    INVITE_SERVER: _INVITE_SERVER,
    NON_INVITE_SERVER: _NON_INVITE_SERVER,
}

# state a new transaction starts in, and what it does on creation
INITIAL: dict[str, Transition] = {
    INVITE_CLIENT: _t("calling", "send", "arm:A", "arm:B"),
    NON_INVITE_CLIENT: _t("trying", "send", "arm:E", "arm:F"),
    INVITE_SERVER: _t("proceeding", "arm:TU", "deliver"),
    NON_INVITE_SERVER: _t("trying", "arm:TU", "deliver"),
}


def response_input(status: int) -> str:
    """Status code -> table input (``1xx`` / ``2xx`` / ``3xx``)."""
    if status < 200:
        return "1xx"
    if status < 300:
        return "2xx"
    return "3xx"


# --------------------------------------------------------------------------- transaction record
class Transaction:
    """The mutable record of one transaction; behaviour lives in the tables and the endpoint."""

    __slots__ = (
        "kind",
        "key",
        "state",
        "request",
        "addr",
        "transport",
        "reliable",
        "data",
        "last_response",
        "last_response_data",
        "ack_out",
        "timers",
        "alt_key",
        "via_fix",
    )

    def __init__(self, kind: str, key: Any, request: Any, addr: tuple[str, int], transport: str) -> None:
        self.kind = kind
        self.key = key
        self.state = ""
        self.request = request
        self.addr = addr
        self.transport = transport
        self.reliable = transport.lower() in RELIABLE_TRANSPORTS
        self.data: bytes = b""  # the serialised request (client transactions)
        self.last_response: Any = None
        self.last_response_data: bytes | None = None
        self.ack_out: Any = None  # Outgoing: our ACK (non-2xx) or the TU's ACK (2xx), resent on retransmits
        # timer name -> token [deadline, interval, queued]; see TimerQueue
        self.timers: dict[str, list] = {}
        self.alt_key: tuple[dict, Any] | None = None  # (secondary index, key) to drop on removal
        self.via_fix: tuple[str, str] | None = None  # (top Via as sent by the TU, with rport/received)

    @property
    def is_client(self) -> bool:
        return self.kind in (INVITE_CLIENT, NON_INVITE_CLIENT)

    def __repr__(self) -> str:
        return f"<Transaction {self.kind} {self.state} {self.key!r}>"


# --------------------------------------------------------------------------- timer storage
class TimerQueue:
    """All armed timers of an endpoint.

    Timers with a constant duration (B, C, D, F, H, I, J, K, L, M, TU) are armed in non-decreasing
    deadline order, so each name gets a FIFO (an OrderedDict ``txn -> token``, which also makes
    cancelling O(1) and leaves nothing behind). Retransmission timers (A, E, G), whose intervals vary,
    share one heap with lazy deletion. A token is ``[deadline, interval, queued, name]``; ``queued`` drops
    to 0 when the timer fires or is cancelled; the transaction's ``timers[name]`` holds the live token.
    """

    __slots__ = ("_heap", "_fifo", "_seq", "_live_heap")

    def __init__(self, fifo_names: list[str]) -> None:
        self._heap: list[tuple[float, int, Transaction, list]] = []
        self._fifo: dict[str, OrderedDict[Transaction, list]] = {n: OrderedDict() for n in fifo_names}
        self._seq = itertools.count()
        self._live_heap = 0

    def __len__(self) -> int:
        return self._live_heap + sum(len(od) for od in self._fifo.values())

    @property
    def heap_size(self) -> int:
        return len(self._heap)

    def arm(self, txn: Transaction, name: str, deadline: float, interval: float) -> list:
        """Arm (or re-arm) ``name``; an interval <= 0 is not queued (the caller fires it at once)."""
        self.cancel(txn, name)
        if interval <= 0:
            token = [deadline, 0.0, 0, name]
            txn.timers[name] = token
            return token
        token = [deadline, interval, 1, name]
        txn.timers[name] = token
        od = self._fifo.get(name)
        if od is not None:
            od[txn] = token
        else:
            heapq.heappush(self._heap, (deadline, next(self._seq), txn, token))
            self._live_heap += 1
            if len(self._heap) > 1024 and len(self._heap) > 3 * self._live_heap:
                self._heap = [e for e in self._heap if e[3][2]]
                heapq.heapify(self._heap)
        return token

    def cancel(self, txn: Transaction, name: str) -> None:
        token = txn.timers.pop(name, None)
        if token is None or not token[2]:
            return
        token[2] = 0
        od = self._fifo.get(name)
        if od is not None:
            od.pop(txn, None)
        else:
            self._live_heap -= 1

    def cancel_all(self, txn: Transaction) -> None:
        for name in list(txn.timers):
            self.cancel(txn, name)

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap and not heap[0][3][2]:
            heapq.heappop(heap)
        best = heap[0][0] if heap else None
        for od in self._fifo.values():
            if od:
                deadline = next(iter(od.values()))[0]
                if best is None or deadline < best:
                    best = deadline
        return best

    def pop_due(self, now: float) -> tuple[Transaction, list] | None:
        """The earliest timer due at ``now`` (removed from the queue, token marked fired), or None."""
        heap = self._heap
        while heap and not heap[0][3][2]:
            heapq.heappop(heap)
        best_od: OrderedDict | None = None
        best = heap[0][0] if heap else None
        for od in self._fifo.values():
            if od:
                deadline = next(iter(od.values()))[0]
                if best is None or deadline < best:
                    best = deadline
                    best_od = od
        if best is None or best > now:
            return None
        if best_od is not None:
            txn, token = best_od.popitem(last=False)
        else:
            _, _, txn, token = heapq.heappop(heap)
            self._live_heap -= 1
        token[2] = 0
        return txn, token
