"""Invalidation after COMMIT, nothing on rollback, eviction-safe, REPEATABLE READ-safe."""
from __future__ import annotations

from decimal import Decimal

import pytest
import sqlalchemy as sa
from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import selectinload

from orm_models import Actor, Film, Language
from sqla_memcache.orm.options import FromCache


def titles(Session, stmt=None):
    stmt = stmt if stmt is not None else select(Film.film_id, Film.title).order_by(Film.film_id)
    with Session() as s:
        return s.execute(stmt.options(FromCache())).all()


def warm(Session, cache, stmt=None):
    """Cache a query and prove the entry is a hit."""
    first = titles(Session, stmt)
    hits = cache.stats.hits
    assert titles(Session, stmt) == first
    assert cache.stats.hits == hits + 1
    return first


def test_orm_update_insert_delete_invalidate_after_commit(Session, cache):
    warm(Session, cache)
    with Session() as s:
        s.get(Film, 1).title = "Changed"
        s.commit()
    assert titles(Session)[0] == (1, "Changed")
    with Session() as s:
        s.add(Film(film_id=50, title="New", rating="G", rental_rate=Decimal("1.00")))
        s.commit()
    assert titles(Session)[-1] == (50, "New")
    with Session() as s:
        s.delete(s.get(Film, 50))
        s.commit()
    assert titles(Session)[-1] == (12, "Film 12")


def test_dml_update_and_delete_statements_invalidate(Session, cache):
    warm(Session, cache)
    with Session() as s:
        s.execute(update(Film).where(Film.film_id <= 2).values(title="Bulk"))
        s.commit()
    assert titles(Session)[:3] == [(1, "Bulk"), (2, "Bulk"), (3, "Film 03")]
    with Session() as s:
        s.execute(sa.delete(Film.__table__.c.film_id.table).where(Film.__table__.c.film_id == 12))
        s.execute(delete(Film).where(Film.film_id == 11))
        s.commit()
    assert titles(Session)[-1] == (10, "Film 10")
    with Session() as s:
        s.execute(insert(Film), [{"film_id": 60, "title": "Ins", "rating": "G", "rental_rate": Decimal("1")}])
        s.commit()
    assert titles(Session)[-1] == (60, "Ins")


def test_many_to_many_change_invalidates_join_and_eager_results(Session, cache):
    by_actor = select(Film.film_id).join(Film.actors).where(Actor.name == "Actor 1").order_by(Film.film_id)
    eager = select(Film).options(selectinload(Film.actors)).where(Film.film_id == 1)
    before = warm(Session, cache, by_actor)
    with Session() as s:
        assert [a.name for a in s.scalars(eager.options(FromCache())).one().actors] == ["Actor 2", "Actor 3"]
    with Session() as s:
        film, actor = s.get(Film, 1), s.get(Actor, 1)
        film.actors.append(actor)
        s.commit()
    after = titles(Session, by_actor)
    assert (1,) in after and (1,) not in before
    with Session() as s:
        assert [a.name for a in s.scalars(eager.options(FromCache())).one().actors] == ["Actor 1", "Actor 2", "Actor 3"]


def test_related_table_change_invalidates_eager_loaded_result(Session, cache):
    eager = select(Film).options(selectinload(Film.actors)).where(Film.film_id == 1).options(FromCache())
    with Session() as s:
        s.scalars(eager).one()
    with Session() as s:
        s.get(Actor, 2).name = "Renamed"
        s.commit()
    with Session() as s:
        assert [a.name for a in s.scalars(eager).one().actors] == ["Renamed", "Actor 3"]


