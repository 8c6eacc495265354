"""An entry is evidence: ``AuditLog.record`` waits out an SQLite database held locked past its busy timeout (a
heavy write load, e.g. thousands of devices keeping alive) instead of losing the entry (issue 17, found by
bench/fleet.py at 5,000-10,000 devices)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from audit_log.log import Actor, AuditLog, Target
from audit_log.note import NoteSigner
from gbcore.db import make_engine, make_sessionmaker
from gbops.migrate import migrate


async def test_record_waits_out_a_locked_database(tmp_path: Path) -> None:
    path = tmp_path / "gbops.db"
    url = f"sqlite+aiosqlite:///{path}"
    await migrate(url)
    engine = make_engine(url, busy_timeout_ms=50)  # the lock outlasts the busy timeout several times
    log = AuditLog(make_sessionmaker(engine), NoteSigner.generate("gbops.test/audit"), data_dir=tmp_path,
                   checkpoint_interval=3600)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the database
    try:
        task = asyncio.create_task(log.record(actor=Actor.system(), action="device.password_set",
                                              target=Target("device", "34020000001320000001")))
        await asyncio.sleep(0.6)
        assert not task.done()  # still trying, not failed
        holder.execute("COMMIT")
        entry = await asyncio.wait_for(task, 15)
        assert entry.seq == 0
        assert await log.store.size() == 1
    finally:
        holder.close()
        await log.stop()
        await engine.dispose()
