"""Request and response bodies of the portal API, and the one JSON error shape.

Response models list their fields explicitly and are built from ORM rows with
``from_attributes``: a column that is not named here (device password HA1, user password hash,
token hash) can never reach a response, whatever the table grows.

Times are RFC 3339 strings in UTC with millisecond precision and a ``Z`` suffix,
e.g. ``2024-05-01T08:30:00.000Z``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

__all__ = [
    "ApiError",
    "CatalogProgressOut",
    "ChannelList",
    "ChannelOut",
    "DeviceList",
    "DeviceOut",
    "ErrorOut",
    "HealthOut",
    "LoginRequest",
    "PasswordChangeRequest",
    "PresenceList",
    "PresenceOut",
    "TokenOut",
    "UserOut",
    "error_responses",
    "rfc3339",
]


def rfc3339(value: datetime) -> str:
    """``value`` as an RFC 3339 UTC string (naive datetimes are taken as UTC)."""
    if value.tzinfo is None or value.utcoffset() is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


UtcTime = Annotated[datetime, PlainSerializer(rfc3339, return_type=str, when_used="json")]


# ---------------------------------------------------------------------------------------------- errors
class ErrorOut(BaseModel):
    """Every 4xx/5xx answer: a stable machine code and a message, Chinese first then English."""

    error: str = Field(examples=["device_not_found"])
    message: str = Field(examples=["设备不存在 / device not found"])
    details: list[dict[str, Any]] | None = Field(
        default=None, description="validation errors only: where and what (never the input values)"
    )
    devices: list[str] | None = Field(
        default=None,
        description="ambiguous_channel only: the devices (visible to the caller) that report this channel id",
    )
    sip_status: int | None = Field(
        default=None, description="device_refused only: the SIP status the device answered (e.g. 488, 486)",
    )


class ApiError(Exception):
    """Raised anywhere in the portal; the app turns it into an :class:`ErrorOut` response."""

    def __init__(
        self,
        status_code: int,
        error: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        details: list[dict[str, Any]] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{status_code} {error}: {message}")
        self.status_code = status_code
        self.error = error
        self.message = message
        self.headers = headers
        self.details = details
        #: further fields of the body (named in :class:`ErrorOut`), e.g. ``devices`` of ambiguous_channel
        self.extra = extra

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.error, "message": self.message}
        if self.details is not None:
            out["details"] = self.details
        if self.extra:
            out.update(self.extra)
        return out


def error_responses(*status_codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries: these statuses answer with :class:`ErrorOut`."""
    return {code: {"model": ErrorOut} for code in status_codes}


# ---------------------------------------------------------------------------------------------- auth
class LoginRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_at: UtcTime
    must_change_password: bool


class PasswordChangeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    old_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=1, max_length=1024)


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    username: str
    display_name: str
    phone: str | None = None
    must_change_password: bool
    disabled: bool
    created_at: UtcTime
    updated_at: UtcTime


class HealthOut(BaseModel):
    status: str = "ok"


# ---------------------------------------------------------------------------------------------- devices
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


class ChannelOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    channel_id: str
    device_id: str | None = None
    name: str | None = None
    status: str | None = None
    online: bool
    longitude: float | None = None
    latitude: float | None = None
    manufacturer: str | None = None
    model: str | None = None
    owner: str | None = None
    civil_code: str | None = None
    block: str | None = None
    address: str | None = None
    parental: int | None = None
    parent_id: str | None = None
    business_group_id: str | None = None
    safety_way: int | None = None
    register_way: int | None = None
    secrecy: int | None = None
    ip_address: str | None = None
    port: int | None = None
    ptz_type: int | None = None
    org_node_id: int | None = None
    removed: bool
    removed_at: UtcTime | None = None
    first_seen: UtcTime | None = None
    updated_at: UtcTime | None = None


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


# ---------------------------------------------------------------------------------------------- access (issue 6)
PtzLevel = Annotated[int, Field(ge=1, le=9, description="云台控制级别 1-9（高者优先）/ PTZ control level 1-9")]
NodeId = Annotated[int, Field(ge=1, le=2**31 - 1)]
RoleId = Annotated[int, Field(ge=1, le=2**31 - 1)]
ChannelIdStr = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[0-9A-Za-z_-]+$")]


class ChannelRefIn(BaseModel):
    """One camera: the device that reports it and its channel id (unique only within the device)."""

    model_config = ConfigDict(extra="forbid")

    device_id: ChannelIdStr
    channel_id: ChannelIdStr


class ChannelRefOut(BaseModel):
    device_id: str = Field(description="'' : 迁移时未能确定设备的旧授权（不匹配任何通道）/ a grant migration "
                                       "could not resolve to a device (matches no channel)")
    channel_id: str


#: A channel in a request: ``{"device_id", "channel_id"}``, or a bare channel id when it names one channel
#: (409 ``ambiguous_channel`` otherwise).
ChannelItemIn = ChannelRefIn | ChannelIdStr


