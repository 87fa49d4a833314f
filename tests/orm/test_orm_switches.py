"""Switches and observability: enabled=False, the environment switch, hooks, miss reasons, outage logging."""
from __future__ import annotations

import logging

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.orm import sessionmaker

from support.clients import make_client
from orm_models import Film
from sqla_memcache.orm.cache import ORMCache
from sqla_memcache.orm.options import FromCache

TITLES = select(Film.film_id, Film.title).order_by(Film.film_id).options(FromCache())


def read(Session):
    with Session() as s:
        return s.execute(TITLES).all()


def test_disabled_cache_reads_the_database_and_still_invalidates(engine, memcached, sql):
    namespace = "sw" + str(id(engine) % 100000)
    on = ORMCache(make_client(memcached.servers), namespace=namespace)
    off = ORMCache(make_client(memcached.servers), namespace=namespace, enabled=False)
    Reader, Writer = on.listen_on_session(sessionmaker(engine)), off.listen_on_session(sessionmaker(engine))
    first = read(Reader)
    assert read(Reader) == first and on.stats.hits == 1
    sql.reset()
    assert read(Writer) == first and sql.count == 1  # disabled: the database answered
    assert off.stats.hits == 0 and off.stats.stores == 0 and off.stats.miss_reasons["disabled"] == 1
    with Writer() as s:  # a disabled cache still delivers its invalidations to the shared namespace
        s.execute(update(Film).where(Film.film_id == 1).values(title="Changed while disabled"))
        s.commit()
    assert read(Reader)[0] == (1, "Changed while disabled")


def test_environment_switch(engine, memcached, monkeypatch):
    monkeypatch.setenv("SQLA_MEMCACHE_DISABLED", "1")
    cache = ORMCache(make_client(memcached.servers), namespace="env" + str(id(engine) % 100000))
    assert cache.enabled is False
    Session = cache.listen_on_session(sessionmaker(engine))
    read(Session), read(Session)
    assert cache.stats.hits == 0 and cache.stats.miss_reasons["disabled"] == 2


def test_hooks_and_miss_reasons(Session, cache, engine):
    events = []
    for kind in ("hit", "miss", "store", "invalidate", "error"):
        getattr(cache, "on_" + kind)(lambda event: events.append((event.kind, event.reason)))
    cache.on_hit(lambda event: 1 / 0)  # a failing hook is logged, never raised
    read(Session)
    read(Session)
    with Session() as s:
        s.execute(update(Film).where(Film.film_id == 2).values(title="x"))
        read_in_tx = s.execute(TITLES).all()  # the transaction wrote: bypassed
        s.commit()
    assert read_in_tx[1] == (2, "x")
    read(Session)
    with Session() as s:
        s.execute(select(Film.film_id).from_statement(text("SELECT film_id FROM t_film")).options(FromCache()))
    assert [e for e in events if e[0] != "error"] == [
        ("miss", "absent"), ("store", None), ("hit", None), ("miss", "dirty_transaction"), ("invalidate", None),
        ("miss", "version_moved"), ("store", None), ("miss", "uncacheable")]
    assert cache.stats.as_dict()["misses_version_moved"] == 1
    assert cache.stats.misses == sum(cache.stats.miss_reasons.values()) == 4
    with pytest.raises(ValueError):
        cache.hooks.add("nope", print)


def test_an_outage_logs_one_warning_and_one_recovery_line(engine, memcached_factory, caplog):
    server = memcached_factory()
    cache = ORMCache(make_client([server.address], socket_timeout=0.2, dead_retry=0), namespace="out" + str(id(engine) % 1000))
    Session = cache.listen_on_session(sessionmaker(engine))
    read(Session)
    server.pause()
    try:
        with caplog.at_level(logging.INFO, logger="sqla_memcache"):
            for _ in range(6):
                assert read(Session)[0][0] == 1
    finally:
        server.resume()
    with caplog.at_level(logging.INFO, logger="sqla_memcache"):
        with Session() as s:
            s.execute(update(Film).where(Film.film_id == 1).values(title="after"))
            s.commit()
        cache.deliver_pending()
        read(Session)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("sqla_memcache.orm")]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert any("answers again after" in r.getMessage() for r in caplog.records)


