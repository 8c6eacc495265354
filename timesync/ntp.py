"""NTP (RFC 5905) packets, the server's answer and the client's measurement, sans-IO.

Only the 48-byte header is read and written: a request longer than that (NTPv4 extension fields, a MAC) is
answered with a plain 48-byte header, so an answer is never bigger than the question.  Timestamps are NTP's
64-bit fixed point (seconds since 1900-01-01 UTC, 32.32); this module converts them to and from POSIX
seconds (floats) and reads era 1 (after 2036-02-07) for values with the top bit clear.

Server (mode 4) answers follow :class:`Reference`: the host clock as its own reference (``LOCL``, stratum
``GBOPS_NTP_LOCAL_STRATUM``), an upstream server it checked (stratum + 1, that server's address as the
reference id), or unsynchronised (leap 3, stratum 16) when upstream servers are configured but none answers.
Nothing here reads a clock or touches a socket: times come in as arguments.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import struct
from dataclasses import dataclass

__all__ = [
    "HEADER",
    "LEAP_UNSYNC",
    "MODE_CLIENT",
    "MODE_SERVER",
    "NTP_EPOCH_OFFSET",
    "Measurement",
    "NtpError",
    "NtpPacket",
    "Reference",
    "build_request",
    "from_ntp",
    "from_short",
    "local_reference",
    "measure",
    "parse",
    "precision_exponent",
    "reference_id",
    "server_answer",
    "to_ntp",
    "to_short",
    "unsynchronised_reference",
    "upstream_reference",
]

HEADER = struct.Struct("!BBbbiI4sQQQQ")  # 48 bytes
NTP_EPOCH_OFFSET = 2_208_988_800  # seconds from 1900-01-01 to 1970-01-01
MODE_CLIENT = 3
MODE_SERVER = 4
LEAP_NONE = 0
LEAP_UNSYNC = 3
STRATUM_UNSYNC = 16
MAX_POLL = 17
MIN_POLL = 4
_ERA = 1 << 32


class NtpError(ValueError):
    """A packet that is not a usable NTP header (too short, wrong mode or version, zero timestamps)."""


# ------------------------------------------------------------------------------------------ time formats
def to_ntp(posix: float) -> int:
    """POSIX seconds as a 64-bit NTP timestamp (era folded: 2036 onwards wraps to small values)."""
    whole = math.floor(posix)
    frac = int((posix - whole) * _ERA)
    if frac >= _ERA:  # rounding at the very top of a second
        whole, frac = whole + 1, 0
    return (((whole + NTP_EPOCH_OFFSET) % _ERA) << 32) | frac


def from_ntp(value: int) -> float:
    """A 64-bit NTP timestamp as POSIX seconds; era 1 when the seconds' top bit is clear (2036-2104)."""
    seconds, frac = value >> 32, value & (_ERA - 1)
    if not seconds & 0x8000_0000:
        seconds += _ERA
    return seconds - NTP_EPOCH_OFFSET + frac / _ERA


def to_short(seconds: float) -> int:
    """Seconds as NTP short format (16.16), clamped to what fits."""
    return max(0, min(0xFFFF_FFFF, round(seconds * 65536)))


def from_short(value: int) -> float:
    return value / 65536


def precision_exponent(resolution: float) -> int:
    """RFC 5905 precision: log2 of the clock's resolution in seconds, rounded up, within [-32, 0]."""
    if resolution <= 0:
        return -32
    return max(-32, min(0, math.ceil(math.log2(resolution))))