def test_rollback_invalidates_nothing_and_caches_nothing_read_in_the_dirty_transaction(Session, cache, sql):
    warm(Session, cache)
    invalidations = cache.stats.invalidations
    with Session() as s:
        s.get(Film, 1).title = "Uncommitted"
        s.flush()
        stores = cache.stats.stores
        rows = s.execute(select(Film.film_id, Film.title).where(Film.film_id == 1).options(FromCache())).all()
        assert rows[0].title == "Uncommitted"  # the session sees its own change...
        assert cache.stats.stores == stores  # ...which is never stored
        s.rollback()
    assert cache.stats.invalidations == invalidations
    sql.reset()
    assert titles(Session)[0] == (1, "Film 01")
    assert sql.count == 0  # the entry cached before survived the rollback
    stmt = select(Film.film_id, Film.title).where(Film.film_id == 1)
    with Session() as s:
        assert s.execute(stmt.options(FromCache())).all()[0].title == "Film 01"


def test_unflushed_changes_bypass_the_cache(Session, cache):
    warm(Session, cache)
    with Session() as s:
        with s.no_autoflush:
            s.get(Film, 1).title = "Pending"
            hits = cache.stats.hits
            s.execute(select(Film.film_id, Film.title).order_by(Film.film_id).options(FromCache())).all()
            assert cache.stats.hits == hits
        s.rollback()


@pytest.mark.parametrize("how", ["delete", "flush_all"])
def test_evicted_version_keys_mean_miss_not_stale(Session, cache, engine, how):
    warm(Session, cache)
    # a write the cache cannot see, then the counters disappear
    with engine.begin() as conn:
        conn.execute(update(Film.__table__).where(Film.__table__.c.film_id == 1).values(title="Behind"))
    if how == "delete":
        cache.client.delete(cache.key("tv", "t_film"))
    else:
        cache.client.flush_all()
    assert titles(Session)[0] == (1, "Behind")


def test_snapshot_older_than_the_versions_is_not_stored(Session, cache, db_url):
    """A transaction that read before a writer committed must not store what its snapshot shows."""
    stmt = select(Film.title).where(Film.film_id == 1)
    with Session() as reader:
        reader.execute(select(Language.name)).all()  # starts the transaction (and the MariaDB snapshot)
        with Session() as writer:
            writer.get(Film, 1).title = "Newer"
            writer.commit()
        seen = reader.scalars(stmt.options(FromCache())).one()
        # MariaDB's REPEATABLE READ shows the snapshot; PostgreSQL's READ COMMITTED and
        # SQLite (no transaction begun by a read) show the commit
        assert seen == ("Film 01" if db_url.startswith("mysql") else "Newer")
    with Session() as fresh:
        assert fresh.scalars(stmt.options(FromCache())).one() == "Newer"


def test_clean_transaction_that_read_before_still_stores_when_nothing_was_committed(Session, cache):
    with Session() as s:
        s.execute(select(Language.name)).all()
        s.scalars(select(Film.title).options(FromCache())).all()
    assert cache.stats.stores == 1


def test_explicit_invalidation_api(Session, cache):
    def one_miss_then_hit(invalidate):
        warm(Session, cache)
        invalidate()
        misses = cache.stats.misses
        titles(Session)
        assert cache.stats.misses == misses + 1

    one_miss_then_hit(lambda: cache.invalidate(select(Film)))
    one_miss_then_hit(lambda: cache.invalidate_class(Film))
    one_miss_then_hit(lambda: cache.invalidate_tables("t_film"))
    with Session() as s:
        film = s.get(Film, 3)
    one_miss_then_hit(lambda: cache.invalidate_object(film))


def test_rows_deleted_by_on_delete_cascade_are_invalidated(Session, cache, engine):
    from orm_models import StoreFilm

    copies = select(StoreFilm.store_id, StoreFilm.film_id).order_by(StoreFilm.store_id, StoreFilm.film_id)
    assert StoreFilm.get_cached_instance("(1)(1)") is not None
    assert (1, 1) in warm(Session, cache, copies)
    with Session() as s:
        s.delete(s.get(Film, 1))  # the database deletes the film's StoreFilm rows itself
        s.commit()
    assert StoreFilm.get_cached_instance("(1)(1)") is None
    assert (1, 1) not in titles(Session, copies)
