"""Benchmark: what platform recording costs on top of receiving a stream, in the same run.

The same RTP/PS packets (a real ZLMediaKit vector, one PS pack per frame, timestamps continuing across
loops) are fed to a :class:`media_relay.stream.Stream` twice:

* receive only: RTP parse -> reorder -> PS demux -> fan-out to one reader that just drains;
* receive + record: the same, plus a :class:`media_relay.recording.service.RecordingService` recorder on
  the Stream (PS mux of every unit as received, AES-256-GCM in 64 KiB chunks, two roots, SHA-256, a
  SQLite row and an audit call per segment).

CPU is ``time.process_time()`` of this process around the feeding (the packets are built beforehand), so
the figures are CPU-seconds, not wall time.  A stream-second is ``--mbps`` worth of packets (2 Mbit/s by
default: the vector is replayed at that bitrate, as ``bench/relay.py`` sends it).  Prints CPU per
stream-second for both, the ratio (goal: recording adds <= 20 %), and how many such channels one core
records.  Repeats ``--repeats`` times and prints medians.

    python bench/recorder.py [--mbps 2] [--seconds 120] [--repeats 3] [--segment 60] [--plain]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
VECTOR = ROOT.parent / "shared" / "vectors" / "ps" / "zlm_h264_aac.ps"
SSRC = 1000


def packets_of_vector(stream_seconds: float, mbps: float) -> tuple[list[tuple[bytes, float]], int]:
    """RTP packets worth ``stream_seconds`` at ``mbps``, each with the content time (s) of its frame."""
    from media_relay.ps import PsDemuxer, PsMuxer
    from media_relay.rtp import packetize_ps
    from media_relay.types import AccessUnit

    demux = PsDemuxer()
    aus = demux.feed(VECTOR.read_bytes()) + demux.flush(eof=True)
    first = aus[0].pts
    video = [a.pts for a in aus if a.kind == "video"]
    span = max(video) - first + (video[1] - video[0])
    mux = PsMuxer("h264", "aac")
    want = stream_seconds * mbps * 1e6 / 8
    out: list[tuple[bytes, float]] = []
    size = seq = loop = 0
    while size < want:
        for a in aus:
            shift = None if a.pts is None else (a.pts - first + loop * span) % (1 << 33)
            au = AccessUnit(a.kind, a.codec, a.data, shift, None, a.keyframe)
            for p in packetize_ps(mux.mux(au), ssrc=SSRC, sequence=seq, timestamp=shift or 0):
                data = p.to_bytes()
                out.append((data, (shift or 0) / 90000))
                size += len(data)
                seq = (seq + 1) & 0xFFFF
        loop += 1
    return out, size


async def one_run(packets: list[tuple[bytes, float]], record: bool, args, tmp: Path, segment: float
                  ) -> tuple[float, int]:
    from gbcore.db import make_engine, make_sessionmaker
    from gbcore.ids import ChannelRef
    from gbops.migrate import migrate
    from media_relay.recording.service import RecordingService
    from media_relay.recording.types import RecordPlan
    from media_relay.stream import Stream

    channel = ChannelRef("34020000001320000001", "34020000001310000001")
    stream = Stream(channel, "udp", port=0, ssrc=f"{SSRC:010d}")
    drained = 0

    async def drain(reader):
        nonlocal drained
        try:
            while True:
                await reader.get()
                drained += 1
        except EOFError:
            pass

    content = {"t": 1_700_000_000.0}
    svc = engine = None
    audits: list[str] = []
    readers: list = []
    if record:
        engine = make_engine(f"sqlite+aiosqlite:///{tmp / 'bench.db'}")
        await migrate(engine)

        async def audit(action, target, detail):
            audits.append(action)

        async def open_reader(ch, kind):
            readers.append(stream.add_reader(maxsize=10_000))
            return readers[-1]

        svc = RecordingService(make_sessionmaker(engine), open_reader, roots=[tmp / "r1", tmp / "r2"],
                               segment_seconds=segment, encrypt=not args.plain, key_file=tmp / "record.key",
                               min_free_mb=0, check_interval=3600, audit=audit, clock=lambda: content["t"])
        await svc.start()
        await svc.set_plan(RecordPlan(channel, "continuous"), "bench")
        await asyncio.sleep(0.05)
    drainer = asyncio.create_task(drain(stream.add_reader(maxsize=10_000)))
    base = content["t"]
    await asyncio.sleep(0)
    c0 = time.process_time()
    now = time.monotonic()
    for i, (data, at) in enumerate(packets):
        content["t"] = base + at
        stream.on_rtp(data, now)
        if i % 8 == 7:
            await asyncio.sleep(0)
            # far faster than real time: let the recorder catch up (it may wait on the database or an fsync
            # at a segment's end) instead of overflowing its queue; waiting costs no CPU
            for _ in range(10_000):
                if not any(len(r._queue) > 2000 for r in readers):
                    break
                await asyncio.sleep(0.001)
    for _ in range(20):
        await asyncio.sleep(0)
    for _ in range(100_000):  # the recorder has written every unit before it is stopped
        if not any(r._queue for r in readers):
            break
        await asyncio.sleep(0.001)
    if svc is not None:
        await svc.stop()  # the open segment is finished, hashed and recorded: part of the cost
    cpu = time.process_time() - c0
    stream.close("bench over")
    await drainer
    if engine is not None:
        await engine.dispose()
    return cpu, audits.count("record.segment")


async def drive(args) -> None:
    packets, size = packets_of_vector(args.seconds, args.mbps)
    stream_seconds = size * 8 / (args.mbps * 1e6)
    # the vector's own bitrate is lower than --mbps: its content runs faster than a stream-second, so the
    # segment length in content seconds is scaled to keep --segment stream-seconds per segment
    content_per_stream_second = (packets[-1][1] - packets[0][1]) / stream_seconds
    segment = args.segment * content_per_stream_second
    rx, rec = [], []
    for rep in range(args.repeats):
        with tempfile.TemporaryDirectory() as t1, tempfile.TemporaryDirectory() as t2:
            r = (await one_run(packets, False, args, Path(t1), segment))[0] / stream_seconds
            cpu, segments = await one_run(packets, True, args, Path(t2), segment)
            w = cpu / stream_seconds
        rx.append(r)
        rec.append(w)
        print(f"run {rep + 1}: receive only {r * 1000:.3f} ms CPU per stream-second | receive + record "
              f"{w * 1000:.3f} ms | recording adds {(w / r - 1) * 100:.1f} % | {segments} segments", flush=True)
    r, w = statistics.median(rx), statistics.median(rec)
    print()
    print(f"median over {args.repeats} runs: {stream_seconds:.0f} stream-seconds at {args.mbps} Mbit/s, segments of "
          f"{args.segment:.0f} s, {'plaintext' if args.plain else 'AES-256-GCM'}, two roots")
    print(f"  receive only (relay ingest)  {r * 1000:8.3f} ms CPU per stream-second (reference)")
    print(f"  receive + record             {w * 1000:8.3f} ms CPU per stream-second")
    print(f"  recording alone              {(w - r) * 1000:8.3f} ms CPU per stream-second")
    print(f"  ratio                        {w / r:8.2f} x   (recording adds {(w / r - 1) * 100:.1f} %; goal: <= 20 %)")
    print(f"  channels one core records    {1 / w:8.0f}     ({args.mbps} Mbit/s each, received and recorded)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mbps", type=float, default=2.0)
    ap.add_argument("--seconds", type=float, default=120.0, help="stream-seconds fed per run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--segment", type=float, default=60.0, help="segment length (content seconds)")
    ap.add_argument("--plain", action="store_true", help="record unencrypted")
    args = ap.parse_args()
    try:
        import uvloop

        uvloop.run(drive(args))
    except ImportError:
        asyncio.run(drive(args))


if __name__ == "__main__":
    main()
