"""A media node's own HTTP server (issue 17, ops_portal.live.output_app): only the outputs and the health
check; the output URL's token minted on that node works there once, and a console on another origin may
call it (CORS)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from gbcore.ids import ChannelRef
from gbcore.settings import Settings
from media_relay.service import MediaService
from media_relay.viewers import Viewer
from ops_portal.live import output_tokens
from ops_portal.live.output_app import create_output_app
from tests.media.fake_signalling import FakeSignalling

CAM = ChannelRef("34020000001320000001", "34020000001310000001")


class _Reader:
    codec = "h264"
    params = None

    def __init__(self) -> None:
        self.closed = False
        self._closed = asyncio.Event()
        self.stream = self

    def resync(self) -> None:
        pass

    async def get(self) -> Any:
        await self._closed.wait()
        raise EOFError("closed")

    def close(self) -> None:
        self.closed = True
        self._closed.set()


async def test_the_media_node_serves_outputs_and_health_only(tmp_path: Path) -> None:
    media = MediaService(FakeSignalling({CAM.device_id}), rtp_ports=(41100, 41110), domain="3402000000")

    async def open_reader(*_a: Any, **_kw: Any) -> _Reader:
        return _Reader()

    media.manager.open_reader = open_reader  # type: ignore[method-assign]
    app = create_output_app(settings=Settings(data_dir=tmp_path / "data"), sessionmaker=None, media=media)
    session = await media.open_viewer(CAM, Viewer(user_id=7, username="alice"))
    token = output_tokens.issue(session.session_id, 7)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.2:8080") as c:
        assert (await c.get("/api/health")).json()["status"] == "ok"
        assert (await c.get("/api/devices")).status_code == 404  # no portal API on a media node
        assert (await c.get(f"/live/{CAM.channel_id}")).status_code == 404
        assert (await c.get(f"/flv/{session.session_id}.flv")).status_code == 401
        wrong = output_tokens.issue(session.session_id, 8)
        r = await c.get(f"/flv/{session.session_id}.flv?t={wrong}")
        assert r.status_code == 404 and r.json()["error"] == "session_not_found"
        # a console on the portal's origin: the WHEP preflight is allowed, Location exposed
        r = await c.options(f"/whep/{session.session_id}?t={token}",
                            headers={"Origin": "http://127.0.0.1:8080", "Access-Control-Request-Method": "POST",
                                     "Access-Control-Request-Headers": "content-type"})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] in ("*", "http://127.0.0.1:8080")
        # the token works once (ASGITransport returns the body when it ends: the session is closed meanwhile)
        loop = asyncio.get_running_loop()
        loop.call_later(0.3, media.close_session, session.session_id, "test over")
        r = await c.get(f"/flv/{session.session_id}.flv?t={token}")
        assert r.status_code == 200 and r.headers["content-type"] == "video/x-flv"
        assert r.headers["access-control-allow-origin"] == "*"
        assert (await c.get(f"/flv/{session.session_id}.flv?t={token}")).status_code == 404
    await media.close()
