"""``GET /api/dashboard``: the figures of the console's home page, within the caller's scope;
``GET /api/dashboard/trend``: the last 7 days' online rate and the 10 worst channels.

Both need ``device.read`` (the figures are device figures).  ``/api/dashboard`` is polled: every figure is an
SQL aggregate (counts grouped by organisation node, the latest offline transition per device of the last
hour), cheap for 10,000 channels.  ``/api/dashboard/trend`` replays 7 days of presence history through the
reports' computation (the same figures a report gives) and is kept for :data:`TREND_TTL_S` per data scope.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Request
from sqlalchemy import and_, case, func, or_, select, tuple_

from device_registry.dashboard import (
    channel_counts_by_org,
    channels_in_scope,
    online_of,
    recent_offline_devices,
)
from gbcore.db import utcnow
from ops_portal.dashboard.schemas import (
    DashboardOut,
    OrgShareOut,
    RecentOfflineOut,
    TrendDayOut,
    TrendOut,
    TrendPointOut,
    WorstChannelOut,
)
from ops_portal.deps import AccessDep, RegistryDep, SessionDep, SettingsDep, require_permission
from ops_portal.models import User
from ops_portal.schemas import error_responses

router = APIRouter(tags=["dashboard"], responses=error_responses(401, 403))

DashboardReader = Annotated[User, Depends(require_permission("device.read"))]

RECENT_OFFLINE_S = 3600
RECENT_OFFLINE_SHOWN = 20
TREND_DAYS = 7
WORST_SHOWN = 10
TREND_TTL_S = 120.0


# ---------------------------------------------------------------------------------------------- tickets
async def _tickets(session: Any, access: Any) -> tuple[int | None, int | None]:
    """(open, overdue) tickets in scope, as ``GET /api/tickets?open=true`` and ``?overdue=true`` count them;
    (None, None) without the tickets module or ``ticket.read``."""
    if not access.can("ticket.read"):
        return None, None
    try:
        from ops_portal.tickets.flow import OPEN_STATES
        from ops_portal.tickets.models import Ticket
    except ImportError:
        return None, None
    opened = Ticket.state.in_(sorted(OPEN_STATES))
    late = or_(opened & (Ticket.deadline < utcnow()), Ticket.repair_seconds > Ticket.repair_limit_hours * 3600)
    stmt = select(func.coalesce(func.sum(case((opened, 1), else_=0)), 0),
                  func.coalesce(func.sum(case((late, 1), else_=0)), 0)).select_from(Ticket)
    scope = access.scope
    if not scope.all:
        # the tickets page's visibility: a channel ticket for exactly a channel in scope, a device ticket for a
        # device with a channel in scope
        pairs, devices = channels_in_scope(scope)
        stmt = stmt.where(or_(tuple_(Ticket.device_id, Ticket.channel_id).in_(pairs),
                              and_(Ticket.channel_id.is_(None), Ticket.device_id.in_(devices))))
    n_open, n_late = (await session.execute(stmt)).one()
    await session.commit()
    return int(n_open), int(n_late)


# ---------------------------------------------------------------------------------------------- org nodes
async def _by_org(session: Any, scope: Any, threshold: float) -> list[OrgShareOut]:
    """Channels (total, online) per top-level organisation node: a channel counts under the highest ancestor of
    its node (own, else its device's) that the caller's scope holds, or the tree's root when none does (a channel
    granted on its own); channels of no node under ``org_node_id`` null."""
    groups, nodes = await channel_counts_by_org(session, scope)
    if not groups:
        return []

    def top(node_id: int) -> int:
        best = root = node_id
        seen: set[int] = set()
        cur: int | None = node_id
        while cur is not None and cur in nodes and cur not in seen:
            seen.add(cur)
            root = cur
            if scope.all or cur in scope.org_node_ids:
                best = cur
            cur = nodes[cur][0]
        return best if (scope.all or best in scope.org_node_ids) else root

    totals: dict[int | None, list[int]] = {}
    for node_id, total, online in groups:
        key = top(node_id) if node_id is not None else None
        acc = totals.setdefault(key, [0, 0])
        acc[0] += int(total)
        acc[1] += int(online)
    out = []
    for key, (total, online) in totals.items():
        rate = online / total if total else None
        name = (nodes[key][1] if key in nodes else None) if key is not None else "未分组 / unassigned"
        out.append(OrgShareOut(org_node_id=key, name=name, channels_total=total, channels_online=online, rate=rate,
                               meets_threshold=None if rate is None else rate >= threshold))
    out.sort(key=lambda o: (o.org_node_id is None, o.rate if o.rate is not None else 2.0, o.name or ""))
    return out


# ---------------------------------------------------------------------------------------------- presence
async def _recent_offline(session: Any, scope: Any, now: datetime) -> tuple[int, list[RecentOfflineOut]]:
    """Devices (in scope, not deleted) offline now whose latest offline transition is within the last hour:
    (how many, the latest :data:`RECENT_OFFLINE_SHOWN`)."""
    total, rows = await recent_offline_devices(session, scope, now - timedelta(seconds=RECENT_OFFLINE_S),
                                               RECENT_OFFLINE_SHOWN)
    return total, [RecentOfflineOut(device_id=d, name=n, offline_at=at, reason=r, org_node_id=o)
                             for d, n, at, r, o in rows]


# ---------------------------------------------------------------------------------------------- routes
@router.get("/api/dashboard", operation_id="dashboard", summary="首页概览 / dashboard figures",
            response_model=DashboardOut)
async def dashboard(user: DashboardReader, access: AccessDep, registry: RegistryDep, session: SessionDep,
                    settings: SettingsDep, request: Request) -> DashboardOut:
    """Devices and channels (total, online) and the channel online rate now against the platform's threshold;
    the same per top-level organisation node; devices gone offline in the last hour; upstream streams and
    viewers (null without a media service); open and overdue tickets (null without the tickets module or
    ``ticket.read``)."""
    counts = await registry.counts(access.scope)
    streams = viewers = None
    media = getattr(request.app.state, "media", None)
    if media is not None:
        items = media.describe_streams()
        if not access.scope.all:
            allowed = {(c.device_id, c.channel_id) for c in await registry.scoped_channels(access.scope) or []}
            items = [i for i in items if (i.get("device_id"), i.get("channel_id")) in allowed]
        streams = len(items)
        viewers = sum(int(i.get("viewers") or 0) for i in items)
    total = counts["channels_total"]
    rate = (counts["channels_online"] / total) if total else None
    threshold = float(settings.online_rate_threshold)
    by_org = await _by_org(session, access.scope, threshold)
    recent_total, recent = await _recent_offline(session, access.scope, utcnow())
    await session.commit()
    open_tickets, overdue_tickets = await _tickets(session, access)
    return DashboardOut(**counts, online_rate=rate, streams=streams, viewers=viewers, open_tickets=open_tickets,
                        overdue_tickets=overdue_tickets, threshold=threshold,
                        meets_threshold=None if rate is None else rate >= threshold, by_org=by_org,
                        offline_recent_total=recent_total, offline_recent=recent)


def _scope_key(scope: Any) -> Any:
    if scope.all:
        return "all"
    return (frozenset(scope.org_node_ids), frozenset(tuple(r) for r in scope.channel_refs))


async def _compute_trend(request: Request, session: Any, scope: Any, settings: Any) -> TrendOut:
    from ops_portal.availability.service import compute_period, resolve_scope

    tz = ZoneInfo(settings.report_timezone)
    now = utcnow()
    today = now.astimezone(tz).date()
    start = datetime(today.year, today.month, today.day, tzinfo=tz).astimezone(UTC) - timedelta(days=TREND_DAYS - 1)
    flt = await resolve_scope(session, scope=scope, threshold=settings.online_rate_threshold,
                              sample_minutes=settings.online_rate_sample_minutes)
    await session.commit()
    res = await compute_period(request.app.state.sessionmaker, flt, start, now, kind="custom", label="7d",
                               timezone=settings.report_timezone, now=now, worst=0, keep_outages=False)
    # each day's rate: that day's own computation (what a day report says; today: so far)
    days = []
    for i in range(TREND_DAYS):
        day = today - timedelta(days=TREND_DAYS - 1 - i)
        a = start + timedelta(days=i)
        b = min(now, datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(UTC) + timedelta(days=1))
        rate = None
        if b > a:
            d = await compute_period(request.app.state.sessionmaker, flt, a, b, kind="day", label=day.isoformat(),
                                     timezone=settings.report_timezone, now=now, worst=0, keep_outages=False)
            rate = d.rate
        days.append(TrendDayOut(date=day, rate=rate))
    ranked = sorted(res.channels, key=lambda f: (f.availability is None,
                                                 f.availability if f.availability is not None else 0.0,
                                                 -f.offline_s, f.device_id, f.channel_id))
    worst = [f for f in ranked if f.availability is not None and f.offline_s > 0][:WORST_SHOWN]
    online: dict[tuple[str, str], bool] = {}
    if worst:
        online = await online_of(session, [(f.device_id, f.channel_id) for f in worst])
        await session.commit()
    return TrendOut(
        start=start, end=now, timezone=settings.report_timezone, threshold=res.threshold, rate=res.rate,
        days=days,
        series=[TrendPointOut(at=datetime.fromtimestamp(at, UTC), rate=r)
                for at, r in zip(res.series_times, res.series_rates, strict=True)],
        worst=[WorstChannelOut(device_id=f.device_id, channel_id=f.channel_id, name=f.name,
                               availability=f.availability, offline_s=round(f.offline_s, 3), outages=f.outages,
                               longest_outage_s=round(f.longest_outage_s, 3),
                               online=online.get((f.device_id, f.channel_id), False)) for f in worst],
        computed_at=now,
    )


@router.get("/api/dashboard/trend", operation_id="dashboard_trend",
            summary="近 7 天在线率与最差点位 / the last 7 days' online rate and the worst channels",
            response_model=TrendOut)
async def dashboard_trend(user: DashboardReader, access: AccessDep, session: SessionDep, settings: SettingsDep,
                          request: Request) -> TrendOut:
    """The online rate of the channels in scope over the last 7 days (Beijing days, today so far included): per
    day (each day computed as a day report would be), as a chart series (the 7 days' samples) and overall, by
    the platform's rule; the 10 channels of the lowest availability over those days (with some time offline).
    The reports' computation; reused for 2 minutes per scope."""
    cache: dict[Any, tuple[float, asyncio.Future[TrendOut]]] | None = getattr(
        request.app.state, "dashboard_trend_cache", None)
    if cache is None:
        cache = request.app.state.dashboard_trend_cache = {}
    key = (_scope_key(access.scope), float(settings.online_rate_threshold))
    hit = cache.get(key)
    if hit is not None and time.monotonic() - hit[0] < TREND_TTL_S:
        fut = hit[1]
        if not fut.done() or fut.exception() is None:
            return await asyncio.shield(fut)
    for k in [k for k, (t0, _) in cache.items() if time.monotonic() - t0 >= TREND_TTL_S]:
        cache.pop(k, None)
    fut = asyncio.get_running_loop().create_future()
    cache[key] = (time.monotonic(), fut)
    try:
        out = await _compute_trend(request, session, access.scope, settings)
    except BaseException as exc:
        cache.pop(key, None)
        if not fut.done():
            fut.set_exception(exc if isinstance(exc, Exception) else RuntimeError("cancelled"))
            fut.exception()  # retrieved: no "never retrieved" warning
        raise
    fut.set_result(out)
    return out
