"""Device export and import as CSV / XLSX (issue 18), with the per-row error report."""

from __future__ import annotations

import csv
import io
import time

from openpyxl import Workbook, load_workbook

from ops_portal.devices.import_export import COLUMNS

from .conftest import Portal
from .org_data import build_tree
from .test_device_manage import audit_rows

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
HEADERS = [header for _, header in COLUMNS]


def device_id(n: int) -> str:
    return f"3402000000132{n + 100_000:07d}"


def xlsx(rows: list[list[object]], headers: list[str] | None = None) -> bytes:
    wb = Workbook()
    ws = wb.active
    ws.append(headers or ["设备编码", "名称", "密码", "传输协议", "组织节点ID", "码流标识", "预期通道数", "经度", "纬度",
                          "安装地址"])
    for row in rows:
        ws.append(row)
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


async def upload(portal: Portal, headers: dict[str, str], name: str, data: bytes, media: str) -> dict:
    r = await portal.client.post("/api/devices/import", headers=headers, files={"file": (name, data, media)})
    assert r.status_code == 200, r.text
    return r.json()


async def test_import_1000_devices_with_3_bad_rows(audited: Portal) -> None:
    p = audited
    h = await p.user_token("admin")
    tree = await build_tree(p.registry)
    rows: list[list[object]] = [
        [device_id(n), f"相机{n}", f"Cam-Pass-{n:04d}x", "udp" if n % 2 else "tcp", tree.va, "streamnumber", 1,
         118.0 + n / 10000, 24.0, f"地址{n}"] for n in range(1000)]
    rows[10][0] = "3402000000132000001"  # 19 digits: sheet row 12
    rows[500][2] = "12345678"  # weak password: sheet row 502
    rows[998][4] = 999_999  # no such node: sheet row 1000
    data = xlsx(rows)
    started = time.monotonic()
    out = await upload(p, h, "devices.xlsx", data, XLSX)
    elapsed = time.monotonic() - started
    print(f"\nimport of 1000 XLSX rows (3 bad): {elapsed:.2f} s")
    assert (out["total"], out["created"], out["updated"], out["failed"]) == (1000, 997, 0, 3)
    assert [(e["row"], e["device_id"], e["code"]) for e in out["errors"]] == [
        (12, "3402000000132000001", "bad_device_id"), (502, device_id(500), "weak_password"),
        (1000, device_id(998), "bad_org_node")]
    assert all(" / " in e["message"] for e in out["errors"])
    assert elapsed < 30
    total, _ = await p.registry.list_devices(limit=1)
    assert total == 997 + 2  # and the tree's two devices
    assert p.sip.passwords[device_id(0)] is not None and device_id(500) not in p.sip.passwords
    imports = [d for a, _, d in await audit_rows(p) if a == "device.import"]
    assert len(imports) == 1 and (imports[0]["created"], imports[0]["failed"]) == (997, 3)

    # the same file again: every row exists
    again = await upload(p, h, "devices.xlsx", data, XLSX)
    assert (again["created"], again["failed"]) == (0, 1000)
    assert {e["code"] for e in again["errors"]} == {"device_exists", "bad_device_id", "weak_password", "bad_org_node"}


