"""Benchmark: scoped portal reads (device list, organisation tree) under concurrent clients, against the
same routes served from memory in the same run.

A fresh database (SQLite file in a temp dir, or a uniquely named PostgreSQL database dropped afterwards)
is filled with ``--devices`` devices of ``--channels`` channels each on a three-level organisation tree
(1 province, 10 cities, 100 districts; every device on a district, every 10th channel on a district of its
own), by Core ``executemany``.  A user whose one role grants ``device.read`` on two cities and five
districts of a third (about 25 % of the devices) plus ``--explicit`` channels elsewhere logs in through
``POST /api/auth/login``.

Two servers run side by side, each in its own process under uvicorn (uvloop, no access log, same
settings):

* ``portal``: ``ops_portal.app.create_app`` with a :class:`device_registry.service.Registry` on the
  database: every request resolves the token, loads the user's access (roles, permissions, scope) and
  queries the registry, as in production.
* ``memory``: a tiny FastAPI app with the same paths and response models, holding the devices, channels
  and nodes in Python lists loaded once; every request checks the token against a dict and filters the
  lists by the same :class:`ops_portal.access.Scope` (``Scope.allows``), then pages / counts / builds the
  tree.  Both answers are compared once before timing (they must be equal).

``--clients`` concurrent httpx clients (one keep-alive connection each) issue ``--requests`` requests per
route in total (``members=true``, whose answer is every device and channel in scope, megabytes, gets
``--member-requests`` from ``--member-clients``); the two servers take turns, ``--rounds`` times.  Prints p50/p90/p99 latency and requests per second
(medians over rounds), the ratio to the in-memory server, and the latency of one client alone (service
time without queueing).  Goal: p99 < 100 ms.

    python bench/portal.py [--devices 10000] [--channels 4] [--clients 100] [--requests 500]
                           [--member-requests 50] [--member-clients 10] [--rounds 1] [--db sqlite|postgresql]
                           [--pg-url postgresql+asyncpg://postgres@127.0.0.1/test]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Header, HTTPException, Query

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from device_registry.org import link_visible_tree  # noqa: E402
from gbcore.ids import ChannelRef  # noqa: E402
from ops_portal.access import Scope  # noqa: E402
from ops_portal.devices.schemas import (  # noqa: E402
    DeviceList,
    DeviceOut,
    OrgChannelOut,
    OrgDeviceOut,
    OrgNodeOut,
    OrgTreeOut,
    OrgUnassignedOut,
)

PASSWORD = "Bench-Portal-7319!"
USERNAME = "scoped"
CITIES = 10
DISTRICTS = 10  # per city
GRANTED_CITIES = (1, 2)  # city numbers (1-based) granted whole
GRANTED_DISTRICTS = 5  # districts of city 3 granted one by one

# ------------------------------------------------------------------------------------------ data


def device_id(i: int) -> str:
    return f"3402000000118{i:07d}"


def channel_id(i: int, k: int, per: int) -> str:
    return f"3402000000131{i * per + k:07d}"


def node_ids() -> tuple[int, list[int], list[list[int]]]:
    """(province, cities, districts per city) ids as inserted by :func:`populate`."""
    cities = [2 + c for c in range(CITIES)]
    districts = [[2 + CITIES + c * DISTRICTS + d for d in range(DISTRICTS)] for c in range(CITIES)]
    return 1, cities, districts


async def populate(url: str, n_devices: int, per: int, explicit: int) -> dict[str, Any]:
    """Schema (migrations), nodes, devices, channels, the scoped user and its role.  Returns the role's grants."""
    from sqlalchemy import insert

    from device_registry.models import Channel, Device, OrgNode
    from gbcore.db import make_engine, make_sessionmaker
    from gbops.migrate import migrate
    from ops_portal.models import Role, RoleChannel, RoleOrgNode, RolePermission, UserRole
    from ops_portal.users import create_user

    rnd = random.Random(28181)
    now = datetime.now(UTC).replace(microsecond=0)
    engine = make_engine(url)
    try:
        await migrate(engine)
        province, cities, districts = node_ids()
        nodes = [{"id": province, "code": "61", "name": "陕西省", "kind": "civil", "parent_id": None}]
        for c, city in enumerate(cities):
            nodes.append({"id": city, "code": f"61{c + 1:02d}", "name": f"市 {c + 1}", "kind": "civil",
                          "parent_id": province})
            for d, district in enumerate(districts[c]):
                nodes.append({"id": district, "code": f"61{c + 1:02d}{d + 1:02d}", "name": f"区县 {c + 1}-{d + 1}",
                              "kind": "civil", "parent_id": city})
        for row in nodes:
            row.update(created_at=now, updated_at=now)
        all_districts = [d for ds in districts for d in ds]
        devices, channels = [], []
        for i in range(n_devices):
            online = rnd.random() < 0.85
            node = all_districts[i % len(all_districts)]
            devices.append({
                "device_id": device_id(i), "name": f"路口 {i} 号 NVR", "manufacturer": "Hikvision",
                "model": "DS-7816N", "firmware": "V4.1.0", "device_type": "NVR", "transport": "udp",
                "remote_addr": f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}:5060",
                "contact": f"<sip:{device_id(i)}@10.0.0.1:5060>", "user_agent": "IP Camera", "charset": "GB2312",
                "registered_at": now - timedelta(hours=1), "register_expires_at": now + timedelta(hours=1),
                "keepalive_interval": 60, "last_seen": now if online else now - timedelta(hours=2),
                "online": online, "offline_reason": None if online else "keepalive_timeout", "channel_count": per,
                "catalog_synced_at": now, "catalog_state": "complete", "org_node_id": node,
                "created_at": now, "updated_at": now,
            })
            for k in range(per):
                j = i * per + k
                own = all_districts[(j * 7) % len(all_districts)] if j % 10 == 0 else None
                ch_online = online and rnd.random() < 0.95
                channels.append({
                    "device_id": device_id(i), "channel_id": channel_id(i, k, per), "name": f"路口 {i} 摄像机 {k + 1}",
                    "manufacturer": "Hikvision", "model": "DS-2CD3T46", "owner": "Owner", "civil_code": "610102",
                    "address": f"西安市 {i} 号路口", "parental": 0, "parent_id": device_id(i), "register_way": 1,
                    "secrecy": 0, "status": "ON" if ch_online else "OFF", "ptz_type": 1 + j % 3,
                    "longitude": 108.9 + rnd.random() / 10, "latitude": 34.2 + rnd.random() / 10,
                    "online": ch_online, "removed": False, "first_seen": now, "updated_at": now, "org_node_id": own,
                })
        granted_nodes = [cities[c - 1] for c in GRANTED_CITIES] + districts[2][:GRANTED_DISTRICTS]
        # explicit channels: spread over the cities that are not granted
        outside = [(c["device_id"], c["channel_id"]) for c in channels
                   if c["org_node_id"] is None and int(c["device_id"][-7:]) % len(all_districts) >= 3 * DISTRICTS]
        granted_channels = sorted(rnd.sample(outside, min(explicit, len(outside))))
        t = time.perf_counter()
        async with engine.begin() as conn:
            await conn.execute(insert(OrgNode.__table__), nodes)
            for start in range(0, len(devices), 5000):
                await conn.execute(insert(Device.__table__), devices[start:start + 5000])
            for start in range(0, len(channels), 5000):
                await conn.execute(insert(Channel.__table__), channels[start:start + 5000])
        if url.startswith("postgresql"):
            from sqlalchemy import text

            async with engine.begin() as conn:  # the id sequence follows the explicit ids; fresh statistics
                await conn.execute(text("SELECT setval('org_nodes_id_seq', (SELECT max(id) FROM org_nodes))"))
                await conn.execute(text("ANALYZE"))
        else:
            from sqlalchemy import text

            async with engine.begin() as conn:
                await conn.execute(text("ANALYZE"))
        sessionmaker = make_sessionmaker(engine)
        async with sessionmaker() as session:
            user = await create_user(session, USERNAME, PASSWORD)
            role = Role(name="bench:scoped", full_scope=False)
            session.add(role)
            await session.flush()
            session.add(RolePermission(role_id=role.id, permission="device.read"))
            session.add_all(RoleOrgNode(role_id=role.id, org_node_id=n) for n in granted_nodes)
            session.add_all(RoleChannel(role_id=role.id, device_id=d, channel_id=c) for d, c in granted_channels)
            session.add(UserRole(user_id=user.id, role_id=role.id))
            await session.commit()
        print(f"populated {len(nodes)} nodes, {len(devices)} devices, {len(channels)} channels in "
              f"{time.perf_counter() - t:.1f} s", flush=True)
        return {"nodes": granted_nodes, "channels": granted_channels}
    finally:
        await engine.dispose()


