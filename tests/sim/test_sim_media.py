"""Simulated cameras answer INVITE and stream real video: RTP/PS over UDP, TCP passive and TCP active,
H.264 and H.265 from one shared encoder, with the capture time in an SEI message.

The platform side is tests/sim/media_fakes.py (a registrar plus a UAC on a real SipEndpoint); the
streams are checked by ``ffprobe`` and by the PS demuxer of media_relay.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from gbsim import SimConfig, Simulator
from gbsim.media import ClockEncoder, read_latency_sei, shared_encoder
from media_relay.ps import PsDemuxer
from tests.sim.fakes import PASSWORD
from tests.sim.media_fakes import GbPlatform, PlatformCall, sdp_lines, until

FFPROBE = shutil.which("ffprobe") or "/usr/bin/ffprobe"
MODES = ("udp", "tcp-passive", "tcp-active")


@pytest.fixture
async def platform():
    p = GbPlatform()
    await p.start()
    yield p
    await p.close()


def sim_cfg(platform: GbPlatform, **kw) -> SimConfig:
    base = dict(server=("127.0.0.1", platform.port), devices=3, channels=1, password=PASSWORD, keepalive=5.0,
                expires=3600, start_spread=0.1, first_id="34020000001320000001")
    base.update(kw)
    return SimConfig(**base)


def ffprobe(path: Path) -> dict:
    out = subprocess.run(
        [FFPROBE, "-v", "error", "-f", "mpeg", "-count_frames", "-select_streams", "v:0",
         "-show_entries", "stream=codec_name,width,height,nb_read_frames", "-of", "json", str(path)],
        capture_output=True, text=True, timeout=60, check=True,
    )
    return json.loads(out.stdout)["streams"][0]


def sei_delays(call: PlatformCall, codec: str) -> list[float]:
    """Receive time minus capture time (from the SEI) of every frame, seconds."""
    demux = PsDemuxer()
    delays = []
    for arrival, _ts, ps in call.media.sink.frames():
        aus = demux.feed(ps) + demux.flush()
        for au in aus:
            ms = read_latency_sei(au.data, codec)
            assert ms is not None, "an access unit without the latency SEI"
            delays.append(arrival - ms / 1000)
    return delays


@pytest.mark.parametrize("codec", ["h264", "h265"])
async def test_invite_streams_ps_over_udp_tcp_passive_tcp_active(platform: GbPlatform, codec: str,
                                                                 tmp_path: Path) -> None:
    sim = Simulator(sim_cfg(platform, codec=codec))
    await sim.start()
    calls: list[PlatformCall] = []
    try:
        assert await sim.wait_until(lambda s: s.registered == 3, 10)
        devices = sim.devices
        calls = await asyncio.gather(*(
            platform.invite(d.device_id, d.channel_ids[0], mode) for d, mode in zip(devices, MODES, strict=True)))
        for call, mode in zip(calls, MODES, strict=True):
            assert call.response is not None and call.response.status == 200, mode
            lines = sdp_lines(call.answer_sdp)
            assert "s=Play" in lines and "a=sendonly" in lines and "a=rtpmap:96 PS/90000" in lines
            assert f"y={call.ssrc}" in lines
            if mode == "udp":
                assert any(x.startswith("m=video ") and x.endswith(" RTP/AVP 96") for x in lines)
            else:
                assert any(x.endswith(" TCP/RTP/AVP 96") for x in lines)
                assert ("a=setup:active" if mode == "tcp-passive" else "a=setup:passive") in lines
        assert sim.streaming == 3
        await asyncio.sleep(3.0)
        before_bye = [c.media.sink.count for c in calls]
        statuses = await asyncio.gather(*(platform.bye(c) for c in calls))
        assert statuses == [200, 200, 200]
        assert sim.calls == 0
        await asyncio.sleep(0.15)  # what was on the wire before the 200 to BYE has arrived now
        stopped = [c.media.sink.count for c in calls]
        await asyncio.sleep(0.4)
        # (3) BYE stops the stream: nothing more arrives.
        assert [c.media.sink.count for c in calls] == stopped
        assert all(n > 0 for n in before_bye)
    finally:
        await sim.stop(unregister=True)
        for c in calls:
            c.media.close()

    for call, mode in zip(calls, MODES, strict=True):
        sink = call.media.sink
        # (1) the right SSRC, marker-delimited frames, 90 kHz timestamps
        assert {pkt.ssrc for _, pkt in sink.packets} == {int(call.ssrc)}, mode
        assert {pkt.payload_type for _, pkt in sink.packets} == {96}
        seqs = [pkt.sequence for _, pkt in sink.packets]
        assert all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:], strict=False)), f"{mode}: sequence gaps"
        frames = sink.frames()
        steps = {(b[1] - a[1]) & 0xFFFFFFFF for a, b in zip(frames, frames[1:], strict=False)}
        assert steps and all(s % 3600 == 0 and s > 0 for s in steps), (mode, steps)
        path = tmp_path / f"{codec}-{mode}.ps"
        path.write_bytes(sink.ps())
        info = ffprobe(path)
        assert info["codec_name"] == ("h264" if codec == "h264" else "hevc"), mode
        assert (info["width"], info["height"]) == (640, 360), mode
        assert 60 <= int(info["nb_read_frames"]) <= 90, (mode, info)
        # (2) every frame carries its capture time; on loopback it arrives well within a second
        delays = sei_delays(call, codec)
        assert len(delays) >= 60
        assert all(-0.05 < d < 1.0 for d in delays), (mode, min(delays), max(delays))


async def test_twenty_calls_share_one_encoder(platform: GbPlatform) -> None:
    created = ClockEncoder.created
    sim = Simulator(sim_cfg(platform, devices=20, size="320x180", devices_per_socket=8))
    await sim.start()
    calls = []
    try:
        assert await sim.wait_until(lambda s: s.registered == 20, 10)
        calls = await asyncio.gather(*(
            platform.invite(d.device_id, d.channel_ids[0], "udp") for d in sim.devices))
        assert [c.response.status for c in calls if c.response] == [200] * 20
        encoder = sim.encoder
        assert encoder is shared_encoder("h264", 320, 180, 25, 1_000_000)
        assert ClockEncoder.created - created <= 1  # one instance for all twenty (maybe made earlier)
        assert encoder.subscribers == 20 and encoder.running
        await asyncio.sleep(1.0)
        for c in calls:
            assert c.media.sink.count > 0
            assert {pkt.ssrc for _, pkt in c.media.sink.packets} == {int(c.ssrc)}
        assert len({c.ssrc for c in calls}) == 20
        assert await asyncio.gather(*(platform.bye(c) for c in calls)) == [200] * 20
        assert encoder.subscribers == 0
        assert await asyncio.to_thread(encoder.join, 2.0)  # the last stream gone, encoding stops
    finally:
        await sim.stop(unregister=True)
        for c in calls:
            c.media.close()


async def test_stopping_the_simulator_sends_bye(platform: GbPlatform) -> None:
    sim = Simulator(sim_cfg(platform, devices=1, size="320x180"))
    await sim.start()
    try:
        assert await sim.wait_until(lambda s: s.registered == 1, 10)
        d = sim.devices[0]
        call = await platform.invite(d.device_id, d.channel_ids[0], "tcp-passive")
        assert call.response is not None and call.response.status == 200
        assert await until(lambda: call.media.sink.count > 0)
    finally:
        await sim.stop(unregister=True)
    assert [b.call_id for b in platform.byes_from_devices] == [call.invite.call_id]
    await asyncio.sleep(0.2)
    assert call.media.sink.closed  # the TCP media connection went with it
    call.media.close()


async def test_media_connection_closed_by_the_platform_ends_the_call_with_bye(platform: GbPlatform) -> None:
    sim = Simulator(sim_cfg(platform, devices=1, size="320x180"))
    await sim.start()
    try:
        assert await sim.wait_until(lambda s: s.registered == 1, 10)
        d = sim.devices[0]
        call = await platform.invite(d.device_id, d.channel_ids[0], "tcp-active")
        assert call.response is not None and call.response.status == 200
        assert await sim.wait_until(lambda s: s.streaming == 1, 3)
        assert await until(lambda: call.media.sink.count > 0)
        for t in call.media.conns:
            t.close()
        assert await sim.wait_until(lambda s: s.calls == 0, 3)
        assert await until(lambda: platform.byes_from_devices)
        assert [b.call_id for b in platform.byes_from_devices] == [call.invite.call_id]
    finally:
        await sim.stop(unregister=True)


@pytest.mark.parametrize("mode", ["tcp-passive", "tcp-active"])
async def test_no_media_connection_ends_the_call_with_bye(platform: GbPlatform, mode: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from gbsim import media

    monkeypatch.setattr(media, "ACCEPT_TIMEOUT", 0.5)  # tcp-active: the platform never connects
    sim = Simulator(sim_cfg(platform, devices=1, size="320x180"))
    await sim.start()
    try:
        assert await sim.wait_until(lambda s: s.registered == 1, 10)
        d = sim.devices[0]
        # tcp-passive: the offered port has nobody listening, the device's connect is refused
        call = await platform.invite(d.device_id, d.channel_ids[0], mode, refuse_media=True)
        assert call.response is not None and call.response.status == 200
        assert await until(lambda: platform.byes_from_devices, 3)
        assert [b.call_id for b in platform.byes_from_devices] == [call.invite.call_id]
        assert sim.calls == 0 and sim.stats()["calls_failed"] == 1
    finally:
        await sim.stop(unregister=True)
