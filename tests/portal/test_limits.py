"""Limits on untrusted HTTP input (issue 11), against a real uvicorn server on 127.0.0.1 where the server
matters: the request body limit (413 without memory growth), the request-head timeout for slow clients,
the connection cap, X-Forwarded-For only from trusted proxies; and refusals (403) as audit evidence."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy import select

from gbcore.settings import Settings
from ops_portal.http_limits import address_key, forwarded_client_ip, parse_networks, uvicorn_config
from ops_portal.models import AuthToken

from .conftest import GOOD_PASSWORD, Portal, bearer
from .org_data import CA1, CB1, IPC, build_tree

MB = 1024 * 1024
BIG = 100 * MB


# ------------------------------------------------------------------------------------------ helpers
@asynccontextmanager
async def serving(app: FastAPI, settings: Settings, *, plain: bool = False) -> AsyncIterator[int]:
    """The app on a real uvicorn server at 127.0.0.1 (an ephemeral port): configured as the platform
    does (:func:`uvicorn_config`), or ``plain`` (uvicorn's defaults, h11: what the platform did before)."""
    options: dict[str, Any] = {"host": "127.0.0.1", "port": 0, "log_config": None, "access_log": False,
                               "lifespan": "off"}
    config = uvicorn.Config(app, http="h11", **options) if plain else uvicorn_config(app, settings, **options)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server._serve())  # _serve: no signal handlers taken over in the test process
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        try:
            await asyncio.wait_for(task, 10)
        except TimeoutError:
            server.force_exit = True
            await task


def vm_rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


class PeakRss:
    """The highest resident set size of this process (the server runs in it) while the block runs,
    sampled every millisecond by a thread."""

    def __init__(self) -> None:
        self.baseline = vm_rss_kib()
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, vm_rss_kib())
            time.sleep(0.001)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, vm_rss_kib())

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.baseline) / 1024


async def read_response(reader: asyncio.StreamReader, timeout: float = 30) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), timeout)
    return status, headers, body


