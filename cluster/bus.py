"""Commands between nodes (request/reply) and broadcasts (pub/sub).

Request/reply on Redis: every node pops its own list ``rpc:<node_id>`` (``BRPOP`` on a connection of
its own: callers ``LPUSH``, so requests are served first come, first served); a caller pushes ``{"id", "method", "payload", "reply_to", "deadline"}`` there and pops
``reply:<id>`` until its timeout.  ``reply_to`` names the calling node (for logs only: the reply key is
derived from the request id, so a request cannot make a node write to an arbitrary key).  ``deadline`` is
Unix time: a request still queued after it is dropped unanswered (the caller has given up), which assumes
the nodes' clocks are synchronised (NTP) to well under the timeouts used.

A running bus keeps the key ``bus:<node_id>`` alive (PX ttl); a call to a node without that key fails at
once with :class:`NodeUnavailable` instead of waiting for the timeout, so the bus needs no node directory.

Everything popped from Redis is hostile until validated: size-limited, JSON, the expected shape; what does
not pass is logged and dropped and never stops the loop.  A handler raising :class:`RemoteError` reaches
the caller as the same typed error; any other exception reaches it as ``RemoteError("internal", message)``
(no traceback leaves the node; it is logged there).  Handlers run concurrently, at most ``concurrency`` at
a time (further requests wait in Redis).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from redis.exceptions import RedisError

from gbcore.log import get_logger
from gbcore.periodic import Backoff, PeriodicTask, backoff_delay

from .client import COMMAND_TIMEOUT, blocking_client
from .keys import RedisKeys, check_part

__all__ = [
    "MAX_MESSAGE", "BusError", "CommandBus", "CommandTimeout", "Handler", "LocalCommandBus", "LocalNetwork",
    "NodeUnavailable", "RedisCommandBus", "RemoteError",
]

_log = get_logger("gbops.cluster.bus")

MAX_MESSAGE = 1024 * 1024
"""Bytes of one encoded request, reply or broadcast."""

_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
_METHOD_RE = re.compile(r"[A-Za-z0-9._:/-]{1,128}")
_CODE_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
_MAX_ERROR_MESSAGE = 2000

Handler = Callable[[dict], Awaitable[dict]]


class BusError(Exception):
    """A command failed; ``code`` is machine-readable, ``message`` for people."""

    default_code = "bus_error"

    def __init__(self, code: str | None = None, message: str = "") -> None:
        self.code = code or self.default_code
        self.message = message
        super().__init__(f"{self.code}: {message}" if message else self.code)


class NodeUnavailable(BusError):
    """The target node is not running a bus (stopped, dead, unknown)."""

    default_code = "node_unavailable"


class CommandTimeout(BusError):
    """No reply before the timeout (the command may or may not have run)."""

    default_code = "timeout"


class RemoteError(BusError):
    """The handler on the other node failed; ``code`` names the typed error (``device_offline``, ...)."""

    default_code = "internal"


class CommandBus(Protocol):
    node_id: str

    def register(self, method: str, handler: Handler) -> None: ...
    async def call(self, node_id: str, method: str, payload: dict, *, timeout: float) -> dict: ...
    async def publish(self, topic: str, payload: dict) -> None: ...
    def subscribe(self, topic: str, callback: Callable[[dict], None]) -> None: ...
    async def start(self) -> None: ...
    async def close(self) -> None: ...


# ---------------------------------------------------------------------------------------------- shared
def _encode(obj: Any, what: str) -> bytes:
    try:
        data = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} is not JSON-able: {exc}") from None
    if len(data) > MAX_MESSAGE:
        raise ValueError(f"{what} too large: {len(data)} bytes > {MAX_MESSAGE}")
    return data


def _decode(raw: Any, what: str) -> dict:
    """A JSON object from Redis, or ValueError."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    if not isinstance(raw, (bytes, bytearray)):
        raise ValueError(f"{what}: not bytes")
    if len(raw) > MAX_MESSAGE:
        raise ValueError(f"{what}: {len(raw)} bytes > {MAX_MESSAGE}")
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"{what}: not JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{what}: not a JSON object")
    return obj


