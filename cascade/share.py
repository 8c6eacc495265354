"""What one upper platform sees: the share resolved to channels, and the id mapping both ways.

A share is a set of organisation nodes (each with its descendants) and a list of channels named
explicitly (with an optional upward id, name and civil code).  Every shared channel gets one upward id
per platform: the explicit one, else its own channel id.  Explicit ids are checked when the share is
saved; a channel that joins a shared node later and whose default id is already taken is left out (and
listed in ``conflicts``) rather than sent under an ambiguous id.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gbcore.ids import ChannelRef, valid_gb_id

from .errors import CascadeError
from .registry_reads import ChannelFacts
from .validation import is_gb20

__all__ = ["ChannelSpec", "ShareMap", "SharedChannel", "parse_channel_specs", "resolve_share", "upward_conflicts"]


@dataclass(frozen=True, slots=True)
class ChannelSpec:
    """One entry of ``channels`` in ``PUT .../share``, before its channel is looked up."""

    channel_id: str
    device_id: str | None = None
    upward_id: str | None = None
    name: str | None = None
    civil_code: str | None = None


@dataclass(frozen=True, slots=True)
class SharedChannel:
    ref: ChannelRef
    upward_id: str
    name: str | None = None  # overrides of the share
    civil_code: str | None = None
    explicit: bool = False


@dataclass(frozen=True)
class ShareMap:
    """One platform's share resolved: upward id -> channel and channel -> upward id."""

    platform_id: int
    org_nodes: frozenset[int]  # the shared nodes with their descendants (existing ones)
    by_upward: Mapping[str, SharedChannel]
    by_ref: Mapping[ChannelRef, SharedChannel]
    facts: Mapping[ChannelRef, ChannelFacts] = field(default_factory=dict)
    conflicts: tuple[tuple[ChannelRef, str], ...] = ()

    def channel(self, upward_id: str) -> ChannelRef | None:
        shared = self.by_upward.get(upward_id)
        return None if shared is None else shared.ref

    def upward_id(self, ref: ChannelRef) -> str | None:
        shared = self.by_ref.get(ChannelRef(*ref))
        return None if shared is None else shared.upward_id


def _opt_text(value: Any, what: str, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise CascadeError("invalid_share", f"{what} 应为文本 / {what} must be text", 422, field=what)
    value = value.strip()
    if not value:
        return None
    if len(value) > limit or any(ord(ch) < 0x20 for ch in value):
        raise CascadeError("invalid_share", f"{what} 过长或含控制字符 / {what} is too long or contains control "
                           "characters", 422, field=what)
    return value


def parse_channel_specs(items: Any) -> list[ChannelSpec]:
    """``channels`` of a share: a list of channel id strings or ``{device_id?, channel_id, upward_id?, name?,
    civil_code?}`` objects."""
    if not isinstance(items, list):
        raise CascadeError("invalid_share", "channels 应为列表 / channels must be a list", 422)
    specs: list[ChannelSpec] = []
    for item in items:
        if isinstance(item, str):
            item = {"channel_id": item}
        if not isinstance(item, dict):
            raise CascadeError("invalid_share", "channels 的每一项应为通道编号或对象 / each channels entry must be a "
                               "channel id or an object", 422)
        unknown = sorted(set(item) - {"device_id", "channel_id", "upward_id", "name", "civil_code"})
        if unknown:
            raise CascadeError("unknown_field", f"未知字段 {unknown[0]} / unknown field {unknown[0]}", 422,
                               field=unknown[0])
        channel_id = item.get("channel_id")
        if not isinstance(channel_id, str) or not valid_gb_id(channel_id.strip()):
            raise CascadeError("invalid_share", "通道编号无效 / invalid channel id", 422, field="channel_id")
        device_id = item.get("device_id")
        if device_id is not None and (not isinstance(device_id, str) or not valid_gb_id(device_id.strip())):
            raise CascadeError("invalid_share", "设备编号无效 / invalid device id", 422, field="device_id")
        upward_id = item.get("upward_id")
        if upward_id is not None and upward_id != "":
            if not is_gb20(upward_id):
                raise CascadeError("invalid_share", f"上级编码 {str(upward_id)[:32]} 应为 20 位数字 / upward_id must be "
                                   "a 20-digit id", 422, field="upward_id")
        else:
            upward_id = None
        civil = _opt_text(item.get("civil_code"), "civil_code", 8)
        if civil is not None and not (civil.isascii() and civil.isdigit() and len(civil) in (2, 4, 6, 8)):
            raise CascadeError("invalid_share", "行政区划代码应为 2、4、6 或 8 位数字 / civil_code must be 2, 4, 6 or 8 "
                               "digits", 422, field="civil_code")
        specs.append(ChannelSpec(channel_id.strip(), device_id.strip() if device_id else None, upward_id,
                                 _opt_text(item.get("name"), "name", 100), civil))
    return specs


def upward_conflicts(explicit: Iterable[SharedChannel], implicit: Iterable[ChannelRef],
                     reserved: Iterable[str] = ()) -> dict[str, list[ChannelRef]]:
    """Upward ids claimed by more than one channel (explicit ones, then the default ids of the channels
    shared through nodes), or by a reserved id (our own system id)."""
    claims: dict[str, list[ChannelRef]] = {}
    taken = set(reserved)
    explicit = list(explicit)
    done = {s.ref for s in explicit}
    for s in explicit:
        claims.setdefault(s.upward_id, []).append(s.ref)
    for ref in implicit:
        if ref not in done:
            claims.setdefault(ref.channel_id, []).append(ref)
    return {uid: refs for uid, refs in claims.items() if len(refs) > 1 or uid in taken}


def resolve_share(platform_id: int, org_nodes: frozenset[int], explicit: Mapping[ChannelRef, SharedChannel],
                  facts: Iterable[ChannelFacts], *, reserved: Iterable[str] = ()) -> ShareMap:
    """The share of a platform from the channels the registry found in it (``facts``: channels of the shared
    nodes and the explicit ones that exist).  Explicit channels keep their ids; the others take their own
    channel id in (device, channel) order; a channel whose id is taken is left out and listed in
    ``conflicts``."""
    facts = sorted(facts, key=lambda f: f.ref)
    by_upward: dict[str, SharedChannel] = {}
    by_ref: dict[ChannelRef, SharedChannel] = {}
    taken = set(reserved)
    conflicts: list[tuple[ChannelRef, str]] = []
    present = {f.ref: f for f in facts}
    for ref, shared in sorted(explicit.items()):
        if ref not in present:
            continue
        if shared.upward_id in by_upward or shared.upward_id in taken:
            conflicts.append((ref, shared.upward_id))
            continue
        by_upward[shared.upward_id] = shared
        by_ref[ref] = shared
    for f in facts:
        if f.ref in by_ref or f.ref in explicit:
            continue
        uid = f.ref.channel_id
        if uid in by_upward or uid in taken:
            conflicts.append((f.ref, uid))
            continue
        shared = SharedChannel(f.ref, uid)
        by_upward[uid] = shared
        by_ref[f.ref] = shared
    return ShareMap(platform_id, org_nodes, by_upward, by_ref, {r: present[r] for r in by_ref}, tuple(conflicts))