async def offer_body(port: int, path: str, total: int, *, chunked: bool) -> tuple[int, bytes, int]:
    """POST ``total`` bytes to ``path`` (chunked, or with a Content-Length), from one reused 64 KiB block,
    reading the answer meanwhile; stops sending as soon as it arrives.  (status, body, bytes sent)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}"
    writer.write(f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n{framing}\r\n\r\n".encode())
    answer = asyncio.create_task(read_response(reader))
    block = b"x" * (64 * 1024)
    framed = f"{len(block):x}\r\n".encode() + block + b"\r\n" if chunked else block
    sent = 0
    try:
        while sent < total and not answer.done():
            writer.write(framed)
            await writer.drain()
            await asyncio.sleep(0)  # let the answer in
            sent += len(block)
        if chunked and not answer.done():
            writer.write(b"0\r\n\r\n")
    except ConnectionError:
        pass
    status, _, body = await answer
    writer.close()
    return status, body, sent


# ------------------------------------------------------------------------------------------ body limit
async def test_content_length_over_the_limit_is_refused_before_reading(portal: Portal) -> None:
    async def body() -> AsyncIterator[bytes]:  # never read: the answer comes from the declared length
        raise AssertionError("the body was read")
        yield b""

    r = await portal.client.post("/api/auth/login", content=body(),
                                 headers={"content-length": str(BIG), "content-type": "application/json"})
    assert r.status_code == 413
    assert r.json() == {"error": "body_too_large",
                        "message": f"请求体过大 / request body too large (limit {MB} bytes)"}
    assert r.headers["cache-control"] == "no-store"


async def test_streamed_body_is_cut_at_the_limit(portal: Portal) -> None:
    pulled = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal pulled
        block = b" " * 65536
        while pulled < BIG:
            pulled += len(block)
            yield block

    r = await portal.client.post("/api/auth/login", content=body(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"] == "body_too_large"
    assert pulled <= MB + 2 * 65536  # the rest was never even asked for


async def test_limit_is_larger_on_upload_routes_only(portal: Portal) -> None:
    s = portal.settings
    assert (s.http_body_limit, s.http_upload_limit) == (MB, 16 * MB)
    headers = await portal.user_token("alice")
    two_mib = b"\xff\xd8" + b"\0" * (2 * MB - 2)

    # 2 MiB: too large for an API body ...
    r = await portal.client.post("/api/auth/login", content=two_mib, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"] == "body_too_large"
    # ... but it reaches the snapshot upload route (which has its own image limit, and a ticket to find)
    r = await portal.client.put("/api/tickets/999999/snapshot", content=two_mib,
                                headers={**headers, "content-type": "image/jpeg"})
    assert r.status_code == 404, r.text
    # over the upload limit it does not
    r = await portal.client.put("/api/tickets/999999/snapshot", content=b"\0" * (16 * MB + 1),
                                headers={**headers, "content-type": "image/jpeg"})
    assert r.status_code == 413 and r.json()["message"].endswith(f"(limit {16 * MB} bytes)")
    # a small body still works
    r = await portal.client.post("/api/auth/login", json={"username": "alice", "password": GOOD_PASSWORD})
    assert r.status_code == 200


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "content-length"])
async def test_100_mb_login_body_costs_no_memory(portal: Portal, chunked: bool) -> None:
    async with serving(portal.app, portal.settings) as port:
        # warm up (first request imports, caches), then measure
        status, _, _ = await offer_body(port, "/api/auth/login", 4 * MB, chunked=chunked)
        assert status == 413
        with PeakRss() as rss:
            status, body, sent = await offer_body(port, "/api/auth/login", BIG, chunked=chunked)
        assert status == 413, body
        assert json.loads(body) == {"error": "body_too_large",
                                    "message": f"请求体过大 / request body too large (limit {MB} bytes)"}
        assert sent < 32 * MB  # refused long before the 100 MB were through
        assert rss.growth_mib < 8, f"RSS grew by {rss.growth_mib:.1f} MiB"

        # a client that sends everything anyway (httpx from a generator) gets the answer as well: the
        # server reads and discards the rest
        async def generate() -> AsyncIterator[bytes]:
            block = b"x" * 65536
            for _ in range(BIG // len(block)):
                yield block

        headers = {"content-type": "application/json"}
        if not chunked:
            headers["content-length"] = str(BIG)
        with PeakRss() as rss:
            async with httpx.AsyncClient(timeout=60) as client:
                r = await client.post(f"http://127.0.0.1:{port}/api/auth/login", content=generate(), headers=headers)
        assert r.status_code == 413 and r.json()["error"] == "body_too_large"
        assert rss.growth_mib < 8, f"RSS grew by {rss.growth_mib:.1f} MiB"


async def test_memory_measurement_sees_a_buffered_body(portal: Portal) -> None:
    """The control of the test above: with the limit out of the way the same server buffers the body
    (what every login did before), and the measurement shows it."""
    portal.settings.http_body_limit = 200 * MB
    async with serving(portal.app, portal.settings) as port:
        await offer_body(port, "/api/auth/login", MB, chunked=True)
        with PeakRss() as rss:
            status, _, sent = await offer_body(port, "/api/auth/login", 30 * MB, chunked=True)
    assert status == 422 and sent >= 30 * MB
    assert rss.growth_mib > 25, f"RSS grew by {rss.growth_mib:.1f} MiB only"


# ------------------------------------------------------------------------------------------ slow clients
async def _slow_client(port: int, stop: asyncio.Event) -> tuple[float, bytes]:
    """Sends a request head one byte every 0.1 s, never finishing it; (seconds until the server closed
    the connection, what it answered)."""
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    start = loop.time()

    async def trickle() -> None:
        head = b"GET /api/health HTTP/1.1\r\nHost: t\r\nX-Padding: " + b"a" * 1000
        try:
            for i in range(len(head)):
                if stop.is_set():
                    return
                writer.write(head[i:i + 1])
                await writer.drain()
                await asyncio.sleep(0.1)
        except ConnectionError:
            pass

    sender = asyncio.create_task(trickle())
    try:
        answer = await asyncio.wait_for(reader.read(), 8)  # until EOF
        return loop.time() - start, answer
    except TimeoutError:
        return float("inf"), b""
    finally:
        sender.cancel()
        writer.close()


async def test_slow_request_heads_are_closed_and_others_served(portal: Portal) -> None:
    portal.settings.http_header_timeout = 1.0
    stop = asyncio.Event()
    async with serving(portal.app, portal.settings) as port:
        slow = [asyncio.create_task(_slow_client(port, stop)) for _ in range(20)]
        await asyncio.sleep(0.5)
        async with httpx.AsyncClient(timeout=5) as client:
            t0 = time.monotonic()
            r = await client.get(f"http://127.0.0.1:{port}/api/health")
            served_in = time.monotonic() - t0
        assert r.status_code == 200 and served_in < 0.5
        results = await asyncio.gather(*slow)
        stop.set()
    for closed_after, answer in results:
        assert 0.9 <= closed_after < 2.5, closed_after
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:60]
        assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"] == "request_timeout"


async def test_plain_uvicorn_holds_a_slow_client(portal: Portal) -> None:
    """The control: uvicorn's own h11 protocol keeps the same client (what the platform did before)."""
    stop = asyncio.Event()
    async with serving(portal.app, portal.settings, plain=True) as port:
        task = asyncio.create_task(_slow_client(port, stop))
        done, _ = await asyncio.wait({task}, timeout=2.5)
        assert not done  # still open after 2.5 s
        stop.set()
        task.cancel()


