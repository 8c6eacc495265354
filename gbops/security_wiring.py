"""The security monitor's surroundings (assembly): the monitor built from the settings, the SIP service's
events turned into security events, configuration changes and downloads read off the audit log, and the
SIP service's block hook.

* :func:`start_security` builds and starts :class:`security.monitor.SecurityMonitor` (rules with the
  ``GBOPS_SECURITY_*`` thresholds, the audit log as its ``audit``, the ticket notifier's webhook client
  towards ``GBOPS_SECURITY_WEBHOOK_URL``), wires the SIP listener, the audit listener and the SIP block hook.
* :class:`SipSecurityFeed` (a SIP listener): ``RegisterRejected`` -> ``sip_auth_failed`` (wrong password),
  ``sip_unknown_device`` (an id the platform does not know), ``sip_locked`` (refused while locked out);
  ``SecurityEvent`` -> ``sip_address_mismatch`` / ``sip_locked``; a device registering from another IP
  address than its last one -> ``device_new_address``.
* :class:`AuditSecurityFeed` (an audit log listener): configuration actions -> ``config_change``;
  ``download.request`` -> ``download`` (the bulk-download rule counts them); playback or a download outside
  ``GBOPS_SECURITY_WORK_HOURS`` (Beijing time) -> ``off_hours_access``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from gbcore.log import get_logger

log = get_logger("gbops.security")

#: Audit actions that change the platform's configuration (each becomes a ``config_change`` event).
CONFIG_ACTION_PREFIXES = ("user.", "role.", "grant.", "org.", "setting.", "contract.")
CONFIG_ACTIONS = frozenset({
    "cascade.platform_add", "cascade.platform_edit", "cascade.platform_delete", "cascade.share", "record.plan",
    "watermark.policy_change", "device.password_set", "device.add", "device.edit", "device.delete",
})
NOT_CONFIG = frozenset({"user.password_change_failed"})


def is_config_action(action: str) -> bool:
    if action in NOT_CONFIG:
        return False
    return action in CONFIG_ACTIONS or action.startswith(CONFIG_ACTION_PREFIXES)


class SipSecurityFeed:
    """SIP core events -> security events (a synchronous SIP listener; ``emit`` only queues)."""

    MAX_DEVICES = 100_000

    def __init__(self, sink: Any, sip: Any | None = None, snapshots: Iterable[Any] = ()) -> None:
        self.sink = sink
        self.sip = sip
        self.addresses: dict[str, str] = {}  # device id -> the IP address of its last registration
        for snap in snapshots:
            addr = getattr(snap, "remote_addr", None)
            if addr:
                self.addresses[snap.device_id] = addr.rpartition(":")[0].strip("[]") or addr

    def _known(self, device_id: str | None) -> bool:
        gb = getattr(self.sip, "gb", None)
        return gb is None or device_id in getattr(gb, "known", ()) or device_id in self.addresses

    def __call__(self, event: Any) -> None:
        from sip_server.gb import events as ev

        try:
            if isinstance(event, ev.RegisterRejected):
                self._rejected(event)
            elif isinstance(event, ev.SecurityEvent):
                kind = "sip_address_mismatch" if event.kind == "address_mismatch" else "sip_locked"
                self.sink.emit(kind, source_ip=event.remote_addr[0], device_id=event.device_id,
                               detail={"method": event.method, "transport": event.transport,
                                       "port": event.remote_addr[1], "reason": event.detail[:300]})
            elif isinstance(event, ev.DeviceOnline):
                self._online(event)
        except Exception:
            log.exception("security.sip_feed_failed", event=type(event).__name__)

    def _rejected(self, event: Any) -> None:
        ip, port = event.remote_addr[0], event.remote_addr[1]
        detail = {"status": event.status, "reason": event.reason, "port": port}
        if event.reason == "locked out":  # a REGISTER refused while the address or id is locked out
            self.sink.emit("sip_locked", source_ip=ip, device_id=event.device_id, severity="info",
                           detail={**detail, "refused_while_locked": True})
            return
        if event.reason == "unknown device" or (event.status == 400 and event.device_id):
            self.sink.emit("sip_unknown_device", source_ip=ip, device_id=event.device_id, detail=detail)
            return
        if event.status == 400:  # no usable device id at all
            self.sink.emit("sip_unknown_device", source_ip=ip, device_id=None, detail=detail)
            return
        if not self._known(event.device_id):  # an id nobody configured, trying passwords
            self.sink.emit("sip_unknown_device", source_ip=ip, device_id=event.device_id, detail=detail)
        self.sink.emit("sip_auth_failed", source_ip=ip, device_id=event.device_id,
                       detail={**detail, "locked_out": event.locked_out})

    def _online(self, event: Any) -> None:
        ip = event.remote_addr[0]
        before = self.addresses.get(event.device_id)
        if before is not None and before != ip:
            self.sink.emit("device_new_address", source_ip=ip, device_id=event.device_id,
                           detail={"before": before, "after": ip, "port": event.remote_addr[1],
                                   "transport": event.transport})
        if before != ip:
            if len(self.addresses) >= self.MAX_DEVICES and event.device_id not in self.addresses:
                self.addresses.pop(next(iter(self.addresses)))
            self.addresses[event.device_id] = ip


class AuditSecurityFeed:
    """Audit records -> security events (an :class:`audit_log.log.AuditLog` listener)."""

    def __init__(self, sink: Any, work_hours: str = "") -> None:
        self.sink = sink
        self.work_hours = work_hours

    def __call__(self, record: dict[str, Any]) -> None:
        try:
            self._record(record)
        except Exception:
            log.exception("security.audit_feed_failed", action=record.get("action"))

    def _record(self, record: dict[str, Any]) -> None:
        from audit_log.actions import action_label

        action = str(record.get("action", ""))
        actor = record.get("actor") or {}
        target = record.get("target") or {}
        user = actor.get("name") if actor.get("type") == "user" else None
        ip = record.get("client_ip")
        detail = record.get("detail") or {}
        if is_config_action(action):
            zh, en = action_label(action)
            self.sink.emit("config_change", source_ip=ip, user=user or actor.get("name"),
                           detail={"action": action, "action_zh": zh, "action_en": en,
                                   "target": f"{target.get('type')}:{target.get('id')}", "actor_type": actor.get("type")})
            return
        if action not in ("download.request", "playback.start") or user is None:
            return
        channel = f"{detail.get('device_id')}/{detail.get('channel_id')}"
        if action == "download.request":
            self.sink.emit("download", source_ip=ip, user=user, device_id=detail.get("device_id"),
                           detail={"channel": channel, "job_id": detail.get("job_id"), "start": detail.get("start"),
                                   "end": detail.get("end")})
        from gbcore.timeutil import device_now
        from security.rules import in_work_hours

        now = device_now()
        if not in_work_hours(self.work_hours, now.hour, now.minute):
            self.sink.emit("off_hours_access", source_ip=ip, user=user, device_id=detail.get("device_id"),
                           detail={"action": action, "channel": channel, "local_time": now.strftime("%H:%M"),
                                   "work_hours": self.work_hours})


def monitor_audit(audit_log: Any) -> Any:
    """The monitor's ``audit(action, target, detail)``: recorded by the platform itself (actor system)."""
    from audit_log.log import Actor, Target

    async def audit(action: str, target: str, detail: dict[str, Any]) -> None:
        kind, _, ident = target.partition(":")
        await audit_log.record(actor=Actor("system", None, "security-monitor"), action=action,
                               target=Target(kind, ident), client_ip=detail.get("source_ip") or detail.get("address"),
                               detail=detail)

    return audit


