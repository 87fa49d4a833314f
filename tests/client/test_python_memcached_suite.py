"""python-memcached 1.62's own test suite, run against ``sqla_memcache.Client``.

The suite comes from python-memcached's sdist, downloaded at test time with
``pip download`` (never copied into this repository), and imports ``memcache``:
``tests/client/python_memcached_shim/memcache.py`` answers as that module,
for this run only. The tests that reach into python-memcached's internals are
deselected, with the reason; docs/client.md lists them.

Without network access to the package index the test skips and says so; under
``CI=true`` it fails instead.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any, Dict

import pytest

from support.databases import in_ci

VERSION = "1.62"
SHIM = Path(__file__).resolve().parent / "python_memcached_shim"

#: test id -> why it cannot run against another client (docs/client.md repeats this list)
EXCLUDED: Dict[str, str] = {
    "test_memcache.py::TestMemcache::test_touch":
        "patches python-memcached's private _Host.send_cmd/_Host.readline",
    "test_memcache.py::TestMemcache::test_touch_unexpected_reply":
        "patches python-memcached's private _Host.send_cmd/_Host.readline",
    "test_setmulti.py::test_Memcached_Set_Multi::test_Socket_Disconnect":
        "replaces socket.socket with a fake that implements only the socket methods python-memcached calls",
}

#: the sdist ships tests/*.py but not the tests/utils.py they import; this is ours
UTILS = '''"""Written by sqla_memcache's runner: the sdist lacks python-memcached's tests/utils.py."""
import contextlib
import io


@contextlib.contextmanager
def captured_stderr():
    buffer = io.StringIO()
    with contextlib.redirect_stderr(buffer):
        yield buffer
'''

SHIM_CHECK = '''"""Written by sqla_memcache's runner: fails the run if the real python-memcached was imported."""
import memcache

import sqla_memcache


def test_the_shim_is_in_use():
    assert getattr(memcache, "IS_SQLA_MEMCACHE_SHIM", False), memcache.__file__
    assert issubclass(memcache.Client, sqla_memcache.Client)
'''


def _unavailable(reason: str) -> None:
    if in_ci():
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding python-memcached's tests as package ``pm_tests``, with our utils.py."""
    download = tmp_path_factory.mktemp("python_memcached_sdist")
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
             "--no-binary", ":all:", "-d", str(download), f"python-memcached=={VERSION}"],
            capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        _unavailable(f"pip download python-memcached=={VERSION} timed out")
    archives = list(download.glob("python-memcached-*.tar.gz")) + list(download.glob("python_memcached-*.tar.gz"))
    if proc.returncode != 0 or not archives:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        _unavailable(f"cannot download the python-memcached {VERSION} sdist (pip download: {last})")
    root = tmp_path_factory.mktemp("python_memcached_suite")
    package = root / "pm_tests"
    package.mkdir()
    with tarfile.open(archives[0]) as archive:
        members = [m for m in archive.getmembers()
                   if re.fullmatch(r"[^/]+/tests/[^/]+\.py", m.name) and m.isfile()]
        assert members, "no tests/*.py in the python-memcached sdist"
        for member in members:  # only the tests: the sdist's memcache.py must not be importable
            source = archive.extractfile(member)
            assert source is not None
            (package / Path(member.name).name).write_bytes(source.read())
    (package / "__init__.py").write_text("")
    if not (package / "utils.py").exists():
        (package / "utils.py").write_text(UTILS)
    (package / "test_zz_shim_in_use.py").write_text(SHIM_CHECK)
    return root


def test_python_memcached_suite_passes(suite: Path, memcached: Any) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SHIM), os.environ.get("PYTHONPATH", "")]),
               SQLA_MEMCACHE_SHIM_SERVER=memcached.address)
    deselect = [arg for test_id in EXCLUDED for arg in ("--deselect", f"pm_tests/{test_id}")]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "--rootdir", str(suite),
         "-o", "addopts=", *deselect, "pm_tests"],
        cwd=suite, env=env, capture_output=True, text=True, timeout=600)
    report = proc.stdout + proc.stderr
    print(report[-4000:])  # shown with -rA / on failure: the suite's own summary
    assert proc.returncode == 0, report[-6000:]
    summary = report.strip().splitlines()[-1]
    passed = int(re.search(r"(\d+) passed", summary).group(1))  # type: ignore[union-attr]
    deselected = int(re.search(r"(\d+) deselected", summary).group(1))  # type: ignore[union-attr]
    assert deselected == len(EXCLUDED), summary
    assert "test_the_shim_is_in_use" in report and passed >= 20, summary
