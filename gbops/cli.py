"""``gbops`` command line: run the platform, run the device simulator."""

from __future__ import annotations

import sys
from datetime import datetime
from enum import StrEnum
from pathlib import Path

import typer
from pydantic import ValidationError

app = typer.Typer(help="gbops: GB/T 28181 视频监控运营平台 / video-surveillance operation platform",
                  no_args_is_help=True, add_completion=False)


def _settings(**overrides):
    from gbcore.settings import Settings

    try:
        return Settings(**overrides)
    except ValidationError as exc:
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"])
            typer.echo(f"配置错误 / setting error: GBOPS_{field.upper()}: {err['msg']}", err=True)
        raise typer.Exit(2) from None


@app.command()
def run(
    roles: str | None = typer.Option(None, "--roles", help="本节点运行的角色（默认全部）/ the roles this node runs: "
                                     "comma-separated sip,media,portal,worker (default all: the single process; "
                                     "GBOPS_ROLES)"),
) -> None:
    """启动平台（SIP + HTTP）/ Start the platform (SIP + HTTP) in one process, or one node of a cluster."""
    import uvloop

    from gbcore.log import setup_logging
    from gbcore.settings import SettingsError
    from gbops.app import Platform, check_roles
    from gbops.migrate import SchemaTooNew

    settings = _settings(**({"roles": roles} if roles is not None else {}))
    setup_logging(settings.log_level, settings.log_json)
    try:
        settings.check_for_run()
        check_roles(settings)
    except SettingsError as exc:
        typer.echo(f"无法启动 / cannot start: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        uvloop.run(Platform(settings).serve())
    except (SettingsError, SchemaTooNew) as exc:  # found while starting (shared keys, the database's schema)
        typer.echo(f"无法启动 / cannot start: {exc}", err=True)
        raise typer.Exit(2) from None
    except OSError as exc:
        typer.echo(f"无法启动 / cannot start: {exc}", err=True)
        raise typer.Exit(1) from None


class Transport(StrEnum):
    udp = "udp"
    tcp = "tcp"
    tls = "tls"  # SIP over TLS (the platform's GBOPS_SIP_TLS_PORT)


class Charset(StrEnum):
    gb2312 = "gb2312"
    utf8 = "utf-8"


class Codec(StrEnum):
    h264 = "h264"
    h265 = "h265"


@app.command()
def sim(
    server: str = typer.Option(..., help="platform SIP address HOST:PORT"),
    devices: int = typer.Option(1, min=1, help="number of simulated devices"),
    channels: int = typer.Option(4, min=0, help="channels per device"),
    password: str = typer.Option(..., help="SIP password of the devices", envvar="GBOPS_SIM_PASSWORD"),
    transport: Transport = typer.Option(Transport.udp),
    charset: Charset = typer.Option(Charset.gb2312),
    keepalive: float = typer.Option(60.0, help="keepalive interval (s)"),
    expires: int = typer.Option(3600, help="registration expiry (s)"),
    server_id: str = typer.Option("34020000002000000001", help="platform SIP id"),
    domain: str = typer.Option("3402000000", help="SIP domain"),
    first_id: str = typer.Option("34020000001180000001", help="first device id (NVR-like when >1 channel)"),
    local_host: str = typer.Option("127.0.0.1", help="local address to bind"),
    duration: float = typer.Option(0.0, help="stop after this many seconds (0: until Ctrl-C)"),
    rate: float = typer.Option(100.0, help="first registrations per second (spreads a large fleet's start)"),
    codec: Codec = typer.Option(Codec.h264, help="video codec of the streams INVITEd channels send"),
    size: str = typer.Option("640x360", help="picture size WIDTHxHEIGHT of those streams"),
    same_channel_ids: bool = typer.Option(False, help="every device reports the same channel ids (NVRs with "
                                          "default ids); one socket per device"),
    label_pictures: bool = typer.Option(False, help="draw each device's id and colour into its pictures (one "
                                        "encoder per streaming device)"),
    record_hours: float = typer.Option(24.0, help="each channel has recordings from this many hours before "
                                       "the start (answered to RecordInfo, played back, downloaded)"),
    record_file_minutes: int = typer.Option(10, help="length of one simulated recording file (min)"),
    record_gap: bool = typer.Option(True, help="one hour of those recordings is missing, so gaps show"),
    record_page_size: int = typer.Option(8, help="RecordInfo items per MESSAGE"),
    refuse_history: int | None = typer.Option(None, help="answer every playback/download INVITE with this "
                                              "status (488 or 486)"),
    history_max_fps: int = typer.Option(100, help="fast playback sends at most this many pictures per second"),
    history_bye_timeout: float = typer.Option(30.0, help="after MediaStatus 121, hang up when no BYE came (s)"),
    alarm_every: float = typer.Option(0.0, help="每台设备每 N 秒报警一次 / each device raises an alarm every N "
                                      "seconds (0: only on demand)"),
    position_every: float = typer.Option(0.0, help="每 N 秒发送移动位置 / MobilePosition every N seconds (0: off)"),
    alarm_latch: bool = typer.Option(True, help="after a device alarm, send no new one until AlarmCmd ResetAlarm"),
    tls_ca_file: Path | None = typer.Option(None, help="--transport tls: 用此 CA/证书文件校验平台证书 / verify the "
                                            "platform's certificate against this PEM file (default: system CAs)"),
    tls_insecure: bool = typer.Option(False, help="--transport tls: 不校验平台证书（仅测试自签名证书）/ do NOT "
                                      "verify the platform's certificate (a test's self-signed one only)"),
    clock_offset: float = typer.Option(0.0, help="设备时钟偏差（秒，正数为超前）/ the devices' clocks are this many "
                                       "seconds ahead of the platform's Date (negative: behind)"),
) -> None:
    """设备模拟器 / Simulate GB/T 28181 cameras and NVRs."""
    import uvloop

    from gbcore.log import setup_logging
    from gbsim import SimConfig, run_simulator

    setup_logging("INFO")
    host, _, port = server.rpartition(":")
    if not host or not port.isdigit():
        typer.echo("--server 须为 HOST:PORT / --server must be HOST:PORT", err=True)
        raise typer.Exit(2)
    try:
        cfg = SimConfig(
            server=(host, int(port)), devices=devices, channels=channels, password=password,
            transport=transport.value, charset=charset.value, keepalive=keepalive, expires=expires,
            server_id=server_id, domain=domain, first_id=first_id, local_host=local_host, register_rate=rate,
            codec=codec.value, size=size, same_channel_ids=same_channel_ids, label_pictures=label_pictures,
            record_hours=record_hours, record_file_minutes=record_file_minutes, record_gap=record_gap,
            record_page_size=record_page_size, refuse_history=refuse_history, history_max_fps=history_max_fps,
            history_bye_timeout=history_bye_timeout, alarm_every=alarm_every or None,
            position_every=position_every or None, alarm_latch=alarm_latch,
            tls_ca_file=str(tls_ca_file) if tls_ca_file else None, tls_verify=not tls_insecure,
            clock_error=clock_offset,
        )
    except ValueError as exc:
        typer.echo(f"参数错误 / bad option: {exc}", err=True)
        raise typer.Exit(2) from None
    uvloop.run(run_simulator(cfg, duration=duration or None))


audit_app = typer.Typer(help="审计日志：导出与校验 / tamper-evident audit log: export and verify",
                        no_args_is_help=True, add_completion=False)
app.add_typer(audit_app, name="audit")


class _CannotOpen(Exception):
    pass


async def _open_audit(settings):
    """Engine and AuditLog of an existing installation (nothing is created)."""
    from sqlalchemy.exc import DBAPIError

    from audit_log.log import AuditLog
    from audit_log.note import NoteError
    from gbcore.db import make_engine, make_sessionmaker
    from gbops.migrate import SchemaTooNew, migrate

    if settings.database_url is None and not (settings.data_dir / "gbops.db").exists():
        raise _CannotOpen(f"数据库不存在 / no database at {settings.data_dir / 'gbops.db'} (GBOPS_DATA_DIR?)")
    try:
        engine = make_engine(settings.db_url)
        try:
            await migrate(engine)
            return engine, AuditLog.from_settings(settings, make_sessionmaker(engine), create_key=False)
        except BaseException:
            await engine.dispose()
            raise
    except (NoteError, SchemaTooNew) as exc:
        raise _CannotOpen(str(exc)) from None
    except (DBAPIError, OSError) as exc:
        raise _CannotOpen(f"无法打开数据库 / cannot open the database: {exc}") from None


def _os_user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


async def _audit_export(settings, out: Path, start: int, end: int | None) -> int:
    from audit_log.export import ExportError, export_bundle
    from audit_log.log import Actor, Target

    try:
        engine, audit = await _open_audit(settings)
    except _CannotOpen as exc:
        typer.echo(f"无法导出 / cannot export: {exc}", err=True)
        return 2
    try:
        try:
            result = await export_bundle(audit, out, start=start, end=end)
        except ExportError as exc:
            typer.echo(f"无法导出 / cannot export: {exc}", err=True)
            return 2
        detail = {"from": result.first_seq, "to": result.last_seq, "tree_size": result.tree_size,
                  "entries_sha256": result.entries_sha256, "path": str(out),
                  "problems": len(result.problems)}
        if result.bundle_sha256:
            detail["sha256"] = result.bundle_sha256
        async with audit.sessionmaker() as session:
            await audit.append(session, actor=Actor("system", _os_user(), "gbops audit export"),
                               action="audit.export", target=Target("audit_log", audit.origin), detail=detail)
            await session.commit()
        typer.echo(f"已导出 / exported: {out} (seq {result.first_seq}..{result.last_seq}, "
                   f"tree size {result.tree_size}, entries.jsonl sha256 {result.entries_sha256})")
        typer.echo(result.checkpoint, nl=False)
        if result.problems:
            for problem in result.problems:
                typer.echo(f"审计日志被篡改 / AUDIT LOG TAMPERED: {problem}", err=True)
            typer.echo("未签署新的检查点；导出包中是此前签署的最新检查点 / no new checkpoint was signed: "
                       "the bundle carries the newest checkpoint signed before", err=True)
            return 1
        return 0
    finally:
        await engine.dispose()


@audit_app.command("export")
def audit_export(
    out: Path = typer.Option(..., "--out", help="目标目录或 .zip / a new directory, or a .zip file"),
    start: int = typer.Option(0, "--from", min=0, help="first seq (default 0)"),
    end: int | None = typer.Option(None, "--to", min=0, help="last seq (default: the newest entry)"),
) -> None:
    """导出审计日志供离线校验 / Export the audit log for offline verification."""
    import asyncio

    from gbcore.log import setup_logging

    settings = _settings()
    setup_logging("WARNING")
    raise typer.Exit(asyncio.run(_audit_export(settings, out.resolve(), start, end)))


@audit_app.command("verify")
def audit_verify(
    path: Path = typer.Argument(..., help="导出目录或 .zip / the exported directory or .zip"),
    key: Path | None = typer.Option(None, "--key", help="事先保存的 verifier.key / your pinned verifier key"),
    pin: list[Path] = typer.Option([], "--pin", help="此前保存的检查点 / a checkpoint saved earlier (repeatable)"),
) -> None:
    """离线校验导出包 / Check an exported bundle (exit 0 valid, 1 invalid, 2 cannot check)."""
    from audit_log.verify import main as verify_main

    argv = [str(path)]
    if key is not None:
        argv += ["--key", str(key)]
    for p in pin:
        argv += ["--pin", str(p)]
    raise typer.Exit(verify_main(argv))


async def _audit_show(settings, what: str) -> int:
    try:
        engine, audit = await _open_audit(settings)
    except _CannotOpen as exc:
        typer.echo(f"{exc}", err=True)
        return 2
    try:
        if what == "key":
            typer.echo(audit.verifier_key)
            return 0
        cp = await audit.latest_checkpoint()
        if cp is None:
            typer.echo("尚无检查点 / no checkpoint yet", err=True)
            return 1
        typer.echo(cp.note, nl=False)
        return 0
    finally:
        await engine.dispose()


@audit_app.command("checkpoint")
def audit_checkpoint() -> None:
    """打印最新的已签名检查点（供审计方保存）/ Print the newest signed checkpoint, for auditors to pin."""
    import asyncio

    raise typer.Exit(asyncio.run(_audit_show(_settings(), "checkpoint")))


@audit_app.command("verifier-key")
def audit_verifier_key() -> None:
    """打印验证公钥 / Print the log's verifier key (vkey) for auditors to pin."""
    import asyncio

    raise typer.Exit(asyncio.run(_audit_show(_settings(), "key")))


@audit_app.command("grants")
def audit_grants(role: str = typer.Argument(..., help="the PostgreSQL role the platform connects as")) -> None:
    """打印 SQL：应用角色只能读取和追加审计表 / Print the SQL that lets the platform's PostgreSQL role only
    read and append the audit tables (run it as the tables' owner)."""
    from audit_log.store import restricted_role_sql

    try:
        typer.echo(restricted_role_sql(role), nl=False)
    except ValueError as exc:
        typer.echo(f"参数错误 / bad role: {exc}", err=True)
        raise typer.Exit(2) from None


# --- backup and restore (issue 16, helper E): the work is in gbops/backup.py -------------------------------
def _backup_passphrase(passphrase_file: Path | None, settings, *, confirm: bool) -> str:
    """--passphrase-file, else GBOPS_BACKUP_PASSPHRASE, else GBOPS_BACKUP_PASSPHRASE_FILE, else a prompt (twice
    when making a backup); never a command-line argument."""
    import os

    from gbops.backup import read_passphrase_file

    if passphrase_file is not None:
        return read_passphrase_file(passphrase_file)
    if os.environ.get("GBOPS_BACKUP_PASSPHRASE"):
        return os.environ["GBOPS_BACKUP_PASSPHRASE"]
    if settings.backup_passphrase_file is not None:
        return read_passphrase_file(settings.backup_passphrase_file)
    if not sys.stdin.isatty():
        typer.echo("需要备份口令：--passphrase-file 或 GBOPS_BACKUP_PASSPHRASE / a backup passphrase is needed: "
                   "--passphrase-file or GBOPS_BACKUP_PASSPHRASE", err=True)
        raise typer.Exit(2)
    return typer.prompt("备份口令 / backup passphrase", hide_input=True, confirmation_prompt=confirm)


async def _backup_cmd(settings, out: Path, passphrase: str) -> int:
    from sqlalchemy.exc import DBAPIError

    from audit_log.log import Actor, Target
    from gbops.backup import BackupError, create_backup, print_progress

    try:
        result = await create_backup(settings, out, passphrase, progress=print_progress)
    except BackupError as exc:
        typer.echo(f"无法备份 / cannot back up: {exc}", err=True)
        return 2
    except (DBAPIError, OSError) as exc:
        typer.echo(f"无法备份 / cannot back up: {exc}", err=True)
        return 1
    typer.echo(f"已备份 / backed up: {out}\n  bytes: {result.bytes}  sha256: {result.sha256}\n"
               f"  数据库结构 / schema: {result.revision}  表 / tables: {result.tables}  行 / rows: {result.rows}\n"
               f"  文件 / files: {', '.join(result.files) or '-'}\n"
               "  不含录像、下载文件和日志 / recordings, download files and logs are NOT in the backup")
    try:
        engine, audit = await _open_audit(settings)
    except _CannotOpen as exc:
        typer.echo(f"未写入审计日志 / not recorded on the audit log: {exc}", err=True)
        return 0
    try:
        async with audit.sessionmaker() as session:
            await audit.append(session, actor=Actor("system", _os_user(), "gbops backup"), action="backup.create",
                               target=Target("backup", out.name), detail=result.audit_detail("cli"))
            await session.commit()
    finally:
        await engine.dispose()
    return 0


@app.command()
def backup(
    out: Path | None = typer.Option(None, "--out", help="备份文件（默认：备份目录下以北京时间命名）/ the file to write "
                                    "(default: GBOPS_BACKUP_DIR, named in Beijing time)"),
    passphrase_file: Path | None = typer.Option(None, "--passphrase-file", help="口令文件（第一行）/ a file whose "
                                                "first line is the passphrase"),
) -> None:
    """加密备份数据库、密钥与审计检查点 / Encrypted backup of the database, keys and audit checkpoints."""
    import asyncio
    from datetime import UTC

    from gbcore.log import setup_logging
    from gbops.backup import BackupError, backup_dir, check_passphrase, default_backup_name

    settings = _settings()
    setup_logging("WARNING")
    try:
        passphrase = _backup_passphrase(passphrase_file, settings, confirm=True)
    except BackupError as exc:
        typer.echo(f"{exc}", err=True)
        raise typer.Exit(2) from None
    if reason := check_passphrase(passphrase):
        typer.echo(reason, err=True)
        raise typer.Exit(2)
    target = (out or backup_dir(settings) / default_backup_name(datetime.now(UTC))).resolve()
    raise typer.Exit(asyncio.run(_backup_cmd(settings, target, passphrase)))


@app.command()
def restore(
    file: Path = typer.Argument(..., help="备份文件 / the backup file"),
    passphrase_file: Path | None = typer.Option(None, "--passphrase-file", help="口令文件（第一行）/ a file whose "
                                                "first line is the passphrase"),
) -> None:
    """恢复到空的数据目录和空数据库 / Restore a backup into an empty data dir and an empty database."""
    import asyncio

    from sqlalchemy.exc import DBAPIError

    from gbcore.log import setup_logging
    from gbops.backup import BackupError, print_progress, restore_backup

    settings = _settings()
    setup_logging("WARNING")
    try:
        passphrase = _backup_passphrase(passphrase_file, settings, confirm=False)
        result = asyncio.run(restore_backup(settings, file, passphrase, progress=print_progress, echo=typer.echo))
    except BackupError as exc:
        typer.echo(f"无法恢复 / cannot restore: {exc}", err=True)
        raise typer.Exit(2) from None
    except (DBAPIError, OSError) as exc:
        typer.echo(f"无法恢复 / cannot restore: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"已恢复 / restored: {result.rows} rows in {result.tables} tables, {len(result.files)} files, "
               f"schema {result.revision} (backup made {result.created_at.isoformat()})\n"
               "  录像、下载文件和日志不在备份中 / recordings, download files and logs were not in the backup\n"
               "  校验审计日志 / check the audit log: gbops audit export --out DIR && gbops audit verify DIR "
               "--key <pinned verifier.key>")


report_app = typer.Typer(help="在线率报表 / online-rate reports", no_args_is_help=True, add_completion=False)
app.add_typer(report_app, name="report")


class Period(StrEnum):
    day = "day"
    week = "week"
    month = "month"
    year = "year"
    custom = "custom"


class ReportFormat(StrEnum):
    pdf = "pdf"
    xlsx = "xlsx"
    csv = "csv"


async def _report_online_rate(settings, req_args: dict, out: Path, fmt: str, org: int | None,
                              contract: int | None) -> int:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from audit_log.log import AuditLog
    from gbcore.db import make_engine, make_sessionmaker
    from gbops.migrate import SchemaTooNew, migrate
    from ops_portal.availability.scheduler import ReportJobs, ReportRequest
    from ops_portal.availability.service import ScopeNotFound, period_bounds, resolve_scope

    if settings.database_url is None and not (settings.data_dir / "gbops.db").exists():
        typer.echo(f"数据库不存在 / no database at {settings.data_dir / 'gbops.db'} (--data-dir?)", err=True)
        return 2
    tz = ZoneInfo(settings.report_timezone)
    try:
        kind = req_args.pop("kind")
        for key in ("start", "end"):
            if req_args.get(key) is not None:
                req_args[key] = datetime.fromisoformat(req_args[key])
        start, end, label = period_bounds(kind, tz, **req_args)
    except ValueError as exc:
        typer.echo(f"统计周期无效 / invalid period: {exc}", err=True)
        return 2
    engine = make_engine(settings.db_url)
    try:
        try:
            await migrate(engine)
        except SchemaTooNew as exc:
            typer.echo(f"无法生成报表 / cannot make the report: {exc}", err=True)
            return 2
        sessionmaker = make_sessionmaker(engine)
        audit = None
        if settings.audit_signing_key_path.exists():
            audit = AuditLog.from_settings(settings, sessionmaker, create_key=False)
        async with sessionmaker() as session:
            try:
                flt = await resolve_scope(session, org_node_id=org, contract_id=contract,
                                          threshold=settings.online_rate_threshold,
                                          sample_minutes=settings.online_rate_sample_minutes)
            except ScopeNotFound as exc:
                typer.echo(f"不存在 / not found: {exc.what} {exc.ident}", err=True)
                return 2
        jobs = ReportJobs(sessionmaker, settings, audit)
        row, res = await jobs.run(ReportRequest(kind, start, end, label, fmt, flt, trigger="cli", out=out))
        rate = "—" if res.rate is None else f"{res.rate * 100:.2f}%"
        typer.echo(f"报表 / report: {out}\n  sha256: {row.sha256}\n  在线率 / rate ({res.rule}): {rate} "
                   f"(考核值 / threshold {res.threshold * 100:.0f}%{', 未达标 / BREACH' if res.breach else ''})\n"
                   f"  点位 / channels: {len(res.channels)}  源数据 / source sha256: {res.source_sha256}\n"
                   f"  审计检查点 / audit checkpoint: tree_size={row.checkpoint_size} root(hex)={row.checkpoint_root}")
        if audit is None:
            typer.echo("未找到审计签名密钥：未写入审计日志 / no audit signing key: the export was not recorded in "
                       "the audit log", err=True)
        else:
            await audit.stop()
        return 0
    finally:
        await engine.dispose()


@report_app.command("online-rate")
def report_online_rate(
    period: Period = typer.Option(Period.day, "--period", help="day | week | month | year | custom"),
    on: str | None = typer.Option(None, "--date", help="day/week: YYYY-MM-DD（默认今天 / default today）"),
    month: str | None = typer.Option(None, "--month", help="month: YYYY-MM"),
    year: int | None = typer.Option(None, "--year", help="year: YYYY"),
    start: str | None = typer.Option(None, "--from", help="custom: start (ISO 8601; no zone: display zone)"),
    end: str | None = typer.Option(None, "--to", help="custom: end (exclusive)"),
    scope: int | None = typer.Option(None, "--scope", help="组织节点编号（含下级）/ organisation node id"),
    contract: int | None = typer.Option(None, "--contract", help="合同编号 / contract id"),
    fmt: ReportFormat = typer.Option(ReportFormat.pdf, "--format", help="pdf | xlsx | csv"),
    out: Path = typer.Option(..., "--out", help="输出文件 / output file"),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="平台数据目录 / platform data dir"),
    db_url: str | None = typer.Option(None, "--db-url", help="数据库 URL / database URL"),
) -> None:
    """生成在线率报表（审计用）/ Generate an online-rate report from the database (for auditors)."""
    import asyncio
    from datetime import date

    from gbcore.log import setup_logging

    overrides: dict = {}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    if db_url is not None:
        overrides["database_url"] = db_url
    settings = _settings(**overrides)
    setup_logging("WARNING")
    if period == Period.month and month is None and on is None:
        typer.echo("--period month 需要 --month YYYY-MM / needs --month YYYY-MM", err=True)
        raise typer.Exit(2)
    try:
        args = {"kind": period.value, "on": date.fromisoformat(on) if on else None, "month": month,
                "year": year, "start": start, "end": end}
    except ValueError as exc:
        typer.echo(f"日期无效 / bad date: {exc}", err=True)
        raise typer.Exit(2) from None
    raise typer.Exit(asyncio.run(_report_online_rate(settings, args, out.resolve(), fmt.value, scope, contract)))


