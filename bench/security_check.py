"""How long the whole security check takes on a platform of 100 users and 10,000 devices (printed).

    .venv/bin/python bench/security_check.py [--users 100] [--devices 10000] [--known]

Users get production argon2id hashes (argon2-cffi defaults) of strong passwords; without ``--known`` their
strength is not known yet (``password_weak`` NULL, the case right after the upgrade), so the check spends its
argon2 probe budget on them.  Devices get strong own passwords (every HA1 candidate is tried).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import secrets
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


async def main(users: int, devices: int, known: bool) -> None:
    from argon2 import PasswordHasher
    from sqlalchemy import insert

    from device_registry.models import Device
    from gbcore.db import make_engine, make_sessionmaker, utcnow
    from gbcore.settings import Settings
    from gbops.migrate import migrate
    from ops_portal.models import User
    from ops_portal.security.check_facts import run_security_check

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), sip_password="Shared-Default-77")
        engine = make_engine(settings.db_url)
        await migrate(engine)
        sessionmaker = make_sessionmaker(engine)
        hasher = PasswordHasher()
        t0 = time.perf_counter()
        hashes = await asyncio.gather(*(asyncio.to_thread(hasher.hash, secrets.token_urlsafe(12))
                                        for _ in range(users)))
        print(f"setup: {users} argon2id hashes (t={hasher.time_cost}, m={hasher.memory_cost} KiB, "
              f"p={hasher.parallelism}) in {time.perf_counter() - t0:.1f} s")
        realm, now = settings.realm, utcnow()
        async with sessionmaker() as session:
            await session.execute(insert(User), [
                {"username": f"user{i:03d}", "password_hash": h, "created_at": now, "updated_at": now,
                 "password_weak": False if known else None} for i, h in enumerate(hashes)])
            rows = []
            for i in range(devices):
                did, pw = f"340200000013200{i:05d}", secrets.token_urlsafe(12)
                rows.append({"device_id": did, "created_at": now, "updated_at": now, "password_realm": realm,
                             "password_ha1_md5": hashlib.md5(f"{did}:{realm}:{pw}".encode()).hexdigest(),
                             "password_ha1_sha256": hashlib.sha256(f"{did}:{realm}:{pw}".encode()).hexdigest()})
            await session.execute(insert(Device), rows)
            await session.commit()
        t0 = time.perf_counter()
        report = await run_security_check(sessionmaker, settings)
        took = time.perf_counter() - t0
        print(f"check: {users} users, {devices} devices in {took:.2f} s; {report.checked}")
        await engine.dispose()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=100)
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--known", action="store_true", help="users' strength already judged at a login")
    a = ap.parse_args()
    asyncio.run(main(a.users, a.devices, a.known))
