"""Test databases: where the MariaDB/MySQL and PostgreSQL servers are, and a fresh database on each.

``mysql_server_url()`` and ``pg_server_url()`` return ``(url, "")`` for a reachable server
or ``(None, reason)``; ``require_url()`` turns that into the URL, a visible skip, or --
when ``CI`` is true -- a test failure, so CI never passes by skipping the database tests.
``fresh_database()`` is the body of a session fixture parametrised over backends: an
empty database (a SQLite file, or one created on the server) with a schema, dropped after;
``async_url()`` names the same database through its asyncio driver.
"""

from __future__ import annotations

import functools
import os
from typing import Iterator, Optional, Tuple

import sqlalchemy as sa

import pytest

MYSQL_ENV = "SQLA_MEMCACHE_TEST_MYSQL_URL"
PG_ENV = "SQLA_MEMCACHE_TEST_PG_URL"
MYSQL_DEFAULT = "mysql+pymysql://root@127.0.0.1:3306/"
PG_DEFAULT = "postgresql+psycopg2://postgres@127.0.0.1:5432/"


def _probe(url: str) -> Optional[str]:
    """Return None when ``SELECT 1`` works on ``url``, else a one-line reason."""
    try:
        connect_args = {"connect_timeout": 3}
        engine = sa.create_engine(url, connect_args=connect_args, poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        finally:
            engine.dispose()
    except Exception as exc:  # driver missing, refused, auth... all mean "cannot use it"
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return f"{type(exc).__name__}: {first_line}"
    return None


@functools.lru_cache(maxsize=None)
def _server_url(env: str, default: str) -> Tuple[Optional[str], str]:
    url = os.environ.get(env) or default
    reason = _probe(url)
    if reason is None:
        return url, ""
    return None, f"database server at {url} not reachable (set {env}): {reason}"


def mysql_server_url() -> Tuple[Optional[str], str]:
    """``(url, "")`` for the MariaDB/MySQL server in ``SQLA_MEMCACHE_TEST_MYSQL_URL``, else ``(None, reason)``."""
    return _server_url(MYSQL_ENV, MYSQL_DEFAULT)


def pg_server_url() -> Tuple[Optional[str], str]:
    """``(url, "")`` for the PostgreSQL server in ``SQLA_MEMCACHE_TEST_PG_URL``, else ``(None, reason)``."""
    return _server_url(PG_ENV, PG_DEFAULT)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_url(found: Tuple[Optional[str], str]) -> str:
    """Return the URL, or skip the test with the reason -- fail instead when ``CI`` is true."""
    url, reason = found
    if url is not None:
        return url
    if in_ci():
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


def server_database(server_url: str, kind: str, name: str) -> Iterator[str]:
    """Generator: create database *name* on a MySQL/MariaDB (``kind="mysql"``) or
    PostgreSQL server, yield its URL, then drop it (ending other sessions first)."""
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    quote = "`%s`" if kind == "mysql" else '"%s"'
    with admin.connect() as conn:
        conn.execute(sa.text("DROP DATABASE IF EXISTS " + quote % name))
        extra = " CHARACTER SET utf8mb4" if kind == "mysql" else ""
        conn.execute(sa.text("CREATE DATABASE " + quote % name + extra))
    try:
        yield server_url.rstrip("/") + "/" + name + ("?charset=utf8mb4" if kind == "mysql" else "")
    finally:
        with admin.connect() as conn:
            if kind == "postgresql":
                conn.execute(
                    sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d"),
                    {"d": name},
                )
            conn.execute(sa.text("DROP DATABASE IF EXISTS " + quote % name))
        admin.dispose()


def fresh_database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                   metadata: sa.MetaData, name: str) -> Iterator[str]:
    """Generator for a session fixture parametrised over ``"sqlite"``, ``"mysql"``, ``"postgresql"``:
    yields the URL of an empty database named *name* with *metadata*'s tables, then drops it.

    The server URL comes from the ``mysql_url``/``pg_url`` fixtures (skipping, or failing
    under ``CI=true``, when the server is unreachable).
    """
    kind = request.param
    if kind == "sqlite":
        gen: Iterator[str] = iter(["sqlite:///" + str(tmp_path_factory.mktemp(name) / "test.db")])
    else:
        gen = server_database(request.getfixturevalue("mysql_url" if kind == "mysql" else "pg_url"), kind, name)
    url = next(gen)
    engine = sa.create_engine(url)
    metadata.create_all(engine)
    engine.dispose()
    yield url
    next(gen, None)


_ASYNC_DRIVERS = {
    "sqlite://": ("sqlite+aiosqlite://", "aiosqlite"),
    "sqlite+pysqlite://": ("sqlite+aiosqlite://", "aiosqlite"),
    "mysql+pymysql://": ("mysql+aiomysql://", "aiomysql"),
    "postgresql+psycopg2://": ("postgresql+asyncpg://", "asyncpg"),
}


def async_url(url: str) -> str:
    """The same database through its asyncio driver; skips the test when that driver is not installed."""
    for sync, (async_prefix, module) in _ASYNC_DRIVERS.items():
        if url.startswith(sync):
            pytest.importorskip(module, reason="async driver %s is not installed (pip install -e '.[test]')" % module)
            return async_prefix + url[len(sync):]
    pytest.skip("no async driver known for %s" % url.split("://")[0])
