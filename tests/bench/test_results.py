"""``bench/results.py`` and ``bench/check.py`` (issue 19, goal 8): a benchmark's figure lands in the results file
with its reference and ratio, a later run replaces only its own figure, and the check prints each goal with the
figure and whether it holds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _run(code: str, results: Path) -> str:
    env = {**os.environ, "GBOPS_BENCH_RESULTS": str(results)}
    return subprocess.run([sys.executable, "-c", code], cwd=BENCH, env=env, check=True, capture_output=True,
                          text=True).stdout


def test_figures_land_in_the_results_file_and_check_reads_them(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    env = {**os.environ, "GBOPS_BENCH_RESULTS": str(results)}
    out = subprocess.run([sys.executable, str(BENCH / "check.py")], env=env, capture_output=True, text=True)
    assert out.returncode == 2 and "make bench" in out.stdout
    _run("from results import record; record('relay', 'ms_cpu_per_stream_second', 30.0, unit='ms', reference=12.0)",
         results)
    _run("from results import record; record('audit', 'verify_entries_per_s', 250000, unit='entries/s')", results)
    _run("from results import record; record('relay', 'ms_cpu_per_stream_second', 20.0, unit='ms', reference=12.5)",
         results)
    data = json.loads(results.read_text())
    relay = data["relay"]["ms_cpu_per_stream_second"]
    assert relay["value"] == 20.0 and relay["reference"] == 12.5 and relay["ratio"] == 1.6
    assert data["audit"]["verify_entries_per_s"]["value"] == 250000  # kept when another bench ran
    out = subprocess.run([sys.executable, str(BENCH / "check.py")], env=env, capture_output=True, text=True,
                         check=True).stdout
    lines = {line.split("  ")[1].strip(): line for line in out.splitlines()}
    assert "1.60 x" in lines["relay CPU vs a bare forwarder (5 FLV viewers)"]
    assert lines["relay CPU vs a bare forwarder (5 FLV viewers)"].rstrip().split("  ")[-2] == "holds"
    assert "250,000.00 entries/s" in lines["audit verification, one core"] and "holds" in lines[
        "audit verification, one core"]
    assert "not measured" in lines["PostgreSQL batched audit appends"]
