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
from database_servers import server_database  # noqa: E402

from orm_models import Base, seed  # noqa: E402

from sqla_memcache.client import Client  # noqa: E402
from sqla_memcache.orm.cache import ORMCache  # noqa: E402

DB_NAME = "sqla_memcache_t_%d" % os.getpid()


@pytest.fixture(scope="session", params=["sqlite", "mysql", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of an empty test database with the schema created, per backend."""
    kind = request.param
    if kind == "sqlite":
        url = "sqlite:///" + str(tmp_path_factory.mktemp("orm") / "test.db")
        gen = iter([url])
    else:
        server = request.getfixturevalue("mysql_url" if kind == "mysql" else "pg_url")
        gen = server_database(server, kind, DB_NAME)
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


@pytest.fixture(autouse=True)
def _no_entry_refused(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every entry the cache itself stored decodes through the allow-list (``safepickle.py``):
    a refusal outside the planted-payload tests means a global is missing from it."""
    from sqla_memcache.orm import safepickle

    before = safepickle.refused_count()
    yield
    if "planted" not in request.node.name:
        assert safepickle.refused_count() == before, "an entry stored by the cache was refused by the allow-list"
