"""The console's coordinate conversion (``ops_portal/web/console/geo.js``) run with node: WGS-84 -> GCJ-02 against
published reference values (a few metres of tolerance), no shift outside China, and the datum switch the map uses."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import need

GEO = Path(__file__).resolve().parents[2] / "ops_portal" / "web" / "console" / "geo.js"


def _node() -> str:
    node = shutil.which("node") or ("/usr/bin/node" if Path("/usr/bin/node").exists() else None)
    need(node is not None, "node is not installed")
    assert node is not None
    return node


def _run(calls: list[list[object]]) -> list[list[float]]:
    """Each call is [function name, *args]; returns each result, evaluated by the module itself."""
    script = (f"import * as geo from {json.dumps(GEO.as_uri())};\n"
              f"const calls = {json.dumps(calls)};\n"
              "console.log(JSON.stringify(calls.map(([f, ...a]) => geo[f](...a))));\n")
    out = subprocess.run([_node(), "--input-type=module", "-e", script], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _metres(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance between two (lat, lon) points on a 6371 km sphere."""
    (la1, lo1), (la2, lo2) = (map(math.radians, a)), (map(math.radians, b))
    h = math.sin((la2 - la1) / 2) ** 2 + math.cos(la1) * math.cos(la2) * math.sin((lo2 - lo1) / 2) ** 2
    return 2 * 6371000 * math.asin(math.sqrt(h))


# (WGS-84 lat, lon) -> published GCJ-02 (lat, lon)
REFERENCES = [
    # the worked example of the widely used coordtransform library: wgs84togcj02(116.404, 39.915)
    ((39.915, 116.404), (39.91640428150164, 116.41024449916938)),
    # Tiananmen, Beijing
    ((39.908722, 116.397499), (39.910124, 116.403743)),
]


@pytest.mark.parametrize(("wgs", "gcj"), REFERENCES)
def test_wgs84_to_gcj02_matches_published_values(wgs: tuple[float, float], gcj: tuple[float, float]) -> None:
    [got] = _run([["wgs84ToGcj02", *wgs]])
    assert _metres(tuple(got), gcj) < 3.0, (got, gcj)
    # the shift itself is the familiar few hundred metres, mostly eastward
    assert 400 < _metres(tuple(got), wgs) < 800, got


def test_outside_china_and_datum_switch() -> None:
    london, tokyo_bay, honolulu = (51.5007, -0.1246), (35.0, 139.8), (21.3069, -157.8583)
    got = _run([["wgs84ToGcj02", *london], ["wgs84ToGcj02", *tokyo_bay], ["wgs84ToGcj02", *honolulu],
                ["outOfChina", 39.9, 116.4], ["outOfChina", *london],
                ["toDatum", "wgs84", 39.915, 116.404], ["toDatum", "gcj02", 39.915, 116.404]])
    assert got[0] == list(london) and got[1] == list(tokyo_bay) and got[2] == list(honolulu), got
    assert got[3] is False and got[4] is True
    assert got[5] == [39.915, 116.404]
    assert _metres(tuple(got[6]), REFERENCES[0][1]) < 0.01


def test_shift_varies_across_china() -> None:
    """Not a constant offset: Shanghai, Urumqi and Sanya shift by different vectors, each within 1 km."""
    points = [(31.2304, 121.4737), (43.8256, 87.6168), (18.2528, 109.5120)]
    got = _run([["wgs84ToGcj02", *p] for p in points])
    shifts = [(g[0] - p[0], g[1] - p[1]) for g, p in zip(got, points, strict=True)]
    assert len({(round(a, 5), round(b, 5)) for a, b in shifts}) == 3, shifts
    for g, p in zip(got, points, strict=True):
        assert 50 < _metres(tuple(g), p) < 1000, (g, p)
