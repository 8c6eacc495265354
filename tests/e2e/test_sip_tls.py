"""SIP over TLS (GB/T 28181-2022 §8.2) end to end: a real ``gbops run`` with ``GBOPS_SIP_TLS_PORT`` and its
self-signed certificate; a simulated camera registers over TLS (verifying the platform against that
certificate), comes online and is played live (the INVITE goes over its TLS connection); a camera that
trusts another certificate does not get in; a plain TCP client speaking SIP to the TLS port is dropped
without an answer; the TLS port shares the TCP connection caps and idle timeout."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from gbcore import tls
from gbcore.settings import Settings
from gbsim import SimConfig, Simulator
from tests.e2e.platform import STRONG_SIP_PASSWORD, PlatformProcess, free_port, read_flv

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CAMERA = "34020000001320000071"


@pytest.fixture
def platform(tmp_path):
    low = free_port()
    p = PlatformProcess(tmp_path / "data", GBOPS_SIP_TLS_PORT=str(free_port("tcp")),
                        GBOPS_RTP_PORTS=f"{low}-{low + 20}", GBOPS_MEDIA_HOST="127.0.0.1",
                        GBOPS_LIVE_IDLE_TIMEOUT="1", GBOPS_SIP_TCP_IDLE_TIMEOUT="4",
                        GBOPS_SIP_TCP_MAX_PER_ADDRESS="3")
    p.tls_port = int(p.env["GBOPS_SIP_TLS_PORT"])
    p.start()
    yield p
    p.stop()


def _closed_without_answer(sock: socket.socket, limit: float) -> tuple[bool, bytes]:
    """(closed by the platform within ``limit`` s, what it sent before closing)."""
    sock.settimeout(0.5)
    got = b""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            data = sock.recv(4096)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return True, got
        if not data:
            return True, got
        got += data
    return False, got


def _register(device_id: str, port: int) -> bytes:
    body = (f"REGISTER sip:34020000002000000001@3402000000 SIP/2.0\r\n"
            f"Via: SIP/2.0/TCP 127.0.0.1:{port};branch=z9hG4bKplain1\r\n"
            f"From: <sip:{device_id}@3402000000>;tag=p1\r\nTo: <sip:{device_id}@3402000000>\r\n"
            f"Call-ID: plain1@127.0.0.1\r\nCSeq: 1 REGISTER\r\nContact: <sip:{device_id}@127.0.0.1:{port}>\r\n"
            f"Max-Forwards: 70\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n")
    return body.encode()


async def test_camera_registers_over_tls_and_plays_live(platform: PlatformProcess, tmp_path) -> None:
    cert = platform.data_dir / "tls" / "cert.pem"  # generated at the first start, reused afterwards
    log = platform.log()
    assert f"tls/127.0.0.1:{platform.tls_port}" in log  # sip.listening names the TLS listener
    fingerprint = tls.load_certificate(Settings(data_dir=platform.data_dir), announce=False).fingerprint_sha256
    assert fingerprint in log  # printed once at generation, and logged

    # a camera that trusts another certificate does not get in (the simulator verifies)
    other = tmp_path / "other.crt", tmp_path / "other.key"
    tls.generate_self_signed(Settings(data_dir=tmp_path / "x"), *other)
    wrong = Simulator(SimConfig(server=("127.0.0.1", platform.tls_port), devices=1, channels=1, transport="tls",
                                tls_ca_file=str(other[0]), password=STRONG_SIP_PASSWORD,
                                first_id="34020000001320000072", media=False))
    await wrong.start()
    try:
        assert await wrong.wait_until(
            lambda s: "certificate verify failed" in (s.devices[0].last_error or "").lower(), 30), \
            (wrong.progress_line(), wrong.devices[0].last_error)
        assert wrong.registered == 0
    finally:
        await wrong.stop(unregister=False)

    sim = Simulator(SimConfig(server=("127.0.0.1", platform.tls_port), devices=1, channels=1, transport="tls",
                              tls_ca_file=str(cert), password=STRONG_SIP_PASSWORD, first_id=CAMERA,
                              size="320x180", keepalive=5))
    await sim.start()
    try:
        assert await sim.wait_until(lambda s: s.online == 1, 30), (sim.progress_line(), sim.devices[0].last_error)
        channel = sim.cfg.channel_ids(0)[0]
        dev = await asyncio.to_thread(platform.wait_for, lambda: (r := platform.get(f"/api/devices/{CAMERA}"))
                                      .status_code == 200 and r.json()["online"] and r.json(), 30, "camera online")
        assert dev["remote_addr"] == f"127.0.0.1:{sim.local_addresses[0][1]}"
        assert f"device.online device_id={CAMERA}" in platform.log()
        assert "transport=tls" in [ln for ln in platform.log().splitlines()
                                     if f"device.online device_id={CAMERA}" in ln][0]
        # the platform's own requests (catalog query, INVITE) reach the camera over its TLS connection:
        # the simulator has no other way in
        await asyncio.to_thread(platform.wait_for, lambda: any(
            c["channel_id"] == channel for c in platform.get(f"/api/devices/{CAMERA}/channels").json()["items"]),
            30, "the catalog over TLS")
        r = await asyncio.to_thread(platform.post, f"/api/channels/{channel}/live", {"transport": "udp"})
        assert r.status_code == 201, r.text

        def play() -> int:
            with open(tmp_path / "tls.flv", "wb") as f:
                return read_flv(platform, r.json()["flv_url"], 2, f)

        assert await asyncio.to_thread(play) > 10_000

        # a plain TCP client speaking SIP to the TLS port: no SIP answer, dropped at once
        with socket.create_connection(("127.0.0.1", platform.tls_port), timeout=5) as plain:
            plain.sendall(_register("34020000001320000073", plain.getsockname()[1]))
            closed, got = await asyncio.to_thread(_closed_without_answer, plain, 10)
        assert closed and b"SIP/2.0" not in got

        # the TLS port shares the TCP caps: 2 silent connections on the TCP port and 1 on the TLS port hold
        # the 3 unregistered connections allowed per address; the next one on the TLS port is refused
        held = [socket.create_connection(("127.0.0.1", platform.sip_port), timeout=5) for _ in range(2)]
        held.append(socket.create_connection(("127.0.0.1", platform.tls_port), timeout=5))
        await asyncio.sleep(0.5)
        try:
            with socket.create_connection(("127.0.0.1", platform.tls_port), timeout=5) as extra:
                closed, _ = await asyncio.to_thread(_closed_without_answer, extra, 3)
                assert closed, "over the per-address cap"
            # ... and a silent TLS connection (no handshake) is closed by the idle timeout (4 s here)
            closed, _ = await asyncio.to_thread(_closed_without_answer, held[2], 15)
            assert closed, "silent connection on the TLS port held open"
        finally:
            for s in held:
                s.close()

        # the camera is still online over TLS, keepalives flowing
        await asyncio.sleep(1)
        assert sim.online == 1
        assert (await asyncio.to_thread(platform.get, f"/api/devices/{CAMERA}")).json()["online"]
    finally:
        await sim.stop()
    # (the plain speaker's handshake failure, or an earlier one: only the first of each 100 is logged)
    platform.wait_for(lambda: "sip.tls_handshake_failed" in platform.log() and "sip.tcp_refused" in platform.log(),
                      30, "the refusals in the log")
