"""Models and helpers shared by the fault tests (importable by spawned processes too).

``FaultFilm`` is a sakila ``film`` row cut down to what the tests change,
with a ``version`` column the stale-read checker counts on; ``read_once`` is
that checker's one read, used by the threads and by the spawned readers.
"""
from __future__ import annotations

import random
from decimal import Decimal
from typing import Callable, Sequence, Tuple

import sqlalchemy as sa
from sqlalchemy import Integer, Numeric, String, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from sqla_memcache.orm import FromCache, MemcachedORMObject

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


def read_once(Session: sessionmaker, rng: random.Random, floors: Callable[[], Sequence[int]]) -> Tuple[str, int, int]:
    """One read, checked; returns (kind, rows read, stale rows)."""
    kind = rng.choice(["session.get", "FromCache one row", "FromCache all rows", "FromCache some rows"])
    floor = list(floors())  # the commits that had returned before this read started
    with Session() as s:
        if kind == "session.get":
            film_id = rng.randrange(1, FILMS + 1)
            rows = [s.get(FaultFilm, film_id)]
        elif kind == "FromCache one row":
            film_id = rng.randrange(1, FILMS + 1)
            rows = s.scalars(select(FaultFilm).where(FaultFilm.film_id == film_id).options(FromCache())).all()
        elif kind == "FromCache all rows":
            rows = s.scalars(select(FaultFilm).order_by(FaultFilm.film_id).options(FromCache())).all()
            assert len(rows) == FILMS
        else:
            wanted = sorted(rng.sample(range(1, FILMS + 1), 4))
            rows = s.scalars(
                select(FaultFilm).where(FaultFilm.film_id.in_(wanted)).order_by(FaultFilm.film_id).options(FromCache())
            ).all()
            assert [f.film_id for f in rows] == wanted
        stale = 0
        for film in rows:
            assert film.title == "FILM %02d v%d" % (film.film_id, film.version), "torn row"
            if film.version < floor[film.film_id]:
                stale += 1
    return kind, len(rows), stale
