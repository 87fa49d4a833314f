"""Where the MariaDB/MySQL and PostgreSQL test servers are, and whether they answer.

``mysql_server_url()`` and ``pg_server_url()`` return ``(url, "")`` for a reachable server
or ``(None, reason)``; ``require_url()`` turns that into the URL, a visible skip, or --
when ``CI`` is true -- a test failure, so CI never passes by skipping the database tests.
The ORM test helpers create their own per-session databases on top of these URLs.
"""

from __future__ import annotations

import functools
import os
from typing import Optional, Tuple

import pytest

MYSQL_ENV = "SQLA_MEMCACHE_TEST_MYSQL_URL"
PG_ENV = "SQLA_MEMCACHE_TEST_PG_URL"
MYSQL_DEFAULT = "mysql+pymysql://root@127.0.0.1:3306/"
PG_DEFAULT = "postgresql+psycopg2://postgres@127.0.0.1:5432/"


def _probe(url: str) -> Optional[str]:
    """Return None when ``SELECT 1`` works on ``url``, else a one-line reason."""
    try:
        import sqlalchemy as sa

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
