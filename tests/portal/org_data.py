"""A small organisation tree with devices and channels, written through the registry's own API.

    BG (business group 215)
    ├── VA (virtual organisation 216): CA1 (online), CA2 (offline)        channels of NVR
    └── VB (virtual organisation 216): CB1                                channel of NVR
    (no node): IPC with its own channel CX1
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from device_registry.events import CatalogReported, ChannelInfo, DeviceRegistered
from device_registry.models import OrgNode

NVR = "34020000001180000001"
IPC = "34020000001320000009"
BG = "34020000002150000001"
VA = "34020000002160000001"
VB = "34020000002160000002"
CA1 = "34020000001310000001"
CA2 = "34020000001310000002"
CB1 = "34020000001310000003"
CX1 = "34020000001310000009"
T0 = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)


@dataclass
class Tree:
    bg: int
    va: int
    vb: int


def _registered(device_id: str, t: datetime, addr: str) -> DeviceRegistered:
    return DeviceRegistered(device_id, t, addr, "udp", f"sip:{device_id}@{addr}", 3600, "sim/1.0")


async def build_tree(registry) -> Tree:
    t = T0
    await registry.apply(
        [
            _registered(NVR, t, "192.0.2.10:5060"),
            CatalogReported(
                NVR,
                t + timedelta(seconds=1),
                (
                    ChannelInfo(BG, name="业务分组"),
                    ChannelInfo(VA, name="东区", business_group_id=BG, parent_id=BG),
                    ChannelInfo(VB, name="西区", business_group_id=BG, parent_id=BG),
                    ChannelInfo(CA1, name="东门", status="ON", parent_id=VA, longitude=108.94, latitude=34.34),
                    ChannelInfo(CA2, name="东区停车场", status="OFF", parent_id=VA),
                    ChannelInfo(CB1, name="西门", status="ON", parent_id=VB, longitude=108.90, latitude=34.30),
                ),
                True,
                "complete 6/6",
            ),
            _registered(IPC, t + timedelta(seconds=2), "192.0.2.11:5060"),
            CatalogReported(IPC, t + timedelta(seconds=3), (ChannelInfo(CX1, name="独立相机", status="ON"),), True,
                            "complete 1/1"),
        ]
    )
    async with registry.sessionmaker() as session:
        ids = dict((await session.execute(select(OrgNode.code, OrgNode.id))).all())
    return Tree(bg=ids[BG], va=ids[VA], vb=ids[VB])
