"""HTTPS end to end: a real ``gbops run`` with a configured certificate serves the API (and the video
outputs) over TLS only; its HTTP port answers 308 to the same path on HTTPS; every HTTPS answer carries
HSTS; TLS 1.1 and plain HTTP on the HTTPS port are refused; a bearer token is never taken from a URL, the
output URL token works once for its session, and neither appears in the platform's log."""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import warnings

import httpx
import pytest

from gbcore import tls
from gbcore.settings import Settings
from gbsim import SimConfig, Simulator
from tests.e2e.platform import STRONG_SIP_PASSWORD, PlatformProcess, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture
def cert(tmp_path):
    """A certificate made by the test (as an operator would bring one): SAN 127.0.0.1 and localhost."""
    paths = tmp_path / "site.crt", tmp_path / "site.key"
    tls.generate_self_signed(Settings(data_dir=tmp_path / "gen", http_host="127.0.0.1"), *paths)
    return paths


@pytest.fixture
def platform(tmp_path, cert):
    low = free_port()
    p = PlatformProcess(tmp_path / "data", GBOPS_TLS_CERT_FILE=str(cert[0]), GBOPS_TLS_KEY_FILE=str(cert[1]),
                        GBOPS_RTP_PORTS=f"{low}-{low + 20}", GBOPS_MEDIA_HOST="127.0.0.1",
                        GBOPS_LIVE_IDLE_TIMEOUT="1").start()
    yield p
    p.stop()


def test_api_over_tls_redirect_hsts_and_old_protocols_refused(platform: PlatformProcess, cert) -> None:
    assert platform.https and platform.base.startswith("https://")
    # the API over TLS, the platform verified against the operator's certificate (host name included)
    r = platform.get("/api/devices")
    assert r.status_code == 200 and r.url.scheme == "https"
    assert r.headers["strict-transport-security"] == "max-age=31536000"
    r = httpx.get(platform.base + "/api/devices", verify=platform.verify)  # refusals carry HSTS too
    assert r.status_code == 401 and r.headers["strict-transport-security"] == "max-age=31536000"
    fingerprint = tls.load_certificate(Settings(tls_cert_file=cert[0], tls_key_file=cert[1]),
                                       announce=False).fingerprint_sha256
    assert re.search(rf"tls.certificate .*fingerprint_sha256={fingerprint}", platform.log())
    assert "http.https" in platform.log()

    # HTTP on the old port only redirects: 308 (method and body kept) to the same path and query
    plain = f"http://127.0.0.1:{platform.http_port}"
    for method in ("GET", "POST"):
        r = httpx.request(method, plain + "/api/devices?page=2&q=x", json={} if method == "POST" else None)
        assert r.status_code == 308, r.text
        assert r.headers["location"] == f"https://127.0.0.1:{platform.https_port}/api/devices?page=2&q=x"
        assert "strict-transport-security" not in r.headers  # HSTS is only believed over HTTPS
    # ... keeping the host name the browser used, and never reflecting a forged one
    r = httpx.get(plain + "/console/", headers={"Host": f"localhost:{platform.http_port}"})
    assert r.headers["location"] == f"https://localhost:{platform.https_port}/console/"
    r = httpx.get(plain + "/", headers={"Host": "evil.example/@x"})
    assert r.headers["location"] == f"https://127.0.0.1:{platform.https_port}/"
    # followed by a client, it lands on the API over TLS
    r = httpx.get(plain + "/api/health", follow_redirects=True, verify=platform.verify)
    assert r.status_code == 200 and r.url.scheme == "https"

    # the HTTPS port speaks TLS only
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{platform.https_port}/api/health", timeout=5)
    # TLS 1.1 refused, TLS 1.2 accepted
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        old.check_hostname, old.verify_mode = False, ssl.CERT_NONE
        old.set_ciphers("DEFAULT:@SECLEVEL=0")
        old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
    # (uvloop's TLS ends the handshake without an alert: the client sees EOF; tests/gbcore/test_tls.py shows
    # that this client does get TLS 1.1 from a server that allows it)
    with socket.create_connection(("127.0.0.1", platform.https_port), timeout=5) as raw, \
            pytest.raises(ssl.SSLError, match="PROTOCOL_VERSION|UNSUPPORTED_PROTOCOL|UNEXPECTED_EOF"):
        old.wrap_socket(raw)
    tls12 = ssl.create_default_context(cafile=str(cert[0]))
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    assert httpx.get(platform.base + "/api/health", verify=tls12).status_code == 200