async def test_refused_body_cannot_be_trickled_forever(portal: Portal) -> None:
    """After a 413 the server discards the rest of the body, but only within the header timeout."""
    portal.settings.http_header_timeout = 1.0
    async with serving(portal.app, portal.settings) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"POST /api/auth/login HTTP/1.1\r\nHost: t\r\nContent-Length: {BIG}\r\n\r\n".encode())
        status, _, _ = await read_response(reader)
        assert status == 413
        t0 = time.monotonic()
        closed = False
        for _ in range(40):
            try:
                writer.write(b"x")
                await writer.drain()
            except ConnectionError:
                closed = True
                break
            try:
                if await asyncio.wait_for(reader.read(1), 0.1) == b"":
                    closed = True
                    break
            except TimeoutError:
                pass
        writer.close()
        assert closed and time.monotonic() - t0 < 2.5


async def test_connection_cap(portal: Portal) -> None:
    portal.settings.http_max_connections = 5
    async with serving(portal.app, portal.settings) as port:
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(5)]
        await asyncio.sleep(0.1)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        status, headers, body = await read_response(reader, timeout=5)
        assert status == 503 and headers["retry-after"] == "5"
        assert json.loads(body)["error"] == "too_many_connections"
        assert await asyncio.wait_for(reader.read(), 5) == b""  # and closed
        writer.close()
        # one held connection goes away: a normal client is served again
        held[0][1].close()
        await asyncio.sleep(0.2)
        async with httpx.AsyncClient(timeout=5) as client:
            assert (await client.get(f"http://127.0.0.1:{port}/api/health")).status_code == 200
        for _, w in held[1:]:
            w.close()


def test_uvicorn_config_of_the_platform(tmp_path) -> None:
    settings = Settings(data_dir=tmp_path, http_header_timeout=7, http_max_connections=50)
    config = uvicorn_config(FastAPI(), settings)
    assert config.proxy_headers is False  # uvicorn would believe X-Forwarded-For from 127.0.0.1
    assert config.limit_concurrency == 51
    assert config.http.header_timeout == 7 and config.http.max_connections == 50  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="not an address"):
        uvicorn_config(FastAPI(), Settings(data_dir=tmp_path, trusted_proxies="10.0.0.1, proxy.local"))


# ------------------------------------------------------------------------------------------ X-Forwarded-For
def test_forwarded_client_ip() -> None:
    xff = ["198.51.100.7, 10.1.1.1"]
    assert forwarded_client_ip("127.0.0.1", xff, "") == "127.0.0.1"  # nobody trusted: the peer
    assert forwarded_client_ip("192.0.2.9", xff, "127.0.0.1") == "192.0.2.9"  # the peer is not a proxy
    assert forwarded_client_ip("127.0.0.1", xff, "127.0.0.1") == "10.1.1.1"  # right-most untrusted
    assert forwarded_client_ip("127.0.0.1", xff, "127.0.0.1, 10.0.0.0/8") == "198.51.100.7"
    assert forwarded_client_ip("127.0.0.1", ["6.6.6.6", "198.51.100.7"], "127.0.0.1") == "198.51.100.7"
    assert forwarded_client_ip("127.0.0.1", [], "127.0.0.1") == "127.0.0.1"
    assert forwarded_client_ip("127.0.0.1", ["garbage, 10.1.1.1"], "127.0.0.0/8,10.0.0.0/8") == "10.1.1.1"
    assert forwarded_client_ip("127.0.0.1", ["10.2.2.2:5555"], "127.0.0.1") == "10.2.2.2"
    assert forwarded_client_ip("::1", ["[2001:db8::5]:443"], "::1") == "2001:db8::5"
    assert forwarded_client_ip("::ffff:127.0.0.1", ["203.0.113.1"], "127.0.0.1") == "203.0.113.1"
    assert parse_networks(" 10.0.0.1 ,192.168.0.0/16,, ::1") == parse_networks("10.0.0.1/32,192.168.0.0/16,::1/128")
    assert address_key("2001:db8:1:2::7") == "2001:db8:1:2::/64" and address_key("192.0.2.1") == "192.0.2.1"


