"""SIPp as the upper platform of a real ``gbops run`` (the lower) with a simulator device behind it.

tests/sipp/gb_upper_invite.xml challenges the lower's REGISTER (digest, qop auth) and checks it, then calls the
lower: OPTIONS, an INVITE (s=Play, PS over UDP to the test's receiver) for the shared channel, ACK, and, once
the test has the RTP it wants, BYE; then an INVITE for a channel that is not shared (404). The test receives
the RTP itself, checks SSRC and payload type against the SDP answer and that the PS reassembled from the
payloads decodes (ffprobe); the lower's audit has the INVITE, the BYE and the refusal.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from gbsim import SimConfig, Simulator
from tests.conftest import need_tool
from tests.e2e.platform import STRONG_SIP_PASSWORD, PlatformProcess, free_port
from tests.e2e.test_cascade_gbops import LOWER_ID, UPPER_DOMAIN, UPPER_ID, call

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SCENARIO = Path(__file__).resolve().parent.parent / "sipp" / "gb_upper_invite.xml"
FIRST = "34020000001180000101"
_ANSWER_RE = re.compile(r"INVITE 200 ssrc=(\d+) media=([\d.]+):(\d+) pt=(\d+) dir=(\w+) rtpmap=(.*)")


class RtpReceiver:
    """Collects RTP over UDP on 127.0.0.1 in a thread: every packet's header fields and its payload."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.packets: list[tuple[int, int, int, int, bytes]] = []  # (version, pt, seq, ssrc, payload)
        self.sources: set[tuple[str, int]] = set()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            if len(data) < 12:
                continue
            b0, b1, seq, _ts, ssrc = struct.unpack("!BBHII", data[:12])
            offset = 12 + 4 * (b0 & 0x0F)
            if b0 & 0x10 and len(data) >= offset + 4:
                offset += 4 + 4 * struct.unpack("!H", data[offset + 2:offset + 4])[0]
            end = len(data) - (data[-1] if b0 & 0x20 else 0)
            self.sources.add(addr)
            self.packets.append((b0 >> 6, b1 & 0x7F, seq, ssrc, data[offset:end]))

    def quiet(self, seconds: float = 1.5) -> bool:
        """True when no packet came during the next ``seconds``."""
        n = len(self.packets)
        time.sleep(seconds)
        return len(self.packets) == n

    def payload_bytes(self) -> int:
        return sum(len(p[4]) for p in list(self.packets))

    def write_ps(self, path: Path) -> None:
        path.write_bytes(b"".join(p[4] for p in list(self.packets)))

    def close(self) -> None:
        self._stop.set()
        self.thread.join(5)
        self.sock.close()


