"""Issue 11: simulated NVRs with identical channel ids, and pictures that name their device."""

from __future__ import annotations

import numpy as np

from gbsim import SimConfig
from gbsim.media import TestPattern, label_colour


def test_same_channel_ids_gives_every_device_the_first_devices_ids() -> None:
    cfg = SimConfig(server=("127.0.0.1", 5060), devices=3, channels=2, same_channel_ids=True)
    assert cfg.channel_ids(0) == cfg.channel_ids(1) == cfg.channel_ids(2) == [
        "34020000001310000001", "34020000001310000002"]
    assert len(set(cfg.device_ids())) == 3
    assert cfg.devices_per_socket == 1  # a request for a bare channel id must reach exactly one device
    plain = SimConfig(server=("127.0.0.1", 5060), devices=2, channels=2)
    assert plain.channel_ids(0) != plain.channel_ids(1)


def test_a_labelled_picture_carries_its_devices_colour_and_digits() -> None:
    a, b = "34020000001180000001", "34020000001180000002"
    assert label_colour(a) != label_colour(b)
    pa, pb, plain = TestPattern(320, 180, a), TestPattern(320, 180, b), TestPattern(320, 180)
    rows, cols = pa.label_patch()
    for pattern, label in ((pa, a), (pb, b)):
        frame = pattern.render(7, 1_790_000_000.0)
        w, h = 320, 180
        y = frame[:h]
        uv = frame[h:].reshape(-1)
        u = uv[: w * h // 4].reshape(h // 2, w // 2)
        v = uv[w * h // 4:].reshape(h // 2, w // 2)
        cy, cu, cv = label_colour(label)
        assert np.all(y[rows, cols] == cy)
        assert np.all(u[rows.start // 2:rows.stop // 2, cols.start // 2:cols.stop // 2] == cu)
        assert np.all(v[rows.start // 2:rows.stop // 2, cols.start // 2:cols.stop // 2] == cv)
        assert (y[rows, :] == 235).any()  # the digits
    # the moving box never enters the band of a labelled picture
    for index in range(0, 400, 7):
        y = pa.render(index, 0.0)[:180]
        assert np.all(y[rows, cols] == label_colour(a)[0])
    # unlabelled: the grey ramp as before
    assert not np.array_equal(plain.render(0, 0.0), pa.render(0, 0.0))
