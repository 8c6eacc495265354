"""The security monitor: the :class:`~security.events.SecuritySink` the platform's producers call.

``emit`` validates the event, stamps it (UTC) and queues it (bounded: when the queue is full the event is
dropped and counted, never waited for).  One writer task takes the queue in batches and, per batch:

1. feeds every event through the rules (:class:`security.rules.RuleEngine`, in arrival order);
2. stores the events, the new alerts, the counts of open alerts, and - when ``GBOPS_SECURITY_AUTOBLOCK`` is on
   and the rule allows it - the blocks of the alerts' source addresses, in one transaction;
3. after the commit: records each alert (``security.alert``) and block (``security.block``) on the audit log
   through the injected ``audit(action, target, detail)``, posts each alert to the webhook (injected: an
   object with ``post(payload)``, e.g. the ticket notifier), and hands events and alerts to live subscribers.

``is_blocked(address)`` is an in-memory check (the blocks are loaded at start); a block ends by itself at its
time (``security.unblock`` on the audit log, reason ``expired``) or by :meth:`SecurityMonitor.unblock`.
Retention: events, and alerts that were acknowledged, older than ``retention_days`` are deleted hourly.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gbcore.db import begin_write, utcnow
from gbcore.log import get_logger
from gbcore.periodic import PeriodicTask

from .events import EVENT_KINDS, SEVERITIES, SecurityEvent, kind_words
from .models import SecurityAlertRow, SecurityBlockRow, SecurityEventRow
from .rules import DEFAULT_RULES, Alert, Rule, RuleEngine

__all__ = ["SecurityMonitor", "Subscription", "alert_dict", "event_dict"]

log = get_logger("gbops.security")

Audit = Callable[[str, str, dict[str, Any]], Awaitable[Any]]

_MAX_TEXT = 64


def _clip(value: Any, n: int = _MAX_TEXT) -> str | None:
    if value is None:
        return None
    text = str(value)
    return text[:n] if text else None


def _json(value: Any, depth: int = 0) -> Any:
    """Detail values as JSON (bounded: strings 500 chars, 50 items, 4 levels)."""
    if depth > 4:
        return str(value)[:100]
    if isinstance(value, dict):
        return {str(k)[:64]: _json(v, depth + 1) for k, v in list(value.items())[:50]}
    if isinstance(value, list | tuple | set | frozenset):
        return [_json(v, depth + 1) for v in list(value)[:50]]
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return str(value)[:500]


def event_dict(row: SecurityEventRow) -> dict[str, Any]:
    zh, en = kind_words(row.kind)
    return {"id": row.id, "time": row.time, "kind": row.kind, "kind_zh": zh, "kind_en": en,
            "severity": row.severity, "source_ip": row.source_ip, "user": row.user, "device_id": row.device_id,
            "detail": row.detail or {}}


def alert_dict(row: SecurityAlertRow, rules: dict[str, Rule]) -> dict[str, Any]:
    rule = rules.get(row.rule)
    zh, en = (rule.zh, rule.en) if rule is not None else (row.rule, row.rule)
    desc = rule.describe() if rule is not None else (zh, en)
    return {"id": row.id, "rule": row.rule, "rule_zh": zh, "rule_en": en, "rule_text_zh": desc[0],
            "rule_text_en": desc[1], "key": row.key, "severity": row.severity, "first_at": row.first_at,
            "last_at": row.last_at, "count": row.count, "source_ip": row.source_ip, "state": row.state,
            "ack_user": row.ack_user, "ack_at": row.ack_at, "ack_note": row.ack_note,
            "blocked_until": row.blocked_until, "detail": row.detail or {}}


class Subscription:
    """A live feed of ``("event" | "alert" | "block", dict)`` items; a slow reader loses the oldest."""

    def __init__(self, monitor: SecurityMonitor, max_queue: int = 256) -> None:
        self.monitor = monitor
        self.queue: asyncio.Queue[tuple[str, dict[str, Any]] | None] = asyncio.Queue(max_queue)
        self.dropped = 0

    def offer(self, item: tuple[str, dict[str, Any]] | None) -> None:
        while True:
            try:
                self.queue.put_nowait(item)
                return
            except asyncio.QueueFull:
                with contextlib.suppress(asyncio.QueueEmpty):
                    self.queue.get_nowait()
                    self.dropped += 1

    async def get(self) -> tuple[str, dict[str, Any]] | None:
        """The next item; None when the monitor stopped."""
        return await self.queue.get()

    def close(self) -> None:
        self.monitor._subscribers.discard(self)


class SecurityMonitor:
    """Stores events, raises alerts, blocks addresses (see the module docstring)."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        rules: Iterable[Rule] = DEFAULT_RULES,
        audit: Audit | None = None,
        webhook: Any | None = None,
        autoblock: bool = False,
        autoblock_minutes: float = 30.0,
        retention_days: int = 180,
        queue_size: int = 10_000,
        batch_size: int = 500,
        clock: Callable[[], float] = time.time,
        exempt: str = "",
    ) -> None:
        self.sessionmaker = sessionmaker
        self.engine = RuleEngine(rules)
        self.rules = {r.name: r for r in self.engine.rules}
        self.audit = audit
        self.webhook = webhook
        self.autoblock = autoblock
        self.autoblock_minutes = autoblock_minutes
        self.retention_days = retention_days
        self.batch_size = batch_size
        self.clock = clock
        self.exempt = [ipaddress.ip_network(n.strip(), strict=False) for n in exempt.split(",") if n.strip()]
        self._queue: asyncio.Queue[SecurityEvent] = asyncio.Queue(queue_size)
        self._blocks: dict[str, float] = {}  # address -> until (Unix seconds)
        self._subscribers: set[Subscription] = set()
        self._writer: asyncio.Task[None] | None = None
        self._sweeper: PeriodicTask | None = None
        self._releaser: PeriodicTask | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.dropped = 0
        self.stored = 0
        self.alerts_raised = 0

    # ------------------------------------------------------------------------------------------ the sink
    def emit(self, kind: str, *, source_ip: str | None = None, user: str | None = None,
             device_id: str | None = None, severity: str | None = None,
             detail: dict[str, Any] | None = None) -> None:
        words = EVENT_KINDS.get(kind)
        if words is None:
            raise ValueError(f"unknown security event kind {kind!r}")
        if severity not in SEVERITIES:
            severity = words[2]
        event = SecurityEvent(kind=kind, at=datetime.fromtimestamp(self.clock(), UTC), severity=severity,
                              source_ip=_clip(source_ip), user=_clip(user), device_id=_clip(device_id),
                              detail=_json(dict(detail or {})))
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped % 1000 == 1:
                log.warning("security.events_dropped", dropped=self.dropped, reason="queue_full")

    def is_blocked(self, address: str | None) -> bool:
        if not address or not self._blocks:
            return False
        until = self._blocks.get(address)
        return until is not None and until > self.clock()

    def exempted(self, address: str) -> bool:
        """Whether ``address`` is never blocked automatically (``GBOPS_SECURITY_AUTOBLOCK_EXEMPT``)."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip.version == net.version and ip in net for net in self.exempt)

    def blocked_until(self, address: str) -> float | None:
        until = self._blocks.get(address)
        return until if until is not None and until > self.clock() else None

    # ------------------------------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        now = datetime.fromtimestamp(self.clock(), UTC)
        async with self.sessionmaker() as session:
            rows = (await session.execute(select(SecurityBlockRow).where(SecurityBlockRow.until > now))).scalars()
            self._blocks = {r.address: r.until.timestamp() for r in rows}
        self._writer = asyncio.create_task(self._run_writer(), name="security-writer")
        self._sweeper = PeriodicTask("security-retention", self.purge, interval=3600.0, first_delay=60.0,
                                     logger=log)
        self._sweeper.start()
        self._releaser = PeriodicTask("security-unblock", self.release_expired, interval=1.0, logger=log)
        self._releaser.start()
        log.info("security.monitor_started", blocks=len(self._blocks), rules=len(self.rules),
                 autoblock=self.autoblock)

    async def stop(self) -> None:
        for task in (self._releaser, self._sweeper):
            if task is not None:
                await task.stop()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.flush(), 10)
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for sub in list(self._subscribers):
            sub.offer(None)

    async def flush(self) -> None:
        """Wait until every event queued so far is stored and its alerts handled (tests, shutdown)."""
        await self._queue.join()
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def subscribe(self, max_queue: int = 256) -> Subscription:
        sub = Subscription(self, max_queue)
        self._subscribers.add(sub)
        return sub

    def _publish(self, kind: str, item: dict[str, Any]) -> None:
        for sub in list(self._subscribers):
            sub.offer((kind, item))

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------------------------------ writer
    async def _run_writer(self) -> None:
        while True:
            first = await self._queue.get()
            batch = [first]
            while len(batch) < self.batch_size:
                try:
                    batch.append(self._queue.get_nowait())
                except asyncio.QueueEmpty:
                    break
            try:
                await self._write(batch)
            except Exception as exc:
                log.exception("security.write_failed", events=len(batch), error=type(exc).__name__)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _write(self, batch: list[SecurityEvent]) -> None:
        raised: list[Alert] = []
        for event in batch:
            raised.extend(self.engine.feed({"kind": event.kind, "source_ip": event.source_ip, "user": event.user,
                                            "device_id": event.device_id, "detail": event.detail},
                                           event.at.timestamp()))
        updated = [a for a in self.engine.take_updates() if a.ident is not None]
        blocks: list[tuple[Alert, datetime]] = []
        if self.autoblock:
            for alert in raised:
                if alert.rule.autoblock and alert.source_ip and not self.exempted(alert.source_ip):
                    until = datetime.fromtimestamp(alert.last_at + self.autoblock_minutes * 60, UTC)
                    blocks.append((alert, until))
        block_of = {id(a): until for a, until in blocks}
        event_rows = [SecurityEventRow(time=e.at, kind=e.kind, severity=e.severity, source_ip=e.source_ip,
                                       user=e.user, device_id=e.device_id, detail=e.detail or None) for e in batch]
        alert_rows: list[tuple[Alert, SecurityAlertRow]] = []
        for alert in raised:
            alert_rows.append((alert, SecurityAlertRow(
                rule=alert.rule.name, key=alert.key[:256], severity=alert.severity,
                first_at=datetime.fromtimestamp(alert.first_at, UTC),
                last_at=datetime.fromtimestamp(alert.last_at, UTC), count=alert.count, source_ip=alert.source_ip,
                state="open", blocked_until=block_of.get(id(alert)),
                detail={"values": alert.values, "threshold": alert.rule.threshold,
                        "window_s": alert.rule.window_s, **alert.sample})))
        async with self.sessionmaker() as session:
            await begin_write(session)
            session.add_all(event_rows)
            session.add_all([row for _, row in alert_rows])
            await session.flush()
            for alert, row in alert_rows:
                alert.ident = row.id
            for alert in updated:
                row = await session.get(SecurityAlertRow, alert.ident)
                if row is not None:
                    row.count = alert.count
                    row.last_at = datetime.fromtimestamp(alert.last_at, UTC)
            for alert, until in blocks:
                assert alert.source_ip is not None
                existing = await session.get(SecurityBlockRow, alert.source_ip)
                reason = f"{alert.rule.zh} / {alert.rule.en}"
                if existing is None:
                    session.add(SecurityBlockRow(address=alert.source_ip, until=until, reason=reason,
                                                 alert_id=alert.ident))
                else:
                    existing.until, existing.reason, existing.alert_id = max(existing.until, until), reason, \
                        alert.ident
            await session.commit()
            events_out = [event_dict(r) for r in event_rows]
            alerts_out = [(a, alert_dict(r, self.rules)) for a, r in alert_rows]
        self.stored += len(batch)
        self.alerts_raised += len(alert_rows)
        for alert, until in blocks:
            assert alert.source_ip is not None
            self._blocks[alert.source_ip] = max(self._blocks.get(alert.source_ip, 0.0), until.timestamp())
        for item in events_out:
            self._publish("event", item)
        for alert, item in alerts_out:
            self._publish("alert", item)
            log.warning("security.alert", alert_id=item["id"], rule=item["rule"], key=item["key"],
                        severity=item["severity"], count=item["count"], blocked_until=item["blocked_until"])
            self._spawn(self._after_alert(alert, item))

    async def _after_alert(self, alert: Alert, item: dict[str, Any]) -> None:
        detail = {"alert_id": item["id"], "rule": item["rule"], "rule_zh": item["rule_zh"], "key": item["key"],
                  "severity": item["severity"], "count": item["count"], "source_ip": item["source_ip"],
                  "first_at": _json(item["first_at"]), "last_at": _json(item["last_at"]),
                  "blocked_until": _json(item["blocked_until"])}
        if self.audit is not None:
            try:
                await self.audit("security.alert", f"security_alert:{item['id']}", detail)
                if item["blocked_until"] is not None:
                    await self.audit("security.block", f"address:{item['source_ip']}",
                                     {"address": item["source_ip"], "until": _json(item["blocked_until"]),
                                      "alert_id": item["id"], "rule": item["rule"], "automatic": True})
            except Exception:
                log.exception("security.alert_audit_failed", alert_id=item["id"])
        if self.webhook is not None:
            try:
                self.webhook.post({"kind": "security_alert", "title": f"安全告警：{item['rule_zh']} / security "
                                   f"alert: {item['rule_en']}", **detail,
                                   "rule_en": item["rule_en"], "detail": _json(item["detail"])})
            except Exception:
                log.exception("security.webhook_failed", alert_id=item["id"])
        if item["blocked_until"] is not None:
            self._publish("block", {"address": item["source_ip"], "until": item["blocked_until"],
                                    "alert_id": item["id"]})

    # ------------------------------------------------------------------------------------------ blocks
    async def release_expired(self) -> int:
        """End the blocks whose time is over (``security.unblock`` with reason expired)."""
        now = self.clock()
        expired = [a for a, until in self._blocks.items() if until <= now]
        if not expired:
            return 0
        at = datetime.fromtimestamp(now, UTC)
        async with self.sessionmaker() as session:
            await begin_write(session)
            await session.execute(delete(SecurityBlockRow).where(SecurityBlockRow.address.in_(expired),
                                                                 SecurityBlockRow.until <= at))
            await session.commit()
        for address in expired:
            if self._blocks.get(address, now + 1) <= now:
                del self._blocks[address]
                self._publish("unblock", {"address": address, "reason": "expired"})
                if self.audit is not None:
                    self._spawn(self._audit_safe("security.unblock", f"address:{address}",
                                                 {"address": address, "reason": "expired"}))
        log.info("security.blocks_expired", addresses=expired)
        return len(expired)

    async def _audit_safe(self, action: str, target: str, detail: dict[str, Any]) -> None:
        assert self.audit is not None
        try:
            await self.audit(action, target, detail)
        except Exception:
            log.exception("security.audit_failed", action=action)

    async def block(self, address: str, minutes: float, reason: str, alert_id: int | None = None) -> datetime:
        """Block ``address`` for ``minutes`` (the caller audits)."""
        until = datetime.fromtimestamp(self.clock() + minutes * 60, UTC)
        async with self.sessionmaker() as session:
            await begin_write(session)
            row = await session.get(SecurityBlockRow, address)
            if row is None:
                session.add(SecurityBlockRow(address=address, until=until, reason=reason, alert_id=alert_id))
            else:
                row.until, row.reason, row.alert_id = until, reason, alert_id
            await session.commit()
        self._blocks[address] = until.timestamp()
        self._publish("block", {"address": address, "until": until, "alert_id": alert_id})
        return until

    async def unblock(self, address: str) -> bool:
        """End ``address``'s block now; False when it had none (the caller audits)."""
        async with self.sessionmaker() as session:
            await begin_write(session)
            result = await session.execute(delete(SecurityBlockRow).where(SecurityBlockRow.address == address))
            await session.commit()
        had = self._blocks.pop(address, None) is not None or bool(result.rowcount)
        if had:
            self._publish("unblock", {"address": address, "reason": "manual"})
        return had

    async def blocks(self) -> list[dict[str, Any]]:
        now = datetime.fromtimestamp(self.clock(), UTC)
        async with self.sessionmaker() as session:
            rows = (await session.execute(select(SecurityBlockRow).where(SecurityBlockRow.until > now)
                                          .order_by(SecurityBlockRow.until.desc()))).scalars().all()
            return [{"address": r.address, "until": r.until, "reason": r.reason, "alert_id": r.alert_id,
                     "created_at": r.created_at} for r in rows]

    # ------------------------------------------------------------------------------------------ alerts
    async def acknowledge(self, alert_id: int, user: str, note: str) -> dict[str, Any] | None:
        """Mark an alert acknowledged with a note (again: the note and time are replaced); None: no such alert."""
        async with self.sessionmaker() as session:
            await begin_write(session)
            row = await session.get(SecurityAlertRow, alert_id)
            if row is None:
                return None
            row.state, row.ack_user, row.ack_at, row.ack_note = "acknowledged", user[:64], utcnow(), note
            await session.commit()
            out = alert_dict(row, self.rules)
        self._publish("alert", out)
        return out

    async def get_alert(self, alert_id: int) -> dict[str, Any] | None:
        async with self.sessionmaker() as session:
            row = await session.get(SecurityAlertRow, alert_id)
            return alert_dict(row, self.rules) if row is not None else None

    async def alerts(self, *, state: str | None = None, rule: str | None = None, severity: str | None = None,
                     since: datetime | None = None, until: datetime | None = None, source_ip: str | None = None,
                     offset: int = 0, limit: int = 100,
                     without_devices: bool = False) -> tuple[int, list[dict[str, Any]]]:
        """``without_devices``: only alerts whose key is not a device (for callers without the full scope)."""
        conds = []
        if without_devices:
            device_rules = [r.name for r in self.engine.rules if r.key == "device_id"]
            if device_rules:
                conds.append(SecurityAlertRow.rule.not_in(device_rules))
        if state:
            conds.append(SecurityAlertRow.state == state)
        if rule:
            conds.append(SecurityAlertRow.rule == rule)
        if severity:
            conds.append(SecurityAlertRow.severity == severity)
        if since is not None:
            conds.append(SecurityAlertRow.last_at >= since)
        if until is not None:
            conds.append(SecurityAlertRow.first_at < until)
        if source_ip:
            conds.append(SecurityAlertRow.source_ip == source_ip)
        async with self.sessionmaker() as session:
            total = await session.scalar(select(func.count()).select_from(SecurityAlertRow).where(*conds))
            rows = (await session.execute(select(SecurityAlertRow).where(*conds)
                                          .order_by(SecurityAlertRow.id.desc()).offset(offset).limit(limit))).scalars()
            return int(total or 0), [alert_dict(r, self.rules) for r in rows]

    async def events(self, *, kind: str | None = None, severity: str | None = None, since: datetime | None = None,
                     until: datetime | None = None, source_ip: str | None = None, user: str | None = None,
                     device_id: str | None = None, offset: int = 0, limit: int = 100,
                     without_devices: bool = False) -> tuple[int, list[dict[str, Any]]]:
        """``without_devices``: only events that name no device (for callers without the full scope)."""
        conds = []
        if without_devices:
            conds.append(SecurityEventRow.device_id.is_(None))
        for column, value in ((SecurityEventRow.kind, kind), (SecurityEventRow.severity, severity),
                              (SecurityEventRow.source_ip, source_ip), (SecurityEventRow.user, user),
                              (SecurityEventRow.device_id, device_id)):
            if value:
                conds.append(column == value)
        if since is not None:
            conds.append(SecurityEventRow.time >= since)
        if until is not None:
            conds.append(SecurityEventRow.time < until)
        async with self.sessionmaker() as session:
            total = await session.scalar(select(func.count()).select_from(SecurityEventRow).where(*conds))
            rows = (await session.execute(select(SecurityEventRow).where(*conds)
                                          .order_by(SecurityEventRow.id.desc()).offset(offset).limit(limit))).scalars()
            return int(total or 0), [event_dict(r) for r in rows]

    # ------------------------------------------------------------------------------------------ retention
    async def purge(self) -> dict[str, int]:
        """Delete events, and acknowledged alerts, older than ``retention_days``; forget idle rule keys."""
        cutoff = datetime.fromtimestamp(self.clock(), UTC) - timedelta(days=self.retention_days)
        async with self.sessionmaker() as session:
            await begin_write(session)
            events = await session.execute(delete(SecurityEventRow).where(SecurityEventRow.time < cutoff))
            alerts = await session.execute(delete(SecurityAlertRow).where(SecurityAlertRow.state == "acknowledged",
                                                                          SecurityAlertRow.last_at < cutoff))
            await session.commit()
        self.engine.expire(self.clock())
        out = {"events": int(events.rowcount or 0), "alerts": int(alerts.rowcount or 0)}
        if any(out.values()):
            log.info("security.retention", **out, retention_days=self.retention_days)
        return out
