"""Fixtures of the cascade tests: the schema migrated to head (SQLite and PostgreSQL, ``db_engine``), a registry
with a small organisation tree (regions, a business group, two virtual organisations, an operator's node) and
two NVRs whose cameras share channel ids, fake signalling and media, and the service."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from cascade.service import CascadeService
from device_registry.events import CatalogReported, ChannelInfo, DeviceRegistered
from gbcore.db import make_sessionmaker
from gbcore.ids import ChannelRef
from media_relay.stream import MediaError
from sip_server.gb.upper import UpperOffer

T0 = datetime(2026, 3, 1, 6, 0, 0, tzinfo=UTC)
NVR_A = "34020000001180000001"
NVR_B = "34020000001180000002"
CAM1 = "34020000001310000001"
CAM2 = "34020000001310000002"
CAM3 = "34020000001310000003"
CAM4 = "34020000001310000004"
CAM5 = "34020000001310000005"
REGION = "3402"
CITY = "340200"
GROUP = "34020000002150000001"
VO1 = "34020000002160000001"
VO2 = "34020000002160000002"
SYSTEM_ID = "34020000002000000001"
LOCAL_ID = "34020000002000000009"
SERVER_ID = "11000000002000000001"
PASSWORD = "Upper#Pass2026"


def _reg(device_id: str) -> DeviceRegistered:
    return DeviceRegistered(device_id=device_id, at=T0, remote_addr="192.0.2.10:5060", transport="udp",
                            contact=f"<sip:{device_id}@192.0.2.10:5060>", expires=3600)


@dataclass
class Tree:
    ids: dict[str, int]  # code (or "manual") -> org node id


@pytest.fixture
async def tree(registry) -> Tree:
    """NVR_A reports the regions, the group and the virtual organisations; an operator adds a node under VO2.

    region 3402 > region 340200 (CAM4 of NVR_B)
    group 215 > VO1 (CAM1 of NVR_A) > VO2 (CAM2 of NVR_A, offline) > manual (CAM3 of NVR_B)
    group 215 holds CAM1 of NVR_B directly; CAM5 of NVR_B is in no node.
    """
    a_items = (
        ChannelInfo(REGION, name="厦门市"), ChannelInfo(CITY, name="市辖区"),
        ChannelInfo(GROUP, name="公安业务分组", parent_id=SYSTEM_ID),
        ChannelInfo(VO1, name="一号虚拟组织", parent_id=GROUP, business_group_id=GROUP),
        ChannelInfo(VO2, name="二号虚拟组织", parent_id=VO1, business_group_id=GROUP),
        ChannelInfo(CAM1, name="大门 堃", manufacturer="Hikvision", model="DS-2CD", civil_code="350200",
                    address="一号门", parent_id=VO1, status="ON", longitude=118.1, latitude=24.5),
        ChannelInfo(CAM2, name="后门", parent_id=VO2, status="OFF"),
    )
    b_items = (
        ChannelInfo(CAM1, name="B 大门", parent_id=GROUP, status="ON"),
        ChannelInfo(CAM3, name="仓库", status="ON"),
        ChannelInfo(CAM4, name="路口", parent_id=CITY, status="ON"),
        ChannelInfo(CAM5, name="未分配", status="ON"),
    )
    await registry.apply([_reg(NVR_A), _reg(NVR_B), CatalogReported(NVR_A, T0, a_items, True, "complete"),
                          CatalogReported(NVR_B, T0, b_items, True, "complete")])
    tree = await registry.org_tree()
    ids = {n["code"]: n["id"] for n in tree.nodes if n["code"]}
    async with registry.sessionmaker() as session:
        node = await registry.create_org_node(session, "运维手建节点", ids[VO2])
        await registry.assign_to_org_node(session, node.id, channel_refs=[ChannelRef(NVR_B, CAM3)])
        await session.commit()
        ids["manual"] = node.id
    return Tree(ids)


@dataclass
class FakeSip:
    """Records what the cascade asked signalling to do."""

    platforms: list[list[Any]] = field(default_factory=list)
    sent: list[tuple] = field(default_factory=list)
    status: dict[int, dict] = field(default_factory=dict)

    def set_upper_platforms(self, configs) -> None:
        self.platforms.append(list(configs))

    def upper_status(self, platform_id):
        return self.status.get(platform_id)

    def answer_catalog(self, platform_id, sn, entries) -> None:
        self.sent.append(("catalog", platform_id, sn, list(entries)))

    def notify_catalog(self, platform_id, entries) -> None:
        self.sent.append(("notify", platform_id, list(entries)))

    def answer_device_info(self, platform_id, sn, device_id, fields) -> None:
        self.sent.append(("device_info", platform_id, sn, device_id, fields))

    def answer_device_status(self, platform_id, sn, device_id, fields) -> None:
        self.sent.append(("device_status", platform_id, sn, device_id, fields))

    def answer_record_info(self, platform_id, sn, device_id, name, items) -> None:
        self.sent.append(("record_info", platform_id, sn, device_id, name, items))

    def answer_control(self, platform_id, sn, device_id, ok) -> None:
        self.sent.append(("control", platform_id, sn, device_id, ok))

    def answer_upper_invite(self, call_id, status, answer=None, reason=None) -> None:
        self.sent.append(("invite", call_id, status, answer, reason))

    def bye_upper(self, call_id, reason) -> None:
        self.sent.append(("bye", call_id, reason))

    def upper_position(self, platform_id, device_id, position) -> bool:
        self.sent.append(("position", platform_id, device_id, position))
        return True

    def upper_alarm(self, platform_id, device_id, alarm) -> bool:
        self.sent.append(("alarm", platform_id, device_id, alarm))
        return True

    def upper_media_status(self, call_id, notify_type="121") -> bool:
        self.sent.append(("media_status", call_id, notify_type))
        return True

    def of(self, kind: str) -> list[tuple]:
        return [s for s in self.sent if s[0] == kind]


class FakeLeg:
    _ids = itertools.count(1)

    def __init__(self, channel, target, kind, window, visible, on_end) -> None:
        self.id = f"leg{next(self._ids)}"
        self.channel = channel
        self.target = target
        self.kind = kind
        self.window = window
        self.visible = visible
        self.on_end = on_end
        self.local_ip = "198.51.100.7"
        self.local_port = 30000 + int(self.id[3:])
        self.ssrc = target.ssrc
        self.started = False
        self.closed: str | None = None
        self.file_ended = False

    def start(self) -> None:
        self.started = True

    async def close(self, reason: str) -> None:
        self.closed = reason

    def stats(self) -> dict:
        return {"packets": 10, "bytes": 12_000, "started_at": None, "codec": "h264",
                "state": "ended" if self.closed else ("sending" if self.started else "waiting")}


@dataclass
class FakeMedia:
    legs: list[FakeLeg] = field(default_factory=list)
    viewers: list[Any] = field(default_factory=list)
    fail: MediaError | None = None
    infos: list[tuple] = field(default_factory=list)
    no_sub: set[str] = field(default_factory=set)  # devices without a sub-stream (issue 18)

    def upward_info(self, leg_id, body, content_type=None) -> bool:
        self.infos.append((leg_id, body))
        leg = next((x for x in self.legs if x.id == leg_id), None)
        return leg is not None and leg.kind != "live"

    async def open_upward(self, channel, viewer, target, *, kind="live", window=None, source="device",
                          visible_watermark=False, on_end=None, stream="main"):
        if self.fail is not None:
            raise self.fail
        if stream == "sub" and channel.device_id in self.no_sub:
            raise MediaError("no_sub_stream", "该设备未设置子码流标识方式 / no sub-stream identification set")
        self.viewers.append(viewer)
        leg = FakeLeg(channel, target, kind, window, visible_watermark, on_end)
        leg.stream = stream
        self.legs.append(leg)
        return leg


@dataclass
class FakeControl:
    calls: list[tuple] = field(default_factory=list)
    ok: bool = True

    async def upper_control(self, operator, channel, message) -> bool:
        self.calls.append((operator, channel, message))
        return self.ok


@dataclass
class Audit:
    entries: list[tuple] = field(default_factory=list)

    async def __call__(self, action, target, detail, actor) -> None:
        self.entries.append((action, target, detail, actor))

    def of(self, action: str) -> list[tuple]:
        return [e for e in self.entries if e[0] == action]


ACTOR = {"user_id": 1, "username": "admin", "client_ip": "192.0.2.1"}


def platform_data(**over: Any) -> dict[str, Any]:
    data = {"name": "省厅平台", "server_id": SERVER_ID, "server_domain": "1100000000", "host": "203.0.113.5",
            "port": 5060, "transport": "udp", "local_id": LOCAL_ID, "password": PASSWORD}
    data.update(over)
    return data


def offer(session: str = "Play", *, transport: str = "udp", setup: str | None = None, ssrc: str | None = "0100000001",
          start: int | None = None, end: int | None = None) -> UpperOffer:
    return UpperOffer(session=session, ip="203.0.113.5", port=40000, transport=transport, setup=setup, ssrc=ssrc,
                      start=start, end=end, download_speed=None, uri=None, payloads=(96,))


@dataclass
class Env:
    service: CascadeService
    sip: FakeSip
    media: FakeMedia
    audit: Audit
    control: FakeControl
    settings: SimpleNamespace
    key_path: Any


@pytest.fixture
async def env(db_engine, tmp_path) -> Env:
    sip, media, audit, control = FakeSip(), FakeMedia(), Audit(), FakeControl()
    settings = SimpleNamespace(cascade_echo_ssrc=False)
    key_path = tmp_path / "keys" / "cascade.key"
    service = CascadeService(make_sessionmaker(db_engine), sip, media, audit=audit, settings=settings,
                             system_id=SYSTEM_ID, system_name="测试平台", key_path=key_path, control=control)
    await service.start()
    yield Env(service, sip, media, audit, control, settings, key_path)
    await service.close()
