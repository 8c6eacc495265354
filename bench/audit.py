"""Benchmark: audit log appends per second (SQLite, PostgreSQL) and offline verification speed.

* ``batched``: ``--producers`` concurrent tasks call ``AuditLog.record`` (each awaits its own entry's
  commit); the log groups what is queued into one transaction per batch.
* ``per-action``: ``--action-producers`` concurrent tasks each run their own transaction per entry,
  the way a portal route appends (``begin_write``: BEGIN IMMEDIATE on SQLite; entry; COMMIT).  The
  log's writer lock is held until each commit, so this is bounded by the commit latency.
* ``checkpoint``: signing a checkpoint over everything appended (node table built from scratch).
* ``verify``: ``verify.py``'s check of an export of the whole log, and of a synthetic bundle of
  ``--verify-entries`` entries in one process and in ``--jobs`` processes (entries per second).

Each rate is also given as a ratio to raw ``hashlib.sha256`` over the same bytes (the one hash per
entry that no implementation can skip), measured in the same run.

    python bench/audit.py [--entries 20000] [--producers 256] [--action-producers 8]
                          [--verify-entries 300000] [--jobs N] [--backends sqlite,postgresql]
                          [--pg-url postgresql+asyncpg://postgres@127.0.0.1/postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from audit_log.export import export_bundle  # noqa: E402
from audit_log.log import Actor, AuditLog, Target  # noqa: E402
from audit_log.note import NoteSigner  # noqa: E402
from audit_log.verify import verify_bundle  # noqa: E402
from gbcore.db import make_engine, make_sessionmaker  # noqa: E402
from gbops.migrate import migrate  # noqa: E402


def sha256_rate(blobs: list[bytes], repeats: int = 3) -> float:
    """Raw SHA-256 of 0x00 || entry, per second (best of ``repeats``)."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for b in blobs:
            hashlib.sha256(b"\x00" + b).digest()
        best = min(best, time.perf_counter() - t)
    return len(blobs) / best


def detail(i: int) -> dict:
    return {"channel_id": f"340200000013200{i % 100000:05d}", "session_id": secrets.token_hex(8), "n": i}


async def batched(audit: AuditLog, n: int, producers: int) -> float:
    per = n // producers

    async def producer(k: int) -> None:
        for i in range(per):
            await audit.record(actor=Actor("user", "7", "operator"), action="live.start",
                               target=Target("channel", f"ch{k}"), client_ip="192.0.2.10", detail=detail(i))

    t = time.perf_counter()
    await asyncio.gather(*(producer(k) for k in range(producers)))
    return per * producers / (time.perf_counter() - t)


async def per_action(audit: AuditLog, n: int, producers: int) -> float:
    from gbcore.db import begin_write

    per = n // producers

    async def producer(k: int) -> None:
        for i in range(per):
            async with audit.sessionmaker() as session:
                await begin_write(session)
                await audit.append(session, actor=Actor("user", "7", "operator"), action="ptz.control",
                                   target=Target("channel", f"ch{k}"), client_ip="192.0.2.10", detail=detail(i))
                await session.commit()

    t = time.perf_counter()
    await asyncio.gather(*(producer(k) for k in range(producers)))
    return per * producers / (time.perf_counter() - t)


