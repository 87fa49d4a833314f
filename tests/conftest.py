"""Fixtures giving tests real memcached servers (and where the database servers are).

Server source, first that applies (``tests/support/memcached.py`` does the work):

1. ``SQLA_MEMCACHE_TEST_SERVERS=host:port,...`` -- those servers (they get flushed!).
   Fixtures that need to own a process (``memcached_factory``, ``tls_memcached``) skip
   with a reason naming the variable.
2. the local ``memcached`` binary -- processes on free loopback ports.
3. a reachable Docker engine -- ``memcached:1.6`` containers via testcontainers
   (``memcached_factory`` and ``tls_memcached`` then skip: they need the binary).
4. nothing -- every test that needs memcached fails with instructions.

Fixtures:

``memcached``          a flushed server (``.address``, ``.servers``); counters reset too.
``memcached_cluster``  three flushed servers (``.servers``).
``memcached_factory``  ``factory(extra_args=(), memory_mb=64)`` starts a NEW dedicated process
                       (``.address``, ``.port``, ``.kill()``, ``.stop()``, ``.start()`` on the
                       same port, ``.pause()``/``.resume()`` via SIGSTOP/SIGCONT); all stopped
                       after the test.
``tls_memcached``      a flushed TLS-only server with ``.ca_file``, ``.cert_file``,
                       ``.key_file``, ``.wrong_ca_file`` and ``.client_context()``.
``mysql_url`` / ``pg_url``  reachable server URLs (see ``tests/support/databases.py``).
``run_async``          parametrised ``asyncio``/``uvloop``: ``run_async(main())`` runs a
                       coroutine on a new event loop of that kind (uvicorn runs uvloop when
                       it is installed).
"""

from __future__ import annotations

import os
import sys
from typing import Awaitable, Callable, Iterator, List, TypeVar

import pytest

from support.clients import new_loop, uvloop_missing
from support.databases import mysql_server_url, pg_server_url, require_url
from support.memcached import ENV_SERVERS, Cluster, MemcachedProcess, Server, ServerPool, TLSServer, tls_process
from support.raw import reset
from support.tls import make_tls_files

_POOL = ServerPool()


def pytest_report_header(config: pytest.Config) -> List[str]:
    return [_POOL.describe()]


def pytest_unconfigure(config: pytest.Config) -> None:
    _POOL.close()


@pytest.fixture(scope="session")
def memcached_pool() -> ServerPool:
    """The session's :class:`ServerPool`; fails the test when no memcached can be had."""
    if not _POOL.source:
        pytest.fail(_POOL.unavailable, pytrace=False)
    return _POOL


def _needs_own_process(pool: ServerPool) -> str:
    """The local binary path, or skip with the reason this source cannot own a process."""
    if pool.source == "local" and pool.binary:
        return pool.binary
    if pool.source == "env":
        pytest.skip(f"needs a local memcached process; unset {ENV_SERVERS} to run it")
    pytest.skip("needs a local memcached binary (apt-get install memcached); Docker servers cannot be used here")


@pytest.fixture
def memcached(memcached_pool: ServerPool) -> Server:
    """One running server, emptied and with counters reset."""
    (address,) = memcached_pool.servers(1)
    reset(address)
    return Server(address)


@pytest.fixture
def memcached_cluster(memcached_pool: ServerPool) -> Cluster:
    """Three running servers, emptied and with counters reset."""
    try:
        servers = memcached_pool.servers(3)
    except LookupError as exc:
        pytest.skip(str(exc))
    for address in servers:
        reset(address)
    return Cluster(list(servers))


@pytest.fixture
def memcached_factory(memcached_pool: ServerPool) -> Iterator[Callable[..., MemcachedProcess]]:
    """A factory starting dedicated memcached processes that the test may kill, pause or restart."""
    binary = _needs_own_process(memcached_pool)
    started: List[MemcachedProcess] = []

    def factory(extra_args: tuple = (), memory_mb: int = 64) -> MemcachedProcess:
        process = MemcachedProcess(binary, extra_args=tuple(extra_args), memory_mb=memory_mb)
        started.append(process)
        return process.start()

    yield factory
    for process in started:
        process.kill()  # throwaway data; SIGTERM would cost memcached's ~1 s graceful shutdown


@pytest.fixture(scope="session")
def _tls_process(memcached_pool: ServerPool, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSServer]:
    binary = _needs_own_process(memcached_pool)
    files = make_tls_files(tmp_path_factory.mktemp("tls"))
    process = tls_process(binary, files).start()
    yield TLSServer(process.address, files)
    process.kill()


@pytest.fixture
def tls_memcached(_tls_process: TLSServer) -> TLSServer:
    """A running TLS-only server, emptied, with the CA that signed it and an unrelated CA."""
    reset(_tls_process.address, ssl_context=_tls_process.client_context())
    return _tls_process


@pytest.fixture(scope="session")
def mysql_url() -> str:
    """URL of a reachable MariaDB/MySQL server (no database part); skips, or fails under CI=true."""
    return require_url(mysql_server_url())


@pytest.fixture(scope="session")
def pg_url() -> str:
    """URL of a reachable PostgreSQL server (no database part); skips, or fails under CI=true."""
    return require_url(pg_server_url())


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Print a line to the terminal (not captured) and keep it as a test property."""
    capman = request.config.pluginmanager.getplugin("capturemanager")
    lines: List[str] = []

    def emit(line: str) -> None:
        lines.append(line)
        request.node.user_properties.append(("figure", line))
        with capman.global_and_fixture_disabled():
            sys.stdout.write("\n[%s] %s\n" % (request.node.name, line))
            sys.stdout.flush()

    return emit


T = TypeVar("T")
_UVLOOP_MISSING = uvloop_missing()


@pytest.fixture(params=["asyncio", pytest.param("uvloop", marks=pytest.mark.skipif(
    bool(_UVLOOP_MISSING) and not os.environ.get("CI"), reason=_UVLOOP_MISSING or "uvloop"))])
def run_async(request: pytest.FixtureRequest) -> Callable[[Awaitable[T]], T]:
    """``run_async(main())``: run a coroutine to completion on a new asyncio or uvloop event
    loop (parametrised; as ``asyncio.run``), then close the loop. In CI a missing uvloop fails."""
    def run(coro: Awaitable[T]) -> T:
        loop = new_loop("uvloop" if request.param == "uvloop" else "async")
        try:
            return loop.run_until_complete(coro)
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    return run
