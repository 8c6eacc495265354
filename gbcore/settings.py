"""Platform settings: ``GBOPS_*`` environment variables, then ``gbops.toml``, then defaults.

Secrets (SIP password, admin password, database URL with credentials) are ``SecretStr`` so that they
never appear in a repr or a log line.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from gbcore.passwords import weak_password_reason

_GB_ID = re.compile(r"^\d{18,20}$")
_DOMAIN = re.compile(r"^\d{8}$|^\d{10}$")


class SettingsError(ValueError):
    """A setting that prevents the platform from starting; the message says what to do."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GBOPS_",
        toml_file=os.environ.get("GBOPS_CONFIG", "gbops.toml"),
        extra="ignore",
    )

    data_dir: Path = Path("./gbops-data")

    # --- SIP / GB/T 28181 ---
    sip_id: str = "34020000002000000001"
    sip_domain: str = "3402000000"
    sip_host: str = "0.0.0.0"
    sip_port: int = 5060
    sip_password: SecretStr | None = None
    sip_allow_unknown: bool = True
    sip_keepalive_interval: float = Field(60.0, gt=0, description="default keepalive interval (s)")
    sip_keepalive_misses: int = Field(3, ge=1, description="missed keepalives before offline")
    sip_register_min_expires: int = 60
    sip_register_max_expires: int = 86400
    sip_lockout_failures: int = 5
    sip_lockout_window: float = 600.0
    sip_lockout_duration: float = 600.0
    sip_catalog_timeout: float = 30.0
    sip_query_timeout: float = 10.0
    sip_nonce_ttl: float = 300.0
    sip_advertised_address: str | None = Field(
        None, description="host[:port] put in Via/Contact when the platform runs behind NAT or in a cloud "
        "(default: the listening address, or the local address that reaches the device)")
    sip_tcp_idle_timeout: float = Field(30.0, gt=0, description="a SIP TCP connection that has not sent an "
                                        "authenticated REGISTER within this many seconds is closed")
    sip_tcp_max_connections: int = Field(2000, ge=1, description="SIP TCP connections held at once")
    sip_tcp_max_per_address: int = Field(20, ge=1, description="SIP TCP connections from one address that have "
                                         "not (yet) registered a device (a site of many cameras behind one NAT "
                                         "address is not capped once they have registered)")
    device_timezone: str = Field("Asia/Shanghai", description="time zone of every device- and user-facing "
                                 "time (GB/T 28181 Date header, RecordInfo, watermark, exports); storage is UTC")

    # --- HTTP / portal ---
    http_host: str = "0.0.0.0"
    http_port: int = 8080
    admin_password: SecretStr | None = None
    token_ttl_hours: float = 12.0
    http_body_limit: int = Field(1024 * 1024, ge=1024, description="largest request body (bytes) outside the "
                                 "upload routes; larger answers 413")
    http_upload_limit: int = Field(16 * 1024 * 1024, ge=1024, description="largest body on upload routes "
                                   "(ticket snapshots, imports)")
    http_header_timeout: float = Field(10.0, gt=0, description="a client must send its request headers within "
                                       "this many seconds, or the connection is closed")
    http_max_connections: int = Field(1000, ge=1, description="concurrent HTTP connections")
    trusted_proxies: str = Field("", description="comma-separated addresses/networks of reverse proxies whose "
                                 "X-Forwarded-For is believed (empty: none; the peer address is the client)")
    login_delay_failures: int = Field(3, ge=1, description="wrong passwords from one address for one account "
                                      "before each further attempt waits (growing delay)")
    login_lock_failures: int = Field(5, ge=1, description="wrong passwords from one address for one account "
                                     "before that address is locked out of that account")
    login_lock_minutes: float = Field(15.0, gt=0, description="how long a (account, address) lock lasts")
    login_account_lock_failures: int = Field(50, ge=1, description="wrong passwords for one account from all "
                                             "addresses in the window before the account itself is locked "
                                             "(never the last active administrator)")
    admin_networks: str = Field("", description="comma-separated networks from which administrators may log "
                                "in even while their account is locked account-wide (empty: loopback only)")
    access_denied_audit_per_minute: int = Field(10, ge=0, description="access.denied audit entries per user "
                                                "per minute (more refusals are counted, not recorded one by one)")

    # --- media ---
    rtp_ports: str = "30000-30999"
    media_host: str = "0.0.0.0"  # where RTP is received
    media_ip: str | None = None  # the address put in SDP offers; None: the one that reaches each device
    live_idle_timeout: float = Field(15.0, ge=0, description="BYE this long after the last viewer left (s)")
    live_media_timeout: float = Field(5.0, gt=0, description="no media this long after the answer: give up")
    live_transport: str = Field("udp", pattern="^(udp|tcp-passive|tcp-active)$",
                                description="media transport when a live request names none")
    live_stream: str = Field("main", pattern="^(main|sub)$", description="the stream a live request without "
                             "\"stream\" watches: main, or sub (devices with no sub-stream form set: main)")
    webrtc_loopback: bool = False  # also offer 127.0.0.1 ICE candidates (browser on the same machine)

    # --- storage ---
    database_url: SecretStr | None = None
    redis_url: SecretStr | None = None

    # --- cluster: roles, nodes, leases, shared secrets (issue 17) ---
    roles: str = Field("sip,media,portal,worker", description="comma-separated roles this node runs "
                       "(sip, media, portal, worker; default all = the single process); `gbops run --roles`")
    node_id: str | None = Field(None, description="this node's id in the cluster (default: generated at each start)")
    redis_prefix: str = Field("gbops:", description="prefix of every Redis key (several platforms may share one Redis)")
    public_url: str | None = Field(None, description="this node's URL as browsers reach it (media nodes: FLV/WHEP)")
    cluster_heartbeat: float = Field(2.0, gt=0, description="seconds between a node's heartbeats in Redis")
    cluster_node_ttl: float = Field(10.0, gt=0, description="a node missing its heartbeat this long is gone (s)")
    cluster_lease_ttl: float = Field(10.0, gt=0, description="a job or ownership lease not renewed this long "
                                     "is taken over (s)")
    cluster_rpc_timeout: float = Field(10.0, gt=0, description="a command to another node times out after (s)")
    media_max_streams: int = Field(0, ge=0, description="upstreams one media node takes (0: no cap)")
    drain_timeout: float = Field(60.0, gt=0, description="a clustered media node stopping (SIGTERM, `gbops node "
                                 "drain`) moves its viewers to other media nodes for at most this long (s), then "
                                 "stops")
    secrets_dir: Path | None = Field(None, description="folder every node is given with the shared keys (audit "
                                     "signing, watermark tag, cascade, recording, second factor); cluster mode "
                                     "requires it and never generates a key per node")
    cluster_sip_reconcile: float = Field(15.0, gt=0, description="seconds between a SIP node's checks of its "
                                         "devices' homes (a device that registered at another SIP node is "
                                         "forgotten here; every 4th check takes over the devices of a SIP node "
                                         "that is gone)")

    # --- audit log ---
    audit_origin: str | None = Field(
        None, description="checkpoint origin and signing key name (default: gbops/<sip_id>/audit)"
    )
    audit_key_path: Path | None = Field(None, description="Ed25519 signing key (default: <data_dir>/audit/signing.key)")
    audit_checkpoint_interval: float = Field(10.0, gt=0, le=10.0, description="seconds between checkpoints")
    audit_checkpoint_url: str | None = Field(None, description="POST every new checkpoint here (optional)")

    # --- watermark and downloads (issue 4) ---
    # live watermark
    watermark_off_roles: str = Field("", description="comma-separated role names whose users see no visible "
                                     "watermark (only when all their roles are listed); the session tag stays")
    watermark_font_path: Path | None = Field(None, description="font file able to draw Simplified Chinese "
                                             "(default: search fonts-noto-cjk, fonts-wqy-*, fontconfig)")
    watermark_fields: str = Field("name,phone,ip,session,time", description="lines of the watermark, among "
                                  "name, phone (masked), ip, session (short code), time (each second)")
    watermark_opacity: float = Field(0.35, gt=0, le=1, description="opacity of the watermark text block")
    watermark_font_scale: float = Field(0.028, gt=0, le=0.2, description="font size as a fraction of the "
                                        "picture height")
    watermark_tiles_x: int = Field(3, ge=1, le=8, description="repetitions of the text block across")
    watermark_tiles_y: int = Field(3, ge=1, le=8, description="repetitions of the text block down")
    watermark_drift: float = Field(0.01, ge=0, le=1, description="pattern drift, picture heights per second")
    watermark_preset: str = Field("ultrafast", pattern="^(ultrafast|superfast|veryfast|faster|fast|medium)$",
                                  description="libx264 preset of the per-viewer live encoders")
    watermark_crf: int = Field(23, ge=0, le=51, description="libx264 CRF of the per-viewer live encoders")
    watermark_max_encoders: int | None = Field(None, ge=1, description="concurrent watermark encoders on this "
                                               "node (default: cores x watermark_encoders_per_core)")
    watermark_sub_stream_cost: float = Field(0.25, gt=0, le=1, description="what one watermarked sub-stream viewer "
                                             "costs in main-stream encoders (a D1/CIF/360p sub-stream encodes "
                                             "in about a quarter of a 1080p main stream's time)")
    watermark_encoders_per_core: float = Field(3.0, gt=0, description="1080p25 watermarked viewers one core "
                                               "sustains (measure with bench/watermark.py)")
    watermark_retry_after: int = Field(30, ge=1, description="Retry-After (s) when the encoders are all busy")
    # downloads
    download_max_jobs: int = Field(2, ge=1, le=64, description="download jobs that capture/encode at once; "
                                   "more wait in state queued")
    download_retention_hours: float = Field(72.0, gt=0, description="exported download files are deleted "
                                            "this long after they were made (h)")
    download_preset: str = Field("ultrafast", pattern="^(ultrafast|superfast|veryfast|faster|fast|medium)$",
                                 description="libx264 preset of exported downloads")
    download_crf: int = Field(21, ge=0, le=51, description="libx264 CRF (quality) of exported downloads")

    # --- history video: platform recording, playback, time-range downloads (issue 13) ---
    record_dirs: str = Field("", description="recording roots, comma-separated (default <data_dir>/recordings); "
                             "with two or more roots every segment is written to each and repaired from another")
    record_segment_seconds: float = Field(60.0, ge=2.0, le=3600.0, description="recorded segment length (s), "
                                          "cut at the first keyframe after it")
    record_retention_days: int = Field(7, ge=7, le=3650, description="days a segment is kept where no contract "
                                       "covering the channel says more (the requirement's floor is 7)")
    record_encrypt: bool = Field(True, description="encrypt recordings at rest (AES-256-GCM); false is an "
                                 "explicit opt-out, warned about at every start")
    record_cipher: str = Field("aes-256-gcm", pattern="^(aes-256-gcm|sm4-gcm)$",
                               description="cipher of recordings at rest")
    record_key_file: str = Field("", description="the recording key (default <data_dir>/keys/record.key, "
                                 "created 0600 when missing)")
    record_min_free_mb: int = Field(1024, ge=0, description="below this much free space on a root, recording "
                                    "stops (retention is never cut short) and an alert is raised")
    record_check_interval: float = Field(60.0, gt=0, description="how often retention, free space and copies "
                                         "are checked (s)")
    playback_max_window_hours: float = Field(24.0, gt=0, le=24 * 31, description="longest playback or download "
                                             "window one request may ask for (h)")
    record_query_timeout: float = Field(10.0, gt=0, le=120, description="how long a device's RecordInfo answer "
                                        "is waited for before the items so far are returned as incomplete (s)")
    download_speed: int = Field(4, ge=1, le=32, description="a=downloadspeed asked of devices when they do not "
                                "advertise their speeds")

    # --- device control: PTZ with priority, presets, tours, alarms (issue 14) ---
    ptz_lock_seconds: float = Field(30.0, ge=1.0, le=3600.0, description="a channel's PTZ stays with whoever "
                                    "moved it last this long after their last command (s)")
    ptz_max_move: float = Field(10.0, ge=0.5, le=600.0, description="a move without a following stop is "
                                "stopped by the platform after this long (s)")
    ptz_restore_below_level: int = Field(0, ge=0, le=10, description="when the lock of a user below this PTZ "
                                         "level ends, the channel's home preset is called (0: never restore)")
    device_control_timeout: float = Field(2.0, gt=0, le=30, description="how long a device's DeviceControl "
                                          "Result is waited for (s)")
    preset_query_timeout: float = Field(4.0, gt=0, le=30, description="how long a PresetQuery answer is "
                                        "waited for (s)")
    alarm_ticket_min_priority: int = Field(0, ge=0, le=4, description="alarms of this priority or more urgent "
                                           "(1 = most urgent ... 4) open a fault ticket; 0: alarms open none")
    alarm_retention_days: int = Field(180, ge=7, description="days alarms and position tracks are kept")
    alarm_subscribe: bool = Field(False, description="SUBSCRIBE to every device's alarms when it registers "
                                  "(devices send alarms as MESSAGE without one; some want a subscription)")

    # --- cascade upward: this platform as a lower platform (issue 15) ---
    platform_name: str = Field("视频监控运营服务平台", min_length=1, max_length=64, description="this platform's "
                               "name as upper platforms see it (the first item of the catalog we send them)")
    cascade_catalog_items_udp: int = Field(1, ge=1, le=50, description="catalog items per MESSAGE to an upper "
                                           "platform over UDP (1 keeps each MESSAGE far below the MTU)")
    cascade_catalog_items_tcp: int = Field(8, ge=1, le=200, description="catalog items per MESSAGE to an upper "
                                           "platform over TCP")
    cascade_notify_batch: int = Field(100, ge=1, le=1000, description="catalog changes gathered into one NOTIFY "
                                      "to a subscribed upper platform (sent at this many, or after the interval)")
    cascade_notify_interval: float = Field(60.0, gt=0, le=3600, description="longest a catalog change waits "
                                           "before its NOTIFY to an upper platform (s)")
    cascade_push_unsubscribed: bool = Field(False, description="send catalog changes to upper platforms that "
                                            "have no catalog subscription too (some uppers never subscribe)")
    cascade_echo_ssrc: bool = Field(False, description="answer an upper's INVITE with the SSRC of its y= line "
                                    "instead of our own (for uppers that match on their own value)")
    cascade_retry_initial: float = Field(5.0, gt=0, le=60, description="first REGISTER retry to an upper "
                                         "platform at start (s, doubling up to the failure back-off)")
    cascade_retry: float = Field(60.0, ge=60, le=3600, description="REGISTER retry to an upper platform after "
                                 "it was registered and failed, or after a refusal (s, >= 60)")
    cascade_tls_ca_file: Path | None = Field(None, description="PEM CA bundle that upper platforms' SIP over TLS "
                                             "certificates are verified against (default: the system trust store); "
                                             "a certificate failing verification fails the registration")

    # --- HTTPS and SIP over TLS (issue 16) ---
    tls_cert_file: Path | None = Field(None, description="PEM certificate (chain) of the portal and of SIP over TLS "
                                       "(default: a self-signed one generated at first start in <data_dir>/tls)")
    tls_key_file: Path | None = Field(None, description="PEM private key of tls_cert_file")
    https_port: int = Field(8443, ge=0, le=65535, description="HTTPS port of the portal and its video outputs "
                            "(http_port then only redirects here)")
    http_plain: bool = Field(False, description="serve plain HTTP on http_port even on a non-loopback address: "
                             "only behind a reverse proxy that terminates TLS (list it in trusted_proxies)")
    hsts_max_age: int = Field(31536000, ge=0, description="Strict-Transport-Security max-age of HTTPS answers (s)")
    sip_tls_port: int = Field(5061, ge=0, le=65535, description="SIP over TLS (sips) port for devices and upper "
                              "platforms that support it (0: off)")
    # (helper F adds further TLS settings here)

    # --- security monitoring (issue 16) ---
    security_webhook_url: str | None = Field(None, description="POST every security alert here as JSON (optional)")
    security_autoblock: bool = Field(False, description="an alert whose rule allows it blocks its source address "
                                     "for security_autoblock_minutes (HTTP and SIP)")
    security_autoblock_minutes: float = Field(30.0, gt=0, description="how long an automatic block lasts (min)")
    security_retention_days: int = Field(180, ge=30, description="days security events and alerts are kept")
    # rule thresholds "COUNT/SECONDS": an alert once COUNT events (or distinct values) fall in SECONDS, then at
    # most one alert per key and rule for SECONDS (see security.rules)
    security_login_failures: str = Field("10/300", pattern=r"^\d+/\d+(\.\d+)?$",
                                         description="failed logins from one address")
    security_sip_failures: str = Field("10/300", pattern=r"^\d+/\d+(\.\d+)?$",
                                       description="failed device digest authentications from one address")
    security_sip_unknown_ids: str = Field("20/600", pattern=r"^\d+/\d+(\.\d+)?$",
                                          description="distinct unknown device ids registering from one address")
    security_denials: str = Field("20/300", pattern=r"^\d+/\d+(\.\d+)?$",
                                  description="requests refused for permission or scope, per user")
    security_forged_tokens: str = Field("5/300", pattern=r"^\d+/\d+(\.\d+)?$",
                                        description="forged or unknown tokens from one address")
    security_route_scan: str = Field("30/60", pattern=r"^\d+/\d+(\.\d+)?$",
                                     description="distinct refused or unknown paths from one address")
    security_bulk_downloads: str = Field("20/3600", pattern=r"^\d+/\d+(\.\d+)?$",
                                         description="video downloads requested by one user")
    security_work_hours: str = Field("07:00-20:00", pattern=r"^(\d\d:\d\d-\d\d:\d\d)?$",
                                     description="working hours (Beijing time); playback or download outside "
                                     "them is an event (empty: off)")
    security_autoblock_exempt: str = Field("127.0.0.1,::1", description="comma-separated addresses or networks "
                                           "never blocked automatically (the host's own console)")

    # --- accounts: password age, idle sessions, second factor, management networks (issue 16) ---
    password_max_age_days: int = Field(90, ge=0, description="a password older than this must be changed at the "
                                       "next login (0: never)")
    session_idle_minutes: float = Field(30.0, ge=0, description="a console session unused this long ends "
                                        "(0: only the token lifetime ends it)")
    admin_allow_cidrs: str = Field("", description="comma-separated networks from which management (administration "
                                   "permissions) is allowed (empty: everywhere)")
    totp_required_roles: str = Field("", description="comma-separated role names whose users must use a TOTP second "
                                     "factor (RFC 6238)")
    account_unused_days: int = Field(90, ge=1, description="an account not used for this many days is a finding of "
                                     "the security check")
    # (helper C adds further account settings here)

    @field_validator("admin_allow_cidrs")
    @classmethod
    def _check_admin_cidrs(cls, v: str) -> str:
        import ipaddress

        for part in (p.strip() for p in v.split(",")):
            if part:
                try:
                    ipaddress.ip_network(part, strict=False)
                except ValueError:
                    raise ValueError(f"GBOPS_ADMIN_ALLOW_CIDRS: 不是地址或网段 / not an address or network: {part!r}") from None
        return v

    # --- time: NTP server and client, device clock skew (issue 16) ---
    ntp_host: str | None = Field(None, description="address the NTP server listens on (default: sip_host)")
    ntp_port: int = Field(123, ge=0, le=65535, description="NTP server port (0: off; when 123 cannot be bound the "
                          "platform says so and runs without it)")
    ntp_servers: str = Field("", description="comma-separated NTP servers the platform checks its own clock against "
                             "(empty: the host clock is the reference)")
    ntp_local_stratum: int = Field(10, ge=1, le=15, description="stratum the NTP server reports when its host "
                                   "clock is the reference")
    ntp_check_interval: float = Field(300.0, gt=0, description="how often the platform's own offset is measured (s)")
    clock_check_interval: float = Field(300.0, gt=0, description="how often each online device's clock is sampled "
                                        "with DeviceStatus (s)")
    clock_skew_limit: float = Field(1.0, gt=0, description="largest acceptable device clock error (s)")
    clock_skew_ticket: bool = Field(False, description="a device over the clock limit also opens a fault ticket")
    clock_first_check_delay: float = Field(10.0, ge=0, le=60, description="seconds after a device comes online "
                                           "before its clock is first sampled (at most 60)")
    # (helper B adds further time settings here)

    # --- backup and restore (issue 16) ---
    backup_dir: Path | None = Field(None, description="where scheduled backups go (default: <data_dir>/backups)")
    backup_passphrase_file: Path | None = Field(None, description="file holding the passphrase of scheduled "
                                                "backups (none: no scheduled backups)")
    backup_schedule: str = Field("02:30", pattern=r"^$|^([01]\d|2[0-3]):[0-5]\d$",
                                 description="daily backup at HH:MM Beijing time ('' disables)")
    backup_keep: int = Field(7, ge=1, description="scheduled backups kept")
    # (helper E adds further backup settings here)

    # --- access control and console (issue 6) ---
    map_tile_url: str | None = Field(
        None, description="console map tiles, e.g. https://tiles.example/{z}/{x}/{y}.png (none: plain background)")

    # --- availability and reports (issue 7) ---
    report_timezone: str = Field("Asia/Shanghai", description="display time zone of reports (day boundaries)")
    online_rate_threshold: float = Field(0.85, gt=0, le=1, description="online-rate threshold (a contract's wins)")
    online_rate_sample_minutes: int = Field(5, ge=1, le=1440, description="sampling step of the sampled rate (min)")
    report_schedule: str = Field("00:05", pattern=r"^$|^([01]\d|2[0-3]):[0-5]\d$",
                                 description="daily report of the day before at HH:MM local ('' disables)")
    report_formats: str = Field("pdf,xlsx,csv", description="formats of the scheduled daily report")
    report_worst_channels: int = Field(10, ge=0, le=100, description="channels in the PDF outage timeline")

    # --- tickets, contracts and quality detection (issue 7) ---
    ticket_repair_limit_hours: float = Field(
        48.0, gt=0, description="repair time limit of a ticket whose channel no contract covers (hours)")
    ticket_offline_after: float = Field(
        600.0, gt=0, description="a device or channel offline longer than this opens a ticket (s)")
    ticket_scan_interval: float = Field(
        60.0, ge=0, description="automatic tickets and overdue checks run this often (s; 0: never)")
    ticket_webhook_url: str | None = Field(
        None, description="POST every ticket notification here as JSON (optional)")
    ticket_webhook_attempts: int = Field(4, ge=1, le=10, description="webhook delivery attempts")
    ticket_snapshot_max_bytes: int = Field(
        2 * 1024 * 1024, gt=0, description="largest snapshot image a ticket report may upload")
    quality_sample_interval: float = Field(
        3600.0, ge=0, description="grab a keyframe of every online channel this often (s; 0: never; "
        "the first round runs one interval after start)")
    quality_sample_timeout: float = Field(15.0, gt=0, description="give up on a channel's keyframe after (s)")

    log_level: str = "INFO"
    log_json: bool = False

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls), file_secret_settings)

    @field_validator("roles")
    @classmethod
    def _check_roles(cls, v: str) -> str:
        roles = [r.strip() for r in v.split(",") if r.strip()]
        bad = [r for r in roles if r not in ("sip", "media", "portal", "worker")]
        if not roles or bad:
            raise ValueError("GBOPS_ROLES 须为 sip,media,portal,worker 中的一个或多个 / GBOPS_ROLES must name one or "
                             f"more of sip, media, portal, worker (got {v!r})")
        return ",".join(dict.fromkeys(roles))

    @field_validator("sip_id")
    @classmethod
    def _check_sip_id(cls, v: str) -> str:
        if not _GB_ID.match(v):
            raise ValueError("GBOPS_SIP_ID must be an 18- or 20-digit GB/T 28181 code")
        return v

    @field_validator("sip_domain")
    @classmethod
    def _check_domain(cls, v: str) -> str:
        if not _DOMAIN.match(v):
            raise ValueError("GBOPS_SIP_DOMAIN must be the 10-digit (or 8-digit) GB/T 28181 domain")
        return v

    @field_validator("audit_origin")
    @classmethod
    def _check_audit_origin(cls, v: str | None) -> str | None:
        if v is not None and (not v or "+" in v or any(c.isspace() for c in v) or not v.isprintable()):
            raise ValueError("GBOPS_AUDIT_ORIGIN must be one word without spaces or '+', e.g. gbops.example.com/audit")
        return v

    @field_validator("audit_checkpoint_url")
    @classmethod
    def _check_audit_url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://", v):
            raise ValueError("GBOPS_AUDIT_CHECKPOINT_URL must be an http:// or https:// URL")
        return v

    @field_validator("rtp_ports")
    @classmethod
    def _check_ports(cls, v: str) -> str:
        m = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", v)
        if not m or not (1024 <= int(m[1]) < int(m[2]) <= 65535):
            raise ValueError("GBOPS_RTP_PORTS must look like 30000-30999 (1024..65535, low < high)")
        return v

    # ------------------------------------------------------------------ derived values
    @property
    def rtp_port_range(self) -> tuple[int, int]:
        low, high = (int(p) for p in self.rtp_ports.split("-"))
        return low, high

    @property
    def realm(self) -> str:
        return self.sip_domain

    @property
    def audit_log_origin(self) -> str:
        return self.audit_origin or f"gbops/{self.sip_id}/audit"

    # The per-installation keys.  Each is resolved here and only here (``gbops.secrets.key_paths`` lists
    # them): an explicit per-key setting wins, then the shared folder every node is given
    # (``GBOPS_SECRETS_DIR``, fixed file names), then the historical place in the data directory.
    @property
    def audit_signing_key_path(self) -> Path:
        return self.audit_key_path or self._shared_key("audit-signing.key") or self.data_dir / "audit" / "signing.key"

    # the other shared keys (issue 17, helper cluster-secrets: GBOPS_SECRETS_DIR makes every node use the same)
    @property
    def cascade_key_path(self) -> Path:
        return self._shared_key("cascade.key") or self.data_dir / "keys" / "cascade.key"

    @property
    def record_key_path(self) -> Path:
        if self.record_key_file:
            return Path(self.record_key_file)
        return self._shared_key("record.key") or self.data_dir / "keys" / "record.key"

    @property
    def watermark_tag_key_path(self) -> Path:
        return self._shared_key("watermark-tag.key") or self.data_dir / "watermark-tag.key"

    @property
    def totp_key_path(self) -> Path:
        return self._shared_key("totp.key") or self.data_dir / "keys" / "totp.key"

    def _shared_key(self, name: str) -> Path | None:
        return self.secrets_dir / name if self.secrets_dir is not None else None

    @property
    def role_set(self) -> frozenset[str]:
        """The roles of this node (``GBOPS_ROLES`` / ``--roles``)."""
        return frozenset(r.strip() for r in self.roles.split(",") if r.strip())

    @property
    def clustered(self) -> bool:
        """Cluster mode: Redis configured (presence, leases, ownership, commands between nodes)."""
        return self.redis_url is not None

    @property
    def db_url(self) -> str:
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return f"sqlite+aiosqlite:///{(self.data_dir / 'gbops.db').resolve()}"

    def check_for_run(self) -> None:
        """Refuse to start with settings that would leave the platform unsafe or broken."""
        if self.sip_password is None:
            raise SettingsError(
                "GBOPS_SIP_PASSWORD 未设置：请设置设备默认 SIP 密码（至少 8 位，包含两类以上字符）。 / "
                "GBOPS_SIP_PASSWORD is not set: set the default device SIP password "
                "(8+ characters, 2+ character classes, not a common password)."
            )
        reason = weak_password_reason(self.sip_password.get_secret_value(), self.sip_id)
        if reason:
            raise SettingsError(f"GBOPS_SIP_PASSWORD 太弱 / is weak: {reason}")
        if self.admin_password is not None:
            reason = weak_password_reason(self.admin_password.get_secret_value(), "admin")
            if reason:
                raise SettingsError(f"GBOPS_ADMIN_PASSWORD 太弱 / is weak: {reason}")


def load_settings(**overrides: Any) -> Settings:
    return Settings(**overrides)
