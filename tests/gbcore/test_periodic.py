"""gbcore.periodic: the one lifecycle of the background loops (short real intervals, well under a second each)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gbcore.periodic import Backoff, PeriodicTask, backoff_delay


class Recorder:
    """A logger double: keeps ``(level, event, kv)``."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def exception(self, event: str, **kv: Any) -> None:
        self.lines.append(("exception", event, kv))

    def error(self, event: str, **kv: Any) -> None:
        self.lines.append(("error", event, kv))


async def _until(cond: Any, timeout: float = 2.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


async def test_runs_every_interval_first_run_after_one_interval() -> None:
    loop = asyncio.get_running_loop()
    times: list[float] = []

    async def tick() -> None:
        times.append(loop.time())

    task = PeriodicTask("t", tick, interval=0.05)
    t0 = loop.time()
    task.start()
    task.start()  # idempotent
    await _until(lambda: len(times) >= 3)
    await task.stop()
    assert times[0] - t0 >= 0.045  # the first run one interval after start
    assert all(b - a >= 0.045 for a, b in zip(times, times[1:], strict=False))
    assert task.runs >= 3 and task.failures == 0 and task.last_run is not None and task.last_success is not None
    assert not task.running


async def test_first_delay_zero_runs_at_once() -> None:
    ran = asyncio.Event()

    async def tick() -> None:
        ran.set()

    task = PeriodicTask("t", tick, interval=60.0, first_delay=0.0)
    task.start()
    await asyncio.wait_for(ran.wait(), 0.5)
    assert task.next_delay == 60.0
    await task.stop()


async def test_an_exception_is_logged_and_the_loop_goes_on() -> None:
    calls = 0
    log = Recorder()

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise ValueError(f"boom {calls}")

    task = PeriodicTask("flaky", flaky, interval=0.01, logger=log, failure_event="thing.failed")
    task.start()
    await _until(lambda: calls >= 4)
    await task.stop()
    assert [(lvl, ev, kv["task"], kv["failures"]) for lvl, ev, kv in log.lines] == [
        ("exception", "thing.failed", "flaky", 1), ("exception", "thing.failed", "flaky", 2)]
    assert task.failures == 0  # reset by the success
    assert task.last_error == "ValueError: boom 2"  # kept for the status page
    assert task.status()["last_error"] == "ValueError: boom 2"


def test_backoff_delay_grows_caps_and_jitters() -> None:
    assert [backoff_delay(n, base=1.0, cap=10.0) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    assert backoff_delay(3, base=0.5) == 2.0  # no cap: first_delay, then doubling
    assert backoff_delay(10_000, base=1.0, cap=30.0) == 30.0  # no overflow
    assert backoff_delay(3, base=1.0, cap=10.0, jitter=0.5, rng=lambda: 1.0) == 2.0  # 4 * (1 - 0.5)
    assert backoff_delay(3, base=1.0, cap=10.0, jitter=0.5, rng=lambda: 0.0) == 4.0
    b = Backoff(base=1.0, cap=5.0, jitter=0.25)
    assert all(3.0 <= b.delay(3) <= 4.0 for _ in range(50))


async def test_backoff_grows_after_failures_and_resets_on_success() -> None:
    outcomes = [False, False, False, False, True, False, True]  # False: the run fails
    seen: list[float | None] = []  # the delay that preceded each run

    async def run() -> None:
        seen.append(task.next_delay)
        if not outcomes.pop(0):
            raise RuntimeError("down")

    task = PeriodicTask("b", run, interval=0.05, first_delay=0.0,
                        backoff=Backoff(base=0.002, cap=0.008, jitter=0.0), logger=Recorder())
    task.start()
    await _until(lambda: not outcomes)
    await task.stop()
    assert seen == [0.0, 0.002, 0.004, 0.008, 0.008, 0.05, 0.002]


async def test_stop_cancels_a_run_in_progress_and_waits() -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def slow() -> None:
        started.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    task = PeriodicTask("slow", slow, interval=0.01, first_delay=0.0)
    task.start()
    await asyncio.wait_for(started.wait(), 0.5)
    assert task.busy and task.running
    await asyncio.wait_for(task.stop(), 0.5)
    assert cancelled.is_set() and not task.running and not task.busy
    await task.stop()  # twice is fine


async def test_stop_with_grace_lets_the_run_finish() -> None:
    started, finished = asyncio.Event(), asyncio.Event()

    async def work() -> None:
        started.set()
        await asyncio.sleep(0.05)
        finished.set()

    task = PeriodicTask("w", work, interval=0.01, first_delay=0.0)
    task.start()
    await asyncio.wait_for(started.wait(), 0.5)
    await task.stop(grace=1.0)
    assert finished.is_set() and task.runs == 1 and not task.running


async def test_stop_of_a_sleeping_loop_returns_at_once() -> None:
    async def never() -> None:
        raise AssertionError("must not run")

    task = PeriodicTask("idle", never, interval=30.0)
    task.start()
    await asyncio.sleep(0.01)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await task.stop(grace=5.0)  # nothing in progress: no grace to wait for
    assert loop.time() - t0 < 0.5 and task.runs == 0


async def test_trigger_runs_early_and_run_now_waits_for_the_run() -> None:
    calls = 0

    async def tick() -> None:
        nonlocal calls
        calls += 1

    task = PeriodicTask("t", tick, interval=30.0)
    task.trigger()  # a trigger before start is kept: the first run comes at once
    task.start()
    await _until(lambda: calls == 1)
    task.trigger()
    await _until(lambda: calls == 2, timeout=0.5)
    await asyncio.wait_for(task.run_now(), 0.5)
    assert calls == 3
    await task.stop()
    with pytest.raises(RuntimeError):
        await task.run_now()  # not running


async def test_run_now_raises_what_the_run_raised() -> None:
    async def bad() -> None:
        raise KeyError("x")

    task = PeriodicTask("bad", bad, interval=30.0, logger=Recorder())
    task.start()
    with pytest.raises(KeyError):
        await asyncio.wait_for(task.run_now(), 0.5)
    assert task.running and task.failures == 1
    await task.stop()


async def test_a_trigger_during_a_run_makes_the_next_run_start_right_after() -> None:
    calls = 0
    gate = asyncio.Event()

    async def tick() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            await gate.wait()

    task = PeriodicTask("t", tick, interval=30.0, first_delay=0.0)
    task.start()
    await _until(lambda: task.busy)
    task.trigger()
    gate.set()
    await _until(lambda: calls == 2, timeout=0.5)
    await task.stop()


async def test_interval_callable_is_asked_after_each_run_next_daily_time() -> None:
    """A "daily at HH:MM" schedule: the callable gives the seconds until the next HH:MM on a fake clock."""
    now = [datetime(2026, 10, 21, 23, 59, 59, 900_000, tzinfo=UTC)]

    def until_next_midnight() -> float:
        at = datetime.combine(now[0].date() + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
        return max(0.0, (at - now[0]).total_seconds())

    delays: list[float | None] = []

    async def daily() -> None:
        delays.append(task.next_delay)
        now[0] += timedelta(seconds=0.05)  # the run takes a while; the callable sees the clock after it

    task = PeriodicTask("daily", daily, interval=until_next_midnight, first_delay=0.0)
    task.start()
    await _until(lambda: len(delays) >= 1)
    await _until(lambda: task.next_delay is not None and task.next_delay > 0)
    await task.stop()
    assert delays[0] == 0.0
    assert task.next_delay == pytest.approx(0.05)  # 23:59:59.95 -> midnight


async def test_report_scheduler_waits_until_the_next_scheduled_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """The daily report's PeriodicTask: the first run at start, then the next HH:MM (at least 1 s away)."""
    from gbcore.settings import Settings
    from ops_portal.availability import scheduler as mod

    settings = Settings(report_schedule="00:05", report_timezone="Asia/Shanghai")
    sched = mod.ReportScheduler(jobs=None, settings=settings)  # type: ignore[arg-type]
    assert sched.periodic.first_delay == 0.0
    fixed = datetime(2026, 10, 21, 16, 4, tzinfo=UTC)  # 00:04 local
    monkeypatch.setattr(mod, "utcnow", lambda: fixed)
    assert sched.periodic._interval() == 60.0
    monkeypatch.setattr(mod, "utcnow", lambda: fixed + timedelta(seconds=59.5))
    assert sched.periodic._interval() == 1.0  # never less than a second


async def test_an_interval_callable_that_raises_ends_the_loop_with_a_log_line() -> None:
    log = Recorder()

    async def tick() -> None:
        pass

    def broken() -> float:
        raise ValueError("bad schedule")

    task = PeriodicTask("sched", tick, interval=broken, first_delay=0.0, logger=log)
    task.start()
    await _until(lambda: not task.running)
    assert log.lines[-1][:2] == ("error", "periodic.ended") and task.last_error == "ValueError: bad schedule"
    await task.stop()
