"""Helpers shared by the registry tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from device_registry.events import ChannelInfo, DeviceRegistered

T0 = datetime(2024, 5, 1, 8, 0, 0, tzinfo=UTC)

# 20-digit GB ids: centre code 3402000000, type code at digits 11-13, serial.
DEV = "34020000001320000001"  # 132: IPC
NVR = "34020000001180000001"  # 118: NVR
BG = "34020000002150000001"  # 215: business group
VORG = "34020000002160000001"  # 216: virtual organisation
VORG2 = "34020000002160000002"


def t(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def cam(n: int) -> str:
    return f"3402000000131{n:07d}"


def reg(
    device_id: str = DEV, at: float = 0, *, expires: int = 3600, addr: str = "192.168.1.64:5060"
) -> DeviceRegistered:
    return DeviceRegistered(
        device_id=device_id,
        at=t(at),
        remote_addr=addr,
        transport="udp",
        contact=f"<sip:{device_id}@{addr}>",
        expires=expires,
        user_agent="IP Camera",
    )


def item(channel_id: str, status: str | None = "ON", **kw: object) -> ChannelInfo:
    return ChannelInfo(channel_id=channel_id, status=status, **kw)  # type: ignore[arg-type]
