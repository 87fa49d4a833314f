"""Every write path SQLAlchemy offers invalidates: a differential test per path, over every read shape.

Each test warms every read shape (and checks the second read was a hit, so a
pass means something), writes through one path, then compares each cached
read with the same read through a session no cache listens on.
"""
from __future__ import annotations

from decimal import Decimal
from typing import Any, Callable, Dict, List

import pytest
import sqlalchemy as sa
from sqlalchemy import bindparam, delete, func, insert, select, text, update
from sqlalchemy.orm import Session as PlainSession
from sqlalchemy.orm import joinedload, selectinload, sessionmaker, subqueryload

from orm_models import Actor, Film, Language, Person, Staff, StoreFilm, film_actor
from sqla_memcache.orm.options import FromCache


def _films(rows: Any) -> List[tuple]:
    return [(f.film_id, f.title, f.rating, f.language_id) for f in rows]


def _get(s: Any, pk: Any) -> Any:
    found = s.get(Film, pk)
    return None if found is None else (found.film_id, found.title, found.rating)


#: read shapes: each returns plain values (compared cached vs fresh); o = the cache option or nothing
READS: Dict[str, Callable[[Any, tuple], Any]] = {
    "entities": lambda s, o: _films(s.scalars(select(Film).order_by(Film.film_id).options(*o))),
    "columns": lambda s, o: s.execute(select(Film.film_id, Film.title).order_by(Film.film_id).options(*o)).all(),
    "multi_entity": lambda s, o: [
        (f.film_id, f.title, lang.name)
        for f, lang in s.execute(select(Film, Language).join(Film.language).order_by(Film.film_id).options(*o))
    ],
    "aggregate": lambda s, o: s.execute(
        select(func.count(Film.film_id), func.max(Film.title), func.sum(Film.rental_rate)).options(*o)).all(),
    "subquery": lambda s, o: s.scalars(
        select(Film.title).where(Film.film_id.in_(select(film_actor.c.film_id).where(film_actor.c.actor_id == 2)))
        .order_by(Film.title).options(*o)).all(),
    "cte": lambda s, o: s.execute(
        select(Film.film_id, Film.title)
        .where(Film.film_id.in_(select(select(Film.film_id).where(Film.rating == "PG").cte("pg").c.film_id)))
        .order_by(Film.film_id).options(*o)).all(),
    "selectin": lambda s, o: [
        (f.film_id, [a.name for a in f.actors])
        for f in s.scalars(select(Film).options(selectinload(Film.actors), *o).order_by(Film.film_id))
    ],
    "subqueryload": lambda s, o: [
        (lang.name, [f.title for f in lang.films])
        for lang in s.scalars(select(Language).options(subqueryload(Language.films), *o).order_by(Language.name))
    ],
    "joined": lambda s, o: [
        (f.film_id, f.language.name if f.language else None)
        for f in s.scalars(select(Film).options(joinedload(Film.language), *o).order_by(Film.film_id))
    ],
    "filtered_selectin": lambda s, o: [
        (f.film_id, [a.actor_id for a in f.actors])
        for f in s.scalars(select(Film).options(selectinload(Film.actors.and_(Actor.actor_id > 2)), *o)
                           .order_by(Film.film_id)).unique()
    ],
    "get": lambda s, o: _get(s, 1),
    "get_missing": lambda s, o: _get(s, 500),
    "polymorphic": lambda s, o: [
        (p.person_id, p.name, type(p).__name__, getattr(p, "salary", None))
        for p in s.scalars(select(Person).order_by(Person.person_id).options(*o))],
    "get_subclass_row": lambda s, o: (lambda p: (p.name, p.salary))(s.get(Person, 2)),
    "get_staff": lambda s, o: (lambda p: None if p is None else (p.name, p.salary))(s.get(Staff, 3)),
    "get_composite": lambda s, o: (lambda c: None if c is None else c.copies)(s.get(StoreFilm, (2, 3))),
}
#: shapes whose second read must be a hit (filtered_selectin's option cannot be pickled: never stored)
HITTING = [name for name in READS if name != "filtered_selectin"]


def read_all(Session: Any, cached: bool) -> Dict[str, Any]:
    out = {}
    with Session() as s:
        for name, read in READS.items():
            out[name] = read(s, (FromCache(),) if cached else ())
    return out


