"""Child process of test_multi_node.py and bench/audit_cluster.py: one cluster node's audit log.

Each process is what one gbops node is to the audit log: an :class:`AuditLog` of its own, over an engine of its
own, on the database every node shares, with the signing key every node shares (a file, as ``gbops keys init``
writes it).  Only a node started with ``--sign`` signs checkpoints (the holder of ``job:audit-checkpoint``); the
others start with ``checkpoints=False``.  Every signature the process makes is counted, so that the test can tell
that the others signed nothing.

Test mode (default).  Two streams run at once, the way a node appends:

* ``r``: ``--records`` entries through :meth:`AuditLog.record`, issued in order in bursts of 1..16 concurrent
  callers (each burst is awaited before the next), so the log must keep them in issue order;
* ``t``: ``--transactions`` entries through :meth:`AuditLog.append` inside transactions of the caller's
  (1..3 entries each); every fifth transaction rolls back, and its entries must never appear.

Entries carry ``detail = {"node", "stream", "i"}``.  Lines on stdout: ``ready``; (stdin ``go``); ``ack r I``,
``ack t I`` once entry I is committed; ``rolledback t I``; with ``--hold-after K``, after K transactions, a
transaction whose entries (``detail.doomed``) are appended but never committed: ``holding``, then it waits to be
killed; at the end ``signed S1,S2,...`` (the checkpoint sizes this process signed) and ``done``.

Bench mode (``--bench N --producers P``): P concurrent tasks call ``record()`` until N entries are committed;
prints ``rate <appends per second>`` measured from ``go`` to the last commit, then ``signed ...`` and ``done``.

Usage: multi_node_worker.py DB_URL KEY_FILE ORIGIN NODE [options]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from audit_log.log import Actor, AuditLog, Target  # noqa: E402
from audit_log.note import NoteSigner, load_or_create_signer, parse_checkpoint  # noqa: E402
from gbcore.db import begin_write, make_engine, make_sessionmaker  # noqa: E402


class CountingSigner:
    """The shared key, counting what this process signs (the size of each checkpoint)."""

    def __init__(self, inner: NoteSigner) -> None:
        self.inner = inner
        self.sizes: list[int] = []

    def __getattr__(self, name: str) -> Any:  # name, vkey, verifier, skey
        return getattr(self.inner, name)

    def sign(self, text: str) -> str:
        self.sizes.append(parse_checkpoint(text).size)
        return self.inner.sign(text)


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def wait_for_go() -> None:
    say("ready")
    line = await asyncio.to_thread(sys.stdin.readline)
    if line.strip() != "go":
        raise SystemExit(f"expected 'go', got {line!r}")


async def record_stream(audit: AuditLog, node: str, count: int, rng: random.Random) -> None:
    i = 0
    while i < count:
        burst = list(range(i, min(count, i + rng.randint(1, 16))))
        await asyncio.gather(*(
            audit.record(actor=Actor("system", None, node), action="device.catalog_sync",
                         target=Target("device", f"{node}-r{k}"), detail={"node": node, "stream": "r", "i": k})
            for k in burst
        ))
        for k in burst:
            say(f"ack r {k}")
        i = burst[-1] + 1


async def transaction_stream(audit: AuditLog, node: str, count: int, rng: random.Random,
                             hold_after: int | None) -> None:
    i = n = 0
    while i < count:
        if hold_after is not None and n == hold_after:
            async with audit.sessionmaker() as session:
                await begin_write(session)
                for k in range(3):
                    await audit.append(session, actor=Actor("system", None, node), action="device.password_set",
                                       target=Target("device", f"{node}-doomed{k}"),
                                       detail={"node": node, "stream": "t", "i": -1, "doomed": True})
                await session.flush()
                say("holding")
                await asyncio.sleep(3600)  # killed here, the transaction open and the log's locks held
        ids = list(range(i, min(count, i + rng.randint(1, 3))))
        commit = n % 5 != 4
        async with audit.sessionmaker() as session:
            await begin_write(session)
            for k in ids:
                await audit.append(session, actor=Actor("system", None, node), action="device.password_set",
                                   target=Target("device", f"{node}-t{k}"), detail={"node": node, "stream": "t", "i": k})
            if commit:
                await session.commit()
            else:
                await session.rollback()
        for k in ids:
            say(f"{'ack' if commit else 'rolledback'} t {k}")
        i = ids[-1] + 1
        n += 1


async def bench(audit: AuditLog, node: str, total: int, producers: int) -> float:
    """``producers`` tasks calling ``record()`` back to back until ``total`` entries are committed."""
    left = total

    async def producer(k: int) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await audit.record(actor=Actor("user", "7", "operator"), action="live.start",
                               target=Target("channel", f"{node}-ch{k}"), client_ip="192.0.2.10",
                               detail={"node": node, "producer": k, "n": total - left})

    t = time.perf_counter()
    await asyncio.gather(*(producer(k) for k in range(producers)))
    return total / (time.perf_counter() - t)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("db_url")
    parser.add_argument("key_file", type=Path)
    parser.add_argument("origin")
    parser.add_argument("node")
    parser.add_argument("--sign", action="store_true", help="this node holds the signer's lease")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--interval", type=float, default=0.05, help="checkpoint interval (s)")
    parser.add_argument("--records", type=int, default=200)
    parser.add_argument("--transactions", type=int, default=100)
    parser.add_argument("--hold-after", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bench", type=int, default=0, help="bench mode: entries to append")
    parser.add_argument("--producers", type=int, default=64)
    args = parser.parse_args()

    signer = CountingSigner(load_or_create_signer(args.key_file, args.origin, create=False))
    engine = make_engine(args.db_url)
    try:
        audit = AuditLog(make_sessionmaker(engine), signer, origin=args.origin,  # type: ignore[arg-type]
                         data_dir=args.data_dir, checkpoint_interval=args.interval)
        await audit.start(checkpoints=args.sign)
        await wait_for_go()
        if args.bench:
            rate = await bench(audit, args.node, args.bench, args.producers)
            say(f"rate {rate:.1f}")
        else:
            rng = random.Random(f"{args.node}/{args.seed}")
            await asyncio.gather(record_stream(audit, args.node, args.records, rng),
                                 transaction_stream(audit, args.node, args.transactions, rng, args.hold_after))
        await audit.stop()
        say("signed " + ",".join(map(str, signer.sizes)))
        say("done")
    finally:
        await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main())
