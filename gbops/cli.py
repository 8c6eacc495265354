"""``gbops`` command line: run the platform, run the device simulator."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path

import typer
from pydantic import ValidationError

app = typer.Typer(help="gbops: GB/T 28181 视频监控运营平台 / video-surveillance operation platform",
                  no_args_is_help=True, add_completion=False)


def _settings(**overrides):
    from gbops.settings import Settings

    try:
        return Settings(**overrides)
    except ValidationError as exc:
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"])
            typer.echo(f"配置错误 / setting error: GBOPS_{field.upper()}: {err['msg']}", err=True)
        raise typer.Exit(2) from None


@app.command()
def run() -> None:
    """启动平台（SIP + HTTP）/ Start the platform (SIP + HTTP) in one process."""
    import uvloop

    from gbops.app import Platform
    from gbops.log import setup_logging
    from gbops.settings import SettingsError

    settings = _settings()
    setup_logging(settings.log_level, settings.log_json)
    try:
        settings.check_for_run()
    except SettingsError as exc:
        typer.echo(f"无法启动 / cannot start: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        uvloop.run(Platform(settings).serve())
    except OSError as exc:
        typer.echo(f"无法启动 / cannot start: {exc}", err=True)
        raise typer.Exit(1) from None


class Transport(StrEnum):
    udp = "udp"
    tcp = "tcp"


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
) -> None:
    """设备模拟器 / Simulate GB/T 28181 cameras and NVRs."""
    import uvloop

    from gbops.log import setup_logging
    from sip_server.sim import SimConfig, run_simulator

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
            codec=codec.value, size=size,
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
    from gbops.db import make_engine, make_sessionmaker, migrate

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
    except NoteError as exc:
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

    from gbops.log import setup_logging

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
    from gbops.settings import Settings
    from watermark.inspect import run_inspect

    try:
        settings = Settings(**({"data_dir": data_dir} if data_dir is not None else {}))
    except Exception:  # the database lookup is optional: inspect without it
        settings = None
    where = data_dir if data_dir is not None else settings.data_dir if settings is not None else None
    raise typer.Exit(run_inspect(file, key_path=key, data_dir=where, settings=settings, echo=typer.echo))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
