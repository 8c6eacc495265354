"""Validation of an upper platform's configuration (create and change)."""

from __future__ import annotations

import re
from typing import Any

from gbcore.passwords import weak_password_reason

from .errors import CascadeError

__all__ = ["DEFAULTS", "FIELDS", "STANDARD_MIN_EXPIRES", "check_platform", "is_gb20"]

GB20_RE = re.compile(r"[0-9]{20}", re.ASCII)
DOMAIN_RE = re.compile(r"[0-9]{10}|[0-9]{20}", re.ASCII)
# a host name (RFC 1123 labels) or an IPv4 / IPv6 literal; no spaces, no user info, no port
HOST_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.\-]{0,251}[A-Za-z0-9])?|\[?[0-9A-Fa-f:.]{2,45}\]?", re.ASCII)
CHARSETS = {"gb2312": "GB2312", "gb18030": "GB18030", "utf-8": "UTF-8", "utf8": "UTF-8"}
STANDARD_MIN_EXPIRES = 3600  # GB/T 28181 9.1: not below 3600 s

#: Every field of a platform (the password is written, never read back).
FIELDS = ("name", "server_id", "server_domain", "host", "port", "transport", "local_id", "username", "password",
          "expires", "keepalive_s", "charset", "gb_version", "ptz_level", "watermark", "enabled")
DEFAULTS: dict[str, Any] = {"transport": "udp", "expires": 3600, "keepalive_s": 60, "charset": "GB2312",
                            "gb_version": "2016", "ptz_level": 5, "watermark": "tag", "enabled": True}
REQUIRED = ("name", "server_id", "server_domain", "host", "port", "local_id", "password")


def is_gb20(value: Any) -> bool:
    return isinstance(value, str) and bool(GB20_RE.fullmatch(value))


def _bad(field: str, zh: str, en: str) -> CascadeError:
    return CascadeError("invalid_field", f"{field}：{zh} / {field}: {en}", 422, field=field)


def _text(field: str, value: Any, limit: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _bad(field, "不能为空", "must not be empty")
    value = value.strip()
    if len(value) > limit:
        raise _bad(field, f"最多 {limit} 个字符", f"at most {limit} characters")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise _bad(field, "含控制字符", "contains control characters")
    return value


def _int(field: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value.strip())
        else:
            raise _bad(field, "必须是整数", "must be an integer")
    if not lo <= value <= hi:
        raise _bad(field, f"应在 {lo}..{hi} 之间", f"must be within {lo}..{hi}")
    return value


def _choice(field: str, value: Any, choices: dict[str, str]) -> str:
    key = str(value).strip().lower() if isinstance(value, str | int) and not isinstance(value, bool) else None
    if key not in choices:
        allowed = " | ".join(sorted(set(choices.values())))
        raise _bad(field, f"只能是 {allowed}", f"must be one of {allowed}")
    return choices[key]


def _check_one(field: str, value: Any) -> Any:
    if field == "name":
        return _text(field, value, 128)
    if field in ("server_id", "local_id"):
        if not is_gb20(value):
            raise _bad(field, "应为 20 位数字的国标编码", "must be a 20-digit GB/T 28181 id")
        return value
    if field == "server_domain":
        if not isinstance(value, str) or not DOMAIN_RE.fullmatch(value):
            raise _bad(field, "应为 10 位（或 20 位）数字的国标域", "must be the 10-digit (or 20-digit) GB/T 28181 domain")
        return value
    if field == "host":
        host = _text(field, value, 253)
        if not HOST_RE.fullmatch(host):
            raise _bad(field, "不是有效的主机名或 IP 地址", "is not a valid host name or IP address")
        return host
    if field == "port":
        return _int(field, value, 1, 65535)
    if field == "transport":
        return _choice(field, value, {"udp": "udp", "tcp": "tcp", "tls": "tls"})
    if field == "username":
        name = _text(field, value, 64)
        if any(ch in name for ch in '"\\,'):  # goes into a Digest header as a quoted string
            raise _bad(field, "不能含引号、反斜杠或逗号", "must not contain quotes, backslashes or commas")
        return name
    if field == "expires":
        return _int(field, value, 30, 86400)
    if field == "keepalive_s":
        return _int(field, value, 5, 3600)
    if field == "charset":
        return _choice(field, value, CHARSETS)
    if field == "gb_version":
        return _choice(field, value, {"2016": "2016", "2022": "2022"})
    if field == "ptz_level":
        return _int(field, value, 1, 9)
    if field == "watermark":
        return _choice(field, value, {"tag": "tag", "visible": "visible"})
    if field == "enabled":
        if not isinstance(value, bool):
            raise _bad(field, "必须是 true 或 false", "must be true or false")
        return value
    raise CascadeError("unknown_field", f"未知字段 {field} / unknown field {field}", 422, field=field)


def _check_password(value: Any, identities: tuple[str | None, ...]) -> str:
    if not isinstance(value, str) or not value:
        raise CascadeError("password_required", "必须填写密码 / a password is required", 422, field="password")
    if len(value) > 128 or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise _bad("password", "过长或含控制字符", "is too long or contains control characters")
    reason = weak_password_reason(value, *identities)
    if reason is not None:
        raise CascadeError("weak_password", f"弱密码 / weak password: {reason}", 422, field="password")
    return value


def check_platform(data: dict[str, Any], *, current: dict[str, Any] | None = None,
                   default_local_id: str | None = None) -> tuple[dict[str, Any], str | None, list[str]]:
    """Validate a new platform (``current`` None) or a change to ``current`` (its stored fields).

    Returns (the complete clean fields without the password, the new password or None, warnings).  In a
    change, a field given as None is left as it is.  Raises :class:`CascadeError` for the first bad field.
    """
    if not isinstance(data, dict):
        raise CascadeError("invalid_body", "请求体应为对象 / the body must be an object", 422)
    unknown = sorted(k for k in data if k not in FIELDS)
    if unknown:
        raise CascadeError("unknown_field", f"未知字段 {unknown[0]} / unknown field {unknown[0]}", 422,
                           field=unknown[0])
    given = {k: v for k, v in data.items() if v is not None}
    if current is None:
        merged: dict[str, Any] = dict(DEFAULTS)
        if default_local_id and "local_id" not in given:
            given["local_id"] = default_local_id
        for field in REQUIRED:
            if field not in given:
                if field == "password":
                    raise CascadeError("password_required", "必须填写密码 / a password is required", 422,
                                       field="password")
                raise _bad(field, "必须填写", "is required")
    else:
        merged = {k: current[k] for k in FIELDS if k != "password" and k in current}
    for field, value in given.items():
        if field != "password":
            merged[field] = _check_one(field, value)
    if not merged.get("username") or (current is None and "username" not in given):
        merged["username"] = merged["local_id"]
    if merged["local_id"] == merged["server_id"]:
        raise _bad("local_id", "不能与上级平台编码相同", "must differ from the upper platform's id")
    password = None
    if "password" in given:
        password = _check_password(given["password"], (merged["username"], merged["local_id"], merged["server_id"]))
    warnings: list[str] = []
    if merged["expires"] < STANDARD_MIN_EXPIRES:
        warnings.append(f"注册有效期 {merged['expires']} 秒低于标准下限 {STANDARD_MIN_EXPIRES} 秒 / expires "
                        f"{merged['expires']} s is below the standard's floor of {STANDARD_MIN_EXPIRES} s")
    return merged, password, warnings
