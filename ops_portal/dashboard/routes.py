"""``GET /api/dashboard``: the figures of the console's home page, within the caller's scope."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy import func, or_, select

from ops_portal.dashboard.schemas import DashboardOut
from ops_portal.deps import AccessDep, RegistryDep, SessionDep, require_permission
from ops_portal.models import User
from ops_portal.schemas import error_responses

router = APIRouter(tags=["dashboard"], responses=error_responses(401, 403))

DashboardReader = Annotated[User, Depends(require_permission("device.read"))]


async def _open_tickets(session: Any, access: Any) -> int | None:
    """Open tickets in scope, when the tickets module exists and the caller may read tickets."""
    if not access.can("ticket.read"):
        return None
    try:
        from ops_portal.tickets.flow import OPEN_STATES
        from ops_portal.tickets.models import Ticket
    except ImportError:
        return None
    from device_registry.scope import devices_in_scope, pairs_in

    stmt = select(func.count()).select_from(Ticket).where(Ticket.state.in_(sorted(OPEN_STATES)))
    scope = access.scope
    if not scope.all:
        conds = [Ticket.device_id.in_(devices_in_scope(scope))]
        if scope.channel_refs:
            conds.append(pairs_in(Ticket.device_id, Ticket.channel_id, scope.channel_refs))
        stmt = stmt.where(or_(*conds))
    count = await session.scalar(stmt)
    await session.commit()
    return int(count or 0)


@router.get("/api/dashboard", operation_id="dashboard", summary="首页概览 / dashboard figures",
            response_model=DashboardOut)
async def dashboard(user: DashboardReader, access: AccessDep, registry: RegistryDep, session: SessionDep,
                    request: Request) -> DashboardOut:
    """Devices and channels (total, online) and the channel online rate now; upstream streams and viewers
    (null without a media service); open tickets (null without the tickets module or ``ticket.read``)."""
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
    return DashboardOut(**counts, online_rate=(counts["channels_online"] / total) if total else None,
                        streams=streams, viewers=viewers, open_tickets=await _open_tickets(session, access))
