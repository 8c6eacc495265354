"""Request and response models of ``/api/cascade`` (upper platforms, issue 15).

The password is write-only: it is a field of the requests (kept out of their repr) and of no response model, so
whatever the service hands back, no answer can carry it.  Times are RFC 3339 in Beijing time (``+08:00``).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model, model_validator

from ops_portal.schemas import dataclass_fields
from ops_portal.timewindow import beijing
from sip_server.gb.upper import CatalogEntry

__all__ = [
    "EXPIRES_FLOOR",
    "CatalogEntryOut",
    "CatalogPreviewOut",
    "PlatformCreate",
    "PlatformList",
    "PlatformOut",
    "PlatformPatch",
    "PlatformStatusOut",
    "RequestList",
    "RequestOut",
    "ShareChannelIn",
    "ShareChannelOut",
    "ShareIn",
    "ShareOut",
    "catalog_entry_out",
    "platform_out",
    "status_out",
    "time_out",
]

#: GB/T 28181's floor for a registration's validity; a shorter one is accepted with a warning.
EXPIRES_FLOOR = 3600
EXPIRES_WARNING = ("注册有效期 {expires} 秒低于标准下限 {floor} 秒 / expires {expires} s is below the standard's floor "
                   "of {floor} s")

#: an upper's states as the portal shows them (``other_node``: a cluster's other SIP node registers to it)
_STATES = ("registered", "registering", "offline", "disabled", "other_node")

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


def _text(value: str) -> str:
    """Trimmed, not blank, without control characters (they break SIP headers and XML)."""
    value = value.strip()
    if not value:
        raise ValueError("不能为空白 / must not be blank")
    if _CONTROL.search(value):
        raise ValueError("不能含控制字符 / must not contain control characters")
    return value


def _no_control(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("不能含控制字符 / must not contain control characters")
    return value


def _host(value: str) -> str:
    value = value.strip()
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    if not _HOSTNAME.match(value):
        raise ValueError("应为 IP 地址或主机名 / must be an IP address or a host name")
    return value.lower()


Name = Annotated[str, Field(min_length=1, max_length=64, description="名称 / name"), AfterValidator(_text)]
GbId = Annotated[str, Field(pattern=r"^[0-9]{20}$", description="20 位国标编码 / 20-digit GB/T 28181 id")]
Domain = Annotated[str, Field(pattern=r"^(?:[0-9]{10}|[0-9]{20})$",
                              description="上级平台域（10 位，或 20 位）/ the upper's SIP domain (10 digits, or 20)")]
Host = Annotated[str, Field(min_length=1, max_length=253, description="上级平台地址 / the upper's IP address or host "
                            "name"), AfterValidator(_host)]
Port = Annotated[int, Field(ge=1, le=65535, description="上级平台 SIP 端口 / the upper's SIP port")]
# tls: SIP over TLS (sips, GB/T 28181-2022 §8.2), the upper's certificate verified (GBOPS_CASCADE_TLS_CA_FILE)
Transport = Literal["udp", "tcp", "tls"]
# the digest user name goes into an Authorization header: printable ASCII without quote, backslash or comma
Username = Annotated[str, Field(pattern=r'^[!#-+\--\[\]-~]{1,64}$', description="认证用户名 / digest user name")]
Password = Annotated[str, Field(min_length=1, max_length=128, description="认证密码（只写）/ digest password (write-only)"),
                     AfterValidator(_no_control)]
Expires = Annotated[int, Field(ge=30, le=86400, description="注册有效期（秒），低于 3600 时给出警告 / registration "
                               "validity in seconds (below 3600: accepted with a warning)")]
Keepalive = Annotated[int, Field(ge=5, le=3600, description="心跳周期（秒）/ keepalive interval in seconds")]
Charset = Literal["GB2312", "GB18030", "UTF-8"]
GbVersion = Literal["2016", "2022"]
PtzLevel = Annotated[int, Field(ge=1, le=9, description="上级平台的云台控制级别 1-9 / the PTZ level of the upper's "
                                "commands 1-9")]
Watermark = Literal["tag", "visible"]
ChannelIdStr = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[0-9A-Za-z_-]+$")]
CivilCode = Annotated[str, Field(pattern=r"^[0-9]{2}(?:[0-9]{2}){0,5}$", description="行政区划代码 / civil code")]
NodeId = Annotated[int, Field(ge=1, le=2**31 - 1)]


# ---------------------------------------------------------------------------------------------- platforms
class PlatformCreate(BaseModel):
    """A new upper platform. ``server_domain`` defaults to the first 10 digits of ``server_id``, ``local_id`` to our
    system id, ``username`` to ``local_id``; the password is required (a weak one is refused)."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    server_id: GbId = Field(description="上级平台 SIP 编码 / the upper's SIP id")
    server_domain: Domain | None = None
    host: Host
    port: Port = 5060
    transport: Transport = "udp"
    local_id: GbId | None = Field(None, description="本平台对该上级的编码（默认本平台编码）/ our id toward this upper "
                                                    "(default: our system id)")
    username: Username | None = None
    password: Password = Field(repr=False)
    expires: Expires = 3600
    keepalive_s: Keepalive = 60
    charset: Charset = "GB2312"
    gb_version: GbVersion = "2016"
    ptz_level: PtzLevel = 5
    watermark: Watermark = Field("tag", description="tag：仅签名标记 / the signed tag only; visible：并叠加可见水印 / "
                                                    "and the visible watermark with the platform's name")
    enabled: bool = True

    def service_data(self) -> dict[str, Any]:
        data = {k: v for k, v in self.model_dump().items() if v is not None}
        data.setdefault("server_domain", self.server_id[:10])
        return data


