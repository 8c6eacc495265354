"""Benchmark: glass-to-glass latency and time to first picture, simulator -> gbops -> viewer.

The simulator encodes a test pattern whose every access unit carries its capture time (epoch ms) in an
SEI message (``gbsim.media.LATENCY_SEI_UUID``; the same time is drawn into the picture). A real
`gbops run` (subprocess) INVITEs it over the chosen transport; this script is the viewer:

* HTTP-FLV: reads the FLV as a player would, and for every video tag computes ``arrival - capture``;
* first picture: time from ``POST /api/channels/{id}/live`` to the first video tag (the "click");
* WHEP: an aiortc client negotiates with ``whep_url`` and times its first decoded frame.

Reference in the same run: this script INVITEs the simulator's other camera itself and times its RTP
straight off the socket (no platform), so the ratio shows what the platform adds. Prints medians and the 95th percentile.

    python bench/latency.py [--seconds 10] [--transport udp] [--codec h264] [--size 1280x720]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def flv_latencies(base: str, url: str, seconds: float, codec: str, t_click: float) -> tuple[list[float], float]:
    import httpx

    from gbsim.media import read_latency_sei
    from media_relay.nal import avcc_to_annexb

    lat: list[float] = []
    first = None
    buf = b""
    pos = 13  # FLV header (9) + PreviousTagSize0 (4)
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(timeout=10) as client, client.stream("GET", base + url) as r:
        async for chunk in r.aiter_bytes():
            now_ms = time.time() * 1000
            buf += chunk
            while len(buf) >= pos + 11:
                size = int.from_bytes(buf[pos + 1:pos + 4], "big")
                if len(buf) < pos + 11 + size + 4:
                    break
                tag_type = buf[pos]
                data = buf[pos + 11:pos + 11 + size]
                pos += 11 + size + 4
                if tag_type == 9 and len(data) > 5 and data[1] == 1:  # video, NALU packet
                    if first is None:
                        first = time.monotonic() - t_click
                    captured = read_latency_sei(avcc_to_annexb(data[5:]), codec)
                    if captured is not None:
                        lat.append(now_ms - captured)
            if pos > 1 << 20:
                buf, pos = buf[pos:], 0
            if time.monotonic() > deadline:
                break
    return lat, first if first is not None else float("nan")


async def whep_first_frame(base: str, whep_url: str) -> float:
    import httpx
    from aiortc import RTCPeerConnection, RTCSessionDescription

    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="recvonly")
    got = asyncio.get_running_loop().create_future()

    @pc.on("track")
    def on_track(track):
        async def pull():
            await track.recv()
            if not got.done():
                got.set_result(time.monotonic())
        asyncio.ensure_future(pull())

    t0 = time.monotonic()
    await pc.setLocalDescription(await pc.createOffer())
    async with httpx.AsyncClient(timeout=10) as client:
        r = await client.post(base + whep_url, content=pc.localDescription.sdp,
                              headers={"Content-Type": "application/sdp"})
        r.raise_for_status()
    await pc.setRemoteDescription(RTCSessionDescription(r.text, "answer"))
    try:
        return await asyncio.wait_for(got, 15) - t0
    finally:
        await pc.close()


async def direct_latencies(sim, channel_id: str, seconds: float, codec: str) -> list[float]:
    """Reference: INVITE the simulator directly (no platform) and time its RTP as it arrives here."""
    from gbsim.media import read_latency_sei
    from media_relay.ps import PsDemuxer
    from media_relay.rtp import RtpPacket
    from sip_server.sip import Headers, SipEndpoint, SipRequest
    from sip_server.sip.sdp import build_offer
    from sip_server.transport import SipTransport

    lat: list[float] = []
    demux = PsDemuxer()

    class Proto(asyncio.DatagramProtocol):
        def datagram_received(self, data, addr):
            pkt = RtpPacket.parse(data)
            aus = demux.feed(pkt.payload) + (demux.flush() if pkt.marker else [])
            now_ms = time.time() * 1000
            for au in aus:
                t = read_latency_sei(au.data, codec) if au.kind == "video" else None
                if t is not None:
                    lat.append(now_ms - t)

    loop = asyncio.get_running_loop()
    media, _ = await loop.create_datagram_endpoint(Proto, local_addr=("127.0.0.1", 0))
    port = media.get_extra_info("sockname")[1]
    ep = SipEndpoint()
    answered = loop.create_future()

    def on_event(event):
        if type(event).__name__ == "ResponseReceived" and event.response.status >= 200 and not answered.done():
            answered.set_result(event.response)

    uac = SipTransport(ep, "127.0.0.1", 0, on_event=on_event, tcp=False)
    await uac.start()
    target = sim.local_addresses[0]
    h = Headers()
    h.add("From", "<sip:34020000002000000009@3402000000>;tag=bench")
    h.add("To", f"<sip:{channel_id}@3402000000>")
    h.add("Call-ID", f"latency-{time.time()}@bench")
    h.add("CSeq", "1 INVITE")
    h.add("Contact", f"<sip:34020000002000000009@127.0.0.1:{uac.local_addresses[0][1]}>")
    h.add("Subject", f"{channel_id}:0200009999,34020000002000000009:0")
    h.add("Content-Type", "APPLICATION/SDP")
    body = build_offer(origin_id="34020000002000000009", ip="127.0.0.1", port=port, ssrc="0200009999")
    invite = SipRequest("INVITE", f"sip:{channel_id}@{target[0]}:{target[1]}", h, body)
    uac.send_request(invite, target)
    resp = await asyncio.wait_for(answered, 10)
    ack = Headers()
    for name in ("From", "Call-ID"):
        ack.add(name, invite.headers.get(name))
    ack.add("To", resp.headers.get("To"))
    ack.add("CSeq", "1 ACK")
    uac.send_request(SipRequest("ACK", invite.uri, ack), target)
    await asyncio.sleep(seconds)
    bye = Headers()
    for name in ("From", "Call-ID"):
        bye.add(name, invite.headers.get(name))
    bye.add("To", resp.headers.get("To"))
    bye.add("CSeq", "2 BYE")
    uac.send_request(SipRequest("BYE", invite.uri, bye), target)
    await asyncio.sleep(0.2)
    await uac.close()
    media.close()
    return lat


async def drive(args) -> None:
    import tempfile

    from gbsim import SimConfig, Simulator
    from tests.e2e.platform import STRONG_SIP_PASSWORD, PlatformProcess, free_port

    low = free_port()
    data = Path(tempfile.mkdtemp(prefix="gbops-latency-"))
    platform = PlatformProcess(data, GBOPS_RTP_PORTS=f"{low}-{low + 20}", GBOPS_MEDIA_HOST="127.0.0.1",
                               GBOPS_WEBRTC_LOOPBACK="true").start()
    sim = Simulator(SimConfig(server=("127.0.0.1", platform.sip_port), devices=2, channels=1,
                              password=STRONG_SIP_PASSWORD, codec=args.codec, size=args.size))
    await sim.start()
    try:
        await sim.wait_until(lambda s: s.registered == 2, 20)
        channels = [sim.cfg.channel_ids(i)[0] for i in range(2)]
        for dev, ch in zip(sim.device_ids, channels, strict=True):
            await asyncio.to_thread(platform.wait_for, lambda d=dev, c=ch: any(
                x["channel_id"] == c for x in platform.get(f"/api/devices/{d}/channels").json()["items"]),
                20, "catalog")
        clicks, lats, whep_first = [], [], []
        for _ in range(args.repeats):
            t_click = time.monotonic()
            r = await asyncio.to_thread(platform.post, f"/api/channels/{channels[0]}/live",
                                        {"transport": args.transport})
            r.raise_for_status()
            lat, first = await flv_latencies(platform.base, r.json()["flv_url"], args.seconds, args.codec, t_click)
            lats += lat
            clicks.append(first)
            # WHEP on the same (running) stream: time to first decoded frame
            r = await asyncio.to_thread(platform.post, f"/api/channels/{channels[0]}/live")
            whep_first.append(await whep_first_frame(platform.base, r.json()["whep_url"]))
            await asyncio.sleep(2.5)
        direct = await direct_latencies(sim, channels[1], args.seconds, args.codec)
        steady = [x for i, x in enumerate(lats) if i % int(args.seconds * 25) > 50]  # after the GOP burst
        d, g = statistics.median(direct), statistics.median(steady)
        print(f"reference, camera RTP straight to this process: median {d:.1f} ms, p95 {pct(direct, 0.95):.1f} ms "
              f"({len(direct)} frames)")
        print(f"through gbops, HTTP-FLV (capture -> tag arrival):  median {g:.1f} ms, p95 {pct(steady, 0.95):.1f} ms "
              f"({len(steady)} frames after the first 2 s); ratio {g / d:.2f}x the reference")
        print(f"  including the keyframe burst a joining viewer gets: median {statistics.median(lats):.0f} ms, "
              f"p95 {pct(lats, 0.95):.0f} ms (frames up to one GOP old, sent at once so the picture starts now)")
        print(f"first picture after POST /live (FLV): median {statistics.median(clicks) * 1000:.0f} ms "
              f"(runs: {', '.join(f'{c * 1000:.0f}' for c in clicks)})")
        print(f"WHEP first decoded frame after the offer: median {statistics.median(whep_first) * 1000:.0f} ms")
    finally:
        await sim.stop()
        platform.stop()
    print(f"goal: <= 500 ms median glass-to-glass, first picture <= 2 s ({args.codec} {args.size}, {args.transport})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--transport", default="udp", choices=["udp", "tcp-passive", "tcp-active"])
    ap.add_argument("--codec", default="h264", choices=["h264", "h265"])
    ap.add_argument("--size", default="1280x720")
    args = ap.parse_args()
    os.chdir(ROOT)
    import uvloop

    uvloop.run(drive(args))


if __name__ == "__main__":
    main()
