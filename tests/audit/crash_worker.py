"""Child process of test_crash.py: the portal with its audit log, driven through its HTTP API.

Sets device passwords for DEVICES devices (CONCURRENCY requests at a time) and prints
``ack <device_id>`` after each 204 answer, until it is killed.  Usage: crash_worker.py DB_URL DATA_DIR
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import httpx
from argon2 import PasswordHasher

from audit_log.log import AuditLog
from device_registry.service import Registry
from gbcore.db import make_engine, make_sessionmaker
from gbcore.settings import Settings
from gbops.migrate import migrate
from ops_portal import auth
from ops_portal.app import create_app
from ops_portal.models import UserRole
from ops_portal.users import create_user, ensure_builtin_role

DEVICES = 5000
CONCURRENCY = 8
PASSWORD = "Crash-Test-Pw-42"


def device_id(i: int) -> str:
    return f"3402000000132{i:07d}"


async def main(db_url: str, data_dir: Path) -> None:
    auth._hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    engine = make_engine(db_url)
    await migrate(engine)
    sessionmaker = make_sessionmaker(engine)
    settings = Settings(data_dir=data_dir)
    audit = AuditLog.from_settings(settings, sessionmaker)
    await audit.start()
    async with sessionmaker() as session:
        operator = await create_user(session, "operator", PASSWORD)
        role = await ensure_builtin_role(session)  # every permission, full scope
        await session.flush()
        session.add(UserRole(user_id=operator.id, role_id=role.id))
        await session.commit()
    app = create_app(settings=settings, sessionmaker=sessionmaker, registry=Registry(sessionmaker), audit=audit)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://portal.test") as client:
        r = await client.post("/api/auth/login", json={"username": "operator", "password": PASSWORD})
        r.raise_for_status()
        headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
        print("ready", flush=True)
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(DEVICES):
            queue.put_nowait(i)

        async def worker() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                r = await client.put(f"/api/devices/{device_id(i)}/password", headers=headers,
                                     json={"password": f"Dev-{i}-Secret-x9"})
                if r.status_code == 204:
                    sys.stdout.write(f"ack {device_id(i)}\n")
                    sys.stdout.flush()
                else:
                    sys.stdout.write(f"error {r.status_code} {r.text}\n")
                    sys.stdout.flush()

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    print("done", flush=True)
    await asyncio.sleep(3600)  # wait to be killed


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2])))
