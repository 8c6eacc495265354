"""The console's 集群节点 page in Debian Chromium (Playwright), the browser in Los Angeles.

1. On the portal served by uvicorn in-process, over the in-memory node directory and leases with several
   nodes published: roles in words, address, URL, load, last heartbeat in Beijing time and how long ago,
   在线 / 排空中 / 心跳超时, 本节点 on this node, the jobs with their holder in words; a node published after
   the page opened appears without a click (the 5 s refresh); hostile text a node could carry (a ``<script>``
   node id, markup in the address and roles, a ``javascript:`` URL) shows as text and runs nothing; English
   after the language toggle.
2. On a real ``gbops run`` (single process, no Redis): the administrator opens ``#/cluster`` and sees this one
   node with its four roles in Chinese, the note 单机模式（未配置 Redis）and every worker job run by this node.

Screenshots under ``$GBOPS_TEST_ARTIFACTS`` (``tmp_path`` when unset)."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.console_support import ConsoleServer, browser_ready, console_page

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

USER, PASSWORD = "cluster-watch", "Fleet-Of-Nodes-42"
THIS = "portal-1"
HOSTILE_ID = "<script>window.__pwned=1</script>"
JOBS = ["job:reports", "job:tickets", "job:backups"]


def _node(node_id: str, roles: tuple[str, ...], *, ago: float = 0.3, **kw: Any) -> Any:
    from cluster.nodes import NodeInfo, NodeLoad

    now = datetime.now(UTC)
    return NodeInfo(node_id=node_id, roles=roles, address=kw.pop("address", "127.0.0.1"),
                    http_url=kw.pop("http_url", None), load=kw.pop("load", NodeLoad()),
                    last_seen=now - timedelta(seconds=ago), started=now - timedelta(minutes=3), **kw)


class Server(ConsoleServer):
    async def make_app(self, settings: Any, registry: Any) -> tuple[Any, Any]:
        from cluster.lease import LeaseTable, LocalLeases
        from cluster.nodes import LocalNodeDirectory
        from cluster.runtime import Cluster
        from ops_portal.app import create_app
        from ops_portal.cluster.routes import router
        from tests.portal.conftest import FakeSip

        fake = FakeSip()
        app = create_app(settings=settings, sessionmaker=registry.sessionmaker, registry=registry, sip=fake)
        if not any(getattr(r, "operation_id", None) == "cluster_nodes" for r in app.routes):
            app.include_router(router)  # until ops_portal/api.py includes it

        class Directory(LocalNodeDirectory):
            """The real in-memory directory, plus one entry with an id no real directory lets through: the
            page must still show it as text."""

            async def nodes(self) -> list[Any]:
                return [*await super().nodes(), {**_node("n-hostile", ("worker",)).as_json(), "node_id": HOSTILE_ID}]

        self.directory = Directory()
        table = LeaseTable()
        self.leases = {n: LocalLeases(n, table) for n in (THIS, "worker-9")}
        app.state.cluster = Cluster(node_id=THIS, directory=self.directory, leases=self.leases[THIS], bus=None)
        app.state.cluster_jobs = JOBS
        app.state.cluster_clustered = True
        return app, fake

    async def populate(self) -> None:
        """The live nodes beat every second (cluster.nodes.Heartbeat); worker-9's heartbeats stopped 30 s ago."""
        from cluster.nodes import Heartbeat, NodeLoad

        d = self.directory
        live = [
            _node(THIS, ("sip", "portal"), http_url="https://portal.example:8443/"),
            _node("media-1", ("media",), address="10.0.0.21", http_url="http://10.0.0.21:8080",
                  load=NodeLoad(streams=3, encoders=1, cpu=0.25)),
            _node("media-2", ("media",), address="10.0.0.22", draining=True),
            _node("n-markup", ("<img src=x onerror=window.__pwned=2>",),
                  address="<b onmouseover=window.__pwned=3>10.0.0.40</b>", http_url="javascript:window.__pwned=4"),
        ]
        self.heartbeats = [Heartbeat(d, lambda info=info: info, interval=1.0, ttl=60) for info in live]
        for beat in self.heartbeats:
            await beat.beat()
            beat.start()
        await d.publish(_node("worker-9", ("worker",), address="10.0.0.30", ago=30), 60)
        await self.leases["worker-9"].acquire("job:reports", 60)
        await self.leases[THIS].acquire("job:tickets", 60)

    async def add_users(self, portal: Any) -> None:
        await portal.add_user(USER, PASSWORD, permissions={"system.metrics"}, display_name="集群值守")


