"""Worker jobs run on exactly one node of a cluster (issue 17): real ``gbops run --roles worker`` processes on one
PostgreSQL database and one Redis.  The node holding the daily-report lease is killed with SIGKILL; another
worker takes the lease over when it expires and generates the missing daily report, once; a third worker taking
over after that generates nothing again (never twice)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.e2e.platform import STRONG_SIP_PASSWORD

pytestmark = pytest.mark.e2e

LEASE_TTL = 3.0


class Worker:
    """One ``gbops run --roles worker`` node (no SIP, no media, no HTTP)."""

    def __init__(self, tmp: Path, node_id: str, *, db_url: str, redis_url: str, prefix: str, secrets: Path,
                 schedule: str) -> None:
        self.node_id = node_id
        self.data_dir = tmp / node_id
        self.data_dir.mkdir(parents=True)
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("GBOPS_")},
            "GBOPS_DATA_DIR": str(self.data_dir),
            "GBOPS_CONFIG": str(self.data_dir / "none.toml"),
            "GBOPS_DATABASE_URL": db_url,
            "GBOPS_REDIS_URL": redis_url,
            "GBOPS_REDIS_PREFIX": prefix,
            "GBOPS_NODE_ID": node_id,
            "GBOPS_SECRETS_DIR": str(secrets),
            "GBOPS_SIP_PASSWORD": STRONG_SIP_PASSWORD,
            "GBOPS_CLUSTER_LEASE_TTL": str(LEASE_TTL),
            "GBOPS_CLUSTER_HEARTBEAT": "0.5",
            "GBOPS_REPORT_SCHEDULE": schedule,  # "": this node holds the lease but makes no report
            "GBOPS_REPORT_FORMATS": "csv",
            "GBOPS_NTP_PORT": "0",
        }
        self.log_path = self.data_dir / "node.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Worker:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "gbops.cli", "run", "--roles", "worker"], env=self.env,
                                     stdout=self._log, stderr=subprocess.STDOUT)
        return self

    def log(self) -> str:
        return self.log_path.read_text("utf-8", "replace")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


async def _wait(predicate, timeout: float, what: str, nodes: list[Worker]):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await predicate()
        if value:
            return value
        for n in nodes:
            if n.proc is not None and n.proc.poll() is not None and n.proc.returncode not in (-signal.SIGKILL,):
                raise AssertionError(f"{n.node_id} exited with {n.proc.returncode}:\n{n.log()}")
        await asyncio.sleep(0.2)
    logs = "\n".join(f"--- {n.node_id}\n{n.log()[-4000:]}" for n in nodes)
    raise AssertionError(f"timed out waiting for {what}\n{logs}")


async def test_report_lease_taken_over_after_kill(tmp_path: Path, pg_url: str, redis_url: str,
                                                  redis_prefix: str) -> None:
    import redis.asyncio as aioredis

    from cluster.keys import RedisKeys
    from cluster.lease import RedisLeases
    from gbcore.db import make_engine
    from gbops.migrate import migrate

    secrets = tmp_path / "secrets"
    await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "gbops.cli", "keys", "init", "--dir", str(secrets)],
                            check=True, capture_output=True,
                            env={k: v for k, v in os.environ.items() if not k.startswith("GBOPS_")})
    engine = make_engine(pg_url)
    await migrate(engine)
    # the platform has existed for three days: yesterday's daily report is due
    async with engine.begin() as conn:
        started = datetime.now(UTC) - timedelta(days=3)
        await conn.execute(text("INSERT INTO platform_runs (started_at, stopped_at, clean) VALUES (:a, :b, true)"),
                           {"a": started, "b": started + timedelta(minutes=1)})

    async def scheduled_reports() -> list[tuple[datetime, str, str]]:
        async with engine.connect() as conn:
            rows = await conn.execute(text("SELECT period_start, format, state FROM reports WHERE trigger = 'schedule' "
                                           "ORDER BY period_start"))
            return [tuple(r) for r in rows]

    client = aioredis.from_url(redis_url)
    leases = RedisLeases(client, RedisKeys(redis_prefix), "observer")
    common = {"db_url": pg_url, "redis_url": redis_url, "prefix": redis_prefix, "secrets": secrets}
    w1 = Worker(tmp_path, "worker-1", schedule="", **common)
    w2 = Worker(tmp_path, "worker-2", schedule="00:00", **common)
    w3 = Worker(tmp_path, "worker-3", schedule="00:00", **common)
    nodes = [w1, w2, w3]
    try:
        w1.start()
        await _wait(lambda: _is(leases, "job:reports", "worker-1"), 60, "worker-1 to hold the report lease", nodes)
        w2.start()
        await _wait(lambda: _node_known(client, redis_prefix, "worker-2"), 60, "worker-2 to join", nodes)
        await asyncio.sleep(LEASE_TTL)  # worker-2 stands by: it may not generate anything
        assert await leases.holder("job:reports") == "worker-1"
        assert await scheduled_reports() == []

        w1.stop(signal.SIGKILL)  # no clean release: the lease must expire
        killed = time.monotonic()
        await _wait(lambda: _is(leases, "job:reports", "worker-2"), 30, "worker-2 to take the report lease", nodes)
        assert time.monotonic() - killed <= LEASE_TTL * 2 + 5
        done = await _wait(lambda: _done(scheduled_reports), 120, "the daily report", nodes)
        assert len(done) == 1, done  # one day, one format, once

        w3.start()
        await _wait(lambda: _node_known(client, redis_prefix, "worker-3"), 60, "worker-3 to join", nodes)
        w2.stop(signal.SIGKILL)
        await _wait(lambda: _is(leases, "job:reports", "worker-3"), 30, "worker-3 to take the report lease", nodes)
        await asyncio.sleep(LEASE_TTL)  # worker-3 makes up missing days at once: there are none
        rows = await scheduled_reports()
        assert [r for r in rows if r[2] == "done"] == done, rows  # never twice
        assert "cluster.job_taken" in w3.log()
    finally:
        for n in nodes:
            if n.proc is not None:
                n.stop()
        await client.aclose()
        await engine.dispose()


async def _is(leases, name: str, node: str) -> bool:
    return await leases.holder(name) == node


async def _node_known(client, prefix: str, node_id: str) -> bool:
    from cluster.keys import RedisKeys
    from cluster.nodes import RedisNodeDirectory

    return await RedisNodeDirectory(client, RedisKeys(prefix)).get(node_id) is not None


async def _done(read) -> list:
    return [r for r in await read() if r[2] == "done"]
