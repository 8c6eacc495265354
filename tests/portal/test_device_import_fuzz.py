"""The import's parsers on hostile input (hypothesis): an upload is rows or a SheetError, never anything else."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ops_portal.devices.import_export import SheetError, parse_multipart_file, read_sheet

HEADER = "设备编码,名称,密码\r\n".encode()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000), st.sampled_from(["x.csv", "x.xlsx", "", "x.txt"]))
def test_read_sheet_answers_rows_or_a_sheet_error(data: bytes, name: str) -> None:
    for blob in (data, HEADER + data, b"PK\x03\x04" + data):
        try:
            rows = read_sheet(name, blob)
        except SheetError as exc:
            assert exc.args and " / " in str(exc)
            continue
        for number, row in rows:
            assert isinstance(number, int) and number >= 2
            assert all(v is None or isinstance(v, str) for v in row.values())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000), st.text(max_size=80))
def test_multipart_parser_answers_a_file_or_a_sheet_error(body: bytes, boundary: str) -> None:
    for content_type in (f"multipart/form-data; boundary={boundary}", "multipart/form-data", "text/plain"):
        try:
            name, payload = parse_multipart_file(content_type, body)
        except SheetError:
            continue
        except UnicodeEncodeError:  # a content type that is not latin-1 cannot arrive in an HTTP header
            assert not content_type.isascii()
            continue
        assert isinstance(name, str) and isinstance(payload, bytes)


def test_a_csv_with_a_stray_carriage_return_is_read_or_refused_in_words() -> None:
    """Found by the fuzzer: a bare CR in an unquoted field made the csv module raise (a 500 at the route)."""
    for blob in (HEADER + b"a\rb\x00", HEADER + b'"x\r', b"\r\x00"):
        try:
            read_sheet("x.csv", blob)
        except SheetError as exc:
            assert exc.code in ("import_bad_file", "import_bad_header", "import_empty")
