"""tcp-active live view against a device whose media listener opens only after its 200 OK (some NVRs):
the platform retries the connection (at least 3 attempts, 1 s apart, within the media timeout) instead
of failing the live view with 502 on the first refused connect. StreamManager with a fake SIP side."""

from __future__ import annotations

import asyncio
import socket
import struct
import time

import pytest

from gbcore.ids import ChannelRef
from media_relay.ports import PortPool, SsrcAllocator
from media_relay.rtp import packetize_ps
from media_relay.signalling import MANSRTSP_TYPE, InviteAnswer, Signalling
from media_relay.stream import MediaError, StreamManager

DEV = "34020000001320000001"
CHANNEL = "34020000001310000001"


def packs(data: bytes) -> list[bytes]:
    starts = []
    i = data.find(b"\x00\x00\x01\xba")
    while i >= 0:
        starts.append(i)
        i = data.find(b"\x00\x00\x01\xba", i + 4)
    return [data[a:b] for a, b in zip(starts, starts[1:] + [len(data)], strict=True)]


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LateListenerDevice:
    """The signalling (:class:`media_relay.signalling.Signalling`) of a device that answers the INVITE at
    once and opens its media listener ``delay`` seconds later (None: never), then sends the PS stream over
    RFC 4571 framed RTP."""

    def __init__(self, ps: bytes, delay: float | None) -> None:
        self.ps = ps
        self.delay = delay
        self.port = free_tcp_port()
        self.server: asyncio.AbstractServer | None = None
        self.listening_at: float | None = None
        self.accepted_at: float | None = None
        self.ended: list[str] = []
        self._tasks: set[asyncio.Task] = set()

    def subscribe(self, listener) -> None:
        pass

    def is_online(self, device_id: str) -> bool:
        return device_id == DEV

    def route_address(self, device_id: str) -> tuple[str, int] | None:
        return ("127.0.0.1", 5060) if device_id == DEV else None

    def bye(self, call_id: str, reason: str) -> None:
        self.ended.append(reason)

    def info(self, call_id: str, body: bytes, content_type: str = MANSRTSP_TYPE) -> bool:
        return False

    async def invite(self, channel: ChannelRef, *, media_ip: str, media_port: int, ssrc: str,
                     transport: str) -> InviteAnswer:
        assert transport == "tcp-active"
        if self.delay is not None:
            task = asyncio.ensure_future(self._listen_later(int(ssrc)))
            self._tasks.add(task)
        self.answered_at = time.monotonic()
        return InviteAnswer("call-1@test", ssrc, ("127.0.0.1", self.port), "tcp-active")

    async def _listen_later(self, ssrc: int) -> None:
        await asyncio.sleep(self.delay)
        self.server = await asyncio.start_server(lambda r, w: self._send(w, ssrc), "127.0.0.1", self.port)
        self.listening_at = time.monotonic()

    async def _send(self, writer: asyncio.StreamWriter, ssrc: int) -> None:
        self.accepted_at = time.monotonic()
        seq = 1000
        try:
            for k, pack in enumerate(packs(self.ps)[:200]):
                for p in packetize_ps(pack, ssrc=ssrc, sequence=seq, timestamp=k * 3600):
                    data = p.to_bytes()
                    writer.write(struct.pack("!H", len(data)) + data)
                    seq += 1
                await writer.drain()
                await asyncio.sleep(0.002)
            await asyncio.sleep(5)
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        if self.server is not None:
            self.server.close()


@pytest.fixture
def ps(shared_dir) -> bytes:
    return (shared_dir / "vectors" / "ps" / "zlm_h264_aac.ps").read_bytes()


def manager(signalling: Signalling, media_timeout: float = 5.0) -> StreamManager:
    return StreamManager(signalling, ports=PortPool(31000, 31999, "127.0.0.1"), ssrcs=SsrcAllocator("3402000000"),
                         media_host="127.0.0.1", media_ip="127.0.0.1", media_timeout=media_timeout,
                         keyframe_timeout=5.0)


async def test_listener_opening_after_the_answer_still_gives_a_picture(ps):
    device = LateListenerDevice(ps, delay=0.5)
    mgr = manager(device)
    try:
        reader = await asyncio.wait_for(mgr.open_reader(ChannelRef(DEV, CHANNEL), "tcp-active"), 10)
        au = await asyncio.wait_for(reader.get(), 5)
        assert au.keyframe and reader.codec == "h264"
        # the first connect was refused (nobody listened yet); a retry about 1 s later got through
        assert device.accepted_at is not None and device.accepted_at - device.answered_at >= 0.5
        reader.close()
    finally:
        mgr.close_all("test over")
        await device.close()


async def test_a_listener_that_never_opens_fails_after_three_attempts(ps):
    device = LateListenerDevice(ps, delay=None)
    mgr = manager(device, media_timeout=2.5)
    started = time.monotonic()
    try:
        with pytest.raises(MediaError) as err:
            await asyncio.wait_for(mgr.open_reader(ChannelRef(DEV, CHANNEL), "tcp-active"), 10)
        took = time.monotonic() - started
        assert err.value.code == "start_failed" and "3 attempts" in str(err.value)
        assert 1.9 <= took < 4.5  # attempts at 0, 1 and 2 s: within the media timeout
        assert device.ended  # the session was ended (BYE) for the viewer's failure
    finally:
        mgr.close_all("test over")
        await device.close()
