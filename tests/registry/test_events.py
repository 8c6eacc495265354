"""device_registry.events: validation and normalisation at construction."""

from __future__ import annotations

import math
from datetime import datetime

import pytest

from device_registry.events import (
    CatalogReported,
    ChannelInfo,
    ChannelStatusChanged,
    DeviceInfoReported,
    DeviceRegistered,
    DeviceSeen,
    DeviceWentOffline,
    KeepaliveIntervalSet,
    is_online_status,
)

from ._support import DEV, reg, t


def test_events_are_frozen() -> None:
    ev = reg()
    with pytest.raises(AttributeError):
        ev.device_id = "x"  # type: ignore[misc]


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        DeviceSeen(DEV, datetime(2024, 1, 1))


@pytest.mark.parametrize("bad", ["", " ", "x" * 33, "a\x00b"])
def test_bad_ids_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        DeviceSeen(bad, t(0))
    with pytest.raises(ValueError):
        ChannelInfo(bad)


def test_registered_validation() -> None:
    assert reg().transport == "udp"
    with pytest.raises(ValueError, match="transport"):
        DeviceRegistered(DEV, t(0), "1.2.3.4:5060", "sctp", "<sip:x>", 60)
    with pytest.raises(ValueError, match="expires"):
        DeviceRegistered(DEV, t(0), "1.2.3.4:5060", "udp", "<sip:x>", 0)
    with pytest.raises(ValueError, match="reason"):
        DeviceWentOffline(DEV, t(0), "bored")
    with pytest.raises(ValueError):
        KeepaliveIntervalSet(DEV, 0)


def test_channel_info_coercion() -> None:
    info = ChannelInfo(
        " 34020000001310000001 ",
        name="门口\x00",
        parental="1",
        port=" 5060 ",
        safety_way="",
        secrecy=2.0,
        longitude="120.5",
        latitude="nan",
        ptz_type=99999999999,
    )
    assert info.channel_id == "34020000001310000001"
    assert info.name == "门口"
    assert (info.parental, info.port, info.safety_way, info.secrecy) == (1, 5060, None, 2)
    assert info.longitude == 120.5 and info.latitude is None and info.ptz_type is None
    assert not math.isnan(info.longitude)


def test_other_events_normalise() -> None:
    assert ChannelStatusChanged(DEV, "c1", t(0), " vlost ").status == "VLOST"
    info = DeviceInfoReported(DEV, t(0), "n", None, None, None, None, "8")
    assert info.channel_count == 8
    cat = CatalogReported(DEV, t(0), [ChannelInfo("c1")], 1, "complete 1/1")  # type: ignore[arg-type]
    assert cat.channels == (ChannelInfo("c1"),) and cat.complete is True
    with pytest.raises(TypeError):
        CatalogReported(DEV, t(0), ("c1",), True, "x")  # type: ignore[arg-type]


def test_online_statuses() -> None:
    assert all(is_online_status(s) for s in ("ON", "on", "OK", "ONLINE", " On "))
    assert not any(is_online_status(s) for s in (None, "OFF", "VLOST", "DEFECT", ""))
