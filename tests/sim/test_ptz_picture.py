"""The live picture of a dome moves with pan/tilt/zoom and shows the preset: the pattern itself, and a real
Simulator streaming to a minimal platform that decodes what it gets (H.264 in RTP/PS over UDP)."""

from __future__ import annotations

import time

import av
import numpy as np
import pytest

from gbsim import SimConfig, Simulator
from gbsim.media import ClockEncoder
from gbsim.ptz import PtzState, PtzView, decode_ptzcmd
from gbsim.ptzpicture import FOV_DEG, PtzPattern, read_ptz_code, view_shift
from media_relay.ps import PsDemuxer
from sip_server.gb import ptz as codec
from tests.sim.fakes import PASSWORD
from tests.sim.media_fakes import GbPlatform, PlatformCall, until
from tests.sim.test_ptz_device import control

W, H = 320, 180


def luma(buf: np.ndarray) -> np.ndarray:
    return buf[:H]


def test_pattern_pans_tilts_zooms_and_carries_its_code() -> None:
    current = [PtzView(100.0, 10.0, 1.0, None, False)]
    pattern = PtzPattern(W, H, lambda: current[0])
    bars = pattern.bars_height
    a = luma(pattern.render(0, 1_790_000_000.0)).copy()
    assert read_ptz_code(a) == current[0]
    current[0] = PtzView(107.0, 10.0, 1.0, 42, False)  # 7 degrees to the right: content moves left
    b = luma(pattern.render(1, 1_790_000_000.0)).copy()
    assert read_ptz_code(b) == PtzView(107.0, 10.0, 1.0, 42, False)
    rows = slice(pattern.clock_height + 20, bars)  # below the clock
    expected = round(7 / FOV_DEG * W)
    assert abs(view_shift(a[rows], b[rows]) - expected) <= 2
    current[0] = PtzView(93.0, 10.0, 1.0, 42, False)
    c = luma(pattern.render(2, 1_790_000_000.0)).copy()
    assert abs(view_shift(a[rows], c[rows]) + expected) <= 2
    # zooming in narrows the view: more pixels between the 10-degree grid lines
    def grid_gap(img: np.ndarray) -> float:
        row = img[bars - 4]
        dark = np.flatnonzero(row < 20)
        starts = dark[np.insert(np.diff(dark) > 1, 0, True)]
        return float(np.median(np.diff(starts)))
    current[0] = PtzView(100.0, 10.0, 1.0, None, False)
    g1 = grid_gap(luma(pattern.render(3, 0.0)))
    current[0] = PtzView(100.0, 10.0, 2.0, None, True)
    z = luma(pattern.render(4, 0.0)).copy()
    assert read_ptz_code(z) == PtzView(100.0, 10.0, 2.0, None, True)
    assert grid_gap(z) == pytest.approx(2 * g1, rel=0.1)


def test_preset_number_is_drawn() -> None:
    current = [PtzView(0.0, 0.0, 1.0, None, False)]
    pattern = PtzPattern(W, H, lambda: current[0])
    band = slice(pattern.bars_height + 2, pattern.bars_height + 2 + pattern._text_h)
    none = luma(pattern.render(0, 0.0))[band].copy()
    current[0] = PtzView(0.0, 0.0, 1.0, 8, False)
    eight = luma(pattern.render(0, 0.0))[band].copy()
    current[0] = PtzView(0.0, 0.0, 1.0, 1, False)
    one = luma(pattern.render(0, 0.0))[band].copy()
    lit = [int((x > 200).sum()) for x in (none, eight, one)]
    assert lit[1] > lit[2] > lit[0] > 0  # "008" lights more segments than "001", "---" fewest


