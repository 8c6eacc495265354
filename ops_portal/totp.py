"""RFC 6238 time-based one-time passwords (TOTP), sans-IO: keys, codes and ``now`` in, answers out.

The second factor of portal users: HMAC-SHA-1 (RFC 4226 HOTP over the time step), 6 digits, a 30 s step,
and a code of the previous, current or next step accepted (clock drift between the phone and the
platform).  A code is accepted once: :func:`verify` only accepts a step later than the last one accepted
(``last_step``), so a code seen over a shoulder or replayed from a log cannot be used again.

Secrets travel as RFC 4648 base32 (what authenticator apps read), and :func:`provisioning_uri` builds the
``otpauth://totp/...`` URI that they scan.  Nothing here reads a clock, a file or the network.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import struct
from urllib.parse import quote

__all__ = [
    "DIGITS",
    "PERIOD",
    "SECRET_BYTES",
    "WINDOW",
    "TotpError",
    "decode_secret",
    "group_secret",
    "hotp",
    "new_secret",
    "normalise_code",
    "provisioning_uri",
    "time_step",
    "totp",
    "verify",
]

DIGITS = 6
PERIOD = 30
#: steps accepted either side of the current one
WINDOW = 1
#: 160 bits, the HMAC-SHA-1 block the RFC recommends at least
SECRET_BYTES = 20

_ALGORITHMS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha512": hashlib.sha512}


class TotpError(ValueError):
    """A malformed secret or an unsupported parameter (never carries the secret itself)."""


def new_secret(nbytes: int = SECRET_BYTES) -> str:
    """A fresh random secret as unpadded upper-case base32 (32 characters for 20 bytes)."""
    return base64.b32encode(secrets.token_bytes(nbytes)).decode("ascii").rstrip("=")


def decode_secret(secret: str) -> bytes:
    """The key bytes of a base32 secret; spaces, dashes, case and missing padding are forgiven."""
    text = "".join(secret.split()).replace("-", "").upper()
    if not text:
        raise TotpError("empty secret")
    text += "=" * (-len(text) % 8)
    try:
        key = base64.b32decode(text)
    except (binascii.Error, ValueError):
        raise TotpError("the secret is not base32") from None
    if not key:
        raise TotpError("empty secret")
    return key


def group_secret(secret: str, size: int = 4) -> str:
    """``JBSWY3DPEHPK3PXP`` -> ``JBSW Y3DP EHPK 3PXP`` (easier to type into an app by hand)."""
    return " ".join(secret[i:i + size] for i in range(0, len(secret), size))


def hotp(key: bytes, counter: int, *, digits: int = DIGITS, algorithm: str = "sha1") -> str:
    """RFC 4226 HOTP value of ``counter`` under ``key`` (dynamic truncation), zero-padded to ``digits``."""
    if not 6 <= digits <= 10:
        raise TotpError("digits must be 6 to 10")
    if counter < 0 or counter >= 1 << 64:
        raise TotpError("counter out of range")
    digest_mod = _ALGORITHMS.get(algorithm.lower())
    if digest_mod is None:
        raise TotpError(f"unsupported algorithm {algorithm!r}")
    mac = hmac.new(key, struct.pack(">Q", counter), digest_mod).digest()
    offset = mac[-1] & 0x0F
    binary = struct.unpack(">I", mac[offset:offset + 4])[0] & 0x7FFFFFFF
    return str(binary % 10**digits).zfill(digits)


def time_step(now: float, *, period: int = PERIOD, t0: int = 0) -> int:
    """The RFC 6238 time step ``T = floor((now - T0) / X)`` of Unix time ``now``."""
    return int((now - t0) // period)


def totp(key: bytes, now: float, *, digits: int = DIGITS, period: int = PERIOD, algorithm: str = "sha1") -> str:
    """The code valid at Unix time ``now``."""
    return hotp(key, time_step(now, period=period), digits=digits, algorithm=algorithm)


def normalise_code(code: str | None, digits: int = DIGITS) -> str | None:
    """The code with spaces removed, or None when it is not exactly ``digits`` ASCII digits."""
    if code is None:
        return None
    text = "".join(code.split())
    if len(text) != digits or not all("0" <= c <= "9" for c in text):
        return None
    return text


def verify(
    key: bytes,
    code: str | None,
    now: float,
    *,
    last_step: int | None = None,
    window: int = WINDOW,
    digits: int = DIGITS,
    period: int = PERIOD,
    algorithm: str = "sha1",
) -> int | None:
    """The time step ``code`` belongs to, when it is valid at ``now`` (within ``window`` steps either side)
    and later than ``last_step`` (the step of the last code accepted); None otherwise.  The caller stores
    the returned step as the new ``last_step``.  Every candidate is compared in constant time."""
    wanted = normalise_code(code, digits)
    if wanted is None:
        return None
    current = time_step(now, period=period)
    found: int | None = None
    for step in range(current - window, current + window + 1):
        if step < 0:
            continue
        candidate = hotp(key, step, digits=digits, algorithm=algorithm)
        fresh = last_step is None or step > last_step
        if hmac.compare_digest(candidate, wanted) and fresh and found is None:
            found = step
    return found


def provisioning_uri(secret: str, account: str, issuer: str, *, digits: int = DIGITS, period: int = PERIOD) -> str:
    """``otpauth://totp/<issuer>:<account>?secret=...&issuer=...`` (the Key URI format authenticator apps
    read; label and parameters percent-encoded)."""
    label = quote(f"{issuer}:{account}", safe=":@")
    return (f"otpauth://totp/{label}?secret={secret}&issuer={quote(issuer, safe='')}"
            f"&algorithm=SHA1&digits={digits}&period={period}")
