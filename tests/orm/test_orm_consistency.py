"""Randomised consistency: after any sequence of writes, every cached read equals a fresh database read.

A seeded random walk mixes ORM writes, DML statements and rollbacks through a
listening session with cached reads of many statement shapes (entities,
columns, joins, eager loads, aggregates, session.get, RelationshipCache lazy
loads). After every step each cached read is compared with the same read from
a session no cache listens on.
"""
from __future__ import annotations

import random
import uuid
from decimal import Decimal

import pytest
from sqlalchemy import bindparam, delete, func, select, text, update
from sqlalchemy.orm import selectinload, sessionmaker

from support.clients import make_client
from orm_models import RATINGS, Actor, Film, Language, StoreFilm, film_actor
from sqla_memcache.orm.cache import ORMCache
from sqla_memcache.orm.options import FromCache, RelationshipCache

STEPS = 60
SOAK_STEPS = 2000


def _films(rows):
    return [
        (f.film_id, f.title, f.rating, f.rental_rate, f.language_id,
         [a.actor_id for a in f.__dict__["actors"]] if "actors" in f.__dict__ else None)
        for f in rows
    ]


READS = {
    "films": lambda s, o: _films(s.scalars(select(Film).order_by(Film.film_id).options(*o)).all()),
    "eager": lambda s, o: _films(
        s.scalars(select(Film).options(selectinload(Film.actors), *o).order_by(Film.film_id)).all()
    ),
    "by_rating": lambda s, o: s.execute(
        select(Film.film_id, Film.title).where(Film.rating == "PG").order_by(Film.film_id).options(*o)
    ).all(),
    "by_actor": lambda s, o: s.scalars(
        select(Film.film_id).join(Film.actors).where(Actor.name == "Actor 3").order_by(Film.film_id).options(*o)
    ).all(),
    "per_language": lambda s, o: s.execute(
        select(Language.name, func.count(Film.film_id)).join(Film.language)
        .group_by(Language.name).order_by(Language.name).options(*o)
    ).all(),
    "language_films": lambda s, o: [
        (lang.name, [f.film_id for f in lang.films])
        for lang in s.scalars(select(Language).options(selectinload(Language.films), *o).order_by(Language.language_id))
    ],
    "copies": lambda s, o: s.execute(
        select(StoreFilm.store_id, StoreFilm.film_id, StoreFilm.copies)
        .order_by(StoreFilm.store_id, StoreFilm.film_id).options(*o)
    ).all(),
}


def _get(s, film_id):
    film = s.get(Film, film_id)
    return None if film is None else _films([film])


def _lazy_actors(s, o):
    films = s.scalars(select(Film).order_by(Film.film_id).options(*o)).all()
    return [(f.film_id, [a.actor_id for a in f.actors]) for f in films]


def _write(s, rng):
    """One random write through the listening session ``s`` (not committed)."""
    films = s.scalars(select(Film)).all()
    film = rng.choice(films) if films else None
    kind = rng.choice(["title", "rating", "rate", "language", "add_actor", "drop_actor", "rename_actor",
                       "insert", "delete", "dml_update", "dml_delete_links", "copies", "bulk_update_mappings",
                       "bulk_insert_mappings", "text_update", "text_insert", "text_delete", "upsert",
                       "savepoint_released", "savepoint_rolled_back", "pk_change", "core_executemany"])
    if film is None:
        kind = "insert"
    if kind == "title":
        film.title = "T%d" % rng.randrange(1000)
    elif kind == "rating":
        film.rating = rng.choice(RATINGS)
    elif kind == "rate":
        film.rental_rate = Decimal(rng.randrange(100, 500)) / 100
    elif kind == "language":
        film.language = s.get(Language, rng.randrange(1, 4))
    elif kind == "add_actor":
        actor = s.get(Actor, rng.randrange(1, 7))
        if actor not in film.actors:
            film.actors.append(actor)
    elif kind == "drop_actor" and film.actors:
        film.actors.remove(rng.choice(film.actors))
    elif kind == "rename_actor":
        s.get(Actor, rng.randrange(1, 7)).name = "Actor %d" % rng.randrange(1, 7)
    elif kind == "insert":
        new_id = max([f.film_id for f in films] + [0]) + 1
        s.add(Film(film_id=new_id, title="New", rating=rng.choice(RATINGS), rental_rate=Decimal("1.50"),
                   language_id=rng.randrange(1, 4)))
    elif kind == "delete":
        s.delete(film)
    elif kind == "dml_update":
        s.execute(update(Film).where(Film.rating == rng.choice(RATINGS)).values(title="Bulk"))
    elif kind == "dml_delete_links":
        s.execute(delete(film_actor).where(film_actor.c.actor_id == rng.randrange(1, 7)))
    elif kind == "copies":
        copy = s.get(StoreFilm, (rng.randrange(1, 3), rng.randrange(1, 5)))
        if copy is not None:
            copy.copies += 1
    elif kind == "bulk_update_mappings":
        s.bulk_update_mappings(Film, [{"film_id": film.film_id, "title": "BM%d" % rng.randrange(100)}])
    elif kind == "bulk_insert_mappings":
        new_id = max(f.film_id for f in films) + 1
        s.bulk_insert_mappings(Film, [{"film_id": new_id, "title": "BI", "rating": "G", "rental_rate": 1,
                                       "language_id": rng.randrange(1, 4)}])
    elif kind == "text_update":
        s.execute(text("UPDATE t_film SET rating = :r WHERE film_id = :f"), {"r": rng.choice(RATINGS),
                                                                           "f": film.film_id})
    elif kind == "text_insert":
        new_id = max(f.film_id for f in films) + 1
        s.execute(text("INSERT INTO t_film (film_id, title, rating, rental_rate) VALUES (:f, 'TI', 'R', 2)"),
                  {"f": new_id})
    elif kind == "text_delete":
        s.execute(text("DELETE FROM t_film_actor WHERE film_id = :f"), {"f": film.film_id})
    elif kind == "upsert":
        _upsert(s, film.film_id, "UP%d" % rng.randrange(100))
    elif kind in ("savepoint_released", "savepoint_rolled_back"):
        nested = s.begin_nested()
        film.title = "SP%d" % rng.randrange(100)
        s.flush()
        nested.commit() if kind == "savepoint_released" else nested.rollback()
    elif kind == "pk_change":
        new_id = max(f.film_id for f in films) + 1
        s.execute(delete(StoreFilm).where(StoreFilm.film_id == film.film_id))
        s.execute(delete(film_actor).where(film_actor.c.film_id == film.film_id))
        film.film_id = new_id
    elif kind == "core_executemany":
        t = Film.__table__
        s.execute(update(t).where(t.c.film_id == bindparam("fid")).values(title=bindparam("new")),
                  [{"fid": f.film_id, "new": "EM"} for f in films[:3]])
    return kind


