"""Models and helpers shared by the fault tests (importable by spawned processes too).

``FaultFilm`` is a sakila ``film`` row cut down to what the tests change,
with a ``version`` column the stale-read checker counts on.
"""
from __future__ import annotations

from decimal import Decimal
from typing import List

import sqlalchemy as sa
from sqlalchemy import Integer, Numeric, String, event
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from sqla_memcache.orm import MemcachedORMObject

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


def make_engine(url: str, **kwargs) -> sa.Engine:
    """An engine for many threads: a pool of 20 (+20), and for SQLite a 30 s lock wait and WAL."""
    if url.startswith("sqlite"):
        kwargs.setdefault("connect_args", {"timeout": 30, "check_same_thread": False})
    kwargs.setdefault("pool_size", 20)
    kwargs.setdefault("max_overflow", 20)
    engine = sa.create_engine(url, **kwargs)
    if url.startswith("sqlite"):
        # WAL (a property of the file, set once): readers never wait for the writer, nor it for them.
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA journal_mode=WAL")
    return engine


class StatementCounter:
    """Counts SELECTs of ``f_film`` an engine sends to the database (``before_cursor_execute``).

    ``keep=False`` counts without keeping the statements: an expanded ``IN (...)``
    statement is a new string each time, and keeping them would read as heap growth.
    """

    def __init__(self, engine: sa.Engine, keep: bool = True) -> None:
        self.statements: List[str] = []
        self.keep = keep
        self._selects = 0
        event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, conn, cursor, statement, parameters, context, executemany) -> None:
        if self.keep:
            self.statements.append(statement)  # list.append is atomic under the GIL
        elif statement.lstrip().upper().startswith("SELECT") and "f_film" in statement:
            self._selects += 1  # approximate under threads; only reported

    def selects(self, table: str = "f_film") -> int:
        if not self.keep:
            return self._selects
        return sum(1 for s in list(self.statements) if s.lstrip().upper().startswith("SELECT") and table in s)
