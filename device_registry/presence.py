"""Presence history reads: the transitions (``presence_events``) and platform runs that availability
reports and tickets are computed from.  Only the registry reads these tables; others call these."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from gbcore.db import UtcDateTime

from ._base import IN_CHUNK
from .models import PlatformRun, PresenceEvent

__all__ = [
    "first_platform_start",
    "latest_transitions",
    "platform_runs",
    "presence_before",
    "stream_presence",
]


async def platform_runs(session: AsyncSession) -> list[tuple[datetime, datetime | None]]:
    """(started_at, stopped_at) of every platform run, oldest first (stopped_at None: running or crashed)."""
    rows = await session.execute(text("SELECT started_at, stopped_at FROM platform_runs ORDER BY id")
                                 .columns(started_at=UtcDateTime(), stopped_at=UtcDateTime()))
    return [(a, b) for a, b in rows.all()]


async def first_platform_start(session: AsyncSession) -> datetime | None:
    """When the platform first started (None: never)."""
    return await session.scalar(select(func.min(PlatformRun.started_at)))


async def presence_before(
    session: AsyncSession, at: datetime
) -> tuple[list[tuple[str, bool | None]], list[tuple[str, str, bool | None]]]:
    """Each subject's last state before ``at``: ([(device_id, online)] of every device, by id;
    [(device_id, channel_id, online)] of every channel, by device and id); online None when no transition
    is recorded before ``at``."""
    at_param = bindparam("s", type_=UtcDateTime())
    q_dev = text(
        "SELECT d.device_id, (SELECT p.online FROM presence_events p WHERE p.device_id = d.device_id "
        "AND p.channel_id IS NULL AND p.subject = 'device' AND p.at < :s ORDER BY p.at DESC, p.id DESC "
        "LIMIT 1) FROM devices d ORDER BY d.device_id"
    ).bindparams(at_param)
    devices = [(d, o) for d, o in (await session.execute(q_dev, {"s": at})).all()]
    if (await session.connection()).dialect.name == "postgresql":
        # the same row (latest time, then latest id), found through the (device, channel, at) index: the
        # plain ORDER BY at DESC, id DESC reads and sorts all of a channel's earlier rows on PostgreSQL
        q_ch = text(
            "SELECT c.device_id, c.channel_id, (SELECT p.online FROM presence_events p "
            "WHERE p.device_id = c.device_id AND p.channel_id = c.channel_id AND p.subject = 'channel' "
            "AND p.at = (SELECT max(q.at) FROM presence_events q WHERE q.device_id = c.device_id "
            "AND q.channel_id = c.channel_id AND q.subject = 'channel' AND q.at < :s) "
            "ORDER BY p.id DESC LIMIT 1) FROM channels c ORDER BY c.device_id, c.channel_id"
        ).bindparams(at_param)
    else:
        q_ch = text(
            "SELECT c.device_id, c.channel_id, (SELECT p.online FROM presence_events p "
            "WHERE p.device_id = c.device_id AND p.channel_id = c.channel_id AND p.subject = 'channel' "
            "AND p.at < :s ORDER BY p.at DESC, p.id DESC LIMIT 1) FROM channels c "
            "ORDER BY c.device_id, c.channel_id"
        ).bindparams(at_param)
    channels = [(d, c, o) for d, c, o in (await session.execute(q_ch, {"s": at})).all()]
    return devices, channels


def _epoch_ms(dialect: str) -> str:
    if dialect == "sqlite":
        return "CAST(ROUND((julianday(at) - 2440587.5) * 86400000.0) AS INTEGER)"
    return "CAST(ROUND(EXTRACT(EPOCH FROM at) * 1000) AS BIGINT)"


async def stream_presence(session: AsyncSession, start: datetime, end: datetime) -> Any:
    """The transitions in [start, end), streamed ordered by (device_id, id), as rows
    ``(id, subject, device_id, channel_id, online 0/1, at in epoch milliseconds)``: plain ints and strings,
    the same on every back end (reports hash them).  Returns the streaming result (``partitions(n)``)."""
    dialect = (await session.connection()).dialect.name
    q_rows = text(
        f"SELECT id, subject, device_id, channel_id, CASE WHEN online THEN 1 ELSE 0 END, {_epoch_ms(dialect)} "
        "FROM presence_events WHERE at >= :s AND at < :e ORDER BY device_id, id"
    ).bindparams(bindparam("s", type_=UtcDateTime()), bindparam("e", type_=UtcDateTime()))
    if dialect == "postgresql":
        # a month of a large fleet is some 10^5..10^6 rows: sort them in memory, not in temporary files
        # (for this transaction only)
        await session.execute(text("SET LOCAL work_mem = '64MB'"))
    return await session.stream(q_rows, {"s": start, "e": end})


async def latest_transitions(
    session: AsyncSession, subject: str, online: bool, pairs: list[tuple[str, str | None]]
) -> dict[tuple[str, str | None], datetime]:
    """Latest transition time to ``online`` (True or False) of ``subject`` ('device' or 'channel') per
    (device_id, channel_id) of ``pairs`` (channel_id None for a device)."""
    p = PresenceEvent
    out: dict[tuple[str, str | None], datetime] = {}
    devices = sorted({d for d, _ in pairs})
    for start in range(0, len(devices), IN_CHUNK):
        rows = await session.execute(
            select(p.device_id, p.channel_id, func.max(p.at))
            .where(p.subject == subject, p.online.is_(online), p.device_id.in_(devices[start : start + IN_CHUNK]))
            .group_by(p.device_id, p.channel_id)
        )
        for device_id, channel_id, at in rows.all():
            out[(device_id, channel_id)] = at
    wanted = set(pairs)
    return {k: v for k, v in out.items() if k in wanted}
