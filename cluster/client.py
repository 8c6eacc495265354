"""The one way the cluster opens a Redis connection pool, and the one way it names that Redis in logs."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis

__all__ = ["blocking_client", "connect", "redacted_url"]

COMMAND_TIMEOUT = 5.0
"""Seconds a plain command may take before the connection is deemed dead (explicit: redis-py's default
differs between versions)."""


def connect(url: str, **kwargs: Any) -> aioredis.Redis:
    """A pool on ``url`` (``redis://``, ``rediss://``, ``unix://``) returning bytes (payloads are decoded
    and validated by their readers, never trusted to be UTF-8), with health checks so that a connection
    silently dropped by a firewall is noticed before a command hangs on it, and bounded timeouts.

    The pool holds at most ``max_connections`` and a command waits (up to the command timeout) for a free
    one instead of failing when a burst needs more.  Blocking commands (``BLPOP`` longer than the command
    timeout) need :func:`blocking_client`."""
    options: dict[str, Any] = {
        "decode_responses": False,
        "health_check_interval": 15,
        "socket_connect_timeout": 5,
        "socket_timeout": COMMAND_TIMEOUT,
        "socket_keepalive": True,
        "retry_on_timeout": False,
    }
    options.update(kwargs)
    options.setdefault("max_connections", 100)
    options.setdefault("timeout", options["socket_timeout"] or COMMAND_TIMEOUT)  # waiting for a connection
    pool = aioredis.BlockingConnectionPool.from_url(url, **options)
    client = aioredis.Redis(connection_pool=pool)
    client.auto_close_connection_pool = True  # aclose() closes the pool it made
    return client


def blocking_client(redis: aioredis.Redis, max_connections: int = 66) -> aioredis.Redis:
    """A client on a pool of its own, same server and options as ``redis`` but without a read timeout:
    for ``BLPOP``/``BRPOP``, whose callers bound the wait themselves (``asyncio.timeout``) and their
    number (a blocked command holds its connection; beyond ``max_connections`` they wait for one).
    Close it with ``await client.connection_pool.disconnect()``."""
    pool = redis.connection_pool
    kwargs = dict(pool.connection_kwargs)
    kwargs["socket_timeout"] = None
    if "orig_socket_timeout" in kwargs:
        kwargs["orig_socket_timeout"] = None
    new_pool = aioredis.BlockingConnectionPool(connection_class=pool.connection_class,
                                               max_connections=max_connections, timeout=None, **kwargs)
    return aioredis.Redis(connection_pool=new_pool)


def redacted_url(url: str) -> str:
    """``url`` fit for a log line or a status page: any password replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid url>"
    if parts.password is None and "@" not in parts.netloc:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is not None:
        host = f"{host}:{port}"
    user = parts.username or ""
    netloc = f"{user}:***@{host}" if user else f":***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))  # the query may carry a password too