def _row(page: Any, node_id: str) -> str:
    return page.inner_text(f"#cluster-nodes tr[data-node='{node_id}']")


def test_cluster_page_nodes_jobs_refresh_hostile_text(tmp_path: Path) -> None:
    sync_playwright, shots = browser_ready(tmp_path)
    server = Server(tmp_path).start()
    try:
        server.call(server.populate())
        with sync_playwright() as pw:
            browser, page, errors = console_page(pw, server.base, USER, PASSWORD)
            assert page.text_content("a[data-route=cluster]") == "集群节点"
            page.click("a[data-route=cluster]")
            page.wait_for_selector("#cluster-nodes tr[data-node='media-1']")
            assert page.url.endswith("#/cluster")
            assert page.inner_text("#cluster-mode") == "集群模式（Redis）：共 6 个节点。"
            explain = page.inner_text("#cluster-explain")
            assert "节点是运行平台部分或全部角色" in explain and "租约" in explain, explain

            mine = _row(page, THIS)
            assert "本节点" in mine and "SIP 信令" in mine and "管理门户" in mine and "在线" in mine, mine
            assert page.get_attribute(f"tr[data-node='{THIS}'] .cl-url a", "href") == "https://portal.example:8443/"
            media = _row(page, "media-1")
            assert "媒体转发" in media and "10.0.0.21" in media and "本节点" not in media, media
            assert page.inner_text("tr[data-node='media-1'] .cl-load") == "流数 3 水印编码 1 CPU 25%"
            assert re.fullmatch(r"\d+ 秒前|刚刚", page.inner_text("tr[data-node='media-1'] .cl-ago")), \
                page.inner_text("tr[data-node='media-1'] .cl-ago")
            # the last heartbeat in Beijing time although the browser is in Los Angeles
            beijing_hour = time.strftime("%H", time.gmtime(time.time() + 8 * 3600))
            seen = page.inner_text("tr[data-node='media-1'] .cl-seen")
            assert re.search(rf"\b{beijing_hour}:\d\d:\d\d", seen), seen
            assert page.inner_text("tr[data-node='media-2'] .cl-status") == "排空中"
            assert page.inner_text("tr[data-node='worker-9'] .cl-status") == "心跳超时"
            assert "后台任务" in _row(page, "worker-9")

            # hostile text is text: shown as written, nothing injected, nothing run, no javascript: link
            assert HOSTILE_ID in page.inner_text("#cluster-nodes")
            markup = _row(page, "n-markup")
            assert "<img src=x onerror=window.__pwned=2>" in markup and "<b onmouseover" in markup, markup
            assert page.locator("#cluster-nodes script, #cluster-nodes img, #cluster-nodes b").count() == 0
            assert page.locator("tr[data-node='n-markup'] .cl-url a").count() == 0
            page.hover("tr[data-node='n-markup'] .cl-address")
            assert page.evaluate("window.__pwned === undefined")

            jobs = page.inner_text("#cluster-jobs")
            assert page.inner_text("#cluster-jobs tr[data-job='job:reports'] .cl-holder") == "由 worker-9 执行"
            assert page.inner_text("#cluster-jobs tr[data-job='job:reports'] .cl-job") == "日报生成"
            assert page.inner_text("#cluster-jobs tr[data-job='job:tickets'] .cl-holder") == f"由 {THIS} 执行"
            assert page.inner_text("#cluster-jobs tr[data-job='job:backups'] .cl-holder") == "无节点持有（等待接管）"
            assert "job:backups" in jobs
            page.screenshot(path=str(shots / "cluster-01-page.png"), full_page=True)

            # a node that joins shows up by itself (the page refreshes every 5 s), and the holder's loss too
            server.call(server.directory.publish(_node("media-3", ("media",), address="10.0.0.23"), 60))
            server.call(server.directory.remove("worker-9"))
            page.wait_for_selector("#cluster-nodes tr[data-node='media-3']", timeout=12000)
            page.wait_for_function("!document.querySelector(\"#cluster-nodes tr[data-node='worker-9']\")",
                                   timeout=12000)
            held = page.inner_text("#cluster-jobs tr[data-job='job:reports'] .cl-holder")
            assert held.startswith("由 worker-9 执行（该节点已无心跳"), held

            page.click("#lang")
            page.wait_for_function("document.querySelector('#cluster-mode') && "
                                   "document.querySelector('#cluster-mode').textContent.startsWith('Cluster mode')",
                                   timeout=15000)
            assert page.text_content("a[data-route=cluster]") == "Cluster nodes"
            assert "media relay" in _row(page, "media-1") and "this node" in _row(page, THIS)
            assert page.inner_text("#cluster-jobs tr[data-job='job:reports'] .cl-job") == "daily reports"
            assert page.inner_text("tr[data-node='media-2'] .cl-status") == "draining"
            page.screenshot(path=str(shots / "cluster-02-english.png"), full_page=True)
            assert errors == [], errors
            browser.close()
    finally:
        for beat in getattr(server, "heartbeats", []):
            server.call(beat.stop())
        server.stop()


