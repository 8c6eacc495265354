"""The portal's API: :data:`api_router` includes every domain's routes (each domain is a folder of
``ops_portal``; its routes are in ``routes.py`` and, where it has several routers, ``<topic>_routes.py``).

The order of inclusion is the order of the routes, and of the paths in the OpenAPI document.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from ops_portal import regions_routes
from ops_portal.accounts import auth_routes, role_routes
from ops_portal.accounts import routes as user_routes
from ops_portal.audit import routes as audit_routes
from ops_portal.availability import routes as availability_routes
from ops_portal.cascade import routes as cascade_routes
from ops_portal.cluster import routes as cluster_routes
from ops_portal.control import alarm_routes
from ops_portal.control import routes as control_routes
from ops_portal.dashboard import routes as dashboard_routes
from ops_portal.devices import manage_routes, map_routes, org_routes, sip_routes
from ops_portal.devices import routes as device_routes
from ops_portal.live import download_routes, history_routes
from ops_portal.live import routes as live_routes
from ops_portal.schemas import HealthOut
from ops_portal.security import check_routes as security_check_routes
from ops_portal.security import routes as security_routes
from ops_portal.tickets import routes as ticket_routes
from ops_portal.timesync import routes as time_routes

__all__ = ["api_router"]

health_router = APIRouter(tags=["health"])


@health_router.get("/api/health", operation_id="health", summary="健康检查 / liveness and readiness",
                   response_model=HealthOut, responses={503: {"model": HealthOut, "description": "not ready"}})
async def health(request: Request, ready: bool = Query(False, description="readiness: 503 unless this node has "
                                                                           "started, is not draining, reaches its "
                                                                           "database and is in the node directory")
                 ) -> Any:
    """No authentication.  Liveness (default): answers as long as the HTTP server runs, with no dependency checks,
    so that a database or Redis outage does not restart every node.  ``?ready=1`` (a load balancer's readiness):
    ``starting`` until the node has started, ``draining`` once it stops (SIGTERM) or drains, ``database`` when
    PostgreSQL/SQLite does not answer within 2 s, ``cluster`` when this node's heartbeat is not in Redis."""
    if not ready:
        return HealthOut(status="ok")
    state = request.app.state
    problem = None
    if getattr(state, "draining", False):
        problem = "draining"
    elif not getattr(state, "ready", True):
        problem = "starting"
    else:
        problem = await _dependency_problem(state)
    if problem is not None:
        return JSONResponse(status_code=503, content={"status": problem})
    return HealthOut(status="ok")


async def _dependency_problem(state: Any) -> str | None:
    sessionmaker = getattr(state, "sessionmaker", None)
    if sessionmaker is not None:
        try:
            async with asyncio.timeout(2), sessionmaker() as session:
                await session.execute(text("SELECT 1"))
        except Exception:
            return "database"
    cluster = getattr(state, "cluster", None)
    if cluster is not None and getattr(state, "cluster_clustered", False):
        try:
            async with asyncio.timeout(2):
                if await cluster.directory.get(cluster.node_id) is None:
                    return "cluster"
        except Exception:
            return "cluster"
    return None


api_router = APIRouter()
api_router.include_router(health_router)
for _module in (
    auth_routes,
    manage_routes,  # device management (issue 18): before device_routes, whose /{device_id} would take /export
    device_routes,
    sip_routes,
    audit_routes,
    live_routes,  # live view (its outputs, /flv and /whep, are included by the app)
    history_routes,  # records, recording plans, playback
    availability_routes,
    download_routes,
    control_routes,  # device control: PTZ, presets, tours, home, device commands
    alarm_routes,
    cascade_routes,  # upper platforms (cascade upward)
    user_routes,  # access control
    role_routes,
    org_routes,  # the tree
    map_routes,  # channels for lists and the map
    dashboard_routes,
    ticket_routes,
    security_routes,  # security monitoring (issue 16)
    cluster_routes,  # the cluster's nodes and worker jobs (issue 17)
    security_check_routes,  # security self-check and its report (issue 16)
    time_routes,  # device clocks, the 1 s compliance measure, the platform's NTP server (issue 16)
    regions_routes,  # the GB/T 2260 table: civil codes in words (issue 18)
):
    api_router.include_router(_module.router)
