"""Cascade upward: this platform as a lower platform of GB/T 28181 upper platforms.

* :mod:`cascade.models` - the tables (upper platforms, what each one sees).
* :mod:`cascade.validation` - a platform's configuration checked; :mod:`cascade.share` - a share resolved to
  channels and the id mapping both ways; :mod:`cascade.catalog` - the catalog items an upper gets.
* :mod:`cascade.service` - :class:`CascadeService` (CRUD, share, status, and the uppers' requests).
* :mod:`cascade.ports` - what it needs from signalling, media and device control (Protocols).

The namespace stays light: ``CascadeService`` and ``CascadeError`` are importable from here lazily.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CascadeError", "CascadeService"]


def __getattr__(name: str) -> Any:
    if name == "CascadeError":
        from .errors import CascadeError

        return CascadeError
    if name == "CascadeService":
        from .service import CascadeService

        return CascadeService
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