async def start_security(settings: Any, sessionmaker: Any, *, audit_log: Any | None, sip: Any | None = None,
                         registry: Any | None = None) -> Any:
    """The platform's security monitor, started and wired (see the module docstring)."""
    from ops_portal.tickets.notify import WebhookNotifier
    from security.monitor import SecurityMonitor
    from security.rules import rules_from_settings

    webhook = WebhookNotifier(settings.security_webhook_url) if settings.security_webhook_url else None
    monitor = SecurityMonitor(
        sessionmaker, rules=rules_from_settings(settings),
        audit=monitor_audit(audit_log) if audit_log is not None else None, webhook=webhook,
        autoblock=settings.security_autoblock, autoblock_minutes=settings.security_autoblock_minutes,
        retention_days=settings.security_retention_days, exempt=settings.security_autoblock_exempt)
    await monitor.start()
    if audit_log is not None:
        audit_log.listeners.append(AuditSecurityFeed(monitor, settings.security_work_hours))
    if sip is not None:
        snapshots = await registry.snapshot() if registry is not None else ()
        sip.add_listener(SipSecurityFeed(monitor, sip, snapshots))
        sip.address_blocked = monitor.is_blocked
    return monitor


async def stop_security(monitor: Any | None) -> None:
    if monitor is None:
        return
    await monitor.stop()
    if monitor.webhook is not None:
        await monitor.webhook.close()
