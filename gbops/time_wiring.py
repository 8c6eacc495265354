"""The time service in the platform (issue 16): SIP into it, its alerts and tickets out of it.

* SIP: ``DeviceTimeReported`` (every DeviceStatus answer) -> :meth:`TimeService.on_device_time`;
  ``DeviceOnline`` (a new registration) / ``DeviceOffline`` -> the device's check schedule; its DeviceStatus
  query is ``SipService.device_status``.
* the security sink (the platform's monitor, ``NullSink`` without one) gets ``clock_skew`` / ``ntp_unsynced``;
* ``GBOPS_CLOCK_SKEW_TICKET``: a device over the limit opens one fault ticket (``open_key`` ``clock:<id>``,
  while it is open no second one), audited and announced like the alarm tickets.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from gbcore.log import get_logger
from sip_server.gb import events as ev
from timesync.service import TimeConfig, TimeService

__all__ = ["TimeFeed", "clock_ticket_opener", "start_time"]

log = get_logger("gbops.time")


class TimeFeed:
    """A SIP service listener: the events the time service needs."""

    def __init__(self, service: TimeService) -> None:
        self.service = service

    def __call__(self, event: Any) -> None:
        if isinstance(event, ev.DeviceTimeReported):
            self.service.on_device_time(event.device_id, event.device_time, event.sent, event.received)
        elif isinstance(event, ev.DeviceOnline):
            if event.transition:
                self.service.device_online(event.device_id)
        elif isinstance(event, ev.DeviceOffline):
            self.service.device_offline(event.device_id)


def clock_ticket_opener(sessionmaker: Any, *, default_limit_hours: float, audit: Any = None) -> Any:
    """``open_ticket(device_id, detail)``: one open fault ticket per device whose clock is over the limit."""

    async def open_ticket(device_id: str, detail: dict[str, Any]) -> None:
        from sqlalchemy import select

        from gbcore.db import begin_write
        from ops_portal.tickets.models import Ticket
        from ops_portal.tickets.service import ActorRef, AuditBatch, add_notification, create_ticket

        key = f"clock:{device_id}"
        now = datetime.now(UTC)
        batch = AuditBatch(audit)
        skew = detail.get("skew_s")
        async with sessionmaker() as session:
            await begin_write(session)
            if await session.scalar(select(Ticket.id).where(Ticket.open_key == key)) is not None:
                await session.rollback()
                return  # still open from an earlier crossing
            ticket = await create_ticket(
                session, kind="fault", source="auto_clock", now=now, default_limit_hours=default_limit_hours,
                actor=ActorRef.system(), device_id=device_id,
                note=f"设备时钟偏差 {skew:+.1f} 秒，超过 {detail.get('limit_s')} 秒 / device clock off by {skew:+.1f} s, "
                     f"beyond {detail.get('limit_s')} s",
                detail={"clock": detail}, open_key=key, audit=batch)
            await add_notification(session, "ticket.opened", ticket,
                                   f"设备时钟偏差超限，已自动生成故障工单 #{ticket.id} / device clock beyond the "
                                   f"limit: fault ticket #{ticket.id} opened", now)
            await batch.write(session)
            await session.commit()

    return open_ticket


async def start_time(platform: Any, settings: Any, sessionmaker: Any, app: Any) -> TimeService:
    """Build, wire and start the time service; ``app.state.timesync`` for the portal."""
    from security.events import NullSink

    sip = platform.sip
    sink = getattr(platform, "security", None) or getattr(getattr(app, "state", None), "security", None) or NullSink()
    opener = None
    if settings.clock_skew_ticket:
        opener = clock_ticket_opener(sessionmaker, default_limit_hours=settings.ticket_repair_limit_hours,
                                     audit=platform.audit)
    service = TimeService(
        sessionmaker, TimeConfig.from_settings(settings), sink=sink, device_status=sip.device_status,
        is_online=sip.is_online, online_devices=lambda: [d for d in list(sip.gb.routes) if sip.is_online(d)],
        open_ticket=opener,
    )
    sip.add_listener(TimeFeed(service))
    await service.start()
    if app is not None:  # a SIP node without the portal role (issue 17) serves no routes
        app.state.timesync = service
    return service