watermark_app = typer.Typer(help="水印与会话标签 / viewer watermarks and forensic session tags",
                            no_args_is_help=True, add_completion=False)
app.add_typer(watermark_app, name="watermark")


@watermark_app.command("inspect")
def watermark_inspect(
    file: Path = typer.Argument(..., help="MP4、FLV 或 H.264/H.265 裸流文件 / an MP4, FLV or raw H.264/H.265 file"),
    key: Path | None = typer.Option(None, "--key", help="标签公钥文件 / the tag public key (PEM) to verify with"),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="平台数据目录 / the platform data dir "
                                         "(key and database; default: GBOPS_DATA_DIR)"),
) -> None:
    """查找并校验会话标签 / Find and verify the session tags in a file (exit 0 valid, 1 invalid, 2 none)."""
    from gbcore.settings import Settings
    from watermark.inspect import run_inspect

    try:
        settings = Settings(**({"data_dir": data_dir} if data_dir is not None else {}))
    except Exception:  # the database lookup is optional: inspect without it
        settings = None
    where = data_dir if data_dir is not None else settings.data_dir if settings is not None else None
    if key is None and settings is not None and settings.watermark_tag_key_path.is_file():
        key = settings.watermark_tag_key_path  # a cluster's shared key (GBOPS_SECRETS_DIR)
    raise typer.Exit(run_inspect(file, key_path=key, data_dir=where, settings=settings, echo=typer.echo))


