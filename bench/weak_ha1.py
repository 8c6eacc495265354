"""How long the weak-HA1 scan of the security check takes for many devices (printed, not asserted).

    .venv/bin/python bench/weak_ha1.py [devices]

Every device gets a strong own password (the worst case: every candidate is tried), half stored with MD5
and SHA-256, half with SHA-256 only.
"""

from __future__ import annotations

import hashlib
import secrets
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from security.weak_ha1 import DeviceHa1, candidate_count, scan_devices  # noqa: E402

REALM = "3402000000"


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    devices = []
    for i in range(n):
        did = f"340200000013200{i:05d}"
        pw = secrets.token_urlsafe(12)
        md5 = hashlib.md5(f"{did}:{REALM}:{pw}".encode()).hexdigest() if i % 2 == 0 else None
        sha = hashlib.sha256(f"{did}:{REALM}:{pw}".encode()).hexdigest()
        devices.append(DeviceHa1(did, md5, sha, REALM))
    t0 = time.perf_counter()
    results = scan_devices(devices, REALM, "Shared-Default-Pass-1")
    dt = time.perf_counter() - t0
    assert not any(r.weak or r.shared_default for r in results)
    per = candidate_count()
    print(f"{n} devices x {per} candidates = {n * per} HA1 in {dt:.2f} s "
          f"({n * per / dt / 1e6:.2f} M HA1/s, {dt / n * 1e6:.0f} us per device)")


if __name__ == "__main__":
    main()
