"""History calls against a running Simulator over real sockets: a minimal platform (tests/sim/media_fakes.py)
INVITEs s=Playback / s=Download, decodes the RTP/PS it gets with PyAV and reads the time code of every
picture (gbsim/playback.py): the window start, seek, scale, pause, MediaStatus 121 at the end, BYE."""

from __future__ import annotations

import asyncio
import time

import av
import pytest

from gbsim import SimConfig, Simulator
from gbsim.playback import read_time_code
from media_relay.ps import PsDemuxer
from sip_server.gb import manscdp
from sip_server.sip import parse_name_addr
from tests.sim.fakes import PASSWORD
from tests.sim.media_fakes import GbPlatform, MediaReceiver, PlatformCall, make_invite, sdp_lines, until


@pytest.fixture
async def platform():
    p = GbPlatform()
    await p.start()
    yield p
    await p.close()


def sim_cfg(platform: GbPlatform, **kw) -> SimConfig:
    base = dict(server=("127.0.0.1", platform.port), devices=1, channels=1, password=PASSWORD, keepalive=5.0,
                start_spread=0.1, first_id="34020000001320000001", size="320x180", fps=10, bitrate=300_000)
    base.update(kw)
    return SimConfig(**base)


async def history_call(platform: GbPlatform, device_id: str, channel_id: str, session: str, start: int,
                       end: int, *extra: str) -> PlatformCall:
    media = MediaReceiver("udp")
    port = await media.open()
    ssrc = "1200000042"
    dev = platform.device_addr(device_id)
    invite = make_invite(channel_id, dev, ("127.0.0.1", platform.port), media_port=port, ssrc=ssrc,
                         session=session, extra_sdp=extra)
    invite.body = invite.body.replace(b"t=0 0", f"t={start} {end}".encode())
    call = PlatformCall(channel_id, ssrc, invite, media)
    call.response = resp = await platform._request(invite, dev)
    assert resp.status == 200, resp.status
    call.answer_sdp = resp.body.decode()
    call.remote_target = str(parse_name_addr(resp.headers.get("Contact") or "").uri)
    platform._send_ack(call)
    return call


async def control(platform: GbPlatform, call: PlatformCall, text: str) -> tuple[int, str]:
    call.cseq += 1
    req = platform._in_dialog(call, "INFO", call.cseq)
    req.headers.add("Content-Type", "Application/MANSRTSP")
    req.body = text.replace("\n", "\r\n").encode()
    resp = await platform._request(req, platform.device_addr_for(call))
    return resp.status, resp.body.decode()


class Pictures:
    """Decodes a call's RTP as it comes: (arrival, RTP timestamp, time code) per picture."""

    def __init__(self, call: PlatformCall) -> None:
        self.call = call
        self.demux = PsDemuxer()
        self.dec = av.CodecContext.create("h264", "r")
        self.seen = 0
        self.out: list[tuple[float, int, int | None]] = []

    def update(self) -> list[tuple[float, int, int | None]]:
        frames = self.call.media.sink.frames()
        for arrival, ts, ps in frames[self.seen:]:
            for au in self.demux.feed(ps):
                if au.kind != "video":
                    continue
                for pkt in self.dec.parse(au.data):
                    for frame in self.dec.decode(pkt):
                        self.out.append((arrival, ts, read_time_code(frame)))
        self.seen = len(frames)
        return self.out

    def since(self, t: float) -> list[tuple[float, int, int | None]]:
        return [p for p in self.update() if p[0] >= t]


def media_status(platform: GbPlatform, channel_id: str) -> list[manscdp.ManscdpMessage]:
    return [m for user, m in platform.stub.responses if m.cmd_type == "MediaStatus" and m.device_id == channel_id]