def write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value))


async def dump_memory(url: str, path: Path) -> None:
    """What the in-memory server serves: every device (as the API shows it), channel and node."""
    from sqlalchemy import select

    from device_registry.models import Channel, Device, OrgNode
    from gbcore.db import make_engine, make_sessionmaker

    engine = make_engine(url)
    try:
        async with make_sessionmaker(engine)() as session:
            devices = [DeviceOut.model_validate(d).model_dump(mode="json")
                       for d in await session.scalars(select(Device).order_by(Device.device_id))]
            channels = [list(r) for r in (await session.execute(
                select(Channel.channel_id, Channel.device_id, Channel.name, Channel.online, Channel.org_node_id,
                       Channel.longitude, Channel.latitude).where(Channel.removed.is_(False))
                .order_by(Channel.device_id, Channel.channel_id))).all()]
            nodes = [list(r) for r in (await session.execute(
                select(OrgNode.id, OrgNode.parent_id, OrgNode.name, OrgNode.kind, OrgNode.code).order_by(OrgNode.id)
            )).all()]
    finally:
        await engine.dispose()
    write_json(path, {"devices": devices, "channels": channels, "nodes": nodes})


# ------------------------------------------------------------------------------------------ servers
def memory_app(data_path: Path, token: str, scope_path: Path) -> Any:
    """The in-memory reference: same paths, same response models, the same scope rule, no database."""
    data = json.loads(data_path.read_text())
    grants = json.loads(scope_path.read_text())
    scopes = {token: Scope(False, frozenset(grants["expanded_nodes"]),
                           frozenset(ChannelRef(d, c) for d, c in grants["channels"]))}
    devices = [DeviceOut.model_validate(d) for d in data["devices"]]
    dev_node = {d.device_id: d.org_node_id for d in devices}
    # (channel id, device id, name, online, own node, lon, lat, device's node)
    channels = [tuple(c) + (dev_node[c[1]],) for c in data["channels"]]
    node_rows = [tuple(n) for n in data["nodes"]]
    app = FastAPI()

    def scope_of(authorization: str | None) -> Scope:
        scope = scopes.get((authorization or "").removeprefix("Bearer "))
        if scope is None:
            raise HTTPException(401)
        return scope

    def in_scope(scope: Scope) -> tuple[list[tuple], set[str]]:
        chans = [c for c in channels if scope.allows(ChannelRef(c[1], c[0]), c[4], c[7])]
        return chans, {c[1] for c in chans}

    @app.get("/api/devices", response_model=DeviceList)
    async def list_devices(authorization: Annotated[str | None, Header()] = None,
                           offset: Annotated[int, Query(ge=0)] = 0,
                           limit: Annotated[int, Query(ge=1, le=500)] = 50) -> DeviceList:
        scope = scope_of(authorization)
        _, with_channel = in_scope(scope)
        nodes = scope.org_node_ids
        visible = [d for d in devices if d.org_node_id in nodes or d.device_id in with_channel]
        return DeviceList(total=len(visible), offset=offset, limit=limit, items=visible[offset:offset + limit])

    @app.get("/api/org/tree", response_model=OrgTreeOut)
    async def org_tree(authorization: Annotated[str | None, Header()] = None, members: bool = False) -> OrgTreeOut:
        scope = scope_of(authorization)
        chans, with_channel = in_scope(scope)
        vis_devices = [d for d in devices if d.org_node_id in scope.org_node_ids or d.device_id in with_channel]
        nodes = {nid: {"id": nid, "parent_id": parent, "name": name, "kind": kind, "code": code, "children": [],
                       "in_scope": nid in scope.org_node_ids, "devices": 0, "channels": 0, "channels_online": 0,
                       "total_devices": 0, "total_channels": 0, "total_channels_online": 0}
                 for nid, parent, name, kind, code in node_rows}
        unassigned = {"devices": 0, "channels": 0, "channels_online": 0}
        for c in chans:
            nid = c[4] if c[4] is not None else c[7]
            target = nodes.get(nid) if nid is not None else None
            target = target if target is not None else unassigned
            target["channels"] += 1
            target["channels_online"] += bool(c[3])
        for d in vis_devices:
            target = nodes.get(d.org_node_id) if d.org_node_id is not None else None
            (target if target is not None else unassigned)["devices"] += 1
        visible = {n for n in nodes if nodes[n]["in_scope"]}
        children = link_visible_tree(nodes, visible, [n for n in nodes if nodes[n]["channels"] or nodes[n]["devices"]])

        def total(n: int) -> None:
            node = nodes[n]
            node["total_devices"] += node["devices"]
            node["total_channels"] += node["channels"]
            node["total_channels_online"] += node["channels_online"]
            for k in children.get(n, []):
                total(k)
                for key in ("total_devices", "total_channels", "total_channels_online"):
                    node[key] += nodes[k][key]

        for root in children.get(None, []):
            total(root)
        out_devices = out_channels = None
        if members:
            def wanted(nid: int | None) -> bool:
                return nid in visible or nid is None or nid not in nodes

            out_devices = [OrgDeviceOut(device_id=d.device_id, name=d.name, online=d.online, org_node_id=d.org_node_id,
                                        channel_count=d.channel_count) for d in vis_devices if wanted(d.org_node_id)]
            out_channels = [OrgChannelOut(channel_id=c[0], device_id=c[1], name=c[2], online=c[3],
                                          org_node_id=c[4] if c[4] is not None else c[7], longitude=c[5], latitude=c[6])
                            for c in chans if wanted(c[4] if c[4] is not None else c[7])]
        return OrgTreeOut(nodes=[OrgNodeOut(**nodes[n]) for n in sorted(visible)],
                          unassigned=OrgUnassignedOut(**unassigned), devices=out_devices, channels=out_channels)

    return app


