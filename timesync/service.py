"""The time service: the platform's own clock (NTP server and upstream check) and its devices' clocks.

* NTP server: :class:`timesync.server.NtpServer` answers with :meth:`TimeService.reference`: the host clock
  (``LOCL``, stratum ``ntp_local_stratum``) when no ``ntp_servers`` are configured, the upstream it checked
  (stratum + 1) while synchronised, unsynchronised (leap 3, stratum 16) when servers are configured and
  none answers or the offset is beyond 0.5 s.
* Upstream check every ``ntp_check_interval`` (:mod:`timesync.client`): an ``ntp_unsynced`` security event
  when the platform becomes unsynchronised (once per crossing), ``status()["healthy"]`` false meanwhile.
* Device clocks: every DeviceStatus answer (:meth:`on_device_time`, whoever asked) is a sample; each online
  device is asked ``clock_first_check_delay`` s after it comes online and then every
  ``clock_check_interval`` s; the skew is estimated by :mod:`timesync.skew` and kept in ``clock_samples``
  (``HISTORY_DAYS``).  A device crossing ``clock_skew_limit`` raises ``clock_skew`` once per crossing and,
  with ``clock_skew_ticket``, opens a fault ticket through the injected ``open_ticket``.

The SIP service, the security sink and the ticket opener are injected (the assembly wires them:
:mod:`gbops.time_wiring`); this package imports only the ground floor.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select

from gbcore.db import begin_write
from gbcore.log import get_logger
from gbcore.periodic import PeriodicTask
from timesync import ntp, skew
from timesync.client import MAX_OFFSET, ServerAnswer, check_servers, parse_servers
from timesync.models import ClockSampleRow
from timesync.server import NtpServer

__all__ = ["COMPLIANCE_LIMIT", "HISTORY_DAYS", "DeviceOffline", "NoAnswer", "NoDeviceTime", "TimeConfig",
           "TimeService"]

log = get_logger("gbops.time")

#: Clock samples are kept this long (the compliance measure reads 24 h).
HISTORY_DAYS = 7
#: The requirement's measure: platform-device error at most 1 s over 24 h.
COMPLIANCE_LIMIT = 1.0
#: Samples within this many seconds of the newest are combined (see :func:`timesync.skew.combine`).
COMBINE_WINDOW = 900.0
#: Most device clock checks in flight at once.
MAX_CHECKS = 20
#: An answer to no query of ours is taken at most once per this many seconds per device (a device that floods
#: DeviceStatus answers does not flood the table).
UNSOLICITED_GAP = 10.0


class DeviceOffline(Exception):
    """The device is not online: its clock cannot be asked."""


class NoDeviceTime(Exception):
    """The device answered DeviceStatus without a readable DeviceTime."""


class NoAnswer(TimeoutError):
    """The device did not answer the DeviceStatus query (in time)."""


@dataclass(frozen=True)
class TimeConfig:
    ntp_host: str = "0.0.0.0"
    ntp_port: int = 0
    ntp_servers: tuple[tuple[str, int], ...] = ()
    ntp_local_stratum: int = 10
    ntp_check_interval: float = 300.0
    clock_check_interval: float = 300.0
    clock_first_check_delay: float = 10.0
    clock_skew_limit: float = 1.0
    clock_skew_ticket: bool = False

    @classmethod
    def from_settings(cls, s: Any) -> TimeConfig:
        return cls(
            ntp_host=s.ntp_host or s.sip_host, ntp_port=s.ntp_port,
            ntp_servers=tuple(parse_servers(s.ntp_servers)), ntp_local_stratum=s.ntp_local_stratum,
            ntp_check_interval=s.ntp_check_interval, clock_check_interval=s.clock_check_interval,
            clock_first_check_delay=s.clock_first_check_delay, clock_skew_limit=s.clock_skew_limit,
            clock_skew_ticket=s.clock_skew_ticket,
        )


def _utc(posix: float) -> datetime:
    return datetime.fromtimestamp(posix, UTC)


def _sample(row: ClockSampleRow) -> skew.ClockSample:
    return skew.ClockSample(row.received_at.timestamp(), row.device_time.timestamp(), row.resolution_s,
                            None if row.sent_at is None else row.sent_at.timestamp())


def _precision() -> int:
    return ntp.precision_exponent(time.get_clock_info("time").resolution)


class TimeService:
    def __init__(
        self,
        sessionmaker: Any,
        config: TimeConfig,
        *,
        sink: Any = None,
        device_status: Callable[[str], Awaitable[Any]] | None = None,
        is_online: Callable[[str], bool] = lambda _d: False,
        online_devices: Callable[[], Iterable[str]] = tuple,
        open_ticket: Callable[[str, dict[str, Any]], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.time,
        query_servers: Callable[..., Awaitable[list[ServerAnswer]]] = check_servers,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.config = config
        self.sink = sink
        self.device_status = device_status
        self.is_online = is_online
        self.online_devices = online_devices
        self.open_ticket = open_ticket
        self.clock = clock
        self.query_servers = query_servers
        self.precision = _precision()
        self.ntp_server = NtpServer(config.ntp_host, config.ntp_port, self.reference, clock=clock)
        # own clock
        self.answers: list[ServerAnswer] = []
        self.checked_at: float | None = None
        self.offset: float | None = None
        self._synchronised: bool | None = None if config.ntp_servers else True
        self._upstream: ntp.Reference | None = None
        # device clocks
        self._due: dict[str, float] = {}  # device_id -> when its next check is due (wall clock)
        self._checking: set[str] = set()
        self._over: dict[str, bool] = {}  # device_id -> over the limit at its last sample
        self._waiters: dict[str, list[asyncio.Future[dict[str, Any]]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._slots = asyncio.Semaphore(MAX_CHECKS)
        self._ntp_task: PeriodicTask | None = None
        self._device_task: PeriodicTask | None = None
        self._retention_task: PeriodicTask | None = None
        self._stopped = False
        self._unsolicited: dict[str, float] = {}  # device_id -> when its last unsolicited answer was taken

    @classmethod
    def reader(cls, sessionmaker: Any, config: TimeConfig) -> TimeService:
        """A service that is not running (a portal without the platform's time service): it reads the stored
        clock history; its status says it does not run."""
        service = cls(sessionmaker, config)
        service._synchronised = None
        service.ntp_server.error = "时间服务未运行 / the time service is not running"
        return service

    # ================================================================== lifecycle
    async def start(self) -> None:
        await self.ntp_server.start()
        if self.config.ntp_servers:
            self._ntp_task = PeriodicTask("ntp-check", self.check_ntp, interval=self.config.ntp_check_interval,
                                          first_delay=0, logger=log)
            self._ntp_task.start()
        now = self.clock()
        for device_id in self.online_devices():  # online before this start (restored registrations)
            self._due.setdefault(device_id, now + self.config.clock_first_check_delay)
        self._device_task = PeriodicTask("clock-check", self._run_due_checks,
                                         interval=min(1.0, self.config.clock_check_interval), logger=log)
        self._device_task.start()
        self._retention_task = PeriodicTask("clock-retention", self.trim, interval=3600.0, first_delay=60.0,
                                            logger=log)
        self._retention_task.start()

    async def stop(self) -> None:
        self._stopped = True
        for task in (self._ntp_task, self._device_task, self._retention_task):
            if task is not None:
                await task.stop()
        self.ntp_server.close()
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for waiters in self._waiters.values():
            for w in waiters:
                if not w.done():
                    w.cancel()
        self._waiters.clear()

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ================================================================== the platform's own clock
    @property
    def synchronised(self) -> bool | None:
        """True: synchronised (or the host clock is the reference); False: servers configured and none
        usable, or the offset beyond 0.5 s; None: not checked yet."""
        return self._synchronised

    def reference(self) -> ntp.Reference:
        """What the NTP server's answers say about this clock now."""
        if not self.config.ntp_servers:
            return ntp.local_reference(self.config.ntp_local_stratum, self.clock(), precision=self.precision)
        if self._synchronised and self._upstream is not None:
            return self._upstream
        return ntp.unsynchronised_reference(precision=self.precision,
                                            ref_time=None if self._upstream is None else self._upstream.ref_time)

    async def check_ntp(self) -> dict[str, Any]:
        """Measure the offset against every configured server once; returns :meth:`status`."""
        answers = await self.query_servers(list(self.config.ntp_servers), clock=self.clock)
        self.answers = answers
        self.checked_at = self.clock()
        usable = [a for a in answers if a.ok and a.measurement is not None]
        best = min(usable, key=lambda a: a.measurement.delay) if usable else None  # type: ignore[union-attr]
        was = self._synchronised
        if best is None or best.measurement is None:
            self.offset = None
            synced = False
            reason = "no server answered"
        else:
            m = best.measurement
            self.offset = m.offset
            synced = abs(m.offset) <= MAX_OFFSET
            reason = None if synced else f"offset {m.offset:+.3f} s beyond {MAX_OFFSET} s"
            self._upstream = ntp.upstream_reference(best.address or best.server, m.stratum, m.root_delay,
                                                    m.root_dispersion, m.delay, self.checked_at,
                                                    precision=self.precision)
        self._synchronised = synced
        if not synced and was is not False:
            log.warning("ntp.unsynchronised", reason=reason, offset_s=self.offset,
                        servers=[a.as_dict() for a in answers])
            self._emit("ntp_unsynced", detail={"reason": reason, "offset_s": self.offset,
                                               "servers": [a.as_dict() for a in answers]})
        elif synced and was is False:
            log.info("ntp.synchronised", offset_s=self.offset)
        return self.status()

    def status(self) -> dict[str, Any]:
        """``synchronised`` (see :attr:`synchronised`), ``offset_s`` (the platform's offset from the best
        server; None when not measured), ``servers`` (each server's last answer), ``checked_at`` (UTC),
        ``reference`` (``local``: the host clock, no servers configured; ``servers``), ``healthy``,
        ``ntp_server`` (listening or why not) and the limits."""
        ref = self.reference()
        return {
            "synchronised": self._synchronised,
            "healthy": self._synchronised is not False,
            "offset_s": None if self.offset is None else round(self.offset, 6),
            "max_offset_s": MAX_OFFSET,
            "reference": "servers" if self.config.ntp_servers else "local",
            "servers": [a.as_dict() for a in self.answers] if self.answers else
            [{"server": f"{h}:{p}", "address": None, "ok": None, "error": None, "offset_s": None,
              "delay_s": None, "stratum": None} for h, p in self.config.ntp_servers],
            "checked_at": None if self.checked_at is None else _utc(self.checked_at),
            "stratum": ref.stratum,
            "leap": ref.leap,
            "ref_id": ref.ref_id.decode("ascii", "replace") if ref.ref_id in (b"LOCL", b"INIT") else
            ".".join(str(b) for b in ref.ref_id),
            "ntp_server": self.ntp_server.status(),
            "clock_check_interval_s": self.config.clock_check_interval,
            "clock_skew_limit_s": self.config.clock_skew_limit,
        }

    def _emit(self, kind: str, **kw: Any) -> None:
        if self.sink is None:
            return
        try:
            self.sink.emit(kind, **kw)
        except Exception:  # the sink must not break the clock checks
            log.exception("time.security_emit_failed", kind=kind)

    # ================================================================== device clocks: inputs
    def device_online(self, device_id: str) -> None:
        """A device came online: its clock is asked within ``clock_first_check_delay`` seconds."""
        self._due[device_id] = self.clock() + self.config.clock_first_check_delay

    def device_offline(self, device_id: str) -> None:
        self._due.pop(device_id, None)

    def on_device_time(self, device_id: str, device_time: str | None, sent: float | None,
                       received: float) -> None:
        """A DeviceStatus answer arrived (from the SIP service's event; returns at once)."""
        if self._stopped:
            return
        if sent is None:
            last = self._unsolicited.get(device_id)
            if last is not None and 0 <= received - last < UNSOLICITED_GAP:
                return
            self._unsolicited[device_id] = received
        self._spawn(self._on_device_time(device_id, device_time, sent, received))

    async def _on_device_time(self, device_id: str, device_time: str | None, sent: float | None,
                              received: float) -> None:
        try:
            result = await self.record_sample(device_id, device_time, sent, received)
        except Exception as exc:
            log.exception("clock.sample_failed", device_id=device_id)
            self._resolve(device_id, exc)
            return
        self._resolve(device_id, result if result is not None else NoDeviceTime(device_id))

    def _resolve(self, device_id: str, result: Any) -> None:
        for w in self._waiters.pop(device_id, []):
            if w.done():
                continue
            if isinstance(result, BaseException):
                w.set_exception(result)
            else:
                w.set_result(result)

    async def record_sample(self, device_id: str, device_time: str | None, sent: float | None,
                            received: float) -> dict[str, Any] | None:
        """Store one reading and update the device's estimate; None when ``device_time`` is unreadable."""
        parsed = skew.parse_device_time(device_time)
        if parsed is None:
            if device_time:
                log.info("clock.unreadable_device_time", device_id=device_id, device_time=device_time[:40])
            return None
        posix, resolution = parsed
        sample = skew.ClockSample(received, posix, resolution, sent)
        low, high = sample.bounds
        since = _utc(received - COMBINE_WINDOW)
        async with self.sessionmaker() as session:
            rows = (await session.scalars(
                select(ClockSampleRow).where(ClockSampleRow.device_id == device_id,
                                             ClockSampleRow.received_at >= since)
                .order_by(ClockSampleRow.received_at.desc()).limit(50))).all()
            est = skew.combine([*map(_sample, rows), sample], window=COMBINE_WINDOW)
            assert est is not None
            await begin_write(session)
            session.add(ClockSampleRow(
                device_id=device_id, source="device_status", sent_at=None if sent is None else _utc(sent),
                received_at=_utc(received), device_time=_utc(posix), resolution_s=resolution, low_s=low,
                high_s=high, skew_s=est.skew, uncertainty_s=est.uncertainty))
            await session.commit()
        if self.is_online(device_id):  # whoever asked, the next scheduled check is one interval from now
            self._due[device_id] = received + self.config.clock_check_interval
        limit = self.config.clock_skew_limit
        over = not est.within(limit)
        was = self._over.get(device_id, False)
        self._over[device_id] = over
        detail = {"skew_s": round(est.skew, 3), "uncertainty_s": round(est.uncertainty, 3), "limit_s": limit,
                  "samples": est.samples, "device_time": device_time}
        log.info("clock.sample", device_id=device_id, skew_s=round(est.skew, 3),
                 uncertainty_s=round(est.uncertainty, 3), over=over)
        if over and not was:
            log.warning("clock.skew_over_limit", device_id=device_id, **detail)
            self._emit("clock_skew", device_id=device_id, detail=detail)
            if self.config.clock_skew_ticket and self.open_ticket is not None:
                self._spawn(self._ticket(device_id, detail))
        elif was and not over:
            log.info("clock.skew_back_within_limit", device_id=device_id, skew_s=round(est.skew, 3))
        return {"skew_s": est.skew, "uncertainty_s": est.uncertainty, "within_limit": not over,
                "received_at": _utc(received)}

    async def _ticket(self, device_id: str, detail: dict[str, Any]) -> None:
        assert self.open_ticket is not None
        try:
            await self.open_ticket(device_id, detail)
        except Exception:
            log.exception("clock.ticket_failed", device_id=device_id)

    # ================================================================== device clocks: checks
    async def _run_due_checks(self) -> None:
        now = self.clock()
        for device_id, due in list(self._due.items()):
            if due <= now and device_id not in self._checking:
                if not self.is_online(device_id):
                    self._due.pop(device_id, None)
                    continue
                self._due[device_id] = now + self.config.clock_check_interval  # a sample moves it again
                self._checking.add(device_id)
                self._spawn(self._scheduled_check(device_id))

    async def _scheduled_check(self, device_id: str) -> None:
        try:
            async with self._slots:
                await self.check_device(device_id)
        except (DeviceOffline, NoDeviceTime, TimeoutError):
            pass
        except Exception as exc:
            log.info("clock.check_failed", device_id=device_id, error=f"{type(exc).__name__}: {exc}")
        finally:
            self._checking.discard(device_id)

    async def check_device(self, device_id: str, *, timeout: float = 15.0) -> dict[str, Any]:
        """Ask the device's DeviceStatus now and wait for its sample.  :class:`DeviceOffline` when it is not
        online; :class:`NoDeviceTime` when it answered without a readable time; ``TimeoutError``
        (:class:`NoAnswer`: the query failed or timed out)."""
        if self.device_status is None or not self.is_online(device_id):
            raise DeviceOffline(device_id)
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._waiters.setdefault(device_id, []).append(waiter)
        try:
            async with asyncio.timeout(timeout):
                try:
                    await self.device_status(device_id)
                except Exception as exc:
                    if type(exc).__name__ == "DeviceNotReachable":
                        raise DeviceOffline(device_id) from exc
                    raise NoAnswer(f"{device_id}: {exc}") from exc
                return await waiter
        finally:
            waiters = self._waiters.get(device_id)
            if waiters and waiter in waiters:
                waiters.remove(waiter)

    # ================================================================== reads
    async def device_clock(self, device_id: str) -> dict[str, Any]:
        """``skew_s`` (the latest estimate), ``uncertainty_s``, ``worst_24h_s``, ``within_limit``, ``samples``
        (in 24 h), ``last_checked`` (UTC), ``limit_s``; nulls before the first sample."""
        since = _utc(self.clock() - 86400)
        async with self.sessionmaker() as session:
            latest = (await session.scalars(
                select(ClockSampleRow).where(ClockSampleRow.device_id == device_id)
                .order_by(ClockSampleRow.received_at.desc()).limit(1))).first()
            row = (await session.execute(
                select(func.count(), func.min(ClockSampleRow.skew_s), func.max(ClockSampleRow.skew_s))
                .where(ClockSampleRow.device_id == device_id, ClockSampleRow.received_at >= since))).one()
        count, lo, hi = int(row[0] or 0), row[1], row[2]
        limit = self.config.clock_skew_limit
        if latest is None:
            return {"skew_s": None, "uncertainty_s": None, "worst_24h_s": None, "within_limit": None,
                    "samples": 0, "last_checked": None, "limit_s": limit}
        return {
            "skew_s": round(latest.skew_s, 3), "uncertainty_s": round(latest.uncertainty_s, 3),
            "worst_24h_s": None if count == 0 else round(skew.worst([lo, hi]) or 0.0, 3),
            "within_limit": abs(latest.skew_s) <= limit, "samples": count, "last_checked": latest.received_at,
            "limit_s": limit,
        }

    async def device_clocks(self, device_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """:meth:`device_clock` for many devices in two queries (the console's table)."""
        ids = list(dict.fromkeys(device_ids))
        out: dict[str, dict[str, Any]] = {}
        if not ids:
            return out
        since = _utc(self.clock() - 86400)
        limit = self.config.clock_skew_limit
        async with self.sessionmaker() as session:
            worst_rows = (await session.execute(
                select(ClockSampleRow.device_id, func.count(), func.min(ClockSampleRow.skew_s),
                       func.max(ClockSampleRow.skew_s), func.max(ClockSampleRow.received_at))
                .where(ClockSampleRow.device_id.in_(ids), ClockSampleRow.received_at >= since)
                .group_by(ClockSampleRow.device_id))).all()
            last_at = {r[0]: r[4] for r in worst_rows}
            latest: dict[str, ClockSampleRow] = {}
            if last_at:
                for r in (await session.scalars(select(ClockSampleRow).where(
                        ClockSampleRow.device_id.in_(list(last_at)),
                        ClockSampleRow.received_at.in_(list(last_at.values()))))).all():
                    if r.received_at == last_at.get(r.device_id):
                        latest[r.device_id] = r
        stats = {r[0]: (int(r[1]), r[2], r[3]) for r in worst_rows}
        for d in ids:
            row = latest.get(d)
            if row is None:
                out[d] = {"skew_s": None, "uncertainty_s": None, "worst_24h_s": None, "within_limit": None,
                          "samples": 0, "last_checked": None, "limit_s": limit}
                continue
            count, lo, hi = stats[d]
            out[d] = {"skew_s": round(row.skew_s, 3), "uncertainty_s": round(row.uncertainty_s, 3),
                      "worst_24h_s": round(skew.worst([lo, hi]) or 0.0, 3),
                      "within_limit": abs(row.skew_s) <= limit, "samples": count,
                      "last_checked": row.received_at, "limit_s": limit}
        return out

    async def compliance(self, device_ids: Iterable[str] | None = None) -> dict[str, Any]:
        """The requirement's measure: of the devices with clock samples in the last 24 h (of ``device_ids``
        when given), the share whose worst skew stayed within 1 s.  ``share`` None when none was measured."""
        since = _utc(self.clock() - 86400)
        wanted = None if device_ids is None else list(dict.fromkeys(device_ids))
        q = (select(ClockSampleRow.device_id, func.min(ClockSampleRow.skew_s), func.max(ClockSampleRow.skew_s))
             .where(ClockSampleRow.received_at >= since).group_by(ClockSampleRow.device_id))
        if wanted is not None:
            if not wanted:
                return self._compliance({}, 0)
            q = q.where(ClockSampleRow.device_id.in_(wanted))
        async with self.sessionmaker() as session:
            rows = (await session.execute(q)).all()
        worst = {r[0]: skew.worst([r[1], r[2]]) or 0.0 for r in rows}
        unmeasured = 0 if wanted is None else len([d for d in wanted if d not in worst])
        return self._compliance(worst, unmeasured)

    @staticmethod
    def _compliance(worst: dict[str, float], unmeasured: int) -> dict[str, Any]:
        over = sorted(((d, w) for d, w in worst.items() if abs(w) > COMPLIANCE_LIMIT), key=lambda x: -abs(x[1]))
        measured = len(worst)
        within = measured - len(over)
        return {
            "share": None if measured == 0 else round(within / measured, 4),
            "within": within, "measured": measured, "unmeasured": unmeasured,
            "limit_s": COMPLIANCE_LIMIT, "window_hours": 24,
            "devices_over": [{"device_id": d, "worst_24h_s": round(w, 3)} for d, w in over],
        }

    async def trim(self) -> int:
        """Delete samples older than :data:`HISTORY_DAYS`; returns how many."""
        cutoff = _utc(self.clock()) - timedelta(days=HISTORY_DAYS)
        async with self.sessionmaker() as session:
            await begin_write(session)
            result = await session.execute(delete(ClockSampleRow).where(ClockSampleRow.received_at < cutoff))
            await session.commit()
        return int(result.rowcount or 0)  # type: ignore[attr-defined]
