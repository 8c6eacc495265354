"""device_registry.apply.set_channel_location: the write the alarm service uses for position reports."""

from __future__ import annotations

import pytest

from device_registry.apply import set_channel_location
from device_registry.events import CatalogReported, ChannelInfo
from gbcore.db import begin_write
from gbcore.ids import ChannelRef

from .conftest import CAM1, CAM2, NVR_A, NVR_B, t


async def test_moves_one_channel_or_the_whole_device(seeded) -> None:
    async with seeded.sessionmaker() as session:
        await begin_write(session)
        assert await set_channel_location(session, NVR_A, CAM1, 116.3, 39.9) == [CAM1]
        assert await set_channel_location(session, NVR_A, CAM1, 116.3, 39.9) == []  # unchanged: no write
        assert await set_channel_location(session, NVR_B, None, 121.5, 31.2) == [CAM1, CAM2]
        assert await set_channel_location(session, NVR_A, "34020000001310000099", 1.0, 1.0) == []
        await session.commit()
    locations = {(d, c): ((ch := await seeded.get_channel(ChannelRef(d, c))).longitude, ch.latitude)
                 for d in (NVR_A, NVR_B) for c in (CAM1, CAM2)}
    assert locations == {(NVR_A, CAM1): (116.3, 39.9), (NVR_A, CAM2): (None, None),
                         (NVR_B, CAM1): (121.5, 31.2), (NVR_B, CAM2): (121.5, 31.2)}


async def test_removed_channels_stay_and_bad_positions_are_refused(seeded) -> None:
    # a complete catalog without CAM2 removes it
    await seeded.apply([CatalogReported(NVR_A, t(1), (ChannelInfo(CAM1, status="ON"),), True, "complete 1/1")])
    async with seeded.sessionmaker() as session:
        await begin_write(session)
        assert await set_channel_location(session, NVR_A, None, 116.3, 39.9) == [CAM1]
        for lon, lat in ((180.5, 0.0), (0.0, -91.0), (float("nan"), 1.0), (1.0, float("inf"))):
            with pytest.raises(ValueError):
                await set_channel_location(session, NVR_A, CAM1, lon, lat)
        await session.commit()
    gone = await seeded.get_channel(ChannelRef(NVR_A, CAM2), include_removed=True)
    assert gone.removed and (gone.longitude, gone.latitude) == (None, None)
