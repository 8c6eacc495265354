"""The local device advisory list: which manufacturer / model / firmware is known to be vulnerable.

The list is a TOML file (``gbops/data/device_advisories.toml`` ships with the platform; operators edit it
or point the check at their own).  Each ``[[advisory]]`` table::

    id = "LOCAL-EXAMPLE-0001"       # the advisory's id (CVE, CNVD, vendor bulletin, or a local one)
    vendor = "ExampleVendor"        # matched case-insensitively against the device's manufacturer
    model = "EX-IPC-*"              # fnmatch pattern, case-insensitive ("*": every model)
    firmware_max = "5.4.0"          # affected: firmware at or below this version (omit: every version)
    severity = "critical"           # critical | warning | info (default warning)
    words_zh = "..."                # what is wrong
    words_en = "..."
    fix_zh = "..."                  # what to do (default: upgrade the firmware)
    fix_en = "..."
    example = true                  # an illustrative entry, not a real advisory

Versions are compared by their first dotted number (``V5.4.0 build 160530`` -> 5.4.0); a device whose
firmware has no number is not matched by an entry with ``firmware_max``.  Pure functions (no I/O).
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Advisory", "AdvisoryError", "match_advisories", "parse_advisories", "parse_version"]

_VERSION = re.compile(r"\d+(?:\.\d+)*")
_SEVERITIES = ("critical", "warning", "info")


class AdvisoryError(ValueError):
    """The advisory file is not valid; the message names the entry."""


@dataclass(frozen=True, slots=True)
class Advisory:
    id: str
    vendor: str
    model: str = "*"
    firmware_max: str | None = None
    severity: str = "warning"
    words_zh: str = ""
    words_en: str = ""
    fix_zh: str = "升级设备固件到厂商已修复的版本"
    fix_en: str = "upgrade the device firmware to a version the vendor has fixed"
    example: bool = False

    def matches(self, manufacturer: str | None, model: str | None, firmware: str | None) -> bool:
        if not manufacturer or manufacturer.strip().lower() != self.vendor.strip().lower():
            return False
        if not fnmatch.fnmatchcase((model or "").strip().lower(), self.model.strip().lower()):
            return False
        if self.firmware_max is None:
            return True
        have, limit = parse_version(firmware), parse_version(self.firmware_max)
        return have is not None and limit is not None and _cmp(have, limit) <= 0


def parse_version(text: str | None) -> tuple[int, ...] | None:
    """The first dotted number of ``text`` as a tuple, or None."""
    m = _VERSION.search(text or "")
    return tuple(int(p) for p in m.group(0).split(".")) if m else None


def _cmp(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    n = max(len(a), len(b))
    a, b = a + (0,) * (n - len(a)), b + (0,) * (n - len(b))
    return (a > b) - (a < b)


def parse_advisories(text: str) -> list[Advisory]:
    """The advisories of a TOML document (``[[advisory]]`` tables)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise AdvisoryError(f"漏洞列表不是有效的 TOML / the advisory list is not valid TOML: {exc}") from None
    entries = doc.get("advisory", [])
    if not isinstance(entries, list):
        raise AdvisoryError("漏洞列表须由 [[advisory]] 表组成 / the advisory list must be [[advisory]] tables")
    out = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not entry.get("id") or not entry.get("vendor"):
            raise AdvisoryError(f"漏洞列表第 {i + 1} 项缺少 id 或 vendor / advisory #{i + 1} needs id and vendor")
        known = {k: entry[k] for k in Advisory.__dataclass_fields__ if k in entry}
        unknown = set(entry) - set(known)
        if unknown:
            raise AdvisoryError(f"漏洞列表第 {i + 1} 项有未知字段 / advisory #{i + 1} has unknown keys: "
                                f"{', '.join(sorted(unknown))}")
        adv = Advisory(**{k: (v if isinstance(v, bool) else str(v)) for k, v in known.items()})
        if adv.severity not in _SEVERITIES:
            raise AdvisoryError(f"漏洞列表 {adv.id}: severity 须为 critical、warning 或 info / "
                                f"severity must be critical, warning or info")
        if adv.firmware_max is not None and parse_version(adv.firmware_max) is None:
            raise AdvisoryError(f"漏洞列表 {adv.id}: firmware_max 须含版本号 / firmware_max needs a version number")
        out.append(adv)
    return out


def match_advisories(advisories: Iterable[Advisory], manufacturer: str | None, model: str | None,
                     firmware: str | None) -> list[Advisory]:
    return [a for a in advisories if a.matches(manufacturer, model, firmware)]
