"""The 故障工单 page's contract, organisation and search filters (issue 18) in Debian Chromium (Playwright) with
the console's Content-Security-Policy in force, on the portal served in-process (uvicorn, SQLite registry with
the organisation tree of ``tests.portal.org_data``: BG ├ 东区 VA (CA1, CA2) └ 西区 VB (CB1), all of the NVR;
the IPC's CX1 under no node).

At 1366x768 the administrator filters by contract (a select of the contracts), by organisation node (the tree in
order, indented) and both together; the search box follows the typing once it pauses (one request for a typed
word, not one a letter), matches a channel's name and a description case-insensitively; every filter is in the
address (``#/tickets?...``) and a reload keeps it; 清除筛选 clears them.  A user scoped to 东区 without the
contract permission sees no contract filter, an address naming another's contract is dropped (no error), and the
西区 node is not offered.  At 390x844 no sideways scrolling; the English switch translates the filters' labels.
No JavaScript or console error.  Screenshots under ``$GBOPS_TEST_ARTIFACTS``."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.e2e.console_support import CHROMIUM, ConsoleServer, browser_ready
from tests.portal.org_data import CA1, CA2, CB1, CX1, IPC, NVR

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ADMIN, EAST, PASSWORD = "tk-admin", "tk-east", "Ticket-Filter-Owl-42"
DESKTOP = {"width": 1366, "height": 768}
PHONE = {"width": 390, "height": 844}


class Server(ConsoleServer):
    async def make_app(self, settings: Any, registry: Any) -> tuple[Any, Any]:
        from ops_portal.app import create_app
        from tests.portal.conftest import FakeSip

        fake = FakeSip(online={NVR, IPC})
        return create_app(settings=settings, sessionmaker=registry.sessionmaker, registry=registry, sip=fake), fake

    async def add_users(self, portal: Any) -> None:
        from sqlalchemy import select

        from device_registry.models import OrgNode
        from tests.portal.org_data import VA

        await portal.add_user(ADMIN, PASSWORD, display_name="工单管理员")
        async with portal.sessionmaker() as session:
            va = (await session.execute(select(OrgNode.id).where(OrgNode.code == VA))).scalar_one()
        await portal.add_user(EAST, PASSWORD, display_name="东区值班员", org_nodes=[va],
                              permissions={"ticket.read", "device.read"})


def _seed(base: str) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """Contracts, organisation nodes (by name) and tickets, through the API as the administrator."""
    with httpx.Client(base_url=base, timeout=30) as c:
        r = c.post("/api/auth/login", json={"username": ADMIN, "password": PASSWORD})
        assert r.status_code == 200, r.text
        c.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
        nodes = {n["name"]: n["id"] for n in c.get("/api/org/tree").json()["nodes"]}
        tickets = {}
        for key, body in (("ca1", {"device_id": NVR, "channel_id": CA1, "note": "画面全黑 Black picture"}),
                          ("ca2", {"device_id": NVR, "channel_id": CA2, "note": "镜头模糊"}),
                          ("cb1", {"device_id": NVR, "channel_id": CB1, "note": "no signal"}),
                          ("cx1", {"device_id": IPC, "channel_id": CX1, "note": "丢包"})):
            r = c.post("/api/tickets", json=body)
            assert r.status_code == 201, r.text
            tickets[key] = r.json()["id"]
        contracts = {}
        for name, scope in (("东区合同", {"org_node_ids": [nodes["东区"]]}),
                            ("西门合同", {"channel_ids": [f"{NVR}/{CB1}"]})):
            r = c.post("/api/contracts", json={"name": name, "valid_from": "2020-01-01T00:00:00Z", **scope})
            assert r.status_code == 201, r.text
            contracts[name] = r.json()["id"]
    return contracts, nodes, tickets


def _open(pw: Any, base: str, username: str) -> tuple[Any, Any, list[str], list[str]]:
    """(browser, page, errors, ticket list requests' query strings), the console's CSP in force."""
    browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu",
                                                                 "--disable-background-networking"])
    page = browser.new_page(viewport=DESKTOP, timezone_id="America/Los_Angeles")
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(f"page: {e}"))
    page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
    lists: list[str] = []
    page.on("request", lambda r: lists.append(urlsplit(r.url).query)
            if urlsplit(r.url).path == "/api/tickets" and r.method == "GET" else None)
    page.goto(base + "/console/")
    page.wait_for_selector("#login-form")
    page.fill("#login-username", username)
    page.fill("#login-password", PASSWORD)
    page.click("#login-submit")
    page.wait_for_selector(".sidenav")
    return browser, page, errors, lists


def _shown(page: Any) -> list[int]:
    return sorted(int(x) for x in page.eval_on_selector_all("#tk-table tbody tr[data-ticket]",
                                                            "rows => rows.map(r => r.dataset.ticket)"))


def _hash_query(page: Any) -> dict[str, list[str]]:
    frag = urlsplit(page.url).fragment
    return parse_qs(frag.split("?", 1)[1]) if "?" in frag else {}


def _no_sideways_scroll(page: Any) -> None:
    widths = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert widths[0] <= widths[1], f"sideways scrolling: {widths}"


def test_ticket_filters_contract_org_search(tmp_path: Path) -> None:
    sync_playwright, shots = browser_ready(tmp_path)
    from playwright.sync_api import expect

    server = Server(tmp_path).start()
    try:
        contracts, nodes, tk = _seed(server.base)
        every = sorted(tk.values())
        with sync_playwright() as pw:
            browser, page, errors, lists = _open(pw, server.base, ADMIN)
            page.click("a[data-route=tickets]")
            page.wait_for_selector("#tk-table tbody tr[data-ticket]")
            assert _shown(page) == every

            # ---- the labels; the contract select lists the contracts, the organisation select the tree in order
            labels = page.inner_text("#tk-filters")
            for word in ("搜索", "合同", "组织"):
                assert word in labels, (word, labels)
            assert page.eval_on_selector_all("#tk-contract option", "os => os.map(o => o.text)") == [
                "全部", "东区合同", "西门合同"]
            org_options = page.eval_on_selector_all("#tk-org option", "os => os.map(o => o.text)")
            assert org_options == ["全部", "业务分组", "\u3000东区", "\u3000西区"], org_options

            # ---- a contract: its scope's tickets; and with a node too
            page.select_option("#tk-contract", label="东区合同")
            expect(page.locator(f"#tk-table tr[data-ticket='{tk['cb1']}']")).to_have_count(0)
            assert _shown(page) == sorted([tk["ca1"], tk["ca2"]])
            assert _hash_query(page) == {"contract_id": [str(contracts["东区合同"])]}
            page.select_option("#tk-contract", label="西门合同")
            expect(page.locator(f"#tk-table tr[data-ticket='{tk['ca1']}']")).to_have_count(0)
            assert _shown(page) == [tk["cb1"]]
            page.select_option("#tk-org", str(nodes["东区"]))
            expect(page.locator("#tk-table tbody")).to_contain_text("没有符合条件的工单")
            assert _hash_query(page) == {"contract_id": [str(contracts["西门合同"])],
                                         "org_node_id": [str(nodes["东区"])]}
            page.select_option("#tk-contract", "")
            page.wait_for_selector(f"#tk-table tr[data-ticket='{tk['ca1']}']")
            assert _shown(page) == sorted([tk["ca1"], tk["ca2"]])
            page.select_option("#tk-org", str(nodes["业务分组"]))  # descendants included
            page.wait_for_selector(f"#tk-table tr[data-ticket='{tk['cb1']}']")
            assert _shown(page) == sorted([tk["ca1"], tk["ca2"], tk["cb1"]])
            page.screenshot(path=str(shots / "ticket-filters-01-org.png"), full_page=True)
            page.click("#tk-reset")
            page.wait_for_selector(f"#tk-table tr[data-ticket='{tk['cx1']}']")
            assert _shown(page) == every and _hash_query(page) == {}

            # ---- the search box: one request once the typing pauses; a channel's name, any case
            lists.clear()
            page.click("#tk-search")
            page.keyboard.type("BLACK", delay=40)
            expect(page.locator(f"#tk-table tr[data-ticket='{tk['ca2']}']")).to_have_count(0)
            assert _shown(page) == [tk["ca1"]]
            searched = [parse_qs(q).get("q") for q in lists]
            assert searched == [["BLACK"]], lists  # not one request a letter
            assert _hash_query(page) == {"q": ["BLACK"]}
            page.fill("#tk-search", "西门")  # CB1's name
            expect(page.locator(f"#tk-table tr[data-ticket='{tk['ca1']}']")).to_have_count(0)
            assert _shown(page) == [tk["cb1"]]

            # ---- the address keeps them: a reload shows the same
            page.select_option("#tk-org", str(nodes["西区"]))
            page.wait_for_function("() => location.hash.includes('org_node_id=')")
            page.reload()
            page.wait_for_selector(f"#tk-table tr[data-ticket='{tk['cb1']}']")
            assert _shown(page) == [tk["cb1"]]
            expect(page.locator("#tk-search")).to_have_value("西门")
            expect(page.locator("#tk-org")).to_have_value(str(nodes["西区"]))
            assert _hash_query(page) == {"org_node_id": [str(nodes["西区"])], "q": ["西门"]}

            # ---- 390 px: no sideways scrolling; English
            page.set_viewport_size(PHONE)
            page.wait_for_timeout(300)  # a layout pass after the resize (no event to wait for)
            _no_sideways_scroll(page)
            page.screenshot(path=str(shots / "ticket-filters-02-phone.png"), full_page=True)
            page.set_viewport_size(DESKTOP)
            page.click("#lang")
            expect(page.locator("#view h1")).to_have_text("Fault tickets")
            labels = page.inner_text("#tk-filters")
            for word in ("Search", "Contract", "Organisation"):
                assert word in labels, (word, labels)
            assert page.get_attribute("#tk-search", "placeholder") == "description, channel name or id"
            page.click("#lang")  # back to Chinese for the next user
            expect(page.locator("#view h1")).to_have_text("故障工单")
            assert errors == [], errors
            browser.close()

            # ---- a user of 东区 without the contract permission
            browser, page, errors, lists = _open(pw, server.base, EAST)
            page.goto(f"{server.base}/console/#/tickets?contract_id={contracts['西门合同']}")
            page.wait_for_selector("#tk-table tbody tr[data-ticket]")
            assert page.locator("#tk-contract").count() == 0  # no contract filter
            assert _shown(page) == sorted([tk["ca1"], tk["ca2"]])  # the other's contract dropped, no error shown
            assert page.inner_text("#tk-error") == ""
            assert all("contract_id" not in q for q in lists), lists
            org_options = page.eval_on_selector_all("#tk-org option", "os => os.map(o => o.text.trim())")
            assert "西区" not in org_options and "东区" in org_options, org_options
            page.fill("#tk-search", "no signal")  # CB1's ticket: outside its scope
            expect(page.locator("#tk-table tbody")).to_contain_text("没有符合条件的工单")
            page.screenshot(path=str(shots / "ticket-filters-03-scoped.png"), full_page=True)
            assert errors == [], errors
            browser.close()
    finally:
        server.stop()
