"""Device registry: what the platform knows about devices, channels and their presence.

* :mod:`device_registry.events` - write-side events (plain dataclasses, no SQLAlchemy): what
  the SIP layer submits.
* :mod:`device_registry.service` - :class:`Registry` (database access) and
  :class:`RegistryWriter` (batching background writer), assembled from :mod:`~device_registry.apply`
  (event application, writes), :mod:`~device_registry.writer`, :mod:`~device_registry.queries` (reads),
  :mod:`~device_registry.presence` (presence history), :mod:`~device_registry.org` (organisation tree:
  descendants and the cycle check written once) and :mod:`~device_registry.scope` (a scope as SQL).
* :mod:`device_registry.models` - the tables (no other package imports them: they call the functions
  above, an import-linter contract keeps ``ops_portal`` to that).

The package namespace stays light on purpose: importing ``device_registry.events`` does not
import SQLAlchemy.  ``Registry``, ``RegistryWriter`` and ``DeviceSnapshot`` are importable
from here lazily.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DeviceSnapshot", "Registry", "RegistryWriter"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import service

        return getattr(service, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
