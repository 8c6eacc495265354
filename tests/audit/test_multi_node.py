"""The audit log stays one log in a cluster (issue 17): three node processes, each with an AuditLog of its own on
the one PostgreSQL database and the one signing key, append at once; one of them (the holder of the signer's
lease) signs checkpoints meanwhile.  Afterwards seq is contiguous, the chain and the export verify, every stored
checkpoint verifies and is consistent with the later ones, each node's entries are in its own order, and only the
signer signed.  A node killed with -9 inside an open audited transaction leaves nothing of it behind, and the
others go on.  Also: ``start(checkpoints=False)`` signs nothing, ``start_checkpoints``/``stop_checkpoints`` start
and end signing."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import text

from audit_log import verify as standalone
from audit_log.export import export_bundle
from audit_log.log import Actor, AuditLog, Target
from audit_log.note import NoteSigner, load_or_create_signer
from gbcore.db import begin_write, make_engine, make_sessionmaker
from gbops.migrate import migrate

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("multi_node_worker.py")
ORIGIN = "gbops.test/cluster-audit"
RECORDS, TRANSACTIONS = 200, 100  # per node: 300 entries issued, every fifth transaction rolled back


@dataclass
class Node:
    """One node process: its stdout lines as they arrive."""

    name: str
    proc: asyncio.subprocess.Process
    stderr: Path
    lines: list[str] = field(default_factory=list)

    async def until(self, word: str) -> None:
        assert self.proc.stdout is not None
        while not self.lines or self.lines[-1] != word:
            raw = await self.proc.stdout.readline()
            if not raw:
                await self.proc.wait()
                pytest.fail(f"node {self.name} ended (rc {self.proc.returncode}) before {word!r}: "
                            f"{self.stderr.read_text()[-3000:]}")
            self.lines.append(raw.decode().rstrip("\n"))

    async def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")
        await self.proc.stdin.drain()

    def acked(self, stream: str) -> list[int]:
        return [int(line.split()[2]) for line in self.lines if line.startswith(f"ack {stream} ")]

    def rolled_back(self) -> set[int]:
        return {int(line.split()[2]) for line in self.lines if line.startswith("rolledback t ")}

    def signed(self) -> list[int]:
        line = next(line for line in self.lines if line.startswith("signed"))
        return [int(s) for s in line.removeprefix("signed").strip().split(",") if s]

    async def drain(self) -> None:
        """The lines a killed process wrote before it died."""
        assert self.proc.stdout is not None
        self.lines += [raw.decode().rstrip("\n") for raw in (await self.proc.stdout.read()).splitlines()]

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()


async def start_node(url: str, key: Path, name: str, tmp: Path, *args: str) -> Node:
    data_dir = tmp / name
    data_dir.mkdir()
    stderr = tmp / f"{name}.stderr"
    err = await asyncio.to_thread(stderr.open, "wb")
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(WORKER), url, str(key), ORIGIN, name, "--data-dir", str(data_dir), *args,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=err, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    finally:
        err.close()
    return Node(name, proc, stderr)


@pytest.fixture
async def cluster_db(pg_url: str, tmp_path: Path):
    """The shared database, migrated, and the shared signing key (a file, as ``gbops keys init`` writes)."""
    engine = make_engine(pg_url)
    try:
        await migrate(engine)
        key = tmp_path / "secrets" / "audit-signing.key"
        signer = load_or_create_signer(key, ORIGIN)
        audit = AuditLog(make_sessionmaker(engine), signer, origin=ORIGIN)
        yield pg_url, key, audit
        await audit.stop()
    finally:
        await engine.dispose()


def leaf(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


async def check_one_log(audit: AuditLog, tmp: Path) -> list[dict]:
    """Contiguous seq, the chain, every stored checkpoint (signature, root, consistency with the later ones),
    and the export through the standalone verifier.  Returns the entries."""
    raw = [e.data async for e in audit.store.iter_entries(0, 10**9)]
    rows = [json.loads(d) for d in raw]
    assert [r["seq"] for r in rows] == list(range(len(rows)))  # no gap, no duplicate
    prev = bytes(32)
    roots = {0: hashlib.sha256(b"").digest()}
    frontier = standalone.Frontier()  # verify.py's own tree code, not the store's
    for row, data in zip(rows, raw, strict=True):
        assert row["prev"] == prev.hex(), f"seq {row['seq']} does not chain"
        prev = leaf(data)
        frontier.add(prev)
        roots[frontier.size] = frontier.root()
    times = [r["time"] for r in rows]
    assert times == sorted(times)

    keys = standalone.parse_vkeys(audit.verifier_key)
    checkpoints = await audit.store.checkpoints()
    assert checkpoints, "nothing was signed"
    sizes = [cp.tree_size for cp in checkpoints]
    for cp in checkpoints:
        signed = standalone.open_checkpoint(cp.note, keys, f"checkpoint {cp.tree_size}")
        assert (signed.origin, signed.size, signed.root) == (ORIGIN, cp.tree_size, cp.root_hash)
        assert cp.root_hash == roots[cp.tree_size], f"checkpoint {cp.tree_size} does not match the entries"
    newest = sizes[-1]
    for old, new in [*zip(sizes, sizes[1:], strict=False), *((s, newest) for s in sizes)]:
        proof = await audit.store.consistency_proof(old, new)
        assert standalone.verify_consistency(old, new, proof, roots[old], roots[new]), (old, new)

    bundle = tmp / "bundle"
    result = await export_bundle(audit, bundle)
    assert result.problems == []
    report = standalone.verify_bundle(bundle, key_text=audit.verifier_key)
    assert (report.first_seq, report.entries, report.tree_size) == (0, len(rows), len(rows))
    assert report.root == roots[len(rows)]
    return rows


def by_node(rows: list[dict], name: str, stream: str) -> list[int]:
    return [r["detail"]["i"] for r in rows if r["detail"].get("node") == name and r["detail"]["stream"] == stream]


async def test_three_nodes_append_to_one_log(cluster_db, tmp_path: Path) -> None:
    url, key, audit = cluster_db
    nodes = [await start_node(url, key, "a", tmp_path, "--sign"),
             await start_node(url, key, "b", tmp_path),
             await start_node(url, key, "c", tmp_path)]
    try:
        async with asyncio.timeout(180):
            await asyncio.gather(*(n.until("ready") for n in nodes))
            for n in nodes:
                await n.go()
            await asyncio.gather(*(n.until("done") for n in nodes))
            for n in nodes:
                assert await n.proc.wait() == 0
    finally:
        for n in nodes:
            await n.kill()

    signed_before_export = [cp.tree_size for cp in await audit.store.checkpoints()]
    rows = await check_one_log(audit, tmp_path)
    for n in nodes:
        acked_t = n.acked("t")
        # every committed entry is there once, in the order the node issued it; rolled back ones are not
        assert by_node(rows, n.name, "r") == list(range(RECORDS)) == n.acked("r")
        assert by_node(rows, n.name, "t") == acked_t == sorted(set(range(TRANSACTIONS)) - n.rolled_back())
        assert n.rolled_back()
    assert len(rows) == sum(len(n.acked("r")) + len(n.acked("t")) for n in nodes)
    # the three nodes interleaved (they did run at once)
    owners = [r["detail"]["node"] for r in rows]
    assert sum(1 for x, y in zip(owners, owners[1:], strict=False) if x != y) > 10
    # one signer: the others signed nothing, and every checkpoint stored meanwhile is the signer's
    signer, *others = nodes
    assert all(n.signed() == [] for n in others)
    assert len(signed_before_export) > 1 and set(signed_before_export) <= set(signer.signed())
    assert signed_before_export[-1] == signer.signed()[-1]  # its last one, at its stop


async def eventually(check, want, timeout: float = 30.0) -> None:
    """Wait until ``await check()`` returns at least ``want`` (fail at the timeout)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if await check() >= want:
            return
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.02)


