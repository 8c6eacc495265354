"""A SIPp camera (../shared/peers/sipp/device.sh) on a real `gbops run`, and a spoofer on another UDP port
claiming its id: keepalive, catalog NOTIFY (a fake channel ADD, the real channel OFF) and BYE all get 403,
nothing changes (channels, route, presence), the next DeviceStatus query is answered by the camera, and
each refusal is on the audit log as ``security.sip_refused``."""

from __future__ import annotations

import socket

import pytest

from sip_server.gb import manscdp
from sip_server.sip import parse_message
from tests.e2e.platform import STRONG_SIP_PASSWORD, PlatformProcess
from tests.e2e.test_sipp_device import DOMAIN, SERVER_ID, run_sipp_device

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DEVICE = "34020000001320000055"
CHANNEL = DEVICE[:10] + "131" + DEVICE[13:]
FAKE = DEVICE[:10] + "131" + "0000999"


@pytest.fixture
def platform(tmp_path):
    p = PlatformProcess(tmp_path / "data").start()
    yield p
    p.stop()


def spoof(sock: socket.socket, server: tuple[str, int], method: str, n: int, body: bytes = b"") -> int:
    local = sock.getsockname()
    head = [f"{method} sip:{SERVER_ID}@{DOMAIN} SIP/2.0",
            f"Via: SIP/2.0/UDP {local[0]}:{local[1]};rport;branch=z9hG4bKspoof{n}",
            f"From: <sip:{DEVICE}@{DOMAIN}>;tag=s{n}", f"To: <sip:{SERVER_ID}@{DOMAIN}>",
            f"Call-ID: spoof{n}@evil", f"CSeq: {n} {method}", "Max-Forwards: 70"]
    if body:
        head.append("Content-Type: Application/MANSCDP+xml")
    head.append(f"Content-Length: {len(body)}")
    sock.sendto(("\r\n".join(head) + "\r\n\r\n").encode() + body, server)
    while True:
        msg = parse_message(sock.recv(65536))
        if not msg.is_request and msg.status >= 200:
            return msg.status


def test_spoofer_on_another_port_changes_nothing(platform: PlatformProcess, shared_dir, tmp_path):
    proc = run_sipp_device(shared_dir, platform, DEVICE, STRONG_SIP_PASSWORD, tmp_path, seconds=30, keepalives=6)
    try:
        dev = platform.wait_for(
            lambda: (r := platform.get(f"/api/devices/{DEVICE}")).status_code == 200 and r.json()["online"]
            and r.json(), 15, "the SIPp camera online")
        registered = dev["remote_addr"]
        platform.wait_for(lambda: [c["channel_id"] for c in platform.get(f"/api/devices/{DEVICE}/channels")
                                   .json()["items"]] == [CHANNEL], 15, "its catalog")
        server = ("127.0.0.1", platform.sip_port)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(5)
            assert f"127.0.0.1:{sock.getsockname()[1]}" != registered
            keepalive = manscdp.build_message("Notify", "Keepalive", 901, DEVICE, extra={"Status": "OK"})
            assert spoof(sock, server, "MESSAGE", 1, keepalive) == 403
            items = [manscdp.CatalogItem(device_id=FAKE, name="fake", status="ON", event="ADD"),
                     manscdp.CatalogItem(device_id=CHANNEL, name="SIPp Camera 01", status="OFF", event="OFF")]
            assert spoof(sock, server, "NOTIFY", 2, manscdp.build_catalog_notify(902, DEVICE, 2, items)) == 403
            assert spoof(sock, server, "MESSAGE", 3, manscdp.build_catalog_response(903, DEVICE, 1, items[:1])) == 403
            assert spoof(sock, server, "BYE", 4) == 403

        dev = platform.get(f"/api/devices/{DEVICE}").json()
        assert dev["online"] is True and dev["remote_addr"] == registered
        channels = platform.get(f"/api/devices/{DEVICE}/channels").json()["items"]
        assert [(c["channel_id"], c["online"]) for c in channels] == [(CHANNEL, True)]
        # the next query goes to the camera (which answers it), not to the spoofer
        status = platform.get(f"/api/devices/{DEVICE}/status")
        assert status.status_code == 200, status.text
        assert status.json()["result"] == "OK"

        def refused():
            return platform.get("/api/audit/entries", action="security.sip_refused", target=DEVICE).json()["items"]

        entries = platform.wait_for(lambda: len(refused()) == 4 and refused(), 10, "4 audit entries")
        assert {e["detail"]["method"] for e in entries} == {"MESSAGE", "NOTIFY", "BYE"}
        assert all(e["target"] == {"type": "device", "id": DEVICE} and e["client_ip"] == "127.0.0.1"
                   and e["detail"]["kind"] == "address_mismatch" for e in entries)
        assert platform.get("/api/sip/metrics").json()["identity_refusals"] == 4
    finally:
        proc.terminate()  # `timeout` passes SIGTERM on to sipp
        proc.communicate(timeout=20)
