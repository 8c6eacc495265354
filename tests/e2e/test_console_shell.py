"""The console's shell (issue 18, "Shell and quality") in Debian Chromium (Playwright) against a real ``gbops run``,
the console's own Content-Security-Policy in force.

The administrator visits every page of the menu (the ``NAV`` table of app.js) at 1366x768 in Chinese and at
390x844 in English: no visible text, title, placeholder or label looks like a raw dictionary key
(``devm.f.name``), the English pages show no Chinese (but the 中文 switch), nothing scrolls sideways at 390 px,
and no page logs a JavaScript or console error.  At 390x844 the menu hides behind the 菜单 button in the header
(``aria-expanded``, ``aria-controls``), opens over the page, closes with Escape (focus back on the button) and
when a link is taken; the page takes the full width.  At 1366x768 the menu is beside the page as before and the
button is hidden.  The header is at the top of the page, also after scrolling (not drawn mid-page in a full-page
screenshot).  Screenshots under ``$GBOPS_TEST_ARTIFACTS`` (``tmp_path`` when unset)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.console_support import CHROMIUM, browser_ready
from tests.e2e.platform import ADMIN_NEW_PASSWORD, PlatformProcess

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DESKTOP = {"width": 1366, "height": 768}
PHONE = {"width": 390, "height": 844}
APP_JS = Path(__file__).resolve().parents[2] / "ops_portal" / "web" / "console" / "app.js"

# What looks like a key but is not one: file names, host names, versions and addresses the pages may show.
RAW_KEY = re.compile(r"\b[a-z][a-z0-9_]*(?:\.[a-z0-9_]+)+\b")
NOT_A_KEY = re.compile(r"\.(csv|xlsx|pdf|png|jpe?g|mp4|flv|ts|json|zip|txt|log|svg|sdp|xml)$"  # file names
                       r"|\.(com|cn|net|org|local|localhost)$"  # host names
                       r"|^(e\.g|i\.e)$")
# Codes a page shows on purpose, as (route, text): the audit filter takes action codes, its example is one.
ALLOWED_CODES = {("audit", "live.start")}
ALLOWED_CHINESE_IN_EN = {"中文"}  # the language switch names the other language in its own words

# Visible text nodes, and the placeholder / title / aria-label of visible elements, as [where, text].
SHOWN_TEXT = """() => {
  const seen = (el) => !!el && el.getClientRects().length > 0 && getComputedStyle(el).visibility !== "hidden";
  const out = [["title", document.title]];
  const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walk.nextNode(); n; n = walk.nextNode()) {
    const text = n.nodeValue.trim();
    const el = n.parentElement;
    // [data-code]: a code shown on purpose beside its words (the audit action under its name, an event's raw detail);
    // [data-place]: a GB/T 2260 place name with its civil code (a proper noun, shown as it is in English too)
    if (!text || !el || el.closest("script, style, noscript, textarea, [data-code], [data-place]") || !seen(el)) continue;
    out.push([(el.id ? "#" + el.id : el.tagName.toLowerCase()) + (el.className ? "." + el.className : ""), text]);
  }
  for (const el of document.body.querySelectorAll("[placeholder], [title], [aria-label]")) {
    if (!seen(el)) continue;
    for (const a of ["placeholder", "title", "aria-label"]) {
      const v = el.getAttribute(a);
      if (v && v.trim()) out.push([el.tagName.toLowerCase() + "@" + a, v.trim()]);
    }
  }
  return out;
}"""


def _nav_routes() -> list[str]:
    """The routes of app.js's NAV table, in its order."""
    text = APP_JS.read_text(encoding="utf-8")
    table = text[text.index("const NAV = ["):text.index("];", text.index("const NAV = ["))]
    return re.findall(r'route:\s*"([^"]+)"', table)


def _raw_keys(route: str, shown: list[list[str]]) -> list[tuple[str, str]]:
    found = []
    for where, text in shown:
        for m in RAW_KEY.finditer(text):
            if not NOT_A_KEY.search(m.group(0)) and (route, m.group(0)) not in ALLOWED_CODES:
                found.append((where, m.group(0)))
    return found


def _chinese(shown: list[list[str]], data: set[str]) -> list[tuple[str, str]]:
    """Chinese words an English page shows, but the platform's data (``data``: names people gave)."""
    found = []
    for where, text in shown:
        if text in ALLOWED_CHINESE_IN_EN:
            continue
        rest = text
        for word in sorted(data, key=len, reverse=True):
            rest = rest.replace(word, "")
        if re.search(r"[\u4e00-\u9fff]", rest):
            found.append((where, text))
    return found