def serve(args: argparse.Namespace) -> None:
    """Child process: one server on ``args.port`` until killed."""
    import uvicorn
    import uvloop

    async def main() -> None:
        engine = None
        if args.serve == "portal":
            from device_registry.service import Registry
            from gbcore.db import make_engine, make_sessionmaker
            from gbcore.settings import Settings
            from ops_portal.app import create_app

            engine = make_engine(args.url)
            sessionmaker = make_sessionmaker(engine)
            settings = Settings(data_dir=Path(args.work) / "data")
            app = create_app(settings=settings, sessionmaker=sessionmaker, registry=Registry(sessionmaker))
        else:
            work = Path(args.work)
            app = memory_app(work / "memory.json", (work / "token").read_text(), work / "scope.json")
        config = uvicorn.Config(app, host="127.0.0.1", port=args.port, loop="uvloop", log_config=None,
                                log_level="warning", access_log=False, lifespan="off", backlog=2048)
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.02)
        print("ready", flush=True)
        await task
        if engine is not None:
            await engine.dispose()

    uvloop.run(main())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(kind: str, url: str, work: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind, "--url", url, "--work", str(work), "--port", str(port)],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )
    line = proc.stdout.readline() if proc.stdout else ""
    if line.strip() != "ready":
        proc.kill()
        raise SystemExit(f"{kind} server did not start (rc {proc.wait()})")
    return proc, f"http://127.0.0.1:{port}"


