"""MemcachedORMObject and session.get(): the object cache keyed by primary key."""
from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy import update
from sqlalchemy.orm import sessionmaker

from support.clients import make_client
from orm_models import Film, StoreFilm
from sqla_memcache.orm.cache import ORMCache


def test_session_get_is_served_from_the_object_cache(Session, cache, sql):
    with Session() as s:
        assert s.get(Film, 7).title == "Film 07"
    sql.reset()
    with Session() as s:
        film = s.get(Film, 7)
        assert sql.count == 0 and film in s
        assert (film.film_id, film.title, film.rating) == (7, "Film 07", "PG-13")
        assert film.get_instance_key() == "(7)"
        key = film.get_cache_key()
        assert key.startswith(cache.namespace + ":o:orm_models.Film:(7)@")
    assert cache.client.get(key) is not None


def test_mixin_class_methods_need_only_listen_on_session(Session, cache, sql):
    assert Film.get_cached_instance("(7)").title == "Film 07"
    sql.reset()
    film = Film.get_cached_instance("(7)")
    assert sql.count == 0 and film.title == "Film 07"
    assert Film.get_cached_instance("(999)") is None
    assert Film.fetch_by_field(Film.film_id, 8).title == "Film 08"
    assert Film.fetch_by_field("title", "Film 03").film_id == 3
    sql.reset()
    assert Film.fetch_by_field(Film.title, "Film 03").film_id == 3
    assert Film.fetch_by_field(Film.film_id, 8).film_id == 8
    assert sql.count == 0
    with pytest.raises(ValueError):
        Film.get_cached_instance("7")


def test_composite_primary_key(Session, cache, sql):
    copy = StoreFilm.get_cached_instance("(2)(3)")
    assert (copy.store_id, copy.film_id, copy.copies) == (2, 3, 5)
    assert copy.get_instance_key() == "(2)(3)"
    assert copy.get_cache_key().startswith(cache.namespace + ":o:orm_models.StoreFilm:(2)(3)@")
    sql.reset()
    with Session() as s:
        assert s.get(StoreFilm, (2, 3)).copies == 5
    assert sql.count == 0


def test_object_entries_are_invalidated_per_row(Session, cache, sql):
    Film.get_cached_instance("(1)")
    Film.get_cached_instance("(2)")
    with Session() as s:
        s.get(Film, 2).title = "Two"
        s.commit()
    sql.reset()
    assert Film.get_cached_instance("(1)").title == "Film 01"
    assert sql.count == 0  # another row's write leaves this entry valid
    assert Film.get_cached_instance("(2)").title == "Two"
    assert sql.count == 1


def test_dml_update_invalidates_every_object_of_the_table(Session, cache):
    Film.get_cached_instance("(1)")
    with Session() as s:
        s.execute(update(Film).where(Film.rating != "").values(rating="X"))
        s.commit()
    assert Film.get_cached_instance("(1)").rating == "X"


def test_set_delete_update_refresh_delete(Session, cache, engine, sql):
    film = Film.get_cached_instance("(9)")
    film.delete_cached_instance()
    sql.reset()
    Film.get_cached_instance("(9)")
    assert sql.count == 1  # the entry was dropped
    film.set_cached_instance(time=0)
    sql.reset()
    Film.get_cached_instance("(9)")
    assert sql.count == 0
    film.title = "Updated"
    film.update()
    assert Film.get_cached_instance("(9)").title == "Updated"
    other = sa.create_engine(engine.url)  # another application's engine: a write the cache does not see
    with other.begin() as conn:
        conn.execute(update(Film.__table__).where(Film.__table__.c.film_id == 9).values(title="Behind"))
    other.dispose()
    assert Film.get_cached_instance("(9)").title == "Updated"
    assert film.refresh() is film and film.title == "Behind"
    assert Film.get_cached_instance("(9)").title == "Behind"
    film.delete()
    assert Film.get_cached_instance("(9)") is None


def test_per_model_binding_and_per_call_session(Session, cache, engine, memcached, monkeypatch, sql):
    other = ORMCache(make_client(memcached.servers), namespace="o" + uuid.uuid4().hex[:8])
    factory = sessionmaker(engine)
    other.listen_on_session(factory)
    cache.listen_on_session(Session)  # the latest listen_on_session stays the default
    monkeypatch.setattr(StoreFilm, "__cache__", None)
    monkeypatch.setattr(StoreFilm, "__session_factory__", None)
    StoreFilm.bind_cache(other, factory)
    StoreFilm.get_cached_instance("(1)(1)")
    assert other.stats.stores == 1 and cache.stats.stores == 0
    Film.get_cached_instance("(1)")
    assert cache.stats.stores == 1 and other.stats.stores == 1
    with Session() as s:
        film = Film.get_cached_instance("(2)", session=s)
        assert film in s
    Film.get_cached_instance("(3)", cache=other)
    assert other.stats.stores == 2 and cache.stats.stores == 2


def test_get_with_lock_or_inside_dirty_transaction_reads_the_database(Session, cache, sql):
    Film.get_cached_instance("(5)")
    with Session() as s:
        sql.reset()
        s.get(Film, 5, with_for_update=True)
        assert sql.count == 1
    with Session() as s:
        s.get(Film, 6).title = "Dirty"
        s.flush()
        sql.reset()
        s.get(Film, 5)
        assert sql.count == 1
        s.rollback()


def test_object_entry_with_eager_relationship_depends_on_related_tables(Session, cache, sql):
    from orm_models import Actor
    from sqlalchemy.orm import selectinload

    def names():
        with Session() as s:
            film = s.get(Film, 1, options=[selectinload(Film.actors)])
            sql.reset()
            found = [a.name for a in film.actors]
            assert sql.count == 0  # loaded with the object, from the cache or not
            return found

    assert names() == ["Actor 2", "Actor 3"]
    stores = cache.stats.stores
    assert names() == ["Actor 2", "Actor 3"] and cache.stats.stores == stores
    with Session() as s:
        s.get(Actor, 3).name = "Three"
        s.commit()
    assert names() == ["Actor 2", "Three"]


def test_evicted_row_version_means_miss(Session, cache, engine, sql):
    Film.get_cached_instance("(3)")
    with engine.begin() as conn:  # a write the cache does not see
        conn.execute(update(Film.__table__).where(Film.__table__.c.film_id == 3).values(title="Evicted"))
    cache.client.delete(cache.namespace + ":rv:t_film:(3)")
    assert Film.get_cached_instance("(3)").title == "Evicted"
