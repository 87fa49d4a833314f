"""``sqla_memcache.testing``: the pytest plugin users add to their own suites, run as they would."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Dict, Optional

import pytest

from sqla_memcache.memcached_process import find_memcached_binary, is_listening

ROOT = Path(__file__).resolve().parents[1]

USER_TESTS = '''
import pathlib

from sqlalchemy import create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from sqla_memcache import FromCache


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "item"
    id: Mapped[int] = mapped_column(primary_key=True)


def test_client_round_trip(memcached_server, memcached_client):
    pathlib.Path("address.txt").write_text(memcached_server.address)
    assert memcached_server.servers == [memcached_server.address]
    assert memcached_client.set("user:key", "value") is True
    assert memcached_client.get("user:key") == "value"


def test_each_test_starts_empty(memcached_client):
    assert memcached_client.get("user:key") is None


def test_orm_cache(memcached_orm_cache, tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path}/db.sqlite")
    Base.metadata.create_all(engine)
    Session = sessionmaker(engine)
    memcached_orm_cache.listen_on_session(Session)
    with Session() as session:
        session.add(Item(id=1))
        session.commit()
    for _ in range(2):
        with Session() as session:
            assert session.scalars(select(Item).options(FromCache())).all()[0].id == 1
    assert memcached_orm_cache.stats.hits == 1 and memcached_orm_cache.stats.stores == 1
'''


def run_user_suite(tmp_path: Path, *args: str, env: Optional[Dict[str, str]] = None,
                   conftest: str = "") -> subprocess.CompletedProcess:
    (tmp_path / "test_user.py").write_text(USER_TESTS)
    (tmp_path / "conftest.py").write_text(textwrap.dedent(conftest))
    full_env = dict(os.environ, PYTHONPATH=str(ROOT))
    full_env.pop("SQLA_MEMCACHE_TESTING_SERVER", None)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *args],
                          cwd=tmp_path, env=full_env, capture_output=True, text=True, timeout=300)


needs_binary = pytest.mark.skipif(find_memcached_binary() is None, reason="needs a local memcached binary")


@needs_binary
def test_the_plugin_starts_and_stops_a_private_memcached(tmp_path: Path) -> None:
    proc = run_user_suite(tmp_path, "-p", "sqla_memcache.testing")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 passed" in proc.stdout
    address = (tmp_path / "address.txt").read_text()
    assert address.startswith("127.0.0.1:") and not is_listening(address)  # stopped with the session


@needs_binary
def test_pytest_plugins_in_conftest_also_works(tmp_path: Path) -> None:
    proc = run_user_suite(tmp_path, conftest='pytest_plugins = ["sqla_memcache.testing"]\n')
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 passed" in proc.stdout


def test_a_given_server_is_used(tmp_path: Path, memcached: Any) -> None:
    proc = run_user_suite(tmp_path, "-p", "sqla_memcache.testing",
                          env={"SQLA_MEMCACHE_TESTING_SERVER": memcached.address})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "address.txt").read_text() == memcached.address


def test_without_memcached_the_tests_skip_with_the_hint(tmp_path: Path) -> None:
    conftest = '''
        from sqla_memcache import memcached_process
        memcached_process.find_memcached_binary = lambda: None  # as if not installed
        pytest_plugins = ["sqla_memcache.testing"]
    '''
    proc = run_user_suite(tmp_path, conftest=conftest)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 skipped" in proc.stdout and "apt-get install memcached" in proc.stdout


def test_the_plugin_is_registered_with_pytest() -> None:
    from importlib.metadata import entry_points

    found = [ep for ep in entry_points().select(group="pytest11") if ep.value == "sqla_memcache.testing"] \
        if hasattr(entry_points(), "select") else \
        [ep for ep in entry_points().get("pytest11", ()) if ep.value == "sqla_memcache.testing"]  # Python 3.9
    if not found:
        pytest.skip("no pytest11 entry point for sqla_memcache.testing: not installed, or installed before it was added")
    assert found[0].name == "sqla_memcache.testing"


@needs_binary
def test_the_installed_plugin_loads_without_being_named(tmp_path: Path) -> None:
    from importlib.metadata import distribution

    if not any(ep.group == "pytest11" for ep in distribution("sqla_memcache").entry_points):
        pytest.skip("sqla_memcache is installed without the pytest11 entry point (reinstall it)")
    proc = run_user_suite(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 passed" in proc.stdout
    disabled = run_user_suite(tmp_path, "-p", "no:sqla_memcache.testing")
    assert disabled.returncode != 0 and "fixture 'memcached_server' not found" in disabled.stdout