def _upsert(s, film_id, title):
    name = s.get_bind().dialect.name
    values = {"film_id": film_id, "title": title, "rating": "G", "rental_rate": 1}
    if name == "mysql":
        from sqlalchemy.dialects.mysql import insert as dialect_insert

        s.execute(dialect_insert(Film).values(**values).on_duplicate_key_update(title=title))
        return
    from sqlalchemy.dialects.postgresql import insert as pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    stmt = (pg_insert if name == "postgresql" else sqlite_insert)(Film).values(**values)
    s.execute(stmt.on_conflict_do_update(index_elements=["film_id"], set_={"title": title}))


def _outside_write(engine, rng):
    """A write outside any session: Core on the engine, committed or in AUTOCOMMIT mode."""
    t = Film.__table__
    film_id = rng.randrange(1, 15)
    if rng.random() < 0.5:
        with engine.begin() as conn:
            conn.execute(update(t).where(t.c.film_id == film_id).values(title="Core%d" % rng.randrange(100)))
        return "core_engine"
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("UPDATE t_film SET rental_rate = rental_rate + 1 WHERE film_id = :f"), {"f": film_id})
    return "autocommit"


@pytest.mark.parametrize("seed, topology", [(1, "one server"), (2, "three servers")])
def test_random_walk_never_serves_stale_data(request, engine, seed, topology):
    walk(request, engine, seed, topology, STEPS)


@pytest.mark.soak
@pytest.mark.parametrize("seed", [11])
def test_random_walk_soak(request, engine, seed, report):
    kinds = walk(request, engine, seed, "one server", SOAK_STEPS)
    report("random walk on %s: %d steps, 0 stale reads; writes by path: %s" % (
        engine.dialect.name, SOAK_STEPS, ", ".join("%s %d" % kv for kv in sorted(kinds.items()))))


def walk(request, engine, seed, topology, steps):
    rng = random.Random(seed)
    fixture = "memcached" if topology == "one server" else "memcached_cluster"
    servers = request.getfixturevalue(fixture).servers
    cache = ORMCache(make_client(servers), namespace="rw%d%s" % (seed, uuid.uuid4().hex[:8]))
    Session = sessionmaker(engine)
    cache.listen_on_session(Session)
    oracle = sessionmaker(engine)

    def check(step):
        for name, read in READS.items():
            with Session() as s:
                cached = read(s, [FromCache()])
            with oracle() as s:
                assert cached == read(s, []), "step %d: stale %s" % (step, name)
        film_id = rng.randrange(1, 15)
        with Session() as s:
            cached = _get(s, film_id)
        with oracle() as s:
            assert cached == _get(s, film_id), "step %d: stale get(%d)" % (step, film_id)
        with Session() as s:
            cached = _lazy_actors(s, [RelationshipCache(Film.actors)])
        with oracle() as s:
            assert cached == _lazy_actors(s, []), "step %d: stale lazy load" % step

    kinds: dict = {}
    check(-1)
    for step in range(steps):
        if rng.random() < 0.15:
            kind = _outside_write(engine, rng)
            kinds[kind] = kinds.get(kind, 0) + 1
        else:
            with Session() as s:
                for _ in range(rng.randrange(1, 3)):
                    kind = _write(s, rng)
                    kinds[kind] = kinds.get(kind, 0) + 1
                if rng.random() < 0.2:
                    s.flush()
                    s.rollback()
                else:
                    s.commit()
        check(step)
    assert cache.stats.hits > steps  # the cache was really used
    return kinds
