"""Assembles the one-process platform: database, registry, SIP service and HTTP portal in one loop."""

from __future__ import annotations

import asyncio
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gbcore.log import get_logger
from gbcore.settings import Settings
from sip_server.gb.server import GbConfig

log = get_logger("gbops.app")


def _static_dir() -> Path | None:
    """ops_portal/web/static (the FLV player fetched by `make run`), when it exists."""
    path = Path(__file__).resolve().parents[1] / "ops_portal" / "web" / "static"
    return path if path.is_dir() else None


def gb_config(settings: Settings) -> GbConfig:
    return GbConfig(
        sip_id=settings.sip_id,
        domain=settings.sip_domain,
        realm=settings.realm,
        default_password=settings.sip_password.get_secret_value() if settings.sip_password else None,
        allow_unknown=settings.sip_allow_unknown,
        keepalive_interval=settings.sip_keepalive_interval,
        keepalive_misses=settings.sip_keepalive_misses,
        min_expires=settings.sip_register_min_expires,
        max_expires=settings.sip_register_max_expires,
        lockout_failures=settings.sip_lockout_failures,
        lockout_window=settings.sip_lockout_window,
        lockout_duration=settings.sip_lockout_duration,
        catalog_timeout=settings.sip_catalog_timeout,
        query_timeout=settings.sip_query_timeout,
        record_query_timeout=settings.record_query_timeout,
        device_control_timeout=settings.device_control_timeout,
        preset_query_timeout=settings.preset_query_timeout,
        nonce_ttl=settings.sip_nonce_ttl,
        cascade_catalog_items_udp=settings.cascade_catalog_items_udp,
        cascade_catalog_items_tcp=settings.cascade_catalog_items_tcp,
        cascade_notify_batch=settings.cascade_notify_batch,
        cascade_notify_interval=settings.cascade_notify_interval,
        cascade_push_unsubscribed=settings.cascade_push_unsubscribed,
        cascade_retry_initial=settings.cascade_retry_initial,
        cascade_retry=settings.cascade_retry,
    )


