"""``gbops`` command line: run the platform, run the device simulator."""

from __future__ import annotations

import sys
from enum import StrEnum

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


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
