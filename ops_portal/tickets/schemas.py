"""Request and response bodies of the tickets, notifications, contracts and SLA routes."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ops_portal.schemas import UtcTime

REPAIR_TIME = (
    "修复时长（秒）= 修复反馈时间 − 报修时间；重开后以最后一次修复反馈为准 / "
    "repair time (s) = repair feedback time − report time; after a reopen, the latest feedback counts"
)

Anomaly = Literal["black", "overexposed", "frozen", "blur", "color_cast", "occlusion", "low_resolution", "other"]


#: a device or channel id as a filter or a ticket's subject: no control characters reach the database
#: (PostgreSQL refuses a NUL byte in text, which was a 500)
ID_PATTERN = r"^[0-9A-Za-z_-]+$"


class TicketCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channel_id: str | None = Field(None, min_length=1, max_length=32, pattern=ID_PATTERN,
                                   description="故障通道 / the faulty channel")
    device_id: str | None = Field(
        None, min_length=1, max_length=32, pattern=ID_PATTERN,
        description="故障设备（无通道时） / the faulty device (no channel)")
    kind: Literal["fault", "quality"] = Field(
        "fault", description="fault: 点位故障 / point fault; quality: 视频质量异常 / video-quality anomaly")
    anomaly: Anomaly | None = Field(None, description="质量异常类型（kind=quality） / anomaly type")
    note: str = Field("", max_length=2000, description="故障描述 / what is wrong")


class TicketTransition(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["acknowledge", "start_repair", "feedback", "confirm", "reopen"] = Field(
        description="acknowledge 受理, start_repair 开始维修, feedback 修复反馈（须填写说明）, confirm 确认, reopen 重开")
    note: str | None = Field(None, max_length=2000, description="说明；修复反馈必填 / note; required for feedback")


class TicketEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    at: UtcTime
    action: str
    from_state: str | None
    to_state: str
    actor_type: str
    actor_name: str | None
    note: str | None


class TicketOut(BaseModel):
    id: int
    kind: str = Field(description="fault 点位故障 / quality 视频质量异常")
    source: str = Field(description="user 人工上报 / auto_offline 离线自动 / auto_quality 质量检测自动 / auto_alarm 报警自动 / auto_clock 设备时钟偏差自动")
    state: str = Field(description="reported / acknowledged / repairing / repaired / confirmed / reopened")
    channel_id: str | None
    device_id: str | None
    anomaly: str | None
    note: str
    detail: dict[str, Any]
    snapshot_url: str | None = Field(description="现场图片 / snapshot image, if any")
    reporter_name: str | None
    reported_at: UtcTime = Field(description="报修时间：SLA 计时起点 / report time: the SLA clock starts here")
    contract_id: int | None = Field(description="覆盖该通道的合同 / the contract covering the channel")
    repair_limit_hours: float = Field(description="修复时限（小时） / repair time limit (hours)")
    deadline: UtcTime = Field(description="修复期限 = 报修时间 + 修复时限 / deadline = report time + limit")
    time_left_seconds: float | None = Field(
        description="距期限剩余秒数（超期为负；已修复为空） / seconds to the deadline (negative: overdue; null once repaired)")
    overdue: bool = Field(description="待修复且已超期，或超时限修复 / waiting past the deadline, or repaired late")
    acknowledged_at: UtcTime | None
    feedback_at: UtcTime | None = Field(description="修复反馈时间 / repair feedback time")
    feedback_note: str | None
    repair_seconds: float | None = Field(description=REPAIR_TIME)
    within_limit: bool | None = Field(description="修复时长 ≤ 修复时限 / repaired within the limit")
    confirmed_at: UtcTime | None
    allowed_actions: list[str]
    events: list[TicketEventOut] | None = None


class TicketList(BaseModel):
    total: int
    offset: int
    limit: int
    items: list[TicketOut]


class NotificationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    at: UtcTime
    kind: str = Field(description="ticket.opened 自动生成工单 / ticket.overdue 工单超期")
    ticket_id: int | None
    channel_id: str | None
    message: str


class NotificationList(BaseModel):
    items: list[NotificationOut]


class QualityTerms(BaseModel):
    model_config = ConfigDict(extra="allow")

    min_width: int | None = Field(None, ge=1, description="最低分辨率宽 / minimum width (px)")
    min_height: int | None = Field(None, ge=1, description="最低分辨率高 / minimum height (px)")
    max_freeze_seconds: float | None = Field(None, ge=0, description="最长画面冻结 / longest tolerated freeze (s)")
    max_black_seconds: float | None = Field(None, ge=0, description="最长黑屏 / longest tolerated black picture (s)")


class ContractIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128)
    customer: str = Field("", max_length=200)
    org_node_ids: list[int] = Field(default_factory=list, description="服务范围：组织节点（含下级） / org nodes")
    channel_ids: list[str] = Field(default_factory=list, description="服务范围：通道 / channels")
    storage_days: int = Field(30, description="录像存储天数（≥7） / video storage days (at least 7)")
    repair_limit_hours: float = Field(48, description="修复时限（小时） / repair time limit (hours)")
    quality_terms: QualityTerms = Field(default_factory=QualityTerms)
    online_rate_threshold: float = Field(0.85, description="在线率考核值 / online-rate threshold (0..1)")
    rate_rule: Literal["time_weighted", "sampled"] = Field(
        "time_weighted", description="在线率计算：按时长加权或定时抽样 / time-weighted or sampled")
    sample_minutes: int | None = Field(None, description="抽样间隔（分钟） / sampling period (minutes)")
    valid_from: datetime
    valid_until: datetime | None = None


class ContractPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=128)
    customer: str | None = Field(None, max_length=200)
    org_node_ids: list[int] | None = None
    channel_ids: list[str] | None = None
    storage_days: int | None = None
    repair_limit_hours: float | None = None
    quality_terms: QualityTerms | None = None
    online_rate_threshold: float | None = None
    rate_rule: Literal["time_weighted", "sampled"] | None = None
    sample_minutes: int | None = None
    valid_from: datetime | None = None
    valid_until: datetime | None = None


class ContractOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    customer: str
    org_node_ids: list[int]
    channel_ids: list[str]
    storage_days: int
    repair_limit_hours: float
    quality_terms: dict[str, Any]
    online_rate_threshold: float
    rate_rule: str
    sample_minutes: int | None
    valid_from: UtcTime
    valid_until: UtcTime | None
    created_at: UtcTime
    updated_at: UtcTime


class ContractList(BaseModel):
    items: list[ContractOut]


class SlaTicketOut(BaseModel):
    ticket_id: int
    channel_id: str | None
    device_id: str | None
    state: str
    reported_at: UtcTime
    deadline: UtcTime
    feedback_at: UtcTime | None
    repair_seconds: float | None = Field(description=REPAIR_TIME)
    overdue_seconds: float = Field(description="超出时限的秒数 / seconds beyond the limit")


class SlaReportOut(BaseModel):
    contract_id: int
    start: UtcTime
    end: UtcTime
    generated_at: UtcTime
    repair_limit_hours: float
    tickets: int = Field(description="期间内报修的工单数 / tickets reported in the period")
    repaired: int
    within_limit: int = Field(description="在时限内修复 / repaired within the limit")
    missed: int = Field(description="超时限修复或超期未修复 / repaired late or still open past the deadline")
    pending: int = Field(description="未修复且未到期（暂不评判） / open and not yet due (not judged yet)")
    share_within_limit: float | None = Field(
        description="时限内修复率 = within_limit / (within_limit + missed) / share repaired within the limit")
    mean_repair_seconds: float | None = Field(description="平均修复时长 / mean repair time (s). " + REPAIR_TIME)
    p95_repair_seconds: float | None = Field(
        description="修复时长第 95 百分位（最近秩法） / 95th percentile repair time, nearest rank (s)")
    overdue: list[SlaTicketOut]
