"""Stampede protection: 32 threads miss the same entry at once; the database sees ONE query.

SELECTs are counted with the engine's ``before_cursor_execute`` event. The
lease is an ``add`` in memcached (``sqla_memcache/orm/stampede.py``); the
waiting is bounded, and a memcached outage or a stalled winner falls back to
the database.
"""
from __future__ import annotations

import time
import uuid
from typing import Any, Callable, List

from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from support.sql import StatementCounter
from support.threads import run_threads

from sqla_memcache import Client
from sqla_memcache.orm import FromCache, ORMCache
from sqla_memcache.orm.stampede import StampedeStats, lease_key

from .fault_models import FILMS, FaultFilm

THREADS = 32
QUERY = select(FaultFilm).order_by(FaultFilm.film_id).options(FromCache())


def setup(engine, servers, socket_timeout=10, **cache_kwargs):
    # a long stampede_wait by default: a winner slowed by CPU starvation must not look like a dead one
    cache_kwargs.setdefault("stampede_wait", 60)
    # a generous timeout: a memcached stall under CPU starvation would be a different test (a fault)
    client = Client(servers, socket_timeout=socket_timeout)
    cache = ORMCache(client, namespace="st" + uuid.uuid4().hex[:8], **cache_kwargs)
    Session = sessionmaker(engine)
    cache.listen_on_session(Session)
    return cache, Session, StatementCounter(engine)


def stampede(Session: sessionmaker, read: Callable[[Any], Any], threads: int = THREADS) -> List[Any]:
    """Run ``read(session)`` in ``threads`` threads released together; their results."""
    results: List[Any] = [None] * threads

    def worker(n: int) -> None:
        with Session() as s:
            results[n] = read(s)

    assert run_threads(worker, threads, together=True, timeout=60) == []
    return results


def all_rows(s) -> List[tuple]:
    return [(f.film_id, f.title) for f in s.scalars(QUERY)]


def expected_rows() -> List[tuple]:
    return [(i, "FILM %02d v0" % i) for i in range(1, FILMS + 1)]


def test_32_concurrent_misses_run_the_query_once(film_engine, memcached, report):
    cache, Session, sql = setup(film_engine, memcached.servers)
    results = stampede(Session, all_rows)
    assert results == [expected_rows()] * THREADS
    guard = cache.stampede.stats
    assert sql.selects("f_film") == 1, (guard, cache.stats, sql.statements)
    # The contract: one query, every result right, nobody gave up and queried. How many
    # were waiters (served the winner's entry) and how many arrived after it was stored
    # (plain hits) depends on thread timing.
    assert guard.fallbacks == 0, guard
    # and then it is an ordinary hit
    with Session() as s:
        assert all_rows(s) == expected_rows()
    assert sql.selects("f_film") == 1
    report("FromCache, %d threads missing together: %d SELECT; lease stats %s"
           % (THREADS, sql.selects("f_film"), guard.as_dict()))


def test_32_concurrent_session_gets_of_one_row_run_the_query_once(film_engine, memcached, report):
    cache, Session, sql = setup(film_engine, memcached.servers)
    results = stampede(Session, lambda s: s.get(FaultFilm, 7).title)
    assert results == ["FILM 07 v0"] * THREADS
    assert sql.selects("f_film") == 1, sql.statements
    report("session.get, %d threads: %d SELECT" % (THREADS, sql.selects("f_film")))


def test_after_an_invalidation_the_stampede_is_also_one_query(film_engine, memcached):
    """The entry exists but is tagged with old versions (a commit happened): still one query."""
    cache, Session, sql = setup(film_engine, memcached.servers)
    with Session() as s:
        all_rows(s)
        film = s.get(FaultFilm, 3)
        film.title = "FILM 03 v1"
        s.commit()
    before = sql.selects("f_film")
    results = stampede(Session, all_rows)
    want = [(i, "FILM %02d v%d" % (i, 1 if i == 3 else 0)) for i in range(1, FILMS + 1)]
    assert results == [want] * THREADS
    assert sql.selects("f_film") - before == 1


def test_without_protection_every_thread_may_query(film_engine, memcached, report):
    cache, Session, sql = setup(film_engine, memcached.servers, stampede_wait=0)
    results = stampede(Session, all_rows)
    assert results == [expected_rows()] * THREADS
    assert sql.selects("f_film") >= 1
    assert cache.stampede.stats.as_dict() == StampedeStats().as_dict()  # no lease taken, nobody waited
    report("same stampede with stampede_wait=0: %d SELECTs for %d threads" % (sql.selects("f_film"), THREADS))


def test_a_stalled_lease_holder_bounds_the_wait_then_falls_back_to_the_database(film_engine, memcached):
    cache, Session, sql = setup(film_engine, memcached.servers, stampede_wait=0.5)
    entry_key = cache.entry_key(QUERY, film_engine)
    # Someone took the lease and never finished (crashed, or stuck in a slow query).
    assert Client(memcached.servers).add(lease_key(cache, entry_key), 1, time=30)
    t0 = time.monotonic()
    results = stampede(Session, all_rows, threads=8)
    elapsed = time.monotonic() - t0
    assert results == [expected_rows()] * 8
    guard = cache.stampede.stats
    # Each waiter gave up after stampede_wait and asked the database -- unless the first to
    # give up had stored the entry by the time it polled again. (A thread that the scheduler
    # held back until that entry was stored is a plain hit and never waits.)
    assert guard.fallbacks >= 1 and guard.fallbacks + guard.served == guard.waits, guard
    assert sql.selects("f_film") == guard.fallbacks
    assert elapsed < 20, "waited far longer than stampede_wait"


def test_memcached_down_means_no_waiting(film_engine, memcached_factory):
    node = memcached_factory()
    cache, Session, sql = setup(film_engine, node.servers, socket_timeout=1, stampede_wait=30)
    node.kill()
    t0 = time.monotonic()
    results = stampede(Session, all_rows, threads=8)
    assert results == [expected_rows()] * 8
    assert time.monotonic() - t0 < 10  # nobody waited 30 s for a lease that cannot exist
    assert cache.stampede.stats.waits == 0