def reference_id(address: str) -> bytes:
    """The reference id of a stratum >= 2 answer: the upstream's IPv4 address, or the first four bytes of
    the MD5 of its IPv6 address (RFC 5905 7.3); a name that is no address is hashed the same way."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return hashlib.md5(address.encode(), usedforsecurity=False).digest()[:4]
    if ip.version == 4:
        return ip.packed
    return hashlib.md5(ip.packed, usedforsecurity=False).digest()[:4]


# ------------------------------------------------------------------------------------------ the packet
@dataclass(frozen=True, slots=True)
class NtpPacket:
    """An NTP header.  Timestamps are the raw 64-bit values (0 = not set); delay/dispersion raw 16.16."""

    leap: int
    version: int
    mode: int
    stratum: int
    poll: int
    precision: int
    root_delay: int
    root_dispersion: int
    ref_id: bytes
    reference: int
    origin: int
    receive: int
    transmit: int

    def encode(self) -> bytes:
        first = (self.leap & 3) << 6 | (self.version & 7) << 3 | (self.mode & 7)
        return HEADER.pack(first, self.stratum & 0xFF, self.poll, self.precision, self.root_delay,
                           self.root_dispersion, self.ref_id, self.reference, self.origin, self.receive,
                           self.transmit)


def parse(data: bytes) -> NtpPacket:
    """The 48-byte header at the start of ``data`` (extensions after it are ignored); :class:`NtpError` for
    anything shorter or with version 0 / above 4."""
    if len(data) < HEADER.size:
        raise NtpError(f"short NTP packet ({len(data)} bytes)")
    (first, stratum, poll, precision, root_delay, root_dispersion, ref_id, reference, origin, receive,
     transmit) = HEADER.unpack_from(data)
    version = (first >> 3) & 7
    if not 1 <= version <= 4:
        raise NtpError(f"NTP version {version}")
    return NtpPacket(first >> 6, version, first & 7, stratum, poll, precision, root_delay, root_dispersion,
                     ref_id, reference, origin, receive, transmit)


# ------------------------------------------------------------------------------------------ server
@dataclass(frozen=True, slots=True)
class Reference:
    """What the server says about its own clock (leap, stratum, reference id and time, root delay and
    dispersion in seconds, precision exponent)."""

    leap: int
    stratum: int
    ref_id: bytes
    ref_time: float | None  # POSIX seconds; None: never set
    root_delay: float = 0.0
    root_dispersion: float = 0.0
    precision: int = -20

    @property
    def synchronised(self) -> bool:
        return self.leap != LEAP_UNSYNC and self.stratum < STRATUM_UNSYNC


def local_reference(stratum: int, now: float, *, precision: int = -20) -> Reference:
    """The host clock is the reference (no upstream servers configured): ``LOCL`` at ``stratum``."""
    return Reference(LEAP_NONE, stratum, b"LOCL", now, 0.0, 0.0, precision)


def upstream_reference(server_address: str, server_stratum: int, server_root_delay: float,
                       server_root_dispersion: float, delay: float, checked_at: float, *,
                       precision: int = -20) -> Reference:
    """Synchronised to an upstream server measured at ``checked_at`` over a round trip of ``delay``."""
    return Reference(LEAP_NONE, min(STRATUM_UNSYNC - 1, server_stratum + 1), reference_id(server_address),
                     checked_at, server_root_delay + max(0.0, delay),
                     server_root_dispersion + max(0.0, delay) / 2, precision)


def unsynchronised_reference(*, precision: int = -20, ref_time: float | None = None) -> Reference:
    """Upstream servers are configured and none answers (or the clock is off): leap 3, stratum 16."""
    return Reference(LEAP_UNSYNC, STRATUM_UNSYNC, b"INIT", ref_time, 0.0, 0.0, precision)


def server_answer(request: bytes, received: float, transmitted: float, ref: Reference) -> bytes | None:
    """The mode-4 answer to a client request (bytes in, bytes out), or None for anything that is not a
    mode-3 request (dropped without answer: no reflection of other modes, no answer to garbage).

    ``received`` is when the request arrived, ``transmitted`` when the answer leaves (POSIX seconds).  The
    origin timestamp is the client's transmit timestamp, copied bit for bit; version and poll follow the
    client's (poll clamped to RFC 5905's range)."""
    try:
        req = parse(request)
    except NtpError:
        return None
    if req.mode != MODE_CLIENT:
        return None
    ref_time = 0 if ref.ref_time is None else to_ntp(ref.ref_time)
    answer = NtpPacket(
        leap=ref.leap, version=req.version, mode=MODE_SERVER, stratum=ref.stratum,
        poll=max(MIN_POLL, min(MAX_POLL, req.poll)), precision=ref.precision,
        root_delay=min(0x7FFF_FFFF, to_short(ref.root_delay)), root_dispersion=to_short(ref.root_dispersion),
        ref_id=ref.ref_id[:4].ljust(4, b"\0"), reference=ref_time, origin=req.transmit,
        receive=to_ntp(received), transmit=to_ntp(transmitted),
    )
    return answer.encode()


# ------------------------------------------------------------------------------------------ client
def build_request(transmitted: float, *, version: int = 4, poll: int = 6) -> bytes:
    """A mode-3 request whose transmit timestamp is ``transmitted`` (the answer must echo it as origin)."""
    return NtpPacket(0, version, MODE_CLIENT, 0, poll, 0, 0, 0, b"\0\0\0\0", 0, 0, 0, to_ntp(transmitted)).encode()


@dataclass(frozen=True, slots=True)
class Measurement:
    """One exchange with a server: our clock's ``offset`` (server minus us: positive = we are behind) and
    the round-trip ``delay``, with what the server said about itself."""

    offset: float
    delay: float
    stratum: int
    leap: int
    ref_id: bytes
    root_delay: float
    root_dispersion: float

    @property
    def server_synchronised(self) -> bool:
        return self.leap != LEAP_UNSYNC and 0 < self.stratum < STRATUM_UNSYNC


def measure(request: bytes, response: bytes, received: float) -> Measurement:
    """Offset and delay from our request, the server's answer and when it arrived (RFC 5905 8):
    ``offset = ((T2 - T1) + (T3 - T4)) / 2``, ``delay = (T4 - T1) - (T3 - T2)``.

    :class:`NtpError` when the answer is not one to this request (mode, origin), is a kiss-o'-death
    (stratum 0) or carries no times."""
    req = parse(request)
    resp = parse(response)
    if resp.mode != MODE_SERVER:
        raise NtpError(f"answer mode {resp.mode}")
    if resp.origin != req.transmit:
        raise NtpError("answer does not echo our transmit timestamp (bogus or replayed)")
    if resp.stratum == 0:
        raise NtpError(f"kiss-o'-death {resp.ref_id.decode('ascii', 'replace')}")
    if resp.receive == 0 or resp.transmit == 0:
        raise NtpError("answer without receive/transmit timestamps")
    t1, t2, t3, t4 = from_ntp(req.transmit), from_ntp(resp.receive), from_ntp(resp.transmit), received
    return Measurement(
        offset=((t2 - t1) + (t3 - t4)) / 2, delay=(t4 - t1) - (t3 - t2), stratum=resp.stratum, leap=resp.leap,
        ref_id=resp.ref_id, root_delay=from_short(resp.root_delay), root_dispersion=from_short(resp.root_dispersion),
    )
