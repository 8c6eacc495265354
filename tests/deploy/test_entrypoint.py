"""The image's entrypoint (secret files -> settings) and health command, against a real ``gbops run``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.entrypoint import SecretFileError, known_variables, prepare, secret_environment
from deploy.healthcheck import probe_urls
from tests.conftest import ROOT, need
from tests.e2e.platform import PlatformProcess


def test_secret_files_become_settings(tmp_path: Path) -> None:
    (tmp_path / "GBOPS_SIP_PASSWORD").write_text("Gate-7-camera#pw\n")
    (tmp_path / "GBOPS_DATABASE_URL").write_text("postgresql+asyncpg://u:p@db/gbops")
    (tmp_path / "GBOPS_ADMIN_PASSWORD").write_text("from-file")
    # a Kubernetes secret volume: each key a link through ..data to a timestamped folder
    (tmp_path / "..2026_12_07").mkdir()
    (tmp_path / "..2026_12_07" / "GBOPS_REDIS_URL").write_text("redis://:pw@redis:6379/0\n")
    (tmp_path / "..data").symlink_to("..2026_12_07")
    (tmp_path / "GBOPS_REDIS_URL").symlink_to("..data/GBOPS_REDIS_URL")
    (tmp_path / "README").write_text("not a variable")
    env = {"GBOPS_ADMIN_PASSWORD": "from-environment"}
    prepare(env, tmp_path)
    assert env == {"GBOPS_SIP_PASSWORD": "Gate-7-camera#pw", "GBOPS_DATABASE_URL": "postgresql+asyncpg://u:p@db/gbops",
                   "GBOPS_ADMIN_PASSWORD": "from-environment", "GBOPS_REDIS_URL": "redis://:pw@redis:6379/0"}
    assert {"GBOPS_SIP_PASSWORD", "GBOPS_DATABASE_URL", "GBOPS_REDIS_URL"} <= known_variables()


def test_unknown_or_empty_secret_files_stop_the_start(tmp_path: Path) -> None:
    (tmp_path / "GBOPS_SIP_PASSWROD").write_text("typo")
    with pytest.raises(SecretFileError, match="GBOPS_SIP_PASSWROD"):
        secret_environment(tmp_path, known_variables(), {})
    (tmp_path / "GBOPS_SIP_PASSWROD").unlink()
    (tmp_path / "GBOPS_SIP_PASSWORD").write_text("\n")
    with pytest.raises(SecretFileError, match="empty"):
        secret_environment(tmp_path, known_variables(), {})
    assert secret_environment(tmp_path / "absent", known_variables(), {}) == {}


def test_entrypoint_execs_gbops() -> None:
    """The image's entrypoint hands its arguments to the gbops command it finds on PATH."""
    need(not Path("/run/secrets").exists(), "this machine has a /run/secrets folder of its own")
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "deploy.entrypoint", "--help"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "run" in out.stdout and "sim" in out.stdout


def test_probe_urls() -> None:
    assert probe_urls({}) == ["https://127.0.0.1:8443/api/health", "http://127.0.0.1:8080/api/health"]
    assert probe_urls({"GBOPS_HTTP_HOST": "::1", "GBOPS_HTTPS_PORT": "0", "GBOPS_HTTP_PORT": "9000"},
                      ready=True) == ["http://[::1]:9000/api/health?ready=1"]


def _health(platform: PlatformProcess, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "GBOPS_HTTP_HOST": "127.0.0.1", "GBOPS_HTTP_PORT": str(platform.http_port),
           "GBOPS_HTTPS_PORT": str(platform.https_port), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "deploy.healthcheck", "--timeout", "2", *args], env=env,
                          capture_output=True, text=True, timeout=30)


@pytest.mark.e2e
def test_health_command_against_a_running_platform(tmp_path: Path) -> None:
    platform = PlatformProcess(tmp_path / "data").start()
    try:
        assert _health(platform).returncode == 0
        assert _health(platform, "--ready").returncode == 0
    finally:
        platform.stop()
    down = _health(platform)
    assert down.returncode == 1 and "unhealthy" in down.stderr
