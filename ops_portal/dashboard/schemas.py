"""The body of ``GET /api/dashboard``."""

from __future__ import annotations

from pydantic import BaseModel, Field


class DashboardOut(BaseModel):
    devices_total: int
    devices_online: int
    channels_total: int
    channels_online: int
    online_rate: float | None = Field(description="在线通道 / 通道总数，无通道时为 null / channels online / total")
    streams: int | None = Field(description="上行流数（媒体服务未运行时为 null）/ upstream streams")
    viewers: int | None = None
    open_tickets: int | None = Field(default=None, description="未关闭工单（工单模块存在时）/ open tickets")
