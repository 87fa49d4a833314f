"""Fixtures of the fault, load and hostile-input tests.

``misbehaving``      a started :class:`~misbehaving_server.MisbehavingServer` (closed afterwards).
``fault_db_url``     an empty database with the ``f_film`` schema, per backend (SQLite file,
                     MariaDB, PostgreSQL), named ``sqla_memcache_faults_<pid>`` on servers.
``film_engine``      an engine on ``f_film`` freshly seeded with :data:`FILMS` rows.
``report``           ``report(line)`` prints a figure into the terminal output even without ``-s``.

The models live here too (``FaultFilm``, a sakila-like film with a ``version``
column the stale-read checker counts on).
"""
from __future__ import annotations

import os
import sys
from decimal import Decimal
from pathlib import Path
from typing import Callable, Iterator, List

import pytest
import sqlalchemy as sa
from sqlalchemy import Integer, Numeric, String, event
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

sys.path.insert(0, str(Path(__file__).resolve().parent))

from misbehaving_server import MisbehavingServer  # noqa: E402

from sqla_memcache.orm import MemcachedORMObject  # noqa: E402

FAULT_DB = "sqla_memcache_faults_%d" % os.getpid()
FILMS = 20


class FaultBase(DeclarativeBase):
    pass


class FaultFilm(MemcachedORMObject, FaultBase):
    """A sakila ``film`` row cut down to what the tests change; ``version`` counts commits."""

    __tablename__ = "f_film"
    film_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    title: Mapped[str] = mapped_column(String(128))
    rental_rate: Mapped[Decimal] = mapped_column(Numeric(4, 2))
    version: Mapped[int] = mapped_column(Integer)


def seed_films(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(FaultFilm.__table__.delete())
    with sessionmaker(engine)() as session:
        session.add_all(
            FaultFilm(film_id=i, title="FILM %02d v0" % i, rental_rate=Decimal("0.99"), version=0)
            for i in range(1, FILMS + 1)
        )
        session.commit()


@pytest.fixture
def misbehaving() -> Iterator[MisbehavingServer]:
    server = MisbehavingServer().start()
    yield server
    server.close()


def _server_database(server_url: str, kind: str) -> Iterator[str]:
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    quote = "`%s`" if kind == "mysql" else '"%s"'
    with admin.connect() as conn:
        conn.execute(sa.text("DROP DATABASE IF EXISTS " + quote % FAULT_DB))
        conn.execute(sa.text("CREATE DATABASE " + quote % FAULT_DB + (" CHARACTER SET utf8mb4" if kind == "mysql" else "")))
    try:
        yield server_url.rstrip("/") + "/" + FAULT_DB + ("?charset=utf8mb4" if kind == "mysql" else "")
    finally:
        with admin.connect() as conn:
            if kind == "postgresql":
                conn.execute(
                    sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d"),
                    {"d": FAULT_DB},
                )
            conn.execute(sa.text("DROP DATABASE IF EXISTS " + quote % FAULT_DB))
        admin.dispose()


@pytest.fixture(scope="session", params=["sqlite", "mysql"])
def fault_db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An empty database with the ``f_film`` table: SQLite file, then MariaDB."""
    kind = request.param
    if kind == "sqlite":
        gen: Iterator[str] = iter(["sqlite:///" + str(tmp_path_factory.mktemp("faults") / "faults.db")])
    else:
        gen = _server_database(request.getfixturevalue("mysql_url"), kind)
    url = next(gen)
    engine = sa.create_engine(url)
    FaultBase.metadata.create_all(engine)
    engine.dispose()
    yield url
    next(gen, None)


def make_engine(url: str, **kwargs) -> sa.Engine:
    if url.startswith("sqlite"):
        # A file database shared by threads: wait for the writer's lock instead of failing.
        kwargs.setdefault("connect_args", {"timeout": 30, "check_same_thread": False})
        kwargs.setdefault("poolclass", sa.pool.NullPool)
    else:
        kwargs.setdefault("pool_size", 20)
        kwargs.setdefault("max_overflow", 20)
    engine = sa.create_engine(url, **kwargs)
    if url.startswith("sqlite"):
        # WAL: readers never wait for the writer (nor it for them).
        @event.listens_for(engine, "connect")
        def _wal(dbapi_conn, record):
            dbapi_conn.execute("PRAGMA journal_mode=WAL")
    return engine


@pytest.fixture
def film_engine(fault_db_url: str) -> Iterator[sa.Engine]:
    engine = make_engine(fault_db_url)
    seed_films(engine)
    yield engine
    engine.dispose()


class StatementCounter:
    """Counts SELECTs an engine sends to the database (``before_cursor_execute``), thread-safe enough."""

    def __init__(self, engine: sa.Engine) -> None:
        self.statements: List[str] = []
        event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, conn, cursor, statement, parameters, context, executemany) -> None:
        self.statements.append(statement)  # list.append is atomic under the GIL

    def selects(self, table: str = "f_film") -> int:
        return sum(1 for s in list(self.statements) if s.lstrip().upper().startswith("SELECT") and table in s)


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
