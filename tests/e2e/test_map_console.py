"""The console's 通道地图 page (issue 18) in Debian Chromium (Playwright) with the console's Content-Security-Policy
in force, on the portal served in-process (uvicorn, SQLite registry) holding 2,000 synthetic channels with
coordinates around Shanghai (three in four online), the two located channels of ``tests.portal.org_data`` near
Xi'an and one reference channel at the published GCJ-02 example point in Beijing.

At 1366x768: the map opens with clusters whose counts add up to every located channel and whose online/offline
split adds up to the channels' states; clicking the largest cluster zooms in and splits it until single markers,
coloured by state, appear; the side list counts the channels, lists the first 300 with a note, searches and
filters by state (the map follows), and clicking the reference channel centres the map on it with its popup
open; switching the base map to AutoNavi (GCJ-02) moves that marker from its WGS-84 position to the published
GCJ-02 position (a few metres of tolerance) while the same ground stays in view, tiles are asked of AutoNavi
(served here as blank PNGs: the test has no internet) and the choice is remembered across a reload; Tianditu asks
for a key, which then goes to Tianditu's tile hosts and never to the platform.  At 390x844 the page has no
sideways scrolling, the list is collapsed above the map and a channel chosen from it opens on the map.  No
JavaScript or console error.  Screenshots under ``$GBOPS_TEST_ARTIFACTS`` (``tmp_path`` when unset)."""

from __future__ import annotations

import math
import re
import struct
import zlib
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import need
from tests.e2e.console_support import CHROMIUM, ConsoleServer, browser_ready

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

STATIC = Path(__file__).resolve().parents[2] / "ops_portal" / "web" / "static"
USER, PASSWORD = "map-viewer", "Map-Lantern-Owl-42"
DEVICES = ("34020000001180000101", "34020000001180000102")
PER_DEVICE = 1000
REF_ID = "34020000001310099999"
REF_NAME = "天安门参考点"
REF_WGS = (39.915, 116.404)
REF_GCJ = (39.91640428150164, 116.41024449916938)  # the published worked example of wgs84togcj02(116.404, 39.915)
TDT_KEY = "tdt-test-key-5e1f"
# the base-map hosts of map.js's presets: the console's CSP must admit them in img-src
PRESET_SOURCES = ("https://tile.openstreetmap.org", "https://*.tianditu.gov.cn", "https://*.is.autonavi.com",
                  "https://*.map.gtimg.com")
TILE_HOSTS = re.compile(r"^https://([a-z0-9-]+\.)*(openstreetmap\.org|tianditu\.gov\.cn|autonavi\.com|gtimg\.com"
                        r"|tiles\.example\.org)/")
PLATFORM_TILES = "https://{s}.tiles.example.org/{z}/{x}/{y}.png"


def _channel_id(device: int, k: int) -> str:
    return f"340200000013{device + 1:01d}{k:07d}"  # 34020000001320000000...: clear of org_data's channel ids


def _synthetic() -> list[tuple[str, str, float, float, bool]]:
    """(device, channel, lat, lon, online) of the 2,000 synthetic channels: a 50 x 40 grid around Shanghai."""
    out = []
    for n in range(len(DEVICES) * PER_DEVICE):
        d, k = divmod(n, PER_DEVICE)
        row, col = divmod(n, 50)
        out.append((DEVICES[d], _channel_id(d + 1, k), round(31.10 + row * 0.006, 6), round(121.30 + col * 0.006, 6),
                    n % 4 != 3))
    return out


SYNTHETIC = _synthetic()


