"""The web console against the portal app with fakes behind it: uvicorn in a thread of its own (its own event
loop), a SQLite registry with the organisation tree of ``tests.portal.org_data``, one console user; and the
Chromium login every console test starts with."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"


def browser_ready(tmp_path: Path) -> tuple[Any, Path]:
    """Playwright's ``sync_playwright`` and the folder for screenshots (``GBOPS_TEST_ARTIFACTS`` or the test's
    own); fails under CI (skips elsewhere) when Debian's chromium or Playwright is missing."""
    from tests.conftest import need

    need(os.path.exists(CHROMIUM), "Debian chromium is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover
        need(False, "playwright is not installed")
        raise
    shots = Path(os.environ.get("GBOPS_TEST_ARTIFACTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    return sync_playwright, shots


class ConsoleServer:
    """Subclasses build the app in :meth:`make_app` (``settings``, ``registry``) and add their users in
    :meth:`add_users` (``portal``: a :class:`tests.portal.conftest.Portal`)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = 0
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.server: Any = None
        self.loop: asyncio.AbstractEventLoop | None = None

    async def make_app(self, settings: Any, registry: Any) -> tuple[Any, Any]:
        """The app and the SIP fake it was given."""
        raise NotImplementedError

    async def add_users(self, portal: Any) -> None:
        raise NotImplementedError

    def start(self) -> ConsoleServer:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        if not self.ready.wait(60) or self.error is not None:
            raise RuntimeError(f"the portal did not start: {self.error!r}")
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
        self.thread.join(15)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def call(self, coro: Any) -> Any:
        """Run ``coro`` on the server's loop (where the fakes' queues live)."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # pragma: no cover - reported by start()
            self.error = exc
            self.ready.set()

    async def _main(self) -> None:
        import uvicorn

        from device_registry.service import Registry
        from gbcore.db import make_engine, make_sessionmaker
        from gbcore.settings import Settings
        from gbops.migrate import migrate
        from tests.portal.conftest import Portal
        from tests.portal.org_data import build_tree

        self.loop = asyncio.get_running_loop()
        settings = Settings(data_dir=self.tmp / "data")
        engine = make_engine(f"sqlite+aiosqlite:///{self.tmp / 'portal.db'}")
        await migrate(engine)
        registry = Registry(make_sessionmaker(engine))
        await build_tree(registry)
        app, sip = await self.make_app(settings, registry)
        await self.add_users(Portal(app, None, registry.sessionmaker, registry, settings, sip))  # type: ignore[arg-type]
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        task = asyncio.create_task(self.server._serve())
        while not self.server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        self.ready.set()
        await task
        await engine.dispose()


def login(page: Any, base: str, username: str, password: str) -> None:
    """Open the console at ``base`` in ``page`` and log in (the menu drawn: the console is ready)."""
    page.goto(base + "/console/")
    page.wait_for_selector("#login-form")
    page.fill("#login-username", username)
    page.fill("#login-password", password)
    page.click("#login-submit")
    page.wait_for_selector(".sidenav")


def console_page(pw: Any, base: str, username: str, password: str, *, extra_args: tuple[str, ...] = ()) -> Any:
    """Chromium (Debian's) in another time zone than Beijing, logged in to the console: (browser, page,
    errors), ``errors`` collecting the page's JavaScript errors."""
    browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu",
                                                                 "--disable-background-networking", *extra_args])
    # a browser in another zone: every time shown must still be Beijing time
    page = browser.new_page(viewport={"width": 1400, "height": 900}, bypass_csp=True,
                            timezone_id="America/Los_Angeles")
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    login(page, base, username, password)
    return browser, page, errors


class SimThread:
    """gbsim fleets on an event loop of their own thread (Playwright's sync API owns the test's thread), by name."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.sims: dict[str, Any] = {}

    def call(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self, name: str, sip_port: int, first_id: str, devices: int, *, channels: int, password: str,
              seed: int = 18, device_type: str = "118") -> Any:
        """A fleet of ``devices`` registering at 127.0.0.1:``sip_port`` (no media); returns its Simulator."""
        from gbsim import SimConfig, Simulator

        async def go() -> Any:
            sim = Simulator(SimConfig(server=("127.0.0.1", sip_port), devices=devices, channels=channels,
                                      password=password, first_id=first_id, device_type=device_type,
                                      media=False, seed=seed))
            await sim.start()
            self.sims[name] = sim
            return sim

        return self.call(go())

    def stop(self, name: str) -> None:
        self.call(self.sims.pop(name).stop())

    def close(self) -> None:
        for name in list(self.sims):
            self.stop(name)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
