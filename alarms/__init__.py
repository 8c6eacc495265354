"""Alarms and positions reported by devices: stored, searchable, acknowledged, fanned out live.

* :mod:`alarms.types` - :class:`AlarmIn`, :class:`PositionIn` (what the assembly maps a device's report
  into), :class:`AlarmRecord`, :class:`PositionRecord` (plain dataclasses, no SQLAlchemy).
* :mod:`alarms.service` - :class:`AlarmService` (record, search, acknowledge, live feed, positions,
  retention) and :func:`scope_filter` (a portal scope as the service's filter).
* :mod:`alarms.models` - the tables ``alarms`` and ``positions`` (migration 0011).

The namespace stays light: importing ``alarms.types`` does not import SQLAlchemy; the names below are
importable from here lazily.
"""

from __future__ import annotations

from typing import Any

__all__ = ["AlarmIn", "AlarmRecord", "AlarmService", "PositionIn", "PositionRecord", "ScopeFilter", "scope_filter"]

_TYPES = frozenset({"AlarmIn", "AlarmRecord", "PositionIn", "PositionRecord"})


def __getattr__(name: str) -> Any:
    if name in _TYPES:
        from . import types

        return getattr(types, name)
    if name in __all__:
        from . import service

        return getattr(service, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