class UserDetailOut(BaseModel):
    """A user as administrators see it (never the password hash)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    username: str
    display_name: str
    phone: str | None = None
    ptz_level: int
    valid_from: UtcTime | None = None
    valid_until: UtcTime | None = None
    disabled: bool
    must_change_password: bool
    locked_until: UtcTime | None = None
    created_at: UtcTime
    updated_at: UtcTime
    role_ids: list[int] = []
    roles: list[str] = []


class UserListOut(BaseModel):
    total: int
    offset: int
    limit: int
    items: list[UserDetailOut]


class UserCreateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")
    password: str | None = Field(
        default=None, min_length=1, max_length=1024,
        description="省略则生成一次性密码 / omitted: a one-time password is generated and returned",
    )
    display_name: str = Field(default="", max_length=100)
    phone: str | None = Field(default=None, max_length=32)
    ptz_level: PtzLevel = 5
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    disabled: bool = False
    role_ids: list[RoleId] = Field(default_factory=list, max_length=100)

    def __repr__(self) -> str:
        return f"UserCreateRequest(username={self.username!r}, password=***)"


class UserUpdateRequest(BaseModel):
    """Only the fields sent change; ``valid_from``/``valid_until``/``phone`` may be set to null."""

    model_config = ConfigDict(extra="forbid")

    display_name: str | None = Field(default=None, max_length=100)
    phone: str | None = Field(default=None, max_length=32)
    ptz_level: PtzLevel | None = None
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    disabled: bool | None = None
    role_ids: list[RoleId] | None = Field(default=None, max_length=100)


class UserCreatedOut(BaseModel):
    user: UserDetailOut
    one_time_password: str | None = Field(
        default=None, description="只显示一次；用户首次登录须修改 / shown once; must be changed at first login"
    )


class PasswordResetOut(BaseModel):
    one_time_password: str = Field(description="只显示一次 / shown once; the user must change it at next login")
    revoked_tokens: int


class RevokeOut(BaseModel):
    revoked_tokens: int


class PermissionOut(BaseModel):
    name: str
    level: str = Field(description="admin（系统管理）| function（系统功能）")
    label_zh: str
    label_en: str


class PermissionList(BaseModel):
    items: list[PermissionOut]
    levels: dict[str, str] = Field(description="权限层级 / permission levels: admin, function, data")


class RoleOut(BaseModel):
    id: int
    name: str
    description: str
    builtin: bool
    full_scope: bool
    permissions: list[str]
    org_node_ids: list[int]
    channels: list[ChannelRefOut] = Field(description="显式授权的通道（设备 + 通道编码）/ channels granted one "
                                          "by one (device and channel id)")
    user_count: int
    created_at: UtcTime
    updated_at: UtcTime


class RoleList(BaseModel):
    items: list[RoleOut]


_CHANNELS_DOC = ("通道：{device_id, channel_id}，或唯一的通道编码 / channels: {device_id, channel_id}, or a "
                 "channel id that names one channel (409 ambiguous_channel otherwise)")


class RoleCreateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    description: str = Field(default="", max_length=500)
    permissions: list[str] = Field(default_factory=list, max_length=100)
    full_scope: bool = False
    org_node_ids: list[NodeId] = Field(default_factory=list, max_length=10_000)
    channels: list[ChannelItemIn] = Field(default_factory=list, max_length=100_000, description=_CHANNELS_DOC)
    channel_ids: list[ChannelItemIn] = Field(default_factory=list, max_length=100_000,
                                             description="旧名称，同 channels / former name of channels")


class RoleUpdateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=64)
    description: str | None = Field(default=None, max_length=500)
    permissions: list[str] | None = Field(default=None, max_length=100)
    full_scope: bool | None = None
    org_node_ids: list[NodeId] | None = Field(default=None, max_length=10_000)
    channels: list[ChannelItemIn] | None = Field(default=None, max_length=100_000, description=_CHANNELS_DOC)
    channel_ids: list[ChannelItemIn] | None = Field(default=None, max_length=100_000,
                                                    description="旧名称，同 channels / former name of channels")


class AccessMeOut(BaseModel):
    """What the caller may do: for the console to show only what works."""

    user_id: int
    username: str
    display_name: str
    permissions: list[str]
    roles: list[str]
    full_scope: bool
    org_node_ids: list[int] = Field(description="授权节点（含下级）/ granted nodes, descendants included")
    channels: list[ChannelRefOut] = Field(default_factory=list, description="显式授权的通道 / channels granted "
                                          "one by one")
    channel_ids: list[str] = Field(default_factory=list, description="the ids of `channels` (not unique across "
                                   "devices: use `channels`)")
    ptz_level: int
    valid_until: UtcTime | None = None


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
    channels: list[ChannelItemIn] = Field(default_factory=list, max_length=10_000, description=_CHANNELS_DOC)
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


class DashboardOut(BaseModel):
    devices_total: int
    devices_online: int
    channels_total: int
    channels_online: int
    online_rate: float | None = Field(description="在线通道 / 通道总数，无通道时为 null / channels online / total")
    streams: int | None = Field(description="上行流数（媒体服务未运行时为 null）/ upstream streams")
    viewers: int | None = None
    open_tickets: int | None = Field(default=None, description="未关闭工单（工单模块存在时）/ open tickets")
