"""Cutting list answers to the caller's data scope (issue 11): helpers shared by the list routes.

* :func:`channels_in_scope`: which of some channels (device id, channel id) are in a scope;
* :func:`grants_within_scope`: whether an object that names channels and organisation nodes (a role's
  grants, a contract's scope) lies wholly inside a scope, so that a scoped user may see it in a list
  (a role or contract reaching beyond the caller's scope names other tenants' cameras: it is left out).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from gbcore.ids import ChannelRef

__all__ = ["channels_in_scope", "grants_within_scope"]


async def channels_in_scope(registry: Any, scope: Any, refs: Iterable[Any]) -> set[ChannelRef]:
    """Which of ``refs`` (device id, channel id) are in ``scope`` (a full scope: all of them)."""
    refs = {ChannelRef(*ref) for ref in refs}
    if scope.all:
        return refs
    out = set()
    for ref in refs:
        if ref.device_id and await registry.channel_access(ref, scope) == "ok":
            out.add(ref)
    return out


async def _channel_within(registry: Any, scope: Any, item: Any) -> bool:
    if isinstance(item, str):
        if "/" in item:
            try:
                item = ChannelRef.parse(item)
            except ValueError:
                return False
        else:
            # a bare channel id: every device having it must be in scope (an ambiguous id is not "inside")
            everywhere = set(await registry.channel_devices(item, None))
            return bool(everywhere) and everywhere == set(await registry.channel_devices(item, scope))
    if isinstance(item, dict):
        item = ChannelRef(str(item.get("device_id") or ""), str(item.get("channel_id") or ""))
    elif not isinstance(item, ChannelRef):
        item = ChannelRef(str(getattr(item, "device_id", "") or ""), str(getattr(item, "channel_id", "") or ""))
    return bool(item.device_id) and await registry.channel_access(item, scope) == "ok"


async def grants_within_scope(registry: Any, scope: Any, *, full_scope: bool = False,
                              org_node_ids: Iterable[int] = (), channels: Iterable[Any] = ()) -> bool:
    """Whether everything named (``full_scope``, organisation nodes, channels as ``ChannelRef``,
    ``{"device_id", "channel_id"}``, ``"device/channel"`` or a bare id) lies inside ``scope``."""
    if scope.all:
        return True
    if full_scope or not set(org_node_ids) <= set(scope.org_node_ids):
        return False
    for item in channels or ():
        if not await _channel_within(registry, scope, item):
            return False
    return True