@pytest.fixture
def fresh(engine: sa.Engine) -> sessionmaker:
    """Sessions no cache listens on: the truth."""
    return sessionmaker(engine)


@pytest.fixture
def warm(Session: sessionmaker, cache: Any, fresh: sessionmaker) -> Callable[[], None]:
    def run() -> None:
        first = read_all(Session, cached=True)
        assert first == read_all(fresh, cached=False)
        for name in READS:  # one at a time: each read of a warm entry is a hit
            hits = cache.stats.hits
            with Session() as s:
                READS[name](s, (FromCache(),))
            if name in HITTING:
                assert cache.stats.hits > hits, "%s was not a hit" % name
    return run


def check(Session: Any, fresh: Any) -> None:
    got, want = read_all(Session, cached=True), read_all(fresh, cached=False)
    stale = {name: (got[name], want[name]) for name in READS if got[name] != want[name]}
    assert not stale, stale


# -- write paths: each changes data the reads above show --------------------------------


def orm_flush(Session: Any, engine: Any, cache: Any) -> None:
    with Session() as s:
        s.get(Film, 1).title = "Flushed"
        s.add(Film(film_id=500, title="New 500", rating="G", rental_rate=Decimal("1.00"), language_id=1))
        s.commit()


def nested_released(Session: Any, engine: Any, cache: Any) -> None:
    with Session() as s:
        film = s.get(Film, 1)
        with s.begin_nested():
            film.title = "In a savepoint"
        s.commit()


def nested_released_then_more(Session: Any, engine: Any, cache: Any) -> None:
    with Session() as s:
        with s.begin_nested():
            s.get(Film, 2).title = "Savepoint 1"
        with s.begin_nested():
            s.get(Film, 3).rating = "R"
        s.get(Film, 4).title = "After savepoints"
        s.commit()


def nested_rolled_back(Session: Any, engine: Any, cache: Any) -> None:
    with Session() as s:
        s.get(Film, 5).title = "Kept"
        nested = s.begin_nested()
        s.get(Film, 1).title = "Rolled back"
        s.flush()
        nested.rollback()
        s.commit()


def bulk_update_mappings(Session: Any, engine: Any, cache: Any) -> None:
    with Session() as s:
        s.bulk_update_mappings(Film, [{"film_id": 1, "title": "Bulk 1"}, {"film_id": 2, "rating": "NC-17"}])
        s.commit()


def bulk_save_objects(Session: Any, engine: Any, cache: Any) -> None:
    with Session() as s:
        film = s.get(Film, 1)
        film.title = "Bulk saved"
        s.bulk_save_objects([film, Film(film_id=500, title="Bulk new", rating="G", rental_rate=Decimal("2.00"))])
        s.commit()


def bulk_insert_mappings(Session: Any, engine: Any, cache: Any) -> None:
    with Session() as s:
        s.bulk_insert_mappings(Film, [{"film_id": 500, "title": "Inserted", "rating": "G", "rental_rate": 1,
                                       "language_id": 2}])
        s.bulk_insert_mappings(StoreFilm, [{"store_id": 9, "film_id": 1, "copies": 1}])
        s.commit()


def orm_bulk_update_by_pk(Session: Any, engine: Any, cache: Any) -> None:
    with Session() as s:
        s.execute(update(Film), [{"film_id": 1, "title": "By PK"}, {"film_id": 3, "title": "By PK 3"}])
        s.commit()


def orm_update_where(Session: Any, engine: Any, cache: Any) -> None:
    with Session() as s:
        s.execute(update(Film).where(Film.rating == "PG").values(title="PG film"))
        s.execute(update(StoreFilm).where(StoreFilm.store_id == 2).values(copies=StoreFilm.copies + 10))
        s.commit()


def core_insert(Session: Any, engine: Any, cache: Any) -> None:
    with Session() as s:
        s.execute(insert(Film).values(film_id=500, title="Core 500", rating="R", rental_rate=1, language_id=3))
        s.commit()


def core_delete_cascades(Session: Any, engine: Any, cache: Any) -> None:
    # the database deletes the film's t_film_actor and t_store_film rows itself (ON DELETE CASCADE)
    with Session() as s:
        s.execute(delete(Film.__table__).where(Film.__table__.c.film_id == 3))
        s.commit()


