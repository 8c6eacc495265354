"""The cascade domain's surroundings (assembly): device control for upper platforms, the audit log, and the
registry changes that become NOTIFYs to upper platforms."""

from __future__ import annotations

import asyncio
from typing import Any

from gbcore.ids import ChannelRef
from gbcore.log import get_logger

log = get_logger("gbops.cascade")

class CascadeControl:
    """``cascade.ports.ControlPort`` over ``device_control.service.ControlService``: an upper platform is an
    operator of kind "platform" at its configured PTZ level, so the control issue's priority and lock apply."""

    def __init__(self, control: Any) -> None:
        self.control = control

    async def upper_control(self, operator: Any, channel: ChannelRef, message: Any) -> bool:
        from device_control.types import ACTIONS, Operator
        from sip_server.gb.ptz import PtzCmdError, parse_ptzcmd

        op = Operator(id=f"platform:{operator.platform_id}", username=f"platform:{operator.server_id}",
                      level=operator.ptz_level, display_name=operator.name, kind="platform")
        text = message.get("PTZCmd")
        if not text:
            log.info("cascade.control_unsupported", platform_id=operator.platform_id, channel=channel.key)
            return False
        try:
            cmd = parse_ptzcmd(text)
        except PtzCmdError:
            return False
        action = cmd.action
        if cmd.kind == "preset" and cmd.preset:
            await self.control.preset(op, channel, action.removeprefix("preset_"), cmd.preset)
            return True
        if action == "fi_stop":
            action = "stop"
        first = action.split("+")[0]
        if cmd.kind in ("ptz", "fi") and first in ACTIONS:
            speeds = [s for s in (cmd.pan_speed, cmd.tilt_speed, cmd.focus_speed, cmd.iris_speed) if s]
            speed = max(speeds, default=0) or (cmd.zoom_speed or 0) * 17 or 0x80
            await self.control.ptz(op, channel, first, max(1, min(255, speed)))
            return True
        return False


class CascadeRecords:
    """``cascade.ports.RecordsPort``: an upper's RecordInfo for a shared channel is the device's own answer
    (forwarded, all its pages) merged with the platform's recordings of that channel (one item per stored
    segment, ``Type`` time, ``RecorderID`` our system id), sorted by start. Times go out in Beijing time."""

    MAX_ITEMS = 2000  # an upper asking for a year of one-minute segments gets the first 2,000

    def __init__(self, sip: Any, recordings: Any | None, system_id: str) -> None:
        self.sip = sip
        self.recordings = recordings
        self.system_id = system_id

    async def record_items(self, channel: ChannelRef, message: Any) -> list[dict[str, str]]:
        from gbcore.timeutil import from_device_time, gb_time
        from sip_server.gb.manscdp import parse_gb_time

        start, end = parse_gb_time(message.get("StartTime")), parse_gb_time(message.get("EndTime"))
        if start is None or end is None or end <= start:
            return []
        start, end = from_device_time(start), from_device_time(end)
        kind = (message.get("Type") or "all").strip() or "all"
        items: list[tuple[str, dict[str, str]]] = []
        try:
            found = await self.sip.record_info(channel.device_id, channel.channel_id, start, end, type=kind)
        except Exception as exc:  # noqa: BLE001 - offline or refusing device: the platform's copies still count
            log.info("cascade.device_records_failed", channel=channel.key, error=str(exc)[:200])
        else:
            for item in found.items:
                fields = {k: v for k, v in {
                    "DeviceID": item.device_id, "Name": item.name, "FilePath": item.file_path,
                    "Address": item.address, "StartTime": item.start_time, "EndTime": item.end_time,
                    "Secrecy": None if item.secrecy is None else str(item.secrecy), "Type": item.type,
                    "RecorderID": item.recorder_id,
                    "FileSize": None if item.file_size is None else str(item.file_size)}.items() if v is not None}
                items.append((item.start_time or "", fields))
        if self.recordings is not None and kind in ("all", "time"):
            for seg in await self.recordings.segments(channel, start, end):
                begin = gb_time(seg.start, millis=False)
                items.append((begin, {"DeviceID": channel.channel_id, "Name": channel.channel_id,
                                      "FilePath": f"platform/{seg.id}", "Address": "platform",
                                      "StartTime": begin, "EndTime": gb_time(seg.end, millis=False),
                                      "Secrecy": "0", "Type": "time", "RecorderID": self.system_id,
                                      "FileSize": str(seg.bytes)}))
        items.sort(key=lambda pair: pair[0])
        return [fields for _, fields in items[: self.MAX_ITEMS]]


