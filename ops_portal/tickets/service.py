"""Ticket operations on the database: report, transition, notify.  Time is always passed in.

Every change writes a ``ticket_events`` row and, when an audit log is given, an audit entry in the same
transaction; the caller commits.  Notifications are stored here and returned as payloads for the
webhook, which the caller posts after the commit (so that a rolled-back change notifies nobody).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from gbcore.ids import ChannelRef
from gbcore.log import get_logger
from ops_portal.contracts import Contract, contract_for_channel
from ops_portal.tickets import flow
from ops_portal.tickets.models import Notification, Ticket, TicketEvent

__all__ = [
    "ActorRef",
    "AuditBatch",
    "add_notification",
    "clock_of",
    "create_ticket",
    "notification_payload",
    "repair_limit_for",
    "transition_ticket",
]

log = get_logger("gbops.tickets")

KINDS = ("fault", "quality")
SOURCES = ("user", "auto_offline", "auto_quality", "auto_alarm", "auto_clock")


@dataclass(frozen=True)
class ActorRef:
    """Who acted on a ticket: a user (id, name) or the system."""

    type: str
    id: str | None = None
    name: str | None = None

    @classmethod
    def user(cls, user: Any) -> ActorRef:
        return cls("user", str(user.id), user.username)

    @classmethod
    def system(cls, name: str = "gbops") -> ActorRef:
        return cls("system", None, name)

    def audit_actor(self) -> Any:
        from audit_log.log import Actor

        return Actor(self.type, self.id, self.name)


class AuditBatch:
    """Audit entries collected during a transaction and appended as its last write (see
    ``audit_log.log``: the append holds the log's writer lock until the commit).  ``audit=None``: no-op."""

    def __init__(self, audit: Any) -> None:
        self.audit = audit
        self.records: list[dict[str, Any]] = []

    def add(self, *, actor: ActorRef, action: str, target: tuple[str, str], client_ip: str | None = None,
            detail: dict[str, Any] | None = None) -> None:
        if self.audit is None:
            return
        from audit_log.log import Target, build_record

        self.records.append(build_record(actor=actor.audit_actor(), action=action, target=Target(*target),
                                         client_ip=client_ip, detail=detail))

    async def write(self, session: AsyncSession) -> None:
        """Append the collected entries in ``session``'s transaction; commit right after."""
        if self.audit is not None and self.records:
            await self.audit.append_many(session, self.records)
        self.records = []


def clock_of(ticket: Ticket) -> flow.TicketClock:
    return flow.TicketClock(
        state=ticket.state,
        reported_at=ticket.reported_at,
        deadline=ticket.deadline,
        acknowledged_at=ticket.acknowledged_at,
        feedback_at=ticket.feedback_at,
        feedback_note=ticket.feedback_note,
        repair_seconds=ticket.repair_seconds,
        confirmed_at=ticket.confirmed_at,
    )


def _store_clock(ticket: Ticket, clock: flow.TicketClock) -> None:
    ticket.state = clock.state
    ticket.acknowledged_at = clock.acknowledged_at
    ticket.feedback_at = clock.feedback_at
    ticket.feedback_note = clock.feedback_note
    ticket.repair_seconds = clock.repair_seconds
    ticket.confirmed_at = clock.confirmed_at


async def _contract_for_device(session: AsyncSession, device_id: str, at: datetime) -> Contract | None:
    from device_registry.queries import channel_ids_of_device

    found: list[Contract] = []
    ids = await channel_ids_of_device(session, device_id)
    for channel_id in ids:
        contract = await contract_for_channel(session, ChannelRef(device_id, channel_id), at)
        if contract is not None:
            found.append(contract)
    return min(found, key=lambda c: (c.repair_limit_hours, c.id)) if found else None


async def repair_limit_for(
    session: AsyncSession, *, channel_id: str | None, device_id: str | None, at: datetime, default_hours: float
) -> tuple[Contract | None, float]:
    """The contract covering the channel (or, for a device ticket, any of its channels) at ``at`` and
    its repair limit; ``(None, default_hours)`` when none does."""
    contract = None
    if channel_id is not None and device_id is not None:
        contract = await contract_for_channel(session, ChannelRef(device_id, channel_id), at)
    elif device_id is not None:
        contract = await _contract_for_device(session, device_id, at)
    if contract is None:
        return None, default_hours
    return contract, float(contract.repair_limit_hours)


async def create_ticket(
    session: AsyncSession,
    *,
    kind: str,
    source: str,
    now: datetime,
    default_limit_hours: float,
    actor: ActorRef,
    channel_id: str | None = None,
    device_id: str | None = None,
    note: str = "",
    anomaly: str | None = None,
    detail: dict[str, Any] | None = None,
    snapshot: str | None = None,
    open_key: str | None = None,
    audit: AuditBatch | None = None,
    client_ip: str | None = None,
) -> Ticket:
    """Report a ticket at ``now`` (the SLA clock starts)."""
    if kind not in KINDS or source not in SOURCES:
        raise ValueError(f"bad ticket kind/source {kind!r}/{source!r}")
    if channel_id is None and device_id is None:
        raise ValueError("a ticket needs a channel or a device")
    contract, hours = await repair_limit_for(
        session, channel_id=channel_id, device_id=device_id, at=now, default_hours=default_limit_hours
    )
    clock = flow.TicketClock.report(now, hours)
    ticket = Ticket(
        kind=kind,
        source=source,
        state=clock.state,
        device_id=device_id,
        channel_id=channel_id,
        anomaly=anomaly,
        note=note,
        detail=detail or {},
        snapshot=snapshot,
        reported_by=int(actor.id) if actor.type == "user" and actor.id is not None else None,
        reporter_name=actor.name,
        reported_at=clock.reported_at,
        contract_id=contract.id if contract is not None else None,
        repair_limit_hours=hours,
        deadline=clock.deadline,
        open_key=open_key,
    )
    session.add(ticket)
    await session.flush()
    session.add(TicketEvent(ticket_id=ticket.id, at=now, action="report", from_state=None, to_state=clock.state,
                            actor_type=actor.type, actor_id=actor.id, actor_name=actor.name, note=note or None))
    if audit is not None:
        audit.add(
            actor=actor, action="ticket.create", target=("ticket", str(ticket.id)), client_ip=client_ip,
            detail={"kind": kind, "source": source, "channel_id": channel_id, "device_id": device_id,
                    "anomaly": anomaly, "contract_id": ticket.contract_id, "deadline": clock.deadline.isoformat()},
        )
    log.info("ticket.created", ticket_id=ticket.id, kind=kind, source=source, channel_id=channel_id,
             device_id=device_id, anomaly=anomaly)
    return ticket


async def transition_ticket(
    session: AsyncSession,
    ticket: Ticket,
    action: str,
    *,
    now: datetime,
    actor: ActorRef,
    note: str | None = None,
    audit: AuditBatch | None = None,
    client_ip: str | None = None,
) -> Ticket:
    """Apply ``action`` at ``now`` (raises :class:`flow.IllegalTransition`)."""
    before = ticket.state
    clock = flow.apply(clock_of(ticket), action, now, note)
    _store_clock(ticket, clock)
    if clock.state not in flow.OPEN_STATES:
        ticket.open_key = None  # the subject may have a new automatic ticket from now on
    session.add(TicketEvent(ticket_id=ticket.id, at=now, action=action, from_state=before, to_state=clock.state,
                            actor_type=actor.type, actor_id=actor.id, actor_name=actor.name, note=note))
    if audit is not None:
        detail: dict[str, Any] = {"from": before, "to": clock.state, "action": action}
        if clock.repair_seconds is not None and action in ("feedback", "recover"):
            detail["repair_seconds"] = round(clock.repair_seconds, 3)
        audit.add(actor=actor, action="ticket.transition", target=("ticket", str(ticket.id)), client_ip=client_ip,
                  detail=detail)
    await session.flush()
    log.info("ticket.transition", ticket_id=ticket.id, action=action, before=before, after=clock.state)
    return ticket


def notification_payload(note: Notification, ticket: Ticket | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": note.id,
        "kind": note.kind,
        "at": note.at.isoformat(),
        "message": note.message,
        "ticket_id": note.ticket_id,
        "channel_id": note.channel_id,
    }
    if ticket is not None:
        out.update(device_id=ticket.device_id, state=ticket.state, ticket_kind=ticket.kind,
                   anomaly=ticket.anomaly, deadline=ticket.deadline.isoformat())
    return out


async def add_notification(
    session: AsyncSession, kind: str, ticket: Ticket, message: str, now: datetime
) -> dict[str, Any]:
    """Store a console notification; returns the webhook payload (post it after the commit)."""
    note = Notification(at=now, kind=kind, ticket_id=ticket.id, channel_id=ticket.channel_id, message=message)
    session.add(note)
    await session.flush()
    return notification_payload(note, ticket)