def core_on_engine(Session: Any, engine: Any, cache: Any) -> None:
    cache.listen_on_engine(engine)
    with engine.begin() as conn:
        conn.execute(update(Film.__table__).where(Film.__table__.c.film_id == 1).values(title="Core engine"))
        conn.execute(film_actor.insert().values(film_id=1, actor_id=6))


def core_executemany(Session: Any, engine: Any, cache: Any) -> None:
    t = Film.__table__
    with engine.begin() as conn:
        conn.execute(update(t).where(t.c.film_id == bindparam("fid")).values(title=bindparam("new")),
                     [{"fid": 1, "new": "Many 1"}, {"fid": 2, "new": "Many 2"}])


def core_explicit_commit_keeps_connection(Session: Any, engine: Any, cache: Any) -> None:
    with engine.connect() as conn:
        conn.execute(update(Film.__table__).where(Film.__table__.c.film_id == 1).values(title="Committed"))
        conn.commit()
        check_now = conn  # the connection stays open: the commit alone must have delivered
        assert check_now.in_transaction() is False


def core_returning(Session: Any, engine: Any, cache: Any) -> None:
    with Session() as s:
        stmt = update(Film.__table__).where(Film.__table__.c.rating == "G").values(rating="PG")
        if engine.dialect.update_returning:
            stmt = stmt.returning(Film.__table__.c.film_id)
            s.execute(stmt).all()
        else:
            s.execute(stmt)
        s.commit()


def text_update(Session: Any, engine: Any, cache: Any) -> None:
    with Session() as s:
        s.execute(text("UPDATE t_film SET title = 'Raw' WHERE film_id = 1"))
        s.commit()


def text_insert_delete(Session: Any, engine: Any, cache: Any) -> None:
    with Session() as s:
        s.execute(text("INSERT INTO t_film (film_id, title, rating, rental_rate, language_id) "
                       "VALUES (500, 'Raw new', 'G', 1.00, 1)"))
        s.execute(text("DELETE FROM t_film_actor WHERE film_id = 2"))
        s.commit()


def driver_sql(Session: Any, engine: Any, cache: Any) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE t_film SET rating = 'R' WHERE film_id = 1")


def text_with_comments_and_quotes(Session: Any, engine: Any, cache: Any) -> None:
    q = '"' if engine.dialect.name != "mysql" else "`"
    with Session() as s:
        s.execute(text("/* a comment */ UPDATE %st_film%s SET title = 'Quoted; with a semicolon' "
                       "WHERE film_id = 2" % (q, q)))
        s.execute(text("-- line comment\nDELETE FROM t_store_film WHERE store_id = 2 AND film_id = 3"))
        s.commit()


def upsert(Session: Any, engine: Any, cache: Any) -> None:
    name = engine.dialect.name
    values = {"film_id": 1, "title": "Upserted", "rating": "G", "rental_rate": 1, "language_id": 1}
    if name == "mysql":
        from sqlalchemy.dialects.mysql import insert as dialect_insert

        stmt = dialect_insert(Film).values(**values).on_duplicate_key_update(title="Upserted")
    else:
        from sqlalchemy.dialects.postgresql import insert as pg_insert
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        dialect_insert = pg_insert if name == "postgresql" else sqlite_insert
        stmt = dialect_insert(Film).values(**values).on_conflict_do_update(
            index_elements=["film_id"], set_={"title": "Upserted"})
    with Session() as s:
        s.execute(stmt)
        s.commit()


def autocommit(Session: Any, engine: Any, cache: Any) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(update(Film.__table__).where(Film.__table__.c.film_id == 1).values(title="Autocommitted"))


def primary_key_change(Session: Any, engine: Any, cache: Any) -> None:
    with Session() as s:
        s.execute(delete(StoreFilm).where(StoreFilm.film_id == 1))
        s.execute(film_actor.delete().where(film_actor.c.film_id == 1))
        s.get(Film, 1).film_id = 500
        s.commit()


def external_transaction_commit(Session: Any, engine: Any, cache: Any) -> None:
    # SQLAlchemy's "join a session into an external transaction" recipe: the outer COMMIT counts
    with engine.connect() as conn:
        outer = conn.begin()
        s = Session(bind=conn, join_transaction_mode="create_savepoint")
        s.get(Film, 1).title = "Joined"
        s.commit()  # a RELEASE SAVEPOINT: bumps nothing yet
        s.close()
        outer.commit()