class PlatformPatch(BaseModel):
    """The fields to change; an absent field keeps its value (``null`` is refused: there is nothing to clear).
    An absent ``password`` keeps the stored one."""

    model_config = ConfigDict(extra="forbid")

    name: Name = None  # type: ignore[assignment]
    server_id: GbId = None  # type: ignore[assignment]
    server_domain: Domain = None  # type: ignore[assignment]
    host: Host = None  # type: ignore[assignment]
    port: Port = None  # type: ignore[assignment]
    transport: Transport = None  # type: ignore[assignment]
    local_id: GbId = None  # type: ignore[assignment]
    username: Username = None  # type: ignore[assignment]
    password: Password = Field(None, repr=False)  # type: ignore[assignment]
    expires: Expires = None  # type: ignore[assignment]
    keepalive_s: Keepalive = None  # type: ignore[assignment]
    charset: Charset = None  # type: ignore[assignment]
    gb_version: GbVersion = None  # type: ignore[assignment]
    ptz_level: PtzLevel = None  # type: ignore[assignment]
    watermark: Watermark = None  # type: ignore[assignment]
    enabled: bool = None  # type: ignore[assignment]

    def changes(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.model_fields_set}


class PlatformStatusOut(BaseModel):
    platform_id: int
    state: Literal["registered", "registering", "offline", "disabled", "other_node"] = Field(
        description="registered 已注册 | registering 注册中 | offline 离线 | disabled 已停用 | "
                    "other_node 由集群中另一节点注册 / registered to by another node of the cluster")
    node_id: str | None = Field(None, description="other_node 时：注册该上级的节点 / other_node: the node that "
                                                  "registers to this upper (None when unknown)")
    last_error: str | None = Field(None, description="最近的错误 / the last error")
    last_keepalive: str | None = Field(None, description="最近一次心跳成功（北京时间）/ last keepalive answered")
    registered_until: str | None = Field(None, description="注册有效至（北京时间）/ registration valid until")
    streams: int = Field(0, description="正在向上级发送的视频流数 / streams being sent to the upper")
    stream_list: list[dict[str, Any]] = Field(default_factory=list,
                                              description="正在发送的视频流 / the streams being sent")


class PlatformOut(BaseModel):
    id: int
    name: str
    server_id: str
    server_domain: str
    host: str
    port: int
    transport: str
    local_id: str
    username: str
    has_password: bool = Field(description="已设置密码（密码本身从不返回）/ a password is stored (never returned)")
    expires: int
    keepalive_s: int
    charset: str
    gb_version: str
    ptz_level: int
    watermark: str
    enabled: bool
    created_at: str | None = None
    updated_at: str | None = None
    warnings: list[str] = Field(default_factory=list, description="配置警告 / configuration warnings")
    status: PlatformStatusOut | None = Field(None, description="列表中附带的实时状态 / live status (in the list)")


class PlatformList(BaseModel):
    items: list[PlatformOut]


# ---------------------------------------------------------------------------------------------- share
class ShareChannelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device_id: ChannelIdStr | None = Field(None, description="设备编码（通道编码不唯一时必填）/ the device (needed "
                                                             "when the channel id is not unique)")
    channel_id: ChannelIdStr
    upward_id: GbId | None = Field(None, description="对上级使用的编码 / the id the upper sees")
    name: Name | None = Field(None, description="对上级使用的名称 / the name the upper sees")
    civil_code: CivilCode | None = None


class ShareIn(BaseModel):
    """What the platform sees: organisation nodes (with their descendants) and single channels; a channel may be a
    plain channel id when it is unique."""

    model_config = ConfigDict(extra="forbid")

    org_nodes: list[NodeId] = Field(default_factory=list, max_length=10_000)
    channels: list[ShareChannelIn | ChannelIdStr] = Field(default_factory=list, max_length=100_000)

    @model_validator(mode="after")
    def _unique(self) -> ShareIn:
        seen: set[tuple[str | None, str]] = set()
        upward: set[str] = set()
        for item in self.channels:
            key = (None, item) if isinstance(item, str) else (item.device_id, item.channel_id)
            if key in seen:
                raise ValueError(f"通道重复：{key[1]} / channel listed twice: {key[1]}")
            seen.add(key)
            if not isinstance(item, str) and item.upward_id:
                if item.upward_id in upward:
                    raise ValueError(f"对上编码重复：{item.upward_id} / upward id used twice: {item.upward_id}")
                upward.add(item.upward_id)
        return self

    def service_channels(self) -> list[dict[str, Any]]:
        out = []
        for item in self.channels:
            if isinstance(item, str):
                item = ShareChannelIn(channel_id=item)
            out.append(item.model_dump())
        return out