class Server(ConsoleServer):
    tile_url: str | None = None  # GBOPS_MAP_TILE_URL

    async def make_app(self, settings: Any, registry: Any) -> tuple[Any, Any]:
        from datetime import UTC, datetime, timedelta

        from fastapi.staticfiles import StaticFiles

        from device_registry.events import CatalogReported, ChannelInfo, DeviceRegistered
        from ops_portal.app import create_app
        from tests.portal.conftest import FakeSip

        t0 = datetime(2024, 6, 1, 8, 0, tzinfo=UTC)
        events: list[Any] = []
        for i, device in enumerate(DEVICES):
            t = t0 + timedelta(seconds=10 * i)
            addr = f"192.0.2.{20 + i}:5060"
            events.append(DeviceRegistered(device, t, addr, "udp", f"sip:{device}@{addr}", 3600, "sim/1.0"))
            items = [ChannelInfo(ch, name=f"合成通道{ch[-4:]}", status="ON" if on else "OFF", parent_id=device,
                                 latitude=lat, longitude=lon, address=f"上海测试路{ch[-4:]}号")
                     for dev, ch, lat, lon, on in SYNTHETIC if dev == device]
            if i == len(DEVICES) - 1:
                items.append(ChannelInfo(REF_ID, name=REF_NAME, status="ON", parent_id=device,
                                         latitude=REF_WGS[0], longitude=REF_WGS[1], address="北京市东城区"))
            events.append(CatalogReported(device, t + timedelta(seconds=1), tuple(items), True,
                                          f"complete {len(items)}/{len(items)}"))
        await registry.apply(events)
        fake = FakeSip(online=set(DEVICES))
        if self.tile_url:
            settings = settings.model_copy(update={"map_tile_url": self.tile_url})
        app = create_app(settings=settings, sessionmaker=registry.sessionmaker, registry=registry, sip=fake)
        app.mount("/static", StaticFiles(directory=STATIC), name="static")  # Leaflet, as `gbops run` serves it
        return app, fake

    async def add_users(self, portal: Any) -> None:
        from ops_portal.deps import PERMISSIONS

        # no alarm permission: this app has no alarm service (its feed answers 503), the map no alarm layer
        await portal.add_user(USER, PASSWORD, display_name="地图值班员",
                              permissions={p for p in PERMISSIONS if not p.startswith("alarm.")})


