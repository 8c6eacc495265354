"""The SIP service as device control's :class:`device_control.types.DeviceCommands`, and the SIP alarm and
position events into the alarm service (assembly).

Like :mod:`gbops.media_signalling`, the adapter lives with the assembly: ``device_control`` and ``alarms``
know no SIP, ``sip_server`` knows neither of them. PTZCmd strings come from the sans-IO codec
``sip_server.gb.ptz``; the SIP service's failures become :class:`device_control.types.ControlError`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from device_control.types import CommandResult, ControlError, Preset, TourPoint
from gbcore.ids import ChannelRef
from gbcore.log import get_logger
from sip_server.gb import ptz
from sip_server.service import DeviceNotReachable, QueryError, SipService

__all__ = ["SipDeviceCommands", "AlarmFeed"]

log = get_logger("gbops.control")

# DEVICE_COMMANDS word -> (DeviceControl element, value, wait for the Result)
_COMMANDS: dict[str, tuple[str, str | None, bool]] = {
    "teleboot": ("TeleBoot", "Boot", False),
    "record_start": ("RecordCmd", "Record", True),
    "record_stop": ("RecordCmd", "StopRecord", True),
    "guard": ("GuardCmd", "SetGuard", True),
    "unguard": ("GuardCmd", "ResetGuard", True),
    "alarm_reset": ("AlarmCmd", "ResetAlarm", True),
    "iframe": ("IFameCmd", "Send", False),  # re-spelt IFrameCmd for GB/T 28181-2022 devices by the SIP service
    "home_position": ("HomePosition", None, True),
}


def _offline(device_id: str) -> ControlError:
    return ControlError("device_offline", f"设备不在线 / the device is offline: {device_id}", status=409)


def _refused(exc: Exception) -> ControlError:
    return ControlError("device_refused", f"设备拒绝或未应答 / the device refused or did not answer: {exc}",
                        status=502)


class SipDeviceCommands:
    """Implements :class:`device_control.types.DeviceCommands` on a :class:`SipService`."""

    def __init__(self, sip: SipService) -> None:
        self._sip = sip

    async def _send(self, device_id: str, target_id: str | None, element: str, value: Any, *, wait: bool,
                    **build: Any) -> tuple[str | None, bool]:
        try:
            return await self._sip.device_control(device_id, target_id, element, value, wait=wait, **build)
        except DeviceNotReachable:
            raise _offline(device_id) from None
        except QueryError as exc:
            raise _refused(exc) from None
        except ValueError as exc:  # a command the codec or the MANSCDP builder refuses
            raise ControlError("bad_command", str(exc)) from None

    async def ptz(self, channel: ChannelRef, action: str, speed: int) -> str:
        try:
            cmd = ptz.STOP if action == "stop" else ptz.ptz_command(action, speed)
        except ValueError as exc:
            raise ControlError("bad_command", str(exc)) from None
        await self._send(channel.device_id, channel.channel_id, "PTZCmd", cmd, wait=False)
        return cmd

    async def preset(self, channel: ChannelRef, op: str, number: int, name: str | None = None) -> str:
        try:
            cmd = ptz.preset_command(op, number)
        except ValueError as exc:
            raise ControlError("bad_command", str(exc)) from None
        build = {"preset_name": name} if name and op == "set" else {}
        await self._send(channel.device_id, channel.channel_id, "PTZCmd", cmd, wait=False, **build)
        return cmd

    async def presets(self, channel: ChannelRef) -> list[Preset]:
        try:
            pairs = await self._sip.preset_query(channel.device_id, channel.channel_id)
        except DeviceNotReachable:
            raise _offline(channel.device_id) from None
        except QueryError as exc:
            raise _refused(exc) from None
        return [Preset(number, name) for number, name in pairs]

    async def cruise(self, channel: ChannelRef, op: str, group: int, points: tuple[TourPoint, ...] = ()) -> None:
        d, c = channel.device_id, channel.channel_id
        if op == "define":
            await self._send(d, c, "PTZCmd", ptz.cruise_command("delete", group, 0), wait=False)
            for point in points:
                await self._send(d, c, "PTZCmd", ptz.cruise_command("add", group, point.preset), wait=False)
            if points:  # the standard has one dwell time per cruise group
                dwell = max(1, min(4095, round(points[0].dwell_s)))
                await self._send(d, c, "PTZCmd", ptz.cruise_command("dwell", group, dwell), wait=False)
        elif op == "start":
            await self._send(d, c, "PTZCmd", ptz.cruise_command("start", group), wait=False)
        elif op == "stop":
            await self._send(d, c, "PTZCmd", ptz.STOP, wait=False)
        else:
            raise ControlError("bad_command", f"未知的巡航操作 / unknown cruise operation {op!r}")

    async def device_control(self, device_id: str, command: str, params: dict | None = None, *,
                             target_id: str | None = None) -> CommandResult:
        if command not in _COMMANDS:
            raise ControlError("unknown_command", f"未知的设备控制命令 / unknown device command {command!r}")
        element, value, wait = _COMMANDS[command]
        params = dict(params or {})
        build: dict[str, Any] = {}
        if command == "home_position":
            enabled = bool(params.get("enabled"))
            value = {"Enabled": "1" if enabled else "0"}
            if enabled:
                value["ResetTime"] = str(int(params.get("reset_time", 60)))
                value["PresetIndex"] = str(int(params.get("preset", 0)))
        elif command == "alarm_reset" and (params.get("method") or params.get("type")):
            build["info"] = {k: str(v) for k, v in (("AlarmMethod", params.get("method")),
                                                     ("AlarmType", params.get("type"))) if v is not None}
        elif command in ("record_start", "record_stop") and params.get("stream_number") is not None:
            build["siblings"] = {"StreamNumber": str(int(params["stream_number"]))}
        result, answered = await self._send(device_id, target_id, element, value, wait=wait, **build)
        if not wait:
            return CommandResult(None, True, "设备已接收（标准未定义结果应答）/ accepted by the device (the standard "
                                             "defines no result for this command)")
        if not answered:
            return CommandResult(None, False, "设备未返回结果 / the device sent no result")
        return CommandResult(result, True)


class AlarmFeed:
    """SIP ``AlarmReceived`` / ``PositionReceived`` events into the alarm service (the listener is synchronous:
    each event is recorded by a task of its own, kept until done)."""

    def __init__(self, alarms: Any, *, sip: SipService | None = None, subscribe: bool = False) -> None:
        self.alarms = alarms
        self.sip = sip
        self.subscribe = subscribe and sip is not None
        self.subscribed: set[str] = set()  # the SIP service renews these itself at every new registration
        self.tasks: set[asyncio.Task] = set()
        self.rejected = 0
        self._recent: dict[tuple[str, int], float] = {}

    def __call__(self, event: Any) -> None:
        from sip_server.gb import events as ev

        if isinstance(event, ev.AlarmReceived):
            if self._seen(event.device_id, event.alarm.sn):
                return  # the same alarm twice: as a MESSAGE and as a NOTIFY of the subscription
            self._spawn(self._alarm(event))
        elif isinstance(event, ev.PositionReceived):
            self._spawn(self._position(event))
        elif self.subscribe and isinstance(event, ev.DeviceOnline) and event.device_id not in self.subscribed:
            self.subscribed.add(event.device_id)
            self._spawn(self._subscribe(event.device_id))

    def _seen(self, device_id: str, sn: int) -> bool:
        """Whether this (device, SN) alarm came in the last minute (kept for 4096 alarms at most)."""
        now = time.monotonic()
        key = (device_id, sn)
        seen = self._recent.get(key)
        self._recent[key] = now
        if len(self._recent) > 4096:
            for k in [k for k, t in self._recent.items() if now - t > 60] or list(self._recent)[:1024]:
                self._recent.pop(k, None)
        return seen is not None and now - seen <= 60

    async def _subscribe(self, device_id: str) -> None:
        assert self.sip is not None
        try:
            await self.sip.subscribe_alarms(device_id)
            log.info("alarm.subscribed", device_id=device_id)
        except (DeviceNotReachable, QueryError) as exc:  # kept wanted: made again when it registers
            log.warning("alarm.subscribe_failed", device_id=device_id, error=str(exc))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _alarm(self, event: Any) -> None:
        from alarms.types import AlarmIn
        from gbcore.timeutil import from_device_time

        a = event.alarm
        try:
            alarm = AlarmIn(priority=a.alarm_priority, method=a.alarm_method, type=a.alarm_type,
                            event_type=a.event_type,
                            time=from_device_time(a.alarm_datetime) if a.alarm_datetime else None,
                            description=a.alarm_description, longitude=a.longitude, latitude=a.latitude,
                            raw=dict(a.raw), source_id=a.device_id)
            await self.alarms.record(event.device_id, alarm)
        except (TypeError, ValueError) as exc:
            self.rejected += 1
            log.warning("alarm.rejected", device_id=event.device_id, error=str(exc))
        except Exception:
            log.exception("alarm.record_failed", device_id=event.device_id)

    async def _position(self, event: Any) -> None:
        from alarms.types import PositionIn
        from gbcore.timeutil import from_device_time
        from sip_server.gb.manscdp import parse_gb_time

        p = event.position
        try:
            when = parse_gb_time(p.time) if p.time else None  # the device's (Beijing) time
            position = PositionIn(time=from_device_time(when) if when else None, longitude=p.longitude,
                                  latitude=p.latitude, speed=p.speed, direction=p.direction, altitude=p.altitude,
                                  source_id=p.device_id)
            await self.alarms.record_position(event.device_id, position)
        except (TypeError, ValueError) as exc:
            log.warning("position.rejected", device_id=event.device_id, error=str(exc))
        except Exception:
            log.exception("position.record_failed", device_id=event.device_id)
