"""Fixtures of the fault, load and hostile-input tests.

``misbehaving``      a started :class:`~misbehaving_server.MisbehavingServer` (closed afterwards).
``fault_db_url``     an empty database with the ``f_film`` schema, per backend (SQLite file,
                     MariaDB), named ``sqla_memcache_faults_<pid>`` on the server.
``film_engine``      an engine on ``f_film`` freshly seeded with ``FILMS`` rows.
``report``           ``report(line)`` prints a figure into the terminal output even without ``-s``.

Models are in ``fault_models.py`` (test modules import them from there, never
from this file, so spawned processes can import them too); helpers shared with
other test directories are in ``tests/support/``.
"""
from __future__ import annotations

import os
from typing import Iterator

import pytest
import sqlalchemy as sa

from support.databases import fresh_database

from .fault_models import FaultBase, make_engine, seed_films
from .misbehaving_server import MisbehavingServer


FAULT_DB = "sqla_memcache_faults_%d" % os.getpid()


@pytest.fixture
def misbehaving() -> Iterator[MisbehavingServer]:
    server = MisbehavingServer().start()
    yield server
    server.close()


@pytest.fixture(scope="session", params=["sqlite", "mysql"])
def fault_db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An empty database with the ``f_film`` table: SQLite file, then MariaDB."""
    yield from fresh_database(request, tmp_path_factory, FaultBase.metadata, FAULT_DB)


@pytest.fixture
def film_engine(fault_db_url: str) -> Iterator[sa.Engine]:
    engine = make_engine(fault_db_url)
    seed_films(engine)
    yield engine
    engine.dispose()