async def test_export_round_trips_into_import(portal: Portal) -> None:
    p = portal
    h = await p.user_token("admin")
    r = await p.client.post("/api/org/nodes", headers=h, json={"name": "东区"})
    assert r.status_code == 201, r.text
    node = r.json()["id"]
    made = {
        device_id(1): {"name": "=东门 相机", "transport": "tcp", "org_node_id": node, "stream_form": "stream",
                       "expected_channels": 4, "longitude": 118.25, "latitude": -24.5, "address": "东门, \"一号\""},
        device_id(2): {"name": "-西门", "transport": "udp", "org_node_id": None, "stream_form": "none",
                       "expected_channels": None, "longitude": None, "latitude": None, "address": None},
    }
    for dev, fields in made.items():
        assert (await p.client.post("/api/devices", headers=h, json={"device_id": dev, **fields})).status_code == 201
    for fmt, media in (("csv", "text/csv"), ("xlsx", XLSX)):
        r = await p.client.get(f"/api/devices/export?format={fmt}", headers=h)
        assert r.status_code == 200 and r.headers["content-type"].startswith(media)
        assert f".{fmt}" in r.headers["content-disposition"]
        exported = r.content
        if fmt == "csv":
            assert exported.startswith(b"\xef\xbb\xbf")
            table = list(csv.reader(io.StringIO(exported.decode("utf-8-sig"))))
        else:
            table = [list(row) for row in load_workbook(io.BytesIO(exported)).worksheets[0].iter_rows(values_only=True)]
        assert table[0] == HEADERS and len(table) == 3
        assert table[1][1] == "'=东门 相机"  # not run as a formula by a spreadsheet
        assert table[1][5] == "东区"  # the node's name next to its id
        r = await p.client.post("/api/devices/batch", headers=h, json={"action": "delete", "device_ids": [*made]})
        assert all(x["ok"] for x in r.json()["results"]), r.text
        out = await upload(p, h, f"export.{fmt}", exported, media)
        assert (out["total"], out["created"], out["failed"]) == (2, 2, 0), out
        for dev, fields in made.items():
            got = (await p.client.get(f"/api/devices/{dev}", headers=h)).json()
            assert {k: got[k] for k in fields} == fields, (fmt, got)


async def test_template_and_refused_files(portal: Portal) -> None:
    p = portal
    h = await p.user_token("admin")
    r = await p.client.get("/api/devices/import/template?format=xlsx", headers=h)
    assert r.status_code == 200
    rows = list(load_workbook(io.BytesIO(r.content)).worksheets[0].iter_rows(values_only=True))
    assert list(rows[0]) == HEADERS and len(rows) == 2 and rows[1][0] == "34020000001320000001"
    r = await p.client.get("/api/devices/import/template?format=csv", headers=h)
    assert r.content.decode("utf-8-sig").splitlines()[0].split(",")[:2] == ["设备编码", "名称"]
    # the template's example row imports
    out = await upload(p, h, "template.csv", r.content, "text/csv")
    assert (out["created"], out["failed"]) == (1, 0)
    # GB18030 CSV (Excel in a Chinese locale) with English headers
    text = "device_id,name,transport\r\n34020000001320000077,北门,tcp\r\n34020000001320000078,,udp\r\n"
    out = await upload(p, h, "gbk.csv", text.encode("gb18030"), "text/csv")
    assert (out["created"], [(e["row"], e["code"]) for e in out["errors"]]) == (1, [(3, "bad_name")])
    assert (await p.client.get("/api/devices/34020000001320000077", headers=h)).json()["name"] == "北门"
    r = await p.client.post("/api/devices/import", headers=h,
                            files={"file": ("x.xlsx", xlsx([["1"]], headers=["编号", "名字"]), XLSX)})
    assert r.status_code == 422 and r.json()["error"] == "import_bad_header"
    r = await p.client.post("/api/devices/import", headers=h, files={"other": ("x.csv", b"a", "text/csv")})
    assert r.status_code == 422 and r.json()["error"] == "import_bad_request"
    r = await p.client.post("/api/devices/import", headers=h, content=b"device_id,name\r\n")
    assert r.status_code == 422 and r.json()["error"] == "import_bad_request"


async def test_export_survives_control_characters_in_names(portal: Portal) -> None:
    """A name with a control character (a device's catalog, or a typed one: the schemathesis run found it) makes
    no 500: the XLSX export writes U+FFFD in its place, the CSV keeps the text as it is."""
    p = portal
    h = await p.user_token("admin")
    dev = device_id(7)
    r = await p.client.post("/api/devices", headers=h, json={"device_id": dev, "name": "门口\x1b摄像机\x01"})
    assert r.status_code == 201, r.text
    r = await p.client.get("/api/devices/export?format=xlsx", headers=h)
    assert r.status_code == 200, r.text
    rows = [list(row) for row in load_workbook(io.BytesIO(r.content)).worksheets[0].iter_rows(values_only=True)]
    assert [row[1] for row in rows if row[0] == dev] == ["门口\ufffd摄像机\ufffd"]
    r = await p.client.get("/api/devices/export?format=csv", headers=h)
    assert r.status_code == 200 and "门口\x1b摄像机\x01" in r.content.decode("utf-8-sig")
