"""``/api/sip/metrics``: counters of the SIP service (registrations, challenges, lockouts, keepalives)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from ops_portal.deps import SipDep, require_permission
from ops_portal.models import User
from ops_portal.schemas import ApiError, error_responses

router = APIRouter(prefix="/api/sip", tags=["sip"], responses=error_responses(401, 403))

MetricsReader = Annotated[User, Depends(require_permission("system.metrics"))]


@router.get("/metrics", operation_id="sip_metrics", summary="SIP 服务计数 / SIP service counters",
            responses=error_responses(503))
async def sip_metrics(user: MetricsReader, sip: SipDep) -> dict[str, int]:
    """Counters since start: `registers` (REGISTER requests), `challenges` (401 sent), `registrations_ok`,
    `auth_failures` (wrong password), `lockouts` (ids/addresses locked), `locked_refusals` (REGISTERs
    refused while locked), `keepalives`, `messages`, `bad_messages`, `queries_sent`, `query_failures`,
    `devices_online`."""
    if sip is None:
        raise ApiError(503, "sip_unavailable", "SIP 服务未运行 / the SIP service is not running")
    return sip.metrics()