def cascade_audit(audit_log: Any) -> Any:
    """The cascade's ``audit(action, target, detail, actor)``: a portal user for configuration, the upper
    platform itself (named by its SIP id) for its requests."""
    from audit_log.log import Actor, Target

    async def audit(action: str, target: str, detail: dict, actor: dict | None) -> None:
        if target.startswith("cascade:"):
            tgt = Target("cascade_platform", target.removeprefix("cascade:"))
        else:
            tgt = Target("channel" if "/" in target else "device", target)
        if actor is not None:
            who = Actor("user", str(actor.get("user_id")), actor.get("username"))
            client_ip = actor.get("client_ip")
        else:
            who = Actor("platform", detail.get("server_id"), detail.get("name"))
            client_ip = None
        await audit_log.record(actor=who, action=action, target=tgt, client_ip=client_ip, detail=detail)

    return audit


class RegistryFeed:
    """SIP listener: device presence and catalog NOTIFYs, once the registry has them, become catalog changes
    for the upper platforms sharing those channels (ON / OFF / ADD / DEL / UPDATE); device alarms and
    positions on shared channels are forwarded to them."""

    def __init__(self, cascade: Any, writer: Any) -> None:
        self.cascade = cascade
        self.writer = writer
        self._tasks: set[asyncio.Task] = set()

    def __call__(self, event: Any) -> None:
        from sip_server.gb import events as ev

        if not self.cascade.active:
            return  # no enabled upper: no registry flush and no share lookups in a burst of 600 registrations
        if isinstance(event, ev.DeviceOnline) and event.transition:
            work = self._presence(event.device_id, True)
        elif isinstance(event, ev.DeviceOffline):
            work = self._presence(event.device_id, False)
        elif isinstance(event, ev.AlarmReceived) and getattr(event.alarm, "device_id", None):
            work = self._alarm(ChannelRef(event.device_id, event.alarm.device_id), event.alarm)
        elif isinstance(event, ev.PositionReceived) and getattr(event.position, "device_id", None):
            work = self._position(ChannelRef(event.device_id, event.position.device_id), event.position)
        elif isinstance(event, ev.CatalogChanged):
            changes = [(ChannelRef(event.device_id, item.device_id), (item.event or "UPDATE").upper())
                       for item in event.items if getattr(item, "device_id", None)]
            work = self._changes(changes) if changes else None
        else:
            return
        if work is not None:
            task = asyncio.ensure_future(work)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _presence(self, device_id: str, online: bool) -> None:
        try:
            await self.writer.flush()  # the registry has the new state before the catalog entries are built
            await self.cascade.on_device_presence(device_id, online)
        except Exception:
            log.exception("cascade.presence_notify_failed", device_id=device_id)

    async def _changes(self, changes: list[tuple[ChannelRef, str]]) -> None:
        try:
            await self.writer.flush()
            await self.cascade.on_registry_change(changes)
        except Exception:
            log.exception("cascade.catalog_notify_failed", count=len(changes))

    async def _alarm(self, channel: ChannelRef, alarm: Any) -> None:
        try:
            await self.cascade.forward_alarm(channel, alarm)
        except Exception:
            log.exception("cascade.alarm_forward_failed", channel=channel.key)

    async def _position(self, channel: ChannelRef, position: Any) -> None:
        try:
            await self.cascade.forward_position(channel, position)
        except Exception:
            log.exception("cascade.position_forward_failed", channel=channel.key)

    async def close(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
