"""Weak device SIP passwords found from their stored digest HA1, without ever holding a plain one.

A device's own SIP password is stored only as HA1 = H(device_id:realm:password) (MD5 and/or SHA-256).
HA1 cannot be reversed, but it can be *confirmed*: compute it for each candidate password (the common
passwords of :mod:`gbcore.passwords`, the factory defaults cameras ship with, and a few passwords built
from the device id, which :func:`gbcore.passwords.weak_password_reason` calls weak) for that device's id
and realm, and compare.  The device id is part of the hashed text, so the work is per device; the
per-device prefix ``device_id:realm:`` is hashed once and copied for each candidate.

Nothing here returns, stores or logs the matching password: a result names the *kind* of weakness only
(common list, factory default, contains the device id, the shared default).

Pure functions (no I/O); callers run :func:`scan_devices` in a worker thread.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from gbcore.passwords import common_passwords, weak_password_reason

__all__ = [
    "REASONS",
    "DeviceHa1",
    "Ha1Result",
    "candidate_count",
    "scan_device",
    "scan_devices",
]

#: Why a stored HA1 is weak: code -> (中文, English).  The code is what a result carries.
REASONS: dict[str, tuple[str, str]] = {
    "common": ("密码属于常见弱口令", "password is in the list of common passwords"),
    "factory": ("密码是设备出厂默认或过短的常见口令", "password is a factory default or a short common password"),
    "identity": ("密码由设备编号构成", "password is built from the device id"),
}

#: Factory defaults and short or single-class passwords that cameras and NVRs ship with or that people set
#: on them.  :func:`weak_password_reason` refuses all of them (length or class rules) today, but a device
#: password stored before those rules, or imported, may still be one.
FACTORY_DEFAULTS: tuple[str, ...] = (
    "12345", "123456", "1234567", "12345678", "123456789", "1234567890", "888888", "88888888",
    "666666", "66666666", "000000", "00000000", "111111", "11111111", "admin", "admin1", "admin12",
    "password", "abc123", "abcd1234", "system", "root", "pass", "1111", "0000", "54321", "654321",
    "87654321", "qwerty", "qwertyui", "qwertyuiop", "asdfghjk",
)

#: Prefixes and suffixes put around the device id (the id itself is a candidate too).
_ID_AFFIXES: tuple[str, ...] = ("@", "!", "#", ".", "a", "A", "admin", "Admin@", "admin@", "123", "@123", "abc")


@lru_cache(maxsize=1)
def _static_candidates() -> tuple[tuple[bytes, str], ...]:
    """(password bytes, reason) of the candidates that do not depend on the device: every common password
    as listed, lower-case, capitalised and upper-case (the list is compared case-insensitively by the
    weak-password rule, digest HA1 is case-sensitive), then the factory defaults."""
    seen: set[str] = set()
    out: list[tuple[bytes, str]] = []

    def add(pw: str, reason: str) -> None:
        if pw and pw not in seen:
            seen.add(pw)
            out.append((pw.encode(), reason))

    for pw in sorted(common_passwords()):
        for variant in (pw, pw.lower(), pw.capitalize(), pw.upper()):
            add(variant, "common")
    for pw in FACTORY_DEFAULTS:
        for variant in (pw, pw.capitalize()):
            if weak_password_reason(variant) is not None:  # one definition of weak: the platform's rule
                add(variant, "factory")
    return tuple(out)


def _identity_candidates(device_id: str) -> list[bytes]:
    out = [device_id, device_id[-6:], device_id[-8:]]
    for affix in _ID_AFFIXES:
        out.append(affix + device_id)
        out.append(device_id + affix)
    return [pw.encode() for pw in dict.fromkeys(out) if pw]


def candidate_count(device_id: str = "34020000001320000001") -> int:
    """How many HA1 values are computed per device (for the bench and the docs)."""
    return len(_static_candidates()) + len(_identity_candidates(device_id))


@dataclass(frozen=True, slots=True)
class DeviceHa1:
    """What the registry stores about a device's own SIP password (no password)."""

    device_id: str
    ha1_md5: str | None
    ha1_sha256: str | None
    realm: str | None


@dataclass(frozen=True, slots=True)
class Ha1Result:
    """The verdict on one device.

    ``own_password``: the device has an HA1 usable for ``platform_realm`` (otherwise it authenticates with
    the shared default ``GBOPS_SIP_PASSWORD``).  ``realm_mismatch``: it has one, but for another realm (the
    SIP service ignores it and uses the shared password).  ``weak``: a key of :data:`REASONS` or None.
    ``shared_default``: its own HA1 is the one of the shared default password."""

    device_id: str
    own_password: bool
    realm_mismatch: bool = False
    weak: str | None = None
    shared_default: bool = False


def _pick(device: DeviceHa1) -> tuple[str, str] | None:
    """(hashlib name, stored lower-case hex) to compare against: MD5 when present (cheaper), else SHA-256."""
    if device.ha1_md5:
        return "md5", device.ha1_md5.lower()
    if device.ha1_sha256:
        return "sha256", device.ha1_sha256.lower()
    return None


def scan_device(device: DeviceHa1, platform_realm: str, default_password: str | None = None) -> Ha1Result:
    """Whether ``device``'s stored HA1 is the HA1 of a weak candidate or of ``default_password``."""
    picked = _pick(device)
    if picked is None or not device.realm:
        return Ha1Result(device.device_id, own_password=False)
    if device.realm != platform_realm:
        return Ha1Result(device.device_id, own_password=False, realm_mismatch=True)
    alg, stored_hex = picked
    try:
        stored = bytes.fromhex(stored_hex)
    except ValueError:  # not an HA1 at all: the SIP service cannot use it either
        return Ha1Result(device.device_id, own_password=False)
    prefix = hashlib.new(alg, f"{device.device_id}:{device.realm}:".encode())

    def matches(pw: bytes) -> bool:
        h = prefix.copy()
        h.update(pw)
        return h.digest() == stored  # public candidates: no secret to time

    shared = default_password is not None and matches(default_password.encode())
    weak: str | None = None
    for pw in _identity_candidates(device.device_id):
        if matches(pw):
            weak = "identity"
            break
    if weak is None:
        for pw, reason in _static_candidates():
            if matches(pw):
                weak = reason
                break
    return Ha1Result(device.device_id, own_password=True, weak=weak, shared_default=shared)


def scan_devices(devices: Iterable[DeviceHa1], platform_realm: str,
                 default_password: str | None = None) -> Sequence[Ha1Result]:
    """:func:`scan_device` for each device (CPU bound: run it in a worker thread)."""
    return [scan_device(d, platform_realm, default_password) for d in devices]
