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


def check_roles(settings: Settings) -> None:
    """Refuse role sets this version cannot run (a clear message instead of a node that half works)."""
    from gbcore.settings import SettingsError

    roles = settings.role_set
    every = {"sip", "media", "portal", "worker"}
    if not settings.clustered and roles != every:
        raise SettingsError(
            f"未配置 Redis（GBOPS_REDIS_URL）时，单个节点须运行全部角色；当前角色：{','.join(sorted(roles))} / without "
            f"Redis (GBOPS_REDIS_URL) one node must run every role (sip,media,portal,worker); got {','.join(sorted(roles))}")
    if "portal" in roles and "sip" not in roles:
        raise SettingsError("管理门户（portal）角色目前须与 SIP 信令（sip）角色运行在同一节点 / the portal role needs the sip "
                            "role on the same node in this version")
    # [cluster-media] media nodes without sip (RemoteSignalling) and sip nodes without media (the portal's
    # ClusterMedia) work across the command bus (gbops.cluster_media)


class Platform:
    """``gbops run``: SIP + HTTP in one asyncio process with the embedded (or configured) database."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine: Any = None
        self.registry: Any = None
        self.writer: Any = None
        self.sip: Any = None
        self.sip_cluster: Any = None  # gbops.cluster_sip.SipCluster: this SIP node among several (issue 17)
        self.sip_api: Any = None  # what the portal, control and the cascade ask (ClusterSip in a cluster)
        self.media: Any = None
        self.downloads: Any = None  # watermark.downloads.DownloadManager
        self.recordings: Any = None  # media_relay.recording.service.RecordingService
        self.control: Any = None  # device_control.service.ControlService
        self.alarms: Any = None  # alarms.service.AlarmService
        self.cascade: Any = None  # cascade.service.CascadeService
        self.cascade_feed: Any = None  # gbops.cascade_wiring.RegistryFeed
        self.cascade_links: Any = None  # gbops.cascade_links.LeasedUpperLinks (a cluster)
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
        self.cluster: Any = None  # cluster.runtime.Cluster (issue 17): node id, directory, leases, command bus
        self.media_node: Any = None  # gbops.cluster_media.MediaNode: this media node's media.* commands
        self.signalling_node: Any = None  # gbops.cluster_media.SignallingNode: this SIP node's sip.* commands
        self.remote_signalling: Any = None  # gbops.cluster_media.RemoteSignalling (media without sip)
        self.heartbeat: Any = None  # cluster.nodes.Heartbeat
        self.jobs: Any = None  # gbops.cluster_wiring.WorkerJobs (worker role)
        self.revocation: Any = None
        self.portal_app: Any = None  # the FastAPI app (portal role)
        self.draining = False
        self._drain_by = "signal"  # who asked for the drain: SIGTERM, or `gbops node drain` (its user@host)
        self.output_app: Any = None  # a media node's own HTTP app (outputs and health), [cluster-media]
        self.stopped = asyncio.Event()

    async def start(self) -> None:
        """Start the parts of this node's roles (``GBOPS_ROLES``; all of them: the single process).

        Roles (issue 17): ``sip`` (device and cascade signalling, the registry's writer, control, alarms, time),
        ``media`` (RTP ingest, viewers, watermark, recording, downloads), ``portal`` (API and console) and
        ``worker`` (schedulers, each under a cluster lease so that one node runs it)."""
        from device_registry.service import Registry, RegistryWriter
        from gbcore.db import make_engine, make_sessionmaker
        from gbops.migrate import migrate
        from ops_portal.users import ensure_admin

        s = self.settings
        roles = s.role_set
        check_roles(s)
        from gbcore.timeutil import set_device_timezone

        set_device_timezone(s.device_timezone)  # Beijing time at every edge, whatever the host's zone
        s.data_dir.mkdir(parents=True, exist_ok=True)
        from gbops.secrets import check_shared_keys

        check_shared_keys(s)  # a cluster node never generates a key of its own (GBOPS_SECRETS_DIR)
        self.engine = make_engine(s.db_url)
        await migrate(self.engine)
        sessionmaker = make_sessionmaker(self.engine)
        from cluster.runtime import open_cluster

        # node identity, directory, leases and the command bus: Redis in a cluster, in memory otherwise
        self.cluster = await open_cluster(s)
        log.info("cluster.node", node_id=self.cluster.node_id, roles=sorted(roles), clustered=s.clustered)
        from audit_log.log import AuditLog

        # every node appends to the one log; checkpoints are signed by the holder of job:audit-checkpoint
        self.audit = AuditLog.from_settings(s, sessionmaker, create_key=not s.clustered)
        await self.audit.start(checkpoints=not s.clustered)
        from ops_portal.access import record_grant_splits

        if splits := await record_grant_splits(self.audit, sessionmaker):  # migration 0007's splits, audited once
            log.info("role.grant_splits_recorded", count=splits)
        self.registry = Registry(sessionmaker)
        if "sip" in roles:  # presence and catalog are written by the SIP node(s) only
            self.writer = RegistryWriter(self.registry)
            await self.writer.start()
            # one run per SIP node; another live node's open run is not a crash of this one (issue 17)
            live = [n.node_id for n in await self.cluster.directory.nodes()] if s.clustered else None
            self._run_id = await self.registry.start_platform_run(datetime.now(UTC), node_id=self.cluster.node_id,
                                                                  live_nodes=live)
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

        self.tls = resolve_tls(s)  # HTTPS or plain (logged); the certificate (configured or self-signed)
        if "sip" in roles:
            await self._start_sip(s, sessionmaker)
        if "media" in roles:
            await self._start_media(s, sessionmaker)
        await self._cluster_media_start(s)  # [cluster-media] live view across nodes (issue 17)
        app = None
        if "portal" in roles:
            app = self._create_portal(s, sessionmaker)
        if "sip" in roles:
            await self._start_control(s, sessionmaker, app)
            await self._start_cascade(s, sessionmaker, app)
        if app is not None:
            from ops_portal.revocation import RevocationWatcher

            # revoked access ends running live sessions and downloads within 5 s (live.stop reason access_revoked)
            self.revocation = app.state.revocation = RevocationWatcher(sessionmaker, self.registry, media=self.media,
                                                                       downloads=self.downloads)
            self.revocation.start()
            from ops_portal.availability.scheduler import ReportJobs

            app.state.report_jobs = ReportJobs(sessionmaker, s, self.audit)  # reports made on request
        if "sip" in roles:
            from gbops.time_wiring import start_time

            # issue 16, time: NTP server and own-clock check, device clock skew (app.state.timesync)
            self.time = await start_time(self, s, sessionmaker, app)
        if "worker" in roles:
            self._start_worker(s, sessionmaker, app)
        if app is not None:
            await self._serve_portal(s, app)
        elif "media" in roles and s.clustered:
            await self._cluster_media_serve_outputs(s, sessionmaker)  # [cluster-media] its own FLV/WHEP
        if self.media_node is not None:  # [cluster-media] where browsers fetch this node's outputs
            self.media_node.public_url = self.public_url
        from cluster.nodes import Heartbeat
        from gbops.cluster_wiring import node_info_source

        self.heartbeat = Heartbeat(self.cluster.directory, node_info_source(self), interval=s.cluster_heartbeat,
                                   ttl=s.cluster_node_ttl)
        self.heartbeat.start()
        if self.portal_app is not None:
            self.portal_app.state.ready = True

    async def _start_sip(self, s: Settings, sessionmaker: Any) -> None:
        """Device and cascade signalling with its security monitor (issue 16)."""
        from gbcore.tls import upper_client_context
        from sip_server.service import SipService

        self.sip = SipService(gb_config(s), host=s.sip_host, port=s.sip_port, writer=self.writer,
                              tls_port=s.sip_tls_port, tls_context=self.tls.context(),
                              tls_client_context=upper_client_context(s),  # verifies uppers over TLS
                              advertised_address=s.sip_advertised_address,
                              tcp_idle_timeout=s.sip_tcp_idle_timeout,
                              tcp_max_connections=s.sip_tcp_max_connections,
                              tcp_max_per_address=s.sip_tcp_max_per_address,
                              on_security_event=self._record_sip_security)
        self.sip_api = self.sip
        if s.clustered:  # several SIP nodes (gbops.cluster_sip): restore this node's devices only
            from gbops.cluster_media import device_homes
            from gbops.cluster_sip import ClusterSip, SipCluster

            homes = device_homes(self.cluster)
            self.sip_cluster = SipCluster(self.cluster.bus, self.cluster.directory, homes, self.sip, self.registry,
                                          address=self.sip_address, reconcile=s.cluster_sip_reconcile,
                                          # a keepalive window, and never less than a few directory ttls
                                          adopt_grace=max(s.sip_keepalive_interval * s.sip_keepalive_misses,
                                                          3 * s.cluster_node_ttl))
            await self.sip_cluster.restore()
            self.sip_api = ClusterSip(self.sip, self.cluster.bus, self.cluster.directory, homes,
                                      timeout=s.cluster_rpc_timeout)
        else:
            self.sip.restore(await self.registry.snapshot())
        from gbops.security_wiring import start_security

        # security events, alerts, blocks (issue 16): before the SIP service listens and the portal serves
        self.security = await start_security(s, sessionmaker, audit_log=self.audit, sip=self.sip,
                                             registry=self.registry)
        await self.sip.start()
        if self.sip_cluster is not None:
            self.sip_cluster.start()

    async def _start_media(self, s: Settings, sessionmaker: Any) -> None:
        """RTP ingest, viewers with the watermark, platform recording, downloads."""
        from gbops.media_signalling import SipSignalling
        from media_relay.service import MediaService
        from ops_portal.live import live_audit
        from watermark.config import WatermarkConfig
        from watermark.pipeline import WatermarkHub
        from watermark.policy import record_policy_change

        watermark_config = WatermarkConfig.from_settings(s)  # the package's typed config, built once
        watermark = WatermarkHub.from_config(watermark_config)  # per-viewer overlay + session tag on every output
        if await record_policy_change(self.audit, watermark.policy) is not None:
            log.info("watermark.policy_recorded", off_roles=sorted(watermark.policy.off_roles))
        # signalling into media (the SIP service as media's typed port, or the SIP node's over the command bus
        # on a node without the sip role: [cluster-media]), watermark into media (the per-viewer transform factory)
        signalling: Any = (SipSignalling(self.sip, stream_form=self._stream_form) if self.sip is not None
                           else self._cluster_remote_signalling(s))
        if self.sip is not None and s.clustered:  # several SIP nodes: the others' devices through their home
            from gbops.cluster_sip import RoutedSignalling

            signalling = RoutedSignalling(signalling, self._cluster_remote_signalling(s))
        self.media = MediaService(signalling, rtp_ports=s.rtp_port_range, domain=s.sip_domain,
                                  media_host=s.media_host, media_ip=s.media_ip,
                                  idle_timeout=s.live_idle_timeout, media_timeout=s.live_media_timeout,
                                  transforms=watermark, max_window_hours=s.playback_max_window_hours)
        await self.media.start()
        # platform recording (issue 13): one upstream per channel shared with the viewers; playback and
        # downloads from platform storage read it through media.recordings
        self.recordings = self.media.recordings = self._recording_service(s, sessionmaker)
        await self.recordings.start()
        if s.webrtc_loopback:
            from media_relay.outputs.whep import enable_loopback_candidates

            enable_loopback_candidates()
        self.media.on_session_closed = live_audit.stop_recorder(self.audit, self._audit_tasks)  # live.stop
        from watermark.downloads import DownloadManager

        self.downloads = DownloadManager(watermark_config, sessionmaker, audit=self.audit, media=self.media)
        await self.downloads.start()  # fails the jobs a previous run left unfinished

    def _create_portal(self, s: Settings, sessionmaker: Any) -> Any:
        """The API and console over this node's services."""
        from ops_portal.app import create_app

        app = create_app(settings=s, sessionmaker=sessionmaker, registry=self.registry, sip=self.sip_api,
                         audit=self.audit, media=self.media)
        self.portal_app = app
        app.state.ready = False  # GET /api/health?ready=1 answers 503 "starting" until start() ends
        app.state.security = self.security  # the portal's security sink (403s, blocked addresses, logins)
        app.state.downloads = self.downloads
        app.state.recordings = self.recordings
        app.state.cluster = self.cluster  # issue 17: GET /api/cluster/nodes
        app.state.cluster_clustered = s.clustered
        from gbops.cluster_wiring import JOBS

        # the single process signs checkpoints from AuditLog.start, not under a lease
        app.state.cluster_jobs = [n for n in JOBS if s.clustered or n != "job:audit-checkpoint"]
        app.state.cluster_job_labels = dict(JOBS)
        return app

    async def _serve_portal(self, s: Settings, app: Any) -> None:
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
        from functools import partial

        from gbops.backup import backup_status

        # issue 16, security check: the backup facts live above the portal (GET /api/security/check)
        app.state.backup_status = partial(backup_status, s)

    # ---- [cluster-media] begin (issue 17): live view across nodes ---------------------------------------------
    # In a cluster: a SIP node answers the media nodes' sip.* commands (serve_signalling); a media node answers
    # the portals' media.* commands (serve_media, the stream ownership leases) and, without the portal role,
    # serves its viewers' FLV/WHEP itself (ops_portal.live.output_app); a portal without the media role places
    # sessions on the media nodes (ClusterMedia). See gbops.cluster_media.
    def _cluster_remote_signalling(self, s: Settings) -> Any:
        from gbops.cluster_media import RemoteSignalling, device_homes

        self.remote_signalling = RemoteSignalling(self.cluster.bus, self.cluster.directory,
                                                  device_homes(self.cluster), timeout=s.cluster_rpc_timeout,
                                                  invite_timeout=s.cluster_rpc_timeout + 15)
        return self.remote_signalling

    async def _cluster_media_start(self, s: Settings) -> None:
        """Register this node's commands, give a portal without media its ClusterMedia, start the bus."""
        if not s.clustered:
            return
        from gbops.cluster_media import ClusterMedia, device_homes, serve_media, serve_signalling

        cluster, roles = self.cluster, s.role_set
        if self.sip is not None:
            self.signalling_node = serve_signalling(cluster.bus, self.sip, homes=device_homes(cluster),
                                                    address=self.sip_address, stream_form=self._stream_form,
                                                    directory=cluster.directory, sweep=s.cluster_heartbeat)
        if "media" in roles:
            self.media_node = serve_media(cluster.bus, self.media, cluster.leases, signalling=self.remote_signalling,
                                          max_streams=s.media_max_streams, lease_ttl=s.cluster_lease_ttl)
            from ops_portal.live import live_audit

            self.media_node.directory = cluster.directory  # a drain picks the nodes its streams move to
            self.media_node.adopt_timeout = s.cluster_rpc_timeout + 30
            self.media_node.on_session_moved = live_audit.move_recorder(self.audit, self._audit_tasks)
        elif "portal" in roles:
            self.media = ClusterMedia(cluster.bus, cluster.directory, cluster.leases,
                                      max_streams=s.media_max_streams, timeout=s.cluster_rpc_timeout,
                                      open_timeout=s.cluster_rpc_timeout + 30, lease_wait=s.cluster_lease_ttl + 2,
                                      stale_after=max(3 * s.cluster_heartbeat, s.cluster_node_ttl / 2))
            from ops_portal.live import live_audit

            # live.stop of the sessions whose media node vanished (the media nodes record the others)
            self.media.on_session_closed = live_audit.stop_recorder(self.audit, self._audit_tasks)
            await self.media.start()

        async def drain_command(payload: dict) -> dict:
            # `gbops node drain`: this node drains (a media node moves its viewers), then stops, as on SIGTERM
            by = payload.get("by")
            self._drain_by = by[:128] if isinstance(by, str) and by.isprintable() else "gbops node drain"
            log.info("platform.drain_requested", by=self._drain_by)
            self.stopped.set()
            return {"node_id": cluster.node_id, "draining": True}

        cluster.bus.register("node.drain", drain_command)
        await cluster.bus.start()

    async def drain(self) -> None:
        """Before a clustered media node stops (SIGTERM, ``gbops node drain``): no new stream here (the heartbeat
        says draining, readiness answers 503), each stream moves to another media node make-before-break and
        its players switch (:meth:`gbops.cluster_media.MediaNode.drain`), for at most ``GBOPS_DRAIN_TIMEOUT``.
        The single process and nodes without the media role stop as before."""
        if self.media_node is None or not self.settings.clustered:
            return
        self.draining = True
        for app in (self.portal_app, self.output_app):
            if app is not None:
                app.state.draining = True  # readiness 503 "draining"
        if self.heartbeat is not None:
            try:
                await self.heartbeat.beat()  # the portals stop placing streams here now, not at the next beat
            except Exception:
                log.exception("platform.drain_heartbeat_failed")
        try:
            result = await self.media_node.drain(timeout=self.settings.drain_timeout)
        except Exception:
            log.exception("platform.drain_failed")
            return
        log.info("platform.drained", **result)
        from audit_log.log import Actor, Target

        try:  # an operations action on the evidence: who drained which node, and what moved
            await self.audit.record(actor=Actor.system(f"node {self.cluster.node_id}"), action="node.drain",
                                    target=Target("node", self.cluster.node_id),
                                    detail={"by": self._drain_by,
                                            **{k: result.get(k) for k in ("moved", "failed", "left")}})
        except Exception:
            log.exception("platform.drain_audit_failed")

    async def _cluster_media_serve_outputs(self, s: Settings, sessionmaker: Any) -> None:
        """A media node without the portal: its viewers' outputs and the health check on its HTTP port."""
        from ops_portal.http_limits import PortalServers
        from ops_portal.live.output_app import create_output_app

        app = create_output_app(settings=s, sessionmaker=sessionmaker, media=self.media, security=self.security)
        self.output_app = app  # its readiness turns 503 "draining" when the node drains or stops
        self.http = PortalServers(app, s, self.tls.material if self.tls.https else None, log_config=None,
                                  access_log=False, lifespan="on")
        await self.http.start()

    async def _cluster_media_stop(self) -> None:
        """Before the media service closes: release the stream leases, close the portal's remote media."""
        if self.media_node is not None:
            await self.media_node.stop()
        if self.media is not None and hasattr(self.media, "refresh_streams"):  # a ClusterMedia
            await self.media.close()
            self.media = None
        if self.signalling_node is not None:
            await self.signalling_node.close()
        if self.remote_signalling is not None:
            await self.remote_signalling.close()
    # ---- [cluster-media] end ---------------------------------------------------------------------------------

    def _start_worker(self, s: Settings, sessionmaker: Any, app: Any) -> None:
        """The schedulers, each under its cluster lease (the single process holds them all at once)."""
        from gbops.cluster_wiring import WorkerJobs

        self.jobs = WorkerJobs(self.cluster, s.cluster_lease_ttl)

        async def start_reports() -> Any:
            from ops_portal.availability.scheduler import ReportJobs, ReportScheduler

            jobs = app.state.report_jobs if app is not None else ReportJobs(sessionmaker, s, self.audit)
            scheduler = self.reports = ReportScheduler(jobs, s)
            scheduler.start()  # makes up a missed day at once (never twice: it reads the reports table first)
            return scheduler

        async def stop_reports(scheduler: Any) -> None:
            await scheduler.stop()
            if app is None:
                await scheduler.jobs.close()
            self.reports = None

        self.jobs.add("job:reports", start_reports, stop_reports)

        async def start_tickets() -> Any:
            from ops_portal.tickets.tasks import start_ticket_tasks

            # the quality sampler reads video: only where this node has the media role ([cluster-media])
            media = self.media if "media" in s.role_set else None
            self.tickets = start_ticket_tasks(s, sessionmaker, audit=self.audit, media=media)
            return self.tickets

        async def stop_tickets(tasks: Any) -> None:
            await tasks.close()
            self.tickets = None

        self.jobs.add("job:tickets", start_tickets, stop_tickets)

        async def start_backups() -> Any:
            from gbops.backup import BackupScheduler

            # issue 16, backups: daily at GBOPS_BACKUP_SCHEDULE when GBOPS_BACKUP_PASSPHRASE_FILE is set
            self.backups = BackupScheduler(s, self.audit)
            self.backups.start()
            return self.backups

        async def stop_backups(backups: Any) -> None:
            await backups.stop()  # a running backup may finish
            self.backups = None

        self.jobs.add("job:backups", start_backups, stop_backups)
        if s.clustered:  # the single process signs from the start (AuditLog.start)
            audit = self.audit

            async def start_signer() -> Any:
                await audit.start_checkpoints()
                return audit

            async def stop_signer(log_: Any) -> None:
                await log_.stop_checkpoints()

            self.jobs.add("job:audit-checkpoint", start_signer, stop_signer)
        self.jobs.start()

    async def _start_control(self, s: Settings, sessionmaker: Any, app: Any | None) -> None:
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

        self.control = ControlService(
            SipDeviceCommands(self.sip_api), sessionmaker, lock_seconds=s.ptz_lock_seconds, max_move=s.ptz_max_move,
            restore_below_level=s.ptz_restore_below_level, audit=audit)
        await self.control.start()
        self.alarms = AlarmService(sessionmaker, open_ticket=self._alarm_ticket(s, sessionmaker),
                                   ticket_min_priority=s.alarm_ticket_min_priority,
                                   retention_days=s.alarm_retention_days)
        await self.alarms.start()
        if app is not None:
            app.state.control, app.state.alarms = self.control, self.alarms
        self.alarm_feed = AlarmFeed(self.alarms, sip=self.sip, subscribe=s.alarm_subscribe)
        self.sip.add_listener(self.alarm_feed)

    async def _start_cascade(self, s: Settings, sessionmaker: Any, app: Any | None) -> None:
        """This platform as a lower platform (issue 15): the upper platforms' configuration and shares, their
        SIP links (the SIP service), their media legs (the media service), PTZ at their level (device control)
        and the catalog changes they are notified of (SIP events, once the registry has applied them)."""
        from cascade.service import CascadeService
        from gbops.cascade_wiring import CascadeControl, CascadeRecords, RegistryFeed, cascade_audit

        links: Any = self.sip
        if s.clustered:  # one SIP node registers to each upper (a lease); only nodes with media compete for it
            from gbops.cascade_links import LeasedUpperLinks

            links = self.cascade_links = LeasedUpperLinks(self.sip, self.cluster.leases, ttl=s.cluster_lease_ttl,
                                                          compete="media" in s.role_set)
            self.cascade_links.serve(self.cluster.bus)  # other nodes' device events reach the holder
        self.cascade = CascadeService(
            sessionmaker, links, self.media, audit=cascade_audit(self.audit), settings=s, system_id=s.sip_id,
            system_name=s.platform_name, key_path=s.cascade_key_path,
            control=CascadeControl(self.control), records=CascadeRecords(self.sip_api, self.recordings, s.sip_id))
        if app is not None:
            app.state.cascade = self.cascade
        self.sip.add_listener(self.cascade.on_event)
        self.cascade_feed = RegistryFeed(self.cascade, self.writer)
        self.sip.add_listener(self.cascade_feed)
        await self.cascade.start()
        if self.cascade_links is not None:
            await self.cascade_links.start()
            self._watch_cascade_changes()

    def _watch_cascade_changes(self) -> None:
        """A platform or share edited on one node: every other SIP node reloads its uppers (``cascade.changed``)."""
        bus, me, cascade = self.cluster.bus, self.cluster.node_id, self.cascade

        def changed() -> None:
            task = asyncio.ensure_future(bus.publish("cascade.changed", {"node_id": me}))
            self._audit_tasks.add(task)
            task.add_done_callback(self._audit_tasks.discard)

        def reload(payload: dict) -> None:
            if payload.get("node_id") != me:
                task = asyncio.ensure_future(cascade.start())  # start() reloads the platforms from the database
                self._audit_tasks.add(task)
                task.add_done_callback(self._audit_tasks.discard)

        cascade.on_change = changed
        bus.subscribe("cascade.changed", reload)

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
            if self.media_node is not None:  # [cluster-media] under the ownership lease of the channel's stream
                return await self.media_node.open_reader(channel, s.live_transport, stream)
            return await media.open_reader(channel, s.live_transport, stream)

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

    async def _stream_form(self, device_id: str) -> str | None:
        """The device's stream identification form (device management's ``stream_form``), what the SIP side
        names a main or sub-stream INVITE in; None for a device the registry does not know."""
        device = await self.registry.get_device(device_id)
        return getattr(device, "stream_form", None) if device is not None else None

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
        self.draining = True
        for app in (self.portal_app, self.output_app):
            if app is not None:
                app.state.draining = True  # readiness 503 "draining" at once
        if self.heartbeat is not None:
            await self.heartbeat.stop()  # leaves the node directory at once
        if self.jobs is not None:
            if self.settings.clustered and self.audit is not None and self.audit.signs:
                try:  # the leaving signer closes with a checkpoint; the next holder signs at once anyway
                    await self.audit.checkpoint()
                except Exception as exc:
                    log.error("audit.final_checkpoint_failed", error=str(exc))
            await self.jobs.stop()  # each job ends, then its lease is released for another worker node
        if self.time is not None:
            await self.time.stop()
        if self.http is not None:
            await self.http.stop(5)
        if self.revocation is not None:
            await self.revocation.stop()
        if self.downloads is not None:
            await self.downloads.stop()
        if self.portal_app is not None and getattr(self.portal_app.state, "report_jobs", None) is not None:
            await self.portal_app.state.report_jobs.close()
        if self.cascade is not None:
            await self.cascade.close()  # BYE to the uppers' calls, unregister
        if self.cascade_links is not None:
            await self.cascade_links.stop()  # un-register, then release the leases: another node takes over
        if self.cascade_feed is not None:
            await self.cascade_feed.close()
        if self.control is not None:
            await self.control.stop()
        if self.alarms is not None:
            await self.alarms.stop()
        await self._cluster_media_stop()  # [cluster-media] leases released, the portal's remote media closed
        if self.recordings is not None:
            await self.recordings.stop()  # closes the open segments (hashed and audited)
        if self.media is not None:
            await self.media.close()
        if self.sip_cluster is not None:
            await self.sip_cluster.close()
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
        if self.cluster is not None:
            await self.cluster.close()
        if self.engine is not None:
            await self.engine.dispose()
        log.info("platform.stopped")

    @property
    def sip_address(self) -> str:
        """This node's SIP address as devices know it (``host:port``): a device's home outlives the node's id
        by it (gbops.cluster_sip)."""
        import socket

        s = self.settings
        if s.sip_advertised_address:
            host, _, port = s.sip_advertised_address.rpartition(":")
            return s.sip_advertised_address if port.isdigit() and host else f"{s.sip_advertised_address}:{s.sip_port}"
        host = s.sip_host
        if host in ("0.0.0.0", "::", ""):  # every interface: the machine's name tells nodes apart
            host = socket.gethostname()
        return f"{host}:{s.sip_port}"

    @property
    def public_url(self) -> str | None:
        """The URL browsers reach this node's HTTP server at (``GBOPS_PUBLIC_URL``, else what it listens on)."""
        if self.settings.public_url:
            return self.settings.public_url.rstrip("/")
        if self.http is None:
            return None
        host = self.settings.http_host
        if host in ("0.0.0.0", "::"):
            from gbops.cluster_wiring import node_address

            host = node_address(self.settings)
        if self.https_port is not None:
            return f"https://{host}:{self.https_port}"
        return f"http://{host}:{self.http.port}"

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stopped.set)
        try:
            await self.start()
        except BaseException:
            await self.stop()  # what started before the failure stops cleanly (ports, leases, the directory)
            raise
        try:
            await self.stopped.wait()
            await self.drain()  # [cluster-media] a clustered media node moves its streams first (issue 17)
        finally:
            await self.stop()
