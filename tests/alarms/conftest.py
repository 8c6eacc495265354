"""Fixtures of the alarm tests: the schema migrated to head (SQLite and PostgreSQL, ``db_engine``), a registry
with two devices (an NVR whose two cameras share their channel ids with another NVR), and the service."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from alarms.service import AlarmService
from device_registry.events import CatalogReported, ChannelInfo, DeviceRegistered
from gbcore.db import make_sessionmaker

T0 = datetime(2026, 3, 1, 6, 0, 0, tzinfo=UTC)
NVR_A = "34020000001180000001"
NVR_B = "34020000001180000002"
CAM1 = "34020000001310000001"
CAM2 = "34020000001310000002"


def t(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


class Clock:
    """A settable UTC clock."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _reg(device_id: str) -> DeviceRegistered:
    return DeviceRegistered(device_id=device_id, at=T0, remote_addr="192.0.2.10:5060", transport="udp",
                            contact=f"<sip:{device_id}@192.0.2.10:5060>", expires=3600)


@pytest.fixture
async def seeded(registry):
    """NVR_A and NVR_B, each with CAM1 and CAM2 (same channel ids on both)."""
    items = (ChannelInfo(CAM1, status="ON"), ChannelInfo(CAM2, status="ON"))
    await registry.apply([_reg(NVR_A), _reg(NVR_B), CatalogReported(NVR_A, T0, items, True, "complete 2/2"),
                          CatalogReported(NVR_B, T0, items, True, "complete 2/2")])
    return registry


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def service(db_engine, seeded, clock):
    svc = AlarmService(make_sessionmaker(db_engine), retention_days=180, clock=clock)
    yield svc
    await svc.stop()
