"""The console's 组织管理 page (``#/org``) in Debian Chromium (Playwright), the browser in Los Angeles, on a real
``gbops run`` with two simulated cameras (``gbops sim``) registered with the platform's SIP password.

The administrator, at 1366x768: creates a root node and renames it, creates a second root and drags the first
into it (HTML5 drag and drop); dragging the parent onto its own child is refused by the page with a message
(and nothing is sent); a child made with 新建下级节点 is moved with the keyboard-accessible 移动到... dialog
(itself as the target is refused in the dialog, the top level is accepted) and deleted after the confirm dialog;
the delete dialog of a non-empty node says what is in it and where it goes, and insists on the tick; the tree is
walked with the arrow keys (focus, aria-expanded, Enter selects); a camera is assigned through the 分配设备
search and another one's row is dragged from the panel onto a node (the device's ``org_node_id`` changes, as
the API says); the page in English.  Then a user whose role is limited to one node sees, read-only, that node
with its one camera and not the other, at 1366x768 and at 390x844 with no sideways scrolling.  No JavaScript
errors and no failed requests in the browser console.  Screenshots under ``$GBOPS_TEST_ARTIFACTS``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.console_support import browser_ready, console_page
from tests.e2e.platform import ADMIN_NEW_PASSWORD, STRONG_SIP_PASSWORD, PlatformProcess

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FIRST = "34020000001320000071"
CAM_A, CAM_B = FIRST, "34020000001320000072"
SCOPED_USER, SCOPED_PASSWORD = "east-watch", "East-Gate-Watch-2026"
DESKTOP = {"width": 1366, "height": 768}
PHONE = {"width": 390, "height": 844}


def _watch_console(page: Any, errors: list[str]) -> None:
    """Console errors (failed requests included) join the page's JavaScript errors."""
    page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)


def _node_id(page: Any, name: str) -> int:
    """The id of the tree item showing ``name``."""
    loc = page.locator(".org-item", has=page.locator(":scope > .org-row .org-name", has_text=name)).first
    loc.wait_for()
    return int(loc.get_attribute("data-org-node"))


def _row(node_id: int) -> str:
    return f"#org-node-{node_id} > .org-row"


def _dialog_save(page: Any) -> None:
    page.click("dialog.modal button[type=submit]")


def _no_dialog(page: Any) -> None:
    page.wait_for_function("!document.querySelector('dialog.modal')")


def _no_sideways_scroll(page: Any) -> None:
    widths = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert widths[0] <= widths[1], f"sideways scrolling: {widths}"


def _api_node(p: PlatformProcess, node_id: int) -> dict[str, Any]:
    return next(n for n in p.get("/api/org/tree").json()["nodes"] if n["id"] == node_id)


def _scoped_login(p: PlatformProcess, node_id: int) -> str:
    """A role that may read devices of ``node_id`` (subtree) only, a user with it; their password changed
    once (the first login asks for it) and the new one returned."""
    r = p.post("/api/roles", {"name": "东区值守", "permissions": ["device.read"], "org_node_ids": [node_id]})
    assert r.status_code == 201, r.text
    r = p.post("/api/users", {"username": SCOPED_USER, "password": SCOPED_PASSWORD, "role_ids": [r.json()["id"]]})
    assert r.status_code == 201, r.text
    r = httpx.post(p.base + "/api/auth/login", json={"username": SCOPED_USER, "password": SCOPED_PASSWORD})
    r.raise_for_status()
    password = SCOPED_PASSWORD
    if r.json().get("must_change_password"):
        password = SCOPED_PASSWORD + "x"
        httpx.post(p.base + "/api/auth/password", headers={"Authorization": f"Bearer {r.json()['access_token']}"},
                   json={"old_password": SCOPED_PASSWORD, "new_password": password}).raise_for_status()
    return password


