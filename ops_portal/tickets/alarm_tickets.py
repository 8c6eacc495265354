"""A device alarm opens a fault ticket (``GBOPS_ALARM_TICKET_MIN_PRIORITY``; the alarm service calls this).

One open ticket per alarm (``open_key`` ``alarm:<id>``), on the alarm's channel (or its device when the alarm
names no channel), under the contract covering it, audited (``ticket.create``) and announced in the console
(``ticket.opened``) like the tickets the offline scanner opens.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from ops_portal.tickets.service import ActorRef, AuditBatch, add_notification, create_ticket

__all__ = ["alarm_ticket_opener"]

_PRIORITY = {1: "一级（最高）", 2: "二级", 3: "三级", 4: "四级"}


def alarm_ticket_opener(sessionmaker: Any, *, default_limit_hours: float, audit: Any = None,
                        notifier: Any = None) -> Callable[[Any], Awaitable[None]]:
    """``open_ticket(record)`` for :class:`alarms.service.AlarmService`."""

    async def open_ticket(record: Any) -> None:
        from gbcore.db import begin_write

        now = datetime.now(UTC)
        batch = AuditBatch(audit)
        level = _PRIORITY.get(record.priority, str(record.priority))
        what = record.description or "设备报警"
        async with sessionmaker() as session:
            await begin_write(session)
            ticket = await create_ticket(
                session, kind="fault", source="auto_alarm", now=now, default_limit_hours=default_limit_hours,
                actor=ActorRef.system(), device_id=record.device_id, channel_id=record.channel_id,
                note=f"{level}报警：{what} / priority {record.priority} alarm: {what}",
                detail={"alarm_id": record.id, "priority": record.priority, "method": record.method,
                        "type": record.type}, open_key=f"alarm:{record.id}", audit=batch)
            payload = await add_notification(session, "ticket.opened", ticket,
                                             f"设备报警，已自动生成故障工单 #{ticket.id} / device alarm: fault ticket "
                                             f"#{ticket.id} opened", now)
            await batch.write(session)
            await session.commit()
        if notifier is not None:
            notifier.post(payload)

    return open_ticket
