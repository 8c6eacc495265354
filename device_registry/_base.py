"""What the registry modules share: the tables, chunking of IN lists, the session holder."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from gbcore.db import SQLITE_BEGIN_IMMEDIATE

from .models import Channel, Device, OrgNode, PlatformRun, PresenceEvent

DEVICES = Device.__table__
CHANNELS = Channel.__table__
ORG_NODES = OrgNode.__table__
PRESENCE = PresenceEvent.__table__
RUNS = PlatformRun.__table__

# Chunk size for IN (...) lists.
IN_CHUNK = 500


def chunks(items: Sequence[Any], size: int = IN_CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class RegistryBase:
    """Holds the sessionmaker; the registry's parts (writes, queries, org tree) build on it."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker

    @property
    def sessionmaker(self) -> async_sessionmaker[AsyncSession]:
        return self._sessionmaker

    async def _write_connection(self, session: AsyncSession) -> AsyncConnection:
        return await session.connection(execution_options={SQLITE_BEGIN_IMMEDIATE: True})
