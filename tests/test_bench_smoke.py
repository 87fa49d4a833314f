"""Smoke test of the benchmark harness (``python -m bench``) in a tiny mode.

It runs every case once with 50 operations against a memcached the harness
starts itself, then checks the shape of ``latest.json``: every case, every
client, finite positive numbers, every target evaluated. No timing is asserted:
the numbers of a 50-op run mean nothing.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import uuid

import pytest
import sqlalchemy as sa

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLIENT_CASES = ["get_100b", "set_100b", "get_multi_100", "set_multi_100", "get_100k",
                "get_100b_8threads", "get_100k_8threads"]
ORM_CASES = {
    "orm_get_sqlite": {"db", "cached", "naive"},
    "orm_top5_sqlite": {"db", "fromcache"},
    "fromcache_overhead": {"bare", "fromcache", "bare_merge", "fromcache_same_session"},
    "orm_get_mariadb": {"db", "cached", "naive"},
    "orm_top5_mariadb": {"db", "fromcache"},
}
PEER_MODULES = {"pymemcache": "pymemcache", "python-memcached": "memcache", "pylibmc": "pylibmc"}


@pytest.fixture()
def bench_mysql_url(mysql_url: str):
    """A fresh MariaDB database for this run, dropped afterwards."""
    name = f"sqla_memcache_bench_smoke_{uuid.uuid4().hex[:8]}"
    yield mysql_url.rstrip("/") + "/" + name
    engine = sa.create_engine(mysql_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
    finally:
        engine.dispose()


def _finite_positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_bench_tiny_run(tmp_path, bench_mysql_url):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--rounds", "1", "--ops", "50",
         "--out", str(tmp_path), "--stem", "latest", "--mysql-url", bench_mysql_url],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    results = json.loads((tmp_path / "latest.json").read_text())
    if importlib.util.find_spec("matplotlib"):
        assert (tmp_path / "latest.png").stat().st_size > 1000
    else:  # the chart is optional: the README's test command installs only the test extra
        assert not (tmp_path / "latest.png").exists()
    md = (tmp_path / "latest.md").read_text()
    assert "## Targets" in md

    expected_clients = {"floor", "sqla_memcache"} | {
        name for name, mod in PEER_MODULES.items() if importlib.util.find_spec(mod)}
    for case in CLIENT_CASES:
        assert case in results["cases"], case
        assert f"`{case}`" in md
        variants = results["cases"][case]["variants"]
        for name in expected_clients:
            v = variants[name]
            assert v["available"], (case, name, v.get("reason"))
            m = v["median"]
            for key in ("ops_s", "wall_us", "p50_us", "p99_us", "cpu_us"):
                assert _finite_positive(m[key]), (case, name, key, m[key])
            assert m["p50_us"] <= m["p99_us"]
            assert len(v["rounds"]) == 1 and v["rounds"][0]["n"] == 50
            if name != "floor":
                for metric in ("ops_s", "cpu", "wall"):
                    assert _finite_positive(v["vs"]["floor"][metric]), (case, name, metric)

    for case, names in ORM_CASES.items():
        assert case in results["cases"], case
        variants = results["cases"][case]["variants"]
        assert set(variants) == names, (case, variants)
        for name, v in variants.items():
            assert v["available"], (case, name, v.get("reason"))
            assert _finite_positive(v["median"]["ops_s"]), (case, name)
        baseline = results["cases"][case]["baseline"]
        for name, v in variants.items():
            if name != baseline:
                assert _finite_positive(v["vs"][baseline]["ops_s"])
        assert "WARNING" not in results["cases"][case]["notes"], results["cases"][case]["notes"]

    targets = results["targets"]
    assert len(targets) == 8
    for t in targets:
        assert t["value"] is not None, t
        assert isinstance(t["passed"], bool)
