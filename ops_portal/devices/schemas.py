"""Request and response bodies of devices, channels, the organisation tree and the map list."""

from __future__ import annotations

from typing import Annotated, Literal

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
    stream_form: str | None = Field(default="none", description="主/子码流标识方式 / how main/sub stream is asked "
                                    "for: streamnumber | stream | streamprofile | none")
    expected_channels: int | None = None
    longitude: float | None = None
    latitude: float | None = None
    address: str | None = None
    channels_online: int | None = Field(default=None, description="在线通道数 / channels online (not removed)")
    channels_total: int | None = Field(default=None, description="通道总数 / channels (not removed)")


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


# ------------------------------------------------------------------------------------------ device management
StreamForm = Literal["streamnumber", "stream", "streamprofile", "none"]
Transport = Literal["udp", "tcp"]
Longitude = Annotated[float, Field(ge=-180, le=180)]
Latitude = Annotated[float, Field(ge=-90, le=90)]


class DeviceCreate(BaseModel):
    """A device to pre-register: it appears offline, its own password works at once on every SIP node."""

    model_config = ConfigDict(extra="forbid")

    device_id: str = Field(min_length=1, max_length=32, description="20 位国标编码 / the 20-digit GB/T 28181 id")
    name: str = Field(min_length=1, max_length=64)
    password: str | None = Field(default=None, max_length=128,
                                 description="设备自己的 SIP 密码（null：平台默认密码）/ its own SIP password")
    transport: Transport = "udp"
    org_node_id: NodeId | None = None
    stream_form: StreamForm = "none"
    expected_channels: int | None = Field(default=None, ge=0, le=4096)
    longitude: Longitude | None = None
    latitude: Latitude | None = None
    address: str | None = Field(default=None, max_length=200)

    def __repr__(self) -> str:  # never echo the password
        return f"DeviceCreate(device_id={self.device_id!r}, name={self.name!r}, password=***)"


class DeviceUpdate(BaseModel):
    """Only the fields sent change; null clears (name: the device's own name comes back with its next
    DeviceInfo; password: the platform's default password)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=64)
    password: str | None = Field(default=None, max_length=128)
    transport: Transport | None = None
    org_node_id: NodeId | None = None
    stream_form: StreamForm | None = None
    expected_channels: int | None = Field(default=None, ge=0, le=4096)
    longitude: Longitude | None = None
    latitude: Latitude | None = None
    address: str | None = Field(default=None, max_length=200)

    def __repr__(self) -> str:  # never echo the password
        return f"DeviceUpdate(fields={sorted(self.model_fields_set)})"


class ChannelUpdate(BaseModel):
    """Only the fields sent change.  A value is kept over later catalogs; null gives it back to the catalog
    (org_node_id null: the channel follows its device's node)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=100)
    org_node_id: NodeId | None = None
    longitude: Longitude | None = None
    latitude: Latitude | None = None
    address: str | None = Field(default=None, max_length=200)


class DeviceBatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["move", "catalog_sync", "delete"]
    device_ids: list[Annotated[str, Field(min_length=1, max_length=32)]] = Field(min_length=1, max_length=1000)
    org_node_id: NodeId | None = Field(default=None, description="move: 目标节点（null：未分配）/ the target node")
    force: bool = Field(default=False, description="delete: 在线设备也删除 / delete online devices too")


class DeviceBatchResult(BaseModel):
    device_id: str
    ok: bool
    code: str | None = None
    message: str | None = None


class DeviceBatchOut(BaseModel):
    results: list[DeviceBatchResult]


class DeviceImportError(BaseModel):
    row: int = Field(description="表格行号（第 1 行是表头）/ the sheet's row number (row 1 is the header)")
    device_id: str | None = None
    code: str
    message: str


class DeviceImportOut(BaseModel):
    total: int
    created: int
    updated: int = 0
    failed: int
    errors: list[DeviceImportError]