@watermark_app.command("export")
def watermark_export(
    source: Path = typer.Argument(..., exists=True, dir_okay=False, help="录像文件（PS、FLV、MP4、H.264/H.265 裸流）/ "
                                  "a recording (MPEG-PS, FLV, MP4, raw H.264/H.265)"),
    out: Path = typer.Option(..., "--out", help="输出 MP4 / the MP4 to write"),
    user: str = typer.Option(..., "--user", help="申请下载的平台用户名 / the platform user the file is for"),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="平台数据目录 / the platform data dir "
                                         "(tag key and database; default: GBOPS_DATA_DIR)"),
    start: datetime | None = typer.Option(None, "--start", formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S"],
                                          help="录像第一帧的时间 / wall clock of the first frame (水印时间 / the "
                                          "time drawn; default: the file's creation_time, else now)"),
    channel: str = typer.Option("", "--channel", help="通道编码（写入标签与审计）/ channel id for the tag and audit"),
) -> None:
    """为申请人导出带水印的 MP4 / Export a watermarked, tagged MP4 for a requester (prints its SHA-256)."""
    import asyncio

    from gbcore.log import setup_logging
    from ops_portal.users import viewer_identity
    from watermark.downloads import run_export_command

    settings = _settings(**({"data_dir": data_dir} if data_dir is not None else {}))
    setup_logging("WARNING")
    ts = None if start is None else (start if start.tzinfo else start.astimezone()).timestamp()
    raise typer.Exit(asyncio.run(run_export_command(
        source, out, username=user, settings=settings, open_audit=_open_audit, start_time=ts, channel_id=channel,
        operator=_os_user(), echo=typer.echo, echo_err=lambda m: typer.echo(m, err=True),
        find_viewer=viewer_identity)))