class Platform:
    """``gbops run``: SIP + HTTP in one asyncio process with the embedded (or configured) database."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine: Any = None
        self.registry: Any = None
        self.writer: Any = None
        self.sip: Any = None
        self.media: Any = None
        self.downloads: Any = None  # watermark.downloads.DownloadManager
        self.recordings: Any = None  # media_relay.recording.service.RecordingService
        self.control: Any = None  # device_control.service.ControlService
        self.alarms: Any = None  # alarms.service.AlarmService
        self.cascade: Any = None  # cascade.service.CascadeService
        self.cascade_feed: Any = None  # gbops.cascade_wiring.RegistryFeed
        self.audit: Any = None
        self.security: Any = None  # security.monitor.SecurityMonitor (issue 16)
        self.time: Any = None  # timesync.service.TimeService (issue 16)
        self.backups: Any = None  # gbops.backup.BackupScheduler (issue 16)
        self._audit_tasks: set[asyncio.Task] = set()
        self.http: Any = None  # ops_portal.http_limits.PortalServers
        self.tls: Any = None  # gbcore.tls.TlsSetup
        self._run_id: int | None = None
        self.reports: Any = None  # availability report jobs and their daily schedule (issue 7)
        self.tickets: Any = None  # automatic tickets, overdue notices, quality sampler (issue 7)
        self.admin_password: str | None = None
        self.stopped = asyncio.Event()

    async def start(self) -> None:
        from device_registry.service import Registry, RegistryWriter
        from gbcore.db import make_engine, make_sessionmaker
        from gbops.migrate import migrate
        from ops_portal.app import create_app
        from ops_portal.users import ensure_admin
        from sip_server.service import SipService

        s = self.settings
        from gbcore.timeutil import set_device_timezone

        set_device_timezone(s.device_timezone)  # Beijing time at every edge, whatever the host's zone
        s.data_dir.mkdir(parents=True, exist_ok=True)
        self.engine = make_engine(s.db_url)
        await migrate(self.engine)
        sessionmaker = make_sessionmaker(self.engine)
        from audit_log.log import AuditLog

        self.audit = AuditLog.from_settings(s, sessionmaker)
        await self.audit.start()
        from ops_portal.access import record_grant_splits

        if splits := await record_grant_splits(self.audit, sessionmaker):  # migration 0007's splits, audited once
            log.info("role.grant_splits_recorded", count=splits)
        self.registry = Registry(sessionmaker)
        self.writer = RegistryWriter(self.registry)
        await self.writer.start()
        self._run_id = await self.registry.start_platform_run(datetime.now(UTC))
        self.admin_password = await ensure_admin(sessionmaker, s)
        if self.admin_password:
            path = s.data_dir / "initial-admin-password.txt"
            print(
                f"初始管理员账号 admin 的密码已生成（首次登录后须修改），并已保存到 {path}（权限 0600）：\n"
                f"The initial password of user 'admin' was generated (change it at first login) "
                f"and saved to {path} (mode 0600):\n\n    {self.admin_password}\n",
                file=sys.stdout,
                flush=True,
            )

        from gbcore.tls import resolve as resolve_tls
        from gbcore.tls import upper_client_context

        self.tls = resolve_tls(s)  # HTTPS or plain (logged); the certificate (configured or self-signed)
        if self._cluster_media_only():  # [cluster-media] a media-only node: no SIP, no portal (issue 17)
            await self._start_media_node(s, sessionmaker)
            return
        self.sip = SipService(gb_config(s), host=s.sip_host, port=s.sip_port, writer=self.writer,
                              tls_port=s.sip_tls_port, tls_context=self.tls.context(),
                              tls_client_context=upper_client_context(s),  # verifies uppers over TLS
                              advertised_address=s.sip_advertised_address,
                              tcp_idle_timeout=s.sip_tcp_idle_timeout,
                              tcp_max_connections=s.sip_tcp_max_connections,
                              tcp_max_per_address=s.sip_tcp_max_per_address,
                              on_security_event=self._record_sip_security)
        self.sip.restore(await self.registry.snapshot())
        from gbops.security_wiring import start_security

        # security events, alerts, blocks (issue 16): before the SIP service listens and the portal serves
        self.security = await start_security(s, sessionmaker, audit_log=self.audit, sip=self.sip,
                                             registry=self.registry)
        await self.sip.start()

        from gbops.media_signalling import SipSignalling
        from ops_portal.live import live_audit
        from watermark.config import WatermarkConfig
        from watermark.pipeline import WatermarkHub
        from watermark.policy import record_policy_change

        watermark_config = WatermarkConfig.from_settings(s)  # the package's typed config, built once
        watermark = WatermarkHub.from_config(watermark_config)  # per-viewer overlay + session tag on every output
        if await record_policy_change(self.audit, watermark.policy) is not None:
            log.info("watermark.policy_recorded", off_roles=sorted(watermark.policy.off_roles))
        # signalling into media (the SIP service as media's typed port), watermark into media (the
        # per-viewer transform factory)
        await self._cluster_media_sip(s)  # [cluster-media] this SIP service answers the media nodes (issue 17)
        if self._cluster_media_remote():  # [cluster-media] no media role here: sessions on media nodes
            self.media = await self._cluster_media_portal(s)
        else:
            self.media = self._media_service(s, SipSignalling(self.sip), watermark)
            await self.media.start()
            # platform recording (issue 13): one upstream per channel shared with the viewers; playback and
            # downloads from platform storage read it through media.recordings
            self.recordings = self.media.recordings = self._recording_service(s, sessionmaker)
            await self.recordings.start()
        if s.webrtc_loopback:
            from media_relay.outputs.whep import enable_loopback_candidates

            enable_loopback_candidates()

        app = create_app(settings=s, sessionmaker=sessionmaker, registry=self.registry, sip=self.sip,
                         audit=self.audit, media=self.media)
        app.state.security = self.security  # the portal's security sink (403s, blocked addresses, logins)
        self.media.on_session_closed = live_audit.stop_recorder(self.audit, self._audit_tasks)  # live.stop
        from watermark.downloads import DownloadManager

        self.downloads = DownloadManager(watermark_config, sessionmaker, audit=self.audit, media=self.media)
        await self.downloads.start()  # fails the jobs a previous run left unfinished
        app.state.downloads = self.downloads
        app.state.recordings = self.recordings
        await self._start_control(s, sessionmaker, app)
        await self._start_cascade(s, sessionmaker, app)
        from ops_portal.revocation import RevocationWatcher

        # revoked access ends running live sessions and downloads within 5 s (live.stop reason access_revoked)
        self.revocation = app.state.revocation = RevocationWatcher(sessionmaker, self.registry, media=self.media,
                                                                   downloads=self.downloads)
        self.revocation.start()
        from ops_portal.availability.scheduler import ReportJobs, ReportScheduler

        app.state.report_jobs = ReportJobs(sessionmaker, s, self.audit)
        self.reports = ReportScheduler(app.state.report_jobs, s)
        self.reports.start()
        from ops_portal.tickets.tasks import start_ticket_tasks

        self.tickets = start_ticket_tasks(s, sessionmaker, audit=self.audit,  # the sampler reads local video
                                          media=None if self._cluster_media_remote() else self.media)
        from gbops.time_wiring import start_time

        # issue 16, time: NTP server and own-clock check, device clock skew (app.state.timesync)
        self.time = await start_time(self, s, sessionmaker, app)
        static = _static_dir()
        if static is not None:
            from fastapi.staticfiles import StaticFiles

            app.mount("/static", StaticFiles(directory=static), name="static")
        from ops_portal.http_limits import PortalServers

        # HTTPS (+ redirect on http_port) or plain HTTP on loopback / behind a proxy (gbcore.tls); header
        # timeout, connection cap, no uvicorn proxy_headers (X-Forwarded-For: GBOPS_TRUSTED_PROXIES)
        self.http = PortalServers(app, s, self.tls.material if self.tls.https else None, log_config=None,
                                  access_log=False, lifespan="on")
        await self.http.start()
        from gbops.backup import BackupScheduler

        # issue 16, backups: daily at GBOPS_BACKUP_SCHEDULE when GBOPS_BACKUP_PASSPHRASE_FILE is set
        self.backups = BackupScheduler(s, self.audit)
        self.backups.start()
        from functools import partial

        from gbops.backup import backup_status

        # issue 16, security check: the backup facts live above the portal (GET /api/security/check)
        app.state.backup_status = partial(backup_status, s)

    # ---- [cluster-media] begin (issue 17): live view across nodes -------------------------------------------
    # A media-only node (roles without sip and portal, with media): RemoteSignalling, the media.* handlers
    # (gbops.cluster_media.serve_media), its own FLV/WHEP server (ops_portal.live.output_app). A node with sip
    # answers the media nodes' sip.* commands (serve_signalling). A node with portal and no media role: the
    # portal's media is a ClusterMedia placing sessions on the media nodes. Only in cluster mode (Redis).
    def _cluster_media_only(self) -> bool:
        roles = self.settings.role_set
        return self.settings.clustered and "media" in roles and not roles & {"sip", "portal"}

    def _cluster_media_remote(self) -> bool:
        return self.settings.clustered and "media" not in self.settings.role_set

    def _media_service(self, s: Settings, signalling: Any, watermark: Any) -> Any:
        from media_relay.service import MediaService

        return MediaService(signalling, rtp_ports=s.rtp_port_range, domain=s.sip_domain, media_host=s.media_host,
                            media_ip=s.media_ip, idle_timeout=s.live_idle_timeout,
                            media_timeout=s.live_media_timeout, transforms=watermark,
                            max_window_hours=s.playback_max_window_hours)

    async def _cluster_media_cluster(self, s: Settings) -> Any:
        """This node's cluster (the lead's ``self.cluster`` once the role split provides it) and, until then,
        its heartbeat in the node directory with the media load."""
        if getattr(self, "cluster", None) is None:
            from cluster.runtime import open_cluster

            self.cluster = await open_cluster(s)
        if getattr(self, "heartbeat", None) is None:
            from cluster.nodes import Heartbeat, NodeInfo

            from gbops.cluster_media import media_load

            cluster, roles = self.cluster, tuple(sorted(s.role_set))
            address = s.media_ip or (s.media_host if s.media_host not in ("0.0.0.0", "::") else s.sip_host)

            def info() -> Any:
                load = media_load(self.media if "media" in roles else None)
                return NodeInfo(node_id=cluster.node_id, roles=roles, address=address,
                                http_url=self._cluster_public_url(s), load=load)

            self.heartbeat = Heartbeat(cluster.directory, info, interval=s.cluster_heartbeat, ttl=s.cluster_node_ttl)
        return self.cluster

    def _cluster_public_url(self, s: Settings) -> str:
        if s.public_url:
            return s.public_url.rstrip("/")
        host = s.http_host if s.http_host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        scheme = "https" if self.tls is not None and self.tls.https else "http"
        port = s.https_port if scheme == "https" and getattr(s, "https_port", None) else s.http_port
        return f"{scheme}://{host}:{port}"

    async def _cluster_media_start_bus(self) -> None:
        if not getattr(self, "_cluster_bus_started", False):
            await self.cluster.bus.start()
            self._cluster_bus_started = True
        if getattr(self, "heartbeat", None) is not None and not getattr(self, "_cluster_heartbeat_started", False):
            self.heartbeat.start()
            self._cluster_heartbeat_started = True

    async def _cluster_media_sip(self, s: Settings) -> None:
        if not s.clustered:
            return
        from gbops.cluster_media import device_homes, serve_signalling

        cluster = await self._cluster_media_cluster(s)
        self.signalling_node = serve_signalling(cluster.bus, self.sip, homes=device_homes(cluster))
        await self._cluster_media_start_bus()

    async def _cluster_media_portal(self, s: Settings) -> Any:
        from gbops.cluster_media import ClusterMedia

        cluster = await self._cluster_media_cluster(s)
        media = ClusterMedia(cluster.bus, cluster.directory, cluster.leases, max_streams=s.media_max_streams,
                             timeout=s.cluster_rpc_timeout, open_timeout=s.cluster_rpc_timeout + 30)
        await media.start()
        await self._cluster_media_start_bus()
        return media

    async def _start_media_node(self, s: Settings, sessionmaker: Any) -> None:
        from gbops.cluster_media import RemoteSignalling, device_homes, serve_media
        from ops_portal.http_limits import PortalServers
        from ops_portal.live import live_audit
        from ops_portal.live.output_app import create_output_app
        from watermark.config import WatermarkConfig
        from watermark.pipeline import WatermarkHub

        cluster = await self._cluster_media_cluster(s)
        self.remote_signalling = RemoteSignalling(cluster.bus, cluster.directory, device_homes(cluster),
                                                  timeout=s.cluster_rpc_timeout,
                                                  invite_timeout=s.cluster_rpc_timeout + 15)
        watermark = WatermarkHub.from_config(WatermarkConfig.from_settings(s))
        self.media = self._media_service(s, self.remote_signalling, watermark)
        await self.media.start()
        self.media.on_session_closed = live_audit.stop_recorder(self.audit, self._audit_tasks)  # live.stop here
        self.media_node = serve_media(cluster.bus, self.media, cluster.leases, signalling=self.remote_signalling,
                                      public_url=self._cluster_public_url(s), max_streams=s.media_max_streams,
                                      lease_ttl=s.cluster_lease_ttl)
        await self._cluster_media_start_bus()
        app = create_output_app(settings=s, sessionmaker=sessionmaker, media=self.media)
        self.http = PortalServers(app, s, self.tls.material if self.tls.https else None, log_config=None,
                                  access_log=False, lifespan="on")
        await self.http.start()
        log.info("cluster.media_node_started", node_id=cluster.node_id, url=self._cluster_public_url(s))

    async def _cluster_media_stop(self) -> None:
        """Before the media service closes: release the stream leases, leave the directory, close the bus."""
        if getattr(self, "media_node", None) is not None:
            await self.media_node.stop()
        if getattr(self, "heartbeat", None) is not None and getattr(self, "_cluster_heartbeat_started", False):
            await self.heartbeat.stop()
        if self.media is not None and hasattr(self.media, "refresh_streams"):  # ClusterMedia
            await self.media.close()
            self.media = None
        if getattr(self, "signalling_node", None) is not None:
            await self.signalling_node.close()
        if getattr(self, "remote_signalling", None) is not None:
            await self.remote_signalling.close()
        if getattr(self, "cluster", None) is not None and getattr(self, "_cluster_bus_started", False):
            await self.cluster.close()
            self._cluster_bus_started = False
    # ---- [cluster-media] end ------------------------------------------------------------------------------

    async def _start_control(self, s: Settings, sessionmaker: Any, app: Any) -> None:
        """PTZ arbitration, tours and device commands over the SIP service (issue 14); alarms and positions
        from the SIP service into the alarm store and its live feed."""
        from alarms.service import AlarmService
        from audit_log.log import Actor, Target
        from device_control.service import ControlService
        from gbops.device_commands import AlarmFeed, SipDeviceCommands

        audit_log = self.audit

        async def audit(action: str, target: str, detail: dict) -> None:
            await audit_log.record(actor=Actor("system", None, "device-control"), action=action,
                                   target=Target("channel" if "/" in target else "device", target), detail=detail)

        self.control = app.state.control = ControlService(
            SipDeviceCommands(self.sip), sessionmaker, lock_seconds=s.ptz_lock_seconds, max_move=s.ptz_max_move,
            restore_below_level=s.ptz_restore_below_level, audit=audit)
        await self.control.start()
        self.alarms = app.state.alarms = AlarmService(sessionmaker, open_ticket=self._alarm_ticket(s, sessionmaker),
                                                      ticket_min_priority=s.alarm_ticket_min_priority,
                                                      retention_days=s.alarm_retention_days)
        await self.alarms.start()
        self.alarm_feed = AlarmFeed(self.alarms, sip=self.sip, subscribe=s.alarm_subscribe)
        self.sip.add_listener(self.alarm_feed)

    async def _start_cascade(self, s: Settings, sessionmaker: Any, app: Any) -> None:
        """This platform as a lower platform (issue 15): the upper platforms' configuration and shares, their
        SIP links (the SIP service), their media legs (the media service), PTZ at their level (device control)
        and the catalog changes they are notified of (SIP events, once the registry has applied them)."""
        from cascade.service import CascadeService
        from gbops.cascade_wiring import CascadeControl, CascadeRecords, RegistryFeed, cascade_audit

        self.cascade = app.state.cascade = CascadeService(
            sessionmaker, self.sip, self.media, audit=cascade_audit(self.audit), settings=s, system_id=s.sip_id,
            system_name=s.platform_name, key_path=s.cascade_key_path,
            control=CascadeControl(self.control), records=CascadeRecords(self.sip, self.recordings, s.sip_id))
        self.sip.add_listener(self.cascade.on_event)
        self.cascade_feed = RegistryFeed(self.cascade, self.writer)
        self.sip.add_listener(self.cascade_feed)
        await self.cascade.start()

    def _alarm_ticket(self, s: Settings, sessionmaker: Any) -> Any:
        """An alarm at or above GBOPS_ALARM_TICKET_MIN_PRIORITY opens a fault ticket on its channel (or device)."""
        if not s.alarm_ticket_min_priority:
            return None
        from ops_portal.tickets.alarm_tickets import alarm_ticket_opener

        return alarm_ticket_opener(sessionmaker, default_limit_hours=s.ticket_repair_limit_hours, audit=self.audit)

    def _recording_service(self, s: Settings, sessionmaker: Any) -> Any:
        """The recording service, wired to the media relay (live Streams), the audit log and the contracts."""
        from audit_log.log import Actor, Target
        from gbcore.ids import ChannelRef
        from media_relay.recording.service import RecordingService
        from ops_portal.contracts import contracts_for_channel

        roots = [r.strip() for r in s.record_dirs.split(",") if r.strip()] or [str(s.data_dir / "recordings")]
        key_file = str(s.record_key_path)
        media, audit_log = self.media, self.audit

        async def open_reader(channel: ChannelRef, stream: str) -> Any:
            return await media.open_reader(channel, s.live_transport)

        async def audit(action: str, target: str, detail: dict) -> None:
            await audit_log.record(actor=Actor("system", None, "recorder"), action=action,
                                   target=Target("channel" if "/" in target else "recording", target),
                                   detail=detail)

        async def retention_days(channel: ChannelRef) -> int | None:
            async with sessionmaker() as session:  # the longest storage of the contracts covering it
                found = await contracts_for_channel(session, channel, datetime.now(UTC))
            return max((c.storage_days for c in found), default=None)

        async def alert(code: str, message: str, channel: ChannelRef | None) -> None:
            # on the audit log already (record.disk_full, record.corrupt); the recording page shows the state
            log.error("record.alert", code=code, message=message, channel=channel.key if channel else None)

        return RecordingService(sessionmaker, open_reader, roots=roots, segment_seconds=s.record_segment_seconds,
                                retention_days_default=s.record_retention_days, encrypt=s.record_encrypt,
                                cipher=s.record_cipher, key_file=key_file, min_free_mb=s.record_min_free_mb,
                                check_interval=s.record_check_interval, audit=audit, alert=alert,
                                retention_days=retention_days)

    def _record_sip_security(self, kind: str, device_id: str | None, addr: tuple[str, int], detail: dict) -> None:
        """``security.sip_refused`` on the audit log: a SIP request refused because it did not come from the
        device it claimed to be, or a REGISTER lockout (already rate-limited per address by the SIP service)."""
        if self.audit is None:
            return
        from audit_log.log import Actor, Target

        async def record() -> None:
            try:
                await self.audit.record(actor=Actor("anonymous", None, f"{addr[0]}:{addr[1]}"),
                                        action="security.sip_refused", target=Target("device", device_id),
                                        client_ip=addr[0], detail=detail)
            except Exception:
                log.exception("sip.audit_security_failed", device_id=device_id, kind=kind)

        task = asyncio.ensure_future(record())
        self._audit_tasks.add(task)
        task.add_done_callback(self._audit_tasks.discard)

    @property
    def http_port(self) -> int:
        """The plain-HTTP port: the portal's own, or (HTTPS) the one that redirects (0: none)."""
        if self.http is None:
            return self.settings.http_port
        if self.http.tls is None:
            return self.http.port
        return self.http.redirect_port or 0

    @property
    def https_port(self) -> int | None:
        """The portal's HTTPS port (None: plain HTTP)."""
        return self.http.port if self.http is not None and self.http.tls is not None else None

    async def stop(self) -> None:
        log.info("platform.stopping")
        if self.backups is not None:  # a running backup may finish
            await self.backups.stop()
        if self.time is not None:
            await self.time.stop()
        if self.http is not None:
            await self.http.stop(5)
        if getattr(self, "revocation", None) is not None:
            await self.revocation.stop()
        if self.downloads is not None:
            await self.downloads.stop()
        if self.reports is not None:
            await self.reports.stop()
            await self.reports.jobs.close()
        if self.tickets is not None:
            await self.tickets.close()
        if self.cascade is not None:
            await self.cascade.close()  # BYE to the uppers' calls, unregister
        if self.cascade_feed is not None:
            await self.cascade_feed.close()
        if self.control is not None:
            await self.control.stop()
        if self.alarms is not None:
            await self.alarms.stop()
        await self._cluster_media_stop()  # [cluster-media] (issue 17)
        if self.recordings is not None:
            await self.recordings.stop()  # closes the open segments (hashed and audited)
        if self.media is not None:
            await self.media.close()
        if self.sip is not None:
            await self.sip.close()
        if self.writer is not None:
            await self.writer.stop(grace=30)
        if self._audit_tasks:
            await asyncio.gather(*self._audit_tasks, return_exceptions=True)
        from gbops.security_wiring import stop_security

        await stop_security(self.security)  # its last alerts still reach the audit log
        if self.audit is not None:
            await self.audit.stop()
        if self.registry is not None and self._run_id is not None:
            await self.registry.end_platform_run(self._run_id, datetime.now(UTC), True)
        if self.engine is not None:
            await self.engine.dispose()
        log.info("platform.stopped")

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stopped.set)
        await self.start()
        try:
            await self.stopped.wait()
        finally:
            await self.stop()
