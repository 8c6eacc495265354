"""RFC 8785 JSON Canonicalization Scheme (JCS): the exact bytes that an audit entry is hashed as.

* Objects: members sorted by their names compared as UTF-16 code units; no whitespace anywhere.
* Strings: only ``"`` and ``\\``, and the control characters below U+0020 are escaped (``\\b \\t \\n
  \\f \\r`` by name, the others as ``\\u00xx`` with lower-case hex); everything else is written as
  UTF-8.  Lone surrogates are refused.
* Numbers: as ECMAScript ``Number.prototype.toString`` writes the IEEE 754 double (shortest
  round-trip digits).  Integers must be exactly representable as a double (beyond ``2**53`` they
  are written as that double); NaN and the infinities are refused.
* ``true``, ``false``, ``null``; arrays in order.

:func:`canonical_json` serialises Python values; :func:`loads_canonical` parses bytes and insists
that they are already canonical (so that stored entries can be checked byte for byte).
"""

from __future__ import annotations

import json
import math
import re
from decimal import Decimal
from typing import Any

__all__ = ["CanonicalJSONError", "canonical_json", "loads_canonical"]

MAX_SAFE_INTEGER = 2**53


class CanonicalJSONError(ValueError):
    """A value that has no RFC 8785 form, or bytes that are not in that form."""


_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}
for _code in range(0x20):
    _ESCAPES.setdefault(chr(_code), f"\\u{_code:04x}")


def _string(value: str, out: list[str]) -> None:
    out.append('"')
    start = 0
    for i, ch in enumerate(value):
        if ch in _ESCAPES:
            out.append(value[start:i])
            out.append(_ESCAPES[ch])
            start = i + 1
        elif "\ud800" <= ch <= "\udfff":
            raise CanonicalJSONError(f"lone surrogate U+{ord(ch):04X} in a string")
    out.append(value[start:])
    out.append('"')


def _number(value: float) -> str:
    """ECMAScript Number::toString for a finite double."""
    if math.isnan(value) or math.isinf(value):
        raise CanonicalJSONError("NaN and Infinity have no JSON form")
    if value == 0:
        return "0"  # also -0
    sign = "-" if value < 0 else ""
    # repr() gives the shortest digits that round-trip; Decimal splits them exactly.
    _, digits_t, exponent = Decimal(repr(abs(value))).as_tuple()
    digits = "".join(map(str, digits_t)).rstrip("0")
    assert isinstance(exponent, int)
    exponent += len(digits_t) - len(digits)  # zeros stripped from the right
    digits = digits.lstrip("0")
    k = len(digits)
    n = k + exponent  # value = 0.digits * 10**n
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        text = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        mantissa = digits if k == 1 else digits[0] + "." + digits[1:]
        text = f"{mantissa}e{'+' if e >= 0 else '-'}{abs(e)}"
    return sign + text


def _value(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        _string(value, out)
    elif isinstance(value, int):
        if abs(value) <= MAX_SAFE_INTEGER:
            out.append(str(int(value)))
        else:  # a JSON number is a double: only integers that are exactly one have a form
            try:
                as_float = float(value)
            except OverflowError:
                as_float = math.inf
            if not math.isfinite(as_float) or int(as_float) != value:
                raise CanonicalJSONError(f"integer {value} is not exactly representable as an IEEE 754 double")
            out.append(_number(as_float))
    elif isinstance(value, float):
        out.append(_number(value))
    elif isinstance(value, dict):
        out.append("{")
        names = list(value)
        for name in names:
            if not isinstance(name, str):
                raise CanonicalJSONError(f"object member names must be strings, not {type(name).__name__}")
        for i, name in enumerate(sorted(names, key=_utf16_key)):
            if i:
                out.append(",")
            _string(name, out)
            out.append(":")
            _value(value[name], out)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _value(item, out)
        out.append("]")
    else:
        raise CanonicalJSONError(f"{type(value).__name__} has no JSON form")


def _utf16_key(name: str) -> bytes:
    try:
        return name.encode("utf-16-be")
    except UnicodeEncodeError:
        raise CanonicalJSONError("lone surrogate in an object member name") from None


def _plain(value: Any) -> bool:
    """Only strings, booleans, null, integers up to 2**53, arrays and objects with string names:
    values that the C serialiser of the json module writes exactly as RFC 8785 does."""
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return True
    if kind is int:
        return -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER
    if kind is dict:
        return all(type(k) is str and _plain(v) for k, v in value.items())
    if kind is list or kind is tuple:
        return all(_plain(v) for v in value)
    return False


# At and above U+E000, sorting by code point (Python) and by UTF-16 code unit (RFC 8785) differ.
_HIGH = re.compile("[\ue000-\U0010ffff]")


def canonical_json(value: Any) -> bytes:
    """The RFC 8785 canonical UTF-8 bytes of ``value`` (dict, list, str, int, float, bool, None)."""
    if _plain(value):
        # Fast path: json.dumps escapes exactly the characters RFC 8785 escapes, the same way.
        text = json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        if not _HIGH.search(text):
            try:
                return text.encode("utf-8")
            except UnicodeEncodeError:
                raise CanonicalJSONError("lone surrogate in a string") from None
    out: list[str] = []
    _value(value, out)
    return "".join(out).encode("utf-8")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for name, item in pairs:
        if name in obj:
            raise CanonicalJSONError(f"duplicate object member {name!r}")
        obj[name] = item
    return obj


def _no_constant(name: str) -> Any:
    raise CanonicalJSONError(f"{name} is not JSON")


def _parse_int(text: str) -> int | float:
    value = int(text)
    return value if abs(value) <= MAX_SAFE_INTEGER else float(text)  # a JSON number is a double


def loads_canonical(data: bytes) -> Any:
    """Parse ``data`` and check that it is exactly the canonical form of what it encodes
    (numbers are IEEE 754 doubles, as RFC 8785 reads them)."""
    try:
        text = data.decode("utf-8")
        value = json.loads(
            text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant, parse_int=_parse_int
        )
    except CanonicalJSONError:
        raise
    except ValueError as exc:  # UnicodeDecodeError, JSONDecodeError
        raise CanonicalJSONError(f"not JSON: {exc}") from None
    if canonical_json(value) != data:
        raise CanonicalJSONError("not in RFC 8785 canonical form")
    return value
