"""SIP message codec (RFC 3261 sections 7, 20 and 25), sans-IO.

Everything here is pure: bytes in, objects out, and back. The only exception any parser in this module
lets escape is :class:`SipParseError`, whatever the input.

Grammar pieces this module implements (RFC 3261 section 25.1, abridged):

    generic-message  =  start-line *message-header CRLF [ message-body ]
    Request-Line     =  Method SP Request-URI SP SIP-Version CRLF
    Status-Line      =  SIP-Version SP Status-Code SP Reason-Phrase CRLF
    message-header   =  field-name HCOLON field-value CRLF      ; folding: LWS = [*WSP CRLF] 1*WSP
    SIP-URI          =  "sip:" [ userinfo ] hostport uri-parameters [ headers ]
    name-addr        =  [ display-name ] LAQUOT addr-spec RAQUOT
    via-parm         =  sent-protocol LWS sent-by *( SEMI via-params )

Header values are kept as ``str`` decoded from UTF-8 with ``surrogateescape``, so any byte sequence
survives a parse/serialise round trip unchanged. Bodies are raw ``bytes`` and are never decoded.

Tolerated device quirks (all seen in GB/T 28181 field captures): LF-only line ends, stray leading CRLFs,
space-padded ``Content-Length``, a missing Content-Length on datagrams, trailing bytes after the body on
datagrams, ``;tag=tag=abc``, a Via without ``branch`` or with a malformed magic cookie.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import ClassVar

__all__ = [
    "SipParseError",
    "Headers",
    "SipRequest",
    "SipResponse",
    "SipMessage",
    "SipUri",
    "NameAddr",
    "Via",
    "parse_message",
    "StreamFramer",
    "parse_uri",
    "parse_name_addr",
    "parse_via",
    "parse_cseq",
    "header_param",
    "make_response",
    "make_cancel",
    "new_tag",
    "format_hostport",
    "via_value",
    "contact_value",
    "VIA_PLACEHOLDER_HOST",
    "REASON_PHRASES",
    "MAX_HEADER_BYTES",
    "MAX_BODY_BYTES",
]

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 1024 * 1024

_ENC = "utf-8"
_ERR = "surrogateescape"


class SipParseError(ValueError):
    """Malformed SIP input. The only exception the parsers of this package raise."""


# --------------------------------------------------------------------------- character classes
# token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_TOKEN_CHARS = _ALNUM + "-.!%*_+`'~"
# hostname / IPv4 (underscore tolerated); IPv6reference content
_HOST_CHARS = _ALNUM + "-._"
_IPV6_CHARS = "0123456789abcdefABCDEF:."
# user = 1*( unreserved / escaped / user-unreserved ); unreserved = alphanum / mark
_USER_CHARS = _ALNUM + "-_.!~*'()%&=+$,;?/"
_PASSWORD_CHARS = _ALNUM + "-_.!~*'()%&=+$,"
# paramchar = param-unreserved / unreserved / escaped
_PARAM_CHARS = _ALNUM + "-_.!~*'()%[]/:&+$"
_BAD_URI = re.compile(r"[\s<>\"\x00-\x1f\x7f]")
_BAD_PARAM_VALUE_CHARS = frozenset(' \t"<>')


def _is_token(s: str) -> bool:
    """True when ``s`` is a non-empty RFC 3261 token (the strip trick: every char is in the set)."""
    return bool(s) and not s.strip(_TOKEN_CHARS)


# --------------------------------------------------------------------------- header names
# compact form (RFC 3261 section 7.3.3 and the event package) -> canonical lower-case name
_COMPACT = {
    "i": "call-id",
    "m": "contact",
    "e": "content-encoding",
    "l": "content-length",
    "c": "content-type",
    "f": "from",
    "s": "subject",
    "k": "supported",
    "t": "to",
    "v": "via",
    "u": "allow-events",
    "o": "event",
}
_CANONICAL = {
    n.lower(): n
    for n in (
        "Accept", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow", "Allow-Events",
        "Authentication-Info", "Authorization", "Call-ID", "Call-Info", "Contact", "Content-Disposition",
        "Content-Encoding", "Content-Language", "Content-Length", "Content-Type", "CSeq", "Date",
        "Error-Info", "Event", "Expires", "From", "In-Reply-To", "Max-Forwards", "Min-Expires",
        "MIME-Version", "Organization", "Priority", "Proxy-Authenticate", "Proxy-Authorization",
        "Proxy-Require", "Reason", "Record-Route", "Reply-To", "Require", "Retry-After", "Route",
        "Server", "Subject", "Subscription-State", "Supported", "Timestamp", "To", "Unsupported",
        "User-Agent", "Via", "Warning", "WWW-Authenticate", "RSeq", "RAck", "Refer-To", "Referred-By",
        "Path", "Service-Route", "P-Asserted-Identity", "Session-Expires", "Min-SE",
    )
}
# Headers whose value is a comma-separated list that get_all() splits (RFC 3261 section 7.3.1).
_LIST_KEYS = frozenset({"via", "contact", "route", "record-route"})

_NAME_CACHE: dict[str, tuple[str, str]] = {}  # name as given -> (key, display name)
_KEY_CACHE: dict[str, str] = {}  # name as given -> key
_CACHE_LIMIT = 4096


def _name_info(name: str) -> tuple[str, str]:
    """Header name as written on the wire -> (lower-case canonical key, display name)."""
    info = _NAME_CACHE.get(name)
    if info is not None:
        return info
    stripped = name.strip(" \t")
    if not _is_token(stripped):
        raise SipParseError(f"bad header name {name[:40]!r}")
    key = stripped.lower()
    key = _COMPACT.get(key, key)
    info = (key, _CANONICAL.get(key, stripped))
    if len(_NAME_CACHE) < _CACHE_LIMIT:
        _NAME_CACHE[name] = info
    return info


def _key(name: str) -> str:
    k = _KEY_CACHE.get(name)
    if k is None:
        k = name.strip(" \t").lower()
        k = _COMPACT.get(k, k)
        if len(_KEY_CACHE) < _CACHE_LIMIT:
            _KEY_CACHE[name] = k
    return k


def _split_list(value: str) -> list[str]:
    """Split a header value on top-level commas, respecting quoted strings and <...>."""
    if "," not in value:
        v = value.strip(" \t")
        return [v] if v else []
    if '"' not in value and "<" not in value:
        parts = value.split(",")
    else:
        parts = []
        start = 0
        in_quote = in_angle = escaped = False
        for i, c in enumerate(value):
            if in_quote:
                if escaped:
                    escaped = False
                elif c == "\\":
                    escaped = True
                elif c == '"':
                    in_quote = False
            elif c == '"':
                in_quote = True
            elif c == "<":
                in_angle = True
            elif c == ">":
                in_angle = False
            elif c == "," and not in_angle:
                parts.append(value[start:i])
                start = i + 1
        parts.append(value[start:])
    out = []
    for p in parts:
        p = p.strip(" \t")
        if p:
            out.append(p)
    return out


class Headers:
    """Ordered multi-valued header store with case-insensitive names.

    Compact names are mapped to their canonical names (``i`` -> ``Call-ID``). Each header line is kept
    as one entry, in order; :meth:`get_all` also splits comma-separated Via/Contact/Route/Record-Route.
    """

    __slots__ = ("_items", "_map")

    def __init__(self, items: Iterable[tuple[str, str]] | None = None) -> None:
        self._items: list[tuple[str, str, str]] = []  # (key, display name, value)
        self._map: dict[str, list[str]] = {}
        if items is not None:
            for name, value in items:
                self.add(name, value)

    @staticmethod
    def _check(value: str) -> str:
        if not isinstance(value, str):
            raise TypeError(f"header value must be str, not {type(value).__name__}")
        if "\r" in value or "\n" in value:
            raise ValueError("header value must not contain CR or LF")
        return value

    def add(self, name: str, value: str) -> None:
        """Append one header line."""
        key, display = _name_info(name)
        value = self._check(value)
        self._items.append((key, display, value))
        lst = self._map.get(key)
        if lst is None:
            self._map[key] = [value]
        else:
            lst.append(value)

    def prepend(self, name: str, value: str) -> None:
        """Insert one header line before all others (used for a new top Via)."""
        key, display = _name_info(name)
        value = self._check(value)
        self._items.insert(0, (key, display, value))
        self._map.setdefault(key, []).insert(0, value)

    def set(self, name: str, value: str) -> None:
        """Replace every line of ``name`` with one line (at the position of the first one)."""
        key, display = _name_info(name)
        value = self._check(value)
        if key not in self._map:
            self._items.append((key, display, value))
            self._map[key] = [value]
            return
        items: list[tuple[str, str, str]] = []
        done = False
        for item in self._items:
            if item[0] == key:
                if not done:
                    items.append((key, display, value))
                    done = True
            else:
                items.append(item)
        self._items = items
        self._map[key] = [value]

    def replace_first(self, name: str, value: str) -> None:
        """Replace the value of the first line of ``name`` in place (append when absent)."""
        key, display = _name_info(name)
        value = self._check(value)
        lst = self._map.get(key)
        if not lst:
            self.add(name, value)
            return
        lst[0] = value
        items = self._items
        for i, item in enumerate(items):
            if item[0] == key:
                items[i] = (key, item[1], value)
                break

    def remove(self, name: str) -> None:
        """Remove every line of ``name`` (no error when absent)."""
        key = _key(name)
        if self._map.pop(key, None) is not None:
            self._items = [item for item in self._items if item[0] != key]

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first line's value of ``name``, or ``default``."""
        lst = self._map.get(_KEY_CACHE.get(name) or _key(name))
        return lst[0] if lst else default

    def get_all(self, name: str) -> list[str]:
        """All values of ``name`` in order; Via/Contact/Route/Record-Route lists are split on commas."""
        key = _KEY_CACHE.get(name) or _key(name)
        lst = self._map.get(key)
        if not lst:
            return []
        if key in _LIST_KEYS:
            out: list[str] = []
            for v in lst:
                out.extend(_split_list(v))
            return out
        return list(lst)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and _key(name) in self._map

    def __len__(self) -> int:
        return len(self._items)

    def items(self) -> list[tuple[str, str]]:
        """(name, value) for every line, in order; names in canonical form."""
        return [(d, v) for _, d, v in self._items]

    def copy(self) -> Headers:
        h = Headers.__new__(Headers)
        h._items = list(self._items)
        h._map = {k: list(v) for k, v in self._map.items()}
        return h

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return [(k, v) for k, _, v in self._items] == [(k, v) for k, _, v in other._items]

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Headers({self.items()!r})"


