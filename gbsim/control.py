"""A simulated device's control and event side, sans-IO: DeviceControl, PresetQuery, alarms, subscriptions,
mobile positions.  One :class:`Controls` per :class:`~gbsim.device.SimDevice` (its ``controls``).

DeviceControl (GB/T 28181 9.3, A.2.3.1)
    Answered SIP 200 at once, without a body.  ``PTZCmd`` (decoded by :func:`gbsim.ptz.decode_ptzcmd`; a
    malformed one is logged and ignored, as a dome would) and ``PTZPreciseCtrl`` drive the channel's
    :class:`~gbsim.ptz.PtzState` and are logged per channel (:meth:`Controls.ptz_log`, and a ``sim.ptz``
    log line each).  ``RecordCmd``, ``GuardCmd``, ``AlarmCmd`` and ``HomePosition`` get a Response MESSAGE
    (``Result`` OK, or ERROR for a value the standard does not define or a target the device does not
    have).  ``TeleBoot``, ``IFameCmd``/``IFrameCmd`` (an IDR on the channel's streams), ``DragZoomIn/Out``
    and the rest are logged.

PresetQuery (A.2.4.8 / A.2.6.10)
    ``SumNum`` and ``PresetList`` of ``PresetID``/``PresetName`` of the channel's presets.

Alarms (9.4, A.2.5.3)
    :meth:`Controls.raise_alarm` (and every ``alarm_every`` seconds when set) sends ``Notify/Alarm`` as a
    MESSAGE, with the channel's longitude and latitude, and the same body (same SN) as a NOTIFY to every
    alarm subscription whose filter it passes.  A device alarm (method 2) latches (A.2.5.3 note, when
    ``alarm_latch``): no new device alarm from that source until ``AlarmCmd ResetAlarm``.

Subscriptions (9.11, RFC 6665)
    SUBSCRIBE with a ``Query/Alarm`` or ``Query/MobilePosition`` body is answered 200 (with a Response body,
    ``Result`` OK, and the granted ``Expires``) and kept as a dialog: refreshed by an in-dialog SUBSCRIBE,
    ended by ``Expires: 0`` or by expiry; a NOTIFY answered 481 ends it too.  Other events get 489.
    MobilePosition subscriptions get a NOTIFY every ``Interval`` seconds (default 5); with
    ``position_every`` the device also sends ``Notify/MobilePosition`` MESSAGEs on its own.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gbcore.log import get_logger
from gbcore.timeutil import gb_time
from gbsim.ptz import PtzDecodeError, PtzLogEntry, PtzState, decode_ptzcmd, finite
from sip_server.gb import manscdp
from sip_server.sip.message import (
    Headers,
    SipParseError,
    SipRequest,
    SipResponse,
    make_response,
    parse_name_addr,
    via_value,
)

if TYPE_CHECKING:
    from gbsim.device import SimDevice

log = get_logger("gbops.sim")

MANSCDP_TYPE = "Application/MANSCDP+xml"
#: Sub-commands answered with a Response MESSAGE (9.3.1 e) and the values each accepts.
_WITH_RESULT = {
    "RecordCmd": ("Record", "StopRecord"),
    "GuardCmd": ("SetGuard", "ResetGuard"),
    "AlarmCmd": ("ResetAlarm",),
}
_FIRE_AND_FORGET = ("TeleBoot", "IFameCmd", "IFrameCmd", "DragZoomIn", "DragZoomOut", "FormatSDCard",
                    "TargetTrack", "DeviceUpgrade")
SUBSCRIBE_MIN, SUBSCRIBE_MAX = 30, 86400
POSITION_INTERVAL = 5.0  # a MobilePosition subscription without Interval
# Alarms raised every alarm_every seconds, in turn: (method, type, description).
ALARM_CYCLE = (
    (5, 2, "移动侦测 / motion detected"),
    (5, 5, "绊线入侵 / tripwire crossed"),
    (5, 6, "区域入侵 / intrusion"),
    (2, 1, "视频丢失 / video loss"),
)


@dataclass(frozen=True, slots=True)
class ControlLogEntry:
    """One DeviceControl the device received: target, sub-command element, its value, the Result sent
    (None: the command has no response)."""

    wall: float
    target: str
    element: str
    value: str
    result: str | None


@dataclass(eq=False)
class Subscription:
    """One SUBSCRIBE dialog the device (notifier) keeps."""

    call_id: str
    kind: str  # "Alarm" | "MobilePosition"
    target: str  # the query's DeviceID
    event: str  # the Event header, echoed in NOTIFY
    remote_target: str  # the subscriber's Contact
    route: list[str]
    local_from: str  # our side (the SUBSCRIBE's To, with our tag)
    remote_to: str  # their side (the SUBSCRIBE's From)
    expires_at: float
    sn: int
    local_cseq: int = 0
    remote_cseq: int = 0
    interval: float | None = None  # MobilePosition NOTIFY period
    next_at: float | None = None
    start_priority: int = 0
    end_priority: int = 0
    methods: frozenset[int] = frozenset()  # empty: all
    notifies: int = 0

    def wants(self, priority: int, method: int) -> bool:
        if self.start_priority and priority < self.start_priority:
            return False
        if self.end_priority and priority > self.end_priority:
            return False
        return not self.methods or method in self.methods


def _methods(text: str | None) -> frozenset[int]:
    values = set()
    for part in (text or "").replace(",", "/").split("/"):
        part = part.strip()
        if part.isdigit() and 1 <= int(part) <= 7:
            values.add(int(part))
    return frozenset(values)


def _small_int(text: str | None, low: int, high: int) -> int | None:
    text = (text or "").strip()
    if not text.isdigit() or len(text) > 6:
        return None
    value = int(text)
    return value if low <= value <= high else None


@dataclass
class ControlStats:
    device_controls: int = 0
    ptz_commands: int = 0
    ptz_malformed: int = 0
    control_results: int = 0
    preset_queries: int = 0
    alarms_sent: int = 0
    alarms_latched: int = 0
    alarm_notifies: int = 0
    subscriptions: int = 0
    positions_sent: int = 0
    teleboots: int = 0
    keyframe_requests: int = 0


class Controls:
    """See the module docstring."""

    def __init__(self, device: SimDevice) -> None:
        self.dev = device
        self.ptz: dict[str, PtzState] = {}
        self._ptz_logs: dict[str, deque[PtzLogEntry]] = {}
        self.control_log: deque[ControlLogEntry] = deque(maxlen=device.cfg.ptz_log_size)
        self.recording: set[str] = set()
        self.guarded: set[str] = set()
        self.latched: set[str] = set()  # sources whose device alarm waits for ResetAlarm
        self.alarm_resets = 0
        self.subs: dict[str, Subscription] = {}  # by Call-ID
        self.stats = ControlStats()
        self.alarm_at: float | None = None
        self.position_at: float | None = None
        self._alarm_turn = 0
        self._position_turn = 0

    # ------------------------------------------------------------------ helpers
    @property
    def wakeup(self) -> float | None:
        times = [t for t in (self.alarm_at, self.position_at) if t is not None]
        times += [s.next_at for s in self.subs.values() if s.next_at is not None]
        times += [s.expires_at for s in self.subs.values()]
        return min(times) if times else None

    def channel_for(self, target: str) -> str | None:
        """The channel a command for *target* acts on (an IPC's device id means its only channel)."""
        dev = self.dev
        if target in dev.channel_ids:
            return target
        if target == dev.device_id and len(dev.channel_ids) == 1:
            return dev.channel_ids[0]
        return None

    def state(self, channel_id: str) -> PtzState:
        st = self.ptz.get(channel_id)
        if st is None:
            k = self.dev.channel_ids.index(channel_id)
            st = self.ptz[channel_id] = PtzState(pan=(k * 37.0) % 360.0)  # domes do not all face one way
        return st

    def moved(self, channel_id: str) -> bool:
        """True once the channel's picture has its own state (it was moved, zoomed or sent to a preset)."""
        st = self.ptz.get(channel_id)
        return st is not None and st.touched

    def ptz_log(self, channel_id: str) -> list[PtzLogEntry]:
        return list(self._ptz_logs.get(channel_id, ()))

    def _log_ptz(self, entry: PtzLogEntry) -> None:
        logq = self._ptz_logs.get(entry.channel_id)
        if logq is None:
            logq = self._ptz_logs[entry.channel_id] = deque(maxlen=self.dev.cfg.ptz_log_size)
        logq.append(entry)

    def _coordinates(self, source: str) -> tuple[float, float]:
        items = self.dev.catalog_items
        for item in items:
            if item.device_id == source and item.longitude is not None and item.latitude is not None:
                return item.longitude, item.latitude
        if items and items[0].longitude is not None and items[0].latitude is not None:
            return items[0].longitude, items[0].latitude
        i = self.dev.index
        return round(116.3 + (i % 100) * 0.001, 6), round(39.9 + (i // 100) * 0.001, 6)

    def _device_time(self) -> str:
        return gb_time(self.dev.wall() + self.dev.clock_offset + self.dev.cfg.clock_error, millis=False)

    # ------------------------------------------------------------------ DeviceControl
    def on_control(self, req: SipRequest, msg: manscdp.ManscdpMessage, now: float) -> SipResponse:
        """A ``Control`` MESSAGE: 200 at once; the effects and any Response MESSAGE follow."""
        dev = self.dev
        resp = dev._reply(req, 200)
        if msg.cmd_type != "DeviceControl":
            return resp
        self.stats.device_controls += 1
        target = msg.device_id
        known = target == dev.device_id or target in dev.channel_ids
        fields = msg.fields
        if msg.find("PTZCmd") is not None:
            self._on_ptzcmd(msg, target, now)
            return resp
        if msg.find("PTZPreciseCtrl") is not None:
            self._on_precise(msg, target, now)
            return resp
        for element, allowed in _WITH_RESULT.items():
            if msg.find(element) is None:
                continue
            value = (msg.get(element) or "").strip()
            ok = known and value in allowed
            if ok:
                self._apply_switch(element, value, target, msg)
            self._result(msg, target, element, value, ok)
            return resp
        if msg.find("HomePosition") is not None:
            self._on_home(msg, target, known)
            return resp
        for element in _FIRE_AND_FORGET:
            if msg.find(element) is None:
                continue
            value = (msg.get(element) or "").strip()
            self.control_log.append(ControlLogEntry(dev.wall(), target, element, value, None))
            if element == "TeleBoot":
                self.stats.teleboots += 1
            elif element in ("IFameCmd", "IFrameCmd") and known:
                self._keyframe(target)
            log.info("sim.device_control", device_id=dev.device_id, target=target, element=element, value=value)
            return resp
        element = next((k for k in fields if k not in ("CmdType", "SN", "DeviceID")), "")
        self.control_log.append(ControlLogEntry(dev.wall(), target, element or "?", "", None))
        log.info("sim.device_control_unknown", device_id=dev.device_id, target=target, element=element[:40])
        return resp

    def _result(self, msg: manscdp.ManscdpMessage, target: str, element: str, value: str, ok: bool) -> None:
        dev = self.dev
        result = "OK" if ok else "ERROR"
        body = manscdp.build_message("Response", "DeviceControl", msg.sn, target, charset=dev.charset,
                                     extra=[("Result", result)])
        dev.queue_message(body)
        self.stats.control_results += 1
        self.control_log.append(ControlLogEntry(dev.wall(), target, element, value[:64], result))
        log.info("sim.device_control", device_id=dev.device_id, target=target, element=element, value=value[:64],
                 result=result)

    def _apply_switch(self, element: str, value: str, target: str, msg: manscdp.ManscdpMessage) -> None:
        dev = self.dev
        targets = dev.channel_ids if target == dev.device_id else [target]
        if element == "RecordCmd":
            for t in targets:
                (self.recording.add if value == "Record" else self.recording.discard)(t)
        elif element == "GuardCmd":
            for t in [target, *targets]:
                (self.guarded.add if value == "SetGuard" else self.guarded.discard)(t)
        elif element == "AlarmCmd":
            self.alarm_resets += 1
            for t in {target, *targets}:
                self.latched.discard(t)

    def _on_home(self, msg: manscdp.ManscdpMessage, target: str, known: bool) -> None:
        el = msg.find("HomePosition")
        assert el is not None
        kids = {child.tag.rsplit("}", 1)[-1].lower(): (child.text or "").strip() for child in el}
        enabled = _small_int(kids.get("enabled"), 0, 1)
        reset = _small_int(kids.get("resettime"), 0, 86400) if kids.get("resettime") else 0
        preset = _small_int(kids.get("presetindex"), 0, 255) if kids.get("presetindex") else 0
        channel = self.channel_for(target)
        ok = known and channel is not None and enabled is not None and reset is not None and preset is not None
        if ok:
            assert channel is not None and enabled is not None and reset is not None and preset is not None
            self.state(channel).home = (bool(enabled), reset, preset)
        value = f"Enabled={kids.get('enabled', '')[:8]} ResetTime={kids.get('resettime', '')[:8]} " \
                f"PresetIndex={kids.get('presetindex', '')[:8]}"
        self._result(msg, target, "HomePosition", value, ok)

    def _keyframe(self, target: str) -> None:
        from gbsim.device import MediaEvent

        dev = self.dev
        for call in dev.calls.values():
            if target in (dev.device_id, call.channel_id):
                dev.media_out.append(MediaEvent("iframe", call))
                self.stats.keyframe_requests += 1

    def _touch_events(self, channel: str, before: bool) -> None:
        """The channel's picture became its own: its live calls switch to a dome encoder."""
        from gbsim.device import MediaEvent

        if before or not self.moved(channel):
            return
        dev = self.dev
        for call in dev.calls.values():
            if call.channel_id == channel and call.history is None:
                dev.media_out.append(MediaEvent("ptz", call))

    def _on_ptzcmd(self, msg: manscdp.ManscdpMessage, target: str, now: float) -> None:
        dev = self.dev
        text = (msg.get("PTZCmd") or "").strip()
        params = msg.find("PTZCmdParams")
        name = None
        if params is not None:
            for child in params:
                if child.tag.rsplit("}", 1)[-1].lower() in ("presetname", "cruisetrackname"):
                    name = (child.text or "").strip()[:64] or None
        channel = self.channel_for(target)
        wall = dev.wall()
        try:
            cmd = decode_ptzcmd(text)
        except PtzDecodeError as exc:
            self.stats.ptz_malformed += 1
            if channel is not None:
                self._log_ptz(PtzLogEntry(wall, channel, "PTZCmd", text[:32], error=str(exc)))
            log.warning("sim.ptz_malformed", device_id=dev.device_id, target=target, cmd=text[:32], error=str(exc))
            return
        self.stats.ptz_commands += 1
        if channel is None:
            log.warning("sim.ptz_no_channel", device_id=dev.device_id, target=target, cmd=cmd.hex)
            return
        state = self.state(channel)
        before = state.touched
        state.apply(cmd, now, name)
        self._log_ptz(PtzLogEntry(wall, channel, "PTZCmd", cmd.hex, command=cmd, name=name))
        pan, tilt, zoom = state.position(now)
        log.info("sim.ptz", device_id=dev.device_id, channel_id=channel, cmd=cmd.hex, action=cmd.action,
                 pan_speed=cmd.pan_speed, tilt_speed=cmd.tilt_speed, zoom_speed=cmd.zoom_speed, preset=cmd.preset,
                 name=name, pan=round(pan, 1), tilt=round(tilt, 1), zoom=round(zoom, 2))
        self._touch_events(channel, before)

    def _on_precise(self, msg: manscdp.ManscdpMessage, target: str, now: float) -> None:
        dev = self.dev
        el = msg.find("PTZPreciseCtrl")
        assert el is not None
        kids = {child.tag.rsplit("}", 1)[-1].lower(): child.text for child in el}
        values = {k: finite(kids.get(k)) for k in ("pan", "tilt", "zoom")}
        channel = self.channel_for(target)
        if channel is None:
            log.warning("sim.ptz_no_channel", device_id=dev.device_id, target=target, element="PTZPreciseCtrl")
            return
        state = self.state(channel)
        before = state.touched
        # 2022: Tilt decreases as the lens looks up; the state's tilt grows upwards.
        tilt = -values["tilt"] if values["tilt"] is not None else None
        state.precise(now, values["pan"], tilt, values["zoom"])
        params = {k: v for k, v in values.items() if v is not None}
        self._log_ptz(PtzLogEntry(dev.wall(), channel, "PTZPreciseCtrl",
                                  " ".join(f"{k}={v:g}" for k, v in params.items()), params=params))
        log.info("sim.ptz", device_id=dev.device_id, channel_id=channel, element="PTZPreciseCtrl", **params)
        self._touch_events(channel, before)

    # ------------------------------------------------------------------ PresetQuery
    def preset_bodies(self, msg: manscdp.ManscdpMessage) -> list[bytes]:
        self.stats.preset_queries += 1
        channel = self.channel_for(msg.device_id)
        presets = self.state(channel).preset_list() if channel is not None else []
        return [manscdp.build_preset_response(msg.sn, msg.device_id, presets, charset=self.dev.charset)]

    # ------------------------------------------------------------------ alarms
    def raise_alarm(self, source: str | None, now: float, *, priority: int = 1, method: int = 2,
                    alarm_type: int | None = None, description: str | None = None,
                    event_type: int | None = None) -> bool:
        """Send an alarm from *source* (one of the device's channels, or the device; None: the device).
        False when a latched device alarm held it back (or the device is not registered)."""
        dev = self.dev
        source = source or dev.device_id
        if source != dev.device_id and source not in dev.channel_ids:
            raise ValueError(f"{source!r} is not {dev.device_id} or one of its channels")
        if not 1 <= int(priority) <= 4 or not 1 <= int(method) <= 7:
            raise ValueError("priority must be 1..4 and method 1..7")
        if not dev.registered:
            return False
        if method == 2 and dev.cfg.alarm_latch:
            if source in self.latched:
                self.stats.alarms_latched += 1
                log.info("sim.alarm_latched", device_id=dev.device_id, source=source)
                return False
            self.latched.add(source)
        lon, lat = self._coordinates(source)
        sn = dev._next_sn()
        body = manscdp.build_alarm_notify(
            sn, source, alarm_priority=int(priority), alarm_method=int(method), alarm_time=self._device_time(),
            alarm_description=description, longitude=lon, latitude=lat, alarm_type=alarm_type, event_type=event_type,
            charset=dev.charset)
        dev.queue_message(body)
        self.stats.alarms_sent += 1
        for sub in list(self.subs.values()):
            if sub.kind == "Alarm" and sub.expires_at > now and sub.wants(int(priority), int(method)):
                self._notify(sub, body, now)
        log.info("sim.alarm", device_id=dev.device_id, source=source, sn=sn, priority=priority, method=method,
                 alarm_type=alarm_type, description=description)
        return True

    def _periodic_alarm(self, now: float) -> None:
        dev = self.dev
        k = self._alarm_turn
        self._alarm_turn += 1
        method, alarm_type, description = ALARM_CYCLE[k % len(ALARM_CYCLE)]
        sources = dev.channel_ids or [dev.device_id]
        source = sources[k % len(sources)]
        self.raise_alarm(source, now, priority=k % 4 + 1, method=method, alarm_type=alarm_type,
                         description=description)

    # ------------------------------------------------------------------ mobile position
    def _position_body(self, sn: int, target: str) -> bytes:
        lon0, lat0 = self._coordinates(target)
        k = self._position_turn
        self._position_turn += 1
        angle = (k * 15) % 360
        lon = round(lon0 + 0.0005 * math.cos(math.radians(angle)), 6)
        lat = round(lat0 + 0.0005 * math.sin(math.radians(angle)), 6)
        return manscdp.build_mobile_position_notify(
            sn, target, time=self._device_time(), longitude=lon, latitude=lat, speed=3.6,
            direction=float((angle + 90) % 360), altitude=50.0, charset=self.dev.charset)

    # ------------------------------------------------------------------ timers
    def on_registered(self, now: float, first: bool) -> None:
        cfg, rng = self.dev.cfg, self.dev.rng
        if not first:
            return
        if cfg.alarm_every and self.alarm_at is None:
            self.alarm_at = now + cfg.alarm_every * rng.uniform(0.5, 1.0)
        if cfg.position_every and self.position_at is None:
            self.position_at = now + cfg.position_every * rng.uniform(0.1, 1.0)

    def on_unregistered(self) -> None:
        self.alarm_at = self.position_at = None
        self.subs.clear()  # a device that lost its registration forgets its subscribers

    def handle_timer(self, now: float) -> None:
        dev, cfg = self.dev, self.dev.cfg
        if self.alarm_at is not None and self.alarm_at <= now:
            if dev.registered and cfg.alarm_every:
                self._periodic_alarm(now)
                self.alarm_at = max(self.alarm_at + cfg.alarm_every, now + 0.001)
            else:
                self.alarm_at = None
        if self.position_at is not None and self.position_at <= now:
            if dev.registered and cfg.position_every:
                dev.queue_message(self._position_body(dev._next_sn(), dev.device_id))
                self.stats.positions_sent += 1
                self.position_at = max(self.position_at + cfg.position_every, now + 0.001)
            else:
                self.position_at = None
        for call_id, sub in list(self.subs.items()):
            if sub.expires_at <= now:
                del self.subs[call_id]
                log.info("sim.subscription_expired", device_id=dev.device_id, kind=sub.kind, call_id=call_id)
                continue
            if sub.next_at is not None and sub.next_at <= now and sub.interval:
                body = self._position_body(dev._next_sn(), sub.target)
                self._notify(sub, body, now)
                self.stats.positions_sent += 1
                sub.next_at = max(sub.next_at + sub.interval, now + 0.001)

    # ------------------------------------------------------------------ SUBSCRIBE / NOTIFY
    def on_subscribe(self, req: SipRequest, now: float) -> SipResponse:
        dev = self.dev
        try:
            call_id = req.call_id
            cseq = req.cseq[0]
        except SipParseError:
            return dev._reply(req, 400, "Bad Request")
        expires_text = (req.headers.get("Expires") or "").strip()
        requested = int(expires_text) if expires_text.isdigit() and len(expires_text) < 9 else 3600
        sub = self.subs.get(call_id)
        if req.to_tag is not None:  # a refresh (or an unsubscribe) within the dialog
            if sub is None:
                return dev._reply(req, 481)
            if cseq <= sub.remote_cseq:
                return dev._reply(req, 500, "Server Internal Error (CSeq out of order)")
            sub.remote_cseq = cseq
            if requested == 0:
                del self.subs[call_id]
                log.info("sim.unsubscribed", device_id=dev.device_id, kind=sub.kind, call_id=call_id)
                return self._subscribe_ok(req, sub, 0)
            granted = min(SUBSCRIBE_MAX, max(SUBSCRIBE_MIN, requested))
            sub.expires_at = now + granted
            return self._subscribe_ok(req, sub, granted)
        try:
            msg = manscdp.parse(req.body)
        except manscdp.ManscdpError:
            return dev._reply(req, 400, "Bad MANSCDP body")
        if msg.root != "Query" or msg.cmd_type not in ("Alarm", "MobilePosition"):
            return dev._reply(req, 489, headers=[("Allow-Events", "presence")])
        if msg.device_id != dev.device_id and msg.device_id not in dev.channel_ids:
            return dev._reply(req, 404)
        if requested == 0:  # a fetch: nothing to keep
            return self._subscribe_ok(req, None, 0, sn=msg.sn, target=msg.device_id)
        contact = req.headers.get("Contact") or ""
        try:
            remote_target = str(parse_name_addr(contact).uri)
            parse_name_addr(req.headers.get("From") or "")
        except SipParseError:
            return dev._reply(req, 400, "Bad Contact")
        granted = min(SUBSCRIBE_MAX, max(SUBSCRIBE_MIN, requested))
        tag = dev._hex(10)
        sub = Subscription(
            call_id=call_id, kind=msg.cmd_type, target=msg.device_id,
            event=(req.headers.get("Event") or "presence").strip()[:128] or "presence",
            remote_target=remote_target, route=req.headers.get_all("Record-Route"),
            local_from=f"{req.headers.get('To')};tag={tag}", remote_to=req.headers.get("From") or "",
            expires_at=now + granted, sn=msg.sn, remote_cseq=cseq,
            start_priority=_small_int(msg.get("StartAlarmPriority"), 0, 4) or 0,
            end_priority=_small_int(msg.get("EndAlarmPriority"), 0, 4) or 0,
            methods=_methods(msg.get("AlarmMethod")),
        )
        if msg.cmd_type == "MobilePosition":
            sub.interval = float(_small_int(msg.get("Interval"), 1, 3600) or POSITION_INTERVAL)
            sub.next_at = now + sub.interval
        self.subs[call_id] = sub
        self.stats.subscriptions += 1
        log.info("sim.subscribed", device_id=dev.device_id, kind=sub.kind, target=sub.target, expires=granted,
                 call_id=call_id)
        return self._subscribe_ok(req, sub, granted, tag=tag)

    def _subscribe_ok(self, req: SipRequest, sub: Subscription | None, expires: int, *, tag: str | None = None,
                      sn: int | None = None, target: str | None = None) -> SipResponse:
        dev = self.dev
        host, port = dev.local_addr or (dev.cfg.local_host, 5060)
        to_tag = tag if tag is not None else (req.to_tag or dev._hex(10))
        body = manscdp.build_message(
            "Response", sub.kind if sub is not None else "Alarm", sub.sn if sub is not None else (sn or 0),
            sub.target if sub is not None else (target or dev.device_id), charset=dev.charset,
            extra=[("Result", "OK")])
        resp = make_response(req, 200, to_tag=to_tag, headers=[
            ("Expires", str(expires)),
            ("Contact", f"<sip:{dev.device_id}@{host}:{port}>"),
            ("User-Agent", dev.cfg.user_agent),
        ], body=body, content_type=MANSCDP_TYPE)
        return resp

    def _notify(self, sub: Subscription, body: bytes, now: float) -> None:
        dev = self.dev
        if dev.local_addr is None:
            return
        host, port = dev.local_addr
        sub.local_cseq += 1
        h = Headers()
        h.add("Via", via_value(dev.cfg.transport, host, port, branch=f"z9hG4bK{dev._hex(16)}"))
        h.add("From", sub.local_from)
        h.add("To", sub.remote_to)
        h.add("Call-ID", sub.call_id)
        h.add("CSeq", f"{sub.local_cseq} NOTIFY")
        for route in sub.route:
            h.add("Route", route)
        h.add("Max-Forwards", "70")
        h.add("User-Agent", dev.cfg.user_agent)
        h.add("Event", sub.event)
        left = max(0, int(sub.expires_at - now))
        h.add("Subscription-State", f"active;expires={left}")
        h.add("Content-Type", MANSCDP_TYPE)
        dev.out.append(("notify", SipRequest("NOTIFY", sub.remote_target, h, body)))
        sub.notifies += 1
        self.stats.alarm_notifies += sub.kind == "Alarm"

    def on_notify_response(self, resp: SipResponse) -> None:
        """The subscriber answered a NOTIFY: 481 (or any 4xx-6xx but 408) ends the subscription."""
        if resp.status < 300 or resp.status == 408:
            return
        try:
            call_id = resp.call_id
        except SipParseError:
            return
        sub = self.subs.pop(call_id, None)
        if sub is not None:
            log.info("sim.subscription_ended", device_id=self.dev.device_id, kind=sub.kind, status=resp.status)

