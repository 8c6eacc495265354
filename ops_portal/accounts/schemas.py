"""Request and response bodies of logging in, users, roles and the caller's own access."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from ops_portal.schemas import CHANNELS_DOC, ChannelItemIn, NodeId, UtcTime


# ---------------------------------------------------------------------------------------------- auth
class LoginRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # no account name holds a control character (UserCreateRequest's pattern); a NUL must not reach PostgreSQL
    username: str = Field(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")
    password: str = Field(min_length=1, max_length=1024)
    otp: str | None = Field(default=None, max_length=16, description="两步验证码（已启用时必填，6 位数字）/ the "
                            "6-digit TOTP code (required when two-step verification is on)")

    def __repr__(self) -> str:
        return f"LoginRequest(username={self.username!r}, password=***, otp=***)"


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_at: UtcTime
    must_change_password: bool
    password_change_reason: str | None = Field(default=None, description="须修改密码的原因（如密码已超期）/ why the "
                                               "password must be changed (e.g. its age)")
    totp_setup_required: bool = Field(default=False, description="角色要求两步验证而尚未绑定：此令牌只能用于绑定 / "
                                      "the role requires two-step verification: this token may only enrol")


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
    totp_enabled: bool = False
    password_changed_at: UtcTime | None = None
    last_login_at: UtcTime | None = None


# ---------------------------------------------------------------------------------------------- second factor
class TotpSetupOut(BaseModel):
    """A new secret, not active until a code from it is confirmed (POST /api/auth/totp/enable)."""

    secret: str = Field(description="Base32 密钥（手工输入验证器应用）/ the base32 secret to type into an app")
    secret_grouped: str = Field(description="每 4 个字符一组 / the secret in groups of 4")
    otpauth_uri: str = Field(description="otpauth:// URI（验证器应用扫码）/ what authenticator apps scan")
    issuer: str
    account: str
    digits: int
    period: int


class TotpCodeRequest(BaseModel):
    """Turning the second factor on or off: the password again (a stolen session alone cannot change the
    account's second factor) and a current code from the app."""

    model_config = ConfigDict(extra="forbid")

    password: str = Field(min_length=1, max_length=1024, description="当前密码 / the current password")
    code: str = Field(min_length=6, max_length=16, description="验证器应用显示的 6 位验证码 / the 6-digit code")

    def __repr__(self) -> str:
        return "TotpCodeRequest(password=***, code=***)"


class TotpStateOut(BaseModel):
    enabled: bool
    enabled_at: UtcTime | None = None
    required: bool = Field(description="角色要求两步验证 / a role of the user requires it")
    pending: bool = Field(description="已生成密钥但尚未确认 / a secret was set up but not confirmed yet")


class TotpResetOut(BaseModel):
    revoked_tokens: int


# ---------------------------------------------------------------------------------------------- users and roles
PtzLevel = Annotated[int, Field(ge=1, le=9, description="云台控制级别 1-9（高者优先）/ PTZ control level 1-9")]
RoleId = Annotated[int, Field(ge=1, le=2**31 - 1)]


class ChannelRefOut(BaseModel):
    device_id: str = Field(description="'' : 迁移时未能确定设备的旧授权（不匹配任何通道）/ a grant migration "
                                       "could not resolve to a device (matches no channel)")
    channel_id: str


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
    totp_enabled: bool = False
    last_login_at: UtcTime | None = None
    password_changed_at: UtcTime | None = None
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



class RoleCreateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    description: str = Field(default="", max_length=500)
    permissions: list[str] = Field(default_factory=list, max_length=100)
    full_scope: bool = False
    org_node_ids: list[NodeId] = Field(default_factory=list, max_length=10_000)
    channels: list[ChannelItemIn] = Field(default_factory=list, max_length=100_000, description=CHANNELS_DOC)
    channel_ids: list[ChannelItemIn] = Field(default_factory=list, max_length=100_000,
                                             description="旧名称，同 channels / former name of channels")


class RoleUpdateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=64)
    description: str | None = Field(default=None, max_length=500)
    permissions: list[str] | None = Field(default=None, max_length=100)
    full_scope: bool | None = None
    org_node_ids: list[NodeId] | None = Field(default=None, max_length=10_000)
    channels: list[ChannelItemIn] | None = Field(default=None, max_length=100_000, description=CHANNELS_DOC)
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