def test_cluster_page_on_a_real_single_process(tmp_path: Path) -> None:
    from tests.e2e.platform import ADMIN_NEW_PASSWORD, PlatformProcess

    sync_playwright, shots = browser_ready(tmp_path)
    p = PlatformProcess(tmp_path / "data").start()
    try:
        p.login()  # the initial password changed, as the administrator does first
        api = p.wait_for(lambda: (lambda r: r.status_code == 200 and r.json()["items"] and r.json())(
            p.get("/api/cluster/nodes")), 15, "this node's heartbeat")
        assert api["clustered"] is False
        [node] = api["items"]
        this = api["this_node"]
        assert node["node_id"] == this and sorted(node["roles"]) == ["media", "portal", "sip", "worker"]
        assert api["jobs"] and all(j["name"].startswith("job:") for j in api["jobs"])
        # the single process holds every job's lease (its one worker runs them all)
        deadline = time.monotonic() + 15
        while True:
            jobs = p.get("/api/cluster/nodes").json()["jobs"]
            if all(j["holder"] == this for j in jobs):
                break
            assert time.monotonic() < deadline, f"not every job lease is held by {this}: {jobs}"
            time.sleep(0.25)
        with sync_playwright() as pw:
            browser, page, errors = console_page(pw, p.base, "admin", ADMIN_NEW_PASSWORD)
            page.goto(p.base + "/console/#/cluster")
            page.wait_for_selector(f"#cluster-nodes tr[data-node='{this}']")
            assert page.inner_text("#cluster-mode").startswith("单机模式（未配置 Redis）")
            assert page.locator("#cluster-nodes tbody tr").count() == 1
            row = page.inner_text(f"#cluster-nodes tr[data-node='{this}']")
            for word in ("本节点", "SIP 信令", "媒体转发", "管理门户", "后台任务", "在线"):
                assert word in row, (word, row)
            assert page.locator("#cluster-jobs tbody tr").count() == len(api["jobs"])
            for job in api["jobs"]:
                cell = page.inner_text(f"#cluster-jobs tr[data-job='{job['name']}'] .cl-holder")
                assert cell == f"由 {this} 执行", cell
            page.screenshot(path=str(shots / "cluster-03-single-process.png"), full_page=True)
            assert errors == [], errors
            browser.close()
    finally:
        p.stop()
