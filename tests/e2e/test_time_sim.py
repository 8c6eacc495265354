"""Time end to end (issue 16) against a real ``gbops run``: its NTP server answers a raw SNTP request within
10 ms of this host's clock with the right fields; two simulated devices (``gbops sim --clock-offset``), one 3 s
ahead and one 0.2 s ahead, are asked DeviceStatus by the platform itself within seconds of registering; the
3 s one is flagged (``clock_skew`` security event and alert, a fault ticket with GBOPS_CLOCK_SKEW_TICKET) and
the 0.2 s one is not, however often it is checked; the compliance share says 1 of 2; an offline device's check
is 409."""

from __future__ import annotations

import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.platform import STRONG_SIP_PASSWORD, PlatformProcess, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

AHEAD = "34020000001320000031"  # 3 s ahead
CLOSE = "34020000001320000041"  # 0.2 s ahead
NTP_DELTA = 2_208_988_800


def sntp(port: int) -> tuple[dict, float, float]:
    """A raw SNTP v4 request (RFC 4330) to the platform; its answer's fields and our send/receive times."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        sent = time.time()
        secs, frac = int(sent) + NTP_DELTA, int((sent % 1) * 2**32)
        request = struct.pack("!B3x11I", (4 << 3) | 3, *([0] * 9), secs, frac)
        s.sendto(request, ("127.0.0.1", port))
        data, _ = s.recvfrom(512)
        received = time.time()
    first, stratum, _poll, precision, _rd, _rdisp, refid = struct.unpack("!BBbbII4s", data[:16])
    rs, rf, ts, tf = struct.unpack("!4I", data[32:48])
    return ({"leap": first >> 6, "version": (first >> 3) & 7, "mode": first & 7, "stratum": stratum,
             "precision": precision, "ref_id": refid, "origin": data[24:32], "request_transmit": request[40:48],
             "receive": rs - NTP_DELTA + rf / 2**32, "transmit": ts - NTP_DELTA + tf / 2**32, "size": len(data)},
            sent, received)


def spawn_sim(platform: PlatformProcess, first_id: str, offset: float, log: Path) -> subprocess.Popen:
    out = open(log, "wb")  # noqa: SIM115 - the process owns it until it ends
    return subprocess.Popen(
        [sys.executable, "-m", "gbops.cli", "sim", "--server", f"127.0.0.1:{platform.sip_port}", "--devices", "1",
         "--channels", "1", "--first-id", first_id, "--clock-offset", str(offset), "--duration", "180",
         "--record-hours", "0"],
        env={**platform.env, "GBOPS_SIM_PASSWORD": STRONG_SIP_PASSWORD}, stdout=out, stderr=subprocess.STDOUT)


@pytest.fixture
def platform(tmp_path: Path):
    ntp_port = free_port()
    p = PlatformProcess(tmp_path / "data", GBOPS_NTP_PORT=str(ntp_port), GBOPS_NTP_HOST="127.0.0.1",
                        GBOPS_CLOCK_FIRST_CHECK_DELAY="1", GBOPS_CLOCK_SKEW_TICKET="true").start()
    p.ntp_port = ntp_port  # type: ignore[attr-defined]
    yield p
    p.stop()


def test_ntp_server_and_device_clock_skew(platform: PlatformProcess, tmp_path: Path) -> None:
    # --- the NTP server: a raw SNTP client, within 10 ms of this host's clock
    for _ in range(3):
        f, sent, received = sntp(platform.ntp_port)  # type: ignore[attr-defined]
        assert f["size"] == 48 and (f["leap"], f["version"], f["mode"]) == (0, 4, 4)
        assert f["stratum"] == 10 and f["ref_id"] == b"LOCL" and -32 <= f["precision"] <= -10
        assert f["origin"] == f["request_transmit"]
        offset = ((f["receive"] - sent) + (f["transmit"] - received)) / 2
        assert abs(offset) < 0.010, offset
        assert received - sent < 0.5
    status = platform.get("/api/time/status").json()
    assert status["ntp_server"]["running"] is True and status["ntp_server"]["port"] == platform.ntp_port  # type: ignore[attr-defined]
    assert status["synchronised"] is True and status["reference"] == "local" and status["healthy"] is True

    sims = [spawn_sim(platform, AHEAD, 3.0, tmp_path / "sim-ahead.log"),
            spawn_sim(platform, CLOSE, 0.2, tmp_path / "sim-close.log")]
    try:
        # --- the platform asks each device's clock by itself soon after it registers
        def online() -> bool:
            return all(platform.get(f"/api/devices/{d}").status_code == 200 and
                       platform.get(f"/api/devices/{d}").json()["online"] for d in (AHEAD, CLOSE))

        def sampled() -> bool:
            return all(platform.get(f"/api/devices/{d}/clock").json()["samples"] >= 1 for d in (AHEAD, CLOSE))

        platform.wait_for(online, 60, "both simulated devices online")
        registered_by = time.monotonic()
        platform.wait_for(sampled, 60, "the first automatic clock samples")
        assert time.monotonic() - registered_by < 60
        ahead = platform.get(f"/api/devices/{AHEAD}/clock").json()
        close = platform.get(f"/api/devices/{CLOSE}/clock").json()
        assert ahead["within_limit"] is False and abs(ahead["skew_s"] - 3.0) <= ahead["uncertainty_s"] + 0.05, ahead
        assert close["within_limit"] is True and abs(close["skew_s"] - 0.2) <= close["uncertainty_s"] + 0.05, close
        assert ahead["worst_24h_s"] > 2 and ahead["last_checked"].endswith("Z")

        # --- checked again and again: the 0.2 s device is never flagged, its estimate narrows
        for _ in range(4):
            r = platform.post(f"/api/devices/{CLOSE}/clock/check")
            assert r.status_code == 200, r.text
            assert r.json()["within_limit"] is True, r.json()
            time.sleep(0.35)
        r = platform.post(f"/api/devices/{AHEAD}/clock/check")
        assert r.status_code == 200 and r.json()["within_limit"] is False
        close = platform.get(f"/api/devices/{CLOSE}/clock").json()
        assert close["samples"] >= 5 and abs(close["worst_24h_s"]) <= 1.0, close

        # --- the requirement's measure
        c = platform.get("/api/time/compliance").json()
        assert (c["measured"], c["within"], c["share"]) == (2, 1, 0.5), c
        assert [d["device_id"] for d in c["devices_over"]] == [AHEAD]

        # --- the alert: one clock_skew event for the 3 s device (once per crossing), none for the other
        events = platform.get("/api/security/events", kind="clock_skew").json()["items"]
        assert [e["device_id"] for e in events] == [AHEAD], events
        platform.wait_for(lambda: any(a.get("rule") == "clock_skew" for a in
                                      platform.get("/api/security/alerts").json()["items"]), 30, "the clock alert")
        tickets = platform.wait_for(lambda: platform.get("/api/tickets", device_id=AHEAD).json()["items"], 30,
                                    "the clock ticket")
        assert len(tickets) == 1 and tickets[0]["kind"] == "fault" and "时钟" in tickets[0]["note"]
        assert platform.get("/api/tickets", device_id=CLOSE).json()["items"] == []

        # --- an offline device cannot be checked
        sims[1].send_signal(signal.SIGINT)
        sims[1].wait(30)
        platform.wait_for(lambda: platform.post(f"/api/devices/{CLOSE}/clock/check").status_code == 409, 30,
                          "409 for the device gone offline")
    finally:
        for p in sims:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
    log = platform.log()
    assert "clock.skew_over_limit" in log
