"""Benchmark: audit log appends per second with one writing node and with three, on one PostgreSQL database.

In a cluster every node has an AuditLog of its own on the shared database; appends from all of them serialise
in PostgreSQL (the log's advisory lock), so that seq, the chain and the Merkle tree stay one.  This measures
what that costs: each writing node is an OS process (``tests/audit/multi_node_worker.py --bench``) whose
``--producers`` concurrent tasks call ``AuditLog.record()`` back to back, the way a busy node does; the first
node also signs checkpoints every ``--checkpoint-interval`` seconds (the holder of ``job:audit-checkpoint``).
The rate is the total committed entries over the wall time from "go" to the last node's last commit.

Every run gets a fresh private database (created next to ``--database-url``'s, migrated, dropped afterwards),
and the log is verified after it: seq contiguous, every stored checkpoint's signature and root, and the export
through the standalone verifier.  Medians of ``--runs`` runs (the counts interleaved), printed side by side with the ratio.

    python bench/audit_cluster.py [--database-url postgresql+asyncpg://postgres@127.0.0.1/test]
                                  [--entries 20000] [--producers 64] [--runs 3] [--nodes 1,3]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import make_url, text  # noqa: E402
from sqlalchemy.ext.asyncio import create_async_engine  # noqa: E402

from audit_log import verify as standalone  # noqa: E402
from audit_log.export import export_bundle  # noqa: E402
from audit_log.log import AuditLog  # noqa: E402
from audit_log.note import load_or_create_signer  # noqa: E402
from gbcore.db import make_engine, make_sessionmaker  # noqa: E402
from gbops.migrate import migrate  # noqa: E402

WORKER = ROOT / "tests" / "audit" / "multi_node_worker.py"
ORIGIN = "bench.example/cluster-audit"


class PrivateDatabase:
    """A throw-away database on the server of ``base_url``."""

    def __init__(self, base_url: str) -> None:
        self.base = make_url(base_url)
        self.name = f"gbops_bench_cluster_{os.getpid()}"
        self.url = self.base.set(database=self.name).render_as_string(hide_password=False)
        self.admin = create_async_engine(self.base, isolation_level="AUTOCOMMIT")

    async def create(self) -> None:
        async with self.admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
            await conn.execute(text(f'CREATE DATABASE "{self.name}"'))

    async def drop(self) -> None:
        async with self.admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))

    async def close(self) -> None:
        await self.drop()
        await self.admin.dispose()


async def start_worker(url: str, key: Path, node: str, entries: int, args: argparse.Namespace,
                       sign: bool) -> asyncio.subprocess.Process:
    cmd = [sys.executable, str(WORKER), url, str(key), ORIGIN, node, "--bench", str(entries),
           "--producers", str(args.producers), "--interval", str(args.checkpoint_interval)]
    if sign:
        cmd.append("--sign")
    return await asyncio.create_subprocess_exec(*cmd, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                                                cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})


async def read_until(proc: asyncio.subprocess.Process, prefix: str) -> str:
    assert proc.stdout is not None
    while True:
        raw = await proc.stdout.readline()
        if not raw:
            raise RuntimeError(f"worker ended (rc {await proc.wait()}) before {prefix!r}")
        line = raw.decode().strip()
        if line.startswith(prefix):
            return line


async def verify_log(url: str, key: Path, expected: int, work: Path) -> int:
    """The whole log checked as an auditor would; returns the checkpoints stored during the run."""
    engine = make_engine(url)
    try:
        audit = AuditLog(make_sessionmaker(engine), load_or_create_signer(key, ORIGIN, create=False), origin=ORIGIN)
        stored = await audit.store.checkpoints()
        prev, frontier, roots = bytes(32), standalone.Frontier(), {}
        seq = 0
        async for entry in audit.store.iter_entries(0, 10**9):
            value = json.loads(entry.data)
            if entry.seq != seq or value["seq"] != seq or value["prev"] != prev.hex():
                raise AssertionError(f"the log breaks at seq {seq}")
            prev = hashlib.sha256(b"\x00" + entry.data).digest()
            frontier.add(prev)
            roots[frontier.size] = frontier.root()
            seq += 1
        if seq != expected:
            raise AssertionError(f"{seq} entries on the log, {expected} committed")
        keys = standalone.parse_vkeys(audit.verifier_key)
        for cp in stored:
            signed = standalone.open_checkpoint(cp.note, keys, f"checkpoint {cp.tree_size}")
            if signed.root != roots[cp.tree_size] or signed.root != cp.root_hash:
                raise AssertionError(f"checkpoint {cp.tree_size} does not match the entries")
        bundle = work / "bundle"
        result = await export_bundle(audit, bundle)
        if result.problems:
            raise AssertionError(f"export: {result.problems}")
        report = await asyncio.to_thread(standalone.verify_bundle, bundle, key_text=audit.verifier_key)
        if report.entries != expected:
            raise AssertionError(f"the verifier saw {report.entries} entries, {expected} committed")
        return len(stored)
    finally:
        await engine.dispose()


async def one_run(db: PrivateDatabase, key: Path, nodes: int, args: argparse.Namespace) -> tuple[float, list[float], int]:
    """Aggregate appends/s of ``nodes`` writing processes, their own rates, checkpoints stored."""
    await db.create()
    engine = make_engine(db.url)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()
    per = args.entries // nodes
    procs = [await start_worker(db.url, key, f"node{i}", per, args, sign=i == 0) for i in range(nodes)]
    try:
        await asyncio.gather(*(read_until(p, "ready") for p in procs))
        t = time.perf_counter()
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(b"go\n")
            await p.stdin.drain()
        own = [float((await read_until(p, "rate")).split()[1]) for p in procs]
        wall = time.perf_counter() - t
        for p in procs:
            await read_until(p, "done")
            if await p.wait() != 0:
                raise RuntimeError(f"worker failed: rc {p.returncode}")
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
    with tempfile.TemporaryDirectory() as tmp:
        checkpoints = await verify_log(db.url, key, per * nodes, Path(tmp))
    await db.drop()
    return per * nodes / wall, own, checkpoints


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=os.environ.get("GBOPS_TEST_DATABASE_URL",
                                                                 "postgresql+asyncpg://postgres@127.0.0.1/test"))
    parser.add_argument("--entries", type=int, default=20000, help="entries per run, over all writing nodes")
    parser.add_argument("--producers", type=int, default=64, help="concurrent record() callers per node")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--nodes", default="1,3", help="writing node counts to compare")
    parser.add_argument("--checkpoint-interval", type=float, default=10.0, help="the signer's (s)")
    args = parser.parse_args()
    counts = [int(n) for n in args.nodes.split(",")]

    db = PrivateDatabase(args.database_url)
    medians: dict[int, float] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            key = Path(tmp) / "secrets" / "audit-signing.key"
            load_or_create_signer(key, ORIGIN)  # one key, shared by every node (gbops keys init)
            print(f"{args.entries} entries a run, {args.producers} record() callers per node, "
                  f"{os.cpu_count()} CPUs; database {db.base.host}:{db.base.port or 5432}")
            rates: dict[int, list[float]] = {n: [] for n in counts}
            for run in range(args.runs):  # interleaved, so that a busy machine's drift hits every count alike
                for nodes in counts:
                    rate, own, checkpoints = await one_run(db, key, nodes, args)
                    rates[nodes].append(rate)
                    print(f"  run {run + 1}, {nodes} writing node{'s' if nodes > 1 else ' '}: {rate:>9,.0f} appends/s "
                          f"(per node: {', '.join(f'{r:,.0f}' for r in own)}; {checkpoints} checkpoints; verified)")
            medians = {n: statistics.median(r) for n, r in rates.items()}
    finally:
        await db.close()
    base = medians[counts[0]]
    print(f"\nwriting nodes   appends/s (median of {args.runs})   ratio")
    for nodes in counts:
        print(f"{nodes:>13}   {medians[nodes]:>22,.0f}   {medians[nodes] / base:5.2f}")


if __name__ == "__main__":
    asyncio.run(main())
