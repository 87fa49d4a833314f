"""RelationshipCache: lazy loads served from memcached, invalidated by the related tables."""
from __future__ import annotations

from sqlalchemy import select

from orm_models import Actor, Film, film_actor
from sqla_memcache.orm.options import FromCache, RelationshipCache


def actor_names(Session, sql, film_id=1):
    """Names of a film's actors via a cached lazy load; returns (names, SQL run by the lazy load)."""
    with Session() as s:
        film = s.scalars(select(Film).where(Film.film_id == film_id).options(RelationshipCache(Film.actors))).one()
        sql.reset()
        names = [a.name for a in film.actors]
        return names, sql.count


def test_lazy_load_is_cached(Session, cache, sql):
    names, ran = actor_names(Session, sql)
    assert names == ["Actor 2", "Actor 3"] and ran == 1
    assert actor_names(Session, sql) == (names, 0)
    assert actor_names(Session, sql, 2)[0] == ["Actor 3", "Actor 4", "Actor 5"]  # keyed by parent


def test_association_and_target_changes_invalidate(Session, cache, sql):
    actor_names(Session, sql)
    with Session() as s:
        s.execute(film_actor.delete().where(film_actor.c.film_id == 1, film_actor.c.actor_id == 3))
        s.commit()
    assert actor_names(Session, sql) == (["Actor 2"], 1)
    with Session() as s:
        s.get(Actor, 2).name = "Two"
        s.commit()
    assert actor_names(Session, sql) == (["Two"], 1)


def test_objects_from_the_cache_keep_the_option(Session, cache, sql):
    stmt = select(Film).where(Film.film_id <= 3).order_by(Film.film_id)
    stmt = stmt.options(FromCache(), RelationshipCache(Film.actors).and_(Film.language))
    with Session() as s:
        expected = [([a.name for a in f.actors], f.language.name) for f in s.scalars(stmt).all()]
    sql.reset()
    with Session() as s:
        got = [([a.name for a in f.actors], f.language.name) for f in s.scalars(stmt).all()]
    assert got == expected and sql.count == 0


def test_other_relationships_are_not_cached(Session, cache, sql):
    with Session() as s:
        actor = s.scalars(select(Actor).where(Actor.actor_id == 2).options(RelationshipCache(Film.actors))).one()
        actor.films
    assert cache.stats.stores == 0


def test_one_directional_many_to_many_change_invalidates(Session, cache, sql):
    from orm_models import Language

    def languages():
        with Session() as s:
            actor = s.scalars(select(Actor).where(Actor.actor_id == 1).options(RelationshipCache(Actor.languages))).one()
            return [lang.name for lang in actor.languages]

    assert languages() == [] and languages() == []
    assert cache.stats.hits == 1
    with Session() as s:
        actor = s.get(Actor, 1)
        actor.languages.append(s.get(Language, 2))
        s.commit()
    assert languages() == ["Français"]


def test_option_order_does_not_matter(Session, cache, sql):
    """SQLAlchemy's compiled cache remembers which option position propagates to
    lazy loads; both orders (run one after the other) must cache the lazy loads."""
    base = select(Film).where(Film.film_id <= 2).order_by(Film.film_id)
    for opts in ((RelationshipCache(Film.actors), FromCache()), (FromCache(), RelationshipCache(Film.actors))):
        cache.client.flush_all()
        for attempt in range(2):
            sql.reset()
            with Session() as s:
                names = [[a.name for a in f.actors] for f in s.scalars(base.options(*opts)).all()]
            assert names == [["Actor 2", "Actor 3"], ["Actor 3", "Actor 4", "Actor 5"]]
            assert sql.count == (3 if attempt == 0 else 0), (opts, attempt)
