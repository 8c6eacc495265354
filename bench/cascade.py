"""Benchmark: the cascade toward an upper platform, each figure beside a reference from the same run.

1. Catalog answer: ``--channels`` shared channels (Chinese names, built directly as
   :class:`sip_server.gb.upper.CatalogEntry`) answered by the real :class:`sip_server.service.SipService`
   to an upper platform written here (asyncio, TCP on loopback: it challenges our REGISTER (401, then 200),
   sends Query/Catalog and answers every MESSAGE with 200). Timed from the upper writing its query to it
   writing the 200 of the MESSAGE that completes SumNum, with 1 and with 8 items per MESSAGE. Reference: the
   same MESSAGEs (the bytes the upper received, so the same number of round trips of the same sizes) sent
   one after the other by a bare asyncio TCP client to the same upper code, no SIP stack; the ratio is our
   overhead. A second line times the cascade domain building those entries from an in-memory share
   (``cascade.share.resolve_share`` + ``cascade.catalog.build_entries``: what follows the database reads).
2. Media: CPU per upward stream-second against the relay's FLV viewer. One channel Stream of
   ``media_relay.service.MediaService`` (a fake signalling answers its INVITE) is fed a real PS vector as RTP
   in process; the same number of stream-seconds is fed three times: to the Stream alone (the ingest
   baseline), with ``--legs`` upward legs (``MediaService.open_upward``, UDP, started) sending to sink
   sockets, and with as many FLV viewers (``open_viewer`` + ``open_output`` + ``flv_stream`` written to a TCP
   connection per viewer, as bench/relay.py does). The sinks run in a child process, so what is measured
   is this process only (``time.process_time``: user + system CPU). No viewer transform is installed: both
   paths are the raw ones (no watermark decode/encode), so they compare like for like. A stream-second is
   one second of the vector's content (its PTS), whatever its bitrate.

Medians of ``--repeats`` runs.

    python bench/cascade.py [--repeats 5] [--channels 10000] [--legs 4] [--seconds 1000] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
VECTORS = ROOT.parent / "shared" / "vectors" / "ps"

UPPER_ID = "34010000002000000001"
UPPER_DOMAIN = "3401000000"
LOCAL_ID = "34020000002000000001"
PASSWORD = "Bench#upper-2025"
PLATFORM_ID = 1

_NAMES = ("东门", "西门", "南广场", "北停车场", "一号楼大厅", "二号楼电梯厅", "仓库堃", "围墙䶮", "收费站", "隧道口")
_ROADS = ("人民路", "解放大道", "中山北路", "长江西路", "黄山路")


# ============================================================================================ 1. catalog
def catalog_entries(count: int) -> list:
    """``count`` channel items as the cascade hands them to the SIP core (ids mapped, Chinese names)."""
    from sip_server.gb.upper import CatalogEntry

    out = []
    for i in range(count):
        out.append(CatalogEntry(
            device_id=f"340200000013{i + 1:08d}", name=f"{_NAMES[i % 10]}{i // 10 + 1}号摄像机", kind="channel",
            parent_id=f"3402000000216{i % 50 + 1:07d}", business_group_id="34020000002150000001",
            civil_code="340202", manufacturer="海康威视", model="DS-2CD3T47", owner="0",
            address=f"芜湖市{_ROADS[i % 5]}{i % 300 + 1}号", status="ON" if i % 7 else "OFF",
            longitude=118.3 + (i % 1000) / 10000, latitude=31.3 + (i // 1000) / 1000))
    return out


def time_build_entries(count: int, repeats: int) -> tuple[float, float]:
    """Median seconds of resolve_share and of build_entries for ``count`` channels under 50 shared
    virtual organisations (one business group, two regions), all in memory."""
    from cascade.catalog import build_entries
    from cascade.registry_reads import ChannelFacts, OrgInfo
    from cascade.share import resolve_share
    from gbcore.ids import ChannelRef

    nodes = {1: OrgInfo(1, None, "安徽省", "civil", "34"), 2: OrgInfo(2, 1, "芜湖市", "civil", "3402"),
             3: OrgInfo(3, 2, "市公安局", "business_group", "34020000002150000001")}
    for k in range(50):
        nodes[10 + k] = OrgInfo(10 + k, 3, f"第{k + 1}派出所", "virtual_org", f"3402000000216{k + 1:07d}")
    facts = [ChannelFacts(ChannelRef(f"340200000011{i // 16 + 1:08d}", f"340200000013{i + 1:08d}"),
                          f"{_NAMES[i % 10]}{i // 10 + 1}号摄像机", "海康威视", "DS-2CD3T47", None,
                          f"芜湖市{_ROADS[i % 5]}{i % 300 + 1}号", 118.3 + (i % 1000) / 10000,
                          31.3 + (i // 1000) / 1000, i % 7 != 0, True, 10 + (i // 16) % 50) for i in range(count)]
    shared_nodes = frozenset(nodes)
    resolve, build = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        share = resolve_share(PLATFORM_ID, shared_nodes, {}, facts, reserved=[LOCAL_ID])
        t1 = time.perf_counter()
        entries = build_entries(share, nodes, local_id=LOCAL_ID, system_name="芜湖市视频运维平台")
        t2 = time.perf_counter()
        assert len(entries) == count + 1 + 2 + 1 + 50, len(entries)
        resolve.append(t1 - t0)
        build.append(t2 - t1)
    return statistics.median(resolve), statistics.median(build)


def _frames(buf: bytearray) -> list[tuple[bytes, bytes]]:
    """Complete SIP messages (head, body) taken from the front of ``buf`` (Content-Length framing)."""
    out = []
    while True:
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return out
        head = bytes(buf[:end])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() in (b"content-length", b"l"):
                length = int(value.strip() or 0)
                break
        if len(buf) < end + 4 + length:
            return out
        out.append((head, bytes(buf[end + 4:end + 4 + length])))
        del buf[:end + 4 + length]


def _header(head: bytes, name: bytes) -> list[bytes]:
    out = []
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            out.append(value.strip())
    return out


def _response(head: bytes, status: str, extra: bytes = b"") -> bytes:
    """A response to the request ``head``: its Via, From, Call-ID and CSeq, To with a tag."""
    lines = [b"SIP/2.0 " + status.encode()]
    lines += [b"Via: " + v for v in _header(head, b"via")]
    to = _header(head, b"to")[0]
    if b";tag=" not in to:
        to += b";tag=upper1"
    lines += [b"From: " + _header(head, b"from")[0], b"To: " + to, b"Call-ID: " + _header(head, b"call-id")[0],
              b"CSeq: " + _header(head, b"cseq")[0]]
    return b"\r\n".join(lines) + b"\r\n" + extra + b"Content-Length: 0\r\n\r\n"


class Upper(asyncio.Protocol):
    """The upper platform (both runs): REGISTER (401 once unless ``challenge`` is off, then 200), 200 to every
    MESSAGE; the last page of a catalog (items reaching SumNum) timestamps the 200 and ends the wait."""

    def __init__(self, challenge: bool = True) -> None:
        self.challenge = challenge
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.registered = asyncio.Event()
        self.done: asyncio.Future | None = None
        self.items = 0
        self.captured: list[bytes] | None = None  # the MESSAGEs of the catalog, as received
        self.last_ok = 0.0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        for head, body in _frames(self.buf):
            if head.startswith(b"SIP/2.0"):
                continue  # our stack's 200 to the query
            method = head[:head.find(b" ")]
            if method == b"REGISTER":
                if self.challenge and not _header(head, b"authorization"):
                    self.transport.write(_response(head, "401 Unauthorized", (
                        f'WWW-Authenticate: Digest realm="{UPPER_DOMAIN}", nonce="{secrets.token_hex(8)}", '
                        'qop="auth", algorithm=MD5\r\n').encode()))
                else:
                    self.transport.write(_response(head, "200 OK", b"Expires: 3600\r\n"))
                    self.registered.set()
            elif method == b"MESSAGE":
                self.transport.write(_response(head, "200 OK"))
                if b"<CmdType>Catalog</CmdType>" in body and b"<Response>" in body:
                    self._page(head, body)
            else:
                self.transport.write(_response(head, "200 OK"))

    def _page(self, head: bytes, body: bytes) -> None:
        if self.captured is not None:
            self.captured.append(head + b"\r\n\r\n" + body)
        self.items += body.count(b"<Item>")
        a = body.find(b"<SumNum>")
        total = int(body[a + 8:body.find(b"</SumNum>", a)])
        if self.items >= total and self.done is not None and not self.done.done():
            self.last_ok = time.perf_counter()
            self.done.set_result(self.items)

    def query(self, sn: int, port: int) -> bytes:
        from sip_server.gb import manscdp

        body = manscdp.build_query("Catalog", sn, LOCAL_ID)
        return (f"MESSAGE sip:{LOCAL_ID}@{UPPER_DOMAIN} SIP/2.0\r\n"
                f"Via: SIP/2.0/TCP 127.0.0.1:{port};rport;branch=z9hG4bK{secrets.token_hex(6)}\r\n"
                f"From: <sip:{UPPER_ID}@{UPPER_DOMAIN}>;tag={secrets.token_hex(4)}\r\n"
                f"To: <sip:{LOCAL_ID}@{UPPER_DOMAIN}>\r\nCall-ID: {secrets.token_hex(8)}@{UPPER_DOMAIN}\r\n"
                f"CSeq: {sn} MESSAGE\r\nMax-Forwards: 70\r\nContent-Type: Application/MANSCDP+xml\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def catalog_runs(entries: list, items_per_message: int, repeats: int, challenge: bool) -> tuple[
        list[float], list[float], list[float], int, int]:
    """Seconds per catalog answer through SipService and through the bare pair, seconds of the synchronous
    ``answer_catalog`` call (the event loop is blocked that long), MESSAGE count and bytes."""
    from sip_server.gb import events as ev
    from sip_server.gb.server import GbConfig
    from sip_server.gb.upper import UpperConfig
    from sip_server.service import SipService

    loop = asyncio.get_running_loop()
    conns: list[Upper] = []

    def factory() -> Upper:
        conns.append(Upper(challenge))
        return conns[-1]

    server = await loop.create_server(factory, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    svc = SipService(GbConfig(sip_id=LOCAL_ID, domain=LOCAL_ID[:10], realm=LOCAL_ID[:10],
                              catalog_subscribe_expires=0, cascade_catalog_items_tcp=items_per_message),
                     host="127.0.0.1", port=0)
    sent: list = []
    building: list[float] = []

    def on_event(event: Any) -> None:
        if isinstance(event, ev.UpperCatalogQuery):
            t0 = time.perf_counter()
            svc.answer_catalog(event.platform_id, event.sn, entries)  # builds every page, then sends the first
            building.append(time.perf_counter() - t0)
        elif isinstance(event, ev.UpperCatalogSent):
            sent.append(event)

    svc.add_listener(on_event)
    await svc.start()
    ours, bare = [], []
    captured: list[bytes] = []
    try:
        svc.set_upper_platforms([UpperConfig(
            platform_id=PLATFORM_ID, server_id=UPPER_ID, server_domain=UPPER_DOMAIN, host="127.0.0.1", port=port,
            transport="tcp", local_id=LOCAL_ID, username=LOCAL_ID, password=PASSWORD, keepalive_s=3600,
            name="基准上级平台")])
        for _ in range(200):
            if (svc.upper_status(PLATFORM_ID) or {}).get("state") == "registered":
                break
            await asyncio.sleep(0.02)
        else:
            raise RuntimeError(f"not registered: {svc.upper_status(PLATFORM_ID)}")
        upper = conns[0]
        for rep in range(repeats):
            upper.items = 0
            upper.captured = captured if rep == 0 else None
            upper.done = loop.create_future()
            gc.collect()
            query = upper.query(7000 + rep, port)
            t0 = time.perf_counter()
            upper.transport.write(query)
            await asyncio.wait_for(upper.done, 600)
            ours.append(upper.last_ok - t0)
            await asyncio.sleep(0.05)
        if not sent or sent[-1].error is not None or sent[-1].sent != len(entries):
            raise RuntimeError(f"catalog not fully sent: {sent[-1:]}")
    finally:
        await svc.close()
        server.close()
    # the reference: the same MESSAGEs, one round trip each, over a bare asyncio TCP pair
    conns.clear()
    server = await loop.create_server(factory, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    class Client(asyncio.Protocol):
        def __init__(self) -> None:
            self.buf = bytearray()
            self.waiter: asyncio.Future | None = None

        def data_received(self, data: bytes) -> None:
            self.buf += data
            if b"\r\n\r\n" in self.buf:  # our upper's 200s have no body
                del self.buf[:self.buf.find(b"\r\n\r\n") + 4]
                self.waiter.set_result(None)

    transport, client = await loop.create_connection(Client, "127.0.0.1", port)
    try:
        for _ in range(repeats):
            await asyncio.sleep(0)
            upper = conns[0]
            upper.items = 0
            upper.done = loop.create_future()
            gc.collect()
            t0 = time.perf_counter()
            for message in captured:
                client.waiter = loop.create_future()
                transport.write(message)
                await client.waiter
            await upper.done
            bare.append(upper.last_ok - t0)
    finally:
        transport.close()
        server.close()
    return ours, bare, building, len(captured), sum(len(m) for m in captured)


async def catalog_part(args: argparse.Namespace) -> None:
    entries = catalog_entries(args.channels)
    print(f"1. catalog answer: {args.channels} channels, SipService over TCP on loopback, upper "
          f"{'challenges REGISTER (digest)' if not args.no_challenge else 'accepts REGISTER at once'}; "
          f"median of {args.repeats}", flush=True)
    print(f"   {'items/MESSAGE':>13} {'MESSAGEs':>8} {'MB':>6} | {'gbops s':>8} {'items/s':>9} {'ms/MSG':>7} {'pages ms':>8} | "
          f"{'bare TCP s':>10} {'items/s':>9} {'ms/MSG':>7} | {'gbops/bare':>10}")
    for n in (1, 8):
        ours, bare, building, messages, size = await catalog_runs(entries, n, args.repeats, not args.no_challenge)
        o, b, pages = statistics.median(ours), statistics.median(bare), statistics.median(building)
        print(f"   {n:>13} {messages:>8} {size / 1e6:>6.2f} | {o:>8.3f} {args.channels / o:>9.0f} "
              f"{o / messages * 1000:>7.3f} {pages * 1000:>8.0f} | {b:>10.3f} {args.channels / b:>9.0f} "
              f"{b / messages * 1000:>7.3f} | {o / b:>9.2f}x", flush=True)
    print("   pages ms: the answer_catalog call building every page before the first is sent (the event loop "
          "waits that long); ratio: gbops / bare TCP")
    resolve, build = time_build_entries(args.channels, args.repeats)
    print(f"   building the entries (cascade domain, in-memory share, no database): resolve_share "
          f"{resolve * 1000:.1f} ms + build_entries {build * 1000:.1f} ms "
          f"({args.channels / (resolve + build):,.0f} channels/s)", flush=True)


# ============================================================================================ 2. media
def serve_sinks(udp: int) -> None:
    """The child: ``udp`` UDP sockets and one TCP listener that read and drop everything."""
    import uvloop

    class Udp(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: Any) -> None:
            pass

    class Tcp(asyncio.Protocol):
        def data_received(self, data: bytes) -> None:
            pass

    async def main() -> None:
        loop = asyncio.get_running_loop()
        ports = []
        for _ in range(udp):
            t, _ = await loop.create_datagram_endpoint(Udp, local_addr=("127.0.0.1", 0))
            ports.append(t.get_extra_info("sockname")[1])
        server = await loop.create_server(Tcp, "127.0.0.1", 0)
        print("ready", server.sockets[0].getsockname()[1], *ports, flush=True)
        await loop.run_in_executor(None, sys.stdin.read)  # until the parent goes

    uvloop.run(main())


def start_sinks(udp: int) -> tuple[subprocess.Popen, int, list[int]]:
    """The sink child: its TCP port and ``udp`` UDP ports."""
    sink = subprocess.Popen([sys.executable, __file__, "--serve-sinks", str(udp)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, cwd=ROOT)
    line = sink.stdout.readline().split() if sink.stdout else []
    if not line or line[0] != b"ready":
        sink.kill()
        raise RuntimeError("the sink process did not start")
    return sink, int(line[1]), [int(p) for p in line[2:]]


class Feed:
    """The vector as a camera sends it, looped for as long as asked: one PS pack per unit, RTP packets with
    sequence numbers and timestamps continuing across loops and calls."""

    def __init__(self, vector: Path) -> None:
        from media_relay.ps import PsDemuxer

        demux = PsDemuxer()
        self.units = demux.feed(vector.read_bytes()) + demux.flush(eof=True)
        self.params = demux.video_params
        video = [a.pts for a in self.units if a.kind == "video" and a.pts is not None]
        self.first = self.units[0].pts or 0
        self.span = max(video) - self.first + (video[1] - video[0])  # 90 kHz ticks per loop
        self.bytes_per_loop = len(vector.read_bytes())
        self.loop = 0
        self.seq = 0
        self.ssrc = 0

    def packets(self, seconds: float) -> tuple[list[bytes], float]:
        """Whole loops covering ``seconds`` of content: the packets and their content seconds."""
        from media_relay.ps import PsMuxer
        from media_relay.rtp import packetize_ps
        from media_relay.types import AccessUnit

        mux = PsMuxer(self.params.codec if self.params else "h264", "aac")
        loops = max(1, round(seconds * 90000 / self.span))
        out = []
        for _ in range(loops):
            for a in self.units:
                ts = None if a.pts is None else (a.pts - self.first + self.loop * self.span) % (1 << 33)
                au = AccessUnit(a.kind, a.codec, a.data, ts, None, a.keyframe)
                for p in packetize_ps(mux.mux(au), ssrc=self.ssrc, sequence=self.seq, timestamp=(ts or 0) % (1 << 32)):
                    out.append(p.to_bytes())
                    self.seq = (self.seq + 1) & 0xFFFF
            self.loop += 1
        return out, loops * self.span / 90000


async def feed(stream: Any, packets: list[bytes], writers: list) -> float:
    """Feed ``packets`` to ``stream`` (in process, as its ingest would) letting its readers keep up; the CPU
    seconds of this process until every reader and writer has caught up."""
    readers = stream.readers

    def behind() -> bool:
        return (any(len(r._queue) > 30 for r in readers)
                or any(w.transport.get_write_buffer_size() > 1 << 20 for w in writers))

    gc.collect()
    c0 = time.process_time()
    now = time.monotonic()
    for i, data in enumerate(packets):
        stream.on_rtp(data, now)
        if i % 8 == 7:
            await asyncio.sleep(0)
            now = time.monotonic()
            for _ in range(100_000):  # waiting costs no CPU; overflowing a reader would drop units
                if not behind():
                    break
                await asyncio.sleep(0.001)
    for _ in range(100_000):  # everything delivered and written
        if not any(r._queue for r in readers) and not any(w.transport.get_write_buffer_size() for w in writers):
            break
        await asyncio.sleep(0.001)
    for _ in range(5):
        await asyncio.sleep(0)
    return time.process_time() - c0


async def media_part(args: argparse.Namespace) -> None:
    from gbcore.ids import ChannelRef
    from media_relay.outputs.flv import flv_stream
    from media_relay.service import MediaService
    from media_relay.signalling import InviteAnswer
    from media_relay.upward import UpwardTarget
    from media_relay.viewers import Viewer
    from tests.media.fake_signalling import FakeSignalling

    vector = VECTORS / args.vector
    src = Feed(vector)
    device = "34020000001320000001"
    channel = ChannelRef(device, "34020000001310000001")
    media: MediaService | None = None

    async def prime(ssrc: str) -> None:
        """The first loop of the vector, once the Stream is there (it waits for a keyframe to start)."""
        for _ in range(10_000):  # the manager registers the Stream as soon as the INVITE is answered
            if media is not None and channel in media.manager.streams:
                break
            await asyncio.sleep(0)
        src.ssrc = int(ssrc)
        stream = media.manager.streams[channel]
        for data in src.packets(1)[0]:
            stream.on_rtp(data, time.monotonic())

    tasks: set[asyncio.Task] = set()

    async def on_invite(ch: Any, *, media_ip: str, media_port: int, ssrc: str, transport: str) -> InviteAnswer:
        tasks.add(asyncio.ensure_future(prime(ssrc)))
        return InviteAnswer("bench-call@fake", ssrc, None, transport)

    sink, tcp_port, udp_ports = start_sinks(args.legs)
    signalling = FakeSignalling({device}, on_invite=on_invite)
    low = 36000 + os.getpid() % 200 * 100
    media = MediaService(signalling, rtp_ports=(low, low + 2 * args.legs + 8), domain="3402000000",
                         media_host="127.0.0.1", media_ip="127.0.0.1", idle_timeout=3600)
    platform = Viewer(user_id=0, username=f"upper:{UPPER_ID}", display_name="省厅平台")
    try:
        first = await media.open_viewer(channel, Viewer(user_id=1, username="bench"))
        media.close_session(first.session_id, "bench: keep the Stream, no reader")  # idle for an hour
        stream = media.manager.streams[channel]
        base, up, flv = [], [], []
        dropped = {"upward": 0, "flv": 0}
        sent = {"upward": 0, "flv": 0}
        seconds = 0.0
        for rep in range(args.repeats):
            packets, seconds = src.packets(args.seconds)
            base.append(await feed(stream, packets, []) / seconds)

            legs = []
            for i, port in enumerate(udp_ports):
                leg = await media.open_upward(channel, platform, UpwardTarget("127.0.0.1", port, "udp", None,
                                                                              1_000_000_001 + i))
                leg.start()
                legs.append(leg)
            await asyncio.sleep(0.05)
            packets, seconds = src.packets(args.seconds)
            up.append(await feed(stream, packets, []) / seconds)
            for leg in legs:
                sent["upward"] += leg.bytes
                dropped["upward"] += leg.dropped + (leg.reader.dropped if leg.reader else 0)
                await leg.close("bench")

            sessions, writers, viewers = [], [], []
            for _ in range(args.legs):
                session = await media.open_viewer(channel, Viewer(user_id=2, username="viewer"))
                session = media.open_output(session.session_id, "flv")
                _, writer = await asyncio.open_connection("127.0.0.1", tcp_port)
                sessions.append(session)
                writers.append(writer)
                viewers.append(asyncio.ensure_future(_flv_viewer(flv_stream(session.source), writer, sent)))
            await asyncio.sleep(0.05)
            packets, seconds = src.packets(args.seconds)
            flv.append(await feed(stream, packets, writers) / seconds)
            for session in sessions:
                dropped["flv"] += session.reader.dropped
                media.close_session(session.session_id, "bench")
            await asyncio.gather(*viewers)
            for writer in writers:
                writer.close()
            b, u, f = base[-1], (up[-1] - base[-1]) / args.legs, (flv[-1] - base[-1]) / args.legs
            print(f"   run {rep + 1}: ingest {b * 1000:.3f} | upward leg {u * 1000:.3f} | FLV viewer {f * 1000:.3f} "
                  f"ms CPU per stream-second", flush=True)
        b = statistics.median(base)
        u = statistics.median((x - y) / args.legs for x, y in zip(up, base, strict=True))
        f = statistics.median((x - y) / args.legs for x, y in zip(flv, base, strict=True))
        print(f"   median of {args.repeats} runs, {seconds:.0f} stream-seconds each:")
        print(f"   {'':28} {'ms CPU / stream-second':>22}")
        print(f"   {'ingest alone (baseline)':28} {b * 1000:>22.3f}")
        print(f"   {'one upward leg (UDP)':28} {u * 1000:>22.3f}   (ingest + {args.legs} legs "
              f"{statistics.median(up) * 1000:.3f}, baseline subtracted, / {args.legs})")
        print(f"   {'one FLV viewer (TCP)':28} {f * 1000:>22.3f}   (ingest + {args.legs} viewers "
              f"{statistics.median(flv) * 1000:.3f}, baseline subtracted, / {args.legs})")
        print(f"   {'ratio upward / FLV':28} {u / f:>21.2f}x")
        print(f"   upward legs per core {1 / u:,.0f}, FLV viewers per core {1 / f:,.0f} (on top of the ingest); "
              f"bytes sent: upward {sent['upward']:,}, FLV {sent['flv']:,}; units dropped: upward "
              f"{dropped['upward']}, FLV {dropped['flv']}")
    finally:
        await media.close()
        for t in tasks:
            t.cancel()
        if sink.stdin:
            sink.stdin.close()
        sink.wait(5)


async def _flv_viewer(body: Any, writer: asyncio.StreamWriter, sent: dict) -> None:
    async for chunk in body:
        writer.write(chunk)
        sent["flv"] += len(chunk)
        if writer.transport.get_write_buffer_size() > 1 << 20:
            await writer.drain()


async def drive(args: argparse.Namespace) -> None:
    if not args.media_only:
        await catalog_part(args)
        print()
    if not args.catalog_only:
        src = Feed(VECTORS / args.vector)
        p = src.params
        kbps = src.bytes_per_loop * 8 / (src.span / 90000) / 1000
        audio = "".join(sorted({f" + {a.codec}" for a in src.units if a.kind == "audio"}))
        print(f"2. media: CPU per stream-second, {args.legs} upward legs vs {args.legs} FLV viewers on one Stream; "
              f"vector {args.vector} ({p.codec if p else '?'} {p.width if p else '?'}x{p.height if p else '?'}{audio}, "
              f"{kbps:.0f} kbit/s); raw paths on both sides: no watermark factory (no tag, no overlay)", flush=True)
        await media_part(args)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--channels", type=int, default=10_000, help="shared channels in the catalog")
    ap.add_argument("--legs", type=int, default=4, help="upward legs, and FLV viewers, on the Stream")
    ap.add_argument("--seconds", type=float, default=1000.0, help="stream-seconds fed per measurement")
    ap.add_argument("--vector", default="zlm_h264_aac.ps", help="a PS file in shared/vectors/ps")
    ap.add_argument("--no-challenge", action="store_true", help="the upper accepts REGISTER without digest")
    ap.add_argument("--quick", action="store_true", help="a smoke run of about 20 s")
    ap.add_argument("--catalog-only", action="store_true")
    ap.add_argument("--media-only", action="store_true")
    ap.add_argument("--serve-sinks", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_sinks is not None:
        serve_sinks(args.serve_sinks)
        return
    if args.quick:
        args.repeats, args.seconds = 1, min(args.seconds, 300.0)
    os.chdir(ROOT)
    import uvloop

    uvloop.run(drive(args))


if __name__ == "__main__":
    main()
