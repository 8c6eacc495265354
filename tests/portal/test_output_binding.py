"""Viewer output URLs (HTTP-FLV, WHEP) are bound to the user who opened the session (issue 11): knowing a
session id (from the audit log, the SEI tag, anywhere) grants nothing; the URL the live answer returned
works once, for its owner; the owner's bearer token works too; closing the session ends the output.

The real :class:`media_relay.service.MediaService` with a fake upstream (no camera: a reader that yields
nothing until it is closed), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from media_relay.service import MediaService
from ops_portal.live import output_tokens
from tests.media.fake_signalling import FakeSignalling

from .conftest import Portal, bearer
from .org_data import CA1, NVR, Tree, build_tree


class FakeStream:
    codec = "h264"
    params = None
    gop: list = []


class FakeReader:
    """A reader on an upstream that never sends a picture; ``get`` ends (EOF) once the reader is closed."""

    def __init__(self) -> None:
        self.stream = FakeStream()
        self.closed = False
        self._closed = asyncio.Event()

    codec = "h264"
    params = None

    def resync(self) -> None:
        pass

    async def get(self) -> Any:
        await self._closed.wait()
        raise EOFError("closed")

    def close(self) -> None:
        self.closed = True
        self._closed.set()


@pytest.fixture
async def live(audited: Portal) -> dict[str, Any]:
    tree: Tree = await build_tree(audited.registry)
    audited.sip.online.add(NVR)
    media = MediaService(FakeSignalling({NVR}), rtp_ports=(41000, 41010), domain="3402000000")
    readers: list[FakeReader] = []

    async def open_reader(*_args: Any, **_kw: Any) -> FakeReader:
        readers.append(FakeReader())
        return readers[-1]

    media.manager.open_reader = open_reader  # type: ignore[method-assign]
    stops: list[tuple[str, str]] = []
    media.on_session_closed = lambda s, reason: stops.append((s.session_id, reason))
    audited.app.state.media = media
    await audited.add_user("owner", permissions={"live.view"}, org_nodes=[tree.va])
    await audited.add_user("curious", permissions={"live.view", "audit.read"}, org_nodes=[tree.vb])
    owner = bearer(await audited.login("owner"))
    curious = bearer(await audited.login("curious"))
    return {"media": media, "owner": owner, "curious": curious, "stops": stops, "readers": readers, "tree": tree}


async def _open(portal: Portal, headers: dict[str, str]) -> dict[str, Any]:
    r = await portal.client.post(f"/api/channels/{CA1}/live", headers=headers, json={})
    assert r.status_code == 201, r.text
    return r.json()


async def test_session_id_alone_grants_nothing(audited: Portal, live: dict[str, Any]) -> None:
    s = await _open(audited, live["owner"])
    sid = s["session_id"]
    assert s["flv_url"].startswith(f"/flv/{sid}.flv?t=") and s["whep_url"].startswith(f"/whep/{sid}?t=")
    token = s["flv_url"].split("?t=", 1)[1]
    assert token == s["whep_url"].split("?t=", 1)[1]
    owner_bearer = live["owner"]["Authorization"].split()[1]
    assert token != owner_bearer and owner_bearer not in s["flv_url"]

    # the curious scoped user reads the session id off the audit log ...
    entries = (await audited.client.get("/api/audit/entries", headers=live["curious"])).json()["items"]
    text = json.dumps(entries)
    assert token not in text  # the URL token never reaches the audit log
    # ... (or from anywhere else) and gets nothing from the output URLs
    sdp = {"content-type": "application/sdp"}
    for method, url, extra in (("GET", f"/flv/{sid}.flv", {}), ("POST", f"/whep/{sid}", sdp),
                               ("DELETE", f"/whep/{sid}", {})):
        r = await audited.client.request(method, url, headers=extra, content=b"v=0\r\n")
        assert r.status_code == 401, (method, r.status_code, r.text)
        r = await audited.client.request(method, url, headers={**extra, **live["curious"]}, content=b"v=0\r\n")
        assert r.status_code == 404 and r.json()["error"] == "session_not_found", (method, r.text)
        forged = output_tokens.issue(sid, 999)  # signed for another user: useless
        r = await audited.client.request(method, f"{url}?t={forged}", headers=extra, content=b"v=0\r\n")
        assert r.status_code == 404, (method, r.text)
        r = await audited.client.request(method, f"{url}?t=1.{'A' * 43}", headers=extra, content=b"v=0\r\n")
        assert r.status_code == 404, (method, r.text)
    # nothing of the session was used up or ended by those attempts
    assert sid in live["media"].sessions and live["media"].sessions[sid].output is None
    # the curious user's own (unrelated) session id does not unlock someone else's token either
    r = await audited.client.get(f"/flv/{sid}.flv?t={output_tokens.issue('other-session', live['media'].sessions[sid].user_id)}")
    assert r.status_code == 404


async def test_the_returned_url_works_once_for_its_owner_and_closing_ends_it(audited: Portal,
                                                                              live: dict[str, Any]) -> None:
    media = live["media"]
    s = await _open(audited, live["owner"])
    sid = s["session_id"]

    async def close_soon() -> float:
        await asyncio.sleep(0.3)
        t0 = time.monotonic()
        media.close_session(sid, "access_revoked")
        return t0

    closer = asyncio.create_task(close_soon())
    t_request = time.monotonic()
    r = await asyncio.wait_for(audited.client.get(s["flv_url"]), 5)  # no header: the URL token is enough
    t_closed = await closer
    # the response was served (200) and finished because the session was closed, not by a timeout
    assert r.status_code == 200 and r.headers["content-type"] == "video/x-flv"
    assert time.monotonic() - t_request < 3 and time.monotonic() >= t_closed
    assert (sid, "access_revoked") in live["stops"]
    assert all(reader.closed for reader in live["readers"])
    # single use: the same URL again gives nothing (and the session is gone anyway)
    r = await audited.client.get(s["flv_url"])
    assert r.status_code == 404


async def test_a_used_token_is_refused_even_while_the_session_lives(audited: Portal, live: dict[str, Any]) -> None:
    s = await _open(audited, live["owner"])
    sid = s["session_id"]
    user_id = live["media"].sessions[sid].user_id
    token = s["flv_url"].split("?t=", 1)[1]
    assert output_tokens.consume(token, sid, user_id)  # as the first GET would
    r = await audited.client.get(s["flv_url"])
    assert r.status_code == 404
    assert live["media"].sessions[sid].output is None
    # an expired token: refused
    old = output_tokens.issue(sid, user_id, expires=time.time() - 1)
    assert (await audited.client.get(f"/flv/{sid}.flv?t={old}")).status_code == 404
    # the owner's own bearer token still attaches (same user as the session)
    task = asyncio.create_task(audited.client.get(f"/flv/{sid}.flv", headers=live["owner"]))
    for _ in range(100):
        if live["media"].sessions.get(sid) is not None and live["media"].sessions[sid].output == "flv":
            break
        await asyncio.sleep(0.02)
    assert live["media"].sessions[sid].output == "flv"
    live["media"].close_session(sid, "deleted by the viewer")
    r = await asyncio.wait_for(task, 5)
    assert r.status_code == 200


async def test_whep_delete_with_the_whep_url_of_another_session_is_refused(audited: Portal,
                                                                           live: dict[str, Any]) -> None:
    a = await _open(audited, live["owner"])
    b = await _open(audited, live["owner"])
    token_a = a["whep_url"].split("?t=", 1)[1]
    r = await audited.client.delete(f"/whep/{b['session_id']}?t={token_a}")
    assert r.status_code == 404
    assert b["session_id"] in live["media"].sessions


def test_tokens_are_bound_to_session_user_and_time() -> None:
    t = output_tokens.issue("s1", 7, ttl=30)
    assert output_tokens.verify(t, "s1", 7)
    assert not output_tokens.verify(t, "s2", 7) and not output_tokens.verify(t, "s1", 8)
    assert not output_tokens.verify(t, "s1", 7, now=time.time() + 31)
    assert output_tokens.verify(t, "s1", 7, now=time.time() + 31, allow_expired=True)
    assert output_tokens.consume(t, "s1", 7) and not output_tokens.consume(t, "s1", 7)
    for bad in ("", "x", "1.", ".abc", "abc.def", "9" * 13 + ".x"):
        assert not output_tokens.verify(bad, "s1", 7)

