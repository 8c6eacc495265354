"""Revocation ends running live views within 5 s (issue 11), in a running platform (``gbops run`` + simulated
camera): a real HTTP client reads each viewer's FLV stream while an administrator disables the user, revokes
their sessions, or takes their role away; each FLV connection closes within 5 s and the audit log says
``live.stop`` with reason ``access_revoked``."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import httpx
import pytest

from tests.e2e.platform import PlatformProcess
from tests.watermark.live.test_live_platform import start_platform, with_camera

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PASSWORD = "Viewer-pass#2026x"
NEW_PASSWORD = "Viewer-pass#2027y"


def make_viewer(platform: PlatformProcess, name: str, role_id: int) -> tuple[int, dict[str, str]]:
    r = platform.post("/api/users", {"username": name, "password": PASSWORD, "role_ids": [role_id]})
    assert r.status_code == 201, r.text
    user_id = r.json()["user"]["id"]
    r = httpx.post(platform.base + "/api/auth/login", json={"username": name, "password": PASSWORD})
    r.raise_for_status()
    token = r.json()["access_token"]
    r = httpx.post(platform.base + "/api/auth/password", headers={"Authorization": f"Bearer {token}"},
                   json={"old_password": PASSWORD, "new_password": NEW_PASSWORD})
    assert r.status_code in (200, 204), r.text
    r = httpx.post(platform.base + "/api/auth/login", json={"username": name, "password": NEW_PASSWORD})
    r.raise_for_status()
    return user_id, {"Authorization": f"Bearer {r.json()['access_token']}"}


class FlvReader(threading.Thread):
    """Reads an FLV URL like a player until the server ends the response; records when that happened."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.bytes = 0
        self.status: int | None = None
        self.ended_at: float | None = None
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            with httpx.stream("GET", self.url, timeout=httpx.Timeout(10, read=30)) as r:
                self.status = r.status_code
                for chunk in r.iter_bytes():
                    self.bytes += len(chunk)
        except Exception as exc:  # noqa: BLE001 - recorded; the test asserts on it
            self.error = exc
        finally:
            self.ended_at = time.monotonic()


async def watch(platform: PlatformProcess, channel: str, headers: dict[str, str]) -> tuple[str, FlvReader]:
    r = await asyncio.to_thread(httpx.post, platform.base + f"/api/channels/{channel}/live", headers=headers,
                                json={}, timeout=10)
    assert r.status_code == 201, r.text
    live = r.json()
    reader = FlvReader(platform.base + live["flv_url"])
    reader.start()
    def playing() -> bool:
        deadline = time.monotonic() + 15
        while reader.bytes < 20_000 and time.monotonic() < deadline and reader.ended_at is None:
            time.sleep(0.1)
        return reader.bytes >= 20_000

    await asyncio.to_thread(playing)
    assert reader.status == 200 and reader.bytes >= 20_000 and reader.ended_at is None, vars(reader)
    return live["session_id"], reader


async def test_revoked_access_ends_running_flv_views_within_5_s(tmp_path: Any) -> None:
    platform = await asyncio.to_thread(start_platform, tmp_path / "data")
    sim = None
    try:
        sim, channel = await with_camera(platform)
        r = platform.post("/api/roles", {"name": "viewers", "permissions": ["live.view"], "full_scope": True})
        assert r.status_code == 201, r.text
        role_id = r.json()["id"]
        actions = {
            "disable": lambda uid: httpx.patch(
                platform.base + f"/api/users/{uid}", json={"disabled": True},
                headers={"Authorization": f"Bearer {platform.login()}"}, timeout=10),
            "revoke": lambda uid: platform.post(f"/api/users/{uid}/revoke"),
            "role_removed": lambda uid: httpx.patch(
                platform.base + f"/api/users/{uid}", json={"role_ids": []},
                headers={"Authorization": f"Bearer {platform.login()}"}, timeout=10),
        }
        for name, act in actions.items():
            uid, headers = await asyncio.to_thread(make_viewer, platform, f"viewer-{name.replace('_', '-')}",
                                                   role_id)
            session_id, reader = await watch(platform, channel, headers)
            t0 = time.monotonic()
            r = await asyncio.to_thread(act, uid)
            assert r.status_code == 200, (name, r.text)
            await asyncio.to_thread(reader.join, 10)
            assert reader.ended_at is not None, f"{name}: the FLV connection is still open after 10 s"
            took = reader.ended_at - t0
            assert took < 5.0, f"{name}: the FLV connection closed only after {took:.1f} s"

            def stopped(sid: str = session_id) -> dict | None:
                items = platform.get("/api/audit/entries", action="live.stop").json()["items"]
                return next((i for i in items if i["detail"].get("session_id") == sid), None)

            entry = await asyncio.to_thread(platform.wait_for, stopped, 5, f"live.stop of {name}")
            assert entry["detail"]["reason"] == "access_revoked", (name, entry)
            assert entry["actor"]["id"] == str(uid)
    finally:
        if sim is not None:
            await sim.stop()
        await asyncio.to_thread(platform.stop)