async def waiting_for_the_append_lock(audit: AuditLog) -> int:
    """Sessions of this database waiting for the log's PostgreSQL advisory lock."""
    async with audit.sessionmaker() as session:
        return await session.scalar(text(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )) or 0


async def test_kill_9_inside_an_audited_transaction(cluster_db, tmp_path: Path) -> None:
    """Node c is killed while its transaction holds the log's locks with three entries appended and not
    committed, nodes a and b waiting for those locks: none of c's uncommitted entries appear, a and b carry on
    and finish, and the log stays one verifiable log."""
    url, key, audit = cluster_db
    nodes = [await start_node(url, key, "a", tmp_path, "--sign"),
             await start_node(url, key, "b", tmp_path),
             await start_node(url, key, "c", tmp_path, "--records", "100000", "--transactions", "100000",
                              "--hold-after", "30")]
    a, b, c = nodes
    try:
        async with asyncio.timeout(180):
            await asyncio.gather(*(n.until("ready") for n in nodes))
            await c.go()
            await c.until("holding")  # c: 30 transactions and a stream of record() batches, then stuck
            await a.go()
            await b.go()
            await eventually(lambda: waiting_for_the_append_lock(audit), 2)  # a and b queue behind c
            size_at_kill = await audit.store.size()
            await c.kill()
            await c.drain()
            assert c.proc.returncode == -signal.SIGKILL
            await asyncio.gather(a.until("done"), b.until("done"))
            for n in (a, b):
                assert await n.proc.wait() == 0
    finally:
        for n in nodes:
            await n.kill()

    rows = await check_one_log(audit, tmp_path)
    assert not any(r["detail"].get("doomed") for r in rows)
    # c's committed entries are all below the kill, a's and b's all above: they waited, then went on
    assert [r["detail"]["node"] for r in rows[:size_at_kill]] == ["c"] * size_at_kill
    assert all(r["detail"]["node"] in ("a", "b") for r in rows[size_at_kill:])
    for n in (a, b):
        assert by_node(rows, n.name, "r") == list(range(RECORDS))
        assert by_node(rows, n.name, "t") == sorted(set(range(TRANSACTIONS)) - n.rolled_back())
    # c: what it acknowledged, in its own order, and nothing of a transaction that did not commit
    assert by_node(rows, "c", "t") == c.acked("t") and len(c.acked("t")) >= 24
    c_records = by_node(rows, "c", "r")
    assert c_records == list(range(len(c_records))) and set(c.acked("r")) <= set(c_records)
    assert not set(by_node(rows, "c", "t")) & c.rolled_back()
    assert a.signed() and b.signed() == []
    # and the log takes new entries from a fresh process (this one)
    await audit.record(actor=Actor("system", None, "test"), action="device.catalog_sync", target=Target("device", "x"))
    assert await audit.store.size() == len(rows) + 1