async def test_playback_window_seek_scale_pause_and_end(platform: GbPlatform) -> None:
    sim = Simulator(sim_cfg(platform))
    await sim.start()
    calls: list[PlatformCall] = []
    try:
        assert await sim.wait_until(lambda s: s.registered == 1, 10)
        dev = sim.devices[0]
        channel = dev.channel_ids[0]
        start = int(time.time()) - 7200
        end = start + 60
        t_invite = time.time()
        call = await history_call(platform, dev.device_id, channel, "Playback", start, end)
        calls.append(call)
        assert "s=Playback" in sdp_lines(call.answer_sdp) and f"t={start} {end}" in sdp_lines(call.answer_sdp)
        pics = Pictures(call)
        assert await until(lambda: len(pics.update()) >= 5, 5)
        first_arrival, _ts, first_code = pics.out[0]
        assert first_code is not None and abs(first_code - start) <= 1
        assert first_arrival - t_invite < 2.0
        assert all(code is not None for _a, _t, code in pics.out)

        # Seek to 30 s: the pictures show start + 30.
        status, body = await control(platform, call, "PLAY RTSP/1.0\nCSeq: 1\nRange: npt=30-\n")
        assert status == 200 and body.startswith("RTSP/1.0 200 OK") and "CSeq: 1" in body
        t_seek = time.time() + 0.15
        assert await until(lambda: len(pics.since(t_seek)) >= 4, 3)
        after = [code for _a, _t, code in pics.since(t_seek)]
        assert all(code is not None and start + 30 <= code <= start + 32 for code in after), after

        # Scale 4: four seconds of content per wall second (RTP timestamps are natural 90 kHz).
        status, _ = await control(platform, call, "PLAY RTSP/1.0\nCSeq: 2\nScale: 4.000000\n")
        assert status == 200
        t_fast = time.time() + 0.2
        await asyncio.sleep(1.8)
        fast = pics.since(t_fast)
        assert len(fast) >= 40
        (a0, ts0, c0), (a1, ts1, c1) = fast[0], fast[-1]
        rate = ((ts1 - ts0) % (1 << 32)) / 90000 / (a1 - a0)
        assert 3.2 <= rate <= 4.8, rate
        assert c0 is not None and c1 is not None and 3.0 <= (c1 - c0) / (a1 - a0) <= 5.5

        # Pause: nothing more arrives; resume goes on from where it stopped (not from the wall clock).
        status, _ = await control(platform, call, "PAUSE RTSP/1.0\nCSeq: 3\nPauseTime: now\n")
        assert status == 200
        await asyncio.sleep(0.3)
        count = call.media.sink.count
        last_code = pics.update()[-1][2]
        await asyncio.sleep(1.0)
        assert call.media.sink.count == count
        status, _ = await control(platform, call, "PLAY RTSP/1.0\nCSeq: 4\nRange: npt=now-\n")
        assert status == 200
        t_resume = time.time()
        assert await until(lambda: len(pics.since(t_resume)) >= 3, 3)
        resumed = pics.since(t_resume)[0][2]
        assert last_code is not None and resumed is not None and last_code <= resumed <= last_code + 1

        # A bad scale is refused and changes nothing.
        status, body = await control(platform, call, "PLAY RTSP/1.0\nCSeq: 5\nScale: 100\n")
        assert status == 400 and body.startswith("RTSP/1.0 400")

        # The end of the window: MediaStatus 121 in the dialog, then our BYE ends the call.
        status, _ = await control(platform, call, "PLAY RTSP/1.0\nCSeq: 6\nRange: npt=56-\nScale: 4\n")
        assert status == 200
        assert await until(lambda: media_status(platform, channel), 5)
        note = media_status(platform, channel)[0]
        assert note.get("NotifyType") == "121"
        codes = [c for _a, _t, c in pics.update() if c is not None]
        assert max(codes) <= end and max(codes) >= end - 2
        enc = sim.history_for(dev.device_id, call.invite.call_id)
        assert enc is not None and enc.finished
        assert await platform.bye(call) == 200
        assert await until(lambda: sim.calls == 0, 3)
        assert enc.join(2.0)
        assert dev.stats.media_status_sent == 1 and dev.stats.controls_received == 6
    finally:
        await sim.stop()
        for c in calls:
            c.media.close()


async def test_download_streams_at_downloadspeed_with_filesize(platform: GbPlatform) -> None:
    sim = Simulator(sim_cfg(platform, bitrate=200_000))
    await sim.start()
    calls: list[PlatformCall] = []
    try:
        assert await sim.wait_until(lambda s: s.registered == 1, 10)
        dev = sim.devices[0]
        channel = dev.channel_ids[0]
        start = int(time.time()) - 3600
        call = await history_call(platform, dev.device_id, channel, "Download", start, start + 12,
                                  "a=downloadspeed:4")
        calls.append(call)
        lines = sdp_lines(call.answer_sdp)
        assert "s=Download" in lines and f"a=filesize:{12 * 200_000 // 8}" in lines
        t0 = time.time()
        assert await until(lambda: media_status(platform, channel), 8)
        took = time.time() - t0
        assert 2.0 <= took <= 4.5, took  # 12 s of content at 4x
        pics = Pictures(call)
        codes = [c for _a, _t, c in pics.update()]
        assert codes and all(c is not None for c in codes)
        assert abs(codes[0] - start) <= 1 and start + 10 <= codes[-1] <= start + 12
        assert len(codes) >= 100  # every picture at 10 fps, just sent faster
        assert await platform.bye(call) == 200
    finally:
        await sim.stop()
        for c in calls:
            c.media.close()


async def test_no_bye_after_media_status_the_device_hangs_up(platform: GbPlatform) -> None:
    sim = Simulator(sim_cfg(platform, history_bye_timeout=0.5))
    await sim.start()
    calls: list[PlatformCall] = []
    try:
        assert await sim.wait_until(lambda s: s.registered == 1, 10)
        dev = sim.devices[0]
        start = int(time.time()) - 600
        call = await history_call(platform, dev.device_id, dev.channel_ids[0], "Download", start, start + 2,
                                  "a=downloadspeed:8")
        calls.append(call)
        assert await until(lambda: platform.byes_from_devices, 5)
        assert platform.byes_from_devices[0].call_id == call.invite.call_id
        assert media_status(platform, dev.channel_ids[0])
        assert await until(lambda: sim.calls == 0, 2)
    finally:
        await sim.stop()
        for c in calls:
            c.media.close()


async def test_window_without_recordings_ends_at_once(platform: GbPlatform) -> None:
    """Nothing recorded in the window (before the store began): the call is answered, nothing is sent and
    MediaStatus 121 follows right away."""
    sim = Simulator(sim_cfg(platform, record_hours=2))
    await sim.start()
    calls: list[PlatformCall] = []
    try:
        assert await sim.wait_until(lambda s: s.registered == 1, 10)
        dev = sim.devices[0]
        start = int(time.time()) - 30 * 86_400
        call = await history_call(platform, dev.device_id, dev.channel_ids[0], "Playback", start, start + 600)
        calls.append(call)
        assert await until(lambda: media_status(platform, dev.channel_ids[0]), 3)
        assert call.media.sink.count == 0
        assert await platform.bye(call) == 200
    finally:
        await sim.stop()
        for c in calls:
            c.media.close()
