"""Civil codes in words (issue 18) in Debian Chromium (Playwright), the console's Content-Security-Policy in force,
on the portal served in-process (uvicorn, SQLite registry): the organisation tree of ``tests.portal.org_data`` plus
an NVR in Xi'an whose catalog brings the civil nodes 61 / 6101 / 610113 / 61011301 (named by the device in its
own short words: 陕西, 西安, 雁塔, 雁塔一所) and 99, a code GB/T 2260 does not have.

At 1366x768 in Chinese: the 组织管理 tree shows each civil node's code as its full GB/T 2260 name with the code
(陕西省西安市雁塔区（610113）, the grassroots node by its county: 陕西省西安市雁塔区（61011301）) in an element
marked ``data-place``, in the tree and in the node's panel; 99 keeps its digits with their label.  The table is
fetched once (GET /api/regions) and revalidated with its ETag.  In English at 390x844: the place names are shown
as they are, with the code in ASCII brackets, only inside ``data-place`` elements; nothing else Chinese but the
device-given node names; no sideways scrolling.  regions.js's own functions name 2-, 4-, 6-, 8- and 20-digit codes
and refuse malformed ones.  No JavaScript or console error.  Screenshots under ``$GBOPS_TEST_ARTIFACTS``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.console_support import ConsoleServer, browser_ready, console_page

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

USER, PASSWORD = "region-admin", "Region-Lantern-Owl-42"
XIAN_NVR = "61011300001180000001"
XIAN_CAM = "61011300001310000001"
CIVIL = {"61": "陕西", "6101": "西安", "610113": "雁塔", "61011301": "雁塔一所", "99": "九九片区"}
DESKTOP = {"width": 1366, "height": 768}
PHONE = {"width": 390, "height": 844}
# Chinese an English page may show: the names the devices and org_data gave (data, not words of the console)
DATA_NAMES = set(CIVIL.values()) | {"业务分组", "东区", "西区", "东门", "东区停车场", "西门", "独立相机", "雁塔东门",
                                    "区划管理员"}


class Server(ConsoleServer):
    async def make_app(self, settings: Any, registry: Any) -> tuple[Any, Any]:
        from datetime import UTC, datetime, timedelta

        from fastapi.routing import APIRoute

        from device_registry.events import CatalogReported, ChannelInfo, DeviceRegistered
        from ops_portal.app import create_app
        from ops_portal.regions_routes import router as regions_router
        from tests.portal.conftest import FakeSip

        t0 = datetime(2024, 6, 1, 8, 0, tzinfo=UTC)
        addr = "192.0.2.61:5060"
        items = tuple(ChannelInfo(code, name=name) for code, name in CIVIL.items()) + (
            ChannelInfo(XIAN_CAM, name="雁塔东门", status="ON", parent_id="61011301", civil_code="610113"),)
        await registry.apply([
            DeviceRegistered(XIAN_NVR, t0, addr, "udp", f"sip:{XIAN_NVR}@{addr}", 3600, "sim/1.0"),
            CatalogReported(XIAN_NVR, t0 + timedelta(seconds=1), items, True, f"complete {len(items)}/{len(items)}"),
        ])
        fake = FakeSip(online={XIAN_NVR})
        app = create_app(settings=settings, sessionmaker=registry.sessionmaker, registry=registry, sip=fake)
        if not any(isinstance(r, APIRoute) and r.path == "/api/regions" for r in app.routes) \
                and "/api/regions" not in app.openapi()["paths"]:
            app.include_router(regions_router)  # until ops_portal.api includes it
            app.openapi_schema = None
        return app, fake

    async def add_users(self, portal: Any) -> None:
        from ops_portal.deps import PERMISSIONS

        # no alarm permission: this app has no alarm service (its live feed answers 503)
        await portal.add_user(USER, PASSWORD, display_name="区划管理员",
                              permissions={p for p in PERMISSIONS if not p.startswith("alarm.")})


def _nodes(base: str) -> dict[str, int]:
    """code -> org node id, as the API has them."""
    token = httpx.post(base + "/api/auth/login", json={"username": USER, "password": PASSWORD}).json()["access_token"]
    tree = httpx.get(base + "/api/org/tree", headers={"Authorization": f"Bearer {token}"}).json()
    return {n["code"]: n["id"] for n in tree["nodes"] if n.get("code")}


def _without_data(text: str) -> str:
    for name in sorted(DATA_NAMES, key=len, reverse=True):
        text = text.replace(name, "")
    return text


def _place(page: Any, node: int) -> Any:
    return page.locator(f"#org-node-{node} > .org-row .org-sub [data-place]")


def test_civil_codes_in_words(tmp_path: Path) -> None:
    sync_playwright, shots = browser_ready(tmp_path)
    server = Server(tmp_path).start()
    try:
        ids = _nodes(server.base)
        assert set(CIVIL) <= set(ids), ids
        with sync_playwright() as pw:
            browser, page, errors = console_page(pw, server.base, USER, PASSWORD)
            page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
            regions_answers: list[int] = []
            page.on("response", lambda r: regions_answers.append(r.status) if r.url.endswith("/api/regions") else None)
            page.set_viewport_size(DESKTOP)

            # --- the tree, opened at the grassroots node (its ancestors expanded)
            page.evaluate("(n) => { location.hash = '#/org?node=' + n; }", ids["61011301"])
            page.wait_for_selector(f"#org-panel-title[data-node='{ids['61011301']}']")
            expected = {"61": "陕西省（61）", "6101": "陕西省西安市（6101）", "610113": "陕西省西安市雁塔区（610113）",
                        "61011301": "陕西省西安市雁塔区（61011301）"}
            for code, text in expected.items():
                place = _place(page, ids[code])
                assert place.inner_text() == text, (code, place.inner_text())
                assert place.get_attribute("data-place") == code
            sub = page.inner_text(f"#org-node-{ids['610113']} > .org-row .org-sub")
            assert sub.startswith("行政区划 · 陕西省西安市雁塔区（610113） · 设备 "), sub
            assert page.inner_text(f"#org-node-{ids['610113']} > .org-row .org-name") == "雁塔"  # the device's name
            panel = page.locator("#org-panel-code [data-place]")
            assert panel.inner_text() == "陕西省西安市雁塔区（61011301）"
            # a code GB/T 2260 does not have: its digits with their label, nothing marked as a place
            unknown = f"#org-node-{ids['99']} > .org-row .org-sub"
            assert "行政区划编码 99" in page.inner_text(unknown)
            assert page.locator(f"{unknown} [data-place]").count() == 0
            page.screenshot(path=str(shots / "regions-01-org-zh.png"))

            # other kinds keep their code with its label
            assert page.locator(".org-sub [data-place]").count() == len(expected)

            # --- regions.js itself: the same naming as gbcore.regions, in both languages
            named = page.evaluate("""async () => {
              const m = await import('/console/assets/regions.js');
              await m.loadRegions();
              const codes = ['61', '6101', '610113', '61011301', '34020000001320000071', '110105', '1101', '429004',
                             '99', '610', '6101130', '', 'abc', '６１', null];
              return codes.map((c) => [m.regionKey(c), m.regionName(c), m.regionText(c)]);
            }""")
            assert named == [
                ["610000", "陕西省", "陕西省（61）"],
                ["610100", "陕西省西安市", "陕西省西安市（6101）"],
                ["610113", "陕西省西安市雁塔区", "陕西省西安市雁塔区（610113）"],
                ["610113", "陕西省西安市雁塔区", "陕西省西安市雁塔区（61011301）"],
                ["340200", "安徽省芜湖市", "安徽省芜湖市（34020000001320000071）"],
                ["110105", "北京市朝阳区", "北京市朝阳区（110105）"],
                ["110100", "北京市", "北京市（1101）"],
                ["429004", "湖北省仙桃市", "湖北省仙桃市（429004）"],
                ["990000", None, "99"],
                [None, None, "610"],
                [None, None, "6101130"],
                [None, None, ""],
                [None, None, "abc"],
                [None, None, "６１"],
                [None, None, ""],
            ], named
            # fetched once by the page (the module is shared), revalidated by the browser with the ETag
            assert regions_answers and set(regions_answers) <= {200, 304}, regions_answers

            # --- English on a phone: place names as data, nothing else Chinese
            page.set_viewport_size(PHONE)
            page.click("#lang")
            page.wait_for_selector("#menu-toggle:has-text('Menu')")
            page.wait_for_selector(f"#org-node-{ids['610113']} > .org-row .org-sub [data-place]")
            assert _place(page, ids["610113"]).inner_text() == "陕西省西安市雁塔区 (610113)"
            assert page.locator("#org-panel-code [data-place]").inner_text() == "陕西省西安市雁塔区 (61011301)"
            sub = page.inner_text(f"#org-node-{ids['610113']} > .org-row .org-sub")
            assert sub.startswith("Administrative region · 陕西省西安市雁塔区 (610113) · devices "), sub
            assert "Civil code 99" in page.inner_text(f"#org-node-{ids['99']} > .org-row .org-sub")
            shown = page.evaluate("""() => {
              const out = [];
              const walk = document.createTreeWalker(document.getElementById('view'), NodeFilter.SHOW_TEXT);
              for (let n = walk.nextNode(); n; n = walk.nextNode()) {
                const text = n.nodeValue.trim();
                if (text && !n.parentElement.closest('[data-place]')) out.push(text);
              }
              return out;
            }""")
            chinese = [s for s in shown if re.search(r"[\u4e00-\u9fff]", _without_data(s))]
            assert chinese == [], chinese
            widths = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
            assert widths[0] <= widths[1], f"sideways scrolling: {widths}"
            page.screenshot(path=str(shots / "regions-02-org-en-phone.png"), full_page=True)
            page.click("#lang")  # back to Chinese for whoever opens the console next in this browser

            assert errors == [], errors
            browser.close()
    finally:
        server.stop()
