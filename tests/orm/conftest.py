"""ORM test fixtures: one database per backend (SQLite, MariaDB, PostgreSQL) and a listening cache.

Every ORM test runs on the three backends. MariaDB/PostgreSQL skip with the
reason when unreachable (fail instead under CI=true, see tests/support/databases.py).
The MariaDB/PostgreSQL databases are created per test session with the pid in
their name and dropped afterwards.
"""
from __future__ import annotations

import os
import uuid
from typing import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import sessionmaker

from orm_models import Base, seed
from sqla_memcache.orm.cache import ORMCache
from support.clients import make_client
from support.databases import fresh_database
from support.sql import StatementCounter

DB_NAME = "sqla_memcache_t_%d" % os.getpid()


@pytest.fixture(scope="session", params=["sqlite", "mysql", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of an empty test database with the schema created, per backend."""
    yield from fresh_database(request, tmp_path_factory, Base.metadata, DB_NAME)


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


@pytest.fixture
def sql(engine: sa.Engine) -> StatementCounter:
    return StatementCounter(engine)


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
