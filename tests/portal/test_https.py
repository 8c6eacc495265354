"""The portal's HTTPS pieces below the app (ops_portal.http_limits): HSTS on HTTPS answers, and behind a
reverse proxy only when a trusted proxy says the client came over HTTPS; the redirect app (308, same path and
query, the client's host name but never a forged one); the uvicorn config with and without TLS. The real
listeners are tested end to end in tests/e2e/test_https.py."""

from __future__ import annotations

import ssl

import httpx
import pytest
from fastapi import FastAPI

from gbcore import tls
from gbcore.settings import Settings
from ops_portal.http_limits import HstsMiddleware, redirect_app, uvicorn_config


def _app() -> FastAPI:
    app = FastAPI()

    @app.get("/hello")
    async def hello() -> dict:
        return {"ok": True}

    return app


async def _get(app, path: str, *, client=("127.0.0.1", 5000), **kw) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, client=client)
    async with httpx.AsyncClient(transport=transport, base_url="http://portal.test") as c:
        return await c.get(path, **kw)


async def test_hsts_on_every_answer_when_https() -> None:
    app = HstsMiddleware(_app(), 600)
    assert (await _get(app, "/hello")).headers["strict-transport-security"] == "max-age=600"
    r = await _get(app, "/missing")
    assert r.status_code == 404 and r.headers["strict-transport-security"] == "max-age=600"


async def test_hsts_behind_a_proxy_only_from_trusted_proxies() -> None:
    app = HstsMiddleware(_app(), 600, trusted_proxies="10.0.0.5")
    https = {"X-Forwarded-Proto": "https"}
    r = await _get(app, "/hello", client=("10.0.0.5", 4000), headers=https)
    assert r.headers["strict-transport-security"] == "max-age=600"
    # the proxy appends: its own (right-most) word counts, not what the client wrote before it
    r = await _get(app, "/hello", client=("10.0.0.5", 4000), headers={"X-Forwarded-Proto": "https, http"})
    assert "strict-transport-security" not in r.headers
    r = await _get(app, "/hello", client=("10.0.0.5", 4000))
    assert "strict-transport-security" not in r.headers
    # anybody else's header is not believed
    r = await _get(app, "/hello", client=("192.0.2.9", 4000), headers=https)
    assert "strict-transport-security" not in r.headers


@pytest.mark.parametrize(("host", "location"), [
    ("portal.example:8080", "https://portal.example:8443/api/x?a=1&b=%2F"),
    ("portal.example", "https://portal.example:8443/api/x?a=1&b=%2F"),
    ("[2001:db8::1]:8080", "https://[2001:db8::1]:8443/api/x?a=1&b=%2F"),
    ("evil.example/@x", "https://10.1.2.3:8443/api/x?a=1&b=%2F"),  # forged: the configured host instead
    ("a b", "https://10.1.2.3:8443/api/x?a=1&b=%2F"),
    ("[not-v6]:80", "https://10.1.2.3:8443/api/x?a=1&b=%2F"),
])
async def test_redirect_keeps_path_and_query_and_checks_the_host(host: str, location: str) -> None:
    r = await _get(redirect_app(8443, "10.1.2.3"), "/api/x?a=1&b=%2F", headers={"Host": host})
    assert r.status_code == 308 and r.headers["location"] == location
    assert r.json()["error"] == "https_required"


async def test_redirect_to_the_default_port_and_no_open_redirect() -> None:
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    async def receive() -> dict:
        return {"type": "http.request", "body": b""}

    app = redirect_app(443, "0.0.0.0")
    for raw, expected in ((b"/console/", "https://portal.example/console/"),
                          (b"//evil.example/x", "https://portal.example/")):  # not a scheme-relative URL
        sent.clear()
        await app({"type": "http", "method": "GET", "path": raw.decode(), "raw_path": raw, "query_string": b"",
                   "headers": [(b"host", b"portal.example")]}, receive, send)
        assert sent[0]["status"] == 308 and dict(sent[0]["headers"])[b"location"].decode() == expected


def test_uvicorn_config_with_and_without_tls(tmp_path) -> None:
    s = Settings(data_dir=tmp_path, http_host="0.0.0.0", http_port=8080, https_port=8443)
    plain = uvicorn_config(_app(), s)
    assert plain.port == 8080 and not plain.is_ssl
    material = tls.load_certificate(s, announce=False)
    config = uvicorn_config(_app(), s, tls=material)
    assert config.port == 8443 and config.is_ssl and isinstance(config.app, HstsMiddleware)
    config.load()
    assert isinstance(config.ssl, ssl.SSLContext) and config.ssl.minimum_version == ssl.TLSVersion.TLSv1_2
