"""Text for spreadsheets: a cell a spreadsheet program would run as a formula is kept as text.

Names in exports come from devices (a catalog's channel names) and people (download purposes, display names):
hostile by default. A CSV cell starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is run as a
formula by Excel and LibreOffice (CSV injection); it is written with a leading apostrophe, which they show as
text. Numbers are left alone (they are not text, and ``-5`` must stay a number).
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["FORMULA_FIRST", "csv_text", "is_formula_like", "xlsx_text"]

#: Control characters a worksheet cannot hold (openpyxl refuses the whole file on one of them).
XLSX_ILLEGAL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")

FORMULA_FIRST = ("=", "+", "-", "@", "\t", "\r")


def is_formula_like(text: str) -> bool:
    return text.startswith(FORMULA_FIRST)


def csv_text(value: Any) -> Any:
    """``value`` for a CSV cell: a text a spreadsheet would run as a formula gets a leading apostrophe; anything
    else (numbers, None, other text) as it is."""
    if isinstance(value, str) and is_formula_like(value):
        return "'" + value
    return value


def xlsx_text(value: Any) -> Any:
    """``value`` for a worksheet cell: each control character a worksheet cannot hold becomes U+FFFD (a name a
    device sent must not make the whole export fail); anything that is not text as it is."""
    return XLSX_ILLEGAL.sub("\ufffd", value) if isinstance(value, str) else value