def _check_payload(payload: Any, what: str) -> dict:
    if not isinstance(payload, dict):
        raise ValueError(f"{what} must be a dict, not {type(payload).__name__}")
    return payload


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_ERROR_MESSAGE else text[:_MAX_ERROR_MESSAGE] + "..."


def _check_method(method: str) -> str:
    if not isinstance(method, str) or _METHOD_RE.fullmatch(method) is None:
        raise ValueError(f"invalid method name {method!r}")
    return method


def _check_timeout(timeout: float) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout) \
            or timeout <= 0:
        raise ValueError(f"timeout must be > 0 seconds, not {timeout!r}")
    return float(timeout)


async def _run_handler(handlers: dict[str, Handler], node_id: str, method: str, payload: dict) -> dict:
    """Run the handler of ``method`` and return the reply envelope (``ok`` + ``result`` or error)."""
    handler = handlers.get(method)
    if handler is None:
        return {"ok": False, "code": "unknown_method", "message": f"未知命令 / unknown method: {method}"}
    try:
        result = await handler(payload)
        if not isinstance(result, dict):
            raise TypeError(f"handler of {method} returned {type(result).__name__}, not a dict")
        _encode(result, "reply")  # JSON-able and small enough: else an internal error, here
    except RemoteError as exc:
        return {"ok": False, "code": exc.code, "message": _clip(exc.message)}
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        _log.exception("cluster.handler_failed", node_id=node_id, method=method)
        return {"ok": False, "code": "internal", "message": _clip(f"{type(exc).__name__}: {exc}")}
    return {"ok": True, "result": result}


def _reply_result(envelope: Any) -> dict:
    """The caller's side: the result, or the typed error raised."""
    if not isinstance(envelope, dict):
        raise BusError("bad_reply", "reply is not an object")
    if envelope.get("ok") is True:
        result = envelope.get("result")
        if not isinstance(result, dict):
            raise BusError("bad_reply", "reply has no result object")
        return result
    code = envelope.get("code")
    message = envelope.get("message", "")
    if not isinstance(code, str) or _CODE_RE.fullmatch(code) is None:
        code = "internal"
    if not isinstance(message, str):
        message = ""
    raise RemoteError(code, _clip(message))


def _dispatch(callbacks: list[Callable[[dict], None]], topic: str, payload: dict) -> None:
    for callback in list(callbacks):
        try:
            callback(payload)
        except Exception:
            _log.exception("cluster.subscriber_failed", topic=topic)


class _RateLog:
    """Log hostile input at most once per ``every`` seconds (a flood must not flood the log)."""

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self.last = -math.inf
        self.suppressed = 0

    def __call__(self, event: str, **kv: Any) -> None:
        now = time.monotonic()
        if now - self.last < self.every:
            self.suppressed += 1
            return
        self.last = now
        _log.warning(event, suppressed=self.suppressed, **kv)
        self.suppressed = 0


async def _disconnect(client: Any) -> None:
    try:
        await client.connection_pool.disconnect()
    except Exception:
        pass


async def _finish(tasks: set[asyncio.Task[Any]], grace: float) -> None:
    """Let ``tasks`` end within ``grace`` seconds, then cancel what is left and wait (bounded: redis-py
    may swallow a cancellation that lands while it connects)."""
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=grace)
    for task in pending:
        task.cancel()
    if pending:
        _, stuck = await asyncio.wait(pending, timeout=2.0)
        if stuck:
            _log.warning("cluster.bus_tasks_stuck", count=len(stuck))


