"""The bodies of ``GET /api/dashboard`` and ``GET /api/dashboard/trend``."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, Field

from ops_portal.schemas import UtcTime


class OrgShareOut(BaseModel):
    org_node_id: int | None = Field(description="顶层组织节点（null：未分组）/ top-level node (null: unassigned)")
    name: str | None
    channels_total: int
    channels_online: int
    rate: float | None = Field(description="0..1")
    meets_threshold: bool | None


class RecentOfflineOut(BaseModel):
    device_id: str
    name: str | None
    offline_at: UtcTime
    reason: str | None = Field(description="keepalive_timeout | registration_expired | platform_restart | "
                                           "unregistered | ...")
    org_node_id: int | None


class DashboardOut(BaseModel):
    devices_total: int
    devices_online: int
    channels_total: int
    channels_online: int
    online_rate: float | None = Field(description="在线通道 / 通道总数，无通道时为 null / channels online / total")
    streams: int | None = Field(description="上行流数（媒体服务未运行时为 null）/ upstream streams")
    viewers: int | None = None
    open_tickets: int | None = Field(default=None, description="未关闭工单（工单模块存在时）/ open tickets")
    # issue 18
    overdue_tickets: int | None = Field(default=None, description="超期工单（同 GET /api/tickets?overdue=true）/ "
                                                                  "overdue tickets")
    threshold: float = Field(description="平台考核值 (0..1) / the platform's online-rate threshold")
    meets_threshold: bool | None = Field(description="在线率 >= 考核值；无通道时为 null / rate >= threshold")
    by_org: list[OrgShareOut] = Field(description="按顶层组织节点 / per top-level organisation node")
    offline_recent_total: int = Field(description="近一小时离线且仍离线的设备数 / devices gone offline in the "
                                                  "last hour, still offline")
    offline_recent: list[RecentOfflineOut] = Field(description="其中最近的 20 台 / the 20 latest of them")


class TrendDayOut(BaseModel):
    date: dt.date = Field(description="北京时间日期 / the day (display time zone)")
    rate: float | None


class TrendPointOut(BaseModel):
    at: UtcTime
    rate: float | None


class WorstChannelOut(BaseModel):
    device_id: str
    channel_id: str
    name: str | None
    availability: float | None = Field(description="7 天在线率 (0..1) / over the 7 days")
    offline_s: float
    outages: int
    longest_outage_s: float
    online: bool = Field(description="当前是否在线 / online now")


class TrendOut(BaseModel):
    start: UtcTime
    end: UtcTime
    timezone: str
    threshold: float
    rate: float | None = Field(description="7 天在线率（按平台规则）/ the 7 days' rate (the platform's rule)")
    days: list[TrendDayOut]
    series: list[TrendPointOut]
    worst: list[WorstChannelOut]
    computed_at: UtcTime