# --------------------------------------------------------------------------- small value parsers
def _parse_params(s: str, *, lower_names: bool = True) -> dict[str, str | None]:
    """``a=b;c;d="x;y"`` (without the leading ';') -> {"a": "b", "c": None, "d": '"x;y"'}.

    Quoted values are kept with their quotes. The first occurrence of a name wins.
    """
    params: dict[str, str | None] = {}
    if '"' in s:
        segments = _split_quoted(s, ";")
    else:
        segments = s.split(";")
    for seg in segments:
        name, eq, value = seg.partition("=")
        name = name.strip(" \t")
        if not name:
            if eq or seg.strip(" \t"):
                raise SipParseError(f"bad parameter {seg[:40]!r}")
            continue  # tolerate ";;" and a trailing ';'
        if name.strip(_TOKEN_CHARS):
            raise SipParseError(f"bad parameter name {name[:40]!r}")
        if lower_names:
            name = name.lower()
        if name in params:
            continue
        if eq:
            value = value.strip(" \t")
            if value.startswith('"'):
                if len(value) < 2 or not value.endswith('"'):
                    raise SipParseError("bad quoted parameter value")
            elif not _BAD_PARAM_VALUE_CHARS.isdisjoint(value):
                raise SipParseError(f"bad parameter value {value[:40]!r}")
            params[name] = value
        else:
            params[name] = None
    return params


