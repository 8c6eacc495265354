"""GB/T 2260 administrative divisions: the civil codes (行政区划编码) of GB/T 28181 in words.

A GB/T 28181 id starts with the 8-digit centre code (中心编码): 2 digits of province, 2 of prefecture, 2 of
county (the GB/T 2260 code) and 2 of the grassroots unit (基层接入单位).  Catalog items of 2, 4, 6 or 8 digits
are civil nodes; devices carry a ``CivilCode``.  :func:`region_name` names any of these from the bundled table
(``gbcore/data/gb2260.json``: province, prefecture and county levels, 6-digit code -> own name; its source and
date are in ``gbcore/data/GB2260_SOURCE.md``), read once, on first use.

Full names are the levels joined: ``610113`` -> 陕西省西安市雁塔区.  The grouping names of the municipalities'
second level (北京市 ``1101`` 市辖区, 重庆市 ``5002`` 县) are left out (``110105`` -> 北京市朝阳区), and the
provinces' group of directly administered counties (省直辖县级行政区划) is left out before a county
(``429004`` -> 湖北省仙桃市) but named when the code is the group itself.  An 8-digit code (and a 20-digit id)
is named by its county (a grassroots unit has no name in GB/T 2260: whoever shows it shows the code beside it).
A code the table does not hold, at any of its levels, has no name: ``None``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from types import MappingProxyType

__all__ = ["TABLE_VERSION", "RegionTable", "region_key", "region_name", "region_table"]

#: The date the bundled table is current to (the source's cut-off date, see GB2260_SOURCE.md).
TABLE_VERSION = "2023-06-30"

_DATA_FILE = "gb2260.json"
#: second-level names that only group the municipalities' districts and counties: never part of a full name
_GROUPING = frozenset({"市辖区", "县"})
#: a province's group of the counties it administers directly: part of a full name only as its last level
_DIRECT_COUNTIES = frozenset({"省直辖县级行政区划", "自治区直辖县级行政区划"})


@dataclass(frozen=True)
class RegionTable:
    """The bundled table: ``names`` (6-digit code -> the division's own name), ``full`` (6-digit code -> its
    full name, as :func:`region_name` gives it), the table's ``version`` and ``digest`` (SHA-256 of the file)."""

    version: str
    digest: str
    names: Mapping[str, str]
    full: Mapping[str, str]


def _join(names: Mapping[str, str], code: str) -> str | None:
    """The full name of a 6-digit code, or None when the table lacks it or any level above it."""
    province, city = code[:2] + "0000", code[:4] + "00"
    if province not in names or code not in names:
        return None
    parts = [names[province]]
    if city != province:
        if city not in names:
            return None
        own = names[city]
        if not (own in _GROUPING or (own in _DIRECT_COUNTIES and city != code)):
            parts.append(own)
    if code != city:
        parts.append(names[code])
    return "".join(parts)


@lru_cache(maxsize=1)
def region_table() -> RegionTable:
    """The table, read and checked once (a malformed file is a packaging error: it raises)."""
    raw = resources.files("gbcore.data").joinpath(_DATA_FILE).read_bytes()
    data = json.loads(raw.decode("utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{_DATA_FILE}: not an object")
    names: dict[str, str] = {}
    for code, name in data.items():
        if not (isinstance(code, str) and len(code) == 6 and code.isascii() and code.isdigit()
                and isinstance(name, str) and name):
            raise ValueError(f"{_DATA_FILE}: bad entry {code!r}: {name!r}")
        names[code] = name
    full = {code: text for code in sorted(names) if (text := _join(names, code)) is not None}
    return RegionTable(
        version=TABLE_VERSION,
        digest=hashlib.sha256(raw).hexdigest(),
        names=MappingProxyType(names),
        full=MappingProxyType(full),
    )


def region_key(code: str) -> str | None:
    """The 6-digit table code a civil code or GB/T 28181 id is named by: 2 digits -> the province
    (``61`` -> ``610000``), 4 -> the prefecture, 6 -> itself, 8 and 20 -> their first 6; None for anything
    else (other lengths, anything but ASCII digits)."""
    if not isinstance(code, str) or not code.isascii() or not code.isdigit():
        return None
    if len(code) in (2, 4):
        return code + "0" * (6 - len(code))
    if len(code) in (6, 8, 20):
        return code[:6]
    return None


def region_name(code: str) -> str | None:
    """The full name of a civil code (2, 4, 6 or 8 digits) or of a GB/T 28181 id's centre code (20 digits):
    ``"610113"`` -> ``"陕西省西安市雁塔区"``, ``"6101"`` -> ``"陕西省西安市"``, ``"61"`` -> ``"陕西省"``,
    ``"61011301"`` -> ``"陕西省西安市雁塔区"``, ``"110105"`` -> ``"北京市朝阳区"``; None when the code is
    malformed or the table does not hold it.  Never raises."""
    key = region_key(code)
    if key is None:
        return None
    return region_table().full.get(key)
