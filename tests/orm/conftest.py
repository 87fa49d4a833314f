"""ORM test fixtures: one database per backend (SQLite, MariaDB, PostgreSQL) and a listening cache.

Every ORM test runs on the three backends. MariaDB/PostgreSQL skip with the
reason when unreachable (fail instead under CI=true, see tests/database_servers.py).
The MariaDB/PostgreSQL databases are created per test session with the pid in
their name and dropped afterwards.
"""
from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path
from typing import Iterator, List

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import sessionmaker

sys.path.insert(0, str(Path(__file__).resolve().parent))

from orm_models import Base, seed  # noqa: E402

from sqla_memcache.client import Client  # noqa: E402
from sqla_memcache.orm.cache import ORMCache  # noqa: E402

DB_NAME = "sqla_memcache_t_%d" % os.getpid()


def _server_database(server_url: str, kind: str) -> Iterator[str]:
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    quote = "`%s`" if kind == "mysql" else '"%s"'
    with admin.connect() as conn:
        conn.execute(sa.text("DROP DATABASE IF EXISTS " + quote % DB_NAME))
        extra = " CHARACTER SET utf8mb4" if kind == "mysql" else ""
        conn.execute(sa.text("CREATE DATABASE " + quote % DB_NAME + extra))
    try:
        yield server_url.rstrip("/") + "/" + DB_NAME + ("?charset=utf8mb4" if kind == "mysql" else "")
    finally:
        with admin.connect() as conn:
            if kind == "postgresql":
                conn.execute(
                    sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d"),
                    {"d": DB_NAME},
                )
            conn.execute(sa.text("DROP DATABASE IF EXISTS " + quote % DB_NAME))
        admin.dispose()


@pytest.fixture(scope="session", params=["sqlite", "mysql", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of an empty test database with the schema created, per backend."""
    kind = request.param
    if kind == "sqlite":
        url = "sqlite:///" + str(tmp_path_factory.mktemp("orm") / "test.db")
        gen = iter([url])
    else:
        server = request.getfixturevalue("mysql_url" if kind == "mysql" else "pg_url")
        gen = _server_database(server, kind)
    url = next(gen)
    engine = sa.create_engine(url)
    Base.metadata.create_all(engine)
    engine.dispose()
    yield url
    next(gen, None)


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    """An engine on freshly seeded tables."""
    sqlite = db_url.startswith("sqlite")
    engine = sa.create_engine(db_url, poolclass=sa.pool.NullPool if sqlite else None)
    if sqlite:
        event.listen(engine, "connect", lambda dbapi_conn, record: dbapi_conn.execute("PRAGMA foreign_keys=ON"))
    with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())
    with sessionmaker(engine)() as session:
        seed(session)
    yield engine
    engine.dispose()


class StatementCounter:
    """Counts SQL statements sent by an engine (``before_cursor_execute``)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.statements: List[str] = []
        event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, conn, cursor, statement, parameters, context, executemany) -> None:
        self.statements.append(statement)

    @property
    def count(self) -> int:
        return len(self.statements)

    def reset(self) -> None:
        self.statements.clear()


@pytest.fixture
def sql(engine: sa.Engine) -> StatementCounter:
    return StatementCounter(engine)


def make_client(servers: List[str], **kwargs) -> Client:
    kwargs.setdefault("socket_timeout", 1)
    return Client(servers, **kwargs)


@pytest.fixture
def cache(memcached) -> ORMCache:
    """An ORMCache on a flushed memcached, with a namespace unique to the test."""
    return ORMCache(make_client(memcached.servers), namespace="t" + uuid.uuid4().hex[:12])


@pytest.fixture
def Session(engine: sa.Engine, cache: ORMCache) -> sessionmaker:
    """A sessionmaker listening on ``cache``."""
    factory = sessionmaker(engine)
    cache.listen_on_session(factory)
    return factory
