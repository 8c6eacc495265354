"""Where every benchmark writes its figures (issue 19, goal 8): ``bench/results.json`` (or ``$GBOPS_BENCH_RESULTS``).

Each figure is ``{"value", "unit", "reference", "ratio", "at", "note"}`` under ``<bench>.<name>``; a later run of a
benchmark replaces its own figures and keeps the others', so ``make bench`` builds the whole file and
``python bench/check.py`` reads it. The figures are medians of the benchmark's own runs; ``reference`` is what the
benchmark measured side by side in the same run (a bare forwarder, raw SHA-256, ...), ``ratio`` value/reference.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

__all__ = ["PATH", "load", "record"]

PATH = Path(os.environ.get("GBOPS_BENCH_RESULTS") or Path(__file__).with_name("results.json"))


def load(path: Path | None = None) -> dict[str, Any]:
    try:
        return json.loads((path or PATH).read_text("utf-8"))
    except (OSError, ValueError):
        return {}


def record(bench: str, name: str, value: float, *, unit: str, reference: float | None = None,
           note: str | None = None, path: Path | None = None) -> None:
    """Store one figure of ``bench`` (replacing the same figure of an earlier run)."""
    target = path or PATH
    data = load(target)
    data.setdefault("_machine", {}).update({"host": platform.node(), "python": platform.python_version(),
                                           "cpus": os.cpu_count()})
    entry: dict[str, Any] = {"value": value, "unit": unit, "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if reference is not None:
        entry["reference"] = reference
        entry["ratio"] = value / reference if reference else None
    if note:
        entry["note"] = note
    data.setdefault(bench, {})[name] = entry
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True) + "\n", "utf-8")
    tmp.replace(target)
