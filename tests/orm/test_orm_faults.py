"""Memcached down or stalled: answers come from the database, and lost invalidations never allow a stale hit."""
from __future__ import annotations

import logging
import uuid

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import sessionmaker

from support.clients import make_client
from orm_models import Film
from sqla_memcache.orm.cache import ORMCache
from sqla_memcache.orm.options import FromCache

TITLE = select(Film.title).where(Film.film_id == 1).options(FromCache())


def listening(engine, servers, **client_kwargs):
    client_kwargs.setdefault("socket_timeout", 0.5)
    cache = ORMCache(make_client(servers, **client_kwargs), namespace="f" + uuid.uuid4().hex[:8])
    factory = sessionmaker(engine)
    cache.listen_on_session(factory)
    return cache, factory


def read(factory):
    with factory() as s:
        return s.scalars(TITLE).one(), s.get(Film, 2).title


def rename(factory, title):
    with factory() as s:
        s.get(Film, 1).title = title
        s.get(Film, 2).title = title
        s.commit()


@pytest.mark.parametrize("strict", [False, True])
def test_memcached_down_answers_from_the_database(engine, memcached_factory, caplog, strict):
    server = memcached_factory()
    cache, factory = listening(engine, server.servers, strict=strict)
    assert read(factory) == ("Film 01", "Film 02")
    server.kill()
    with caplog.at_level(logging.WARNING, logger="sqla_memcache.orm"):
        assert read(factory) == ("Film 01", "Film 02")
        rename(factory, "While down")  # commits; the invalidation cannot be delivered
        assert read(factory) == ("While down", "While down")
    assert cache.stats.errors > 0
    assert any(r.name.startswith("sqla_memcache.orm") for r in caplog.records)


def test_lost_invalidation_is_resent_before_the_cache_is_used_again(engine, memcached_factory):
    """The server stalls during a commit and comes back still holding the old entries and counters."""
    server = memcached_factory()
    cache, factory = listening(engine, server.servers)
    assert read(factory) == ("Film 01", "Film 02")
    assert read(factory) == ("Film 01", "Film 02")
    assert cache.stats.hits == 2
    table_version = cache.key("tv", "t_film")
    before = make_client(server.servers).get(table_version)

    server.pause()
    rename(factory, "While stalled")
    assert cache.pending_invalidations > 0
    assert read(factory) == ("While stalled", "While stalled")  # bypassed, not failed
    assert not cache.deliver_pending()
    server.resume()
    cache.client.forget_dead_hosts()

    # a cache unaware of the lost bump would now see unchanged counters: stale hits were possible
    assert make_client(server.servers).get(table_version) == before
    hits = cache.stats.hits
    assert read(factory) == ("While stalled", "While stalled")
    assert cache.pending_invalidations == 0
    assert cache.stats.hits == hits  # both entries were invalidated by the resent bumps
    assert read(factory) == ("While stalled", "While stalled")
    assert cache.stats.hits == hits + 2  # and the cache works again


def test_stalled_memcached_on_read_answers_from_the_database(engine, memcached_factory):
    server = memcached_factory()
    cache, factory = listening(engine, server.servers, socket_timeout=0.3)
    read(factory)
    server.pause()
    try:
        assert read(factory) == ("Film 01", "Film 02")
    finally:
        server.resume()


def test_signed_client_ignores_forged_entries(engine, memcached):
    import pickle

    from sqla_memcache.orm.cache import ENTRY_FORMAT

    cache, factory = listening(engine, memcached.servers, secret_key="s" * 32)
    with factory() as s:
        s.scalars(TITLE).one()
    (key,) = [k for k in _entry_keys(cache, memcached.servers, engine)]
    forged = pickle.dumps((ENTRY_FORMAT, {}, "forged"))  # an empty tag would match anything
    assert make_client(memcached.servers).set(key, forged)  # written without the key: unsigned
    with factory() as s:
        assert s.scalars(TITLE).one() == "Film 01"
    assert cache.stats.hits == 0


def test_garbage_entries_are_misses(engine, memcached):
    import pickle

    from sqla_memcache.orm.cache import ENTRY_FORMAT

    cache, factory = listening(engine, memcached.servers)
    with factory() as s:
        s.scalars(TITLE).one()
    (key,) = [k for k in _entry_keys(cache, memcached.servers, engine)]
    raw = make_client(memcached.servers)
    forged = pickle.dumps((ENTRY_FORMAT, {}, "forged"))
    for garbage in (b"not a pickle", "text", 12345, forged, pickle.dumps((ENTRY_FORMAT, {"x": 1}, None))):
        assert raw.set(key, garbage)
        with factory() as s:
            assert s.scalars(TITLE).one() == "Film 01"
    assert cache.stats.hits == 0


def _entry_keys(cache, servers, engine):
    """The query entry key of TITLE (computed as the cache does)."""

    return [cache.entry_key(TITLE, engine)]


def test_version_keys_never_move_to_another_server(engine, memcached_factory):
    """With two servers, the home server of a table counter stalls during a commit and returns with
    its old counter: the commit's bump must not have gone to the other server and been forgotten."""
    servers = [memcached_factory(), memcached_factory()]
    cache, factory = listening(engine, [s.address for s in servers])
    assert read(factory) == ("Film 01", "Film 02")
    table_version = cache.key("tv", "t_film")
    (home,) = [s for s in servers if make_client([s.address]).get(table_version) is not None]

    home.pause()
    rename(factory, "While moved")  # a failing-over client would bump a fresh counter elsewhere
    home.resume()
    cache.client.forget_dead_hosts()
    assert read(factory) == ("While moved", "While moved")


def test_unrelated_entries_keep_hitting_while_an_invalidation_is_undelivered(engine, memcached_factory):
    """Only entries depending on a counter with an undelivered bump are bypassed."""
    from orm_models import Language

    servers = [memcached_factory(), memcached_factory()]
    addresses = [s.address for s in servers]
    names = select(Language.name).order_by(Language.language_id).options(FromCache())

    def home(key):
        (found,) = [s for s in servers if make_client([s.address]).get(key) is not None]
        return found

    for _ in range(100):  # a namespace putting the film counter apart from the language entry and counter
        cache, factory = listening(engine, addresses)
        with factory() as s:
            s.scalars(names).all()
            s.scalars(TITLE).one()
        film_home = home(cache.key("tv", "t_film"))
        if film_home is not home(cache.key("tv", "t_language")) and film_home not in (
            home(cache.entry_key(names, engine)), home(cache.generation_key)
        ):
            break
    else:
        pytest.fail("no namespace separated the keys")
    film_home.pause()
    try:
        with factory() as s:
            s.execute(update(Film).where(Film.film_id == 1).values(title="Pending"))
            s.commit()
        assert cache.pending_invalidations > 0
        hits = cache.stats.hits
        with factory() as s:
            assert s.scalars(names).all() == ["English", "Français", "日本語"]
            assert s.scalars(TITLE).one() == "Pending"
        assert cache.stats.hits == hits + 1  # the language entry hit; the film entry did not
    finally:
        film_home.resume()
