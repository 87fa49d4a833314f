"""FromCache: cached results equal uncached ones, and a hit runs no SQL."""
from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import joinedload, selectinload

from orm_models import Actor, Film, Language, StoreFilm
from sqla_memcache.orm.options import FromCache


def _snapshot(films):
    """Comparable view of films including loaded relationships (no lazy loads triggered)."""
    out = []
    for f in films:
        d = f.__dict__
        out.append(
            (
                f.film_id, f.title, f.rating, f.rental_rate, f.language_id,
                [a.name for a in d["actors"]] if "actors" in d else None,
                d["language"].name if d.get("language") is not None else None,
            )
        )
    return out


QUERIES = {
    "plain": lambda: select(Film).order_by(Film.film_id),
    "top5": lambda: select(Film).order_by(Film.rental_rate.desc(), Film.film_id).limit(5),
    "selectin": lambda: select(Film).options(selectinload(Film.actors)).order_by(Film.title.desc()),
    "joined": lambda: select(Film).options(joinedload(Film.language), selectinload(Film.actors)).order_by(Film.film_id),
    "join_filter": lambda: select(Film).join(Film.actors).where(Actor.name == "Actor 2").order_by(Film.film_id),
}


@pytest.mark.parametrize("name", sorted(QUERIES))
def test_cached_equals_uncached_and_hit_runs_no_sql(Session, sql, cache, name):
    with Session() as s:
        expected = _snapshot(s.scalars(QUERIES[name]()).all())
    with Session() as s:
        first = _snapshot(s.scalars(QUERIES[name]().options(FromCache())).all())
    assert cache.stats.misses == 1 and cache.stats.stores == 1
    sql.reset()
    with Session() as s:
        second = s.scalars(QUERIES[name]().options(FromCache())).all()
        assert sql.count == 0
        assert all(obj in s for obj in second)  # merged into the calling session
        hit = _snapshot(second)
    assert cache.stats.hits == 1
    assert expected == first == hit
    assert len(expected) > 0


def test_column_and_tuple_queries(Session, sql, cache):
    stmt = select(Film.film_id, Film.title, Language.name).join(Film.language).order_by(Film.film_id)
    with Session() as s:
        expected = s.execute(stmt).all()
        assert s.execute(stmt.options(FromCache())).all() == expected
        sql.reset()
        rows = s.execute(stmt.options(FromCache())).all()
        assert sql.count == 0
    assert rows == expected and rows[0]._fields == ("film_id", "title", "name")
    with Session() as s:
        count = s.scalar(select(func.count()).select_from(Film).options(FromCache()))
        sql.reset()
        assert s.scalar(select(func.count()).select_from(Film).options(FromCache())) == count == 12
        assert sql.count == 0


def test_first_one_scalars_and_legacy_query(Session, sql, cache):
    with Session() as s:
        stmt = select(Film).where(Film.film_id == 3).options(FromCache())
        assert s.scalars(stmt).one().title == "Film 03"
        sql.reset()
        assert s.execute(stmt).scalar_one().title == "Film 03"
        assert s.scalars(select(Film).order_by(Film.film_id).options(FromCache())).first().film_id == 1
        first_sql = sql.count
        assert s.scalars(select(Film).order_by(Film.film_id).options(FromCache())).first().film_id == 1
        assert sql.count == first_sql
    with Session() as s:
        legacy = s.query(Film).options(FromCache()).filter_by(rating="PG").order_by(Film.film_id).all()
        sql.reset()
        again = s.query(Film).options(FromCache()).filter_by(rating="PG").order_by(Film.film_id).all()
        assert sql.count == 0
        assert [f.film_id for f in again] == [f.film_id for f in legacy] and legacy