def _split_quoted(s: str, sep: str) -> list[str]:
    """Split on ``sep`` outside double-quoted strings; SipParseError on an unterminated quote."""
    parts: list[str] = []
    start = 0
    in_quote = escaped = False
    for i, c in enumerate(s):
        if in_quote:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_quote = False
        elif c == '"':
            in_quote = True
        elif c == sep:
            parts.append(s[start:i])
            start = i + 1
    if in_quote:
        raise SipParseError("unterminated quoted string")
    parts.append(s[start:])
    return parts


def _format_params(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


def _parse_port(s: str) -> int:
    if not s or len(s) > 5 or not s.isascii() or not s.isdigit():
        raise SipParseError(f"bad port {s[:20]!r}")
    port = int(s)
    if port > 65535:
        raise SipParseError(f"port out of range: {port}")
    return port


def _parse_hostport(s: str) -> tuple[str, int | None]:
    """``host[:port]`` / ``[v6]:port`` -> (host without brackets, port or None)."""
    if not s:
        raise SipParseError("empty host")
    if s[0] == "[":
        end = s.find("]")
        if end < 0:
            raise SipParseError("unterminated IPv6 reference")
        host = s[1:end]
        if not host or host.strip(_IPV6_CHARS) or ":" not in host:
            raise SipParseError(f"bad IPv6 address {host[:50]!r}")
        rest = s[end + 1 :]
        if not rest:
            return host, None
        if rest[0] != ":":
            raise SipParseError(f"garbage after IPv6 reference {rest[:20]!r}")
        return host, _parse_port(rest[1:])
    host, colon, port_s = s.partition(":")
    if not host or host.strip(_HOST_CHARS):
        raise SipParseError(f"bad host {host[:50]!r}")
    return host, (_parse_port(port_s) if colon else None)


def _format_host(host: str, port: int | None) -> str:
    h = f"[{host}]" if ":" in host else host
    return h if port is None else f"{h}:{port}"


def _unquote(s: str) -> str:
    """Content of a quoted-string body (without the outer quotes), resolving backslash escapes."""
    if "\\" not in s:
        return s
    out = []
    it = iter(s)
    for c in it:
        if c == "\\":
            out.append(next(it, ""))
        else:
            out.append(c)
    return "".join(out)


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --------------------------------------------------------------------------- URIs
@dataclass(slots=True)
class SipUri:
    """A SIP or SIPS URI. ``host`` is stored without IPv6 brackets; parameter names are lower-case."""

    scheme: str
    user: str | None
    password: str | None
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out.append(":" + self.password)
            out.append("@")
        out.append(_format_host(self.host, self.port))
        if self.params:
            out.append(_format_params(self.params))
        if self.headers:
            out.append("?" + "&".join(f"{k}={v}" for k, v in self.headers.items()))
        return "".join(out)

    @property
    def hostport(self) -> str:
        return _format_host(self.host, self.port)


def parse_uri(s: str) -> SipUri:
    """Parse a ``sip:`` / ``sips:`` URI (RFC 3261 section 19.1.1).

    GB/T 28181 forms such as ``sip:34020000001320000001@3402000000`` (a 10-digit domain, no port),
    ``sip:...@3402000000.spvmn.cn``, IPv4 and bracketed IPv6 hosts are all plain ``hostport`` here.
    """
    if not isinstance(s, str):
        raise SipParseError("URI must be a string")
    s = s.strip(" \t")
    if _BAD_URI.search(s):
        raise SipParseError(f"illegal character in URI {s[:80]!r}")
    scheme, colon, rest = s.partition(":")
    scheme_l = scheme.lower()
    if not colon or scheme_l not in ("sip", "sips"):
        raise SipParseError(f"not a SIP URI: {s[:80]!r}")
    rest, qmark, hdr_s = rest.partition("?")
    user: str | None = None
    password: str | None = None
    at = rest.rfind("@")
    if at >= 0:
        userinfo, hostpart = rest[:at], rest[at + 1 :]
        user, pcolon, pw = userinfo.partition(":")
        if not user or user.strip(_USER_CHARS):
            raise SipParseError(f"bad user part {userinfo[:40]!r}")
        if pcolon:
            if pw.strip(_PASSWORD_CHARS):
                raise SipParseError("bad password part")
            password = pw
    else:
        hostpart = rest
    hostport, semi, params_s = hostpart.partition(";")
    host, port = _parse_hostport(hostport)
    params: dict[str, str | None] = {}
    if semi:
        params = _parse_params(params_s)
        for k, v in params.items():
            if v is not None and v.strip(_PARAM_CHARS):
                raise SipParseError(f"bad URI parameter {k}={v[:40]!r}")
    headers: dict[str, str] = {}
    if qmark:
        for item in hdr_s.split("&"):
            hname, eq, hvalue = item.partition("=")
            if not hname or not eq:
                raise SipParseError(f"bad URI header {item[:40]!r}")
            headers.setdefault(hname, hvalue)
    return SipUri(scheme_l, user, password, host, port, params, headers)


@dataclass(slots=True)
class NameAddr:
    """``"display" <uri>;params`` or a bare addr-spec (then every ``;param`` is a header parameter)."""

    display: str | None
    uri: SipUri
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def __str__(self) -> str:
        disp = f"{_quote(self.display)} " if self.display else ""
        return f"{disp}<{self.uri}>{_format_params(self.params)}"


def parse_name_addr(s: str) -> NameAddr:
    """Parse a From/To/Contact/Route value (RFC 3261 section 20.10).

    ``;tag=tag=abc`` (doubled by a device simulator) parses with tag ``"tag=abc"``: kept as given.
    """
    if not isinstance(s, str):
        raise SipParseError("name-addr must be a string")
    s = s.strip(" \t")
    if not s:
        raise SipParseError("empty name-addr")
    display: str | None
    if s[0] == '"':
        i = 1
        n = len(s)
        escaped = False
        while i < n:
            c = s[i]
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                break
            i += 1
        if i >= n:
            raise SipParseError("unterminated display name")
        display = _unquote(s[1:i])
        rest = s[i + 1 :].lstrip(" \t")
        if not rest.startswith("<"):
            raise SipParseError("quoted display name without <uri>")
    elif "<" in s:
        lt = s.index("<")
        display = s[:lt].strip(" \t") or None
        if display is not None and any(c in display for c in '"<>'):
            raise SipParseError(f"bad display name {display[:40]!r}")
        rest = s[lt:]
    else:
        uri_s, semi, params_s = s.partition(";")
        return NameAddr(None, parse_uri(uri_s), _parse_params(params_s) if semi else {})
    gt = rest.find(">")
    if gt < 0:
        raise SipParseError("missing '>' in name-addr")
    uri = parse_uri(rest[1:gt])
    tail = rest[gt + 1 :].strip(" \t")
    params: dict[str, str | None] = {}
    if tail:
        if tail[0] != ";":
            raise SipParseError(f"garbage after name-addr {tail[:40]!r}")
        params = _parse_params(tail[1:])
    return NameAddr(display, uri, params)


def header_param(value: str | None, name: str) -> str | None:
    """A header parameter (e.g. ``tag``) of a name-addr value, quickly and leniently.

    Returns None when absent or unparseable, ``""`` for a bare parameter. ``name`` is lower-case.
    """
    if not value:
        return None
    if '"' in value:
        try:
            params = parse_name_addr(value).params
        except SipParseError:
            return None
        if name not in params:
            return None
        v = params[name]
        return "" if v is None else v
    lt = value.find("<")
    if lt >= 0:
        gt = value.find(">", lt)
        if gt < 0:
            return None
        tail = value[gt + 1 :]
    else:
        semi = value.find(";")
        if semi < 0:
            return None
        tail = value[semi:]
    if ";" not in tail:
        return None
    for seg in tail.split(";"):
        pname, eq, pvalue = seg.partition("=")
        if pname.strip(" \t").lower() == name:
            return pvalue.strip(" \t") if eq else ""
    return None


# --------------------------------------------------------------------------- Via
@dataclass(slots=True)
class Via:
    """One via-parm. ``transport`` is upper-case; ``host`` without IPv6 brackets; param names lower-case."""

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def rport(self) -> str | None:
        """None when absent, ``""`` when bare (``;rport``), else the value."""
        if "rport" not in self.params:
            return None
        v = self.params["rport"]
        return "" if v is None else v

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def sent_by(self) -> tuple[str, int]:
        """(lower-case host, port) with the transport's default port filled in."""
        port = self.port
        if port is None:
            port = 5061 if self.transport in ("TLS", "WSS") else 5060
        return self.host.lower(), port

    def __str__(self) -> str:
        return f"SIP/2.0/{self.transport} {_format_host(self.host, self.port)}{_format_params(self.params)}"


VIA_PLACEHOLDER_HOST = "0.0.0.0"  # sent-by 0.0.0.0:0: SipEndpoint.send_request fills in the local address


def format_hostport(host: str, port: int | None = None) -> str:
    """``host[:port]`` with IPv6 addresses in brackets (``[::1]:5060``)."""
    return _format_host(host, port)


def via_value(transport: str, host: str = VIA_PLACEHOLDER_HOST, port: int = 0, *, branch: str | None = None,
              rport: bool = True) -> str:
    """The one place a Via value is written: ``SIP/2.0/UDP host:port;rport;branch=...``.

    Called without an address it gives the placeholder ``0.0.0.0:0`` that
    :meth:`sip_server.sip.endpoint.SipEndpoint.send_request` replaces with the address it advertises towards
    the peer (and completes with a branch when ``branch`` is None).
    """
    value = f"SIP/2.0/{transport.upper()} {_format_host(host, port)}"
    if rport:
        value += ";rport"
    if branch:
        value += f";branch={branch}"
    return value


def contact_value(user: str, hostport: str) -> str:
    """The one place a Contact value is written: ``<sip:user@host:port>`` (``hostport`` already formatted,
    see :func:`format_hostport`)."""
    return f"<sip:{user}@{hostport}>"


def parse_via(s: str) -> Via:
    """Parse one via-parm (RFC 3261 section 20.42): ``SIP/2.0/UDP host:port;rport;branch=z9hG4bK...``.

    A missing branch and a malformed magic cookie are accepted (the transaction layer falls back to
    RFC 2543 matching for those).
    """
    if not isinstance(s, str):
        raise SipParseError("Via must be a string")
    proto, slash1, rest = s.partition("/")
    version, slash2, rest = rest.partition("/")
    if not slash1 or not slash2 or proto.strip(" \t").upper() != "SIP" or not version.strip(" \t"):
        raise SipParseError(f"bad Via sent-protocol {s[:60]!r}")
    parts = rest.split(None, 1)
    if len(parts) != 2:
        raise SipParseError(f"bad Via {s[:60]!r}")
    transport, rest = parts
    if not _is_token(transport):
        raise SipParseError(f"bad Via transport {transport[:20]!r}")
    sent_by, semi, params_s = rest.partition(";")
    host, port = _parse_hostport(sent_by.strip(" \t"))
    params = _parse_params(params_s) if semi else {}
    return Via(transport.upper(), host, port, params)


def parse_cseq(value: str | None) -> tuple[int, str]:
    """``"20 MESSAGE"`` -> (20, "MESSAGE")."""
    if not value:
        raise SipParseError("missing CSeq")
    parts = value.split()
    if len(parts) != 2:
        raise SipParseError(f"bad CSeq {value[:40]!r}")
    num, method = parts
    if len(num) > 10 or not num.isascii() or not num.isdigit() or not _is_token(method):
        raise SipParseError(f"bad CSeq {value[:40]!r}")
    n = int(num)
    if n >= 2**32:
        raise SipParseError("CSeq number out of range")
    return n, method


# --------------------------------------------------------------------------- messages
def _serialize(start_line: str, headers: Headers, body: bytes) -> bytes:
    parts = [start_line]
    cl_written = False
    for key, display, value in headers._items:
        if key == "content-length":
            if cl_written:
                continue
            parts.append(f"Content-Length: {len(body)}")
            cl_written = True
        else:
            parts.append(f"{display}: {value}")
    if not cl_written:
        parts.append(f"Content-Length: {len(body)}")
    parts.append("\r\n")
    data = "\r\n".join(parts).encode(_ENC, _ERR)
    return data + body if body else data


class _MessageMixin:
    """Serialisation and convenience accessors shared by requests and responses."""

    __slots__ = ()
    headers: Headers
    body: bytes

    def start_line(self) -> str:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """Serialise with CRLF line ends; Content-Length is written from the body."""
        return _serialize(self.start_line(), self.headers, self.body)

    __bytes__ = to_bytes

    @property
    def call_id(self) -> str:
        v = self.headers.get("call-id")
        if not v:
            raise SipParseError("missing Call-ID")
        return v

    @property
    def cseq(self) -> tuple[int, str]:
        return parse_cseq(self.headers.get("cseq"))

    @property
    def from_tag(self) -> str | None:
        return header_param(self.headers.get("from"), "tag")

    @property
    def to_tag(self) -> str | None:
        return header_param(self.headers.get("to"), "tag")

    @property
    def vias(self) -> list[Via]:
        return [parse_via(v) for v in self.headers.get_all("via")]

    @property
    def top_via(self) -> Via:
        lst = self.headers._map.get("via")
        if not lst:
            raise SipParseError("missing Via")
        first = lst[0]
        if "," in first:
            vals = _split_list(first)
            if not vals:
                raise SipParseError("empty Via")
            first = vals[0]
        return parse_via(first)


@dataclass(slots=True)
class SipRequest(_MessageMixin):
    method: str
    uri: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    is_request: ClassVar[bool] = True

    def start_line(self) -> str:
        return f"{self.method} {self.uri} SIP/2.0"


@dataclass(slots=True)
class SipResponse(_MessageMixin):
    status: int
    reason: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    is_request: ClassVar[bool] = False

    def start_line(self) -> str:
        return f"SIP/2.0 {self.status} {self.reason}"


SipMessage = SipRequest | SipResponse

_KNOWN_METHODS = frozenset(
    {"REGISTER", "INVITE", "ACK", "BYE", "CANCEL", "MESSAGE", "OPTIONS", "INFO", "NOTIFY", "SUBSCRIBE",
     "PRACK", "UPDATE", "REFER", "PUBLISH"}
)


def _find_blank_line(data: bytes | bytearray, start: int = 0) -> tuple[int, int]:
    """(end of the header block, start of the body), or (-1, -1) when there is no blank line yet.

    Accepts CRLF CRLF, LF LF and LF CRLF as the separator.
    """
    i1 = data.find(b"\n\r\n", start)
    i2 = data.find(b"\n\n", start)
    if i1 < 0 and i2 < 0:
        return -1, -1
    if i2 < 0 or (0 <= i1 < i2):
        end = i1 - 1 if i1 > 0 and data[i1 - 1] == 13 else i1
        return end, i1 + 3
    end = i2 - 1 if i2 > 0 and data[i2 - 1] == 13 else i2
    return end, i2 + 2


def _parse_head(head: bytes) -> tuple[SipRequest | SipResponse, int | None]:
    """Start line and headers (no blank line) -> (message with empty body, Content-Length or None)."""
    text = head.decode(_ENC, _ERR)
    if "\r" in text:
        text = text.replace("\r\n", "\n")
        if "\r" in text:
            raise SipParseError("bare CR in header block")
    lines = text.split("\n")
    start = lines[0]
    if not start:
        raise SipParseError("empty start line")
    msg: SipRequest | SipResponse
    if start.startswith("SIP/"):
        version, _, rest = start.partition(" ")
        code, _, reason = rest.partition(" ")
        if version.upper() != "SIP/2.0":
            raise SipParseError(f"unsupported version {version[:20]!r}")
        if len(code) != 3 or not code.isascii() or not code.isdigit() or code[0] not in "123456":
            raise SipParseError(f"bad status code {code[:20]!r}")
        headers = Headers.__new__(Headers)
        msg = SipResponse(int(code), reason.strip(" \t"), headers)
    else:
        parts = start.split(" ")
        if len(parts) != 3:
            parts = start.split()
            if len(parts) != 3:
                raise SipParseError(f"bad request line {start[:80]!r}")
        method, uri, version = parts
        if method not in _KNOWN_METHODS and not _is_token(method):
            raise SipParseError(f"bad method {method[:20]!r}")
        if version != "SIP/2.0" and version.upper() != "SIP/2.0":
            raise SipParseError(f"unsupported version {version[:20]!r}")
        if not uri:
            raise SipParseError("empty Request-URI")
        headers = Headers.__new__(Headers)
        msg = SipRequest(method, uri, headers)
    items: list[tuple[str, str, str]] = []
    hmap: dict[str, list[str]] = {}
    headers._items = items
    headers._map = hmap
    name_cache = _NAME_CACHE
    for line in lines[1:]:
        if not line:
            continue
        c = line[0]
        if c == " " or c == "\t":
            # folded continuation (LWS): joined with a single space
            if not items:
                raise SipParseError("continuation line before the first header")
            key, display, value = items[-1]
            more = line.strip(" \t")
            if more:
                value = f"{value} {more}" if value else more
                items[-1] = (key, display, value)
                hmap[key][-1] = value
            continue
        name, colon, value = line.partition(":")
        if not colon:
            raise SipParseError(f"header line without colon {line[:60]!r}")
        info = name_cache.get(name)
        if info is None:
            info = _name_info(name)
        key = info[0]
        value = value.strip(" \t")
        items.append((key, info[1], value))
        lst = hmap.get(key)
        if lst is None:
            hmap[key] = [value]
        else:
            lst.append(value)
    cl_values = hmap.get("content-length")
    content_length: int | None = None
    if cl_values:
        for v in cl_values:
            v = v.strip(" \t")
            if not v or len(v) > 10 or not v.isascii() or not v.isdigit():
                raise SipParseError(f"bad Content-Length {v[:20]!r}")
            n = int(v)
            if content_length is not None and n != content_length:
                raise SipParseError("conflicting Content-Length headers")
            content_length = n
    return msg, content_length


def parse_message(data: bytes) -> SipRequest | SipResponse:
    """Parse one whole datagram.

    Without Content-Length the body is the rest of the datagram; bytes beyond Content-Length are
    ignored; a body shorter than Content-Length is an error. Leading CR/LF (keepalive pings) are skipped.
    """
    if not isinstance(data, bytes):
        if isinstance(data, (bytearray, memoryview)):
            data = bytes(data)
        else:
            raise SipParseError("data must be bytes")
    if data[:1] in (b"\r", b"\n"):
        data = data.lstrip(b"\r\n")
    if not data:
        raise SipParseError("empty message")
    end, body_start = _find_blank_line(data)
    if end < 0:
        # No blank line: tolerate a datagram that is only a header block.
        msg, cl = _parse_head(data.rstrip(b"\r\n"))
        if cl:
            raise SipParseError("body shorter than Content-Length")
        return msg
    msg, cl = _parse_head(data[:end])
    if cl is None:
        msg.body = data[body_start:]
    else:
        if len(data) - body_start < cl:
            raise SipParseError(f"body shorter than Content-Length ({len(data) - body_start} < {cl})")
        msg.body = data[body_start : body_start + cl]
    return msg


class StreamFramer:
    """Cut SIP messages out of a byte stream (TCP), framed by Content-Length (RFC 3261 section 18.3).

    ``feed()`` returns the complete messages; partial ones stay buffered. CRLF keepalives between
    messages are skipped. Content-Length is mandatory. A header block over ``max_header_bytes`` or a
    Content-Length over ``max_body_bytes`` raises :class:`SipParseError`; the caller should then drop the
    connection (the framer's buffer is cleared).
    """

    __slots__ = ("_buf", "_pending", "_scan", "max_header_bytes", "max_body_bytes")

    def __init__(self, max_header_bytes: int = MAX_HEADER_BYTES, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self._buf = bytearray()
        self._pending: tuple[SipRequest | SipResponse, int] | None = None
        self._scan = 0
        self.max_header_bytes = max_header_bytes
        self.max_body_bytes = max_body_bytes

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[SipRequest | SipResponse]:
        try:
            return self._feed(data)
        except SipParseError:
            self._buf.clear()
            self._pending = None
            self._scan = 0
            raise

    def _feed(self, data: bytes) -> list[SipRequest | SipResponse]:
        buf = self._buf
        buf += data
        out: list[SipRequest | SipResponse] = []
        while True:
            if self._pending is None:
                n = 0
                size = len(buf)
                while n < size and buf[n] in (13, 10):
                    n += 1
                if n:
                    del buf[:n]
                    self._scan = 0
                if not buf:
                    break
                end, body_start = _find_blank_line(buf, self._scan)
                if end < 0:
                    if len(buf) > self.max_header_bytes:
                        raise SipParseError("header block too large")
                    self._scan = max(0, len(buf) - 3)
                    break
                self._scan = 0
                if end > self.max_header_bytes:
                    raise SipParseError("header block too large")
                msg, cl = _parse_head(bytes(buf[:end]))
                if cl is None:
                    raise SipParseError("Content-Length is mandatory on stream transports")
                if cl > self.max_body_bytes:
                    raise SipParseError(f"Content-Length {cl} too large")
                del buf[:body_start]
                self._pending = (msg, cl)
            msg, cl = self._pending
            if len(buf) < cl:
                break
            if cl:
                msg.body = bytes(buf[:cl])
                del buf[:cl]
            self._pending = None
            out.append(msg)
        return out


# --------------------------------------------------------------------------- building messages
REASON_PHRASES: dict[int, str] = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued", 183: "Session Progress",
    200: "OK", 202: "Accepted", 204: "No Notification",
    300: "Multiple Choices", 301: "Moved Permanently", 302: "Moved Temporarily", 305: "Use Proxy",
    380: "Alternative Service",
    400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 406: "Not Acceptable", 407: "Proxy Authentication Required",
    408: "Request Timeout", 410: "Gone", 412: "Conditional Request Failed", 413: "Request Entity Too Large",
    414: "Request-URI Too Long", 415: "Unsupported Media Type", 416: "Unsupported URI Scheme",
    420: "Bad Extension", 421: "Extension Required", 423: "Interval Too Brief",
    480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist", 482: "Loop Detected",
    483: "Too Many Hops", 484: "Address Incomplete", 485: "Ambiguous", 486: "Busy Here",
    487: "Request Terminated", 488: "Not Acceptable Here", 489: "Bad Event", 491: "Request Pending",
    493: "Undecipherable",
    500: "Server Internal Error", 501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable",
    504: "Server Time-out", 505: "Version Not Supported", 513: "Message Too Large",
    600: "Busy Everywhere", 603: "Decline", 604: "Does Not Exist Anywhere", 606: "Not Acceptable",
}


_random_pool = bytearray()


def random_hex(nbytes: int) -> str:
    """``nbytes`` of OS randomness as hex, drawn from a pool refilled 4 KiB at a time.

    Tags, branches and Call-IDs need unpredictable values (a guessed branch lets an off-path sender forge
    responses), but one ``getrandom`` call per value shows up at thousands of transactions a second.
    """
    global _random_pool
    if len(_random_pool) < nbytes:
        _random_pool = bytearray(secrets.token_bytes(4096))
    chunk = _random_pool[-nbytes:]
    del _random_pool[-nbytes:]
    return chunk.hex()


def new_tag() -> str:
    """A fresh random From/To tag."""
    return random_hex(6)


def make_response(
    request: SipRequest,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] | Headers = (),
    body: bytes = b"",
    content_type: str | None = None,
) -> SipResponse:
    """A response to ``request`` (RFC 3261 section 8.2.6.2).

    Copies every Via (in order), From, To (adding ``to_tag`` when To has no tag yet and status > 100),
    Call-ID and CSeq, plus Record-Route for dialog-creating responses; then ``headers`` and the body.
    """
    if not 100 <= status <= 699:
        raise ValueError(f"bad status code {status}")
    if reason is None:
        reason = REASON_PHRASES.get(status, "Unknown")
    src = request.headers
    h = Headers.__new__(Headers)
    items: list[tuple[str, str, str]] = []
    hmap: dict[str, list[str]] = {}
    h._items = items
    h._map = hmap
    vias = src._map.get("via")
    if vias:
        items.extend(("via", "Via", v) for v in vias)
        hmap["via"] = list(vias)
    for key, display in (("from", "From"), ("to", "To"), ("call-id", "Call-ID"), ("cseq", "CSeq")):
        lst = src._map.get(key)
        if not lst:
            continue
        value = lst[0]
        if key == "to" and to_tag and status != 100 and header_param(value, "tag") is None:
            value = f"{value};tag={to_tag}"
        items.append((key, display, value))
        hmap[key] = [value]
    if 100 < status < 300:
        rr = src._map.get("record-route")
        if rr:
            items.extend(("record-route", "Record-Route", v) for v in rr)
            hmap["record-route"] = list(rr)
    extra = headers.items() if isinstance(headers, Headers) else headers
    for name, value in extra:
        h.add(name, value)
    if content_type is not None:
        h.set("Content-Type", content_type)
    return SipResponse(status, reason, h, bytes(body))


def make_cancel(invite: SipRequest) -> SipRequest:
    """A CANCEL for a pending INVITE (RFC 3261 section 9.1): same top Via (branch), URI, Call-ID,
    From, To, Route and CSeq number."""
    src = invite.headers
    h = Headers()
    vias = src.get_all("via")
    if vias:
        h.add("Via", vias[0])
    for name in ("Route", "From", "To", "Call-ID"):
        for v in src._map.get(_key(name), ()):
            h.add(name, v)
    num, _ = invite.cseq
    h.add("CSeq", f"{num} CANCEL")
    h.add("Max-Forwards", "70")
    return SipRequest("CANCEL", invite.uri, h)
