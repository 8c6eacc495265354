"""PTZ control with priority, presets, tours, home and device commands, over the :class:`DeviceCommands` port.

:class:`ControlService` is what the assembly wires (``gbops/app.py``) and the portal calls
(``request.app.state.control``).  The rules live in the sans-IO :class:`~device_control.arbiter.Arbiter`;
this service validates input, sends what the arbiter allows, keeps one timer task on the arbiter's next
deadline (move watchdog, lock ends, restore, tour steps), stores tours, homes and preset names, and audits
what the platform does by itself (``ptz.control`` watchdog stops, ``ptz.preset`` restores, ``ptz.tour``
steps, yields, resumes, ends) through ``audit(action, target, detail)`` as the system.  User commands and
refusals are audited by the portal, which knows the user's address and session.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
import unicodedata
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from device_control.arbiter import (
    Action,
    Arbiter,
    CruiseStart,
    Grant,
    Restore,
    StopMove,
    TourEnd,
    TourResume,
    TourStep,
    TourYield,
)
from device_control.models import PtzHomeRow, PtzPresetNameRow, PtzTourRow
from device_control.types import (
    ACTIONS,
    DEVICE_COMMANDS,
    PRESET_OPS,
    TOUR_MODES,
    CommandResult,
    ControlError,
    DeviceCommands,
    Home,
    LockState,
    Operator,
    Preset,
    PtzLocked,
    Tour,
    TourPoint,
)
from gbcore.db import begin_write, utcnow
from gbcore.ids import ChannelRef, valid_gb_id
from gbcore.log import get_logger

__all__ = ["MAX_TOUR_POINTS", "MIN_DWELL_S", "MAX_DWELL_S", "ControlService"]

log = get_logger("gbops.ptz")

Audit = Callable[[str, str, dict], Awaitable[None]]

MIN_DWELL_S = 2.0
MAX_DWELL_S = 4095.0  # the cruise dwell is a 12-bit value in the PTZCmd
MAX_TOUR_POINTS = 255
MAX_NAME = 32  # PresetName / CruiseTrackName: 32 bytes at most on the wire (GB/T 28181-2022 A.2.3.1.2)
MAX_TOUR_NAME = 64
MAX_RESET_TIME = 86400

#: the parameters each device command accepts (besides ``channel_id``, the command's target)
_COMMAND_PARAMS: dict[str, dict[str, tuple[type, int, int]]] = {
    "teleboot": {},
    "record_start": {"stream_number": (int, 0, 15)},
    "record_stop": {"stream_number": (int, 0, 15)},
    "guard": {},
    "unguard": {},
    "alarm_reset": {"method": (int, 0, 9), "type": (int, 0, 99)},
    "iframe": {},
    "home_position": {"enabled": (bool, 0, 1), "reset_time": (int, 0, MAX_RESET_TIME), "preset": (int, 0, 255)},
}


def _err(code: str, message: str, status: int = 422) -> ControlError:
    return ControlError(code, message, status)


def _int_in(value: Any, lo: int, hi: int, code: str, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise _err(code, f"{what}须为 {lo} 到 {hi} 的整数 / {what} must be an integer {lo}..{hi}")
    return value


def _clean_name(value: Any, limit: int, code: str, *, encoded: bool = True) -> str:
    """A trimmed, printable name: at most ``limit`` UTF-8 bytes (``encoded``) or characters."""
    if not isinstance(value, str):
        raise _err(code, "名称须为文本 / the name must be text")
    text = value.strip()
    if not text:
        raise _err(code, "名称不能为空 / the name must not be empty")
    if any(unicodedata.category(ch).startswith("C") for ch in text):
        raise _err(code, "名称含有控制字符 / the name contains control characters")
    size = len(text.encode("utf-8")) if encoded else len(text)
    if size > limit:
        unit = "字节 / bytes" if encoded else "个字符 / characters"
        raise _err(code, f"名称过长（最多 {limit} {unit}）/ the name is too long (at most {limit})")
    return text


def _channel(channel: Any) -> ChannelRef:
    try:
        ch = ChannelRef(*channel)
    except TypeError:
        raise _err("bad_channel", "通道无效 / invalid channel") from None
    if not (isinstance(ch.device_id, str) and isinstance(ch.channel_id, str) and valid_gb_id(ch.device_id)
            and valid_gb_id(ch.channel_id)):
        raise _err("bad_channel", "通道编号无效 / invalid channel id")
    return ch


def _operator(op: Operator) -> Operator:
    if not isinstance(op, Operator):
        raise TypeError("op must be an Operator")
    if isinstance(op.level, bool) or not isinstance(op.level, int) or not 1 <= op.level <= 9:
        raise _err("bad_level", "云台控制级别须为 1 到 9 / the PTZ level must be 1..9", 403)
    return op


def _points(points: Iterable[Any]) -> tuple[TourPoint, ...]:
    if isinstance(points, str | bytes | Mapping) or not isinstance(points, Iterable):
        raise _err("bad_tour", "巡航点须为列表 / points must be a list")
    out = []
    for p in points:
        if isinstance(p, TourPoint):
            preset, dwell = p.preset, p.dwell_s
        elif isinstance(p, Mapping):
            if set(p) - {"preset", "dwell_s"}:
                raise _err("bad_tour", "巡航点只含 preset 与 dwell_s / a point has only preset and dwell_s")
            preset, dwell = p.get("preset"), p.get("dwell_s")
        else:
            raise _err("bad_tour", "巡航点无效 / invalid point")
        _int_in(preset, 1, 255, "bad_tour", "预置位 / preset")
        if isinstance(dwell, bool) or not isinstance(dwell, int | float) or not math.isfinite(dwell) \
                or not MIN_DWELL_S <= dwell <= MAX_DWELL_S:
            raise _err("bad_tour", f"停留时间须为 {MIN_DWELL_S:.0f} 到 {MAX_DWELL_S:.0f} 秒 / dwell_s must be "
                                   f"{MIN_DWELL_S:.0f}..{MAX_DWELL_S:.0f} s")
        out.append(TourPoint(preset, float(dwell)))
        if len(out) > MAX_TOUR_POINTS:
            raise _err("bad_tour", f"巡航点最多 {MAX_TOUR_POINTS} 个 / at most {MAX_TOUR_POINTS} points")
    if not out:
        raise _err("bad_tour", "巡航至少需要一个预置位 / a tour needs at least one point")
    return tuple(out)


def _points_json(points: tuple[TourPoint, ...]) -> str:
    return json.dumps([{"preset": p.preset, "dwell_s": p.dwell_s} for p in points], separators=(",", ":"))


def _points_of(text: str) -> tuple[TourPoint, ...]:
    return tuple(TourPoint(int(p["preset"]), float(p["dwell_s"])) for p in json.loads(text or "[]"))


def _owner_of(row: PtzTourRow) -> Operator:
    return Operator(row.owner_id or "", row.owner or "", row.owner_level, row.owner_display, row.owner_kind)


def _holder_detail(op: Operator | None) -> dict:
    if op is None:
        return {}
    return {"holder": op.username, "holder_level": op.level}


class ControlService:
    def __init__(
        self,
        commands: DeviceCommands,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        lock_seconds: float = 30.0,
        max_move: float = 10.0,
        restore_below_level: int = 0,
        audit: Audit | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.commands = commands
        self.sessionmaker = sessionmaker
        self.arbiter = Arbiter(lock_seconds=lock_seconds, max_move=max_move,
                               restore_below_level=restore_below_level)
        self.audit = audit
        self.clock = clock
        self._wake = asyncio.Event()
        self._timer: asyncio.Task | None = None
        self._due_lock = asyncio.Lock()
        self._groups: dict[int, int] = {}  # running device tours: tour id -> cruise group
        self.started = False

    # ============================================================================ lifecycle
    async def start(self) -> None:
        """Resume the tours that were running when the platform stopped, and start the timer."""
        async with self.sessionmaker() as session:
            rows = (await session.scalars(select(PtzTourRow).where(PtzTourRow.running.is_(True))
                                          .order_by(PtzTourRow.id))).all()
        for row in rows:
            ch = ChannelRef(row.device_id, row.channel_id)
            try:
                grant = self.arbiter.start_tour(ch, row.id, _owner_of(row), self._tour_points(row), row.loop,
                                                self.clock())
            except (ControlError, ValueError) as exc:
                log.warning("ptz.tour_not_resumed", channel=ch.key, tour_id=row.id, error=str(exc))
                continue
            if row.mode == "device" and row.cruise_group is not None:
                self._groups[row.id] = row.cruise_group
            await self._carry_out(grant.actions)
        self._timer = asyncio.create_task(self._run_timer(), name="ptz.timer")
        self.started = True

    async def stop(self) -> None:
        """Stop the timer.  Running tours stay marked running and resume at the next start."""
        self.started = False
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
            self._timer = None

    async def _run_timer(self) -> None:
        while True:
            try:
                self._wake.clear()
                await self.run_due()
                deadline = self.arbiter.next_deadline()
                if deadline is None:
                    await self._wake.wait()
                    continue
                delay = deadline - self.clock()
                if delay > 0:
                    # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel when the wake-up
                    # comes at the same moment
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await self._wake.wait()
            except asyncio.CancelledError:
                raise
            except Exception:  # never let the timer die: a stuck dome is worse than a log line
                log.exception("ptz.timer_failed")
                await asyncio.sleep(0.5)

    async def run_due(self) -> list[Action]:
        """Carry out everything the arbiter has due now (the timer calls this; tests on a fake clock too)."""
        async with self._due_lock:
            actions = self.arbiter.poll(self.clock())
            await self._carry_out(actions)
        return actions

    def _changed(self) -> None:
        self._wake.set()

    # ============================================================================ system actions
    async def _audit(self, action: str, channel: ChannelRef, detail: dict) -> None:
        if self.audit is None:
            return
        try:
            await self.audit(action, channel.key, {**channel.as_dict(), "system": True, **detail})
        except Exception:
            log.exception("ptz.audit_failed", action=action)

    async def _carry_out(self, actions: Iterable[Action]) -> None:
        for a in actions:
            try:
                await self._carry_out_one(a)
            except Exception:
                log.exception("ptz.action_failed", action=type(a).__name__, channel=a.channel.key)

    async def _send(self, send: Awaitable[Any]) -> str | None:
        """Await a command to the device; the error text when it failed (logged, audited by the caller)."""
        try:
            await send
        except ControlError as exc:
            return str(exc)
        return None

    async def _carry_out_one(self, a: Action) -> None:
        ch = a.channel
        if isinstance(a, StopMove):
            error = await self._send(self.commands.ptz(ch, "stop", 1))
            log.info("ptz.watchdog_stop", channel=ch.key, error=error)
            await self._audit("ptz.control", ch, {"action": "stop", "reason": "max_move",
                                                  "max_move": self.arbiter.max_move, **_holder_detail(a.holder),
                                                  **({"error": error} if error else {})})
        elif isinstance(a, Restore):
            home = await self.get_home(ch)
            if not home.enabled or home.mode != "preset" or home.preset is None:
                return  # no home, or the dome's own HomePosition returns by itself
            error = await self._send(self.commands.preset(ch, "call", home.preset))
            log.info("ptz.restore", channel=ch.key, preset=home.preset, error=error)
            await self._audit("ptz.preset", ch, {"action": "call", "preset": home.preset, "reason": "restore",
                                                 **_holder_detail(a.holder), **({"error": error} if error else {})})
        elif isinstance(a, TourStep):
            error = await self._send(self.commands.preset(ch, "call", a.preset))
            await self._audit("ptz.tour", ch, {"event": "step", "tour_id": a.tour_id, "index": a.index,
                                               "preset": a.preset, "dwell_s": a.dwell_s,
                                               **({"error": error} if error else {})})
        elif isinstance(a, CruiseStart):
            group = self._groups.get(a.tour_id)
            if group is None:
                return
            error = await self._send(self.commands.cruise(ch, "start", group))
            await self._audit("ptz.tour", ch, {"event": "cruise_start", "tour_id": a.tour_id, "group": group,
                                               **({"error": error} if error else {})})
        elif isinstance(a, TourYield):
            await self._audit("ptz.tour", ch, {"event": "yield", "tour_id": a.tour_id, "by": a.by.username,
                                               "by_level": a.by.level})
        elif isinstance(a, TourResume):
            await self._audit("ptz.tour", ch, {"event": "resume", "tour_id": a.tour_id})
        elif isinstance(a, TourEnd):
            self._groups.pop(a.tour_id, None)
            await self._set_running(a.tour_id, False)
            await self._audit("ptz.tour", ch, {"event": "end", "tour_id": a.tour_id, "replaced": a.replaced})

    # ============================================================================ PTZ
    def lock_state(self, channel: ChannelRef) -> LockState:
        state = self.arbiter.state(_channel(channel), self.clock())
        self._changed()
        return state

    def _request(self, op: Operator, ch: ChannelRef, action: str) -> Grant:
        grant = self.arbiter.request(ch, op, action, self.clock())  # PtzLocked: nothing changed, nothing sent
        self._changed()
        return grant

    async def ptz(self, op: Operator, channel: ChannelRef, action: str, speed: int) -> LockState:
        """Send ``action`` at ``speed`` (1..255) if ``op`` may; the lock state after it.  Raises
        :class:`PtzLocked` (423, nothing sent) or :class:`ControlError` (bad input 422, the port's errors)."""
        op, ch = _operator(op), _channel(channel)
        if action not in ACTIONS:
            raise _err("bad_action", f"未知的云台动作 / unknown PTZ action {str(action)[:32]!r}")
        _int_in(speed, 1, 255, "bad_speed", "速度 / speed")
        grant = self._request(op, ch, action)
        await self._carry_out(grant.actions)
        await self.commands.ptz(ch, action, speed)
        return grant.state

    async def preset(self, op: Operator, channel: ChannelRef, action: str, number: int,
                     name: str | None = None) -> LockState:
        """``action`` "set" | "call" | "delete" preset ``number`` (1..255); ``name`` (with set) is kept on the
        platform and sent as ``PresetName``.  Needs the lock as a move does."""
        op, ch = _operator(op), _channel(channel)
        if action not in PRESET_OPS:
            raise _err("bad_action", f"未知的预置位操作 / unknown preset action {str(action)[:32]!r}")
        _int_in(number, 1, 255, "bad_preset", "预置位 / preset")
        if name is not None:
            if action != "set":
                raise _err("bad_preset", "只有设置预置位时可以命名 / a name goes only with set")
            name = _clean_name(name, MAX_NAME, "bad_name")
        grant = self._request(op, ch, f"preset_{action}")
        await self._carry_out(grant.actions)
        await self.commands.preset(ch, action, number, name)
        if action == "delete" or name is not None:
            async with self.sessionmaker() as session:
                await begin_write(session)
                await session.execute(delete(PtzPresetNameRow).where(
                    PtzPresetNameRow.device_id == ch.device_id, PtzPresetNameRow.channel_id == ch.channel_id,
                    PtzPresetNameRow.number == number))
                if name is not None:
                    session.add(PtzPresetNameRow(device_id=ch.device_id, channel_id=ch.channel_id, number=number,
                                                 name=name, updated_by=op.username, updated_at=utcnow()))
                await session.commit()
        return grant.state

    async def presets(self, channel: ChannelRef) -> list[Preset]:
        """The device's presets (PresetQuery) with the names set on the platform over the device's own, plus
        presets named on the platform that the device did not list."""
        ch = _channel(channel)
        found = await self.commands.presets(ch)
        async with self.sessionmaker() as session:
            rows = (await session.scalars(select(PtzPresetNameRow).where(
                PtzPresetNameRow.device_id == ch.device_id, PtzPresetNameRow.channel_id == ch.channel_id))).all()
        names = {r.number: r.name for r in rows}
        merged = {p.number: Preset(p.number, names.get(p.number) or p.name) for p in found if 1 <= p.number <= 255}
        for number, name in names.items():
            merged.setdefault(number, Preset(number, name))
        return [merged[n] for n in sorted(merged)]

    # ============================================================================ tours
    @staticmethod
    def _tour_points(row: PtzTourRow) -> tuple[TourPoint, ...]:
        return () if row.mode == "device" else _points_of(row.points)

    @staticmethod
    def _tour(row: PtzTourRow) -> Tour:
        return Tour(row.id, ChannelRef(row.device_id, row.channel_id), row.name, _points_of(row.points), row.loop,
                    row.mode, row.owner, row.owner_level, row.running, row.cruise_group)

    async def _get_tour(self, session: AsyncSession, ch: ChannelRef, tour_id: Any) -> PtzTourRow:
        if isinstance(tour_id, bool) or not isinstance(tour_id, int):
            raise _err("tour_not_found", "巡航不存在 / no such tour", 404)
        row = await session.get(PtzTourRow, tour_id)
        if row is None or (row.device_id, row.channel_id) != (ch.device_id, ch.channel_id):
            raise _err("tour_not_found", "巡航不存在 / no such tour", 404)
        return row

    async def create_tour(self, op: Operator, channel: ChannelRef, name: str, points: Iterable[Any],
                          loop: bool = True, mode: str = "platform") -> Tour:
        """Store a tour (not started).  Points: ``TourPoint`` or ``{"preset", "dwell_s"}``, dwell >= 2 s.
        A device tour gets the lowest cruise group free on its channel."""
        op, ch = _operator(op), _channel(channel)
        name = _clean_name(name, MAX_TOUR_NAME, "bad_tour", encoded=False)
        pts = _points(points)
        if not isinstance(loop, bool):
            raise _err("bad_tour", "loop 须为 true 或 false / loop must be true or false")
        if mode not in TOUR_MODES:
            raise _err("bad_tour", f"巡航方式须为 {' | '.join(TOUR_MODES)} / mode must be one of {TOUR_MODES}")
        now = utcnow()
        async with self.sessionmaker() as session:
            await begin_write(session)
            group = None
            if mode == "device":
                used = set((await session.scalars(select(PtzTourRow.cruise_group).where(
                    PtzTourRow.device_id == ch.device_id, PtzTourRow.channel_id == ch.channel_id,
                    PtzTourRow.cruise_group.is_not(None)))).all())
                group = next((g for g in range(1, 256) if g not in used), None)
                if group is None:
                    raise _err("too_many_tours", "该通道的设备巡航组已用完 / no device cruise group left on this "
                                                 "channel", 409)
            row = PtzTourRow(device_id=ch.device_id, channel_id=ch.channel_id, name=name, points=_points_json(pts),
                             loop=loop, mode=mode, cruise_group=group, running=False, owner_id=op.id,
                             owner=op.username, owner_display=op.display_name, owner_kind=op.kind,
                             owner_level=op.level, created_at=now, updated_at=now)
            session.add(row)
            await session.commit()
        return self._tour(row)

    async def list_tours(self, channel: ChannelRef) -> list[Tour]:
        ch = _channel(channel)
        async with self.sessionmaker() as session:
            rows = (await session.scalars(select(PtzTourRow).where(
                PtzTourRow.device_id == ch.device_id, PtzTourRow.channel_id == ch.channel_id)
                .order_by(PtzTourRow.id))).all()
        return [self._tour(r) for r in rows]

    async def start_tour(self, op: Operator, channel: ChannelRef, tour_id: int) -> Tour:
        """Start a tour in ``op``'s name (they become its owner).  Needs the lock as a command does; a tour
        running on the channel is replaced (by its owner or a level >= its owner's).  A device tour defines
        the dome's cruise (points, dwell) and starts it."""
        op, ch = _operator(op), _channel(channel)
        async with self.sessionmaker() as session:
            row = await self._get_tour(session, ch, tour_id)
        points = self._tour_points(row)
        # check before sending anything (the define of a device cruise included)
        self.arbiter.check_tour_start(ch, op, self.clock())
        if row.mode == "device":
            assert row.cruise_group is not None
            await self.commands.cruise(ch, "define", row.cruise_group, _points_of(row.points))
            self._groups[row.id] = row.cruise_group
        grant = self.arbiter.start_tour(ch, row.id, op, points, row.loop, self.clock())
        self._changed()
        now = utcnow()
        async with self.sessionmaker() as session:
            await begin_write(session)
            r = await session.get(PtzTourRow, row.id)
            if r is not None:
                r.running, r.updated_at = True, now
                r.owner_id, r.owner, r.owner_display, r.owner_kind, r.owner_level = (
                    op.id, op.username, op.display_name, op.kind, op.level)
            await session.commit()
        # ptz.tour start / stop / delete are audited by the portal (the user's command); the steps here
        await self._carry_out(grant.actions)
        async with self.sessionmaker() as session:
            r = await session.get(PtzTourRow, row.id)
        return self._tour(r if r is not None else row)

    async def stop_tour(self, op: Operator, channel: ChannelRef, tour_id: int) -> Tour:
        """Stop a tour: its owner, or a level >= the owner's (else :class:`PtzLocked`)."""
        op, ch = _operator(op), _channel(channel)
        async with self.sessionmaker() as session:
            row = await self._get_tour(session, ch, tour_id)
        if row.running:
            owner = _owner_of(row)
            stopped = self.arbiter.stop_tour(ch, row.id, op, self.clock())
            if not stopped and op.id != owner.id and op.level < owner.level:
                raise PtzLocked(LockState(ch, owner, 0.0, row.id))
            self._changed()
            if row.mode == "device" and row.cruise_group is not None:
                self._groups.pop(row.id, None)
                await self.commands.cruise(ch, "stop", row.cruise_group)
            await self._set_running(row.id, False)
        async with self.sessionmaker() as session:
            r = await session.get(PtzTourRow, row.id)
        return self._tour(r if r is not None else row)

    async def delete_tour(self, op: Operator, channel: ChannelRef, tour_id: int) -> None:
        """Delete a tour (stopped first when running, with the same rule as :meth:`stop_tour`)."""
        op, ch = _operator(op), _channel(channel)
        await self.stop_tour(op, ch, tour_id)
        async with self.sessionmaker() as session:
            await begin_write(session)
            await session.execute(delete(PtzTourRow).where(PtzTourRow.id == tour_id))
            await session.commit()

    async def _set_running(self, tour_id: int, running: bool) -> None:
        async with self.sessionmaker() as session:
            await begin_write(session)
            r = await session.get(PtzTourRow, tour_id)
            if r is not None and r.running != running:
                r.running, r.updated_at = running, utcnow()
            await session.commit()

    # ============================================================================ home
    async def get_home(self, channel: ChannelRef) -> Home:
        ch = _channel(channel)
        async with self.sessionmaker() as session:
            row = await session.get(PtzHomeRow, (ch.device_id, ch.channel_id))
        if row is None:
            return Home(ch)
        return Home(ch, row.preset, row.enabled, row.mode, row.reset_time, row.updated_by, row.updated_at)

    async def set_home(self, op: Operator, channel: ChannelRef, preset: int | None, enabled: bool, *,
                       mode: str | None = None, reset_time: int = 60) -> Home:
        """Set the channel's home.  ``mode`` "preset" (the default when ``preset`` is given): the platform
        calls it when a low-level lock ends; "device" (the default without a preset): the dome's own
        HomePosition, sent at once through :meth:`DeviceCommands.device_control` ("home_position"; refused
        by the device: 502, nothing stored)."""
        op, ch = _operator(op), _channel(channel)
        if not isinstance(enabled, bool):
            raise _err("bad_home", "enabled 须为 true 或 false / enabled must be true or false")
        if mode is None:
            mode = "preset" if preset is not None else "device"
        if mode not in ("preset", "device"):
            raise _err("bad_home", "归位方式须为 preset 或 device / mode must be preset or device")
        if preset is not None:
            _int_in(preset, 1, 255, "bad_home", "预置位 / preset")
        elif mode == "preset" and enabled:
            raise _err("bad_home", "启用归位须指定预置位 / an enabled home needs a preset")
        _int_in(reset_time, 1, MAX_RESET_TIME, "bad_home", "归位时间 / reset_time")
        if mode == "device":
            result = await self.commands.device_control(
                ch.device_id, "home_position", {"enabled": enabled, "reset_time": reset_time, "preset": preset or 0},
                target_id=ch.channel_id)
            if result.result == "ERROR":
                raise _err("device_refused", "设备拒绝了看守位设置 / the device refused the home position", 502)
        now = utcnow()
        async with self.sessionmaker() as session:
            await begin_write(session)
            row = await session.get(PtzHomeRow, (ch.device_id, ch.channel_id))
            if row is None:
                row = PtzHomeRow(device_id=ch.device_id, channel_id=ch.channel_id)
                session.add(row)
            row.mode, row.preset, row.enabled, row.reset_time = mode, preset, enabled, reset_time
            row.updated_by, row.updated_at = op.username, now
            await session.commit()
        return Home(ch, preset, enabled, mode, reset_time, op.username, now)

    # ============================================================================ device commands
    async def device_command(self, op: Operator, device_id: str, command: str,
                             params: Mapping[str, Any] | None = None) -> CommandResult:
        """A DeviceControl command (:data:`DEVICE_COMMANDS`) with its validated ``params`` (``channel_id``
        names the target channel; the rest per command); the device's Result where the standard has one."""
        _operator(op)
        if not isinstance(device_id, str) or not valid_gb_id(device_id):
            raise _err("bad_device", "设备编号无效 / invalid device id")
        if command not in DEVICE_COMMANDS:
            raise _err("unknown_command", f"未知的设备控制命令 / unknown device command {str(command)[:32]!r}")
        if params is None:
            params = {}
        if not isinstance(params, Mapping):
            raise _err("bad_params", "参数须为对象 / params must be an object")
        allowed = _COMMAND_PARAMS[command]
        clean: dict[str, Any] = {}
        target = None
        for key, value in params.items():
            if key == "channel_id":
                if value is None:
                    continue
                if not isinstance(value, str) or not valid_gb_id(value):
                    raise _err("bad_params", "通道编号无效 / invalid channel_id")
                target = value
            elif key in allowed:
                typ, lo, hi = allowed[key]
                if typ is bool:
                    if not isinstance(value, bool):
                        raise _err("bad_params", f"{key} 须为 true 或 false / {key} must be true or false")
                    clean[key] = value
                else:
                    clean[key] = _int_in(value, lo, hi, "bad_params", str(key))
            else:
                raise _err("bad_params", f"命令 {command} 不接受参数 / {command} takes no parameter "
                                         f"{str(key)[:32]!r}")
        if command == "home_position" and "enabled" not in clean:
            raise _err("bad_params", "home_position 需要 enabled / home_position needs enabled")
        return await self.commands.device_control(device_id, command, clean or None, target_id=target)
