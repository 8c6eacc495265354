"""Request and response bodies of devices, channels, the organisation tree and the map list."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, create_model

from device_registry.events import ChannelInfo
from ops_portal.schemas import CHANNELS_DOC, ChannelIdStr, ChannelItemIn, NodeId, UtcTime, dataclass_fields


class DeviceOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    device_id: str
    name: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    firmware: str | None = None
    device_type: str | None = None
    online: bool
    offline_reason: str | None = None
    last_seen: UtcTime | None = None
    remote_addr: str | None = None
    transport: str | None = None
    contact: str | None = None
    user_agent: str | None = None
    charset: str | None = None
    registered_at: UtcTime | None = None
    register_expires_at: UtcTime | None = None
    keepalive_interval: int | None = None
    channel_count: int | None = None
    catalog_state: str | None = None
    catalog_synced_at: UtcTime | None = None
    org_node_id: int | None = None
    created_at: UtcTime | None = None
    updated_at: UtcTime | None = None


class DeviceList(BaseModel):
    total: int
    offset: int
    limit: int
    items: list[DeviceOut]


#: Shown first in a channel; the rest of the registry's catalog attributes (``ChannelInfo``) follow in its order.
_CHANNEL_HEAD = ("channel_id", "name", "status", "longitude", "latitude")
_channel_info = dataclass_fields(ChannelInfo)

#: A channel: the catalog attributes the registry keeps (:class:`device_registry.events.ChannelInfo`, the one
#: list of them), plus its device, presence, organisation node and bookkeeping times.
ChannelOut = create_model(
    "ChannelOut",
    __config__=ConfigDict(from_attributes=True),
    channel_id=_channel_info["channel_id"],
    device_id=(str | None, None),
    name=_channel_info["name"],
    status=_channel_info["status"],
    online=(bool, ...),
    longitude=_channel_info["longitude"],
    latitude=_channel_info["latitude"],
    **dataclass_fields(ChannelInfo, skip=_CHANNEL_HEAD),
    org_node_id=(int | None, None),
    removed=(bool, ...),
    removed_at=(UtcTime | None, None),
    first_seen=(UtcTime | None, None),
    updated_at=(UtcTime | None, None),
)


class ChannelList(BaseModel):
    items: list[ChannelOut]


class PresenceOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    subject: str
    channel_id: str | None = None
    online: bool
    at: UtcTime
    reason: str
    detail: str | None = None


class PresenceList(BaseModel):
    items: list[PresenceOut]


class CatalogProgressOut(BaseModel):
    """Progress of a catalog sync as the SIP service reports it (extra keys are passed through)."""

    model_config = ConfigDict(extra="allow")

    device_id: str
    sn: int | None = None
    state: str = Field(description="running | complete | partial")
    received: int = 0
    expected: int | None = None
    pages: int = 0
    summary: str | None = None


class DevicePasswordRequest(BaseModel):
    """A device's own SIP password (overrides GBOPS_SIP_PASSWORD for this device); null clears it."""

    password: str | None = Field(default=None, max_length=128)

    def __repr__(self) -> str:  # never echo the password
        return "DevicePasswordRequest(password=***)"


class OrgNodeOut(BaseModel):
    id: int
    parent_id: int | None
    name: str
    kind: str
    code: str | None = None
    children: list[int] = Field(description="可见的下级节点 / visible child node ids")
    in_scope: bool = Field(description="false: 仅作为路径显示 / shown only as the path to granted content")
    devices: int
    channels: int
    channels_online: int
    total_devices: int = Field(description="含下级 / including the subtree")
    total_channels: int
    total_channels_online: int


class OrgDeviceOut(BaseModel):
    device_id: str
    name: str | None = None
    online: bool
    org_node_id: int | None = None
    channel_count: int | None = None


class OrgChannelOut(BaseModel):
    channel_id: str
    device_id: str
    name: str | None = None
    online: bool
    org_node_id: int | None = Field(default=None, description="所属节点（通道自身或其设备的）/ the channel's node")
    longitude: float | None = None
    latitude: float | None = None


class OrgUnassignedOut(BaseModel):
    devices: int
    channels: int
    channels_online: int


class OrgTreeOut(BaseModel):
    nodes: list[OrgNodeOut] = Field(description="按 id 排序，parent_id/children 组成树 / ordered by id")
    unassigned: OrgUnassignedOut
    devices: list[OrgDeviceOut] | None = None
    channels: list[OrgChannelOut] | None = None


class OrgNodeCreateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    parent_id: NodeId | None = None


class OrgNodeUpdateRequest(BaseModel):
    """``name`` renames; ``parent_id`` moves (send null to make the node a root)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=100)
    parent_id: NodeId | None = None


class OrgNodeDetailOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    parent_id: int | None = None
    name: str
    kind: str
    code: str | None = None
    created_at: UtcTime | None = None
    updated_at: UtcTime | None = None


class OrgNodeDeleteOut(BaseModel):
    deleted: int
    moved_to: int | None = Field(description="子节点和成员移到的节点（null：变为根 / 未分配）/ where the "
                                 "children and members went (null: roots / unassigned)")
    children: int
    devices: int
    channels: int


class OrgMembersRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device_ids: list[ChannelIdStr] = Field(default_factory=list, max_length=10_000)
    channels: list[ChannelItemIn] = Field(default_factory=list, max_length=10_000, description=CHANNELS_DOC)
    channel_ids: list[ChannelItemIn] = Field(default_factory=list, max_length=10_000,
                                             description="旧名称，同 channels / former name of channels")


class OrgMembersOut(BaseModel):
    node_id: int
    devices: int = Field(description="已分配的设备数 / devices assigned")
    channels: int = Field(description="已分配的通道数 / channel rows assigned")


class MapChannelOut(BaseModel):
    channel_id: str
    device_id: str
    name: str | None = None
    online: bool
    status: str | None = None
    longitude: float | None = None
    latitude: float | None = None
    address: str | None = None
    org_node_id: int | None = None
    ptz_type: int | None = None


class MapChannelList(BaseModel):
    total: int
    offset: int
    limit: int
    items: list[MapChannelOut]