def test_no_bearer_token_from_urls_and_no_token_in_logs(platform: PlatformProcess) -> None:
    token = platform.login()
    # the API never takes a bearer token from the query string, whatever the parameter is called
    for name in ("access_token", "token", "t", "bearer", "authorization", "api_key"):
        r = httpx.get(platform.base + "/api/devices", params={name: token}, verify=platform.verify)
        assert r.status_code == 401, (name, r.status_code)
        r = httpx.get(platform.base + "/api/devices", params={name: f"Bearer {token}"}, verify=platform.verify)
        assert r.status_code == 401, (name, r.status_code)
    # ... nor from a cookie
    r = httpx.get(platform.base + "/api/devices", cookies={"access_token": token, "token": token},
                  verify=platform.verify)
    assert r.status_code == 401

    async def live() -> tuple[str, str]:
        sim = Simulator(SimConfig(server=("127.0.0.1", platform.sip_port), devices=1, channels=1,
                                  password=STRONG_SIP_PASSWORD, first_id="34020000001320000001", size="320x180"))
        await sim.start()
        try:
            assert await sim.wait_until(lambda s: s.registered == 1, 30), sim.progress_line()
            device, channel = sim.device_ids[0], sim.cfg.channel_ids(0)[0]
            await asyncio.to_thread(platform.wait_for, lambda: (r := platform.get(f"/api/devices/{device}/channels"))
                                    .status_code == 200 and any(c["channel_id"] == channel for c in r.json()["items"]),
                                    30, "the catalog")
            r = await asyncio.to_thread(platform.post, f"/api/channels/{channel}/live", {"transport": "udp"})
            assert r.status_code == 201, r.text
            body = r.json()
            # relative output URLs: the browser stays on the scheme and host it came with (HTTPS here)
            assert body["flv_url"].startswith("/flv/") and body["whep_url"].startswith("/whep/")
            url = body["flv_url"]
            t = url.split("?t=", 1)[1]

            def play_once() -> int:
                n = 0
                with httpx.stream("GET", platform.base + url, timeout=10, verify=platform.verify) as resp:
                    assert resp.status_code == 200, resp.read()
                    assert resp.url.scheme == "https"  # the FLV output rides the same TLS
                    for chunk in resp.iter_bytes():
                        n += len(chunk)
                        if n > 20_000:
                            break
                return n

            assert await asyncio.to_thread(play_once) > 20_000
            # single use: the same URL again is refused (404: says nothing about the session)
            again = await asyncio.to_thread(httpx.get, platform.base + url, timeout=10, verify=platform.verify)
            assert again.status_code == 404
            return t, body["session_id"]
        finally:
            await sim.stop()

    t, session_id = asyncio.run(live())
    # the session id alone (no token, or a forged one) grants nothing
    assert httpx.get(f"{platform.base}/flv/{session_id}.flv", verify=platform.verify).status_code == 401
    forged = f"{t.split('.')[0]}.AAAA"
    assert httpx.get(f"{platform.base}/flv/{session_id}.flv?t={forged}", verify=platform.verify).status_code == 404

    platform.stop()  # flush the log
    log = platform.log()
    assert "http.listening" in log and "live" in log
    assert token not in log and token[:16] not in log
    assert t not in log and t.split(".")[1][:16] not in log
    assert "?t=" not in log
