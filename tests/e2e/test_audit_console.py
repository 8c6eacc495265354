"""The console's 审计日志 page (issue 18) in Debian Chromium (Playwright) against a real ``gbops run``, the browser
in Los Angeles and the console's own Content-Security-Policy in force (no ``bypass_csp``).

Actions done through the API - the administrator's login, a failed login, an organisation node created, a device
added with ``POST /api/devices`` (the simulator then registers with its password) and its catalog synced - appear
in the table in words: the action's name, the actor, the target by its name (the device's, the node's), the
result (失败 for the failed login), in Chinese and, after the switch, in English; a row opens to its detail as a
key/value list with the keys in words. The filter takes an action's words; the export downloads the bundle of the
filtered range (a zip ``verify.py`` accepts); the page verifies that bundle in the browser (Ed25519 checkpoint
signature against the platform's verifier key, hash chain, Merkle root): 验证通过; a copy with one byte of an entry
changed: 验证失败 with the entry named. At 390x844 nothing scrolls sideways. No JavaScript or console error.
Screenshots under ``$GBOPS_TEST_ARTIFACTS`` (``tmp_path`` when unset)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.e2e.console_support import SimThread, browser_ready
from tests.e2e.platform import PlatformProcess
from tests.e2e.test_devices_console import _open_console

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DEVICE = "34020000001180000418"  # an NVR (type code 118), as the simulator registers
DEVICE_NAME = "西门摄像机"
DEVICE_PASSWORD = "West-Gate#2026q"
ORG_NAME = "审计测试分局"


def _row(action: str) -> str:
    return f"#audit-table tbody tr[data-action='{action}']:not(.auditv-detail-row)"


def _tampered(bundle: bytes) -> tuple[bytes, int]:
    """The bundle with one byte of an entry changed (the client address's last digit), re-zipped; and that
    entry's seq."""
    src = zipfile.ZipFile(io.BytesIO(bundle))
    seq = -1
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename == "entries.jsonl":
                i = data.index(b'"client_ip":"127.0.0.1"') + len(b'"client_ip":"127.0.0.')
                seq = _seq_of(data, i)
                data = data[:i] + b"2" + data[i + 1 :]
            dst.writestr(info.filename, data)
    return out.getvalue(), seq


def _seq_of(data: bytes, i: int) -> int:
    """The seq of the entry on the line holding byte ``i``."""
    start = data.rfind(b"\n", 0, i) + 1
    return json.loads(data[start : data.index(b"\n", i)])["seq"]


def test_audit_page_words_detail_export_verify(tmp_path: Path) -> None:
    sync_playwright, shots = browser_ready(tmp_path)
    from playwright.sync_api import expect

    from audit_log.verify import Invalid, verify_bundle

    p = PlatformProcess(tmp_path / "data").start()
    sims = SimThread()
    try:
        # ---- actions through the API: a login, a failed login, a node, a device added and its catalog synced
        p.login()
        r = httpx.post(p.base + "/api/auth/login", json={"username": "admin", "password": "not-the-password"},
                       timeout=30)
        assert r.status_code == 401, r.text
        r = p.post("/api/org/nodes", {"name": ORG_NAME})
        assert r.status_code == 201, r.text
        org_id = r.json()["id"]
        r = p.post("/api/devices", {"device_id": DEVICE, "name": DEVICE_NAME, "password": DEVICE_PASSWORD,
                                    "org_node_id": org_id, "expected_channels": 2})
        assert r.status_code == 201, r.text
        sims.start("cam", p.sip_port, DEVICE, 1, channels=2, password=DEVICE_PASSWORD, seed=21)
        p.wait_for(lambda: p.get(f"/api/devices/{DEVICE}").json().get("online"), 20, "the device online")
        r = p.post(f"/api/devices/{DEVICE}/catalog-sync")
        assert r.status_code == 202, r.text
        vkey = p.get("/api/audit/verifier-key").text

        with sync_playwright() as pw:
            browser, page, errors, console = _open_console(pw, p.base)
            page.click("a[data-route=audit]")
            page.wait_for_selector(_row("device.catalog_sync"))
            assert page.url.endswith("#/audit")
            heads = page.inner_text("#audit-table thead")
            for word in ("时间（北京时间）", "操作者", "动作", "对象", "结果", "来源地址"):
                assert word in heads, (word, heads)

            # ---- each action in words: the actor, the action, the target by its name, the result
            def cells(action: str) -> dict[str, str]:
                row = page.locator(_row(action)).first
                return {k: row.locator(f".auditv-{k}").inner_text() for k in ("actor", "action", "target", "result")}

            added = cells("device.create")
            assert added["actor"] == "admin" and added["action"].startswith("添加设备"), added
            assert added["target"].startswith(DEVICE_NAME) and DEVICE in added["target"], added
            assert added["result"] == "成功", added
            synced = cells("device.catalog_sync")
            assert synced["action"].startswith("请求同步设备目录") and synced["target"].startswith(DEVICE_NAME), synced
            node = cells("org.create")
            assert node["action"].startswith("创建组织节点") and node["target"].startswith(ORG_NAME), node
            login = cells("auth.login")
            assert login["action"].startswith("登录成功") and login["actor"] == "admin", login
            failed = cells("auth.login_failed")
            assert failed["action"].startswith("登录失败") and failed["result"] == "失败", failed
            page.screenshot(path=str(shots / "audit-01-table.png"), full_page=True)

            # ---- a row opens to its detail: keys and values in words, no JSON
            page.click(_row("auth.login_failed") + " .auditv-toggle")
            detail = page.locator("#audit-table tr.auditv-detail-row[data-action='auth.login_failed']")
            expect(detail).to_contain_text("原因")
            text = detail.inner_text()
            assert "用户名或密码错误" in text and "bad_credentials" not in text and "{" not in text, text
            assert page.get_attribute(_row("auth.login_failed") + " .auditv-toggle", "aria-expanded") == "true"
            page.click(_row("device.create") + " .auditv-toggle")
            created = page.locator("#audit-table tr.auditv-detail-row[data-action='device.create']").inner_text()
            assert "设置了密码" in created and "password_set" not in created, created
            page.screenshot(path=str(shots / "audit-02-detail.png"), full_page=True)
            page.click(_row("auth.login_failed") + " .auditv-toggle")
            expect(detail).to_have_count(0)

            # ---- the action filter takes words; the rows are that action only
            page.fill("#audit-action", "添加设备")
            page.click("#audit-filter button[type=submit]")
            expect(page.locator("#audit-table tbody tr:not([data-action='device.create'])")).to_have_count(0)
            expect(page.locator(_row("device.create"))).to_have_count(1)

            # ---- export the device.* range: a zip verify.py accepts against the platform's key
            page.fill("#audit-action", "device.*")
            page.click("#audit-filter button[type=submit]")
            expect(page.locator(_row("device.catalog_sync"))).to_have_count(1)
            expect(page.locator("#audit-table tbody tr:not([data-action^='device.'])")).to_have_count(0)
            with page.expect_download() as got:
                page.click("#audit-export")
            bundle_path = tmp_path / got.value.suggested_filename
            got.value.save_as(bundle_path)
            assert bundle_path.name.startswith("gbops-audit-") and bundle_path.suffix == ".zip", bundle_path
            with zipfile.ZipFile(bundle_path) as zf:
                lines = zf.read("entries.jsonl").splitlines()
                assert "consistency.json" in zf.namelist()  # the range starts after entry 0
            assert any(b'"action":"device.create"' in x for x in lines), lines
            assert any(b'"action":"device.catalog_sync"' in x for x in lines), lines
            report = verify_bundle(bundle_path, key_text=vkey)
            assert report.entries == len(lines)

            # ---- verified in the browser: 验证通过
            page.set_input_files("#audit-verify-file", str(bundle_path))
            verdict = page.locator("#audit-verdict")
            expect(verdict).to_have_attribute("data-result", "pass", timeout=20000)
            said = verdict.inner_text()
            assert said.startswith("验证通过") and "Ed25519" in said and "默克尔根" in said, said
            page.screenshot(path=str(shots / "audit-03-verified.png"), full_page=True)

            # ---- one byte of an entry changed: 验证失败, naming the entry (verify.py agrees it is invalid)
            bad = tmp_path / "tampered.zip"
            tampered, seq = _tampered(bundle_path.read_bytes())
            bad.write_bytes(tampered)
            with pytest.raises(Invalid):
                verify_bundle(bad, key_text=vkey)
            page.set_input_files("#audit-verify-file", str(bad))
            expect(verdict).to_have_attribute("data-result", "fail", timeout=20000)
            reason = page.inner_text("#audit-verify-reason")
            assert f"第 {seq} 条" in reason and "被修改" in reason, reason
            page.screenshot(path=str(shots / "audit-04-tampered.png"), full_page=True)

            # ---- English: the page and the actions in words
            page.click("#audit-reset")
            page.click("#lang")
            expect(page.locator("#view h1")).to_have_text("Audit log")
            page.wait_for_selector(_row("device.create"))
            added = cells("device.create")
            assert added["action"].startswith("device added") and added["result"] == "Succeeded", added
            assert cells("auth.login_failed")["result"] == "Failed"
            assert "Time (Beijing)" in page.inner_text("#audit-table thead")
            page.screenshot(path=str(shots / "audit-05-english.png"), full_page=True)
            page.click("#lang")
            page.wait_for_selector(_row("device.create"))

            # ---- no filter: the whole log from entry 0 (no consistency.json), verified in the browser too
            with page.expect_download() as got:
                page.click("#audit-export")
            whole = tmp_path / ("whole-" + got.value.suggested_filename)
            got.value.save_as(whole)
            assert got.value.suggested_filename.startswith("gbops-audit-0-"), got.value.suggested_filename
            with zipfile.ZipFile(whole) as zf:
                assert "consistency.json" not in zf.namelist()
            verify_bundle(whole, key_text=vkey)
            page.set_input_files("#audit-verify-file", str(whole))
            expect(page.locator("#audit-verdict")).to_have_attribute("data-result", "pass", timeout=20000)

            # ---- 390 px: nothing scrolls sideways but the table's own box; the address column hidden
            page.set_viewport_size({"width": 390, "height": 844})
            page.wait_for_timeout(300)  # a layout pass after the resize (no event to wait for)
            wide = page.evaluate("document.documentElement.scrollWidth")
            assert wide <= 390, (wide, page.evaluate(
                "[...document.querySelectorAll('#view *')].filter(e => e.getBoundingClientRect().right > 391)"
                ".slice(0, 8).map(e => e.tagName + '#' + e.id + '.' + e.className)"))
            assert not page.is_visible(_row("device.create") + " .auditv-ip")
            assert page.is_visible(_row("device.create") + " .auditv-action")
            page.screenshot(path=str(shots / "audit-06-phone.png"), full_page=True)

            assert errors == [], errors
            assert console == [], console
            browser.close()
    finally:
        sims.close()
        p.stop()