# --- security self-check (issue 16, helper D): the work is in gbops/security_check_cli.py ------------------
security_app = typer.Typer(help="安全检查 / security self-check", no_args_is_help=True, add_completion=False)
app.add_typer(security_app, name="security")

from gbops.keys_cli import keys_app  # noqa: E402 - issue 17: gbops keys init (the shared keys of a cluster)

app.add_typer(keys_app, name="keys")

from gbops.node_cli import node_app  # noqa: E402 - issue 17: gbops node drain (a rolling restart)

app.add_typer(node_app, name="node")


class CheckFormat(StrEnum):
    text = "text"
    json = "json"


@security_app.command("check")
def security_check(
    fmt: CheckFormat = typer.Option(CheckFormat.text, "--format", help="text | json（屏幕输出 / printed）"),
    out: Path | None = typer.Option(None, "--out", help="写出报告 / write the report: FILE.pdf | FILE.xlsx"),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="平台数据目录 / platform data dir"),
) -> None:
    """弱口令、账户、传输、锁定、审计、备份、时钟检查 / Weak passwords, accounts, transport, lockout, audit export,
    backups, clock: each finding with its fix (exit 1 when a critical finding is present)."""
    import asyncio

    from gbcore.log import setup_logging
    from gbops.security_check_cli import run_check_command

    settings = _settings(**({"data_dir": data_dir} if data_dir is not None else {}))
    setup_logging("WARNING")
    raise typer.Exit(asyncio.run(run_check_command(
        settings, fmt=fmt.value, out=out.resolve() if out is not None else None, echo=typer.echo,
        echo_err=lambda m: typer.echo(m, err=True), operator=_os_user())))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
