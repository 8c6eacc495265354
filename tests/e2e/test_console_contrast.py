"""Contrast and form-control names of the console (issue 18, accessibility basics) in Debian Chromium (Playwright)
against a real ``gbops run``, the console's own Content-Security-Policy in force.

The administrator visits every page of the menu (the ``NAV`` table of app.js) in Chinese at 1366x768.  On each
page, in the page itself, every visible text element's colour is measured against its effective background (the
first opaque ``background-color`` up its ancestors, the semi-transparent ones on the way composited over it, the
element's and its ancestors' opacity applied to the text) with the WCAG 2.x contrast ratio: at least 4.5:1 for
normal text, 3:1 for large text (24 px, or 18.66 px bold).  Left out, as WCAG leaves them out: text over an image,
a video, a canvas or map tiles (an ancestor with a ``background-image`` on the way, or an ``img``/``video``/
``canvas`` drawn under the text), disabled controls (and a disabled region), placeholders.  The value shown in a
text input or a select counts as text.  Every visible ``input``/``select``/``textarea`` has an accessible name:
a ``<label>``, ``aria-label``, ``aria-labelledby`` or ``title`` (a placeholder is not a name).

A failed login beforehand gives the security and audit pages a row with badges.  The worst ratios are printed
(``-s``) and each page's screenshot is kept under ``$GBOPS_TEST_ARTIFACTS`` (``tmp_path`` when unset)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.e2e.test_console_shell import _console, _nav_routes, _visit, platform  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

NORMAL, LARGE = 4.5, 3.0

# In the page: [{where, text, ratio, need, fg, bg, size, weight}] for every visible text element, and
# [where] for every visible form control without an accessible name.
MEASURE = r"""() => {
  const parse = (c) => {
    const m = /^rgba?\(([\d.]+),\s*([\d.]+),\s*([\d.]+)(?:,\s*([\d.]+))?\)$/.exec(c || "");
    return m ? [+m[1], +m[2], +m[3], m[4] === undefined ? 1 : +m[4]] : null;
  };
  const over = (top, bottom, a) => [0, 1, 2].map((i) => top[i] * a + bottom[i] * (1 - a));
  const lum = (rgb) => {
    const [r, g, b] = rgb.map((v) => { v /= 255; return v <= 0.04045 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
  const seen = (el) => el.getClientRects().length > 0 && getComputedStyle(el).visibility !== "hidden";
  const name = (el) => {
    let s = el.tagName.toLowerCase() + (el.id ? "#" + el.id : "");
    if (el.className && typeof el.className === "string") s += "." + el.className.trim().split(/\s+/).join(".");
    return s;
  };
  const where = (el) => {
    const path = [];
    for (let e = el; e && e !== document.body && path.length < 4; e = e.parentElement) path.unshift(name(e));
    return path.join(" > ");
  };
  // the media drawn on the page (videos, canvases, images: map tiles, snapshots) that text may sit over
  const media = [...document.querySelectorAll("video, canvas, img")].filter(seen)
    .map((m) => m.getBoundingClientRect()).filter((r) => r.width > 24 && r.height > 24);
  const overMedia = (r) => media.some((m) => r.left < m.right && r.right > m.left && r.top < m.bottom && r.bottom > m.top);
  const disabled = (el) => !!el.closest(":disabled, [aria-disabled=true], .disabled, [inert]");

  // the background behind el: [rgb, over an image?]; the opacity of el and its ancestors
  function background(el) {
    const layers = [];
    let image = false, opacity = 1;
    for (let e = el; e; e = e.parentElement) {
      const cs = getComputedStyle(e);
      opacity *= +cs.opacity;
      if (cs.backgroundImage && cs.backgroundImage !== "none") image = true;
      const bg = parse(cs.backgroundColor);
      if (bg && bg[3] > 0) {
        layers.push(bg);
        if (bg[3] >= 1) break;
      }
    }
    let rgb = [255, 255, 255];  // the canvas under everything
    for (let i = layers.length - 1; i >= 0; i--) rgb = over(layers[i], rgb, layers[i][3]);
    return { rgb, image, opacity };
  }

  const texts = [];
  const done = new Set();
  function measure(el, text) {
    if (done.has(el)) return;
    done.add(el);
    if (!seen(el) || disabled(el) || el.closest("script, style, noscript, option, .leaflet-container")) return;
    const rect = el.getBoundingClientRect();
    if (rect.width <= 1 || rect.height <= 1 || overMedia(rect)) return;
    const cs = getComputedStyle(el);
    const fg = parse(cs.color);
    const bg = background(el);
    if (bg.image || bg.opacity === 0) return;
    if (!fg) { texts.push({ where: where(el), text, ratio: 0, need: NaN, fg: cs.color, bg: "?" }); return; }
    const shown = over(fg, bg.rgb, fg[3] * bg.opacity);
    const size = parseFloat(cs.fontSize), weight = parseInt(cs.fontWeight, 10) || 400;
    const large = size >= 24 || (size >= 18.66 && weight >= 700);
    texts.push({ where: where(el), text: text.slice(0, 40), ratio: Math.round(ratio(shown, bg.rgb) * 100) / 100,
                 need: large ? 3 : 4.5, fg: cs.color, bg: "rgb(" + bg.rgb.map(Math.round).join(", ") + ")",
                 size, weight });
  }
  const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walk.nextNode(); n; n = walk.nextNode()) {
    const text = n.nodeValue.trim();
    if (text && n.parentElement) measure(n.parentElement, text);
  }
  const TEXTUAL = /^(text|search|email|url|tel|number|password|datetime-local|date|time|month|week)$/;
  const controls = [...document.querySelectorAll("input, select, textarea")]
    .filter((c) => !(c.tagName === "INPUT" && c.type === "hidden") && seen(c));
  for (const c of controls) {
    const value = c.tagName === "SELECT" ? (c.selectedOptions[0] || {}).textContent || "" : c.value || "";
    if (value.trim() && (c.tagName !== "INPUT" || TEXTUAL.test(c.type))) measure(c, value.trim());
  }

  const nameless = [];
  for (const c of controls) {
    const t = (s) => (s || "").trim();
    const labelled = t(c.getAttribute("aria-label")) || t(c.title)
      || (c.getAttribute("aria-labelledby") || "").split(/\s+/).some((id) => id && t((document.getElementById(id) || {}).textContent))
      || [...(c.labels || [])].some((l) => t(l.textContent))
      || (c.tagName === "INPUT" && /^(submit|button|reset)$/.test(c.type) && t(c.value));
    if (!labelled) nameless.push(where(c) + (c.type ? "[type=" + c.type + "]" : "") + (c.placeholder ? " (placeholder " + JSON.stringify(c.placeholder) + ")" : ""));
  }
  return { texts, nameless };
}"""


def _one_failed_login(base: str) -> None:
    """A wrong password: a security event (badges on 安全告警) and an audit entry."""
    r = httpx.post(base + "/api/auth/login", json={"username": "admin", "password": "not-the-password-1"}, timeout=30)
    assert r.status_code in (401, 403), r.text


def test_contrast_and_control_names_on_every_page(platform: Any) -> None:  # noqa: F811 (the imported fixture)
    p, _, shots = platform
    _one_failed_login(p.base)
    routes = _nav_routes()
    assert len(routes) >= 15, routes
    low: list[str] = []
    nameless: list[str] = []
    worst: list[tuple[float, str]] = []
    measured = 0
    with _console(p) as (page, errors, console):
        for route in routes:
            _visit(page, route)
            page.wait_for_timeout(2200)  # a fresh row's flash animation has ended
            found = page.evaluate(MEASURE)
            measured += len(found["texts"])
            for item in found["texts"]:
                worst.append((item["ratio"], f"{item['where']} ({item['fg']} on {item['bg']}) #{route}"))
                if not item["ratio"] >= item["need"]:
                    low.append(f"#{route} {item['where']} {item['text']!r}: {item['ratio']}:1 < {item['need']}:1 "
                               f"({item['fg']} on {item['bg']}, {item['size']}px {item['weight']})")
            nameless += [f"#{route} {w}" for w in found["nameless"]]
            page.screenshot(path=str(shots / f"contrast-{route}.png"), full_page=True)
        script_errors = [f"JavaScript error: {e}" for e in errors] + [f"console error: {c}" for c in console]
    lowest: dict[str, tuple[float, str]] = {}  # the lowest ratio of each element kind, over the pages
    for r, w in sorted(worst):
        lowest.setdefault(w.rpartition(" #")[0], (r, w))
    print("\nworst contrast ratios:\n" + "\n".join(f"  {r}:1 {w}" for r, w in sorted(lowest.values())[:15]))
    assert measured >= 10 * len(routes), measured  # the pages were measured, not skipped
    problems = [f"low contrast: {x}" for x in dict.fromkeys(low)] + [f"no accessible name: {x}"
                                                                      for x in dict.fromkeys(nameless)] + script_errors
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems)
