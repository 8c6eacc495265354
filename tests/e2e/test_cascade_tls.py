"""Cascade over SIP TLS (GB/T 28181-2022 §8.2) with real peers: a second ``gbops run`` is the upper platform,
listening on SIP over TLS with a certificate made by the test (SAN 127.0.0.1).

* The lower trusts that certificate (``GBOPS_CASCADE_TLS_CA_FILE``) and is configured with transport ``tls``:
  it registers over TLS, the upper sees it online (over TLS), keepalives are answered, and the upper's catalog
  query is answered on that connection with the shared channel.
* A lower trusting another CA does not register: its status (``GET /api/cascade/platforms``) is offline with
  "证书校验失败 / certificate verification failed", and the upper never sees it.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from gbcore import tls
from gbcore.settings import Settings
from gbsim import SimConfig, Simulator
from tests.e2e.platform import STRONG_SIP_PASSWORD, PlatformProcess, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

UPPER_ID = "34010000002000000001"
UPPER_DOMAIN = "3401000000"
LOWER_ID = "34020000002000000001"


def _certificate(tmp_path, name: str) -> tuple:
    paths = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    tls.generate_self_signed(Settings(data_dir=tmp_path / f"gen-{name}", http_host="127.0.0.1"), *paths)
    return paths


@pytest.fixture
def upper(tmp_path):
    """The upper: SIP over TLS on a free port with the operator's certificate (its portal is HTTPS with it)."""
    cert, key = _certificate(tmp_path, "upper")
    p = PlatformProcess(tmp_path / "upper", GBOPS_SIP_ID=UPPER_ID, GBOPS_SIP_DOMAIN=UPPER_DOMAIN,
                        GBOPS_SIP_TLS_PORT=str(free_port("tcp")), GBOPS_TLS_CERT_FILE=str(cert),
                        GBOPS_TLS_KEY_FILE=str(key))
    p.tls_port = int(p.env["GBOPS_SIP_TLS_PORT"])
    p.cert = cert
    p.start()
    yield p
    p.stop()


def _lower(path, ca_file) -> PlatformProcess:
    # the lower's own SIP TLS listener stays off: outbound TLS to the upper needs none
    return PlatformProcess(path, GBOPS_SIP_ID=LOWER_ID, GBOPS_CASCADE_TLS_CA_FILE=str(ca_file)).start()


def _put(p: PlatformProcess, path: str, json) -> httpx.Response:
    return httpx.put(p.base + path, json=json, headers={"Authorization": f"Bearer {p.login()}"}, timeout=30,
                     verify=p.verify)


def _add_upper(lower: PlatformProcess, upper: PlatformProcess) -> int:
    r = lower.post("/api/cascade/platforms", {
        "name": "省厅视频共享平台（TLS）", "server_id": UPPER_ID, "server_domain": UPPER_DOMAIN,
        "host": "127.0.0.1", "port": upper.tls_port, "transport": "tls", "local_id": LOWER_ID,
        "username": LOWER_ID, "password": STRONG_SIP_PASSWORD, "expires": 3600, "keepalive_s": 5})
    assert r.status_code == 201, r.text
    assert r.json()["transport"] == "tls"
    return r.json()["id"]


async def test_lower_registers_to_the_upper_over_tls_and_serves_its_catalog(upper, tmp_path) -> None:
    lower = _lower(tmp_path / "lower", upper.cert)
    sim = Simulator(SimConfig(server=("127.0.0.1", lower.sip_port), devices=1, channels=1,
                              password=STRONG_SIP_PASSWORD, first_id="34020000001180000031", media=False))
    await sim.start()
    try:
        assert await sim.wait_until(lambda s: s.registered == 1, 20), sim.progress_line()
        nvr = sim.device_ids[0]
        [chan] = await asyncio.to_thread(lower.wait_for, lambda: lower.get(
            f"/api/devices/{nvr}/channels").json()["items"], 20, "the device's catalog at the lower")
        pid = await asyncio.to_thread(_add_upper, lower, upper)
        r = await asyncio.to_thread(_put, lower, f"/api/cascade/platforms/{pid}/share", {
            "org_nodes": [], "channels": [{"device_id": nvr, "channel_id": chan["channel_id"]}]})
        assert r.status_code == 200, r.text

        status = await asyncio.to_thread(lower.wait_for, lambda: (s := lower.get(
            f"/api/cascade/platforms/{pid}/status").json())["state"] == "registered" and s, 30,
            "registered with the upper over TLS")
        assert status["last_error"] in (None, "")

        # the upper: the lower online, registered over its TLS port (the connection the lower opened)
        device = await asyncio.to_thread(upper.wait_for, lambda: (r := upper.get(f"/api/devices/{LOWER_ID}"))
                                         .status_code == 200 and r.json()["online"] and r.json(), 30,
                                         "the lower online at the upper")
        assert device["online"]
        online = [ln for ln in upper.log().splitlines() if f"device.online device_id={LOWER_ID}" in ln]
        assert online and "transport=tls" in online[0], online
        # its catalog query goes back over that connection, the answer carries the shared channel
        r = await asyncio.to_thread(upper.post, f"/api/devices/{LOWER_ID}/catalog-sync")
        assert r.status_code in (200, 202), r.text
        [up_chan] = await asyncio.to_thread(upper.wait_for, lambda: upper.get(
            f"/api/devices/{LOWER_ID}/channels").json()["items"], 30, "the lower's shared channel at the upper")
        assert up_chan["channel_id"] == chan["channel_id"] and up_chan["name"] == chan["name"]
        # keepalives over TLS are answered (every 5 s here)
        await asyncio.to_thread(lower.wait_for, lambda: lower.get(
            f"/api/cascade/platforms/{pid}/status").json()["last_keepalive"], 20, "a keepalive answered over TLS")
        [item] = lower.get("/api/cascade/platforms").json()["items"]
        assert item["transport"] == "tls" and item["status"]["state"] == "registered"
    finally:
        await sim.stop()
        lower.stop()


async def test_a_certificate_that_fails_verification_is_not_registered_and_says_why(upper, tmp_path) -> None:
    other, _ = _certificate(tmp_path, "other")  # the lower trusts this CA, not the upper's certificate
    lower = _lower(tmp_path / "lower", other)
    try:
        pid = await asyncio.to_thread(_add_upper, lower, upper)
        item = await asyncio.to_thread(lower.wait_for, lambda: next(
            (i for i in lower.get("/api/cascade/platforms").json()["items"]
             if i["id"] == pid and (i["status"] or {}).get("last_error")), None), 30,
            "the registration failing with its reason")
        assert item["status"]["state"] == "offline"
        assert item["status"]["last_error"].startswith("证书校验失败 / certificate verification failed")
        assert item["status"]["registered_until"] is None
        # the upper never saw it: no REGISTER reached it (the handshake failed before any SIP)
        await asyncio.sleep(1.0)
        assert upper.get(f"/api/devices/{LOWER_ID}").status_code == 404
        assert "sip.tls_handshake_failed" in upper.log()
        # the state change is on the lower's audit log with the reason
        entries = lower.get("/api/audit/entries", limit=200).json()["items"]
        assert any("证书校验失败" in str(e.get("detail")) for e in entries)
    finally:
        lower.stop()
