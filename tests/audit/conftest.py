"""Fixtures of the audit log tests: a log on a fresh database (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from audit_log.log import Actor, AuditLog, Target
from audit_log.note import NoteSigner
from gbcore.db import make_sessionmaker

ORIGIN = "gbops.test/audit"


@pytest.fixture(scope="session")
def signer() -> NoteSigner:
    return NoteSigner.generate(ORIGIN)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


@pytest.fixture
async def audit(db_engine, signer: NoteSigner, data_dir: Path) -> AsyncIterator[AuditLog]:
    log = AuditLog(make_sessionmaker(db_engine), signer, data_dir=data_dir, checkpoint_interval=0.05)
    yield log
    await log.stop()


async def fill(audit: AuditLog, n: int, *, action: str = "device.password_set", prefix: str = "dev") -> None:
    """``n`` entries in one transaction each batch of 100."""
    from gbcore.db import begin_write

    done = 0
    while done < n:
        k = min(100, n - done)
        async with audit.sessionmaker() as session:
            await begin_write(session)
            for i in range(done, done + k):
                await audit.append(
                    session,
                    actor=Actor("user", "1", "alice"),
                    action=action,
                    target=Target("device", f"{prefix}{i}"),
                    client_ip="192.0.2.1",
                    detail={"i": i, "name": f"设备 {i}"},
                )
            await session.commit()
        done += k