def test_different_parameters_never_share_an_entry(Session, sql, cache):
    by_rating = select(Film.film_id).where(Film.rating == bindparam("r")).order_by(Film.film_id).options(FromCache())
    with Session() as s:
        pg = s.scalars(by_rating, {"r": "PG"}).all()
        r = s.scalars(by_rating, {"r": "R"}).all()
        assert set(pg).isdisjoint(r) and pg and r
        assert s.scalars(by_rating, {"r": "PG"}).all() == pg
        assert s.scalars(select(Film.title).where(Film.film_id == 1).options(FromCache())).one() == "Film 01"
        assert s.scalars(select(Film.title).where(Film.film_id == 2).options(FromCache())).one() == "Film 02"
        in_12 = select(Film.title).where(Film.film_id.in_([1, 2])).options(FromCache())
        assert sorted(s.scalars(in_12).all()) == ["Film 01", "Film 02"]
        assert s.scalars(select(Film.title).where(Film.film_id.in_([3])).options(FromCache())).all() == ["Film 03"]
    assert cache.stats.hits == 1


def test_user_key_is_namespaced_and_shared_on_purpose(Session, sql, cache, engine):
    with Session() as s:
        top = s.scalars(select(Film).order_by(Film.film_id).limit(2).options(FromCache(key="top films"))).all()
        # same key, different statement: the caller asked for one shared entry
        again = s.scalars(select(Film).options(FromCache(key="top films"))).all()
    assert [f.film_id for f in again] == [f.film_id for f in top] == [1, 2]
    key = cache.entry_key(None, engine, key="top films")
    raw = cache.client.get(key)
    assert raw is not None and key.startswith(cache.namespace + ":q:#")


def test_composite_and_unicode_values(Session, sql, cache):
    title = "Fïlm " + "長" * 190
    with Session() as s:
        s.add(Film(film_id=99, title=title, rating="G", rental_rate=Decimal("1.00")))
        s.commit()
    stmt = select(Film.film_id).where(Film.title == title).options(FromCache())
    with Session() as s:
        assert s.scalars(stmt).all() == [99]
        sql.reset()
        assert s.scalars(stmt).all() == [99]
        assert sql.count == 0
        rows = s.scalars(select(StoreFilm).where(StoreFilm.store_id == 2).order_by(StoreFilm.film_id)
                         .options(FromCache())).all()
        assert [(r.store_id, r.film_id, r.copies) for r in rows] == [(2, f, 2 + f) for f in range(1, 5)]


def test_textual_statements_need_their_tables_named(Session, cache, sql):
    from sqlalchemy import text

    stmt = select(Film).from_statement(text("SELECT * FROM t_film WHERE film_id = 5"))
    with Session() as s:
        assert s.scalars(stmt.options(FromCache())).one().title == "Film 05"
    assert cache.stats.stores == 0  # tables unknown: never cached
    with Session() as s:
        assert s.scalars(stmt.options(FromCache(tables=["t_film"]))).one().title == "Film 05"
        sql.reset()
        assert s.scalars(stmt.options(FromCache(tables=["t_film"]))).one().title == "Film 05"
        assert sql.count == 0
        s.get(Film, 5).title = "Five"
        s.commit()
    with Session() as s:
        assert s.scalars(stmt.options(FromCache(tables=["t_film"]))).one().title == "Five"


def test_objects_from_a_hit_lazy_load_normally(Session, cache, sql):
    stmt = select(Film).where(Film.film_id == 4).options(FromCache())
    with Session() as s:
        s.scalars(stmt).one()
    with Session() as s:
        sql.reset()
        film = s.scalars(stmt).one()
        assert sql.count == 0
        assert film.language.name == "Français" and [a.name for a in film.actors] == ["Actor 5", "Actor 6"]
        assert sql.count == 2  # not cached: plain lazy loads
        film.title = "Edited after a hit"
        s.commit()
    with Session() as s:
        assert s.scalars(stmt).one().title == "Edited after a hit"


