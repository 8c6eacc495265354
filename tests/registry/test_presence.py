"""Registry.apply: device and channel presence semantics."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, func, select

from device_registry.events import (
    CatalogReported,
    ChannelStatusChanged,
    DeviceInfoReported,
    DeviceSeen,
    DeviceUnregistered,
    DeviceWentOffline,
    KeepaliveIntervalSet,
)
from device_registry.models import Channel, Device, PresenceEvent

from ._support import DEV, NVR, cam, item, reg, t


def _rows(events):
    """(subject, channel_id, online, reason) oldest first, from list_presence output."""
    return [(e.subject, e.channel_id, e.online, e.reason) for e in reversed(events)]


async def test_register_brings_device_online_once(registry) -> None:
    await registry.apply([reg(at=0)])
    dev = await registry.get_device(DEV)
    assert dev is not None
    assert dev.online is True
    assert dev.registered_at == t(0)
    assert dev.register_expires_at == t(3600)
    assert dev.last_seen == t(0)
    assert dev.transport == "udp"
    assert dev.remote_addr == "192.168.1.64:5060"
    assert dev.user_agent == "IP Camera"
    assert dev.keepalive_interval == 60
    assert dev.created_at.tzinfo is not None
    presence = await registry.list_presence(DEV)
    assert _rows(presence) == [("device", None, True, "registered")]
    assert presence[0].at == t(0)

    # refresh while online: no new presence row, expiry moves, registered_at stays
    await registry.apply([reg(at=1800, addr="192.168.1.64:5061")])
    dev = await registry.get_device(DEV)
    assert dev.register_expires_at == t(1800 + 3600)
    assert dev.registered_at == t(0)
    assert dev.remote_addr == "192.168.1.64:5061"
    assert len(await registry.list_presence(DEV)) == 1


async def test_same_events_twice_record_nothing_new(registry) -> None:
    batch = [
        reg(at=0),
        CatalogReported(DEV, t(1), (item(cam(1)), item(cam(2), "OFF")), True, "complete 2/2"),
        DeviceWentOffline(DEV, t(100), "keepalive_timeout"),
    ]
    await registry.apply(batch)
    first = await registry.list_presence(DEV)
    await registry.apply(batch[2:])
    assert len(await registry.list_presence(DEV)) == len(first)


async def test_keepalive_updates_last_seen_only(registry) -> None:
    await registry.apply([reg(at=0)])
    before = await registry.get_device(DEV)
    await registry.apply(
        [DeviceSeen(DEV, t(60)), DeviceSeen(DEV, t(120), "10.0.0.9:5060"), DeviceSeen(DEV, t(90))]
    )
    dev = await registry.get_device(DEV)
    assert dev.last_seen == t(120)  # newest wins, even when an older one comes last
    assert dev.remote_addr == "10.0.0.9:5060"
    assert dev.online is True
    assert dev.updated_at == before.updated_at  # last_seen alone is not an update
    assert len(await registry.list_presence(DEV)) == 1
    # an older keepalive never moves last_seen back
    await registry.apply([DeviceSeen(DEV, t(30))])
    assert (await registry.get_device(DEV)).last_seen == t(120)


async def test_keepalive_does_not_bring_device_back(registry) -> None:
    await registry.apply([reg(at=0), DeviceWentOffline(DEV, t(200), "keepalive_timeout")])
    await registry.apply([DeviceSeen(DEV, t(300))])
    dev = await registry.get_device(DEV)
    assert dev.online is False and dev.last_seen == t(300)


async def test_keepalive_of_unknown_device_is_ignored(registry) -> None:
    await registry.apply(
        [DeviceSeen("34020000001329999999", t(1)), DeviceUnregistered("34020000001329999998", t(2))]
    )
    assert await registry.get_device("34020000001329999999") is None
    assert await registry.list_devices() == (0, [])


async def test_offline_by_timeout_and_unregister(registry) -> None:
    await registry.apply([reg(at=0)])
    await registry.apply([DeviceWentOffline(DEV, t(190), "keepalive_timeout")])
    dev = await registry.get_device(DEV)
    assert dev.online is False and dev.offline_reason == "keepalive_timeout"
    # already offline: nothing more
    await registry.apply([DeviceWentOffline(DEV, t(200), "registration_expired")])
    assert (await registry.get_device(DEV)).offline_reason == "keepalive_timeout"

    await registry.apply([reg(at=300)])
    dev = await registry.get_device(DEV)
    assert dev.online is True and dev.offline_reason is None and dev.registered_at == t(300)
    await registry.apply([DeviceUnregistered(DEV, t(400))])
    dev = await registry.get_device(DEV)
    assert dev.online is False and dev.offline_reason == "unregistered"
    assert dev.register_expires_at is None
    assert _rows(await registry.list_presence(DEV)) == [
        ("device", None, True, "registered"),
        ("device", None, False, "keepalive_timeout"),
        ("device", None, True, "registered"),
        ("device", None, False, "unregistered"),
    ]


async def test_channels_follow_the_device(registry) -> None:
    catalog = CatalogReported(
        NVR,
        t(2),
        (item(cam(1), "ON"), item(cam(2), "OFF"), item(cam(3), "OK")),
        complete=True,
        state="complete 3/3",
    )
    await registry.apply([reg(NVR, 0), catalog])
    chans = {c.channel_id: c for c in await registry.list_channels(NVR)}
    assert {k: c.online for k, c in chans.items()} == {cam(1): True, cam(2): False, cam(3): True}
    assert chans[cam(1)].first_seen == t(2)

    await registry.apply([DeviceWentOffline(NVR, t(100), "keepalive_timeout")])
    assert not any(c.online for c in await registry.list_channels(NVR))
    await registry.apply([reg(NVR, 200)])
    assert {c.channel_id: c.online for c in await registry.list_channels(NVR)} == {
        cam(1): True,
        cam(2): False,
        cam(3): True,
    }
    rows = _rows(await registry.list_presence(NVR))
    assert rows == [
        ("device", None, True, "registered"),
        ("channel", cam(1), True, "catalog_status"),
        ("channel", cam(3), True, "catalog_status"),
        ("device", None, False, "keepalive_timeout"),
        ("channel", cam(1), False, "device_offline"),
        ("channel", cam(3), False, "device_offline"),
        ("device", None, True, "registered"),
        ("channel", cam(1), True, "device_online"),
        ("channel", cam(3), True, "device_online"),
    ]


async def test_catalog_before_registration_in_same_batch_order(registry) -> None:
    # A device that goes offline and comes back within one batch: rows for both transitions.
    await registry.apply([reg(NVR, 0), CatalogReported(NVR, t(1), (item(cam(1)),), True, "complete 1/1")])
    await registry.apply([DeviceUnregistered(NVR, t(10)), reg(NVR, 11)])
    rows = _rows(await registry.list_presence(NVR))[2:]
    assert rows == [
        ("device", None, False, "unregistered"),
        ("channel", cam(1), False, "device_offline"),
        ("device", None, True, "registered"),
        ("channel", cam(1), True, "device_online"),
    ]


async def test_channel_status_changes(registry) -> None:
    await registry.apply(
        [reg(NVR, 0), CatalogReported(NVR, t(1), (item(cam(1)), item(cam(2))), True, "complete 2/2")]
    )
    await registry.apply(
        [
            ChannelStatusChanged(NVR, cam(1), t(10), "OFF"),
            ChannelStatusChanged(NVR, cam(2), t(11), "VLOST"),
            ChannelStatusChanged(NVR, cam(2), t(12), "ON"),
            ChannelStatusChanged(NVR, cam(1), t(13), "OFF"),  # no transition
        ]
    )
    chans = {c.channel_id: c for c in await registry.list_channels(NVR)}
    assert (chans[cam(1)].status, chans[cam(1)].online) == ("OFF", False)
    assert (chans[cam(2)].status, chans[cam(2)].online) == ("ON", True)
    assert _rows(await registry.list_presence(NVR))[3:] == [
        ("channel", cam(1), False, "catalog_status"),
        ("channel", cam(2), False, "catalog_status"),
        ("channel", cam(2), True, "catalog_status"),
    ]

    # DEL removes; an unknown channel reported ON is created; ADD brings a removed one back
    await registry.apply(
        [
            ChannelStatusChanged(NVR, cam(2), t(20), "DEL"),
            ChannelStatusChanged(NVR, cam(5), t(21), "ON"),
        ]
    )
    assert [c.channel_id for c in await registry.list_channels(NVR)] == [cam(1), cam(5)]
    removed = {c.channel_id: c for c in await registry.list_channels(NVR, include_removed=True)}[cam(2)]
    assert removed.removed is True and removed.removed_at == t(20) and removed.online is False
    await registry.apply([ChannelStatusChanged(NVR, cam(2), t(30), "ADD")])
    back = {c.channel_id: c for c in await registry.list_channels(NVR)}[cam(2)]
    assert back.removed is False and back.removed_at is None and back.online is True
    assert _rows(await registry.list_presence(NVR, limit=3)) == [
        ("channel", cam(2), False, "catalog_removed"),
        ("channel", cam(5), True, "catalog_status"),
        ("channel", cam(2), True, "catalog_status"),
    ]


async def test_catalog_status_change_is_recorded(registry) -> None:
    await registry.apply(
        [reg(NVR, 0), CatalogReported(NVR, t(1), (item(cam(1)), item(cam(2))), True, "complete 2/2")]
    )
    await registry.apply(
        [CatalogReported(NVR, t(60), (item(cam(1), "OFF"), item(cam(2))), True, "complete 2/2")]
    )
    latest = await registry.list_presence(NVR, limit=1)
    assert _rows(latest) == [("channel", cam(1), False, "catalog_status")]
    assert latest[0].at == t(60)


async def test_complete_catalog_marks_missing_channels_removed(registry) -> None:
    await registry.apply(
        [
            reg(NVR, 0),
            CatalogReported(NVR, t(1), tuple(item(cam(i)) for i in range(1, 5)), True, "complete 4/4"),
        ]
    )
    # partial catalog: nothing is removed
    await registry.apply([CatalogReported(NVR, t(50), (item(cam(1)),), False, "partial 1/4 (timeout)")])
    assert len(await registry.list_channels(NVR)) == 4
    dev = await registry.get_device(NVR)
    assert dev.catalog_state == "partial 1/4 (timeout)" and dev.catalog_synced_at == t(50)

    await registry.apply([CatalogReported(NVR, t(100), (item(cam(1)), item(cam(2))), True, "complete 2/2")])
    assert [c.channel_id for c in await registry.list_channels(NVR)] == [cam(1), cam(2)]
    all_chans = {c.channel_id: c for c in await registry.list_channels(NVR, include_removed=True)}
    assert (
        all_chans[cam(3)].removed and all_chans[cam(3)].removed_at == t(100) and not all_chans[cam(3)].online
    )
    assert _rows(await registry.list_presence(NVR, limit=2)) == [
        ("channel", cam(3), False, "catalog_removed"),
        ("channel", cam(4), False, "catalog_removed"),
    ]
    # reported again: un-removed, online again
    await registry.apply(
        [CatalogReported(NVR, t(200), (item(cam(1)), item(cam(2)), item(cam(3))), True, "complete 3/3")]
    )
    chans = {c.channel_id: c for c in await registry.list_channels(NVR)}
    assert set(chans) == {cam(1), cam(2), cam(3)}
    assert chans[cam(3)].online and chans[cam(3)].removed_at is None
    assert chans[cam(3)].first_seen == t(1)


async def test_chinese_names_round_trip(registry) -> None:
    await registry.apply(
        [
            reg(NVR, 0),
            DeviceInfoReported(NVR, t(1), "大华1.107", "Dahua", "DH-NVR4208", "V4.0", "NVR", 2),
            CatalogReported(
                NVR,
                t(2),
                (
                    item(cam(1), name="1.64 海康摄像机", address="杭州市滨江区"),
                    item(NVR, name="大华1.107"),  # a device that reports itself as its channel
                ),
                True,
                "complete 2/2",
            ),
        ]
    )
    dev = await registry.get_device(NVR)
    assert (dev.name, dev.manufacturer, dev.channel_count) == ("大华1.107", "Dahua", 2)
    chans = {c.channel_id: c for c in await registry.list_channels(NVR)}
    assert chans[cam(1)].name == "1.64 海康摄像机"
    assert chans[cam(1)].address == "杭州市滨江区"
    assert chans[NVR].name == "大华1.107"
    total, found = await registry.list_devices(q="大华")
    assert total == 1 and found[0].device_id == NVR


async def test_same_channel_id_under_two_devices(registry) -> None:
    other = "34020000001320000002"
    await registry.apply(
        [
            reg(DEV, 0),
            reg(other, 0),
            CatalogReported(DEV, t(1), (item(cam(1), name="a"),), True, "complete 1/1"),
            CatalogReported(other, t(1), (item(cam(1), name="b"),), True, "complete 1/1"),
        ]
    )
    assert [c.name for c in await registry.list_channels(DEV)] == ["a"]
    assert [c.name for c in await registry.list_channels(other)] == ["b"]


async def test_catalog_merges_fields_and_coerces_numbers(registry) -> None:
    await registry.apply(
        [
            reg(NVR, 0),
            CatalogReported(
                NVR,
                t(1),
                (item(cam(1), name="gate", parental="0", port="8000", longitude="120.19", ptz_type="junk"),),
                True,
                "complete 1/1",
            ),
        ]
    )
    await registry.apply(
        [CatalogReported(NVR, t(2), (item(cam(1), status=None, address="x"),), False, "notify")]
    )
    ch = (await registry.list_channels(NVR))[0]
    assert (ch.name, ch.address, ch.status, ch.online) == ("gate", "x", "ON", True)
    assert (ch.parental, ch.port, ch.longitude, ch.ptz_type) == (0, 8000, 120.19, None)


async def test_device_info_and_keepalive_interval(registry) -> None:
    await registry.apply(
        [
            reg(DEV, 0),
            DeviceInfoReported(DEV, t(1), "cam", "Hikvision", "DS-2CD", "V5.5", "IPC", 1, charset="GB2312"),
            KeepaliveIntervalSet(DEV, 30),
        ]
    )
    await registry.apply([DeviceInfoReported(DEV, t(2), None, None, None, "V5.6", None, None)])
    dev = await registry.get_device(DEV)
    assert (dev.name, dev.manufacturer, dev.firmware, dev.charset, dev.keepalive_interval) == (
        "cam",
        "Hikvision",
        "V5.6",
        "GB2312",
        30,
    )


async def test_presence_paging_and_history_outlives_device(registry) -> None:
    events = []
    for i in range(5):
        events += [reg(DEV, i * 100), DeviceWentOffline(DEV, t(i * 100 + 50), "keepalive_timeout")]
    await registry.apply(events)
    page1 = await registry.list_presence(DEV, limit=4)
    assert [e.at for e in page1] == [t(450), t(400), t(350), t(300)]
    page2 = await registry.list_presence(DEV, limit=4, before=page1[-1].at)
    assert [e.at for e in page2] == [t(250), t(200), t(150), t(100)]

    async with registry.sessionmaker() as session:
        await session.execute(delete(Device).where(Device.device_id == DEV))
        await session.commit()
        assert await session.scalar(select(func.count()).select_from(Channel)) == 0
        assert await session.scalar(select(func.count()).select_from(PresenceEvent)) == 10


async def test_delete_device_cascades_to_channels(registry) -> None:
    await registry.apply([reg(NVR, 0), CatalogReported(NVR, t(1), (item(cam(1)),), True, "complete 1/1")])
    async with registry.sessionmaker() as session:
        await session.execute(delete(Device).where(Device.device_id == NVR))
        await session.commit()
        assert await session.scalar(select(func.count()).select_from(Channel)) == 0


async def test_presence_times_are_millisecond_utc(registry) -> None:
    at = t(0) + timedelta(microseconds=123_456)
    from device_registry.events import DeviceRegistered

    await registry.apply([DeviceRegistered(DEV, at, "1.2.3.4:5060", "TCP", "<sip:x@1.2.3.4>", 60)])
    (row,) = await registry.list_presence(DEV)
    assert row.at == t(0) + timedelta(microseconds=123_000)
    assert (await registry.get_device(DEV)).transport == "tcp"


async def test_concurrent_applies_record_one_transition(registry) -> None:
    import asyncio

    # new device, five writers at once: one row, one device
    await asyncio.gather(*(registry.apply([reg(DEV, 0)]) for _ in range(5)))
    assert len(await registry.list_presence(DEV)) == 1
    # known device going offline, five writers at once
    await asyncio.gather(
        *(registry.apply([DeviceWentOffline(DEV, t(100), "keepalive_timeout")]) for _ in range(5))
    )
    assert _rows(await registry.list_presence(DEV)) == [
        ("device", None, True, "registered"),
        ("device", None, False, "keepalive_timeout"),
    ]
