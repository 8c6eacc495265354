"""The device registry service: :class:`Registry` (database access) and :class:`RegistryWriter`.

The registry is split by concern; this module assembles :class:`Registry` and re-exports what callers
import from here, so ``from device_registry.service import ...`` keeps working:

* :mod:`device_registry.apply` - event application (one batch per transaction; the rules are in its
  docstring) and the other writes: device passwords, platform runs.
* :mod:`device_registry.writer` - :class:`RegistryWriter`, the batching background writer.
* :mod:`device_registry.queries` - reads: devices, channels, presence, scope checks, search, counts; and
  the session-level reads other packages need (:func:`~device_registry.queries.channel_rows`, ...).
* :mod:`device_registry.presence` - presence history and platform runs, for availability and tickets.
* :mod:`device_registry.org` - the organisation tree: descendants and the cycle check (written once),
  the tree as a user sees it, create / update / delete / assign.
* :mod:`device_registry.scope` - a data scope as SQL over the registry's tables (conditions and
  selectables that other packages compose with their own tables).

Other packages do not import :mod:`device_registry.models`: they call these functions.
"""

from __future__ import annotations

from .apply import BatchApplier, RegistryWrites, org_kind_of
from .org import OrgError, OrgTree, RegistryOrg, org_descendants, would_cycle
from .queries import DeviceSnapshot, RegistryQueries
from .scope import (
    channel_ids_in_scope,
    channel_keys_in_scope,
    channel_pairs_in_scope,
    channel_scope_clause,
    device_scope_clause,
    devices_in_scope,
    pairs_in,
    shared_channel_ids,
)
from .writer import RegistryWriter

__all__ = [
    "BatchApplier",
    "DeviceSnapshot",
    "OrgError",
    "OrgTree",
    "Registry",
    "RegistryWriter",
    "channel_ids_in_scope",
    "channel_keys_in_scope",
    "channel_pairs_in_scope",
    "channel_scope_clause",
    "device_scope_clause",
    "devices_in_scope",
    "org_descendants",
    "org_kind_of",
    "pairs_in",
    "shared_channel_ids",
    "would_cycle",
]


class Registry(RegistryWrites, RegistryQueries, RegistryOrg):
    """Database access for the device registry: writes (:mod:`~device_registry.apply`, see its docstring for
    the rules), reads (:mod:`~device_registry.queries`) and the organisation tree (:mod:`~device_registry.org`)."""