async def _logged_in_from(portal: Portal, headers: dict[str, str], base_url: str | None = None) -> str | None:
    if base_url is None:
        r = await portal.client.post("/api/auth/login", json={"username": "alice", "password": GOOD_PASSWORD},
                                     headers=headers)
    else:
        async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
            r = await client.post("/api/auth/login", json={"username": "alice", "password": GOOD_PASSWORD},
                                  headers=headers)
    assert r.status_code == 200, r.text
    async with portal.sessionmaker() as session:
        row = (await session.execute(select(AuthToken).order_by(AuthToken.id.desc()).limit(1))).scalar_one()
    return row.client_ip


async def test_forwarded_for_only_from_trusted_proxies(audited: Portal) -> None:
    await audited.add_user("alice")
    spoof = {"X-Forwarded-For": "6.6.6.6"}
    assert audited.settings.trusted_proxies == ""
    assert await _logged_in_from(audited, spoof) == "127.0.0.1"
    audited.settings.trusted_proxies = "127.0.0.1"
    assert await _logged_in_from(audited, {"X-Forwarded-For": "198.51.100.7, 10.1.1.1"}) == "10.1.1.1"
    audited.settings.trusted_proxies = "127.0.0.1,10.0.0.0/8"
    assert await _logged_in_from(audited, {"X-Forwarded-For": "198.51.100.7, 10.1.1.1"}) == "198.51.100.7"
    rows = [json.loads(e.data) async for e in audited.audit.store.iter_entries(0, 10**9)]
    assert [e["client_ip"] for e in rows if e["action"] == "auth.login"] == ["127.0.0.1", "10.1.1.1", "198.51.100.7"]


async def test_forwarded_for_ignored_by_the_real_server(portal: Portal) -> None:
    """uvicorn's proxy_headers (on by default, trusting 127.0.0.1) is off: a local client cannot write
    the address the audit log and the watermark show."""
    await portal.add_user("alice")
    spoof = {"X-Forwarded-For": "6.6.6.6"}
    async with serving(portal.app, portal.settings) as port:
        assert await _logged_in_from(portal, spoof, f"http://127.0.0.1:{port}") == "127.0.0.1"
    async with serving(portal.app, portal.settings, plain=True) as port:  # the control: what it was
        assert await _logged_in_from(portal, spoof, f"http://127.0.0.1:{port}") == "6.6.6.6"
    portal.settings.trusted_proxies = "127.0.0.1"
    async with serving(portal.app, portal.settings) as port:
        assert await _logged_in_from(portal, spoof, f"http://127.0.0.1:{port}") == "6.6.6.6"


# ------------------------------------------------------------------------------------------ refusals
async def _denials(portal: Portal) -> list[dict[str, Any]]:
    rows = [json.loads(e.data) async for e in portal.audit.store.iter_entries(0, 10**9)]
    return [e for e in rows if e["action"] == "access.denied"]


async def test_scope_refusal_is_audited(audited: Portal) -> None:
    tree = await build_tree(audited.registry)
    user = await audited.add_user("east", org_nodes=[tree.va])
    headers = bearer(await audited.login("east"))
    r = await audited.client.post(f"/api/channels/{CB1}/live", headers=headers, json={})
    assert r.status_code == 403 and r.json()["error"] == "channel_forbidden"
    r = await audited.client.get(f"/api/devices/{IPC}", headers=headers)
    assert r.status_code == 403 and r.json()["error"] == "device_forbidden"
    denials = await _denials(audited)
    assert len(denials) == 2
    first, second = denials
    assert first["actor"] == {"type": "user", "id": str(user.id), "name": "east"}
    assert first["target"] == {"type": "channel", "id": CB1}
    assert first["client_ip"] == "127.0.0.1"
    assert first["detail"] == {"route": "POST /api/channels/{channel_id}/live", "error": "channel_forbidden",
                               "params": {"channel_id": CB1}}
    assert second["target"] == {"type": "device", "id": IPC}
    assert second["detail"]["route"] == "GET /api/devices/{device_id}"
    # an allowed request is not a refusal
    r = await audited.client.post(f"/api/channels/{CA1}/live", headers=headers, json={})
    assert r.status_code != 403
    assert len(await _denials(audited)) == 2


