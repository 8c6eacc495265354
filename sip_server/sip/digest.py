"""HTTP Digest authentication for SIP (RFC 2617, RFC 7616, RFC 3261 section 22), sans-IO.

Server side: :class:`DigestAuthenticator` issues self-authenticating nonces (no per-challenge state)
and verifies ``Authorization`` values. Client side: :func:`build_authorization`.

    HA1      = H(username ":" realm ":" password)            ; "-sess": H(HA1 ":" nonce ":" cnonce)
    HA2      = H(method ":" digest-uri)                      ; auth-int: H(method ":" uri ":" H(body))
    response = H(HA1 ":" nonce ":" nc ":" cnonce ":" qop ":" HA2)   ; qop present
    response = H(HA1 ":" nonce ":" HA2)                              ; RFC 2069 compatibility
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .message import SipParseError

__all__ = [
    "AuthResult",
    "DigestAuthenticator",
    "parse_auth_params",
    "build_authorization",
    "compute_ha1",
    "digest_response",
    "ALGORITHMS",
]

_HASHES: dict[str, Callable] = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}
ALGORITHMS = ("MD5", "MD5-sess", "SHA-256", "SHA-256-sess")
_ALG_CANON = {a.upper(): a for a in ALGORITHMS}

_TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"


# --------------------------------------------------------------------------- parsing
def parse_auth_params(value: str) -> tuple[str, dict[str, str]]:
    """``Digest realm="a", nonce="b", algorithm=MD5`` -> ("Digest", {"realm": "a", ...}).

    Grammar (RFC 7235 / RFC 3261 section 25.1): ``auth-scheme LWS auth-param *(COMMA auth-param)``,
    ``auth-param = token EQUAL ( token / quoted-string )``. Parameter names are lower-cased; quoted
    values are unescaped; the first occurrence of a name wins. Empty list items are tolerated.
    """
    if not isinstance(value, str):
        raise SipParseError("credentials must be a string")
    s = value.strip(" \t")
    scheme, _, rest = s.partition(" ")
    if "\t" in scheme:
        scheme, _, more = scheme.partition("\t")
        rest = more + " " + rest
    if not scheme or scheme.strip(_TOKEN_CHARS):
        raise SipParseError(f"bad auth scheme {scheme[:30]!r}")
    params: dict[str, str] = {}
    pos = 0
    n = len(rest)
    match = _AUTH_PARAM.match
    while pos < n:
        m = match(rest, pos)
        if m is None:
            if rest[pos:].strip(" \t,"):
                raise SipParseError(f"bad auth-param near {rest[pos : pos + 30]!r}")
            break
        name, quoted, token = m.group(1, 2, 3)
        if name.strip(_TOKEN_CHARS):
            raise SipParseError(f"bad auth-param name {name[:30]!r}")
        if quoted is None:
            val = token
        elif "\\" in quoted:
            val = _UNESCAPE.sub(r"\1", quoted)
        else:
            val = quoted
        key = name.lower()
        if key not in params:
            params[key] = val
        pos = m.end()
    return scheme, params


# auth-param = token EQUAL ( token / quoted-string ), followed by COMMA or the end
_AUTH_PARAM = re.compile(
    r'[ \t,]*([^=\s,"]+)[ \t]*=[ \t]*(?:"([^"\\]*(?:\\.[^"\\]*)*)"|([^,\s"]+))[ \t]*(?:,|\Z)', re.S
)
_UNESCAPE = re.compile(r"\\(.)", re.S)


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --------------------------------------------------------------------------- hashing
def _hash_fn(algorithm: str) -> tuple[Callable, bool]:
    """(hash constructor, is_session) for an algorithm name (case-insensitive)."""
    canon = _ALG_CANON.get(algorithm.upper())
    if canon is None:
        raise ValueError(f"unsupported digest algorithm {algorithm!r}")
    sess = canon.endswith("-sess")
    return _HASHES[canon[:-5] if sess else canon], sess


def _h(fn: Callable, s: str) -> str:
    return fn(s.encode("utf-8", "surrogateescape")).hexdigest()


def compute_ha1(username: str, realm: str, password: str, algorithm: str = "MD5") -> str:
    """The (non-session) HA1 = H(username:realm:password): what a registry may store instead of a password."""
    fn, _ = _hash_fn(algorithm)
    return _h(fn, f"{username}:{realm}:{password}")


def digest_response(
    *,
    algorithm: str,
    method: str,
    uri: str,
    nonce: str,
    username: str | None = None,
    realm: str | None = None,
    password: str | None = None,
    ha1: str | None = None,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
    body: bytes = b"",
) -> str:
    """The ``response`` value. Give either ``ha1`` (the plain H(user:realm:password)) or the password."""
    fn, sess = _hash_fn(algorithm)
    if ha1 is None:
        if username is None or realm is None or password is None:
            raise ValueError("need ha1 or username, realm and password")
        ha1 = _h(fn, f"{username}:{realm}:{password}")
    if sess:
        ha1 = _h(fn, f"{ha1}:{nonce}:{cnonce or ''}")
    if qop == "auth-int":
        ha2 = _h(fn, f"{method}:{uri}:{fn(body).hexdigest()}")
    else:
        ha2 = _h(fn, f"{method}:{uri}")
    if qop:
        return _h(fn, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return _h(fn, f"{ha1}:{nonce}:{ha2}")


# --------------------------------------------------------------------------- client side
def build_authorization(
    challenge: str,
    *,
    method: str,
    uri: str,
    username: str,
    password: str,
    cnonce: str,
    nc: int = 1,
    body: bytes = b"",
) -> str:
    """An ``Authorization`` value answering a ``WWW-Authenticate`` challenge (client side).

    Honours the challenge's algorithm (MD5 when absent) and qop (``auth`` preferred, then
    ``auth-int``; RFC 2069 style when the challenge offers no qop). Echoes ``opaque``.
    """
    scheme, ch = parse_auth_params(challenge)
    if scheme.lower() != "digest":
        raise SipParseError(f"not a Digest challenge: {scheme!r}")
    realm = ch.get("realm")
    nonce = ch.get("nonce")
    if realm is None or nonce is None:
        raise SipParseError("challenge without realm or nonce")
    algorithm = ch.get("algorithm", "MD5")
    canon = _ALG_CANON.get(algorithm.upper())
    if canon is None:
        raise SipParseError(f"unsupported algorithm {algorithm!r}")
    offered = [q.strip().lower() for q in ch.get("qop", "").split(",") if q.strip()]
    qop = "auth" if "auth" in offered else ("auth-int" if "auth-int" in offered else None)
    ncs = f"{nc:08x}"
    resp = digest_response(
        algorithm=canon, method=method, uri=uri, nonce=nonce, username=username, realm=realm,
        password=password, qop=qop, nc=ncs if qop else None, cnonce=cnonce if qop or canon.endswith("-sess") else None,
        body=body,
    )
    parts = [
        f"Digest username={_q(username)}",
        f"realm={_q(realm)}",
        f"nonce={_q(nonce)}",
        f"uri={_q(uri)}",
        f"response={_q(resp)}",
        f"algorithm={canon}",
    ]
    if qop:
        parts += [f"cnonce={_q(cnonce)}", f"qop={qop}", f"nc={ncs}"]
    elif canon.endswith("-sess"):
        parts.append(f"cnonce={_q(cnonce)}")
    if "opaque" in ch:
        parts.append(f"opaque={_q(ch['opaque'])}")
    return ", ".join(parts)


# --------------------------------------------------------------------------- server side
@dataclass(frozen=True, slots=True)
class AuthResult:
    """Outcome of :meth:`DigestAuthenticator.verify`.

    ``stale`` is True when the digest itself was right but the nonce had expired or was already used:
    the caller should answer 401 with a fresh challenge carrying ``stale=true``.
    """

    ok: bool
    reason: str
    username: str | None = None
    stale: bool = False


# Reasons (stable strings; never contain secrets).
R_OK = "ok"
R_SYNTAX = "malformed credentials"
R_SCHEME = "not a Digest scheme"
R_MISSING = "missing digest parameter"
R_REALM = "realm mismatch"
R_ALGORITHM = "unsupported algorithm"
R_QOP = "unsupported qop"
R_NONCE_FORMAT = "nonce is not self-made (bad format)"
R_NONCE_MAC = "nonce is not self-made (HMAC mismatch)"
R_NONCE_BIND = "nonce was issued to another device"
R_EXPIRED = "nonce expired"
R_REPLAY = "nonce already used"
R_NO_CREDENTIALS = "no credentials for this device"
R_RESPONSE = "wrong response"

_NONCE_RAW = 24  # 4 time + 6 random + 2 bind tag + 12 HMAC
_NONCE_HEX = 2 * _NONCE_RAW


class DigestAuthenticator:
    """Issues and verifies digest challenges with stateless, self-authenticating nonces.

    A nonce is 48 hex digits: ``time(4) | random(6) | bindtag(2) | HMAC-SHA256(secret, ...)[:12]``,
    where ``bindtag`` is a short hash of ``bind`` (the device id the nonce was issued to) and the HMAC
    covers time, random and the full ``bind``. Nonces are single use (a wrong answer uses one up too, so
    each challenge allows one password guess): used ones are remembered until they expire, in per-second
    buckets that are pruned as time passes, so memory stays bounded by (verification rate x ``nonce_ttl``).

    ``now`` is whatever clock the caller uses consistently (wall or monotonic seconds).
    """

    def __init__(self, realm: str, secret: bytes, nonce_ttl: float = 300.0) -> None:
        if not secret:
            raise ValueError("secret must not be empty")
        self.realm = realm
        self.nonce_ttl = float(nonce_ttl)
        self._secret = bytes(secret)
        self._used: dict[int, set[bytes]] = {}  # issue second -> random parts used
        self._next_prune = 0.0
        self._random: Callable[[int], bytes] = os.urandom

    # ------------------------------------------------------------------ nonces
    def _bind_tag(self, bind: str) -> bytes:
        return hashlib.sha256(b"bind\x00" + bind.encode("utf-8", "surrogateescape")).digest()[:2]

    def _mac(self, head: bytes, bind: str) -> bytes:
        return hmac.new(self._secret, head + b"\x00" + bind.encode("utf-8", "surrogateescape"),
                        hashlib.sha256).digest()[:12]

    def make_nonce(self, now: float, bind: str) -> str:
        ts = min(max(int(now), 0), 0xFFFFFFFF)
        head = struct.pack(">I", ts) + self._random(6) + self._bind_tag(bind)
        return (head + self._mac(head, bind)).hex()

    def used_nonce_count(self) -> int:
        return sum(len(s) for s in self._used.values())

    def _prune(self, now: float) -> None:
        if now < self._next_prune:
            return
        self._next_prune = now + 1.0
        limit = now - self.nonce_ttl - 1.0
        for ts in [t for t in self._used if t < limit]:
            del self._used[ts]

    # ------------------------------------------------------------------ challenge
    def challenge(self, now: float, bind: str, *, algorithm: str = "MD5", stale: bool = False,
                  qop: str | None = "auth") -> str:
        """A ``WWW-Authenticate`` value: ``Digest realm="..", nonce="..", algorithm=MD5, qop="auth"``.

        The algorithm is always stated (some Dahua firmwares send no credentials otherwise).
        """
        canon = _ALG_CANON.get(algorithm.upper())
        if canon is None:
            raise ValueError(f"unsupported digest algorithm {algorithm!r}")
        out = f"Digest realm={_q(self.realm)}, nonce=\"{self.make_nonce(now, bind)}\", algorithm={canon}"
        if qop:
            out += f", qop={_q(qop)}"
        if stale:
            out += ", stale=true"
        return out

    # ------------------------------------------------------------------ verify
    def verify(
        self,
        authorization: str,
        *,
        method: str,
        bind: str,
        password: str | None = None,
        now: float,
        ha1: Mapping[str, str] | str | None = None,
        body: bytes | None = None,
    ) -> AuthResult:
        """Check an ``Authorization`` value for a request ``method`` from device ``bind``.

        Credentials: the plain ``password``, or ``ha1`` (a hex H(username:realm:password), or a mapping
        algorithm name -> such a value, e.g. ``{"MD5": ..., "SHA-256": ...}``). The digest ``username`` may
        differ from ``bind`` (Hikvision sends ``admin``); the ``uri`` parameter is used as sent.
        """
        try:
            scheme, p = parse_auth_params(authorization)
        except SipParseError:
            return AuthResult(False, R_SYNTAX)
        username = p.get("username")
        if scheme.lower() != "digest":
            return AuthResult(False, R_SCHEME, username)
        nonce = p.get("nonce")
        uri = p.get("uri")
        response = p.get("response")
        realm = p.get("realm")
        if username is None or nonce is None or uri is None or response is None or realm is None:
            return AuthResult(False, R_MISSING, username)
        if realm != self.realm:
            return AuthResult(False, R_REALM, username)
        canon = _ALG_CANON.get(p.get("algorithm", "MD5").upper())
        if canon is None:
            return AuthResult(False, R_ALGORITHM, username)
        qop = p.get("qop")
        nc = cnonce = None
        if qop is not None:
            qop = qop.lower()
            if qop not in ("auth", "auth-int") or (qop == "auth-int" and body is None):
                return AuthResult(False, R_QOP, username)
            nc = p.get("nc")
            cnonce = p.get("cnonce")
            if nc is None or cnonce is None:
                return AuthResult(False, R_MISSING, username)
            if len(nc) != 8 or nc.strip("0123456789abcdefABCDEF"):
                return AuthResult(False, R_SYNTAX, username)
        elif canon.endswith("-sess"):
            cnonce = p.get("cnonce")
            if cnonce is None:
                return AuthResult(False, R_MISSING, username)
        if p.get("userhash", "false").lower() == "true":
            return AuthResult(False, "userhash not supported", username)

        # --- the nonce: ours, for this device, fresh, unused
        if len(nonce) != _NONCE_HEX:
            return AuthResult(False, R_NONCE_FORMAT, username)
        try:
            raw = bytes.fromhex(nonce)
        except ValueError:
            return AuthResult(False, R_NONCE_FORMAT, username)
        head, mac = raw[:12], raw[12:]
        if not hmac.compare_digest(head[10:12], self._bind_tag(bind)):
            return AuthResult(False, R_NONCE_BIND, username)
        if not hmac.compare_digest(mac, self._mac(head, bind)):
            return AuthResult(False, R_NONCE_MAC, username)

        # --- the digest
        base = canon[:-5] if canon.endswith("-sess") else canon
        if isinstance(ha1, Mapping):
            stored = ha1.get(base) or ha1.get(base.upper())
        else:
            stored = ha1
        if stored is None and password is None:
            return AuthResult(False, R_NO_CREDENTIALS, username)
        try:
            expected = digest_response(
                algorithm=canon, method=method, uri=uri, nonce=nonce, username=username, realm=realm,
                password=password, ha1=stored.lower() if stored is not None else None, qop=qop, nc=nc,
                cnonce=cnonce, body=body or b"",
            )
        except ValueError:
            return AuthResult(False, R_ALGORITHM, username)
        match = hmac.compare_digest(expected.encode(), response.lower().encode("utf-8", "surrogateescape"))

        # --- freshness and single use; "stale" only when the digest itself was right (RFC 7616 3.3)
        ts = struct.unpack(">I", head[:4])[0]
        age = now - ts
        if age > self.nonce_ttl or age < -5.0:
            return AuthResult(False, R_EXPIRED if match else R_RESPONSE, username, stale=match)
        self._prune(now)
        rnd = head[4:10]
        bucket = self._used.get(ts)
        if bucket is None:
            self._used[ts] = {rnd}
        elif rnd in bucket:
            return AuthResult(False, R_REPLAY if match else R_RESPONSE, username, stale=match)
        else:
            bucket.add(rnd)  # any attempt burns the nonce: one password guess per challenge
        if not match:
            return AuthResult(False, R_RESPONSE, username)
        return AuthResult(True, R_OK, username)