# ------------------------------------------------------------------------------------------ clients
async def load(base: str, path: str, token: str, clients: int, total: int) -> dict[str, float]:
    """``clients`` concurrent clients, ``total`` requests in all: latency percentiles (ms) and requests/s."""
    import httpx

    headers = {"Authorization": f"Bearer {token}"}
    latencies: list[float] = []
    errors: list[int] = []
    per = max(1, total // clients)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=120) as client:
        await asyncio.gather(*(client.get(path) for _ in range(min(clients, 20))))  # open connections, warm up

        async def worker() -> None:
            for _ in range(per):
                t = time.perf_counter()
                r = await client.get(path)
                latencies.append(time.perf_counter() - t)
                if r.status_code != 200:
                    errors.append(r.status_code)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - t0
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000

    return {"p50": pct(50), "p90": pct(90), "p99": pct(99), "rps": len(latencies) / wall, "errors": len(errors)}


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


# ------------------------------------------------------------------------------------------ driver
async def pg_database(base_url: str) -> tuple[str, Any]:
    from sqlalchemy import make_url, text
    from sqlalchemy.ext.asyncio import create_async_engine

    base = make_url(base_url)
    name = f"gbops_bench_portal_{os.getpid()}"
    admin = create_async_engine(base, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        await conn.execute(text(f'CREATE DATABASE "{name}"'))

    async def drop() -> None:
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()

    return base.set(database=name).render_as_string(hide_password=False), drop


async def login(base: str) -> str:
    import httpx

    async with httpx.AsyncClient(base_url=base) as client:
        r = await client.post("/api/auth/login", json={"username": USERNAME, "password": PASSWORD})
        r.raise_for_status()
        return r.json()["access_token"]


async def expanded_scope(url: str, nodes: list[int]) -> list[int]:
    from gbcore.db import make_engine, make_sessionmaker
    from ops_portal.access import expand_org_nodes

    engine = make_engine(url)
    try:
        async with make_sessionmaker(engine)() as session:
            return sorted(await expand_org_nodes(session, nodes))
    finally:
        await engine.dispose()


async def same_answers(portal: str, memory: str, token: str, paths: list[str]) -> dict[str, int]:
    """Both servers answer every path identically; returns the portal's response sizes in bytes."""
    import httpx

    sizes = {}
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(headers=headers, timeout=60) as client:
        for path in paths:
            a, b = await client.get(portal + path), await client.get(memory + path)
            if a.status_code != 200 or a.json() != b.json():
                if os.environ.get("BENCH_DEBUG"):
                    write_json(Path("/tmp/bench_portal_a.json"), a.json())
                    write_json(Path("/tmp/bench_portal_b.json"), b.json())
                raise SystemExit(f"{path}: the portal ({a.status_code}) and the in-memory server disagree")
            sizes[path] = len(a.content)
    return sizes


async def run(args: argparse.Namespace, work: Path) -> None:
    drop = None
    if args.db == "sqlite":
        url = f"sqlite+aiosqlite:///{work / 'bench.db'}"
    else:
        url, drop = await pg_database(args.pg_url)
    procs: list[subprocess.Popen] = []
    try:
        grants = await populate(url, args.devices, args.channels, args.explicit)
        grants["expanded_nodes"] = await expanded_scope(url, grants["nodes"])
        write_json(work / "scope.json", grants)
        await dump_memory(url, work / "memory.json")
        portal_proc, portal = start_server("portal", url, work)
        procs.append(portal_proc)
        token = await login(portal)
        (work / "token").write_text(token)
        memory_proc, memory = start_server("memory", url, work)
        procs.append(memory_proc)

        routes = [("/api/devices", args.requests, args.clients), ("/api/org/tree", args.requests, args.clients),
                  ("/api/org/tree?members=true", args.member_requests, args.member_clients)]
        routes = [r for r in routes if r[1] > 0]
        sizes = await same_answers(portal, memory, token, [r[0] for r in routes])
        async with __import__("httpx").AsyncClient(headers={"Authorization": f"Bearer {token}"}) as c:
            page = (await c.get(portal + "/api/devices")).json()
            tree = (await c.get(portal + "/api/org/tree?members=true")).json()
        print(f"{args.db}: {args.devices} devices x {args.channels} channels; scoped user: "
              f"{len(grants['nodes'])} granted nodes ({len(grants['expanded_nodes'])} with descendants) + "
              f"{len(grants['channels'])} explicit channels -> {page['total']} devices, "
              f"{len(tree['channels'])} channels in scope; /api/devices default page = {page['limit']} items",
              flush=True)
        results: dict[tuple[str, str, int], list[dict[str, float]]] = {}
        for _ in range(args.rounds):
            for path, n, many in routes:
                for name, base in (("portal", portal), ("memory", memory)):
                    for clients, count in ((many, n), (1, max(10, n // 20))):
                        results.setdefault((path, name, clients), []).append(
                            await load(base, path, token, clients, count))
        print(f"\nmedians over {args.rounds} round(s); latency in ms; ratio = portal / in-memory "
              f"(p50, and in-memory rps / portal rps)")
        print(f"{'route':<28}{'clients':>8}{'server':>8}{'p50':>9}{'p90':>9}{'p99':>9}{'req/s':>9}"
              f"{'x p50':>8}{'x rps':>8}{'errors':>8}  bytes")
        summary = []
        worst_p50 = None  # the worst route's p50 ratio at its many-client load (goal 6: within 2x)
        for path, _, many in routes:
            for clients in (many, 1):
                p = median_of(results[(path, "portal", clients)])
                m = median_of(results[(path, "memory", clients)])
                for name, r in (("portal", p), ("memory", m)):
                    extra = (f"{p['p50'] / m['p50']:>8.1f}{m['rps'] / p['rps']:>8.1f}" if name == "portal"
                             else " " * 16)
                    errors = sum(run["errors"] for run in results[(path, name, clients)])
                    print(f"{path:<28}{clients:>8}{name:>8}{r['p50']:>9.1f}{r['p90']:>9.1f}{r['p99']:>9.1f}"
                          f"{r['rps']:>9.0f}{extra}{errors:>8}  {sizes[path] if name == 'portal' else ''}")
                if clients == many:
                    ratio = p["p50"] / m["p50"] if m["p50"] else None
                    if ratio is not None and (worst_p50 is None or ratio > worst_p50[0]):
                        worst_p50 = (ratio, p["p50"], m["p50"], path, many)
                    summary.append(f"{path} ({many} clients) p99 {p['p99']:.0f} ms ({'ok' if p['p99'] < 100 else 'MISSES'} < 100; "
                                   f"in-memory {m['p99']:.0f} ms; p50 x{p['p50'] / m['p50']:.1f})")
        print(f"\nsummary ({args.db}): " + "; ".join(summary))
        if worst_p50 is not None:
            from results import record

            ratio, p50, m50, path, many = worst_p50
            record("portal", f"p50_ratio_{many}", p50, unit="ms (p50, worst route)", reference=m50,
                   note=f"{args.db}; worst route {path}; reference: the in-memory server of the same routes")
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        if drop is not None:
            await drop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--channels", type=int, default=4, help="channels per device")
    parser.add_argument("--explicit", type=int, default=200, help="channels granted one by one")
    parser.add_argument("--clients", type=int, default=100, help="concurrent clients")
    parser.add_argument("--requests", type=int, default=500, help="requests per route and server, per round")
    parser.add_argument("--member-requests", type=int, default=50,
                        help="requests for /api/org/tree?members=true (0: skip)")
    parser.add_argument("--member-clients", type=int, default=10,
                        help="concurrent clients for members=true (its answer is megabytes)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--pg-url", default=os.environ.get("GBOPS_BENCH_PG_URL",
                                                           "postgresql+asyncpg://postgres@127.0.0.1/test"))
    # child process (server)
    parser.add_argument("--serve", choices=["portal", "memory"], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args)
        return
    import uvloop

    with tempfile.TemporaryDirectory(prefix="gbops-bench-portal-") as tmp:
        uvloop.run(run(args, Path(tmp)))


if __name__ == "__main__":
    main()
