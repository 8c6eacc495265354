"""The cascade domain's one error type."""

from __future__ import annotations

from typing import Any

__all__ = ["CascadeError"]


class CascadeError(Exception):
    """A refused cascade request: ``code`` is stable, ``message`` is "中文 / English", ``status`` the HTTP
    status the portal answers with, ``detail`` what the caller may show (never a password)."""

    def __init__(self, code: str, message: str, status: int = 422, **detail: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.detail = detail

    def __repr__(self) -> str:
        return f"CascadeError({self.code!r}, status={self.status})"