def relationship_membership(Session: Any, engine: Any, cache: Any) -> None:
    with Session() as s:
        film, english = s.get(Film, 2), s.get(Language, 1)
        film.actors = [s.get(Actor, 6)]
        english.films.append(s.get(Film, 3))
        s.commit()


def delete_objects(Session: Any, engine: Any, cache: Any) -> None:
    with Session() as s:
        s.delete(s.get(Film, 1))
        s.delete(s.get(StoreFilm, (2, 3)))
        s.commit()


def inheritance_orm(Session: Any, engine: Any, cache: Any) -> None:
    with Session() as s:
        s.get(Staff, 2).salary = 150  # only t_staff changes
        s.get(Staff, 3).name = "Director"  # only t_person changes
        s.commit()


def inheritance_text_subclass_table(Session: Any, engine: Any, cache: Any) -> None:
    with Session() as s:
        s.execute(text("UPDATE t_staff SET salary = salary + 1"))
        s.commit()


def inheritance_delete_base_row(Session: Any, engine: Any, cache: Any) -> None:
    with Session() as s:  # the database deletes the t_staff row itself (ON DELETE CASCADE)
        s.execute(delete(Person.__table__).where(Person.__table__.c.person_id == 3))
        s.commit()


def ddl(Session: Any, engine: Any, cache: Any) -> None:
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t_scratch_%s (x INTEGER)" % cache.namespace))
        conn.execute(text("UPDATE t_film SET title = 'With DDL' WHERE film_id = 1"))
        conn.execute(text("DROP TABLE t_scratch_%s" % cache.namespace))


WRITES = [orm_flush, nested_released, nested_released_then_more, nested_rolled_back, bulk_update_mappings,
          bulk_save_objects, bulk_insert_mappings, orm_bulk_update_by_pk, orm_update_where, core_insert,
          core_delete_cascades, core_on_engine, core_executemany, core_explicit_commit_keeps_connection,
          core_returning, text_update, text_insert_delete, driver_sql, text_with_comments_and_quotes, upsert, autocommit,
          primary_key_change, external_transaction_commit, relationship_membership, delete_objects, inheritance_orm,
          inheritance_text_subclass_table, inheritance_delete_base_row, ddl]


@pytest.mark.parametrize("write", WRITES, ids=[w.__name__ for w in WRITES])
def test_every_write_path_invalidates(write, Session, engine, cache, fresh, warm):
    warm()
    write(Session, engine, cache)
    check(Session, fresh)


# -- what must not be cached, and transactions ------------------------------------------


def test_a_rolled_back_raw_write_is_never_cached(Session, engine, cache, fresh, warm):
    warm()
    with Session() as s:
        s.execute(text("UPDATE t_film SET title = 'Never committed' WHERE film_id = 1"))
        # read inside the written transaction: the database answers, nothing is stored
        hits, stores = cache.stats.hits, cache.stats.stores
        assert READS["get"](s, ()) == (1, "Never committed", "PG")
        assert READS["entities"](s, (FromCache(),))[0][1] == "Never committed"
        assert (cache.stats.hits, cache.stats.stores) == (hits, stores)
        s.rollback()
    check(Session, fresh)


def test_external_transaction_rolled_back_invalidates_nothing_and_serves_no_rolled_back_row(
        Session, engine, cache, fresh, warm):
    warm()
    with engine.connect() as conn:
        outer = conn.begin()
        s = Session(bind=conn, join_transaction_mode="create_savepoint")
        s.get(Film, 1).title = "Rolled back with the outer transaction"
        s.commit()
        with Session(bind=conn, join_transaction_mode="create_savepoint") as s2:
            READS["entities"](s2, (FromCache(),))  # read in the written outer transaction: bypassed
        s.close()
        outer.rollback()
    check(Session, fresh)
    hits = cache.stats.hits
    with Session() as s:
        READS["entities"](s, (FromCache(),))
    assert cache.stats.hits == hits + 1  # the rollback invalidated nothing


