"""Devices as a sheet (issue 18): CSV / XLSX export, the import template, and reading an import.

The first row holds the column headers in Chinese (:data:`COLUMNS`); an import also accepts the English keys
as headers, ignores columns it does not know (the export's read-only ones: online, manufacturer, times ...)
and skips blank rows.  Times are written in Beijing time (:mod:`gbcore.timeutil`).  CSV is UTF-8 with a BOM
(what Excel needs to read Chinese); an import also reads GB18030, which Excel in a Chinese locale writes.
Text that a spreadsheet would run as a formula (``=``, ``+``, ``-``, ``@`` first) is written with a leading
``'`` and read back without it.

Only parsing and writing here: the checks that need the registry are the route's
(:mod:`ops_portal.devices.manage_routes`).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

from gbcore.sheets import FORMULA_FIRST, xlsx_text
from gbcore.timeutil import to_device_time

__all__ = [
    "COLUMNS",
    "IMPORT_KEYS",
    "MAX_ROWS",
    "SheetError",
    "parse_multipart_file",
    "read_sheet",
    "row_problem",
    "template_rows",
    "write_csv",
    "write_xlsx",
]

#: (key, header): the export's columns in order.  The keys of :data:`IMPORT_KEYS` are read by an import.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("device_id", "设备编码"),
    ("name", "名称"),
    ("password", "密码"),
    ("transport", "传输协议"),
    ("org_node_id", "组织节点ID"),
    ("org_node_name", "组织节点"),
    ("stream_form", "码流标识"),
    ("expected_channels", "预期通道数"),
    ("longitude", "经度"),
    ("latitude", "纬度"),
    ("address", "安装地址"),
    ("online", "在线"),
    ("manufacturer", "厂商"),
    ("model", "型号"),
    ("firmware", "固件版本"),
    ("remote_addr", "IP:端口"),
    ("channels_online", "在线通道数"),
    ("channels_total", "通道总数"),
    ("last_seen", "最后心跳"),
    ("registered_at", "注册时间"),
    ("created_at", "添加时间"),
)
IMPORT_KEYS = ("device_id", "name", "password", "transport", "org_node_id", "stream_form", "expected_channels",
               "longitude", "latitude", "address")
MAX_ROWS = 10_000

_HEADER_KEYS = {header: key for key, header in COLUMNS} | {key: key for key, _ in COLUMNS}
_TIMES = ("last_seen", "registered_at", "created_at")
_FORMULA_FIRST = FORMULA_FIRST  # one list for every export (gbcore.sheets)
_EXAMPLE = {"device_id": "34020000001320000001", "name": "东门入口 / East gate", "password": "",
            "transport": "udp", "org_node_id": "", "stream_form": "streamnumber", "expected_channels": 1,
            "longitude": 118.089, "latitude": 24.479, "address": "厦门市思明区 / Siming, Xiamen"}


class SheetError(Exception):
    """The upload as a whole cannot be read (``code``, "中文 / English" message)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# ------------------------------------------------------------------------------------------ writing
def _cell(key: str, value: Any) -> Any:
    if value is None:
        return ""
    if key in _TIMES and isinstance(value, datetime):
        return to_device_time(value).strftime("%Y-%m-%d %H:%M:%S")
    if key == "online":
        return "在线" if value else "离线"
    if isinstance(value, bool | int | float):
        return value
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_FIRST) else text


def _table(rows: Iterable[Mapping[str, Any]]) -> Iterable[list[Any]]:
    yield [header for _, header in COLUMNS]
    for row in rows:
        yield [_cell(key, row.get(key)) for key, _ in COLUMNS]


def write_csv(rows: Iterable[Mapping[str, Any]]) -> bytes:
    """The devices as CSV (UTF-8 with BOM, Chinese headers)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerows(_table(rows))
    return ("\ufeff" + buf.getvalue()).encode("utf-8")


def write_xlsx(rows: Iterable[Mapping[str, Any]]) -> bytes:
    """The devices as an XLSX workbook (one sheet, Chinese headers, ids as text)."""
    from openpyxl import Workbook

    wb = Workbook(write_only=True)
    ws = wb.create_sheet("设备 devices")
    for values in _table(rows):
        ws.append([xlsx_text(v) for v in values])  # a device-given name with a control character stays a name
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def template_rows() -> list[dict[str, Any]]:
    """The import template's one example row."""
    return [dict(_EXAMPLE)]