class Decoded:
    """Decodes a call's RTP as it comes: (arrival, luma plane) per picture."""

    def __init__(self, call: PlatformCall) -> None:
        self.call = call
        self.demux = PsDemuxer()
        self.dec = av.CodecContext.create("h264", "r")
        self.seen = 0
        self.out: list[tuple[float, np.ndarray]] = []

    def update(self) -> list[tuple[float, np.ndarray]]:
        frames = self.call.media.sink.frames()
        for arrival, _ts, ps in frames[self.seen:]:
            for au in self.demux.feed(ps):
                if au.kind != "video":
                    continue
                for pkt in self.dec.parse(au.data):
                    for frame in self.dec.decode(pkt):
                        self.out.append((arrival, frame.to_ndarray(format="gray")))
        self.seen = len(frames)
        return self.out

    def since(self, t: float) -> list[tuple[float, np.ndarray]]:
        return [p for p in self.update() if p[0] >= t]


@pytest.fixture
async def platform():
    p = GbPlatform()
    await p.start()
    yield p
    await p.close()


async def test_a_live_dome_moves_in_the_decoded_picture(platform: GbPlatform) -> None:
    cfg = SimConfig(server=("127.0.0.1", platform.port), devices=1, channels=2, password=PASSWORD, keepalive=5.0,
                    start_spread=0.1, size=f"{W}x{H}", fps=10, bitrate=400_000)
    sim = Simulator(cfg)
    await sim.start()
    call = None
    try:
        assert await sim.wait_until(lambda s: s.registered == 1, 10)
        dev = sim.devices[0]
        ch = dev.channel_ids[1]
        call = await platform.invite(dev.device_id, ch, "udp")
        assert call.response is not None and call.response.status == 200
        pics = Decoded(call)
        assert await until(lambda: len(pics.update()) >= 3, 5)
        created = ClockEncoder.created  # the shared encoder exists now
        assert read_ptz_code(pics.out[-1][1]) is None  # untouched: the shared clock pattern
        assert sim.ptz_encoder(dev.device_id, ch) is None

        async def ptz(text: str) -> None:
            resp = await platform._request(control(dev.device_id, ch, ("PTZCmd", text)),
                                           platform.device_addr(dev.device_id))
            assert resp.status == 200

        await ptz(codec.preset_command("call", 9))  # unknown preset: the dome stays but shows "009"
        t0 = time.time() + 0.3
        assert await until(lambda: any(read_ptz_code(y) is not None for _a, y in pics.since(t0)), 5)
        first = next(read_ptz_code(y) for _a, y in pics.since(t0) if read_ptz_code(y) is not None)
        assert first.preset == 9 and not first.moving
        before = pics.since(t0)[-1][1]
        assert sim.ptz_encoder(dev.device_id, ch) is not None and ClockEncoder.created == created + 1

        await ptz(codec.ptz_command("right", 0x40))
        await ptz(codec.ptz_command("stop"))
        t1 = time.time() + 0.3
        assert await until(lambda: len(pics.since(t1)) >= 3, 5)
        after = pics.since(t1)[-1][1]
        view = read_ptz_code(after)
        exact = sim.ptz_view(dev.device_id, ch)
        assert view is not None and not view.moving and view.preset == 9
        assert abs(view.pan - round(exact.pan) % 360) <= 1
        moved_deg = (exact.pan - first.pan) % 360
        assert 0 < moved_deg < 30
        rows = slice(H // 6, H * 2 // 3)
        shift = view_shift(before[rows], after[rows], max_shift=W // 2)
        assert abs(shift - moved_deg / FOV_DEG * W) <= 4, (shift, moved_deg)
        assert [e.action for e in sim.ptz_log(dev.device_id, ch)] == ["preset_call", "right", "stop"]
        assert sim.ptz_log(dev.device_id, dev.channel_ids[0]) == []
    finally:
        if call is not None:
            call.media.close()
        await sim.stop(unregister=True)


def test_state_drives_the_encoder_pattern() -> None:
    from gbsim.ptzpicture import PtzEncoder

    state = PtzState(pan=50.0)
    clock = [0.0]
    enc = PtzEncoder(state, "h264", W, H, 10, 300_000, mono=lambda: clock[0])
    pattern = enc._make_pattern()
    state.apply(decode_ptzcmd(codec.ptz_command("zoom_in", 0xFF)), 0.0)
    clock[0] = 1.0
    view = read_ptz_code(luma(pattern.render(0, 0.0)))
    assert view is not None and view.zoom == pytest.approx(state.view(1.0).zoom, abs=0.5) and view.moving
