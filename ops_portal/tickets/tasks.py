"""The platform's background ticket work: the webhook notifier, the automatic-ticket scanner and the
quality sampler, started and stopped together by ``gbops.app.Platform``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gbcore.settings import Settings
from ops_portal.quality.sampler import QualitySampler
from ops_portal.tickets.notify import WebhookNotifier
from ops_portal.tickets.scanner import TicketScanner

__all__ = ["TicketTasks", "start_ticket_tasks"]


@dataclass
class TicketTasks:
    notifier: WebhookNotifier
    scanner: TicketScanner
    sampler: QualitySampler | None

    async def close(self) -> None:
        if self.sampler is not None:
            await self.sampler.close()
        await self.scanner.close()
        await self.notifier.close()


def start_ticket_tasks(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], *, audit: Any = None, media: Any = None
) -> TicketTasks:
    s = settings
    notifier = WebhookNotifier(s.ticket_webhook_url, attempts=s.ticket_webhook_attempts)
    scanner = TicketScanner(sessionmaker, interval=s.ticket_scan_interval, offline_after=s.ticket_offline_after,
                            default_limit_hours=s.ticket_repair_limit_hours, audit=audit, notifier=notifier)
    scanner.start()
    sampler = None
    if media is not None:
        sampler = QualitySampler(sessionmaker, media, interval=s.quality_sample_interval,
                                 timeout=s.quality_sample_timeout, data_dir=s.data_dir,
                                 default_limit_hours=s.ticket_repair_limit_hours, transport=s.live_transport,
                                 audit=audit, notifier=notifier)
        sampler.start()
    return TicketTasks(notifier, scanner, sampler)
