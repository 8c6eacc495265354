"""``bench/fleet.py`` at a tiny size, so CI proves the benchmark runs end to end.

200 simulated devices (one ``bench/fleet_sim.py`` process) against the bare reference responder and a real
``gbops run``: registration, 20 s of keepalives every 5 s (the platform told the same interval, so a late
answer would turn into an offline row), SIGTERM + start on the same database, and every device registering
again at once. The assertions are about facts the script measured, never timings: everyone registered,
nobody refused, no offline transition in the platform's presence history (while held and across the
restart), and the cost figures it prints are real numbers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
N = 200


def test_fleet_benchmark_smoke(tmp_path: Path) -> None:
    out = tmp_path / "fleet.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "fleet.py"), "--devices", str(N), "--keepalive", "5",
         "--hold", "20", "--idle", "2", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "false offline transitions  0" in proc.stdout, proc.stdout
    (r,) = json.loads(out.read_text())
    assert r["devices"] == N and r["keepalive"] == 5

    # the fleet registered with the platform (digest, queries answered) without a failure
    assert r["setup"]["registered"] == N and r["setup"]["failures"] == 0
    assert r["setup"]["queries_answered"] >= N  # DeviceInfo / ConfigDownload / Catalog reached the devices

    # steady state: all held online, every keepalive answered, zero offline rows in the presence history
    hold = r["hold"]
    assert hold["online_min"] == N and hold["registered"] == N
    assert hold["keepalives_failed"] == 0 and hold["registrations_lost"] == 0
    assert r["false_offline"] == {}
    # keepalives flowed in every window (200 devices every 5 s: about 400 in a 10 s window)
    assert all(w["keepalives"] > N for w in hold["windows"])
    assert hold["cpu_per_keepalive"] > 0 and hold["rss_mib"] > 0
    assert r["reference"]["cpu_per_keepalive"] > 0
    assert all(w["keepalives"] > N for w in r["reference"]["windows"])

    # the herd after a restart: every device got its 200 again, none refused or locked out, no 401 loop,
    # the platform's table shows them all online, and nothing went offline across the restart
    herd = r["herd"]
    assert herd["complete"] and herd["reregistered"] == N and herd["registered_200"] == N
    assert herd["refused"] == 0 and herd["extra_challenges"] == 0 and herd["registrations_lost"] == 0
    assert herd["all_online_seconds"] is not None
    assert herd["offline_since_restart"] == {}
    assert herd["per_second"] > 0
