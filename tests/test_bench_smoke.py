"""Smoke test of the benchmark harness (``python -m bench``) in a tiny mode.

It runs every case once with 50 operations against a memcached the harness
starts itself, then checks the shape of ``latest.json``: every case, every
client, finite positive numbers, every target evaluated. No timing is asserted:
the numbers of a 50-op run mean nothing.

Only the ``test`` extra is needed: the peers and contenders of the ``bench``
extra (pymemcache, pylibmc, dogpile.cache, matplotlib for the chart) are checked
when installed and skipped with the reason when not.
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
    "orm_get_sqlite": {"db", "cached", "naive", "hook_floor", "hook_floor_rt", "db_captured"},
    "orm_top5_sqlite": {"db", "fromcache", "naive", "hook_floor", "hook_floor_rt", "db_captured"},
    "fromcache_overhead": {"bare", "fromcache", "bare_merge", "fromcache_same_session"},
    "orm_get_mariadb": {"db", "cached", "naive", "hook_floor", "hook_floor_rt", "db_captured"},
    "orm_top5_mariadb": {"db", "fromcache", "naive", "hook_floor", "hook_floor_rt", "db_captured"},
}
#: contenders that need the bench extra: variant -> ORM cases that have it
CONTENDERS = {"dogpile": ["orm_get_sqlite", "orm_top5_sqlite", "orm_get_mariadb",
                          "orm_top5_mariadb"]}
PEER_MODULES = {"pymemcache": "pymemcache", "python-memcached": "memcache", "pylibmc": "pylibmc"}


@pytest.fixture(scope="module")
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


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, bench_mysql_url):
    """``(out_dir, results, markdown)`` of one 1-round, 50-op run of every case."""
    out = tmp_path_factory.mktemp("bench")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--rounds", "1", "--ops", "50",
         "--out", str(out), "--stem", "latest", "--mysql-url", bench_mysql_url],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads((out / "latest.json").read_text()), (out / "latest.md").read_text()


def _finite_positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def _installed(mod: str) -> bool:
    try:
        return importlib.util.find_spec(mod) is not None
    except ImportError:
        return False


def _check_variant(case: str, name: str, v: dict, baseline: str) -> None:
    assert v["available"], (case, name, v.get("reason"))
    m = v["median"]
    for key in ("ops_s", "wall_us", "p50_us", "p99_us", "cpu_us"):
        assert _finite_positive(m[key]), (case, name, key, m[key])
    assert m["p50_us"] <= m["p99_us"]
    assert len(v["rounds"]) == 1 and v["rounds"][0]["n"] == 50
    if name != baseline:
        for metric in ("ops_s", "cpu", "wall"):
            assert _finite_positive(v["vs"][baseline][metric]), (case, name, metric)


def test_bench_tiny_run(tiny_run):
    _, results, md = tiny_run
    assert "## Targets" in md
    for case in CLIENT_CASES:
        assert case in results["cases"], case
        assert f"`{case}`" in md
        variants = results["cases"][case]["variants"]
        for name in ("floor", "sqla_memcache"):
            _check_variant(case, name, variants[name], "floor")

    for case, names in ORM_CASES.items():
        assert case in results["cases"], case
        c = results["cases"][case]
        variants = c["variants"]
        extra = {v for v, cases in CONTENDERS.items() if case in cases}
        assert names <= set(variants) <= names | extra, (case, variants)
        for name in names:
            _check_variant(case, name, variants[name], c["baseline"])
        assert "WARNING" not in c["notes"], c["notes"]
    assert "## What a hit costs" in md

    from bench import report
    targets = results["targets"]
    assert [t["id"] for t in targets] == [t["id"] for t in report.TARGETS]
    for t in targets:
        v = results["cases"][t["case"]]["variants"].get(t["against"], {})
        if t["against"] in CONTENDERS and not v.get("available"):
            assert t["value"] is None  # skipped contender: checked in test_contender
            continue
        assert t["value"] is not None, t
        assert isinstance(t["passed"], bool)


def test_bench_chart(tiny_run):
    out, _, md = tiny_run
    if not _installed("matplotlib"):
        assert not (out / "latest.png").exists()
        pytest.skip("matplotlib not installed (bench extra): the run writes no PNG")
    assert (out / "latest.png").stat().st_size > 1000
    assert "latest.png" in md


@pytest.mark.parametrize("name", sorted(PEER_MODULES))
def test_bench_peer_client(tiny_run, name):
    if not _installed(PEER_MODULES[name]):
        pytest.skip(f"{name} not installed (bench extra): peer not benchmarked")
    _, results, _ = tiny_run
    for case in CLIENT_CASES:
        _check_variant(case, name, results["cases"][case]["variants"][name], "floor")


@pytest.mark.parametrize("name", sorted(CONTENDERS))
def test_bench_contender(tiny_run, name):
    """The dogpile example: measured when dogpile.cache, pymemcache and the sdist are there."""
    _, results, _ = tiny_run
    missing = [m for m in ("dogpile.cache", "pymemcache") if not _installed(m.split(".")[0])
               or not _installed(m)]
    for case in CONTENDERS[name]:
        c = results["cases"][case]
        v = c["variants"][name]
        if missing:
            assert not v["available"] and v["reason"].startswith("skipped:"), v
            pytest.skip(f"{name}: {', '.join(missing)} not installed (bench extra): {v['reason']}")
        if not v["available"] and v["reason"].startswith("skipped:"):
            pytest.skip(f"{name}: {v['reason']}")  # e.g. no network for the sdist download
        _check_variant(case, name, v, c["baseline"])


def test_two_runs_extracting_the_dogpile_example_at_once_both_get_it(tmp_path):
    """Found in a full test run beside a benchmark: both extracted into one
    ``.part`` directory and the second rename failed ("Directory not empty")."""
    import glob
    import shutil
    import threading

    from bench import dogpile_example

    sdists = glob.glob(os.path.join(dogpile_example.cache_dir(), "sqlalchemy-%s.tar.gz" % sa.__version__))
    if not sdists:
        pytest.skip("the SQLAlchemy %s sdist is not downloaded (python -m bench fetches it)" % sa.__version__)
    dest = str(tmp_path / "dogpile_caching")
    errors, start = [], threading.Barrier(4)

    def extract():
        start.wait()
        try:
            dogpile_example._extract(sdists[0], dest)
        except Exception as exc:  # pragma: no cover - the failure this test is about
            errors.append(exc)

    threads = [threading.Thread(target=extract) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert os.path.isfile(os.path.join(dest, "caching_query.py"))
    assert sorted(os.listdir(tmp_path)) == ["dogpile_caching"]  # no .part directory left behind
    shutil.rmtree(dest)


def test_overlap_measurement_prints_one_row_per_work_size():
    """``python -m bench.overlap`` in a tiny mode: a table row per W, every number finite."""
    out = subprocess.run([sys.executable, "-m", "bench.overlap", "--rounds", "1", "--ops", "20", "--work", "0,50"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = [line for line in out.stdout.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [row.split("|")[1].strip() for row in rows] == ["0", "50"]
    for row in rows:
        numbers = [float(cell) for cell in row.strip("|").split("|")[1:]]
        assert len(numbers) == 6 and all(math.isfinite(x) for x in numbers) and numbers[1] > 0