class _Counting:
    def __init__(self, inner: NoteSigner) -> None:
        self.inner, self.sizes = inner, []

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def sign(self, text: str) -> str:
        self.sizes.append(text)
        return self.inner.sign(text)


async def test_checkpoint_signing_follows_the_lease(db_engine, tmp_path: Path) -> None:
    """A node started with ``checkpoints=False`` signs nothing, not even at stop; ``start_checkpoints`` signs
    one right away and then as entries arrive; ``stop_checkpoints`` ends it (no last checkpoint at stop)."""
    signer = _Counting(NoteSigner.generate(ORIGIN))
    interval = 0.05

    def log() -> AuditLog:
        return AuditLog(make_sessionmaker(db_engine), signer, origin=ORIGIN, data_dir=tmp_path / "data",  # type: ignore[arg-type]
                        checkpoint_interval=interval)

    async def add(audit: AuditLog, n: int) -> None:
        for i in range(n):
            async with audit.sessionmaker() as session:
                await begin_write(session)
                await audit.append(session, actor=Actor("system", None, "t"), action="device.catalog_sync",
                                   target=Target("device", str(i)))
                await session.commit()
        await asyncio.gather(*(audit.record(actor=Actor("system", None, "t"), action="device.catalog_sync",
                                            target=Target("device", f"r{i}")) for i in range(n)))

    async def signed_up_to(audit: AuditLog, size: int) -> None:
        async def reached() -> bool:
            cp = await audit.store.latest_checkpoint()
            return cp is not None and cp.tree_size >= size

        await eventually(reached, True)

    follower = log()
    await follower.start(checkpoints=False)
    await add(follower, 5)
    await asyncio.sleep(interval * 10)  # ten checkpoint intervals go by: nothing may be signed
    await follower.stop()
    assert signer.sizes == [] and await follower.store.checkpoints() == []
    assert await follower.store.size() == 10

    node = log()  # the lease is acquired: signing starts, and at once
    await node.start(checkpoints=False)
    await node.start_checkpoints()
    assert [cp.tree_size for cp in await node.store.checkpoints()] == [10]
    await add(node, 3)
    await signed_up_to(node, 16)  # the loop signs as entries arrive
    assert node._checkpointer is not None

    await node.stop_checkpoints()  # the lease is lost
    assert node._checkpointer is None and not node.signs
    count = len(signer.sizes)
    await add(node, 2)
    await asyncio.sleep(interval * 10)
    await node.stop()
    assert len(signer.sizes) == count
    assert (await node.store.latest_checkpoint()).tree_size == 16  # type: ignore[union-attr]

    again = log()  # regained after a restart: the node signs again, and a last checkpoint at stop
    await again.start(checkpoints=False)
    await again.start_checkpoints()
    assert (await again.store.latest_checkpoint()).tree_size == 20  # type: ignore[union-attr]
    await add(again, 1)
    await again.stop()
    assert (await again.store.latest_checkpoint()).tree_size == 22  # type: ignore[union-attr]
