"""The audit log service: what the rest of the platform calls.

Recording an action::

    async with sessionmaker() as session:
        await begin_write(session)            # SQLite: BEGIN IMMEDIATE (gbcore.db.begin_write)
        ...the action's own writes...
        await audit.append(session, actor=Actor.user(user), action="device.password_set",
                           target=Target("device", device_id), client_ip=ip, detail={...})
        await session.commit()                # the action and its entry commit together

:meth:`AuditLog.append` holds the log's writer lock until that transaction ends: append as the
action's last write, then commit (a write after the append could wait for a row lock held by a
transaction that waits for the writer lock).  An action that has no transaction of its own (a SIP command, a
media session) uses :meth:`AuditLog.record`, which batches concurrent callers into one transaction
and returns once the entry is committed.

Checkpoints: :meth:`AuditLog.start` runs a task that signs a checkpoint every
``checkpoint_interval`` seconds while entries arrive; every export signs one too.  The newest is
also written to ``<data_dir>/audit/checkpoint`` (outside the database) and, when configured, POSTed
to a URL, and each new checkpoint is checked against that file first: a database rewritten
together with its checkpoint table is detected there.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gbcore.log import get_logger

from .actions import check_action
from .note import (
    Checkpoint,
    NoteError,
    NoteSigner,
    format_checkpoint,
    load_or_create_signer,
    parse_checkpoint,
)
from .note import split_note as _split_note
from .store import AuditIntegrityError, AuditStore, StoredCheckpoint, StoredEntry, format_time

__all__ = [
    "ACTOR_TYPES",
    "Actor",
    "AuditEntry",
    "AuditIntegrityError",
    "AuditLog",
    "Target",
    "download_detail",
]

log = get_logger("gbops.audit")

#: how many times a batch of ``record()`` entries is tried again when SQLite stays locked past its busy timeout
BUSY_RETRIES = 5

ACTOR_TYPES = frozenset({"user", "device", "system", "platform", "anonymous"})
AuditEntry = StoredEntry


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acted: a portal user, a device, the platform itself, an upper platform, or nobody known."""

    type: str
    id: str | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        if self.type not in ACTOR_TYPES:
            raise ValueError(f"actor type must be one of {sorted(ACTOR_TYPES)}")

    @classmethod
    def user(cls, user: Any) -> Actor:
        return cls("user", str(user.id), user.username)

    @classmethod
    def system(cls, name: str = "gbops") -> Actor:
        return cls("system", None, name)

    @classmethod
    def device(cls, device_id: str, name: str | None = None) -> Actor:
        return cls("device", device_id, name)

    @classmethod
    def platform(cls, platform_id: str, name: str | None = None) -> Actor:
        return cls("platform", platform_id, name)

    @classmethod
    def anonymous(cls) -> Actor:
        return cls("anonymous")

    def as_json(self) -> dict[str, Any]:
        return {"type": self.type, "id": self.id, "name": self.name}


@dataclass(frozen=True, slots=True)
class Target:
    """What was acted on: ``Target("device", "3402...")``, ``Target("user", "7")``, ..."""

    type: str
    id: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"type": self.type, "id": self.id}


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("naive datetime in audit detail: timestamps must be timezone-aware")
        return format_time(value.astimezone(UTC))
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"{type(value).__name__} cannot be written to the audit log")


def download_detail(
    *,
    device_id: str,
    channel_id: str,
    start: datetime,
    end: datetime,
    session_id: str | None = None,
    watermark_id: str | None = None,
    sha256: str | None = None,
    size: int | None = None,
) -> dict[str, Any]:
    """The detail of ``download.request`` / ``download.complete``: what the download history reads."""
    detail: dict[str, Any] = {"device_id": device_id, "channel_id": channel_id, "start": start, "end": end}
    for key, value in (("session_id", session_id), ("watermark_id", watermark_id), ("sha256", sha256),
                       ("bytes", size)):
        if value is not None:
            detail[key] = value
    return detail


def build_record(
    *,
    actor: Actor,
    action: str,
    target: Target,
    client_ip: str | None = None,
    detail: Mapping[str, Any] | None = None,
    session_id: str | None = None,
    watermark_id: str | None = None,
) -> dict[str, Any]:
    check_action(action)
    body = _jsonable(dict(detail or {}))
    if session_id is not None:
        body["session_id"] = session_id
    if watermark_id is not None:
        body["watermark_id"] = watermark_id
    return {
        "action": action,
        "actor": actor.as_json(),
        "target": target.as_json(),
        "client_ip": client_ip,
        "detail": body,
    }