async def pg_database(base_url: str) -> tuple[str, object]:
    from sqlalchemy import make_url, text
    from sqlalchemy.ext.asyncio import create_async_engine

    base = make_url(base_url)
    name = f"gbops_bench_{os.getpid()}"
    admin = create_async_engine(base, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        await conn.execute(text(f'CREATE DATABASE "{name}"'))

    async def drop() -> None:
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()

    return base.set(database=name).render_as_string(hide_password=False), drop


async def run_backend(backend: str, args: argparse.Namespace, work: Path) -> dict[str, float]:
    drop = None
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{work / 'bench.db'}"
    else:
        url, drop = await pg_database(args.pg_url)
    engine = make_engine(url)
    try:
        await migrate(engine)
        audit = AuditLog(make_sessionmaker(engine), NoteSigner.generate("bench.example/audit"))
        out: dict[str, float] = {}
        out["batched"] = await batched(audit, args.entries, args.producers)
        out["per-action"] = await per_action(audit, args.per_action_entries, args.action_producers)
        t = time.perf_counter()
        cp = await audit.checkpoint()
        assert cp is not None
        out["checkpoint"] = cp.tree_size / (time.perf_counter() - t)
        blobs = [e.data async for e in audit.store.iter_entries(0, cp.tree_size)]
        out["sha256"] = sha256_rate(blobs)
        bundle = work / f"bundle-{backend}"
        await export_bundle(audit, bundle)
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            report = verify_bundle(bundle, key_text=audit.verifier_key)
            best = min(best, time.perf_counter() - t)
        out["verify"] = report.entries / best
        out["entries"] = cp.tree_size
        out["bytes/entry"] = sum(map(len, blobs)) / len(blobs)
        await audit.stop()
        return out
    finally:
        await engine.dispose()
        if drop is not None:
            await drop()


def verify_synthetic(path: Path, n: int, jobs: int) -> None:
    """Verification speed on a bundle of ``n`` entries written here (no database needed)."""
    from audit_log.canonical import canonical_json
    from audit_log.merkle import CompactRange
    from audit_log.note import format_checkpoint

    signer = NoteSigner.generate("bench.example/audit")
    path.mkdir(parents=True)
    prev = bytes(32)
    cr = CompactRange()
    blobs = []
    with open(path / "entries.jsonl", "wb") as f:
        for i in range(n):
            value = {"action": "download.complete", "actor": {"id": str(i % 40), "name": f"用户{i % 40}", "type": "user"},
                     "client_ip": "192.0.2.10", "detail": detail(i), "prev": prev.hex(), "seq": i,
                     "target": {"id": f"ch{i % 500}", "type": "channel"}, "time": "2024-05-01T08:30:00.000Z"}
            data = canonical_json(value)
            blobs.append(data)
            f.write(data + b"\n")
            prev = hashlib.sha256(b"\x00" + data).digest()
            cr.append(prev)
    (path / "checkpoint").write_text(signer.sign(format_checkpoint(signer.name, n, cr.root())))
    sha = sha256_rate(blobs)
    print(f"synthetic bundle: {n} entries of {sum(map(len, blobs)) / n:.0f} bytes; raw SHA-256 {sha:,.0f}/s")
    medians: dict[int, float] = {}
    for j in sorted({1, min(2, jobs), jobs}):
        times = []
        for _ in range(3):
            t = time.perf_counter()
            verify_bundle(path, key_text=signer.vkey, jobs=j)
            times.append(time.perf_counter() - t)
        best, medians[j] = min(times), sorted(times)[1]
        print(f"  verify, {j} process{'es' if j > 1 else ''}: {n / best:>10,.0f} entries/s = 1/{sha * best / n:,.1f} "
              "of raw SHA-256")
        print(f"  verify, {j} process{'es' if j > 1 else ''}, median of 3: {n / medians[j]:>10,.0f} entries/s "
              f"(runs {', '.join(f'{n / x:,.0f}' for x in times)})")
    for j in sorted(medians):
        if j > 1:
            print(f"  verify scaling: {j} processes = {medians[1] / medians[j]:.2f} x 1 process (medians; "
                  f"{os.cpu_count()} CPUs, shared: noisy)")
    from results import record

    record("audit", "verify_entries_per_s", n / medians[1], unit="entries/s (one process, median of 3)",
           reference=sha, note="reference: raw SHA-256 of the same lines, hashes/s")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=20000, help="entries for the batched run")
    parser.add_argument("--per-action-entries", type=int, default=3000)
    parser.add_argument("--producers", type=int, default=256, help="concurrent record() callers")
    parser.add_argument("--action-producers", type=int, default=8, help="concurrent audited transactions")
    parser.add_argument("--verify-entries", type=int, default=300_000)
    parser.add_argument("--jobs", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--pg-url", default=os.environ.get("GBOPS_BENCH_PG_URL",
                                                           "postgresql+asyncpg://postgres@127.0.0.1/postgres"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.verify_entries:
            verify_synthetic(Path(tmp) / "synthetic", args.verify_entries, args.jobs)
        for backend in [b for b in args.backends.split(",") if b]:
            r = await run_backend(backend, args, Path(tmp))
            sha = r["sha256"]
            print(f"{backend}: {int(r['entries'])} entries of {r['bytes/entry']:.0f} bytes; "
                  f"raw SHA-256 {sha:,.0f}/s")
            for key in ("batched", "per-action", "checkpoint", "verify"):
                unit = "appends/s" if key.startswith(("batched", "per-action")) else "entries/s"
                print(f"  {key:<11} {r[key]:>10,.0f} {unit:<10} = 1/{sha / r[key]:,.0f} of raw SHA-256")
            if backend == "postgresql":
                from results import record

                record("audit", "pg_appends_per_s", r["batched"], unit="appends/s (batched)", reference=sha,
                       note="reference: raw SHA-256 hashes/s")


if __name__ == "__main__":
    asyncio.run(main())