# ------------------------------------------------------------------------------------------ reading
def parse_multipart_file(content_type: str, body: bytes, field: str = "file") -> tuple[str, bytes]:
    """(file name, bytes) of the form field ``field`` of a ``multipart/form-data`` body."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise SheetError("import_bad_request", "请以 multipart/form-data 上传文件（字段 file） / upload the file as "
                                               "multipart/form-data (field file)")
    message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n"
                                                  + body)
    if message.is_multipart():
        for part in message.iter_parts():
            if part.get_param("name", header="content-disposition") == field:
                payload = part.get_payload(decode=True)
                return part.get_filename() or "", payload if isinstance(payload, bytes) else b""
    raise SheetError("import_bad_request", "缺少文件字段 file / the form has no field named file")


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        value = int(value)
    text = str(value).strip()
    if len(text) > 1 and text[0] == "'" and text[1:].startswith(_FORMULA_FIRST):
        text = text[1:]
    return text or None


def _csv_rows(data: bytes) -> list[list[Any]]:
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            text = data.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:  # pragma: no cover - gb18030 decodes any byte string
        raise SheetError("import_bad_file", "无法识别 CSV 编码 / cannot decode the CSV")
    try:  # newline="": quoted fields may hold line breaks, and a lone CR ends a line as Excel writes it
        return list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise SheetError("import_bad_file", f"CSV 文件格式错误 / the CSV file is malformed: {exc}") from None


def _xlsx_rows(data: bytes) -> list[list[Any]]:
    from openpyxl import load_workbook

    try:
        wb = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as exc:
        raise SheetError("import_bad_file", f"无法读取 XLSX 文件 / cannot read the XLSX file: {exc}") from None
    try:
        ws = wb.worksheets[0]
        rows: list[list[Any]] = []
        for values in ws.iter_rows(values_only=True):
            rows.append(list(values))
            if len(rows) > MAX_ROWS + 1:
                break
        return rows
    finally:
        wb.close()


def read_sheet(filename: str, data: bytes) -> list[tuple[int, dict[str, str | None]]]:
    """The data rows of an upload as (sheet row number, {key: text}) for the keys of :data:`IMPORT_KEYS`
    found in the header row; blank rows are skipped.  XLSX is told by its content (a zip), else CSV."""
    is_xlsx = data[:4] == b"PK\x03\x04" or filename.lower().endswith(".xlsx")
    table = _xlsx_rows(data) if is_xlsx else _csv_rows(data)
    if not table:
        raise SheetError("import_empty", "文件为空 / the file is empty")
    columns: dict[int, str] = {}
    for index, header in enumerate(table[0]):
        key = _HEADER_KEYS.get(_text(header) or "")
        if key in IMPORT_KEYS and key not in columns.values():
            columns[index] = key
    if "device_id" not in columns.values() or "name" not in columns.values():
        raise SheetError("import_bad_header", "表头须含“设备编码”和“名称”列（请使用导入模板） / the header row must "
                                              "have the columns 设备编码 and 名称 (use the import template)")
    out = []
    for number, values in enumerate(table[1:], start=2):
        row = {key: _text(values[i]) if i < len(values) else None for i, key in columns.items()}
        if any(v is not None for v in row.values()):
            out.append((number, row))
    if len(out) > MAX_ROWS:
        raise SheetError("import_too_many_rows", f"最多导入 {MAX_ROWS} 行 / at most {MAX_ROWS} rows per import")
    return out


@dataclass(frozen=True, slots=True)
class _Problem:
    code: str
    message: str


def _number(text: str | None, kind: type, low: float, high: float) -> Any:
    if text is None:
        return None
    if kind is int:
        number = float(text)
        if not number.is_integer():
            raise ValueError(text)
        value: Any = int(number)
    else:
        value = float(text)
    if (isinstance(value, float) and not math.isfinite(value)) or not low <= value <= high:
        raise ValueError(text)
    return value


def row_problem(row: Mapping[str, str | None]) -> tuple[dict[str, Any], _Problem | None]:
    """The row's values as :class:`~ops_portal.devices.schemas.DeviceCreate` fields, or the first problem that
    needs no registry (id format and password strength are the route's, like the API's)."""
    fields: dict[str, Any] = {"device_id": row.get("device_id") or "", "name": row.get("name"),
                              "password": row.get("password")}
    if not fields["device_id"]:
        return fields, _Problem("bad_device_id", "缺少设备编码 / the device id is missing")
    name = fields["name"]
    if not name or len(name) > 64:
        return fields, _Problem("bad_name", "名称须为 1-64 个字符 / the name must be 1-64 characters")
    transport = (row.get("transport") or "udp").lower()
    if transport not in ("udp", "tcp"):
        return fields, _Problem("bad_transport", f"传输协议须为 udp 或 tcp / transport must be udp or tcp: {transport}")
    fields["transport"] = transport
    stream_form = (row.get("stream_form") or "none").lower()
    if stream_form not in ("streamnumber", "stream", "streamprofile", "none"):
        return fields, _Problem("bad_stream_form", "码流标识须为 streamnumber、stream、streamprofile 或 none / "
                                                   f"stream form must be streamnumber, stream, streamprofile or none: "
                                                   f"{stream_form}")
    fields["stream_form"] = stream_form
    checks: Sequence[tuple[str, type, float, float, str]] = (
        ("org_node_id", int, 1, 2**31 - 1, "组织节点ID须为正整数 / the org node id must be a positive integer"),
        ("expected_channels", int, 0, 4096, "预期通道数须为 0-4096 / expected channels must be 0-4096"),
        ("longitude", float, -180, 180, "经度须在 -180 到 180 之间 / longitude must be within -180..180"),
        ("latitude", float, -90, 90, "纬度须在 -90 到 90 之间 / latitude must be within -90..90"),
    )
    for key, kind, low, high, message in checks:
        try:
            fields[key] = _number(row.get(key), kind, low, high)
        except (TypeError, ValueError):
            code = "bad_org_node" if key == "org_node_id" else f"bad_{key}"
            return fields, _Problem(code, f"{message}: {row.get(key)}")
    address = row.get("address")
    if address is not None and len(address) > 200:
        return fields, _Problem("bad_address", "安装地址最多 200 个字符 / the address is at most 200 characters")
    fields["address"] = address
    return fields, None