# ---------------------------------------------------------------------------------------------- Redis
class _Registry:
    """What both buses keep alike: the command handlers and the topic subscribers of this node."""

    handlers: dict[str, Handler]
    subscriptions: dict[str, list[Callable[[dict], None]]]

    def register(self, method: str, handler: Handler) -> None:
        self.handlers[_check_method(method)] = handler

    def subscribe(self, topic: str, callback: Callable[[dict], None]) -> None:
        check_part(topic)
        self.subscriptions.setdefault(topic, []).append(callback)


class RedisCommandBus(_Registry):
    """The bus on Redis (see the module docstring).  ``liveness_ttl``: how long ``bus:<node_id>`` outlives
    a node that died without closing its bus (refreshed every third of it)."""

    def __init__(self, redis: Any, keys: RedisKeys, node_id: str, *, liveness_ttl: float = 10.0,
                 concurrency: int = 64, max_calls: int = 64, poll: float = 1.0) -> None:
        if _ID_RE.fullmatch(node_id) is None:
            raise ValueError(f"invalid node id {node_id!r}")
        self.redis = redis
        # BLPOP/BRPOP hold a connection each while they wait: at most max_calls replies awaited at once (more
        # calls queue here), plus the serving BRPOP; no read timeout, bounded by us
        self.blocking = blocking_client(redis, max_connections=max_calls + 2)
        self._calls = asyncio.Semaphore(max_calls)
        self.keys = keys
        self.node_id = node_id
        self.liveness_ttl = liveness_ttl
        self.poll = poll  # BLPOP timeout: how long the loop may sit before it looks at its state again
        self.concurrency = concurrency
        self.handlers: dict[str, Handler] = {}
        self.subscriptions: dict[str, list[Callable[[dict], None]]] = {}
        self.handled = 0
        self.dropped = 0
        self._sem = asyncio.Semaphore(concurrency)
        self._inflight: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._sub_task: asyncio.Task[None] | None = None
        self._conn: Any = None
        self._pubsub: Any = None
        self._subscribed: set[str] = set()
        self._bad = _RateLog()
        self._alive = PeriodicTask(
            f"cluster.bus-alive:{node_id}", self._refresh_alive, interval=liveness_ttl / 3,
            backoff=Backoff(base=min(0.5, liveness_ttl / 3), cap=liveness_ttl / 3, jitter=0.3), logger=_log,
            failure_event="cluster.bus_alive_failed",
        )
        self._started = False
        self._stopping = False
        self._wake = b"\x00wake:" + secrets.token_hex(8).encode()  # close() pushes it to end a BRPOP at once

    # -------------------------------------------------------------------- the API
    async def publish(self, topic: str, payload: dict) -> None:
        """Broadcast to the subscribers of ``topic`` on every node (this one included); best effort: a
        Redis failure is logged, not raised (a bad payload is a bug and raises ValueError)."""
        data = _encode(_check_payload(payload, "payload"), "broadcast")
        try:
            await self.redis.publish(self.keys("topic", topic), data)
        except Exception as exc:
            _log.warning("cluster.publish_failed", topic=topic, error=f"{type(exc).__name__}: {exc}")

    async def call(self, node_id: str, method: str, payload: dict, *, timeout: float) -> dict:
        """Run ``method`` on node ``node_id`` and return its result; raises :class:`NodeUnavailable`,
        :class:`CommandTimeout`, :class:`RemoteError` (or ValueError for a bad argument)."""
        timeout = _check_timeout(timeout)
        _check_method(method)
        if not isinstance(node_id, str) or _ID_RE.fullmatch(node_id) is None:
            raise NodeUnavailable(message=f"节点编号无效 / invalid node id: {node_id!r}"[:200])
        payload = _check_payload(payload, "payload")
        started = time.monotonic()
        async with self._calls:
            left = timeout - (time.monotonic() - started)
            if left <= 0:
                raise CommandTimeout(message=f"命令超时 / too many calls in progress to send {method} in time")
            return await self._call(node_id, method, payload, left)

    async def _call(self, node_id: str, method: str, payload: dict, timeout: float) -> dict:
        request_id = secrets.token_hex(16)
        data = _encode({
            "id": request_id, "method": method, "payload": payload,
            "reply_to": self.node_id, "deadline": time.time() + timeout,
        }, "request")
        queue = self.keys("rpc", node_id)
        reply_key = self.keys("reply", request_id)
        try:
            if not await self.redis.exists(self.keys("bus", node_id)):
                raise NodeUnavailable(message=f"节点不在线 / node not available: {node_id}")
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.lpush(queue, data)
                # a list nobody pops (its node died) must not stay in Redis for ever
                pipe.pexpire(queue, max(1, math.ceil((timeout + self.liveness_ttl) * 1000)))
                await pipe.execute()
            try:
                async with asyncio.timeout(timeout + COMMAND_TIMEOUT):  # a Redis that stops answering
                    item = await self.blocking.blpop([reply_key], timeout=timeout)
            except TimeoutError:
                item = None
        except (RedisError, OSError) as exc:
            raise BusError("bus_unavailable", f"集群总线不可用 / Redis unavailable: {type(exc).__name__}") from exc
        if item is None:
            raise CommandTimeout(message=f"命令超时 / no reply from {node_id} to {method} within {timeout:g} s")
        try:
            envelope = _decode(item[1], "reply")
        except ValueError as exc:
            raise BusError("bad_reply", str(exc)) from None
        return _reply_result(envelope)

    async def start(self) -> None:
        """Announce the bus (raises when Redis is unreachable at start) and start serving."""
        if self._started:
            return
        await self._refresh_alive()
        self._started = True
        self._stopping = False
        self._conn = self.blocking.client()  # its own connection: the BRPOP holds it
        await self._conn.ping()  # connected before the loop starts (redis-py may lose a cancel mid-connect)
        self._loop_task = asyncio.get_running_loop().create_task(self._serve(), name=f"bus:{self.node_id}")
        self._sub_task = asyncio.get_running_loop().create_task(self._listen(), name=f"bus-sub:{self.node_id}")
        self._alive.start()

    async def close(self, grace: float = 2.0) -> None:
        """Withdraw the liveness key (callers fail fast from now on), stop taking requests, let handlers in
        progress finish within ``grace`` seconds (then cancel them)."""
        if not self._started:
            await _disconnect(self.blocking)  # call() may have used it
            return
        self._started = False
        self._stopping = True
        await self._alive.stop()
        queue = self.keys("rpc", self.node_id)
        try:
            async with asyncio.timeout(2.0):
                await self.redis.delete(self.keys("bus", self.node_id))
                await self.redis.rpush(queue, self._wake)  # the BRPOP returns at once
        except Exception as exc:
            _log.warning("cluster.bus_close_failed", error=f"{type(exc).__name__}: {exc}")
        loops = {t for t in (self._loop_task, self._sub_task) if t is not None}
        await _finish(loops, self.poll + 1.0)
        await _finish(set(self._inflight), grace)
        self._loop_task = self._sub_task = None
        try:
            async with asyncio.timeout(2.0):
                await self.redis.lrem(queue, 0, self._wake)  # not popped: the loop had already ended
        except Exception:
            pass
        for closing in (self._conn, self._pubsub):
            if closing is not None:
                try:
                    await closing.aclose()
                except Exception:
                    pass
        self._conn = self._pubsub = None
        self._subscribed.clear()
        await _disconnect(self.blocking)

    def status(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "running": self._started, "handled": self.handled,
                "dropped": self.dropped, "in_flight": len(self._inflight),
                "methods": sorted(self.handlers), "topics": sorted(self.subscriptions)}

    # -------------------------------------------------------------------- serving
    async def _refresh_alive(self) -> None:
        await self.redis.set(self.keys("bus", self.node_id), b"1",
                             px=max(1, math.ceil(self.liveness_ttl * 1000)))

    async def _serve(self) -> None:
        queue = self.keys("rpc", self.node_id)
        failures = 0
        while not self._stopping:
            await self._sem.acquire()  # wait for room before taking a request off the list
            try:
                async with asyncio.timeout(self.poll + COMMAND_TIMEOUT):
                    item = await self._conn.brpop([queue], timeout=self.poll)
            except asyncio.CancelledError:
                self._sem.release()
                raise
            except Exception as exc:
                self._sem.release()
                failures += 1
                if failures == 1 or failures % 30 == 0:
                    _log.warning("cluster.bus_receive_failed", failures=failures,
                                 error=f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(backoff_delay(failures, base=0.1, cap=2.0, jitter=0.3))
                continue
            if failures:
                _log.info("cluster.bus_receive_recovered", failures=failures)
                failures = 0
            if item is None or item[1] == self._wake:
                self._sem.release()
                continue
            task = asyncio.get_running_loop().create_task(self._handle_safely(item[1]))
            self._inflight.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._sem.release()

    async def _handle_safely(self, raw: Any) -> None:
        try:
            await self._handle(raw)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug here must not leave a task with an unretrieved exception
            _log.exception("cluster.bus_request_failed", node_id=self.node_id)

    async def _handle(self, raw: Any) -> None:
        try:
            request = _decode(raw, "request")
            request_id = request.get("id")
            if not isinstance(request_id, str) or _ID_RE.fullmatch(request_id) is None:
                raise ValueError("request: bad id")
            deadline = request.get("deadline")
            if isinstance(deadline, bool) or not isinstance(deadline, (int, float)) \
                    or not math.isfinite(deadline):
                raise ValueError("request: bad deadline")
        except ValueError as exc:
            self.dropped += 1
            self._bad("cluster.bus_request_invalid", node_id=self.node_id, error=str(exc)[:200])
            return
        if deadline <= time.time():
            self.dropped += 1
            _log.info("cluster.bus_request_late", node_id=self.node_id, request_id=request_id,
                      method=str(request.get("method"))[:128])
            return
        method, payload, caller = request.get("method"), request.get("payload"), request.get("reply_to")
        if not isinstance(method, str) or _METHOD_RE.fullmatch(method) is None or not isinstance(payload, dict):
            envelope: dict[str, Any] = {"ok": False, "code": "bad_request",
                                        "message": "请求格式错误 / malformed request"}
            self._bad("cluster.bus_request_invalid", node_id=self.node_id, request_id=request_id,
                      caller=str(caller)[:80])
        else:
            envelope = await _run_handler(self.handlers, self.node_id, method, payload)
            self.handled += 1
        envelope["id"] = request_id
        try:
            data = _encode(envelope, "reply")
        except ValueError as exc:
            data = _encode({"id": request_id, "ok": False, "code": "internal", "message": _clip(str(exc))}, "reply")
        reply_key = self.keys("reply", request_id)
        keep_ms = max(1000, math.ceil((deadline - time.time()) * 1000) + 1000)
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.lpush(reply_key, data)
                pipe.pexpire(reply_key, keep_ms)
                await pipe.execute()
        except Exception as exc:
            _log.warning("cluster.bus_reply_failed", node_id=self.node_id, request_id=request_id,
                         error=f"{type(exc).__name__}: {exc}")

    # -------------------------------------------------------------------- pub/sub
    async def _listen(self) -> None:
        """One subscriber connection: (re)subscribe what was asked for, deliver messages to callbacks."""
        prefix = self.keys("topic", "x")[:-1]
        failures = 0
        while not self._stopping:
            try:
                if self._pubsub is None:
                    self._pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
                    self._subscribed = set()
                wanted = set(self.subscriptions) - self._subscribed
                if wanted:
                    await self._pubsub.subscribe(*[self.keys("topic", t) for t in sorted(wanted)])
                    self._subscribed |= wanted
                if not self._subscribed:
                    await asyncio.sleep(0.1)
                    continue
                message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                if failures == 1 or failures % 30 == 0:
                    _log.warning("cluster.subscriber_connection_failed", failures=failures,
                                 error=f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(backoff_delay(failures, base=0.1, cap=2.0, jitter=0.3))
                continue
            if message is None or message.get("type") != "message":
                continue
            channel = message.get("channel")
            if isinstance(channel, bytes):
                channel = channel.decode("utf-8", "replace")
            if not isinstance(channel, str) or not channel.startswith(prefix):
                continue
            topic = channel[len(prefix):]
            try:
                payload = _decode(message.get("data"), "broadcast")
            except ValueError as exc:
                self._bad("cluster.broadcast_invalid", topic=topic[:80], error=str(exc)[:200])
                continue
            _dispatch(self.subscriptions.get(topic, []), topic, payload)


# ---------------------------------------------------------------------------------------------- memory
class LocalNetwork:
    """The buses of one process: several :class:`LocalCommandBus` on one network play several nodes."""

    def __init__(self) -> None:
        self.buses: dict[str, LocalCommandBus] = {}


class LocalCommandBus(_Registry):
    """The bus in memory, with the Redis bus's semantics: payloads and replies travel as JSON (a handler
    gets a copy, non-JSON fails the same way), a node not started (or closed) is unavailable, a handler
    still running at the timeout keeps running but its reply is dropped."""

    def __init__(self, node_id: str, network: LocalNetwork | None = None, *, concurrency: int = 64) -> None:
        if _ID_RE.fullmatch(node_id) is None:
            raise ValueError(f"invalid node id {node_id!r}")
        self.node_id = node_id
        self.network = network if network is not None else LocalNetwork()
        self.handlers: dict[str, Handler] = {}
        self.subscriptions: dict[str, list[Callable[[dict], None]]] = {}
        self.handled = 0
        self._sem = asyncio.Semaphore(concurrency)
        self._inflight: set[asyncio.Task[dict]] = set()
        self._started = False

    async def publish(self, topic: str, payload: dict) -> None:
        check_part(topic)
        data = _encode(_check_payload(payload, "payload"), "broadcast")
        for bus in list(self.network.buses.values()):
            callbacks = bus.subscriptions.get(topic)
            if callbacks:
                _dispatch(callbacks, topic, json.loads(data))

    async def call(self, node_id: str, method: str, payload: dict, *, timeout: float) -> dict:
        timeout = _check_timeout(timeout)
        _check_method(method)
        data = _encode(_check_payload(payload, "payload"), "request")
        target = self.network.buses.get(node_id) if isinstance(node_id, str) else None
        if target is None:
            raise NodeUnavailable(message=f"节点不在线 / node not available: {str(node_id)[:80]}")
        task = asyncio.get_running_loop().create_task(target._serve(method, json.loads(data)))
        target._inflight.add(task)
        task.add_done_callback(target._inflight.discard)
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:
            raise CommandTimeout(message=f"命令超时 / no reply from {node_id} to {method} within {timeout:g} s")
        envelope = task.result()
        return _reply_result(json.loads(_encode(envelope, "reply")))

    async def _serve(self, method: str, payload: dict) -> dict:
        async with self._sem:
            envelope = await _run_handler(self.handlers, self.node_id, method, payload)
            self.handled += 1
            return envelope

    async def start(self) -> None:
        current = self.network.buses.get(self.node_id)
        if current is not None and current is not self:
            raise ValueError(f"node id {self.node_id} already on this network")
        self.network.buses[self.node_id] = self
        self._started = True

    async def close(self) -> None:
        if self.network.buses.get(self.node_id) is self:
            del self.network.buses[self.node_id]
        self._started = False
        tasks = list(self._inflight)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    def status(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "running": self._started, "handled": self.handled, "dropped": 0,
                "in_flight": len(self._inflight), "methods": sorted(self.handlers),
                "topics": sorted(self.subscriptions)}
