"""Weak device SIP passwords found from the stored digest HA1 (MD5 and SHA-256), never from a plain one."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gbcore.passwords import weak_password_reason
from security.weak_ha1 import DeviceHa1, candidate_count, scan_device, scan_devices
from sip_server.sip.digest import compute_ha1

REALM = "3402000000"
DEV = "34020000001320000042"
SHARED = "Shared-Default-77"


def stored(password: str, *, device_id: str = DEV, realm: str = REALM, md5: bool = True,
           sha256: bool = True) -> DeviceHa1:
    """What the registry stores for a device password (the SIP stack's own HA1 function)."""
    return DeviceHa1(device_id, compute_ha1(device_id, realm, password, "MD5") if md5 else None,
                     compute_ha1(device_id, realm, password, "SHA-256") if sha256 else None, realm)


@pytest.mark.parametrize("alg", ["md5", "sha256", "both"])
@pytest.mark.parametrize("password,reason", [
    ("admin123", "common"),        # in the common list as is
    ("Admin@123", "common"),       # listed with its capital
    ("ADMIN123", "common"),        # case variant of a listed one (HA1 is case-sensitive)
    ("Hik12345", "common"),
    ("12345", "factory"),          # short factory defaults stored before the rules existed
    ("888888", "factory"),
    ("Admin", "factory"),
    (DEV, "identity"),             # the device id itself
    (f"admin{DEV}", "identity"),
    (f"{DEV}@123", "identity"),
])
def test_weak_password_found_from_ha1(alg: str, password: str, reason: str) -> None:
    device = stored(password, md5=alg in ("md5", "both"), sha256=alg in ("sha256", "both"))
    result = scan_device(device, REALM, SHARED)
    assert result.own_password and result.weak == reason and not result.shared_default
    assert weak_password_reason(password, DEV) is not None  # the rule the route applies calls it weak too


@pytest.mark.parametrize("alg", ["md5", "sha256"])
def test_strong_password_is_not_flagged(alg: str) -> None:
    device = stored("Tq7#vLr2-Kestrel", md5=alg == "md5", sha256=alg == "sha256")
    result = scan_device(device, REALM, SHARED)
    assert result.own_password and result.weak is None and not result.shared_default


def test_shared_default_password_found_and_no_password_means_shared() -> None:
    same = scan_device(stored(SHARED), REALM, SHARED)
    assert same.own_password and same.shared_default and same.weak is None
    none = scan_device(DeviceHa1(DEV, None, None, None), REALM, SHARED)
    assert not none.own_password and not none.shared_default and none.weak is None
    # stored for another realm: the SIP service ignores it, the device authenticates with the shared one
    other = scan_device(stored("admin123", realm="4401000000"), REALM, SHARED)
    assert not other.own_password and other.realm_mismatch and other.weak is None
    # without a shared default configured, nothing is compared with it
    assert not scan_device(stored(SHARED), REALM, None).shared_default


def test_the_same_password_on_another_device_gives_another_ha1() -> None:
    """HA1 includes the device id: the verdict is per device (no table shared across devices)."""
    a, b = stored("admin123"), stored("admin123", device_id="34020000001320000043")
    assert a.ha1_md5 != b.ha1_md5
    assert scan_devices([a, b], REALM)[1].weak == "common"


def test_garbage_ha1_is_not_a_password() -> None:
    result = scan_device(DeviceHa1(DEV, "not-hex", None, REALM), REALM, SHARED)
    assert not result.own_password and result.weak is None


def test_uppercase_hex_is_compared() -> None:
    d = stored("admin123")
    assert scan_device(DeviceHa1(DEV, d.ha1_md5.upper(), None, REALM), REALM).weak == "common"


def test_candidate_count_is_bounded() -> None:
    assert 100 < candidate_count() < 1000


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=12, max_size=40).filter(lambda pw: weak_password_reason(pw, DEV) is None))
def test_any_password_the_route_accepts_is_never_called_weak(password: str) -> None:
    """No false alarm: a password that passes the platform's rule is not one of the candidates."""
    device = DeviceHa1(DEV, hashlib.md5(f"{DEV}:{REALM}:{password}".encode()).hexdigest(), None, REALM)
    assert scan_device(device, REALM, SHARED).weak is None


def test_every_candidate_is_weak_by_the_platform_rule() -> None:
    """One definition of weak: each password the scan tries is one the platform's rule refuses."""
    from security.weak_ha1 import _identity_candidates, _static_candidates

    for pw, _reason in _static_candidates():
        assert weak_password_reason(pw.decode(), DEV) is not None, pw
    for pw in _identity_candidates(DEV):
        assert weak_password_reason(pw.decode(), DEV) is not None, pw
