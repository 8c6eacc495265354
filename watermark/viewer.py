"""Who a watermark names: the viewer's identity, and the lookup the assembly injects.

``watermark`` does not read the portal's users: the portal offers a function of this type
(``viewer_identity`` of the portal's users module) and the assembly (``gbops``) hands it in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

__all__ = ["FindViewer", "ViewerIdentity"]


@dataclass(frozen=True, slots=True)
class ViewerIdentity:
    """A platform user as a watermark shows them."""

    user_id: int
    username: str
    display_name: str | None
    phone: str | None

    @property
    def shown_name(self) -> str:
        """The name drawn in the watermark: the display name, else the account name."""
        return self.display_name or self.username


class FindViewer(Protocol):
    """Looks a platform user up by account name (None: no such user)."""

    async def __call__(
        self, sessionmaker: async_sessionmaker[AsyncSession], username: str
    ) -> ViewerIdentity | None: ...