def test_a_savepoint_release_bumps_nothing_until_the_commit(Session, engine, cache, fresh, warm):
    warm()
    invalidations = cache.stats.invalidations
    with Session() as s:
        with s.begin_nested():
            s.get(Film, 1).title = "Released"
        # Other sessions, before the COMMIT: whatever the database shows them, the cache shows.
        # (pysqlite, in its default mode, opens no transaction before a SAVEPOINT, so there the
        # RELEASE commits; everywhere else the row is not committed yet.)
        check(Session, fresh)
        with fresh() as other:
            released_committed = _get(other, 1)[1] == "Released"
        assert released_committed == (engine.dialect.name == "sqlite")
        assert cache.stats.invalidations == invalidations + released_committed
        s.commit()
    check(Session, fresh)
    assert cache.stats.invalidations == invalidations + 1  # once: at the RELEASE that committed, or the COMMIT


def test_unknown_writes_bump_the_namespace_generation_and_invalidate_all(Session, engine, cache, fresh, warm):
    warm()
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t_gen_%s (x INTEGER)" % cache.namespace))
        conn.execute(text("DROP TABLE t_gen_%s" % cache.namespace))
    misses = cache.stats.misses
    read_all(Session, cached=True)
    assert cache.stats.misses - misses == len(READS)  # every entry depended on the generation
    warm()
    cache.invalidate_all()
    misses = cache.stats.misses
    read_all(Session, cached=True)
    assert cache.stats.misses - misses == len(READS)


def test_writes_to_other_rows_keep_object_entries(Session, engine, cache, fresh, warm):
    warm()
    with Session() as s:
        s.get(Film, 7).title = "Other row"
        s.execute(update(Film).where(Film.film_id == 8).values(title="Other row too"))
        s.commit()
    hits = cache.stats.hits
    with Session() as s:
        assert _get(s, 1) == (1, "Film 01", "PG")
    assert cache.stats.hits == hits + 1  # film 1's entry survived writes to rows 7 and 8


def test_unpicklable_results_are_answered_not_cached(Session, cache, fresh):
    with Session() as s:
        got = READS["filtered_selectin"](s, (FromCache(),))
    with fresh() as s:
        assert got == READS["filtered_selectin"](s, ())
    assert cache.stats.errors == 0  # not an error: a documented "not cacheable"


def test_tenants_by_schema_translation_and_by_database_never_share_entries(engine, cache, tmp_path):
    """Two tenants with the same tables in two databases (SQLite files) or schemas (PostgreSQL)."""
    if engine.dialect.name == "mysql":
        pytest.skip("covered by the SQLite and PostgreSQL variants (MySQL schemas are databases)")
    from orm_models import Base, seed

    if engine.dialect.name == "sqlite":
        tenants = {name: sa.create_engine("sqlite:///" + str(tmp_path / (name + ".db"))) for name in ("a", "b")}
    else:
        schemas = {"a": "tenant_a_" + cache.namespace, "b": "tenant_b_" + cache.namespace}
        with engine.begin() as conn:
            for schema in schemas.values():
                conn.execute(text("CREATE SCHEMA %s" % schema))
        tenants = {name: engine.execution_options(schema_translate_map={None: schema})
                   for name, schema in schemas.items()}
    try:
        for name, tenant in tenants.items():
            Base.metadata.create_all(tenant)
            with PlainSession(tenant) as s:
                seed(s)
                s.execute(update(Film).where(Film.film_id == 1).values(title="Tenant " + name))
                s.commit()
        makers = {name: cache.listen_on_session(sessionmaker(tenant)) for name, tenant in tenants.items()}
        for name in ("a", "b", "a", "b"):
            with makers[name]() as s:
                assert _get(s, 1)[1] == "Tenant " + name
                assert READS["entities"](s, (FromCache(),))[0][1] == "Tenant " + name
        hits = cache.stats.hits
        with makers["a"]() as s:  # a write to tenant a invalidates tenant a's entries
            s.get(Film, 1).title = "Tenant a v2"
            s.commit()
        for name, title in (("a", "Tenant a v2"), ("b", "Tenant b")):
            with makers[name]() as s:
                assert _get(s, 1)[1] == title
                assert READS["entities"](s, (FromCache(),))[0][1] == title
        if engine.dialect.name == "postgresql":
            # tenant b's entries still hit: version keys name the translated schema. (Version keys
            # do not name the database, so two databases with equal table names share them:
            # a write to one over-invalidates the other, never the reverse.)
            assert cache.stats.hits >= hits + 2
    finally:
        if engine.dialect.name == "postgresql":
            with engine.begin() as conn:
                for schema in schemas.values():
                    conn.execute(text("DROP SCHEMA %s CASCADE" % schema))
        else:
            for tenant in tenants.values():
                tenant.dispose()