def test_org_tree_editor(tmp_path: Path) -> None:
    sync_playwright, shots = browser_ready(tmp_path)
    p = PlatformProcess(tmp_path / "data").start()
    sim = subprocess.Popen(
        [sys.executable, "-m", "gbops.cli", "sim", "--server", f"127.0.0.1:{p.sip_port}", "--devices", "2",
         "--channels", "1", "--password", STRONG_SIP_PASSWORD, "--first-id", FIRST],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        p.login()  # the initial administrator password changed to ADMIN_NEW_PASSWORD
        p.wait_for(lambda: sorted(d["device_id"] for d in p.get("/api/devices").json()["items"] if d["online"])
                   == [CAM_A, CAM_B], 30, "the two simulated cameras online")
        with sync_playwright() as pw:
            browser, page, errors = console_page(pw, p.base, "admin", ADMIN_NEW_PASSWORD)
            _watch_console(page, errors)
            page.set_viewport_size(DESKTOP)
            assert page.text_content("a[data-route=org]") == "组织管理"
            page.click("a[data-route=org]")
            page.wait_for_selector("#org-tree")
            assert page.url.endswith("#/org")
            assert page.get_attribute("#org-tree", "role") == "tree"

            # --- a root node, renamed
            page.click("#org-new-root")
            assert page.inner_text("dialog.modal label.field .label") == "节点名称"  # the input has its label
            page.fill("#org-name-input", "东区")
            _dialog_save(page)
            _no_dialog(page)
            east = _node_id(page, "东区")
            page.wait_for_selector(f"#org-panel-title[data-node='{east}']")
            page.click("#org-rename")
            page.fill("#org-name-input", "东区片区")
            _dialog_save(page)
            page.wait_for_selector(f"#org-node-{east} .org-name:text-is('东区片区')")
            assert _api_node(p, east)["name"] == "东区片区"
            assert "手工创建" in page.inner_text(_row(east))

            # --- a second root; the first dragged into it
            page.click("#org-new-root")
            page.fill("#org-name-input", "城区运维")
            _dialog_save(page)
            _no_dialog(page)
            city = _node_id(page, "城区运维")
            page.drag_and_drop(_row(east), _row(city))
            p.wait_for(lambda: _api_node(p, east)["parent_id"] == city, 10, "the dragged node under its target")
            page.wait_for_selector(f"#org-node-{city} [role=group] #org-node-{east}")
            assert page.get_attribute(f"#org-node-{city}", "aria-expanded") == "true"
            assert page.get_attribute(f"#org-node-{east}", "aria-level") == "2"

            # dragging the parent onto its own child: refused by the page, with a message, nothing sent
            page.drag_and_drop(_row(city), _row(east))
            page.wait_for_selector("#org-msg .msg.error")
            assert page.inner_text("#org-msg") == "不能把“城区运维”移到它自己的下级“东区片区”之下。"
            assert _api_node(p, city)["parent_id"] is None and _api_node(p, east)["parent_id"] == city

            # --- a child made from the panel, moved with the keyboard-accessible dialog, deleted after confirming
            page.click(_row(east))
            page.wait_for_selector(f"#org-panel-title[data-node='{east}']")
            page.click("#org-new-child")
            page.fill("#org-name-input", "临时组")
            _dialog_save(page)
            _no_dialog(page)
            temp = _node_id(page, "临时组")
            assert _api_node(p, temp)["parent_id"] == east
            page.wait_for_selector(f"#org-panel-title[data-node='{temp}']")
            page.click("#org-move")
            assert page.inner_text("dialog.modal label.field .label") == "移到此节点之下"
            page.select_option("#org-move-target", str(temp))
            _dialog_save(page)
            page.wait_for_selector("dialog.modal .msg.error:not(.hidden)")
            assert page.inner_text("dialog.modal .msg.error") == "不能把节点移到它自己之下。"
            page.select_option("#org-move-target", "")  # the top level
            _dialog_save(page)
            _no_dialog(page)
            p.wait_for(lambda: _api_node(p, temp)["parent_id"] is None, 10, "the node moved to the top level")
            page.wait_for_selector(f"#org-tree > #org-node-{temp}")
            page.click("#org-delete")
            assert page.inner_text("#org-delete-text") == "节点“临时组”没有下级节点、设备和通道，删除后不可恢复。"
            page.click("#org-delete-confirm")
            _no_dialog(page)
            page.wait_for_function(f"!document.getElementById('org-node-{temp}')")
            assert all(n["id"] != temp for n in p.get("/api/org/tree").json()["nodes"])

            # the delete dialog of a non-empty node: what it holds, where it goes, and the tick it insists on
            page.click(_row(city))
            page.wait_for_selector(f"#org-panel-title[data-node='{city}']")
            page.click("#org-delete")
            text = page.inner_text("#org-delete-text")
            assert "节点“城区运维”不是空的：下级节点 1 个，设备 0 台，通道 0 个。" in text, text
            assert "它是根节点：删除后下级节点成为根节点" in text and "授权了此节点的角色将失去此节点的权限" in text
            assert page.inner_text("dialog.modal label.check") == "我已了解，仍然删除"
            page.click("#org-delete-confirm")
            page.wait_for_selector("dialog.modal .msg.error:not(.hidden)")
            assert page.inner_text("dialog.modal .msg.error") == "请先勾选“我已了解，仍然删除”。"
            page.click("dialog.modal .modal-actions button[type=button]")  # 取消
            _no_dialog(page)
            assert _api_node(p, city)["children"] == [east]

            # --- the keyboard: arrows move the focus, Left collapses, Enter selects
            page.focus(f"#org-node-{city}")
            page.keyboard.press("ArrowDown")
            assert page.evaluate("document.activeElement.id") == f"org-node-{east}"
            page.keyboard.press("ArrowLeft")  # to the parent
            assert page.evaluate("document.activeElement.id") == f"org-node-{city}"
            page.keyboard.press("ArrowLeft")  # collapses it
            assert page.get_attribute(f"#org-node-{city}", "aria-expanded") == "false"
            assert page.locator(f"#org-node-{east}").count() == 0
            page.keyboard.press("ArrowRight")  # expands it
            assert page.get_attribute(f"#org-node-{city}", "aria-expanded") == "true"
            page.keyboard.press("ArrowDown")
            page.keyboard.press("Enter")
            page.wait_for_selector(f"#org-panel-title[data-node='{east}']")
            assert page.get_attribute(f"#org-node-{east}", "aria-selected") == "true"
            assert page.get_attribute(f"#org-node-{city}", "aria-selected") == "false"

            # --- devices: CAM_B assigned to 城区运维 through the search, CAM_A dragged from a panel onto 东区片区
            page.click(_row(city))
            page.wait_for_selector(f"#org-panel-title[data-node='{city}']")
            page.wait_for_selector("#org-devices-empty")
            page.click("#org-assign")
            page.wait_for_selector(f"#org-assign-list input[data-device='{CAM_A}']")
            page.fill("#org-assign-q", CAM_B)
            page.wait_for_function(f"document.querySelectorAll('#org-assign-list input').length === 1 && "
                                   f"document.querySelector(\"#org-assign-list input[data-device='{CAM_B}']\")")
            page.check(f"#org-assign-list input[data-device='{CAM_B}']")
            _dialog_save(page)
            _no_dialog(page)
            p.wait_for(lambda: p.get(f"/api/devices/{CAM_B}").json()["org_node_id"] == city, 10, "CAM_B on 城区运维")
            page.wait_for_selector(f"#org-devices tr[data-device='{CAM_B}']")
            assert "设备 1 · 通道" in page.inner_text(_row(city))
            # CAM_A too, then its row dragged from this panel onto 东区片区
            r = p.post(f"/api/org/nodes/{city}/members", {"device_ids": [CAM_A]})
            assert r.status_code == 200, r.text
            page.click("#org-refresh")
            page.wait_for_selector(f"#org-devices tr[data-device='{CAM_A}']")
            page.screenshot(path=str(shots / "org-01-devices-1366.png"), full_page=True)
            page.drag_and_drop(f"#org-devices tr[data-device='{CAM_A}']", _row(east))
            p.wait_for(lambda: p.get(f"/api/devices/{CAM_A}").json()["org_node_id"] == east, 10,
                       "CAM_A dragged onto 东区片区")
            page.wait_for_function(f"!document.querySelector(\"#org-devices tr[data-device='{CAM_A}']\")")
            assert p.get(f"/api/devices/{CAM_B}").json()["org_node_id"] == city
            page.click(_row(east))
            page.wait_for_selector(f"#org-devices tr[data-device='{CAM_A}']")
            assert page.locator("#org-devices tr.org-device").count() == 1
            page.wait_for_selector(f"#org-channels tr[data-device='{CAM_A}']")
            assert page.locator(f"#org-channels tr[data-device='{CAM_B}']").count() == 0
            assert "东区片区" in page.inner_text(f"#org-channels tr[data-device='{CAM_A}']")
            panel = page.inner_text("#org-panel")
            assert "位置：城区运维 / 东区片区" in panel and "null" not in panel and "undefined" not in panel, panel
            page.screenshot(path=str(shots / "org-02-tree-1366.png"), full_page=True)
            _no_sideways_scroll(page)

            # --- English: the page's words switch with the rest of the console
            page.click("#lang")
            page.wait_for_selector("#org-new-root:text-is('New root node')")
            assert page.text_content("a[data-route=org]") == "Organisation"
            assert "Created by hand" in page.inner_text(_row(city))
            assert "devices 1 · channels" in page.inner_text(_row(east))
            # the selected node stays selected across the switch (it is in the address)
            assert page.inner_text("#org-panel-path") == "Location: 城区运维 / 东区片区"
            assert page.url.endswith(f"#/org?node={east}")
            page.screenshot(path=str(shots / "org-03-english-1366.png"), full_page=True)
            page.click("#lang")
            page.wait_for_selector("#org-new-root:text-is('新建根节点')")

            # --- the phone: panels stacked, no sideways scrolling
            page.set_viewport_size(PHONE)
            page.reload()
            page.wait_for_selector(f"#org-node-{east}")
            page.click(_row(east))
            page.wait_for_selector(f"#org-devices tr[data-device='{CAM_A}']")
            tree_box = page.locator(".org-tree-card").bounding_box()
            panel_box = page.locator("#org-panel").bounding_box()
            assert panel_box["y"] >= tree_box["y"] + tree_box["height"] - 1, (tree_box, panel_box)
            _no_sideways_scroll(page)
            page.screenshot(path=str(shots / "org-04-phone.png"), full_page=True)
            assert errors == [], errors
            browser.close()

            # --- a user limited to 东区片区 sees that node, its camera only, and cannot change anything
            password = _scoped_login(p, east)
            browser, page, errors = console_page(pw, p.base, SCOPED_USER, password)
            _watch_console(page, errors)
            page.set_viewport_size(DESKTOP)
            page.click("a[data-route=org]")
            page.wait_for_selector(f"#org-node-{east}")
            page.click(_row(east))
            page.wait_for_selector(f"#org-devices tr[data-device='{CAM_A}']")
            assert page.locator("#org-devices tr.org-device").count() == 1
            assert page.locator(f"[data-device='{CAM_B}']").count() == 0
            # its parent is shown as the path to it only, with no devices of its own
            assert page.locator(".org-item").count() == 2
            assert "（仅显示路径）" in page.inner_text(_row(city))
            assert page.locator("#org-new-root, #org-actions").count() == 0
            assert page.get_attribute(f"#org-node-{east}", "draggable") is None
            assert page.inner_text("#org-hint") == "您只有查看权限：修改组织树需要“组织管理”权限。"
            page.screenshot(path=str(shots / "org-05-scoped-1366.png"), full_page=True)
            page.set_viewport_size(PHONE)
            _no_sideways_scroll(page)
            page.screenshot(path=str(shots / "org-06-scoped-phone.png"), full_page=True)
            token = page.evaluate("sessionStorage.getItem('gbops.token')")
            seen = httpx.get(p.base + "/api/devices", headers={"Authorization": f"Bearer {token}"}).json()
            assert [d["device_id"] for d in seen["items"]] == [CAM_A]
            assert errors == [], errors
            browser.close()
    finally:
        sim.terminate()
        try:
            sim.wait(10)
        except subprocess.TimeoutExpired:
            sim.kill()
        p.stop()
