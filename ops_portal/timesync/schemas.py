"""Shapes of the time API (issue 16): device clocks, the compliance measure, the platform's clock."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from ops_portal.schemas import UtcTime

__all__ = ["ClockCheckOut", "ClockOut", "ComplianceOut", "DeviceClockList", "DeviceClockOut", "TimeStatusOut"]


class ClockOut(BaseModel):
    """A device's clock: nulls before the first sample."""

    skew_s: float | None = Field(description="当前时钟偏差（秒，设备减平台，正数为超前）/ current skew, device minus "
                                 "platform (s; positive: the device is ahead)")
    uncertainty_s: float | None = Field(description="估计的不确定度（± 秒；DeviceTime 只到整秒）/ the estimate's "
                                        "uncertainty (+- s; DeviceTime has 1 s resolution)")
    worst_24h_s: float | None = Field(description="24 小时内最大偏差 / worst skew over the last 24 h (s)")
    within_limit: bool | None = Field(description="当前偏差在限值内 / current skew within clock_skew_limit")
    samples: int = Field(description="24 小时内的采样次数 / samples in the last 24 h")
    last_checked: UtcTime | None = Field(description="最近一次采样 / last sample (UTC)")
    limit_s: float = Field(description="限值 / GBOPS_CLOCK_SKEW_LIMIT (s)")


class ClockCheckOut(ClockOut):
    """The clock after an immediate check."""


class DeviceClockOut(ClockOut):
    device_id: str
    name: str | None = None
    online: bool


class DeviceClockList(BaseModel):
    total: int
    offset: int
    limit: int
    items: list[DeviceClockOut]


class DeviceOver(BaseModel):
    device_id: str
    worst_24h_s: float


class ComplianceOut(BaseModel):
    """24 小时内时钟误差不超过 1 秒的设备占比 / share of devices whose clock stayed within 1 s over 24 h."""

    share: float | None = Field(description="占比（0..1），无采样时为空 / share (0..1); null when no device was "
                                "measured")
    within: int = Field(description="误差不超过 1 秒的设备数 / devices within 1 s")
    measured: int = Field(description="24 小时内有采样的设备数 / devices with samples in the last 24 h")
    unmeasured: int = Field(description="可见但 24 小时内无采样的设备数 / visible devices without samples")
    limit_s: float
    window_hours: int
    devices_over: list[DeviceOver]


class TimeStatusOut(BaseModel):
    """The platform's own clock and its NTP server."""

    synchronised: bool | None = Field(description="平台时钟已同步（未配置上级 NTP 服务器时以本机时钟为基准）/ "
                                      "synchronised (the host clock is the reference when no servers are set)")
    healthy: bool
    offset_s: float | None = Field(description="平台相对上级 NTP 服务器的偏差 / offset from the best server (s)")
    max_offset_s: float
    reference: str = Field(description="local 本机时钟 / servers 上级 NTP 服务器")
    servers: list[dict[str, Any]]
    checked_at: UtcTime | None
    stratum: int
    leap: int
    ref_id: str
    ntp_server: dict[str, Any] = Field(description="NTP 服务：是否运行、地址端口、未运行的原因 / the NTP server: "
                                       "running, host, port, why not")
    clock_check_interval_s: float
    clock_skew_limit_s: float
