"""The portal's API: :data:`api_router` includes every domain's routes (each domain is a folder of
``ops_portal``; its routes are in ``routes.py`` and, where it has several routers, ``<topic>_routes.py``).

The order of inclusion is the order of the routes, and of the paths in the OpenAPI document.
"""

from __future__ import annotations

from fastapi import APIRouter

from ops_portal.accounts import auth_routes, role_routes
from ops_portal.accounts import routes as user_routes
from ops_portal.audit import routes as audit_routes
from ops_portal.availability import routes as availability_routes
from ops_portal.cascade import routes as cascade_routes
from ops_portal.control import alarm_routes
from ops_portal.control import routes as control_routes
from ops_portal.dashboard import routes as dashboard_routes
from ops_portal.devices import map_routes, org_routes, sip_routes
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


@health_router.get("/api/health", operation_id="health", summary="健康检查 / liveness", response_model=HealthOut)
async def health() -> HealthOut:
    """No authentication: answers as long as the HTTP server runs."""
    return HealthOut(status="ok")


api_router = APIRouter()
api_router.include_router(health_router)
for _module in (
    auth_routes,
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
    security_check_routes,  # security self-check and its report (issue 16)
    time_routes,  # device clocks, the 1 s compliance measure, the platform's NTP server (issue 16)
):
    api_router.include_router(_module.router)
