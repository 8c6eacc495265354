"""Viewer output URLs bound to the user who opened the session.

``POST /api/channels/{id}/live`` hands out ``flv_url`` and ``whep_url``.  Knowing a session id (it is on
the audit log, in the signed SEI tag, in the console of an administrator) must grant nothing, so an
output URL is served only with one of:

* the session user's own bearer token (``Authorization: Bearer ...``, same user as the session), or
* the short-lived, single-use signed token ``?t=`` of the URL the live answer returned:
  ``<expiry>.<base64url HMAC-SHA256(key, session id, user id, expiry)>``.  A ``<video>`` element
  cannot send headers, hence the URL token.  It is not the bearer token, it is never logged (the access
  log is off; errors log the path without the query) and never written to the audit log.

The key is random per process: viewer sessions live in this process's memory only, so a token can
never outlive (or travel beyond) the process that signed it.  A token is consumed by the output that
attaches with it (``GET /flv/...`` or ``POST /whep/...``); the WHEP resource's ``DELETE`` (RFC 9725)
also accepts the ``whep_url`` token after its expiry, since it can only end the session it names.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time

__all__ = ["TOKEN_TTL", "consume", "issue", "verify"]

#: Seconds a signed output URL can be used to attach (the session's attach deadline, if earlier, wins).
TOKEN_TTL = 60.0

_KEY = secrets.token_bytes(32)
_used: dict[str, float] = {}  # MAC -> expiry, for single use
_lock = threading.Lock()


def _mac(session_id: str, user_id: int, expires: int) -> str:
    msg = f"gbops-output-url-v1\n{session_id}\n{int(user_id)}\n{int(expires)}".encode()
    digest = hmac.new(_KEY, msg, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def issue(session_id: str, user_id: int, *, expires: float | None = None, ttl: float = TOKEN_TTL) -> str:
    """A token for ``session_id`` of ``user_id``, valid until ``expires`` (default: now + ``ttl``)."""
    exp = int(expires if expires is not None else time.time() + ttl)
    return f"{exp}.{_mac(session_id, user_id, exp)}"


def _parse(token: str) -> tuple[int, str] | None:
    exp_text, sep, mac = token.partition(".")
    if not sep or not exp_text.isdigit() or len(exp_text) > 12 or not mac or len(mac) > 64:
        return None
    return int(exp_text), mac


def verify(token: str | None, session_id: str, user_id: int, *, now: float | None = None,
           allow_expired: bool = False) -> bool:
    """Whether ``token`` was issued for this session and user (and, unless ``allow_expired``, is still
    valid and not used yet)."""
    if not token:
        return False
    parsed = _parse(token)
    if parsed is None:
        return False
    exp, mac = parsed
    if not hmac.compare_digest(mac, _mac(session_id, user_id, exp)):
        return False
    if allow_expired:
        return True
    now = time.time() if now is None else now
    with _lock:
        return now < exp and mac not in _used


def consume(token: str | None, session_id: str, user_id: int, *, now: float | None = None) -> bool:
    """:func:`verify`, then mark the token used: true only for the first caller."""
    if not verify(token, session_id, user_id, now=now):
        return False
    parsed = _parse(token or "")
    assert parsed is not None
    exp, mac = parsed
    now = time.time() if now is None else now
    with _lock:
        if mac in _used:
            return False
        for old in [m for m, e in _used.items() if e <= now]:
            del _used[old]
        _used[mac] = exp
        return True
