"""The SIP core stays sans-IO: no asyncio, socket, threading or time under sip_server/sip/."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import sip_server.sip

FORBIDDEN = {"asyncio", "socket", "threading", "time", "selectors", "ssl", "uvloop"}
SIP_DIR = Path(sip_server.sip.__file__).parent


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__":
            names.add("__import__")
    return names


def test_sources_import_no_io_modules() -> None:
    files = sorted(SIP_DIR.glob("*.py"))
    assert {p.name for p in files} >= {"__init__.py", "message.py", "transaction.py", "endpoint.py", "digest.py"}
    for path in files:
        bad = imported_modules(path) & (FORBIDDEN | {"__import__", "importlib"})
        assert not bad, f"{path.name} imports {sorted(bad)}"


def test_importing_the_core_loads_no_io_modules() -> None:
    code = (
        "import sys, sip_server.sip; "
        "print(','.join(m for m in ('asyncio', 'socket', 'threading', 'selectors', 'uvloop') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=SIP_DIR.parents[1])
    assert out.stdout.strip() == ""
