"""Playback and download sent to an upper platform: a history Stream of the leg's own (the device's
``s=Playback`` call or the platform's storage), natural timestamps (the upper paces and scales itself), the
upper's MANSRTSP forwarded to the device call, the end of the file ending the leg once."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from media_relay.playback import mansrtsp
from media_relay.rtp import RtpPacket
from media_relay.service import MediaService
from media_relay.signalling import HistoryRequest
from media_relay.types import AccessUnit
from media_relay.upward import UpwardTarget
from tests.media.test_playback_support import (
    CHANNEL,
    PTS_BASE,
    T0,
    TICK,
    FakeRecordings,
    HistoryDevice,
    vector_frames,
    window,
)
from tests.media.test_upward import PLATFORM, SSRC, TcpReceiver, UdpReceiver, check_rtp, probe, until

_ports = iter(range(36000, 36500, 20))


@pytest.fixture(scope="module")
def frames(shared_dir) -> list[AccessUnit]:
    return vector_frames(shared_dir)


def media_service(signalling, **kw) -> MediaService:
    low = next(_ports)
    return MediaService(signalling, rtp_ports=(low, low + 19), domain="3402000000", media_host="127.0.0.1",
                        media_ip="127.0.0.1", **kw)


async def test_device_playback_goes_up_with_natural_timestamps(frames, tmp_path: Path) -> None:
    device = HistoryDevice(frames, frame_interval=0.01, notify_end=True)
    media = media_service(device)
    loop = asyncio.get_running_loop()
    sink, receiver = await loop.create_datagram_endpoint(UdpReceiver, local_addr=("127.0.0.1", 0))
    ended: list[str] = []
    try:
        leg = await asyncio.wait_for(media.open_upward(
            CHANNEL, PLATFORM, UpwardTarget("127.0.0.1", sink.get_extra_info("sockname")[1], "udp", None, SSRC),
            kind="playback", window=window(0, 4), source="device", on_end=ended.append), 10)
        [(channel, offer)] = device.invites
        assert channel == CHANNEL and offer["ssrc"].startswith("1")
        assert offer["history"] == HistoryRequest("playback", int(T0.timestamp()), int(T0.timestamp()) + 4, None)
        assert (CHANNEL, "main") not in media.manager.streams  # not the shared live Stream
        leg.start()
        call_id = leg.reader.stream.call_id
        pause = mansrtsp("pause", 1)
        assert media.upward_info(leg.id, pause)  # the upper's MANSRTSP reaches the device call
        assert device.infos[-1][:2] == (call_id, pause)
        await asyncio.sleep(0.2)
        assert media.upward_info(leg.id, mansrtsp("resume", 2))
        await until(lambda: ended, timeout=20, what="the end of the file")
        assert ended == ["upstream ended: end of file (MediaStatus 121)"] and leg.file_ended
        assert not media.upward and not media.manager.history and media.manager.ports.in_use() == 0
        assert (call_id, "end of file (MediaStatus 121)") in device.byes
        assert not media.upward_info(leg.id, pause)
    finally:
        sink.close()
        await media.close()
        await device.stop()
    video_ts = [RtpPacket.parse(d).timestamp for d in receiver.packets]
    assert video_ts[0] >= PTS_BASE and (video_ts[0] - PTS_BASE) % TICK == 0  # the device's own clock
    found = probe(check_rtp(receiver.packets), tmp_path, "playback.ps")
    assert int(found["h264"]["nb_read_frames"]) > 50


async def test_platform_download_goes_up_and_ends(frames, tmp_path: Path) -> None:
    recordings = FakeRecordings(frames, seconds=10.0)
    media = media_service(HistoryDevice(frames), recordings=recordings)
    ended: list[str] = []
    try:
        leg = await asyncio.wait_for(media.open_upward(
            CHANNEL, PLATFORM, UpwardTarget("127.0.0.1", 0, "tcp", "passive", SSRC),
            kind="download", window=window(0, 3), source="platform", on_end=ended.append), 10)
        leg.start()
        leg.max_buffer = 64 * 1024  # a slow upper: the download waits for it, nothing is dropped
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        sock.connect(("127.0.0.1", leg.local_port))
        sock.setblocking(False)
        _, receiver = await asyncio.get_running_loop().create_connection(TcpReceiver, sock=sock)
        assert not media.upward_info(leg.id, b"PLAY")  # nothing to forward to: no device call
        await until(lambda: ended, timeout=20, what="the end of the download")
        assert ended == ["upstream ended: end of recording"] and leg.stats()["file_ended"]
        assert not media.platform_streams and not media.upward
        await asyncio.wait_for(receiver.lost.wait(), 10)  # what was buffered is written before the close
    finally:
        await media.close()
    assert leg.dropped == 0
    found = probe(check_rtp(receiver.packets), tmp_path, "download.ps")
    assert int(found["h264"]["nb_read_frames"]) == 75  # all of the 3 s window
