"""Bodies of the security monitoring API (``/api/security/...``).  Times are RFC 3339 in Beijing time
(``+08:00``); every kind, rule and severity comes with its Chinese and English words."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["AckIn", "AlertList", "AlertOut", "BlockList", "BlockOut", "EventList", "EventOut", "KindOut", "RuleOut",
           "Vocabulary"]


class EventOut(BaseModel):
    id: int
    time: str = Field(description="RFC 3339, Beijing time")
    kind: str
    kind_zh: str
    kind_en: str
    severity: str = Field(description="info | warning | critical")
    severity_zh: str
    source_ip: str | None
    user: str | None
    device_id: str | None
    detail: dict[str, Any]


class EventList(BaseModel):
    total: int
    offset: int
    limit: int
    items: list[EventOut]


class AlertOut(BaseModel):
    id: int
    rule: str
    rule_zh: str
    rule_en: str
    rule_text_zh: str = Field(description="the rule with its threshold, in words")
    rule_text_en: str
    key: str = Field(description="what the rule counted for: an address, a user or a device id")
    severity: str
    severity_zh: str
    first_at: str
    last_at: str
    count: int = Field(description="events counted into the alert")
    source_ip: str | None
    state: str = Field(description="open | acknowledged")
    state_zh: str
    ack_user: str | None
    ack_at: str | None
    ack_note: str | None
    blocked_until: str | None = Field(description="the source address is blocked until then (Beijing time)")
    detail: dict[str, Any]


class AlertList(BaseModel):
    total: int
    offset: int
    limit: int
    items: list[AlertOut]


class AckIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str = Field(min_length=1, max_length=500, description="处理说明（必填）/ what was done (required)")


class BlockOut(BaseModel):
    address: str
    until: str
    reason: str
    alert_id: int | None
    created_at: str | None


class BlockList(BaseModel):
    items: list[BlockOut]


class KindOut(BaseModel):
    kind: str
    zh: str
    en: str
    severity: str


class RuleOut(BaseModel):
    name: str
    zh: str
    en: str
    text_zh: str
    text_en: str
    kinds: list[str]
    key: str
    threshold: int
    window_s: float
    severity: str
    autoblock: bool
    distinct: str | None


class Vocabulary(BaseModel):
    kinds: list[KindOut]
    rules: list[RuleOut]
    severities: dict[str, str] = Field(description="severity -> Chinese word")
    autoblock: bool
