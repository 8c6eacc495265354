"""Automatic tickets from presence, and overdue notices: one :func:`scan` per period, ``now`` passed in.

* A device offline longer than ``offline_after`` (since its latest offline presence event) opens one
  ``auto_offline`` ticket for the device; a channel offline that long while its device is online opens
  one for the channel.  At most one open automatic ticket per subject (``tickets.open_key`` is unique).
* When the subject is online again, the ticket moves to ``repaired`` by itself (action ``recover``):
  feedback time = the time of the presence event that brought it back.  It still awaits confirmation.
* A ticket waiting for repair past its deadline is notified once (console and webhook).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gbcore.db import utcnow
from gbcore.ids import ChannelRef
from gbcore.log import get_logger
from gbcore.periodic import PeriodicTask
from ops_portal.tickets import flow
from ops_portal.tickets.models import Ticket
from ops_portal.tickets.service import (
    ActorRef,
    AuditBatch,
    add_notification,
    create_ticket,
    transition_ticket,
)

__all__ = ["ScanResult", "TicketScanner", "scan"]

log = get_logger("gbops.tickets.scanner")


@dataclass
class ScanResult:
    opened: list[int] = field(default_factory=list)
    recovered: list[int] = field(default_factory=list)
    overdue: list[int] = field(default_factory=list)
    payloads: list[dict[str, Any]] = field(default_factory=list)


def device_key(device_id: str) -> str:
    return f"offline:device:{device_id}"


def channel_key(device_id: str, channel_id: str) -> str:
    return f"offline:channel:{device_id}/{channel_id}"


async def _latest_presence(
    session: AsyncSession, subject: str, online: bool, pairs: list[tuple[str, str | None]]
) -> dict[tuple[str, str | None], datetime]:
    """Latest presence time (``online`` True or False) per (device_id, channel_id)."""
    from device_registry.presence import latest_transitions

    return await latest_transitions(session, subject, online, pairs)


async def _open_auto_keys(session: AsyncSession) -> dict[str, Ticket]:
    rows = await session.scalars(select(Ticket).where(Ticket.open_key.like("offline:%")))
    return {t.open_key: t for t in rows.all() if t.open_key is not None}


async def _open_offline_tickets(
    session: AsyncSession, now: datetime, offline_after: float, default_limit_hours: float, audit: AuditBatch,
    result: ScanResult,
) -> None:
    from device_registry.queries import offline_channels_of_online_devices, offline_devices

    open_keys = await _open_auto_keys(session)
    cutoff = now - timedelta(seconds=offline_after)
    device_since = await _latest_presence(session, "device", False, [(d, None) for d in await offline_devices(session)])
    candidates: list[tuple[str, str | None, datetime]] = [
        (d, None, since) for (d, _), since in device_since.items() if since <= cutoff
    ]
    pairs: list[tuple[str, str | None]] = list(await offline_channels_of_online_devices(session))
    channel_since = await _latest_presence(session, "channel", False, pairs)
    candidates += [(d, c, since) for (d, c), since in channel_since.items() if since <= cutoff]

    for device_id, channel_id, since in candidates:
        key = device_key(device_id) if channel_id is None else channel_key(device_id, channel_id)
        if key in open_keys:
            continue
        what_zh, what_en = ("设备", "device") if channel_id is None else ("通道", "channel")
        who = channel_id or device_id
        minutes = int((now - since).total_seconds() // 60)
        try:
            async with session.begin_nested():
                ticket = await create_ticket(
                    session, kind="fault", source="auto_offline", now=now, default_limit_hours=default_limit_hours,
                    actor=ActorRef.system(), channel_id=channel_id, device_id=device_id,
                    note=f"{what_zh}离线超过 {minutes} 分钟 / {what_en} offline for {minutes} min",
                    detail={"offline_since": since.isoformat()}, open_key=key, audit=audit,
                )
                payload = await add_notification(
                    session, "ticket.opened", ticket,
                    f"{what_zh} {who} 离线，已自动生成故障工单 #{ticket.id} / "
                    f"{what_en} {who} is offline: fault ticket #{ticket.id} opened", now)
        except IntegrityError:  # another scanner opened it first
            continue
        result.opened.append(ticket.id)
        result.payloads.append(payload)


async def _recover(session: AsyncSession, audit: AuditBatch, result: ScanResult) -> None:
    from device_registry.queries import channel_is_online, device_is_online

    for key, ticket in (await _open_auto_keys(session)).items():
        if ticket.channel_id is None:
            online = await device_is_online(session, ticket.device_id or "")
            pair: tuple[str, str | None] = (ticket.device_id or "", None)
            subject = "device"
        else:
            online = await channel_is_online(session, ChannelRef(ticket.device_id or "", ticket.channel_id))
            pair = (ticket.device_id or "", ticket.channel_id)
            subject = "channel"
        if not online:
            continue
        back = (await _latest_presence(session, subject, True, [pair])).get(pair)
        back = max(back or ticket.reported_at, ticket.reported_at)
        await transition_ticket(session, ticket, "recover", now=back, actor=ActorRef.system(),
                                note="设备恢复在线，自动修复 / back online: repaired automatically", audit=audit)
        result.recovered.append(ticket.id)
        log.info("ticket.auto_recovered", ticket_id=ticket.id, key=key, at=back.isoformat())


async def _overdue(session: AsyncSession, now: datetime, result: ScanResult) -> None:
    rows = await session.scalars(
        select(Ticket).where(Ticket.state.in_(sorted(flow.OPEN_STATES)), Ticket.deadline < now,
                             Ticket.overdue_notified_at.is_(None)).order_by(Ticket.id)
    )
    for ticket in rows.all():
        ticket.overdue_notified_at = now
        who = ticket.channel_id or ticket.device_id
        hours = round(ticket.repair_limit_hours, 2)
        payload = await add_notification(
            session, "ticket.overdue", ticket,
            f"工单 #{ticket.id}（{who}）已超过 {hours} 小时修复时限 / "
            f"ticket #{ticket.id} ({who}) is past its {hours} h repair limit", now)
        result.overdue.append(ticket.id)
        result.payloads.append(payload)


async def scan(
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    now: datetime,
    offline_after: float,
    default_limit_hours: float,
    audit: Any = None,
    notifier: Any = None,
) -> ScanResult:
    """One pass: recover, open, notify overdue.  Commits, then posts the webhook payloads."""
    from gbcore.db import begin_write

    result = ScanResult()
    batch = AuditBatch(audit)
    async with sessionmaker() as session:
        await begin_write(session)
        await _recover(session, batch, result)
        await _open_offline_tickets(session, now, offline_after, default_limit_hours, batch, result)
        await _overdue(session, now, result)
        await batch.write(session)
        await session.commit()
    if notifier is not None:
        for payload in result.payloads:
            notifier.post(payload)
    return result


class TicketScanner:
    """Runs :func:`scan` every ``interval`` seconds until closed (errors are logged, the loop goes on)."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        interval: float,
        offline_after: float,
        default_limit_hours: float,
        audit: Any = None,
        notifier: Any = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.interval = interval
        self.offline_after = offline_after
        self.default_limit_hours = default_limit_hours
        self.audit = audit
        self.notifier = notifier
        self.clock = clock
        # the first scan one interval after start, then every interval; a failed scan is logged, the next
        # one comes after the interval as usual (no back-off)
        self.periodic = PeriodicTask("ticket-scanner", self._round, interval=lambda: self.interval,
                                     logger=log, failure_event="ticket.scan_failed")

    def start(self) -> None:
        if self.interval > 0:
            self.periodic.start()

    async def close(self) -> None:
        await self.periodic.stop()

    async def run_once(self) -> ScanResult:
        return await scan(self.sessionmaker, now=self.clock(), offline_after=self.offline_after,
                          default_limit_hours=self.default_limit_hours, audit=self.audit, notifier=self.notifier)

    async def _round(self) -> None:
        result = await self.run_once()
        if result.opened or result.recovered or result.overdue:
            log.info("ticket.scan", opened=len(result.opened), recovered=len(result.recovered),
                     overdue=len(result.overdue))
