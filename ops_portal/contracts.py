"""Service contracts (issue 7): what an operator promised a customer, per contract.

A contract states the **service scope** (organisation nodes, whose descendants are included, and
individual channels), how long video is **stored** (at least 7 days), the **repair time limit** for a
fault (48 hours unless the contract says otherwise), **quality terms** (e.g. a minimum resolution and
the longest tolerated frozen picture) and how the monthly **online rate** is computed and judged
(threshold, time-weighted or sampled every N minutes).

Used by the tickets (SLA deadline of a channel's fault) and by the online-rate reports.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import JSON, CheckConstraint, Float, Integer, String, Text, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from gbcore.db import Base, UtcDateTime, utcnow
from gbcore.ids import ChannelRef

if TYPE_CHECKING:
    from ops_portal.access import Scope

__all__ = [
    "DEFAULT_ONLINE_RATE_THRESHOLD",
    "DEFAULT_REPAIR_LIMIT_HOURS",
    "MIN_STORAGE_DAYS",
    "RATE_RULES",
    "Contract",
    "ContractError",
    "contract_channel_refs",
    "contract_for_channel",
    "contract_scope",
    "contracts_for_channel",
    "get_contract",
    "list_contracts",
    "org_descendants",
    "validate_contract",
]

MIN_STORAGE_DAYS = 7
DEFAULT_REPAIR_LIMIT_HOURS = 48
DEFAULT_ONLINE_RATE_THRESHOLD = 0.85
RATE_RULES = ("time_weighted", "sampled")
RateRule = Literal["time_weighted", "sampled"]

# Quality terms that the platform understands (others are kept as written, for the record).
QUALITY_TERM_KEYS = ("min_width", "min_height", "max_freeze_seconds", "max_black_seconds")


class ContractError(ValueError):
    """A contract's terms are invalid.  ``code`` is stable, ``message`` is "中文 / English"."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Contract(Base):
    """A service contract with a customer."""

    __tablename__ = "contracts"
    __table_args__ = (CheckConstraint(f"storage_days >= {MIN_STORAGE_DAYS}", name="storage_days_min"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    customer: Mapped[str] = mapped_column(Text, default="", server_default=text("''"))
    # Service scope: organisation node ids (descendants included) and channel ids (20-digit codes).
    org_node_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    channel_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    storage_days: Mapped[int] = mapped_column(Integer, default=30, server_default=text("30"))
    repair_limit_hours: Mapped[float] = mapped_column(
        Float, default=DEFAULT_REPAIR_LIMIT_HOURS, server_default=text(str(DEFAULT_REPAIR_LIMIT_HOURS))
    )
    # e.g. {"min_width": 1920, "min_height": 1080, "max_freeze_seconds": 10}
    quality_terms: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    online_rate_threshold: Mapped[float] = mapped_column(
        Float, default=DEFAULT_ONLINE_RATE_THRESHOLD, server_default=text(str(DEFAULT_ONLINE_RATE_THRESHOLD))
    )
    rate_rule: Mapped[str] = mapped_column(String(16), default="time_weighted", server_default="time_weighted")
    # Sampling period of the "sampled" rule (minutes); ignored by "time_weighted".
    sample_minutes: Mapped[int | None] = mapped_column(Integer)
    valid_from: Mapped[datetime] = mapped_column(UtcDateTime())
    valid_until: Mapped[datetime | None] = mapped_column(UtcDateTime())
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow, onupdate=utcnow)

    def __repr__(self) -> str:
        return f"Contract({self.id}, {self.name!r})"

    def valid_at(self, at: datetime) -> bool:
        """Whether the contract is in force at ``at`` (``valid_until`` is exclusive)."""
        return self.valid_from <= at and (self.valid_until is None or at < self.valid_until)


def validate_contract(
    *,
    storage_days: int,
    repair_limit_hours: float,
    online_rate_threshold: float,
    rate_rule: str,
    sample_minutes: int | None,
    valid_from: datetime,
    valid_until: datetime | None,
    quality_terms: dict[str, Any] | None = None,
) -> None:
    """Check a contract's terms; raise :class:`ContractError` with a clear bilingual message."""
    if storage_days < MIN_STORAGE_DAYS:
        raise ContractError(
            "storage_days_too_short",
            f"录像存储时间不得少于 {MIN_STORAGE_DAYS} 天（当前 {storage_days} 天） / "
            f"storage time must be at least {MIN_STORAGE_DAYS} days (got {storage_days})",
        )
    if not repair_limit_hours > 0:
        raise ContractError("repair_limit_invalid", "修复时限必须大于 0 小时 / the repair time limit must be positive")
    if not 0 < online_rate_threshold <= 1:
        raise ContractError(
            "online_rate_threshold_invalid",
            "在线率考核值必须在 0 到 1 之间 / the online-rate threshold must be in (0, 1]",
        )
    if rate_rule not in RATE_RULES:
        raise ContractError(
            "rate_rule_invalid",
            "在线率计算规则只能是 time_weighted 或 sampled / rate_rule must be time_weighted or sampled",
        )
    if rate_rule == "sampled" and (sample_minutes is None or sample_minutes < 1):
        raise ContractError(
            "sample_minutes_required",
            "按抽样计算在线率时须给出抽样间隔（分钟，≥1） / the sampled rule needs sample_minutes >= 1",
        )
    if valid_from.tzinfo is None or (valid_until is not None and valid_until.tzinfo is None):
        raise ContractError("naive_time", "有效期须带时区 / validity times must carry a time zone")
    if valid_until is not None and valid_until <= valid_from:
        raise ContractError(
            "validity_invalid", "有效期结束时间须晚于开始时间 / valid_until must be after valid_from"
        )
    for key in QUALITY_TERM_KEYS:
        value = (quality_terms or {}).get(key)
        if value is not None and (not isinstance(value, int | float) or isinstance(value, bool) or value < 0):
            raise ContractError(
                "quality_terms_invalid",
                f"质量条款 {key} 须为非负数 / quality term {key} must be a non-negative number",
            )


async def get_contract(session: AsyncSession, contract_id: int) -> Contract | None:
    """The contract with this id, or None."""
    return await session.get(Contract, contract_id)


async def list_contracts(session: AsyncSession, *, at: datetime | None = None) -> list[Contract]:
    """All contracts (by id); with ``at``, only those in force at that time."""
    rows = list((await session.scalars(select(Contract).order_by(Contract.id))).all())
    if at is not None:
        rows = [c for c in rows if c.valid_at(at)]
    return rows


async def org_descendants(session: AsyncSession, roots: Iterable[int]) -> frozenset[int]:
    """The given organisation node ids with all their descendants (:func:`device_registry.org.org_descendants`)."""
    from device_registry.org import org_descendants as descendants

    return await descendants(session, roots)


@dataclass(frozen=True)
class _ScopeParts:
    org_node_ids: frozenset[int]
    channel_refs: frozenset[ChannelRef]


async def contract_channel_refs(session: AsyncSession, contract: Contract) -> frozenset[ChannelRef]:
    """The channels a contract lists, as (device id, channel id).  An entry ``"device_id/channel_id"`` names
    one camera; a bare channel id (contracts written before issue 11) covers every device reporting that
    id, resolved now (a contract is a service scope, not an access grant)."""
    from device_registry.queries import channel_refs_with_ids

    refs: set[ChannelRef] = set()
    bare: list[str] = []
    for entry in contract.channel_ids or []:
        text = str(entry)
        if "/" in text:
            try:
                refs.add(ChannelRef.parse(text))
            except ValueError:
                continue
        else:
            bare.append(text)
    if bare:
        refs.update(await channel_refs_with_ids(session, bare))
    return frozenset(refs)


async def _scope_parts(session: AsyncSession, contract: Contract) -> _ScopeParts:
    return _ScopeParts(
        org_node_ids=await org_descendants(session, [int(n) for n in contract.org_node_ids or []]),
        channel_refs=await contract_channel_refs(session, contract),
    )


async def contract_scope(session: AsyncSession, contract_id: int) -> Scope | None:
    """The service scope of a contract as an access :class:`~ops_portal.access.Scope`
    (organisation nodes with their descendants, plus the listed channels); None when no such contract."""
    from ops_portal.access import Scope

    contract = await get_contract(session, contract_id)
    if contract is None:
        return None
    parts = await _scope_parts(session, contract)
    return Scope(all=False, org_node_ids=parts.org_node_ids, channel_refs=parts.channel_refs)


def _covers(parts: _ScopeParts, ref: ChannelRef, channel_org: int | None, device_org: int | None) -> bool:
    if ref in parts.channel_refs:
        return True
    return (channel_org is not None and channel_org in parts.org_node_ids) or (
        device_org is not None and device_org in parts.org_node_ids
    )


async def contracts_for_channel(session: AsyncSession, channel: ChannelRef, at: datetime) -> list[Contract]:
    """Contracts in force at ``at`` whose scope covers ``channel`` (that device's channel; lowest id first)."""
    from device_registry.queries import channel_placement

    ref = ChannelRef(*channel)
    # the channel's own node and its device's (when the channel is gone, its device's node still says where it was)
    channel_org, device_org = await channel_placement(session, ref)
    found = []
    for contract in await list_contracts(session, at=at):
        if _covers(await _scope_parts(session, contract), ref, channel_org, device_org):
            found.append(contract)
    return found


async def contract_for_channel(session: AsyncSession, channel: ChannelRef, at: datetime) -> Contract | None:
    """The contract covering ``channel`` at ``at``; when several do, the strictest repair limit wins."""
    found = await contracts_for_channel(session, channel, at)
    if not found:
        return None
    return min(found, key=lambda c: (c.repair_limit_hours, c.id))