def _write_every_title(Session, suffix):
    """One commit changing all 12 films: its row version keys land on both servers."""
    with Session() as s:
        for film in s.scalars(select(Film).order_by(Film.film_id)):
            film.title = "%s %s" % (film.title.split(" #", 1)[0], suffix)
        s.commit()


def test_each_server_outage_logs_one_warning_naming_it_and_one_recovery_line(engine, memcached_factory, caplog):
    first, second = memcached_factory(), memcached_factory()
    client = make_client([first.address, second.address], socket_timeout=0.5)
    cache = ORMCache(client, namespace="per" + str(id(engine) % 1000))
    # no background re-sends: their failures would land at any moment and make the counts racy
    cache.redeliverer.stopped.set()
    Session = cache.listen_on_session(sessionmaker(engine))
    caplog.set_level(logging.INFO, logger="sqla_memcache")
    read(Session)

    def outage(server, label):
        server.stop()
        errors = cache.stats.errors
        for round_ in range(4):  # writes bump keys on both servers, reads hit and fail in between
            _write_every_title(Session, "#%s%d" % (label, round_))
            assert read(Session)[0][1].endswith("#%s%d" % (label, round_))  # right answers from the database
            for film_id in range(1, 13):  # entry keys on both servers: a failed store is an outage too
                with Session() as s:
                    assert s.execute(select(Film.title).where(Film.film_id == film_id)
                                     .options(FromCache())).scalar_one().endswith("#%s%d" % (label, round_))
        failed = cache.stats.errors - errors
        server.start()  # same port, empty
        client.forget_dead_hosts()
        assert cache.deliver_pending()
        read(Session)
        return failed

    failed_first = outage(first, "a")
    failed_second = outage(second, "b")
    orm = [r for r in caplog.records if r.name.startswith("sqla_memcache.orm")]
    warnings = [r.getMessage() for r in orm if r.levelno >= logging.WARNING]
    assert len(warnings) == 2, warnings
    assert first.address in warnings[0] and second.address not in warnings[0]
    assert second.address in warnings[1] and first.address not in warnings[1]
    back = [r.getMessage() for r in orm if "answers again after" in r.getMessage()]
    assert back == [
        "memcached %s answers again after %d failed cache operation(s) (reads were answered from the database "
        "meanwhile)" % (server.address, failed) for server, failed in ((first, failed_first), (second, failed_second))]
    assert failed_first > 0 and failed_second > 0


def test_enabled_can_be_switched_at_run_time(Session, cache, sql):
    read(Session)
    cache.enabled = False
    sql.reset()
    read(Session)
    assert sql.count == 1 and cache.stats.miss_reasons["disabled"] == 1  # the database answered
    cache.enabled = True
    sql.reset()
    read(Session)
    assert sql.count == 0 and cache.stats.hits == 1


def test_fromcache_on_a_session_no_cache_listens_on_is_warned_about_once(engine, memcached, caplog):
    """Issue 15: FromCache on a session nothing listens on was silently not cached."""
    import logging

    from sqlalchemy import select
    from sqlalchemy.orm import sessionmaker

    from orm_models import Film
    from sqla_memcache import Client, FromCache, ORMCache

    cache = ORMCache(Client(memcached.servers), namespace="unlistened")
    forgot = sessionmaker(engine)  # listen_on_session(forgot) was never called
    listened = cache.listen_on_session(sessionmaker(engine))
    stmt = select(Film).where(Film.film_id == 1).options(FromCache())
    with caplog.at_level(logging.WARNING, logger="sqla_memcache"):
        with listened() as s:
            s.scalars(stmt).all()
        assert not [r for r in caplog.records if "no ORMCache listens" in r.getMessage()]
        for _ in range(3):
            with forgot() as s:
                assert s.scalars(stmt).one().film_id == 1  # answered by the database
    warned = [r for r in caplog.records if "no ORMCache listens" in r.getMessage()]
    assert len(warned) == 1 and "listen_on_session" in warned[0].getMessage()
    assert cache.stats.hits == 0
