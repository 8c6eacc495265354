"""A device alarm opens a fault ticket through the alarm service (GBOPS_ALARM_TICKET_MIN_PRIORITY)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select

from alarms.service import AlarmService
from alarms.types import AlarmIn
from device_registry.events import CatalogReported
from ops_portal.tickets.alarm_tickets import alarm_ticket_opener
from ops_portal.tickets.models import Notification, Ticket
from tests.registry._support import DEV, cam, item, reg, t


class Audit:
    def __init__(self) -> None:
        self.records: list[dict] = []

    async def append_many(self, session, records) -> None:
        self.records += list(records)


async def test_urgent_alarm_opens_one_audited_ticket_on_its_channel(registry) -> None:
    await registry.apply([reg(at=0), CatalogReported(DEV, t(1), (item(cam(1)),), True, "complete 1/1")])
    audit = Audit()
    opener = alarm_ticket_opener(registry.sessionmaker, default_limit_hours=48, audit=audit)
    alarms = AlarmService(registry.sessionmaker, open_ticket=opener, ticket_min_priority=2)
    at = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)
    urgent = await alarms.record(DEV, AlarmIn(priority=1, method=5, type=2, time=at, description="越界",
                                              source_id=cam(1)))
    await alarms.record(DEV, AlarmIn(priority=3, method=5, type=2, time=at, description="轻微", source_id=cam(1)))
    async with registry.sessionmaker() as session:
        tickets = (await session.scalars(select(Ticket))).all()
        notes = (await session.scalars(select(Notification))).all()
    assert len(tickets) == 1  # priority 3 is below the threshold
    [ticket] = tickets
    assert (ticket.kind, ticket.source, ticket.device_id, ticket.channel_id) == ("fault", "auto_alarm", DEV, cam(1))
    assert ticket.detail["alarm_id"] == urgent.id and "越界" in ticket.note
    assert ticket.open_key == f"alarm:{urgent.id}"
    assert [n.kind for n in notes] == ["ticket.opened"]
    assert [r["action"] for r in audit.records] == ["ticket.create"]
