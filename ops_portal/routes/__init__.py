"""The portal's HTTP routes.  :data:`api_router` gathers them all."""

from __future__ import annotations

from fastapi import APIRouter

from ops_portal.availability.routes import router as availability_router
from ops_portal.routes import (
    alarms,
    audit,
    auth,
    cascade,
    channels,
    dashboard,
    devices,
    downloads,
    history,
    live,
    org,
    ptz,
    roles,
    sip,
    users,
)
from ops_portal.schemas import HealthOut
from ops_portal.tickets.routes import router as tickets_router

__all__ = ["api_router"]

health_router = APIRouter(tags=["health"])


@health_router.get("/api/health", operation_id="health", summary="健康检查 / liveness", response_model=HealthOut)
async def health() -> HealthOut:
    """No authentication: answers as long as the HTTP server runs."""
    return HealthOut(status="ok")


api_router = APIRouter()
api_router.include_router(health_router)
api_router.include_router(auth.router)
api_router.include_router(devices.router)
api_router.include_router(sip.router)
api_router.include_router(audit.router)
api_router.include_router(live.router)
api_router.include_router(history.router)
api_router.include_router(availability_router)
api_router.include_router(downloads.router)
api_router.include_router(ptz.router)  # device control: PTZ, presets, tours, home, device commands
api_router.include_router(alarms.router)
api_router.include_router(cascade.router)  # upper platforms (cascade upward)
for _module in (users, roles, org, channels, dashboard):  # access control, the tree, the map, the dashboard
    api_router.include_router(_module.router)
api_router.include_router(tickets_router)
