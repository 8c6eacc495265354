"""The simulator's wrong clock (``SimConfig.clock_error`` / ``gbops sim --clock-offset``): its DeviceStatus
``DeviceTime`` and alarm times are that far from the time the platform's Date set."""

from __future__ import annotations

from datetime import UTC, datetime

from gbsim import SimConfig
from gbsim.device import SimDevice
from sip_server.gb import manscdp

WALL = datetime(2026, 12, 7, 4, 0, 0, tzinfo=UTC).timestamp() + 0.25  # 12:00:00.250 in Beijing


def device_time(clock_error: float) -> str | None:
    dev = SimDevice(SimConfig(server=("127.0.0.1", 5060), clock_error=clock_error), 0, wall=lambda: WALL)
    status = manscdp.as_device_status(manscdp.parse(dev.device_status_body(7)))
    return status.device_time


def test_device_time_follows_the_clock_error() -> None:
    assert device_time(0.0) == "2026-12-07T12:00:00"
    assert device_time(3.0) == "2026-12-07T12:00:03"
    assert device_time(0.2) == "2026-12-07T12:00:00"  # 12:00:00.450: the whole second shown
    assert device_time(0.8) == "2026-12-07T12:00:01"
    assert device_time(-3.0) == "2026-12-07T11:59:57"


def test_cli_passes_the_offset() -> None:
    from typer.testing import CliRunner

    from gbops.cli import app

    result = CliRunner().invoke(app, ["sim", "--help"])
    assert result.exit_code == 0 and "--clock-offset" in result.output