def _no_sideways_scroll(page: Any) -> list[int]:
    return page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")


def _visit(page: Any, route: str) -> None:
    """Open ``#/route`` and wait for its view to draw and its requests to settle."""
    page.evaluate("(r) => { location.hash = '#/' + r; }", route)
    try:
        page.wait_for_selector(f"#view[data-view='{route}'] > *", state="attached", timeout=30000)
    except Exception as exc:
        shown = page.evaluate("(() => { const v = document.getElementById('view');"
                              " return v ? [v.dataset.view, v.innerHTML.slice(0, 300)] : document.body.innerHTML"
                              ".slice(0, 300); })()")
        raise AssertionError(f"#/{route} does not draw: {shown}") from exc
    try:
        page.wait_for_load_state("networkidle", timeout=5000)
    except Exception:  # a page that polls all the time: what it drew by now is what is checked
        pass
    page.wait_for_timeout(200)  # the last response's rendering (no event to wait for)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PlatformProcess, set[str], Path]]:
    """A running ``gbops run`` with the administrator's password changed, the names its data gives (the
    administrator's, the roles'), and the folder for screenshots."""
    tmp = tmp_path_factory.mktemp("console-shell")
    _, shots = browser_ready(tmp)
    p = PlatformProcess(tmp / "data").start()
    try:
        p.login()  # the initial password changed: ADMIN_NEW_PASSWORD
        me = p.get("/api/auth/me").json()
        roles = p.get("/api/roles").json()
        data = {me.get("display_name") or "", me["username"]} | {
            r["name"] for r in (roles["items"] if isinstance(roles, dict) else roles)}
        data.discard("")
        yield p, data, shots
    finally:
        p.stop()


@contextmanager
def _console(p: PlatformProcess) -> Iterator[tuple[Any, list[str], list[str]]]:
    """Chromium at 1366x768 logged in as the administrator: (page, page errors, console errors)."""
    sync_playwright, _ = browser_ready(Path("."))
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu",
                                                                     "--disable-background-networking"])
        page = browser.new_page(viewport=DESKTOP, timezone_id="America/Los_Angeles")
        errors: list[str] = []
        console: list[str] = []
        # each error with the page it happened on (#/route) and the script that logged it
        page.on("pageerror", lambda e: errors.append(f"{page.url.partition('#')[2]}: {e}"))
        page.on("console", lambda m: console.append(f"{page.url.partition('#')[2]}: {m.text} @ "
                                                    f"{m.location.get('url', '')}:{m.location.get('lineNumber')}")
                if m.type == "error" else None)
        page.goto(p.base + "/console/")
        page.wait_for_selector("#login-form")
        page.fill("#login-username", "admin")
        page.fill("#login-password", ADMIN_NEW_PASSWORD)
        page.click("#login-submit")
        page.wait_for_selector(".sidenav")
        try:
            yield page, errors, console
        finally:
            browser.close()


