"""Helpers of the operator's story (tests/e2e/test_operator_story.py): a simulated camera that streams, a
browser context that records what went wrong in it (JavaScript errors, console errors, every response with a
status of 400 or more), a user whose role is limited to one organisation node, and the checks that repeat."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.console_support import SimThread
from tests.e2e.platform import PlatformProcess


def start_streaming_sim(sims: SimThread, name: str, sip_port: int, device_id: str, *, channels: int,
                        password: str) -> Any:
    """One device registering at 127.0.0.1:``sip_port`` with its own password that answers INVITE and streams
    a small picture (SimThread.start has no media); returns its Simulator."""
    from gbsim import SimConfig, Simulator

    async def go() -> Any:
        sim = Simulator(SimConfig(server=("127.0.0.1", sip_port), devices=1, channels=channels, password=password,
                                  first_id=device_id, device_type=device_id[10:13], media=True, size="320x180",
                                  fps=10, bitrate=300_000, seed=18))
        await sim.start()
        sims.sims[name] = sim
        return sim

    return sims.call(go())


@dataclass
class Watch:
    """What went wrong in one browser context: page errors, console errors, responses >= 400."""

    errors: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    failed: list[tuple[int, str, str]] = field(default_factory=list)  # (status, method, path with query)

    def attach(self, page: Any, base: str) -> None:
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("console", lambda m: self.console.append(f"{m.text} @ {m.location.get('url', '')}")
                if m.type == "error" else None)

        def response(r: Any) -> None:
            if r.status >= 400:
                self.failed.append((r.status, r.request.method, r.url.removeprefix(base)))

        page.on("response", response)


def open_console(browser: Any, base: str, username: str, password: str, viewport: dict[str, int],
                 watch: Watch) -> tuple[Any, Any]:
    """A new context (Los Angeles time, the console's CSP in force, downloads accepted) logged in: (context,
    page)."""
    context = browser.new_context(viewport=viewport, timezone_id="America/Los_Angeles", accept_downloads=True)
    page = context.new_page()
    watch.attach(page, base)
    page.goto(base + "/console/")
    page.wait_for_selector("#login-form")
    page.fill("#login-username", username)
    page.fill("#login-password", password)
    page.click("#login-submit")
    page.wait_for_selector(".sidenav", state="attached")  # behind the 菜单 button on a phone
    return context, page


def scoped_user(p: PlatformProcess, username: str, password: str, node_id: int, permissions: list[str]) -> str:
    """A role limited to organisation node ``node_id`` with ``permissions``, a user with it; the first login's
    password change done through the API; the password to log in with returned."""
    r = p.post("/api/roles", {"name": f"{username}-role", "permissions": permissions, "org_node_ids": [node_id]})
    assert r.status_code == 201, r.text
    r = p.post("/api/users", {"username": username, "password": password, "role_ids": [r.json()["id"]]})
    assert r.status_code == 201, r.text
    r = httpx.post(p.base + "/api/auth/login", json={"username": username, "password": password}, timeout=30)
    r.raise_for_status()
    if not r.json().get("must_change_password"):
        return password
    new = password + "x"
    httpx.post(p.base + "/api/auth/password", headers={"Authorization": f"Bearer {r.json()['access_token']}"},
               json={"old_password": password, "new_password": new}, timeout=30).raise_for_status()
    return new


def no_sideways_scroll(page: Any) -> None:
    page.wait_for_timeout(300)  # a layout pass after a resize or navigation (no event to wait for)
    widths = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert widths[0] <= widths[1], f"sideways scrolling: {widths}"


def video_streams(path: Path) -> list[dict[str, Any]]:
    """ffprobe's video streams of a file (it fails on a file that is not media)."""
    out = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-select_streams", "v", "-of", "json",
                          str(path)], capture_output=True, text=True, check=True, timeout=30)
    return json.loads(out.stdout).get("streams", [])