def _png() -> bytes:
    """A blank (transparent) 256x256 PNG: the tiles the test serves instead of the internet."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + b"\x00\x00\x00\x00" * 256 for _ in range(256))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 256, 256, 8, 6, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _metres(a: tuple[float, float], b: tuple[float, float]) -> float:
    (la1, lo1), (la2, lo2) = map(math.radians, a), map(math.radians, b)
    h = math.sin((la2 - la1) / 2) ** 2 + math.cos(la1) * math.cos(la2) * math.sin((lo2 - lo1) / 2) ** 2
    return 2 * 6371000 * math.asin(math.sqrt(h))


def _widened(csp: str) -> str:
    """The CSP with the preset hosts in img-src, for those the served policy does not admit yet (see
    test_console_csp_admits_map_presets, which fails until the portal admits them itself)."""
    missing = [s for s in PRESET_SOURCES if s not in csp]
    return csp.replace("img-src 'self' data: blob:", "img-src 'self' data: blob: " + " ".join(missing), 1) \
        if missing else csp


class Browser:
    """A Chromium page logged in as USER with the console's CSP in force; tiles of the preset hosts are blank PNGs;
    every request to the platform and to a tile host is recorded."""

    def __init__(self, pw: Any, base: str, width: int, height: int, browser: Any = None) -> None:
        self.browser = browser or pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        self.context = self.browser.new_context(viewport={"width": width, "height": height},
                                                timezone_id="America/Los_Angeles")
        self.page = page = self.context.new_page()
        self.errors: list[str] = []
        self.console: list[str] = []
        self.platform_requests: list[str] = []
        self.tiles: list[str] = []
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("console", lambda m: self.console.append(f"{m.text} @ {m.location.get('url', '')}")
                if m.type == "error" else None)
        page.on("request", lambda r: self.platform_requests.append(r.url + " " + (r.post_data or ""))
                if r.url.startswith(base) else None)
        png = _png()

        def tile(route: Any) -> None:
            self.tiles.append(route.request.url)
            route.fulfill(status=200, content_type="image/png", body=png)

        def document(route: Any) -> None:
            response = route.fetch()
            headers = dict(response.headers)
            headers["content-security-policy"] = _widened(headers["content-security-policy"])
            route.fulfill(response=response, headers=headers)

        page.route(TILE_HOSTS, tile)
        page.route(base + "/console/", document)
        page.goto(base + "/console/")
        page.wait_for_selector("#login-form")
        page.fill("#login-username", USER)
        page.fill("#login-password", PASSWORD)
        page.click("#login-submit")
        page.wait_for_selector(".sidenav", state="attached")  # behind the menu button on a phone

    def close(self) -> None:
        self.context.close()


def _clusters(page: Any) -> list[dict[str, int]]:
    return page.eval_on_selector_all(
        "#map .gb-cluster", "els => els.map(e => ({n: +e.dataset.count, on: +e.dataset.online, off: +e.dataset.offline,"
        " text: +e.textContent}))")


def _singles(page: Any) -> list[dict[str, Any]]:
    return page.eval_on_selector_all(
        "#map .gb-marker", "els => els.map(e => ({channel: e.dataset.channel, on: e.classList.contains('on'),"
        " off: e.classList.contains('off'), lat: +e.dataset.lat, lon: +e.dataset.lon}))")


def _biggest_on_screen(page: Any) -> int:
    """The index (among #map .gb-cluster) of the largest cluster whose centre is inside the map's box."""
    return page.eval_on_selector_all("#map .gb-cluster", """els => {
        const box = document.getElementById("map").getBoundingClientRect();
        let best = -1, n = 0;
        els.forEach((e, i) => {
            const r = e.getBoundingClientRect(), x = r.x + r.width / 2, y = r.y + r.height / 2;
            if (x > box.left + 20 && x < box.right - 20 && y > box.top + 20 && y < box.bottom - 20
                && +e.dataset.count > n) { best = i; n = +e.dataset.count; }
        });
        return best;
    }""")


def _zoom(page: Any) -> int:
    return int(page.get_attribute("#map", "data-zoom"))


def _wait_zoom_above(page: Any, zoom: int) -> int:
    from playwright.sync_api import expect

    expect(page.locator("#map")).not_to_have_attribute("data-zoom", str(zoom))
    now = _zoom(page)
    assert now > zoom, (now, zoom)
    return now


def test_console_csp_admits_map_presets(tmp_path: Path) -> None:
    """The portal's CSP admits the base-map presets' hosts in img-src (console.py, outside this page's files)."""
    server = Server(tmp_path).start()
    try:
        csp = httpx.get(server.base + "/console/").headers["content-security-policy"]
        img = next(d for d in csp.split(";") if d.strip().startswith("img-src"))
        assert [s for s in PRESET_SOURCES if s not in img.split()] == [], img
    finally:
        server.stop()


def test_map_clusters_list_presets_gcj02_phone(tmp_path: Path) -> None:
    sync_playwright, shots = browser_ready(tmp_path)
    need((STATIC / "leaflet" / "leaflet.js").exists(),
         "Leaflet is not installed (make test fetches it from npm into ops_portal/web/static)")
    from playwright.sync_api import expect

    located = len(SYNTHETIC) + 3  # + the reference point + CA1 and CB1 of org_data (near Xi'an), all located
    online = sum(1 for s in SYNTHETIC if s[4]) + 3
    server = Server(tmp_path).start()
    try:
        with sync_playwright() as pw:
            b = Browser(pw, server.base, 1366, 768)
            page = b.page
            page.click("a[data-route=map]")
            page.wait_for_selector("#map .gb-cluster")
            assert page.inner_text("#map-info") == f"{located} 个有坐标的通道"
            assert page.get_attribute("#map", "data-preset") == "none" and page.get_attribute("#map", "class") \
                and "plain" in page.get_attribute("#map", "class")
            # ---- clusters: counts on the icons, every located channel counted once, the online split right
            clusters, singles = _clusters(page), _singles(page)
            assert clusters and all(c["n"] == c["text"] == c["on"] + c["off"] and c["n"] > 1 for c in clusters)
            assert sum(c["n"] for c in clusters) + len(singles) == located, (clusters, len(singles))
            assert sum(c["on"] for c in clusters) + sum(1 for s in singles if s["on"]) == online
            biggest = max(c["n"] for c in clusters)
            assert biggest >= 1900, clusters  # the Shanghai grid: one or a few clusters at the national view
            page.screenshot(path=str(shots / "map-01-clusters.png"))

            # ---- zooming in splits them, down to single markers coloured by state
            zoom = _zoom(page)
            state = {ch: on for _, ch, _, _, on in SYNTHETIC}
            split = 0
            for _ in range(20):
                if zoom > 16:
                    break
                i = _biggest_on_screen(page)
                if i < 0:  # none left in sight: the zoom control
                    page.click("#map .leaflet-control-zoom-in[title=放大]")
                    zoom = _wait_zoom_above(page, zoom)
                    continue
                n = _clusters(page)[i]["n"]
                page.locator("#map .gb-cluster").nth(i).click()
                zoom = _wait_zoom_above(page, zoom)
                clusters = _clusters(page)
                # the clicked cluster came apart: nothing as big is left
                assert not clusters or max(c["n"] for c in clusters) < n, (n, clusters)
                split += 1
                if split == 1:
                    page.screenshot(path=str(shots / "map-02-split.png"))
            assert split >= 2, split
            assert zoom > 16 and not _clusters(page), zoom
            singles = _singles(page)
            assert len(singles) >= 2
            for s in singles:
                assert s["channel"] in state and s["on"] == state[s["channel"]] and s["off"] != s["on"], s
            page.screenshot(path=str(shots / "map-03-zoomed.png"))

            # ---- the side list: counts, first 300 with a note, search, state filter (the map follows)
            expect(page.locator("#map-list-count")).to_have_text(f"{located} 个")
            assert page.locator("#map-list .mapv-item").count() == 300
            assert page.inner_text("#map-list-more") == f"仅列出前 300 个，共 {located} 个：请搜索缩小范围"
            page.select_option("#map-filter", "offline")
            expect(page.locator("#map-list-count")).to_have_text(f"{located - online} 个")
            assert all(not s["on"] for s in _singles(page)), _singles(page)
            page.select_option("#map-filter", "all")
            page.fill("#map-search", "天安门")
            expect(page.locator("#map-list .mapv-item")).to_have_count(1)
            page.click(f"#map-list .mapv-item[data-channel='{REF_ID}']")
            marker = f"#map .gb-marker[data-channel='{REF_ID}']"
            page.wait_for_selector(marker)
            expect(page.locator("#map .leaflet-popup")).to_contain_text(REF_NAME)
            assert _zoom(page) >= 17
            ref = _singles(page)
            [ref] = [s for s in ref if s["channel"] == REF_ID]
            assert (ref["lat"], ref["lon"]) == REF_WGS, ref
            before = page.locator(marker).bounding_box()
            page.screenshot(path=str(shots / "map-04-list-focus.png"))

            # ---- AutoNavi (GCJ-02): the marker moves to the published GCJ-02 position, the ground stays in view
            labels = page.eval_on_selector_all("#map-preset option", "os => os.map(o => o.value + '=' + o.text)")
            assert labels == ["none=无底图（仅坐标）", "osm=OpenStreetMap（WGS-84）", "tdt_vec=天地图 矢量（CGCS2000）",
                              "tdt_img=天地图 影像（CGCS2000）", "amap_vec=高德地图 矢量（GCJ-02）",
                              "amap_img=高德地图 卫星（GCJ-02）", "tencent=腾讯地图（GCJ-02）"], labels
            page.select_option("#map-preset", "amap_vec")
            expect(page.locator("#map")).to_have_attribute("data-datum", "gcj02")
            expect(page.locator("#map-note")).to_contain_text("GCJ-02")
            [ref] = [s for s in _singles(page) if s["channel"] == REF_ID]
            assert _metres((ref["lat"], ref["lon"]), REF_GCJ) < 2.0, ref
            assert 500 < _metres((ref["lat"], ref["lon"]), REF_WGS) < 700, ref
            after = page.locator(marker).bounding_box()
            assert abs(after["x"] - before["x"]) <= 2 and abs(after["y"] - before["y"]) <= 2, (before, after)
            page.wait_for_selector("#map .leaflet-tile-loaded")
            assert any("autonavi.com/appmaptile" in u for u in b.tiles), b.tiles[:5]
            assert "plain" not in (page.get_attribute("#map", "class") or "")
            page.screenshot(path=str(shots / "map-05-autonavi.png"))
            page.reload()
            page.wait_for_selector("#map .gb-cluster, #map .gb-marker")
            assert page.input_value("#map-preset") == "amap_vec"
            assert page.get_attribute("#map", "data-datum") == "gcj02"
            [ref] = [s for s in _singles(page) if s["channel"] == REF_ID] or [None]
            if ref is None:  # clustered at the national view: find it through the list
                page.fill("#map-search", REF_ID)
                page.click(f"#map-list .mapv-item[data-channel='{REF_ID}']")
                [ref] = [s for s in _singles(page) if s["channel"] == REF_ID]
            assert _metres((ref["lat"], ref["lon"]), REF_GCJ) < 2.0, ref

            # ---- Tianditu: a key asked for, kept in the browser, sent to Tianditu only; back to WGS-84
            expect(page.locator("#map-tdt-key-field")).to_be_hidden()
            page.select_option("#map-preset", "tdt_vec")
            expect(page.locator("#map-tdt-key-field")).to_be_visible()
            expect(page.locator("#map-note")).to_contain_text("天地图需要密钥")
            [ref] = [s for s in _singles(page) if s["channel"] == REF_ID]
            assert (ref["lat"], ref["lon"]) == REF_WGS, ref
            page.fill("#map-tdt-key", TDT_KEY)
            page.press("#map-tdt-key", "Enter")
            page.locator("#map-tdt-key").blur()
            page.wait_for_selector("#map .leaflet-tile-loaded")
            tdt = [u for u in b.tiles if "tianditu.gov.cn" in u]
            assert tdt and all(f"tk={TDT_KEY}" in u for u in tdt), tdt[:3]
            assert {re.search(r"LAYER=(\w+)", u).group(1) for u in tdt} == {"vec", "cva"}
            assert not [u for u in b.platform_requests if TDT_KEY in u]
            assert page.evaluate("localStorage.getItem('gbops.map.tianditu_key')") == TDT_KEY
            page.screenshot(path=str(shots / "map-06-tianditu.png"))

            # ---- English
            page.click("#lang")
            page.wait_for_selector("a[data-route=map]:text('Map')")
            page.wait_for_selector("#map .gb-cluster, #map .gb-marker")
            assert page.inner_text("#map-info") == f"{located} channels with coordinates"
            assert "Base map" in page.inner_text(".mapv .page-head")
            page.click("#lang")
            assert b.errors == [] and b.console == [], (b.errors, b.console)
            b.close()

            # ---- a 390 px phone: no sideways scrolling, the list collapsed above the map
            p = Browser(pw, server.base, 390, 844, browser=b.browser)
            page = p.page
            page.click("#menu-toggle")
            page.click("a[data-route=map]")
            page.wait_for_selector("#map .gb-cluster")
            assert page.evaluate("document.documentElement.scrollWidth") <= 390
            assert page.get_attribute("#map-side", "open") is None
            side, box = page.locator("#map-side").bounding_box(), page.locator("#map").bounding_box()
            assert side["y"] + side["height"] <= box["y"] and box["height"] >= 320, (side, box)
            page.screenshot(path=str(shots / "map-07-phone.png"))
            page.click("#map-side summary")
            page.fill("#map-search", REF_NAME)
            expect(page.locator("#map-list .mapv-item")).to_have_count(1)
            assert page.evaluate("document.documentElement.scrollWidth") <= 390
            page.screenshot(path=str(shots / "map-08-phone-list.png"))
            page.click(f"#map-list .mapv-item[data-channel='{REF_ID}']")
            expect(page.locator("#map .leaflet-popup")).to_contain_text(REF_NAME)
            assert page.get_attribute("#map-side", "open") is None
            page.screenshot(path=str(shots / "map-09-phone-focus.png"))
            assert p.errors == [] and p.console == [], (p.errors, p.console)
            p.close()
            b.browser.close()
    finally:
        server.stop()


class PlatformTilesServer(Server):
    tile_url = PLATFORM_TILES


def test_map_platform_tile_url_is_the_default_preset(tmp_path: Path) -> None:
    """With GBOPS_MAP_TILE_URL set, the platform's own tiles are the first preset and the default."""
    sync_playwright, _shots = browser_ready(tmp_path)
    need((STATIC / "leaflet" / "leaflet.js").exists(), "Leaflet is not installed")
    server = PlatformTilesServer(tmp_path).start()
    try:
        with sync_playwright() as pw:
            b = Browser(pw, server.base, 1366, 768)
            page = b.page
            page.click("a[data-route=map]")
            page.wait_for_selector("#map .gb-cluster")
            assert page.input_value("#map-preset") == "platform"
            assert page.inner_text("#map-preset option[value=platform]") == "平台配置的底图"
            page.wait_for_selector("#map .leaflet-tile-loaded")
            assert "plain" not in (page.get_attribute("#map", "class") or "")
            assert any(re.match(r"https://[abc]\.tiles\.example\.org/\d+/\d+/\d+\.png$", u) for u in b.tiles), b.tiles[:3]
            page.select_option("#map-preset", "none")
            assert "未选择底图" in page.inner_text("#map-note")
            assert b.errors == [] and b.console == [], (b.errors, b.console)
            b.browser.close()
    finally:
        server.stop()


def test_leaving_the_map_right_after_a_resize_raises_nothing(tmp_path: Path) -> None:
    """A window resize (a full-page screenshot does one) makes Leaflet fire ``moveend`` 200 ms later; leaving the map
    within those 200 ms must not run the page's clustering on the removed map (CI once saw
    "Cannot read properties of undefined (reading '_leaflet_pos')" on the next page)."""
    sync_playwright, _shots = browser_ready(tmp_path)
    need((STATIC / "leaflet" / "leaflet.js").exists(), "Leaflet is not installed")
    server = Server(tmp_path).start()
    try:
        with sync_playwright() as pw:
            b = Browser(pw, server.base, 1366, 768)
            page = b.page
            for width in (1200, 1366, 1100):
                page.click("a[data-route=map]")
                page.wait_for_selector("#map .gb-cluster")
                page.set_viewport_size({"width": width, "height": 700})
                page.wait_for_timeout(50)  # Leaflet's resize handler ran (next frame), its moveend is pending
                page.evaluate("location.hash = '#/tree'")
                page.wait_for_selector("#view[data-view='tree'] > *", state="attached")
                page.wait_for_timeout(400)
            assert b.errors == [] and b.console == [], (b.errors, b.console)
            b.browser.close()
    finally:
        server.stop()
