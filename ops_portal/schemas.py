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
    ) -> None:
        super().__init__(f"{status_code} {error}: {message}")
        self.status_code = status_code
        self.error = error
        self.message = message
        self.headers = headers
        self.details = details

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.error, "message": self.message}
        if self.details is not None:
            out["details"] = self.details
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
