"""Scope conditions: a user's data scope turned into SQL over the registry's own tables.

Other packages compose these (the registry owns the SQL, the caller adds its own tables): conditions on
``channels``/``devices`` rows, and selectables of the channels/devices in a scope.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import and_, bindparam, false, func, literal, or_, select, tuple_

from gbcore.ids import ChannelRef

from ._base import CHANNELS
from .models import Channel, Device

__all__ = [
    "channel_ids_in_scope",
    "channel_keys_in_scope",
    "channel_pairs_in_scope",
    "channel_scope_clause",
    "device_scope_clause",
    "devices_in_scope",
    "pairs_in",
    "shared_channel_ids",
]

# A scope is any object with ``all: bool``, ``org_node_ids`` (descendants included) and ``channel_refs``
# (:class:`gbcore.ids.ChannelRef` pairs, see ops_portal.access.Scope); the registry only turns it into SQL.
# A channel's node is its own ``org_node_id``, or its device's when it has none.  Explicit channels are
# matched as (device_id, channel_id) pairs: a row-value IN over the unique (device_id, channel_id) index.

_LITERAL_IN_ABOVE = 2000  # larger IN lists are rendered inline (ints / digit ids): no bind-parameter limit



def in_list(column: Any, values: Iterable[Any]) -> Any:
    items = sorted(values)
    if len(items) > _LITERAL_IN_ABOVE:
        return column.in_(bindparam(f"in_{column.key}", items, expanding=True, literal_execute=True, unique=True))
    return column.in_(items)


def pairs_in(device_col: Any, channel_col: Any, refs: Iterable[ChannelRef]) -> Any:
    """``(device_col, channel_col) IN (...)`` for these refs (refs with an empty device id never match)."""
    items = sorted(tuple(r) for r in refs if r[0])
    if not items:
        return false()
    pair = tuple_(device_col, channel_col)
    if len(items) > _LITERAL_IN_ABOVE // 2:
        exact = pair.in_(bindparam("in_channel_refs", items, expanding=True, literal_execute=True, unique=True))
    else:
        exact = pair.in_(items)
    # The channel ids first: SQLite does not search an index for a row-value IN list (it scans), but does
    # for ``channel_id IN (...)``; the pair test then keeps exactly the granted devices' channels.
    return and_(in_list(channel_col, {c for _, c in items}), exact)


def channel_scope_clause(scope: Any) -> Any:
    """SQL condition: the channel (joined with its device) is in ``scope`` (not for ``scope.all``)."""
    conds = []
    if scope.channel_refs:
        conds.append(pairs_in(Channel.device_id, Channel.channel_id, scope.channel_refs))
    if scope.org_node_ids:
        conds.append(in_list(Channel.org_node_id, scope.org_node_ids))
        conds.append(and_(Channel.org_node_id.is_(None), in_list(Device.org_node_id, scope.org_node_ids)))
    return or_(*conds) if conds else false()


def device_scope_clause(scope: Any) -> Any:
    """SQL condition: the device is visible in ``scope`` (own node granted, or a channel in scope).

    The channels are found by a UNION of one indexed lookup per kind of grant (channel pairs, nodes): a
    single ``OR`` over both makes SQLite and PostgreSQL scan every channel (bench/portal.py)."""
    conds = []
    if scope.org_node_ids:
        conds.append(in_list(Device.org_node_id, scope.org_node_ids))
    ch = CHANNELS.alias("scope_channels")
    chan = []
    if scope.channel_refs:
        chan.append(select(ch.c.device_id).where(ch.c.removed.is_(False),
                                                 pairs_in(ch.c.device_id, ch.c.channel_id, scope.channel_refs)))
    if scope.org_node_ids:
        chan.append(select(ch.c.device_id).where(ch.c.removed.is_(False), in_list(ch.c.org_node_id, scope.org_node_ids)))
    if chan:
        conds.append(Device.device_id.in_(chan[0].union(*chan[1:]) if len(chan) > 1 else chan[0]))
    return or_(*conds) if conds else false()


# Selectables for other packages (they compose them with their own tables).
def channel_pairs_in_scope(scope: Any) -> Any:
    """SELECT (device_id, channel_id) of the channels (removed ones included) in ``scope`` (not ``scope.all``)."""
    return (select(Channel.device_id, Channel.channel_id)
            .join(Device, Device.device_id == Channel.device_id).where(channel_scope_clause(scope)))


def channel_keys_in_scope(scope: Any) -> Any:
    """SELECT ``device_id/channel_id`` keys (:attr:`gbcore.ids.ChannelRef.key`) of the channels in ``scope``."""
    return channel_pairs_in_scope(scope).with_only_columns(Channel.device_id + literal("/") + Channel.channel_id)


def channel_ids_in_scope(scope: Any) -> Any:
    """SELECT the bare channel ids of the channels in ``scope``."""
    return channel_pairs_in_scope(scope).with_only_columns(Channel.channel_id)


def shared_channel_ids() -> Any:
    """SELECT the channel ids that more than one channel row has (ambiguous without their device)."""
    return select(Channel.channel_id).group_by(Channel.channel_id).having(func.count() > 1)


def devices_in_scope(scope: Any) -> Any:
    """SELECT the ids of the devices visible in ``scope`` (own node granted, or a channel in scope)."""
    return select(Device.device_id).where(device_scope_clause(scope))
