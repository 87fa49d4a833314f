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