def test_listen_targets_and_explicit_cache(engine, memcached, cache, sql):
    import uuid

    from sqlalchemy.orm import Session as PlainSession
    from sqlalchemy.orm import scoped_session, sessionmaker

    from support.clients import make_client
    from sqla_memcache.orm.cache import ORMCache

    class AppSession(PlainSession):
        pass

    stmt = select(Film.title).where(Film.film_id == 2)
    scoped = scoped_session(sessionmaker(engine))
    cache.listen_on_session(scoped)
    scoped.scalars(stmt.options(FromCache())).one()
    scoped.remove()
    cache.listen_on_session(AppSession)
    with AppSession(engine) as s:
        sql.reset()
        assert s.scalars(stmt.options(FromCache())).one() == "Film 02"
        assert sql.count == 0  # stored through the scoped_session, served through the subclass
    other = ORMCache(make_client(memcached.servers), namespace="x" + uuid.uuid4().hex[:8])
    with AppSession(engine) as s:
        s.scalars(stmt.options(FromCache(cache=other))).one()
    assert other.stats.stores == 1 and other.stats.misses == 1


def test_locking_reads_and_populate_existing_reach_the_database(Session, cache, sql):
    stmt = select(Film.title).where(Film.film_id == 6).options(FromCache())
    with Session() as s:
        s.scalars(stmt).one()
        sql.reset()
        s.scalars(stmt).one()
        assert sql.count == 0
        s.scalars(stmt.with_for_update()).one()
        assert sql.count == 1
        s.scalars(stmt.execution_options(populate_existing=True)).one()
        assert sql.count == 2
    assert cache.stats.stores == 2  # populate_existing re-stored what it read


def test_joined_eager_collection_with_unique(Session, cache, sql):
    stmt = select(Film).options(joinedload(Film.actors)).order_by(Film.film_id)

    def load(s, options=()):
        return [(f.film_id, [a.actor_id for a in f.actors]) for f in s.scalars(stmt.options(*options)).unique().all()]

    with Session() as s:
        expected = load(s)
    with Session() as s:
        assert load(s, [FromCache()]) == expected
    sql.reset()
    with Session() as s:
        assert load(s, [FromCache()]) == expected
    assert sql.count == 0 and len(expected) == 12


def test_entry_lifetimes(Session, cache, memcached, engine):
    from support.raw import raw_command


    def ttl(key):
        reply = raw_command(memcached.address, b"mg " + key.encode() + b" t\r\n")
        assert reply.startswith(b"HD"), reply
        return int(reply.split()[1][1:])

    stmt = select(Film.title).where(Film.film_id == 1)
    cache.expire = 300
    with Session() as s:
        s.scalars(stmt.options(FromCache(expire=60))).one()
        s.scalars(stmt.where(Film.rating != "").options(FromCache())).one()
        s.scalars(stmt.options(FromCache(key="forever", expire=0))).one()
    def key(statement):  # the option is not part of the key, but having options is
        return cache.entry_key(statement.options(FromCache()), engine)

    assert 0 < ttl(key(stmt)) <= 60
    assert 60 < ttl(key(stmt.where(Film.rating != ""))) <= 300
    assert ttl(cache.entry_key(None, engine, key="forever")) == -1
    film = Film.get_cached_instance("(2)")
    film.set_cached_instance(time=30)
    assert 0 < ttl(film.get_cache_key()) <= 30



def test_core_table_selects_through_a_session_hit(Session, sql, cache, engine):
    """A Core ``Table`` with named columns: its result keys are SQLAlchemy ``quoted_name`` strings,
    which the entry decoder must accept (it refused them: such a read stored entries, never hit)."""
    import sqlalchemy as sa

    metadata = sa.MetaData()
    table = sa.Table("t_core_label", metadata, sa.Column("id", sa.Integer, primary_key=True),
                     sa.Column("label", sa.String(20)))
    metadata.create_all(engine)
    try:
        with engine.begin() as conn:
            conn.execute(table.insert(), [{"id": i, "label": "label %d" % i} for i in range(1, 4)])
        for stmt in (select(table).order_by(table.c.id), select(table.c.label).where(table.c.id == 2)):
            with Session() as s:
                first = s.execute(stmt.options(FromCache())).all()
            sql.reset()
            with Session() as s:
                again = s.execute(stmt.options(FromCache())).all()
            assert again == first and sql.count == 0
            assert [r._fields for r in again] == [r._fields for r in first]
        assert cache.stats.hits == 2
    finally:
        metadata.drop_all(engine)