def probe_ps(path: Path) -> dict:
    """ffprobe's view of an MPEG-PS file: the video stream's codec and size, and how many frames decode."""
    r = subprocess.run(["ffprobe", "-v", "error", "-f", "mpeg", "-select_streams", "v:0", "-count_frames",
                        "-show_entries", "stream=codec_name,width,height,nb_read_frames", "-of", "json", str(path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    streams = json.loads(r.stdout).get("streams") or [{}]
    return streams[0]


def decodes(path: Path, frames: int) -> bool:
    try:
        return int(probe_ps(path).get("nb_read_frames") or 0) >= frames
    except (AssertionError, ValueError):
        return False


@pytest.fixture
async def lower(tmp_path):
    low = free_port()
    p = PlatformProcess(tmp_path / "lower", GBOPS_SIP_ID=LOWER_ID, GBOPS_RTP_PORTS=f"{low}-{low + 40}",
                        GBOPS_MEDIA_HOST="127.0.0.1", GBOPS_LIVE_IDLE_TIMEOUT="1").start()
    yield p
    p.stop()


async def test_sipp_upper_registers_calls_the_shared_channel_gets_rtp_and_is_refused_the_unshared(lower, tmp_path):
    sipp = need_tool("sipp")
    need_tool("ffprobe")
    sim = Simulator(SimConfig(server=("127.0.0.1", lower.sip_port), devices=1, channels=2,
                              password=STRONG_SIP_PASSWORD, codec="h264", size="320x180", fps=10, bitrate=300_000,
                              first_id=FIRST))
    await sim.start()
    rtp = RtpReceiver()
    port = free_port("udp")
    run_dir = tmp_path / "sipp"
    run_dir.mkdir()
    proc: asyncio.subprocess.Process | None = None

    def logs() -> str:
        return "".join(p.read_text("utf-8", "replace") for p in run_dir.glob("*_logs.log"))

    def messages() -> str:
        return "".join(p.read_text("utf-8", "replace") for p in run_dir.glob("*_messages.log"))

    def wait_log(text: str, timeout: float) -> str:
        lower.wait_for(lambda: text in logs(), timeout,
                       f"SIPp: {text!r}\n--- SIPp log ---\n{logs()[-3000:]}\n--- SIPp messages ---\n"
                       f"{messages()[-4000:]}")
        return logs()

    try:
        assert await sim.wait_until(lambda s: s.registered == 1, 20), sim.progress_line()
        device = sim.device_ids[0]
        shared, unshared = sim.cfg.channel_ids(0)[:2]
        await asyncio.to_thread(lower.wait_for, lambda: len(
            lower.get(f"/api/devices/{device}/channels").json()["items"]) == 2, 20, "the device's catalog")

        proc = await asyncio.create_subprocess_exec(
            sipp, "-sf", str(SCENARIO), "-i", "127.0.0.1", "-p", str(port), "-t", "u1", "-nostdin",
            "-timeout", "180s", "-trace_logs", "-trace_msg", "-set", "upid", UPPER_ID, "-set", "domain",
            UPPER_DOMAIN, "-set", "localid", LOWER_ID, "-set", "pw", STRONG_SIP_PASSWORD, "-set", "chan", shared,
            "-set", "unshared", unshared, "-set", "mport", str(rtp.port), "-set", "lower",
            f"127.0.0.1:{lower.sip_port}",
            cwd=run_dir, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)

        # the upper platform at the lower (SIPp's address), the first channel shared with it
        r = await asyncio.to_thread(call, lower, "POST", "/api/cascade/platforms", {
            "name": "SIPp 上级平台", "server_id": UPPER_ID, "server_domain": UPPER_DOMAIN, "host": "127.0.0.1",
            "port": port, "transport": "udp", "local_id": LOWER_ID, "username": LOWER_ID,
            "password": STRONG_SIP_PASSWORD, "expires": 3600, "keepalive_s": 5, "charset": "GB2312",
            "gb_version": "2016", "ptz_level": 5, "watermark": "tag", "enabled": True})
        assert r.status_code == 201, r.text
        pid = r.json()["id"]
        r = await asyncio.to_thread(call, lower, "PUT", f"/api/cascade/platforms/{pid}/share",
                                    {"org_nodes": [], "channels": [{"device_id": device, "channel_id": shared}]})
        assert r.status_code == 200, r.text
        await asyncio.to_thread(lower.wait_for, lambda: lower.get(
            f"/api/cascade/platforms/{pid}/status").json()["state"] == "registered", 30, "registered with SIPp")

        text = await asyncio.to_thread(wait_log, "OPTIONS 200 Allow=", 30)
        assert "REGISTER OK" in text and "AUTH FAILED" not in text
        [allow] = re.findall(r"OPTIONS 200 Allow=(.*)", text)
        assert "INVITE" in allow and "BYE" in allow, allow

        # the INVITE is answered with our SDP, and after the ACK the RTP comes to SIPp's offered port
        text = await asyncio.to_thread(wait_log, "PLAYING callid=", 45)
        [(ssrc, ip, aport, pt, direction, rtpmap)] = _ANSWER_RE.findall(text)
        assert (ip, pt, direction, rtpmap.strip()) == ("127.0.0.1", "96", "sendonly", "96 PS/90000"), text
        assert len(ssrc) == 10 and ssrc[0] == "0" and int(aport) > 0, ssrc  # live: 0 + digits 4-8 of our id
        ps = tmp_path / "upward.ps"

        def enough() -> bool:
            if rtp.payload_bytes() < 20_000:
                return False
            rtp.write_ps(ps)
            return decodes(ps, 20)

        await asyncio.to_thread(lower.wait_for, enough, 45, "RTP/PS that decodes at SIPp's media port", 1.0)
        packets = list(rtp.packets)
        assert {v for v, *_ in packets} == {2}
        assert {p for _, p, *_ in packets} == {96}
        assert {s for _, _, _, s, _ in packets} == {int(ssrc)}, "the SSRC of the SDP answer (y=)"
        assert rtp.sources == {("127.0.0.1", int(aport))}, (rtp.sources, aport)  # sent from the answered port
        steps = [(b - a) & 0xFFFF for a, b in zip([q[2] for q in packets], [q[2] for q in packets[1:]], strict=False)]
        assert all(0 < step < 100 for step in steps), "sequence numbers in order"
        assert sum(step - 1 for step in steps) <= len(packets) // 100, "at most 1 % lost on the loopback"
        info = await asyncio.to_thread(probe_ps, ps)
        assert info["codec_name"] == "h264" and (info["width"], info["height"]) == (320, 180), info
        status = (await asyncio.to_thread(lower.get, f"/api/cascade/platforms/{pid}/status")).json()
        assert status["streams"] == 1 and status["stream_list"][0]["channel_id"] == shared, status

        # the go signal: SIPp hangs up (BYE -> 200) and then asks for the unshared channel (404)
        [callid] = re.findall(r"PLAYING callid=(\S+)", text)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            go = (f"INFO sip:{UPPER_ID}@127.0.0.1:{port} SIP/2.0\r\n"
                  f"Via: SIP/2.0/UDP 127.0.0.1:{s.getsockname()[1]};branch=z9hG4bK-test-go\r\n"
                  f"From: <sip:test@127.0.0.1>;tag=go\r\nTo: <sip:{UPPER_ID}@{UPPER_DOMAIN}>\r\n"
                  f"Call-ID: {callid}\r\nCSeq: 1 INFO\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
            s.sendto(go.encode(), ("127.0.0.1", port))
        text = await asyncio.to_thread(wait_log, "UNSHARED 404", 45)
        assert "GO" in text and "BYE 200" in text, text
        await asyncio.to_thread(lower.wait_for, lambda: lower.get(
            f"/api/cascade/platforms/{pid}/status").json()["streams"] == 0, 20, "the upward leg ended")
        await asyncio.to_thread(lower.wait_for, rtp.quiet, 20, "the RTP stopped")

        # the lower's evidence: the INVITE and the upper's BYE for the shared channel, the refused one
        def requests() -> list[dict]:
            return lower.get(f"/api/cascade/platforms/{pid}/requests").json()["items"]

        items = await asyncio.to_thread(lower.wait_for, lambda: (
            r := requests()) and any(e["action"] == "cascade.refused" for e in r) and any(
            e["action"] == "cascade.bye" for e in r) and r, 20, "cascade.refused and cascade.bye")
        invites = [e["detail"] for e in items if e["action"] == "cascade.invite"]
        assert any(d["channel_id"] == shared and d["kind"] == "live" and d["result"] == "ok" and d["ssrc"] == ssrc
                   and d["transport"] == "udp" for d in invites), invites
        byes = [e["detail"] for e in items if e["action"] == "cascade.bye"]
        assert byes[0]["by"] == "upper" and byes[0]["channel_id"] == shared and byes[0]["packets"] > 0, byes
        refused = [e["detail"] for e in items if e["action"] == "cascade.refused"]
        assert refused[0]["method"] == "INVITE" and refused[0]["target"] == unshared, refused
        assert refused[0]["status"] == 404, refused
        assert STRONG_SIP_PASSWORD not in messages()
    finally:
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
        rtp.close()
        await sim.stop()