class ShareChannelOut(BaseModel):
    model_config = ConfigDict(extra="ignore")

    device_id: str | None = None
    channel_id: str
    upward_id: str | None = None
    name: str | None = None
    civil_code: str | None = None
    channel_name: str | None = Field(None, description="通道在本平台的名称 / the channel's own name")


class ShareOut(BaseModel):
    org_nodes: list[int]
    channels: list[ShareChannelOut]
    resolved: int = Field(description="共享给上级的通道总数 / channels the upper sees in all")
    conflicts: list[dict[str, Any]] = Field(default_factory=list, description="对上编码冲突的通道（未共享）/ "
                                            "channels left out because their upward ids collide")


# ---------------------------------------------------------------------------------------------- catalog preview
#: One catalog item as the upper receives it: the fields of :class:`sip_server.gb.upper.CatalogEntry` (what the
#: SIP side sends up; its NOTIFY-only ``event`` left out) and where a channel comes from on this platform.
CatalogEntryOut = create_model(
    "CatalogEntryOut",
    __doc__="One catalog item as the upper receives it (ids already mapped).",
    __config__=ConfigDict(extra="ignore"),
    **dataclass_fields(CatalogEntry, skip=("event",),
                       describe={"kind": "system | region | business_group | virtual_org | channel"}),
    source_device_id=(str | None, Field(None, description="本平台的设备编码 / our device id (channels)")),
    source_channel_id=(str | None, Field(None, description="本平台的通道编码 / our channel id (channels)")),
)


class CatalogPreviewOut(BaseModel):
    total: int
    channels: int = Field(description="其中通道数 / of which channels")
    items: list[CatalogEntryOut]


# ---------------------------------------------------------------------------------------------- requests
class RequestOut(BaseModel):
    """One ``cascade.*`` audit entry of the platform."""

    seq: int
    time: str = Field(description="北京时间 / Beijing time, RFC 3339")
    action: str
    label_zh: str
    label_en: str
    actor: dict[str, Any]
    target: dict[str, Any]
    detail: dict[str, Any]


class RequestList(BaseModel):
    platform_id: int
    items: list[RequestOut]


# ---------------------------------------------------------------------------------------------- builders
def time_out(value: Any) -> str | None:
    """A time from the service (aware/naive-UTC datetime, Unix seconds, ISO text) as Beijing RFC 3339."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return beijing(float(value)) if value > 0 else None
    if isinstance(value, datetime):
        return beijing(value)
    if isinstance(value, str):
        try:
            return beijing(datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            return value
    return str(value)


def _as_dict(value: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, dict):
        return value
    return dict(vars(value))


def status_out(platform_id: int, raw: Any) -> PlatformStatusOut:
    data = _as_dict(raw) if raw is not None else {}
    streams = data.get("streams", 0)
    items: list[dict[str, Any]] = []
    if isinstance(streams, list | tuple):
        items = [_stream_item(s) for s in streams]
        count = len(items)
    else:
        count = int(streams or 0)
    state = data.get("state") or "offline"
    if state not in _STATES:
        state = "offline"
    node_id = data.get("node_id") if state == "other_node" else None
    return PlatformStatusOut(platform_id=platform_id, state=state,
                             node_id=str(node_id) if node_id not in (None, "") else None,
                             last_error=data.get("last_error") or None,
                             last_keepalive=time_out(data.get("last_keepalive")),
                             registered_until=time_out(data.get("registered_until")), streams=count,
                             stream_list=items)


def _stream_item(raw: Any) -> dict[str, Any]:
    item = {k: v for k, v in _as_dict(raw).items() if isinstance(v, str | int | float | bool | type(None))
            and "password" not in k}
    for key in ("started_at", "start", "end"):
        if key in item:
            item[key] = time_out(item[key])
    return item


def platform_out(raw: Any, status: PlatformStatusOut | None = None) -> PlatformOut:
    data = _as_dict(raw)
    fields = {k: data[k] for k in PlatformOut.model_fields if k in data and k not in ("warnings", "status")}
    fields["has_password"] = bool(data.get("has_password", False))
    if "gb_version" in fields:
        fields["gb_version"] = str(fields["gb_version"])
    for key in ("created_at", "updated_at"):
        fields[key] = time_out(data.get(key))
    out = PlatformOut(**fields, status=status)
    given = data.get("warnings")
    if isinstance(given, list):  # the service's own (create, change)
        out.warnings = [str(w) for w in given]
    elif out.expires < EXPIRES_FLOOR:
        out.warnings.append(EXPIRES_WARNING.format(expires=out.expires, floor=EXPIRES_FLOOR))
    return out


def catalog_entry_out(raw: Any) -> CatalogEntryOut:
    return CatalogEntryOut(**_as_dict(raw))
