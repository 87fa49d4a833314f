"""Fixtures of the fault, load and hostile-input tests.

``misbehaving``      a started :class:`~misbehaving_server.MisbehavingServer` (closed afterwards).
``fault_db_url``     an empty database with the ``f_film`` schema, per backend (SQLite file,
                     MariaDB), named ``sqla_memcache_faults_<pid>`` on the server.
``film_engine``      an engine on ``f_film`` freshly seeded with ``FILMS`` rows.
``report``           ``report(line)`` prints a figure into the terminal output even without ``-s``.

Models and helpers are in ``fault_models.py`` (test modules import them from
there, never from this file, so spawned processes can import them too).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Iterator

import pytest
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from database_servers import server_database  # noqa: E402

from fault_models import FaultBase, make_engine, seed_films  # noqa: E402
from misbehaving_server import MisbehavingServer  # noqa: E402

FAULT_DB = "sqla_memcache_faults_%d" % os.getpid()


@pytest.fixture
def misbehaving() -> Iterator[MisbehavingServer]:
    server = MisbehavingServer().start()
    yield server
    server.close()


@pytest.fixture(scope="session", params=["sqlite", "mysql"])
def fault_db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An empty database with the ``f_film`` table: SQLite file, then MariaDB."""
    kind = request.param
    if kind == "sqlite":
        gen: Iterator[str] = iter(["sqlite:///" + str(tmp_path_factory.mktemp("faults") / "faults.db")])
    else:
        gen = server_database(request.getfixturevalue("mysql_url"), kind, FAULT_DB)
    url = next(gen)
    engine = sa.create_engine(url)
    FaultBase.metadata.create_all(engine)
    engine.dispose()
    yield url
    next(gen, None)


@pytest.fixture
def film_engine(fault_db_url: str) -> Iterator[sa.Engine]:
    engine = make_engine(fault_db_url)
    seed_films(engine)
    yield engine
    engine.dispose()


