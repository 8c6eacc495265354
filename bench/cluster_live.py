"""Benchmark: what the cluster adds to a live view (issue 17), cluster and single process in the same run.

Cluster: one `gbops run --roles sip,portal,worker` node and one `--roles media` node on 127.0.0.2, PostgreSQL
and Redis; the portal places the stream on the media node over the command bus, the media node INVITEs through
the SIP node, and the browser reads FLV from the media node. Single process: one `gbops run` (all roles,
SQLite). The same simulator (one camera per device) feeds both; each request opens a new upstream (a channel
not watched yet): times from ``POST .../live`` to its 201 and to the first FLV video tag read from the
returned URL. Prints medians and the 95th percentile.

    python bench/cluster_live.py [--requests 8] [--database-url postgresql+asyncpg://postgres@127.0.0.1/test]
                                 [--redis-url redis://127.0.0.1:6379/0]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def first_video_tag(url: str) -> float:
    """Seconds until the first FLV video tag of ``url`` arrives (reading it as a player does)."""
    import httpx

    t0 = time.monotonic()
    buf, pos = b"", 13
    with httpx.stream("GET", url, timeout=10) as r:
        r.raise_for_status()
        for chunk in r.iter_bytes():
            buf += chunk
            while len(buf) >= pos + 11:
                size = int.from_bytes(buf[pos + 1:pos + 4], "big")
                if buf[pos] == 9:
                    return time.monotonic() - t0
                if len(buf) < pos + 11 + size + 4:
                    break
                pos += 11 + size + 4
    raise RuntimeError("no video tag")


async def measure(portal, media_base_ok, sim, indexes: list[int]) -> tuple[list[float], list[float]]:
    answered, first = [], []
    for i in indexes:
        device, channel = sim.device_ids[i], sim.cfg.channel_ids(i)[0]
        await asyncio.to_thread(portal.wait_for, lambda d=device, c=channel: any(
            x["channel_id"] == c for x in portal.get(f"/api/devices/{d}/channels").json().get("items", [])),
            30, f"the catalog of {device}")
        t0 = time.monotonic()
        r = await asyncio.to_thread(portal.post, f"/api/devices/{device}/channels/{channel}/live", {})
        t1 = time.monotonic()
        assert r.status_code == 201, r.text
        url = r.json()["flv_url"]
        assert media_base_ok(url), url
        if url.startswith("/"):
            url = portal.base + url
        tag = await asyncio.to_thread(first_video_tag, url)
        answered.append(t1 - t0)
        first.append(t1 - t0 + tag)
    return answered, first


def line(name: str, answered: list[float], first: list[float]) -> str:
    ms = 1000
    return (f"{name:<16} POST->201 median {statistics.median(answered) * ms:7.1f} ms  p95 {pct(answered, .95) * ms:7.1f} ms"
            f"   POST->first video tag median {statistics.median(first) * ms:7.1f} ms  p95 {pct(first, .95) * ms:7.1f} ms")


async def main() -> None:
    from gbsim import SimConfig, Simulator
    from tests.e2e.platform import STRONG_SIP_PASSWORD, PlatformProcess, free_port

    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=8)
    ap.add_argument("--database-url", default="postgresql+asyncpg://postgres@127.0.0.1/test")
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = ap.parse_args()
    n = args.requests

    class Node(PlatformProcess):
        def __init__(self, data_dir: Path, host: str = "127.0.0.1", **env: str) -> None:
            super().__init__(data_dir, GBOPS_HTTP_HOST=host, **env)
            self.host = host

        @property
        def base(self) -> str:
            return f"http://{self.host}:{self.http_port}"

    from sqlalchemy import make_url, text
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    # a database of its own next to the one named (dropped at the end)
    base = make_url(args.database_url)
    db_name = f"{base.database or 'test'}_bench_{secrets.token_hex(3)}"
    admin = create_async_engine(base, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{db_name}"'))
    database_url = base.set(database=db_name).render_as_string(hide_password=False)
    tmp = Path(tempfile.mkdtemp(prefix="gbops-bench-cluster-"))
    await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "gbops.cli", "keys", "init", "--dir",
                                             str(tmp / "secrets")], check=True, capture_output=True)
    prefix = f"gbops-bench:{secrets.token_hex(4)}:"
    common = {"GBOPS_SECRETS_DIR": str(tmp / "secrets"), "GBOPS_DATABASE_URL": database_url,
              "GBOPS_REDIS_URL": args.redis_url, "GBOPS_REDIS_PREFIX": prefix, "GBOPS_LIVE_IDLE_TIMEOUT": "1"}
    low = free_port()
    nodes = [Node(tmp / "core", GBOPS_ROLES="sip,portal,worker", GBOPS_NODE_ID="bench-core", **common)]
    nodes.append(Node(tmp / "media", "127.0.0.2", GBOPS_ROLES="media", GBOPS_NODE_ID="bench-media",
                      GBOPS_MEDIA_HOST="127.0.0.2", GBOPS_RTP_PORTS=f"{low}-{low + 4 * n}", **common))
    single = Node(tmp / "single", GBOPS_MEDIA_HOST="127.0.0.1", GBOPS_RTP_PORTS=f"{low + 4 * n + 2}-{low + 8 * n + 4}",
                  GBOPS_LIVE_IDLE_TIMEOUT="1")
    sims: list = []
    try:
        for node in (*nodes, single):
            node.start(timeout=60)
        results = {}
        for name, portal, ok in (("cluster", nodes[0], lambda u: u.startswith(nodes[1].base + "/flv/")),
                                 ("single process", single, lambda u: u.startswith("/flv/"))):
            sim = Simulator(SimConfig(server=("127.0.0.1", portal.sip_port), devices=n, channels=1,
                                      password=STRONG_SIP_PASSWORD, codec="h264", size="1280x720", register_rate=50,
                                      first_id="34020000001320000001" if name == "cluster" else "34020000001320100001"))
            sims.append(sim)
            await sim.start()
            assert await sim.wait_until(lambda s: s.registered == n, 30), sim.progress_line()
            results[name] = await measure(portal, ok, sim, list(range(n)))
        print(f"{n} new upstreams each (1280x720 H.264, watermarked viewer), same machine, same run")
        for name, (answered, first) in results.items():
            print(line(name, answered, first))
    finally:
        for sim in sims:
            await sim.stop()
        for node in (*nodes, single):
            if node.proc is not None:
                node.stop()
        import redis.asyncio as aioredis

        client = aioredis.from_url(args.redis_url)
        keys = [k async for k in client.scan_iter(match=prefix + "*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)'))
        await admin.dispose()


if __name__ == "__main__":
    asyncio.run(main())
