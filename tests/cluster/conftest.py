"""Fixtures of the cluster tests: every behaviour test runs on Redis and on the in-memory equivalents."""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from cluster.bus import LocalCommandBus, LocalNetwork, RedisCommandBus
from cluster.client import connect
from cluster.keys import RedisKeys
from cluster.lease import LeaseTable, LocalLeases, RedisLeases
from cluster.nodes import LocalNodeDirectory, RedisNodeDirectory
from tests.conftest import need, redis_test_url


async def eventually(check: Callable[[], Any], timeout: float = 5.0, interval: float = 0.02) -> Any:
    """Wait until ``check()`` (sync or async) returns something truthy; return it (fail at the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


@dataclass
class Backend:
    """Factories for one kind of cluster: ``leases(owner)``, ``directory()``, ``bus(node_id)`` (several
    calls play several nodes sharing one Redis prefix / one in-memory table)."""

    kind: str
    redis: Any = None
    keys: RedisKeys | None = None
    table: LeaseTable = field(default_factory=LeaseTable)
    network: LocalNetwork = field(default_factory=LocalNetwork)
    local_directory: LocalNodeDirectory = field(default_factory=LocalNodeDirectory)
    buses: list[Any] = field(default_factory=list)

    def leases(self, owner: str):
        if self.kind == "redis":
            return RedisLeases(self.redis, self.keys, owner)
        return LocalLeases(owner, self.table)

    def directory(self):
        if self.kind == "redis":
            return RedisNodeDirectory(self.redis, self.keys)
        return self.local_directory

    def bus(self, node_id: str, **kwargs: Any):
        if self.kind == "redis":
            bus: Any = RedisCommandBus(self.redis, self.keys, node_id, **kwargs)
        else:
            kwargs.pop("liveness_ttl", None)
            kwargs.pop("poll", None)
            kwargs.pop("max_calls", None)
            bus = LocalCommandBus(node_id, self.network, **kwargs)
        self.buses.append(bus)
        return bus


@pytest.fixture
async def redis_client(redis_url: str):
    client = connect(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def keys(redis_prefix: str) -> RedisKeys:
    return RedisKeys(redis_prefix)


@pytest.fixture(params=["redis", "local"])
async def backend(request: pytest.FixtureRequest):
    """Redis (own client, own key prefix deleted afterwards; the ``redis_url`` fixture's rules) or memory."""
    client = None
    prefix = f"gbops-test:{os.getpid()}:{secrets.token_hex(4)}:"
    if request.param == "redis":
        url = redis_test_url()
        client = connect(url)
        try:
            await client.ping()
        except Exception as exc:
            await client.aclose()
            need(False, f"Redis not usable at {url}: {type(exc).__name__}: {exc}")
        b = Backend("redis", redis=client, keys=RedisKeys(prefix))
    else:
        b = Backend("local")
    try:
        yield b
    finally:
        for bus in b.buses:
            await bus.close()
        if client is not None:
            found = [k async for k in client.scan_iter(match=prefix + "*", count=1000)]
            if found:
                await client.delete(*found)
            await client.aclose()


Factory = Callable[[], Awaitable[Any]]


class TcpProxy:
    """A TCP relay to Redis that a test can cut (listener closed, every relayed connection dropped): the
    node behind it loses Redis while Redis itself, and every other client, carries on."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.server: asyncio.base_events.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.listen_port = 0
        self.path = "/0"
        self.frozen = asyncio.Event()  # set: bytes are swallowed, connections stay open (a black hole)

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.listen_port = self.server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        except OSError:
            writer.close()
            return
        self.writers |= {writer, up_writer}

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    if self.frozen.is_set():
                        continue
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    async def cut(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        for writer in list(self.writers):
            writer.transport.abort()
        self.writers.clear()

    def freeze(self) -> None:
        self.frozen.set()

    def url(self) -> str:
        return f"redis://127.0.0.1:{self.listen_port}{self.path}"


@pytest.fixture
async def redis_proxy(redis_url: str):
    from urllib.parse import urlsplit

    parts = urlsplit(redis_url)
    need(parts.scheme == "redis" and parts.hostname is not None, "the proxy relays plain redis:// only")
    proxy = TcpProxy(parts.hostname, parts.port or 6379)
    proxy.path = parts.path or "/0"
    await proxy.start()
    yield proxy
    await proxy.cut()
