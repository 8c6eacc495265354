import os
import subprocess
import sys

import pytest


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("GBOPS_")}
    return subprocess.run([sys.executable, "-m", "gbops.cli", *args], env={**base, **env}, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("env,expect", [
    ({}, "GBOPS_SIP_PASSWORD is not set"),
    ({"GBOPS_SIP_PASSWORD": "abcdefgh"}, "single character class"),
    ({"GBOPS_SIP_PASSWORD": "admin123"}, "common passwords"),
    ({"GBOPS_SIP_PASSWORD": "Xk9#long-pass", "GBOPS_ADMIN_PASSWORD": "admin-2026"}, "GBOPS_ADMIN_PASSWORD"),
    ({"GBOPS_SIP_PASSWORD": "Xk9#long-pass", "GBOPS_SIP_DOMAIN": "12"}, "GBOPS_SIP_DOMAIN"),
])
def test_run_refuses_to_start_and_says_why(tmp_path, env, expect):
    r = run_cli("run", GBOPS_DATA_DIR=str(tmp_path), GBOPS_CONFIG=str(tmp_path / "none.toml"), **env)
    assert r.returncode == 2
    assert expect in r.stderr
    assert not (tmp_path / "gbops.db").exists()  # nothing was started


def test_sim_rejects_bad_ids():
    r = run_cli("sim", "--server", "127.0.0.1:5060", "--password", "Xk9#long-pass", "--first-id", "123")
    assert r.returncode == 2 and "first_id" in r.stderr
