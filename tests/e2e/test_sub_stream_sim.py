"""Main and sub-stream end to end (issue 18): a real ``gbops run`` and the simulator, whose cameras send 640x360 on
their main stream and 352x288 on the sub-stream when an INVITE names stream 1 (``a=streamnumber:1`` here).

A device whose stream identification form is set in device management is watched on either stream, each an
upstream of its own (``/api/streams`` lists both); the decoded pictures have the stream's size. A device with no
form set is refused the sub-stream by name (409 ``no_sub_stream``) and watched on its main stream by default.
With two watermark encoders, a third main-stream viewer is refused 503 ``watermark_capacity`` with the action
``use_sub_stream`` only where the device has a sub-stream, and that sub-stream then fits (a quarter of an encoder).
The audit log names the stream watched."""

from __future__ import annotations

import asyncio

import av
import httpx
import pytest

from gbsim import SimConfig, Simulator
from tests.e2e.platform import STRONG_SIP_PASSWORD, PlatformProcess, free_port, read_flv

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture
async def platform(tmp_path):
    low = free_port()
    p = PlatformProcess(tmp_path / "data", GBOPS_RTP_PORTS=f"{low}-{low + 40}", GBOPS_MEDIA_HOST="127.0.0.1",
                        GBOPS_LIVE_IDLE_TIMEOUT="1", GBOPS_WATERMARK_MAX_ENCODERS="2").start()
    yield p
    p.stop()


def _decoded_size(platform: PlatformProcess, url: str, path) -> tuple[int, int, int]:
    with open(path, "wb") as f:
        assert read_flv(platform, url, 2.5, f) > 5_000
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        frames = sum(1 for _ in c.decode(stream))
        return stream.codec_context.width, stream.codec_context.height, frames


def _live(platform: PlatformProcess, device: str, channel: str, body: dict | None = None) -> httpx.Response:
    return platform.post(f"/api/devices/{device}/channels/{channel}/live", body or {})


async def test_main_and_sub_stream_with_the_simulator(platform, tmp_path) -> None:
    sim = Simulator(SimConfig(server=("127.0.0.1", platform.sip_port), devices=2, channels=1,
                              password=STRONG_SIP_PASSWORD, size="640x360", sub_size="352x288",
                              first_id="34020000001320000031", register_rate=50))
    await sim.start()
    try:
        assert await sim.wait_until(lambda s: s.registered == 2, 20), sim.progress_line()
        (dev_a, dev_b), (ch_a, ch_b) = sim.device_ids, [sim.cfg.channel_ids(i)[0] for i in range(2)]
        for device, ch in ((dev_a, ch_a), (dev_b, ch_b)):
            await asyncio.to_thread(platform.wait_for, lambda d=device, ch=ch: any(
                c["channel_id"] == ch for c in platform.get(f"/api/devices/{d}/channels").json()["items"]),
                20, f"the catalog of {device}")
        r = await asyncio.to_thread(httpx.patch, f"{platform.base}/api/devices/{dev_a}",
                                    json={"stream_form": "streamnumber"},
                                    headers={"Authorization": f"Bearer {platform.login()}"}, timeout=30)
        assert r.status_code == 200, r.text

        # device A: the main stream, then the sub-stream, each decoded at its own size
        main = await asyncio.to_thread(_live, platform, dev_a, ch_a)
        assert main.status_code == 201, main.text
        assert main.json()["stream"] == "main" and main.json()["sub_stream"] is True
        assert (main.json()["width"], main.json()["height"]) == (640, 360)
        sub = await asyncio.to_thread(_live, platform, dev_a, ch_a, {"stream": "sub"})
        assert sub.status_code == 201, sub.text
        assert sub.json()["stream"] == "sub" and (sub.json()["width"], sub.json()["height"]) == (352, 288)
        streams = (await asyncio.to_thread(platform.get, "/api/streams")).json()["items"]
        assert sorted(s["stream"] for s in streams if s["channel_id"] == ch_a) == ["main", "sub"]
        assert await asyncio.to_thread(_decoded_size, platform, main.json()["flv_url"], tmp_path / "a-main.flv") \
            >= (640, 360, 30)
        w, h, frames = await asyncio.to_thread(_decoded_size, platform, sub.json()["flv_url"], tmp_path / "a-sub.flv")
        assert (w, h) == (352, 288) and frames >= 30

        # device B has no stream identification form: no sub-stream by name, its main stream by default
        refused = await asyncio.to_thread(_live, platform, dev_b, ch_b, {"stream": "sub"})
        assert refused.status_code == 409 and refused.json()["error"] == "no_sub_stream", refused.text
        assert "设备管理" in refused.json()["message"]
        held_b = await asyncio.to_thread(_live, platform, dev_b, ch_b)  # not attached: holds its encoder
        assert held_b.status_code == 201 and held_b.json()["stream"] == "main" and not held_b.json()["sub_stream"]

        # two encoders: B's main (1) and A's sub (0.25) are held; a main-stream viewer does not fit
        held_a = await asyncio.to_thread(_live, platform, dev_a, ch_a, {"stream": "sub"})
        assert held_a.status_code == 201, held_a.text
        full_a = await asyncio.to_thread(_live, platform, dev_a, ch_a, {"stream": "main"})
        assert full_a.status_code == 503 and full_a.json()["error"] == "watermark_capacity", full_a.text
        assert full_a.json()["actions"] == [{"action": "use_sub_stream", "stream": "sub"}]
        assert "子码流" in full_a.json()["message"] and full_a.headers["retry-after"]
        full_b = await asyncio.to_thread(_live, platform, dev_b, ch_b)
        assert full_b.status_code == 503 and full_b.json()["actions"] == [], full_b.text
        assert "子码流" not in full_b.json()["message"]  # nothing to advise where there is no sub-stream
        # the action taken: the sub-stream fits (1.5 of 2 encoders)
        taken = await asyncio.to_thread(_live, platform, dev_a, ch_a, {"stream": full_a.json()["actions"][0]["stream"]})
        assert taken.status_code == 201 and taken.json()["stream"] == "sub", taken.text

        entries = (await asyncio.to_thread(platform.get, "/api/audit/entries", action="live.start",
                                         limit=50)).json()["items"]
        streams_started = sorted((e["detail"]["device_id"], e["detail"]["stream"]) for e in entries)
        assert streams_started == sorted([(dev_a, "main"), (dev_a, "sub"), (dev_b, "main"), (dev_a, "sub"),
                                          (dev_a, "sub")]), streams_started
    finally:
        await sim.stop()
