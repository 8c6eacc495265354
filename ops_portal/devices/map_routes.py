"""``GET /api/channels``: channels across devices, limited to the caller's scope (for lists and the map)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from ops_portal.access import ensure_node, expand_org_nodes
from ops_portal.deps import AccessDep, RegistryDep, SessionDep, require_permission
from ops_portal.devices.schemas import MapChannelList, MapChannelOut
from ops_portal.models import User
from ops_portal.schemas import error_responses

router = APIRouter(tags=["channels"], responses=error_responses(401, 403, 422))

ChannelReader = Annotated[User, Depends(require_permission("device.read"))]


@router.get("/api/channels", operation_id="channels_list", summary="通道列表（含经纬度）/ list channels (with location)",
            response_model=MapChannelList)
async def list_channels(
    user: ChannelReader,
    access: AccessDep,
    registry: RegistryDep,
    session: SessionDep,
    org_node_id: Annotated[
        int | None, Query(ge=1, le=2**31 - 1, description="此节点及其下级的通道 / channels of this node's subtree")
    ] = None,
    online: Annotated[bool | None, Query(description="在线 (true) 或离线 (false) / by presence")] = None,
    q: Annotated[str | None, Query(max_length=100, description="按编码、名称、地址搜索 / search id, name, address")] = None,
    has_location: Annotated[
        bool | None, Query(description="只看有 (true) 或没有 (false) 经纬度的 / with or without a location")
    ] = None,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> MapChannelList:
    """Not-removed channels in the caller's scope, ordered by device and channel id."""
    nodes = None
    if org_node_id is not None:
        await ensure_node(access, registry, org_node_id)
        nodes = await expand_org_nodes(session, [org_node_id])
        await session.commit()
    total, rows = await registry.search_channels(scope=access.scope, org_node_ids=nodes, online=online, q=q,
                                                 has_location=has_location, offset=offset, limit=limit)
    items = [
        MapChannelOut(channel_id=c.channel_id, device_id=c.device_id, name=c.name, online=c.online, status=c.status,
                      longitude=c.longitude, latitude=c.latitude, address=c.address, org_node_id=node,
                      ptz_type=c.ptz_type)
        for c, node in rows
    ]
    return MapChannelList(total=total, offset=offset, limit=limit, items=items)
