"""The portal's HTTP routes.  :data:`api_router` gathers them all."""

from __future__ import annotations

from fastapi import APIRouter

from ops_portal.routes import audit, auth, devices, live, sip
from ops_portal.schemas import HealthOut

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