def test_shell_menu_header_and_phone_menu(platform) -> None:
    from playwright.sync_api import expect

    p, _, shots = platform
    routes = _nav_routes()
    assert len(routes) >= 15 and "dashboard" in routes, routes
    with _console(p) as (page, errors, console):
        # ---- the administrator's menu is the whole NAV table
        shown_routes = page.eval_on_selector_all(".sidenav a", "as => as.map(a => a.dataset.route)")
        assert shown_routes == routes, (shown_routes, routes)

        # ---- 1366x768: the menu beside the page, no menu button; the page marked in the menu
        assert not page.is_visible("#menu-toggle")
        nav_box = page.locator("#sidenav").bounding_box()
        view_box = page.locator("#view").bounding_box()
        assert nav_box["width"] >= 150 and view_box["x"] >= nav_box["x"] + nav_box["width"] - 1, (nav_box, view_box)
        _visit(page, "audit")
        assert page.get_attribute("a[data-route='audit']", "aria-current") == "page"
        assert page.get_attribute("a[data-route='dashboard']", "aria-current") is None

        # ---- the header stays at the top of the page, also scrolled down
        page.set_viewport_size({"width": 1366, "height": 300})
        page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")
        scrolled = page.evaluate("[window.scrollY, document.querySelector('.topbar').getBoundingClientRect().top]")
        assert scrolled[0] > 0, scrolled  # the page is taller than the window
        assert scrolled[0] + scrolled[1] == 0, f"the header is not at the top of the page: {scrolled}"
        page.screenshot(path=str(shots / "shell-scrolled-full-page.png"), full_page=True)
        page.evaluate("window.scrollTo(0, 0)")

        # ---- 390x844: the menu behind the 菜单 button, the page the full width
        page.set_viewport_size(PHONE)
        _visit(page, "dashboard")
        toggle = page.locator("#menu-toggle")
        expect(toggle).to_be_visible()
        assert toggle.inner_text().strip() == "菜单"
        assert toggle.get_attribute("aria-controls") == "sidenav"
        assert toggle.get_attribute("aria-expanded") == "false"
        assert not page.is_visible("#sidenav")
        view_box = page.locator("#view").bounding_box()
        assert view_box["x"] == 0 and view_box["width"] >= PHONE["width"] - 1, view_box
        widths = _no_sideways_scroll(page)
        assert widths[0] <= widths[1], f"sideways scrolling on the dashboard: {widths}"
        page.screenshot(path=str(shots / "shell-phone-closed.png"), full_page=True)

        # opens over the page, focus in the menu; Escape closes it and gives the focus back to the button
        toggle.click()
        expect(page.locator("#sidenav")).to_be_visible()
        assert toggle.get_attribute("aria-expanded") == "true"
        assert page.evaluate("document.activeElement.closest('#sidenav') !== null")
        widths = _no_sideways_scroll(page)
        assert widths[0] <= widths[1], f"sideways scrolling with the menu open: {widths}"
        page.screenshot(path=str(shots / "shell-phone-open.png"))
        page.keyboard.press("Escape")
        expect(page.locator("#sidenav")).to_be_hidden()
        assert toggle.get_attribute("aria-expanded") == "false"
        assert page.evaluate("document.activeElement.id") == "menu-toggle"

        # a link taken: that page, the menu closed
        toggle.click()
        page.click("#sidenav a[data-route='tickets']")
        page.wait_for_selector("#view[data-view='tickets'] > *", state="attached")
        assert page.url.endswith("#/tickets")
        expect(page.locator("#sidenav")).to_be_hidden()
        assert toggle.get_attribute("aria-expanded") == "false"
        # a tap beside the open menu closes it
        toggle.click()
        expect(page.locator("#sidenav")).to_be_visible()
        page.click("#view", position={"x": 370, "y": 400})
        expect(page.locator("#sidenav")).to_be_hidden()

        # ---- English: the button's word too; and back at 1366 the menu is beside the page again
        page.click("#lang")
        expect(toggle).to_have_text("Menu")
        assert page.get_attribute("#sidenav", "aria-label") == "Main menu"
        widths = _no_sideways_scroll(page)
        assert widths[0] <= widths[1], f"sideways scrolling in English: {widths}"
        page.set_viewport_size(DESKTOP)
        assert not page.is_visible("#menu-toggle") and page.is_visible("#sidenav")
        page.click("#lang")
        expect(page.locator("#lang")).to_have_text("English")

        assert errors == [], errors
        assert console == [], console


def test_every_page_in_words_in_both_languages(platform) -> None:
    """Every page of the menu in Chinese at 1366x768 and in English at 390x844."""
    p, data, shots = platform
    routes = _nav_routes()
    problems: list[str] = []
    with _console(p) as (page, errors, console):
        for route in routes:
            _visit(page, route)
            problems += [f"zh #{route} {where}: {key}" for where, key in _raw_keys(route, page.evaluate(SHOWN_TEXT))]
            page.screenshot(path=str(shots / f"shell-zh-{route}.png"), full_page=True)

        page.set_viewport_size(PHONE)
        page.click("#lang")
        page.wait_for_selector("#menu-toggle:has-text('Menu')")
        for route in routes:
            _visit(page, route)
            shown = page.evaluate(SHOWN_TEXT)
            problems += [f"en #{route} {where}: {key}" for where, key in _raw_keys(route, shown)]
            problems += [f"en #{route} {where}: Chinese {text!r}" for where, text in _chinese(shown, data)]
            widths = _no_sideways_scroll(page)
            if widths[0] > widths[1]:
                problems.append(f"en #{route}: sideways scrolling at 390 px {widths}")
            page.screenshot(path=str(shots / f"shell-en-phone-{route}.png"), full_page=True)
        page.click("#lang")  # back to Chinese for whoever opens the console next in this browser

        problems += [f"JavaScript error: {e}" for e in errors] + [f"console error: {c}" for c in console]
        assert not problems, "\n".join(problems)