class AuditLog:
    """One tamper-evident log (see the module docstring)."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        signer: NoteSigner,
        *,
        origin: str | None = None,
        data_dir: Path | None = None,
        checkpoint_interval: float = 10.0,
        push_url: str | None = None,
        batch_size: int = 1000,
    ) -> None:
        self.store = AuditStore(sessionmaker)
        self.sessionmaker = sessionmaker
        self.signer = signer
        self.origin = origin or signer.name
        self.checkpoint_file = Path(data_dir) / "audit" / "checkpoint" if data_dir is not None else None
        self.checkpoint_interval = checkpoint_interval
        self.push_url = push_url
        self.batch_size = batch_size
        self._queue: list[tuple[dict[str, Any], asyncio.Future[StoredEntry]]] = []
        self._wake: asyncio.Event | None = None
        self._pending: set[asyncio.Future[StoredEntry]] = set()
        self._batcher: asyncio.Task[None] | None = None
        self._checkpointer: asyncio.Task[None] | None = None
        self._last_alarm: str | None = None
        self._file_lock = asyncio.Lock()
        # observers of appended records (the security monitor's config-change events): called with each
        # record's dict once it is appended (in the caller's transaction for append/append_many), never raise
        self.listeners: list[Any] = []
        # whether this process signs checkpoints (a last one at stop): True unless a cluster node without the
        # signer's lease (start(checkpoints=False), stop_checkpoints)
        self.signs = True

    @classmethod
    def from_settings(
        cls, settings: Any, sessionmaker: async_sessionmaker[AsyncSession], *, create_key: bool = True
    ) -> AuditLog:
        """The platform's log: key from (or generated into) ``settings.audit_signing_key_path``."""
        origin = settings.audit_log_origin
        signer = load_or_create_signer(settings.audit_signing_key_path, origin, create=create_key)
        return cls(
            sessionmaker,
            signer,
            origin=origin,
            data_dir=settings.data_dir,
            checkpoint_interval=settings.audit_checkpoint_interval,
            push_url=settings.audit_checkpoint_url,
        )

    @property
    def verifier_key(self) -> str:
        """The ``vkey`` text auditors pin (``verifier.key`` in every export)."""
        return self.signer.vkey

    # ----------------------------------------------------------------------------------- writing
    async def append(
        self,
        session: AsyncSession,
        *,
        actor: Actor,
        action: str,
        target: Target,
        client_ip: str | None = None,
        detail: Mapping[str, Any] | None = None,
        session_id: str | None = None,
        watermark_id: str | None = None,
    ) -> AuditEntry:
        """Append one entry in ``session``'s transaction (see the module docstring)."""
        record = build_record(actor=actor, action=action, target=target, client_ip=client_ip, detail=detail,
                              session_id=session_id, watermark_id=watermark_id)
        entry = (await self.store.append(session, [record]))[0]
        self._notify([record])
        return entry

    async def append_many(self, session: AsyncSession, records: Sequence[dict[str, Any]]) -> list[AuditEntry]:
        """Append records made by :func:`build_record` in ``session``'s transaction, in order."""
        entries = await self.store.append(session, records)
        self._notify(records)
        return entries

    def _notify(self, records: Sequence[dict[str, Any]]) -> None:
        for fn in self.listeners:
            for record in records:
                try:
                    fn(record)
                except Exception:
                    log.exception("audit.listener_failed", action=record.get("action"))

    async def record(
        self,
        *,
        actor: Actor,
        action: str,
        target: Target,
        client_ip: str | None = None,
        detail: Mapping[str, Any] | None = None,
        session_id: str | None = None,
        watermark_id: str | None = None,
    ) -> AuditEntry:
        """Append one entry in a transaction of its own (batched with concurrent callers); returns
        once it is committed."""
        rec = build_record(actor=actor, action=action, target=target, client_ip=client_ip, detail=detail,
                           session_id=session_id, watermark_id=watermark_id)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[StoredEntry] = loop.create_future()
        self._queue.append((rec, fut))
        self._pending.add(fut)
        fut.add_done_callback(self._pending.discard)
        if self._batcher is None or self._batcher.done():
            self._wake = asyncio.Event()
            self._batcher = asyncio.create_task(self._run_batcher(), name="audit-batcher")
        assert self._wake is not None
        self._wake.set()
        return await asyncio.shield(fut)

    async def _run_batcher(self) -> None:
        assert self._wake is not None
        while True:
            if not self._queue:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), 30)
                except TimeoutError:
                    if not self._queue:
                        return  # idle: the next record() starts a new task
                continue
            await asyncio.sleep(0)  # let the callers whose entries were just committed queue their next
            batch, self._queue = self._queue[: self.batch_size], self._queue[self.batch_size :]
            try:
                entries = await self._write_batch([rec for rec, _ in batch])
            except Exception as exc:
                log.exception("audit.append_failed", entries=len(batch), error=type(exc).__name__)
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for (_, fut), entry in zip(batch, entries, strict=True):
                if not fut.done():
                    fut.set_result(entry)

    async def _write_batch(self, records: list[dict[str, Any]]) -> list[StoredEntry]:
        collisions = 0
        busy = 0
        while True:
            try:
                async with self.sessionmaker() as session:
                    entries = await self.store.append(session, records, savepoint=False)
                    await session.commit()
                    self._notify(records)
                    return entries
            except IntegrityError:  # another writer took the seq: the whole transaction again
                collisions += 1
                if collisions == 3:
                    raise
            except OperationalError as exc:
                # SQLite under a heavy write load (thousands of devices): the busy timeout ran out while another
                # writer held the database.  An entry is evidence: wait and try again rather than lose it.
                busy += 1
                if "locked" not in str(exc) or busy > BUSY_RETRIES:
                    raise
                log.warning("audit.append_retry", entries=len(records), attempt=busy)
                await asyncio.sleep(min(5.0, 0.25 * 2 ** (busy - 1)))

    # ----------------------------------------------------------------------------------- checkpoints
    def _sign(self, size: int, root: bytes) -> str:
        return self.signer.sign(format_checkpoint(self.origin, size, root))

    async def checkpoint(self, size: int | None = None) -> StoredCheckpoint | None:
        """Sign and store a checkpoint of the first ``size`` entries (default: all; None when the log
        is empty).  A checkpoint of the whole log is checked against, then written to, the
        checkpoint file in the data directory (and pushed, when configured)."""
        if size is None:
            await self.check_against_pin(await self.store.size())
        cp = await self.store.build_checkpoint(self._sign, size=size)
        if cp is not None and size is None:
            await self._pin(cp)
        return cp

    async def latest_checkpoint(self) -> StoredCheckpoint | None:
        return await self.store.latest_checkpoint()

    def read_checkpoint_file(self) -> tuple[str, Checkpoint] | None:
        """The note and body of the checkpoint pinned in the data directory, if any."""
        if self.checkpoint_file is None or not self.checkpoint_file.exists():
            return None
        note = self.checkpoint_file.read_text("utf-8")
        try:
            text, _ = _split_note(note)
            cp = parse_checkpoint(text)
        except NoteError as exc:
            raise AuditIntegrityError(f"检查点文件已损坏 / the checkpoint file {self.checkpoint_file} is damaged: {exc}") from None
        if cp.origin != self.origin:
            log.warning("audit.checkpoint_file_other_origin", origin=cp.origin, path=str(self.checkpoint_file))
            return None
        return note, cp

    async def check_against_pin(self, size: int) -> None:
        """Raise :class:`AuditIntegrityError` unless the stored tree of ``size`` entries extends the
        checkpoint pinned in the data directory."""
        pinned = self.read_checkpoint_file()
        if pinned is None:
            return
        _, cp = pinned
        if cp.size > size:
            raise AuditIntegrityError(
                f"审计日志只有 {size} 条，但此前已签名 {cp.size} 条：条目被删除 / the log holds {size} entries but "
                f"a checkpoint of {cp.size} entries was signed before: entries were deleted"
            )
        if cp.size == 0:
            return
        latest = await self.store.latest_checkpoint()
        if latest is None or latest.tree_size < cp.size:
            raise AuditIntegrityError(
                f"数据库中的检查点少于此前签名的 {cp.size} 条 / the database lost the checkpoints up to "
                f"{cp.size} entries that were signed before: the log was rewritten"
            )
        root = await self.store.root_at(cp.size)
        if root != cp.root:
            raise AuditIntegrityError(
                f"审计日志前 {cp.size} 条与此前签名的检查点不符：已被篡改 / the first {cp.size} entries no longer "
                f"match the checkpoint signed for them: the log was rewritten"
            )

    async def _pin(self, cp: StoredCheckpoint) -> None:
        async with self._file_lock:
            pinned = self.read_checkpoint_file()
            await self.check_against_pin(cp.tree_size)
            if self.checkpoint_file is None or (pinned is not None and pinned[1].size >= cp.tree_size):
                return
            _write_atomic(self.checkpoint_file, cp.note)
        if self.push_url:
            await asyncio.to_thread(_push, self.push_url, cp.note)

    async def _checkpoint_loop(self) -> None:
        last = -1
        while True:
            await asyncio.sleep(self.checkpoint_interval)
            try:
                size = await self.store.size()
                if size != last:
                    await self.checkpoint()
                    last = size
                    self._last_alarm = None
            except AuditIntegrityError as exc:
                if str(exc) != self._last_alarm:
                    log.error("audit.tamper_detected", problem=str(exc))
                    self._last_alarm = str(exc)
            except Exception as exc:
                log.exception("audit.checkpoint_failed", error=type(exc).__name__)

    async def start(self, *, checkpoints: bool = True) -> None:
        """Start the log; with ``checkpoints`` also the checkpoint task (a first checkpoint is signed right away).

        In a cluster every node appends but one node signs: the others start with ``checkpoints=False`` and the
        node holding the signer's lease calls :meth:`start_checkpoints` / :meth:`stop_checkpoints`."""
        if checkpoints:
            await self.start_checkpoints()
        else:
            self.signs = False
        log.info("audit.started", origin=self.origin, verifier_key=self.verifier_key, signer=checkpoints)

    async def start_checkpoints(self) -> None:
        """Sign a checkpoint now, then every ``checkpoint_interval`` while entries arrive."""
        self.signs = True
        try:
            await self.checkpoint()
        except AuditIntegrityError as exc:
            log.error("audit.tamper_detected", problem=str(exc))
            self._last_alarm = str(exc)
        if self._checkpointer is None:
            self._checkpointer = asyncio.create_task(self._checkpoint_loop(), name="audit-checkpoints")

    async def stop_checkpoints(self) -> None:
        """Stop signing (this node lost the signer's lease, or stops): the task ends, no last checkpoint."""
        self.signs = False
        task, self._checkpointer = self._checkpointer, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def stop(self) -> None:
        """Write what is queued, sign a last checkpoint, stop the tasks."""
        if self._pending and self._batcher is not None and not self._batcher.done():
            await asyncio.wait(list(self._pending), timeout=30)
        for task in (self._checkpointer, self._batcher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._checkpointer = self._batcher = None
        if not self.signs:
            return  # a cluster node that does not hold the signer's lease signs nothing
        try:
            await self.checkpoint()
        except Exception as exc:
            log.error("audit.final_checkpoint_failed", error=str(exc))

    # ----------------------------------------------------------------------------------- proofs
    async def _ensure_built(self, size: int) -> None:
        latest = await self.store.latest_checkpoint()
        if latest is None or latest.tree_size < size:
            await self.checkpoint()

    async def inclusion_proof(self, seq: int, size: int) -> list[bytes]:
        await self._ensure_built(size)
        return await self.store.inclusion_proof(seq, size)

    async def consistency_proof(self, old: int, new: int) -> list[bytes]:
        await self._ensure_built(new)
        return await self.store.consistency_proof(old, new)

    async def root_at(self, size: int) -> bytes:
        await self._ensure_built(size)
        return await self.store.root_at(size)


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _push(url: str, note: str) -> None:
    req = urllib.request.Request(
        url, data=note.encode("utf-8"), method="POST", headers={"Content-Type": "text/plain; charset=utf-8"}
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310 - operator-configured URL
            resp.read()
    except Exception as exc:
        log.warning("audit.checkpoint_push_failed", url=url, error=str(exc))
