"""Alarms through the portal (issue 14), on SQLite and PostgreSQL, with a fake alarm service
(tests/portal/test_alarms_fakes.py; the real one in test_alarms_service.py): the list cut to the caller's scope with its filters and Beijing times,
acknowledging with a note (audited; another tenant's alarm is 404), and the live feed as Server-Sent Events
(an in-scope alarm arrives, an out-of-scope one does not, heartbeats, the end when the client goes or the
token ends).  The feed is read straight from the ASGI app (httpx's ASGI transport buffers whole answers)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from ops_portal.control import alarm_routes

from .conftest import Portal, bearer
from .org_data import CA1, CA2, CB1, CX1, IPC, NVR, build_tree
from .test_alarms_fakes import FakeAlarms, alarm

T = datetime(2025, 3, 1, 6, 5, 9, tzinfo=UTC)  # 14:05:09 Beijing time


async def _entries(portal: Portal, action: str) -> list[dict[str, Any]]:
    rows = [json.loads(e.data) async for e in portal.audit.store.iter_entries(0, 10**9)]
    return [e for e in rows if e["action"] == action]


@pytest.fixture
async def al(audited: Portal) -> dict[str, Any]:
    tree = await build_tree(audited.registry)
    service = FakeAlarms()
    audited.app.state.alarms = service
    await service.record(NVR, alarm(CA1, priority=1, method=5, type=2, time=T, description="东门移动侦测",
                                    longitude=108.94, latitude=34.34))
    await service.record(NVR, alarm(CB1, priority=2, method=5, type=6, time=T, description="西门入侵"))
    await service.record(IPC, alarm(CX1, priority=3, method=2, type=1, time=T, description="独立相机视频丢失"))
    await service.record(NVR, alarm(CA2, priority=4, method=6, type=1, time=datetime(2025, 3, 2, tzinfo=UTC)))
    await audited.add_user("east", permissions={"alarm.read", "alarm.ack"}, org_nodes=[tree.va])
    await audited.add_user("chief", permissions={"alarm.read", "alarm.ack"})
    await audited.add_user("reader", permissions={"alarm.read"}, org_nodes=[tree.va])
    return {"tree": tree, "service": service, **{n: bearer(await audited.login(n)) for n in ("east", "chief", "reader")}}


async def test_list_in_scope_with_filters(audited: Portal, al: dict[str, Any]) -> None:
    r = await audited.client.get("/api/alarms", headers=al["east"])
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert {(i["device_id"], i["channel_id"]) for i in items} == {(NVR, CA1), (NVR, CA2)}
    assert r.json()["total"] == 2
    first = next(i for i in items if i["channel_id"] == CA1)
    assert first == {"id": 1, "device_id": NVR, "channel_id": CA1, "priority": 1, "method": 5, "type": 2,
                     "time": "2025-03-01T14:05:09+08:00", "description": "东门移动侦测", "longitude": 108.94,
                     "latitude": 34.34, "acknowledged": False, "acknowledged_by": None, "acknowledged_at": None,
                     "note": None, "received_at": "2025-03-01T14:05:10+08:00"}
    # the service was asked for the caller's channels only
    refs = al["service"].searches[-1]["refs_filter"]
    assert {(r.device_id, r.channel_id) for r in refs} == {(NVR, CA1), (NVR, CA2)}
    # filters: priority, the device and channel, a window in Beijing time
    r = await audited.client.get("/api/alarms", headers=al["chief"], params={"priority": 3})
    assert [(i["device_id"], i["channel_id"]) for i in r.json()["items"]] == [(IPC, CX1)]
    r = await audited.client.get("/api/alarms", headers=al["chief"], params={"device_id": NVR, "channel_id": CB1})
    assert [i["channel_id"] for i in r.json()["items"]] == [CB1]
    r = await audited.client.get("/api/alarms", headers=al["chief"],
                                 params={"start": "2025-03-01T14:00:00", "end": "2025-03-01T15:00:00"})
    assert {i["channel_id"] for i in r.json()["items"]} == {CA1, CB1, CX1}
    assert al["service"].searches[-1]["start"] == datetime(2025, 3, 1, 6, 0, tzinfo=UTC)
    # another tenant's channel asked for by name: nothing
    r = await audited.client.get("/api/alarms", headers=al["east"], params={"device_id": NVR, "channel_id": CB1})
    assert r.status_code == 200 and r.json()["items"] == []
    for bad in ({"priority": 5}, {"start": "yesterday"}, {"start": "2025-03-02T00:00:00", "end": "2025-03-01T00:00:00"},
                {"device_id": "x" * 33}, {"channel_id": "../../etc"}):
        r = await audited.client.get("/api/alarms", headers=al["chief"], params=bad)
        assert r.status_code == 422, (bad, r.text)


async def test_a_service_that_leaks_is_cut_all_the_same(audited: Portal, al: dict[str, Any]) -> None:
    service: FakeAlarms = al["service"]
    original = service.search

    async def leaky(**kw: Any) -> Any:
        return await original(**{**kw, "refs_filter": None})

    service.search = leaky  # type: ignore[method-assign]
    r = await audited.client.get("/api/alarms", headers=al["east"])
    assert {i["channel_id"] for i in r.json()["items"]} == {CA1, CA2}


async def test_acknowledge(audited: Portal, al: dict[str, Any]) -> None:
    r = await audited.client.post("/api/alarms/1/ack", headers=al["east"], json={"note": " 已派人查看 "})
    assert r.status_code == 200, r.text
    assert r.json()["acknowledged"] is True and r.json()["acknowledged_by"] == "east"
    assert r.json()["note"] == "已派人查看" and r.json()["acknowledged_at"].endswith("+08:00")
    entry = (await _entries(audited, "alarm.ack"))[-1]
    assert entry["actor"]["name"] == "east" and entry["target"] == {"type": "channel", "id": f"{NVR}/{CA1}"}
    assert entry["detail"]["note"] == "已派人查看" and entry["detail"]["alarm_id"] == 1
    # another tenant's alarm and an unknown one look the same; without alarm.ack: 403
    for alarm_id in (2, 3, 999):
        r = await audited.client.post(f"/api/alarms/{alarm_id}/ack", headers=al["east"], json={"note": ""})
        assert r.status_code == 404 and r.json()["error"] == "alarm_not_found", r.text
    r = await audited.client.post("/api/alarms/1/ack", headers=al["reader"], json={})
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    assert not al["service"].items[1].acknowledged and not al["service"].items[2].acknowledged
    r = await audited.client.post("/api/alarms/1/ack", headers=al["east"], json={"note": "x" * 501})
    assert r.status_code == 422
    assert len(await _entries(audited, "alarm.ack")) == 1


async def test_without_the_alarm_service(audited: Portal, al: dict[str, Any]) -> None:
    audited.app.state.alarms = None
    r = await audited.client.get("/api/alarms", headers=al["east"])
    assert r.status_code == 200 and r.json()["items"] == []
    r = await audited.client.post("/api/alarms/1/ack", headers=al["east"], json={})
    assert r.status_code == 503 and r.json()["error"] == "alarms_unavailable"


# ---------------------------------------------------------------------------------------------- the live feed
class Feed:
    """One GET of the feed, driven straight through the ASGI app: ``chunks`` as they are sent."""

    def __init__(self, portal: Portal, headers: dict[str, str], path: str = "/api/alarms/stream") -> None:
        self.app = portal.app
        self.headers = headers
        self.path = path
        self.status: int | None = None
        self.content_type = ""
        self.chunks: asyncio.Queue[bytes] = asyncio.Queue()
        self.gone = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Feed:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
                 "scheme": "http", "path": self.path, "raw_path": self.path.encode(), "query_string": b"",
                 "root_path": "", "server": ("portal.test", 80), "client": ("127.0.0.1", 50000),
                 "headers": [(b"host", b"portal.test")]
                 + [(k.lower().encode(), v.encode()) for k, v in self.headers.items()]}
        sent_request = False

        async def receive() -> dict[str, Any]:
            nonlocal sent_request
            if not sent_request:
                sent_request = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await self.gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self.status = message["status"]
                self.content_type = dict(message["headers"]).get(b"content-type", b"").decode()
            elif message["type"] == "http.response.body":
                if message.get("body"):
                    self.chunks.put_nowait(message["body"])
                if not message.get("more_body"):
                    self.chunks.put_nowait(b"")  # the end

        self.task = asyncio.create_task(self.app(scope, receive, send))
        return self

    async def next(self, timeout: float = 3.0) -> str:
        return (await asyncio.wait_for(self.chunks.get(), timeout)).decode()

    async def __aexit__(self, *exc: Any) -> None:
        self.gone.set()
        assert self.task is not None
        await asyncio.wait_for(self.task, 5)


def _events(text: str) -> list[dict[str, Any]]:
    out = []
    for block in text.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":"))
        if lines.get("event") == "alarm":
            out.append(json.loads(lines["data"]))
    return out


async def test_feed_delivers_in_scope_alarms_only(audited: Portal, al: dict[str, Any]) -> None:
    service: FakeAlarms = al["service"]
    async with Feed(audited, al["east"]) as feed:
        first = await feed.next()
        assert feed.status == 200 and feed.content_type.startswith("text/event-stream")
        assert first.startswith("retry: 3000\n") and ": connected" in first
        for _ in range(300):  # the feed subscribes as it starts
            if service.subscribers:
                break
            await asyncio.sleep(0.01)
        await service.record(NVR, alarm(CB1, priority=1, description="西门（别人的）"))  # outside: must not arrive
        await service.record(IPC, alarm(CX1, priority=1))                               # outside
        await service.record(IPC, alarm(None, priority=1))                              # a device outside
        await service.record(NVR, alarm(CA1, priority=2, method=5, type=2, time=T, description="东门又一次"))
        chunk = await feed.next()
        events = _events(chunk)
        assert len(events) == 1, chunk
        assert events[0]["device_id"] == NVR and events[0]["channel_id"] == CA1 and events[0]["priority"] == 2
        assert events[0]["time"] == "2025-03-01T14:05:09+08:00" and events[0]["description"] == "东门又一次"
        assert chunk.startswith(f"id: {events[0]['id']}\nevent: alarm\n")
        assert feed.chunks.empty()
    # the client went: the stream ended and the subscription was closed
    assert service.closed_subscriptions == 1 and not service.subscribers


async def test_feed_full_scope_and_heartbeat_and_token_end(audited: Portal, al: dict[str, Any],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(alarm_routes, "HEARTBEAT_S", 0.05)
    service: FakeAlarms = al["service"]
    async with Feed(audited, al["chief"]) as feed:
        await feed.next()
        assert await feed.next() == ": heartbeat\n\n"
        await service.record(IPC, alarm(CX1, priority=3))
        text = ""
        while "event: alarm" not in text:
            text = await feed.next()
        assert _events(text)[0]["channel_id"] == CX1
        # the token is logged out: the feed ends at the next heartbeat
        r = await audited.client.post("/api/auth/logout", headers=al["chief"])
        assert r.status_code in (200, 204)
        while (chunk := await feed.next()) != "":
            assert "event: alarm" not in chunk
    assert service.closed_subscriptions == 1


async def test_feed_needs_the_permission_and_the_service(audited: Portal, al: dict[str, Any]) -> None:
    await audited.add_user("nobody", permissions={"device.read"})
    h = bearer(await audited.login("nobody"))
    r = await audited.client.get("/api/alarms/stream", headers=h)
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    assert (await audited.client.get("/api/alarms/stream")).status_code == 401
    audited.app.state.alarms = None
    r = await audited.client.get("/api/alarms/stream", headers=al["east"])
    assert r.status_code == 503 and r.json()["error"] == "alarms_unavailable"


async def test_list_walk_with_alarms_everywhere(audited: Portal) -> None:
    """The authz list walk (tests/portal/test_authz_walk.py) with alarms of every channel present: the scoped
    user's /api/alarms names no out-of-scope channel and does name its own."""
    from .test_scope_lists import IN_PAIR, OUT_PAIRS, walk_lists

    service = FakeAlarms()
    for d, c in sorted(OUT_PAIRS | {IN_PAIR}):
        await service.record(d, alarm(c, priority=1, time=T))
    audited.app.state.alarms = service
    await walk_lists(audited, False)
    assert service.searches, "GET /api/alarms was not walked"
    seen = [(a.device_id, a.channel_id) for a in service.items if (a.device_id, a.channel_id) == IN_PAIR]
    assert seen and {tuple(r) for r in service.searches[-1]["refs_filter"]} == {IN_PAIR}
