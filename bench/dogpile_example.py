"""SQLAlchemy's own ``examples/dogpile_caching`` as a benchmark contender.

The example is not part of any SQLAlchemy wheel, and its code is never copied
into this repository: at bench time :func:`load` downloads the source
distribution of the *installed* SQLAlchemy version with
``pip download --no-deps --no-binary :all: SQLAlchemy==<version>`` into a cache
directory outside the repository (``$SQLA_MEMCACHE_BENCH_CACHE``, default
``~/.cache/sqla_memcache_bench``), extracts ``examples/dogpile_caching/*.py``
next to it and imports ``caching_query.py`` from there. The example's
``environment.py`` is not imported (it prompts on stdin and creates files in
the working directory); :func:`regions` configures the region the way it does,
with dogpile.cache's pymemcache backend over the benchmark's own memcached.

Anything missing (dogpile.cache or pymemcache not installed, no network, no
example in the sdist) raises :class:`Skipped` with the reason, which the cases
report as ``skipped: <reason>``.
"""
from __future__ import annotations

import glob
import importlib.util
import os
import subprocess
import sys
import shutil
import tarfile
import tempfile
from typing import Callable, Dict, Optional

EXAMPLE = "examples/dogpile_caching"


class Skipped(Exception):
    """The dogpile example cannot run here; the message says why."""


def cache_dir() -> str:
    return os.environ.get("SQLA_MEMCACHE_BENCH_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "sqla_memcache_bench")


def _sdist(version: str, where: str, log: Callable[[str], None]) -> str:
    """Path of the SQLAlchemy sdist for ``version``, downloaded on first use."""
    def found() -> Optional[str]:
        for path in glob.glob(os.path.join(where, "*.tar.gz")):
            if os.path.basename(path).lower() == f"sqlalchemy-{version}.tar.gz":
                return path
        return None

    path = found()
    if path:
        return path
    os.makedirs(where, exist_ok=True)
    log(f"  dogpile example: pip download SQLAlchemy=={version} (sdist) into {where}")
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
             f"SQLAlchemy=={version}", "-d", where],
            capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Skipped(f"pip download of the SQLAlchemy {version} sdist failed: {exc}") from exc
    path = found()
    if proc.returncode != 0 or not path:
        tail = " ".join((proc.stderr or proc.stdout).strip().splitlines()[-1:])[:200]
        raise Skipped(f"pip download of the SQLAlchemy {version} sdist failed: {tail}")
    return path


def _extract(sdist: str, dest: str) -> None:
    """Extract ``examples/dogpile_caching/*.py`` (and nothing else) into ``dest``."""
    # A directory of this process's own: two runs extracting at once (the test
    # suite's bench smoke test beside a benchmark) never write into one.
    tmp = tempfile.mkdtemp(prefix=os.path.basename(dest) + ".part-", dir=os.path.dirname(dest))
    try:
        _extract_into(sdist, tmp)
        try:
            os.rename(tmp, dest)
        except OSError:
            if not os.path.isdir(dest):
                raise
            # Another run finished first: its copy is the same files.
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _extract_into(sdist: str, tmp: str) -> None:
    with tarfile.open(sdist) as tar:
        wanted = [m for m in tar.getmembers()
                  if m.isfile() and m.name.endswith(".py")
                  and m.name.split("/", 1)[-1].rsplit("/", 1)[0] == EXAMPLE]
        if not wanted:
            raise Skipped(f"{os.path.basename(sdist)} has no {EXAMPLE}/")
        for member in wanted:
            src = tar.extractfile(member)
            assert src is not None
            with open(os.path.join(tmp, os.path.basename(member.name)), "wb") as fh:
                fh.write(src.read())


def example_dir(log: Callable[[str], None] = lambda s: None) -> str:
    """Directory holding the installed SQLAlchemy version's ``dogpile_caching/*.py``."""
    import sqlalchemy
    version = sqlalchemy.__version__
    where = cache_dir()
    dest = os.path.join(where, f"dogpile_caching-{version}")
    if not os.path.exists(os.path.join(dest, "caching_query.py")):
        _extract(_sdist(version, where, log), dest)
    return dest


_MODULE = None


def load(log: Callable[[str], None] = lambda s: None):
    """Import and return the example's ``caching_query`` module (or raise :class:`Skipped`)."""
    global _MODULE
    if _MODULE is not None:
        return _MODULE
    for mod in ("dogpile.cache", "pymemcache"):
        if _missing(mod):
            raise Skipped(f"{mod} not installed (pip install -e '.[bench]')")
    try:
        path = os.path.join(example_dir(log), "caching_query.py")
        spec = importlib.util.spec_from_file_location("sqla_memcache_bench_caching_query", path)
        module = importlib.util.module_from_spec(spec)
        # registered under its name: cached frozen results pickle its FromCache by reference
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    except Skipped:
        raise
    except Exception as exc:
        raise Skipped(f"could not import {EXAMPLE}/caching_query.py: "
                      f"{type(exc).__name__}: {str(exc)[:160]}") from exc
    _MODULE = module
    return module


def _missing(mod: str) -> bool:
    try:
        return importlib.util.find_spec(mod) is None
    except ImportError:  # the parent package is missing
        return True


def regions(address: str, names) -> Dict[str, object]:
    """One dogpile region per name, each ``dogpile.cache.pymemcache`` over ``address``.

    As the example's ``environment.py`` does, the region gets a key mangler that
    turns the long statement keys into a digest (dogpile.cache's own
    ``sha1_mangle_key``, prefixed by the region name so regions do not share
    entries) and an expiration time of an hour.
    """
    from dogpile.cache.region import make_region
    from dogpile.cache.util import sha1_mangle_key

    out = {}
    for name in names:
        out[name] = make_region(
            key_mangler=lambda key, _p=name + ":": _p + sha1_mangle_key(key)
        ).configure("dogpile.cache.pymemcache", expiration_time=3600,
                    arguments={"url": [address]})
    return out
