"""The portal API's shared pieces: the one JSON error shape, times, health, and how a request names a channel.

Each domain's request and response bodies live in its folder (``ops_portal/<domain>/schemas.py``).  Response
models list their fields explicitly and are built from ORM rows with ``from_attributes``: a column that is not
named there (device password HA1, user password hash, token hash) can never reach a response, whatever the table
grows.  Where a response mirrors a domain's value type (a channel's catalog attributes, a cascade catalog
entry), its fields are taken from that dataclass with :func:`dataclass_fields`: still an explicit list (the
dataclass's, never a table's columns), written once.

Times are RFC 3339 strings in UTC with millisecond precision and a ``Z`` suffix,
e.g. ``2024-05-01T08:30:00.000Z``.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

__all__ = [
    "CHANNELS_DOC",
    "ApiError",
    "ChannelIdStr",
    "ChannelItemIn",
    "ChannelRefIn",
    "ErrorOut",
    "HealthOut",
    "NodeId",
    "UtcTime",
    "dataclass_fields",
    "error_responses",
    "rfc3339",
]


def rfc3339(value: datetime) -> str:
    """``value`` as an RFC 3339 UTC string (naive datetimes are taken as UTC)."""
    if value.tzinfo is None or value.utcoffset() is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


UtcTime = Annotated[datetime, PlainSerializer(rfc3339, return_type=str, when_used="json")]


# ---------------------------------------------------------------------------------------------- derived models
def dataclass_fields(
    source: type, *, skip: Collection[str] = (), describe: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The fields of the dataclass ``source`` as :func:`pydantic.create_model` field definitions, in their
    declaration order: ``name -> (type, default)`` (required where the dataclass has no default), less the
    names in ``skip``; ``describe`` gives a field an OpenAPI description.  A response model that mirrors a
    domain's value type is built from these, so that the field list is written once, in the domain."""
    hints = typing.get_type_hints(source)
    describe = describe or {}
    out: dict[str, Any] = {}
    for f in dataclasses.fields(source):
        if f.name in skip:
            continue
        spec: dict[str, Any] = {}
        if f.default_factory is not dataclasses.MISSING:
            spec["default_factory"] = f.default_factory
        elif f.default is not dataclasses.MISSING:
            spec["default"] = f.default
        if f.name in describe:
            spec["description"] = describe[f.name]
        out[f.name] = (hints[f.name], Field(**spec))
    return out


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
    actions: list[dict[str, Any]] | None = Field(
        default=None, description="watermark_capacity only: what the client can do instead, e.g. "
        '[{"action": "use_sub_stream", "stream": "sub"}] (watch the sub-stream: a fraction of an encoder)',
    )
    retry_after: int | None = Field(default=None, description="watermark_capacity only: seconds to wait (also "
                                    "the Retry-After header)")


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


class HealthOut(BaseModel):
    status: str = "ok"


# ---------------------------------------------------------------------------------------------- channels in requests
NodeId = Annotated[int, Field(ge=1, le=2**31 - 1)]
ChannelIdStr = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[0-9A-Za-z_-]+$")]


class ChannelRefIn(BaseModel):
    """One camera: the device that reports it and its channel id (unique only within the device)."""

    model_config = ConfigDict(extra="forbid")

    device_id: ChannelIdStr
    channel_id: ChannelIdStr


#: A channel in a request: ``{"device_id", "channel_id"}``, or a bare channel id when it names one channel
#: (409 ``ambiguous_channel`` otherwise).
ChannelItemIn = ChannelRefIn | ChannelIdStr

#: The description of a request's ``channels`` list.
CHANNELS_DOC = ("通道：{device_id, channel_id}，或唯一的通道编码 / channels: {device_id, channel_id}, or a "
                "channel id that names one channel (409 ambiguous_channel otherwise)")