async def test_permission_refusal_is_audited_other_403s_are_not(audited: Portal) -> None:
    headers = bearer(await _login_new(audited, "viewer", {"device.read"}))
    r = await audited.client.get("/api/users", headers=headers)
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    (entry,) = await _denials(audited)
    assert entry["detail"]["route"] == "GET /api/users" and entry["detail"]["error"] == "forbidden"
    assert entry["target"] == {"type": "route", "id": "GET /api/users"}
    # a 403 that is no refusal of permission or scope (a password still to change) is not evidence
    await audited.add_user("newbie", must_change_password=True)
    token = await audited.login("newbie")
    r = await audited.client.get("/api/devices", headers=bearer(token))
    assert r.status_code == 403 and r.json()["error"] == "password_change_required"
    assert len(await _denials(audited)) == 1


async def _login_new(portal: Portal, username: str, permissions: set[str]) -> str:
    await portal.add_user(username, permissions=permissions)
    return await portal.login(username)


async def test_refusal_audit_is_rate_limited_per_user(audited: Portal) -> None:
    s = audited.settings
    assert s.access_denied_audit_per_minute == 10
    denials_log = audited.app.state.denial_audit
    now = [1000.0]
    denials_log.clock = lambda: now[0]
    a = bearer(await _login_new(audited, "mallory", {"device.read"}))
    b = bearer(await _login_new(audited, "trent", {"device.read"}))

    answers = await asyncio.gather(*(audited.client.get("/api/users", headers=a) for _ in range(50)))
    assert {r.status_code for r in answers} == {403}
    entries = await _denials(audited)
    assert len(entries) == 10  # at most ~11: the per-minute allowance
    # another user has an allowance of their own
    assert (await audited.client.get("/api/roles", headers=b)).status_code == 403
    assert [e["actor"]["name"] for e in await _denials(audited)].count("trent") == 1

    # the minute rolls over: the next refusal brings the count of the suppressed ones, then itself
    now[0] += 61
    assert (await audited.client.get("/api/users", headers=a)).status_code == 403
    entries = [e for e in await _denials(audited) if e["actor"]["name"] == "mallory"]
    assert len(entries) == 12
    summary, last = entries[-2:]
    assert summary["detail"]["summary"] is True and summary["detail"]["suppressed"] == 40
    assert summary["target"] == {"type": "user", "id": entries[0]["actor"]["id"]}
    assert last["detail"]["route"] == "GET /api/users"

    # without a next refusal the summary is written when the minute is over (here: flushed at once)
    for _ in range(15):
        await audited.client.get("/api/users", headers=a)
    await denials_log.flush()
    entries = [e for e in await _denials(audited) if e["actor"]["name"] == "mallory"]
    assert len(entries) == 12 + 9 + 1 and entries[-1]["detail"]["suppressed"] == 6


async def test_refusal_summary_timer(audited: Portal, monkeypatch: pytest.MonkeyPatch) -> None:
    """The summary of a minute with suppressed refusals is written when the minute is over, even when
    the user stops there."""
    from ops_portal.app import DenialAudit

    monkeypatch.setattr(DenialAudit, "WINDOW", 0.5)
    audited.settings.access_denied_audit_per_minute = 2
    a = bearer(await _login_new(audited, "mallory", {"device.read"}))
    for _ in range(5):
        assert (await audited.client.get("/api/users", headers=a)).status_code == 403
    assert len(await _denials(audited)) == 2
    await asyncio.sleep(0.8)
    await asyncio.gather(*audited.app.state.denial_audit._tasks)
    entries = await _denials(audited)
    assert len(entries) == 3 and entries[-1]["detail"]["suppressed"] == 3
